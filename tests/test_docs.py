"""The documentation tells the truth: its examples run, its reference lists every op and keyword.

Conventions for fenced code blocks in docs/language.md and README.md (documented in
docs/language.md, "About the examples"):

- ```arch blocks are checked.  Their leading comment lines may carry markers:
    `# file: NAME.arch`   the block is saved under that name (in a scratch folder), so that other
                          blocks can `import` it and ```console blocks can run commands on it;
    `# error: TEXT`       the block must fail with an ArchError whose message contains TEXT.
  A block that defines a network is parsed and elaborated (every network it defines); a block
  that defines only blocks is parsed.
- ```pycon blocks (README) are doctests, run from the repository root.
- ```console blocks are checked: each `$ archdsl ...` line is run (in the scratch folder, where
  `examples/` is the repository's), and every line shown under it must appear, verbatim, in what
  the command printed (stdout and stderr together).  A line `...` stands for omitted lines.
  Other commands (`pip`, `pytest`) are not run here.  After an intended change of the output,
  `python tests/test_docs.py --regen` rewrites these excerpts from what the commands print now.
"""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import pytest

import archdsl
from archdsl.cli import main
from archdsl.elaborate.loader import load_source
from archdsl.errors import ArchError
from archdsl.ops import OPS
from archdsl.ops.registry import REQUIRED

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = ROOT / "docs" / "language.md"
README = ROOT / "README.md"
DOCS = [LANGUAGE, README]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(path: Path, lang: str) -> list[tuple[str, int, str]]:
    """(id, line, text) of every fenced block of language `lang` in `path`."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) == lang:
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{path.name}:{line}", line, m.group(2)))
    return out


def markers(code: str) -> dict[str, str]:
    """The `# file:` / `# error:` markers among a block's leading comment lines."""
    found = {}
    for line in code.splitlines():
        m = re.match(r"\s*#\s*(file|error):\s*(.*?)\s*$", line)
        if m:
            found[m.group(1)] = m.group(2)
        elif line.strip() and not line.lstrip().startswith("#"):
            break
    return found


ARCH = [b for p in DOCS for b in blocks(p, "arch")]
CONSOLE = [b for p in DOCS for b in blocks(p, "console")]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder holding every `# file:` block, with `examples/` linked in; made the working directory."""
    for _, _, code in ARCH:
        name = markers(code).get("file")
        if name:
            (tmp_path / name).write_text(code, encoding="utf-8")
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_docs_have_examples():
    assert len(blocks(LANGUAGE, "arch")) >= 20
    assert blocks(README, "arch") and blocks(README, "console")


def _elaborate(code: str, filename: str) -> int:
    """Parse `code`; elaborate each network it defines.  Returns how many networks it built."""
    lib = load_source(code, filename)
    own = [d.name for d in lib.networks if d.loc.file == filename]
    for name in own:
        archdsl.loads(code, network=name, filename=filename)
    return len(own)


@pytest.mark.parametrize("where,line,code", ARCH, ids=[b[0] for b in ARCH])
def test_arch_example(where, line, code, scratch):
    m = markers(code)
    filename = m.get("file", f"{where.replace(':', '_')}.arch")
    if "error" in m:
        with pytest.raises(ArchError) as info:
            _elaborate(code, filename)
        assert m["error"] in info.value.message, f"{where}: got {info.value.message!r}"
    else:
        try:
            _elaborate(code, filename)
        except ArchError as exc:  # show the rendered error, not a traceback
            pytest.fail(f"{where}: the example fails:\n{exc.render()}")


def _commands(code: str):
    """(command, expected lines) pairs of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            out.append((line[2:].strip(), []))
        elif out:
            out[-1][1].append(line.rstrip())
    return out


CONSOLE_RUNS = [(where, cmd, expect) for where, _, code in CONSOLE for cmd, expect in _commands(code)
                if cmd.startswith("archdsl ")]


@pytest.mark.parametrize("where,cmd,expect", CONSOLE_RUNS, ids=[f"{w}:{c[8:30]}" for w, c, _ in CONSOLE_RUNS])
def test_console_example(where, cmd, expect, scratch, capsys):
    code = main(shlex.split(cmd)[1:])
    out, err = capsys.readouterr()
    printed = {line.rstrip() for line in (out + err).splitlines()}
    shown = [line for line in expect if line.strip() and line.strip() != "..."]
    assert shown, f"{where}: `{cmd}` shows no output"
    missing = [line for line in shown if line not in printed]
    assert not missing, f"{where}: `{cmd}` (exit {code}) no longer prints:\n" + "\n".join(missing) + \
        "\n--- it prints:\n" + out + err
    is_error = any(": error:" in line for line in shown)
    assert (code == 2) if is_error else (code == 0), f"{where}: `{cmd}` exited {code}"


@pytest.mark.slow
@pytest.mark.parametrize("where,line,code", blocks(README, "pycon"), ids=[b[0] for b in blocks(README, "pycon")])
def test_python_example(where, line, code, monkeypatch):
    """```pycon blocks are doctests, run from the repository root."""
    monkeypatch.chdir(ROOT)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(code, {}, where, str(README), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and test.examples, f"{where}: the Python example fails (see the output above)"


def _section(path: Path, title: str) -> str:
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"{path.name} has no section `## {title}`"
    return m.group(1)


def test_every_op_is_in_the_op_reference():
    reference = _section(LANGUAGE, "Op reference")
    documented = set(re.findall(r"^\| `(\w+)", reference, re.M))
    user_ops = {n for n, spec in OPS.items() if not spec.internal} - {"input"}  # fused ops are the compiler's
    missing = sorted(user_ops - documented)
    assert not missing, f"ops missing from the op reference: {missing}"
    unknown = sorted(documented - set(OPS))
    assert not unknown, f"the op reference documents ops that do not exist: {unknown}"


def _value(text: str):
    if text in ("true", "false"):
        return text == "true"
    if text == "kernel":
        return None  # the pooling stride: "the kernel size"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]  # a string default: gelu(approximate="none")
    return float(text) if any(ch in text for ch in ".e") else int(text)


def test_op_arguments_and_defaults_match_the_registry():
    """Each op's row lists its arguments in order, with the registry's defaults."""
    reference = _section(LANGUAGE, "Op reference")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)(?:\(([^`]*)\))?`", reference, re.M)}
    for name, spec in OPS.items():
        if name == "input" or spec.arity is None or spec.internal:
            continue
        written = [a.strip() for a in (rows[name] or "").split(",") if a.strip()]
        assert [w.partition("=")[0] for w in written] == [p.name for p in spec.params], \
            f"op reference for `{name}`: arguments {written}"
        for w, p in zip(written, spec.params):
            key, eq, default = w.partition("=")
            if p.default is REQUIRED:
                assert not eq, f"`{name}`: `{key}` is required, the reference gives it a default"
            else:
                assert eq and _value(default) == p.default and type(_value(default)) is type(p.default), \
                    f"`{name}`: the default of `{key}` is {p.default!r}, the reference says {default}"


def _keywords() -> set[str]:
    grammar = (ROOT / "grammars" / "arch.lark").read_text(encoding="utf-8")
    grammar = re.sub(r"//[^\n]*", "", grammar)
    return set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', grammar))


def test_every_reserved_word_is_listed():
    listed = set(re.findall(r"`(\w+)`", _section(LANGUAGE, "Reserved words")))
    keywords = _keywords()
    assert {"block", "network", "residual", "x"} <= keywords  # the extraction works
    missing = sorted(keywords - listed)
    assert not missing, f"reserved words missing from docs/language.md: {missing}"


def test_the_quick_start_commands_are_exactly_these():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```\w*\n(.*?)```", text[text.index("## Quick start"):], re.S).group(1)
    assert first.splitlines()[:2] == [
        "python -m pip install torch==2.13.0 . && archdsl compile examples/resnet50.arch",
        "python -m pip install torch==2.13.0 '.[test]' && python -m pip install --no-deps torchvision==0.28.0 && pytest",
    ]


def test_architecture_vgg16_figures_are_what_archdsl_computes():
    """docs/architecture.md compares the lecture's VGG16 totals with ours; keep its numbers true."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    # The lecture table's memory column, layer by layer: (H·W·C, how many such layers).
    table = [(224 * 224 * 3, 1), (224 * 224 * 64, 2), (112 * 112 * 64, 1), (112 * 112 * 128, 2), (56 * 56 * 128, 1),
             (56 * 56 * 256, 3), (28 * 28 * 256, 1), (28 * 28 * 512, 3), (14 * 14 * 512, 1), (14 * 14 * 512, 3),
             (7 * 7 * 512, 1), (4096, 2), (1000, 1)]
    total = sum(n * k for n, k in table)
    assert f"**{total:,}**" in text and f"{4 * total:,} bytes" in text
    g = archdsl.load(ROOT / "examples" / "vgg16.arch")
    s = archdsl.analyze(g)
    biases = sum(d["attrs"]["out"] for _, d in g.nodes(data=True) if d["op"] in ("conv", "fc") and d["attrs"]["bias"])
    assert f"**{s.params - biases:,}**" in text and f"**{biases:,}**" in text and f"**{s.params:,}**" in text
    extra = s.activations - total  # what archdsl counts beyond the lecture's table
    assert f"Activations  {s.activations:,} values" in text and f"{total:,} + {extra:,}" in text


# ---- keeping the console excerpts current -----------------------------------------------------


def regenerate() -> None:
    """Rewrite the output shown under each `$ archdsl …` line with what the command prints now.

    Run `python tests/test_docs.py --regen` after an intended change of the CLI's output or of an
    example; review the diff. Blocks with `...` elisions keep their selection of lines (a line
    that no longer appears is reported, to edit by hand). The summary's footer of conventions
    is left out."""
    import contextlib
    import io
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for _, _, code in ARCH:
            name = markers(code).get("file")
            if name:
                Path(tmp, name).write_text(code, encoding="utf-8")
        Path(tmp, "examples").symlink_to(ROOT / "examples", target_is_directory=True)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for path in DOCS:
                text = path.read_text(encoding="utf-8")

                def fix(m):
                    if m.group(1) != "console":
                        return m.group(0)
                    lines = []
                    for cmd, expect in _commands(m.group(2)):
                        lines.append("$ " + cmd)
                        if not cmd.startswith("archdsl "):
                            lines += expect
                            continue
                        out, err = io.StringIO(), io.StringIO()
                        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                            main(shlex.split(cmd)[1:])
                        printed = [ln.rstrip() for ln in (err.getvalue() + out.getvalue()).rstrip("\n").split("\n")]
                        footer = re.compile(r"$|  (Params|MACs|Activations|RF):")
                        while printed and footer.match(printed[-1]):
                            printed.pop()
                        if any(ln.strip() == "..." for ln in expect):
                            gone = [ln for ln in expect if ln.strip() not in ("", "...") and ln not in printed]
                            if gone:
                                print(f"{path.name}: `{cmd}`: edit by hand, no longer printed:", *gone, sep="\n  ")
                            lines += [ln for ln in expect if ln not in gone]
                        else:
                            lines += printed
                    return "```console\n" + "\n".join(lines) + "\n```"

                new = FENCE.sub(fix, text)
                if new != text:
                    path.write_text(new, encoding="utf-8")
                    print(f"rewrote {path}")
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--regen"]:
        regenerate()
    else:
        print("usage: python tests/test_docs.py --regen")
