"""Compiler passes: inference simplification and conv/fc epilogue fusion (structure and reports)."""

from collections import Counter
from pathlib import Path

import archdsl
from archdsl.passes import PIPELINE, launch_groups, optimize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def ops(g):
    return Counter(g.op(n) for n in g)


def test_resnet50_fuses_every_conv_with_its_bn_and_relu():
    g = archdsl.load(EXAMPLES / "resnet50.arch")
    o = optimize(g)
    after = ops(o.graph)
    # one node per conv, plus the stem pool, the global pool and the fc: no standalone BN,
    # ReLU or add (the flatten is a view)
    assert after == Counter({"fused_conv": 53, "input": 1, "maxpool": 1, "global_avgpool": 1, "flatten": 1, "fc": 1})
    stem = o.graph.nodes["conv1"]
    assert stem["attrs"]["act"] == "relu" and stem["attrs"]["bn_eps"] == 1e-5
    assert stem["attrs"]["sources"] == {"conv": "conv1", "bn": "bn1"}
    assert stem["meta"]["fused"] == ["conv1", "bn1", "relu"]
    # the residual add and the ReLU after it went into each block's last conv (the body's):
    conv3 = o.graph.nodes["layer1.0.conv3"]
    assert conv3["attrs"]["act"] == "relu" and conv3["attrs"]["sources"] == {"conv": "layer1.0.conv3",
                                                                            "bn": "layer1.0.bn3"}
    assert conv3["meta"]["fused"] == ["layer1.0.conv3", "layer1.0.bn3", "layer1.0.add", "layer1.0.relu_2"]
    assert o.graph.args("layer1.0.conv3") == ["layer1.0.conv2", "layer1.0.downsample.0"]  # x, residual
    assert o.graph.args("layer1.1.conv3") == ["layer1.1.conv2", "layer1.0.conv3"]
    assert archdsl.analyze(o.graph).params == archdsl.analyze(g).params  # nothing lost
    assert len(g) == 176  # the input graph is untouched


def test_resnet50_launch_decisions_siblings_and_chains():
    o = optimize(archdsl.load(EXAMPLES / "resnet50.arch"))
    g = o.graph
    # layer1.0's conv1 and projection both read the stem's output with a 1x1 stride-1 conv
    assert launch_groups(g).siblings == {"layer1.0.conv1": ("layer1.0.downsample.0",)}
    assert launch_groups(g).launched_by("layer1.0.downsample.0") == "layer1.0.conv1"
    # the later stages' projections have stride 2: declined, with the reason
    siblings = next(r for r in o.reports if r.name == "fuse_sibling_convs")
    assert len(siblings.changed) == 1 and len(siblings.declined) == 3
    assert all("1x1 stride 2" in d for d in siblings.declined)
    # 3x3 -> 1x1 expand runs as one kernel while the intermediate fits on chip (64..256 channels)
    chains = launch_groups(g).chains
    assert chains == {f"layer{s}.{b}.conv3": f"layer{s}.{b}.conv2" for s, blocks in ((1, 3), (2, 4), (3, 6))
                      for b in range(blocks)}
    chain = next(r for r in o.reports if r.name == "fuse_conv_chain")
    layer4 = [d for d in chain.declined if d.startswith("layer4") and "conv2 -> " in d]
    assert len(layer4) == 3 and all("512 channels, more than the 256 kept on chip" in d for d in layer4)
    from archdsl.codegen import generate
    assert generate(g).launches == 53 + 3 - 1 - 13  # one per conv + pools + fc, less sibling and chains


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
    fuse = next(r for r in o.reports if r.name == "fuse_conv_bn_act")
    assert o.graph.op("conv") == "fused_conv" and o.graph.nodes["conv"]["attrs"]["act"] == "none"
    assert o.graph.op("relu") == "relu"  # bn's output has two readers: the relu stays separate
    assert any("`bn` is read by 2 consumers" in d for d in fuse.declined)


def test_passes_can_be_disabled_and_every_pass_is_named():
    g = archdsl.load(EXAMPLES / "lenet5.arch")
    o = optimize(g, disable=tuple(name for name, _ in PIPELINE if name != "strip_inference_noops"))
    assert ops(o.graph)["conv"] == 2 and [r.name for r in o.reports] == ["strip_inference_noops"]
    assert [name for name, _ in PIPELINE] == ["strip_inference_noops", "to_channels_first", "fuse_conv_bn_act",
                                              "fold_layer_scale", "fuse_fc_act",
                                              "fuse_residual_add", "fuse_bn_act", "fuse_bn_into_conv_input",
                                              "fuse_gate_into_conv_input", "fuse_sibling_convs", "fuse_conv_chain",
                                              "fuse_layer_norm_into_conv"]


def test_pre_activation_blocks_fuse_bn_with_relu_and_the_add_into_the_last_conv():
    g = archdsl.load(EXAMPLES / "preact_resnet.arch")
    o = optimize(g)
    after = ops(o.graph)
    assert after["bn"] == after["relu"] == after["add"] == 0
    assert after["fused_bn"] == 1  # the head's bn -> relu, read by the global pool
    # the other 53 bn -> relu pairs before a block became the prologue of the convs reading them
    prologues = [n for n in o.graph if o.graph.nodes[n]["attrs"].get("pre_bn_eps") is not None]
    assert len(prologues) == 53 + 2  # two blocks' projection shortcuts read the same bn -> relu
    assert o.graph.nodes["layer2.0.shortcut"]["attrs"]["sources"]["pre_bn"] == "layer2.0.bn1"
    assert o.graph.nodes["layer2.0.conv1"]["attrs"]["pre_act"] == "relu"


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


@pytest.mark.slow
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
    assert "fuse_residual_add: 10 change(s)" in text  # the two-way means; the 3- and 4-way are declined:
    assert "not fused: fractal1.mean: 4 operands (the epilogue takes one residual)" in text
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--passes", "strip_inference_noops",
                 "--dump-after", "strip_inference_noops"]) == 0
    text = capsys.readouterr().out
    assert "= conv(%input, out=6, kernel=5)" in text and "fused_conv" not in text
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--disable", "fuse_residul"]) == 2
    assert "did you mean `fuse_residual_add`" in capsys.readouterr().err
    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", out, "--disable", "fuse_fc_act",
                 "--dump-after", "fuse_fc_act"]) == 2
    assert "that pass does not run" in capsys.readouterr().err


# ---- each rule on a small network, and the cases it must decline ---------------------------------------


def optimized(text):
    g = archdsl.loads(text)
    return g, optimize(g)


def report(o, name):
    return next(r for r in o.reports if r.name == name)


def assert_same_function(g, o):
    """The optimized graph's torch reference computes what the original's does (float64)."""
    reference = _randomized_reference(g)
    model = archdsl.to_torch(o.graph).double().eval()
    model.load_state_dict(fused_state_dict(o.graph, reference.state_dict()), strict=True)
    x = [torch.randn(2, *g.shape(n), dtype=torch.float64) for n in g.inputs]
    with torch.no_grad():
        want, got = reference(*x), model(*x)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_prologue_a_bn_before_convs_is_applied_while_they_load():
    g, o = optimized("network n {\n input 3x6x6\n bn -> relu as r\n @r -> a: conv(4, 3, pad=1)\n"
                     " @r -> b: conv(5, 1, stride=2)\n output a, b\n}")
    assert "bn" not in ops(o.graph) and "fused_bn" not in ops(o.graph)
    for conv in ("a", "b"):  # both readers normalize their own loads
        attrs = o.graph.nodes[conv]["attrs"]
        assert (attrs["pre_bn_eps"], attrs["pre_act"], attrs["sources"]["pre_bn"]) == (1e-5, "relu", "bn")
        assert o.graph.args(conv) == ["input"]
    assert report(o, "fuse_bn_into_conv_input").changed == ["bn -> the input of a, b"]
    assert_same_function(g, o)  # the padding halo is zero *after* the normalization


def test_prologue_declined_when_the_normalized_tensor_is_needed_as_such():
    g, o = optimized("network n {\n input 4x6x6\n p: bn\n @p -> a: conv(4, 1)\n @p -> m: maxpool(2)\n"
                     " @input -> q: bn\n @q -> b: conv(4, 1)\n"
                     " @input -> bn -> relu as s\n @input -> add { d: conv(4, 1); @s } as r\n"
                     " output a, m, q, b, r\n}")
    declined = report(o, "fuse_bn_into_conv_input").declined
    assert "p: `m` (a maxpool) reads it" in declined
    assert "q: it is a graph output" in declined
    assert any(d.endswith("`d` reads it as its residual") for d in declined)
    assert o.graph.op("p") == "bn" and o.graph.op("q") == "bn"
    assert_same_function(g, o)


def test_siblings_one_gemm_for_1x1_convs_reading_one_tensor():
    g, o = optimized("network n {\n input 8x6x6\n concat {\n a: conv(3, 1) -> relu\n b: conv(4, 1)\n"
                     " c: conv(5, 1) -> sigmoid\n } as cat\n @input -> d: conv(2, 1, stride=2) as dd\n output cat, dd\n}")
    # a, b, c share a launch; their own activations stay theirs
    assert launch_groups(o.graph).siblings == {"a": ("b", "c")}
    assert [o.graph.nodes[n]["attrs"]["act"] for n in "abc"] == ["relu", "none", "sigmoid"]
    assert report(o, "fuse_sibling_convs").changed == ["a launches b, c too: one 1x1 GEMM of 3 + 4 + 5 channels over `input`"]
    assert any(d.startswith("d: ") and "1x1 stride 2" in d for d in report(o, "fuse_sibling_convs").declined)
    assert_same_function(g, o)


def test_siblings_declined_cases():
    g, o = optimized("network n {\n input 8x5x5\n x: conv(8, 1)\n"
                     " concat { k1: conv(2, 1); k2: conv(2, 1); k3: conv(2, 1); k4: conv(2, 1); k5: conv(2, 1);"
                     " k6: conv(2, 3, pad=1) } as many\n"
                     " @input -> bn -> relu -> p1: conv(2, 1) as y\n @input -> p2: conv(2, 1) as z\n"
                     " output many, y, z\n}")
    r = report(o, "fuse_sibling_convs")
    groups = launch_groups(o.graph).siblings
    assert groups["k1"] == ("k2", "k3", "k4")  # at most four outputs per launch
    assert "k5: the kernel writes at most 4 outputs per launch" in r.declined
    assert any(d.startswith("k6: ") and "3x3 stride 1 padded" in d for d in r.declined)
    # p1 normalizes its input in a prologue, x and p2 read it raw: x and p2 share a launch, p1 not
    assert o.graph.args("p1") == o.graph.args("p2") == ["input"]
    assert groups["x"] == ("p2",)
    assert "p1: a sibling of 2 other conv(s) reading `input`, but its input prologue differs from `x`'s" in r.declined
    assert_same_function(g, o)


def test_chain_a_conv_then_a_1x1_conv_keep_the_intermediate_on_chip():
    g, o = optimized("network n {\n input 3x8x8\n a: conv(6, 3, pad=1) -> bn -> relu -> b: conv(7, 1) -> relu\n}")
    assert launch_groups(o.graph).chains == {"b": "a"} and launch_groups(o.graph).launched_by("a") == "b"
    assert report(o, "fuse_conv_chain").changed == ["a -> b: one kernel, the 6-channel intermediate on chip"]
    assert_same_function(g, o)


def test_chain_declined_cases():
    g, o = optimized("network n {\n input 16x6x6\n"
                     " a1: conv(4, 3, pad=1) as t\n @t -> b1: conv(4, 1) as u\n @t -> relu as v\n"  # read twice
                     " @u -> a2: conv(8, 3, pad=1, groups=2) -> b2: conv(4, 1)\n"  # grouped: chains
                     " a3: conv(300, 3, pad=1) -> b3: conv(4, 1)\n"  # too wide to keep on chip
                     " m: mean { a4: conv(4, 3, pad=1) -> b4: conv(4, 1); identity }\n"  # b4 ends a mean
                     " output v, m\n}")
    declined = report(o, "fuse_conv_chain").declined
    assert "a1 -> b1: `a1` is read by 2 consumers" in declined
    # a grouped first conv chains where the model predicts a gain (tests/test_kernel_chain_grouped.py)
    assert not any(d.startswith("a2 -> b2") for d in declined)
    assert "a3 -> b3: the intermediate has 300 channels, more than the 256 kept on chip" in declined
    assert any(d.startswith("m.a4 -> m.b4: `m.b4` ends a mean join") for d in declined)
    assert launch_groups(o.graph).chains == {"b2": "a2"}
    nin = optimize(archdsl.load(EXAMPLES / "nin.arch"))
    assert "mlpconv1.cccp1 -> mlpconv1.cccp2: a conv of the pair is already fused with another conv" in \
        report(nin, "fuse_conv_chain").declined  # chains are pairs
    assert_same_function(g, o)


def test_mean_join_two_way_fuses_after_the_activation_more_ways_decline():
    g, o = optimized("network n {\n input 4x6x6\n"
                     " j: mean { a: conv(4, 3, pad=1) -> relu; b: conv(4, 1) -> relu } -> after: relu\n"
                     " k: mean { c: conv(4, 1); identity; d: conv(4, 1) }\n}")
    attrs = o.graph.nodes["j.a"]["attrs"]
    assert (attrs["join"], attrs["act"]) == ("mean", "relu") and o.graph.args("j.a") == ["input", "j.b"]
    assert o.graph.op("after") == "relu"  # an activation after the mean keeps its kernel
    r = report(o, "fuse_residual_add")
    assert r.changed == ["j.a absorbs j.mean (residual: j.b)"]
    assert "k.mean: 3 operands (the epilogue takes one residual)" in r.declined
    assert_same_function(g, o)


ALL_RULES = """
network all_rules {
    input 5 x 7 x 6
    stem: conv(8, 3, pad=1) -> bn -> relu
    concat {
        a: conv(4, 1) -> bn -> relu                # a, b, d: siblings, one GEMM with three outputs
        b: conv(3, 1) -> c: conv(4, 3, pad=1) -> relu
        d: conv(3, 1) -> sigmoid
    }
    bn -> relu -> e: conv(6, 3, pad=(1, 0, 2, 1)) -> bn -> relu    # a prologue (bn -> relu on load)
    m: mean { g: conv(6, 3, pad=1) -> relu; h: conv(6, 1) -> tanh }  # a two-way mean into g's epilogue
    x: conv(12, 3, stride=2, pad=1) -> bn -> relu -> y: conv(7, 1) -> bn -> relu   # a chain
    global_avgpool -> flatten -> fc(3)
}
"""


def test_every_rule_runs_in_the_generated_program():
    """Siblings, a prologue with asymmetric padding, a mean join and a chain, compiled and run
    (Triton's interpreter without a GPU) against the float64 reference of the original graph."""
    g, o = optimized(ALL_RULES)
    attrs = {n: o.graph.nodes[n]["attrs"] for n in ("a", "e", "m.g", "y")}
    assert launch_groups(o.graph).siblings == {"a": ("b", "d")} and attrs["e"]["pre_act"] == "relu"
    assert attrs["m.g"]["join"] == "mean" and launch_groups(o.graph).chains == {"y": "x"}
    model = archdsl.compile(source=ALL_RULES, device="cuda" if torch.cuda.is_available() else "cpu")
    counts = model.compiled.program.kernel_counts()
    assert counts["conv2d_chain"] == 1 and "scale_shift" not in counts and "mean" not in counts
    reference = _randomized_reference(g)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        want = reference(x)
    got = model(x.float())
    assert ((got.double().cpu() - want).norm() / want.norm()).item() < 1e-5


def test_the_chain_cost_rule_and_the_chain_kernel_agree_on_the_on_chip_limit():
    from kernel_build import load_templates

    from archdsl.passes import chain

    kernels = load_templates("conv2d.py", "conv2d_chain.py", module_name="chain_limit_check")
    assert chain.CHAIN_MAX_MID == kernels.CHAIN_MAX_MID
    assert kernels.chain_supported(chain.CHAIN_MAX_MID, 1) and not kernels.chain_supported(chain.CHAIN_MAX_MID + 1, 1)
