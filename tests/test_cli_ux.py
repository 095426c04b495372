"""The command line as a user meets it: quick to start, talks back, hints in their vocabulary.

Speed is measured in benchmarks/scaling.py, never here; these tests check the mechanisms that
make it fast (the parser cache, no torch import before an error is reported).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.cli import main
from archdsl.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error(src: str) -> ArchError:
    with pytest.raises(ArchError) as err:
        archdsl.loads(src)
    return err.value


def net(body: str, before: str = "") -> str:
    return f"{before}network n {{\n    input 3 x 32 x 32\n    {body}\n}}\n"


# ---- start-up ------------------------------------------------------------------------------------


def test_the_parser_tables_are_cached_per_grammar_and_reused(tmp_path, monkeypatch):
    from archdsl.frontend import parser

    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path / "cache"))
    parser._parser.cache_clear()
    try:
        first = parser._parser()
        files = list((tmp_path / "cache").glob("arch-parser-*.pickle"))
        assert len(files) == 1 and files[0].stat().st_size > 1000
        assert not list((tmp_path / "cache").glob("*.tmp"))
        parser._parser.cache_clear()
        built = []
        monkeypatch.setattr(parser, "grammar_text", lambda real=parser.grammar_text: built.append(1) or real())
        second = parser._parser()  # from the cache: the same tables, and the post-lexer still works
        assert second is not first and built
        g = archdsl.loads("network n {\n input 3 x 8 x 8\n conv(4,\n 3)\n}\n")
        assert g.shape("conv") == (4, 6, 6)
        # an edited grammar gets its own file: stale tables are never loaded
        assert parser._cache_path("start: NAME") != files[0]
    finally:
        parser._parser.cache_clear()


def test_an_unusable_cache_directory_falls_back_and_still_parses(tmp_path, monkeypatch):
    from archdsl.frontend import parser

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("ARCHDSL_CACHE", str(blocker / "cache"))  # cannot be created
    parser._parser.cache_clear()
    try:
        path = parser._cache_path(parser.grammar_text())
        assert path is None or blocker not in path.parents
        assert archdsl.loads(net("conv(4, 3)")).shape("conv") == (4, 30, 30)
    finally:
        parser._parser.cache_clear()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_and_summary_never_import_torch():
    done = _python("import sys; from archdsl.cli import main\n"
                   "assert main(['check', 'examples/resnet50.arch']) == 0\n"
                   "assert main(['summary', 'examples/resnet50.arch', '--json']) == 0\n"
                   "print('torch' in sys.modules, file=sys.stderr)")
    assert done.returncode == 0 and done.stderr.strip().endswith("False"), done.stderr


@pytest.mark.parametrize("argv", [
    ["compile", "BAD", "-o", "build/x"],
    ["compile", "examples/lenet5.arch", "-o", "."],
    ["compile", "examples/lenet5.arch", "--tune", "1,x"],
    ["compile", "examples/lenet5.arch", "--disable", "nope"],
    ["compile", "examples/lenet5.arch", "--weights", "missing.pt"],
    ["run", "BAD", "--interpret"],
    ["export", "BAD", "--onnx", "x.onnx"],
    ["export", "examples/lenet5.arch", "--onnx", "no/such/dir/x.onnx"],
])
def test_long_commands_report_user_errors_before_importing_torch(tmp_path, argv):
    bad = tmp_path / "bad.arch"
    bad.write_text(net("conv(4, 3) -> maxpol(2)"))
    argv = [str(bad) if a == "BAD" else a for a in argv]
    done = _python(f"import sys; from archdsl.cli import main\ncode = main({argv!r})\n"
                   "print(code, 'torch' in sys.modules, file=sys.stderr)")
    assert done.stderr.strip().endswith("2 False"), done.stderr


# ---- progress --------------------------------------------------------------------------------------


def test_progress_names_each_stage_on_a_terminal():
    from archdsl.cli.progress import Stages

    stream = io.StringIO()
    with Stages("compile", ["parse", "generate", "write"], stream=stream, enabled=True) as p:
        for stage in ("parse", "generate", "write"):
            p.step(stage)
    shown = stream.getvalue()
    assert "compile: parse" in shown and "compile: generate" in shown and "compile: write" in shown


def test_tuning_progress_counts_signatures_on_a_terminal_only():
    from archdsl.cli.progress import Count

    stream = io.StringIO()
    with Count("tune batch 32", stream=stream, enabled=True) as bar:
        for done in range(3):
            bar(done, 3, f"layer{done}.conv")
        bar(3, 3, "")
    shown = stream.getvalue()
    assert "tune batch 32: layer2.conv" in shown and "2/3" in shown and "3/3" in shown
    quiet = io.StringIO()
    with Count("tune batch 1", stream=quiet) as bar:  # not a terminal
        bar(0, 5, "conv1")
    assert quiet.getvalue() == ""


def test_progress_is_quiet_when_not_a_terminal(capsys, tmp_path):
    from archdsl.cli.progress import Stages

    stream = io.StringIO()  # not a terminal
    with Stages("export", ["a", "b"], stream=stream) as p:
        p.step("a")
    assert stream.getvalue() == ""
    code, out, err = run(capsys, "compile", ROOT / "examples" / "lenet5.arch", "-o", tmp_path / "out")
    assert code == 0 and err == "" and out.startswith("wrote ")


# ---- hints for PyTorch and Keras names --------------------------------------------------------------


@pytest.mark.parametrize("body, words", [
    ("conv(8, 3) -> batchnorm", ["`bn`"]),
    ("conv(8, 3) -> BatchNorm2d(8)", ["`bn`"]),
    ("conv(8, 3) -> ReLU", ["`relu`"]),
    ("flatten -> Linear(10)", ["`fc`", "`linear`"]),
    ("flatten -> dense(10)", ["fc(units)"]),
    ("conv(8, 3, bias=False)", ["`false`"]),
    ("conv(8, 3, bias=True)", ["`true`"]),
])
def test_names_from_pytorch_and_keras_get_archdsls_word(body, words):
    err = error(net(body))
    assert any(w in (err.hint or "") for w in words), err.render()


def test_pytorchs_conv_argument_order_is_caught():
    err = error(net("conv(3, 64, 3) -> relu -> conv(64, 128, 3)"))
    assert "Conv2d(in_channels=3, out_channels=64, kernel_size=3)" in err.message
    assert "conv(64, 3)" in err.hint and err.loc.line == 3


@pytest.mark.parametrize("body", [
    "conv(64, 3, 1) -> conv(64, 3, 2)",              # archdsl's own order
    "conv(3, 7, 2)",                                 # out = in.c with an ordinary kernel
    "conv(16, 3) -> conv(16, 31, 1, 15, groups=16)",  # a large depthwise kernel (RepLKNet)
    "conv(16, 3) -> conv(16, kernel=17, stride=1)",  # a large dense kernel, named
    "conv(3, 16, pad=8)",                            # two positional arguments
])
def test_the_conv_order_rule_spares_valid_networks(body):
    archdsl.loads(net(body))


def test_an_error_inside_a_block_also_points_at_the_call():
    src = net("stage(8) -> stage(16)", before="block stage(c) {\n    conv(c, 3) -> maxpol(2)\n}\n")
    err = error(src)
    assert err.loc.line == 2
    calls = [n for n in err.notes if "called here" in n.message]
    assert [(n.loc.line, n.loc.col) for n in calls] == [(6, 5)] and "`stage`" in calls[0].message


def test_recursive_block_errors_name_a_bounded_number_of_calls():
    src = net("down(40)", before="block down(n) {\n    if n == 0 { maxpol(2) } else { relu -> down(n - 1) }\n}\n")
    err = error(src)
    calls = [n for n in err.notes if "called here" in n.message]
    assert 1 < len(calls) <= 6


# ---- the Python summary a torchinfo user expects ---------------------------------------------------


def test_summary_prints_the_cli_table_and_gives_rows(capsys):
    path = ROOT / "examples" / "resnet50.arch"
    s = archdsl.summary(path, depth=1)
    code, out, _ = run(capsys, "summary", path, "--depth", "1")
    assert code == 0 and out == str(s) + "\n"
    rows = s.rows()
    assert rows[1]["name"] == "conv1" and rows[1]["params"] == 64 * 3 * 7 * 7
    assert s.trainable_params == 25_557_032 and s.non_trainable_params == 0
    assert s.parameter_bytes() == (25_557_032 + s.buffers) * 4
    assert archdsl.summary(archdsl.load(path)).params == s.params  # a Graph works too


def test_summary_batch_scales_activation_and_input_memory(capsys):
    path = ROOT / "examples" / "lenet5.arch"
    one, eight = archdsl.summary(path), archdsl.summary(path, batch=8)
    assert eight.activation_bytes() == 8 * one.activation_bytes()
    assert eight.input_bytes() == 8 * 32 * 32 * 4 and eight.params == one.params
    assert eight.total_bytes() == eight.parameter_bytes() + eight.activation_bytes()
    code, out, _ = run(capsys, "summary", path, "--json", "--batch", "8")
    assert json.loads(out)["totals"]["activation_bytes"] == eight.activation_bytes()
    with pytest.raises(ValueError):
        archdsl.summary(path, batch=0)


def test_the_table_fits_a_narrow_terminal():
    from archdsl.analysis.table import render

    s = archdsl.summary(ROOT / "examples" / "resnet50.arch", depth=1)
    wide = render(s)
    narrow = render(s, width=70)
    table = narrow.split("\n")[1:narrow.split("\n").index("", 1)]
    assert max(len(line) for line in str(wide).split("\n")) > 70
    assert all(len(line) <= 70 for line in table[:18]), table
    assert "Layer" in narrow and "Params" in narrow and "RF/jump" not in narrow


# ---- options ----------------------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"archdsl {archdsl.__version__}"


def test_every_option_has_help():
    parser = build_parser()
    missing = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        missing += [f"{name} {a.option_strings or a.dest}" for a in sub._actions if not a.help]
    assert missing == []


def test_outputs_are_named_the_same_in_check_summary_and_viz(capsys, tmp_path):
    src = tmp_path / "two.arch"
    src.write_text("network two {\n    input 3 x 16 x 16\n    conv(4, 3) as feat -> global_avgpool -> flatten"
                   " -> head: fc(5)\n    @feat -> aux: (global_avgpool -> flatten -> fc(2))\n"
                   "    output head, aux\n}\n")
    g = archdsl.load(src)
    labels = archdsl.analysis.output_labels(g)
    assert labels == ["head", "aux (aux.2)"], labels
    code, out, err = run(capsys, "check", src)
    assert code == 0 and f"outputs: {', '.join(labels)}" in out
    code, out, _ = run(capsys, "summary", src)
    assert f"Outputs      {', '.join(labels)}" in out
    code, out, _ = run(capsys, "viz", src, "-o", "-")
    assert all(f"output {name}" in out for name in archdsl.analysis.output_names(g))
    implicit = archdsl.loads(net("conv(4, 3) -> relu"))
    assert archdsl.analysis.output_names(implicit) == ["relu"] == implicit.graph["output_names"]
