"""The conv launches of a generated program, one by one: what the per-layer stage times.

`record_conv_launches` runs one forward of a generated `Network` with its launchers (`conv2d`,
`conv2d_chain`) wrapped, keeping each call's arguments: the program's own buffers, weights and
keyword arguments, so a replay is exactly the launch the network makes.  `distinct_launches` keeps
one launch per signature (kernel, shapes, strides, dtypes, options) with its count.

`CudnnEquivalent` is what PyTorch does for the same nodes: for each conv the launch computes (a
sibling group's every conv, a chain's two), `F.conv2d` channels-last with the folded bias, then
the node's residual add and activation, eagerly.  A chain's intermediate goes through memory
there; that is the difference the launch is meant to make.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

LAUNCHERS = ("conv2d", "conv2d_chain")
OUTPUT_ARG = {"conv2d": 2, "conv2d_chain": 3}  # position of `out` in each launcher's arguments
ACTS = ("none", "relu", "tanh", "sigmoid")


class NotModelled(Exception):
    """A launch whose epilogue the cuDNN equivalent does not reproduce (recorded as skipped)."""


@dataclass
class Launch:
    kernel: str  # "conv2d" or "conv2d_chain"
    call: Callable
    args: tuple
    kwargs: dict
    nodes: tuple[str, ...]  # the conv nodes it computes, in order (chain: first, second)
    signature: str = ""
    count: int = 1
    batch: int = 0

    def run(self):
        return self.call(*self.args, **self.kwargs)

    def outputs(self) -> tuple:
        out = self.args[OUTPUT_ARG[self.kernel]]
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def label(self) -> str:
        return " + ".join(self.nodes)

    def inputs(self) -> tuple:
        extra = (self.kwargs.get("residual"), self.kwargs.get("in_gate"))
        return tuple(t for t in (self.args[0], *extra) if t is not None)

    def writes_over_an_input(self) -> bool:
        """Whether an output shares memory with the input or the residual: the memory plan may
        write a block's output over the residual it adds (each element is read before it is
        written), so a replay would change its own input."""
        return any(_overlap(o, i) for o in self.outputs() for i in self.inputs())

    def with_private_outputs(self) -> "Launch":
        """The same launch writing into fresh buffers of the same shapes and strides."""
        import torch

        def fresh(t):
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)

        i = OUTPUT_ARG[self.kernel]
        out = self.args[i]
        out = tuple(fresh(o) for o in out) if isinstance(out, (tuple, list)) else fresh(out)
        args = (*self.args[:i], out, *self.args[i + 1:])
        return Launch(self.kernel, self.call, args, dict(self.kwargs), self.nodes, self.signature, self.count,
                      self.batch)


def _byte_range(t) -> tuple[int, int]:
    extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    start = t.storage_offset() * t.element_size()
    return start, start + extent * t.element_size()


def _overlap(a, b) -> bool:
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    (a0, a1), (b0, b1) = _byte_range(a), _byte_range(b)
    return a0 < b1 and b0 < a1


def _describe(value: Any) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"T{tuple(value.shape)}{tuple(value.stride())}{str(value.dtype)[6:]}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_describe(v) for v in value) + ")"
    return repr(value)


def signature(kernel: str, args: tuple, kwargs: dict) -> str:
    """What makes two launches the same measurement: the kernel, every tensor's shape, strides and
    dtype, every other argument's value (never a tensor's contents or address)."""
    parts = [kernel] + [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in sorted(kwargs.items())]
    return " ".join(parts)


def record_conv_launches(program_module, network, inputs: list, graph) -> list[Launch]:
    """One forward of `network` (the generated program's Network) with its conv launchers
    recorded; each launch mapped to the conv nodes of the optimized `graph` it computes."""
    import torch

    calls: list[tuple[str, Callable, tuple, dict]] = []
    originals = {name: getattr(program_module, name) for name in LAUNCHERS if hasattr(program_module, name)}

    def recorder(name, fn):
        def launch(*args, **kwargs):
            calls.append((name, fn, args, kwargs))
            return fn(*args, **kwargs)
        return launch

    try:
        for name, fn in originals.items():
            setattr(program_module, name, recorder(name, fn))
        network(*inputs)
    finally:
        for name, fn in originals.items():
            setattr(program_module, name, fn)
    weight_node = {id(t): key[:-2] for key, t in network.w.items() if isinstance(t, torch.Tensor) and
                   key.endswith(".w")}
    batch = int(inputs[0].shape[0])
    from archdsl.codegen.schedule import make_schedule

    schedule = make_schedule(graph)
    out = []
    for kernel, fn, args, kwargs in calls:
        nodes = [weight_node[id(a)] for a in args if isinstance(a, torch.Tensor) and id(a) in weight_node]
        if not nodes or any(n not in graph or graph.op(n) not in ("conv", "fused_conv") for n in nodes):
            continue  # a fully connected layer (linear) calls conv2d too: not a conv launch
        if kernel == "conv2d":
            nodes += list(schedule.siblings(nodes[0]))
        out.append(Launch(kernel, fn, args, kwargs, tuple(nodes), signature(kernel, args, kwargs), batch=batch))
    return out


def distinct_launches(launches: list[Launch]) -> list[Launch]:
    """One launch per signature, in order of first appearance, with how many share it."""
    found: dict[str, Launch] = {}
    for launch in launches:
        if launch.signature in found:
            found[launch.signature].count += 1
        else:
            found[launch.signature] = replace(launch, count=1)
    return list(found.values())


# ---- the arithmetic of a launch ---------------------------------------------------------------


@dataclass(frozen=True)
class ConvNode:
    """One conv of the optimized graph, as PyTorch would run it (per sample shapes)."""

    name: str
    source: str  # the conv's name in the reference state dict
    cin: int
    h: int
    w: int
    cout: int
    p: int
    q: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    act: str
    residual: bool
    gate: bool = False  # its input is scaled by a squeeze-and-excitation gate first (in_gate)

    def macs(self, batch: int) -> int:
        return batch * self.cout * self.p * self.q * self.kernel[0] * self.kernel[1] * (self.cin // self.groups)

    def weight_elems(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1]


def conv_node(graph, name: str) -> ConvNode:
    from archdsl.ops.fused import conv_extra_inputs

    a = graph.nodes[name]["attrs"]
    args = graph.args(name)
    residuals, gates = conv_extra_inputs(a, args)
    cin, h, w = graph.shape(args[0])
    cout, p, q = graph.shape(name)
    if a.get("pre_act", "none") != "none" or a.get("pre_bn_eps") is not None:
        raise NotModelled(f"{name}: an input prologue (BN + act while loading)")
    if a.get("in_ln_eps") is not None:  # the GEMM runs on the raw input: F.conv2d would need the norm first
        raise NotModelled(f"{name}: a layer norm folded into the GEMM (in_ln)")
    if a.get("join", "add") != "add" or a.get("residual_after_act") or a.get("out_scale", 1.0) != 1.0:
        raise NotModelled(f"{name}: a join other than a residual add before the activation")
    act = a.get("act", "none")
    if act not in ACTS:
        raise NotModelled(f"{name}: activation {act}")
    source = (a.get("sources") or {}).get("conv", name)
    return ConvNode(name, source, cin, h, w, cout, p, q, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                    tuple(a["dilation"]), a["groups"], act, bool(residuals), bool(gates))


def launch_work(nodes: list[ConvNode], kernel: str, batch: int, elem: int) -> tuple[int, int]:
    """(FLOPs, fewest bytes) of one launch: each input, weight, bias and output once; a chain's
    intermediate stays on chip, so it is not counted."""
    flops = sum(2 * n.macs(batch) for n in nodes)
    weights = sum(n.weight_elems() for n in nodes) * elem + sum(4 * n.cout for n in nodes)
    first = nodes[0]
    x = batch * first.cin * (first.h * first.w + first.gate) * elem  # the gate: one value per sample and channel
    finals = nodes[-1:] if kernel == "conv2d_chain" else nodes
    outs = sum(batch * n.cout * n.p * n.q for n in finals) * elem
    res = sum(batch * n.cout * n.p * n.q for n in finals if n.residual) * elem
    return flops, x + weights + outs + res


# ---- PyTorch doing the same work --------------------------------------------------------------


@dataclass
class CudnnEquivalent:
    """F.conv2d (channels-last, cuDNN) + bias, residual add and activation for a launch's nodes."""

    launch: Launch
    nodes: list[ConvNode]
    weights: list = field(default_factory=list)  # (w, b) per node, in the launch's dtype, on the device

    @classmethod
    def build(cls, launch: Launch, graph, folded: dict) -> "CudnnEquivalent":
        import torch

        nodes = [conv_node(graph, n) for n in launch.nodes]
        x = launch.args[0]
        weights = []
        for n in nodes:
            w = folded[n.source + ".weight"].to(device=x.device, dtype=x.dtype).contiguous(
                memory_format=torch.channels_last)
            b = folded.get(n.source + ".bias")
            weights.append((w, None if b is None else b.to(device=x.device, dtype=x.dtype)))
        return cls(launch, nodes, weights)

    def _conv(self, x, node: ConvNode, wb):
        import torch.nn.functional as F

        t, b, left, r = node.pad
        if t == b and left == r:
            return F.conv2d(x, wb[0], wb[1], node.stride, (t, left), node.dilation, node.groups)
        return F.conv2d(F.pad(x, (left, r, t, b)), wb[0], wb[1], node.stride, 0, node.dilation, node.groups)

    @staticmethod
    def _epilogue(y, node: ConvNode, residual):
        import torch

        if node.residual:
            y = y + residual
        return {"none": lambda v: v, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[node.act](y)

    def run(self) -> tuple:
        """The outputs (NCHW channels-last), one per output of the launch."""
        kw = self.launch.kwargs
        x = self.launch.args[0].permute(0, 3, 1, 2)  # NHWC buffer -> NCHW channels-last view
        if kw.get("in_gate") is not None:  # squeeze-and-excitation's product: PyTorch's own mul first
            x = x * kw["in_gate"].permute(0, 3, 1, 2)
        residual = kw.get("residual")
        residual = residual.permute(0, 3, 1, 2) if residual is not None else None
        if self.launch.kernel == "conv2d_chain":
            first, second = self.nodes
            y = self._epilogue(self._conv(x, first, self.weights[0]), first, None)
            return (self._epilogue(self._conv(y, second, self.weights[1]), second, residual),)
        return tuple(self._epilogue(self._conv(x, n, wb), n, residual) for n, wb in zip(self.nodes, self.weights))


def randomize_inputs(launch: Launch, seed: int) -> None:
    """Random normal values into the launch's input and residual buffers (never zeros: they hide
    unwritten outputs and can run faster than real data); the weights stay the network's."""
    import torch

    for t in (launch.args[0], launch.kwargs.get("residual")):
        if t is not None:  # drawn on the device: a batch-256 activation is 10^8 numbers
            gen = torch.Generator(device=t.device).manual_seed(seed)
            t.copy_(torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype))
    gate = launch.kwargs.get("in_gate")
    if gate is not None:  # a gate is a sigmoid's or hardsigmoid's output: in [0, 1]
        gen = torch.Generator(device=gate.device).manual_seed(seed + 1)
        gate.copy_(torch.rand(gate.shape, generator=gen, device=gate.device, dtype=gate.dtype))


def outputs_nchw(launch: Launch) -> tuple:
    return tuple(o.permute(0, 3, 1, 2) for o in launch.outputs())


def poison_outputs(launch: Launch) -> None:
    for o in launch.outputs():
        o.fill_(math.nan)
