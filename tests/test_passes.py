"""Compiler passes: inference simplification and conv/fc epilogue fusion (structure and reports)."""

from collections import Counter
from pathlib import Path

import archdsl
from archdsl.passes import PIPELINE, optimize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def ops(g):
    return Counter(g.op(n) for n in g)


def test_resnet50_fuses_every_conv_with_its_bn_and_relu():
    g = archdsl.load(EXAMPLES / "resnet50.arch")
    o = optimize(g)
    after = ops(o.graph)
    # one launch per conv, plus the stem pool, the global pool and the fc: no standalone BN,
    # ReLU or add (the flatten is a view)
    assert after == Counter({"fused_conv": 53, "input": 1, "maxpool": 1, "global_avgpool": 1, "flatten": 1, "fc": 1})
    stem = o.graph.nodes["conv1"]
    assert stem["attrs"]["act"] == "relu" and stem["attrs"]["bn_eps"] == 1e-5
    assert stem["attrs"]["sources"] == {"conv": "conv1", "bn": "bn1"}
    assert stem["meta"]["fused"] == ["conv1", "bn1", "relu"]
    # the residual add and the ReLU after it went into the conv computed last (the projection):
    proj = o.graph.nodes["layer1.0.downsample.0"]
    assert proj["attrs"]["act"] == "relu" and proj["attrs"]["sources"] == {"conv": "layer1.0.downsample.0",
                                                                          "bn": "layer1.0.downsample.1"}
    assert proj["meta"]["fused"] == ["layer1.0.downsample.0", "layer1.0.downsample.1", "layer1.0.add",
                                     "layer1.0.relu_2"]
    assert o.graph.args("layer1.0.downsample.0") == ["maxpool", "layer1.0.conv3"]  # x, residual
    assert o.graph.nodes["layer1.1.conv3"]["attrs"]["act"] == "relu"  # identity blocks: into conv3
    assert o.graph.args("layer1.1.conv3") == ["layer1.1.conv2", "layer1.0.downsample.0"]
    assert archdsl.analyze(o.graph).params == archdsl.analyze(g).params  # nothing lost
    assert len(g) == 176  # the input graph is untouched


def test_inference_noops_are_removed_and_consumers_rewired():
    g = archdsl.loads("network n {\n input 3x8x8\n conv(4, 3) -> dropout(0.5) -> drop_path(0.1) -> identity"
                      " -> relu as r\n @r -> flatten -> head: fc(3) -> relu as h\n output r, h\n}")
    o = optimize(g)
    assert "dropout" not in ops(o.graph) and "identity" not in ops(o.graph)
    assert o.graph.outputs == ["conv", "head"]  # conv+relu fused: the output is now the fused conv
    assert o.graph.nodes["head"]["op"] == "fused_fc" and o.graph.nodes["head"]["attrs"]["act"] == "relu"
    assert o.reports[0].changed == ["removed dropout (dropout)", "removed drop_path (drop_path)",
                                    "removed identity (identity)"]


def test_fusion_is_declined_when_an_intermediate_is_read_elsewhere():
    g = archdsl.loads("network n {\n input 3x8x8\n conv(4, 3) -> bn as b\n relu as r\n @b -> conv(2, 1) as c\n"
                      " output r, c\n}")
    o = optimize(g)
    fuse = o.reports[1]
    assert o.graph.op("conv") == "fused_conv" and o.graph.nodes["conv"]["attrs"]["act"] == "none"
    assert o.graph.op("relu") == "relu"  # bn's output has two readers: the relu stays separate
    assert any("`bn` is read by 2 consumers" in d for d in fuse.declined)


def test_passes_can_be_disabled_and_every_pass_is_named():
    g = archdsl.load(EXAMPLES / "lenet5.arch")
    o = optimize(g, disable=("fuse_conv_bn_act", "fuse_fc_act", "fuse_residual_add", "fuse_bn_act"))
    assert ops(o.graph)["conv"] == 2 and [r.name for r in o.reports] == ["strip_inference_noops"]
    assert [name for name, _ in PIPELINE] == ["strip_inference_noops", "fuse_conv_bn_act", "fuse_fc_act",
                                              "fuse_residual_add", "fuse_bn_act"]


def test_pre_activation_blocks_fuse_bn_with_relu_and_the_add_into_the_last_conv():
    g = archdsl.load(EXAMPLES / "preact_resnet.arch")
    o = optimize(g)
    after = ops(o.graph)
    assert after["bn"] == after["relu"] == after["add"] == 0
    assert after["fused_bn"] == 54  # bn -> relu before each block's convs (and the head)
    fractal = optimize(archdsl.load(EXAMPLES / "fractalnet.arch"))
    assert ops(fractal.graph)["mean"] == 20  # means are declined, with the reason:
    assert all("a mean join" in d for d in fractal.reports[3].declined)


def test_every_example_optimizes_to_a_lint_clean_graph():
    for path in sorted(EXAMPLES.glob("*.arch")):
        g = archdsl.load(path)
        o = optimize(g)
        o.graph.lint()
        assert len(o.graph) <= len(g)
        assert archdsl.analyze(o.graph).macs == archdsl.analyze(g).macs, path.name


# ---- proof: every pass leaves every network's function unchanged -------------------------------------

import pytest  # noqa: E402
import torch  # noqa: E402

from archdsl.passes import fused_state_dict  # noqa: E402
from smaller import load_small  # noqa: E402


def _randomized_reference(g):
    model = archdsl.to_torch(g).double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.1)
    return model


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.arch")), ids=lambda p: p.stem)
def test_every_pass_preserves_every_network(path):
    g = load_small(path)
    reference = _randomized_reference(g)
    x = [torch.randn(2, *g.shape(n), dtype=torch.float64) for n in g.inputs]
    with torch.no_grad():
        expected = reference(*x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    names = [name for name, _ in PIPELINE]
    for keep in [names] + [[n] for n in names]:  # the whole pipeline, and each pass alone
        o = optimize(g, disable=tuple(n for n in names if n not in keep))
        model = archdsl.to_torch(o.graph).double().eval()
        model.load_state_dict(fused_state_dict(o.graph, reference.state_dict()), strict=True)
        with torch.no_grad():
            got = model(*x)
        got = got if isinstance(got, tuple) else (got,)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"{path.stem}: passes {keep}")


def test_cli_explain_passes_and_dump_after(tmp_path, capsys):
    from archdsl.cli import main

    out = str(tmp_path / "o")
    assert main(["compile", str(EXAMPLES / "fractalnet.arch"), "-o", out, "--explain"]) == 0
    text = capsys.readouterr().out
    assert "fuse_residual_add: 0 change(s)" in text and "not fused: fractal1.mean: a mean join" in text
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--passes", "strip_inference_noops",
                 "--dump-after", "strip_inference_noops"]) == 0
    text = capsys.readouterr().out
    assert "= conv(%input, out=6, kernel=5)" in text and "fused_conv" not in text
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--disable", "fuse_residul"]) == 2
    assert "did you mean `fuse_residual_add`" in capsys.readouterr().err
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--disable", "fuse_fc_act",
                 "--dump-after", "fuse_fc_act"]) == 2
    assert "that pass does not run" in capsys.readouterr().err
