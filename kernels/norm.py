"""Normalizations across the channel axis: local response normalization (AlexNet, GoogLeNet),
softmax (classifier heads) and layer norm (ConvNeXt).

Layout: x and out are NHWC (N, H, W, C) with unit channel stride, or flat (N, F) vectors (treated
as (N, 1, 1, F)); either may be a view (a channel slice of a wider buffer), read and written
through its strides. Each op normalizes each row r = (n, h, w) over its C channels.

Blocking: a program owns BLOCK_R rows. LRN tiles channels too (its window is local: the
neighbouring channels are re-read from cache, shifted); softmax and layer norm sweep each row's channels in
BLOCK_C chunks (one chunk when C <= BLOCK_C). Arithmetic is fp32; the result is rounded once, to
out's dtype, on the store.

Each launcher checks its arguments and chooses tiles and grid once per distinct (shapes, strides,
dtypes, devices of its tensors, other arguments) -- once per call site and batch size in a generated
program -- and keeps that launch plan (host.py's ``_host_plan``); later calls only launch.

Uses elementwise.py's `_ew_row_offsets` in its kernels and its host helpers (`_ew_pair`, `_ew_vector`,
`_ew_tiles`, `_ew_launch`) in its launchers (generated programs hold every template in one module,
elementwise.py before norm.py; the tests load the two together).
"""

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _norm_lrn_kernel(
    x_ptr, out_ptr,
    R, H, W, C,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    alpha_over_size, beta, k,
    SIZE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[r, c] = x[r, c] / (k + alpha/SIZE * sum_{c'} x[r, c']^2) ** beta, the sum over
    c' in [c - SIZE//2, c + (SIZE-1)//2] with channels outside [0, C) counting as zero
    (PyTorch's LocalResponseNorm).

    x, out: (N, H, W, C), unit channel stride, row strides per tensor (R = N*H*W rows). Grid:
    (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C)). The window is gathered with SIZE shifted, masked loads
    of the tile (neighbouring channels come from cache).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- the tile: BLOCK_R rows x BLOCK_C channels
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r_mask = r < R
    x_rows = x_ptr + _ew_row_offsets(r, H, W, sx_n, sx_h, sx_w)[:, None]

    # -- sum of squares over the channel window (zero outside [0, C))
    sq = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    for j in tl.static_range(SIZE):
        cj = c + (j - SIZE // 2)
        mask = r_mask[:, None] & ((cj >= 0) & (cj < C))[None, :]
        v = tl.load(x_rows + cj[None, :], mask=mask, other=0.0).to(tl.float32)
        sq += v * v

    # -- x / (k + alpha/size * sum) ** beta, the power as exp2(beta * log2(.))
    mask = r_mask[:, None] & (c < C)[None, :]
    x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
    d = k + alpha_over_size * sq
    y = x / tl.exp2(beta * tl.log2(d))
    o_rows = out_ptr + _ew_row_offsets(r, H, W, so_n, so_h, so_w)[:, None]
    tl.store(o_rows + c[None, :], _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _norm_softmax_kernel(
    x_ptr, out_ptr,
    R, H, W,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[r, :] = softmax(x[r, :]) over the C channels of each row r = (n, h, w).

    x, out: (N, H, W, C), unit channel stride, row strides per tensor (R = N*H*W rows). Grid:
    (cdiv(R, BLOCK_R),). Two sweeps over each row in BLOCK_C chunks: the first keeps a running
    maximum m and a running sum l of exp(x - m) (rescaled whenever m grows: online softmax), the
    second writes exp(x - m) / l. With C <= BLOCK_C each sweep is a single chunk. C is a
    constexpr: Triton 3.6's interpreter cannot loop up to a bound passed at run time.
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    # -- BLOCK_R rows; running max and normalizer per row
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = r < R
    x_rows = x_ptr + _ew_row_offsets(r, H, W, sx_n, sx_h, sx_w)[:, None]
    o_rows = out_ptr + _ew_row_offsets(r, H, W, so_n, so_h, so_w)[:, None]
    m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_R,), tl.float32)

    # -- sweep 1: online max and sum of exponentials. Channels past C read as -inf (they add
    #    exp(-inf) = 0); rows past R read as 0, so that no row's maximum is -inf.
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = (c < C)[None, :]
        x = tl.load(x_rows + c[None, :], mask=r_mask[:, None] & c_ok, other=0.0).to(tl.float32)
        x = tl.where(c_ok, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), axis=1)
        m = m_new

    # -- sweep 2: normalize and store
    inv_l = 1.0 / l
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = r_mask[:, None] & (c < C)[None, :]
        x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
        y = tl.exp(x - m[:, None]) * inv_l[:, None]
        tl.store(o_rows + c[None, :], _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _norm_layer_norm_kernel(
    x_ptr, out_ptr, w_ptr, b_ptr,
    R, H, W,
    sx_n, sx_h, sx_w,
    so_n, so_h, so_w,
    eps,
    C: tl.constexpr, HAS_AFFINE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    INTERPRETED: tl.constexpr = False,  # CPU tensors: round bf16 stores as a GPU does (common.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b over the C channels of each row
    r = (n, h, w): layer norm of each position's vector (LayerNorm2d; nn.LayerNorm on the last axis).

    x, out: (N, H, W, C), unit channel stride, row strides per tensor (R = N*H*W rows); w, b
    contiguous (C,) (ignored unless HAS_AFFINE). Grid: (cdiv(R, BLOCK_R),). Three sweeps in BLOCK_C
    chunks (one when C <= BLOCK_C; the later ones re-read from cache): the mean, then the biased
    variance as the mean of (x - mean)^2 (no E[x^2] - mean^2 cancellation), then the result.
    C is a constexpr (the interpreter loops only to a compile-time bound, as in softmax)."""
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = r < R
    x_rows = x_ptr + _ew_row_offsets(r, H, W, sx_n, sx_h, sx_w)[:, None]
    o_rows = out_ptr + _ew_row_offsets(r, H, W, so_n, so_h, so_w)[:, None]

    # -- sweep 1: the mean
    total = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        x = tl.load(x_rows + c[None, :], mask=r_mask[:, None] & (c < C)[None, :], other=0.0).to(tl.float32)
        total += tl.sum(x, axis=1)
    mean = total / C

    # -- sweep 2: the variance (biased, as PyTorch's layer norm)
    sq = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = r_mask[:, None] & (c < C)[None, :]
        x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean[:, None], 0.0)
        sq += tl.sum(d * d, axis=1)
    rstd = 1.0 / tl.sqrt_rn(sq / C + eps)  # sqrt_rn: the correctly rounded root (tl.sqrt is approximate)

    # -- sweep 3: normalize, scale and shift, store
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C
        mask = r_mask[:, None] & c_ok[None, :]
        x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
        y = (x - mean[:, None]) * rstd[:, None]
        if HAS_AFFINE:
            y = y * tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            y = y + tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(o_rows + c[None, :], _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


# --------------------------------------------------------------------------------------------
# Host functions
# --------------------------------------------------------------------------------------------


def lrn(x, out, *, size, alpha, beta, k):
    """out = local_response_norm(x, size, alpha, beta, k) across channels (PyTorch semantics:
    alpha is divided by size; the window is zero-padded, size//2 before and (size-1)//2 after)."""
    _ew_launch(_norm_lrn_kernel, _host_plan(_norm_lrn_plan, (x, out), (size, alpha, beta, k)), x, out)


def _norm_lrn_plan(tensors, size, alpha, beta, k):
    xv, ov = _ew_pair(*tensors)
    tiles = _ew_tiles(xv, widest=64)
    if tiles is None:
        return ()
    rows, grid, blocks = tiles
    rest = (rows, *xv.shape[1:], *xv.stride()[:3], *ov.stride()[:3], float(alpha) / int(size), float(beta), float(k))
    return grid, rest, dict(SIZE=int(size), **blocks)


def softmax(x, out):
    """out = softmax(x) over the channel (last) axis: x (N, F) or NHWC (N, H, W, C)."""
    _ew_launch(_norm_softmax_kernel, _host_plan(_norm_softmax_plan, (x, out), ()), x, out)


def _norm_softmax_plan(tensors):
    xv, ov = _ew_pair(*tensors)
    rows, tile = _norm_row_tiles(xv)
    if not rows:
        return ()
    return tile[0], (rows, *xv.shape[1:3], *xv.stride()[:3], *ov.stride()[:3]), tile[1]


def _norm_row_tiles(xv):
    """(rows, (grid, constexprs)) of a row kernel over xv's positions, each program some rows of all
    C channels in blocks of at most 1024 (softmax, layer norm); rows 0 when there is nothing to do."""
    tiles = _ew_tiles(xv, widest=1024)
    if tiles is None:
        return 0, None
    rows, grid, blocks = tiles
    return rows, (grid[:1], dict(C=xv.shape[3], **blocks))  # programs over rows only


def layer_norm(x, out, *, weight=None, bias=None, eps=1e-5):
    """out = layer_norm(x) over the channel (last) axis of each position: x (N, F) or NHWC
    (N, H, W, C); weight and bias contiguous (C,) vectors, both or neither. out may be x."""
    plan = _host_plan(_norm_layer_norm_plan, (x, out, weight, bias), (eps,))
    _ew_launch(_norm_layer_norm_kernel, plan, x, out, weight, bias)


def _norm_layer_norm_plan(tensors, eps):
    x, out, weight, bias = tensors
    xv, ov = _ew_pair(x, out)
    n, h, w, c = xv.shape
    if (weight is None) != (bias is None):
        raise ValueError("layer_norm: give both weight and bias, or neither")
    _ew_vector(weight, c, "layer_norm: weight")
    _ew_vector(bias, c, "layer_norm: bias")
    rows, tile = _norm_row_tiles(xv)
    if not rows:
        return ()
    return (tile[0], (rows, h, w, *xv.stride()[:3], *ov.stride()[:3], float(eps)),
            dict(tile[1], HAS_AFFINE=weight is not None))
