"""Pooling kernels over NHWC activations: max and average pooling with PyTorch's padding, dilation
and ceil_mode semantics, adaptive average pooling and global average pooling.

Layout: x is (N, H, W, C) and out is (N, P, Q, C), both with unit channel stride; either may be
a view (a channel slice of a wider buffer), read and written through its strides. The caller
allocates `out` with PyTorch's output-size rules (ceil_mode included), so the kernels take P and
Q from out's shape and only need to know where each window lies.

Each launcher checks its arguments and chooses tiles and grid once per distinct (shapes, strides,
dtypes, devices of x and out, other arguments) -- once per call site and batch size in a
generated program -- and keeps that launch plan (host.py's ``_host_plan``); later calls only launch.

Blocking: max/avg pooling run one program per (n, p, q-block, c-block) tile of BLOCK_Q output
columns x BLOCK_C channels, vectorized over the contiguous channel axis, looping over the KH x KW
window (unrolled). Adaptive/global pooling run one program per (n, output pixel, c-block) and
reduce the window in [BLOCK_HW positions x BLOCK_C channels] chunks. Arithmetic is fp32; the
result is rounded once, to out's dtype, on the store.
"""

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _pool_window_kernel(
    x_ptr, out_ptr,
    H, W, P, Q, C,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    SH, SW, PH, PW, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr,
    IS_MAX: tl.constexpr,             # True: max pooling; False: average pooling
    COUNT_INCLUDE_PAD: tl.constexpr,  # average pooling's divisor rule (ignored for max)
    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[n, p, q, c] = max or mean of x[n, p*SH - PH + i*DH, q*SW - PW + j*DW, c] over the
    KH x KW window, positions outside [0, H) x [0, W) skipped.

    x: (N, H, W, C), out: (N, P, Q, C), unit channel stride. Grid: (N * P, cdiv(Q, BLOCK_Q),
    cdiv(C, BLOCK_C)). With ceil_mode the last windows may run past the padded input; they
    simply see fewer valid positions. Average pooling (DH = DW = 1) divides by PyTorch's
    divisor: the window clipped to the padded input [-PH, H + PH) x [-PW, W + PW) when
    COUNT_INCLUDE_PAD, else clipped to the real input [0, H) x [0, W). Max pooling propagates NaN.
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- which tile: one output row p of image n, BLOCK_Q columns, BLOCK_C channels
    pid_np = tl.program_id(0)
    n = pid_np // P
    p = pid_np % P
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    q_mask = q < Q
    c_mask = c < C
    x_img = x_ptr + n.to(tl.int64) * sx_n

    # -- window origin (top-left tap, may be in the padding), per output column. h0 is the same
    #    for the whole tile but kept as a vector: under TRITON_INTERPRET a scalar bool broadcast
    #    into a block mask comes out as int32, which tl.load rejects.
    h0 = tl.zeros((BLOCK_Q,), tl.int32) + (p * SH - PH)
    w0 = q * SW - PW

    # -- reduce over the window; invalid taps load the reduction's identity
    if IS_MAX:
        acc = tl.full((BLOCK_Q, BLOCK_C), float("-inf"), tl.float32)
    else:
        acc = tl.zeros((BLOCK_Q, BLOCK_C), tl.float32)
    for i in tl.static_range(KH):
        h = h0 + i * DH
        h_ok = (h >= 0) & (h < H)
        for j in tl.static_range(KW):
            w = w0 + j * DW
            tap_ok = q_mask & h_ok & (w >= 0) & (w < W)
            mask = tap_ok[:, None] & c_mask[None, :]
            ptrs = x_img + (h * sx_h + w * sx_w)[:, None] + c[None, :]
            if IS_MAX:
                v = tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32)
                acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
            else:
                acc += tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)

    # -- average pooling: PyTorch's divisor per output column
    if not IS_MAX:
        h1 = tl.minimum(h0 + KH, H + PH)
        w1 = tl.minimum(w0 + KW, W + PW)
        if COUNT_INCLUDE_PAD:
            count = (h1 - h0) * (w1 - w0)
        else:
            count = (tl.minimum(h1, H) - tl.maximum(h0, 0)) * (tl.minimum(w1, W) - tl.maximum(w0, 0))
        acc = acc / tl.maximum(count, 1).to(tl.float32)[:, None]  # (count < 1 only in masked lanes)

    # -- store the tile
    out_ptrs = out_ptr + n.to(tl.int64) * so_n + p * so_h + q[:, None] * so_w + c[None, :]
    tl.store(out_ptrs, _common_cast(acc, out_ptr.dtype.element_ty, INTERPRETED), mask=q_mask[:, None] & c_mask[None, :])


@triton.jit
def _pool_adaptive_avg_kernel(
    x_ptr, out_ptr,
    H, W, P, Q, C,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    MAX_WINDOW: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[n, i, j, c] = mean of x[n, h, w, c] over PyTorch's adaptive window
    h in [floor(i*H/P), ceil((i+1)*H/P)), w in [floor(j*W/Q), ceil((j+1)*W/Q)).

    x: (N, H, W, C), out: (N, P, Q, C), unit channel stride. Grid: (N * P * Q, cdiv(C, BLOCK_C)).
    The window's positions are flattened and reduced BLOCK_HW at a time into a
    [BLOCK_HW, BLOCK_C] fp32 accumulator, summed over positions at the end. MAX_WINDOW, the
    largest window's position count, bounds the loop: a constexpr, because Triton 3.6's
    interpreter cannot loop up to a bound computed in the kernel (this window's `count`). P = Q = 1 is global
    average pooling (the window is the whole image).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- which output pixel (n, i, j) and channel block
    pid = tl.program_id(0)
    j = pid % Q
    i = (pid // Q) % P
    n = pid // (P * Q)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    x_img = x_ptr + n.to(tl.int64) * sx_n

    # -- the adaptive window [hs, he) x [ws, we)
    hs = (i * H) // P
    he = ((i + 1) * H + P - 1) // P
    ws = (j * W) // Q
    we = ((j + 1) * W + Q - 1) // Q
    win_w = we - ws
    count = (he - hs) * win_w

    # -- reduce the flattened window in chunks of BLOCK_HW positions
    acc = tl.zeros((BLOCK_HW, BLOCK_C), tl.float32)
    for k0 in range(0, MAX_WINDOW, BLOCK_HW):
        k = k0 + tl.arange(0, BLOCK_HW)
        h = hs + k // win_w
        w = ws + k % win_w
        mask = (k < count)[:, None] & c_mask[None, :]
        ptrs = x_img + (h * sx_h + w * sx_w)[:, None] + c[None, :]
        acc += tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / count.to(tl.float32)

    # -- store one pixel's channel block
    out_ptrs = out_ptr + n.to(tl.int64) * so_n + i * so_h + j * so_w + c
    tl.store(out_ptrs, _common_cast(mean, out_ptr.dtype.element_ty, INTERPRETED), mask=c_mask)


# --------------------------------------------------------------------------------------------
# Host functions
# --------------------------------------------------------------------------------------------


def _pool_check(x, out):
    """Both NHWC with unit channel stride, same N and C; returns nothing, raises ValueError."""
    for name, t in (("x", x), ("out", out)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected an (N, H, W, C) tensor, got shape {tuple(t.shape)}")
        if t.stride(3) != 1 and t.shape[3] > 1:
            raise ValueError(f"{name}: the channel (last) axis must have stride 1, got strides {t.stride()}")
    if x.shape[0] != out.shape[0] or x.shape[3] != out.shape[3]:
        raise ValueError(f"x has shape {tuple(x.shape)}, out has {tuple(out.shape)}: N and C must match")


def _pool_pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pool_planned(plan_fn, x, out, *args):
    """Launch plan_fn((x, out), *args)'s plan -- (kernel, grid, arguments after x and out, keyword
    arguments), or () when there is nothing to launch -- on x and out; the plan (checks included)
    is made once per distinct call and kept (``_host_plan``)."""
    plan = _host_plan(plan_fn, (x, out), args)
    if plan:
        kernel, grid, rest, kwargs = plan
        kernel[grid](x, out, *rest, **kwargs)


def _pool_window_plan(tensors, kernel, stride, pad, dilation, is_max, count_include_pad):
    x, out = tensors
    _pool_check(x, out)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pool_pair, (kernel, stride, pad, dilation))
    n, h, w, c = x.shape
    _, p, q, _ = out.shape
    if out.numel() == 0:
        return ()
    # tile: up to 64 channels (one 128-256 byte run per output pixel) x enough columns for ~1024
    block_c = min(triton.next_power_of_2(c), 64)
    block_q = min(triton.next_power_of_2(q), max(1, 1024 // block_c))
    grid = (n * p, triton.cdiv(q, block_q), triton.cdiv(c, block_c))
    return (_pool_window_kernel, grid,
            (h, w, p, q, c, *x.stride()[:3], *out.stride()[:3], sh, sw, ph, pw, dh, dw),
            dict(KH=kh, KW=kw, IS_MAX=is_max, COUNT_INCLUDE_PAD=bool(count_include_pad),
                 BLOCK_Q=block_q, BLOCK_C=block_c, INTERPRETED=x.device.type == "cpu", **_host_pdl(x.device)))


def _pool_launch(x, out, kernel, stride, pad, dilation, is_max, count_include_pad):
    _pool_planned(_pool_window_plan, x, out, kernel, stride, pad, dilation, is_max, count_include_pad)


def max_pool2d(x, out, *, kernel, stride, pad, dilation=(1, 1)):
    """out = max_pool2d(x) in NHWC. kernel, stride, pad (symmetric), dilation: int or (h, w).
    ceil_mode is already reflected in out's shape; window taps outside the input are ignored."""
    _pool_launch(x, out, kernel, stride, pad, dilation, True, True)


def avg_pool2d(x, out, *, kernel, stride, pad, count_include_pad=True):
    """out = avg_pool2d(x) in NHWC with PyTorch's divisor rules (ceil_mode via out's shape): the
    window clipped to the padded input when count_include_pad, else to the real input."""
    _pool_launch(x, out, kernel, stride, pad, (1, 1), False, count_include_pad)


def adaptive_avg_pool2d(x, out):
    """out = adaptive_avg_pool2d(x, out.shape[1:3]) in NHWC (PyTorch's floor/ceil windows)."""
    _pool_planned(_pool_adaptive_plan, x, out)


def _pool_adaptive_plan(tensors):
    x, out = tensors
    _pool_check(x, out)
    n, h, w, c = x.shape
    _, p, q, _ = out.shape
    if out.numel() == 0:
        return ()
    # largest window (positions), so that small windows do not get a needlessly wide chunk
    win_h = max(((i + 1) * h + p - 1) // p - (i * h) // p for i in range(p))
    win_w = max(((j + 1) * w + q - 1) // q - (j * w) // q for j in range(q))
    block_c = min(triton.next_power_of_2(c), 64)
    block_hw = min(triton.next_power_of_2(win_h * win_w), max(1, 2048 // block_c))
    grid = (n * p * q, triton.cdiv(c, block_c))
    return (_pool_adaptive_avg_kernel, grid, (h, w, p, q, c, *x.stride()[:3], *out.stride()[:3]),
            dict(MAX_WINDOW=win_h * win_w, BLOCK_HW=block_hw, BLOCK_C=block_c, INTERPRETED=x.device.type == "cpu",
                 **_host_pdl(x.device)))


def global_avg_pool(x, out):
    """out (N, 1, 1, C) = mean of x (N, H, W, C) over H and W."""
    if out.dim() != 4 or out.shape[1] != 1 or out.shape[2] != 1:
        raise ValueError(f"global_avg_pool: out must be (N, 1, 1, C), got {tuple(out.shape)}")
    adaptive_avg_pool2d(x, out)
