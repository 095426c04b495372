"""Ops with several inputs: `add`, `mean` (same shapes) and `concat` (along channels)."""

from __future__ import annotations

from ..errors import ArchError
from .registry import ANY_PORT, OpSpec, fmt_shape, modules, numel, register


class JoinMismatch(ArchError):
    """Raised by a join's shape rule; `index` is the input that disagrees with input 0."""

    def __init__(self, message: str, index: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.index = index


def _same_shapes(op):
    def rule(a, ins):
        for i, s in enumerate(ins[1:], 1):
            if s != ins[0]:
                raise JoinMismatch(f"{op} of tensors with different shapes: {fmt_shape(ins[0])} and {fmt_shape(s)}",
                                   i, hint=_mismatch_hint(ins[0], s))
        return ins[0]

    return rule


def _mismatch_hint(a, b) -> str | None:
    if len(a) == 3 and len(b) == 3:
        if a[0] != b[0] and a[1:] == b[1:]:
            return f"the channel counts differ ({a[0]} vs {b[0]}): project one side with a 1×1 conv"
        if a[1:] != b[1:]:
            return "the spatial sizes differ: a stride or pooling is applied on one side only"
    return None


def _concat_shape(a, ins):
    first = ins[0]
    for i, s in enumerate(ins[1:], 1):
        if len(s) != len(first) or s[1:] != first[1:]:
            raise JoinMismatch(f"concat needs equal spatial sizes, got {fmt_shape(first)} and {fmt_shape(s)}", i,
                               hint="concat joins along channels; every branch must keep the same H×W")
    return (sum(s[0] for s in ins),) + first[1:]


register(OpSpec(
    name="add", doc="Elementwise sum of two or more tensors of one shape. Other ops: (n-1) adds per element.",
    params=(), arity=None, shape=_same_shapes("add"),
    other_ops=lambda a, ins, out: (len(ins) - 1) * numel(out),
    torch=lambda a, ins: modules().Add(),
    fusion="elementwise", inplace_ports=ANY_PORT, strided_out=True,
))

register(OpSpec(
    name="mean", doc="Elementwise mean of two or more tensors of one shape (FractalNet's join). "
                     "Other ops: (n-1) adds and one multiply per element.",
    params=(), arity=None, shape=_same_shapes("mean"),
    other_ops=lambda a, ins, out: len(ins) * numel(out),
    torch=lambda a, ins: modules().Mean(),
    fusion="elementwise", inplace_ports=ANY_PORT, strided_out=True,
))

register(OpSpec(
    name="concat", doc="Concatenation along channels (features); shapes must agree elsewhere.",
    params=(), arity=None, shape=_concat_shape,
    torch=lambda a, ins: modules().Concat(),
    fusion="injective", strided_out=True,
))
