"""Pooling: `maxpool`, `avgpool` (PyTorch's ceil_mode rule), `global_avgpool` and `adaptive_avgpool`;
and its inverse, `upsample` (nearest neighbour, by integer factors)."""

from __future__ import annotations

from fractions import Fraction

from ..errors import ArchError
from .registry import (BOOL, OpSpec, Param, Window, fmt_shape, int_kind, need_map, nn, numel, pair_kind, register,
                       window_formula, window_out)


def _pool_shape(op):
    def rule(a, ins):
        c, h, w = need_map(op, ins[0])
        (kh, kw), (ph, pw), (dh, dw) = a["kernel"], a["pad"], a.get("dilation", (1, 1))
        stride = a["stride"]
        for k, p in ((kh, ph), (kw, pw)):
            if 2 * p > k:  # PyTorch: pad <= kernel_size/2, the undilated kernel (pool2d_shape_check)
                raise ArchError(f"{op} padding {p} is more than half the kernel size {k}",
                                hint="PyTorch requires pad ≤ kernel/2 for pooling")
        p = window_out(h, kh, stride[0], ph, ph, dh, a["ceil_mode"])
        q = window_out(w, kw, stride[1], pw, pw, dw, a["ceil_mode"])
        if p <= 0 or q <= 0:
            axis, size, k, s, pad, d = ("height", h, kh, stride[0], ph, dh) if p <= 0 else ("width", w, kw, stride[1], pw, dw)
            raise ArchError(f"{op} output {axis} would be {min(p, q)}: "
                            f"{window_formula(size, k, s, pad, pad, d, a['ceil_mode'])} = {min(p, q)} "
                            f"for input {fmt_shape(ins[0])}",
                            hint="the feature map is already smaller than the pooling window")
        return (c, p, q)

    return rule


def _window(a, ins):
    (kh, kw), (dh, dw) = a["kernel"], a.get("dilation", (1, 1))
    return Window(dh * (kh - 1) + 1, dw * (kw - 1) + 1, *a["stride"], *a["pad"])


def _stride_defaults_to_kernel(a):
    return a if a["stride"] is not None else {**a, "stride": a["kernel"]}


def _describe(a):
    (kh, kw), stride = a["kernel"], a["stride"]
    text = f"{kh}×{kw}" + (f"/{stride[0]}" if stride[0] == stride[1] else f"/{stride[0]}×{stride[1]}")
    return text + (" ceil" if a["ceil_mode"] else "")


_COMMON = (
    Param("kernel", pair_kind(1), doc="window size"),
    Param("stride", pair_kind(1), None, "default: the kernel size"),
    Param("pad", pair_kind(0), 0, "p or (ph, pw), symmetric; at most half the kernel"),
)

register(OpSpec(
    name="maxpool",
    doc="Max pooling (PyTorch MaxPool2d). Other ops: kh·kw - 1 comparisons per output.",
    params=_COMMON + (Param("dilation", pair_kind(1), 1), Param("ceil_mode", BOOL, False)),
    shape=_pool_shape("maxpool"),
    other_ops=lambda a, ins, out: numel(out) * (a["kernel"][0] * a["kernel"][1] - 1),
    window=_window,
    describe=_describe,
    normalize=_stride_defaults_to_kernel,
    torch=lambda a, ins: nn().MaxPool2d(a["kernel"], a["stride"], a["pad"], a["dilation"], ceil_mode=a["ceil_mode"]),
    fusion="reduction", strided_out=True,
))

register(OpSpec(
    name="avgpool",
    doc="Average pooling (PyTorch AvgPool2d). Other ops: kh·kw adds and divides per output.",
    params=_COMMON + (Param("ceil_mode", BOOL, False), Param("count_include_pad", BOOL, True)),
    shape=_pool_shape("avgpool"),
    other_ops=lambda a, ins, out: numel(out) * a["kernel"][0] * a["kernel"][1],
    window=_window,
    describe=_describe,
    normalize=_stride_defaults_to_kernel,
    torch=lambda a, ins: nn().AvgPool2d(a["kernel"], a["stride"], a["pad"], a["ceil_mode"], a["count_include_pad"]),
    fusion="reduction", strided_out=True,
))


def _gap_shape(a, ins):
    c, _, _ = need_map("global_avgpool", ins[0])
    return (c, 1, 1)


register(OpSpec(
    name="global_avgpool",
    doc="Average over all positions (AdaptiveAvgPool2d(1)): C×H×W -> C×1×1. Other ops: one add per input element.",
    params=(),
    shape=_gap_shape,
    other_ops=lambda a, ins, out: numel(ins[0]),
    window=lambda a, ins: Window(ins[0][1], ins[0][2], ins[0][1], ins[0][2]),
    torch=lambda a, ins: nn().AdaptiveAvgPool2d(1),
    fusion="reduction", strided_out=True,
))


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: output i averages input [floor(i·n/o), ceil((i+1)·n/o))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_shape(a, ins):
    c, _, _ = need_map("adaptive_avgpool", ins[0])
    return (c, *a["size"])


def _adaptive_window(a, ins):
    """Exact when the input divides evenly (kernel = stride = n/o); otherwise the widest window
    and the smallest step, so the receptive field is an upper bound."""
    (_, h, w), (oh, ow) = ins[0], a["size"]
    wins_h, wins_w = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    kh, kw = max(e - s for s, e in wins_h), max(e - s for s, e in wins_w)
    sh = min((b[0] - a_[0] for a_, b in zip(wins_h, wins_h[1:])), default=kh) or 1
    sw = min((b[0] - a_[0] for a_, b in zip(wins_w, wins_w[1:])), default=kw) or 1
    return Window(kh, kw, sh, sw)


def _adaptive_ops(a, ins, out):
    (c, h, w), (oh, ow) = ins[0], a["size"]
    return c * sum(e - s for s, e in _adaptive_windows(h, oh)) * sum(e - s for s, e in _adaptive_windows(w, ow))


register(OpSpec(
    name="adaptive_avgpool",
    doc="Average pooling to a fixed output size (AdaptiveAvgPool2d), e.g. VGG's and AlexNet's classifier input. "
        "Output i averages input rows [floor(i·H/o), ceil((i+1)·H/o)). Other ops: one add per input element "
        "of each window.",
    params=(Param("size", pair_kind(1), doc="output size o or (oh, ow)"),),
    shape=_adaptive_shape,
    other_ops=_adaptive_ops,
    window=_adaptive_window,
    describe=lambda a: f"→{a['size'][0]}×{a['size'][1]}",
    torch=lambda a, ins: nn().AdaptiveAvgPool2d(a["size"]),
    fusion="reduction", strided_out=True,
))


# ---- upsampling ----------------------------------------------------------------------------------


def _upsample_shape(a, ins):
    c, h, w = need_map("upsample", ins[0])
    sh, sw = a["scale"]
    return (c, h * sh, w * sw)


def _upsample_window(a, ins):
    """Each output pixel is one input pixel, and s output steps are one input step: a 1×1 window
    with a stride of 1/s (the receptive field's jump becomes a fraction of an input pixel)."""
    sh, sw = a["scale"]
    return Window(1, 1, Fraction(1, sh), Fraction(1, sw))


register(OpSpec(
    name="upsample",
    doc="Nearest-neighbour upsampling by whole factors (PyTorch Upsample(scale_factor=s, mode='nearest')): "
        "output pixel (i, j) is input pixel (i // sh, j // sw), so C×H×W -> C×(sh·H)×(sw·W). Moves data only.",
    params=(Param("scale", pair_kind(1), doc="factor s or (sh, sw)"),),
    shape=_upsample_shape,
    window=_upsample_window,
    describe=lambda a: f"×{a['scale'][0]}" if a["scale"][0] == a["scale"][1] else f"×{a['scale'][0]}×{a['scale'][1]}",
    torch=lambda a, ins: nn().Upsample(scale_factor=a["scale"][0] if a["scale"][0] == a["scale"][1]
                                       else tuple(float(s) for s in a["scale"]), mode="nearest"),
    fusion="injective", strided_out=True,
))
