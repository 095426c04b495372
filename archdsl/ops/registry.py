"""The op registry: everything archdsl knows about an op lives in its `OpSpec`, in one place.

An `OpSpec` holds the op's argument schema, shape rule, cost rules (params, buffers, MACs,
other operations), how its output counts as activation memory, and its receptive-field window.
Later stages read their facts from the same spec: the torch reference (`torch`), the passes
(`family`, `fusion`, `act_code` / `act_forms`, `inference_noop`) and the code generator's buffer planner
(`inplace_ports`, `strided_out`, `channel_step_out`).  Stages look ops up here instead of
writing `if op == "conv"` chains, and op groups (the conv ops, the activations, ...) are derived from these fields by the
functions at the end of this module, so a new op joins a group by declaring its facts.

Shapes are per sample, the batch being symbolic: `(C, H, W)` for feature maps, `(F,)` for flat
vectors.  Rules raise `ArchError` without a location; the elaborator adds the node and place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from ..errors import ArchError

Shape = tuple[int, ...]
Attrs = dict[str, Any]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED = _Required()


# ---- argument kinds: each converts a user value to its normal form or raises ValueError -----


@dataclass(frozen=True)
class Kind:
    """An argument type: `describe` names it in errors, `convert` normalizes or raises ValueError."""

    describe: str
    convert: Callable[[Any], Any]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_kind(minimum: int = 0) -> Kind:
    def convert(v):
        v = _whole(v)  # `3.5 * 2` is a whole number
        if not _is_int(v):
            raise ValueError
        if v < minimum:
            raise ValueError(f"must be at least {minimum}")
        return v

    return Kind(f"an integer ≥ {minimum}", convert)


def float_kind(lo: float | None = None, hi: float | None = None, open_hi: bool = False) -> Kind:
    rng = "" if lo is None else (f" in [{lo}, {hi}{')' if open_hi else ']'}" if hi is not None else f" ≥ {lo}")

    def convert(v):
        if not _is_num(v):
            raise ValueError
        v = float(v)
        if v != v or (lo is not None and v < lo) or (hi is not None and (v >= hi if open_hi else v > hi)):
            raise ValueError(f"must be{rng}")
        return v

    return Kind(f"a number{rng}", convert)


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError
    return v


BOOL = Kind("true or false", _bool)


def _whole(v):
    """An integral float as an int (`3.5 * 2` is a whole number); not past 2**53, where a float is
    no longer exact (and `1e308` would become a 309-digit integer in every message)."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53 else v


def pair_kind(minimum: int) -> Kind:
    """An int, or a pair (h, w) of ints; normalized to a pair."""

    def convert(v):
        items = tuple(_whole(i) for i in v) if isinstance(v, tuple) else (_whole(v), _whole(v))
        if len(items) != 2 or not all(_is_int(i) for i in items):
            raise ValueError
        if min(items) < minimum:
            raise ValueError(f"must be at least {minimum}")
        return items

    return Kind(f"an integer ≥ {minimum} or a pair (h, w)", convert)


def _padding(v):
    items = tuple(_whole(i) for i in v) if isinstance(v, tuple) else (_whole(v),)
    if not all(_is_int(i) for i in items) or len(items) not in (1, 2, 4):
        raise ValueError
    if min(items) < 0:
        raise ValueError("must not be negative")
    if len(items) == 1:
        return items * 4
    if len(items) == 2:
        return (items[0], items[0], items[1], items[1])
    return items


PADDING = Kind("an integer, a pair (h, w) or four sides (top, bottom, left, right)", _padding)


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    default: Any = REQUIRED
    doc: str = ""


# ---- receptive-field windows -------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """How an op's output position looks at its input: effective (dilated) kernel, stride and the
    padding before the first row/column, per axis.  Output position 0 sees input rows
    [-pad_top, -pad_top + kh - 1].  A stride is a Fraction below 1 for an upsampling op (1/s)."""

    kh: int
    kw: int
    sh: int | Fraction
    sw: int | Fraction
    pad_top: int = 0
    pad_left: int = 0


POINTWISE = Window(1, 1, 1, 1)

# How an op fuses, after TVM's operator patterns (relay/op/op_attr_types.h):
#   elementwise  out[i] = f(in[i]) per element (activations, bn, add): fuses anywhere
#   injective    each output element is one input element, moved (flatten, concat, padding)
#   reduction    an output element reduces a window of inputs (pooling, softmax, lrn)
#   out_fusable  a complex op whose output takes elementwise work in its epilogue (conv, fc)
#   opaque       fuses with nothing
FUSION_KINDS = ("elementwise", "injective", "reduction", "out_fusable", "opaque")
ANY_PORT = "any"  # `inplace_ports`: any operand may be overwritten (n-ary elementwise joins)


def no_cost(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return 0


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class ActForm:
    """An activation a kernel epilogue applies: a fused node's `act=<name>`, the kernels'
    `ACT_<NAME>` = `code`.  `when` is the op's attributes that select this form: gelu declares
    two forms, "gelu" (approximate="none", erf) and "gelu_tanh" (approximate="tanh")."""

    name: str
    code: int
    when: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class OpSpec:
    """One op.  `arity` is the number of inputs: an int, None (two or more: a join), or a range
    (lo, hi).  `internal` ops are made by compiler passes (fused ops), never written by users."""

    name: str
    doc: str
    params: tuple[Param, ...]
    shape: Callable[[Attrs, list[Shape]], Shape]
    arity: int | None | tuple[int, int] = 1
    internal: bool = False
    param_count: Callable[[Attrs, list[Shape], Shape], int] = no_cost
    buffer_count: Callable[[Attrs, list[Shape], Shape], int] = no_cost
    macs: Callable[[Attrs, list[Shape], Shape], int] = no_cost
    other_ops: Callable[[Attrs, list[Shape], Shape], int] = no_cost
    activation: str = "new"  # "new" tensor, "inplace" (relu, dropout) or "view" (flatten)
    window: Callable[[Attrs, list[Shape]], Window] = lambda attrs, ins: POINTWISE
    describe: Callable[[Attrs], str] = lambda attrs: ""
    normalize: Callable[[Attrs], Attrs] = lambda attrs: attrs  # fill defaults that depend on others
    torch: Callable[[Attrs, list[Shape]], Any] | None = None  # the reference nn.Module (see `nn()`)
    # -- facts for the passes and the code generator (every one has a default: a new op that
    #    declares none of them is correct, merely never fused or written in place)
    family: str = ""  # the op a fused op grows from ("fused_conv" -> "conv"); "" = its own name
    fusion: str = "opaque"  # how it fuses, in TVM's sense: one of FUSION_KINDS
    act_code: int | None = None  # a parameterless activation kernels apply in an epilogue: its ACT_* code
    act_forms: tuple[ActForm, ...] = ()  # an activation with parameters: one epilogue form per setting
    inference_noop: bool = False  # an identity at inference (removed by strip_inference_noops)
    inplace_ports: tuple[int, ...] | str = ()  # inputs its kernel may overwrite; ANY_PORT: any operand
    strided_out: bool = False  # its kernel writes through a strided view (a channel slice of a concat)
    channel_step_out: bool = False  # ... and through any channel stride (its slot in a shuffled concat)

    def __post_init__(self):
        if self.fusion not in FUSION_KINDS:
            raise ValueError(f"op {self.name!r}: fusion {self.fusion!r} is not one of {FUSION_KINDS}")
        if self.act_code is not None and self.act_forms:
            raise ValueError(f"op {self.name!r}: declare `act_code` (no parameters) or `act_forms`, not both")

    @property
    def epilogue_forms(self) -> tuple[ActForm, ...]:
        """The activation forms an epilogue can apply in this op's place (none: not an activation)."""
        return (ActForm(self.name, self.act_code),) if self.act_code is not None else self.act_forms

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def base(self) -> str:
        """The op family this op belongs to: `conv` for conv and fused_conv."""
        return self.family or self.name


OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} registered twice")
    OPS[spec.name] = spec
    return spec


def get(name: str) -> OpSpec:
    return OPS[name]


def nn():
    """torch.nn, imported on first use: analysis and the CLI's summary must not need torch."""
    from torch import nn as torch_nn

    return torch_nn


def modules():
    """archdsl's own torch modules (per-side padded conv, drop-path, joins)."""
    from . import torch_modules

    return torch_modules


# ---- helpers shared by the shape rules ---------------------------------------------------------


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape)


def need_map(op: str, shape: Shape) -> tuple[int, int, int]:
    """The (C, H, W) of a feature-map input, or a clear error for a flat one."""
    if len(shape) != 3:
        raise ArchError(f"{op} needs a feature map C×H×W, but its input is the flat vector {fmt_shape(shape)}",
                        hint="spatial ops must come before `flatten`")
    return shape  # type: ignore[return-value]


def window_out(size: int, k: int, s: int, pad_lo: int, pad_hi: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's output length of a sliding window (conv: floor; pooling may use ceil_mode).

    With ceil_mode, PyTorch drops the last window when it would start inside the right padding
    (aten/src/ATen/native/Pool.h, pooling_output_shape).
    """
    span = size + pad_lo + pad_hi - dilation * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pad_lo:
        out -= 1
    return out


def window_formula(size: int, k: int, s: int, pad_lo: int, pad_hi: int, dilation: int, ceil_mode: bool) -> str:
    rounding = "ceil" if ceil_mode else "floor"
    dil = f"{dilation}·" if dilation != 1 else ""
    pad = f"{pad_lo}+{pad_hi}" if pad_lo != pad_hi else f"2·{pad_lo}"
    return f"{rounding}(({size} + {pad} - {dil}({k}-1) - 1) / {s}) + 1"


# ---- op groups, derived from the specs' facts (computed when asked: ops register at import) -----


def family(base: str) -> frozenset[str]:
    """Every op of one family: `family("conv")` is {"conv", "fused_conv"}."""
    return frozenset(name for name, spec in OPS.items() if spec.base == base)


def act_table() -> dict[str, tuple[str, ActForm]]:
    """THE table of epilogue activations: act name -> (the op it stands for, its form), by ACT_*
    code.  Every other question about `act=` values is answered from it."""
    rows = [(form, name) for name, s in OPS.items() for form in s.epilogue_forms]
    return {form.name: (op, form) for form, op in sorted(rows, key=lambda r: r[0].code)}


def activations() -> tuple[str, ...]:
    """The act names the kernels can apply in an epilogue ("relu", ..., "gelu", "gelu_tanh"), by ACT_* code."""
    return tuple(act_table())


def activation_ops() -> frozenset[str]:
    """The ops a fusion pass may fold into an epilogue (see `epilogue_act` for which setting)."""
    return frozenset(op for op, _ in act_table().values())


def epilogue_act(op: str, attrs: Attrs) -> str | None:
    """The act name an epilogue applies in place of a node `op(attrs)`, or None when it cannot
    (not an activation, or a setting no kernel form covers)."""
    for form in OPS[op].epilogue_forms if op in OPS else ():
        if all(attrs.get(k) == v for k, v in form.when):
            return form.name
    return None


def act_codes() -> dict[str, int]:
    """{"none": 0, act name: its ACT_* code}: what `act=` means to the kernels."""
    return {"none": 0, **{name: form.code for name, (_, form) in act_table().items()}}


def apply_activation(act: str, x):
    """`x` through the activation `act` ("none", or an act name of `act_table`) as its op's own
    reference module computes it, with the attributes of that form (gelu_tanh: GELU(approximate=
    "tanh")): fused nodes and the benchmark use this one definition."""
    return x if act == "none" else _activation_module(act)(x)


@functools.cache
def _activation_module(act: str):
    op, form = act_table()[act]
    return OPS[op].torch(dict(form.when), [])


def act_constant(act: str) -> str:
    """The kernels' name for an act: "relu" -> "ACT_RELU", "gelu_tanh" -> "ACT_GELU_TANH" (kernels/conv2d.py)."""
    return f"ACT_{act.upper()}"


def inference_noops() -> frozenset[str]:
    return frozenset(n for n, s in OPS.items() if s.inference_noop)


def strided_out_ops() -> frozenset[str]:
    return frozenset(n for n, s in OPS.items() if s.strided_out)


def of_fusion(kind: str) -> frozenset[str]:
    if kind not in FUSION_KINDS:
        raise ValueError(f"unknown fusion kind {kind!r}")
    return frozenset(n for n, s in OPS.items() if s.fusion == kind)
