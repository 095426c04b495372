"""The ops of post-2016 CNNs (MobileNet, EfficientNet, ShuffleNet, MNASNet, RegNet, ConvNeXt).

Activations `relu6`, `hardswish`, `hardsigmoid`, `silu`, `gelu`; the squeeze-and-excitation
scale (`mul { … }`, broadcasting C×1×1 over C×H×W); layer norm (`layer_norm`), the per-position
linear layer (`linear`) and axis permutation (`permute`) of ConvNeXt; a learnable per-channel
scale held as a bare parameter (`layer_scale`); ShuffleNetV2's `chunk` and `channel_shuffle`;
torchvision's `stochastic_depth` in both of its modes.

Cost conventions (the registry's, see `archdsl.analysis`): MACs are only the multiply-accumulates
of weight layers (`linear` here); everything else is "other ops", counted per output element with
a transcendental function (exp, erf, tanh) as one op:
  relu6 2 (max, min) · hardsigmoid 4 (add 3, max, min, ×1/6) · hardswish 5 (hardsigmoid, ×x) ·
  silu 2 (sigmoid, ×x) · gelu 4 exact (×1/√2, erf, +1, ×x/2), 8 tanh form (x³ and its ×0.044715
  and + x, ×√(2/π), tanh, +1, ×x/2: counted 8) · layer_norm 6 (mean and variance accumulation,
  subtract, scale, then the affine 2) · mul (n-1) · layer_scale 1 · chunk, channel_shuffle,
  permute, stochastic_depth 0 (data movement or an identity at inference).
Activation memory follows torch.nn: an activation that has `inplace=True` in torch.nn (ReLU6,
Hardswish, Hardsigmoid, SiLU) is in place, GELU makes a new tensor; `chunk` and `permute` are
views; `channel_shuffle` is a copy (torchvision's `.contiguous()`).
"""

from __future__ import annotations

from ..errors import ArchError
from .join import JoinMismatch
from .registry import ANY_PORT, BOOL, ActForm, Kind, OpSpec, Param, float_kind, fmt_shape, int_kind, numel, register


def _torch():
    """The reference modules of these ops, imported on first use (analysis needs no torch)."""
    from . import modern_torch

    return modern_torch


def _same(a, ins):
    return ins[0]


def choice_kind(*choices: str) -> Kind:
    def convert(v):
        if v not in choices:
            raise ValueError
        return v

    return Kind(" or ".join(f'"{c}"' for c in choices), convert)


def _order(v):
    items = tuple(v) if isinstance(v, tuple) else None
    if items is None or sorted(items) != list(range(len(items))) or not all(isinstance(i, int) for i in items):
        raise ValueError
    return items


ORDER = Kind("a permutation of the per-sample axes, e.g. (1, 2, 0)", _order)


# ---- activations ---------------------------------------------------------------------------------


def _activation(name: str, doc: str, ops_per_element: int, module, inplace: bool, params=(), describe=None,
                act_code: int | None = None, act_forms: tuple[ActForm, ...] = ()):
    # act_code: the kernels' ACT_* code (kernels/conv2d.py, elementwise.py), applied in conv and fc
    # epilogues and by the scale-shift kernel; gelu, which has a parameter, declares one form per
    # setting instead (act_forms: "gelu" is ACT_GELU, "gelu_tanh" ACT_GELU_TANH).
    register(OpSpec(
        name=name, doc=doc, params=params, shape=_same, activation="inplace" if inplace else "new",
        other_ops=lambda a, ins, out: ops_per_element(a) * numel(out) if callable(ops_per_element)
        else ops_per_element * numel(out),
        describe=describe or (lambda a: ""),
        torch=module,
        fusion="elementwise", inplace_ports=(0,), act_code=act_code, act_forms=act_forms,
        strided_out=act_code is not None or bool(act_forms),
    ))


_activation("relu6", "min(max(x, 0), 6) (MobileNetV2); in place. Other ops: 2 per element.", 2,
            lambda a, ins: _nn().ReLU6(), inplace=True, act_code=4)
_activation("hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3's gate); in place. Other ops: 4 per element.", 4,
            lambda a, ins: _nn().Hardsigmoid(), inplace=True, act_code=5)
_activation("hardswish", "x · relu6(x + 3) / 6 (MobileNetV3); in place. Other ops: 5 per element.", 5,
            lambda a, ins: _nn().Hardswish(), inplace=True, act_code=6)
_activation("silu", "x · sigmoid(x), also called swish (EfficientNet); in place. Other ops: 2 per element.", 2,
            lambda a, ins: _nn().SiLU(), inplace=True, act_code=7)
_activation("gelu", 'x · Φ(x) (ConvNeXt); approximate="tanh" uses the tanh form; a new tensor. '
            "Other ops: 4 per element (8 for the tanh form).",
            lambda a: 8 if a["approximate"] == "tanh" else 4,
            lambda a, ins: _nn().GELU(approximate=a["approximate"]), inplace=False,
            params=(Param("approximate", choice_kind("none", "tanh"), "none", "the exact form or the tanh one"),),
            describe=lambda a: "tanh" if a["approximate"] == "tanh" else "",
            act_forms=(ActForm("gelu", 8, (("approximate", "none"),)),
                       ActForm("gelu_tanh", 9, (("approximate", "tanh"),))))


def _nn():
    from torch import nn

    return nn


# ---- the squeeze-and-excitation scale: a broadcasting product ---------------------------------------


def _broadcast_shape(a, ins):
    """Inputs of one rank whose every axis is equal or 1 (C×H×W times C×1×1): torch's broadcasting."""
    out = list(ins[0])
    for i, s in enumerate(ins[1:], 1):
        if len(s) != len(out) or any(x != y and 1 not in (x, y) for x, y in zip(out, s)):
            raise JoinMismatch(f"mul of tensors that do not broadcast: {fmt_shape(ins[0])} and {fmt_shape(s)}", i,
                               hint="each axis must be equal or 1 on one side: the SE scale is C×1×1 "
                                    "(global_avgpool, then 1×1 convs) against C×H×W")
        out = [max(x, y) for x, y in zip(out, s)]
    return tuple(out)


register(OpSpec(
    name="mul",
    doc="Elementwise product of two or more tensors, broadcasting axes of size 1 (written "
        "`mul { … }`: squeeze-and-excitation's C×H×W · C×1×1). Other ops: (n-1) per output element.",
    params=(), arity=None, shape=_broadcast_shape,
    other_ops=lambda a, ins, out: (len(ins) - 1) * numel(out),
    torch=lambda a, ins: _torch().Mul(),
    fusion="elementwise",
    # any operand of the output's shape may be overwritten (the planner checks shapes: never the
    # broadcast gate); the kernel reads both operands of an element before writing it
    inplace_ports=ANY_PORT,
    strided_out=True,  # the mul kernel writes through the output's row strides (a concat's slice)
))


# ---- normalization, per-position linear layers, layout ---------------------------------------------


def _norm_axis_size(op, a, shape):
    if a["axis"] == 0 or len(shape) == 1:
        return shape[0]
    return shape[-1]


def _layer_norm_shape(a, ins):
    if a["axis"] not in (0, -1):
        raise ArchError(f"layer_norm: `axis` must be 0 (channels) or -1 (the last axis), got {a['axis']}")
    return ins[0]


register(OpSpec(
    name="layer_norm",
    doc="Layer normalization of each position's vector: axis=0 normalizes the channels of C×H×W "
        "(torchvision's LayerNorm2d), axis=-1 the last axis (nn.LayerNorm, after `permute` to "
        "channels-last); on a flat vector both are nn.LayerNorm. Params: weight and bias of that "
        "axis's size. Other ops: 6 per element.",
    params=(Param("eps", float_kind(0.0), 1e-5), Param("axis", int_kind(-1), 0, "0 or -1"),
            Param("affine", BOOL, True)),
    shape=_layer_norm_shape,
    param_count=lambda a, ins, out: 2 * _norm_axis_size("layer_norm", a, ins[0]) if a["affine"] else 0,
    other_ops=lambda a, ins, out: 6 * numel(out),
    describe=lambda a: "last axis" if a["axis"] == -1 else "",
    torch=lambda a, ins: _torch().layer_norm(_norm_axis_size("layer_norm", a, ins[0]), a["eps"], a["affine"],
                                             channels_first=a["axis"] == 0 and len(ins[0]) == 3),
    fusion="reduction",  # each output element reads its position's whole vector
))


def _linear_shape(a, ins):
    return tuple(ins[0][:-1]) + (a["out"],)


register(OpSpec(
    name="linear",
    doc="nn.Linear on the last axis: (…, in) -> (…, out), a weight (out, in) as PyTorch holds it "
        "(ConvNeXt's per-position MLP after `permute`; on a flat vector it is `fc`). "
        "MACs: positions · in · out.",
    params=(Param("out", int_kind(1), doc="output features"), Param("bias", BOOL, True)),
    shape=_linear_shape,
    param_count=lambda a, ins, out: ins[0][-1] * a["out"] + (a["out"] if a["bias"] else 0),
    macs=lambda a, ins, out: numel(ins[0]) * a["out"],
    other_ops=lambda a, ins, out: numel(out) if a["bias"] else 0,
    torch=lambda a, ins: _nn().Linear(ins[0][-1], a["out"], a["bias"]),
    fusion="out_fusable",
))


def _permute_shape(a, ins):
    if len(a["order"]) != len(ins[0]):
        raise ArchError(f"permute: order {a['order']} has {len(a['order'])} axes, the input "
                        f"{fmt_shape(ins[0])} has {len(ins[0])}", hint="per-sample axes: (1, 2, 0) makes C×H×W H×W×C")
    return tuple(ins[0][i] for i in a["order"])


register(OpSpec(
    name="permute",
    doc="Reorders the per-sample axes (a view): `permute((1, 2, 0))` makes C×H×W channels-last "
        "H×W×C, `permute((2, 0, 1))` back (torchvision's Permute([0, 2, 3, 1]) and [0, 3, 1, 2]). "
        "The receptive field treats it as pointwise (a layout change).",
    params=(Param("order", ORDER, doc="the input axis each output axis takes"),),
    shape=_permute_shape, activation="view",
    describe=lambda a: "(" + ",".join(map(str, a["order"])) + ")",
    torch=lambda a, ins: _torch().Permute(a["order"]),
    fusion="injective",
))


def _param_shape(shape):
    return (shape[0], 1, 1) if len(shape) == 3 else (shape[0],)


register(OpSpec(
    name="layer_scale",
    doc="x · γ with a learnable per-channel γ (C×1×1 on a feature map), initialised to `init` "
        "(ConvNeXt's layer scale). γ is a bare parameter: its state-dict key is the node's name "
        "itself (`features.1.0.layer_scale`), as torchvision's CNBlock holds it. Other ops: 1 per element.",
    params=(Param("init", float_kind(), 1e-6, "γ's initial value"),),
    shape=_same,
    param_count=lambda a, ins, out: ins[0][0],
    other_ops=lambda a, ins, out: numel(out),
    torch=lambda a, ins: _torch().LayerScale(_param_shape(ins[0]), a["init"]),
    fusion="elementwise", inplace_ports=(0,),
))


# ---- ShuffleNetV2 -----------------------------------------------------------------------------------


def _chunk_shape(a, ins):
    c = ins[0][0]
    if a["index"] >= a["parts"]:
        raise ArchError(f"chunk: index {a['index']} is past the last of {a['parts']} parts",
                        hint=f"indices run from 0 to {a['parts'] - 1}")
    if c % a["parts"]:
        raise ArchError(f"chunk: {c} channels do not split into {a['parts']} equal parts")
    return (c // a["parts"],) + tuple(ins[0][1:])


register(OpSpec(
    name="chunk",
    doc="Part `index` of the channels split into `parts` equal parts (torch.chunk along channels; "
        "ShuffleNetV2's channel split); a view.",
    params=(Param("parts", int_kind(1)), Param("index", int_kind(0))),
    shape=_chunk_shape, activation="view",
    describe=lambda a: f"{a['index']}/{a['parts']}",
    torch=lambda a, ins: _torch().Chunk(a["parts"], a["index"]),
    fusion="injective",  # compiled as a view: a channel slice of its input (codegen/plan.py)
))


def _shuffle_shape(a, ins):
    c = ins[0][0]
    if c % a["groups"]:
        raise ArchError(f"channel_shuffle: {c} channels are not divisible by groups={a['groups']}")
    return ins[0]


register(OpSpec(
    name="channel_shuffle",
    doc="ShuffleNet's channel shuffle: channels viewed as groups × (C/groups), transposed "
        "(channel g·k + i moves to i·groups + g); a new tensor, no arithmetic.",
    params=(Param("groups", int_kind(1)),),
    shape=_shuffle_shape,
    describe=lambda a: f"g{a['groups']}",
    torch=lambda a, ins: _torch().ChannelShuffle(a["groups"]),
    fusion="injective",
    strided_out=True,  # the shuffle kernel gathers its input and writes through the output's strides
))


# ---- regularization ---------------------------------------------------------------------------------


register(OpSpec(
    name="stochastic_depth",
    doc='torchvision\'s StochasticDepth: while training, zeroes each sample\'s tensor (mode "row") '
        'or the whole batch\'s (mode "batch") with probability p, survivors scaled by 1/(1-p); '
        "an identity at inference.",
    params=(Param("p", float_kind(0.0, 1.0), doc="drop probability"),
            Param("mode", choice_kind("row", "batch"), "row")),
    shape=_same, activation="inplace",
    describe=lambda a: f"p={a['p']:g} {a['mode']}",
    torch=lambda a, ins: _torch().StochasticDepth(a["p"], a["mode"]),
    fusion="elementwise", inference_noop=True,
))

MODERN_OPS = ("relu6", "hardsigmoid", "hardswish", "silu", "gelu", "mul", "layer_norm", "linear", "permute",
              "layer_scale", "chunk", "channel_shuffle", "stochastic_depth")
