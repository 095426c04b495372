"""Code generation: deterministic, readable, standalone, and safe against hostile names."""

from __future__ import annotations

import ast
import io
import json
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.cli import main as cli_main
from archdsl.codegen.artifacts import write_safetensors
from archdsl.runtime import build

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def program(path, **kw):
    return build(archdsl.load(path, **kw), origin=Path(path).name).program


def test_generation_is_deterministic():
    a = program(EXAMPLES / "resnet50.arch").source
    b = program(EXAMPLES / "resnet50.arch").source
    assert a == b
    ast.parse(a)


def test_each_launch_names_its_nodes_and_arch_line():
    p = program(EXAMPLES / "resnet50.arch")
    src = p.source
    assert "# conv1 + bn1 + relu   [resnet50.arch:" in src
    line = int(src.split("# conv1 + bn1 + relu   [resnet50.arch:")[1].split("]")[0])
    assert "conv1: conv(" in (EXAMPLES / "resnet50.arch").read_text().splitlines()[line - 1]
    call = src.split("# conv1 + bn1 + relu   [resnet50.arch:")[2].splitlines()[1].strip()
    assert call.startswith("conv2d(t['input'], w['conv1.w'], t['conv1'], kernel=(7, 7), stride=(2, 2), pad=(3, 3, 3, 3)")
    assert call.endswith("bias=w['conv1.b'], act=ACT_RELU, **tuned['conv1'])")
    # 53 fused convs (bn, residual add and relu inside), maxpool, gap, fc; less one launch for
    # layer1.0's projection (a sibling of its conv1) and 13 for the 3x3 -> 1x1 chains of layers 1-3
    assert p.launches == 53 + 1 + 1 + 1 - 1 - 13
    counts = p.kernel_counts()
    assert counts["conv2d_chain"] == 13 and counts["conv2d"] == 53 - 1 - 2 * 13
    # a chain launch names both convs, a sibling launch every output it writes
    chain = src.split("(one kernel: the intermediate stays on chip)")[5].splitlines()[1].strip()
    assert chain.startswith("conv2d_chain(t['layer2.1.conv1'], ") and "w['layer2.1.conv2.w'], w['layer2.1.conv3.w']" in chain, chain
    assert "# layer2.1.conv2 + layer2.1.bn2 + layer2.1.relu_1   [resnet50.arch:" in src
    sib = src.split("(siblings: one GEMM, 2 outputs)")[1].splitlines()[1].strip()
    assert sib.startswith("conv2d(t['maxpool'], w['layer1.0.conv1.w'], (t['layer1.0.conv1'], t['layer1.0.downsample.0'])")
    assert "act=(ACT_RELU, ACT_NONE)" in sib


def test_generated_module_is_standalone():
    src = program(EXAMPLES / "lenet5.arch").source
    imports = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add((node.module or "").split(".")[0])
    assert imports <= {"collections", "math", "os", "torch", "triton", "json", "struct", "__future__"}, imports


HOSTILE = """
block __import__(pwned_param = "x\\"); import os; os.system('echo pwned') #") {
    pwned_label: conv(4, 3, pad=1) -> exec: relu
}
network eval(pwned_width = 4) {
    input 3 x 8 x 8
    __class__: __import__ -> None_: conv(pwned_width, 1) -> print: flatten -> lambda_: fc(2)
}
"""


def test_hostile_names_cannot_inject_code():
    g = archdsl.loads(HOSTILE, filename="evil\n__import__('os').system('x')\n.arch")
    src = build(g, origin="evil\n__import__('os').system('x')\n.arch").program.source
    tree = ast.parse(src)
    code_names = {t.string for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.NAME}
    for hostile in ("pwned_label", "pwned_param", "pwned_width", "None_", "lambda_", "__class__"):
        assert hostile not in code_names  # only ever inside string literals or comments
    assert "os.system" not in src.replace("__import__('os').system", "")  # the file name is neutralized
    top = [type(n).__name__ for n in tree.body]
    assert set(top) <= {"Expr", "Import", "ImportFrom", "Assign", "AnnAssign", "FunctionDef", "ClassDef", "If"}


def test_cli_compile_writes_model_weights_and_report(tmp_path, capsys):
    out = tmp_path / "lenet"
    code = cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out)])
    assert code == 0 and "kernel launches per forward" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".archdsl-output.json", "model.py", "report.json", "report.md",
                                                     "weights.safetensors"]
    report = json.loads((out / "report.json").read_text())
    assert report["launches_per_forward"] == 7 and report["kernels"] == {"conv2d": 2, "linear": 3, "max_pool2d": 2}
    assert {f["node"] for f in report["fused"]} == {"features.0.conv", "features.1.conv", "classifier.0",
                                                     "classifier.2"}
    from safetensors.torch import load_file

    weights = load_file(str(out / "weights.safetensors"))
    assert set(weights) == set(archdsl.build_torch(EXAMPLES / "lenet5.arch").state_dict())
    # compiling again replaces an earlier output; a file archdsl did not write is kept unless --force
    assert cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out)]) == 0
    (out / "stale.txt").write_text("x")
    assert cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out)]) == 2 and (out / "stale.txt").exists()
    assert cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out), "--force"]) == 0
    assert not (out / "stale.txt").exists()


def test_a_failed_compile_leaves_nothing(tmp_path, monkeypatch, capsys):
    import archdsl.codegen.artifacts as artifacts

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "write_safetensors", broken)
    code = cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(tmp_path / "out")])
    assert code == 2 and "disk full" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_safetensors_writer_reads_back_with_the_reference_library(tmp_path):
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 4), "b.c": torch.arange(5), "n": torch.tensor(7), "h": torch.randn(2).half(),
               "e": torch.empty(0, 3)}
    write_safetensors(tensors, tmp_path / "w.safetensors")
    back = load_file(str(tmp_path / "w.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


@pytest.mark.slow
def test_generated_program_runs_as_a_separate_process(tmp_path):
    """The artifacts are usable without archdsl: import model.py, load the weights, run."""
    out = tmp_path / "lenet"
    assert cli_main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out)]) == 0
    script = (
        "import os, sys; os.environ['TRITON_INTERPRET'] = '1'; sys.path.insert(0, sys.argv[1]);"
        "import builtins; real = builtins.__import__;"
        "builtins.__import__ = lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n)) if n.startswith('archdsl') "
        "else real(n, *a, **k);"
        "import torch, model; net = model.load(sys.argv[1] + '/weights.safetensors', device='cpu');"
        "print(tuple(net(torch.randn(2, 1, 32, 32)).shape))"
    )
    run = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(2, 10)"


@pytest.mark.slow
def test_byte_identical_across_processes_with_different_hash_seeds(tmp_path):
    """Set and dict orders that depend on string hashing differ between processes: the source must
    not.  GoogLeNet (siblings, concats), DenseNet (prologues, nested concat slices), FractalNet
    (mean joins) each generated under three PYTHONHASHSEEDs."""
    script = ("import sys, archdsl\nfrom archdsl.runtime import build\n"
              "for name in ('googlenet', 'densenet121', 'fractalnet'):\n"
              "    g = archdsl.load(f'examples/{name}.arch')\n"
              "    sys.stdout.write(build(g, origin=f'examples/{name}.arch').program.source)\n")
    root = Path(__file__).resolve().parents[1]
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr
        outs.add(run.stdout)
    assert len(outs) == 1 and "class Network" in outs.pop()


def test_only_the_templates_it_uses():
    lenet = program(EXAMPLES / "lenet5.arch").source
    assert "# ===== kernels/conv2d.py" in lenet.replace("=" * 30, "=====")
    assert "def conv2d_chain(" not in lenet and "def lrn(" not in lenet  # no chain, no LRN in LeNet-5
    alexnet = program(EXAMPLES / "alexnet.arch").source
    assert "def lrn(" not in alexnet or "lrn(" in alexnet.split("class Network")[1]
    # every template function the network calls is defined in the module (it imports and runs alone)
    ast.parse(lenet)


def test_prepare_is_a_table_and_a_loop():
    src = program(EXAMPLES / "resnet50.arch").source
    table = src.split("WEIGHTS = [")[1].split("]\nPREPARE")[0]
    rows = [ast.literal_eval(line.strip().rstrip(",")) for line in table.splitlines()
            if line.strip().startswith("(")]
    assert sum(r[0] == "conv" for r in rows) == 53 and sum(r[0] == "fc" for r in rows) == 1
    assert ("conv", "conv1", "conv1", "bn1", 1e-05, 1, True) in rows
    assert [r for r in rows if r[0] == "siblings"] == [
        ("siblings", "layer1.0.conv1", ("layer1.0.conv1", "layer1.0.downsample.0"), (64, 256), (True, True))]
    assert "    for kind, *args in WEIGHTS:\n        PREPARE[kind](w, state, *args)" in src


@pytest.mark.parametrize("path, words, shown", [
    ("examples/resnet50.arch", ["--set", "classes=10"], "archdsl compile examples/resnet50.arch --set classes=10"),
    ("my nets/a'b.arch", ["--input", "3x32x32"], "archdsl compile 'my nets/a'\"'\"'b.arch' --input 3x32x32"),
    ("evil\nimport os.arch", [], "archdsl compile <unprintable>"),
])
def test_the_regenerate_line_is_a_runnable_command(path, words, shown):
    from archdsl.codegen.emit import regenerate_command

    line = regenerate_command(path, words)
    assert line == shown and "\n" not in line


def test_the_regenerate_line_regenerates(tmp_path, monkeypatch):
    """The header's command, run as written (from the directory it names its file from), makes the
    same model.py."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    first = tmp_path / "first"
    assert cli_main(["compile", "examples/lenet5.arch", "-o", str(first), "--set", "classes=7", "--dtype", "fp16"]) == 0
    source = (first / "model.py").read_text(encoding="utf-8")
    line = next(x for x in source.splitlines() if x.startswith("# regenerate with: "))
    words = shlex.split(line.removeprefix("# regenerate with: "))
    assert words[:2] == ["archdsl", "compile"] and "classes=7" in words
    again = tmp_path / "again"
    assert cli_main(words[1:] + ["-o", str(again)]) == 0
    assert (again / "model.py").read_text(encoding="utf-8") == source
