"""The PyTorch reference backend: structure, numerics, train/eval semantics, weights, training."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl
from archdsl import ArchError, analyze

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def build(text: str, **kw):
    return archdsl.to_torch(archdsl.loads(textwrap.dedent(text), **kw))


def implied_state_dict(g) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes the IR implies, by the conventions of PyTorch's modules."""
    keys = {}
    for n, d in g.walk():
        a, ins = d["attrs"], [g.shape(x) for x in g.args(n)]
        if d["op"] == "conv":
            keys[f"{n}.weight"] = (a["out"], ins[0][0] // a["groups"], *a["kernel"])
            if a["bias"]:
                keys[f"{n}.bias"] = (a["out"],)
        elif d["op"] == "fc":
            keys[f"{n}.weight"] = (a["out"], ins[0][0])
            if a["bias"]:
                keys[f"{n}.bias"] = (a["out"],)
        elif d["op"] == "bn":
            c = ins[0][0]
            if a["affine"]:
                keys[f"{n}.weight"] = keys[f"{n}.bias"] = (c,)
            keys[f"{n}.running_mean"] = keys[f"{n}.running_var"] = (c,)
            keys[f"{n}.num_batches_tracked"] = ()
        elif d["op"] == "linear":  # nn.Linear on the last axis
            keys[f"{n}.weight"] = (a["out"], ins[0][-1])
            if a["bias"]:
                keys[f"{n}.bias"] = (a["out"],)
        elif d["op"] == "layer_norm" and a["affine"]:
            size = ins[0][0] if a["axis"] == 0 else ins[0][-1]
            keys[f"{n}.weight"] = keys[f"{n}.bias"] = (size,)
        elif d["op"] == "layer_scale":  # a bare parameter: the key is the node's name
            keys[n] = (ins[0][0], 1, 1) if len(ins[0]) == 3 else (ins[0][0],)
    return keys


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.arch")), ids=lambda p: p.stem)
def test_every_example_builds_with_the_names_and_sizes_its_graph_implies(path):
    g = archdsl.load(path)
    model = archdsl.to_torch(g)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == implied_state_dict(g)
    assert sum(p.numel() for p in model.parameters()) == analyze(g).params
    assert sum(b.numel() for b in model.buffers()) == analyze(g).buffers


def test_module_tree_mirrors_the_names():
    model = archdsl.build_torch(EXAMPLES / "resnet50.arch", width=8, input_shape=(3, 32, 32))
    assert isinstance(model.layer1[0].conv1, nn.Conv2d)
    assert isinstance(model.layer2[0].downsample[1], nn.BatchNorm2d)
    assert model.get_submodule("layer4.2.conv3").out_channels == 8 * 8 * 4


def test_every_node_runs_with_the_shape_the_ir_predicts():
    g = archdsl.load(EXAMPLES / "googlenet.arch", input_shape=(3, 96, 96), params={"aux": True})
    model = archdsl.to_torch(g).eval()
    seen = {}
    for step in model._steps:
        step.module.register_forward_hook(lambda m, i, o, n=step.node: seen.__setitem__(n, tuple(o.shape[1:])))
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 96, 96))
    assert len(outs) == 3 and all(o.shape == (2, 1000) for o in outs)
    assert seen == {n: g.shape(n) for n in g.nodes if g.op(n) != "input"}


def test_outputs_come_back_in_declared_order():
    model = build("""
        network two {
            input 3 x 8 x 8
            conv(4, 1) as a
            b: conv(2, 1)
            output b, a
        }
    """)
    b, a = model(torch.randn(1, 3, 8, 8))
    assert a.shape[1] == 4 and b.shape[1] == 2


def test_per_side_padding_matches_f_pad_then_conv():
    model = build("network p { input 2 x 9 x 11; conv(3, (2, 4), pad=(0, 1, 2, 1), stride=(1, 2)) }")
    x = torch.randn(2, 2, 9, 11)
    conv = model.conv
    expected = F.conv2d(F.pad(x, (2, 1, 0, 1)), conv.weight, conv.bias, stride=(1, 2))
    torch.testing.assert_close(model(x), expected)


def test_joins_compute_sum_mean_and_channel_concat():
    model = build("""
        network j {
            input 2 x 5 x 5
            relu as x
            @x -> conv(2, 1) as y
            add { @x; @y } as s
            mean { @x; @y; @s } as m
            concat { @m; @x }
        }
    """).eval()
    x = torch.randn(3, 2, 5, 5)
    r = F.relu(x)
    y = model.conv(r)
    torch.testing.assert_close(model(x), torch.cat([(r + y + (r + y)) / 3, r], 1))


def test_dense_is_input_first_and_residual_adds_identity():
    model = build("""
        network d {
            input 4 x 6 x 6
            dense { c: conv(3, 3, pad=1) }
            residual { r: conv(7, 1) }
        }
    """)
    x = torch.randn(1, 4, 6, 6)
    h = torch.cat([x, model.c(x)], 1)
    torch.testing.assert_close(model(x), model.r(h) + h)


def test_pad_channels_appends_zeros():
    model = build("network p { input 3 x 4 x 4; pad_channels(5) }")
    x = torch.randn(2, 3, 4, 4)
    y = model(x)
    torch.testing.assert_close(y[:, :3], x)
    assert torch.count_nonzero(y[:, 3:]) == 0


def test_dropout_and_drop_path_are_identities_in_eval_and_stochastic_in_train():
    model = build("network s { input 4 x 8 x 8; dropout(0.5) -> drop_path(0.5) }")
    x = torch.randn(64, 4, 8, 8)
    model.eval()
    torch.testing.assert_close(model(x), x)
    model.train()
    torch.manual_seed(0)
    y = model.drop_path(x)
    kept = [bool(torch.equal(y[i], x[i] * 2)) for i in range(64)]
    dropped = [bool(torch.count_nonzero(y[i]) == 0) for i in range(64)]
    assert all(k or d for k, d in zip(kept, dropped))  # whole samples, scaled by 1/(1-p)
    assert 16 < sum(kept) < 48
    assert not torch.equal(model.dropout(x), x)


def test_batch_norm_uses_batch_statistics_in_train_and_running_ones_in_eval():
    model = build("network b { input 3 x 4 x 4; bn(momentum=0.5) }")
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    model.train()
    y = model(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.bn.running_mean, 0.5 * x.mean((0, 2, 3)))
    model.eval()
    expected = (x - model.bn.running_mean[None, :, None, None]) / torch.sqrt(model.bn.running_var[None, :, None, None] + 1e-5)
    torch.testing.assert_close(model(x), expected)


def test_a_flat_bn_is_batchnorm1d():
    model = build("network f { input 2 x 3 x 3; flatten -> bn -> fc(4) }")
    assert isinstance(model.bn, nn.BatchNorm1d) and model.bn.num_features == 18
    assert model(torch.randn(5, 2, 3, 3)).shape == (5, 4)


@pytest.mark.slow
def test_matches_a_hand_written_torch_resnet50_replica():
    from test_zoo import tv_resnet50  # torchvision's module structure, written out

    theirs = tv_resnet50().to_empty(device="cpu").eval()  # built on the meta device: give it storage
    torch.manual_seed(0)
    for name, t in theirs.state_dict().items():
        if name.endswith("num_batches_tracked"):
            t.zero_()
        elif name.endswith("running_var"):
            t.uniform_(0.5, 1.5)
        else:
            t.normal_(0, 0.1)
    ours = archdsl.load_weights(archdsl.build_torch(EXAMPLES / "resnet50.arch"), theirs.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.double()(x), theirs.double()(x), rtol=1e-10, atol=1e-10)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = archdsl.build_torch(EXAMPLES / "lenet5.arch").train()
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_a_residual_network_trains_too():
    torch.manual_seed(0)
    model = archdsl.build_torch(EXAMPLES / "resnet50.arch", width=4, classes=5, input_shape=(3, 32, 32)).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first


# ---- load_weights ----------------------------------------------------------------------------------------

SMALL = """
network small {
    input 3 x 8 x 8
    conv1: conv(4, 3, pad=1) -> bn1: bn -> relu
    head: (global_avgpool -> flatten -> fc(2))
}
"""


def test_load_weights_from_dict_pt_and_safetensors(tmp_path):
    src = build(SMALL)
    for p in src.parameters():
        nn.init.normal_(p)
    state = src.state_dict()
    torch.save(state, tmp_path / "w.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    sources = [state, src, tmp_path / "w.pt", str(tmp_path / "ckpt.pth"), tmp_path / "w.safetensors"]
    x = torch.randn(2, 3, 8, 8)
    expected = src.eval()(x)
    for source in sources:
        model = archdsl.load_weights(archdsl.loads(SMALL), source).eval()
        torch.testing.assert_close(model(x), expected)
        assert model.load_report.ok and model.load_report.loaded == len(state)


def test_load_weights_reports_every_kind_of_mismatch():
    model = build(SMALL)
    state = dict(model.state_dict())
    state["conv_one.weight"] = state.pop("conv1.weight")
    state["head.2.weight"] = torch.zeros(3, 4)
    state["extra.bias"] = torch.zeros(1)
    with pytest.raises(ArchError) as exc:
        archdsl.load_weights(model, state)
    text = exc.value.message
    assert "1 key(s) missing from the source: conv1.weight" in text
    assert "2 key(s) in the source but not in the model: conv_one.weight, extra.bias" in text
    assert "shape mismatch at head.2.weight: the model has (2, 4), the source (3, 4)" in text
    assert "labels in the .arch file become state-dict keys" in exc.value.hint
    lenient = archdsl.load_weights(model, state, strict=False)
    assert lenient.load_report.missing == ["conv1.weight"]
    assert lenient.load_report.loaded == len(state) - 3


def test_load_weights_rejects_unreadable_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ArchError, match="cannot read weights"):
        archdsl.load_weights(archdsl.loads(SMALL), bad)
    with pytest.raises(ArchError, match="no weights file"):
        archdsl.load_weights(archdsl.loads(SMALL), tmp_path / "missing.pt")
    for garbage in (b"", b"1234", b"\xff" * 64):
        (tmp_path / "bad.safetensors").write_bytes(garbage)
        with pytest.raises(ArchError, match="not a valid safetensors file"):
            archdsl.load_weights(archdsl.loads(SMALL), tmp_path / "bad.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ArchError, match="not a state dict"):
        archdsl.load_weights(archdsl.loads(SMALL), tmp_path / "list.pt")


def test_importing_archdsl_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, archdsl; archdsl.analyze(archdsl.loads('network n { input 3x8x8; relu }')); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
