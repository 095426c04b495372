"""Kernels of issue 13's ops (kernels/elementwise.py, norm.py) under the interpreter against
PyTorch in float64: GELU (both forms, standalone and in a conv epilogue), the broadcasting
product (the squeeze-and-excitation scale), the channel shuffle, the channel split, layer norm
over each position's channels and the per-position linear layer as a 1x1 conv."""

import pytest
import torch
import torch.nn.functional as F

from kernel_build import load_templates

K = load_templates("conv2d.py", "elementwise.py", "norm.py", module_name="archdsl_kernel_modern")
DT = torch.float64


def _nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


@pytest.mark.parametrize("approximate,code", [("none", "ACT_GELU"), ("tanh", "ACT_GELU_TANH")])
def test_gelu_standalone(approximate, code):
    x = _rand(2, 3, 5, 6) * 4
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 4, 5] = -30.0  # far tail: the tanh form must not cancel to a wrong sign or blow up
    out = torch.empty_like(_nhwc(x))
    K.scale_shift(_nhwc(x), out, act=getattr(K, code))
    ref = _nhwc(F.gelu(x, approximate=approximate))
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(ref).any()
    fin = ~torch.isnan(ref)
    torch.testing.assert_close(out[fin], ref[fin], rtol=1e-5, atol=1e-6)  # kernels compute in fp32


@pytest.mark.parametrize("approximate,code", [("none", "ACT_GELU"), ("tanh", "ACT_GELU_TANH")])
def test_gelu_in_conv_epilogue(approximate, code):
    x, w = _rand(1, 4, 5, 5, seed=1), _rand(6, 4, 1, 1, seed=2)
    out = torch.empty(1, 5, 5, 6)  # the conv kernel takes fp32/fp16/bf16; the reference is float64
    K.conv2d(_nhwc(x).float(), K.pack_conv_weight(w.float(), 1, torch.float32), out, kernel=(1, 1),
             act=getattr(K, code))
    torch.testing.assert_close(out.double(), _nhwc(F.gelu(F.conv2d(x, w), approximate=approximate)),
                               rtol=1e-4, atol=1e-5)


def test_mul_broadcasts_the_se_gate():
    x, s = _rand(2, 5, 3, 4, seed=3), torch.sigmoid(_rand(2, 5, 1, 1, seed=4))
    out = torch.empty(2, 3, 4, 5, dtype=DT)
    K.mul([_nhwc(x), _nhwc(s)], out)
    torch.testing.assert_close(out, _nhwc(x * s), rtol=1e-6, atol=1e-7)
    out2 = torch.empty_like(out)
    K.mul([_nhwc(s), _nhwc(x)], out2)  # the gate first: broadcast on either side
    torch.testing.assert_close(out2, out)


def test_mul_of_three_into_a_channel_slice():
    a, b, c = _rand(1, 3, 2, 2, seed=5), _rand(1, 3, 2, 2, seed=6), _rand(1, 3, 1, 1, seed=7)
    buf = torch.zeros(1, 2, 2, 7, dtype=DT)
    K.mul([_nhwc(a), _nhwc(b), _nhwc(c)], buf[..., 2:5])
    torch.testing.assert_close(buf[..., 2:5], _nhwc(a * b * c))
    assert not buf[..., :2].any() and not buf[..., 5:].any()  # nothing written outside the slice


def test_mul_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="broadcast"):
        K.mul([torch.zeros(1, 2, 2, 3), torch.zeros(1, 1, 1, 4)], torch.zeros(1, 2, 2, 3))


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_is_torchvisions(groups):
    x = _rand(2, 6 * groups // 2 * 2, 3, 2, seed=8)
    n, c, h, w = x.shape
    ref = x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)  # torchvision's
    buf = torch.zeros(n, h, w, c + 4, dtype=DT)
    K.channel_shuffle(_nhwc(x), buf[..., 4:], groups)
    assert torch.equal(buf[..., 4:], _nhwc(ref)) and not buf[..., :4].any()


def test_chunk_is_a_view_the_conv_reads_through_its_strides():
    """The emitted chunk is `x[..., lo:hi]` (no copy): its reader, here the 1x1 conv of
    ShuffleNetV2's branch, takes the channel slice as it is."""
    x, w = _rand(1, 8, 3, 3, seed=9), _rand(5, 4, 1, 1, seed=16)
    part = _nhwc(x).float()[..., 4:8]
    assert not part.is_contiguous()
    out = torch.empty(1, 3, 3, 5)
    K.conv2d(part, K.pack_conv_weight(w.float(), 1, torch.float32), out, kernel=(1, 1))
    torch.testing.assert_close(out.double(), _nhwc(F.conv2d(x.chunk(2, dim=1)[1], w)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c,affine", [(5, True), (1100, True), (7, False)])  # 1100: several BLOCK_C sweeps
def test_layer_norm_over_each_positions_channels(c, affine):
    x = _rand(2, c, 3, 2, seed=10) * 3 + 5  # an offset mean: a one-pass E[x^2] - mean^2 would lose digits
    w, b = (_rand(c, seed=11), _rand(c, seed=12)) if affine else (None, None)
    out = torch.empty_like(_nhwc(x))
    K.layer_norm(_nhwc(x), out, weight=w, bias=b, eps=1e-6)
    ref = F.layer_norm(_nhwc(x), (c,), w, b, eps=1e-6)  # nn.LayerNorm over the last axis = LayerNorm2d
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_layer_norm_of_a_flat_vector_into_a_slice():
    x = _rand(3, 6, seed=13)
    w, b = _rand(6, seed=14), _rand(6, seed=15)
    buf = torch.zeros(3, 9, dtype=DT)
    K.layer_norm(x, buf[:, 2:8], weight=w, bias=b)
    torch.testing.assert_close(buf[:, 2:8], F.layer_norm(x, (6,), w, b), rtol=1e-5, atol=1e-5)
    assert not buf[:, :2].any() and not buf[:, 8:].any()


# ---- compiled networks: every rule of these ops, against the float64 reference ----------------------

import archdsl  # noqa: E402
from archdsl.errors import ArchError  # noqa: E402
from compiled_check import compiled_error, randomize_all  # noqa: E402

EVERY_MODERN_OP = """
network every_modern_op {
    input 3 x 7 x 6
    conv(8, 3, pad=1) -> hardswish
    mul { identity; global_avgpool -> conv(4, 1) -> silu -> conv(8, 1) -> hardsigmoid }
    concat { chunk(2, 0) -> gelu; chunk(2, 1) -> conv(4, 1) -> relu6 } -> channel_shuffle(2)
    residual {
        "block": (conv(8, 3, pad=1, groups=8) -> permute((1, 2, 0)) -> layer_norm(eps=1e-6, axis=-1)
                  -> linear(16) -> gelu(approximate="tanh") -> linear(8) -> permute((2, 0, 1)))
        ls: layer_scale(0.5)
        stochastic_depth(0.2)
    }
    layer_norm -> global_avgpool -> flatten -> layer_norm(eps=1e-3) -> linear(5)
}
"""


def test_every_modern_op_compiles_and_matches(monkeypatch):
    # the channels-last stretch as written, so that permute, linear and layer_scale run their own
    # rules (computed channels-first and fused instead by default: tests/test_fuse_modern.py)
    model = archdsl.compile(source=EVERY_MODERN_OP, device="cpu", disable=("to_channels_first", "fold_layer_scale"))
    compiled = model.compiled.program.graph  # the optimized graph the program was generated from
    ops = {compiled.op(n) for n in compiled.nodes}
    assert {"mul", "chunk", "channel_shuffle", "gelu", "permute", "layer_norm", "linear", "layer_scale"} <= ops
    assert "stochastic_depth" not in ops  # an identity at inference: the passes strip it
    randomize_all(model)

    def forbid(call):
        for mod, names in ((F, ("conv2d", "linear", "layer_norm", "gelu", "silu", "hardswish", "hardsigmoid",
                                "relu6", "adaptive_avg_pool2d")),
                           (torch, ("conv2d", "layer_norm", "matmul", "mm", "addmm", "cat", "mul")),
                           (torch._C._nn, ("linear", "gelu", "silu", "hardswish", "hardsigmoid"))):
            for name in names:
                monkeypatch.setattr(mod, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError(name)))
        try:
            return call()
        finally:
            monkeypatch.undo()

    assert compiled_error(model, torch.randn(2, 3, 7, 6), forbid=forbid) <= 1e-4
    source = model.compiled.program.source
    assert "channel_shuffle(" in source and "mul([" in source and "ACT_GELU_TANH" in source
    # both permutes are views: no copy, the same tensor relabeled
    assert source.count("(a view: the same memory, relabeled)") == 2
    assert source.count("(a view: a channel slice)") == 2  # the chunks: no copy either


def test_convnext_with_its_layer_scales_randomized():
    from smaller import EXAMPLES, smaller

    path = EXAMPLES / "convnext.arch"
    spec = smaller(path)
    model = archdsl.compile(path, device="cpu", network=spec["network"], input_shape=spec["input_shape"],
                            **spec["params"])
    randomize_all(model, seed=3)
    assert compiled_error(model, torch.randn(1, *model.graph.shape(model.graph.inputs[0]))) <= 1e-4


@pytest.mark.parametrize("body", [
    "conv(4, 1) -> layer_norm(axis=-1)",  # over W of an NHWC map
    "conv(4, 1) -> permute((1, 2, 0)) -> flatten",  # a channels-last tensor into an op that needs NHWC
    "conv(4, 1) -> permute((0, 2, 1))",  # not a relabeling: would need a copy
])
def test_layouts_the_compiler_cannot_lower_are_located_errors(body):
    with pytest.raises(ArchError, match="layout") as e:
        archdsl.compile(source=f"network n {{\n    input 3 x 4 x 5\n    {body}\n}}\n", device="cpu")
    assert e.value.loc.line == 3 and e.value.hint


def test_regnet_y_with_its_squeeze_excitation():
    """The zoo test compiles regnet.arch's default (RegNetX); RegNetY adds the SE `mul`, which the
    conv after it applies while loading (passes/gate.py): no mul launch is left."""
    from smaller import EXAMPLES

    model = archdsl.compile(EXAMPLES / "regnet.arch", device="cpu", input_shape=(3, 64, 64), classes=10, y=True)
    g = model.compiled.program.graph
    assert "mul" not in {g.op(n) for n in g.nodes} and any(g.nodes[n]["attrs"].get("in_gate") for n in g.nodes)
    randomize_all(model, seed=5)
    assert compiled_error(model, torch.randn(1, 3, 64, 64)) <= 1e-4


def test_the_se_product_overwrites_the_expanded_map_never_the_gate():
    # a product the gate fusion leaves standalone (here: that pass off) is planned in place
    model = archdsl.compile(disable=("fuse_gate_into_conv_input",), source="""
network se {
    input 8 x 5 x 5
    conv(16, 1) -> relu as x
    mul { @x; global_avgpool -> conv(4, 1) -> relu -> conv(16, 1) -> sigmoid } as y
    conv(8, 1)
}
""", device="cpu")
    plan = model.compiled.program.plan
    g = plan.graph
    (product,) = [n for n in g.nodes if g.op(n) == "mul"]
    expanded = g.args(product)[0]
    assert g.shape(expanded) == (16, 5, 5)
    assert plan.kind[product] == "inplace" and plan.over[product] == expanded  # dead after the product
    randomize_all(model)
    assert compiled_error(model, torch.randn(2, 8, 5, 5)) <= 1e-4
