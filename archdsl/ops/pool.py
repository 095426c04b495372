"""Pooling: `maxpool`, `avgpool` (PyTorch's ceil_mode rule) and `global_avgpool`."""

from __future__ import annotations

from ..errors import ArchError
from .registry import (BOOL, OpSpec, Param, Window, fmt_shape, int_kind, need_map, numel, pair_kind, register,
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
))
