"""Elementwise kernels: n-ary add / mean (residual and fractal joins), per-channel scale and shift
(inference batch norm, standalone activations), channel copies into concat buffers, and the
copies that move rows: channel shuffle and nearest-neighbour upsampling.

Layout: every activation is NHWC (N, H, W, C) with unit channel stride, or a flat (N, F) vector
(treated as (N, 1, 1, F)). Tensors may be views: a channel slice of a wider buffer has strides
(H*W*Ct, W*Ct, Ct, 1). Kernels index rows r = (n, h, w) through each tensor's own strides, so
they read and write views in place and never touch channels outside the view.

Blocking: a program owns a [BLOCK_R rows x BLOCK_C channels] tile; rows are the flattened
(n, h, w) positions, channels are contiguous in memory, so each row of the tile is one coalesced
run. Arithmetic is fp32; the result is rounded once, to `out`'s dtype, on the store.

Each launcher checks its arguments and chooses tiles and grid once per distinct (shapes, strides,
dtypes, devices of its tensors, other arguments) -- once per call site and batch size in a generated
program -- and keeps that launch plan (host.py's ``_host_plan``); later calls only launch.
"""

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ACT_NONE, ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_RELU6, ACT_HARDSIGMOID, ACT_HARDSWISH, ACT_SILU, ACT_GELU, ACT_GELU_TANH = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9

_EW_MAX_INPUTS = 4  # inputs one launch of _ew_sum_kernel reads; more are chained through fp32


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _ew_activation(y, ACT: tl.constexpr):
    """y (fp32) -> act(y). ACT: 0 none, 1 relu, 2 tanh, 3 sigmoid, 4 relu6, 5 hardsigmoid,
    6 hardswish, 7 silu, 8 gelu (exact, erf), 9 gelu (tanh form) (the ACT_* constants).

    NaN propagates through every activation, as in PyTorch."""
    if ACT == 1:
        y = tl.where(y < 0.0, 0.0, y)
    elif ACT == 2:
        # tanh(|y|) = (1 - e) / (1 + e) with e = exp(-2|y|): no overflow for large |y|. Near 0,
        # 1 - e cancels, so there the Taylor series x - x^3/3 + 2x^5/15 - 17x^7/315 is used
        # (its truncation error at |y| = 1/16 is ~1e-12 relative).
        a = tl.abs(y)
        e = tl.exp(-2.0 * a)
        big = (1.0 - e) / (1.0 + e)
        a2 = a * a
        small = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))))
        t = tl.where(a < 0.0625, small, big)
        y = tl.where(y < 0.0, -t, t)
    elif ACT == 3:
        y = 1.0 / (1.0 + tl.exp(-y))
    elif ACT == 4:  # relu6, by selects so that NaN propagates
        y = tl.where(y < 0.0, 0.0, tl.where(y > 6.0, 6.0, y))
    elif ACT == 5:  # hardsigmoid: relu6(y + 3) / 6
        y = tl.where(y <= -3.0, 0.0, tl.where(y >= 3.0, 1.0, y / 6.0 + 0.5))
    elif ACT == 6:  # hardswish: y * relu6(y + 3) / 6
        y = tl.where(y <= -3.0, 0.0, tl.where(y >= 3.0, y, y * (y + 3.0) / 6.0))
    elif ACT == 7:  # silu: y * sigmoid(y); the sigmoid without overflow
        t = tl.exp(-tl.abs(y))
        y = y * tl.where(y >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))
    elif ACT == 8:  # gelu, exact: y * Phi(y) = y/2 * (1 + erf(y / sqrt(2))), PyTorch's formula
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 9:  # gelu, tanh form: y/2 * (1 + tanh(u)) = y * sigmoid(2u), no cancellation
        u2 = 1.5957691216057308 * (y + 0.044715 * y * y * y)  # 2u = 2 sqrt(2/pi) (y + 0.044715 y^3)
        t = tl.exp(-tl.abs(u2))
        y = y * tl.where(u2 >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))
    return y


@triton.jit
def _ew_row_offsets(r, H, W, s_n, s_h, s_w):
    """Element offsets (int64) of rows r = (n*H + h)*W + w of a tensor with strides s_n, s_h, s_w."""
    w = r % W
    nh = r // W
    h = nh % H
    n = nh // H
    return n.to(tl.int64) * s_n + h * s_h + w * s_w


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _ew_sum_kernel(
    out_ptr, x0_ptr, x1_ptr, x2_ptr, x3_ptr,
    R, H, W, C,
    so_n, so_h, so_w,
    s0_n, s0_h, s0_w,
    s1_n, s1_h, s1_w,
    s2_n, s2_h, s2_w,
    s3_n, s3_h, s3_w,
    NUM_INPUTS: tl.constexpr,   # 2..4: inputs x0 .. x{NUM_INPUTS-1} are read, the rest ignored
    DIVISOR: tl.constexpr,      # the sum is divided by this (1 for add, the input count for mean)
    ACT: tl.constexpr,          # activation applied last (ACT_* constant)
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out = act((x0 + x1 [+ x2 [+ x3]]) / DIVISOR), elementwise over NHWC tensors of one shape.

    All tensors are (N, H, W, C), unit channel stride, row strides given per tensor (R = N*H*W
    rows). Grid: (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C)); each program does one tile. The sum is
    accumulated in fp32, in input order. `out` may alias an input (each element is read and
    written by the same program).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- the tile: BLOCK_R rows (n, h, w) x BLOCK_C channels
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < R)[:, None] & (c < C)[None, :]
    cols = c[None, :]

    # -- accumulate the inputs in fp32
    acc = tl.load(x0_ptr + _ew_row_offsets(r, H, W, s0_n, s0_h, s0_w)[:, None] + cols, mask=mask).to(tl.float32)
    acc += tl.load(x1_ptr + _ew_row_offsets(r, H, W, s1_n, s1_h, s1_w)[:, None] + cols, mask=mask).to(tl.float32)
    if NUM_INPUTS > 2:
        acc += tl.load(x2_ptr + _ew_row_offsets(r, H, W, s2_n, s2_h, s2_w)[:, None] + cols,
                       mask=mask).to(tl.float32)
    if NUM_INPUTS > 3:
        acc += tl.load(x3_ptr + _ew_row_offsets(r, H, W, s3_n, s3_h, s3_w)[:, None] + cols,
                       mask=mask).to(tl.float32)

    # -- mean, activation, one rounding to out's dtype
    if DIVISOR != 1:
        acc = acc / DIVISOR
    y = _ew_activation(acc, ACT)
    o_rows = _ew_row_offsets(r, H, W, so_n, so_h, so_w)
    tl.store(out_ptr + o_rows[:, None] + cols, _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _ew_channel_affine_kernel(
    x_ptr, out_ptr, scale_ptr, shift_ptr,
    R, H, W, C_IN, C_OUT,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    so_c=1,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[r, c] = act(x[r, c] * scale[c] + shift[c]) for c < C_IN, and 0 for C_IN <= c < C_OUT.

    x is (N, H, W, C_IN) with unit channel stride, out is (N, H, W, C_OUT) with C_OUT >= C_IN and
    channel stride so_c (1, or a channel shuffle's groups: codegen/plan.py writes a concat input
    straight into its shuffled channels), row strides per tensor (R = N*H*W rows). scale and
    shift are contiguous (C_IN,) vectors, each optional (HAS_SCALE / HAS_SHIFT; the pointer is
    ignored when absent). Grid:
    (cdiv(R, BLOCK_R), cdiv(C_OUT, BLOCK_C)). Serves inference batch norm, standalone
    activations, channel copies (no scale, no shift, no act) and zero channel padding
    (C_OUT > C_IN). `out` may alias `x` when C_OUT == C_IN.
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- the tile: BLOCK_R rows x BLOCK_C output channels
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r_mask = r < R
    c_in = c < C_IN
    x_rows = _ew_row_offsets(r, H, W, sx_n, sx_h, sx_w)

    # -- load x (channels past C_IN read as 0) and the per-channel vectors
    x = tl.load(x_ptr + x_rows[:, None] + c[None, :], mask=r_mask[:, None] & c_in[None, :], other=0.0)
    y = x.to(tl.float32)
    if HAS_SCALE:
        y = y * tl.load(scale_ptr + c, mask=c_in, other=0.0).to(tl.float32)[None, :]
    if HAS_SHIFT:
        y = y + tl.load(shift_ptr + c, mask=c_in, other=0.0).to(tl.float32)[None, :]

    # -- activation; padding channels are exactly zero
    y = _ew_activation(y, ACT)
    y = tl.where(c_in[None, :], y, 0.0)
    o_rows = _ew_row_offsets(r, H, W, so_n, so_h, so_w)
    tl.store(out_ptr + o_rows[:, None] + c[None, :] * so_c, _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED),
             mask=r_mask[:, None] & (c < C_OUT)[None, :])


@triton.jit
def _ew_mul_kernel(
    out_ptr, a_ptr, b_ptr,
    R, H, W, C,
    so_n, so_h, so_w,
    sa_n, sa_h, sa_w, sa_c,
    sb_n, sb_h, sb_w, sb_c,
    ACT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out = act(a * b) over an (N, H, W, C) output; a and b are read through their own strides,
    stride 0 on a broadcast axis (squeeze-and-excitation: b is (N, 1, 1, C), strides (C, 0, 0, 1)).

    out has unit channel stride. Grid: (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C)). `out` may alias an
    operand of its own shape (each element is read and written by the same program)."""
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < R)[:, None] & (c < C)[None, :]
    a_off = _ew_row_offsets(r, H, W, sa_n, sa_h, sa_w)[:, None] + (c * sa_c)[None, :]
    b_off = _ew_row_offsets(r, H, W, sb_n, sb_h, sb_w)[:, None] + (c * sb_c)[None, :]
    y = tl.load(a_ptr + a_off, mask=mask).to(tl.float32) * tl.load(b_ptr + b_off, mask=mask).to(tl.float32)
    y = _ew_activation(y, ACT)
    o_rows = _ew_row_offsets(r, H, W, so_n, so_h, so_w)
    tl.store(out_ptr + o_rows[:, None] + c[None, :], _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _ew_channel_shuffle_kernel(
    x_ptr, out_ptr,
    R, H, W, C, PER_GROUP,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    GROUPS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # unused (a copy rounds nothing); the tiles' keywords carry it
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """ShuffleNet's channel shuffle as index arithmetic: out[r, i*GROUPS + g] = x[r, g*PER_GROUP + i]
    (channels viewed as GROUPS x PER_GROUP, transposed). Each program stores a contiguous run of
    output channels and gathers its inputs (within one row: the same cache lines).
    Grid: (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C))."""
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < R)[:, None] & (c < C)[None, :]
    src = (c % GROUPS) * PER_GROUP + c // GROUPS
    x = tl.load(x_ptr + _ew_row_offsets(r, H, W, sx_n, sx_h, sx_w)[:, None] + src[None, :], mask=mask)
    o_rows = _ew_row_offsets(r, H, W, so_n, so_h, so_w)
    tl.store(out_ptr + o_rows[:, None] + c[None, :], x.to(out_ptr.dtype.element_ty), mask=mask)  # a copy: no rounding


@triton.jit
def _ew_upsample_kernel(
    x_ptr, out_ptr,
    R, H, W, C,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    SCALE_H: tl.constexpr, SCALE_W: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # unused (a copy rounds nothing); the tiles' keywords carry it
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """Nearest-neighbour upsampling: out[n, h, w, c] = x[n, h // SCALE_H, w // SCALE_W, c].

    out is (N, H, W, C), H and W being SCALE_H and SCALE_W times x's; both have unit channel
    stride and their own row strides (R = N*H*W output rows; out may be a channel slice of a
    concat buffer). Grid: (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C)): each program stores a tile of
    output rows and reads each source row once per output row that repeats it (from cache).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < R)[:, None] & (c < C)[None, :]
    # -- the output row (n, h, w) and the input row it repeats (n, h // SCALE_H, w // SCALE_W)
    w = r % W
    nh = r // W
    h = nh % H
    n = (nh // H).to(tl.int64)
    x_rows = n * sx_n + (h // SCALE_H) * sx_h + (w // SCALE_W) * sx_w
    o_rows = n * so_n + h * so_h + w * so_w
    x = tl.load(x_ptr + x_rows[:, None] + c[None, :], mask=mask)
    tl.store(out_ptr + o_rows[:, None] + c[None, :], x.to(out_ptr.dtype.element_ty), mask=mask)  # a copy: no rounding


# --------------------------------------------------------------------------------------------
# Host functions
# --------------------------------------------------------------------------------------------


def _ew_nhwc(t, what, any_channel_stride=False):
    """t as a 4-D NHWC view ((N, F) becomes (N, 1, 1, F)); checks the unit channel stride (unless
    the kernel takes this tensor's channel stride)."""
    if t.dim() == 2:
        t = t[:, None, None, :]
    if t.dim() != 4:
        raise ValueError(f"{what}: expected an (N, H, W, C) or (N, F) tensor, got shape {tuple(t.shape)}")
    if t.stride(3) != 1 and t.shape[3] > 1 and not any_channel_stride:
        raise ValueError(f"{what}: the channel (last) axis must have stride 1, got strides {t.stride()}")
    return t


def _ew_4d(t):
    """A checked (N, F) or NHWC tensor as the 4-D view the kernels take (``_ew_nhwc``'s result)."""
    return t[:, None, None, :] if t.dim() == 2 else t


def _ew_launch(kernel, plan, x, out, *vectors):
    """Launch `kernel` on x, out and the optional per-channel `vectors` (an absent one passes x's
    pointer, which the kernel ignores) as `plan` says: (grid, the arguments after the pointers,
    keyword arguments), or nothing when the plan is () (nothing to do)."""
    if plan:
        grid, rest, kwargs = plan
        xv = _ew_4d(x)
        kernel[grid](xv, _ew_4d(out), *[xv if v is None else v for v in vectors], *rest, **kwargs)


def _ew_pair(x, out, what=""):
    """x and out as checked 4-D views (``_ew_nhwc``) of one shape; `what` prefixes the error."""
    xv, ov = _ew_nhwc(x, "x"), _ew_nhwc(out, "out")
    if xv.shape != ov.shape:
        raise ValueError(f"{what}x has shape {tuple(x.shape)}, out has {tuple(out.shape)}")
    return xv, ov


def _ew_vector(v, c, what):
    """Raise unless v is None or a contiguous (c,) vector (per-channel scales, shifts, affines)."""
    if v is not None and (v.dim() != 1 or v.shape[0] != c or v.stride(0) != 1):
        raise ValueError(f"{what} must be a contiguous ({c},) vector, got shape {tuple(v.shape)}")


def _ew_tiles(t, channels=None, widest=128):
    """A tiled walk over the rows (n, h, w) of the 4-D view t and `channels` (t's own by default):
    (rows, grid, BLOCK_R / BLOCK_C constexprs and ``_host_pdl``'s launch keywords) with tiles up to
    `widest` channels wide and about 2048 elements per program; None when there is nothing to do
    (no rows or no channels)."""
    n, h, w, c = t.shape
    rows, channels = n * h * w, c if channels is None else channels
    if rows == 0 or channels == 0:
        return None
    block_c = min(triton.next_power_of_2(channels), widest)
    block_r = min(triton.next_power_of_2(rows), max(1, 2048 // block_c))
    return rows, (triton.cdiv(rows, block_r), triton.cdiv(channels, block_c)), dict(BLOCK_R=block_r, BLOCK_C=block_c,
                                                                                    INTERPRETED=t.device.type == "cpu",
                                                                                    **_host_pdl(t.device))


def _ew_sum_check(inputs, out):
    """(out, inputs) as 4-D views, checked: 2 or more inputs of out's shape."""
    if len(inputs) < 2:
        raise ValueError(f"add/mean need at least 2 inputs, got {len(inputs)}")
    o = _ew_nhwc(out, "out")
    xs = [_ew_nhwc(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    for i, t in enumerate(xs):
        if t.shape != o.shape:
            raise ValueError(f"inputs[{i}] has shape {tuple(inputs[i].shape)}, out has {tuple(out.shape)}")
    return o, xs


def _ew_sum(inputs, out, divisor, act):
    """out = act(sum(inputs) / divisor): one launch for up to 4 inputs; for more, partial sums go
    through an fp32 buffer (same additions in the same order, so the result does not change)."""
    if len(inputs) > _EW_MAX_INPUTS:
        _ew_sum_chained(inputs, out, divisor, act)
        return
    plan = _host_plan(_ew_sum_plan, (out, *inputs), (divisor, act))
    if plan:
        grid, rest, kwargs = plan
        xs = [_ew_4d(t) for t in inputs]
        _ew_sum_kernel[grid](_ew_4d(out), *xs, *[xs[0]] * (_EW_MAX_INPUTS - len(xs)), *rest, **kwargs)


def _ew_sum_plan(tensors, divisor, act):
    """One launch of ``_ew_sum_kernel`` over tensors = (out, 2..4 inputs): (grid, arguments after the
    pointers, keyword arguments); unused pointer slots repeat the first input."""
    o, xs = _ew_sum_check(list(tensors[1:]), tensors[0])
    tiles = _ew_tiles(o)
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    group = xs + [xs[0]] * (_EW_MAX_INPUTS - len(xs))
    strides = [s for t in [o] + group for s in t.stride()[:3]]
    return grid, (rows, *o.shape[1:], *strides), dict(NUM_INPUTS=len(xs), DIVISOR=divisor, ACT=act, **blocks)


def _ew_sum_chained(inputs, out, divisor, act):
    """``_ew_sum`` of more than 4 inputs: partial sums of 4 (then 3 more each) in an fp32 buffer."""
    o, xs = _ew_sum_check(inputs, out)
    tiles = _ew_tiles(o)
    if tiles is None:
        return
    rows, grid, blocks = tiles

    def launch(dst, group, div, act_):
        used = len(group)
        group = group + [group[0]] * (_EW_MAX_INPUTS - used)   # unused pointer slots
        strides = [s for t in [dst] + group for s in t.stride()[:3]]
        _ew_sum_kernel[grid](dst, *group, rows, *o.shape[1:], *strides,
                             NUM_INPUTS=used, DIVISOR=div, ACT=act_, **blocks)

    acc = torch.empty(o.shape, dtype=torch.float32, device=o.device)
    launch(acc, xs[:_EW_MAX_INPUTS], 1, ACT_NONE)
    rest = xs[_EW_MAX_INPUTS:]
    while rest:
        group, rest = rest[:_EW_MAX_INPUTS - 1], rest[_EW_MAX_INPUTS - 1:]
        if rest:
            launch(acc, [acc] + group, 1, ACT_NONE)
        else:
            launch(o, [acc] + group, divisor, act)


def add(inputs, out, *, act=ACT_NONE):
    """out = act(inputs[0] + inputs[1] + ...): 2+ same-shape NHWC (or (N, F)) tensors; out may be
    one of the inputs."""
    _ew_sum(list(inputs), out, 1, act)


def mean(inputs, out):
    """out = (inputs[0] + inputs[1] + ...) / len(inputs), elementwise (FractalNet's join)."""
    inputs = list(inputs)
    _ew_sum(inputs, out, len(inputs), ACT_NONE)


def _ew_affine(x, out, scale, shift, act):
    plan = _host_plan(_ew_affine_plan, (x, out, scale, shift), (act,))
    _ew_launch(_ew_channel_affine_kernel, plan, x, out, scale, shift)


def _ew_affine_plan(tensors, act):
    x, out, scale, shift = tensors
    xv, ov = _ew_nhwc(x, "x"), _ew_nhwc(out, "out", any_channel_stride=True)
    if xv.shape[:3] != ov.shape[:3] or xv.shape[3] > ov.shape[3]:
        raise ValueError(f"x has shape {tuple(x.shape)}, out has {tuple(out.shape)}")
    n, h, w, c_in = xv.shape
    _ew_vector(scale, c_in, "scale")
    _ew_vector(shift, c_in, "shift")
    tiles = _ew_tiles(ov)  # over out's channels: the padding ones too
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    return (grid, (rows, h, w, c_in, ov.shape[3], *xv.stride()[:3], *ov.stride()[:3]),
            dict(HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, ACT=act, so_c=ov.stride(3), **blocks))


def scale_shift(x, out, *, scale=None, shift=None, act=ACT_NONE):
    """out = act(x * scale + shift) with per-channel (last axis) vectors scale, shift (either may
    be None): inference batch norm, or a standalone activation when both are None. out may be x."""
    _ew_affine(x, out, scale, shift, act)


def copy_channels(x, out):
    """out[...] = x, where out is typically a channel slice of a concat buffer (same N, H, W, C), or
    every g-th channel of one (a concat input's slot in the channel shuffle after it)."""
    if tuple(x.shape) != tuple(out.shape):
        raise ValueError(f"copy_channels: x has shape {tuple(x.shape)}, out has {tuple(out.shape)}")
    _ew_affine(x, out, None, None, ACT_NONE)


def pad_channels(x, out):
    """out[..., :C] = x, out[..., C:] = 0 (zero channels appended: ResNet's option-A shortcut)."""
    _ew_affine(x, out, None, None, ACT_NONE)


def _ew_broadcast_view(t, shape, what):
    """t (NHWC, or (N, F) as (N, 1, 1, F)) expanded to `shape`: stride 0 on its axes of size 1."""
    t = t[:, None, None, :] if t.dim() == 2 else t
    try:
        return t.expand(shape)
    except RuntimeError:
        raise ValueError(f"{what} of shape {tuple(t.shape)} does not broadcast to {tuple(shape)}") from None


def mul(inputs, out, *, act=ACT_NONE):
    """out = act(inputs[0] * inputs[1] * ...), broadcasting axes of size 1 (the squeeze-and-excitation
    scale: an (N, H, W, C) map times an (N, 1, 1, C) gate); products in input order, in fp32 for a
    pair (more inputs: partial products are rounded to out's dtype between launches)."""
    inputs = list(inputs)
    plan = _host_plan(_ew_mul_plan, (out, *inputs), (act,))
    if plan:
        grid, steps = plan
        o = _ew_4d(out)
        acc = _ew_broadcast_view(inputs[0], o.shape, "inputs[0]")
        for x, (rest, kwargs) in zip(inputs[1:], steps):
            _ew_mul_kernel[grid](o, acc, _ew_broadcast_view(x, o.shape, ""), *rest, **kwargs)
            acc = o


def _ew_mul_plan(tensors, act):
    """grid and, per launch (one per input after the first), the arguments after the pointers."""
    out, inputs = tensors[0], tensors[1:]
    if len(inputs) < 2:
        raise ValueError(f"mul needs at least 2 inputs, got {len(inputs)}")
    o = _ew_nhwc(out, "out")
    tiles = _ew_tiles(o)
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    acc = _ew_broadcast_view(inputs[0], o.shape, "inputs[0]")
    steps = []
    for i, x in enumerate(inputs[1:], 1):
        b = _ew_broadcast_view(x, o.shape, f"inputs[{i}]")
        last = i == len(inputs) - 1
        steps.append(((rows, *o.shape[1:], *o.stride()[:3], *acc.stride(), *b.stride()),
                      dict(ACT=act if last else ACT_NONE, **blocks)))
        acc = o
    return grid, steps


def channel_shuffle(x, out, groups):
    """out = x with its channels shuffled (ShuffleNet): channel g*(C/groups) + i of x becomes channel
    i*groups + g of out. NHWC tensors of one shape (views allowed); out must not alias x."""
    _ew_launch(_ew_channel_shuffle_kernel, _host_plan(_ew_shuffle_plan, (x, out), (groups,)), x, out)


def _ew_shuffle_plan(tensors, groups):
    xv, ov = _ew_pair(*tensors, "channel_shuffle: ")
    n, h, w, c = ov.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    tiles = _ew_tiles(ov)
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    return grid, (rows, h, w, c, c // groups, *xv.stride()[:3], *ov.stride()[:3]), dict(GROUPS=groups, **blocks)


def upsample_nearest(x, out, scale):
    """out = x upsampled by whole factors scale = (sh, sw), nearest neighbour: out[n, h, w, c] =
    x[n, h // sh, w // sw, c] (PyTorch's Upsample(scale_factor=s, mode="nearest")). out may be a
    channel slice of a concat buffer."""
    _ew_launch(_ew_upsample_kernel, _host_plan(_ew_upsample_plan, (x, out), tuple(scale)), x, out)


def _ew_upsample_plan(tensors, sh, sw):
    x, out = tensors
    xv, ov = _ew_nhwc(x, "x"), _ew_nhwc(out, "out")
    if min(sh, sw) < 1 or int(sh) != sh or int(sw) != sw:
        raise ValueError(f"upsample_nearest: scale must be whole factors of at least 1, got {(sh, sw)}")
    n, h, w, c = xv.shape
    if tuple(ov.shape) != (n, h * sh, w * sw, c) or x.dtype != out.dtype:
        raise ValueError(f"upsample_nearest by {(sh, sw)}: x is {tuple(x.shape)} {x.dtype}, so out must be "
                         f"{(n, h * sh, w * sw, c)} {x.dtype}, got {tuple(out.shape)} {out.dtype}")
    tiles = _ew_tiles(ov)
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    return grid, (rows, *ov.shape[1:], *xv.stride()[:3], *ov.stride()[:3]), dict(SCALE_H=sh, SCALE_W=sw, **blocks)
