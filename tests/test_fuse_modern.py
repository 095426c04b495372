"""Fusions for the modern networks (issue 13): gelu in both forms in GEMM epilogues, ConvNeXt's
channels-last stretch computed channels-first (its linears as 1x1 GEMMs, `passes/layout.py`),
the layer scale folded into the GEMM before it (`passes/scale.py`) and so the block's residual
add in that GEMM's epilogue.  Pass structure and launch counts here are cheap; the compiled
programs run under the Triton interpreter against the float64 reference (slow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archdsl
from archdsl.ops import registry as reg
from archdsl.passes import optimize
from archdsl.runtime.model import build
from compiled_check import compiled_error, randomize_all
from smaller import EXAMPLES
from test_passes import assert_same_function, report

MINE = ("to_channels_first", "fold_layer_scale")  # the passes this file is about

# Two ConvNeXt blocks (torchvision's CNBlock), the second with the tanh form of GELU.
CONVNEXT_LIKE = """
block cn_block(approx) {
    residual {
        "block": (conv(in.c, 7, pad=3, groups=in.c) -> permute((1, 2, 0)) -> layer_norm(eps=1e-6, axis=-1)
                  -> linear(4 * in.c) -> gelu(approximate=approx) -> linear(in.c) -> permute((2, 0, 1)))
        layer_scale: layer_scale(1e-6)
        stochastic_depth(0.1)
    }
}

network cn {
    input 3 x 9 x 7
    stem: (conv(8, 2, stride=2) -> layer_norm(eps=1e-6))
    b1: cn_block("none")
    b2: cn_block("tanh")
    head: (layer_norm(eps=1e-6) -> global_avgpool -> flatten -> linear(12) -> gelu -> fc(5))
}
"""

BLOCK_LAUNCHES_BEFORE = 7  # dwconv, layer norm, linear, gelu, linear, layer scale, add
BLOCK_LAUNCHES_AFTER = 4  # dwconv, layer norm, linear+gelu, linear+scale+residual


def ops(g) -> list[str]:
    return [g.op(n) for n in g.order()]


def launches(graph, disable=()) -> int:
    return build(graph, disable=disable).program.launches


# ---- the act table: one place says which activations an epilogue applies, gelu's two forms included -----


def test_gelu_forms_come_from_the_act_table():
    table = reg.act_table()
    assert table["gelu"] == ("gelu", reg.ActForm("gelu", 8, (("approximate", "none"),)))
    assert table["gelu_tanh"][0] == "gelu" and table["gelu_tanh"][1].code == 9
    assert reg.epilogue_act("gelu", {"approximate": "none"}) == "gelu"
    assert reg.epilogue_act("gelu", {"approximate": "tanh"}) == "gelu_tanh"
    assert reg.epilogue_act("gelu", {"approximate": "cubic"}) is None  # no kernel form: never fused
    assert reg.epilogue_act("relu", {}) == "relu" and reg.epilogue_act("conv", {}) is None
    assert "gelu" in reg.activation_ops() and "gelu_tanh" not in reg.activation_ops()  # an act, not an op
    assert reg.act_constant("gelu_tanh") == "ACT_GELU_TANH"
    x = torch.linspace(-6, 6, 25, dtype=torch.float64)
    assert torch.equal(reg.apply_activation("gelu", x), F.gelu(x))
    assert torch.equal(reg.apply_activation("gelu_tanh", x), F.gelu(x, approximate="tanh"))
    assert not torch.equal(F.gelu(x), F.gelu(x, approximate="tanh"))  # the two forms do differ


@pytest.mark.parametrize("approx,act", [("none", "gelu"), ("tanh", "gelu_tanh")])
def test_gelu_fuses_into_conv_fc_and_add_epilogues(approx, act):
    g = archdsl.loads(f"""network n {{
        input 4 x 5 x 5
        conv(6, 3, pad=1) -> gelu(approximate="{approx}") as a
        add {{ @a; conv(6, 1) }} -> gelu(approximate="{approx}") as b
        add {{ @b; @a }} -> gelu(approximate="{approx}") -> flatten -> fc(3) -> gelu(approximate="{approx}")
    }}""")
    o = optimize(g)
    assert "gelu" not in ops(o.graph)
    acts = {o.graph.op(n): o.graph.nodes[n]["attrs"]["act"] for n in o.graph.order() if "act" in o.graph.nodes[n]["attrs"]}
    assert acts == {"fused_conv": act, "fused_add": act, "fused_fc": act}
    residual = [n for n in o.graph.order() if o.graph.op(n) == "fused_conv" and len(o.graph.args(n)) == 2]
    assert len(residual) == 1 and o.graph.nodes[residual[0]]["attrs"]["act"] == act  # act(conv + residual)
    assert f"act=ACT_{act.upper()}" in build(g).program.source
    assert_same_function(g, o)


# ---- ConvNeXt's block: permutes gone, linears as GEMMs, gelu, layer scale and residual in epilogues -------


def test_convnext_block_structure():
    g = archdsl.loads(CONVNEXT_LIKE)
    o = optimize(g)
    og = o.graph
    assert not {"permute", "linear", "layer_scale", "gelu", "add", "stochastic_depth"} & set(ops(og))
    assert og.op("head.3") == "fused_fc" and og.nodes["head.3"]["attrs"]["act"] == "gelu"  # the flat linear
    assert len(report(o, "to_channels_first").changed) == 2 and not report(o, "to_channels_first").declined
    linears = {n: og.nodes[n]["attrs"] for n in og.order() if "linear" in og.nodes[n]["attrs"].get("sources", {})}
    assert sorted(linears) == ["b1.block.3", "b1.block.5", "b2.block.3", "b2.block.5"]
    assert [linears[f"b{i}.block.3"]["act"] for i in (1, 2)] == ["gelu", "gelu_tanh"]
    for i in (1, 2):
        second = linears[f"b{i}.block.5"]
        assert second["layer_scale"] and second["sources"]["layer_scale"] == f"b{i}.layer_scale"
        assert second["act"] == "none" and len(og.args(f"b{i}.block.5")) == 2  # the residual rides along
        assert og.nodes[f"b{i}.block.2"]["attrs"]["axis"] == 0  # the layer norm over channels, no permute
    assert og.args("b1.block.5")[1] == "stem.1" and og.args("b2.block.5")[1] == "b1.block.5"
    assert [r for r in report(o, "fuse_residual_add").changed if "block.5 absorbs" in r] == [
        "b1.block.5 absorbs b1.add (residual: stem.1)", "b2.block.5 absorbs b2.add (residual: b1.block.5)"]
    assert archdsl.analyze(og).macs == archdsl.analyze(g).macs
    assert_same_function(g, o)


def test_convnext_block_launch_counts():
    g = archdsl.loads(CONVNEXT_LIKE)
    fixed = 6  # stem conv and layer norm; head layer norm, pool, linear+gelu and fc (the flatten is a view)
    # each GEMM a launch of its own, the layer norm too (its fusion: tests/test_kernel_layernorm_gemm.py)
    chainless = ("fuse_conv_chain", "fuse_layer_norm_into_conv")
    assert launches(g, chainless + MINE) == fixed + 2 * BLOCK_LAUNCHES_BEFORE
    assert launches(g, chainless) == fixed + 2 * BLOCK_LAUNCHES_AFTER
    # the chain pass then runs each block's two GEMMs as one kernel (32 channels stay on chip)
    assert launches(g) == fixed + 2 * (BLOCK_LAUNCHES_AFTER - 1)


def test_convnext_tiny_launches_fall_by_three_per_block():
    g = archdsl.load(EXAMPLES / "convnext.arch")
    blocks = sum(1 for n in g.order() if g.op(n) == "layer_scale")
    assert blocks == 18
    norm = ("fuse_layer_norm_into_conv",)  # one more per block: tests/test_kernel_layernorm_gemm.py
    before, after = launches(g, MINE + norm), launches(g, norm)
    # 384-channel and wider intermediates stay off chip at this size: no chain; 3 launches saved per block
    assert before - after == blocks * (BLOCK_LAUNCHES_BEFORE - BLOCK_LAUNCHES_AFTER)
    assert (before, after) == (137, 83)


@pytest.mark.parametrize("name", ["efficientnet", "mobilenet_v3", "mobilenet_v2", "efficientnet_v2"])
def test_other_modern_networks_launch_no_more(name):
    g = archdsl.load(EXAMPLES / f"{name}.arch")
    assert launches(g) <= launches(g, MINE)


def test_a_flat_linear_fuses_its_activation_like_an_fc():
    g = archdsl.loads("""network n {
        input 3 x 4 x 4
        conv(5, 3) -> flatten -> linear(6) -> gelu(approximate="tanh") -> linear(3, bias=false) -> relu
    }""")
    o = optimize(g)
    fcs = [(o.graph.nodes[n]["attrs"]["act"], o.graph.nodes[n]["attrs"]["sources"]) for n in o.graph.order()
           if o.graph.op(n) == "fused_fc"]
    assert fcs == [("gelu_tanh", {"fc": "linear"}), ("relu", {"fc": "linear_1"})]
    assert launches(g) == 3  # conv, two GEMMs with their activations (the flatten is a view)
    assert_same_function(g, o)


# ---- what is declined, and why ------------------------------------------------------------------------


def test_declines_are_explained():
    g = archdsl.loads("""network n {
        input 4 x 5 x 5
        conv(4, 1) -> relu -> layer_scale(0.5) as a
        @a -> permute((1, 2, 0)) -> linear(4) as p
        @p -> relu as q
        @p -> sigmoid as r
        add { @q; @r } -> permute((2, 0, 1)) as s
        @a -> permute((1, 2, 0)) -> softmax -> permute((2, 0, 1)) as t
        concat { @s; @t }
    }""")
    o = optimize(g)
    scale = report(o, "fold_layer_scale").declined
    assert scale == ["layer_scale: `conv` applies relu before the scale"]
    layout = report(o, "to_channels_first").declined
    assert any("`linear` is read by 2 consumers" in d for d in layout)
    assert any("(softmax) is not a per-position op over the last axis" in d for d in layout)
    assert "layer_scale" in ops(o.graph) and ops(o.graph).count("permute") == 4
    assert_same_function(g, o)


def test_a_scale_after_a_bn_folds_too_and_a_linear_bn_pair():
    g = archdsl.loads("""network n {
        input 4 x 5 x 5
        conv(6, 3, pad=1, bias=false) -> bn -> layer_scale(0.5) -> relu
    }""")
    o = optimize(g)
    (conv,) = [n for n in o.graph.order() if o.graph.op(n) == "fused_conv"]
    a = o.graph.nodes[conv]["attrs"]
    assert a["bn_eps"] is not None and a["layer_scale"] and a["act"] == "none"  # γ after bn: relu stays apart
    assert "relu" in ops(o.graph)
    assert_same_function(g, o)


# ---- the compiled programs against the float64 reference (Triton interpreter) --------------------------


@pytest.mark.slow
@pytest.mark.parametrize("disable", [(), ("fuse_conv_chain",), MINE], ids=["all", "no-chain", "unfused"])
def test_compiled_convnext_block_matches_float64(disable):
    model = archdsl.compile(source=CONVNEXT_LIKE, device="cpu", disable=disable)
    randomize_all(model, seed=5)
    scales = [t for k, t in model.state_dict().items() if k.endswith("layer_scale")]
    assert len(scales) == 2 and all((s < 0).any() and (s.abs() > 0.3).any() for s in scales)
    source = model.compiled.program.source
    if not disable or disable == ("fuse_conv_chain",):
        assert "ACT_GELU_TANH" in source and "'conv_scaled'" in source and "layer_scale(" not in source
    torch.manual_seed(0)
    assert compiled_error(model, torch.randn(2, 3, 9, 7)) <= 1e-5


@pytest.mark.slow
def test_compiled_flat_linear_with_gelu_matches_float64():
    """The flattened NHWC map reaches the fused linear as a view: its columns are reordered at load."""
    model = archdsl.compile(source="""network n {
        input 3 x 4 x 4
        conv(5, 3) -> flatten -> linear(6) -> gelu(approximate="tanh") -> linear(3)
    }""", device="cpu")
    assert "ACT_GELU_TANH" in model.compiled.program.source and "(a view)" in model.compiled.program.source
    randomize_all(model, seed=2)
    torch.manual_seed(2)
    assert compiled_error(model, torch.randn(2, 3, 4, 4)) <= 1e-5


@pytest.mark.slow
def test_compiled_convnext_example_small_matches_float64():
    from smaller import smaller

    path = EXAMPLES / "convnext.arch"
    spec = smaller(path)
    model = archdsl.compile(path, device="cpu", input_shape=spec["input_shape"], **spec["params"])
    assert "layer_scale" not in {model.compiled.program.graph.op(n) for n in model.compiled.program.graph.order()}
    randomize_all(model, seed=7)
    torch.manual_seed(1)
    assert compiled_error(model, torch.randn(1, *spec["input_shape"])) <= 1e-4
