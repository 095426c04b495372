"""Fused ops: made by the compiler's passes (`archdsl.passes`), never written in `.arch` files.

Which convs one launch computes together (sibling 1x1 convs, a conv chain) is not a node
attribute: see `archdsl.passes.groups` and the launch schedule (`archdsl.codegen.schedule`).

A fused op is one kernel launch that does the work of several IR nodes.  It keeps the name of
the node it grew from (the conv or fc) and records in `sources` which original nodes' weights
it uses (role -> node name), so weights are still loaded by their reference names and folded
at load time.

    fused_conv  [· gate ->] [bn -> act ->] [ln ->] conv -> [bn] -> [· γ] -> [+ residual] -> [act]
                                                        inputs: x [, residual] [, gate]
                (the gate, `in_gate`: squeeze-and-excitation's C×1×1 scale, `archdsl.passes.gate`;
                ln, `in_ln_eps`: a layer norm over the channels folded into a 1x1 GEMM, `archdsl.passes.norm`)
                or, for a mean join: conv -> [bn] -> [act] -> mean(., residual)
                (the conv may be a per-position `linear` kept channels-first: role "linear",
                see `archdsl.passes.layout`; γ is a folded layer scale: `archdsl.passes.scale`)
    fused_fc    fc -> [act]                                 inputs: x
    fused_add   add -> act                                  inputs: two or more
    fused_bn    bn -> act (pre-activation blocks, DenseNet) inputs: x
"""

from __future__ import annotations

from ..errors import ArchError
from . import linear
from .registry import (ANY_PORT, BOOL, OPS, Kind, OpSpec, Param, act_codes, activations, apply_activation, fmt_shape,
                       float_kind, modules, nn, numel, register)

def _act(v):
    if v not in act_codes():  # "none" or an op that declares an `act_code`
        raise ValueError
    return v


def _join(v):
    if v not in ("add", "mean"):
        raise ValueError
    return v


ACT = Kind("none or an activation (" + ", ".join(activations()) + ")", _act)
ANY = Kind("a mapping of roles to node names", lambda v: v)
EPS = Kind("a number or none", lambda v: v if v is None else float_kind(0.0).convert(v))

_conv, _fc = OPS["conv"], OPS["fc"]
_EPILOGUE = (
    Param("bn_eps", EPS, None, "eps of the folded batch norm, or none"),
    Param("act", ACT, "none", "activation applied last"),
    Param("sources", ANY, {}, "the original nodes whose weights this node uses"),
)
_CONV_ONLY = (
    Param("pre_bn_eps", EPS, None, "eps of a batch norm applied to the input first (role pre_bn), or none"),
    Param("pre_act", ACT, "none", "activation applied to the input after pre_bn"),
    Param("in_gate", BOOL, False, "the input is first multiplied by a per-sample, per-channel gate "
                                  "(squeeze-and-excitation's C×1×1 scale): the last input"),
    Param("in_ln_eps", EPS, None, "eps of a layer norm over the input's channels (role in_ln) applied first, "
                                  "its affine folded into the weights and bias at load; or none"),
    Param("join", Kind("add or mean", _join), "add",
          "add: act(conv + residual); mean: (act(conv) + residual) / 2"),
    Param("layer_scale", BOOL, False, "a per-channel γ (role layer_scale) multiplies the result before the "
                                      "residual; folded into the weights and bias at load"),
)
CONV_DEFAULTS = {p.name: p.default for p in _EPILOGUE + _CONV_ONLY}


def conv_extra_inputs(a: dict, ins: list) -> tuple[list, list]:
    """A fused conv's inputs after x, [x, residual?, gate?], as (its residuals, its gates): the
    gate (`in_gate`) is always the last input."""
    rest = list(ins[1:])
    gates = rest[-1:] if a.get("in_gate") else []
    return rest[:len(rest) - len(gates)], gates


def _residual_check(op, out, ins, a=None):
    residuals, gates = conv_extra_inputs(a or {}, ins)
    if residuals and tuple(residuals[0]) != tuple(out):
        raise ArchError(f"{op}: the residual {fmt_shape(residuals[0])} does not match the output {fmt_shape(out)}")
    if gates and tuple(gates[0]) != (ins[0][0], 1, 1):
        raise ArchError(f"{op}: the gate {fmt_shape(gates[0])} is not C×1×1 for the input {fmt_shape(ins[0])}")
    return out


def _epilogue_ops(a, ins, out):
    residuals, gates = conv_extra_inputs(a, ins)
    per_element = (2 if a["bn_eps"] is not None else 0) + len(residuals) + (a["act"] != "none")
    per_element += 1 if a.get("join") == "mean" and len(residuals) == 1 else 0
    per_element += 1 if a.get("layer_scale") else 0
    ln = a.get("in_ln_eps") is not None  # x and x² summed per input element; rstd · (acc − mean · c) per output
    per_element += 2 if ln else 0
    prologue = (2 if a.get("pre_bn_eps") is not None else 0) + (a.get("pre_act", "none") != "none") + len(gates)
    prologue += 2 if ln else 0
    return per_element * numel(out) + prologue * numel(ins[0])


def _describe(base):
    def describe(a):
        prologue = ["gate"] if a.get("in_gate") else []
        prologue += ["bn"] if a.get("pre_bn_eps") is not None else []
        prologue += [a["pre_act"]] if a.get("pre_act", "none") != "none" else []
        prologue += ["ln"] if a.get("in_ln_eps") is not None else []
        parts = ["+".join(prologue) + "+"] if prologue else []  # applied to the input: "bn+relu+"
        parts += [base.describe(a)] if base.describe(a) else []
        parts += ["+bn"] if a.get("bn_eps") is not None else []
        parts += ["+scale"] if a.get("layer_scale") else []
        parts += [f"+{a['act']}"] if a.get("act", "none") != "none" else []
        parts += ["+mean"] if a.get("join") == "mean" else []
        return " ".join(parts)

    return describe


def _fused_conv_params(a, ins, out):
    pre = 2 * ins[0][0] if a.get("pre_bn_eps") is not None else 0
    scale = out[0] if a.get("layer_scale") else 0
    ln = 2 * ins[0][0] if a.get("in_ln_eps") is not None else 0  # its γ and β
    return _conv.param_count(a, ins[:1], out) + (2 * out[0] if a["bn_eps"] is not None else 0) + pre + scale + ln


def _fused_conv_buffers(a, ins, out):
    pre = 2 * ins[0][0] + 1 if a.get("pre_bn_eps") is not None else 0
    return (2 * out[0] + 1 if a["bn_eps"] is not None else 0) + pre


def _fused_conv_torch(a, ins):
    roles = {}
    if a.get("pre_bn_eps") is not None:
        roles["pre_bn"] = nn().BatchNorm2d(ins[0][0], a["pre_bn_eps"])
    if a.get("in_ln_eps") is not None:  # before the conv: Fused applies its roles in this order
        roles["in_ln"] = OPS["layer_norm"].torch(dict(eps=a["in_ln_eps"], axis=0, affine=True), ins[:1])
    if "linear" in a.get("sources", {}):  # a per-position linear: its own (out, in) weight
        roles["linear"] = modules().PointwiseLinear(ins[0][0], a["out"], a["bias"])
    else:
        roles["conv"] = _conv.torch(a, ins[:1])
    if a["bn_eps"] is not None:
        roles["bn"] = nn().BatchNorm2d(a["out"], a["bn_eps"])
    scale = (a["out"], 1, 1) if a.get("layer_scale") else None
    return modules().Fused(a["act"], pre_act=a.get("pre_act", "none"), join=a.get("join", "add"),
                           activation=apply_activation, scale_shape=scale, gate=a.get("in_gate", False), **roles)


register(OpSpec(
    name="fused_conv",
    doc="[batch norm and activation of the input,] conv, then (folded) batch norm, a residual add "
        "and an activation in one kernel (or the activation, then a 2-way mean with the residual).",
    params=_conv.params + _EPILOGUE + _CONV_ONLY,
    shape=lambda a, ins: _residual_check("fused_conv", _conv.shape(a, ins[:1]), ins, a),
    arity=(1, 3),  # x [, residual] [, gate]
    internal=True,
    param_count=_fused_conv_params,
    buffer_count=_fused_conv_buffers,
    macs=lambda a, ins, out: _conv.macs(a, ins[:1], out),
    other_ops=lambda a, ins, out: _conv.other_ops(a, ins[:1], out) + _epilogue_ops(a, ins, out),
    window=lambda a, ins: _conv.window(a, ins[:1]),
    describe=_describe(_conv),
    torch=_fused_conv_torch,
    family="conv", fusion="out_fusable", strided_out=True, channel_step_out=True,
    inplace_ports=(1,),  # the epilogue reads its residual tile before the same program stores it
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
    torch=lambda a, ins: modules().Fused(a["act"], activation=apply_activation, fc=_fc.torch(a, ins)),
    family="fc", fusion="out_fusable", strided_out=True,
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
    torch=lambda a, ins: modules().FusedAdd(a["act"], activation=apply_activation),
    family="add", fusion="elementwise", inplace_ports=ANY_PORT, strided_out=True,
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
    torch=lambda a, ins: modules().Fused(a["act"], activation=apply_activation, bn=_bn.torch(a, ins)),
    family="bn", fusion="elementwise", inplace_ports=(0,), strided_out=True, channel_step_out=True,
))
