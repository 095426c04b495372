"""
Convolution and fully connected layers as one GEMM with a fused epilogue
=========================================================================

This template holds every multiply-accumulate of a CNN: 2-D convolutions of any
geometry and fully connected layers.  The code generator copies it verbatim into the
program it emits, so it imports nothing but torch, triton and triton.language.

Convolution is a matrix multiplication in disguise
--------------------------------------------------
For an input ``x`` of shape (N, H, W, C), a weight of K filters of size R x S over
Cg = C / groups channels, and an output of shape (N, P, Q, K), each group ``g`` computes

    out[m, k] = sum over red = (r, s, c) of  A[m, red] * B[red, k]

    m   = (n, p, q)   one output pixel        M   = N * P * Q rows
    k                 one output channel      Kg  = K / groups columns
    red = (r, s, c)   one filter tap, channel RED = R * S * Cg reduction length

    A[m, (r, s, c)] = x[n, p * stride_h - pad_top + r * dil_h,
                          q * stride_w - pad_left + s * dil_w, g * Cg + c]   (0 in the halo)
    B[(r, s, c), k] = w[g * Kg + k, c, r, s]

``A`` is the im2col matrix, but it is never materialised: the kernel computes, for the
block of rows and reduction indices it is about to multiply, where those elements live
in ``x`` and loads them straight from the activation ("implicit GEMM").  Elements that
fall into the padding halo are masked loads that read 0.

Layouts
-------
* Activations are NHWC: channels are contiguous, so a block of reduction indices that
  walks along ``c`` is one coalesced, vectorisable load per output pixel.  Any other
  stride is free, which lets a kernel read a channel slice of a wider buffer and write
  its output into a channel slice of one (a concatenation costs nothing).
* Weights are packed once, at load time, by ``pack_conv_weight`` into the 2-D matrix
  ``B`` for all groups side by side: shape (R * S * Cg, K), row ``(r * S + s) * Cg + c``,
  column ``k``; i.e. [R, S, Cg, K] contiguous.  Output channels are contiguous, so a
  block of B is coalesced along its N dimension, and group ``g`` reads columns
  ``g * Kg ... g * Kg + Kg - 1``.  A fully connected weight (O, F) packs to its
  transpose (F, O): exactly the packing of a 1 x 1 convolution.

Three paths
-----------
1. ``_conv_gemm_kernel`` -- 1 x 1, stride 1, unpadded, ungrouped convolutions and fully
   connected layers.  ``x`` viewed as an (N*H*W, C) matrix *is* ``A``, so this is the
   plain tiled matmul of Triton's tutorial (with its grouped, L2-friendly tile order),
   plus the epilogue.
2. ``_conv_implicit_gemm_kernel`` -- everything else.  Two ways to walk the reduction,
   chosen at compile time (``FLAT``):
   * tap-major (``FLAT=False``, when Cg is a multiple of 16): one loop iteration is one
     filter tap (r, s) and BLOCK_K consecutive channels.  The halo test and the
     spatial address are computed once per row for the whole block.
   * flat (``FLAT=True``, small Cg: the 7 x 7 stem with C = 3, ResNeXt's 4 channels per
     group): the reduction index ``(r, s, c)`` is flattened and BLOCK_K consecutive
     values of it are decomposed into (r, s, c) per column, so one block covers several
     taps.  Padding C = 3 up to BLOCK_K per tap would waste 13/16 of every block; the
     flat walk wastes only the tail of the last block.
   Groups are the second grid axis; each program computes one (BLOCK_M, BLOCK_N) tile of
   one group.
3. ``_conv_depthwise_kernel`` -- groups == C == K (one input and one output channel
   per group).  As a GEMM this has Kg = 1 column and RED = R * S, far too narrow for
   ``tl.dot``, so it is a direct convolution: a (pixels x channels) tile accumulates
   ``x_tap * w_tap`` over the R * S taps with fp32 FMAs.

The epilogue
------------
All three paths end the same way (``_conv_epilogue``, then ``_conv_store``).  While the
accumulator is still fp32 in registers:

    y = acc * scale[k] + bias[k]       # conv bias, or BN folded into a scale and shift
    y = y + residual[m, k]             # the residual add of a ResNet block, or ...
    y = act(y)                         # none, relu, tanh or sigmoid
    y = y + residual[m, k]             # ... after the activation (residual_after_act=True)
    y = y * out_scale                  # only when out_scale != 1 (a constexpr switch)
    out[m, k] = y cast to out.dtype    # one rounding, into a (possibly channel-sliced) view

The residual goes in exactly one of its two places.  After the activation and with
out_scale = 0.5 it is a fused two-way mean join, (act(conv) + r) / 2.

The prologue
------------
A batch norm + activation that *precedes* the convolution (pre-activation blocks) is applied
to each block of ``A`` as it is loaded, before it enters ``tl.dot``:

    x' = in_act(x * in_scale[c] + in_shift[c])    # fp32, rounded back to x.dtype

so the normalised tensor never goes through memory, and the dot operands keep x's dtype
(fp16 / bf16 still use the tensor cores; the rounding is the one the unfused program's
store would do).  ``c`` is the global input channel.  Elements in the padding halo and
masked tails stay exactly 0 rather than becoming in_act(in_shift[c]): the reference pads
the *normalised* tensor with zeros.

Before that, a squeeze-and-excitation gate (``in_gate``, one value per sample and input
channel) may scale each loaded element, so the conv after an SE block reads the expanded map
itself instead of a stored product:

    x' = x * gate[n, c]                            # fp32, rounded back to x.dtype

The rounding is the one the separate mul kernel's store would do, so in fp16 / bf16 the GEMM
sees bit for bit the operands of the unfused program (a GPU's cast rounds to nearest even;
under the interpreter ``_common_round_to_bf16`` does it: common.py).  ``n`` is the row's sample: ``m //
(H*W)`` on the GEMM path, the output pixel's image on the others.  The halo stays 0 (0 * gate).

Several outputs
---------------
Sibling 1 x 1 convolutions of one input (the branches of an Inception block) run as one
wide GEMM over their concatenated weights: ``out`` is then a tuple of up to 4 NHWC tensors,
destination ``i`` receives output channels [off_i, off_i + K_i) in order, each with its own
activation (``act`` = a tuple of codes), e.g. one branch straight into its concat's channel
slice and another into its own buffer.  The gemm path only; unused destinations are
disabled at compile time (``NUM_OUT``).

Split-K
-------
A launch with too few output tiles to fill the GPU (ResNet-50's layer4 at batch 1: 4 tiles for
132 SMs, each reducing over K = 4608) splits its reduction into S slices of whole BLOCK_K
blocks: ``_conv_gemm_splitk_kernel`` / ``_conv_implicit_splitk_kernel`` (the same main loops,
``_conv_gemm_mainloop`` / ``_conv_implicit_mainloop``, over a sub-range; the prologue applies
while loading as usual) each write one (tile, slice) partial product in fp32 into a workspace
(S, M, K); ``_conv_splitk_reduce_kernel`` sums the S partials in a fixed order (no atomics:
the same bits every run) and applies the whole epilogue above to the fp32 sum, through the
same ``_conv_epilogue_store``.  ``conv_split_k`` is the automatic choice of S.

TMA descriptors and a persistent grid (Hopper)
----------------------------------------------
``conv2d(tma=True)`` runs the gemm path's single-pass product as ``_conv_gemm_tma_kernel``
instead: A (x's rows) and B (the packed weight) are read through TMA tensor descriptors --
one asynchronous copy per block into shared memory, no per-element address or mask arithmetic,
the zero padding past the edges done by the copy engine -- and one program per SM loops over
the output tiles, so the next tile's loads overlap this one's epilogue.  It sums the same
blocks in the same order as ``_conv_gemm_kernel``: the same result, bit for bit.  A preference,
not a demand: where it does not fit (several destinations, a split, a prologue, gate or layer
norm, rows not 16-byte multiples apart, a base address not 16-byte aligned, a GPU without
TMA) the plain kernel runs.  Off by default: the tuner offers it beside the plain kernel with
the same tiles, and only a GPU's timing can say which is faster.

Layer norm folded into the GEMM
-------------------------------
A layer norm over the channels of each pixel followed by a 1 x 1 conv (ConvNeXt's block: norm,
then its first per-position linear) is one GEMM over the *raw* x (``in_ln``, gemm path only):

    LN(x)[m, k] = (x[m, k] - mean[m]) * rstd[m] * gamma[k] + beta[k], so
    sum_k W[o, k] LN(x)[m, k] = rstd[m] * (sum_k W'[o, k] x[m, k] - mean[m] * c[o]) + d[o]

with W' = W * gamma (per input channel, packed and rounded to x's dtype at load),
c[o] = sum_k W'[o, k] over the *rounded* W' (so the mean's share of the accumulator cancels
exactly), and d[o] = sum_k W[o, k] beta[k] added to the bias (``fold_layer_norm``).  While the
K loop streams x's blocks into ``tl.dot`` it also sums each row's x and x^2 in fp32 from the very
blocks it loaded (no second pass over x); after the loop mean = s1 / K, var = max(s2 / K -
mean^2, 0), rstd = 1 / sqrt(var + eps), and ``_conv_ln_correct`` turns the fp32 accumulator into
rstd * (acc - mean * c) before the epilogue (bias, activation, residual) as usual.  Every program
needs all K channels of its rows, so such a launch is never split (``conv_default_split_k``).
Each N-tile's program recomputes its rows' statistics from the blocks it loads anyway.

Numerics.  (1) E[x^2] - mean^2 cancels when |mean| >> std: its fp32 rounding error is about
K * 2^-24 * (mean^2 + var) in the worst case (sqrt(K) typically), so var's relative error grows
like (mean / std)^2 -- 1e-4-ish at |mean| = 30 std with K = 768, and var is lost (clamped to 0,
rstd = 1 / sqrt(eps)) beyond |mean| ~ 2^12 std; acc - mean * c likewise loses about
log2(|mean| / std) bits of the result.  The standalone kernel (kernels/norm.py) subtracts the
mean first and has neither problem; ConvNeXt's depthwise outputs have |mean| of a few std at
most.  fp32 results stay within 1e-4 of float64 on such inputs.  (2) The unfused program
rounds LN(x) to the activation dtype and multiplies it by W rounded; the fused one multiplies
x (already in that dtype, exact) by W * gamma rounded once.  In bf16 each product of either form
is within about 2^-8 (relative) of the exact product, the fused form one rounding fewer: their
outputs differ by at most about 2^-7 * sum_k |W[o, k] LN(x)[m, k]| per element (plus the final
rounding of each), about 2^-8 of the output's norm in practice since the roundings' signs vary
(fp16: 2^-10).  With one rounding fewer the fused form is usually the closer to float64 (2.2e-3
vs 3.8e-3 relative on tests/test_kernel_layernorm_gemm.py's bf16 layer, which checks these bounds).

Numerics: inputs fp32, fp16 or bf16; products accumulate in fp32.  fp32 inputs use
IEEE fp32 products by default (``allow_tf32=False``) so that results stay within 1e-4 of
a float64 reference; fp16 / bf16 use the tensor cores.  Under ``TRITON_INTERPRET=1``
(CPU tensors; constexpr ``INTERPRETED``) two gaps of the interpreter's bf16 support are
worked around without changing the numbers: blocks are widened to fp32 before ``tl.dot``
(the interpreter keeps bf16 as raw uint16 bit patterns and would multiply those; products
of bf16 values are exact in fp32), and the final fp32 -> bf16 conversion rounds to nearest
even in integer arithmetic (the interpreter's cast truncates; a GPU's rounds).

Block sizes are keyword arguments of ``conv2d`` and ``linear`` (``block_m``, ``block_n``,
``block_k``, ``num_warps``, ``num_stages``) with per-path defaults, so that an
autotuner can set them; on CPU tensors (the interpreter) the defaults are small.
"""

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
from triton.tools.tensor_descriptor import TensorDescriptor

ACT_NONE, ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_RELU6, ACT_HARDSIGMOID, ACT_HARDSWISH, ACT_SILU, ACT_GELU, ACT_GELU_TANH = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9


# --------------------------------------------------------------------------------------
# Shared device helpers
# --------------------------------------------------------------------------------------


@triton.jit
def _conv_tile_order(pid, num_pid_m, num_pid_n, SWIZZLE_M: tl.constexpr):
    """Map a linear program id to a (pid_m, pid_n) tile, SWIZZLE_M row-tiles at a time.

    Consecutive programs sweep the N tiles of SWIZZLE_M neighbouring M tiles before moving
    on, so the blocks of A and B they load are still in L2 when the next program needs them
    (the "grouped ordering" of Triton's matmul tutorial).
    """
    num_pid_in_band = SWIZZLE_M * num_pid_n
    band = pid // num_pid_in_band
    first_pid_m = band * SWIZZLE_M
    band_m = min(num_pid_m - first_pid_m, SWIZZLE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_band) % band_m)
    pid_n = (pid % num_pid_in_band) // band_m
    return pid_m, pid_n


@triton.jit
def _conv_out_pixels(pid_m, M, P, Q, BLOCK_M: tl.constexpr):
    """The output pixels of row tile pid_m: (mask_m, n, p, q), each of shape (BLOCK_M,).

    Row m = pid_m * BLOCK_M + i of the GEMM is output pixel (n, p, q) of an (N, P, Q) output,
    m = (n * P + p) * Q + q; mask_m marks the real ones (m < M = N*P*Q).
    """
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    return mask_m, n, pq // Q, pq % Q


@triton.jit
def _conv_mma(a, b, acc, INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr):
    """acc += a @ b, accumulated in fp32.

    INTERPRETED (TRITON_INTERPRET, CPU tensors): the interpreter keeps bf16 as raw uint16 bit
    patterns and its tl.dot would multiply those, so blocks are widened to fp32 first (exact:
    a product of two bf16 or fp16 values is exact in fp32).
    """
    if INTERPRETED:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _conv_activation(y, ACT: tl.constexpr):
    """act(y) on an fp32 block; ACT is one of the ACT_* codes (none, relu, tanh, sigmoid, relu6,
    hardsigmoid, hardswish, silu, gelu, gelu in its tanh form).

    NaN propagates through every activation, as in PyTorch.

    (Literals below: a kernel may read only constexpr globals, and the ACT_* codes are ints.)
    """
    if ACT == 1:  # ACT_RELU
        # not tl.maximum: on a GPU it lowers to max.f32, which turns NaN into 0; PyTorch's relu
        # propagates NaN, and so does this select (NaN < 0 is false).
        y = tl.where(y < 0.0, 0.0, y)
    elif ACT == 2:  # ACT_TANH
        # tanh(|y|) = (1 - e^{-2|y|}) / (1 + e^{-2|y|}): e^{-2|y|} <= 1 never overflows.
        t = tl.exp(-2.0 * tl.abs(y))
        th = (1.0 - t) / (1.0 + t)
        y = tl.where(y < 0.0, -th, th)
    elif ACT == 3:  # ACT_SIGMOID
        # sigmoid without overflow: with t = e^{-|y|}, 1/(1+t) for y >= 0, t/(1+t) below.
        t = tl.exp(-tl.abs(y))
        y = tl.where(y >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))
    elif ACT == 4:  # ACT_RELU6: min(max(y, 0), 6), selects so that NaN propagates
        y = tl.where(y < 0.0, 0.0, tl.where(y > 6.0, 6.0, y))
    elif ACT == 5:  # ACT_HARDSIGMOID: relu6(y + 3) / 6
        y = tl.where(y <= -3.0, 0.0, tl.where(y >= 3.0, 1.0, y / 6.0 + 0.5))
    elif ACT == 6:  # ACT_HARDSWISH: y * relu6(y + 3) / 6
        y = tl.where(y <= -3.0, 0.0, tl.where(y >= 3.0, y, y * (y + 3.0) / 6.0))
    elif ACT == 7:  # ACT_SILU: y * sigmoid(y), the sigmoid as above (no overflow)
        t = tl.exp(-tl.abs(y))
        y = y * tl.where(y >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))
    elif ACT == 8:  # ACT_GELU: y/2 * (1 + erf(y / sqrt(2))), PyTorch's exact form
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 9:  # ACT_GELU_TANH: y/2 * (1 + tanh(u)) = y * sigmoid(2u), u = sqrt(2/pi)(y + 0.044715 y^3)
        u2 = 1.5957691216057308 * (y + 0.044715 * y * y * y)
        t = tl.exp(-tl.abs(u2))
        y = y * tl.where(u2 >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))
    return y


@triton.jit
def _conv_gate(a, mask, gate_rows, chans, gate_ptr, stride_gc, INTERPRETED: tl.constexpr):
    """a * gate[n, chans] on a block of x as loaded (squeeze-and-excitation's scale), rounded to x's dtype.

    a:         (BLOCK_M, BLOCK_K) block of x, in x's dtype; mask: its load mask (broadcastable)
    gate_rows: (BLOCK_M,) element offset of each row's sample n in the gate (n * its batch stride)
    chans:     (BLOCK_K,) global input channel of each column (times stride_gc in the gate)
    The product is computed in fp32 and rounded to x's dtype, as the unfused program's mul kernel
    stores it, so the GEMM sees the very operands it would have read.  Masked elements (the
    padding halo, tails) load 0 and a gate of 0: they stay 0, as in the padded product.
    """
    s = tl.load(gate_ptr + gate_rows[:, None] + (chans * stride_gc)[None, :], mask=mask, other=0.0)
    y = a.to(tl.float32) * s.to(tl.float32)
    return _common_cast(y, a.dtype, INTERPRETED)


@triton.jit
def _conv_prologue(a, mask, chans, chan_mask, in_scale_ptr, in_shift_ptr,
                   HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
                   INTERPRETED: tl.constexpr):
    """in_act(a * in_scale[chans] + in_shift[chans]) on a block of x as loaded; 0 outside mask.

    a:         (BLOCK_M, BLOCK_K) block of x, in x's dtype
    mask:      its load mask (broadcastable to a): rows past M, the padding halo, tails
    chans:     (BLOCK_K,) global input channel of each column; chan_mask: the real ones
    Computed in fp32 and rounded back to x's dtype, like the unfused program's store, so the
    dot operands keep their dtype.  Masked elements become exactly 0, not in_act(in_shift):
    the unfused program pads the normalised tensor with zeros.
    """
    y = a.to(tl.float32)
    if HAS_IN_SCALE:
        y = y * tl.load(in_scale_ptr + chans, mask=chan_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_IN_SHIFT:
        y = y + tl.load(in_shift_ptr + chans, mask=chan_mask, other=0.0).to(tl.float32)[None, :]
    y = _conv_activation(y, IN_ACT)
    y = tl.where(mask, y, 0.0)
    return _common_cast(y, a.dtype, INTERPRETED)


@triton.jit
def _conv_epilogue(acc, res_rows, cols, mask_m, mask_n, res_ptr, scale_ptr, bias_ptr, out_scale,
                   HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                   ACT: tl.constexpr, RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr):
    """The epilogue on the fp32 accumulator; returns the fp32 block to store.

    acc:       (BLOCK_M, BLOCK_N) fp32 block of conv(x, w) / x @ W^T
    res_rows:  (BLOCK_M,) element offset of each row in residual (ignored unless HAS_RES)
    cols:      (BLOCK_N,) output channel of each column (global over groups and over several
               destinations): indexes scale, bias and residual (channel stride 1)
    y = acc * scale + bias, then the residual before act, or after it when RES_AFTER_ACT,
    then y * out_scale when HAS_OUT_SCALE.
    """
    y = acc
    if HAS_SCALE:
        scale = tl.load(scale_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)
        y = y * scale[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)
        y = y + bias[None, :]
    if HAS_RES:
        res = tl.load(res_ptr + res_rows[:, None] + cols[None, :],
                      mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        if RES_AFTER_ACT:
            y = _conv_activation(y, ACT) + res
        else:
            y = _conv_activation(y + res, ACT)
    else:
        y = _conv_activation(y, ACT)
    if HAS_OUT_SCALE:
        y = y * out_scale
    return y


@triton.jit
def _conv_store(y, out_ptr, out_rows, out_cols, mask, INTERPRETED: tl.constexpr):
    """out[out_rows, out_cols] = y (fp32) cast to out's dtype, masked; channels have stride 1."""
    tl.store(out_ptr + out_rows[:, None] + out_cols[None, :], _common_cast(y, out_ptr.dtype.element_ty, INTERPRETED),
             mask=mask)


@triton.jit
def _conv_epilogue_store(acc, out_rows, res_rows, cols, mask_m, mask_n,
                    out_ptr, res_ptr, scale_ptr, bias_ptr,
                    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                    ACT: tl.constexpr, INTERPRETED: tl.constexpr,
                    out_scale, RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr, stride_oc):
    """Apply the epilogue to the fp32 accumulator and store it (one destination).

    acc:       (BLOCK_M, BLOCK_N) fp32 block of conv(x, w) / x @ W^T
    out_rows:  (BLOCK_M,) element offset of each output row (pixel) in out
    res_rows:  (BLOCK_M,) element offset of each row in residual (ignored unless HAS_RES)
    cols:      (BLOCK_N,) output channel of each column (global over groups);
               channels are contiguous (stride 1) in residual, stride_oc apart in out (1, or
               the groups of a channel shuffle the output is written through: codegen/plan.py)
    Stores ``_conv_epilogue(acc)`` cast to out's dtype, masked to mask_m x mask_n.
    """
    y = _conv_epilogue(acc, res_rows, cols, mask_m, mask_n, res_ptr, scale_ptr, bias_ptr, out_scale,
                       HAS_SCALE, HAS_BIAS, HAS_RES, ACT, RES_AFTER_ACT, HAS_OUT_SCALE)
    _conv_store(y, out_ptr, out_rows, cols * stride_oc, mask_m[:, None] & mask_n[None, :], INTERPRETED)


@triton.jit
def _conv_store_split(acc, rows_m, cols, mask_m, lo, hi, out_ptr, stride_om, scale_ptr, bias_ptr, out_scale,
                      HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                      HAS_OUT_SCALE: tl.constexpr, INTERPRETED: tl.constexpr):
    """Columns lo <= cols < hi of the tile, through the epilogue, into channels 0 .. hi-lo-1 of out.

    One destination of several (no residual): rows_m (BLOCK_M,) int64 row indices, out an
    (M, hi - lo) matrix with row stride stride_om; scale and bias are indexed by cols.
    """
    mask_n = (cols >= lo) & (cols < hi)
    y = _conv_epilogue(acc, rows_m, cols, mask_m, mask_n, out_ptr, scale_ptr, bias_ptr, out_scale,
                       HAS_SCALE, HAS_BIAS, False, ACT, False, HAS_OUT_SCALE)
    _conv_store(y, out_ptr, rows_m * stride_om, cols - lo, mask_m[:, None] & mask_n[None, :], INTERPRETED)


# --------------------------------------------------------------------------------------
# Path 1: plain GEMM (1x1 stride-1 convolutions, fully connected layers)
# --------------------------------------------------------------------------------------


@triton.jit
def _conv_gemm_mainloop(a_ptr, b_ptr, rows_m, mask_m, offs_n, mask_n, it_lo, it_hi, K: tl.constexpr,
                        stride_am, stride_bk, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows, stride_gc,
                        HAS_GATE: tl.constexpr, HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr,
                        HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                        INTERPRETED: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, N_ITERS: tl.constexpr,
                        HAS_LN: tl.constexpr):
    """(acc, s1, s2): acc the fp32 sum over reduction blocks it_lo .. it_hi - 1 (BLOCK_K columns of
    A / rows of B each, the tail masked at K) of prologue(A block) @ B block, for rows rows_m and
    columns offs_n.  With HAS_GATE the block is first scaled by the gate (``_conv_gate``; gate_rows:
    each row's sample offset in it), then goes through the batch-norm prologue (HAS_PRE).
    With HAS_LN, s1 and s2 are each row's fp32 sum of A and of A^2 over the same blocks, taken
    from the blocks as loaded (the layer norm folded into the GEMM: ``_conv_ln_correct``);
    otherwise they stay 0 (and compile away).

    (0, cdiv(K, BLOCK_K)) is the whole product (``_conv_gemm_kernel``); a sub-range one split-K
    slice (``_conv_gemm_splitk_kernel``).  Blocks are added in increasing order.  The loop runs
    the constexpr N_ITERS >= it_hi - it_lo times, blocks past it_hi masked off: Triton 3.6's
    interpreter cannot loop up to a bound known only at run time.
    """
    offs_k = tl.arange(0, BLOCK_K)
    k_lo = it_lo * BLOCK_K
    a_ptrs = a_ptr + rows_m[:, None] * stride_am + (k_lo + offs_k)[None, :]
    b_ptrs = b_ptr + (k_lo + offs_k)[:, None] * stride_bk + offs_n[None, :]

    # masked loads of the K tail, [prologue,] dot into the fp32 accumulator
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    s1 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for i in range(0, N_ITERS):
        k0 = k_lo + i * BLOCK_K
        mask_k = ((k0 + offs_k) < K) & ((k0 + offs_k) < it_hi * BLOCK_K)
        a_mask = mask_m[:, None] & mask_k[None, :]
        a = tl.load(a_ptrs, mask=a_mask, other=0.0)
        if HAS_LN:  # the layer norm's row statistics, from the raw block (masked elements load 0)
            af = a.to(tl.float32)
            s1 += tl.sum(af, axis=1)
            s2 += tl.sum(af * af, axis=1)
        if HAS_GATE:
            a = _conv_gate(a, a_mask, gate_rows, k0 + offs_k, gate_ptr, stride_gc, INTERPRETED)
        if HAS_PRE:
            a = _conv_prologue(a, a_mask, k0 + offs_k, mask_k, in_scale_ptr, in_shift_ptr,
                               HAS_IN_SCALE, HAS_IN_SHIFT, IN_ACT, INTERPRETED)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = _conv_mma(a, b, acc, INPUT_PRECISION, INTERPRETED)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    return acc, s1, s2


@triton.jit
def _conv_ln_correct(acc, s1, s2, ln_c_ptr, offs_n, mask_n, ln_eps, K: tl.constexpr):
    """rstd[m] * (acc - mean[m] * c[n]): the GEMM of the raw rows turned into the GEMM of their
    layer norm (affine folded into the weights; see "Layer norm folded into the GEMM" above).

    s1, s2: (BLOCK_M,) fp32 sums of each row's K values and of their squares (the whole row:
    never a split-K slice); c: (N,) column sums of the packed weight as the kernel reads it.
    """
    mean = s1 / K
    var = tl.maximum(s2 / K - mean * mean, 0.0)  # E[x^2] - mean^2 can round below 0
    rstd = 1.0 / tl.sqrt_rn(var + ln_eps)  # sqrt_rn: correctly rounded (tl.sqrt is approximate)
    c = tl.load(ln_c_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    return (acc - mean[:, None] * c[None, :]) * rstd[:, None]


@triton.jit
def _conv_gemm_kernel(
    a_ptr, b_ptr, out_ptr, res_ptr, scale_ptr, bias_ptr,
    M, N, K: tl.constexpr,
    stride_am, stride_bk, stride_om, stride_rm,
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SWIZZLE_M: tl.constexpr,
    # prologue, epilogue tail, destinations 1..3
    in_scale_ptr, in_shift_ptr, out1_ptr, out2_ptr, out3_ptr,
    stride_o1m, stride_o2m, stride_o3m, N1, N2, N3, out_scale,
    HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
    RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
    NUM_OUT: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr, ACT3: tl.constexpr,
    # the gate (squeeze-and-excitation), last: off by default
    gate_ptr=None, gate_hw=1, stride_gn=0, stride_gc=0, HAS_GATE: tl.constexpr = False,
    stride_oc=1,  # out's channel stride: 1, or a channel shuffle's groups (codegen/plan.py)
    # the layer norm of A's rows folded in (``_conv_ln_correct``), last: off by default
    ln_c_ptr=None, ln_eps=0.0, HAS_LN: tl.constexpr = False,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out = epilogue(prologue(A) @ B): act(... * scale + bias + residual) and its variants.

    A:        (M, K), row stride stride_am, column stride 1 (x of a 1x1 conv as
              (N*H*W, C) rows, or the input of a fully connected layer)
    B:        (K, N), row stride stride_bk, column stride 1 (the packed weight)
    out:      (M, N), row stride stride_om, column stride 1; residual likewise (stride_rm)
    scale, bias: (N,) vectors, read when HAS_SCALE / HAS_BIAS
    HAS_PRE:  A's elements go through ``_conv_prologue`` (in_scale, in_shift: (K,) vectors)
    HAS_GATE: first A[m, c] * gate[m // gate_hw, c] (``_conv_gate``): the gate's rows (batch stride
              stride_gn, channel stride stride_gc) are samples of gate_hw rows of A each
    HAS_LN:   B holds W' = W * gamma (per row k) and the accumulator becomes
              rstd[m] * (acc - mean[m] * ln_c[n]) before the epilogue: (LN(A) @ W) minus the bias
              the host folds in (ln_c: (N,) column sums of B; ln_eps: the layer norm's eps)
    NUM_OUT > 1 destinations (no residual): out takes columns [0, N1) with ACT, out1 (row
    stride stride_o1m) columns [N1, N2) with ACT1, out2 [N2, N3) with ACT2, out3 [N3, N)
    with ACT3; each is an (M, width) matrix.  With NUM_OUT == 1, N1 == N.
    K (the reduction length) is a compile-time constant, like the geometry of a conv layer.
    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),).  Accumulates in fp32.
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m, pid_n = _conv_tile_order(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), SWIZZLE_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    rows_m = offs_m.to(tl.int64)
    if HAS_GATE:  # each row's sample in the gate
        gate_rows = (rows_m // gate_hw) * stride_gn
    else:
        gate_rows = rows_m

    # -- main loop over the whole reduction -------------------------------------------
    acc, s1, s2 = _conv_gemm_mainloop(a_ptr, b_ptr, rows_m, mask_m, offs_n, mask_n, 0, (K + BLOCK_K - 1) // BLOCK_K,
                                      K, stride_am, stride_bk, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows,
                                      stride_gc, HAS_GATE, HAS_PRE, HAS_IN_SCALE, HAS_IN_SHIFT,
                                      IN_ACT, INPUT_PRECISION, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_K,
                                      (K + BLOCK_K - 1) // BLOCK_K, HAS_LN)
    if HAS_LN:  # the layer norm, exactly, on the fp32 accumulator (the stats cover all K columns)
        acc = _conv_ln_correct(acc, s1, s2, ln_c_ptr, offs_n, mask_n, ln_eps, K)

    # -- epilogue on the fp32 accumulator, one cast, store into each destination -------
    _conv_epilogue_store(acc, rows_m * stride_om, rows_m * stride_rm, offs_n, mask_m, offs_n < N1,
                         out_ptr, res_ptr, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, HAS_RES, ACT, INTERPRETED,
                         out_scale, RES_AFTER_ACT, HAS_OUT_SCALE, stride_oc)
    if NUM_OUT > 1:
        _conv_store_split(acc, rows_m, offs_n, mask_m, N1, N2, out1_ptr, stride_o1m, scale_ptr, bias_ptr,
                          out_scale, HAS_SCALE, HAS_BIAS, ACT1, HAS_OUT_SCALE, INTERPRETED)
    if NUM_OUT > 2:
        _conv_store_split(acc, rows_m, offs_n, mask_m, N2, N3, out2_ptr, stride_o2m, scale_ptr, bias_ptr,
                          out_scale, HAS_SCALE, HAS_BIAS, ACT2, HAS_OUT_SCALE, INTERPRETED)
    if NUM_OUT > 3:
        _conv_store_split(acc, rows_m, offs_n, mask_m, N3, N, out3_ptr, stride_o3m, scale_ptr, bias_ptr,
                          out_scale, HAS_SCALE, HAS_BIAS, ACT3, HAS_OUT_SCALE, INTERPRETED)


@triton.jit
def _conv_gemm_tma_kernel(
    a_desc, b_desc, out_ptr, res_ptr, scale_ptr, bias_ptr,
    M, N, stride_om, stride_rm, out_scale, stride_oc,
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWIZZLE_M: tl.constexpr,
    K_ITERS: tl.constexpr, NUM_PROGS: tl.constexpr, TILES_PER_PROG: tl.constexpr,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """``_conv_gemm_kernel``'s product and epilogue (one destination, no prologue), with A and B
    read through TMA tensor descriptors by a persistent grid.

    a_desc:   descriptor of A (M, K), block [BLOCK_M, BLOCK_K]; b_desc: of B (K, N), block
              [BLOCK_K, BLOCK_N].  Blocks past A's or B's edge read 0 (the descriptor's padding),
              so the K tail and the edge tiles need no masks on the load side.
    out, residual, scale, bias and the epilogue switches: as ``_conv_gemm_kernel``'s.
    Grid: (NUM_PROGS,).  Program p computes tiles p, p + NUM_PROGS, ... in ``_conv_tile_order``,
    TILES_PER_PROG = cdiv(tiles, NUM_PROGS) of them (the last may be past the end: stored nowhere).

    Why: on Hopper a TMA copy moves a whole block into shared memory with no address arithmetic
    in the program and feeds wgmma directly; one program per SM looping over tiles lets the loads
    of the next tile start while this one's epilogue runs.  The loop over (tile, reduction block)
    pairs is one flat loop with a constexpr trip count, so the compiler's pipeliner sees across
    tile boundaries (and Triton 3.6's interpreter, which needs constexpr bounds, runs it).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles = num_pid_m * num_pid_n

    tile = pid - NUM_PROGS
    ki = -1
    pid_m = 0
    pid_n = 0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, TILES_PER_PROG * K_ITERS):
        # -- the next (tile, reduction block): a new tile every K_ITERS steps --------------
        ki = tl.where(ki == K_ITERS - 1, 0, ki + 1)
        if ki == 0:
            tile += NUM_PROGS
            pid_m, pid_n = _conv_tile_order(tile, num_pid_m, num_pid_n, SWIZZLE_M)
        a = a_desc.load([pid_m * BLOCK_M, ki * BLOCK_K])
        b = b_desc.load([ki * BLOCK_K, pid_n * BLOCK_N])
        acc = _conv_mma(a, b, acc, INPUT_PRECISION, INTERPRETED)

        # -- the tile's last block: epilogue on the fp32 accumulator, store, start afresh ---
        if ki == K_ITERS - 1:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            rows_m = offs_m.to(tl.int64)
            mask_m = offs_m < tl.where(tile < tiles, M, 0)  # a tile past the end stores nothing
            _conv_epilogue_store(acc, rows_m * stride_om, rows_m * stride_rm, offs_n, mask_m, offs_n < N,
                                 out_ptr, res_ptr, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, HAS_RES, ACT,
                                 INTERPRETED, out_scale, RES_AFTER_ACT, HAS_OUT_SCALE, stride_oc)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)


# --------------------------------------------------------------------------------------
# Path 2: implicit GEMM convolution (any kernel, stride, padding, dilation, groups)
# --------------------------------------------------------------------------------------


@triton.jit
def _conv_flat_block(x_rows, ih0, iw0, mask_m, red, H, W, stride_xh, stride_xw,
                     CG: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                     RED: tl.constexpr):
    """Where the block of A at reduction indices `red` lives in x, for the flat walk.

    x_rows:    (BLOCK_M,) pointers to channel 0 (of the group) of each row's image in x
    ih0, iw0:  (BLOCK_M,) input row / column of each output pixel's tap (0, 0); may be outside
    mask_m:    (BLOCK_M,) the real rows (pixels)
    red:       (BLOCK_K,) reduction indices (r*KW + s)*CG + c, RED = KH*KW*CG of them in all
    Returns (a_ptrs, a_mask, mask_k, c): the (BLOCK_M, BLOCK_K) pointers of the block in x, its
    load mask (rows past M, indices past RED and the padding halo read 0), the real indices
    and the channel c of each index.  Used by ``_conv_implicit_gemm_kernel`` and by
    conv2d_chain.py's first conv: one copy of the address arithmetic.
    """
    mask_k = red < RED
    # split each reduction index into its tap and channel: the tap varies along the block
    c = red % CG
    rs = red // CG
    ih = ih0[:, None] + ((rs // KW) * DH)[None, :]
    iw = iw0[:, None] + ((rs % KW) * DW)[None, :]
    in_bounds = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    a_mask = mask_m[:, None] & mask_k[None, :] & in_bounds
    return x_rows[:, None] + ih * stride_xh + iw * stride_xw + c[None, :], a_mask, mask_k, c


@triton.jit
def _conv_tap_block(x_rows, ih0, iw0, mask_m, mask_n, it, offs_k, H, W, stride_xh, stride_xw,
                    CG: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                    BLOCK_K: tl.constexpr, HALO: tl.constexpr):
    """Where iteration `it` of the tap-major walk reads A and B: one tap, BLOCK_K channels.

    x_rows, ih0, iw0, mask_m: as in ``_conv_flat_block``
    mask_n:    (BLOCK_N,) the real columns of B (output channels)
    it:        iteration index: tap rs = it // C_BLOCKS, channels from (it % C_BLOCKS) * BLOCK_K,
               C_BLOCKS = cdiv(CG, BLOCK_K); offs_k = tl.arange(0, BLOCK_K)
    HALO:      False when no tap can leave the image (1x1, stride 1, unpadded): no bounds test
    Returns (a_ptrs, a_mask, red, b_mask, c): the (BLOCK_M, BLOCK_K) pointers of A's block and
    its load mask (the padding halo masks whole rows, the channel tail exists only when
    CG % BLOCK_K), the rows red = rs*CG + c of the packed weight with the mask of B's
    (BLOCK_K, BLOCK_N) block, and the channel c (within the group) of each column of A.
    """
    C_BLOCKS: tl.constexpr = (CG + BLOCK_K - 1) // BLOCK_K
    rs = it // C_BLOCKS
    c = (it % C_BLOCKS) * BLOCK_K + offs_k
    # the tap's input pixel, once per row (the whole block shares the tap)
    ih = ih0 + (rs // KW) * DH
    iw = iw0 + (rs % KW) * DW
    if HALO:
        row_ok = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    else:
        row_ok = mask_m
    a_rows = x_rows + ih * stride_xh + iw * stride_xw
    if CG % BLOCK_K == 0:  # no channel tail: masks constant along the channels
        a_mask = row_ok[:, None]
        b_mask = mask_n[None, :]
    else:
        a_mask = row_ok[:, None] & (c < CG)[None, :]
        b_mask = (c < CG)[:, None] & mask_n[None, :]
    return a_rows[:, None] + c[None, :], a_mask, rs * CG + c, b_mask, c


@triton.jit
def _conv_implicit_mainloop(x_rows, ih0, iw0, mask_m, mask_n, w_cols, g, it_lo, it_hi, H, W, stride_xh, stride_xw,
                            K_TOTAL, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows, stride_gc,
                            CG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                            FLAT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_PRE: tl.constexpr,
                            HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
                            INPUT_PRECISION: tl.constexpr,
                            INTERPRETED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, N_ITERS: tl.constexpr):
    """The fp32 sum over the reduction's blocks it_lo .. it_hi - 1 of the implicit GEMM of one tile.

    A block is BLOCK_K flat indices red = (r*KW + s)*CG + c (FLAT), or one tap and BLOCK_K of
    its channels (block it: tap it // C_BLOCKS); arguments as ``_conv_implicit_gemm_kernel``
    computes them.  (0, all blocks) is the whole product; a sub-range one split-K slice
    (``_conv_implicit_splitk_kernel``).  Blocks are added in increasing order; the loops run the
    constexpr N_ITERS >= it_hi - it_lo times, blocks past it_hi masked off (as the GEMM's).
    HAS_GATE: each loaded block is scaled by the gate first (``_conv_gate``, gate_rows: each row's
    sample offset in it), before the batch-norm prologue; the halo stays 0.
    """
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT:
        # -- reduction over red = (r*KW + s)*CG + c, BLOCK_K indices at a time --------
        RED: tl.constexpr = KH * KW * CG
        for i in range(0, N_ITERS):
            # address computation, masked loads: rows past M, the reduction tail and the halo read 0
            it = it_lo + i
            red = it * BLOCK_K + offs_k
            a_ptrs, a_mask, mask_k, c = _conv_flat_block(x_rows, ih0, iw0, mask_m, red, H, W,
                                                         stride_xh, stride_xw, CG, KW, DH, DW, RED)
            live = red < it_hi * BLOCK_K  # a block past this slice's reduction reads nothing
            a_mask = a_mask & live[None, :]
            mask_k = mask_k & live
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
            if HAS_GATE:  # the squeeze-and-excitation scale while loading; the halo stays 0
                a = _conv_gate(a, a_mask, gate_rows, g * CG + c, gate_ptr, stride_gc, INTERPRETED)
            if HAS_PRE:  # normalise while loading; the halo stays 0
                a = _conv_prologue(a, a_mask, g * CG + c, mask_k, in_scale_ptr, in_shift_ptr,
                                   HAS_IN_SCALE, HAS_IN_SHIFT, IN_ACT, INTERPRETED)
            b = tl.load(w_cols + red[:, None] * K_TOTAL,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            # dot into the fp32 accumulator
            acc = _conv_mma(a, b, acc, INPUT_PRECISION, INTERPRETED)
    else:
        # -- one filter tap (r, s) and BLOCK_K of its channels per iteration ----------
        for i in range(0, N_ITERS):
            # address computation, masked loads: the padding halo (whole rows), the channel tail
            it = it_lo + i
            a_ptrs, a_mask, red, b_mask, c = _conv_tap_block(x_rows, ih0, iw0, mask_m, mask_n, it, offs_k, H, W,
                                                             stride_xh, stride_xw, CG, KW, DH, DW, BLOCK_K, True)
            live = (it * BLOCK_K + offs_k) < it_hi * BLOCK_K  # a block past this slice reads nothing
            a_mask = a_mask & live[None, :]
            b_mask = b_mask & live[:, None]
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
            if HAS_GATE:  # the squeeze-and-excitation scale while loading; the halo stays 0
                a = _conv_gate(a, a_mask, gate_rows, g * CG + c, gate_ptr, stride_gc, INTERPRETED)
            if HAS_PRE:  # normalise while loading; the halo stays 0
                a = _conv_prologue(a, a_mask, g * CG + c, c < CG, in_scale_ptr, in_shift_ptr,
                                   HAS_IN_SCALE, HAS_IN_SHIFT, IN_ACT, INTERPRETED)
            b = tl.load(w_cols + red[:, None] * K_TOTAL, mask=b_mask, other=0.0)
            # dot into the fp32 accumulator
            acc = _conv_mma(a, b, acc, INPUT_PRECISION, INTERPRETED)
    return acc


@triton.jit
def _conv_implicit_gemm_kernel(
    x_ptr, w_ptr, out_ptr, res_ptr, scale_ptr, bias_ptr,
    M, H, W, P, Q, KG, K_TOTAL,
    stride_xn, stride_xh, stride_xw,
    stride_on, stride_op, stride_oq,
    stride_rn, stride_rp, stride_rq,
    CG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    FLAT: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SWIZZLE_M: tl.constexpr,
    # prologue and epilogue tail
    in_scale_ptr, in_shift_ptr, out_scale,
    HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
    RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
    # the gate (squeeze-and-excitation), last: off by default
    gate_ptr=None, gate_hw=1, stride_gn=0, stride_gc=0, HAS_GATE: tl.constexpr = False,
    stride_oc=1,  # out's channel stride: 1, or a channel shuffle's groups (codegen/plan.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[n, p, q, g*KG + k] = act(sum_{r,s,c} x[n, ih, iw, g*CG + c] * w[(r*KW + s)*CG + c, g*KG + k]
                                    * scale + bias + residual)
    with ih = p*SH - PH + r*DH, iw = q*SW - PW + s*DW (x is 0 outside 0 <= ih < H, 0 <= iw < W),
    or the variants of ``_conv_epilogue``; with HAS_PRE, x is ``_conv_prologue(x)`` (in_scale,
    in_shift: (G*CG,) vectors), still 0 outside the image; with HAS_GATE, x[n, ., ., c] is first
    multiplied by gate[n, c] (``_conv_gate``: batch stride stride_gn, channel stride stride_gc;
    gate_hw is the GEMM path's and unused here).

    x:        (N, H, W, G*CG) NHWC, strides (stride_xn, stride_xh, stride_xw, 1)
    w:        (KH*KW*CG, K_TOTAL) packed weight, contiguous; K_TOTAL = G*KG
    out:      (N, P, Q, K_TOTAL) NHWC, strides (stride_on, stride_op, stride_oq, 1);
              residual likewise (stride_rn, ...), read when HAS_RES
    M = N*P*Q.  PH, PW are the top and left padding (bottom/right only shape P, Q).
    FLAT: reduce over the flattened (r, s, c) index (small CG); otherwise one filter tap
    and BLOCK_K channels per iteration (CG a multiple of 16).
    Grid: (cdiv(M, BLOCK_M) * cdiv(KG, BLOCK_N), G).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    g = tl.program_id(1)
    pid_m, pid_n = _conv_tile_order(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(KG, BLOCK_N), SWIZZLE_M)

    # -- rows: output pixels m = (n, p, q); columns: output channels of group g --------
    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    ih0 = p * SH - PH                     # input row of tap r = 0
    iw0 = q * SW - PW                     # input column of tap s = 0
    x_rows = x_ptr + n.to(tl.int64) * stride_xn + g * CG

    offs_kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_kn < KG
    cols = g * KG + offs_kn               # global output channel
    w_cols = w_ptr + cols[None, :]

    # the reduction's blocks: BLOCK_K flat indices each (FLAT), or one tap's BLOCK_K channels
    ITERS: tl.constexpr = (KH * KW * CG + BLOCK_K - 1) // BLOCK_K if FLAT else KH * KW * ((CG + BLOCK_K - 1) // BLOCK_K)
    if HAS_GATE:  # each row's sample in the gate
        gate_rows = n.to(tl.int64) * stride_gn
    else:
        gate_rows = n
    acc = _conv_implicit_mainloop(x_rows, ih0, iw0, mask_m, mask_n, w_cols, g, 0, ITERS, H, W, stride_xh, stride_xw,
                                  K_TOTAL, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows, stride_gc,
                                  CG, KH, KW, DH, DW, FLAT, HAS_GATE, HAS_PRE, HAS_IN_SCALE,
                                  HAS_IN_SHIFT, IN_ACT, INPUT_PRECISION, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_K, ITERS)

    # -- epilogue on the fp32 accumulator, one cast, store ----------------------------
    n64 = n.to(tl.int64)
    out_rows = n64 * stride_on + p * stride_op + q * stride_oq
    res_rows = n64 * stride_rn + p * stride_rp + q * stride_rq
    _conv_epilogue_store(acc, out_rows, res_rows, cols, mask_m, mask_n,
                         out_ptr, res_ptr, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, HAS_RES, ACT, INTERPRETED,
                         out_scale, RES_AFTER_ACT, HAS_OUT_SCALE, stride_oc)


# --------------------------------------------------------------------------------------
# Split-K: the reduction in slices, fp32 partial products, then one reduce + epilogue
# --------------------------------------------------------------------------------------


@triton.jit
def _conv_store_partial(acc, ws_ptr, sl, rows_m, cols, mask_m, mask_n, M, N):
    """Slice sl's fp32 partial product of a tile into the workspace, an (S, M, N) contiguous
    fp32 array: ws[sl, rows_m, cols] (rows_m int64, cols global output channels)."""
    ptrs = ws_ptr + (sl * M + rows_m)[:, None] * N + cols[None, :]
    tl.store(ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_gemm_splitk_kernel(
    a_ptr, b_ptr, ws_ptr,
    M, N, K: tl.constexpr,
    stride_am, stride_bk,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SWIZZLE_M: tl.constexpr, SLICE_ITERS: tl.constexpr,
    in_scale_ptr, in_shift_ptr,
    HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
    # the gate (squeeze-and-excitation), last: off by default
    gate_ptr=None, gate_hw=1, stride_gn=0, stride_gc=0, HAS_GATE: tl.constexpr = False,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """ws[sl] = prologue(A[:, slice sl]) @ B[slice sl, :] in fp32, for ``_conv_gemm_kernel``'s A, B.

    Slice sl = program_id(1) is reduction blocks sl*SLICE_ITERS ... (BLOCK_K wide, the last
    slice ends at K).  ws: (S, M, N) contiguous fp32.  Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), S).
    ``_conv_splitk_reduce_kernel`` then sums the slices and applies the epilogue.
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m, pid_n = _conv_tile_order(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), SWIZZLE_M)
    sl = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    rows_m = offs_m.to(tl.int64)
    if HAS_GATE:  # each row's sample in the gate
        gate_rows = (rows_m // gate_hw) * stride_gn
    else:
        gate_rows = rows_m
    it_lo = sl * SLICE_ITERS
    it_hi = tl.minimum(it_lo + SLICE_ITERS, (K + BLOCK_K - 1) // BLOCK_K)
    acc, _, _ = _conv_gemm_mainloop(a_ptr, b_ptr, rows_m, mask_m, offs_n, mask_n, it_lo, it_hi, K,
                                    stride_am, stride_bk, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows, stride_gc,
                                    HAS_GATE, HAS_PRE, HAS_IN_SCALE, HAS_IN_SHIFT,
                                    IN_ACT, INPUT_PRECISION, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_K, SLICE_ITERS,
                                    False)  # a slice's statistics would be partial: no layer norm here
    _conv_store_partial(acc, ws_ptr, sl, rows_m, offs_n, mask_m, mask_n, M, N)


@triton.jit
def _conv_implicit_splitk_kernel(
    x_ptr, w_ptr, ws_ptr,
    M, H, W, P, Q, KG, K_TOTAL,
    stride_xn, stride_xh, stride_xw,
    CG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    FLAT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SWIZZLE_M: tl.constexpr, SLICE_ITERS: tl.constexpr,
    in_scale_ptr, in_shift_ptr,
    HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
    # the gate (squeeze-and-excitation), last: off by default
    gate_ptr=None, gate_hw=1, stride_gn=0, stride_gc=0, HAS_GATE: tl.constexpr = False,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """ws[sl] = one slice of ``_conv_implicit_gemm_kernel``'s reduction, in fp32, before any epilogue.

    Arguments as there; slice sl = program_id(2) is reduction blocks sl*SLICE_ITERS ... (blocks
    as ``_conv_implicit_mainloop`` walks them).  ws: (S, M, K_TOTAL) contiguous fp32, columns
    the global output channels g*KG + k.  Grid: (cdiv(M, BLOCK_M) * cdiv(KG, BLOCK_N), G, S).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    g = tl.program_id(1)
    sl = tl.program_id(2)
    pid_m, pid_n = _conv_tile_order(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(KG, BLOCK_N), SWIZZLE_M)

    # rows and columns of the tile, as in _conv_implicit_gemm_kernel
    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    ih0 = p * SH - PH
    iw0 = q * SW - PW
    x_rows = x_ptr + n.to(tl.int64) * stride_xn + g * CG
    offs_kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_kn < KG
    cols = g * KG + offs_kn
    w_cols = w_ptr + cols[None, :]

    ITERS: tl.constexpr = (KH * KW * CG + BLOCK_K - 1) // BLOCK_K if FLAT else KH * KW * ((CG + BLOCK_K - 1) // BLOCK_K)
    it_lo = sl * SLICE_ITERS
    it_hi = tl.minimum(it_lo + SLICE_ITERS, ITERS)
    if HAS_GATE:  # each row's sample in the gate
        gate_rows = n.to(tl.int64) * stride_gn
    else:
        gate_rows = n
    acc = _conv_implicit_mainloop(x_rows, ih0, iw0, mask_m, mask_n, w_cols, g, it_lo, it_hi, H, W, stride_xh,
                                  stride_xw, K_TOTAL, in_scale_ptr, in_shift_ptr, gate_ptr, gate_rows, stride_gc,
                                  CG, KH, KW, DH, DW, FLAT, HAS_GATE, HAS_PRE,
                                  HAS_IN_SCALE, HAS_IN_SHIFT, IN_ACT, INPUT_PRECISION, INTERPRETED,
                                  BLOCK_M, BLOCK_N, BLOCK_K, SLICE_ITERS)
    rows_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    _conv_store_partial(acc, ws_ptr, sl, rows_m, cols, mask_m, mask_n, M, K_TOTAL)


@triton.jit
def _conv_splitk_reduce_kernel(
    ws_ptr, out_ptr, res_ptr, scale_ptr, bias_ptr,
    M, N, P, Q,
    stride_on, stride_op, stride_oq,
    stride_rn, stride_rp, stride_rq,
    out_scale,
    SPLIT_K: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    stride_oc=1,  # out's channel stride (see ``_conv_epilogue_store``)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out = epilogue(ws[0] + ws[1] + ... + ws[SPLIT_K - 1]), summed in that order in fp32.

    ws:  (SPLIT_K, M, N) contiguous fp32 partial products; row m is output pixel (n, p, q)
    out: (N_img, P, Q, N) NHWC, strides (stride_on, stride_op, stride_oq, 1), residual likewise;
         a matrix (M, N) with row stride s is P = Q = 1, strides (s, 0, 0)
    The epilogue is ``_conv_epilogue_store``'s, exactly as the single-pass kernels apply it to
    their accumulator.  A fixed order and no atomics: the same bits on every run.
    Grid: (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m = tl.program_id(0)
    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    rows_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = cols < N
    mask = mask_m[:, None] & mask_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for sl in range(0, SPLIT_K):
        acc += tl.load(ws_ptr + (sl * M + rows_m)[:, None] * N + cols[None, :], mask=mask, other=0.0)

    n64 = n.to(tl.int64)
    out_rows = n64 * stride_on + p * stride_op + q * stride_oq
    res_rows = n64 * stride_rn + p * stride_rp + q * stride_rq
    _conv_epilogue_store(acc, out_rows, res_rows, cols, mask_m, mask_n,
                         out_ptr, res_ptr, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, HAS_RES, ACT, INTERPRETED,
                         out_scale, RES_AFTER_ACT, HAS_OUT_SCALE, stride_oc)


# --------------------------------------------------------------------------------------
# Path 3: depthwise convolution (groups == C == K)
# --------------------------------------------------------------------------------------


@triton.jit
def _conv_depthwise_kernel(
    x_ptr, w_ptr, out_ptr, res_ptr, scale_ptr, bias_ptr,
    M, H, W, P, Q, C,
    stride_xn, stride_xh, stride_xw,
    stride_on, stride_op, stride_oq,
    stride_rn, stride_rp, stride_rq,
    KH: tl.constexpr, KW: tl.constexpr,
    SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    # prologue and epilogue tail
    in_scale_ptr, in_shift_ptr, out_scale,
    HAS_PRE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_IN_SHIFT: tl.constexpr, IN_ACT: tl.constexpr,
    RES_AFTER_ACT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
    # the gate (squeeze-and-excitation), last: off by default
    gate_ptr=None, gate_hw=1, stride_gn=0, stride_gc=0, HAS_GATE: tl.constexpr = False,
    stride_oc=1,  # out's channel stride: 1, or a channel shuffle's groups (codegen/plan.py)
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[n, p, q, c] = act(sum_{r,s} x[n, ih, iw, c] * w[r*KW + s, c] * scale + bias + residual)
    with ih = p*SH - PH + r*DH, iw = q*SW - PW + s*DW (x is 0 outside the image).

    x:   (N, H, W, C) NHWC, strides (stride_xn, stride_xh, stride_xw, 1)
    w:   (KH*KW, C) packed weight, contiguous
    out: (N, P, Q, C) NHWC, strides (stride_on, stride_op, stride_oq, 1); residual likewise
    M = N*P*Q.  Direct convolution with fp32 FMAs, no tl.dot.  The epilogue's variants and
    the prologue (HAS_PRE: x is ``_conv_prologue(x)``, 0 outside the image; HAS_GATE: x times
    gate[n, c] first) as in the other paths.
    Grid: (cdiv(M, BLOCK_M), cdiv(C, BLOCK_C)).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)

    # -- rows: output pixels; columns: channels ---------------------------------------
    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    ih0 = p * SH - PH
    iw0 = q * SW - PW
    x_rows = x_ptr + n.to(tl.int64) * stride_xn
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C

    if HAS_GATE:  # each row's sample in the gate
        gate_rows = n.to(tl.int64) * stride_gn
    else:
        gate_rows = n
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for rs in range(0, KH * KW):
        # address computation: the tap's input pixel per row
        ih = ih0 + (rs // KW) * DH
        iw = iw0 + (rs % KW) * DW
        row_ok = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        # masked loads of the halo; one weight per channel for this tap
        x_mask = row_ok[:, None] & mask_c[None, :]
        xv = tl.load((x_rows + ih * stride_xh + iw * stride_xw)[:, None] + offs_c[None, :], mask=x_mask, other=0.0)
        if HAS_GATE:  # the squeeze-and-excitation scale while loading; the halo stays 0
            xv = _conv_gate(xv, x_mask, gate_rows, offs_c, gate_ptr, stride_gc, INTERPRETED)
        if HAS_PRE:  # normalise while loading; the halo stays 0
            xv = _conv_prologue(xv, x_mask, offs_c, mask_c, in_scale_ptr, in_shift_ptr,
                                HAS_IN_SCALE, HAS_IN_SHIFT, IN_ACT, INTERPRETED)
        wv = tl.load(w_ptr + rs * C + offs_c, mask=mask_c, other=0.0)
        # multiply-accumulate in fp32
        acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]

    # -- epilogue on the fp32 accumulator, one cast, store ----------------------------
    n64 = n.to(tl.int64)
    out_rows = n64 * stride_on + p * stride_op + q * stride_oq
    res_rows = n64 * stride_rn + p * stride_rp + q * stride_rq
    _conv_epilogue_store(acc, out_rows, res_rows, offs_c, mask_m, mask_c,
                         out_ptr, res_ptr, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, HAS_RES, ACT, INTERPRETED,
                         out_scale, RES_AFTER_ACT, HAS_OUT_SCALE, stride_oc)


# --------------------------------------------------------------------------------------
# Host side: weight packing, checks, path and block-size selection, launches
# --------------------------------------------------------------------------------------

_CONV_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CONV_ACTS = (ACT_NONE, ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_RELU6, ACT_HARDSIGMOID, ACT_HARDSWISH, ACT_SILU, ACT_GELU,
              ACT_GELU_TANH)


def pack_conv_weight(w: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """OIHW PyTorch weight (K, C/groups, R, S) -> (R*S*C/groups, K): [R, S, Cg, K] contiguous.

    Row (r*S + s)*Cg + c, column k holds w[k, c, r, s]; group g owns columns
    g*K/groups .. (g+1)*K/groups - 1.  Depthwise weights (K = C = groups, Cg = 1) become
    (R*S, C), the layout ``_conv_depthwise_kernel`` reads.
    """
    if w.dim() != 4:
        raise ValueError(f"pack_conv_weight: expected an OIHW weight, got shape {tuple(w.shape)}")
    k, cg, r, s = w.shape
    if groups < 1 or k % groups:
        raise ValueError(f"pack_conv_weight: {k} output channels are not divisible by groups={groups}")
    return w.detach().permute(2, 3, 1, 0).reshape(r * s * cg, k).to(dtype).contiguous()


def pack_linear_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """PyTorch fully connected weight (O, F) -> (F, O) contiguous: B of out = x @ B."""
    if w.dim() != 2:
        raise ValueError(f"pack_linear_weight: expected an (out, in) weight, got shape {tuple(w.shape)}")
    return w.detach().t().to(dtype).contiguous()


def _conv_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _conv_clamp_block(size: int, default: int, floor: int = 16) -> int:
    """The default block, shrunk (to a power of two >= floor) when the problem is smaller."""
    return max(floor, min(default, _conv_pow2(size)))


def conv_default_blocks(path: str, m: int, n: int, k: int, dtype: torch.dtype, cpu: bool,
                        cg: int | None = None) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) a path launches with when not tuned.

    m, n, k: the GEMM's rows (output pixels), columns (output channels per group; channels for
    "depthwise") and reduction (taps * channels per group); cg: channels per group ("implicit_tap"
    picks BLOCK_K dividing it).  Shared with the performance model, which predicts untuned launches.
    """
    wide = dtype != torch.float32
    if path == "depthwise":
        return (32 if cpu else 64), _conv_clamp_block(n, 32 if cpu else 64, floor=4), 1, 4, 2
    bm = _conv_clamp_block(m, 32 if cpu else 128)
    bn = _conv_clamp_block(n, 32 if cpu else 128)
    if path == "gemm":
        bk = _conv_clamp_block(k, 32 if cpu else (64 if wide else 32))
    elif path == "implicit_flat":
        bk = _conv_clamp_block(k, 16 if cpu else 32)
    else:
        # the largest power of two <= the default that divides Cg: no masked channel tail
        bk = 32 if cpu else (64 if wide else 32)
        while bk > 16 and cg % bk:
            bk //= 2
    return bm, bn, bk, (8 if bm * bn >= 128 * 128 else 4), (4 if wide else 3)


# Split-K's limits: a slice is at least 3 reduction blocks (the software pipeline keeps 3-4
# blocks in flight, so a shorter slice is mostly pipeline fill and its fixed costs: the
# workspace store, the launch), and at most 32 slices (workspace and reduce reads grow with S).
# A split must save its fixed cost: the reduce kernel's launch and the workspace's round trip
# take about as long as 8 reduction blocks of a 128 x 128 x 64 tile on one SM (a 2.5 us launch
# in a CUDA graph, ~0.3 us a block on an H100 / H200 SM).
_CONV_SPLIT_MIN_ITERS, _CONV_SPLIT_MAX, _CONV_SPLIT_COST_ITERS = 3, 32, 8


def conv_reduction_iters(path: str, k: int, block_k: int, cg: int | None = None) -> int:
    """Blocks of the reduction one output tile walks: K = taps * cg in BLOCK_K steps; the tap
    walk ("implicit_tap") pads each tap's cg channels to whole blocks."""
    if path == "implicit_tap":
        return (k // cg) * triton.cdiv(cg, block_k)
    return triton.cdiv(k, block_k)


def conv_split_k(tiles: int, iters: int, sms: int) -> int:
    """The number of split-K slices S for a launch of `tiles` output tiles, each a reduction of
    `iters` blocks, on `sms` SMs (1: no split).

    Split only when the tiles fill fewer than half the SMs (otherwise the workspace traffic and
    the second launch cost more than the idle SMs) and the reduction has at least two slices of
    _CONV_SPLIT_MIN_ITERS blocks.  S then minimizes the busiest SM's work, in reduction blocks:
    ceil(tiles * S / sms) programs of ceil(iters / S) blocks each -- which brings tiles * S near
    the SM count without a second wave -- plus, for S > 1, _CONV_SPLIT_COST_ITERS blocks for the
    reduce; ties go to the smaller S (less workspace).  S is exact: cdiv(iters, cdiv(iters, S))
    == S, no slice is empty.
    """
    if sms <= 0 or 2 * tiles > sms or iters < 2 * _CONV_SPLIT_MIN_ITERS:
        return 1
    best, best_cost = 1, iters * triton.cdiv(tiles, sms)
    for s in range(2, min(_CONV_SPLIT_MAX, iters // _CONV_SPLIT_MIN_ITERS) + 1):
        per = triton.cdiv(iters, s)
        s = triton.cdiv(iters, per)  # the slices `per` blocks long really make
        cost = triton.cdiv(tiles * s, sms) * per + _CONV_SPLIT_COST_ITERS
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def conv_default_split_k(path: str, m: int, n: int, k: int, blocks, sms: int, groups: int = 1,
                         cg: int | None = None, ln: bool = False) -> int:
    """The split-K slices ``conv2d`` picks (split_k=None) on a GPU with `sms` SMs, for a launch of
    `path` with ``conv_default_blocks``' arguments m, n, k, cg and the block sizes `blocks`
    (BLOCK_M, BLOCK_N, BLOCK_K, ...).  Shared with the performance model.  ln: the launch folds a
    layer norm in (``in_ln``), whose row statistics need the whole reduction in one program: 1."""
    if ln or path not in ("gemm", "implicit_tap", "implicit_flat"):
        return 1
    bm, bn, bk = blocks[:3]
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn) * groups
    return conv_split_k(tiles, conv_reduction_iters(path, k, bk, cg), sms)


_CONV_SM_COUNTS = {}  # CUDA device index -> its SM count, read once


def _conv_sm_count(device) -> int:
    """The SM count of a CUDA device (0 elsewhere: the interpreter, meta tensors never split)."""
    if device.type != "cuda":
        return 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CONV_SM_COUNTS:
        _CONV_SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _CONV_SM_COUNTS[index]


def _conv_split_plan(split_k, path, m, n, k, blocks, device, groups=1, cg=None):
    """(S, SLICE_ITERS): the slices a launch runs and the reduction blocks in each.

    split_k None: ``conv_default_split_k`` on a GPU, 1 elsewhere; an int: at most that many
    slices, fewer when the reduction has fewer blocks (no slice is empty).
    """
    iters = conv_reduction_iters(path, k, blocks[2], cg)
    if split_k is None:
        split_k = conv_default_split_k(path, m, n, k, blocks, _conv_sm_count(device), groups, cg)
    elif isinstance(split_k, bool) or not isinstance(split_k, int) or split_k < 1:
        raise ValueError(f"split_k must be None (automatic) or a positive int, got {split_k!r}")
    per = triton.cdiv(iters, min(split_k, iters))
    return triton.cdiv(iters, per), per


def _conv_input_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    if dtype == torch.float32:
        return "tf32" if allow_tf32 else "ieee"
    return "tf32"  # Triton's default; it does not apply to fp16/bf16 operands


def _conv_interpreted(t: torch.Tensor) -> bool:
    # Triton runs kernels on CPU tensors only in its interpreter (TRITON_INTERPRET=1).
    return t.device.type == "cpu"


def _conv_check_vec(v, k: int, name: str, device) -> None:
    if v is None:
        return
    if v.dim() != 1 or v.shape[0] != k or not v.is_contiguous():
        raise ValueError(f"{name} must be a contiguous ({k},) vector, got shape {tuple(v.shape)}")
    if v.dtype not in _CONV_FLOAT_DTYPES or v.device != device:
        raise ValueError(f"{name}: dtype {v.dtype} on {v.device}, expected a float vector on {device}")


def _conv_check_common(x, w_packed, out, residual, scale, bias, act):
    for name, t in (("x", x), ("w_packed", w_packed), ("out", out)):
        if t.dtype not in _CONV_FLOAT_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype} (float32, float16 or bfloat16)")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    if w_packed.dtype != x.dtype:
        raise ValueError(f"w_packed is {w_packed.dtype} but x is {x.dtype}: pack the weight in x's dtype")
    if not w_packed.is_contiguous():
        raise ValueError("w_packed must be contiguous (use pack_conv_weight / pack_linear_weight)")
    if residual is not None:
        if residual.shape != out.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != out shape {tuple(out.shape)}")
        if residual.dtype not in _CONV_FLOAT_DTYPES or residual.device != x.device:
            raise ValueError(f"residual: dtype {residual.dtype} on {residual.device} not supported")
        if residual.shape[-1] > 1 and residual.stride(-1) != 1:
            raise ValueError("residual: channels (last dim) must have stride 1")
    k = out.shape[-1]
    _conv_check_vec(scale, k, "scale", x.device)
    _conv_check_vec(bias, k, "bias", x.device)
    if act not in _CONV_ACTS:
        raise ValueError(f"act must be one of the ACT_* codes {_CONV_ACTS}, got {act!r}")


def _conv_outputs(out, act):
    """`out` and `act` as lists: the destinations and one activation code for each.

    A tensor is one destination; a tuple / list of 1..4 tensors several, with act one code for
    all of them or a tuple / list of one code per destination.  Codes are checked later.
    """
    if isinstance(out, torch.Tensor):
        return [out], [act]
    outs = list(out)
    if not 1 <= len(outs) <= 4 or not all(isinstance(o, torch.Tensor) for o in outs):
        raise ValueError(f"out must be a tensor or a tuple of 1 to 4 tensors, got {type(out).__name__} "
                         f"of {len(outs)} items")
    acts = list(act) if isinstance(act, (tuple, list)) else [act] * len(outs)
    if len(acts) != len(outs):
        raise ValueError(f"act has {len(acts)} codes for {len(outs)} outputs")
    return outs, acts


def _conv_check_several(x, w_packed, outs, acts, residual, scale, bias, gemm_geometry, path):
    """Checks for several destinations: one wide 1x1 GEMM whose column ranges land in `outs`."""
    if residual is not None:
        raise ValueError("several outputs cannot take a residual: fuse the residual into a single-output conv")
    if not gemm_geometry or path not in (None, "gemm") or _conv_rows(x) is None:
        raise ValueError("several outputs need the gemm path: a 1x1, stride-1, unpadded, ungrouped conv "
                         "over evenly strided rows of x")
    for i, o in enumerate(outs):
        if tuple(o.shape[:3]) != tuple(outs[0].shape[:3]):
            raise ValueError(f"out[{i}] has (N, P, Q) = {tuple(o.shape[:3])} but out[0] has "
                             f"{tuple(outs[0].shape[:3])}: several outputs share their pixels")
        if o.shape[3] < 1:
            raise ValueError(f"out[{i}] has no channels")
        if (o.shape[3] > 1 and o.stride(3) != 1) or _conv_rows(o) is None:
            raise ValueError(f"out[{i}]: channels must have stride 1 and rows (N, P, Q) be evenly strided "
                             f"(a channel slice is fine, a spatial crop is not), got strides {o.stride()}")
        _conv_check_common(x, w_packed, o, None, None, None, acts[i])
    k = sum(o.shape[3] for o in outs)
    _conv_check_vec(scale, k, "scale", x.device)
    _conv_check_vec(bias, k, "bias", x.device)


def _conv_check_gate(x, in_gate):
    """The gate: one value per sample and input channel, an (N, C) or (N, 1, 1, C) tensor (any strides)."""
    if in_gate is None:
        return
    n, c = x.shape[0], x.shape[-1]
    if tuple(in_gate.shape) not in ((n, c), (n, 1, 1, c)):
        raise ValueError(f"in_gate must have shape {(n, c)} or {(n, 1, 1, c)} (one value per sample and input "
                         f"channel), got {tuple(in_gate.shape)}")
    if in_gate.dtype not in _CONV_FLOAT_DTYPES or in_gate.device != x.device:
        raise ValueError(f"in_gate: dtype {in_gate.dtype} on {in_gate.device}, expected a float tensor on {x.device}")


def _conv_check_ln(x, k, in_ln, eps, in_scale, in_shift, in_act, in_gate, path):
    """conv2d's layer norm: None when off, else (in_ln, eps) for the gemm launch."""
    if in_ln is None:
        return None
    _conv_check_vec(in_ln, k, "in_ln", x.device)
    if in_scale is not None or in_shift is not None or in_act != ACT_NONE or in_gate is not None:
        raise ValueError("in_ln: a layer norm of the input cannot follow a prologue or a gate (its statistics "
                         "are those of x as loaded)")
    if path not in (None, "gemm"):
        raise ValueError(f"in_ln: a layer norm folds into the gemm path only, not {path!r}")
    if not float(eps) > 0.0:
        raise ValueError(f"in_ln_eps must be positive, got {eps!r}")
    return in_ln, float(eps)


def fold_layer_norm(w, b, gamma, beta, dtype):
    """A 1x1 conv's (out, in) weight `w` (any trailing 1x1 dims) and bias `b` with the layer norm of
    its input (affine gamma, beta over the in channels) folded in, for ``conv2d(in_ln=...)``.

    Returns (w_packed, bias, in_ln): W' = W * gamma[c] packed in `dtype`, bias + W @ beta (fp32),
    and in_ln[k] = the sum over c of W'[k, c] as packed (rounded), summed in float64, so that the
    kernel's mean * in_ln cancels exactly what the rounded weights add up.
    """
    w2 = w.detach().reshape(w.shape[0], w.shape[1]).double()
    scaled = pack_conv_weight((w2 * gamma.double().reshape(1, -1))[:, :, None, None].to(dtype), 1, dtype)
    bias = b.double() + w2 @ beta.double()
    return scaled, bias.float(), scaled.double().sum(dim=0).float().contiguous()


def _conv_check_prologue(x, in_scale, in_shift, in_act):
    c = x.shape[-1]
    _conv_check_vec(in_scale, c, "in_scale", x.device)
    _conv_check_vec(in_shift, c, "in_shift", x.device)
    if in_act not in _CONV_ACTS:
        raise ValueError(f"in_act must be one of the ACT_* codes {_CONV_ACTS}, got {in_act!r}")


def _conv_fusion_consts(in_scale, in_shift, in_act, residual_after_act, out_scale, in_gate=None, gate_hw=1):
    """Kernel arguments of the prologue and of the epilogue's tail, common to the three paths: the
    switches and scalars (a launch plan keeps them; ``_conv_fusion_ptrs`` gives the tensors).

    Every switch is a constexpr: the defaults (no prologue, no gate, residual before act,
    out_scale 1) compile to today's arithmetic.  in_gate: None or the (N, ..., C) gate
    (``_conv_check_gate``); gate_hw: the rows of the GEMM path's A per sample (H * W of x).
    """
    return dict(
        gate_hw=int(gate_hw),
        stride_gn=0 if in_gate is None else in_gate.stride(0), stride_gc=0 if in_gate is None else in_gate.stride(-1),
        HAS_GATE=in_gate is not None,
        out_scale=float(out_scale),
        HAS_PRE=in_scale is not None or in_shift is not None or in_act != ACT_NONE,
        HAS_IN_SCALE=in_scale is not None, HAS_IN_SHIFT=in_shift is not None, IN_ACT=in_act,
        RES_AFTER_ACT=bool(residual_after_act), HAS_OUT_SCALE=float(out_scale) != 1.0,
    )


def _conv_fusion_ptrs(in_scale, in_shift, in_gate, dummy):
    """The prologue's tensors (``_conv_fusion_consts``' other half), `dummy` for absent ones (never read)."""
    return dict(gate_ptr=dummy if in_gate is None else in_gate,
                in_scale_ptr=dummy if in_scale is None else in_scale,
                in_shift_ptr=dummy if in_shift is None else in_shift)


def _conv_pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(e) for e in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


def _conv_pads(pad):
    if isinstance(pad, int):
        return (pad, pad, pad, pad)
    pad = tuple(int(e) for e in pad)
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    if len(pad) != 4 or min(pad) < 0:
        raise ValueError(f"pad must be (top, bottom, left, right) with non-negative entries, got {pad}")
    return pad


def conv_path(x, out, *, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
              residual=None) -> str:
    """The path ``conv2d`` takes by default: "gemm", "depthwise", "implicit_flat" or "implicit_tap"."""
    kh, kw = _conv_pair(kernel, "kernel")
    c, k = x.shape[3], out.shape[3]
    if (kh, kw) == (1, 1) and _conv_pair(stride, "stride") == (1, 1) and _conv_pads(pad) == (0, 0, 0, 0) \
            and groups == 1 and _conv_rows(x) is not None and _conv_rows(out) is not None \
            and (residual is None or _conv_rows(residual) is not None):
        return "gemm"
    if groups > 1 and groups == c == k:
        return "depthwise"
    return "implicit_tap" if (c // groups) % 16 == 0 else "implicit_flat"


def _conv_rows(t):
    """t (N, H, W, C) as an (N*H*W, C) matrix view, or None when the rows are not evenly strided."""
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:
        return None


_CONV_EPILOGUE_TAIL = ("out_scale", "RES_AFTER_ACT", "HAS_OUT_SCALE")  # _conv_fusion_consts' epilogue keys


def _conv_split_consts(fusion):
    """``_conv_fusion_consts``' dict as (the prologue's arguments, the epilogue tail's): split-K
    applies the first while loading, the second in the reduce kernel."""
    return ({k: v for k, v in fusion.items() if k not in _CONV_EPILOGUE_TAIL},
            {k: fusion[k] for k in _CONV_EPILOGUE_TAIL})


def _conv_splitk_workspace(slices, m, n, device):
    # Per call, from torch's caching allocator: no allocation on the device after the first
    # call of a size, and inside CUDA graph capture it comes from the graph's private pool.
    # A cached buffer would be shared by every launch of a program, unsafe across streams.
    return torch.empty((slices, m, n), dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------------
# Launch plans: every decision made once per distinct call
# --------------------------------------------------------------------------------------
#
# Everything ``conv2d`` and ``linear`` check and decide before a launch -- the argument checks,
# the path, block sizes, split-K, the grid, the scalar and constexpr arguments -- is a plan
# (``_ConvPlan``), made once per distinct call and kept by host.py's ``_host_plan``; a later call
# that matches only passes its tensors to the plan's ``run``.


class _ConvPlan:
    """One call's decisions: ``run(plan, x, w_packed, out, residual, scale, bias, in_scale, in_shift,
    in_gate, in_ln)`` launches with them; the other fields are what that run function reads."""

    unwrap = False  # conv2d's `out` is a tuple of one destination: run gets out[0]

    def __init__(self, run, **fields):
        self.run = run
        self.__dict__.update(fields)


def _conv_run_nothing(pl, *tensors):
    """An empty output: nothing to launch."""


def _conv_reduce_plan(slices, m, n, device, out_strides, pq, res_strides, has_scale, has_bias, has_res, act,
                      epilogue_tail, stride_oc, interpreted):
    """(grid, positional, keyword) arguments of ``_conv_splitk_reduce_kernel`` after split-K's
    slices; out / residual addressed by (n, p, q) strides over pq = (P, Q) (a matrix: (1, 1) and
    (row stride, 0, 0))."""
    bm, bn = (32, 32) if device.type == "cpu" else (32, 64)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    args = (m, n, pq[0], pq[1], *out_strides, *res_strides)
    kwargs = dict(SPLIT_K=slices, HAS_SCALE=has_scale, HAS_BIAS=has_bias, HAS_RES=has_res, ACT=act,
                  INTERPRETED=interpreted, BLOCK_M=bm, BLOCK_N=bn, **epilogue_tail, stride_oc=stride_oc,
                  num_warps=4, **_host_pdl(device))
    return grid, args, kwargs


def _conv_launch_reduce(reduce, ws, out, residual, scale, bias):
    """out = epilogue(sum of ws's slices) by ``_conv_splitk_reduce_kernel`` (``_conv_reduce_plan``)."""
    grid, args, kwargs = reduce
    _conv_splitk_reduce_kernel[grid](
        ws, out, residual if residual is not None else out,
        scale if scale is not None else out, bias if bias is not None else out, *args, **kwargs)


def _conv_gemm_plan(a, w_packed, outs, residual, scale, bias, acts, *, allow_tf32, block_m, block_n, block_k,
                    swizzle_m, num_warps, num_stages, fusion=None, split_k=1, ln_eps=None, tma=False):
    """The plan of out = act(a @ w_packed ...) by ``_conv_gemm_kernel`` (or split-K's two kernels),
    launched by ``_conv_launch_gemm``.

    outs: a list of 1..4 (M, N_i) output matrices that take the columns in order, acts one code
    per matrix.  fusion: ``_conv_fusion_consts(...)`` (default: no prologue, plain epilogue).
    split_k: as ``conv2d``'s (one destination only).  ln_eps: None, or the eps of ``conv2d``'s
    folded layer norm: never split (the row statistics need every column of A in one program).
    tma: where it applies (``_conv_tma_applies``), also plan ``_conv_gemm_tma_kernel``
    (``_conv_tma_plan``), launched instead whenever this call's A and B start 16-byte aligned.
    """
    m, kdim = a.shape
    n = w_packed.shape[1]
    cpu = a.device.type == "cpu"
    bm, bn, bk, warps, stages = conv_default_blocks("gemm", m, n, kdim, a.dtype, cpu)
    bm, bn, bk = block_m or bm, block_n or bn, block_k or bk
    warps = num_warps or (8 if bm * bn >= 128 * 128 else 4)
    stages = num_stages or stages
    dummy = outs[0]
    fusion = fusion or _conv_fusion_consts(None, None, ACT_NONE, False, 1.0)
    slices, slice_iters = _conv_split_plan(split_k, "gemm", m, n, kdim, (bm, bn, bk), a.device) \
        if len(outs) == 1 and ln_eps is None else (1, 0)
    pdl = _host_pdl(a.device)
    common = dict(INPUT_PRECISION=_conv_input_precision(a.dtype, allow_tf32), INTERPRETED=_conv_interpreted(a),
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SWIZZLE_M=swizzle_m)
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    if slices > 1:
        prologue, tail = _conv_split_consts(fusion)
        return _ConvPlan(
            None, slices=slices, m=m, n=n, device=a.device, grid=(tiles, slices),
            args=(m, n, kdim, a.stride(0), w_packed.stride(0)),
            kwargs=dict(**common, SLICE_ITERS=slice_iters, **prologue, num_warps=warps, num_stages=stages, **pdl),
            reduce=_conv_reduce_plan(slices, m, n, a.device, (dummy.stride(0), 0, 0), (1, 1),
                                     (residual.stride(0) if residual is not None else 0, 0, 0),
                                     scale is not None, bias is not None, residual is not None, acts[0], tail,
                                     dummy.stride(-1), _conv_interpreted(a)))
    # destination i takes columns [ends[i-1], ends[i]); missing destinations are empty
    ends = [sum(o.shape[1] for o in outs[:i + 1]) for i in range(len(outs))] + [n] * (4 - len(outs))
    more = outs[1:] + [dummy] * (4 - len(outs))
    more_acts = acts[1:] + [ACT_NONE] * (4 - len(acts))
    return _ConvPlan(
        None, slices=1, grid=(tiles,),
        tma=_conv_tma_plan(a, w_packed, dummy, residual, scale, bias, acts[0], fusion, common, tiles, warps, stages)
        if tma and _conv_tma_applies(a, w_packed, outs, fusion, ln_eps, (bm, bn, bk)) else None,
        args=(m, n, kdim, a.stride(0), w_packed.stride(0), dummy.stride(0),
              residual.stride(0) if residual is not None else 0),
        kwargs=dict(
            HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=acts[0],
            **common,
            stride_o1m=more[0].stride(0), stride_o2m=more[1].stride(0), stride_o3m=more[2].stride(0),
            N1=ends[0], N2=ends[1], N3=ends[2],
            NUM_OUT=len(outs), ACT1=more_acts[0], ACT2=more_acts[1], ACT3=more_acts[2], **fusion,
            stride_oc=dummy.stride(1), num_warps=warps, num_stages=stages, **pdl,
            # passed only when on: every launch without a layer norm keeps its specialization
            **({} if ln_eps is None else dict(ln_eps=float(ln_eps), HAS_LN=True))))


def conv_tma_programs(tiles: int, sms: int) -> int:
    """The persistent grid of ``_conv_gemm_tma_kernel``: one program per SM, or fewer when there
    are fewer tiles; 2 without a GPU (sms = 0: the interpreter), so tests run the tile loop."""
    return min(tiles, sms if sms > 0 else 2)


def conv_tma_supported(dtype: torch.dtype, a_row_stride: int, b_row_stride: int, blocks) -> str | None:
    """Why A (rows a_row_stride elements apart) and B cannot be read through TMA descriptors with
    blocks (BLOCK_M, BLOCK_N, BLOCK_K), or None when they can.  A copy's rows must be 16-byte
    multiples apart and its box at most 256 elements a side, its inner side 16 bytes or more.
    (The base addresses must be 16-byte aligned too: checked at each launch, which falls back to
    ``_conv_gemm_kernel`` when they are not.)  Shared with the tuner, which proposes tma=True only
    where this is None."""
    size = torch.empty((), dtype=dtype).element_size()
    bm, bn, bk = blocks[:3]
    if (a_row_stride * size) % 16 or (b_row_stride * size) % 16:
        return (f"rows of x ({a_row_stride} channels apart) and of the packed weight ({b_row_stride}) must be "
                f"multiples of 16 bytes apart")
    if max(bm, bn, bk) > 256 or min(bk, bn) * size < 16:
        return f"blocks {bm}x{bn}x{bk} exceed a TMA box (at most 256 a side, inner sides of 16 bytes or more)"
    return None


def _conv_tma_applies(a, w_packed, outs, fusion, ln_eps, blocks) -> bool:
    """Whether ``conv2d(tma=True)`` runs this single-pass gemm-path call through descriptors: one
    destination, no prologue, gate or layer norm, rows TMA can copy (``conv_tma_supported``), and
    the interpreter or a GPU with TMA."""
    if len(outs) > 1 or ln_eps is not None or fusion["HAS_PRE"] or fusion["HAS_GATE"]:
        return False
    if conv_tma_supported(a.dtype, a.stride(0), w_packed.stride(0), blocks) is not None:
        return False
    return a.device.type == "cpu" or _host_hopper(a.device)  # the interpreter, or sm_90+ (meta plays one)


def _conv_tma_plan(a, w_packed, out, residual, scale, bias, act, fusion, common, tiles, warps, stages):
    """What ``_conv_launch_tma`` needs besides the tensors: the descriptors' shapes, strides and
    blocks, the grid and the kernel's arguments."""
    m, kdim = a.shape
    n = w_packed.shape[1]
    bm, bn, bk = common["BLOCK_M"], common["BLOCK_N"], common["BLOCK_K"]
    programs = conv_tma_programs(tiles, _conv_sm_count(a.device))
    _, tail = _conv_split_consts(fusion)
    return _ConvPlan(
        None, grid=(programs,),
        a_layout=([m, kdim], [a.stride(0), 1], [bm, bk]), b_layout=([kdim, n], [w_packed.stride(0), 1], [bk, bn]),
        args=(m, n, out.stride(0), residual.stride(0) if residual is not None else 0, tail["out_scale"],
              out.stride(1)),
        kwargs=dict(HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=act,
                    RES_AFTER_ACT=tail["RES_AFTER_ACT"], HAS_OUT_SCALE=tail["HAS_OUT_SCALE"], **common,
                    K_ITERS=triton.cdiv(kdim, bk), NUM_PROGS=programs, TILES_PER_PROG=triton.cdiv(tiles, programs),
                    num_warps=warps, num_stages=stages, **_host_pdl(a.device)))


def _conv_launch_tma(t, a, w_packed, out, residual, scale, bias):
    """Launch a ``_conv_tma_plan`` on this call's A, B (16-byte aligned) and destination."""
    _conv_gemm_tma_kernel[t.grid](
        TensorDescriptor(a, *t.a_layout), TensorDescriptor(w_packed, *t.b_layout), out,
        residual if residual is not None else out, scale if scale is not None else out,
        bias if bias is not None else out, *t.args, **t.kwargs)


def _conv_launch_gemm(g, a, w_packed, outs, residual, scale, bias, ptrs, in_ln):
    """Launch a ``_conv_gemm_plan`` on this call's matrices (a, outs, residual as planned),
    vectors, prologue tensors `ptrs` (``_conv_fusion_ptrs``) and folded layer norm `in_ln`."""
    dummy = outs[0]
    if g.slices > 1:
        ws = _conv_splitk_workspace(g.slices, g.m, g.n, g.device)
        _conv_gemm_splitk_kernel[g.grid](a, w_packed, ws, *g.args, **g.kwargs, **ptrs)
        _conv_launch_reduce(g.reduce, ws, dummy, residual, scale, bias)
        return
    if g.tma is not None and a.data_ptr() % 16 == 0 and w_packed.data_ptr() % 16 == 0:
        _conv_launch_tma(g.tma, a, w_packed, dummy, residual, scale, bias)
        return
    more = outs[1:] + [dummy] * (4 - len(outs))
    _conv_gemm_kernel[g.grid](
        a, w_packed, dummy, residual if residual is not None else dummy,
        scale if scale is not None else dummy, bias if bias is not None else dummy, *g.args,
        out1_ptr=more[0], out2_ptr=more[1], out3_ptr=more[2], **g.kwargs, **ptrs,
        **({} if in_ln is None else dict(ln_c_ptr=in_ln)))


def _conv_run_gemm(pl, x, w_packed, out, residual, scale, bias, in_scale, in_shift, in_gate, in_ln):
    """conv2d's gemm path: x, each destination and the residual as (pixels, channels) matrices."""
    outs = [_conv_rows(o) for o in out] if pl.several else [_conv_rows(out)]
    ptrs = _conv_fusion_ptrs(in_scale, in_shift, in_gate, out[0] if pl.several else out)
    _conv_launch_gemm(pl.gemm, _conv_rows(x), w_packed, outs,
                      _conv_rows(residual) if residual is not None else None, scale, bias, ptrs, in_ln)


def _conv_run_depthwise(pl, x, w_packed, out, residual, scale, bias, in_scale, in_shift, in_gate, in_ln):
    _conv_depthwise_kernel[pl.grid](
        x, w_packed, out, residual if residual is not None else out,
        scale if scale is not None else out, bias if bias is not None else out,
        *pl.args, **pl.kwargs, **_conv_fusion_ptrs(in_scale, in_shift, in_gate, out))


def _conv_run_implicit(pl, x, w_packed, out, residual, scale, bias, in_scale, in_shift, in_gate, in_ln):
    ptrs = _conv_fusion_ptrs(in_scale, in_shift, in_gate, out)
    if pl.slices > 1:
        ws = _conv_splitk_workspace(pl.slices, pl.m, pl.k, pl.device)
        _conv_implicit_splitk_kernel[pl.grid](x, w_packed, ws, *pl.args, **pl.kwargs, **ptrs)
        _conv_launch_reduce(pl.reduce, ws, out, residual, scale, bias)
        return
    _conv_implicit_gemm_kernel[pl.grid](
        x, w_packed, out, residual if residual is not None else out,
        scale if scale is not None else out, bias if bias is not None else out,
        *pl.args, **pl.kwargs, **ptrs)


def conv2d(x, w_packed, out, *, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           scale=None, bias=None, residual=None, act=ACT_NONE,
           path=None, block_m=None, block_n=None, block_k=None, swizzle_m=8,
           num_warps=None, num_stages=None, allow_tf32=False,
           in_scale=None, in_shift=None, in_act=ACT_NONE, residual_after_act=False, out_scale=1.0,
           split_k=None, in_gate=None, in_ln=None, in_ln_eps=1e-5, tma=False) -> None:
    """out = act((conv(x, w) * scale[k] + bias[k]) + residual), written into `out`.

    x:        (N, H, W, C) NHWC, any strides with stride(3) == 1 (may be a channel slice)
    w_packed: pack_conv_weight(w, groups, x.dtype) of the OIHW weight w
    out:      (N, P, Q, K) NHWC view, any channel stride (a channel slice of a concat, or every
              g-th channel of one: a channel shuffle's slot), or a tuple of destinations (below)
    residual: None or (N, P, Q, K) NHWC view, stride(3) == 1
    scale, bias: None or (K,) vectors (fp32); pad = (top, bottom, left, right); kernel = (kh, kw)
    dtypes: x/w/residual/out in float32, float16 or bfloat16; accumulation always fp32; the
    epilogue (scale, bias, residual, act) is applied to the fp32 accumulator, then cast to
    out.dtype once.
    Fusions, all off by default (and then bit-identical to the plain conv):
    * prologue: in_scale, in_shift (None or contiguous (C,) float vectors, indexed by x's
      channel) and in_act.  The conv reads x' = in_act(x * in_scale[c] + in_shift[c])
      (computed in fp32, rounded to x.dtype): F.conv2d(in_act(bn(x)), w, padding=...), whose
      padding halo is 0 *after* the normalisation.
    * gate: in_gate, None or an (N, C) / (N, 1, 1, C) tensor of any strides (squeeze-and-
      excitation's per-sample, per-channel scale).  The conv reads x * in_gate[n, c] instead of x,
      computed in fp32 and rounded to x.dtype (what a separate mul would have stored), before
      the prologue above: F.conv2d(in_act(bn(x * gate)), w, ...).  Every path; the halo stays 0.
    * layer norm: in_ln, None or a contiguous (K,) float vector: the conv reads the layer norm of
      x over its C channels at each pixel (eps in_ln_eps) instead of x, its affine folded at load
      into w_packed (W * gamma[c], rounded to x.dtype) and bias (+ W @ beta); in_ln[k] is the sum
      over c of w_packed[c, k] as packed (``fold_layer_norm``).  The gemm path only (a 1x1,
      stride-1, unpadded, ungrouped conv), no prologue and no gate; never split (split_k is
      ignored: the row statistics need all C channels in one program).  See "Layer norm folded
      into the GEMM" in the module docstring for the numerics.
    * residual_after_act=True: y = act(conv * scale + bias) + residual instead of
      act(conv * scale + bias + residual) (no effect without a residual).
    * out_scale: y * out_scale, last.  With the line above and 0.5: (act(conv) + r) / 2.
    * several destinations: out = (out_0, ..., out_{D-1}), 1 <= D <= 4, NHWC views with equal
      (N, P, Q), stride(3) == 1 and evenly strided rows (channel slices are fine), dtypes may
      differ; their channel counts K_i sum to K and out_i receives output channels
      [K_0 + ... + K_{i-1}, K_0 + ... + K_i).  act is one code for all or a tuple of one per
      destination; scale / bias are (K,) over the concatenation.  The gemm path only (1x1,
      stride 1, unpadded, ungrouped, x's rows evenly strided) and no residual: otherwise
      ValueError.  The prologue and out_scale apply as above.
    Tuning knobs (defaults per path and device): path ("gemm", "depthwise", "implicit_flat",
    "implicit_tap"; default ``conv_path(...)``), block_m, block_n (block_c for depthwise),
    block_k, swizzle_m, num_warps, num_stages, allow_tf32 (fp32 inputs only), split_k.
    split_k (the gemm and implicit paths, one destination): the reduction in at most split_k
    slices of whole BLOCK_K blocks, each partial product in fp32 into a workspace, then a second
    kernel sums them in a fixed order (the same bits every run) and applies the epilogue.  None
    (default): ``conv_default_split_k`` on a GPU (launches of too few tiles to fill it), 1 on
    the CPU interpreter; 1: the single-pass kernel.
    tma=True: where the gemm path's single-pass kernel would run (one destination, not split), with
    no prologue, gate or layer norm, rows 16-byte multiples apart (``conv_tma_supported``), on a
    GPU with TMA (sm_90+) or the interpreter, and x and w_packed starting 16-byte aligned (checked
    each call): ``_conv_gemm_tma_kernel`` instead, a persistent kernel of ``conv_tma_programs``
    programs reading x's rows and the weight through TMA tensor descriptors -- the same sums in
    the same order, so the same result.  Elsewhere the knob changes nothing (a tuned table may
    carry it to a launch it does not fit).  Off by default until a GPU measures it faster.
    """
    tensors = (x, w_packed, out, residual, scale, bias, in_scale, in_shift, in_gate, in_ln)
    key, plan = _host_plan_lookup(conv_plan, tensors, (kernel, stride, pad, dilation, groups, act, path, block_m,
                                                       block_n, block_k, swizzle_m, num_warps, num_stages, allow_tf32,
                                                       in_act, residual_after_act, out_scale, split_k, in_ln_eps,
                                                       tma))
    if plan is None:
        plan = _host_plan_keep(key, conv_plan(
            x, w_packed, out, kernel=kernel, stride=stride, pad=pad, dilation=dilation, groups=groups,
            scale=scale, bias=bias, residual=residual, act=act, path=path, block_m=block_m, block_n=block_n,
            block_k=block_k, swizzle_m=swizzle_m, num_warps=num_warps, num_stages=num_stages,
            allow_tf32=allow_tf32, in_scale=in_scale, in_shift=in_shift, in_act=in_act,
            residual_after_act=residual_after_act, out_scale=out_scale, split_k=split_k, in_gate=in_gate,
            in_ln=in_ln, in_ln_eps=in_ln_eps, tma=tma))
    if plan.unwrap:
        tensors = (x, w_packed, out[0]) + tensors[3:]
    plan.run(plan, *tensors)


def conv_plan(x, w_packed, out, *, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
              scale=None, bias=None, residual=None, act=ACT_NONE,
              path=None, block_m=None, block_n=None, block_k=None, swizzle_m=8,
              num_warps=None, num_stages=None, allow_tf32=False,
              in_scale=None, in_shift=None, in_act=ACT_NONE, residual_after_act=False, out_scale=1.0,
              split_k=None, in_gate=None, in_ln=None, in_ln_eps=1e-5, tma=False) -> _ConvPlan:
    """``conv2d``'s checks and decisions for these arguments (ValueError on misuse), as a plan:
    ``plan.run(plan, x, w_packed, out, residual, scale, bias, in_scale, in_shift, in_gate, in_ln)``
    launches it on any tensors of the same shapes, strides, dtypes and devices."""
    kh, kw = _conv_pair(kernel, "kernel")
    sh, sw = _conv_pair(stride, "stride")
    dh, dw = _conv_pair(dilation, "dilation")
    pt, pb, pl, pr = _conv_pads(pad)
    outs, acts = _conv_outputs(out, act)
    unwrap = len(outs) == 1 and not isinstance(out, torch.Tensor)
    out, act = outs[0], acts[0]
    if x.dim() != 4 or any(o.dim() != 4 for o in outs):
        raise ValueError(f"x and out must be NHWC 4-d tensors, got {tuple(x.shape)} and "
                         f"{', '.join(str(tuple(o.shape)) for o in outs)}")
    n, h, w, c = x.shape
    n2, p, q, _ = out.shape
    k = sum(o.shape[3] for o in outs)
    if len(outs) == 1:
        _conv_check_common(x, w_packed, out, residual, scale, bias, act)
    else:
        gemm_geometry = (kh, kw, sh, sw, pt, pb, pl, pr, groups) == (1, 1, 1, 1, 0, 0, 0, 0, 1)
        _conv_check_several(x, w_packed, outs, acts, residual, scale, bias, gemm_geometry, path)
    _conv_check_prologue(x, in_scale, in_shift, in_act)
    _conv_check_gate(x, in_gate)
    ln = _conv_check_ln(x, k, in_ln, in_ln_eps, in_scale, in_shift, in_act, in_gate, path)
    ln_eps = None if ln is None else ln[1]
    if x.shape[3] > 1 and x.stride(3) != 1:
        raise ValueError(f"x: channels (dim 3) must have stride 1, got strides {x.stride()}")
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise ValueError("kernel, stride and dilation must be positive")
    if n2 != n:
        raise ValueError(f"batch of out ({n2}) != batch of x ({n})")
    if groups < 1 or c % groups or k % groups:
        raise ValueError(f"groups={groups} must divide C={c} and K={k}")
    cg, kg = c // groups, k // groups
    if tuple(w_packed.shape) != (kh * kw * cg, k):
        raise ValueError(f"w_packed has shape {tuple(w_packed.shape)}, expected {(kh * kw * cg, k)} "
                         f"= (kh*kw*C/groups, K): use pack_conv_weight")
    p_want = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    q_want = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if (p, q) != (p_want, q_want):
        raise ValueError(f"out is {p}x{q} but the convolution gives {p_want}x{q_want}")
    if n * p * q * k == 0:
        return _ConvPlan(_conv_run_nothing)

    fusion = _conv_fusion_consts(in_scale, in_shift, in_act, residual_after_act and residual is not None,
                                 out_scale, in_gate, h * w)
    if split_k not in (None, 1) and (len(outs) > 1 or (path or "") == "depthwise"):
        raise ValueError(f"split_k={split_k!r}: split-K is for one destination on the gemm and implicit paths")
    if tma is not False and tma is not True:
        raise ValueError(f"tma must be True or False, got {tma!r}")
    gemm = dict(allow_tf32=allow_tf32, block_m=block_m, block_n=block_n, block_k=block_k, swizzle_m=swizzle_m,
                num_warps=num_warps, num_stages=num_stages, fusion=fusion, ln_eps=ln_eps)
    if len(outs) > 1:  # checked above: the gemm path, no residual (and no TMA kernel)
        return _ConvPlan(_conv_run_gemm, several=True, gemm=_conv_gemm_plan(
            _conv_rows(x), w_packed, [_conv_rows(o) for o in outs], None, scale, bias, acts, **gemm))

    path = path or conv_path(x, out, kernel=(kh, kw), stride=(sh, sw), pad=(pt, pb, pl, pr),
                             dilation=(dh, dw), groups=groups, residual=residual)
    if ln is not None and path != "gemm":
        raise ValueError(f"in_ln: a layer norm folds into the gemm path only (a 1x1, stride-1, unpadded, "
                         f"ungrouped conv over evenly strided rows), not {path!r}")
    cpu = x.device.type == "cpu"
    has = dict(HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=act)
    rs = residual.stride() if residual is not None else (0, 0, 0, 0)
    m = n * p * q

    if path == "gemm":
        a, o = _conv_rows(x), _conv_rows(out)
        r2 = _conv_rows(residual) if residual is not None else None
        if (kh, kw, sh, sw, pt, pb, pl, pr, groups) != (1, 1, 1, 1, 0, 0, 0, 0, 1) or a is None or o is None \
                or (residual is not None and r2 is None):
            raise ValueError("path='gemm' needs a 1x1, stride-1, unpadded, ungrouped conv over evenly strided rows")
        return _ConvPlan(_conv_run_gemm, several=False, unwrap=unwrap, gemm=_conv_gemm_plan(
            a, w_packed, [o], r2, scale, bias, [act], split_k=split_k, tma=tma, **gemm))

    if path == "depthwise":
        if split_k not in (None, 1):
            raise ValueError(f"split_k={split_k!r}: the depthwise path has no split-K")
        if not (cg == 1 and kg == 1):
            raise ValueError("path='depthwise' needs groups == C == K")
        bm, bc, _, warps, stages = conv_default_blocks("depthwise", m, c, kh * kw, x.dtype, cpu)
        bm, bc = block_m or bm, block_n or bc
        return _ConvPlan(
            _conv_run_depthwise, unwrap=unwrap, grid=(triton.cdiv(m, bm), triton.cdiv(c, bc)),
            args=(m, h, w, p, q, c, x.stride(0), x.stride(1), x.stride(2),
                  out.stride(0), out.stride(1), out.stride(2), rs[0], rs[1], rs[2]),
            kwargs=dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=pt, PW=pl, DH=dh, DW=dw, **has,
                        INTERPRETED=_conv_interpreted(x), BLOCK_M=bm, BLOCK_C=bc, **fusion, stride_oc=out.stride(3),
                        num_warps=num_warps or warps, num_stages=num_stages or stages, **_host_pdl(x.device)))

    if path not in ("implicit_flat", "implicit_tap"):
        raise ValueError(f"unknown path {path!r}")
    flat = path == "implicit_flat"
    bm, bn, bk, warps, stages = conv_default_blocks(path, m, kg, kh * kw * cg, x.dtype, cpu, cg=cg)
    bm, bn, bk = block_m or bm, block_n or bn, block_k or bk
    warps = num_warps or (8 if bm * bn >= 128 * 128 else 4)
    stages = num_stages or stages
    grid = (triton.cdiv(m, bm) * triton.cdiv(kg, bn), groups)
    slices, slice_iters = _conv_split_plan(split_k, path, m, kg, kh * kw * cg, (bm, bn, bk), x.device, groups, cg)
    geometry = dict(CG=cg, KH=kh, KW=kw, SH=sh, SW=sw, PH=pt, PW=pl, DH=dh, DW=dw, FLAT=flat)
    common = dict(INPUT_PRECISION=_conv_input_precision(x.dtype, allow_tf32), INTERPRETED=_conv_interpreted(x),
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SWIZZLE_M=swizzle_m)
    if slices > 1:
        prologue, tail = _conv_split_consts(fusion)
        return _ConvPlan(
            _conv_run_implicit, unwrap=unwrap, slices=slices, m=m, k=k, device=x.device, grid=grid + (slices,),
            args=(m, h, w, p, q, kg, k, x.stride(0), x.stride(1), x.stride(2)),
            kwargs=dict(**geometry, **common, SLICE_ITERS=slice_iters, **prologue, num_warps=warps, num_stages=stages,
                        **_host_pdl(x.device)),
            reduce=_conv_reduce_plan(slices, m, k, x.device, out.stride()[:3], (p, q), rs[:3], scale is not None,
                                     bias is not None, residual is not None, act, tail, out.stride(-1),
                                     _conv_interpreted(x)))
    return _ConvPlan(
        _conv_run_implicit, unwrap=unwrap, slices=1, grid=grid,
        args=(m, h, w, p, q, kg, k, x.stride(0), x.stride(1), x.stride(2),
              out.stride(0), out.stride(1), out.stride(2), rs[0], rs[1], rs[2]),
        kwargs=dict(**geometry, **has, **common, **fusion, stride_oc=out.stride(3),
                    num_warps=warps, num_stages=stages, **_host_pdl(x.device)))


def _conv_run_linear(pl, x, w_packed, out, residual, scale, bias, *prologue):
    _conv_launch_gemm(pl.gemm, x, w_packed, [out], residual, None, bias, _conv_fusion_ptrs(None, None, None, out),
                      None)


def linear(x, w_packed, out, *, bias=None, act=ACT_NONE, residual=None,
           block_m=None, block_n=None, block_k=None, swizzle_m=8,
           num_warps=None, num_stages=None, allow_tf32=False) -> None:
    """out = act(x @ W^T + bias [+ residual]), written into `out`.

    x:        (N, F), row stride arbitrary, column stride 1
    w_packed: pack_linear_weight(w, x.dtype) of the PyTorch (O, F) weight
    out:      (N, O), row stride arbitrary, column stride 1; residual likewise
    bias:     None or an (O,) vector (fp32).  Accumulation in fp32; the epilogue runs on the
    fp32 accumulator, then casts to out.dtype once.  Tuning knobs as in ``conv2d``.
    """
    key, plan = _host_plan_lookup(linear_plan, (x, w_packed, out, residual, bias),
                                  (act, block_m, block_n, block_k, swizzle_m, num_warps, num_stages, allow_tf32))
    if plan is None:
        plan = _host_plan_keep(key, linear_plan(
            x, w_packed, out, bias=bias, act=act, residual=residual, block_m=block_m, block_n=block_n,
            block_k=block_k, swizzle_m=swizzle_m, num_warps=num_warps, num_stages=num_stages, allow_tf32=allow_tf32))
    plan.run(plan, x, w_packed, out, residual, None, bias)


def linear_plan(x, w_packed, out, *, bias=None, act=ACT_NONE, residual=None,
                block_m=None, block_n=None, block_k=None, swizzle_m=8,
                num_warps=None, num_stages=None, allow_tf32=False) -> _ConvPlan:
    """``linear``'s checks and decisions (ValueError on misuse), as ``conv_plan``'s are ``conv2d``'s:
    ``plan.run(plan, x, w_packed, out, residual, None, bias)`` launches it."""
    if x.dim() != 2 or out.dim() != 2:
        raise ValueError(f"x and out must be 2-d, got {tuple(x.shape)} and {tuple(out.shape)}")
    _conv_check_common(x, w_packed, out, residual, None, bias, act)
    for name, t in (("x", x), ("out", out)):
        if t.shape[1] > 1 and t.stride(1) != 1:
            raise ValueError(f"{name}: columns must have stride 1, got strides {t.stride()}")
    if out.shape[0] != x.shape[0] or tuple(w_packed.shape) != (x.shape[1], out.shape[1]):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, w_packed {tuple(w_packed.shape)} "
                         f"(expected (F, O) from pack_linear_weight), out {tuple(out.shape)}")
    if out.numel() == 0:
        return _ConvPlan(_conv_run_nothing)
    return _ConvPlan(_conv_run_linear, gemm=_conv_gemm_plan(
        x, w_packed, [out], residual, None, bias, [act], allow_tf32=allow_tf32, block_m=block_m, block_n=block_n,
        block_k=block_k, swizzle_m=swizzle_m, num_warps=num_warps, num_stages=num_stages))
