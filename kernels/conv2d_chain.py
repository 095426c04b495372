"""
Bottleneck chains: a convolution and the 1 x 1 convolution after it, in one kernel
==================================================================================

ResNet's bottleneck ends ``3x3 conv -> relu -> 1x1 conv (expand) -> + residual -> relu``;
NiN's mlpconv is ``conv -> relu -> 1x1 conv -> relu``.  When the intermediate activation
has no other consumer, the two convolutions can run as ONE kernel that keeps the
intermediate tile on chip: it is computed, rounded and multiplied again without ever being
written to memory (nor read back), which saves a launch and 2 * M * C_mid elements of
memory traffic.

Depends on ``conv2d.py``
------------------------
This template calls device and host helpers of ``conv2d.py`` (``_conv_mma``,
``_conv_activation``, ``_conv_out_pixels``, ``_conv_flat_block``, ``_conv_tap_block``,
``_conv_pair``, ``_conv_pads``, ``_conv_pow2``, ``_conv_clamp_block``, ``_conv_input_precision``,
``_conv_interpreted``, ``_conv_check_vec``, ``_conv_sm_count``, the ``ACT_*`` codes,
``pack_conv_weight``), of ``common.py`` (``_common_cast``) and of ``host.py`` without importing
them: the code generator pastes every template into one module, host.py first, then in file-name
order, so ``conv2d.py`` is always defined before this file.  To use it on its own, execute
``host.py``, ``common.py``, ``conv2d.py`` and then this file in one namespace (the tests do
exactly that).

What it computes
----------------
For x (N, H, W, C) NHWC, a first weight W1 packed as (R*S*C, C_mid) and a 1 x 1 weight W2
packed as (C_mid, K) (both ``pack_conv_weight(w, 1, x.dtype)``):

    mid = act1(conv(x, W1) + bias1)          # any kernel / stride / padding / dilation; groups: below
    mid = mid rounded to x.dtype              # what the unfused program would store and re-read
    out = act2(mid @ W2 + bias2 + residual)   # the 1 x 1, stride-1 second conv

so the result is that of two ``conv2d`` calls (up to summation order), with one launch
(two when C_mid is split, below) and no intermediate tensor.

The kernel
----------
Unsplit, one program owns BLOCK_M output pixels and ALL C_mid intermediate channels (padded
to the power of two MID >= 16, a compile-time constant; at most ``CHAIN_MAX_MID``):

1. the first conv is an implicit GEMM into a (BLOCK_M, MID) fp32 accumulator, with the
   address arithmetic of ``conv2d.py``'s ``_conv_implicit_gemm_kernel`` (its helpers
   ``_conv_tap_block`` and ``_conv_flat_block``): tap-major
   (one filter tap and BLOCK_K channels per iteration) when C % 16 == 0, the flattened
   (r, s, c) walk otherwise, and for a 1 x 1 / stride-1 / unpadded first conv the "plain"
   walk (each output pixel's row of x is the A row: no halo test);
2. epilogue 1 on the fp32 accumulator (bias1, act1), then one rounding to x.dtype;
   the padding columns C_mid .. MID-1 are forced to exactly 0 (act1 = sigmoid would make
   them 0.5), and W2's padding rows are masked loads of 0 besides;
3. a loop over the output channels, BLOCK_N at a time: acc2 = mid @ W2[:, tile], then
   epilogue 2 (bias2, residual, act2) on the fp32 accumulator and a masked store.

Grid: (cdiv(N*P*Q, BLOCK_M), split_n, split_mid); unsplit (1, 1), the first conv's work is
done once per pixel block, not once per output-channel tile, so a program's whole reduction
and its K / BLOCK_N second GEMMs run back to back; C_mid is bounded because the (BLOCK_M,
MID) fp32 accumulator and the rounded ``mid`` tile live in registers.

The split grid
--------------
At batch 1 a chain has few pixel blocks (ResNet-50's layer3: 14 x 14 pixels, 4 blocks of 64
for 132 SMs).  Two more grid axes spread it:

* split_n groups of the K outputs (N_PER = whole BLOCK_N tiles each): a program runs stage 3
  over its group only, and RECOMPUTES stages 1-2 for it.  No extra memory traffic (the input
  panel comes from L2), but stage 1 is most of a bottleneck's work (3x3: 9 * C_mid^2 MACs a
  pixel, against C_mid * K = 4 * C_mid^2 for the expand), so alone it gains at most ~1.4x.
* split_mid slices of MID (MID_SLICE = MID / split_mid >= 16 columns): a program computes
  ONE slice of mid -- stage 1 for those columns, epilogue 1 (per column, so exact), the
  rounding -- and that slice's share of the 1x1 conv, sum_{j in slice} mid[., j] * W2[j, .].
  Nothing is recomputed: both GEMMs divide exactly.  The shares are partial sums, so they go
  to an (split_mid, M, K) fp32 workspace, and conv2d.py's ``_conv_splitk_reduce_kernel`` adds
  them in a fixed order and applies epilogue 2 (bias2, residual, act2) on the fp32 sum -- the
  split-K of ``conv2d.py`` applied to the second GEMM, its very reduce kernel -- at the price
  of the workspace's round trip and a second launch.

Grouped first convs
-------------------
ResNeXt's 3x3 has 32 groups of 4..32 channels: mid's column j depends only on the input
channels of j's group.  ``_chain_grouped_kernel`` (``groups=``; W1 packed by
``pack_chain_weight``) computes mid in slices of whole groups, SUB = max(16, pow2(group width))
columns each (``_chain_group_slices``): slice t from only its groups' SUB_C input channels,
times a (KH*KW*SUB_C, SUB) block of W1 that is block-diagonal -- zeros where a column's group
and a channel's differ.  Those zeros are MMA work (SUB / group width times the grouped conv's
MACs: 4x at ResNeXt-50's layer1, 4 channels a group in 16-column slices); a grouped conv and
the 1x1 after it are memory-bound at these widths, which is why it can still pay, and the
performance model counts the zeros to say where it does (``archdsl/passes/chain.py`` declines
the rest).  Only one (BLOCK_M, SUB) slice of mid is live: for each BLOCK_N tile of outputs a
program runs its slices one after another, stage 1 into a small fp32 accumulator, epilogue 1,
the rounding, then ``acc2 += mid_slice @ W2[slice rows, tile]``; so C_mid is not bounded by
CHAIN_MAX_MID (one group must fit), BLOCK_N defaults wide (stage 1 is recomputed once per
output tile) and split_mid is any count of programs sharing the slices (same workspace and
reduce as below).  groups == 1 launches ``_chain_kernel``, unchanged.

``chain_default_split`` weighs the two (and their product) per launch, in multiply-adds of
the busiest SM plus those fixed costs, when the pixel blocks fill less than one wave; the
performance model (``archdsl/runtime/perfmodel.py``, ``predict_chain``) prices the same grid
and picks the same split for ResNet-50's chains.

Numerics: fp32, fp16 or bf16 inputs, fp32 accumulation for both GEMMs, IEEE fp32 products
for fp32 inputs unless ``allow_tf32``.  Under the interpreter (CPU tensors) the same two
workarounds as in ``conv2d.py`` apply: ``_conv_mma`` widens blocks to fp32 before
``tl.dot``, and fp32 -> bf16 roundings (of ``mid`` and of a bf16 output) go through
common.py's ``_common_cast``, because the interpreter's cast truncates.
"""

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

CHAIN_MAX_MID = 256  # the largest C_mid whose (BLOCK_M, C_mid) tile the kernel keeps on chip


# --------------------------------------------------------------------------------------
# Device side
# --------------------------------------------------------------------------------------


@triton.jit
def _chain_kernel(
    x_ptr, w1_ptr, w2_ptr, out_ptr, res_ptr, bias1_ptr, bias2_ptr, ws_ptr,
    M, H, W, P, Q,
    stride_xn, stride_xh, stride_xw,
    stride_on, stride_op, stride_oq,
    stride_rn, stride_rp, stride_rq,
    C: tl.constexpr, C_MID: tl.constexpr, K: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    WALK: tl.constexpr,
    HAS_BIAS1: tl.constexpr, ACT1: tl.constexpr,
    HAS_BIAS2: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    MID_SLICE: tl.constexpr, SPLIT_MID: tl.constexpr, N_PER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """out[n, p, q, k] = act2(sum_j mid[n, p, q, j] * w2[j, k] + bias2[k] + residual[n, p, q, k])
    mid[n, p, q, j]    = round_to_x_dtype(act1(sum_{r,s,c} x[n, ih, iw, c] * w1[(r*KW + s)*C + c, j]
                                              + bias1[j]))
    with ih = p*SH - PH + r*DH, iw = q*SW - PW + s*DW (x is 0 outside 0 <= ih < H, 0 <= iw < W).

    x:        (N, H, W, C) NHWC, strides (stride_xn, stride_xh, stride_xw, 1)
    w1:       (KH*KW*C, C_MID) packed first weight, contiguous
    w2:       (C_MID, K) packed 1x1 weight, contiguous
    out:      (N, P, Q, K) NHWC, strides (stride_on, stride_op, stride_oq, 1);
              residual likewise (stride_rn, ...), read when HAS_RES
    bias1 (C_MID,), bias2 (K,): read when HAS_BIAS1 / HAS_BIAS2
    M = N*P*Q.  PH, PW are the top and left padding.
    WALK: 0 plain (1x1, stride 1, unpadded: P, Q = H, W), 1 tap-major (C % 16 == 0), 2 flat.

    The split (see the module docstring): C_MID padded to a power of two is cut into SPLIT_MID
    slices of MID_SLICE (a power of two >= 16) channels, the K outputs into groups of N_PER (a
    multiple of BLOCK_N).  Program (pid_m, pid_n, pid_j) computes mid's slice pid_j for its
    BLOCK_M pixels and that slice's share of outputs pid_n*N_PER .. +N_PER-1.  SPLIT_MID == 1:
    the share is the whole sum, epilogue 2 is applied and out written.  SPLIT_MID > 1: the fp32
    partial sum goes to ws, an (SPLIT_MID, M, K) contiguous fp32 array, at ws[pid_j, m, k], and
    conv2d.py's ``_conv_splitk_reduce_kernel`` finishes.
    Grid: (cdiv(M, BLOCK_M), cdiv(K, N_PER), SPLIT_MID).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_j = tl.program_id(2)

    # -- rows: output pixels m = (n, p, q); columns of the first GEMM: mid slice pid_j -
    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    n64 = n.to(tl.int64)
    x_rows = x_ptr + n64 * stride_xn
    offs_j = pid_j * MID_SLICE + tl.arange(0, MID_SLICE)
    mask_j = offs_j < C_MID               # padding columns of mid: W1 and bias1 read 0 there
    offs_k = tl.arange(0, BLOCK_K)
    w1_cols = w1_ptr + offs_j[None, :]

    # -- stage 1: the first conv, implicit GEMM into a (BLOCK_M, MID_SLICE) fp32 accumulator
    # the address arithmetic is conv2d.py's (_conv_flat_block, _conv_tap_block): masked
    # loads read 0 for rows past M, the reduction / channel tail and the padding halo
    if WALK == 0:
        ih0 = p                           # 1x1, stride 1, unpadded: P = H, Q = W, no halo
        iw0 = q
    else:
        ih0 = p * SH - PH                 # input row / column of tap (0, 0)
        iw0 = q * SW - PW
    acc1 = tl.zeros((BLOCK_M, MID_SLICE), dtype=tl.float32)
    if WALK == 2:
        # flat: reduction over red = (r*KW + s)*C + c, BLOCK_K indices at a time (small C)
        for k0 in range(0, KH * KW * C, BLOCK_K):
            red = k0 + offs_k
            a_ptrs, a_mask, mask_k, _ = _conv_flat_block(x_rows, ih0, iw0, mask_m, red, H, W,
                                                         stride_xh, stride_xw, C, KW, DH, DW, KH * KW * C)
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
            b = tl.load(w1_cols + red[:, None] * C_MID, mask=mask_k[:, None] & mask_j[None, :], other=0.0)
            acc1 = _conv_mma(a, b, acc1, INPUT_PRECISION, INTERPRETED)
    else:
        # plain / tap-major: one filter tap (r, s) and BLOCK_K of its channels per iteration
        C_BLOCKS: tl.constexpr = (C + BLOCK_K - 1) // BLOCK_K
        for it in range(0, KH * KW * C_BLOCKS):
            a_ptrs, a_mask, red, b_mask, _ = _conv_tap_block(x_rows, ih0, iw0, mask_m, mask_j, it, offs_k, H, W,
                                                             stride_xh, stride_xw, C, KW, DH, DW, BLOCK_K, WALK == 1)
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
            b = tl.load(w1_cols + red[:, None] * C_MID, mask=b_mask, other=0.0)
            acc1 = _conv_mma(a, b, acc1, INPUT_PRECISION, INTERPRETED)

    # -- stage 2: epilogue 1 on the fp32 accumulator, then the one rounding to x.dtype -
    y = acc1
    if HAS_BIAS1:
        y = y + tl.load(bias1_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]
    y = _conv_activation(y, ACT1)
    if SPLIT_MID * MID_SLICE != C_MID:
        y = tl.where(mask_j[None, :], y, 0.0)   # act1(0) may be nonzero (sigmoid(0) = 0.5)
    mid = _common_cast(y, x_ptr.dtype.element_ty, INTERPRETED)  # (BLOCK_M, MID_SLICE): stays on chip

    # -- stage 3: the 1x1 conv over this program's N_PER outputs, BLOCK_N at a time ----
    out_rows = n64 * stride_on + p * stride_op + q * stride_oq
    res_rows = n64 * stride_rn + p * stride_rp + q * stride_rq
    ws_rows = (pid_j * M + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64) * K
    w2_rows = w2_ptr + offs_j[:, None] * K
    offs_n = pid_n * N_PER + tl.arange(0, BLOCK_N)
    for n0 in range(0, N_PER, BLOCK_N):       # a constexpr count; columns past K are masked
        cols = n0 + offs_n
        mask_n = cols < K
        b2 = tl.load(w2_rows + cols[None, :], mask=mask_j[:, None] & mask_n[None, :], other=0.0)
        acc2 = _conv_mma(mid, b2, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), INPUT_PRECISION, INTERPRETED)
        if SPLIT_MID == 1:                    # the whole sum: epilogue 2 on the fp32 accumulator
            _chain_epilogue_store(acc2, out_rows, res_rows, cols, mask_m, mask_n, out_ptr, res_ptr, bias2_ptr,
                                  HAS_BIAS2, HAS_RES, ACT2, INTERPRETED)
        else:                                 # this slice's share: fp32, to the reduce kernel
            tl.store(ws_ptr + ws_rows[:, None] + cols[None, :], acc2, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _chain_grouped_kernel(
    x_ptr, w1_ptr, w2_ptr, out_ptr, res_ptr, bias1_ptr, bias2_ptr, ws_ptr,
    M, H, W, P, Q,
    stride_xn, stride_xh, stride_xw,
    stride_on, stride_op, stride_oq,
    stride_rn, stride_rp, stride_rq,
    C: tl.constexpr, C_MID: tl.constexpr, K: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    WALK: tl.constexpr,
    HAS_BIAS1: tl.constexpr, ACT1: tl.constexpr,
    HAS_BIAS2: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    SUB: tl.constexpr, SUB_REAL: tl.constexpr, SUB_C: tl.constexpr, N_SUB: tl.constexpr, SUBS_PER: tl.constexpr,
    SPLIT_MID: tl.constexpr, N_PER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr = False,  # programmatic dependent launch (host.py's _host_pdl)
):
    """``_chain_kernel``'s result for a GROUPED first conv (see "Grouped first convs" above).

    mid's channels come in slices of SUB_REAL (a whole number of groups; the last slice may be
    short), each computed from its SUB_C input channels only: slice s reads x's channels
    s*SUB_C .. s*SUB_C + SUB_C - 1 (those < C) and w1's block s, a (KH*KW*SUB_C, SUB) matrix
    that ``pack_chain_weight`` fills block-diagonally (zeros between a column's group and
    another group's channels, and in the padding columns SUB_REAL .. SUB-1).  w1 is those
    blocks stacked, ((C_MID slices) * KH*KW*SUB_C, SUB) contiguous; w2, bias1, bias2, out,
    residual and ws exactly as in ``_chain_kernel``.  WALK: stage 1's walk over a slice's
    KH*KW*SUB_C reduction (0 plain, 1 tap-major when SUB_C % BLOCK_K == 0, 2 flat).

    Program (pid_m, pid_n, pid_j) owns slices pid_j*SUBS_PER .. +SUBS_PER-1 (past the last
    slice: all masked, adding 0) and outputs pid_n*N_PER .. +N_PER-1.  For each BLOCK_N tile of
    its outputs it runs its slices one after another -- stage 1 into a (BLOCK_M, SUB) fp32
    accumulator, epilogue 1, the rounding, then acc2 += mid_slice @ w2[slice rows, tile] -- so
    only one slice of mid is live, and stage 1 is recomputed once per output tile (N_PER /
    BLOCK_N times).  Grid: (cdiv(M, BLOCK_M), cdiv(K, N_PER), SPLIT_MID).
    """
    if PDL:  # programmatic dependent launch (host.py): the previous grid's writes first, then the next grid may launch
        gdc_wait()
        gdc_launch_dependents()
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_j = tl.program_id(2)

    mask_m, n, p, q = _conv_out_pixels(pid_m, M, P, Q, BLOCK_M)
    n64 = n.to(tl.int64)
    x_img = x_ptr + n64 * stride_xn
    if WALK == 0:
        ih0 = p
        iw0 = q
    else:
        ih0 = p * SH - PH
        iw0 = q * SW - PW
    RED1: tl.constexpr = KH * KW * SUB_C      # one slice's stage-1 reduction
    C_BLOCKS: tl.constexpr = (SUB_C + BLOCK_K - 1) // BLOCK_K
    offs_k = tl.arange(0, BLOCK_K)
    offs_s = tl.arange(0, SUB)
    out_rows = n64 * stride_on + p * stride_op + q * stride_oq
    res_rows = n64 * stride_rn + p * stride_rp + q * stride_rq
    ws_rows = (pid_j * M + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64) * K
    offs_n = pid_n * N_PER + tl.arange(0, BLOCK_N)
    for n0 in range(0, N_PER, BLOCK_N):       # constexpr counts throughout
        cols = n0 + offs_n
        mask_n = cols < K
        acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for si in range(0, SUBS_PER):
            s = pid_j * SUBS_PER + si
            offs_j = s * SUB_REAL + offs_s    # mid channels of this slice
            mask_j = (offs_s < SUB_REAL) & (offs_j < C_MID)
            x_rows = x_img + s * SUB_C        # the slice's first input channel
            w1_cols = w1_ptr + s * (RED1 * SUB) + offs_s[None, :]
            acc1 = tl.zeros((BLOCK_M, SUB), dtype=tl.float32)
            if WALK == 2:
                for k0 in range(0, RED1, BLOCK_K):
                    red = k0 + offs_k
                    a_ptrs, a_mask, mask_k, c = _conv_flat_block(x_rows, ih0, iw0, mask_m, red, H, W,
                                                                 stride_xh, stride_xw, SUB_C, KW, DH, DW, RED1)
                    if C % SUB_C != 0 or SPLIT_MID * SUBS_PER != N_SUB:  # channels past C (a short last
                        # slice, or slices past the last one) read 0
                        a_mask = a_mask & (s * SUB_C + c < C)[None, :]
                    a = tl.load(a_ptrs, mask=a_mask, other=0.0)
                    b = tl.load(w1_cols + red[:, None] * SUB, mask=mask_k[:, None] & mask_j[None, :], other=0.0)
                    acc1 = _conv_mma(a, b, acc1, INPUT_PRECISION, INTERPRETED)
            else:
                for it in range(0, KH * KW * C_BLOCKS):
                    a_ptrs, a_mask, red, b_mask, c = _conv_tap_block(x_rows, ih0, iw0, mask_m, mask_j, it, offs_k,
                                                                     H, W, stride_xh, stride_xw, SUB_C, KW, DH, DW,
                                                                     BLOCK_K, WALK == 1)
                    if C % SUB_C != 0 or SPLIT_MID * SUBS_PER != N_SUB:
                        a_mask = a_mask & (s * SUB_C + c < C)[None, :]
                    a = tl.load(a_ptrs, mask=a_mask, other=0.0)
                    b = tl.load(w1_cols + red[:, None] * SUB, mask=b_mask, other=0.0)
                    acc1 = _conv_mma(a, b, acc1, INPUT_PRECISION, INTERPRETED)
            y = acc1
            if HAS_BIAS1:
                y = y + tl.load(bias1_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]
            y = _conv_activation(y, ACT1)
            y = tl.where(mask_j[None, :], y, 0.0)   # padding columns: exactly 0 (act1(0) may not be)
            mid = _common_cast(y, x_ptr.dtype.element_ty, INTERPRETED)
            b2 = tl.load(w2_ptr + offs_j[:, None] * K + cols[None, :], mask=mask_j[:, None] & mask_n[None, :],
                         other=0.0)
            acc2 = _conv_mma(mid, b2, acc2, INPUT_PRECISION, INTERPRETED)
        if SPLIT_MID == 1:
            _chain_epilogue_store(acc2, out_rows, res_rows, cols, mask_m, mask_n, out_ptr, res_ptr, bias2_ptr,
                                  HAS_BIAS2, HAS_RES, ACT2, INTERPRETED)
        else:
            tl.store(ws_ptr + ws_rows[:, None] + cols[None, :], acc2, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _chain_epilogue_store(acc, out_rows, res_rows, cols, mask_m, mask_n, out_ptr, res_ptr, bias_ptr,
                          HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
                          INTERPRETED: tl.constexpr):
    """Epilogue 2: store act(acc + bias[cols] + residual) cast to out's dtype, masked to mask_m x
    mask_n -- conv2d.py's ``_conv_epilogue_store`` without a scale or an out_scale, so a split
    chain's reduce (conv2d.py's ``_conv_splitk_reduce_kernel``) applies the same arithmetic.

    acc: (BLOCK_M, BLOCK_N) fp32; out_rows / res_rows: (BLOCK_M,) element offsets of each
    pixel's row in out / residual; cols: (BLOCK_N,) output channels (stride 1 in both).
    """
    _conv_epilogue_store(acc, out_rows, res_rows, cols, mask_m, mask_n, out_ptr, res_ptr, bias_ptr, bias_ptr,
                         False, HAS_BIAS, HAS_RES, ACT, INTERPRETED, 1.0, False, False, 1)


# --------------------------------------------------------------------------------------
# Host side: checks, walk and block-size selection, launch
# --------------------------------------------------------------------------------------

_CHAIN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CHAIN_WALKS = {"plain": 0, "tap": 1, "flat": 2}


def chain_supported(c_mid: int, groups: int) -> bool:
    """Whether ``conv2d_chain`` can fuse a first conv with c_mid output channels and `groups`.

    Ungrouped: all of mid's MID columns are on chip at once, so c_mid <= CHAIN_MAX_MID.  Grouped:
    one slice of whole groups is (``_chain_grouped_kernel``), so one group's c_mid / groups
    channels must fit; c_mid itself is not bounded (whether it pays is the model's question)."""
    if groups == 1:
        return 1 <= c_mid <= CHAIN_MAX_MID
    return groups > 1 and c_mid >= groups and c_mid % groups == 0 and c_mid // groups <= CHAIN_MAX_MID


def _chain_group_slices(c: int, c_mid: int, groups: int) -> tuple[int, int, int, int]:
    """How ``_chain_grouped_kernel`` slices a grouped first conv's output: (SUB, SUB_REAL, SUB_C,
    N_SUB).  A slice is as many whole groups as fit in SUB = max(16, pow2(group width)) columns
    (tl.dot's smallest block): SUB_REAL real columns, computed from SUB_C input channels; N_SUB
    slices cover c_mid (the last may be short).  Stage 1 multiplies the whole (SUB_C, SUB)
    block per tap, zeros included: SUB / (c_mid / groups) times the grouped conv's MACs."""
    cout_g, cin_g = c_mid // groups, c // groups
    sub = max(16, _conv_pow2(cout_g))
    sub_real = sub // cout_g * cout_g
    return sub, sub_real, sub_real // cout_g * cin_g, triton.cdiv(c_mid, sub_real)


def pack_chain_weight(w: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """A chain's first weight, OIHW (C_mid, C/groups, R, S), as ``conv2d_chain`` reads it.

    groups == 1: ``pack_conv_weight(w, 1, dtype)``, (R*S*C, C_mid).  groups > 1: the N_SUB
    slices of ``_chain_group_slices`` stacked, ((N_SUB*R*S*SUB_C), SUB): slice t's block holds at
    row (r*S + s)*SUB_C + i, column j the weight w[t*SUB_REAL + j, i - g*C/groups, r, s] when
    input channel t*SUB_C + i and output channel t*SUB_REAL + j belong to the same group g, and
    0 otherwise (block-diagonal; the padding columns SUB_REAL.. and a short last slice: 0)."""
    if groups == 1:
        return pack_conv_weight(w, 1, dtype)
    if w.dim() != 4 or groups < 1 or w.shape[0] % groups:
        raise ValueError(f"pack_chain_weight: an OIHW weight whose {w.shape[0] if w.dim() else 0} outputs "
                         f"divide into groups={groups}, got shape {tuple(w.shape)}")
    c_mid, cin_g, r, s_ = w.shape
    cout_g = c_mid // groups
    sub, sub_real, sub_c, n_sub = _chain_group_slices(cin_g * groups, c_mid, groups)
    per_slice = sub_real // cout_g
    packed = torch.zeros(n_sub, r, s_, sub_c, sub, dtype=dtype, device=w.device)
    wt = w.detach().permute(2, 3, 1, 0).to(dtype)        # (R, S, C/groups, C_mid)
    for g in range(groups):
        t, i = divmod(g, per_slice)
        packed[t, :, :, i * cin_g:(i + 1) * cin_g, i * cout_g:(i + 1) * cout_g] = wt[..., g * cout_g:(g + 1) * cout_g]
    return packed.reshape(n_sub * r * s_ * sub_c, sub).contiguous()


def _chain_walk(c, kernel, stride, pad) -> str:
    """How stage 1 walks its reduction: "plain", "tap" or "flat" (see the module docstring)."""
    if tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(pad) == (0, 0, 0, 0):
        return "plain"
    return "tap" if c % 16 == 0 else "flat"


def _chain_defaults(dtype, allow_tf32, cpu, walk, c, taps, mid, m, k):
    """Default (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of one chain.

    On a GPU the (BLOCK_M, MID) fp32 accumulator, the rounded mid tile and the second
    accumulator all live in registers, so a program takes fewer pixels as MID grows.  IEEE
    fp32 dots run on FMA units, whose operand layouts replicate rows across threads: their
    tiles are smaller still.  These choices compile for sm_90 without register spills and
    within its shared memory (tests/test_kernel_chain.py checks the corners).
    """
    if cpu:  # the interpreter: small blocks are faster there
        bm, bn, bk = 32, 32, 32
    elif dtype == torch.float32 and not allow_tf32:
        bm, bn, bk = (64 if mid <= 64 else 32), 32, 32
    elif dtype == torch.float32:  # tf32 tensor cores, 4-byte operands in shared memory
        bm, bn, bk = (128 if mid <= 64 else 64), 32, 32
    else:
        bm, bn, bk = (128 if mid <= 64 else 64), 64, (64 if mid <= 128 else 32)
    bm = _conv_clamp_block(m, bm)
    bn = _conv_clamp_block(k, bn)
    if walk == "flat":
        bk = _conv_clamp_block(taps * c, min(bk, 16 if cpu else 32))
    else:
        while bk > 16 and c % bk:   # the largest power of two <= the default dividing C: no channel tail
            bk //= 2
    warps = 4 if cpu or bm * mid < 64 * 64 else 8
    stages = 3 if mid <= 128 else 2
    return bm, bn, bk, warps, stages


# The split rule's prices, in multiply-adds of the busiest SM (what it minimizes).  A mid split
# adds a second launch, the reduce, priced like conv2d's split-K reduce (_CONV_SPLIT_COST_ITERS:
# 8 reduction blocks of a 128 x 128 x 64 tile on one SM, ~2.5 us on an H100 / H200), and the
# fp32 workspace's round trip: an SM does ~3e12 bf16 MACs/s (80% of the tensor-core peak over
# 132 SMs) while the device moves ~4.8e12 bytes/s, so a byte costs ~5/8 of a MAC.  IEEE fp32
# dots run on the FMA units, ~15x slower (67 vs 989 TFLOP/s): there both cost 15x fewer MACs.
_CHAIN_SPLIT_FIXED_MACS = 8 * 128 * 128 * 64
_CHAIN_MACS_PER_BYTE = 5 / 8
_CHAIN_FMA_SLOWDOWN = 15


def _chain_reduction(walk, c, taps, block_k) -> int:
    """Stage 1's reduction length as the kernel walks it: padded to whole BLOCK_K steps (per
    tap for the plain and tap walks, over taps * C for the flat walk)."""
    if walk == "flat":
        return triton.cdiv(taps * c, block_k) * block_k
    return taps * triton.cdiv(c, block_k) * block_k


def _chain_split_shape(c_mid, k, block_n, split_n, split_mid):
    """(MID_SLICE, SPLIT_MID, N_PER, split_n as launched) for asked splits; ValueError if invalid.

    C_mid is padded to MID (a power of two >= 16) and cut into split_mid slices: split_mid must
    be a power of two with MID / split_mid >= 16 (tl.dot's smallest block).  The K outputs are
    cut into split_n groups of whole BLOCK_N tiles; asking more groups than tiles, or a count
    that leaves one empty, launches fewer: cdiv(K, N_PER)."""
    mid = max(16, _conv_pow2(c_mid))
    for name, v in (("split_n", split_n), ("split_mid", split_mid)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be None (automatic) or a positive int, got {v!r}")
    if split_mid & (split_mid - 1) or mid // split_mid < 16:
        raise ValueError(f"split_mid = {split_mid}: a power of two with C_mid padded ({mid}) / split_mid >= 16")
    n_tiles = triton.cdiv(k, block_n)
    n_per = triton.cdiv(n_tiles, min(split_n, n_tiles)) * block_n
    return mid // split_mid, split_mid, n_per, triton.cdiv(k, n_per)


def chain_default_split(m: int, c: int, taps: int, c_mid: int, k: int, blocks, sms: int,
                        walk: str = "tap", fma: bool = False, groups: int = 1) -> tuple[int, int]:
    """(split_n, split_mid) that ``conv2d_chain`` picks (None, None) on a GPU with `sms` SMs.

    m: output pixels N*P*Q; c, taps: the first conv's input channels and kh*kw; c_mid, k: the
    two convs' output channels; blocks: (BLOCK_M, BLOCK_N, BLOCK_K, ...) as launched; walk:
    stage 1's ("plain", "tap", "flat"); fma: IEEE fp32 dots (FMA units, not tensor cores).
    Shared with the performance model.

    Only a launch whose pixel blocks fill less than one wave (cdiv(m, BLOCK_M) < sms) is split.
    The rule then minimizes the busiest SM's multiply-adds,

        cdiv(programs, sms) * BLOCK_M * MID_SLICE * (stage-1 reduction + N_PER)
        + (split_mid > 1) * (the reduce launch + 2 * split_mid * m * k * 4 workspace bytes)

    over split_mid in 1, 2, 4, ... (no empty slice) and split_n in 1 .. cdiv(k, BLOCK_N):
    splitting the outputs recomputes stage 1 once per group (no extra memory traffic, but
    stage 1 is ~70% of a bottleneck's work), splitting mid divides both stages exactly (but
    pays the workspace and a second launch; both priced 15x lower for fma).  Ties go to the
    smaller split.  groups > 1: the grouped kernel's grid, ``_chain_grouped_split``."""
    if groups > 1:
        return _chain_grouped_split(m, c, taps, c_mid, k, groups, blocks, sms, walk, fma)
    bm, bn, bk = blocks[:3]
    tiles = triton.cdiv(m, bm)
    if sms <= 0 or tiles >= sms:
        return 1, 1
    mid = max(16, _conv_pow2(c_mid))
    red1 = _chain_reduction(walk, c, taps, bk)
    n_tiles = triton.cdiv(k, bn)
    best, best_cost = (1, 1), None
    split_mid = 1
    while mid // split_mid >= 16 and (split_mid - 1) * (mid // split_mid) < c_mid:  # no empty slice
        fixed = 0 if split_mid == 1 else (_CHAIN_SPLIT_FIXED_MACS + _CHAIN_MACS_PER_BYTE * 2 * split_mid * m * k * 4) \
            / (_CHAIN_FMA_SLOWDOWN if fma else 1)
        for split_n in range(1, n_tiles + 1):
            n_per = triton.cdiv(n_tiles, split_n) * bn
            if triton.cdiv(k, n_per) != split_n:  # launches as a smaller split, seen already
                continue
            cost = triton.cdiv(tiles * split_n * split_mid, sms) * bm * (mid // split_mid) * (red1 + n_per) + fixed
            if best_cost is None or cost < best_cost:
                best, best_cost = (split_n, split_mid), cost
        split_mid *= 2
    return best


def _chain_grouped_defaults(dtype, allow_tf32, cpu, walk, sub_c, taps, m, k):
    """Default (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of a grouped chain.

    Only one (BLOCK_M, SUB) slice of mid is live, so the registers go to the second
    accumulator: a wide BLOCK_N (the whole output up to 256 in bf16) recomputes stage 1 fewer
    times (once per BLOCK_N tile).  BLOCK_K: the largest power of two <= 64 dividing a slice's
    SUB_C input channels (tap walk), else a flat step of 16 (32 on a GPU)."""
    if cpu:
        bm, bn, bk = 32, 32, 32
    elif dtype == torch.float32 and not allow_tf32:
        bm, bn, bk = 32, 64, 32
    elif dtype == torch.float32:
        bm, bn, bk = 64, 128, 32
    else:
        bm, bn, bk = 64, 256, 64
    bm = _conv_clamp_block(m, bm)
    bn = _conv_clamp_block(k, bn)
    if walk == "flat":
        bk = _conv_clamp_block(taps * sub_c, 16 if cpu else 32)
    else:
        while bk > 16 and sub_c % bk:
            bk //= 2
    warps = 4 if cpu or bm * bn < 64 * 128 else 8
    return bm, bn, bk, warps, 3


def _chain_grouped_split_shape(n_sub, k, block_n, split_n, split_mid):
    """(SUBS_PER, SPLIT_MID, N_PER, split_n as launched) of a grouped chain; ValueError if invalid.
    split_mid programs share the N_SUB slices, SUBS_PER = cdiv(N_SUB, split_mid) each (any
    positive count; more than N_SUB, or one leaving a program empty, launches fewer)."""
    for name, v in (("split_n", split_n), ("split_mid", split_mid)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be None (automatic) or a positive int, got {v!r}")
    subs_per = triton.cdiv(n_sub, min(split_mid, n_sub))
    n_tiles = triton.cdiv(k, block_n)
    n_per = triton.cdiv(n_tiles, min(split_n, n_tiles)) * block_n
    return subs_per, triton.cdiv(n_sub, subs_per), n_per, triton.cdiv(k, n_per)


def _chain_grouped_macs(bm, bn, sub, red1, subs_per, n_per) -> int:
    """One grouped program's multiply-adds as launched: for each of its N_PER / BLOCK_N output
    tiles, stage 1 over its SUBS_PER slices (BLOCK_M x SUB x the slice's padded reduction
    red1, the block-diagonal zeros included), and the 1x1 share BLOCK_M x SUB x BLOCK_N."""
    return bm * subs_per * sub * (n_per // bn * red1 + n_per)


def _chain_grouped_split(m, c, taps, c_mid, k, groups, blocks, sms, walk, fma):
    """``chain_default_split`` for a grouped first conv: the same rule over the grouped grid
    (split_mid programs sharing the N_SUB slices, any count), priced by ``_chain_grouped_macs``."""
    bm, bn, bk = blocks[:3]
    tiles = triton.cdiv(m, bm)
    if sms <= 0 or tiles >= sms:
        return 1, 1
    sub, _, sub_c, n_sub = _chain_group_slices(c, c_mid, groups)
    red1 = _chain_reduction(walk, sub_c, taps, bk)
    n_tiles = triton.cdiv(k, bn)
    best, best_cost, seen = (1, 1), None, set()
    for split_mid in range(1, n_sub + 1):
        for split_n in range(1, n_tiles + 1):
            subs_per, launched_mid, n_per, launched_n = _chain_grouped_split_shape(n_sub, k, bn, split_n, split_mid)
            if (launched_n, launched_mid) in seen:
                continue
            seen.add((launched_n, launched_mid))
            fixed = 0 if launched_mid == 1 else \
                (_CHAIN_SPLIT_FIXED_MACS + _CHAIN_MACS_PER_BYTE * 2 * launched_mid * m * k * 4) \
                / (_CHAIN_FMA_SLOWDOWN if fma else 1)
            cost = triton.cdiv(tiles * launched_n * launched_mid, sms) * \
                _chain_grouped_macs(bm, bn, sub, red1, subs_per, n_per) + fixed
            if best_cost is None or cost < best_cost:
                best, best_cost = (launched_n, launched_mid), cost
    return best


def _chain_check(x, w1_packed, w2_packed, out, residual, bias1, bias2, act1, act2, kernel_hw, groups=1):
    """Raise ValueError unless the operands chain; return (c_mid, k)."""
    if x.dim() != 4 or out.dim() != 4:
        raise ValueError(f"x and out must be NHWC 4-d tensors, got {tuple(x.shape)} and {tuple(out.shape)}")
    for name, t in (("x", x), ("w1_packed", w1_packed), ("w2_packed", w2_packed), ("out", out)):
        if t.dtype not in _CHAIN_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype} (float32, float16 or bfloat16)")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    for name, t in (("w1_packed", w1_packed), ("w2_packed", w2_packed)):
        if t.dtype != x.dtype:
            raise ValueError(f"{name} is {t.dtype} but x is {x.dtype}: pack the weights in x's dtype")
        if t.dim() != 2 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 2-d matrix (use pack_conv_weight), "
                             f"got shape {tuple(t.shape)}")
    for name, t in (("x", x), ("out", out)):
        if t.shape[3] > 1 and t.stride(3) != 1:
            raise ValueError(f"{name}: channels (dim 3) must have stride 1, got strides {t.stride()}")
    c, k = x.shape[3], out.shape[3]
    kh, kw = kernel_hw
    rows, c_mid = w1_packed.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(f"groups must be a positive int dividing C = {c}, got {groups!r}")
    if groups > 1:
        c_mid = w2_packed.shape[0]
        if not chain_supported(c_mid, groups):
            raise ValueError(f"C_mid = {c_mid} (from w2_packed) in groups={groups}: a grouped chain needs "
                             f"C_mid divisible by groups and at most {CHAIN_MAX_MID} channels a group")
        sub, _, sub_c, n_sub = _chain_group_slices(c, c_mid, groups)
        if tuple(w1_packed.shape) != (n_sub * kh * kw * sub_c, sub):
            raise ValueError(f"w1_packed has shape {tuple(w1_packed.shape)}, expected "
                             f"{(n_sub * kh * kw * sub_c, sub)} from pack_chain_weight(w1, {groups}, dtype)")
    elif rows != kh * kw * c:
        grouped = [g for g in range(2, c + 1) if c % g == 0 and rows * g == kh * kw * c]
        hint = (f"; it looks like a grouped weight (groups={grouped[0]}): pass groups= and pack it "
                f"with pack_chain_weight(w1, groups, dtype)" if grouped else "")
        raise ValueError(f"w1_packed has shape {tuple(w1_packed.shape)}, expected ({kh * kw * c}, C_mid) "
                         f"= (kh*kw*C, C_mid) from pack_conv_weight(w1, 1, dtype){hint}")
    if not chain_supported(c_mid, groups):
        raise ValueError(f"C_mid = {c_mid} intermediate channels: conv2d_chain keeps 1..{CHAIN_MAX_MID} "
                         f"(CHAIN_MAX_MID) on chip; run two conv2d calls instead")
    if tuple(w2_packed.shape) != (c_mid, k):
        raise ValueError(f"w2_packed has shape {tuple(w2_packed.shape)}, expected (C_mid, K) = {(c_mid, k)} "
                         f"from pack_conv_weight(w2, 1, dtype) of a 1x1 weight")
    if residual is not None:
        if residual.shape != out.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != out shape {tuple(out.shape)}")
        if residual.dtype not in _CHAIN_DTYPES or residual.device != x.device:
            raise ValueError(f"residual: dtype {residual.dtype} on {residual.device} not supported")
        if residual.shape[3] > 1 and residual.stride(3) != 1:
            raise ValueError("residual: channels (dim 3) must have stride 1")
    _conv_check_vec(bias1, c_mid, "bias1", x.device)
    _conv_check_vec(bias2, k, "bias2", x.device)
    for name, act in (("act1", act1), ("act2", act2)):
        if act not in _CONV_ACTS:
            raise ValueError(f"{name} must be one of the ACT_* codes {_CONV_ACTS}, got {act!r}")
    return c_mid, k


def conv2d_chain(x, w1_packed, w2_packed, out, *, kernel, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1),
                 bias1=None, act1=ACT_NONE, bias2=None, residual=None, act2=ACT_NONE,
                 block_m=None, block_n=None, block_k=None, num_warps=None, num_stages=None,
                 split_n=None, split_mid=None, allow_tf32=False, groups=1) -> None:
    """out = act2(round(act1(conv(x, W1) + bias1)) @ W2 + bias2 + residual), in one kernel.

    x:         (N, H, W, C) NHWC, any strides with stride(3) == 1 (may be a channel slice)
    w1_packed: pack_conv_weight(w1, 1, x.dtype) of the OIHW first weight: (kh*kw*C, C_mid)
    w2_packed: pack_conv_weight(w2, 1, x.dtype) of the (K, C_mid, 1, 1) second weight: (C_mid, K)
    out:       (N, P, Q, K) NHWC view, stride(3) == 1 (may be a channel slice: concat)
    residual:  None or (N, P, Q, K) NHWC view, stride(3) == 1
    bias1:     None or (C_mid,); bias2: None or (K,) (fp32 contiguous vectors)
    kernel, stride, pad = (top, bottom, left, right), dilation: the first conv (groups=1); the
    second is 1x1, stride 1.  The intermediate (N, P, Q, C_mid) activation is rounded to
    x.dtype -- exactly what two ``conv2d`` calls would store and re-read -- but never leaves
    the chip.  Both GEMMs accumulate in fp32; both epilogues run on the fp32 accumulators;
    out is written once, cast to out.dtype.
    Limits: 1 <= C_mid <= CHAIN_MAX_MID, grouped: C_mid / groups (``chain_supported``); ValueError otherwise.
    Tuning knobs: block_m (pixels per program), block_n (output channels per stage-3 step),
    block_k (stage-1 reduction step), num_warps, num_stages, allow_tf32 (fp32 inputs only),
    split_n (output-channel groups: each recomputes stage 1), split_mid (slices of C_mid: a
    power of two; > 1 adds an fp32 workspace and a reduce launch).  split_n / split_mid None:
    ``chain_default_split`` on a GPU (by its SM count), no split elsewhere.
    groups > 1: the first conv is grouped; w1_packed is ``pack_chain_weight(w1, groups, dtype)``
    and ``_chain_grouped_kernel`` runs it (split_mid: programs sharing mid's slices, any count).
    """
    tensors = (x, w1_packed, w2_packed, out, residual, bias1, bias2)
    key, plan = _host_plan_lookup(chain_plan, tensors, (kernel, stride, pad, dilation, act1, act2, block_m, block_n,
                                                        block_k, num_warps, num_stages, split_n, split_mid,
                                                        allow_tf32, groups))
    if plan is None:
        plan = _host_plan_keep(key, chain_plan(
            *tensors, kernel=kernel, stride=stride, pad=pad, dilation=dilation, act1=act1, act2=act2,
            block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps, num_stages=num_stages,
            split_n=split_n, split_mid=split_mid, allow_tf32=allow_tf32, groups=groups))
    plan.run(plan, *tensors)


def chain_plan(x, w1_packed, w2_packed, out, residual=None, bias1=None, bias2=None, *, kernel, stride=(1, 1),
               pad=(0, 0, 0, 0), dilation=(1, 1), act1=ACT_NONE, act2=ACT_NONE, block_m=None, block_n=None,
               block_k=None, num_warps=None, num_stages=None, split_n=None, split_mid=None, allow_tf32=False,
               groups=1) -> _ConvPlan:
    """``conv2d_chain``'s checks and decisions for these arguments (ValueError on misuse), as a
    plan (conv2d.py's "Launch plans"): ``plan.run(plan, x, w1_packed, w2_packed, out, residual,
    bias1, bias2)`` launches it on any tensors of the same shapes, strides, dtypes and devices."""
    kh, kw = _conv_pair(kernel, "kernel")
    sh, sw = _conv_pair(stride, "stride")
    dh, dw = _conv_pair(dilation, "dilation")
    pt, pb, pl, pr = _conv_pads(pad)
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise ValueError("kernel, stride and dilation must be positive")
    c_mid, k = _chain_check(x, w1_packed, w2_packed, out, residual, bias1, bias2, act1, act2, (kh, kw), groups)
    n, h, w, c = x.shape
    n2, p, q, _ = out.shape
    if n2 != n:
        raise ValueError(f"batch of out ({n2}) != batch of x ({n})")
    p_want = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    q_want = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if (p, q) != (p_want, q_want):
        raise ValueError(f"out is {p}x{q} but the first convolution gives {p_want}x{q_want}")
    if out.numel() == 0:
        return _ConvPlan(_conv_run_nothing)
    geometry = (kh, kw, sh, sw, pt, pb, pl, pr, dh, dw)
    knobs = (block_m, block_n, block_k, num_warps, num_stages)
    if groups > 1:
        return _chain_grouped_plan(x, out, residual, bias1, act1, bias2, act2, groups, c_mid, k, geometry, knobs,
                                   split_n, split_mid, allow_tf32)

    # -- compile-time shape of the program --------------------------------------------
    walk = _chain_walk(c, (kh, kw), (sh, sw), (pt, pb, pl, pr))
    mid = max(16, _conv_pow2(c_mid))      # tl.dot needs every block dimension >= 16
    m = n * p * q
    bm, bn, bk, warps, stages = _chain_defaults(x.dtype, allow_tf32, x.device.type == "cpu", walk, c, kh * kw,
                                                mid, m, k)
    bm, bn, bk = block_m or bm, block_n or bn, block_k or bk
    warps, stages = num_warps or warps, num_stages or stages

    if split_n is None or split_mid is None:
        auto = chain_default_split(m, c, kh * kw, c_mid, k, (bm, bn, bk), _conv_sm_count(x.device), walk,
                                   fma=x.dtype == torch.float32 and not allow_tf32)
        split_n = auto[0] if split_n is None else split_n
        split_mid = auto[1] if split_mid is None else split_mid
    mid_slice, split_mid, n_per, split_n = _chain_split_shape(c_mid, k, bn, split_n, split_mid)
    return _chain_launch_plan(
        _chain_kernel, (triton.cdiv(m, bm), split_n, split_mid), x, out, residual, bias1, act1, bias2, act2,
        c_mid, k, geometry, walk, split_mid, allow_tf32,
        dict(MID_SLICE=mid_slice, SPLIT_MID=split_mid, N_PER=n_per, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
             num_warps=warps, num_stages=stages))


def _chain_launch_plan(kernel, grid, x, out, residual, bias1, act1, bias2, act2, c_mid, k, geometry, walk,
                       split_mid, allow_tf32, shape_kwargs) -> _ConvPlan:
    """The plan of one chain launch (``kernel`` over ``grid``), and of the split-mid reduce after it."""
    kh, kw, sh, sw, pt, pb, pl, pr, dh, dw = geometry
    n, h, w, c = x.shape
    _, p, q, _ = out.shape
    m = n * p * q
    rs = residual.stride() if residual is not None else (0, 0, 0, 0)
    args = (m, h, w, p, q, x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
            rs[0], rs[1], rs[2])
    kwargs = dict(C=c, C_MID=c_mid, K=k, KH=kh, KW=kw, SH=sh, SW=sw, PH=pt, PW=pl, DH=dh, DW=dw,
                  WALK=_CHAIN_WALKS[walk], HAS_BIAS1=bias1 is not None, ACT1=act1,
                  HAS_BIAS2=bias2 is not None, HAS_RES=residual is not None, ACT2=act2,
                  INPUT_PRECISION=_conv_input_precision(x.dtype, allow_tf32), INTERPRETED=_conv_interpreted(x),
                  **shape_kwargs, **_host_pdl(x.device))
    reduce = None
    if split_mid > 1:  # conv2d.py's split-K reduce: epilogue 2 is its epilogue without scale or out_scale
        reduce = _conv_reduce_plan(split_mid, m, k, x.device, out.stride()[:3], (p, q), rs[:3], False,
                                   bias2 is not None, residual is not None, act2,
                                   dict(out_scale=1.0, RES_AFTER_ACT=False, HAS_OUT_SCALE=False), 1,
                                   _conv_interpreted(x))
    return _ConvPlan(_chain_run, kernel=kernel, grid=grid, args=args, kwargs=kwargs, reduce=reduce,
                     workspace=(split_mid, m, k))


def _chain_run(plan, x, w1_packed, w2_packed, out, residual, bias1, bias2) -> None:
    """Launch a chain plan on these tensors (of ``chain_plan``'s shapes): the chain kernel, then the
    split-mid reduce when the plan splits mid."""
    residual_ = residual if residual is not None else out  # an absent operand: any pointer, never read
    bias2_ = bias2 if bias2 is not None else out
    # the workspace per call, from torch's caching allocator (inside CUDA graph capture: the
    # graph's pool), as conv2d's split-K does: a cached buffer would be shared across streams
    ws = torch.empty(plan.workspace, dtype=torch.float32, device=x.device) if plan.reduce else out
    plan.kernel[plan.grid](x, w1_packed, w2_packed, out, residual_, bias1 if bias1 is not None else out, bias2_, ws,
                           *plan.args, **plan.kwargs)
    if plan.reduce:
        _conv_launch_reduce(plan.reduce, ws, out, residual, None, bias2)


def _chain_grouped_plan(x, out, residual, bias1, act1, bias2, act2, groups, c_mid, k, geometry, knobs, split_n,
                        split_mid, allow_tf32) -> _ConvPlan:
    """``chain_plan`` for a grouped first conv (operands checked): ``_chain_grouped_kernel``,
    and conv2d.py's ``_conv_splitk_reduce_kernel`` when its programs split mid's slices."""
    kh, kw, sh, sw, pt, pb, pl, pr, dh, dw = geometry
    n, h, w, c = x.shape
    _, p, q, _ = out.shape
    m = n * p * q
    sub, sub_real, sub_c, n_sub = _chain_group_slices(c, c_mid, groups)
    walk = _chain_walk(sub_c, (kh, kw), (sh, sw), (pt, pb, pl, pr))
    bm, bn, bk, warps, stages = _chain_grouped_defaults(x.dtype, allow_tf32, x.device.type == "cpu", walk, sub_c,
                                                        kh * kw, m, k)
    block_m, block_n, block_k, num_warps, num_stages = knobs
    bm, bn, bk = block_m or bm, block_n or bn, block_k or bk
    warps, stages = num_warps or warps, num_stages or stages
    if split_n is None or split_mid is None:
        auto = chain_default_split(m, c, kh * kw, c_mid, k, (bm, bn, bk), _conv_sm_count(x.device), walk,
                                   fma=x.dtype == torch.float32 and not allow_tf32, groups=groups)
        split_n = auto[0] if split_n is None else split_n
        split_mid = auto[1] if split_mid is None else split_mid
    subs_per, split_mid, n_per, split_n = _chain_grouped_split_shape(n_sub, k, bn, split_n, split_mid)
    return _chain_launch_plan(
        _chain_grouped_kernel, (triton.cdiv(m, bm), split_n, split_mid), x, out, residual, bias1, act1, bias2, act2,
        c_mid, k, geometry, walk, split_mid, allow_tf32,
        dict(SUB=sub, SUB_REAL=sub_real, SUB_C=sub_c, N_SUB=n_sub, SUBS_PER=subs_per, SPLIT_MID=split_mid,
             N_PER=n_per, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages))
