"""Every user mistake is a precise, located error (DESIGN.md, "Errors").

Each mistake is a row of a case table (a small program, where the error must point, fragments of
its message and hint, its notes); one test runs `archdsl check` on each through `archdsl.cli.main`
and checks what the user sees on stderr:

    FILE:LINE:COL: error: MESSAGE        <- exact position of the offending token
     LINE | the source line               <- quoted
          |        ^~~~                   <- caret under the token
    hint: ...                             <- where one helps
    FILE:LINE:COL: note: ...              <- e.g. where each input of a bad join came from

exit status 2, and never a Python traceback.  An internal failure exits 1 and says it is a bug.
Positions are found with `at(source, token)` (the token's line and 1-based column, computed
from the text here, independently of archdsl), or written out where that is clearer.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import archdsl
from archdsl.cli import main as cli_main
from archdsl.ir.graph import Graph

# Internal names that must never reach the user (Lark terminal names, parser objects).
LEAK = re.compile(r"__ANON|\$END|\b(?:RPAR|LPAR|LBRACE|RBRACE|LSQB|RSQB|COMP_OP|ADD_OP|MUL_OP|_NL|SEMICOLON)\b|"
                  r"Token\(|Unexpected[A-Z]|Tree\(|<class|object at 0x")
# ... and, in a syntax error (which has no usage text), no upper-case terminal name at all.
INTERNAL = re.compile(LEAK.pattern + r"|\b(?:NAME|INT|FLOAT|STRING|DIMS|COMMA|STAR|EQUAL|COLON)\b")


@dataclass
class Run:
    rc: int
    out: str
    err: str
    path: str  # the file as named on the command line (and so in the error header)
    source: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def message(self) -> str:
        """The error header without its location."""
        return self.lines[0].split(" error: ", 1)[1]

    @property
    def hint(self) -> str | None:
        return next((ln[len("hint: "):] for ln in self.lines if ln.startswith("hint: ")), None)

    def notes(self) -> list[tuple[str, int, int, str]]:
        """(file, line, col, message) of every `note:` line."""
        out = []
        for ln in self.lines:
            m = re.match(r"(.*):(\d+):(\d+): note: (.*)", ln)
            if m:
                out.append((m[1], int(m[2]), int(m[3]), m[4]))
        return out


def write(tmp_path: Path, source: str, name: str = "model.arch") -> tuple[Path, str]:
    text = textwrap.dedent(source).lstrip("\n")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


def check(tmp_path, capsys, source: str, *options: str, name: str = "model.arch") -> Run:
    path, text = write(tmp_path, source, name)
    rc = cli_main(["check", str(path), *options])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return Run(rc, out, err, str(path), text)


def at(source: str, token: str, nth: int = 0) -> tuple[int, int]:
    """(line, col) of the nth occurrence of `token` in the dedented source (1-based)."""
    text = textwrap.dedent(source).lstrip("\n")
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(token, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def assert_error(run: Run, line: int, col: int, *fragments: str, hint: str | None = None,
                 width: int | None = None, file: str | None = None) -> None:
    """Exit 2; header at FILE:LINE:COL; the message contains `fragments`; the line is quoted with a
    caret under column `col` (`width` characters of `^~~`); `hint` (a fragment) on a hint line."""
    assert run.rc == 2, run.err
    file = file or run.path
    assert run.err.startswith(f"{file}:{line}:{col}: error: "), run.err
    for frag in fragments:
        assert frag in run.message, f"{frag!r} not in {run.message!r}"
    src = Path(file).read_text(encoding="utf-8").split("\n")[line - 1]
    quote = f"{line:>5} | {src}"
    assert quote in run.lines, run.err
    caret_line = run.lines[run.lines.index(quote) + 1]
    gutter = " " * 6 + "| "
    assert caret_line.startswith(gutter + " " * (col - 1) + "^"), run.err
    if width is not None:
        assert caret_line[len(gutter):].strip() == "^" + "~" * (width - 1), run.err
    if hint is not None:
        assert run.hint is not None and hint in run.hint, run.err
    assert not LEAK.search(run.message), run.message
    assert not LEAK.search(run.hint or ""), run.hint


def assert_cli_error(run: Run, *fragments: str, hint: str | None = None) -> None:
    """A mistake on the command line: exit 2, `error: ...` with no file position."""
    assert run.rc == 2, run.err
    assert run.err.startswith("error: "), run.err
    for frag in fragments:
        assert frag in run.lines[0], run.err
    if hint is not None:
        assert run.hint is not None and hint in run.hint, run.err


# ---- the mistakes, as data ---------------------------------------------------------------------
# Each case is a program, the token the error points at (`at`, its `nth` occurrence; or an explicit
# (line, col) where the position is not a token, such as the end of the file), fragments of the
# message, of the hint, the caret's width and the notes (each at a token, with fragments of its
# message).  One test below runs them all; the few mistakes that need files, options or checks of
# their own follow the table as ordinary tests.


def net(*body: str, shape: str = "3x32x32", head: str = "network n", before: str = "") -> str:
    """A program: `before` (blocks), then `head { input SHAPE; body... }`, one statement a line."""
    return before + head + " {\n    input " + shape + "\n" + "".join(f"    {s}\n" for s in body) + "}\n"


@dataclass(frozen=True)
class Note:
    at: str  # the token the note points at
    says: tuple[str, ...] = ()  # fragments of its message (the whole message when `exact`)
    nth: int = 0
    line_only: bool = False  # only the line is checked (the note names a node on that line)
    exact: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    at: str | tuple[int, int]  # the offending token, or (line, col)
    says: tuple[str, ...]  # fragments of the message
    hint: str | tuple[str, ...] | None = None  # fragment(s) of the hint line
    width: int | None = None  # the caret run `^~~`
    nth: int = 0  # which occurrence of `at`
    notes: tuple[Note, ...] | None = None  # None: not checked; otherwise exactly these, in order
    options: tuple[str, ...] = ()
    not_said: tuple[str, ...] = ()  # must not be in the message
    no_terminals: bool = False  # a syntax error: no grammar terminal name anywhere on stderr


TWO_NETS = net("relu", head="network small") + net("relu", shape="3x224x224", head="network large")
RESIDUAL_BAD_SHORTCUT = """\
block basic(c, stride = 1) {
    residual {
        conv(c, 3, stride=stride, pad=1) -> bn -> relu
        conv(c, 3, pad=1) -> bn
    } shortcut {
        conv(c, 1) -> bn
    }
}
"""

SYNTAX = [
    Case("unclosed-brace-at-end-of-file", net("conv(8, 3) -> relu")[:-2],
         (3, len("    conv(8, 3) -> relu") + 1),  # just after the last character of the last line
         ("end of file", "never closed"), hint="`}`", notes=(Note("{", ("the `{` opened here",), exact=True),)),
    Case("unclosed-paren-at-end-of-file", net("let a = max(1, 2")[:-2], (3, len("    let a = max(1, 2") + 1),
         ("end of file",), hint="`)`", notes=(Note("(", ("the `(` opened here",), exact=True),)),
    # the likely fix comes first in the hint and is spelt as the user writes it
    Case("stray-token", net("conv(8, 3) ) -> relu"), ") ->", ("unexpected `)`",), hint=("expected", "`}`"), width=1),
    Case("single-quoted-string", "import 'blocks.arch'\n" + net("relu"), (1, 8), ("unexpected character", "'"),
         hint='double quotes: "..."'),
    Case("unterminated-string", net('assert true, "oops'), '"oops', ("unexpected character",), hint="same line"),
    *[Case(f"syntax-{i}", net(body), token, ("unexpected",), hint="expected", no_terminals=True)
      for i, (body, token) in enumerate([
          ("conv(8, 3) -> -> relu", "-> relu"),
          ("conv(8, 3,, 2)", ", 2"),
          ("conv 8", "8"),
          ("conv(8, 3 -> relu", "->"),
          ("let = 3", "="),
          ("for in range(3) { relu }", "range"),
          ("concat { relu } )", ")"),
          ("let a = 1 === 2", "= 2"),
          ("residual { relu } shortcut if { relu }", "{ relu }\n"),
          ("let a = [1, 2,, 3]", ", 3"),
      ])],
    # points just past the `->`, where an op was expected
    Case("missing-token-at-end-of-line", net("conv(8, 3) ->"), (3, len("    conv(8, 3) ->") + 1),
         ("unexpected end of line",), hint="`(`", not_said=("a new line",)),
    # habits from other languages
    Case("else-if", net("if 1 > 0 { relu } else if 2 > 1 { relu }"), "if 2", ("unexpected",), hint="`elif`"),
    Case("assignment-without-let", net("a = 3"), "=", ("unexpected",), hint="`let name = value`"),
    Case("and-and", net("let a = 1 && 2"), "&", ("unexpected",), hint="`and`"),
    Case("or-or", net("let a = 1 || 2"), "|", ("unexpected",), hint="`or`"),
    # past Python's int <-> str digit limit
    Case("integer-literal-too-long", net(f"conv({'9' * 5000}, 1)"), (3, 10), ("integer literal", "too large")),
    Case("huge-integer-value", net("conv(" + "9" * 400 + ", 1)"), (3, 10), ("too large", "2**53")),
    Case("duplicate-parameter", net("b(8, 3, 8)", before="block b(c, k, c) { conv(c, k) }\n"), "c)",
         ("parameter `c`", "twice"), notes=(Note("c,", ("first declared here",), exact=True),)),
    Case("form-feed-does-not-shift-the-quoted-line", "network n {\n    input 3x32x32\f\n    conv(8, 3) -> maxpol\n}\n",
         (3, 19), ("`maxpol`",), hint="`maxpool`"),
]

UNKNOWN_NAMES = [
    Case("unknown-op", net("conv(64, 3) -> maxpol(2)"), "maxpol", ("unknown op or block `maxpol`",),
         hint="did you mean `maxpool`", width=6),
    Case("unknown-block", net("botleneck(16)", before="block bottleneck(c) { conv(c, 1) }\n"), "botleneck",
         ("`botleneck`",), hint="`bottleneck`", width=9),
    Case("unknown-function", net("conv(mx(8, 16), 3)"), "mx(", ("unknown function `mx`",), hint="`max`"),
    Case("undefined-variable", net("conv(widht, 3)", head="network n(width = 16)"), "widht",
         ("undefined name `widht`",), hint="`width`", width=5),
    Case("block-cannot-see-the-callers-variables",
         net("b", head="network n(width = 16)", before="block b() { conv(width, 3) }\n"), "width,",
         ("undefined name `width`",)),
    Case("undefined-tensor", net("a: conv(8, 3)", "@x -> relu"), "@x", ("no tensor named `x`",), hint="label",
         width=2),
    Case("undefined-tensor-attribute", net("stem: conv(8, 3)", "conv(stme.c * 2, 1)"), "stme",
         ("no tensor named `stme`",), hint="`stem`"),
    Case("output-of-unknown-tensor", net("global_avgpool -> flatten -> fc(10) as logits", "output logit"), "logit\n",
         ("no tensor named `logit`",), hint="`logits`", width=5),
]

ARGUMENTS = [
    Case("non-integer-groups", net("conv(64, 3, groups=1.5)", shape="4x32x32"), "1.5", ("`groups`", "integer", "1.5"),
         hint="whole number", width=3),
    *[Case(f"wrong-type-or-range-{i}", net(call, shape="4x32x32"), token, fragments)
      for i, (call, token, fragments) in enumerate([
          ("conv(8, 3, bias=1)", "1)", ("`bias`", "true or false")),
          ('maxpool("two")', '"two"', ("`kernel`", '"two"')),
          ("conv(8, 3, pad=(1, 2, 3))", "(1, 2, 3)", ("`pad`", "(1, 2, 3)")),
          ("dropout(1.5)", "1.5", ("`p`", "[0.0, 1.0)")),
          ("conv(0, 3)", "0,", ("`out`", "≥ 1")),
      ])],
    Case("missing-argument", net("conv(64)"), "conv", ("`conv`", "missing the argument `kernel`"),
         hint="usage: conv(out, kernel", width=len("conv(64)")),
    Case("missing-block-argument", net("stage(16)", before="block stage(c, k) { conv(c, k) }\n"), "stage(16)",
         ("`stage`", "missing the argument `k`"), hint="stage(c, k)"),
    Case("unknown-argument", net("conv(64, 3, strid=2)"), "strid", ("no argument `strid`",), hint="`stride`", width=5),
    Case("duplicate-argument", net("conv(64, 3, stride=2, stride=1)"), "stride", ("`stride`", "twice"), width=6, nth=1,
         notes=(Note("stride", ("first given here",), line_only=True),)),
    Case("duplicate-argument-positional-and-keyword", net("conv(64, 3, out=32)"), "out", ("`out`", "twice")),
    Case("positional-after-keyword", net("conv(64, kernel=3, 2)"), "2)",
         ("positional argument follows a keyword argument",)),
    Case("too-many-positional-arguments", net("relu(2)"), "2)", ("`relu` takes 0 positional arguments, got 1",),
         hint="usage: relu()"),
]

LIMITS = [
    Case("recursion-without-base-case",
         net("forever(8)", before="block forever(c) {\n    conv(c, 1) -> forever(c)\n}\n"), "forever(c)",
         ("deeper than 64", "recursion"), hint="base case", nth=1),
    Case("repetition-past-the-limit", net("relu * 100000"), "100000", ("100000", "limit"), width=6),
    Case("size-past-sane-limits", net("huge: conv(10000000, 1)"), "conv", ("`huge`", "10000000×32×32", "sane limits")),
    Case("range-past-the-limit", net("for i in range(1000000) { relu }"), "range", ("range(1000000)", "limit")),
    *[Case(f"power-{expr}", net(f"conv({expr}, 3)"), expr, (fragment,), width=len(expr)) for expr, fragment in [
        ("2 ** 100", "exponent too large"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** 0.5", "complex"),
        ("10.0 ** 400", "overflow"),
    ]],
]

ARITHMETIC = [
    Case("division-by-zero", net("conv(64 / k, 1)", head="network n(k = 0)"), "k,", ("division by zero",),
         hint="`k` evaluates to 0", width=1),
    *[Case(f"by-zero-{expr}", net(f"conv({expr}, 1)"), divisor, ("division by zero",), width=len(divisor))
      for expr, divisor in [("7 // (2 - 2)", "2 - 2"), ("7 % 0", "0")]],
    # in.c = 3, so in.c / 2 = 1.5 (exact division)
    Case("non-integer-channel-count", net("half", before="block half() {\n    conv(in.c / 2, 1)\n}\n"), "in.c",
         ("`out`", "integer", "1.5"), hint="`//`", width=len("in.c / 2")),
    Case("condition-must-be-boolean", net("if 1 { relu }"), "1 {", ("condition", "true or false", "integer"),
         hint="n > 0", width=1),
    Case("for-over-a-number", net("for i in 3 { relu }"), "3 {", ("`for` needs a list",), hint="range(n)"),
    Case("type-error-in-arithmetic", net('conv("8" + 1, 3)'), '"8"', ("`+`", "string", "integer")),
    Case("failed-assertion", net('assert width % 16 == 0, "width must be a multiple of 16"', "conv(width, 3)",
                                 head="network n(width = 24)"), "assert", ("assertion failed", "multiple of 16")),
]

SHAPES = [
    Case("pool-window-larger-than-input", net("pool: maxpool(5)", shape="8x3x3"), "maxpool",
         ("`pool`", f"would be {(3 - (5 - 1) - 1) // 5 + 1}", "8×3×3")),  # PyTorch's rule: 0
    Case("add-of-mismatched-shapes-names-both-inputs",
         net("add {", "    conv(8, 3, pad=1)", "    conv(16, 3, pad=1)", "}"), "add",
         ("add of branch 1 and branch 2", "8×32×32", "16×32×32"), hint="channel counts",
         notes=(Note("conv(8", ("branch 1", "8×32×32")), Note("conv(16", ("branch 2", "16×32×32")))),
    Case("mean-of-named-tensors-points-at-their-definitions",
         net("a: conv(8, 3, pad=1)", "@in -> b: conv(8, 3, stride=2, pad=1)", "mean {", "    @a", "    @b", "}"),
         "mean", ("mean", "8×32×32", "8×16×16"), hint="spatial sizes differ",
         notes=(Note("conv(8, 3, pad", ("`a`",)), Note("conv(8, 3, stride", ("`b`",)))),
    # main path: floor((32 + 2 - 2 - 1)/2) + 1 = 16; the shortcut keeps 32
    Case("residual-with-wrong-shortcut", net("basic(16, stride=2)", shape="16x32x32", before=RESIDUAL_BAD_SHORTCUT),
         "residual", ("residual path", "shortcut", "16×16×16", "16×32×32"), hint="stride",
         notes=(Note("conv(c, 3, pad", ("the residual path ends at `basic.bn_1`",), line_only=True),
                Note("conv(c, 1)", ("the shortcut ends at `basic.bn_2`",), line_only=True),
                Note("basic(16, stride=2)", ("in block `basic`, called here",), exact=True))),
    Case("residual-identity-shortcut-needs-projection", net("residual {", "    conv(8, 3, pad=1)", "}"), "residual",
         ("identity shortcut", "8×32×32", "3×32×32"), hint="1×1 conv",
         notes=(Note("conv", line_only=True), Note("input", line_only=True))),
    Case("concat-with-mismatched-spatial-size", net("concat {", "    conv(8, 3, pad=1)", "    conv(8, 3)", "}"),
         "concat", ("concat", "spatial", "8×32×32", "8×30×30"), hint="H×W",
         notes=(Note("conv(8, 3, pad", line_only=True), Note("conv(8, 3)", line_only=True))),
    *[Case(f"channels-not-divisible-by-groups-{shape}", net(f"g: conv({out}, 3, groups=2)", shape=shape), "conv",
           ("`g`", "groups=2", which, "not divisible by 2"), hint="multiples of `groups`")
      for shape, out, which in [("3x32x32", 64, "input channels (3)"), ("4x32x32", 63, "output channels (63)")]],
    Case("fc-without-flatten", net("global_avgpool -> fc(10)"), "fc", ("fc needs a flat input", "3×1×1"),
         hint="`flatten ->`"),
    Case("conv-after-flatten", net("flatten -> conv(8, 3)"), "conv", ("feature map", str(3 * 32 * 32)),
         hint="before `flatten`"),
    Case("join-with-one-branch", net("concat { relu }"), "concat", ("1 branch", "two or more"),
         hint="one statement per branch"),
]

DEFINITIONS = [
    Case("duplicate-label", net("c1: conv(8, 3)", "c1: conv(8, 3)"), "conv", ("`c1`", "already used"), hint="unique",
         nth=1, notes=(Note("conv"),)),
    Case("duplicate-definition", net("stem", before="block stem() { relu }\nblock stem() { conv(8, 3) }\n"), "stem",
         ("`stem` is defined twice",), hint="rename", nth=1, notes=(Note("stem"),)),
    Case("input-inside-a-block", net("b", before="block b() {\n    input 3x32x32\n    relu\n}\n"), "input",
         ("`input`", "top level of a network")),
    Case("output-inside-a-block", net("b", before="block b() {\n    relu as r\n    output r\n}\n"), "output",
         ("`output`", "top level of a network")),
    Case("network-parameter-without-default", net("global_avgpool -> flatten -> fc(classes)", head="network n(classes)"),
         "classes", ("`classes` has no value",), hint="--set classes=", width=7),
    Case("network-without-input", "network n {\n    let a = 1\n}\n", "n {", ("network `n` has no input",),
         hint="input 3 x 224 x 224"),
    Case("layer-before-input", "network n {\n    relu\n    input 3x32x32\n}\n", "relu", ("no input tensor",),
         hint="input"),
    Case("several-networks-error-is-located", TWO_NETS, "large", ("several networks",), hint="--network"),
    Case("network-called-as-a-block", net("relu", head="network inner") + net("inner", head="network outer"), "inner",
         ("`inner` is a network, not a block",), hint="`block`", nth=1, options=("--network", "outer")),
    # i = 0 gives `layer-1`
    Case("label-template-producing-invalid-name", net("for i in range(2) {", "    layer{i - 1}: relu", "}"), "layer",
         ("`layer-1` is not a valid label",), hint="letters, digits and underscores"),
    Case("label-template-with-a-float", net("layer{1.5}: relu"), "1.5", ("label", "1.5")),
    Case("tensor-reference-in-the-middle-of-a-chain", net("relu as r", "conv(8, 3) -> @r"), "@r",
         ("`@r` can only start a chain",), hint="own line"),
]

CASES = SYNTAX + UNKNOWN_NAMES + ARGUMENTS + LIMITS + ARITHMETIC + SHAPES + DEFINITIONS
assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mistake_is_located_quoted_and_explained(tmp_path, capsys, case):
    run = check(tmp_path, capsys, case.source, *case.options)
    line, col = case.at if isinstance(case.at, tuple) else at(case.source, case.at, case.nth)
    hints = (case.hint,) if isinstance(case.hint, str) or case.hint is None else case.hint
    assert_error(run, line, col, *case.says, hint=hints[0], width=case.width)
    for fragment in hints[1:]:
        assert fragment in run.hint, run.err
    for fragment in case.not_said:
        assert fragment not in run.message, run.err
    if case.no_terminals:
        assert not INTERNAL.search(run.err.replace(run.path, "")), run.err
    if case.notes is not None:
        notes = run.notes()
        assert len(notes) == len(case.notes), run.err
        for (file, got_line, got_col, message), note in zip(notes, case.notes):
            want_line, want_col = at(case.source, note.at, note.nth)
            assert file == run.path and got_line == want_line, run.err
            assert note.line_only or got_col == want_col, run.err
            if note.exact:
                assert (message,) == note.says, run.err
            for fragment in note.says:
                assert fragment in message, run.err


# ---- mistakes that need checks of their own ------------------------------------------------------


def test_huge_float_where_an_integer_is_needed(tmp_path, capsys):
    src = net("relu", shape="1e300 x 8 x 8")
    run = check(tmp_path, capsys, src)  # not a 301-digit integer in the message
    assert_error(run, *at(src, "1e300"), "input dimension", "1e+300", "too large", width=5)
    assert len(run.lines[0]) < 200


def test_non_positive_output_size_names_layer_and_formula(tmp_path, capsys):
    src = net("c1: conv(8, 7)", shape="3x3x3")
    run = check(tmp_path, capsys, src)
    out = (3 + 2 * 0 - (7 - 1) - 1) // 1 + 1  # PyTorch's rule: -3
    assert out == -3
    assert_error(run, *at(src, "conv"), "`c1`", f"would be {out}", f"floor((3 + 2·0 - (7-1) - 1) / 1) + 1 = {out}",
                 "3×3×3", hint="smaller than the kernel")


def test_missing_import_file(tmp_path, capsys):
    run = check(tmp_path, capsys, 'import "blocks/resnet.arch"\n' + net("relu"))
    assert_error(run, 1, 1, '"blocks/resnet.arch"', "no such file", hint="relative to the importing file")
    assert str(tmp_path / "blocks" / "resnet.arch") in run.message


def test_import_of_a_directory(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    run = check(tmp_path, capsys, 'import "lib"\n' + net("relu"))
    assert_error(run, 1, 1, 'cannot import "lib"', "directory")


def test_circular_import(tmp_path, capsys):
    write(tmp_path, 'import "b.arch"\n' + net("relu"), "a.arch")
    write(tmp_path, '# helpers\nimport "a.arch"\nblock helper() { relu }\n', "b.arch")
    rc = cli_main(["check", str(tmp_path / "a.arch")])
    out, err = capsys.readouterr()
    b = str(tmp_path / "b.arch")
    run = Run(rc, out, err, b, "")
    assert_error(run, 2, 1, "circular import: a.arch -> b.arch -> a.arch", hint="move the shared blocks", file=b)


def test_error_in_an_imported_file_is_located_there(tmp_path, capsys):
    write(tmp_path, "block stem(c) {\n    conv(c, 3) -> relu -> maxpol(2)\n}\n", "blocks.arch")
    path, _ = write(tmp_path, 'import "blocks.arch"\n' + net("stem(8)"))
    rc = cli_main(["check", str(path)])
    out, err = capsys.readouterr()
    lib = str(tmp_path / "blocks.arch")
    assert_error(Run(rc, out, err, lib, ""), 2, 27, "`maxpol`", hint="`maxpool`", file=lib)


def test_duplicate_definition_across_files(tmp_path, capsys):
    write(tmp_path, "block stem() { relu }\n", "blocks.arch")
    src = 'import "blocks.arch"\nblock stem() { relu }\n' + net("stem")
    run = check(tmp_path, capsys, src)
    assert run.rc == 2 and "`stem` is defined twice" in run.err
    locs = {(run.path, 2, 7), (str(tmp_path / "blocks.arch"), 1, 7)}
    header = re.match(r"(.*):(\d+):(\d+): error", run.lines[0])
    assert {(header[1], int(header[2]), int(header[3])), run.notes()[0][:3]} == locs


def test_network_parameter_without_default_is_fine_when_set(tmp_path, capsys):
    run = check(tmp_path, capsys, net("global_avgpool -> flatten -> fc(classes)", head="network n(classes)"),
                "--set", "classes=10")
    assert run.rc == 0, run.err


def test_several_networks_without_choice(tmp_path, capsys):
    run = check(tmp_path, capsys, TWO_NETS)
    assert run.rc == 2
    assert "several networks" in run.lines[0] and "small" in run.lines[0] and "large" in run.lines[0]
    assert "--network" in run.hint
    assert check(tmp_path, capsys, TWO_NETS, "--network", "large").rc == 0


def test_unknown_network_name(tmp_path, capsys):
    run = check(tmp_path, capsys, net("relu", head="network resnet"), "--network", "resnte")
    assert run.rc == 2 and "no network named `resnte`" in run.err and "`resnet`" in run.hint


def test_file_without_network(tmp_path, capsys):
    run = check(tmp_path, capsys, "block b() { relu }\n")
    assert run.rc == 2 and "defines no network" in run.lines[0] and "network name" in run.hint


# ---- command line -----------------------------------------------------------------------------

NET = net("conv(width, 3)", head="network n(width = 16)")

# (options, fragments of the error line, hint)
CLI_CASES = [
    (("--set", "widht=8"), ("no parameter `widht`",), "`width`"),
    (("--set", "width"), ("width", "NAME=VALUE"), None),
    (("--set", "=8"), ("=8", "NAME=VALUE"), None),
    (("--set", "2w=8"), ("2w=8", "NAME=VALUE"), None),
    (("--set", "width=abc"), ("width=abc", "number, true or false"), None),
    (("--input", "3x32"), ("3x32", "CxHxW"), None),
    (("--input", "0x32x32"), ("0x32x32", "positive"), None),
    (("--input", "axbxc"), ("axbxc", "CxHxW"), None),
    (("--input=-3x32x32",), ("-3x32x32", "CxHxW"), None),
    *[(("--set", f"width={value}"), ("--set", value), None) for value in ("nan", "inf", "1e400")],
]


@pytest.mark.parametrize("options, fragments, hint", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_command_line_mistake(tmp_path, capsys, options, fragments, hint):
    run = check(tmp_path, capsys, NET, *options)
    assert_cli_error(run, *fragments, hint=hint)


def test_set_and_input_that_work(tmp_path, capsys):
    run = check(tmp_path, capsys, NET, "--set", "width=8", "--input", "3x16x16")
    assert run.rc == 0 and "ok" in run.out


def test_missing_file(tmp_path, capsys):
    rc = cli_main(["check", str(tmp_path / "nope.arch")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: cannot read") and "nope.arch" in err and "Traceback" not in err


# ---- internal errors ---------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("invariant broken")


def test_internal_error_exits_1_and_says_it_is_a_bug(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCHDSL_DEBUG", raising=False)
    monkeypatch.setattr(Graph, "lint", _boom)
    run = check(tmp_path, capsys, NET)
    assert run.rc == 1
    assert "internal error" in run.err and "RuntimeError: invariant broken" in run.err
    assert "bug" in run.err and "ARCHDSL_DEBUG" in run.err
    assert "Traceback" not in run.err


def test_internal_error_traceback_with_debug(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHDSL_DEBUG", "1")
    monkeypatch.setattr(Graph, "lint", _boom)
    path, _ = write(tmp_path, NET)
    rc = cli_main(["check", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and "bug" in err and "Traceback" in err and "_boom" in err


def test_user_errors_are_arch_errors_in_the_api():
    """The same mistakes through the Python API: an ArchError with a location, no other exception."""
    with pytest.raises(archdsl.ArchError) as info:
        archdsl.loads("network n {\n    input 3x32x32\n    maxpol(2)\n}\n", filename="api.arch")
    err = info.value
    assert (err.loc.file, err.loc.line, err.loc.col) == ("api.arch", 3, 5)
    assert "did you mean `maxpool`" in err.hint
    assert str(err).startswith("api.arch:3:5: error: unknown op or block `maxpol`")
