"""kernels/conv2d.py: the fusions the compiler's passes use, against float64 PyTorch references.

* the prologue: a batch norm + activation *before* the conv, applied while loading its input
  (in_scale, in_shift, in_act); the padding halo must be 0 *after* the normalisation;
* the mean-join epilogue: the residual after the activation, then out_scale
  (y = (act(conv) + r) / 2 with out_scale = 0.5);
* several destinations: sibling 1x1 convs as one wide GEMM whose column ranges land in
  different tensors, each with its own activation.

Same conventions as tests/test_kernel_conv2d.py: the template is loaded from its file; the
error ||out - ref|| / ||ref|| against float64 is <= 1e-4 in fp32 and in fp16 / bf16 at most
twice PyTorch's own error at that precision (the unfused program run in that dtype) plus a
small floor; outputs are poisoned with NaN, and channel slices sit in NaN-filled wider buffers
whose other channels must stay NaN (no stray write) and must not leak in (no stray read).
"""

import pytest
import torch
import torch.nn.functional as F

from kernel_build import check_poison, load_templates, run_compile_check
from kernel_tensors import DEV, rel_err, sliced, twin_conv

K = load_templates("conv2d.py", module_name="archdsl_kernel_conv2d_fusion")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACTS = {K.ACT_NONE: lambda t: t, K.ACT_RELU: torch.relu, K.ACT_TANH: torch.tanh, K.ACT_SIGMOID: torch.sigmoid}
EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def bound_for(dtype, lp, ref):
    """fp32: 1e-4; fp16 / bf16: twice PyTorch's own error `lp` at that precision, plus a floor."""
    return 1e-4 if dtype == torch.float32 else 2 * rel_err(lp, ref) + EPS[dtype] / 8


def channel_vec(v, dtype):
    return v.to(dtype).view(1, -1, 1, 1)


def prologue_ref(x, in_scale, in_shift, in_act):
    """in_act(x * in_scale + in_shift) in x's dtype (NCHW): the normalised tensor the unfused program stores."""
    if in_scale is not None:
        x = x * channel_vec(in_scale, x.dtype)
    if in_shift is not None:
        x = x + channel_vec(in_shift, x.dtype)
    return ACTS[in_act](x)


def epilogue_ref(y, scale, bias, res, act, after, out_scale):
    """y * scale + bias, the residual before or `after` act, then * out_scale, in y's dtype (NCHW)."""
    if scale is not None:
        y = y * channel_vec(scale, y.dtype)
    if bias is not None:
        y = y + channel_vec(bias, y.dtype)
    if res is not None and not after:
        y = y + res.to(y.dtype)
    y = ACTS[act](y)
    if res is not None and after:
        y = y + res.to(y.dtype)
    return y * out_scale if out_scale != 1.0 else y


def random_prologue(c, gen, parts):
    """in_scale around 1, in_shift around 0.75: the halo's in_act(in_shift) is far from 0."""
    in_scale = torch.rand(c, generator=gen) + 0.5 if "scale" in parts else None
    in_shift = 0.5 * torch.randn(c, generator=gen) + 0.75 if "shift" in parts else None
    return in_scale, in_shift


def to_dev(v):
    return None if v is None else v.to(DEV)


# --------------------------------------------------------------------------------------
# One convolution with any of the fusions, against F.conv2d
# --------------------------------------------------------------------------------------


def run_fused(*, n=2, c, h, w, k, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
              dtype=torch.float32, pre=(), in_act=K.ACT_NONE, scale=False, bias=False, residual=False,
              act=K.ACT_NONE, after=False, out_scale=1.0, x_slice=(0, 0), out_slice=(0, 0), path=None, seed=0,
              **knobs):
    """Run K.conv2d with the given fusions on random data, check it against float64; return (error, bound).

    pre: the prologue's vectors ("scale", "shift"); with in_act != ACT_NONE there is a prologue.
    """
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    pt, pb, pl, pr = pad
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)
    wt = (torch.randn(k, c // groups, kh, kw, generator=gen) / (kh * kw * c // groups) ** 0.5).to(dtype)
    in_scale, in_shift = random_prologue(c, gen, pre)
    sc = torch.rand(k, generator=gen) + 0.5 if scale else None
    bi = torch.randn(k, generator=gen) if bias else None

    def program(xx, ww, res, pad_first=False, res_after_act=after):
        """The unfused program: normalise, pad with zeros, conv, epilogue (pad_first: the wrong halo)."""
        padded = F.pad(xx, (pl, pr, pt, pb))
        if pad_first:
            padded = prologue_ref(padded, in_scale, in_shift, in_act)
        else:
            padded = F.pad(prologue_ref(xx, in_scale, in_shift, in_act), (pl, pr, pt, pb))
        y = F.conv2d(padded, ww, stride=stride, dilation=dilation, groups=groups)
        return epilogue_ref(y, sc, bi, res, act, res_after_act, out_scale)

    p = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    q = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    res_nchw = torch.randn(n, k, p, q, generator=gen).to(dtype) if residual else None
    ref = program(x_nchw.double(), wt.double(), None if res_nchw is None else res_nchw.double())

    x, _ = sliced((n, h, w, c), dtype, *x_slice)
    x.copy_(x_nchw.permute(0, 2, 3, 1))
    out, obuf = sliced((n, p, q, k), dtype, *out_slice)
    res = None
    if residual:
        res, _ = sliced((n, p, q, k), dtype, 3, 2)
        res.copy_(res_nchw.permute(0, 2, 3, 1))
    K.conv2d(x, K.pack_conv_weight(wt, groups, dtype).to(DEV), out, kernel=kernel, stride=stride, pad=pad,
             dilation=dilation, groups=groups, scale=to_dev(sc), bias=to_dev(bi), residual=res, act=act,
             in_scale=to_dev(in_scale), in_shift=to_dev(in_shift), in_act=in_act,
             residual_after_act=after, out_scale=out_scale, path=path, **knobs)

    check_poison(out, obuf, *out_slice)
    err = rel_err(out.permute(0, 3, 1, 2), ref)
    lp = None if dtype == torch.float32 else program(x_nchw, wt, res_nchw)
    bound = bound_for(dtype, lp, ref)
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
    # the bound is tight enough to tell the right program from the likely wrong ones
    x64, w64, r64 = x_nchw.double(), wt.double(), None if res_nchw is None else res_nchw.double()
    if max(pad) > 0 and ("shift" in pre or in_act == K.ACT_SIGMOID):  # a halo of in_act(in_shift), not 0
        assert rel_err(program(x64, w64, r64, pad_first=True), ref) > 10 * bound
    if residual and act != K.ACT_NONE:  # the residual on the other side of the activation
        assert rel_err(program(x64, w64, r64, res_after_act=not after), ref) > 10 * bound
    return err, bound


# --------------------------------------------------------------------------------------
# The prologue: x' = in_act(x * in_scale[c] + in_shift[c]) while loading, halo stays 0
# --------------------------------------------------------------------------------------

PROLOGUE_LAYERS = {
    "gemm": dict(c=12, h=5, w=4, k=10, kernel=(1, 1), in_act=K.ACT_RELU, x_slice=(3, 2)),
    "tap_pad": dict(c=16, h=5, w=6, k=8, kernel=(3, 3), pad=(1, 1, 1, 1), in_act=K.ACT_SIGMOID),
    "tap_grouped_stride2": dict(c=32, h=7, w=6, k=12, kernel=(3, 3), stride=(2, 2), pad=(1, 0, 1, 1), groups=2,
                                in_act=K.ACT_RELU, x_slice=(0, 5)),
    "flat_grouped_cg4": dict(c=8, h=6, w=7, k=6, kernel=(3, 3), stride=(2, 1), pad=(1, 1, 2, 0), groups=2,
                             in_act=K.ACT_TANH, x_slice=(2, 3)),
    "flat_stem_c3": dict(c=3, h=9, w=8, k=8, kernel=(5, 5), stride=(2, 2), pad=(2, 2, 2, 2), in_act=K.ACT_RELU),
    "depthwise": dict(c=12, h=6, w=5, k=12, kernel=(3, 3), stride=(2, 1), pad=(1, 1, 1, 1), groups=12,
                      in_act=K.ACT_RELU, x_slice=(4, 1)),
}
PROLOGUE_PATHS = {"gemm": "gemm", "tap_pad": "implicit_tap", "tap_grouped_stride2": "implicit_tap",
                  "flat_grouped_cg4": "implicit_flat", "flat_stem_c3": "implicit_flat", "depthwise": "depthwise"}


def test_prologue_layers_take_the_paths_they_name():
    for name, layer in PROLOGUE_LAYERS.items():
        x = torch.empty(1, layer["h"], layer["w"], layer["c"])
        out = torch.empty(1, 1, 1, layer["k"])
        got = K.conv_path(x, out, kernel=layer["kernel"], stride=layer.get("stride", (1, 1)),
                          pad=layer.get("pad", (0, 0, 0, 0)), groups=layer.get("groups", 1))
        assert got == PROLOGUE_PATHS[name], name


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer", list(PROLOGUE_LAYERS), ids=list(PROLOGUE_LAYERS))
def test_prologue(layer, dtype):
    """BN + act before the conv, with the conv's own epilogue (scale, bias, act) after it."""
    run_fused(**PROLOGUE_LAYERS[layer], dtype=dtype, pre=("scale", "shift"), scale=True, bias=True,
              act=K.ACT_RELU, seed=len(layer))


@pytest.mark.slow
@pytest.mark.parametrize("pre,in_act", [(("scale",), K.ACT_NONE), (("shift",), K.ACT_NONE),
                                        ((), K.ACT_SIGMOID), (("scale", "shift"), K.ACT_NONE)],
                         ids=["scale", "shift", "act_only", "scale_shift"])
@pytest.mark.parametrize("path", ["implicit_tap", "implicit_flat", "depthwise"])
def test_prologue_parts(path, pre, in_act):
    """Each of in_scale, in_shift, in_act alone turns the prologue on; the halo is still 0."""
    if path == "depthwise":
        layer = dict(c=16, k=16, groups=16)
    else:
        layer = dict(c=16, k=8, groups=1)
    run_fused(**layer, h=5, w=5, kernel=(3, 3), pad=(1, 1, 1, 1), pre=pre, in_act=in_act, path=path, bias=True)


def test_prologue_with_residual_and_channel_tail():
    """Cg = 48 with BLOCK_K = 32 on the tap path: the masked channel tail must read 0, not in_act(in_shift)."""
    run_fused(c=48, h=5, w=4, k=12, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=torch.float16, pre=("scale", "shift"),
              in_act=K.ACT_SIGMOID, residual=True, act=K.ACT_RELU, path="implicit_tap", block_k=32,
              x_slice=(2, 2), out_slice=(1, 3))


# --------------------------------------------------------------------------------------
# The mean-join epilogue: y = (act(conv * scale + bias) + residual) * out_scale
# --------------------------------------------------------------------------------------

EPILOGUE_LAYERS = {
    "gemm": dict(c=16, k=12, kernel=(1, 1)),
    "tap": dict(c=16, k=12, kernel=(3, 3), pad=(1, 1, 1, 1)),
    "flat": dict(c=5, k=12, kernel=(3, 3), stride=(2, 2), pad=(0, 1, 0, 1)),
    "depthwise": dict(c=12, k=12, kernel=(3, 3), pad=(1, 1, 1, 1), groups=12),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", [K.ACT_NONE, K.ACT_RELU], ids=["no_act", "relu"])
@pytest.mark.parametrize("layer", list(EPILOGUE_LAYERS), ids=list(EPILOGUE_LAYERS))
def test_mean_join(layer, act, dtype):
    """(act(conv * scale + bias) + r) / 2: the residual after the activation, then out_scale."""
    run_fused(**EPILOGUE_LAYERS[layer], h=6, w=5, dtype=dtype, scale=True, bias=True, residual=True, act=act,
              after=True, out_scale=0.5, out_slice=(2, 3))


@pytest.mark.slow
@pytest.mark.parametrize("residual,after", [(False, False), (True, False)], ids=["no_residual", "res_before_act"])
@pytest.mark.parametrize("layer", ["gemm", "tap", "depthwise"])
def test_out_scale(layer, residual, after):
    run_fused(**EPILOGUE_LAYERS[layer], h=5, w=6, bias=True, residual=residual, after=after,
              act=K.ACT_TANH, out_scale=-0.25)


def test_defaults_are_the_plain_conv():
    """out_scale=1.0, residual_after_act without a residual and no prologue: bit-identical results."""
    x, wp, bias, plain, fused = twin_conv(K, (2, 5, 5, 16), 8, 3, torch.bfloat16, seed=3, bias=True)
    K.conv2d(x, wp, plain, kernel=(3, 3), pad=1, bias=bias, act=K.ACT_SIGMOID)
    K.conv2d(x, wp, fused, kernel=(3, 3), pad=1, bias=bias, act=K.ACT_SIGMOID, out_scale=1.0,
             residual_after_act=True, in_scale=None, in_shift=None, in_act=K.ACT_NONE)
    assert torch.equal(plain, fused)


# --------------------------------------------------------------------------------------
# Several destinations: one wide 1x1 GEMM, column ranges into different tensors
# --------------------------------------------------------------------------------------


def run_several(*, n=2, h, w, c, widths, acts, dtype=torch.float32, slices=None, out_dtypes=None,
                pre=False, in_act=K.ACT_NONE, scale=True, bias=True, out_scale=1.0, x_slice=(0, 0), seed=0, **knobs):
    """Sibling 1x1 convs with widths K_i as one call with out = tuple of destinations; check each.

    slices: per destination (before, after) channels of its NaN-filled wider buffer;
    acts: one code for all, or one per destination.
    """
    gen = torch.Generator().manual_seed(seed)
    k = sum(widths)
    slices = slices or [(0, 0)] * len(widths)
    out_dtypes = out_dtypes or [dtype] * len(widths)
    per_act = list(acts) if isinstance(acts, (tuple, list)) else [acts] * len(widths)
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)
    wt = (torch.randn(k, c, 1, 1, generator=gen) / c ** 0.5).to(dtype)
    in_scale, in_shift = random_prologue(c, gen, ("scale", "shift") if pre else ())
    sc = torch.rand(k, generator=gen) + 0.5 if scale else None
    bi = torch.randn(k, generator=gen) if bias else None

    def program(xx, ww, prologue_dtype=None):
        """The unfused siblings: one conv each (weights = row ranges of ww), own activation.

        prologue_dtype: round the normalised input to it (what the kernel feeds tl.dot).
        """
        xx = prologue_ref(xx, in_scale, in_shift, in_act)
        if prologue_dtype is not None:
            xx = xx.to(prologue_dtype).to(ww.dtype)
        ys, lo = [], 0
        for width, a in zip(widths, per_act):
            part = slice(lo, lo + width)
            ys.append(epilogue_ref(F.conv2d(xx, ww[part]), None if sc is None else sc[part],
                                   None if bi is None else bi[part], None, a, False, out_scale))
            lo += width
        return ys

    refs = program(x_nchw.double(), wt.double())
    lps = program(x_nchw, wt) if dtype != torch.float32 else [None] * len(widths)
    # an fp32 destination of fp16 / bf16 operands: only summation error is left, given the
    # operands the kernel multiplies (with a prologue, x' rounded to x's dtype)
    refs_exact = program(x_nchw.double(), wt.double(), prologue_dtype=dtype if pre else None)

    x, _ = sliced((n, h, w, c), dtype, *x_slice)
    x.copy_(x_nchw.permute(0, 2, 3, 1))
    views, bufs = zip(*[sliced((n, h, w, width), odt, *slc) for width, odt, slc in zip(widths, out_dtypes, slices)])
    K.conv2d(x, K.pack_conv_weight(wt, 1, dtype).to(DEV), tuple(views), kernel=(1, 1), scale=to_dev(sc),
             bias=to_dev(bi), act=acts, in_scale=to_dev(in_scale), in_shift=to_dev(in_shift), in_act=in_act,
             out_scale=out_scale, **knobs)

    for i, (view, buf, slc, ref, ref_exact, lp) in enumerate(zip(views, bufs, slices, refs, refs_exact, lps)):
        check_poison(view, buf, *slc)
        if view.dtype == torch.float32:
            ref, bound = ref_exact, 1e-4
        else:
            bound = bound_for(dtype, lp, ref)
        err = rel_err(view.permute(0, 3, 1, 2), ref)
        assert err <= bound, f"destination {i}: relative error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_two_outputs_concat_slice_and_own_buffer(dtype):
    """Inception-style: branch 0 (relu) straight into its concat's channel slice, branch 1 (no act)
    into its own buffer, for the 3x3 conv that follows it."""
    run_several(h=5, w=6, c=24, widths=(10, 14), acts=(K.ACT_RELU, K.ACT_NONE), dtype=dtype,
                slices=[(6, 9), (0, 0)], x_slice=(3, 4))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_three_outputs_with_prologue(dtype):
    """Three siblings behind one BN + relu prologue, two of them channel slices, per-destination acts,
    one destination in fp32 (its own dtype); blocks of 16 columns straddle the destinations."""
    run_several(h=4, w=5, c=20, widths=(7, 12, 9), acts=(K.ACT_NONE, K.ACT_SIGMOID, K.ACT_RELU), dtype=dtype,
                slices=[(5, 0), (0, 0), (2, 11)], out_dtypes=[dtype, torch.float32, dtype], pre=True,
                in_act=K.ACT_RELU, block_n=16, block_m=16, block_k=16)


def test_four_outputs_one_act_and_out_scale():
    run_several(n=1, h=6, w=5, c=13, widths=(5, 11, 7, 9), acts=K.ACT_TANH, slices=[(1, 1), (0, 3), (4, 0), (0, 0)],
                out_scale=0.5, bias=False, block_n=16)


def test_single_destination_tuple_is_the_plain_call():
    x, wp, _, plain, tup = twin_conv(K, (1, 4, 5, 16), 8, 1, torch.float16, seed=5)
    K.conv2d(x, wp, plain, kernel=(1, 1), act=K.ACT_RELU)
    K.conv2d(x, wp, (tup,), kernel=(1, 1), act=(K.ACT_RELU,))
    assert torch.equal(plain, tup)


def test_several_outputs_misuse_raises():
    x = torch.randn(1, 6, 6, 8, device=DEV)
    w1 = K.pack_conv_weight(torch.randn(10, 8, 1, 1), 1, torch.float32).to(DEV)
    a, b = torch.empty(1, 6, 6, 4, device=DEV), torch.empty(1, 6, 6, 6, device=DEV)
    K.conv2d(x, w1, (a, b), kernel=(1, 1), act=(K.ACT_RELU, K.ACT_NONE))            # the valid call
    with pytest.raises(ValueError, match="residual"):
        K.conv2d(x, w1, (a, b), kernel=(1, 1), residual=torch.empty(1, 6, 6, 10, device=DEV))
    w3 = K.pack_conv_weight(torch.randn(10, 8, 3, 3), 1, torch.float32).to(DEV)
    with pytest.raises(ValueError, match="gemm path"):
        K.conv2d(x, w3, (a, b), kernel=(3, 3), pad=1)                               # not 1x1
    with pytest.raises(ValueError, match="gemm path"):
        K.conv2d(x, w1, (a[:, :3, :3], b[:, :3, :3]), kernel=(1, 1), stride=2)        # strided
    with pytest.raises(ValueError, match="gemm path"):
        K.conv2d(x, K.pack_conv_weight(torch.randn(10, 4, 1, 1), 2, torch.float32).to(DEV), (a, b),
                 kernel=(1, 1), groups=2)                                            # grouped
    with pytest.raises(ValueError, match="gemm path"):
        K.conv2d(x, w1, (a, b), kernel=(1, 1), path="implicit_tap")
    with pytest.raises(ValueError, match="gemm path"):                               # x rows not evenly strided
        K.conv2d(torch.randn(1, 8, 8, 8, device=DEV)[:, 1:7, 1:7], w1, (a, b), kernel=(1, 1))
    with pytest.raises(ValueError, match="evenly strided"):                          # out[1] a spatial crop
        K.conv2d(x, w1, (a, torch.empty(1, 8, 8, 6, device=DEV)[:, 1:7, 1:7]), kernel=(1, 1))
    with pytest.raises(ValueError, match="w_packed"):
        K.conv2d(x, w1, (a, a), kernel=(1, 1))                                       # 4 + 4 != 10 channels
    with pytest.raises(ValueError, match=r"\(N, P, Q\)"):
        K.conv2d(x, w1, (a, torch.empty(1, 6, 5, 6, device=DEV)), kernel=(1, 1))
    with pytest.raises(ValueError, match="codes"):
        K.conv2d(x, w1, (a, b), kernel=(1, 1), act=(K.ACT_RELU,))
    with pytest.raises(ValueError, match="act"):
        K.conv2d(x, w1, (a, b), kernel=(1, 1), act=(K.ACT_RELU, 99))  # not an ACT_* code
    with pytest.raises(ValueError, match="act"):
        K.conv2d(x, w1, torch.empty(1, 6, 6, 10, device=DEV), kernel=(1, 1), act=(K.ACT_RELU, K.ACT_NONE))
    with pytest.raises(ValueError, match="1 to 4"):
        K.conv2d(x, K.pack_conv_weight(torch.randn(5, 8, 1, 1), 1, torch.float32).to(DEV),
                 tuple(torch.empty(1, 6, 6, 1, device=DEV) for _ in range(5)), kernel=(1, 1))
    with pytest.raises(ValueError, match="scale"):
        K.conv2d(x, w1, (a, b), kernel=(1, 1), scale=torch.ones(4, device=DEV))
    with pytest.raises(ValueError, match="dtype"):
        K.conv2d(x, w1, (a, b.to(torch.int32)), kernel=(1, 1))


def test_prologue_misuse_raises():
    x = torch.randn(1, 6, 6, 8, device=DEV)
    wp = K.pack_conv_weight(torch.randn(4, 8, 3, 3), 1, torch.float32).to(DEV)
    out = torch.empty(1, 4, 4, 4, device=DEV)
    with pytest.raises(ValueError, match="in_scale"):
        K.conv2d(x, wp, out, kernel=(3, 3), in_scale=torch.ones(4, device=DEV))      # (K,) instead of (C,)
    with pytest.raises(ValueError, match="in_shift"):
        K.conv2d(x, wp, out, kernel=(3, 3), in_shift=torch.ones(8, 2, device=DEV)[:, 0])  # not contiguous
    with pytest.raises(ValueError, match="in_act"):
        K.conv2d(x, wp, out, kernel=(3, 3), in_act=99)  # not an ACT_* code


# --------------------------------------------------------------------------------------
# Without a GPU: the fused variants also compile for real GPUs (sm_90)
# --------------------------------------------------------------------------------------

_COMPILE_VARIANTS = r'''
vecs = {"scale_ptr": "fp32", "bias_ptr": "fp32", "in_scale_ptr": "fp32", "in_shift_ptr": "fp32"}
ep = dict(HAS_SCALE=True, HAS_BIAS=True, ACT=K.ACT_RELU, INTERPRETED=False, HAS_PRE=True, HAS_IN_SCALE=True,
          HAS_IN_SHIFT=True, IN_ACT=K.ACT_RELU, HAS_OUT_SCALE=True)
geo = dict(KH=3, KW=3, SH=2, SW=1, PH=1, PW=0, DH=1, DW=2)
compile_for(K._conv_gemm_kernel, dict(vecs, x="fp16", out1_ptr="fp32"),
            dict(ep, HAS_RES=False, RES_AFTER_ACT=False, NUM_OUT=3, ACT1=K.ACT_SIGMOID, ACT2=K.ACT_NONE,
                 ACT3=K.ACT_NONE, K=256, INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=128, BLOCK_K=64,
                 SWIZZLE_M=8), 8, 4)
compile_for(K._conv_implicit_gemm_kernel, dict(vecs, x="bf16"),
            dict(ep, HAS_RES=True, RES_AFTER_ACT=True, **geo, CG=64, FLAT=False, INPUT_PRECISION="tf32",
                 BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, SWIZZLE_M=8), 4, 4)
compile_for(K._conv_implicit_gemm_kernel, dict(vecs, x="fp32"),
            dict(ep, HAS_RES=True, RES_AFTER_ACT=False, **geo, CG=3, FLAT=True, INPUT_PRECISION="ieee",
                 BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, SWIZZLE_M=8), 4, 3)
compile_for(K._conv_depthwise_kernel, dict(vecs, x="fp16"),
            dict(ep, HAS_RES=True, RES_AFTER_ACT=True, **geo, BLOCK_M=64, BLOCK_C=64), 4, 2)
'''


@pytest.mark.slow
def test_fused_kernels_compile_for_gpus(tmp_path):
    """sm_90 builds with the prologue, the residual after act, out_scale and three destinations."""
    run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS)
