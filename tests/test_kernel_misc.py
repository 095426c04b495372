"""The non-convolution kernel templates (kernels/pool2d.py, norm.py, elementwise.py) against
torch.nn.functional.

Every case is drawn from a seeded random sample of configurations: batch > 1 (mostly), sizes that
are not multiples of the block sizes, fp32 / fp16 / bf16 in turn, and inputs and outputs that are
either contiguous NHWC tensors or channel slices of wider buffers. Outputs are poisoned with NaN
before each call, so an element the kernel fails to write fails the comparison, and the channels
of a wider output buffer outside the slice must still be NaN afterwards.

Numerics (docs: DESIGN.md, "Numerics and tests"): errors are ‖out − ref‖ / ‖ref‖ against a float64
reference computed from the same (rounded) inputs. fp32: at most 1e-5. fp16/bf16: at most 1.5x
PyTorch's own error at that precision (PyTorch's op on the low-precision inputs; where PyTorch's
CPU build lacks the op at that dtype, its fp32 result rounded to the dtype). Max pooling selects
values, so it must be exact in every dtype.

Under TRITON_INTERPRET, Triton's interpreter converts fp32 to bf16 by truncation (round toward
zero) where a GPU rounds to nearest even; the kernels round through kernels/common.py's
`_common_cast` there, so bf16 results under the interpreter are held to the GPU's rule too
(and `test_bf16_stores_round_to_nearest_even_under_the_interpreter` checks the rounding itself).
"""

from __future__ import annotations

import os
import random

import pytest
import torch
import torch.nn.functional as F
from kernel_build import load_templates

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SHORT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


pool = load_templates("pool2d.py", module_name="archdsl_kernel_template_pool2d")
norm = load_templates("elementwise.py", "norm.py", module_name="archdsl_kernel_template_norm")  # uses _ew_ helpers
ew = load_templates("elementwise.py", module_name="archdsl_kernel_template_elementwise")

TORCH_ACT = {ew.ACT_NONE: lambda t: t, ew.ACT_RELU: torch.relu, ew.ACT_TANH: torch.tanh,
             ew.ACT_SIGMOID: torch.sigmoid}


# ---- tensors: inputs, poisoned outputs, channel slices -------------------------------------------


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def rand(shape, dtype, gen, scale=1.0):
    """Random values at `dtype` (never zeros in practice), on the test device."""
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def as_arg(x, sliced, gen):
    """x itself (contiguous), or the same values as a channel slice of a wider random buffer."""
    if not sliced:
        return x.contiguous()
    before, after = 3, 2
    wide = rand((*x.shape[:-1], before + x.shape[-1] + after), x.dtype, gen)
    wide[..., before:before + x.shape[-1]] = x
    return wide[..., before:before + x.shape[-1]]


class Poisoned:
    """An output filled with NaN: a whole tensor, or a channel slice of a wider NaN buffer."""

    def __init__(self, shape, dtype, sliced):
        self.lo, self.hi = (2, 2 + shape[-1]) if sliced else (0, shape[-1])
        wide = (*shape[:-1], shape[-1] + (5 if sliced else 0))
        self.buf = torch.full(wide, float("nan"), dtype=dtype, device=DEVICE)
        self.view = self.buf[..., self.lo:self.hi]

    def check_untouched(self):
        outside = torch.cat([self.buf[..., :self.lo].flatten(), self.buf[..., self.hi:].flatten()])
        assert torch.isnan(outside).all(), "a kernel wrote channels outside its output slice"


# ---- comparisons ---------------------------------------------------------------------------------


def rel_err(a, ref):
    a, ref = a.double(), ref.double()
    return ((a - ref).norm() / ref.norm()).item()


def torch_at(fn, xs, dtype):
    """PyTorch's own result at `dtype`: fn on the low-precision inputs (see the module docstring)."""
    try:
        return fn(*xs).to(dtype)
    except (RuntimeError, NotImplementedError):  # op not implemented at this dtype (CPU)
        return fn(*[x.float() for x in xs]).to(dtype)


def assert_close(out, ref64, torch_lowp, dtype, what):
    assert not torch.isnan(out).any(), f"{what}: unwritten (NaN) output elements"
    err = rel_err(out, ref64)
    if dtype is torch.float32:
        assert err <= 1e-5, f"{what}: relative error {err:.3g} > 1e-5"
    else:
        ref_err = rel_err(torch_lowp, ref64)
        assert err <= 1.5 * ref_err + 1e-12, f"{what}: relative error {err:.3g}, PyTorch's own {ref_err:.3g}"


# ---- random configurations -----------------------------------------------------------------------


def _cases(name, count, draw, seed):
    """`count` configurations from draw(rng), each with a dtype (in turn) and a layout."""
    rng = random.Random(f"{name}-{seed}")
    out = []
    for i in range(count):
        cfg = draw(rng)
        cfg["dtype"] = DTYPES[i % 3]
        cfg["slice_in"], cfg["slice_out"] = [(False, False), (True, False), (False, True), (True, True)][
            rng.randrange(4)]
        cfg["seed"] = rng.randrange(2 ** 31)
        out.append(pytest.param(cfg, id=f"{i:02d}-{SHORT[cfg['dtype']]}-{_layout_id(cfg)}"))
    return out


def _layout_id(cfg):
    return {(False, False): "dense", (True, False): "slice_in", (False, True): "slice_out",
            (True, True): "slice_both"}[cfg["slice_in"], cfg["slice_out"]]


def _batch(rng):
    return rng.choice([2, 2, 3, 1])


def _channels(rng):
    return rng.choice([rng.randint(1, 9), rng.randint(10, 40), rng.randint(65, 90)])  # block: <=64


def _pool_cfg(rng, dilation):
    while True:
        k = (rng.randint(1, 4), rng.randint(1, 4))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        p = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))  # PyTorch: pad <= kernel/2
        d = (rng.randint(1, 2), rng.randint(1, 2)) if dilation else (1, 1)
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        eff = [d[i] * (k[i] - 1) + 1 for i in range(2)]
        if h + 2 * p[0] >= eff[0] and w + 2 * p[1] >= eff[1]:
            return dict(n=_batch(rng), c=_channels(rng), h=h, w=w, kernel=k, stride=s, pad=p, dilation=d,
                        ceil_mode=rng.random() < 0.5)


def _run_nchw(cfg, ref_fn, call, *, exact=False, scale=1.0):
    """One NCHW-reference case: x (N, C, H, W) at cfg's dtype; the kernel sees NHWC."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    dtype = cfg["dtype"]
    x = rand((cfg["n"], cfg["c"], cfg["h"], cfg["w"]), dtype, gen, scale)
    ref64 = nhwc(ref_fn(x.double()))
    out = Poisoned(ref64.shape, dtype, cfg["slice_out"])
    call(as_arg(nhwc(x), cfg["slice_in"], gen), out.view)
    out.check_untouched()
    if exact:
        assert not torch.isnan(out.view).any(), "unwritten (NaN) output elements"
        assert torch.equal(out.view.double(), ref64), "a selection or a copy must give exactly PyTorch's values"
    else:
        assert_close(out.view, ref64, nhwc(torch_at(ref_fn, [x], dtype)), dtype, str(cfg))


# ---- pooling -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cfg", _cases("maxpool", 36, lambda r: _pool_cfg(r, dilation=True), 0))
def test_max_pool2d(cfg):
    def ref(x):
        return F.max_pool2d(x, cfg["kernel"], cfg["stride"], cfg["pad"], cfg["dilation"], ceil_mode=cfg["ceil_mode"])

    _run_nchw(cfg, ref, lambda x, out: pool.max_pool2d(
        x, out, kernel=cfg["kernel"], stride=cfg["stride"], pad=cfg["pad"], dilation=cfg["dilation"]), exact=True)


def _avg_cfg(rng):
    cfg = _pool_cfg(rng, dilation=False)
    cfg["count_include_pad"] = rng.random() < 0.5
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("cfg", _cases("avgpool", 36, _avg_cfg, 0))
def test_avg_pool2d(cfg):
    def ref(x):
        return F.avg_pool2d(x, cfg["kernel"], cfg["stride"], cfg["pad"], ceil_mode=cfg["ceil_mode"],
                            count_include_pad=cfg["count_include_pad"])

    _run_nchw(cfg, ref, lambda x, out: pool.avg_pool2d(
        x, out, kernel=cfg["kernel"], stride=cfg["stride"], pad=cfg["pad"],
        count_include_pad=cfg["count_include_pad"]))


def test_avg_pool2d_divisor_at_a_ceil_mode_border():
    """The case the divisor rules exist for: ceil_mode windows that pass the padded border."""
    for cip in (True, False):
        cfg = dict(n=2, c=3, h=6, w=6, seed=7, dtype=torch.float32, slice_in=False, slice_out=False)
        ref = lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=cip)  # noqa: E731
        assert ref(torch.zeros(1, 1, 6, 6)).shape[-1] == 4  # the last window starts at 5, ends at 8 > 6 + 1
        _run_nchw(cfg, ref, lambda x, out: pool.avg_pool2d(x, out, kernel=3, stride=2, pad=1, count_include_pad=cip))


def _adaptive_cfg(rng):
    h, w = rng.randint(1, 12), rng.randint(1, 12)
    # output sizes below, at and above the input size (windows then overlap or repeat)
    return dict(n=_batch(rng), c=_channels(rng), h=h, w=w,
                out=(rng.randint(1, min(h + 2, 7)), rng.randint(1, min(w + 2, 7))))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", _cases("adaptive", 20, _adaptive_cfg, 0))
def test_adaptive_avg_pool2d(cfg):
    _run_nchw(cfg, lambda x: F.adaptive_avg_pool2d(x, cfg["out"]), pool.adaptive_avg_pool2d)


def _global_cfg(rng):
    return dict(n=_batch(rng), c=_channels(rng), h=rng.randint(1, 17), w=rng.randint(1, 17))


@pytest.mark.parametrize("cfg", _cases("global", 12, _global_cfg, 0))
def test_global_avg_pool(cfg):
    # windows of up to 17 x 17 = 289 positions: several BLOCK_HW chunks
    _run_nchw(cfg, lambda x: x.mean(dim=(2, 3), keepdim=True), pool.global_avg_pool)


# ---- normalization -------------------------------------------------------------------------------


def _lrn_cfg(rng):
    return dict(n=_batch(rng), c=_channels(rng), h=rng.randint(1, 6), w=rng.randint(1, 6),
                size=rng.randint(1, 7), alpha=10 ** rng.uniform(-4, 0), beta=rng.uniform(0.5, 1.5),
                k=rng.uniform(0.5, 2.0))


@pytest.mark.parametrize("cfg", _cases("lrn", 20, _lrn_cfg, 0))
def test_lrn(cfg):
    a = dict(size=cfg["size"], alpha=cfg["alpha"], beta=cfg["beta"], k=cfg["k"])
    _run_nchw(cfg, lambda x: F.local_response_norm(x, **a), lambda x, out: norm.lrn(x, out, **a), scale=3.0)


def _softmax_cfg(rng):
    if rng.random() < 0.5:  # a classifier head: (N, F), F past one 1024-wide chunk sometimes
        return dict(n=_batch(rng), h=None, w=None, c=rng.choice([rng.randint(1, 20), rng.randint(900, 2600)]))
    return dict(n=_batch(rng), c=_channels(rng), h=rng.randint(1, 5), w=rng.randint(1, 5))


@pytest.mark.parametrize("cfg", _cases("softmax", 20, _softmax_cfg, 0))
def test_softmax(cfg):
    if cfg["h"] is not None:
        _run_nchw(cfg, lambda x: F.softmax(x, dim=1), norm.softmax, scale=4.0)
        return
    gen = torch.Generator().manual_seed(cfg["seed"])
    dtype = cfg["dtype"]
    x = rand((cfg["n"], cfg["c"]), dtype, gen, 4.0)
    ref64 = F.softmax(x.double(), dim=1)
    out = Poisoned(ref64.shape, dtype, cfg["slice_out"])
    norm.softmax(as_arg(x, cfg["slice_in"], gen), out.view)
    out.check_untouched()
    assert_close(out.view, ref64, torch_at(lambda t: F.softmax(t, dim=1), [x], dtype), dtype, str(cfg))


# ---- elementwise ---------------------------------------------------------------------------------


def _shape(rng):
    """NHWC (N, H, W, C), or a flat (N, F)."""
    if rng.random() < 0.25:
        return (_batch(rng), rng.randint(1, 300))
    return (_batch(rng), rng.randint(1, 7), rng.randint(1, 7), _channels(rng))


def _join_cfg(rng):
    return dict(shape=_shape(rng), count=rng.choice([2, 2, 3, 4, 5, 6, 9]),
                act=rng.choice([ew.ACT_NONE, ew.ACT_RELU, ew.ACT_TANH, ew.ACT_SIGMOID]))


def _run_join(cfg, ref_fn, call):
    gen = torch.Generator().manual_seed(cfg["seed"])
    dtype = cfg["dtype"]
    xs = [rand(cfg["shape"], dtype, gen) for _ in range(cfg["count"])]
    ref64 = ref_fn([x.double() for x in xs])
    out = Poisoned(ref64.shape, dtype, cfg["slice_out"])
    # inputs: each a slice or not, when slicing is drawn
    args = [as_arg(x, cfg["slice_in"] and i % 2 == 0, gen) for i, x in enumerate(xs)]
    call(args, out.view)
    out.check_untouched()
    assert_close(out.view, ref64, torch_at(lambda *ts: ref_fn(list(ts)), xs, dtype), dtype, str(cfg))


@pytest.mark.parametrize("cfg", _cases("add", 18, _join_cfg, 0))
def test_add(cfg):
    # more than 4 inputs: partial sums through an fp32 buffer, same additions in the same order
    act = TORCH_ACT[cfg["act"]]
    _run_join(cfg, lambda xs: act(sum(xs[1:], xs[0])), lambda xs, out: ew.add(xs, out, act=cfg["act"]))


@pytest.mark.parametrize("cfg", _cases("mean", 12, _join_cfg, 0))
def test_mean(cfg):
    _run_join(cfg, lambda xs: torch.stack(xs).mean(0), ew.mean)


def test_add_in_place_into_one_input():
    """A residual add may write into one of its inputs (each element is read before it is written)."""
    gen = torch.Generator().manual_seed(3)
    a, b = rand((2, 5, 3, 70), torch.float32, gen), rand((2, 5, 3, 70), torch.float32, gen)
    ref = torch.relu(a.double() + b.double())
    ew.add([a, b], a, act=ew.ACT_RELU)
    assert rel_err(a, ref) <= 1e-6


def _affine_cfg(rng):
    return dict(shape=_shape(rng), scale=rng.random() < 0.7, shift=rng.random() < 0.7,
                act=rng.choice([ew.ACT_NONE, ew.ACT_RELU, ew.ACT_TANH, ew.ACT_SIGMOID]))


@pytest.mark.parametrize("cfg", _cases("scale_shift", 18, _affine_cfg, 0))
def test_scale_shift(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    dtype, c = cfg["dtype"], cfg["shape"][-1]
    x = rand(cfg["shape"], dtype, gen, 2.0)
    scale = rand((c,), torch.float32, gen) if cfg["scale"] else None  # fp32 vectors, as bn_scale_shift makes
    shift = rand((c,), torch.float32, gen) if cfg["shift"] else None
    act = TORCH_ACT[cfg["act"]]

    def ref(t):
        y = t * (1 if scale is None else scale.to(t.dtype)) + (0 if shift is None else shift.to(t.dtype))
        return act(y)

    ref64 = ref(x.double())
    out = Poisoned(ref64.shape, dtype, cfg["slice_out"])
    ew.scale_shift(as_arg(x, cfg["slice_in"], gen), out.view, scale=scale, shift=shift, act=cfg["act"])
    out.check_untouched()
    # PyTorch promotes x * (fp32 scale) to fp32: its result is rounded to dtype once, as ours
    assert_close(out.view, ref64, torch_at(lambda t: act(t * (1 if scale is None else scale) +
                                                         (0 if shift is None else shift)), [x], dtype),
                 dtype, str(cfg))


def test_tanh_and_sigmoid_across_their_range():
    """Relative accuracy of the activations from tiny to saturating arguments (fp32)."""
    x = torch.cat([torch.linspace(-1e-3, 1e-3, 300), torch.linspace(-30, 30, 600), torch.tensor([1e-30, -1e-30])])
    x = x.to(DEVICE)[:, None]
    for act, fn in ((ew.ACT_TANH, torch.tanh), (ew.ACT_SIGMOID, torch.sigmoid)):
        out = torch.full_like(x, float("nan"))
        ew.scale_shift(x, out, act=act)
        ref = fn(x.double())
        worst = ((out.double() - ref).abs() / ref.abs()).max().item()
        assert worst <= 1e-6, (act, worst)


def _copy_cfg(rng):
    return dict(shape=_shape(rng))


@pytest.mark.parametrize("cfg", _cases("copy", 8, _copy_cfg, 0))
def test_copy_channels_into_a_concat_buffer(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = rand(cfg["shape"], cfg["dtype"], gen)
    out = Poisoned(x.shape, cfg["dtype"], True)  # always a slice: that is what concat does
    ew.copy_channels(as_arg(x, cfg["slice_in"], gen), out.view)
    out.check_untouched()
    assert torch.equal(out.view, x)


@pytest.mark.parametrize("cfg", _cases("pad", 8, _copy_cfg, 0))
def test_pad_channels(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = rand(cfg["shape"], cfg["dtype"], gen)
    extra = 1 + cfg["seed"] % 70
    out = Poisoned((*x.shape[:-1], x.shape[-1] + extra), cfg["dtype"], cfg["slice_out"])
    ew.pad_channels(as_arg(x, cfg["slice_in"], gen), out.view)
    out.check_untouched()
    assert torch.equal(out.view, F.pad(x, (0, extra)))


def _upsample_cfg(rng):
    return dict(n=_batch(rng), c=_channels(rng), h=rng.randint(1, 7), w=rng.randint(1, 7),
                scale=rng.choice([(1, 1), (2, 2), (2, 2), (3, 3), (2, 1), (1, 3), (4, 2)]))


@pytest.mark.parametrize("cfg", _cases("upsample", 12, _upsample_cfg, 0))
def test_upsample_nearest(cfg):
    """A copy: exactly PyTorch's nearest-neighbour upsampling by the same factors, in every dtype,
    from and into channel slices (a concat's buffer) without touching their neighbours."""
    sh, sw = cfg["scale"]
    _run_nchw(cfg, lambda t: F.interpolate(t, scale_factor=(float(sh), float(sw)), mode="nearest"),
              lambda x, out: ew.upsample_nearest(x, out, cfg["scale"]), exact=True)


def test_upsample_nearest_refuses_what_it_cannot_write():
    x = torch.randn(2, 3, 4, 5, device=DEVICE)
    for out, scale, message in ((torch.empty(2, 6, 8, 4), (2, 2), "out must be"),
                                (torch.empty(2, 6, 8, 5, dtype=torch.float16), (2, 2), "out must be"),
                                (torch.empty(2, 3, 4, 5), (0, 1), "at least 1"),
                                (torch.empty(2, 6, 4, 5), (2, 1.5), "whole factors")):
        with pytest.raises(ValueError, match=message):
            ew.upsample_nearest(x, out.to(DEVICE), scale)


def test_nan_propagates_like_pytorch():
    """NaN in, NaN out where PyTorch gives NaN: max pooling (a max that skipped NaN would hide
    it), relu, add, softmax."""
    gen = torch.Generator().manual_seed(5)
    x = rand((2, 6, 7, 9), torch.float32, gen)
    x[0, 1, 2, 3] = x[1, 5, 6, 8] = x[1, 0, 0, 0] = float("nan")
    ref = nhwc(F.max_pool2d(x, 3, 2, 1, ceil_mode=True))
    out = torch.full(ref.shape, 0.0, device=DEVICE)
    pool.max_pool2d(nhwc(x), out, kernel=3, stride=2, pad=1)
    assert torch.isnan(ref).any()
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())
    xs = nhwc(x)
    for fn, call in ((torch.relu, lambda o: ew.scale_shift(xs, o, act=ew.ACT_RELU)),
                     (lambda t: torch.relu(t + t), lambda o: ew.add([xs, xs], o, act=ew.ACT_RELU)),
                     (lambda t: F.softmax(t, -1), lambda o: norm.softmax(xs, o))):
        out = torch.zeros_like(xs)
        call(out)
        assert torch.equal(torch.isnan(out), torch.isnan(fn(xs)))


def test_non_unit_channel_stride_is_refused():
    x = torch.randn(2, 3, 4, 5).permute(0, 2, 3, 1)  # an NCHW tensor seen as NHWC: channel stride H*W
    out = torch.empty(2, 4, 5, 3)
    with pytest.raises(ValueError, match="stride 1"):
        ew.scale_shift(x, out)
    with pytest.raises(ValueError, match="stride 1"):
        pool.max_pool2d(x, out, kernel=1, stride=1, pad=0)


# ---- GPU: larger shapes (tier 3) -----------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=SHORT.get)
def test_large_shapes_on_gpu(dtype):
    """Network-sized shapes (ResNet-50, GoogLeNet, AlexNet, classifier heads) on the GPU."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    max_cases = [  # (N, C, H, W), reference, our call: max pooling must be exact
        ((8, 64, 112, 112), lambda x: F.max_pool2d(x, 3, 2, 1),
         lambda x, o: pool.max_pool2d(x, o, kernel=3, stride=2, pad=1)),
        ((8, 192, 56, 56), lambda x: F.max_pool2d(x, 3, 2, 0, ceil_mode=True),
         lambda x, o: pool.max_pool2d(x, o, kernel=3, stride=2, pad=0)),
    ]
    nchw_cases = [  # (N, C, H, W), reference, our call
        ((8, 528, 14, 14), lambda x: F.avg_pool2d(x, 5, 3, ceil_mode=True),
         lambda x, o: pool.avg_pool2d(x, o, kernel=5, stride=3, pad=0)),
        ((8, 256, 28, 28), lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
         lambda x, o: pool.avg_pool2d(x, o, kernel=3, stride=2, pad=1, count_include_pad=False)),
        ((8, 256, 13, 13), lambda x: F.adaptive_avg_pool2d(x, 6), pool.adaptive_avg_pool2d),
        ((32, 2048, 7, 7), lambda x: x.mean((2, 3), keepdim=True), pool.global_avg_pool),
        ((4, 1000, 13, 13), lambda x: x.mean((2, 3), keepdim=True), pool.global_avg_pool),
        ((8, 96, 55, 55), lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
         lambda x, o: norm.lrn(x, o, size=5, alpha=1e-4, beta=0.75, k=2.0)),
        ((8, 100, 7, 9), lambda x: F.softmax(x, 1), norm.softmax),
    ]
    for i, (shape, ref_fn, call) in enumerate(max_cases + nchw_cases):
        x = rand(shape, dtype, gen, 3.0)
        ref64 = nhwc(ref_fn(x.double()))
        out = Poisoned(ref64.shape, dtype, i % 2 == 1)
        call(as_arg(nhwc(x), i % 2 == 0, gen), out.view)
        torch.cuda.synchronize()
        out.check_untouched()
        if i < len(max_cases):
            assert torch.equal(out.view.double(), ref64)
        else:
            assert_close(out.view, ref64, nhwc(torch_at(ref_fn, [x], dtype)), dtype, f"case {i} {shape}")

    for rows, cols in ((256, 1000), (64, 5000)):
        x = rand((rows, cols), dtype, gen, 4.0)
        out = Poisoned((rows, cols), dtype, False)
        norm.softmax(x, out.view)
        assert_close(out.view, F.softmax(x.double(), 1), torch_at(lambda t: F.softmax(t, 1), [x], dtype), dtype,
                     f"softmax {rows}x{cols}")

    shape = (8, 56, 56, 256)
    for count in (2, 4, 5):
        xs = [rand(shape, dtype, gen) for _ in range(count)]
        ref_fn = lambda ts: torch.relu(sum(ts[1:], ts[0]))  # noqa: E731
        out = Poisoned(shape, dtype, True)
        ew.add([as_arg(x, j == 0, gen) for j, x in enumerate(xs)], out.view, act=ew.ACT_RELU)
        out.check_untouched()
        assert_close(out.view, ref_fn([x.double() for x in xs]), torch_at(lambda *ts: ref_fn(list(ts)), xs, dtype),
                     dtype, f"add x{count}")
    x = rand(shape, dtype, gen)
    scale, shift = rand((256,), torch.float32, gen), rand((256,), torch.float32, gen)
    out = Poisoned(shape, dtype, True)
    ew.scale_shift(x, out.view, scale=scale, shift=shift, act=ew.ACT_RELU)
    out.check_untouched()
    assert_close(out.view, torch.relu(x.double() * scale.double() + shift.double()),
                 torch_at(lambda t: torch.relu(t * scale + shift), [x], dtype), dtype, "scale_shift")
    out = Poisoned((*shape[:3], 384), dtype, True)
    ew.pad_channels(x, out.view)
    out.check_untouched()
    assert torch.equal(out.view, F.pad(x, (0, 128)))


# ---- the one rounding to bf16, as a GPU does it ------------------------------------------------


def test_bf16_stores_round_to_nearest_even_under_the_interpreter():
    """Sums, products and 2x2 means of bf16 values are exact in fp32, so each kernel's bf16 output
    must be exactly PyTorch's fp32 result rounded to nearest even (truncation, the interpreter's
    own cast, differs in about half the elements); and it is a GPU's rounding too."""
    gen = torch.Generator().manual_seed(11)
    a, b = (rand((2, 6, 5, 40), torch.bfloat16, gen) for _ in range(2))
    gate = rand((2, 1, 1, 40), torch.bfloat16, gen)
    out = torch.empty_like(a)
    ew.add([a, b], out)
    assert torch.equal(out, (a.float() + b.float()).to(torch.bfloat16))
    ew.mul([a, gate], out)
    assert torch.equal(out, (a.float() * gate.float()).to(torch.bfloat16))
    pooled = torch.empty(2, 3, 2, 40, dtype=torch.bfloat16, device=DEVICE)
    pool.avg_pool2d(a, pooled, kernel=2, stride=2, pad=0)
    want = F.avg_pool2d(a.float().permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).to(torch.bfloat16)
    assert torch.equal(pooled, want)
    truncated = ((a.float() + b.float()).contiguous().view(torch.int32) & -65536).view(torch.float32)
    assert (truncated.to(torch.bfloat16) != (a.float() + b.float()).to(torch.bfloat16)).float().mean() > 0.2
