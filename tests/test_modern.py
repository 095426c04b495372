"""The modern CNN families (issue 13): MobileNetV2/V3, EfficientNet and V2, ShuffleNetV2, MNASNet,
RegNet, ConvNeXt and Inception-v3, against torchvision (imported through `tests/tv.py`).

1. Every torchvision variant: our network's parameter count is torchvision's (its model built on
   the meta device) and the one its weights' metadata documents (`_metadata["num_params"]`).
2. The smallest variant of each family (and a few others): the state dict of `to_torch` has
   exactly torchvision's keys and shapes, loads with `strict=True`, and computes torchvision's
   outputs in float64 at a small input size, with every weight, BN statistic, BN/LN affine
   parameter and layer scale randomized (at torchvision's fresh init BN is an identity and
   ConvNeXt's branches are 1e-6 of the trunk, which would hide a wrong block).
3. The language features the families need: quoted names, `sequence` blocks, `residual if`,
   `def` functions and list comprehensions, and the new ops' shapes, costs and reference modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.errors import ArchError
from tv import build_tv, random_tv


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass(frozen=True)
class Variant:
    """A torchvision model and the network (file, network or alias name, --set values) that is it."""

    model: str
    file: str
    network: str | None = None
    params: dict = field(default_factory=dict)
    tv_kwargs: dict = field(default_factory=dict)  # torchvision builder arguments beyond weights=None

    @property
    def id(self) -> str:
        return self.model


# RegNet's flops regimes: torchvision's name and the file's `mf`
REGIMES = [("400mf", 400), ("800mf", 800), ("1_6gf", 1600), ("3_2gf", 3200), ("8gf", 8000), ("16gf", 16000),
           ("32gf", 32000), ("128gf", 128000)]


def _v(model, file, network=None, **params):
    return Variant(model, file, network, params)


VARIANTS = [
    _v("mobilenet_v2", "mobilenet_v2.arch"),
    _v("mobilenet_v3_large", "mobilenet_v3.arch"),
    _v("mobilenet_v3_small", "mobilenet_v3.arch", small=True),
    *[_v(f"efficientnet_b{b}", "efficientnet.arch", b=b) for b in range(8)],
    *[_v(f"efficientnet_v2_{s}", "efficientnet_v2.arch", size=i) for i, s in enumerate("sml")],
    *[_v(f"shufflenet_v2_x{w.replace('.', '_')}", "shufflenet_v2.arch", width=float(w))
      for w in ("0.5", "1.0", "1.5", "2.0")],
    *[_v(f"mnasnet{a.replace('.', '_')}", "mnasnet.arch", alpha=float(a)) for a in ("0.5", "0.75", "1.0", "1.3")],
    *[_v(f"regnet_{k}_{name}", "regnet.arch", mf=mf, y=k == "y")
      for k, names in (("x", REGIMES[:-1]), ("y", REGIMES)) for name, mf in names],
    _v("convnext_tiny", "convnext.arch"),
    _v("convnext_small", "convnext.arch", depth3=27),
    _v("convnext_base", "convnext.arch", width=128, depth3=27),
    _v("convnext_large", "convnext.arch", width=192, depth3=27),
    Variant("inception_v3", "inception_v3.arch", tv_kwargs={"init_weights": True}),
]
VARIANT_IDS = [v.id for v in VARIANTS]
MODERN_FILES = sorted({v.file for v in VARIANTS})  # tests/test_zoo.py leaves these files to this one

# The float64 comparisons: (variant, input side).  The smallest member of each family, at a size
# where every stage still sees at least a 2x2 map.
OUTPUT_CASES = [
    ("mobilenet_v2", 64),
    ("mobilenet_v3_small", 64),
    ("mobilenet_v3_large", 64),
    ("efficientnet_b0", 64),
    ("efficientnet_v2_s", 64),
    ("shufflenet_v2_x0_5", 64),
    ("shufflenet_v2_x1_5", 64),
    ("mnasnet0_5", 64),
    ("mnasnet1_3", 64),
    ("regnet_x_400mf", 64),
    ("regnet_y_400mf", 64),
    ("convnext_tiny", 64),
    # Inception-v3 without its auxiliary head (which needs the full 299x299) at 107x107
    (Variant("inception_v3", "inception_v3.arch", params={"aux": False},
             tv_kwargs={"aux_logits": False, "init_weights": True}), 107),
]


def variant(model: str) -> Variant:
    return next(v for v in VARIANTS if v.model == model)


def load_ours(v: Variant, side: int | None = None) -> archdsl.Graph:
    return archdsl.load(EXAMPLES / v.file, v.network, v.params, (3, side, side) if side else None)


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in module.state_dict().items()}


# ---- 1. parameter counts of every variant ----------------------------------------------------------


@pytest.mark.parametrize("v", VARIANTS, ids=VARIANT_IDS)
def test_param_count_is_torchvisions(tvm, v):
    ours = archdsl.analyze(load_ours(v))
    theirs = build_tv(tvm, v.model, v.tv_kwargs)
    assert ours.params == sum(p.numel() for p in theirs.parameters())
    assert ours.params + ours.buffers == sum(t.numel() for t in theirs.state_dict().values())
    weights = tvm.get_model_weights(v.model)
    documented = {w.meta["num_params"] for w in weights}
    assert documented == {ours.params}, f"{v.model}: torchvision's weights document {documented}"


@pytest.mark.parametrize("v", VARIANTS, ids=VARIANT_IDS)
def test_macs_are_torchvisions_documented_ops(tvm, v):
    """torchvision's `_ops` are its GFLOPS counted as multiply-accumulates of conv and linear layers at
    each weights' crop size, rounded to 3 decimals: exactly our MACs (the SE convs and ConvNeXt's
    linears included; elementwise ops are our "other ops").  Inception-v3's figure leaves out the
    auxiliary head, which inference does not run."""
    params = {**v.params, "aux": False} if v.model == "inception_v3" else v.params
    for w in tvm.get_model_weights(v.model):
        side = w.transforms().crop_size[0]
        g = archdsl.load(EXAMPLES / v.file, v.network, params, (3, side, side))
        assert round(archdsl.analyze(g).macs / 1e9, 3) == w.meta["_ops"], f"{w} at {side}x{side}"


@pytest.mark.parametrize("file", MODERN_FILES)
def test_header_states_every_count_and_a_smaller_variant_that_runs(file):
    from smaller import smaller

    head = []
    for line in (EXAMPLES / file).read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    text = " ".join(line.lstrip("#").strip() for line in head)
    for word in ("Paper:", "Variant:", "Input:", "Params:", "Smaller:"):
        assert word in text, word
    full = archdsl.analyze(archdsl.load(EXAMPLES / file))
    c, h, w = full.input
    assert re.search(rf"Input:\s+{c} x {h} x {w}\b", text)
    for v in VARIANTS:
        if v.file == file:
            assert f"{archdsl.analyze(load_ours(v)).params:,}" in text, v.model  # every variant's count is stated
    spec = smaller(EXAMPLES / file)
    g = archdsl.load(EXAMPLES / file, spec["network"], spec["params"], spec["input_shape"])
    s = archdsl.analyze(g)
    assert s.params < full.params and s.macs < full.macs
    torch.manual_seed(0)
    with torch.no_grad():
        out = archdsl.to_torch(g).eval()(torch.randn(2, *s.input))
    out = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in out] == [(2, *g.shape(n)) for n in g.outputs]
    assert all(torch.isfinite(o).all() for o in out)


def test_the_compiler_waits_only_for_the_modern_files():
    """tests/pending.py leaves out of the compiling tests exactly the files with ops not yet lowered."""
    from pending import pending_ops

    waiting = {p.name for p in EXAMPLES.glob("*.arch") if pending_ops(p)}
    assert waiting <= set(MODERN_FILES)
    # (every op of issue 13 has its kernel now: test_registry.EMIT_PENDING is empty, nothing waits)


# ---- 2. names, shapes and outputs in float64 ---------------------------------------------------------


def compare_outputs(tvm, v: Variant, side: int):
    gen = torch.Generator().manual_seed(0)
    theirs = random_tv(tvm, v.model, v.tv_kwargs, gen)
    g = load_ours(v, side)
    with torch.device("meta"):
        ours = archdsl.to_torch(g)
    assert shapes(ours) == shapes(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, side, side, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    got = got[0] if isinstance(got, tuple) else got
    assert got.shape == want.shape == (2, 1000)
    scale = want.abs().max().item()
    assert torch.isfinite(want).all() and (want[0] - want[1]).abs().max() > 1e-3 * scale, \
        f"degenerate torchvision output (max |y| = {scale:g}): the comparison would prove little"
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * scale)


OUTPUT_CASES = [(variant(c) if isinstance(c, str) else c, side) for c, side in OUTPUT_CASES]


@pytest.mark.parametrize("v, side", OUTPUT_CASES, ids=[f"{v.model}-{side}" for v, side in OUTPUT_CASES])
def test_outputs_are_torchvisions_in_float64(tvm, v, side, one_thread):
    compare_outputs(tvm, v, side)


# ---- 3. the language features the families need ------------------------------------------------------


def names(text: str, **kw) -> list[str]:
    return [n for n in archdsl.loads(text, **kw).order() if n != "input"]


def test_sequence_block_numbers_its_elements_inside_a_numbered_sequence():
    text = """
    block cna(c, stride = 1) sequence { conv(c, 3, stride=stride, pad=1, bias=false) -> bn -> relu6 }
    block stage(c, n) sequence { for i in range(n) { cna(c) } }
    network t {
        input 3 x 8 x 8
        features: { cna(4, stride=2) -> stage(4, 2) -> last: cna(8) }
    }"""
    assert names(text) == ["features.0.0", "features.0.1", "features.0.2",
                           "features.1.0.0", "features.1.0.1", "features.1.0.2",
                           "features.1.1.0", "features.1.1.1", "features.1.1.2",
                           "features.last.0", "features.last.1", "features.last.2"]


def test_a_sequence_network_numbers_its_own_elements():
    """`network … sequence` is a top-level nn.Sequential: its elements are numbered as `0`, `1`,
    … (labelled ones keep their label and still take a position); the input takes none."""
    text = """
    block cna(c) sequence { conv(c, 3, pad=1, bias=false) -> bn -> relu }
    network t(width = 4) sequence {
        input image: 3 x 8 x 8
        conv(width, 3, pad=1) -> relu
        cna(width) * 2
        head: { global_avgpool -> flatten } -> fc(10)
    }"""
    order = archdsl.loads(text).order()
    assert order == ["image", "0", "1", "2.0", "2.1", "2.2", "3.0", "3.1", "3.2", "head.0", "head.1", "5"]
    assert archdsl.loads(text, input_shape=(3, 6, 6)).order() == order
    keys = list(archdsl.to_torch(archdsl.loads(text)).state_dict())
    assert keys[:2] == ["0.weight", "0.bias"] and keys[-2:] == ["5.weight", "5.bias"]
    # the same body in a plain network: named after the ops
    plain = archdsl.loads(text.replace(") sequence {\n        input", ") {\n        input")).order()
    assert plain[:4] == ["image", "conv", "relu", "cna.0"]


def test_quoted_names_hold_reserved_words_dashes_and_spliced_expressions():
    text = """
    block unit(c) { "block": (conv(c, 1) -> relu) }
    network t {
        input 3 x 8 x 8
        for s in range(2) { "block{s + 1}-{s * 2}": unit(4) }
        "mean": relu -> "add": relu as "as"
        @"as" -> flatten
    }"""
    assert names(text) == ["block1-0.block.0", "block1-0.block.1", "block2-2.block.0", "block2-2.block.1",
                           "mean", "add", "flatten"]


@pytest.mark.parametrize("text, message", [
    ('network t { input 3x8x8\n "a{1 +}": relu }', "cannot read the expression"),
    ('network t { input 3x8x8\n "a{1": relu }', "`{` without `}`"),
    ('network t { input 3x8x8\n "a b": relu }', "not a valid label"),
    ('network t { input 3x8x8\n "-a": relu }', "not a valid label"),
    ('network t { input 3x8x8\n for i in range(2) { layer{i - 1}: relu } }', "not a valid label"),
])
def test_bad_quoted_names_are_located_errors(text, message):
    with pytest.raises(ArchError, match=message) as err:
        archdsl.loads(text)
    assert err.value.loc.line == 2


def test_residual_if_adds_the_input_only_when_the_condition_holds():
    text = """
    block ir(c, stride) { residual if stride == 1 and in.c == c { conv(c, 3, stride=stride, pad=1) } }
    network t { input 4 x 8 x 8
        ir(4, 1) -> ir(8, 1) -> ir(8, 2) }"""
    g = archdsl.loads(text)
    assert [g.op(n) for n in g.order()] == ["input", "conv", "add", "conv", "conv"]
    assert g.order() == ["input", "ir.conv", "ir.add", "ir_1.conv", "ir_2.conv"]
    assert g.args("ir.add") == ["ir.conv", "input"]


def test_functions_and_list_comprehensions():
    text = """
    def round_down(v, d) = max(d, int(v + d / 2) // d * d)
    def make_divisible(v, d = 8) = round_down(v, d) + d if round_down(v, d) < 0.9 * v else round_down(v, d)
    network t(width = 1.1) {
        input 3 x 8 x 8
        let widths = [make_divisible(c * width) for c in [16, 24, 40, 80, 112]]
        let pairs = [a * b for a, b in [(1, 2), (3, 4)] if a > 1]
        assert pairs == [12]
        for c in widths { conv(c, 1) }
    }"""
    g = archdsl.loads(text)
    py = [max(8, int(c * 1.1 + 4) // 8 * 8) for c in [16, 24, 40, 80, 112]]
    py = [v + 8 if v < 0.9 * c * 1.1 else v for v, c in zip(py, [16, 24, 40, 80, 112])]
    assert [g.shape(n)[0] for n in g.order()[1:]] == py == [16, 24, 48, 88, 120]


@pytest.mark.parametrize("text, message", [
    ("def f(a) = a\ndef f(b) = b\nnetwork t { input 3x8x8\n relu }", "defined twice"),
    ("def max(a) = a\nnetwork t { input 3x8x8\n relu }", "built-in function"),
    ("def f(a) = f(a)\nnetwork t { input 3x8x8\n conv(f(1), 1) }", "deeper than 64"),
    ("def f(a) = a\nnetwork t { input 3x8x8\n conv(f(), 1) }", "missing the argument `a`"),
    ("def f(a) = width\nnetwork t(width = 2) { input 3x8x8\n conv(f(1), 1) }", "undefined name `width`"),
    ("network t { input 3x8x8\n conv(len([i for i in 3]), 1) }", "needs a list"),
])
def test_function_and_comprehension_errors(text, message):
    with pytest.raises(ArchError, match=message):
        archdsl.loads(text)


def test_new_ops_exist_so_no_wrong_suggestion():
    g = archdsl.loads("network t { input 3x8x8\n relu6 -> gelu -> gelu(approximate=\"tanh\") -> silu }")
    assert [g.op(n) for n in g.order()[1:]] == ["relu6", "gelu", "gelu", "silu"]
    with pytest.raises(ArchError) as err:
        archdsl.loads("network t { input 3x8x8\n relu7 }")
    assert "relu6" in (err.value.hint or "")


# ---- 4. the new ops: shapes, costs, activation memory, receptive field, reference -------------------

EVERY_NEW_OP = """
network every_new_op {
    input 8 x 6 x 5
    relu6 -> hardswish -> hardsigmoid as a
    mul { @a; global_avgpool -> conv(2, 1) -> silu -> conv(8, 1) -> sigmoid } as se
    chunk(2, 1) as half
    @se -> channel_shuffle(4) -> layer_norm(eps=1e-6) -> layer_scale(0.5)
    permute((1, 2, 0)) -> layer_norm(axis=-1) -> linear(12) -> gelu -> linear(8, bias=false)
    gelu(approximate="tanh") -> permute((2, 0, 1)) -> stochastic_depth(0.3, mode="batch") as out
    output out, half
}
"""


def test_every_new_op_counts_by_its_stated_convention():
    g = archdsl.loads(EVERY_NEW_OP)
    rows = {r.op + ("2" if r.name.endswith("_1") else ""): r for r in archdsl.analyze(g).layers}
    m = 8 * 6 * 5  # elements of the C×H×W map
    expect_other = {"relu6": 2 * m, "hardswish": 5 * m, "hardsigmoid": 4 * m, "mul": m, "silu": 2 * 2,
                    "chunk": 0, "channel_shuffle": 0, "layer_norm": 6 * m, "layer_norm2": 6 * m,
                    "layer_scale": m, "permute": 0, "linear": 6 * 5 * 12, "gelu": 4 * 6 * 5 * 12,
                    "linear2": 0, "gelu2": 8 * m, "stochastic_depth": 0}
    assert {k: rows[k].other_ops for k in expect_other} == expect_other
    assert {k: rows[k].params for k in ("layer_norm", "layer_norm2", "layer_scale", "linear", "linear2")} == \
        {"layer_norm": 16, "layer_norm2": 16, "layer_scale": 8, "linear": 8 * 12 + 12, "linear2": 12 * 8}
    assert rows["linear"].macs == 6 * 5 * 8 * 12 and rows["linear2"].macs == 6 * 5 * 12 * 8
    # in place where torch.nn offers inplace=True; views for chunk and permute; new tensors otherwise
    zero = {"relu6", "hardswish", "hardsigmoid", "silu", "chunk", "permute", "permute2", "stochastic_depth"}
    for k, r in rows.items():
        if k in zero:
            assert r.activations == 0, k
        elif k not in ("input", "conv", "conv2", "sigmoid", "global_avgpool"):
            assert r.activations == math.prod(r.shape), k
    assert g.shape("chunk") == (4, 6, 5) and g.shape("permute") == (6, 5, 8) and g.shape("linear") == (6, 5, 12)
    # the SE product sees the whole input through its global pool; the pointwise ops keep a 1x1 field
    assert (rows["mul"].rf.h, rows["mul"].rf.w) == (6, 5) and rows["relu6"].rf.h == 1


def test_every_new_op_computes_what_torch_does():
    import torch.nn.functional as F

    g = archdsl.loads(EVERY_NEW_OP)
    model = archdsl.to_torch(g).double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
    sd = model.state_dict()
    assert sd["layer_scale"].shape == (8, 1, 1) and sd["linear.weight"].shape == (12, 8)
    assert "layer_scale.weight" not in sd
    x = 3 * torch.randn(2, 8, 6, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out, half = model(x)
        a = F.hardsigmoid(F.hardswish(F.relu6(x)))
        s = torch.sigmoid(F.conv2d(F.silu(F.conv2d(a.mean((2, 3), keepdim=True), sd["conv.weight"], sd["conv.bias"])),
                                   sd["conv_1.weight"], sd["conv_1.bias"]))
        se = a * s
        y = se.view(2, 4, 2, 6, 5).transpose(1, 2).reshape(2, 8, 6, 5)
        y = F.layer_norm(y.permute(0, 2, 3, 1), (8,), sd["layer_norm.weight"], sd["layer_norm.bias"], 1e-6)
        y = y.permute(0, 3, 1, 2) * sd["layer_scale"]
        y = F.layer_norm(y.permute(0, 2, 3, 1), (8,), sd["layer_norm_1.weight"], sd["layer_norm_1.bias"])
        y = F.gelu(F.linear(F.gelu(F.linear(y, sd["linear.weight"], sd["linear.bias"])), sd["linear_1.weight"]),
                   approximate="tanh").permute(0, 3, 1, 2)
    torch.testing.assert_close(half, se[:, 4:], rtol=0, atol=0)
    torch.testing.assert_close(out, y, rtol=1e-12, atol=1e-12)


def test_stochastic_depth_modes_while_training():
    g = archdsl.loads("network t { input 4x3x3\n row: stochastic_depth(0.5) as r\n"
                      "@in -> batch: stochastic_depth(0.5, mode=\"batch\") as b\n output r, b }")
    model = archdsl.to_torch(g).train()
    torch.manual_seed(0)
    x = torch.ones(64, 4, 3, 3)
    row, batch = model(x)
    per_sample = row.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # survivors scaled by 1/(1-p)
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # whole samples, not elements
    assert 0 < (per_sample[:, 0] == 0).sum() < 64  # some samples dropped, some kept
    assert batch.unique().numel() == 1  # the whole batch at once
    model.eval()
    assert model(x)[0] is x


@pytest.mark.parametrize("text, message", [
    ("chunk(3, 0)", "do not split into 3"),
    ("chunk(2, 2)", "past the last of 2"),
    ("channel_shuffle(3)", "not divisible by groups=3"),
    ("permute((0, 1))", "has 2 axes"),
    ("permute((0, 0, 1))", "permutation"),
    ("layer_norm(axis=1)", "0 (channels) or -1"),
    ("gelu(approximate=\"fast\")", '"none" or "tanh"'),
    ("stochastic_depth(0.1, mode=\"col\")", '"row" or "batch"'),
    ("mul { identity; conv(4, 1) }", "do not broadcast"),
])
def test_new_op_mistakes_are_clear_errors(text, message):
    with pytest.raises(ArchError, match=re.escape(message)):
        archdsl.loads(f"network t {{ input 8x4x4\n {text} }}")


@pytest.mark.slow
def test_inception_v3_with_its_auxiliary_head_at_full_size(tvm, one_thread):
    """The auxiliary head needs Mixed_6e at 17x17: torchvision's own 299x299 (AuxLogits in the state dict)."""
    compare_outputs(tvm, variant("inception_v3"), 299)


# ---- 5. the Triton lowering, as far as it goes: the new activations in epilogues -------------------

ACTS_NETWORK = """
network acts {{
    input 3 x 7 x 6
    conv(8, 3, pad=1, bias=false) -> bn -> {act} as a              # conv + BN + act: one conv epilogue
    add {{ conv(8, 1); @a }} -> {act} as b                          # add + act: the residual epilogue
    @b -> maxpool(2) -> {act} -> flatten -> fc(12) -> {act} -> fc(5)  # alone (scale-shift kernel); fc epilogue
}}
"""


@pytest.mark.parametrize("act", ["relu6", "hardsigmoid", "hardswish", "silu"])
def test_new_activations_run_in_kernel_epilogues_under_the_interpreter(act, monkeypatch):
    import torch.nn.functional as F

    model = archdsl.compile(source=ACTS_NETWORK.format(act=act), device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * (1.5 if t.dim() > 1 else 1.0))
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = 2 * torch.randn(2, 3, 7, 6, generator=gen)  # spans every piece of the piecewise activations
    model(x)  # weights prepared (with torch) on the first call

    def forbidden(*args, **kwargs):
        raise AssertionError("torch computed what a kernel should")

    for name in ("conv2d", "linear", "relu6", "hardtanh", "hardsigmoid", "hardswish", "silu", "max_pool2d"):
        monkeypatch.setattr(F, name, forbidden)
    for name in ("conv2d", "sigmoid", "clamp"):
        monkeypatch.setattr(torch, name, forbidden)
    out = model(x)
    monkeypatch.undo()
    with torch.no_grad():
        ref = reference.double()(x.double())
    assert out.shape == ref.shape == (2, 5)
    assert ((out.double() - ref).norm() / ref.norm()).item() <= 1e-5
    g = model.compiled.optimized.graph  # the conv + BN, add and fc epilogues apply it; after the pool, alone
    assert {n: g.nodes[n]["attrs"].get("act") for n in ("conv", "conv_1", "fc")} == dict.fromkeys(
        ("conv", "conv_1", "fc"), act)
    assert [g.op(n) for n in g.successors("maxpool")] == [act]
