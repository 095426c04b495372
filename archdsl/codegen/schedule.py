"""The launch schedule: the one list of kernel launches a generated program makes, in order.

Computed once from an optimized graph (after every pass), and read by everything that needs to
know what runs: the buffer planner (`plan.py`: when each tensor is written and read), the
emitter (`emit.py`: one step per launch), the autotuner (`archdsl.runtime.tune`: a tuning key
per conv2d launch) and the benchmark (`archdsl.bench`: the convolutions it times).  None of them
derives launches on its own.

A launch computes one node, or several:

    sibling 1x1 convs reading one tensor   one `conv2d` GEMM, the launcher's weights side by side
                                           with its siblings' (`archdsl.passes.horizontal`)
    a conv and the 1x1 conv after it       one `conv2d_chain`, the first conv's result on chip
                                           (`archdsl.passes.chain`)

which the passes record as launch groups (`archdsl.passes.groups`); every other node that is
not a graph input is a launch of its own.  The execution order is `graph.order()` with each
sibling group moved to its first member's place (valid: siblings read nothing but the tensor
the first of them already reads); a conv kept on chip keeps its place in the order but runs,
reading its input, when its chain's launch does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph
from ..ops.fused import conv_extra_inputs
from ..ops.registry import family
from ..passes.groups import launch_groups

GEOMETRY = ("kernel", "stride", "pad", "dilation", "groups")


@dataclass(frozen=True)
class Epilogue:
    """What a GEMM launch applies to its accumulator before storing it."""

    bias: bool  # its own bias, or a folded batch norm's shift
    acts: tuple[str, ...]  # the activation of each output (a sibling group: each its own)
    residual: bool = False  # adds its second input (or, for join "mean", averages with it)
    join: str = "add"

    @property
    def act(self) -> str:
        """The activation of a one-output launch (a sibling group's first)."""
        return self.acts[0]


@dataclass(frozen=True)
class Launch:
    """One kernel launch.  `nodes[0]` is the launcher (the node that names the launch: tuning
    tables and comments use it); `kernel` is "conv2d", "conv2d_chain" or "linear" for GEMMs and
    None for every other step, whose op's emit rule picks its kernel (or none: a view, a copy)."""

    kernel: str | None
    nodes: tuple[str, ...]  # computed by this launch, the launcher first
    inputs: tuple[str, ...]  # tensors read from memory
    outputs: tuple[str, ...]  # tensors written to memory (a chain's first conv is not)
    geometry: tuple[tuple[str, Any], ...] = ()  # a conv's kernel, stride, pad, dilation, groups
    epilogue: Epilogue | None = None
    on_chip: tuple[str, ...] = ()  # computed, never written: a chain's first conv
    gate: str | None = None  # the input (the last) a gated conv multiplies its input by while loading it
    ln: bool = False  # layer-normalizes its input over the channels while loading it (passes/norm.py)

    @property
    def node(self) -> str:
        return self.nodes[0]

    def geom(self) -> dict[str, Any]:
        return dict(self.geometry)


@dataclass
class Schedule:
    graph: Graph
    launches: list[Launch]
    order: list[str]  # every node once: graph inputs first, then as launched (see the module docstring)
    _launch: dict[str, Launch] = field(default_factory=dict, repr=False)  # node -> the launch computing it

    def launch_of(self, n: str) -> Launch | None:
        """The launch that computes `n` (None for a graph input)."""
        return self._launch.get(n)

    def launcher(self, n: str) -> str:
        """The node whose launch computes `n` (itself, unless grouped with another's)."""
        launch = self._launch.get(n)
        return launch.node if launch is not None else n

    def launched_by(self, n: str) -> str | None:
        """The launcher of `n` when that is another node."""
        by = self.launcher(n)
        return by if by != n else None

    def siblings(self, n: str) -> tuple[str, ...]:
        """The sibling convs `n`'s launch computes besides `n` (when `n` launches a group)."""
        launch = self._launch.get(n)
        if launch is None or launch.node != n or launch.kernel != "conv2d":
            return ()
        return launch.nodes[1:]

    def chain_from(self, n: str) -> str | None:
        """The conv computed on chip by `n`'s chain launch (when `n` is a chain's 1x1 conv)."""
        launch = self._launch.get(n)
        return launch.on_chip[0] if launch is not None and launch.node == n and launch.on_chip else None

    def on_chip(self, n: str) -> bool:
        launch = self._launch.get(n)
        return launch is not None and n in launch.on_chip

    def reads(self, n: str) -> list[str]:
        """The tensors the step of `n` reads from memory: none for a node another's launch
        computes; a launch's inputs for its launcher."""
        launch = self._launch.get(n)
        if launch is None:
            return []
        return list(launch.inputs) if launch.node == n else []

    def gate_of(self, n: str) -> str | None:
        """The gate `n`'s launch scales its input by (squeeze-and-excitation fused into a conv), if any."""
        launch = self._launch.get(n)
        return launch.gate if launch is not None else None

    def gemm_launches(self, kernel: str = "conv2d") -> list[Launch]:
        return [launch for launch in self.launches if launch.kernel == kernel]


def _conv_geometry(a: dict) -> tuple[tuple[str, Any], ...]:
    return tuple((k, a[k] if k == "groups" else tuple(a[k])) for k in GEOMETRY)


def _has_bias(a: dict) -> bool:
    return bool(a.get("bias")) or a.get("bn_eps") is not None or a.get("in_ln_eps") is not None


def _conv_launch(g: Graph, n: str, siblings: tuple[str, ...], first: str | None) -> Launch:
    a = g.nodes[n]["attrs"]
    args = g.args(n)
    residuals, gates = conv_extra_inputs(a, args)
    residual = bool(residuals)
    epilogue = Epilogue(bias=any(_has_bias(g.nodes[m]["attrs"]) for m in (n, *siblings)),
                        acts=tuple(g.nodes[m]["attrs"].get("act", "none") for m in (n, *siblings)),
                        residual=residual, join=a.get("join", "add"))
    if first is not None:  # a chain: the first conv's input in, the 1x1 conv's result out
        inputs = (g.args(first)[0], *args[1:])
        return Launch("conv2d_chain", (n, first), inputs, (n,), _conv_geometry(g.nodes[first]["attrs"]), epilogue,
                      on_chip=(first,))
    return Launch("conv2d", (n, *siblings), tuple(args), (n, *siblings), _conv_geometry(a), epilogue,
                  gate=gates[0] if gates else None, ln=a.get("in_ln_eps") is not None)


def _launch(g: Graph, n: str, siblings: tuple[str, ...], first: str | None, gemms: dict[str, frozenset]) -> Launch:
    op = g.op(n)
    if op in gemms["conv"]:
        return _conv_launch(g, n, siblings, first)
    args = tuple(g.args(n))
    if op in gemms["fc"]:
        a = g.nodes[n]["attrs"]
        return Launch("linear", (n,), args, (n,), (), Epilogue(bias=bool(a["bias"]), acts=(a.get("act", "none"),)))
    return Launch(None, (n,), args, (n,))


def make_schedule(g: Graph) -> Schedule:
    """The launches of an optimized graph, in execution order."""
    groups = launch_groups(g)
    chained = {first: second for second, first in groups.chains.items()}
    launcher = {m: first for first, rest in groups.siblings.items() for m in rest}
    launcher.update(chained)
    order, placed, launches, by_node = [], set(), [], {}
    gemms = {"conv": family("conv"), "fc": family("fc")}
    for n in g.order():
        head = n if n in chained else launcher.get(n, n)  # a chain's first conv keeps its place
        for m in (head, *groups.siblings.get(head, ())):
            if m in placed:
                continue
            order.append(m)
            placed.add(m)
            if m in g.inputs or m in launcher:
                continue
            launch = _launch(g, m, groups.siblings.get(m, ()), groups.chains.get(m), gemms)
            launches.append(launch)
            for x in launch.nodes:
                by_node[x] = launch
    return Schedule(g, launches, order, by_node)
