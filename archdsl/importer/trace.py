"""PyTorch module -> a flat list of archdsl op nodes, by torch.fx.

`symbolic_trace` records the module's forward: calls of leaf modules (Conv2d, BatchNorm2d, ...)
and the functional ops between them (`torch.cat`, `+`, `F.relu`, `x.mean(...)`).  Each fx node
becomes one `OpNode` holding the archdsl op and its arguments (only those that differ from the
op's defaults), the module path it belongs to and the line of the user's `forward` that made it.
Shapes come from one forward pass on a random input (`ShapeProp`), which also decides what a
`view`/`reshape`/`mean` does.  What archdsl cannot express is an `ArchError` naming the op, the
module path and the source line.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ArchError, SrcLoc
from ..ops import OPS


@dataclass
class OpNode:
    """One archdsl node: `op(args..., **attrs)`; `path` is the leaf module's path (None for a
    functional op), `scope` the path of the module whose forward made it."""

    id: str
    op: str
    args: list[str]
    attrs: dict[str, Any]
    path: tuple[str, ...] | None
    scope: tuple[str, ...]
    loc: SrcLoc | None
    shape: tuple[int, ...] = ()
    stateful: bool = False
    calls: int = 1  # how often its leaf module is called
    index: int = 0  # its place in execution order

    @property
    def what(self) -> str:
        return ".".join(self.path) if self.path else (".".join(self.scope) or "the top module")


@dataclass
class Traced:
    nodes: list[OpNode]
    input: str
    input_shape: tuple[int, int, int]
    outputs: list[str]
    classes: dict[tuple[str, ...], type] = field(default_factory=dict)  # called module path -> class


class _Tracer(fx.Tracer):
    """fx's tracer, with the layers of other libraries that archdsl has an op for as leaves."""

    def __init__(self, autowrap_functions=()):
        super().__init__(autowrap_functions=autowrap_functions)
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _qualified(type(m)) in FOREIGN_LEAVES or super().is_leaf_module(m, qualname)


class _GraphModule(fx.GraphModule):
    """fx's GraphModule without its generated forward, which the importer never calls (it interprets
    the graph): fx writes `self.in(x)` for a module named `in`, a SyntaxError."""

    def recompile(self):
        return None


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)')


def _loc(node: fx.Node) -> SrcLoc | None:
    """The innermost frame of the user's code that made `node` (torch's own frames skipped)."""
    frames = _FRAME.findall(node.stack_trace or "")
    for file, line, _func, _code in reversed(frames):
        if "/torch/" not in file:  # torch's own frames (fx, nn) are not the user's forward
            return SrcLoc(file, int(line), 1)
    return None


def _fail(message: str, node: fx.Node | None, where: str, hint: str | None = None) -> ArchError:
    loc = _loc(node) if node is not None else None
    return ArchError(f"{message} (in {where})", loc, hint=hint)


def _scope_of(node: fx.Node) -> tuple[tuple[str, ...], list[tuple[str, type]]]:
    """The called-module stack of a node: [(path, class)], outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for key, value in stack.items():
        path, cls = value if isinstance(value, tuple) else (key, value)
        out.append((path, cls))
    return out


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _one(v):
    """(a, a) -> a, so that the .arch reads `conv(64, 3)`, not `conv(64, (3, 3))`."""
    v = tuple(v) if isinstance(v, (tuple, list)) else v
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v


def _has(op: str) -> bool:
    return op in OPS and not OPS[op].internal


# ---- leaf modules -------------------------------------------------------------------------------


def _conv(m: nn.Conv2d, shape_in) -> tuple[str, dict]:
    if m.padding_mode != "zeros":
        raise ValueError(f"padding_mode={m.padding_mode!r} (archdsl pads with zeros)")
    pad = m.padding
    if isinstance(pad, str):  # 'same' / 'valid': PyTorch's own split of the padding
        if pad == "valid":
            pad = (0, 0)
        else:
            sides = []
            for k, d in zip(m.kernel_size, m.dilation):
                total = d * (k - 1)
                sides += [total // 2, total - total // 2]
            pad = (sides[0], sides[1], sides[2], sides[3]) if sides[0] != sides[1] or sides[2] != sides[3] \
                else (sides[0], sides[2])
    return "conv", {"out": m.out_channels, "kernel": _one(m.kernel_size), "stride": _one(m.stride),
                    "pad": _one(pad), "dilation": _one(m.dilation), "groups": m.groups, "bias": m.bias is not None}


def _bn(m: nn.modules.batchnorm._BatchNorm, shape_in) -> tuple[str, dict]:
    if not m.track_running_stats:
        raise ValueError("track_running_stats=False (archdsl's bn keeps running statistics)")
    if m.momentum is None:
        raise ValueError("momentum=None, a cumulative average (archdsl's bn takes a momentum in [0, 1])")
    return "bn", {"eps": m.eps, "momentum": m.momentum, "affine": m.affine}


def _linear(m: nn.Linear, shape_in) -> tuple[str, dict]:
    if len(shape_in) == 1:
        return "fc", {"out": m.out_features, "bias": m.bias is not None}
    if _has("linear"):
        return "linear", {"out": m.out_features, "bias": m.bias is not None}
    raise ValueError("nn.Linear on a feature map (archdsl's fc needs a flat input: flatten first)")


def _maxpool(m: nn.MaxPool2d, shape_in) -> tuple[str, dict]:
    return "maxpool", {"kernel": _one(m.kernel_size), "stride": _one(m.stride), "pad": _one(m.padding),
                       "dilation": _one(m.dilation), "ceil_mode": bool(m.ceil_mode)}


def _avgpool(m: nn.AvgPool2d, shape_in) -> tuple[str, dict]:
    if m.divisor_override is not None:
        raise ValueError("divisor_override")
    return "avgpool", {"kernel": _one(m.kernel_size), "stride": _one(m.stride), "pad": _one(m.padding),
                       "ceil_mode": bool(m.ceil_mode), "count_include_pad": bool(m.count_include_pad)}


def _adaptive(size) -> tuple[str, dict]:
    size = _one(size)
    if size == 1:
        return "global_avgpool", {}
    if size is None or (isinstance(size, tuple) and None in size):
        raise ValueError("an adaptive pool that keeps a dimension (None)")
    return "adaptive_avgpool", {"size": size}


def _dropout(p: float) -> tuple[str, dict]:
    if not 0 <= p < 1:
        raise ValueError(f"dropout p={p} (archdsl's dropout needs 0 <= p < 1)")
    return "dropout", {"p": float(p)}


def _act(op: str):
    return lambda m, shape_in: (op, {})


def _flatten_module(m: nn.Flatten, shape_in) -> tuple[str, dict]:
    if m.start_dim != 1 or m.end_dim not in (-1, len(shape_in)):  # to the last dim: -1, or its index
        raise ValueError(f"nn.Flatten({m.start_dim}, {m.end_dim}) (archdsl flattens from dim 1 to the end)")
    return "flatten", {}


def _softmax_module(m: nn.Softmax, shape_in) -> tuple[str, dict]:
    if m.dim not in (1, -len(shape_in)):
        raise ValueError(f"softmax over dim {m.dim} (archdsl's softmax is over the channel axis)")
    return "softmax", {}


def _lrn(m: nn.LocalResponseNorm, shape_in) -> tuple[str, dict]:
    return "lrn", {"size": m.size, "alpha": m.alpha, "beta": m.beta, "k": m.k}


def _layer_norm(m: nn.LayerNorm, shape_in, axis: int | None = None) -> tuple[str, dict]:
    if len(m.normalized_shape) != 1 or (m.bias is None) != (m.weight is None):
        raise ValueError(f"normalized_shape={tuple(m.normalized_shape)} (archdsl normalizes one axis)")
    if axis is None:
        axis = 0 if len(shape_in) == 1 else -1
    return "layer_norm", {"eps": m.eps, "axis": axis, "affine": m.elementwise_affine}


def _upsample(shape_in, size, scale_factor, mode) -> tuple[str, dict]:
    """nn.Upsample / F.interpolate by whole factors, nearest neighbour: the same output index
    (PyTorch's i * (in / out) rounded down is i // s there), whether asked by factor or by size."""
    if mode != "nearest":
        raise ValueError(f"mode={mode!r} (archdsl's upsample is nearest-neighbour)")
    if len(shape_in) != 3:
        raise ValueError(f"an input of shape {shape_in} (archdsl upsamples C×H×W maps)")
    if scale_factor is not None:
        factors = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
        if len(factors) != 2 or any(not isinstance(f, (int, float)) or f != int(f) or f < 1 for f in factors):
            raise ValueError(f"scale_factor={scale_factor} (archdsl upsamples by whole factors)")
        scale = tuple(int(f) for f in factors)
    else:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * 2
        if len(sizes) != 2 or any(o is None or o % i for o, i in zip(sizes, shape_in[1:])):
            raise ValueError(f"size={size} from {shape_in[1]}×{shape_in[2]} (archdsl upsamples by whole factors)")
        scale = tuple(o // i for o, i in zip(sizes, shape_in[1:]))
    return "upsample", {"scale": _one(scale)}


def _gelu(m: nn.GELU, shape_in) -> tuple[str, dict]:
    return "gelu", {"approximate": m.approximate}


LEAF_MODULES = {
    nn.LayerNorm: _layer_norm,
    nn.GELU: _gelu,
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _bn,
    nn.BatchNorm1d: _bn,
    nn.Linear: _linear,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: lambda m, s: _adaptive(m.output_size),
    nn.Dropout: lambda m, s: _dropout(m.p),
    nn.Flatten: _flatten_module,
    nn.Softmax: _softmax_module,
    nn.LocalResponseNorm: _lrn,
    nn.ReLU: _act("relu"),
    nn.Sigmoid: _act("sigmoid"),
    nn.Tanh: _act("tanh"),
    nn.Identity: _act("identity"),
    nn.ReLU6: _act("relu6"),
    nn.Hardswish: _act("hardswish"),
    nn.Hardsigmoid: _act("hardsigmoid"),
    nn.SiLU: _act("silu"),
    nn.Upsample: lambda m, s: _upsample(s, m.size, m.scale_factor, m.mode),
    nn.UpsamplingNearest2d: lambda m, s: _upsample(s, m.size, m.scale_factor, m.mode),
}

# layers of other libraries, by qualified class name (no import of the library needed)
FOREIGN_LEAVES = {
    "torchvision.ops.stochastic_depth.StochasticDepth":
        lambda m, s: ("stochastic_depth", {"p": float(m.p), "mode": m.mode}),
    "torchvision.ops.misc.Permute": lambda m, s: ("permute", {"order": tuple(d - 1 for d in m.dims[1:])}),
    "torchvision.models.convnext.LayerNorm2d": lambda m, s: _layer_norm(m, s, axis=0),
}

# functions of other libraries that are one archdsl op (traced as calls, not into): name -> lowering
FOREIGN_FUNCTIONS = {
    "channel_shuffle": lambda args: ("channel_shuffle", {"groups": args[1]}),  # torchvision's ShuffleNetV2
}


def _foreign_functions(module: nn.Module) -> tuple:
    """The FOREIGN_FUNCTIONS defined in the modules of the network's classes."""
    found = []
    for m in module.modules():
        namespace = vars(sys.modules.get(type(m).__module__, object))
        for name in FOREIGN_FUNCTIONS:
            fn = namespace.get(name)
            if callable(fn) and fn not in found and getattr(fn, "__module__", "") == type(m).__module__:
                found.append(fn)
    return tuple(found)


# ---- functional ops -----------------------------------------------------------------------------

_ACT_FUNCS = {F.relu: "relu", torch.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
              torch.tanh: "tanh", F.tanh: "tanh", F.relu6: "relu6", F.hardswish: "hardswish",
              F.hardsigmoid: "hardsigmoid", F.silu: "silu"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_JOIN_FUNCS = {operator.add: "add", torch.add: "add", operator.iadd: "add", operator.mul: "mul",
               torch.mul: "mul", operator.imul: "mul"}
_JOIN_METHODS = {"add": "add", "add_": "add", "mul": "mul", "mul_": "mul"}
_SHAPE_ONLY = {"size", "dim"}  # methods whose result only feeds view/reshape arguments
_IN_PLACE_FUNCS = {operator.iadd, operator.imul}  # `y += x`: y itself changes
_IN_PLACE_METHODS = {"relu_", "add_", "mul_"}


def _modified_in_place(node: fx.Node, gm: fx.GraphModule) -> fx.Node | None:
    """The tensor that `node` overwrites (`nn.ReLU(inplace=True)`, `F.relu(x, inplace=True)`,
    `x.relu_()`, `y += x`), or None: what forward reads of it afterwards is `node`'s result."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_module":
        in_place = getattr(gm.get_submodule(node.target), "inplace", False) is True
    elif node.op == "call_method":
        in_place = node.target in _IN_PLACE_METHODS
    elif node.op == "call_function":
        in_place = node.target in _IN_PLACE_FUNCS or \
            (node.target in _ACT_FUNCS and node.target.__module__.endswith("functional") and
             _arg(node, 1, "inplace", False) is True)
    else:
        in_place = False
    return node.args[0] if in_place else None


def _arg(node: fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _mean_dims(dims, ndim: int) -> set[int]:
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return {d % ndim for d in dims}


class _Lowering:
    def __init__(self, gm: fx.GraphModule, root: nn.Module):
        self.gm, self.root = gm, root
        self.nodes: list[OpNode] = []
        self.alias: dict[str, str] = {}  # fx node -> the OpNode it is the same tensor as
        self.overwritten: dict[str, str] = {}  # OpNode -> the OpNode whose result replaced it in place
        self.classes: dict[tuple[str, ...], type] = {(): type(root)}
        self.calls: dict[str, int] = {}
        self.input: str | None = None
        self.outputs: list[str] = []
        self.tuples: dict[str, list] = {}
        self.chunks: dict[str, tuple] = {}
        self.scales: dict[str, fx.Node] = {}
        self.foreign: tuple = ()

    # -- helpers
    def ref(self, a) -> str:
        name = self.alias.get(a.name, a.name)
        while name in self.overwritten:
            name = self.overwritten[name]
        return name

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()

    def add(self, node: fx.Node, op: str, attrs: dict, args: list, path=None, stateful=False) -> None:
        if not _has(op):
            raise _fail(f"archdsl has no op `{op}` for `{_describe(node)}`", node, self.where(node, path))
        stack = _scope_of(node)
        for p, cls in stack:
            self.classes.setdefault(_split(p), cls)
        scope = [p for p, _ in stack]
        if path is not None and scope and scope[-1] == ".".join(path):
            scope = scope[:-1]
        clean = dict(attrs)
        self.nodes.append(OpNode(node.name, op, [self.ref(a) for a in args], clean, path,
                                 _split(scope[-1]) if scope else (), _loc(node), self.shape(node), stateful))

    def where(self, node: fx.Node, path=None) -> str:
        if path:
            return f"module `{'.'.join(path)}`"
        scope = _scope_of(node)
        return f"the forward of `{scope[-1][0]}` ({scope[-1][1].__name__})" if scope and scope[-1][0] \
            else f"the forward of {type(self.root).__name__}"

    # -- the walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"on_{node.op}")
            handler(node)
            target = _modified_in_place(node, self.gm)
            if target is not None and self.ref(target) != self.ref(node):
                self.overwritten[self.ref(target)] = self.ref(node)

    def on_placeholder(self, node: fx.Node) -> None:
        if self.input is not None:
            raise _fail("a forward with more than one input", node, self.where(node),
                        hint="archdsl import takes modules called on one image tensor")
        self.input = node.name
        self.nodes.append(OpNode(node.name, "input", [], {}, None, (), _loc(node), self.shape(node)))

    def on_output(self, node: fx.Node) -> None:
        out = node.args[0]
        if hasattr(out, "_fields"):  # a namedtuple (GoogLeNetOutputs)
            out = tuple(out)
        if isinstance(out, fx.Node) and out.name in self.tuples:
            out = self.tuples[out.name]
        items = out if isinstance(out, (tuple, list)) else (out,)
        for item in items:
            if not isinstance(item, fx.Node):
                raise _fail(f"the forward returns {type(item).__name__}, not a tensor", node, self.where(node))
            self.outputs.append(self.ref(item))

    def on_get_attr(self, node: fx.Node) -> None:
        value = self.gm
        for part in str(node.target).split("."):
            value = getattr(value, part, None)
        users = list(node.users)
        if isinstance(value, nn.Parameter) and len(users) == 1 and users[0].target in (operator.mul, torch.mul) \
                and len(users[0].args) == 2 and value.dim() >= 1 and value.shape[0] == value.numel():
            self.scales[users[0].name] = node  # γ · x: ConvNeXt's layer scale, lowered at the mul
            return None
        raise _fail(f"a tensor attribute `{node.target}` used directly in forward (a parameter or buffer "
                    "outside a layer)", node, self.where(node),
                    hint="archdsl's layers own their weights; use nn.Conv2d / nn.Linear / nn.BatchNorm2d modules")

    def on_call_module(self, node: fx.Node) -> None:
        module = self.gm.get_submodule(node.target)
        path = _split(node.target)
        lower = next((fn for cls, fn in LEAF_MODULES.items() if type(module) is cls), None) or \
            FOREIGN_LEAVES.get(_qualified(type(module)))
        if lower is None:
            raise _fail(f"archdsl has no op for {type(module).__name__}", node, f"module `{node.target}`",
                        hint="layers archdsl imports: " + ", ".join(sorted(c.__name__ for c in LEAF_MODULES)))
        try:
            op, attrs = lower(module, self.shape(node.args[0]))
        except ValueError as exc:
            raise _fail(f"{type(module).__name__} with {exc} cannot be expressed", node,
                        f"module `{node.target}`") from None
        stateful = next(iter(module.state_dict(keep_vars=True)), None) is not None
        self.calls[node.target] = self.calls.get(node.target, 0) + 1
        self.add(node, op, attrs, [node.args[0]], path, stateful)

    def on_call_function(self, node: fx.Node) -> None:
        fn = node.target
        if isinstance(fn, type) and issubclass(fn, tuple) and all(u.op == "output" for u in node.users):
            self.tuples[node.name] = [*node.args, *node.kwargs.values()]  # a namedtuple of outputs
            return None
        if fn in _ACT_FUNCS:
            return self.add(node, _ACT_FUNCS[fn], {}, [node.args[0]])
        if node.name in self.scales:
            gamma = self.scales[node.name]
            x = next(a for a in node.args if a is not gamma)
            if tuple(self.scales[node.name].meta["tensor_meta"].shape) != _param_shape(self.shape(x)):
                raise _fail(f"`{gamma.target}` · x with γ of shape {tuple(gamma.meta['tensor_meta'].shape)}",
                            node, self.where(node), hint="archdsl's layer_scale is one γ per channel (C×1×1)")
            return self.add(node, "layer_scale", {}, [x], path=_split(str(gamma.target)), stateful=True)
        if fn in _JOIN_FUNCS:
            return self.join(node, _JOIN_FUNCS[fn], list(node.args[:2]))
        if fn is torch.cat:
            tensors, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
            if dim % (len(self.shape(node)) + 1) != 1:
                raise _fail(f"torch.cat along dim {dim} (archdsl concatenates channels, dim 1)", node, self.where(node))
            return self.join(node, "concat", list(tensors))
        if fn is torch.flatten:
            return self.flatten(node, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if fn is F.adaptive_avg_pool2d:
            try:
                return self.add(node, *_adaptive(_arg(node, 1, "output_size")), [node.args[0]])
            except ValueError as exc:
                raise _fail(f"adaptive_avg_pool2d: {exc}", node, self.where(node)) from None
        if fn in (F.max_pool2d, torch.max_pool2d):
            k = _arg(node, 1, "kernel_size")
            attrs = {"kernel": _one(k), "stride": _one(_arg(node, 2, "stride", None) or k),
                     "pad": _one(_arg(node, 3, "padding", 0)), "dilation": _one(_arg(node, 4, "dilation", 1)),
                     "ceil_mode": bool(_arg(node, 5, "ceil_mode", False))}
            return self.add(node, "maxpool", attrs, [node.args[0]])
        if fn in (F.avg_pool2d, torch._C._nn.avg_pool2d):
            k = _arg(node, 1, "kernel_size")
            attrs = {"kernel": _one(k), "stride": _one(_arg(node, 2, "stride", None) or k),
                     "pad": _one(_arg(node, 3, "padding", 0)), "ceil_mode": bool(_arg(node, 4, "ceil_mode", False)),
                     "count_include_pad": bool(_arg(node, 5, "count_include_pad", True))}
            return self.add(node, "avgpool", attrs, [node.args[0]])
        if fn is F.interpolate:  # (antialias=True goes only with modes refused here)
            try:
                # the size as traced (it may be computed from another tensor's shape)
                size = None if _arg(node, 2, "scale_factor") is not None else self.shape(node)[1:]
                return self.add(node, *_upsample(self.shape(node.args[0]), size, _arg(node, 2, "scale_factor"),
                                                 _arg(node, 3, "mode", "nearest")), [node.args[0]])
            except ValueError as exc:
                raise _fail(f"interpolate with {exc} cannot be expressed", node, self.where(node)) from None
        if fn is F.dropout:
            return self.add(node, *_dropout(_arg(node, 1, "p", 0.5)), [node.args[0]])
        if fn is torch.mean:
            return self.mean(node, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        if fn is F.softmax:
            return self.softmax(node, _arg(node, 1, "dim"))
        if fn is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].name in self.chunks:
            src, parts = self.chunks[node.args[0].name]
            return self.add(node, "chunk", {"parts": parts, "index": node.args[1] % parts}, [src])
        if callable(fn) and getattr(fn, "__name__", None) in FOREIGN_FUNCTIONS and fn in self.foreign:
            op, attrs = FOREIGN_FUNCTIONS[fn.__name__](node.args)
            return self.add(node, op, attrs, [node.args[0]])
        if fn is torch.chunk:
            return self.chunk(node, _arg(node, 1, "chunks"), _arg(node, 2, "dim", 0))
        if fn in (getattr, operator.getitem) and self.shape_only(node):
            return None
        raise _fail(f"archdsl has no op for `{_describe(node)}`", node, self.where(node))

    def on_call_method(self, node: fx.Node) -> None:
        name = node.target
        if name in _ACT_METHODS:
            return self.add(node, _ACT_METHODS[name], {}, [node.args[0]])
        if name in _JOIN_METHODS:
            return self.join(node, _JOIN_METHODS[name], list(node.args[:2]))
        if name == "flatten":
            return self.flatten(node, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if name in ("view", "reshape"):
            src, dst = self.shape(node.args[0]), self.shape(node)
            if len(dst) == 1 and len(src) == 3 and dst[0] == math.prod(src):
                return self.add(node, "flatten", {}, [node.args[0]])
            if src == dst:
                self.alias[node.name] = self.ref(node.args[0])
                return None
        if name == "chunk":
            return self.chunk(node, _arg(node, 1, "chunks"), _arg(node, 2, "dim", 0))
        if name == "mean":
            return self.mean(node, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        if name == "softmax":
            return self.softmax(node, _arg(node, 1, "dim"))
        if name in ("contiguous", "clone"):
            self.alias[node.name] = self.ref(node.args[0])
            return None
        if name in _SHAPE_ONLY and self.shape_only(node):
            return None
        raise _fail(f"archdsl has no op for `{_describe(node)}`", node, self.where(node))

    # -- shared lowering rules
    def shape_only(self, node: fx.Node) -> bool:
        """A size/shape query whose result only feeds `view`/`reshape` (checked there by shape) or
        an interpolation's size (read there from the traced output shape)."""
        return all(u.op in ("call_method", "call_function") and
                   (u.target in ("view", "reshape", "size") or u.target in (getattr, operator.getitem)
                    or u.target is F.interpolate and node in u.args[1:] + tuple(u.kwargs.values()))
                   for u in node.users)

    def join(self, node: fx.Node, op: str, args: list) -> None:
        if not all(isinstance(a, fx.Node) for a in args):
            raise _fail(f"`{_describe(node)}` with a constant (archdsl joins tensors only)", node, self.where(node))
        if len(args) == 1:  # torch.cat([x]) is x
            self.alias[node.name] = self.ref(args[0])
            return None
        shapes = {self.shape(a) for a in args}
        if op != "concat" and len(shapes) != 1 and op != "mul":
            raise _fail(f"`{_describe(node)}` broadcasts {sorted(shapes)} (archdsl adds tensors of one shape)",
                        node, self.where(node))
        return self.add(node, op, {}, args)

    def chunk(self, node: fx.Node, parts: int, dim: int) -> None:
        """x.chunk(n, dim=1): each `[i]` of it is one `chunk(n, i)` node."""
        if dim % 4 != 1 or not all(u.op == "call_function" and u.target is operator.getitem for u in node.users):
            raise _fail(f"`{_describe(node)}` other than channel chunks taken apart with [i]", node, self.where(node))
        self.chunks[node.name] = (node.args[0], parts)

    def flatten(self, node: fx.Node, start: int, end: int) -> None:
        if start != 1 or end not in (-1, len(self.shape(node.args[0]))):
            raise _fail(f"flatten({start}, {end}) (archdsl flattens from dim 1 to the end)", node, self.where(node))
        return self.add(node, "flatten", {}, [node.args[0]])

    def mean(self, node: fx.Node, dims, keepdim: bool) -> None:
        src = self.shape(node.args[0])
        if len(src) != 3 or dims is None or _mean_dims(dims, 4) != {2, 3}:
            raise _fail(f"`{_describe(node)}` (archdsl averages over the spatial axes, dims (2, 3), only)",
                        node, self.where(node))
        self.add(node, "global_avgpool", {}, [node.args[0]])
        if not keepdim:  # (N, C) rather than (N, C, 1, 1): a flatten after the pool
            pool = self.nodes[-1]
            pool.id = node.name + "_pool"
            pool.shape = (src[0], 1, 1)
            self.nodes.append(OpNode(node.name, "flatten", [pool.id], {}, None, pool.scope, pool.loc,
                                     self.shape(node)))

    def softmax(self, node: fx.Node, dim) -> None:
        if dim not in (1, -1 if len(self.shape(node)) == 1 else 1):
            raise _fail(f"softmax over dim {dim} (archdsl's softmax is over the channel axis)", node, self.where(node))
        return self.add(node, "softmax", {}, [node.args[0]])


def _param_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], 1, 1) if len(shape) == 3 else (shape[0],)


def _describe(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    if node.op == "call_module":
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod in ("_operator", "operator"):
        return {"add": "+", "iadd": "+=", "mul": "*", "imul": "*=", "sub": "-", "truediv": "/",
                "getitem": "[]", "matmul": "@"}.get(name, f"operator.{name}")
    prefix = "torch" if mod.startswith("torch") and "functional" not in mod else "F" if "functional" in mod else mod
    return f"{prefix}.{name}"


def trace(module: nn.Module, input_shape: tuple[int, int, int]) -> Traced:
    """The archdsl nodes of `module`'s forward on a 1×C×H×W input (float32, on the CPU)."""
    foreign = _foreign_functions(module)
    try:
        graph = _Tracer(foreign).trace(module)
    except ArchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the user's module's
        raise ArchError(f"torch.fx cannot trace {type(module).__name__}: {type(exc).__name__}: {exc}",
                        _traceback_loc(exc),
                        hint="archdsl import needs a forward without data-dependent control flow "
                             "(see torch.fx's limitations)") from None
    gm = _GraphModule(module, graph)
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) > 1:  # before the forward pass, which could not run on one tensor
        raise _fail("a forward with more than one input", inputs[1], f"the forward of {type(module).__name__}",
                    hint="archdsl import takes modules called on one image tensor")
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    param = next(iter(module.parameters()), None)
    if param is not None:
        x = x.to(dtype=param.dtype, device=param.device)
    try:
        _propagate_shapes(gm, x)
    except Exception as exc:  # noqa: BLE001 - e.g. an input size the network cannot take
        cause = exc.__cause__ or exc  # ShapeProp wraps the error of the node that failed
        failed = next((n for n in graph.nodes if "tensor_meta" not in n.meta), None)  # shapes go in order
        raise ArchError(f"{type(module).__name__} does not run on an input of {'x'.join(map(str, input_shape))}: "
                        f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
                        _loc(failed) if failed is not None else None,
                        hint="pass the input shape the network takes with --input CxHxW") from None
    lowering = _Lowering(gm, module)
    lowering.foreign = foreign
    lowering.run()
    calls = lowering.calls
    for i, n in enumerate(lowering.nodes):
        n.index = i
        if n.path is not None:
            n.calls = calls.get(".".join(n.path), 1)
    return Traced(lowering.nodes, lowering.input, input_shape, lowering.outputs, lowering.classes)


def _propagate_shapes(gm: fx.GraphModule, x: torch.Tensor) -> None:
    """Every node's output shape: with fake tensors (no arithmetic), or for real when an op has
    no fake kernel."""
    # ShapeProp prints the traceback of a failing node to stderr before it raises: the user gets
    # the ArchError that trace() makes of it, not a traceback
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            from torch._subclasses.fake_tensor import FakeTensorMode

            mode = FakeTensorMode(allow_non_fake_inputs=True)
            with torch.no_grad():
                ShapeProp(gm, fake_mode=mode).propagate(x)
            return
        except Exception:  # noqa: BLE001 - fall back to a real forward pass
            pass
        with torch.no_grad():
            ShapeProp(gm).propagate(x)


def _traceback_loc(exc: BaseException) -> SrcLoc | None:
    tb = exc.__traceback__
    loc = None
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        if "/torch/" not in file:
            loc = SrcLoc(file, tb.tb_lineno, 1)
        tb = tb.tb_next
    return loc
