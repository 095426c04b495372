"""Ops with weights that do multiply-accumulates: `conv` and `fc`."""

from __future__ import annotations

from ..errors import ArchError
from .registry import (BOOL, PADDING, OpSpec, Param, Window, fmt_shape, int_kind, modules, need_map, nn, numel,
                       pair_kind, register, window_formula, window_out)


def _conv_shape(a, ins):
    c, h, w = need_map("conv", ins[0])
    g = a["groups"]
    if c % g or a["out"] % g:
        which = f"input channels ({c})" if c % g else f"output channels ({a['out']})"
        raise ArchError(f"conv with groups={g}: {which} not divisible by {g}",
                        hint="both the input and the output channel counts must be multiples of `groups`")
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    pt, pb, pl, pr = a["pad"]
    p = window_out(h, kh, sh, pt, pb, dh, False)
    q = window_out(w, kw, sw, pl, pr, dw, False)
    if p <= 0 or q <= 0:
        axis, size, k, s, lo, hi, d = ("height", h, kh, sh, pt, pb, dh) if p <= 0 else ("width", w, kw, sw, pl, pr, dw)
        raise ArchError(f"conv output {axis} would be {min(p, q)}: "
                        f"{window_formula(size, k, s, lo, hi, d, False)} = {min(p, q)} for input {fmt_shape(ins[0])}",
                        hint="the input is smaller than the kernel: use a larger input, padding, or a smaller kernel")
    return (a["out"], p, q)


def _conv_weights(a, ins):
    kh, kw = a["kernel"]
    return a["out"] * (ins[0][0] // a["groups"]) * kh * kw


def _conv_describe(a):
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    text = f"{kh}×{kw}" + (f"/{sh}" if sh == sw and sh > 1 else f"/{sh}×{sw}" if (sh, sw) != (1, 1) else "")
    if a["groups"] > 1:
        text += f" g{a['groups']}"
    if a["dilation"] != (1, 1):
        text += f" d{a['dilation'][0]}"
    return text


register(OpSpec(
    name="conv",
    doc="2-D convolution (PyTorch Conv2d). Output size floor((H + pads - dilation·(k-1) - 1)/stride) + 1.",
    params=(
        Param("out", int_kind(1), doc="output channels"),
        Param("kernel", pair_kind(1), doc="kernel size k or (kh, kw)"),
        Param("stride", pair_kind(1), 1),
        Param("pad", PADDING, 0, "p, (ph, pw) or (top, bottom, left, right)"),
        Param("dilation", pair_kind(1), 1),
        Param("groups", int_kind(1), 1, "grouped convolution (AlexNet's two towers, ResNeXt's cardinality)"),
        Param("bias", BOOL, True),
    ),
    shape=_conv_shape,
    param_count=lambda a, ins, out: _conv_weights(a, ins) + (a["out"] if a["bias"] else 0),
    macs=lambda a, ins, out: _conv_weights(a, ins) * out[1] * out[2],
    other_ops=lambda a, ins, out: numel(out) if a["bias"] else 0,  # bias adds
    window=lambda a, ins: Window(a["dilation"][0] * (a["kernel"][0] - 1) + 1,
                                 a["dilation"][1] * (a["kernel"][1] - 1) + 1, *a["stride"], a["pad"][0], a["pad"][2]),
    describe=_conv_describe,
    torch=lambda a, ins: modules().Conv2d(ins[0][0], a["out"], a["kernel"], a["stride"], a["pad"], a["dilation"],
                                            a["groups"], a["bias"]),
    fusion="out_fusable", strided_out=True, channel_step_out=True,
))


def _fc_shape(a, ins):
    if len(ins[0]) != 1:
        raise ArchError(f"fc needs a flat input, but gets the feature map {fmt_shape(ins[0])}",
                        hint="insert `flatten ->` before the fc layer")
    return (a["out"],)


register(OpSpec(
    name="fc",
    doc="Fully connected layer (PyTorch Linear) on a flat vector.",
    params=(Param("out", int_kind(1), doc="output features"), Param("bias", BOOL, True)),
    shape=_fc_shape,
    param_count=lambda a, ins, out: ins[0][0] * a["out"] + (a["out"] if a["bias"] else 0),
    macs=lambda a, ins, out: ins[0][0] * a["out"],
    other_ops=lambda a, ins, out: a["out"] if a["bias"] else 0,
    torch=lambda a, ins: nn().Linear(ins[0][0], a["out"], a["bias"]),
    fusion="out_fusable", strided_out=True,
))
