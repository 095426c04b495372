"""No input a user can give loses their files, crashes with an internal error, or ships bad weights.

Each test here failed before the change it covers (issue 12): `compile -o` deleted a directory's
other files, labels named like Module attributes crashed the torch backend and ONNX export,
`1/2` as a parameter crashed `summary --json`, non-tensor `.pt` entries, NaN weights, etc.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TINY = """
network tiny(width = 4) {
    input 3 x 8 x 8
    conv1: conv(width, 3, pad=1) -> bn1: bn -> relu
    flatten -> fc(5)
}
"""


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(TINY)
    return path


# ---- compile -o never deletes what archdsl did not write ------------------------------------------


def test_compile_refuses_a_directory_holding_a_users_files_and_force_replaces_it(capsys, tiny, tmp_path):
    out = tmp_path / "mine"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "src" / "a.py").write_text("print(1)")
    code, _, err = run(capsys, "compile", tiny, "-o", out)
    assert code == 2 and "notes.txt" in err and "--force" in err and "internal error" not in err
    assert (out / "notes.txt").read_text() == "my notes" and (out / "src" / "a.py").exists()
    code, _, _ = run(capsys, "compile", tiny, "-o", out, "--force")
    assert code == 0 and not (out / "notes.txt").exists() and (out / "model.py").is_file()


def test_compile_creates_missing_parent_directories(capsys, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no build/ yet (the README's first command)
    assert run(capsys, "compile", tiny)[0] == 0 and (tmp_path / "build" / "tiny" / "model.py").is_file()
    assert run(capsys, "compile", tiny, "-o", "a/b/c")[0] == 0 and (tmp_path / "a/b/c/model.py").is_file()


def test_compile_replaces_its_own_earlier_output_and_an_empty_directory(capsys, tiny, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert run(capsys, "compile", tiny, "-o", out)[0] == 0
    manifest = json.loads((out / ".archdsl-output.json").read_text())
    assert sorted(manifest["files"]) == ["model.py", "report.json", "report.md", "weights.safetensors"]
    assert run(capsys, "compile", tiny, "-o", out, "--set", "width=6")[0] == 0  # an archdsl output: replaced
    assert "width=6" in (out / "report.md").read_text()
    (out / "mine.txt").write_text("added by the user")  # now it holds something archdsl did not write
    code, _, err = run(capsys, "compile", tiny, "-o", out)
    assert code == 2 and "mine.txt" in err and (out / "mine.txt").exists()


@pytest.mark.parametrize("case", ["file", "dot", "dotdot", "long", "parent-file", "unwritable"])
def test_every_output_path_problem_is_a_clear_error(capsys, tiny, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    target = {"file": "afile", "dot": ".", "dotdot": "..", "long": "x" * 300, "parent-file": "afile/sub",
              "unwritable": "/proc/archdsl-out"}[case]
    code, out, err = run(capsys, "compile", tiny, "-o", target)
    assert code == 2, err
    assert "error:" in err and "internal error" not in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".archdsl")]  # no temporary left


def test_a_failure_while_writing_leaves_the_old_output_whole_and_no_temporary(capsys, tiny, tmp_path,
                                                                              monkeypatch):
    from archdsl.codegen import artifacts

    out = tmp_path / "build"
    assert run(capsys, "compile", tiny, "-o", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "write_safetensors", disk_full)
    code, _, err = run(capsys, "compile", tiny, "-o", out, "--set", "width=6")
    assert code == 2 and "No space left" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "tiny.arch"]


def test_compile_without_weights_is_byte_identical_every_time(capsys, tiny, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    torch.manual_seed(123)
    assert run(capsys, "compile", tiny, "-o", a)[0] == 0
    torch.manual_seed(456)  # the caller's random state must not matter
    assert run(capsys, "compile", tiny, "-o", b)[0] == 0
    for name in ("weights.safetensors", "model.py", "report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # and the weights are a real initialization, not zeros
    w = archdsl.to_torch(archdsl.load(tiny), seed=0).state_dict()["conv1.weight"]
    assert w.abs().sum() > 0 and torch.equal(w, archdsl.to_torch(archdsl.load(tiny), seed=0).state_dict()["conv1.weight"])


# ---- labels that are nn.Module attribute names -----------------------------------------------------

ATTR_LABELS = ["forward", "training", "to", "eval", "state_dict", "cuda", "_modules", "graph", "double"]


def _attr_net() -> str:
    chain = " -> ".join(f"{name}: conv(4, 1)" for name in ATTR_LABELS)
    return f"network n {{\n    input 3 x 6 x 6\n    {chain} -> bn -> flatten -> fc(3)\n}}\n"


def _plain_net() -> str:
    chain = " -> ".join(f"c{i}: conv(4, 1)" for i in range(len(ATTR_LABELS)))
    return f"network n {{\n    input 3 x 6 x 6\n    {chain} -> bn -> flatten -> fc(3)\n}}\n"


def test_labels_named_like_module_attributes_build_train_and_compute_the_same():
    model = archdsl.to_torch(archdsl.loads(_attr_net()))
    plain = archdsl.to_torch(archdsl.loads(_plain_net()))
    keys = list(model.state_dict())
    assert [k.split(".")[0] for k in keys[:2 * len(ATTR_LABELS):2]] == ATTR_LABELS
    renamed = dict(zip(plain.state_dict(), model.state_dict().values()))
    plain.load_state_dict(renamed)
    model.eval(), plain.eval()
    assert model.training is False and model["training"].training is False
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    model.train()
    assert model.training is True and callable(model.forward) and callable(model.to)
    reloaded = archdsl.to_torch(archdsl.loads(_attr_net()))
    archdsl.load_weights(reloaded, model.state_dict())
    torch.testing.assert_close(reloaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_labels_named_like_module_attributes_export_to_onnx(capsys, tmp_path):
    pytest.importorskip("onnx")
    src = tmp_path / "attrs.arch"
    src.write_text(_attr_net())
    out = tmp_path / "attrs.onnx"
    code, stdout, err = run(capsys, "export", src, "--onnx", out)
    assert code == 0, err
    import onnx

    proto = onnx.load(str(out))
    # the implicit output is named by its layer, as check and summary print it
    assert [o.name for o in proto.graph.output] == ["fc"] and "outputs: fc" in stdout


# ---- values that crashed ---------------------------------------------------------------------------


def test_a_fractional_network_parameter_summarizes_and_compiles(capsys, tmp_path):
    src = tmp_path / "frac.arch"
    src.write_text("network n(e = 1/2, c = 8 * 3/4) {\n    input 3 x 8 x 8\n    conv(c, 3) -> flatten -> fc(4)\n}\n")
    g = archdsl.load(src)
    assert g.graph["params"] == {"e": 0.5, "c": 6} and type(g.graph["params"]["c"]) is int
    code, out, err = run(capsys, "summary", src, "--json")
    assert code == 0, err
    assert json.loads(out)["params_env"] == {"e": 0.5, "c": 6}
    code, _, err = run(capsys, "compile", src, "-o", tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["params"] == {"e": 0.5, "c": 6}


def test_a_pt_file_holding_non_tensors_is_an_arch_error(tiny, tmp_path):
    model = archdsl.to_torch(archdsl.load(tiny))
    state = dict(model.state_dict())
    state["conv1.weight"] = [1.0, 2.0]
    state["epoch"] = 3
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(ArchError) as err:
        archdsl.load_weights(model, str(path))
    assert "conv1.weight" in err.value.message and "not tensors" in err.value.message


def test_a_network_too_large_to_allocate_names_the_layer_and_its_bytes_before_allocating(capsys, tmp_path):
    src = tmp_path / "big.arch"
    src.write_text("network big {\n    input 1 x 1024 x 1024\n    flatten -> head: fc(1000000)\n}\n")
    g = archdsl.load(src)
    need = (1024 * 1024 * 1_000_000 + 1_000_000) * 4
    with pytest.raises(ArchError) as err:
        archdsl.to_torch(g)
    assert "`head`" in err.value.message and f"{need:,} bytes" in err.value.message
    assert err.value.loc.line == 3
    for command in (["compile", src, "-o", tmp_path / "o"], ["run", src, "--interpret"],
                    ["export", src, "--onnx", tmp_path / "big.onnx"]):
        code, _, stderr = run(capsys, *command)
        assert code == 2 and "`head`" in stderr and "internal error" not in stderr


def test_the_memory_check_lets_a_network_that_fits_through():
    from archdsl.analysis import check_weight_memory

    g = archdsl.loads(TINY)
    need = 4 * sum(m.numel() for m in archdsl.to_torch(g).state_dict().values())
    check_weight_memory(g, available=need)  # exactly fits
    with pytest.raises(ArchError):
        check_weight_memory(g, available=need - 1)


# ---- bad weights -----------------------------------------------------------------------------------


def _saved(tmp_path, tiny, change) -> str:
    state = {k: v.clone() for k, v in archdsl.to_torch(archdsl.load(tiny)).state_dict().items()}
    change(state)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("what, change, words", [
    ("nan", lambda s: s["conv1.weight"].view(-1).__setitem__(0, math.nan), ["conv1.weight", "NaN"]),
    ("inf", lambda s: s["fc.bias"].__setitem__(1, math.inf), ["fc.bias", "infinite"]),
    ("negative-variance", lambda s: s["bn1.running_var"].__setitem__(0, -0.5), ["bn1.running_var", "negative"]),
    ("integers", lambda s: s.__setitem__("fc.weight", s["fc.weight"].to(torch.int8)), ["fc.weight", "int8"]),
])
def test_weights_no_network_can_use_are_refused(capsys, tiny, tmp_path, what, change, words):
    path = _saved(tmp_path, tiny, change)
    with pytest.raises(ArchError) as err:
        archdsl.load_weights(archdsl.to_torch(archdsl.load(tiny)), path)
    assert all(w in err.value.message for w in words)
    code, _, stderr = run(capsys, "compile", tiny, "--weights", path, "-o", tmp_path / "out")
    assert code == 2 and words[0] in stderr and not (tmp_path / "out").exists()


def test_float64_weights_load_with_a_warning(capsys, tiny, tmp_path):
    path = _saved(tmp_path, tiny, lambda s: s.__setitem__("fc.weight", s["fc.weight"].double() / 3))
    model = archdsl.load_weights(archdsl.to_torch(archdsl.load(tiny)), path)
    assert model.state_dict()["fc.weight"].dtype == torch.float32
    assert any("fc.weight" in w and "float64" in w for w in model.load_report.warnings)
    code, _, err = run(capsys, "compile", tiny, "--weights", path, "-o", tmp_path / "out")
    assert code == 0 and "warning" in err and "fc.weight" in err


# ---- the Python API tells paths and source apart ---------------------------------------------------


def test_load_takes_paths_and_loads_takes_text(tmp_path):
    odd = tmp_path / "net{v2}.arch"
    odd.write_text(TINY)
    assert archdsl.load(odd).name == "tiny" and archdsl.load(str(odd)).name == "tiny"
    assert archdsl.summary(str(odd)).network == "tiny"
    with pytest.raises(TypeError, match=r"archdsl\.loads\(text\)"):
        archdsl.load(TINY)
    with pytest.raises(TypeError):
        archdsl.loads(odd)
    with pytest.raises(TypeError, match=r"archdsl\.load\(path\)"):
        archdsl.loads(str(odd))


# ---- where errors point, and what they print -------------------------------------------------------


@pytest.mark.parametrize("deep, line", [
    ("    conv(4, 3) -> " + "{" * 3000 + "relu" + "}" * 3000, 3),
    ("    conv(4, 3)\n    let y = " + "-" * 30000 + "1", 4),
])
def test_nesting_errors_point_at_the_nesting(tmp_path, deep, line):
    src = f"network n {{\n    input 3 x 8 x 8\n{deep}\n}}\n"
    with pytest.raises(ArchError) as err:
        archdsl.loads(src)
    assert "nested too deeply" in err.value.message
    assert (err.value.loc.line, err.value.loc.col) != (1, 1) and err.value.loc.line == line


def test_file_names_with_escape_sequences_are_printed_escaped(capsys, tmp_path):
    evil = tmp_path / "x\x1b[2J\x1b[31mred.arch"
    evil.write_text("network n {\n    input 3 x 8 x 8\n    conv(4, 3) -> maxpol(2)\n}\n")
    code, _, err = run(capsys, "check", evil)
    assert code == 2 and "\x1b" not in err and "\\x1b[2J" in err
    evil.write_text(TINY)
    code, out, _ = run(capsys, "check", evil)
    assert code == 0 and "\x1b" not in out and "\\x1b[31m" in out
    code, _, err = run(capsys, "compile", tiny_path(tmp_path), "-o", tmp_path / "o\x1b[1m")
    assert "\x1b" not in err


def tiny_path(tmp_path: Path) -> Path:
    path = tmp_path / "plain.arch"
    path.write_text(TINY)
    return path


def test_an_unreadable_weights_path_fails_before_compiling(capsys, tiny, tmp_path):
    code, _, err = run(capsys, "compile", tiny, "--weights", tmp_path / "missing.pt", "-o", tmp_path / "o")
    assert code == 2 and "missing.pt" in err and not (tmp_path / "o").exists()
    assert os.listdir(tmp_path) == ["tiny.arch"]


def test_an_op_without_a_kernel_is_a_located_error_before_torch(tmp_path, monkeypatch, capsys):
    """An op the code generator cannot lower (gelu, with its rule taken away here: every op has one
    once issue 13's lowering is done) is exit 2 at its line, for compile and run, before anything
    is built or written; the API raises the same ArchError."""
    from archdsl.codegen import emit
    from archdsl.runtime import model as runtime_model

    monkeypatch.delitem(emit.RULES, "gelu", raising=False)
    monkeypatch.setattr(runtime_model, "build", lambda *a, **k: pytest.fail("built before the check"))
    src = tmp_path / "g.arch"
    src.write_text("network g {\n    input 3 x 8 x 8\n    conv(8, 3, pad=1) -> gelu\n}\n")
    for argv in (["compile", str(src), "-o", str(tmp_path / "out")], ["run", str(src), "--interpret"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "g.arch:3:26: error: `gelu`: archdsl compile has no Triton kernel for `gelu`" in err
        assert "not lowered yet: gelu" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(archdsl.ArchError, match="no Triton kernel for `gelu`"):
        emit.check_lowerable(archdsl.load(src))


def test_a_compiled_model_says_what_shape_it_was_compiled_for():
    model = archdsl.compile(EXAMPLES / "lenet5.arch", device="cpu")
    with pytest.raises(ValueError, match=r"compiled for input `input` of shape \(N, 1, 32, 32\); got \(2, 1, 28, 28\)"
                                         r".*input_shape=\(1, 28, 28\).*--input 1x28x28"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"without its batch dimension: pass x.unsqueeze\(0\)"):
        model(torch.randn(1, 32, 32))
    with pytest.raises(TypeError, match="takes 1 input"):
        model(torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="must be a tensor, got list"):
        model([1.0])


def test_a_standalone_program_says_how_to_run_without_a_gpu(tmp_path):
    """model.py on a machine without a GPU: not Triton's "0 active drivers" but what to do."""
    out = tmp_path / "out"
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(out)]) == 0
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = "import model\ntry:\n    model.load('weights.safetensors', device={dev!r})\nexcept RuntimeError as e:\n    print(e)\n"
    r = subprocess.run([sys.executable, "-c", script.format(dev="cpu")], cwd=out, env=env, capture_output=True,
                       text=True, timeout=300)
    assert "set TRITON_INTERPRET=1 before this program is imported" in r.stdout, r.stderr[-2000:]
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, "-c", script.format(dev="cuda")], cwd=out, env=env,
                           capture_output=True, text=True, timeout=300)
        assert "no CUDA GPU here" in r.stdout and "device='cpu'" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", "import model, torch\n"
                        "print(tuple(model.load('weights.safetensors', device='cpu')(torch.randn(2, 1, 32, 32)).shape))"],
                       cwd=out, env={**env, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "(2, 10)", r.stderr[-2000:]


def test_atomic_writes_leave_an_ordinary_file_or_the_old_one(tmp_path, monkeypatch):
    """archdsl.fileio, through which import, viz, bench reports and the tuning cache write: the new
    file has the permissions a new file gets (not mkstemp's private 0600); a failed rename keeps
    the old file and leaves no temporary file."""
    from archdsl import fileio

    umask = os.umask(0o022)
    try:
        fileio.write_atomically(tmp_path / "a.arch", "network a {}\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.arch").read_text() == "network a {}\n"
    assert (tmp_path / "a.arch").stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(fileio.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        fileio.write_atomically(tmp_path / "a.arch", b"new")
    assert (tmp_path / "a.arch").read_text() == "network a {}\n" and os.listdir(tmp_path) == ["a.arch"]
