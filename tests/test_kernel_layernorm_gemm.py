"""A layer norm over the channels folded into the 1x1 GEMM that reads it (issue 13: ConvNeXt's
layer norm -> first linear), and the pass that does it (archdsl/passes/norm.py).

    conv(LN(x)) = rstd * (conv_{W*gamma}(x) - mean * c) + (bias + W @ beta)

The kernel (kernels/conv2d.py, ``in_ln``) against float64 PyTorch (layer norm, then the conv)
in fp32 within 1e-4, at shapes where K is not a multiple of BLOCK_K nor M of BLOCK_M, with
signed gammas and betas and inputs whose per-pixel mean is far from 0; in bf16 against the
unfused program (kernels/norm.py's layer norm stored in bf16, then the plain conv) within the
bound the kernel's docstring states.  Then the pass (what it fuses, each reason it declines) and
the compiled small ConvNeXt against the float64 reference.

Without CUDA the kernels run in Triton's interpreter (conftest.py): small shapes.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from kernel_build import load_templates, run_compile_check
from kernel_tensors import DEV, rel_err

K = load_templates("conv2d.py", "elementwise.py", "norm.py", module_name="archdsl_kernel_conv2d_ln")

EPS = 1e-6


def make(n=2, h=3, w=5, c=40, k=24, seed=0, shift=3.0):
    """x (NCHW) whose pixels have means around `shift` (not 0: the mean must really cancel),
    an (out, in) weight, bias, and signed gamma / beta."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen) * 2.0 + shift * torch.randn(n, 1, h, w, generator=gen)
    wt = torch.randn(k, c, generator=gen) / c ** 0.5
    bias = torch.randn(k, generator=gen) * 0.3
    gamma = torch.rand(c, generator=gen) * 2.0 - 0.7  # some negative
    beta = torch.randn(c, generator=gen) * 0.5
    return x, wt, bias, gamma, beta


def reference(x, wt, bias, gamma, beta, act=None, residual=None):
    """float64: layer norm over the channels, the 1x1 conv, [+ residual], [act]; NHWC."""
    x64 = x.double()
    y = F.layer_norm(x64.permute(0, 2, 3, 1), (x.shape[1],), gamma.double(), beta.double(), EPS)
    y = y @ wt.double().t() + bias.double()
    if residual is not None:
        y = y + residual.double()
    return act(y) if act is not None else y


def fused(x_nhwc, wt, bias, gamma, beta, dtype, **kw):
    wp, b, c = K.fold_layer_norm(wt, bias, gamma, beta, dtype)
    n, h, w, _ = x_nhwc.shape
    out = torch.empty(n, h, w, wt.shape[0], dtype=dtype, device=DEV)
    K.conv2d(x_nhwc, wp.to(DEV), out, kernel=(1, 1), bias=b.to(DEV), in_ln=c.to(DEV), in_ln_eps=EPS, **kw)
    return out


def nhwc(x, dtype):
    return x.permute(0, 2, 3, 1).contiguous().to(dtype).to(DEV)


# ---- the kernel ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [dict(block_m=16, block_n=16, block_k=16), dict(block_m=32, block_n=32, block_k=32)])
def test_fp32_matches_float64(blocks):
    x, wt, bias, gamma, beta = make()  # M = 30, K = 40: neither a multiple of the blocks
    ref = reference(x, wt, bias, gamma, beta)
    out = fused(nhwc(x, torch.float32), wt, bias, gamma, beta, torch.float32, **blocks)
    assert (out.double().cpu() - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def test_fp32_gelu_and_residual_match_float64():
    x, wt, bias, gamma, beta = make(c=20, k=12, seed=1)
    gen = torch.Generator().manual_seed(9)
    res = torch.randn(2, 3, 5, 12, generator=gen)
    ref = reference(x, wt, bias, gamma, beta, act=F.gelu, residual=res)
    out = fused(nhwc(x, torch.float32), wt, bias, gamma, beta, torch.float32, residual=res.to(DEV),
                act=K.ACT_GELU, block_m=16, block_n=16, block_k=16)
    assert (out.double().cpu() - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def test_the_mean_really_cancels():
    """Without the mean term (c = 0) the result is wrong by mean * rstd * sum W': the kernel's
    statistics are what makes it right."""
    x, wt, bias, gamma, beta = make(seed=2, shift=5.0)
    ref = reference(x, wt, bias, gamma, beta)
    wp, b, c = K.fold_layer_norm(wt, bias, gamma, beta, torch.float32)
    out = torch.empty(2, 3, 5, 24, device=DEV)
    K.conv2d(nhwc(x, torch.float32), wp.to(DEV), out, kernel=1, bias=b.to(DEV), in_ln=torch.zeros_like(c).to(DEV),
             in_ln_eps=EPS)
    assert rel_err(out, ref) > 0.1


def test_bf16_within_the_stated_bound_of_the_unfused_program():
    """Unfused: layer norm stored in bf16, then the conv with W in bf16.  Fused: x in bf16 times
    W * gamma rounded to bf16.  The docstring's bound: each differs from float64 by about 2^-8 per
    product, so their outputs differ by at most ~2^-7 of sum |W LN(x)| per element."""
    x, wt, bias, gamma, beta = make(c=72, k=40, seed=3)
    x16 = nhwc(x, torch.bfloat16)
    ref = reference(x16.float().permute(0, 3, 1, 2).cpu(), wt, bias, gamma, beta)  # same bf16 input
    out = fused(x16, wt, bias, gamma, beta, torch.bfloat16, block_m=16, block_n=16, block_k=32)

    ln = torch.empty_like(x16)
    K.layer_norm(x16, ln, weight=gamma.float().to(DEV), bias=beta.float().to(DEV), eps=EPS)
    plain = torch.empty_like(out)
    K.conv2d(ln, K.pack_conv_weight(wt[:, :, None, None], 1, torch.bfloat16).to(DEV), plain, kernel=1,
             bias=bias.float().to(DEV), block_m=16, block_n=16, block_k=32)

    ln64 = F.layer_norm(x16.double().cpu(), (72,), gamma.double(), beta.double(), EPS)
    magnitude = ln64.abs() @ wt.double().abs().t()  # sum_k |W[o, k] LN(x)[m, k]|
    gap = (out.double().cpu() - plain.double().cpu()).abs()
    assert (gap <= 2.0 ** -7 * magnitude + 2.0 ** -8 * plain.double().abs().cpu()).all()  # + the output's rounding
    assert rel_err(out, plain) <= 2.0 ** -7  # typical: far below the worst case
    assert rel_err(out, ref) <= 1e-2 and rel_err(plain, ref) <= 1e-2


def test_never_split():
    """An explicit split_k is declined (the statistics need all K columns): the same bits; and the
    default split chooser does not split a layer-norm launch it would split otherwise."""
    x, wt, bias, gamma, beta = make(c=100, k=8, seed=4)
    xs = nhwc(x, torch.float32)
    one = fused(xs, wt, bias, gamma, beta, torch.float32, block_m=16, block_n=16, block_k=16)
    four = fused(xs, wt, bias, gamma, beta, torch.float32, block_m=16, block_n=16, block_k=16, split_k=4)
    assert torch.equal(one, four)
    blocks = (128, 128, 64)
    assert K.conv_default_split_k("gemm", 49, 768, 4096, blocks, 132) > 1
    assert K.conv_default_split_k("gemm", 49, 768, 4096, blocks, 132, ln=True) == 1


def test_without_in_ln_nothing_changes():
    """in_ln=None is the plain conv, bit for bit (the flag compiles the old kernel)."""
    x, wt, bias, _, _ = make(seed=5)
    xs = nhwc(x, torch.float32)
    wp = K.pack_conv_weight(wt[:, :, None, None], 1, torch.float32).to(DEV)
    out = torch.empty(2, 3, 5, 24, device=DEV)
    K.conv2d(xs, wp, out, kernel=1, bias=bias.to(DEV))
    ref = xs.double().cpu().reshape(-1, 40) @ wt.double().t() + bias.double()
    assert (out.reshape(-1, 24).double().cpu() - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("bad, match", [
    (dict(kernel=(3, 3), pad=(1, 1, 1, 1)), "gemm path"),
    (dict(kernel=1, path="implicit_tap"), "gemm path"),
    (dict(kernel=1, in_gate=torch.ones(2, 40)), "prologue or a gate"),
    (dict(kernel=1, in_scale=torch.ones(40)), "prologue or a gate"),
    (dict(kernel=1, in_ln_eps=0.0), "positive"),
    (dict(kernel=1, in_ln=torch.zeros(23)), "in_ln must be"),
])
def test_bad_arguments_are_clear_errors(bad, match):
    x, wt, bias, gamma, beta = make(c=40, k=24)
    xs = nhwc(x, torch.float32)
    wp, b, c = (t.to(DEV) for t in K.fold_layer_norm(wt, bias, gamma, beta, torch.float32))
    bad = {k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in bad.items()}
    kernel = bad.pop("kernel")
    if kernel != 1:
        wp = torch.zeros(9 * 40, 24, device=DEV)
    args = {**dict(kernel=kernel, bias=b, in_ln=c, in_ln_eps=EPS), **bad}
    with pytest.raises(ValueError, match=match):
        K.conv2d(xs, wp, torch.empty(2, 3, 5, 24, device=DEV), **args)


_COMPILE_VARIANTS = '''
vecs = {"x": "bf16", "scale_ptr": "fp32", "bias_ptr": "fp32", "ln_c_ptr": "fp32", "in_scale_ptr": "fp32",
        "in_shift_ptr": "fp32", "gate_ptr": "bf16"}
ep = dict(HAS_SCALE=False, HAS_BIAS=True, ACT=8, INTERPRETED=False, HAS_PRE=False, HAS_IN_SCALE=False,
          HAS_IN_SHIFT=False, IN_ACT=0, HAS_OUT_SCALE=False)
for k, res in ((768, False), (96, True)):
    compile_for(K._conv_gemm_kernel, vecs,
                dict(ep, HAS_RES=res, RES_AFTER_ACT=False, NUM_OUT=1, ACT1=0, ACT2=0, ACT3=0, K=k,
                     INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SWIZZLE_M=8, HAS_LN=True), 8, 4)
'''


@pytest.mark.slow
def test_layer_norm_gemm_compiles_for_gpus(tmp_path):
    """sm_90 builds of the GEMM with the layer norm folded in (bf16, gelu; with a residual)."""
    run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS)


# ---- the pass (archdsl/passes/norm.py): what it fuses, what it declines and why ----------------------

import archdsl  # noqa: E402
from archdsl.codegen.schedule import make_schedule  # noqa: E402
from archdsl.passes import optimize  # noqa: E402
from archdsl.runtime.model import build  # noqa: E402
from compiled_check import compiled_error, randomize_all  # noqa: E402
from smaller import EXAMPLES, smaller  # noqa: E402
from test_passes import assert_same_function  # noqa: E402

PASS = "fuse_layer_norm_into_conv"
NO_CHAIN = ("fuse_conv_chain",)


def net(body: str, outputs: str = "") -> str:
    return f"network n {{\n input 8x5x6\n {body}\n{outputs}}}\n"


BLOCK = "conv(8, 7, pad=3, groups=8) -> layer_norm(eps=1e-6) as ln\n conv(32, 1) -> gelu -> conv(8, 1)"


def ln_report(o):
    return next(r for r in o.reports if r.name == PASS)


def test_the_layer_norm_becomes_the_gemms_input():
    g = archdsl.loads(net(BLOCK))
    o = optimize(g, disable=NO_CHAIN)
    og = o.graph
    (ln,) = [n for n in g.nodes if g.op(n) == "layer_norm"]
    assert "layer_norm" not in {og.op(n) for n in og.nodes}
    (conv,) = [n for n in og.nodes if og.nodes[n]["attrs"].get("in_ln_eps") is not None]
    a = og.nodes[conv]["attrs"]
    assert a["in_ln_eps"] == 1e-6 and a["sources"]["in_ln"] == ln and a["act"] == "gelu"
    assert og.op(og.args(conv)[0]) in ("conv", "fused_conv") and og.shape(og.args(conv)[0]) == (8, 5, 6)
    assert ln_report(o).changed == [f"{ln} -> the input of {conv}"] and not ln_report(o).declined
    assert "ln+" in archdsl.ops.OPS["fused_conv"].describe(a)
    assert archdsl.analyze(og).params == archdsl.analyze(g).params  # γ and β counted on the conv
    assert_same_function(g, o)  # the reference: layer norm, then the conv
    launch = make_schedule(og).launch_of(conv)
    assert launch.ln and launch.epilogue.bias  # W·β joins the bias
    assert build(g, disable=NO_CHAIN).program.launches == build(g, disable=NO_CHAIN + (PASS,)).program.launches - 1


@pytest.mark.parametrize("body,outputs,why", [
    (BLOCK.replace("-> gelu", "as a\n @ln -> conv(4, 1) as b\n @a -> gelu"), " output b\n",
     "2 inputs read it"),
    ("layer_norm as ln\n conv(4, 1) as a", " output a, ln\n", "it is a graph output"),
    ("layer_norm as ln\n relu -> conv(4, 1)", "", "`relu` (a relu) reads it"),
    ("layer_norm as ln\n conv(4, 3, pad=1)", "", "not a 1x1, stride-1, unpadded, ungrouped conv"),
    ("layer_norm as ln\n conv(4, 1, stride=2)", "", "not a 1x1, stride-1, unpadded, ungrouped conv"),
    ("layer_norm as ln\n conv(8, 1, groups=2)", "", "not a 1x1, stride-1, unpadded, ungrouped conv"),
    ("layer_norm(affine=false) as ln\n conv(4, 1)", "", "no affine weight"),
    ("layer_norm as ln\n bn -> relu -> conv(4, 1)", "", "already applies a batch norm or activation"),
    ("conv(8, 1) as a\n layer_norm as ln\n add { @a -> conv(8, 1); @ln }", "", "as its residual"),
    ("global_avgpool -> flatten -> layer_norm as ln\n fc(4)", "", "not over the channels of a C×H×W map"),
])
def test_declined_with_a_reason(body, outputs, why):
    o = optimize(archdsl.loads(net(body, outputs)), disable=NO_CHAIN)
    assert "layer_norm" in {o.graph.op(n) for n in o.graph.nodes}
    (ln,) = [n for n in o.graph.nodes if o.graph.op(n) == "layer_norm"]
    (declined,) = ln_report(o).declined
    assert declined.startswith(f"{ln}: ") and why in declined


def test_a_conv_in_a_chain_launch_is_declined():
    """With the chain pass on, the block's two GEMMs run as one chain kernel (32 channels on chip),
    which folds no layer norm: the chain keeps the larger intermediate off memory, the norm stays."""
    o = optimize(archdsl.loads(net(BLOCK)))
    (declined,) = ln_report(o).declined
    assert "computes in one launch with other convs" in declined


def test_convnext_tiny_launches_fall_by_one_per_block():
    """ConvNeXt-T: 18 blocks, each dwconv -> norm -> linear+gelu -> linear+scale+residual, 4 launches
    -> 3; the stem's, the downsamplings' and the head's norms are declined (the first block reads the
    stem's twice, 2x2 stride-2 convs and a flatten read the others): 83 - 18 = 65."""
    g = archdsl.load(EXAMPLES / "convnext.arch")
    blocks = sum(1 for n in g.order() if g.op(n) == "layer_scale")
    before, after = build(g, disable=(PASS,)).program.launches, build(g).program.launches
    assert (blocks, before, after) == (18, 83, 65)
    o = optimize(g)
    assert len(ln_report(o).changed) == blocks
    declined = ln_report(o).declined
    assert len(declined) == 1 + 3 + 1 and "2 inputs read it" in declined[0] and "(a flatten) reads it" in declined[-1]
    assert all("not a 1x1, stride-1" in d for d in declined[1:4])


# ---- compiled end to end (the generated program under the interpreter) against float64 PyTorch ----------


@pytest.mark.slow
def test_compiled_block_matches_float64():
    model = archdsl.compile(source=net(BLOCK), device="cpu", disable=NO_CHAIN)
    program = model.compiled.program
    assert "in_ln=" in program.source and "fold_layer_norm(" in program.source
    assert "layer_norm" not in program.kernel_counts() and program.launches == 3
    randomize_all(model, seed=3)
    torch.manual_seed(3)
    x = torch.randn(2, 8, 5, 6) + 2.0
    assert compiled_error(model, x) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("disable", [NO_CHAIN, NO_CHAIN + (PASS,)], ids=["fused", "unfused"])
def test_compiled_small_convnext_matches_float64(disable):
    """examples/convnext.arch at its documented reduced size, the chain pass off so that every block's
    norm is fused (at width 16 the chain pass would take the blocks' GEMM pairs): 3 launches a block."""
    path = EXAMPLES / "convnext.arch"
    spec = smaller(path)
    model = archdsl.compile(path, device="cpu", input_shape=spec["input_shape"], disable=disable, **spec["params"])
    program = model.compiled.program
    blocks = sum(1 for n in model.graph.order() if model.graph.op(n) == "layer_scale")
    fused_convs = [n for n in program.graph.order() if program.graph.nodes[n]["attrs"].get("in_ln_eps") is not None]
    assert len(fused_convs) == (blocks if PASS not in disable else 0) and blocks == 18
    randomize_all(model, seed=7)
    torch.manual_seed(1)
    assert compiled_error(model, torch.randn(1, *spec["input_shape"])) <= 1e-4


# ---- the tuner's key and trial runs, the performance model ----------------------------------------------


def test_the_tuner_keys_an_ln_launch_and_never_splits_it(tmp_path):
    from archdsl.runtime import tune
    from archdsl.runtime.launches import ConvLaunch, conv_launches, conv_signature

    graph = optimize(archdsl.loads(net(BLOCK)), disable=NO_CHAIN).graph
    (normed,) = [launch for launch in conv_launches(graph, 2) if launch.ln]
    assert normed.signature().endswith("res0 act8 ln1 | gemm")
    plain = conv_signature((2, 5, 6, 8), (2, 5, 6, 32), kernel=1, act=8, path="gemm")
    assert plain == normed.signature().replace(" ln1", "")  # signatures without a layer norm are unchanged
    # ConvNeXt-T's last stage at batch 1: 49 pixels x 3072 channels fill few SMs, a plain launch splits
    wide = ConvLaunch("c", (1, 7, 7, 768), (1, 7, 7, 3072), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, False, 8, "gemm")
    config = [{"block_m": 64, "block_n": 128, "block_k": 64}]
    assert any(c.get("split_k", 1) > 1 for c in tune.split_k_variants(wide, config, 132))
    assert tune.split_k_variants(replace(wide, ln=True), config, 132) == config

    seen = []

    def conv2d(*args, **kwargs):
        seen.append((kwargs.get("in_ln"), kwargs.get("in_ln_eps")))
        return K.conv2d(*args, **kwargs)

    x, wt, bias, gamma, beta = make(c=16, k=8, seed=6)
    wp, b, c = (t.to(DEV) for t in K.fold_layer_norm(wt, bias, gamma, beta, torch.float32))
    cache = tune.TuneCache(tmp_path / "tune.json")
    info = tune.DeviceInfo("Fake GPU", "9.0", "2.13.0", "3.9.0")
    result = tune.tune_conv2d(nhwc(x, torch.float32), wp, torch.empty(2, 3, 5, 8, device=DEV), kernel=1, bias=b, in_ln=c,
                              in_ln_eps=EPS, conv2d=conv2d, timer=lambda fn: (fn(), 1.0)[1], cache=cache, info=info,
                              candidates=[{"block_m": 16, "block_n": 16, "block_k": 16}])
    assert seen and all(s[0] is c and s[1] == EPS for s in seen)
    key_sig = conv_signature((2, 3, 5, 16), (2, 3, 5, 8), kernel=1, path="gemm", ln=True)
    assert tune.TuneCache(cache.path).get(tune.TuneKey.make(info, "conv2d", key_sig, torch.float32)) == result.config


def test_the_perf_model_counts_the_bytes_the_fusion_saves():
    """Predicted (not measured): the fused block moves 2·N·C·H·W elements less (the norm's write and
    read back; the GEMM reads x either way) in one launch less."""
    from archdsl.runtime.perfmodel import Ceilings, predict_schedule

    g = archdsl.loads(net(BLOCK))
    fused = make_schedule(optimize(g, disable=NO_CHAIN).graph)
    plain = make_schedule(optimize(g, disable=NO_CHAIN + (PASS,)).graph)
    batch, elem = 4, 2
    ceilings = Ceilings.h200_datasheet()
    p_fused, p_plain = (predict_schedule(s, batch, "bfloat16", ceilings) for s in (fused, plain))
    assert len(p_plain) - len(p_fused) == 1
    assert sum(p.dram_bytes for p in p_plain) - sum(p.dram_bytes for p in p_fused) == 2 * batch * 8 * 5 * 6 * elem
