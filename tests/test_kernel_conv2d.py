"""kernels/conv2d.py: convolution / GEMM template against torch.nn.functional.

The template is loaded from its file, the way the code generator copies it (it must stand
alone).  Every result is compared with a float64 reference computed by F.conv2d / F.linear on
the same rounded inputs: relative error <= 1e-4 in fp32; in fp16 / bf16 our error must be
at most twice PyTorch's own error at that precision plus a small floor.  Outputs are
poisoned (NaN) first, so an element the kernel fails to write fails the test, and when the
output or the input is a channel slice of a wider buffer, the channels around the slice are
NaN too: they must stay NaN (no stray write) and must not leak into the result (no stray read).

Without CUDA the kernels run in Triton's interpreter (conftest.py sets TRITON_INTERPRET=1),
so the shapes are small: spatial 5-13, a few channels, a seeded sample of configurations.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from kernel_build import check_poison, load_templates, run_compile_check
from kernel_tensors import DEV, rel_err, sliced, square

K = load_templates("conv2d.py", module_name="archdsl_kernel_conv2d")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACTS = {K.ACT_NONE: lambda t: t, K.ACT_RELU: torch.relu, K.ACT_TANH: torch.tanh, K.ACT_SIGMOID: torch.sigmoid}
EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def epilogue_ref(y, scale, bias, res, act):
    """act(y * scale + bias + res) in y's dtype, channels on dim 1 (NCHW) or the last dim (2-d)."""
    shape = (1, -1, 1, 1) if y.dim() == 4 else (1, -1)
    if scale is not None:
        y = y * scale.to(y.dtype).view(shape)
    if bias is not None:
        y = y + bias.to(y.dtype).view(shape)
    if res is not None:
        y = y + res.to(y.dtype)
    return ACTS[act](y)


def run_conv(*, n, c, h, w, k, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
             dtype=torch.float32, scale=False, bias=False, residual=False, act=K.ACT_NONE,
             x_slice=(0, 0), out_slice=(0, 0), res_slice=(0, 0), x_crop=False, out_crop=False,
             res_dtype=None, out_dtype=None, path=None, seed=0, **knobs):
    """Run K.conv2d on random data and check it against F.conv2d; return (error, bound)."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    pt, pb, pl, pr = pad
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)          # rounded once, shared
    wt = (torch.randn(k, c // groups, kh, kw, generator=gen) / (kh * kw * c // groups) ** 0.5).to(dtype)
    sc = (torch.rand(k, generator=gen) + 0.5) if scale else None
    bi = torch.randn(k, generator=gen) if bias else None

    def conv(xx, ww):
        return F.conv2d(F.pad(xx, (pl, pr, pt, pb)), ww, stride=stride, dilation=dilation, groups=groups)

    ref_conv = conv(x_nchw.double(), wt.double())
    p, q = ref_conv.shape[2:]
    rdt = res_dtype or dtype
    res_nchw = torch.randn(n, k, p, q, generator=gen).to(rdt) if residual else None
    ref = epilogue_ref(ref_conv, sc, bi, res_nchw, act)

    # NHWC operands, possibly channel slices / crops of NaN-poisoned wider buffers
    x, _ = sliced((n, h, w, c), dtype, *x_slice, spatial_crop=x_crop)
    x.copy_(x_nchw.permute(0, 2, 3, 1))
    out, obuf = sliced((n, p, q, k), out_dtype or dtype, *out_slice, spatial_crop=out_crop)
    res = None
    if residual:
        res, _ = sliced((n, p, q, k), rdt, *res_slice)
        res.copy_(res_nchw.permute(0, 2, 3, 1))
    wp = K.pack_conv_weight(wt, groups, dtype).to(DEV)
    K.conv2d(x, wp, out, kernel=kernel, stride=stride, pad=pad, dilation=dilation, groups=groups,
             scale=None if sc is None else sc.to(DEV), bias=None if bi is None else bi.to(DEV),
             residual=res, act=act, path=path, **knobs)

    if out_crop:
        assert not torch.isnan(out).any(), "an output element was not written"
        inner = torch.zeros(obuf.shape[:3], dtype=torch.bool, device=DEV)
        inner[:, 1:p + 1, 2:q + 2] = True
        assert torch.isnan(obuf[~inner]).all(), "a pixel outside the output crop was written"
    else:
        check_poison(out, obuf, *out_slice)
    err = rel_err(out.permute(0, 3, 1, 2), ref)
    if out.dtype == torch.float32:  # fp32 accumulation and output: only summation error is left
        bound = 1e-4
    else:  # PyTorch's own error at this precision: conv and epilogue in `dtype`
        lp = epilogue_ref(conv(x_nchw.to(DEV), wt.to(DEV)), None if sc is None else sc.to(DEV),
                          None if bi is None else bi.to(DEV),
                          None if res_nchw is None else res_nchw.to(DEV), act)
        bound = 2 * rel_err(lp, ref) + EPS[dtype] / 8
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
    return err, bound


# --------------------------------------------------------------------------------------
# Weight packing and path selection
# --------------------------------------------------------------------------------------


def test_pack_conv_weight_layout():
    w = torch.randn(6, 2, 3, 5)                      # K=6, Cg=2 (groups=3), R=3, S=5
    wp = K.pack_conv_weight(w, 3, torch.float16)
    assert wp.shape == (3 * 5 * 2, 6) and wp.dtype == torch.float16 and wp.is_contiguous()
    for k, c, r, s in [(0, 0, 0, 0), (5, 1, 2, 4), (3, 0, 1, 2), (4, 1, 0, 3)]:
        assert wp[(r * 5 + s) * 2 + c, k] == w[k, c, r, s].half()
    wl = torch.randn(7, 9)
    assert torch.equal(K.pack_linear_weight(wl, torch.float32), wl.t())
    with pytest.raises(ValueError):
        K.pack_conv_weight(w, 4, torch.float32)      # 6 output channels, 4 groups


@pytest.mark.parametrize("args,want", [
    (dict(c=3, k=8, kernel=(7, 7), stride=(2, 2), pad=(3, 3, 3, 3)), "implicit_flat"),   # the stem
    (dict(c=64, k=64, kernel=(3, 3), pad=(1, 1, 1, 1)), "implicit_tap"),
    (dict(c=64, k=256, kernel=(1, 1)), "gemm"),
    (dict(c=64, k=256, kernel=(1, 1), stride=(2, 2)), "implicit_tap"),                   # strided 1x1
    (dict(c=32, k=32, kernel=(3, 3), groups=32), "depthwise"),
    (dict(c=128, k=128, kernel=(3, 3), groups=32), "implicit_flat"),                     # ResNeXt 32x4d
    (dict(c=96, k=256, kernel=(5, 5), groups=2), "implicit_tap"),                        # AlexNet conv2
    (dict(c=64, k=64, kernel=(1, 1), x_crop=True), "implicit_tap"),                      # rows not evenly strided
])
def test_path_selection(args, want):
    args = dict(args)
    crop = args.pop("x_crop", False)
    x, _ = sliced((1, 8, 8, args.pop("c")), torch.float32, spatial_crop=crop)
    k = args.pop("k")
    out = torch.empty(1, 4, 4, k)                    # only its channel count matters here
    assert K.conv_path(x, out, **args) == want


# --------------------------------------------------------------------------------------
# Architectures' layers, by name
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stem_7x7_c3(dtype):
    run_conv(n=2, c=3, h=13, w=11, k=20, kernel=(7, 7), stride=(2, 2), pad=(3, 3, 3, 3), dtype=dtype,
             scale=True, bias=True, act=K.ACT_RELU)


def test_alexnet_stem_11x11_stride4():
    run_conv(n=2, c=3, h=19, w=23, k=18, kernel=(11, 11), stride=(4, 4), pad=(2, 2, 2, 2), bias=True,
             act=K.ACT_RELU)


@pytest.mark.slow
def test_alexnet_grouped_5x5():
    run_conv(n=2, c=32, h=7, w=6, k=36, kernel=(5, 5), pad=(2, 2, 2, 2), groups=2, bias=True, act=K.ACT_RELU)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_resnext_32_groups_of_4(dtype):
    run_conv(n=2, c=128, h=6, w=5, k=128, kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), groups=32,
             dtype=dtype, scale=True, bias=True, act=K.ACT_RELU)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_depthwise(dtype):
    run_conv(n=3, c=24, h=9, w=7, k=24, kernel=(3, 3), stride=(2, 1), pad=(1, 1, 0, 2), groups=24,
             dtype=dtype, scale=True, bias=True, residual=True, act=K.ACT_RELU)


@pytest.mark.slow
def test_depthwise_channel_multiplier():
    """groups == C but K = 2C (two filters per channel): not the depthwise path, still correct."""
    run_conv(n=2, c=8, h=7, w=7, k=16, kernel=(3, 3), pad=(1, 1, 1, 1), groups=8, bias=True, act=K.ACT_RELU)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bottleneck_1x1_gemm_into_concat_slice(dtype):
    run_conv(n=2, c=40, h=7, w=5, k=36, kernel=(1, 1), dtype=dtype, scale=True, bias=True, residual=True,
             act=K.ACT_RELU, x_slice=(8, 5), out_slice=(3, 11), res_slice=(2, 0))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tap_path_with_channel_tail(dtype):
    """Cg = 48 is a multiple of 16 but not of 32: forced BLOCK_K = 32 masks a channel tail."""
    run_conv(n=2, c=48, h=6, w=7, k=20, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=dtype, path="implicit_tap",
             block_k=32, bias=True, x_slice=(3, 16))


# --------------------------------------------------------------------------------------
# Every path computes the same function; block sizes and tile order are free
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["gemm", "implicit_flat", "implicit_tap"])
def test_1x1_through_every_path(path):
    run_conv(n=2, c=32, h=5, w=6, k=20, kernel=(1, 1), path=path, bias=True, residual=True, act=K.ACT_TANH)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["depthwise", "implicit_flat"])
def test_depthwise_through_both_paths(path):
    run_conv(n=2, c=12, h=8, w=7, k=12, kernel=(5, 5), dilation=(2, 1), pad=(4, 3, 2, 1), groups=12,
             path=path, scale=True)


@pytest.mark.slow
@pytest.mark.parametrize("knobs", [
    dict(block_m=16, block_n=16, block_k=16, swizzle_m=1),
    dict(block_m=64, block_n=16, block_k=64, swizzle_m=2),
    dict(block_m=16, block_n=64, block_k=16, swizzle_m=4),
])
@pytest.mark.parametrize("path", ["implicit_flat", "implicit_tap"])
def test_block_sizes(knobs, path):
    run_conv(n=3, c=32, h=7, w=9, k=40, kernel=(3, 3), stride=(1, 2), pad=(1, 0, 1, 1), path=path,
             bias=True, **knobs)


def test_gemm_block_sizes():
    for knobs in (dict(block_m=16, block_n=16, block_k=16, swizzle_m=1), dict(block_m=64, block_n=64, block_k=64)):
        run_conv(n=3, c=37, h=5, w=7, k=45, kernel=(1, 1), bias=True, **knobs)


def test_1x1_on_cropped_input_and_output():
    """Rows that are not evenly strided: the 1x1 conv leaves the GEMM path."""
    run_conv(n=2, c=16, h=5, w=6, k=18, kernel=(1, 1), x_crop=True, out_crop=True, bias=True)


# --------------------------------------------------------------------------------------
# The epilogue
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("act", list(ACTS), ids=["none", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("layer", [
    dict(c=16, k=24, kernel=(1, 1)),                                              # gemm
    dict(c=16, k=24, kernel=(3, 3), pad=(1, 1, 1, 1)),                            # implicit_tap
    dict(c=5, k=24, kernel=(3, 3), stride=(2, 2), pad=(0, 1, 0, 1)),              # implicit_flat
    dict(c=16, k=16, kernel=(3, 3), pad=(1, 1, 1, 1), groups=16),                 # depthwise
], ids=["gemm", "tap", "flat", "depthwise"])
def test_epilogue(layer, act):
    run_conv(n=2, h=6, w=5, **layer, scale=True, bias=True, residual=True, act=act, res_slice=(4, 4))


@pytest.mark.parametrize("path", ["gemm", "implicit_tap", "depthwise"])
def test_fp32_output_of_fp16_inputs(path):
    """The accumulator is cast once, to out's dtype: an fp32 output keeps fp32 accuracy."""
    run_conv(n=2, c=16, h=5, w=6, k=16, kernel=(1, 1) if path == "gemm" else (3, 3),
             groups=16 if path == "depthwise" else 1, dtype=torch.float16, out_dtype=torch.float32,
             bias=True, residual=True, act=K.ACT_RELU, path=path)


def test_residual_in_another_dtype():
    run_conv(n=2, c=16, h=5, w=5, k=16, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=torch.float16,
             residual=True, res_dtype=torch.float32, act=K.ACT_RELU)


@pytest.mark.parametrize("act", [K.ACT_TANH, K.ACT_SIGMOID], ids=["tanh", "sigmoid"])
def test_saturating_activations_do_not_overflow(act):
    """|pre-activation| up to ~1e4: tanh and sigmoid saturate instead of returning NaN."""
    gen = torch.Generator().manual_seed(act)
    x = torch.randn(1, 4, 4, 16, generator=gen).to(DEV)
    w = torch.randn(16, 16, 1, 1, generator=gen)
    out = torch.full((1, 4, 4, 16), float("nan"), device=DEV)
    scale = torch.full((16,), 1000.0, device=DEV)
    K.conv2d(x, K.pack_conv_weight(w, 1, torch.float32).to(DEV), out, kernel=(1, 1), scale=scale, act=act)
    ref = ACTS[act](F.conv2d(x.cpu().double().permute(0, 3, 1, 2), w.double()) * 1000.0).permute(0, 2, 3, 1)
    assert not torch.isnan(out).any()
    assert rel_err(out, ref) <= 1e-4


# --------------------------------------------------------------------------------------
# A seeded random sample of the whole configuration space
# --------------------------------------------------------------------------------------


def random_conv_config(rng: random.Random) -> dict:
    while True:
        kh = rng.choice([1, 3, 5, 7, 11])
        kw = kh if rng.random() < 0.8 else rng.choice([1, 3, 5])
        stride = (rng.choice([1, 2, 4]), rng.choice([1, 2]))
        dilation = (rng.choice([1, 2]), rng.choice([1, 2])) if max(kh, kw) <= 5 else (1, 1)
        pad = tuple(rng.randint(0, max(kh, kw) // 2 + 1) for _ in range(4))
        if (kh, kw) == (1, 1) and rng.random() < 0.6:   # the pointwise convolutions of bottlenecks
            stride, pad = (1, 1), (0, 0, 0, 0)
        kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
        if kind == "depthwise":
            groups = c = k = rng.randint(2, 20)
        else:
            groups = 1 if kind == "dense" else rng.choice([2, 4])
            c = groups * rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 32])
            k = groups * rng.randint(1, 20)
        n = rng.randint(1, 3)
        h, w = rng.randint(5, 12), rng.randint(5, 12)
        if kh == 11:
            h, w = rng.randint(11, 15), rng.randint(11, 15)
        p = (h + pad[0] + pad[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        q = (w + pad[2] + pad[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if p < 1 or q < 1 or c * k * kh * kw > 20000:
            continue
        cfg = dict(n=n, c=c, h=h, w=w, k=k, kernel=(kh, kw), stride=stride, pad=pad, dilation=dilation,
                   groups=groups, dtype=rng.choice(DTYPES),
                   scale=rng.random() < 0.5, bias=rng.random() < 0.5, residual=rng.random() < 0.4,
                   act=rng.choice(list(ACTS)), seed=rng.randint(0, 10 ** 6))
        if rng.random() < 0.3:
            cfg["x_slice"] = (rng.randint(0, 5), rng.randint(0, 5))
        if rng.random() < 0.3:
            cfg["out_slice"] = (rng.randint(0, 5), rng.randint(0, 5))
        elif rng.random() < 0.15:
            cfg["out_crop"] = True
        if rng.random() < 0.15:
            cfg["x_crop"] = True
        return cfg


CONFIGS = [random_conv_config(random.Random(1000 + i)) for i in range(80)]


def _cfg_id(cfg):
    kh, kw = cfg["kernel"]
    return (f"n{cfg['n']}c{cfg['c']}h{cfg['h']}w{cfg['w']}k{cfg['k']}-{kh}x{kw}s{cfg['stride'][0]}{cfg['stride'][1]}"
            f"d{cfg['dilation'][0]}{cfg['dilation'][1]}g{cfg['groups']}-{str(cfg['dtype'])[6:]}")


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=[_cfg_id(c) for c in CONFIGS])
def test_random_conv(cfg):
    run_conv(**cfg)


def test_random_sample_covers_the_space():
    """The sample above reaches every path, dtype, kernel size, stride, dilation and group kind."""
    def path(cfg):
        x = torch.empty(cfg["n"], cfg["h"], cfg["w"], cfg["c"])
        out = torch.empty(1, 1, 1, cfg["k"])
        return K.conv_path(x, out, kernel=cfg["kernel"], stride=cfg["stride"], pad=cfg["pad"],
                           dilation=cfg["dilation"], groups=cfg["groups"])
    assert {path(c) for c in CONFIGS} == {"gemm", "implicit_flat", "implicit_tap", "depthwise"}
    assert {c["dtype"] for c in CONFIGS} == set(DTYPES)
    assert {c["kernel"][0] for c in CONFIGS} == {1, 3, 5, 7, 11}
    assert {c["stride"][0] for c in CONFIGS} == {1, 2, 4}
    assert {c["dilation"][0] for c in CONFIGS} == {1, 2}
    assert {2, 4} <= {c["groups"] for c in CONFIGS if c["c"] != c["groups"]}
    assert {c["act"] for c in CONFIGS} == set(ACTS)
    assert any(len(set(c["pad"])) > 1 for c in CONFIGS)


# --------------------------------------------------------------------------------------
# Fully connected layers
# --------------------------------------------------------------------------------------


def run_linear(*, n, f, o, dtype=torch.float32, bias=False, residual=False, act=K.ACT_NONE,
               x_slice=(0, 0), out_slice=(0, 0), seed=0, **knobs):
    gen = torch.Generator().manual_seed(seed)
    x2 = torch.randn(n, f, generator=gen).to(dtype)
    wt = (torch.randn(o, f, generator=gen) / f ** 0.5).to(dtype)
    bi = torch.randn(o, generator=gen) if bias else None
    res2 = torch.randn(n, o, generator=gen).to(dtype) if residual else None
    ref = epilogue_ref(F.linear(x2.double(), wt.double()), None, bi, res2, act)

    x, _ = sliced((n, f), dtype, *x_slice)
    x.copy_(x2)
    out, obuf = sliced((n, o), dtype, *out_slice)
    K.linear(x, K.pack_linear_weight(wt, dtype).to(DEV), out, bias=None if bi is None else bi.to(DEV), act=act,
             residual=None if res2 is None else res2.to(DEV), **knobs)
    check_poison(out, obuf, *out_slice)
    err = rel_err(out, ref)
    if dtype == torch.float32:
        bound = 1e-4
    else:
        lp = epilogue_ref(F.linear(x2.to(DEV), wt.to(DEV)), None, None if bi is None else bi.to(DEV),
                          None if res2 is None else res2.to(DEV), act)
        bound = 2 * rel_err(lp, ref) + EPS[dtype] / 8
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"


LINEAR_CONFIGS = []
for _i in range(12):
    _r = random.Random(500 + _i)
    LINEAR_CONFIGS.append(dict(n=_r.randint(1, 5), f=_r.choice([1, 7, 16, 33, 70]), o=_r.choice([1, 10, 17, 40]),
                               dtype=DTYPES[_i % 3], bias=_r.random() < 0.7, residual=_r.random() < 0.4,
                               act=_r.choice(list(ACTS)),
                               x_slice=(_r.randint(0, 3), _r.randint(0, 3)),
                               out_slice=(_r.randint(0, 3), _r.randint(0, 3))))


@pytest.mark.parametrize("cfg", LINEAR_CONFIGS,
                         ids=[f"n{c['n']}f{c['f']}o{c['o']}-{str(c['dtype'])[6:]}" for c in LINEAR_CONFIGS])
def test_linear(cfg):
    run_linear(**cfg, seed=cfg["n"] * 100 + cfg["f"])


def test_linear_small_blocks():
    run_linear(n=37, f=50, o=45, bias=True, act=K.ACT_SIGMOID, block_m=16, block_n=16, block_k=16, swizzle_m=2)


# --------------------------------------------------------------------------------------
# Misuse is reported, not silently computed
# --------------------------------------------------------------------------------------


def test_bad_arguments_raise():
    x = torch.randn(1, 6, 6, 8, device=DEV)
    wp = K.pack_conv_weight(torch.randn(4, 8, 3, 3), 1, torch.float32).to(DEV)
    out = torch.empty(1, 4, 4, 4, device=DEV)
    K.conv2d(x, wp, out, kernel=(3, 3))                                          # the valid call
    with pytest.raises(ValueError, match="convolution gives"):
        K.conv2d(x, wp, torch.empty(1, 5, 5, 4, device=DEV), kernel=(3, 3))      # wrong P, Q
    with pytest.raises(ValueError, match="w_packed"):
        K.conv2d(x, wp, out, kernel=(3, 3), groups=2)                            # weight for groups=1
    with pytest.raises(ValueError, match="stride 1"):
        K.conv2d(x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1), wp, out, kernel=(3, 3))  # NCHW memory
    with pytest.raises(ValueError, match="dtype"):
        K.conv2d(x.half(), wp, out, kernel=(3, 3))                               # weight in another dtype
    with pytest.raises(ValueError, match="act"):
        K.conv2d(x, wp, out, kernel=(3, 3), act=99)  # not an ACT_* code
    with pytest.raises(ValueError, match="scale"):
        K.conv2d(x, wp, out, kernel=(3, 3), scale=torch.ones(5, device=DEV))
    with pytest.raises(ValueError, match="gemm"):
        K.conv2d(x, wp, out, kernel=(3, 3), path="gemm")
    with pytest.raises(ValueError, match="shapes"):
        K.linear(torch.randn(2, 5, device=DEV), K.pack_linear_weight(torch.randn(3, 4), torch.float32).to(DEV),
                 torch.empty(2, 3, device=DEV))


# --------------------------------------------------------------------------------------
# GPU tier: full-size layers (skipped without CUDA)
# --------------------------------------------------------------------------------------


GPU_LAYERS = [  # (c, h, k, kernel, stride, pad, groups): ResNet-50's kinds of conv, a ResNeXt and a depthwise one
    (3, 224, 64, 7, 2, 3, 1), (64, 56, 64, 1, 1, 0, 1), (64, 56, 64, 3, 1, 1, 1), (64, 56, 256, 1, 1, 0, 1),
    (256, 56, 128, 1, 1, 0, 1), (128, 56, 128, 3, 2, 1, 1), (256, 56, 512, 1, 2, 0, 1),
    (512, 14, 512, 3, 1, 1, 1), (1024, 14, 2048, 1, 2, 0, 1), (256, 28, 256, 3, 1, 1, 32),
    (128, 56, 128, 3, 1, 1, 128),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer", GPU_LAYERS, ids=[f"c{c}h{h}k{k}r{r}s{s}g{g}" for c, h, k, r, s, _, g in GPU_LAYERS])
def test_gpu_full_size_layers(layer, dtype):
    c, h, k, r, s, p, g = layer
    run_conv(n=4, c=c, h=h, w=h, k=k, **square(r, s, p), groups=g, dtype=dtype,
             scale=True, bias=True, residual=s == 1 and c == k, act=K.ACT_RELU, out_slice=(16, 32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_linear_classifier(dtype):
    run_linear(n=64, f=2048, o=1000, dtype=dtype, bias=True, out_slice=(0, 24))


# --------------------------------------------------------------------------------------
# Without a GPU: the kernels also compile for real GPUs (the interpreter accepts programs
# the compiler rejects: loop-carried types, layouts, dot shapes)
# --------------------------------------------------------------------------------------

_COMPILE_VARIANTS = r'''
ep = dict(HAS_SCALE=True, HAS_BIAS=True, HAS_RES=True, ACT=K.ACT_SIGMOID, INTERPRETED=False,
          HAS_PRE=False, HAS_IN_SCALE=False, HAS_IN_SHIFT=False, IN_ACT=0, RES_AFTER_ACT=False, HAS_OUT_SCALE=False)
one_out = dict(NUM_OUT=1, ACT1=0, ACT2=0, ACT3=0)  # the gemm kernel's single-destination variant
geo = dict(KH=3, KW=3, SH=2, SW=1, PH=1, PW=0, DH=1, DW=2)
f32 = {"x": "fp32", "scale_ptr": "fp32", "bias_ptr": "fp32"}
f16 = {"x": "fp16", "scale_ptr": "fp32", "bias_ptr": "fp32"}
bf16 = {"x": "bf16", "scale_ptr": "fp32", "bias_ptr": "fp32"}
compile_for(K._conv_gemm_kernel, f16, dict(ep, **one_out, K=256, INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=128,
            BLOCK_K=64, SWIZZLE_M=8), 8, 4)
compile_for(K._conv_implicit_gemm_kernel, bf16, dict(ep, **geo, CG=64, FLAT=False, INPUT_PRECISION="tf32",
            BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, SWIZZLE_M=8), 4, 4)
compile_for(K._conv_implicit_gemm_kernel, f32, dict(ep, **geo, CG=3, FLAT=True, INPUT_PRECISION="ieee",
            BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, SWIZZLE_M=8), 4, 3)
compile_for(K._conv_depthwise_kernel, f16, dict(ep, **geo, BLOCK_M=64, BLOCK_C=64), 4, 2)
'''


@pytest.mark.slow
def test_kernels_compile_for_gpus(tmp_path):
    """sm_90 (H100 / H200) builds of every path (fp32 / fp16 / bf16, the full epilogue) succeed."""
    run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS)
