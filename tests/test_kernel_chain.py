"""kernels/conv2d_chain.py: a conv and the 1x1 conv after it in one kernel, against PyTorch.

The template calls helpers of kernels/conv2d.py without importing it (the code generator pastes
all templates into one module, conv2d.py first), so the tests load both files into ONE module
namespace, in that order.

Every result is compared with a float64 reference built the way the unfused program computes:
F.conv2d -> + bias1 -> act1 -> rounded to the input dtype -> F.conv2d (1x1) -> + bias2 -> + residual
-> act2.  Relative error <= 1e-4 in fp32; in fp16 / bf16 at most twice PyTorch's own error at that
precision (the same chain run by PyTorch in that dtype) plus a small floor.  Outputs are poisoned
(NaN) first, and when the output or the input is a channel slice of a wider buffer, the channels
around the slice are NaN too: they must stay NaN (no stray write) and must not leak into the
result (no stray read).  Under the interpreter (no CUDA) the shapes are small.
"""

import ast
import random
import re
import sys

import pytest
import torch
import torch.nn.functional as F

from kernel_build import KERNELS, check_poison, load_templates, run_compile_check
from kernel_tensors import DEV, rel_err, sliced, square

K = load_templates("conv2d.py", "conv2d_chain.py", module_name="archdsl_kernel_chain")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACTS = {K.ACT_NONE: lambda t: t, K.ACT_RELU: torch.relu, K.ACT_TANH: torch.tanh, K.ACT_SIGMOID: torch.sigmoid}
ACT_IDS = {K.ACT_NONE: "none", K.ACT_RELU: "relu", K.ACT_TANH: "tanh", K.ACT_SIGMOID: "sigmoid"}
EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def chain_ref(x, w1, w2, b1, b2, res, act1, act2, *, stride, pad, dilation=1, mid_dtype, groups=1):
    """The unfused program in x's dtype (NCHW): conv (grouped if `groups`), epilogue 1, mid stored
    as mid_dtype, 1x1 conv, epilogue 2."""
    pt, pb, pl, pr = pad
    y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w1, stride=stride, dilation=dilation, groups=groups)
    if b1 is not None:
        y = y + b1.to(y.dtype).view(1, -1, 1, 1)
    mid = ACTS[act1](y).to(mid_dtype).to(x.dtype)
    y = F.conv2d(mid, w2)
    if b2 is not None:
        y = y + b2.to(y.dtype).view(1, -1, 1, 1)
    if res is not None:
        y = y + res.to(y.dtype)
    return ACTS[act2](y)


def run_chain(*, n, c, h, w, c_mid, k, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1),
              dtype=torch.float32, bias1=True, act1=K.ACT_RELU, bias2=True, residual=False, act2=K.ACT_NONE,
              x_slice=(0, 0), out_slice=(0, 0), res_slice=(0, 0), out_dtype=None, walk=None, seed=0, **knobs):
    """Run K.conv2d_chain on random data, check it against the float64 chain; return (out, error, bound)."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    if walk is not None:
        assert K._chain_walk(c, kernel, stride, pad) == walk
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)          # rounded once, shared
    w1 = (torch.randn(c_mid, c, kh, kw, generator=gen) / (kh * kw * c) ** 0.5).to(dtype)
    w2 = (torch.randn(k, c_mid, 1, 1, generator=gen) / c_mid ** 0.5).to(dtype)
    b1 = torch.randn(c_mid, generator=gen) if bias1 else None
    b2 = torch.randn(k, generator=gen) if bias2 else None
    geo = dict(stride=stride, pad=pad, dilation=dilation)

    pt, pb, pl, pr = pad
    p = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    q = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    res_nchw = torch.randn(n, k, p, q, generator=gen).to(dtype) if residual else None
    ref = chain_ref(x_nchw.double(), w1.double(), w2.double(), b1, b2, res_nchw, act1, act2,
                    mid_dtype=dtype, **geo)

    # NHWC operands: channel slices of NaN-poisoned wider buffers
    x, _ = sliced((n, h, w, c), dtype, *x_slice)
    x.copy_(x_nchw.permute(0, 2, 3, 1))
    out, obuf = sliced((n, p, q, k), out_dtype or dtype, *out_slice)
    res = None
    if residual:
        res, _ = sliced((n, p, q, k), dtype, *res_slice)
        res.copy_(res_nchw.permute(0, 2, 3, 1))
    K.conv2d_chain(x, K.pack_conv_weight(w1, 1, dtype).to(DEV), K.pack_conv_weight(w2, 1, dtype).to(DEV), out,
                   kernel=kernel, bias1=None if b1 is None else b1.to(DEV), act1=act1,
                   bias2=None if b2 is None else b2.to(DEV), residual=res, act2=act2, **geo, **knobs)

    check_poison(out, obuf, *out_slice)
    err = rel_err(out.permute(0, 3, 1, 2), ref)
    if out.dtype == torch.float32:  # fp32 accumulators and output (mid rounded like the reference's)
        bound = 1e-4
    else:  # PyTorch's own error at this precision: the whole chain run in `dtype`
        lp = chain_ref(x_nchw.to(DEV), w1.to(DEV), w2.to(DEV), None if b1 is None else b1.to(DEV),
                       None if b2 is None else b2.to(DEV), None if res_nchw is None else res_nchw.to(DEV),
                       act1, act2, mid_dtype=dtype, **geo)
        bound = 2 * rel_err(lp, ref) + EPS[dtype] / 8
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
    return out, err, bound


# --------------------------------------------------------------------------------------
# The template: a companion of conv2d.py, nothing more
# --------------------------------------------------------------------------------------


def _top_level_names(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names, imports = set(), set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        names.add(t.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.update((node.module or "") if isinstance(node, ast.ImportFrom) else a.name for a in node.names)
    return names, imports


def test_template_names_and_imports():
    """Imports only torch / triton; private names are `_chain_*` (`_CHAIN_*`); nothing clobbers another template."""
    names, imports = _top_level_names(KERNELS / "conv2d_chain.py")
    assert imports == {"torch", "triton", "triton.language", "triton.language.extra.cuda"}  # + gdc_* (host.py)
    assert {nm for nm in names if not nm.lower().startswith("_chain_")} == {"CHAIN_MAX_MID", "chain_supported", "chain_plan",
                                                                    "chain_default_split", "conv2d_chain",
                                                                    "pack_chain_weight"}
    for other in KERNELS.glob("*.py"):
        if other.name != "conv2d_chain.py":
            assert not names & _top_level_names(other)[0], f"conv2d_chain.py redefines names of {other.name}"


@pytest.mark.slow
def test_runs_inside_the_generated_module(tmp_path):
    """The code generator's paste of every template (conv2d.py before conv2d_chain.py) runs the chain."""
    import importlib.util

    from archdsl.codegen.emit import templates
    files = templates()
    names = [name for name, _ in files]
    assert names.index("conv2d.py") < names.index("conv2d_chain.py")
    path = tmp_path / "generated_templates.py"
    path.write_text("\n\n".join(text for _, text in files), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("archdsl_chain_generated", path)
    G = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = G
    spec.loader.exec_module(G)

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, 16, generator=gen).to(DEV)
    w1 = G.pack_conv_weight(torch.randn(20, 16, 3, 3, generator=gen), 1, torch.float32).to(DEV)
    w2 = G.pack_conv_weight(torch.randn(24, 20, 1, 1, generator=gen), 1, torch.float32).to(DEV)
    outs = []
    for mod in (G, K):
        out = torch.full((2, 5, 6, 24), float("nan"), device=DEV)
        mod.conv2d_chain(x, w1, w2, out, kernel=(3, 3), pad=(1, 1, 1, 1), act1=mod.ACT_SIGMOID, act2=mod.ACT_TANH)
        outs.append(out)
    assert not torch.isnan(outs[0]).any() and torch.equal(outs[0], outs[1])


def test_limits():
    assert K.CHAIN_MAX_MID == 256
    assert K.chain_supported(1, 1) and K.chain_supported(256, 1) and K.chain_supported(40, 1)
    assert not K.chain_supported(257, 1) and not K.chain_supported(0, 1)
    # grouped (tests/test_kernel_chain_grouped.py): one group's channels on chip, C_mid divisible
    assert K.chain_supported(64, 2) and K.chain_supported(64, 64) and not K.chain_supported(66, 4)


@pytest.mark.parametrize("c,kernel,stride,pad,want", [
    (32, (1, 1), (1, 1), (0, 0, 0, 0), "plain"),
    (3, (1, 1), (1, 1), (0, 0, 0, 0), "plain"),
    (32, (1, 1), (2, 2), (0, 0, 0, 0), "tap"),
    (16, (3, 3), (1, 1), (1, 1, 1, 1), "tap"),
    (24, (3, 3), (1, 1), (1, 1, 1, 1), "flat"),
    (3, (11, 11), (4, 4), (0, 0, 0, 0), "flat"),
])
def test_walk_selection(c, kernel, stride, pad, want):
    assert K._chain_walk(c, kernel, stride, pad) == want


# --------------------------------------------------------------------------------------
# The chains of real architectures, every dtype
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_resnet_bottleneck_3x3_then_expand(dtype):
    """3x3 s1 p1 -> relu -> 1x1 expand (K = 72: three BLOCK_N = 32 tiles) -> + residual -> relu."""
    run_chain(n=2, c=16, h=7, w=6, c_mid=24, k=72, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=dtype,
              residual=True, act1=K.ACT_RELU, act2=K.ACT_RELU, block_n=32,
              x_slice=(3, 5), out_slice=(4, 2), res_slice=(1, 3), walk="tap")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_3x3_stride2(dtype):
    run_chain(n=2, c=32, h=9, w=8, c_mid=40, k=20, kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), dtype=dtype,
              x_slice=(2, 0), out_slice=(0, 3), walk="tap")


@pytest.mark.parametrize("c", [32, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_1x1_first_conv(dtype, c):
    """Both convs 1x1 (NiN's mlpconv tail): the first one reads plain rows, channel tail or not."""
    run_chain(n=2, c=c, h=5, w=6, c_mid=12, k=24, kernel=(1, 1), dtype=dtype, act2=K.ACT_RELU,
              x_slice=(3, 4), out_slice=(2, 5), walk="plain")


def test_strided_1x1_first_conv():
    """A downsampling 1x1 (stride 2) is not plain: the tap walk with its row addresses."""
    run_chain(n=2, c=16, h=7, w=8, c_mid=24, k=16, kernel=(1, 1), stride=(2, 2), residual=True,
              x_slice=(1, 1), walk="tap")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_5x5_pad2(dtype):
    run_chain(n=2, c=16, h=6, w=7, c_mid=24, k=16, kernel=(5, 5), pad=(2, 2, 2, 2), dtype=dtype,
              act1=K.ACT_TANH, act2=K.ACT_RELU, walk="tap")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nin_stem_11x11_stride4(dtype):
    """NiN's first mlpconv: 11x11 s4 over RGB (flat walk) -> relu -> 1x1 -> relu."""
    run_chain(n=2, c=3, h=15, w=19, c_mid=48, k=24, kernel=(11, 11), stride=(4, 4), dtype=dtype,
              act1=K.ACT_RELU, act2=K.ACT_RELU, x_slice=(1, 2), walk="flat")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flat_c3_dilated_asymmetric(dtype):
    run_chain(n=2, c=3, h=8, w=9, c_mid=12, k=10, kernel=(3, 3), stride=(1, 2), pad=(2, 1, 0, 2),
              dilation=(2, 1), dtype=dtype, residual=True, act2=K.ACT_TANH, out_slice=(1, 1), walk="flat")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_c_mid_extremes(dtype):
    """C_mid = 1 (padded to 16) and C_mid = CHAIN_MAX_MID (no padding): both ends of the range."""
    run_chain(n=2, c=16, h=5, w=5, c_mid=1, k=20, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=dtype,
              act1=K.ACT_SIGMOID)
    run_chain(n=1, c=16, h=4, w=5, c_mid=K.CHAIN_MAX_MID, k=24, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=dtype,
              residual=True, act2=K.ACT_RELU)


# --------------------------------------------------------------------------------------
# Both epilogues, and the padding columns of the intermediate
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("act2", list(ACTS), ids=[ACT_IDS[a] for a in ACTS])
@pytest.mark.parametrize("act1", list(ACTS), ids=[ACT_IDS[a] for a in ACTS])
def test_activations(act1, act2):
    """C_mid = 40 is padded to 64: the 24 padding columns must contribute 0 whatever act1(0) is."""
    run_chain(n=2, c=16, h=5, w=4, c_mid=40, k=20, kernel=(3, 3), pad=(1, 1, 1, 1), residual=True,
              act1=act1, act2=act2, res_slice=(2, 2), seed=act1 * 4 + act2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sigmoid_mid_padding_in_low_precision(dtype):
    run_chain(n=2, c=3, h=6, w=5, c_mid=12, k=36, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=dtype,
              bias1=False, act1=K.ACT_SIGMOID, act2=K.ACT_SIGMOID, block_n=16)


def test_no_biases():
    run_chain(n=2, c=16, h=5, w=6, c_mid=24, k=20, kernel=(3, 3), pad=(0, 1, 1, 0), bias1=False, bias2=False)


def test_fp32_output_of_fp16_inputs():
    """mid is rounded to fp16 (x's dtype), the output is cast once, to fp32: fp32 accuracy from there on."""
    run_chain(n=2, c=16, h=5, w=6, c_mid=24, k=20, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=torch.float16,
              out_dtype=torch.float32, residual=True, act2=K.ACT_RELU)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_same_numbers_as_two_conv2d_calls(dtype):
    """The fused chain equals conv2d -> stored mid -> conv2d, up to summation order.

    Skipping the rounding of mid to x.dtype (or rounding it twice) would differ by about a
    rounding error of mid, EPS / 4 or more; summation order alone stays far below EPS / 64.
    """
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 7, 6, 32, generator=gen).to(dtype).to(DEV)
    w1 = K.pack_conv_weight(torch.randn(24, 32, 3, 3, generator=gen) / 17, 1, dtype).to(DEV)
    w2 = K.pack_conv_weight(torch.randn(40, 24, 1, 1, generator=gen) / 5, 1, dtype).to(DEV)
    b1, b2 = torch.randn(24, generator=gen).to(DEV), torch.randn(40, generator=gen).to(DEV)
    fused = torch.full((2, 7, 6, 40), float("nan"), dtype=dtype, device=DEV)
    K.conv2d_chain(x, w1, w2, fused, kernel=(3, 3), pad=(1, 1, 1, 1), bias1=b1, act1=K.ACT_TANH, bias2=b2)
    mid = torch.full((2, 7, 6, 24), float("nan"), dtype=dtype, device=DEV)
    K.conv2d(x, w1, mid, kernel=(3, 3), pad=(1, 1, 1, 1), bias=b1, act=K.ACT_TANH)
    unfused = torch.full_like(fused, float("nan"))
    K.conv2d(mid, w2, unfused, kernel=(1, 1), bias=b2)
    assert rel_err(fused, unfused) <= EPS[dtype] / 64


# --------------------------------------------------------------------------------------
# Block sizes are free
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("knobs", [
    dict(block_m=16, block_n=16, block_k=16),
    dict(block_m=64, block_n=64, block_k=32, num_warps=8, num_stages=2),
    dict(block_m=32, block_n=32, block_k=64, allow_tf32=True),
], ids=["small", "large", "bk64-tf32"])
@pytest.mark.parametrize("c", [32, 3], ids=["tap", "flat"])
def test_block_sizes(c, knobs):
    # tf32 (allowed, and used on GPUs) is not IEEE fp32: check it at half precision there
    dtype = torch.float16 if knobs.get("allow_tf32") else torch.float32
    run_chain(n=3, c=c, h=7, w=6, c_mid=20, k=72, kernel=(3, 3), stride=(1, 2), pad=(1, 0, 1, 1), dtype=dtype,
              residual=True, act2=K.ACT_RELU, **knobs)


# --------------------------------------------------------------------------------------
# A seeded random sample of chains
# --------------------------------------------------------------------------------------


def random_chain_config(rng: random.Random) -> dict:
    while True:
        kh = rng.choice([1, 3, 5, 7])
        kw = kh if rng.random() < 0.8 else rng.choice([1, 3])
        stride = (rng.choice([1, 2]), rng.choice([1, 2]))
        pad = tuple(rng.randint(0, max(kh, kw) // 2 + 1) for _ in range(4))
        dilation = (rng.choice([1, 2]), 1) if kh <= 3 else (1, 1)
        if (kh, kw) == (1, 1) and rng.random() < 0.6:
            stride, pad = (1, 1), (0, 0, 0, 0)
        n, h, w = rng.randint(1, 2), rng.randint(4, 9), rng.randint(4, 9)
        p = (h + pad[0] + pad[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        q = (w + pad[2] + pad[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if p < 1 or q < 1:
            continue
        return dict(n=n, c=rng.choice([3, 4, 8, 16, 17, 32, 48]), h=h, w=w, c_mid=rng.randint(1, 70),
                    k=rng.randint(1, 70), kernel=(kh, kw), stride=stride, pad=pad, dilation=dilation,
                    dtype=rng.choice(DTYPES), bias1=rng.random() < 0.7, bias2=rng.random() < 0.5,
                    residual=rng.random() < 0.4, act1=rng.choice(list(ACTS)), act2=rng.choice(list(ACTS)),
                    x_slice=(rng.randint(0, 3), rng.randint(0, 3)), out_slice=(rng.randint(0, 3), rng.randint(0, 3)),
                    seed=rng.randint(0, 10 ** 6))


CONFIGS = [random_chain_config(random.Random(4000 + i)) for i in range(16)]


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=[
    f"c{c['c']}m{c['c_mid']}k{c['k']}-{c['kernel'][0]}x{c['kernel'][1]}s{c['stride'][0]}{c['stride'][1]}"
    f"-{str(c['dtype'])[6:]}" for c in CONFIGS])
def test_random_chain(cfg):
    run_chain(**cfg)


def test_random_sample_covers_the_walks():
    walks = {K._chain_walk(c["c"], c["kernel"], c["stride"], c["pad"]) for c in CONFIGS}
    assert walks == {"plain", "tap", "flat"}
    assert {c["dtype"] for c in CONFIGS} == set(DTYPES)


# --------------------------------------------------------------------------------------
# Misuse is reported, not silently computed
# --------------------------------------------------------------------------------------


def test_bad_arguments_raise():
    x = torch.randn(1, 6, 6, 8, device=DEV)
    w1 = K.pack_conv_weight(torch.randn(12, 8, 3, 3), 1, torch.float32).to(DEV)
    w2 = K.pack_conv_weight(torch.randn(5, 12, 1, 1), 1, torch.float32).to(DEV)
    out = torch.empty(1, 4, 4, 5, device=DEV)
    call = dict(kernel=(3, 3))
    K.conv2d_chain(x, w1, w2, out, **call)                                           # the valid call

    too_wide = K.pack_conv_weight(torch.randn(264, 8, 3, 3), 1, torch.float32).to(DEV)
    with pytest.raises(ValueError, match="CHAIN_MAX_MID"):
        K.conv2d_chain(x, too_wide, torch.empty(264, 5, device=DEV), out, **call)   # C_mid = 264 > 256
    grouped = K.pack_conv_weight(torch.randn(12, 4, 3, 3), 2, torch.float32).to(DEV)
    with pytest.raises(ValueError, match="groups"):
        K.conv2d_chain(x, grouped, w2, out, **call)                                  # a groups=2 first weight
    with pytest.raises(ValueError, match="w1_packed"):
        K.conv2d_chain(x, w1, w2, out, kernel=(5, 5))                                # weight of another kernel
    with pytest.raises(ValueError, match="w2_packed"):
        K.conv2d_chain(x, w1, w2[:10].contiguous(), out, **call)                     # C_mid mismatch
    with pytest.raises(ValueError, match="w2_packed"):
        K.conv2d_chain(x, w1, w2, torch.empty(1, 4, 4, 6, device=DEV), **call)       # K mismatch
    with pytest.raises(ValueError, match="w2_packed"):
        K.conv2d_chain(x, w1, w2.half(), out, **call)                                # weight in another dtype
    with pytest.raises(ValueError, match="gives"):
        K.conv2d_chain(x, w1, w2, torch.empty(1, 6, 6, 5, device=DEV), **call)       # wrong P, Q
    with pytest.raises(ValueError, match="batch"):
        K.conv2d_chain(x, w1, w2, torch.empty(2, 4, 4, 5, device=DEV), **call)
    with pytest.raises(ValueError, match="stride 1"):
        K.conv2d_chain(x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1), w1, w2, out, **call)  # NCHW
    with pytest.raises(ValueError, match="act1"):
        K.conv2d_chain(x, w1, w2, out, act1=99, **call)  # not an ACT_* code
    with pytest.raises(ValueError, match="act2"):
        K.conv2d_chain(x, w1, w2, out, act2=-1, **call)
    with pytest.raises(ValueError, match="bias1"):
        K.conv2d_chain(x, w1, w2, out, bias1=torch.ones(5, device=DEV), **call)     # K-long, not C_mid-long
    with pytest.raises(ValueError, match="bias2"):
        K.conv2d_chain(x, w1, w2, out, bias2=torch.ones(12, device=DEV), **call)
    with pytest.raises(ValueError, match="residual"):
        K.conv2d_chain(x, w1, w2, out, residual=torch.empty(1, 4, 4, 6, device=DEV), **call)
    with pytest.raises(ValueError, match="x and out"):
        K.conv2d_chain(x[0], w1, w2, out, **call)


# --------------------------------------------------------------------------------------
# GPU tier: full-size chains (skipped without CUDA)
# --------------------------------------------------------------------------------------


GPU_CHAINS = [  # (c, h, c_mid, k, kernel, stride, pad): ResNet-50 bottleneck tails, NiN mlpconvs
    (64, 56, 64, 256, 3, 1, 1), (128, 28, 128, 512, 3, 1, 1), (256, 14, 256, 1024, 3, 1, 1),
    (128, 56, 128, 512, 3, 2, 1), (3, 224, 96, 96, 11, 4, 0), (96, 27, 256, 256, 5, 1, 2),
    (384, 13, 192, 192, 1, 1, 0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("chain", GPU_CHAINS, ids=[f"c{c}h{h}m{m}k{k}r{r}s{s}" for c, h, m, k, r, s, _ in GPU_CHAINS])
def test_gpu_full_size_chains(chain, dtype):
    c, h, c_mid, k, r, s, p = chain
    run_chain(n=4, c=c, h=h, w=h, c_mid=c_mid, k=k, **square(r, s, p), dtype=dtype,
              residual=s == 1 and r == 3, act1=K.ACT_RELU, act2=K.ACT_RELU, out_slice=(16, 32))


# --------------------------------------------------------------------------------------
# Without a GPU: the kernel also compiles for real GPUs, within an H100's shared memory
# --------------------------------------------------------------------------------------

_COMPILE_VARIANTS = r'''
import torch

SMEM = 232448               # the most shared memory one block may use on sm_90 (227 KiB)
GEOS = {"plain": dict(C=384, KH=1, KW=1, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1),
        "tap": dict(C=64, KH=3, KW=3, SH=2, SW=1, PH=1, PW=0, DH=1, DW=2),
        "flat": dict(C=3, KH=11, KW=11, SH=4, SW=4, PH=0, PW=0, DH=1, DW=1)}
PTR = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

def compile_default(dtype, allow_tf32, walk, c_mid):
    # conv2d_chain's own GPU defaults for a large problem (M = 10**6 pixels, K = 256)
    geo = GEOS[walk]
    mid = max(16, K._conv_pow2(c_mid))
    bm, bn, bk, warps, stages = K._chain_defaults(dtype, allow_tf32, False, walk, geo["C"], geo["KH"] * geo["KW"],
                                                  mid, 10 ** 6, 256)
    consts = dict(geo, WALK=K._CHAIN_WALKS[walk], C_MID=c_mid, K=256, MID_SLICE=mid, SPLIT_MID=1, N_PER=256,
                  HAS_BIAS1=True, ACT1=K.ACT_SIGMOID,
                  HAS_BIAS2=True, HAS_RES=True, ACT2=K.ACT_RELU, INTERPRETED=False,
                  INPUT_PRECISION=K._conv_input_precision(dtype, allow_tf32), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    k = compile_for(K._chain_kernel, {"x": PTR[dtype], "bias1_ptr": "fp32", "bias2_ptr": "fp32"}, consts,
                    warps, stages)
    assert k.metadata.shared <= SMEM, (dtype, allow_tf32, walk, c_mid, k.metadata.shared)

for dtype, tf32 in ((torch.float32, False), (torch.float32, True), (torch.float16, False), (torch.bfloat16, False)):
    for walk, c_mid in (("tap", 40), ("tap", 256), ("flat", 96), ("flat", 64), ("plain", 192)):
        compile_default(dtype, tf32, walk, c_mid)

def compile_split(dtype, m, c_mid, k):
    # a 3x3 256 -> c_mid -> k chain of m pixels, split as conv2d_chain splits it for 132 SMs
    mid = max(16, K._conv_pow2(c_mid))
    fma = dtype == torch.float32
    bm, bn, bk, warps, stages = K._chain_defaults(dtype, False, False, "tap", 256, 9, mid, m, k)
    split_n, split_mid = K.chain_default_split(m, 256, 9, c_mid, k, (bm, bn, bk), 132, "tap", fma)
    assert split_n * split_mid > 1, (dtype, m, c_mid, k)
    mid_slice, split_mid, n_per, _ = K._chain_split_shape(c_mid, k, bn, split_n, split_mid)
    consts = dict(C=256, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, DH=1, DW=1, WALK=1, C_MID=c_mid, K=k,
                  MID_SLICE=mid_slice, SPLIT_MID=split_mid, N_PER=n_per, HAS_BIAS1=True, ACT1=K.ACT_RELU,
                  HAS_BIAS2=True, HAS_RES=True, ACT2=K.ACT_RELU, INTERPRETED=False,
                  INPUT_PRECISION=K._conv_input_precision(dtype, False), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    ptrs = {"x": PTR[dtype], "bias1_ptr": "fp32", "bias2_ptr": "fp32", "ws_ptr": "fp32"}
    k1 = compile_for(K._chain_kernel, ptrs, consts, warps, stages)
    assert k1.metadata.shared <= SMEM, (dtype, m, c_mid, k, k1.metadata.shared)
    if split_mid > 1:
        compile_for(K._conv_splitk_reduce_kernel, dict(ptrs, scale_ptr="fp32", bias_ptr="fp32"),
                    dict(SPLIT_K=split_mid, HAS_SCALE=False, HAS_BIAS=True, HAS_RES=True, ACT=K.ACT_RELU,
                         RES_AFTER_ACT=False, HAS_OUT_SCALE=False, INTERPRETED=False, BLOCK_M=32, BLOCK_N=64), 4, 3)

# ResNet-50 at batch 1: layer3 (14 x 14, mid 256 -> 1024: both splits), layer1 (56 x 56, 64 -> 256: outputs)
for dtype in (torch.bfloat16, torch.float32):
    compile_split(dtype, 196, 256, 1024)
    compile_split(dtype, 3136, 64, 256)
'''


@pytest.mark.slow
def test_chain_kernel_compiles_for_gpus(tmp_path):
    """sm_90 builds with conv2d_chain's defaults (fp32, tf32, fp16, bf16; every walk; C_mid up to
    CHAIN_MAX_MID; the split grids and the reduce kernel it picks for 132 SMs) succeed, fit in
    shared memory and, where ptxas reports it, spill no registers."""
    r = run_compile_check(tmp_path, ["conv2d.py", "conv2d_chain.py"], _COMPILE_VARIANTS,
                          env={"TRITON_DUMP_PTXAS_LOG": "1"})  # ptxas -v: registers and spills per kernel, on stdout
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", r.stdout)]
    assert not any(spills), f"register spills (bytes) per build: {spills}"
