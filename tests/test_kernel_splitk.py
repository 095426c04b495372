"""kernels/conv2d.py's split-K: the reduction in slices, fp32 partials, one reduce + epilogue.

Every result is compared with a float64 F.conv2d of the same rounded inputs: relative error
<= 1e-4 in fp32; in fp16 / bf16 at most one rounding of the output (half an ulp, eps / 2),
since products accumulate in fp32 and the epilogue runs on the fp32 sum.  Outputs are channel
slices of NaN-poisoned buffers: every element written, nothing around the slice touched.

Tiny shapes (the interpreter); BLOCK_K = 16 so that a few channels make several reduction
blocks to split.  The automatic choice of S is a pure function, checked with arithmetic.
"""

import re

import pytest
import torch
import torch.nn.functional as F

from kernel_build import check_poison, load_templates, run_compile_check
from kernel_tensors import DEV, rel_err

K = load_templates("conv2d.py", module_name="archdsl_kernel_splitk")

ACTS = {K.ACT_NONE: lambda t: t, K.ACT_RELU: torch.relu, K.ACT_TANH: torch.tanh, K.ACT_SIGMOID: torch.sigmoid}
EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}

# (name, layer): the gemm path and the implicit paths; 72, 32*9, 16*9 and 4*25 reduction
# indices are 5, 18, 9 and 7 blocks of 16: not multiples of S * BLOCK_K for S in 2..4
LAYERS = {
    "gemm_1x1": dict(c=72, k=24, kernel=(1, 1)),
    "tap_3x3_strided": dict(c=32, k=20, kernel=(3, 3), stride=(2, 1), pad=(1, 1, 0, 1)),
    "tap_3x3_grouped": dict(c=32, k=24, kernel=(3, 3), pad=(1, 1, 1, 1), groups=2),
    "flat_5x5_grouped": dict(c=8, k=12, kernel=(5, 5), pad=(2, 2, 2, 2), groups=2),
}
PATHS = {"gemm_1x1": "gemm", "tap_3x3_strided": "implicit_tap", "tap_3x3_grouped": "implicit_tap",
         "flat_5x5_grouped": "implicit_flat"}


def run_split(*, c, k, kernel, stride=(1, 1), pad=(0, 0, 0, 0), groups=1, n=2, h=6, w=5, dtype=torch.float32,
              scale=False, bias=False, residual=False, act=K.ACT_NONE, residual_after_act=False, out_scale=1.0,
              prologue=False, out_slice=(3, 5), seed=0, **knobs):
    """K.conv2d into a NaN-poisoned channel slice, checked against float64; returns the output."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    pt, pb, pl, pr = pad
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)
    wt = (torch.randn(k, c // groups, kh, kw, generator=gen) / (kh * kw * c // groups) ** 0.5).to(dtype)
    sc = torch.rand(k, generator=gen) + 0.5 if scale else None
    bi = torch.randn(k, generator=gen) if bias else None
    in_scale = torch.rand(c, generator=gen) + 0.5 if prologue else None
    in_shift = torch.randn(c, generator=gen) if prologue else None

    xin = x_nchw.double()
    if prologue:  # what the conv reads: relu(x * in_scale + in_shift) rounded to x's dtype
        xin = torch.relu(xin * in_scale.double().view(1, -1, 1, 1) + in_shift.double().view(1, -1, 1, 1))
        xin = xin.to(dtype).double()
    y = F.conv2d(F.pad(xin, (pl, pr, pt, pb)), wt.double(), stride=stride, groups=groups)
    p, q = y.shape[2:]
    res_nchw = torch.randn(n, k, p, q, generator=gen).to(dtype) if residual else None
    if sc is not None:
        y = y * sc.double().view(1, -1, 1, 1)
    if bi is not None:
        y = y + bi.double().view(1, -1, 1, 1)
    if residual and not residual_after_act:
        y = y + res_nchw.double()
    y = ACTS[act](y)
    if residual and residual_after_act:
        y = y + res_nchw.double()
    ref = y * out_scale

    x = x_nchw.permute(0, 2, 3, 1).contiguous().to(DEV)
    before, after = out_slice
    obuf = torch.full((n, p, q, before + k + after), float("nan"), dtype=dtype, device=DEV)
    out = obuf[..., before:before + k]
    res = res_nchw.permute(0, 2, 3, 1).contiguous().to(DEV) if residual else None
    dev = (lambda v: None if v is None else v.to(DEV))
    K.conv2d(x, K.pack_conv_weight(wt, groups, dtype).to(DEV), out, kernel=kernel, stride=stride, pad=pad,
             groups=groups, scale=dev(sc), bias=dev(bi), residual=res, act=act, residual_after_act=residual_after_act,
             out_scale=out_scale, in_scale=dev(in_scale), in_shift=dev(in_shift),
             in_act=K.ACT_RELU if prologue else K.ACT_NONE, **knobs)
    check_poison(out, obuf, before, after)
    bound = 1e-4 if dtype == torch.float32 else EPS[dtype] / 2 + 1e-5
    err = rel_err(out.permute(0, 3, 1, 2), ref)
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
    return out


def slices_run(layer, split_k, block_k=16):
    """The (S, blocks per slice) the launcher really runs for `layer` with BLOCK_K = block_k."""
    kh, kw = layer["kernel"]
    cg = layer["c"] // layer.get("groups", 1)
    path = PATHS[next(name for name, lay in LAYERS.items() if lay is layer)]
    return K._conv_split_plan(split_k, path, 0, 0, kh * kw * cg, (16, 16, block_k), torch.device("cpu"), cg=cg)


# --------------------------------------------------------------------------------------
# Every path, S = 2, 3, 4, the full epilogue
# --------------------------------------------------------------------------------------


# S = 3 on the gemm and tap paths: the epilogue tests below; on the flat walk: the fp16 / bf16 ones
# (asked for 4, the grouped tap layer's 9 blocks make 3 slices: its S = 3 case)
SPLITS = [("gemm_1x1", 2), ("gemm_1x1", 4), ("tap_3x3_strided", 2), ("tap_3x3_strided", 4),
          ("tap_3x3_grouped", 2), ("tap_3x3_grouped", 4), ("flat_5x5_grouped", 2), ("flat_5x5_grouped", 4)]


@pytest.mark.parametrize("name,split_k", SPLITS, ids=[f"{n}-S{s}" for n, s in SPLITS])
def test_split_matches_reference(name, split_k):
    layer = LAYERS[name]
    run_split(**layer, scale=True, bias=True, residual=True, act=K.ACT_RELU, split_k=split_k, block_k=16)


def test_slices_when_k_is_not_a_multiple_of_s_blocks():
    """5 blocks in 2 slices: 3 + 2; 18 blocks in 4: 5 + 5 + 5 + 3; 7 in 4: 2 + 2 + 2 + 1; 9 blocks
    asked for 4 slices get 3 of 3 (4 slices of cdiv(9, 4) = 3 blocks would leave one empty);
    more slices than blocks: one block each."""
    assert slices_run(LAYERS["gemm_1x1"], 2) == (2, 3)
    assert slices_run(LAYERS["tap_3x3_strided"], 4) == (4, 5)
    assert slices_run(LAYERS["flat_5x5_grouped"], 4) == (4, 2)
    assert slices_run(LAYERS["tap_3x3_grouped"], 4) == (3, 3)
    assert slices_run(LAYERS["gemm_1x1"], 32) == (5, 1)
    assert slices_run(LAYERS["gemm_1x1"], None) == (1, 5)  # automatic on the CPU: no split


# --------------------------------------------------------------------------------------
# The epilogue's features and the prologue, through the reduce kernel
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gemm_1x1", "tap_3x3_strided"])
@pytest.mark.parametrize("features", [
    dict(),                                                                  # the bare product
    dict(bias=True, act=K.ACT_TANH),
    dict(scale=True, residual=True, act=K.ACT_SIGMOID, residual_after_act=True, out_scale=0.5),  # a mean join
    dict(bias=True, prologue=True, act=K.ACT_RELU),                          # BN + relu while loading
], ids=["bare", "bias_tanh", "mean_join", "prologue"])
def test_split_epilogue_features(name, features):
    run_split(**LAYERS[name], **features, split_k=3, block_k=16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["gemm_1x1", "flat_5x5_grouped"])
def test_split_low_precision(name, dtype):
    run_split(**LAYERS[name], dtype=dtype, scale=True, bias=True, residual=True, act=K.ACT_RELU, split_k=3,
              block_k=16)


# --------------------------------------------------------------------------------------
# Determinism and the single-pass path
# --------------------------------------------------------------------------------------


def test_split_k_1_is_the_single_pass_kernel_bit_for_bit():
    layer = dict(LAYERS["tap_3x3_strided"], scale=True, bias=True, residual=True, act=K.ACT_RELU, block_k=16)
    default = run_split(**layer)
    assert torch.equal(run_split(**layer, split_k=1), default)
    # S = 3 sums in another order: close, not the same bits -- so the check above could fail
    split = run_split(**layer, split_k=3)
    assert not torch.equal(split, default)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_split_is_deterministic(dtype):
    layer = dict(LAYERS["flat_5x5_grouped"], dtype=dtype, bias=True, act=K.ACT_RELU, split_k=4, block_k=16)
    assert torch.equal(run_split(**layer), run_split(**layer))


def test_split_k_refused_where_it_does_not_apply():
    x = torch.randn(1, 5, 5, 8, device=DEV)
    depthwise = K.pack_conv_weight(torch.randn(8, 1, 3, 3), 8, torch.float32).to(DEV)
    with pytest.raises(ValueError, match="depthwise"):
        K.conv2d(x, depthwise, torch.empty(1, 3, 3, 8, device=DEV), kernel=(3, 3), groups=8, split_k=2)
    pointwise = K.pack_conv_weight(torch.randn(12, 8, 1, 1), 1, torch.float32).to(DEV)
    two = (torch.empty(1, 5, 5, 4, device=DEV), torch.empty(1, 5, 5, 8, device=DEV))
    with pytest.raises(ValueError, match="one destination"):
        K.conv2d(x, pointwise, two, kernel=(1, 1), split_k=2)
    K.conv2d(x, pointwise, two, kernel=(1, 1), split_k=1)  # no split: allowed
    for bad in (0, -1, 2.0, "2"):
        with pytest.raises(ValueError, match="split_k"):
            K.conv2d(x, pointwise, torch.empty(1, 5, 5, 12, device=DEV), kernel=(1, 1), split_k=bad)


# --------------------------------------------------------------------------------------
# The automatic choice, by arithmetic
# --------------------------------------------------------------------------------------


def test_automatic_split_of_resnet50_layer4_conv2_at_batch_1():
    """M = 49 pixels, N = 512, K = 9 * 512 = 4608 on an H200's 132 SMs, bf16 defaults: BLOCK_M =
    64 (49 rounded up to a power of two), BLOCK_N = 128, BLOCK_K = 64: 1 * 4 = 4 tiles, 72 blocks.
    The busiest SM's blocks: S = 1: 72; S = 18 -> 72 programs of 4 blocks: 4; S = 24 -> 96
    programs of 3: 3; S = 36 -> 144 programs of 2, two on 12 SMs: 4; S = 72 needs slices of
    1 block (< 3).  Any split pays 8 blocks for the reduce: 3 + 8 < 72."""
    blocks = K.conv_default_blocks("implicit_tap", 49, 512, 4608, torch.bfloat16, False, cg=512)
    assert blocks[:3] == (64, 128, 64)
    assert K.conv_reduction_iters("implicit_tap", 4608, 64, 512) == 72
    s = K.conv_default_split_k("implicit_tap", 49, 512, 4608, blocks, 132, cg=512)
    assert s == K.conv_split_k(4, 72, 132) == 24
    assert 66 <= 4 * s <= 132  # tiles * S near the SM count, one wave


def test_automatic_split_leaves_full_launches_alone():
    # ResNet-50's layer1 1x1 at batch 32: 32*56*56 / 128 * 256 / 128 = 1568 tiles
    big = K.conv_default_blocks("gemm", 32 * 56 * 56, 256, 64, torch.bfloat16, False)
    assert K.conv_default_split_k("gemm", 32 * 56 * 56, 256, 64, big, 132) == 1
    assert K.conv_split_k(67, 1000, 132) == 1      # more than half the SMs busy already
    assert K.conv_split_k(66, 1000, 132) == 2      # exactly half: 132 programs of 500 blocks
    assert K.conv_split_k(7, 8, 132) == 1          # 2 slices of 4 blocks save 4 < the reduce's 8
    assert K.conv_split_k(4, 16, 132) == 4         # 4 slices of 4 save 12 > 8 (layer3's 1x1, batch 1)
    assert K.conv_split_k(4, 5, 132) == 1          # 5 blocks: not two slices of 3
    assert K.conv_split_k(1, 10 ** 4, 132) == 32   # capped: 32 slices at most
    assert K.conv_default_split_k("depthwise", 49, 512, 9, (32, 64, 1), 132) == 1
    assert K.conv_split_k(4, 72, 0) == 1           # no SM count (not a GPU)


# --------------------------------------------------------------------------------------
# sm_90 builds of the split and reduce kernels, bf16, without register spills
# --------------------------------------------------------------------------------------

_COMPILE_VARIANTS = r'''
pro = dict(HAS_PRE=False, HAS_IN_SCALE=False, HAS_IN_SHIFT=False, IN_ACT=0, INTERPRETED=False,
           INPUT_PRECISION="tf32")
bf16 = {"x": "bf16", "ws_ptr": "fp32"}
tile = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, SWIZZLE_M=8)
# layer4's 3x3 at batch 1 (24 slices of 3 blocks), its 1x1 (K = 2048) and a flat stem-like walk
compile_for(K._conv_implicit_splitk_kernel, bf16, dict(pro, **tile, CG=512, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1,
            DH=1, DW=1, FLAT=False, SLICE_ITERS=3), 4, 4)
compile_for(K._conv_implicit_splitk_kernel, bf16, dict(pro, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, SWIZZLE_M=8,
            CG=3, KH=7, KW=7, SH=2, SW=2, PH=3, PW=3, DH=1, DW=1, FLAT=True, SLICE_ITERS=2), 4, 4)
compile_for(K._conv_gemm_splitk_kernel, bf16, dict(pro, **tile, K=2048, SLICE_ITERS=4), 4, 4)
compile_for(K._conv_splitk_reduce_kernel, {"x": "bf16", "ws_ptr": "fp32", "scale_ptr": "fp32", "bias_ptr": "fp32"},
            dict(SPLIT_K=24, HAS_SCALE=True, HAS_BIAS=True, HAS_RES=True, ACT=K.ACT_RELU, RES_AFTER_ACT=False,
                 HAS_OUT_SCALE=False, INTERPRETED=False, BLOCK_M=32, BLOCK_N=64), 4, 1)
'''


@pytest.mark.slow
def test_split_kernels_compile_for_gpus_without_spills(tmp_path):
    """sm_90 builds of both split kernels and the reduce kernel in bf16 succeed; ptxas -v reports
    no spill for any of them."""
    r = run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS, env={"TRITON_DUMP_PTXAS_LOG": "1"})
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", r.stdout)]
    assert len(spills) >= 4, f"ptxas reported no resources:\n{r.stdout[-2000:]}"
    assert not any(spills), f"register spills (bytes) per build: {spills}"
