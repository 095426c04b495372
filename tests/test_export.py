"""ONNX export: every example network exports, passes onnx.checker, and onnxruntime agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.cli import main as cli_main
from archdsl.export import export_onnx
from smaller import EXAMPLES, load_small


def run_onnx(path: Path, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)


# Exporting and running a network in onnxruntime takes 2-40 s (measured on a busy 2-core machine):
# the two measured under 2 s stay in the fast tier, the others are the slow one.
FAST_EXPORTS = {"lenet5", "zfnet"}
EXPORT_CASES = [p if p.stem in FAST_EXPORTS else pytest.param(p, marks=pytest.mark.slow)
                for p in sorted(EXAMPLES.glob("*.arch"))]


@pytest.mark.parametrize("path", EXPORT_CASES, ids=lambda p: p.stem)
def test_every_example_exports_and_onnxruntime_agrees(path, tmp_path):
    g = load_small(path)
    model = archdsl.to_torch(g).eval()
    out = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == g.inputs
    assert [o.name for o in proto.graph.output] == g.graph["output_names"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch is symbolic
    xs = [torch.randn(3, *g.shape(n)) for n in g.inputs]  # not the batch it was exported with
    with torch.no_grad():
        ref = model(*xs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = run_onnx(out, xs)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        b = b.numpy()
        assert a.shape == b.shape
        assert np.linalg.norm(a - b) <= 1e-5 * max(np.linalg.norm(b), 1e-6)


def test_cli_export_with_weights(tmp_path, capsys):
    arch = EXAMPLES / "lenet5.arch"
    model = archdsl.build_torch(arch)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    code = cli_main(["export", str(arch), "--onnx", str(tmp_path / "l.onnx"), "--weights", str(tmp_path / "w.pt")])
    assert code == 0 and "wrote" in capsys.readouterr().out
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(tmp_path / "l.onnx", [x])[0], model.eval()(x).numpy(), rtol=1e-4, atol=1e-5)


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(onnx.checker.ValidationError):
        export_onnx(archdsl.build_torch(EXAMPLES / "lenet5.arch"), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_errors_are_user_errors(tmp_path, capsys):
    code = cli_main(["export", str(EXAMPLES / "lenet5.arch"), "--onnx", str(tmp_path / "no" / "x.onnx")])
    assert code == 2 and "no directory" in capsys.readouterr().err
    with pytest.raises(ArchError, match="opset 13 is too old"):
        export_onnx(archdsl.build_torch(EXAMPLES / "lenet5.arch"), tmp_path / "x.onnx", opset=13)
