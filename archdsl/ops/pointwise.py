"""Per-position ops: activations, normalization, regularizers, reshapes."""

from __future__ import annotations

from ..errors import ArchError
from .registry import BOOL, OpSpec, Param, Window, float_kind, int_kind, modules, need_map, nn, numel, register


def _same(a, ins):
    return ins[0]


register(OpSpec(
    name="relu", doc="max(x, 0); in place (no new activation memory). Other ops: one per element.",
    params=(), shape=_same, activation="inplace",
    other_ops=lambda a, ins, out: numel(out),
    torch=lambda a, ins: nn().ReLU(),
    fusion="elementwise", act_code=1, inplace_ports=(0,), strided_out=True,
))

register(OpSpec(
    name="tanh", doc="Hyperbolic tangent (LeNet-5's squashing function); a new tensor. Other ops: one per element.",
    params=(), shape=_same,
    other_ops=lambda a, ins, out: numel(out),
    torch=lambda a, ins: nn().Tanh(),
    fusion="elementwise", act_code=2, inplace_ports=(0,), strided_out=True,
))

register(OpSpec(
    name="sigmoid", doc="Logistic sigmoid 1/(1+e^-x); a new tensor. Other ops: one per element.",
    params=(), shape=_same,
    other_ops=lambda a, ins, out: numel(out),
    torch=lambda a, ins: nn().Sigmoid(),
    fusion="elementwise", act_code=3, inplace_ports=(0,), strided_out=True,
))


def _pad_channels_shape(a, ins):
    c = ins[0][0]
    if a["out"] < c:
        raise ArchError(f"pad_channels cannot shrink {c} channels to {a['out']}",
                        hint="pad_channels appends zero channels; use a 1×1 conv to reduce channels")
    return (a["out"],) + tuple(ins[0][1:])


register(OpSpec(
    name="pad_channels",
    doc="Appends zero channels up to `out` (the parameter-free 'option A' shortcut of CIFAR ResNets "
        "and Stochastic Depth: subsample, then zero-pad the new channels); a new tensor.",
    params=(Param("out", int_kind(1), doc="channels after padding"),),
    shape=_pad_channels_shape,
    describe=lambda a: f"→{a['out']}",
    torch=lambda a, ins: modules().PadChannels(a["out"]),
    fusion="injective", strided_out=True,
))

register(OpSpec(
    name="identity", doc="Returns its input unchanged (a view).",
    params=(), shape=_same, activation="view",
    torch=lambda a, ins: nn().Identity(),
    fusion="injective", inference_noop=True, strided_out=True,
))

register(OpSpec(
    name="dropout", doc="Dropout (training only); in place, an identity at inference.",
    params=(Param("p", float_kind(0.0, 1.0, open_hi=True), 0.5, "drop probability"),),
    shape=_same, activation="inplace",
    describe=lambda a: f"p={a['p']:g}",
    torch=lambda a, ins: nn().Dropout(a["p"]),
    fusion="elementwise", inference_noop=True, strided_out=True,
))

register(OpSpec(
    name="drop_path",
    doc="Stochastic depth: drops the whole sample's tensor with probability p while training "
        "(survivors scaled by 1/(1-p)); an identity at inference.",
    params=(Param("p", float_kind(0.0, 1.0, open_hi=True), doc="drop probability (1 - survival probability)"),),
    shape=_same, activation="inplace",
    describe=lambda a: f"p={a['p']:g}",
    torch=lambda a, ins: modules().DropPath(a["p"]),
    fusion="elementwise", inference_noop=True, strided_out=True,
))


def _bn_shape(a, ins):
    return ins[0]


register(OpSpec(
    name="bn",
    doc="Batch normalization over channels (BatchNorm2d, or BatchNorm1d on flat input). "
        "Params: weight and bias (2C); buffers: running mean and var and num_batches_tracked (2C + 1). "
        "Other ops: a scale and a shift per element at inference.",
    params=(Param("eps", float_kind(0.0), 1e-5), Param("momentum", float_kind(0.0, 1.0), 0.1),
            Param("affine", BOOL, True)),
    shape=_bn_shape,
    param_count=lambda a, ins, out: 2 * ins[0][0] if a["affine"] else 0,
    buffer_count=lambda a, ins, out: 2 * ins[0][0] + 1,
    other_ops=lambda a, ins, out: 2 * numel(out),
    torch=lambda a, ins: (nn().BatchNorm2d if len(ins[0]) == 3 else nn().BatchNorm1d)(
        ins[0][0], a["eps"], a["momentum"], a["affine"]),
    fusion="elementwise", inplace_ports=(0,), strided_out=True, channel_step_out=True,
))


def _lrn_shape(a, ins):
    need_map("lrn", ins[0])
    return ins[0]


register(OpSpec(
    name="lrn",
    doc="Local response normalization across channels (PyTorch LocalResponseNorm: "
        "x / (k + alpha/size · Σ x²)^beta over `size` neighbouring channels). "
        "Other ops: size multiply-adds plus a power and a divide per element.",
    params=(Param("size", int_kind(1), 5), Param("alpha", float_kind(0.0), 1e-4),
            Param("beta", float_kind(0.0), 0.75), Param("k", float_kind(0.0), 1.0)),
    shape=_lrn_shape,
    other_ops=lambda a, ins, out: numel(out) * (a["size"] + 2),
    describe=lambda a: f"n={a['size']}",
    torch=lambda a, ins: nn().LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["k"]),
    fusion="reduction", strided_out=True,
))

register(OpSpec(
    name="softmax", doc="Softmax over the channel (feature) axis. Other ops: exp, add and divide per element.",
    params=(), shape=_same,
    other_ops=lambda a, ins, out: 3 * numel(out),
    torch=lambda a, ins: nn().Softmax(dim=1),
    fusion="reduction", strided_out=True,
))


def _flatten_shape(a, ins):
    return (numel(ins[0]),)


register(OpSpec(
    name="flatten", doc="C×H×W -> (C·H·W,) in PyTorch's (channel-major) order; a view.",
    params=(), shape=_flatten_shape, activation="view",
    window=lambda a, ins: Window(ins[0][1], ins[0][2], ins[0][1], ins[0][2]) if len(ins[0]) == 3 else Window(1, 1, 1, 1),
    torch=lambda a, ins: nn().Flatten(1),
    fusion="injective", strided_out=True,  # when it is a copy (codegen/plan.py `flatten_is_view`)
))
