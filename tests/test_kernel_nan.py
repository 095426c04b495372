"""NaN goes through every fused activation and every max as it goes through PyTorch.

Two halves, because the interpreter cannot see the bug this guards against:

* On a GPU, ``tl.maximum(y, 0.0)`` lowers to PTX ``max.f32``, which returns the non-NaN
  operand: a fused ReLU would turn NaN into 0 where PyTorch's propagates it.  Triton's CPU
  interpreter computes with numpy, whose maximum propagates NaN, so a run here passes either
  way.  ``test_ptx_has_no_nan_dropping_min_max`` therefore compiles the kernels for sm_90 (no
  GPU needed) and reads the PTX: a float ``max``/``min`` must be the ``.NaN`` variant.
* ``test_nan_propagates_*`` run the kernels on NaN inputs and compare where the output is NaN
  with PyTorch (float64).  On the CPU they run in the interpreter; in the GPU tier (``DEV`` is
  ``cuda``) the same tests run the compiled kernels, where the PTX semantics apply.
"""

import re

import pytest
import torch
import torch.nn.functional as F

from kernel_build import load_templates, run_compile_check

K = load_templates("conv2d.py", "conv2d_chain.py", "elementwise.py", "pool2d.py", module_name="archdsl_kernel_nan")

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# every activation the kernels apply in an epilogue, with PyTorch's function
ACTS = {name: (getattr(K, f"ACT_{name.upper()}"), getattr(F, name))
        for name in ("relu", "tanh", "sigmoid", "relu6", "hardsigmoid", "hardswish", "silu")}


def _nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def _with_nans(shape, gen, where):
    """A random NCHW tensor with NaN at the given (n, c, h, w) positions."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    for idx in where:
        x[idx] = float("nan")
    return x


def _same_nans(out_nhwc, ref_nchw):
    ref = _nhwc(ref_nchw)
    got = out_nhwc.double().cpu()
    assert torch.isnan(ref).any(), "the reference has no NaN: the test input is wrong"
    assert torch.equal(torch.isnan(got), torch.isnan(ref)), (
        f"NaN at {torch.isnan(got).sum().item()} outputs, PyTorch has {torch.isnan(ref).sum().item()}")
    finite = ~torch.isnan(ref)
    assert torch.allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ACTS, ids=str)
def test_nan_propagates_through_conv_epilogue(act):
    code, fn = ACTS[act]
    gen = torch.Generator().manual_seed(1)
    x = _with_nans((2, 8, 6, 6), gen, [(0, 3, 2, 2), (1, 0, 5, 0)])
    w = torch.randn(16, 8, 3, 3, generator=gen, dtype=torch.float64) / 8
    out = torch.zeros(2, 6, 6, 16, device=DEV)
    K.conv2d(_nhwc(x).float().to(DEV), K.pack_conv_weight(w.float(), 1, torch.float32).to(DEV), out,
             kernel=(3, 3), pad=(1, 1, 1, 1), act=code)
    _same_nans(out, fn(F.conv2d(x, w, padding=1)))


@pytest.mark.parametrize("act", ACTS, ids=str)
def test_nan_propagates_through_linear(act):
    code, fn = ACTS[act]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 32, generator=gen, dtype=torch.float64)
    x[1, 7] = float("nan")
    w = torch.randn(24, 32, generator=gen, dtype=torch.float64) / 6
    out = torch.zeros(4, 24, device=DEV)
    K.linear(x.float().to(DEV), K.pack_linear_weight(w.float(), torch.float32).to(DEV), out, act=code)
    ref = fn(F.linear(x, w))
    assert torch.equal(torch.isnan(out.cpu()), torch.isnan(ref)) and torch.isnan(ref).any()


def test_nan_propagates_through_chain():
    """Both activations of the chain kernel: NaN from the first conv reaches the second's output."""
    gen = torch.Generator().manual_seed(3)
    x = _with_nans((1, 8, 5, 5), gen, [(0, 2, 1, 3)])
    w1 = torch.randn(12, 8, 3, 3, generator=gen, dtype=torch.float64) / 8
    w2 = torch.randn(16, 12, 1, 1, generator=gen, dtype=torch.float64) / 4
    out = torch.zeros(1, 5, 5, 16, device=DEV)
    K.conv2d_chain(_nhwc(x).float().to(DEV), K.pack_conv_weight(w1.float(), 1, torch.float32).to(DEV),
                   K.pack_conv_weight(w2.float(), 1, torch.float32).to(DEV), out, kernel=(3, 3),
                   pad=(1, 1, 1, 1), act1=K.ACT_RELU, act2=K.ACT_RELU)
    _same_nans(out, torch.relu(F.conv2d(torch.relu(F.conv2d(x, w1, padding=1)), w2)))


def test_nan_propagates_through_elementwise_and_pools():
    gen = torch.Generator().manual_seed(4)
    x = _with_nans((2, 4, 6, 6), gen, [(0, 1, 0, 0), (1, 3, 4, 5)])
    y = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    xs, ys = _nhwc(x).float().to(DEV), _nhwc(y).float().to(DEV)

    out = torch.zeros_like(xs)
    K.add([xs, ys], out, act=K.ACT_RELU)
    _same_nans(out, torch.relu(x + y))

    scale, shift = torch.rand(4, generator=gen) + 0.5, torch.randn(4, generator=gen)
    K.scale_shift(xs, out, scale=scale.to(DEV), shift=shift.to(DEV), act=K.ACT_RELU)
    _same_nans(out, torch.relu(x * scale.double()[:, None, None] + shift.double()[:, None, None]))

    pooled = torch.zeros(2, 3, 3, 4, device=DEV)
    K.max_pool2d(xs, pooled, kernel=3, stride=2, pad=1)
    _same_nans(pooled, F.max_pool2d(x, 3, stride=2, padding=1))
    K.avg_pool2d(xs, pooled, kernel=3, stride=2, pad=1)
    _same_nans(pooled, F.avg_pool2d(x, 3, stride=2, padding=1))


# Each template's activation helper (on fp32, as the kernels call it) in a one-line kernel, and the full kernels with a ReLU, built
# for sm_90.  A float max/min must be max.NaN / min.NaN (PyTorch's semantics) or not be there.
_PTX_SCRIPT = r'''
import re
import triton
import triton.language as tl

@triton.jit
def conv_act(x_ptr, y_ptr, ACT: tl.constexpr):
    i = tl.arange(0, 128)
    tl.store(y_ptr + i, K._conv_activation(tl.load(x_ptr + i).to(tl.float32), ACT))

@triton.jit
def ew_act(x_ptr, y_ptr, ACT: tl.constexpr):
    i = tl.arange(0, 128)
    tl.store(y_ptr + i, K._ew_activation(tl.load(x_ptr + i).to(tl.float32), ACT))

@triton.jit
def plain_max(x_ptr, y_ptr, ACT: tl.constexpr):  # the bug, to show that the check sees it
    i = tl.arange(0, 128)
    tl.store(y_ptr + i, tl.maximum(tl.load(x_ptr + i), 0.0))

DROPS_NAN = re.compile(r"\b(?:max|min)(?:\.ftz)?\.(?:f16|bf16|f32|f64|f16x2|bf16x2)\b")

def nan_dropping(k):
    return sorted(set(DROPS_NAN.findall(k.asm["ptx"])))

assert nan_dropping(compile_for(plain_max, {"x": "fp32"}, {"ACT": 1}, 4, 1)) == ["max.f32"]
bad = {}
codes = sorted(v for k, v in vars(K).items() if k.startswith("ACT_") and isinstance(v, int) and v)
assert len(codes) >= 7, codes
for act in codes:
    for fn in (conv_act, ew_act):
        found = nan_dropping(compile_for(fn, {"x": "fp32"}, {"ACT": act}, 4, 1))
        if found:
            bad[f"{fn.__name__} act={act}"] = found

ep = dict(HAS_SCALE=True, HAS_BIAS=True, HAS_RES=True, ACT=K.ACT_RELU, INTERPRETED=False,
          HAS_PRE=True, HAS_IN_SCALE=True, HAS_IN_SHIFT=True, IN_ACT=K.ACT_RELU, RES_AFTER_ACT=False,
          HAS_OUT_SCALE=False)
geo = dict(KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, DH=1, DW=1)
bf16 = {"x": "bf16", "scale_ptr": "fp32", "bias_ptr": "fp32", "in_scale_ptr": "fp32", "in_shift_ptr": "fp32"}
kernels = {
    "gemm": (K._conv_gemm_kernel, dict(ep, NUM_OUT=2, ACT1=K.ACT_RELU, ACT2=0, ACT3=0, K=256,
             INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SWIZZLE_M=8)),
    "implicit": (K._conv_implicit_gemm_kernel, dict(ep, **geo, CG=64, FLAT=False, INPUT_PRECISION="tf32",
                 BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, SWIZZLE_M=8)),
    "depthwise": (K._conv_depthwise_kernel, dict(ep, **geo, BLOCK_M=64, BLOCK_C=64)),
}
for name, (fn, consts) in kernels.items():
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
    found = nan_dropping(compile_for(fn, bf16, consts, 4, 3))
    if found:
        bad[name] = found
assert not bad, bad
'''


def test_ptx_has_no_nan_dropping_min_max(tmp_path):
    """The activation helpers and the conv kernels with a fused ReLU keep NaN on a real GPU."""
    run_compile_check(tmp_path, ["conv2d.py", "elementwise.py"], _PTX_SCRIPT)
