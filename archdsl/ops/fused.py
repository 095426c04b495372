"""Fused ops: made by the compiler's passes (`archdsl.passes`), never written in `.arch` files.

A fused op is one kernel launch that does the work of several IR nodes.  It keeps the name of
the node it grew from (the conv or fc) and records in `sources` which original nodes' weights
it uses (role -> node name), so weights are still loaded by their reference names and folded
at load time.

    fused_conv  conv -> [bn] -> [+ residual] -> [act]      inputs: x [, residual]
    fused_fc    fc -> [act]                                 inputs: x
    fused_add   add -> act                                  inputs: two or more
    fused_bn    bn -> act (pre-activation blocks, DenseNet) inputs: x
"""

from __future__ import annotations

from ..errors import ArchError
from . import linear
from .registry import OPS, Kind, OpSpec, Param, fmt_shape, float_kind, modules, nn, numel, register

ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")


def _act(v):
    if v not in ACTIVATIONS:
        raise ValueError
    return v


ACT = Kind("one of none, relu, tanh, sigmoid", _act)
ANY = Kind("a mapping of roles to node names", lambda v: v)

_conv, _fc = OPS["conv"], OPS["fc"]
_EPILOGUE = (
    Param("bn_eps", Kind("a number or none", lambda v: v if v is None else float_kind(0.0).convert(v)), None,
          "eps of the folded batch norm, or none"),
    Param("act", ACT, "none", "activation applied last"),
    Param("sources", ANY, {}, "the original nodes whose weights this node uses"),
)


def _residual_check(op, out, ins):
    if len(ins) == 2 and tuple(ins[1]) != tuple(out):
        raise ArchError(f"{op}: the residual {fmt_shape(ins[1])} does not match the output {fmt_shape(out)}")
    return out


def _epilogue_ops(a, ins, out):
    per_element = (2 if a["bn_eps"] is not None else 0) + (len(ins) - 1) + (a["act"] != "none")
    return per_element * numel(out)


def _describe(base):
    def describe(a):
        parts = [base.describe(a)] if base.describe(a) else []
        parts += ["+bn"] if a.get("bn_eps") is not None else []
        parts += [f"+{a['act']}"] if a.get("act", "none") != "none" else []
        return " ".join(parts)

    return describe


register(OpSpec(
    name="fused_conv",
    doc="conv, then (folded) batch norm, a residual add and an activation in one kernel.",
    params=_conv.params + _EPILOGUE,
    shape=lambda a, ins: _residual_check("fused_conv", _conv.shape(a, ins[:1]), ins),
    arity=(1, 2),
    internal=True,
    param_count=lambda a, ins, out: _conv.param_count(a, ins[:1], out) + (2 * out[0] if a["bn_eps"] is not None else 0),
    buffer_count=lambda a, ins, out: 2 * out[0] + 1 if a["bn_eps"] is not None else 0,
    macs=lambda a, ins, out: _conv.macs(a, ins[:1], out),
    other_ops=lambda a, ins, out: _conv.other_ops(a, ins[:1], out) + _epilogue_ops(a, ins, out),
    window=lambda a, ins: _conv.window(a, ins[:1]),
    describe=_describe(_conv),
    torch=lambda a, ins: modules().Fused(a["act"], conv=_conv.torch(a, ins[:1]),
                                         **({"bn": nn().BatchNorm2d(a["out"], a["bn_eps"])}
                                            if a["bn_eps"] is not None else {})),
))

register(OpSpec(
    name="fused_fc",
    doc="fc, then an activation, in one kernel.",
    params=_fc.params + _EPILOGUE,
    shape=lambda a, ins: _fc.shape(a, ins),
    internal=True,
    param_count=_fc.param_count,
    macs=_fc.macs,
    other_ops=lambda a, ins, out: _fc.other_ops(a, ins, out) + _epilogue_ops(a, ins, out),
    describe=_describe(_fc),
    torch=lambda a, ins: modules().Fused(a["act"], fc=_fc.torch(a, ins)),
))


_add = OPS["add"]

register(OpSpec(
    name="fused_add",
    doc="An elementwise sum of two or more tensors, then an activation, in one kernel.",
    params=(Param("act", ACT, "none", "activation applied last"), _EPILOGUE[2]),
    shape=_add.shape,
    arity=None,
    internal=True,
    other_ops=lambda a, ins, out: _add.other_ops(a, ins, out) + numel(out),
    describe=lambda a: f"+{a['act']}",
    torch=lambda a, ins: modules().FusedAdd(a["act"]),
))


_bn = OPS["bn"]

register(OpSpec(
    name="fused_bn",
    doc="Inference batch norm as a per-channel scale and shift, then an activation, in one kernel.",
    params=_bn.params + _EPILOGUE[1:],
    shape=_bn.shape,
    internal=True,
    param_count=_bn.param_count,
    buffer_count=_bn.buffer_count,
    other_ops=lambda a, ins, out: _bn.other_ops(a, ins, out) + numel(out),
    describe=lambda a: f"+{a['act']}",
    torch=lambda a, ins: modules().Fused(a["act"], bn=_bn.torch(a, ins)),
))
