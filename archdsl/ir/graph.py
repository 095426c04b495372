"""The IR: a network as a DAG of ops.

`Graph` is a `networkx.MultiDiGraph` (itself a `networkx.DiGraph`) with this schema:

Nodes — one per op, keyed by a hierarchical, stable name such as ``layer3.2.conv1``.  Name
segments are identifiers from the user's labels (``conv1``), block or op names for unlabelled
elements (``relu_1``), or positions in a labelled sequence (``features.4``); a quoted label may
add ``-`` (RegNet's ``block1-0``).  Names therefore consist of ``[A-Za-z0-9_.-]`` only, and can be
used as state-dict keys and inside generated code (in string literals and comments only).
Each node carries:

    op      str              an entry of the op registry (`archdsl.ops.OPS`)
    attrs   dict             the op's arguments, normalized by its schema (pairs, 4-sided padding)
    shape   tuple[int, ...]  output shape per sample: (C, H, W) or (F,); the batch is symbolic
    src     SrcLoc           the `.arch` statement that made the node
    meta    dict             analysis results (params, macs, rf, ...); empty until analyzed

Edges — ``producer -> consumer`` with key and attribute ``port``: the consumer's input position.
Ports of a node are 0..n-1, so concat order and add operands are explicit.  A multigraph,
because one tensor may feed two ports of the same op (``add { @x; @x }``).

Graph attributes (``g.graph``):

    name     the network's name
    inputs   [node]             input nodes, in declaration order
    outputs  [node]             output nodes, in declaration order (auxiliary heads included)
    output_names [str]          the names the outputs were declared with (`output logits, aux`)
    params   {name: value}      the network parameters the graph was elaborated with
    scopes   {prefix: Scope}    what each name prefix is (block instance or labelled sequence)
    warnings [(SrcLoc, str)]    what the elaborator found suspicious (layers that reach no output)

`lint()` checks all of this; passes call it between stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

import networkx as nx

from ..errors import InternalError, SrcLoc
from ..ops import OPS
from ..ops.registry import REQUIRED, fmt_shape

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|[0-9]+")  # `-`: quoted names (RegNet's `block1-0`)


@dataclass(frozen=True)
class Scope:
    """A name prefix that groups nodes: a block instance (`kind="block"`) or a labelled sequence."""

    kind: str  # "block" | "sequence" | "branches"
    title: str  # e.g. "bottleneck(c=64, stride=1)"
    src: SrcLoc


class Graph(nx.MultiDiGraph):
    """A network DAG; see the module docstring for the node, edge and graph attributes."""

    def __init__(self, name: str = "network", **attr: Any):
        super().__init__(**attr)
        self.graph.setdefault("name", name)
        self.graph.setdefault("inputs", [])
        self.graph.setdefault("outputs", [])
        self.graph.setdefault("params", {})
        self.graph.setdefault("scopes", {})

    # -- construction
    def add_op(self, name: str, op: str, attrs: dict, inputs: list[str], shape: tuple[int, ...],
               src: SrcLoc) -> str:
        if name in self:
            raise InternalError(f"node {name!r} added twice")
        self.add_node(name, op=op, attrs=attrs, shape=tuple(shape), src=src, meta={})
        for port, producer in enumerate(inputs):
            self.add_edge(producer, name, key=port, port=port)
        return name

    # -- queries
    @property
    def name(self) -> str:
        return self.graph["name"]

    @property
    def inputs(self) -> list[str]:
        return self.graph["inputs"]

    @property
    def outputs(self) -> list[str]:
        return self.graph["outputs"]

    def args(self, node: str) -> list[str]:
        """The node's input nodes, ordered by port."""
        edges = sorted(self.in_edges(node, data="port"), key=lambda e: e[2])
        return [u for u, _, _ in edges]

    def users(self, node: str) -> list[str]:
        return sorted(set(self.successors(node)))

    def op(self, node: str) -> str:
        return self.nodes[node]["op"]

    def shape(self, node: str) -> tuple[int, ...]:
        return self.nodes[node]["shape"]

    def order(self) -> list[str]:
        """A deterministic topological order (ties broken by insertion order)."""
        rank = {n: i for i, n in enumerate(self.nodes)}
        return list(nx.lexicographical_topological_sort(self, key=rank.__getitem__))

    def walk(self) -> Iterator[tuple[str, dict]]:
        for n in self.order():
            yield n, self.nodes[n]

    # -- checking
    def lint(self) -> None:
        """Check the schema and invariants; raise `InternalError` on the first violation.

        Acyclic; every op registered with a plausible arity; ports 0..n-1 complete; every shape
        equal to its op's shape rule applied to the input shapes; names well formed; inputs and
        outputs recorded and present.
        """
        problems = list(self._problems())
        if problems:
            raise InternalError("IR lint failed:\n  " + "\n  ".join(problems))

    def _problems(self) -> Iterator[str]:
        if not nx.is_directed_acyclic_graph(self):
            yield f"cycle: {nx.find_cycle(self)}"
            return
        for key in ("inputs", "outputs"):
            if not self.graph[key]:
                yield f"graph has no {key}"
            for n in self.graph[key]:
                if n not in self:
                    yield f"{key} names missing node {n!r}"
        for n, data in self.nodes(data=True):
            yield from self._node_problems(n, data)

    def _node_problems(self, n: str, data: dict) -> Iterator[str]:
        if not all(NAME_RE.fullmatch(seg) for seg in n.split(".")):
            yield f"{n!r}: malformed name"
        missing = {"op", "attrs", "shape", "src", "meta"} - data.keys()
        if missing:
            yield f"{n!r}: missing attributes {sorted(missing)}"
            return
        spec = OPS.get(data["op"])
        if spec is None:
            yield f"{n!r}: unknown op {data['op']!r}"
            return
        ports = sorted(p for _, _, p in self.in_edges(n, data="port"))
        if ports != list(range(len(ports))):
            yield f"{n!r}: input ports {ports} are not 0..{len(ports) - 1}"
        if isinstance(spec.arity, tuple):
            if not spec.arity[0] <= len(ports) <= spec.arity[1]:
                yield f"{n!r}: {data['op']} takes {spec.arity[0]} to {spec.arity[1]} inputs, has {len(ports)}"
        elif spec.arity is not None and len(ports) != spec.arity:
            yield f"{n!r}: {data['op']} takes {spec.arity} inputs, has {len(ports)}"
        if spec.arity is None and len(ports) < 2:
            yield f"{n!r}: {data['op']} joins two or more inputs, has {len(ports)}"
        if (spec.arity == 0) != (n in self.graph["inputs"]):
            yield f"{n!r}: input nodes and the graph's inputs disagree"
        try:
            expected = spec.shape(data["attrs"], [self.shape(a) for a in self.args(n)])
        except Exception as exc:  # noqa: BLE001 - report, don't crash the linter
            yield f"{n!r}: shape rule fails: {exc}"
            return
        if tuple(expected) != tuple(data["shape"]):
            yield f"{n!r}: shape {fmt_shape(data['shape'])} but its rule gives {fmt_shape(expected)}"

    # -- text form
    def dump(self) -> str:
        """A readable listing: one line per node, in execution order, with shapes and sources."""
        lines = [f"graph {self.name}({_kv(self.graph['params'])})"]
        rows = []
        for n, d in self.walk():
            args = ", ".join(f"%{a}" for a in self.args(n))
            attrs = _kv(_non_default(d["op"], d["attrs"]))
            call = f"{d['op']}({', '.join(x for x in (args, attrs) if x)})"
            rows.append((f"%{n}", call, fmt_shape(d["shape"]), f"{d['src'].file}:{d['src'].line}"))
        w0 = max((len(r[0]) for r in rows), default=0)
        w1 = min(max((len(r[1]) for r in rows), default=0), 72)
        w2 = max((len(r[2]) for r in rows), default=0)
        for name, call, shape, src in rows:
            lines.append(f"  {name:<{w0}} = {call:<{w1}}  : {shape:<{w2}}  # {src}")
        lines.append("  outputs: " + ", ".join(f"%{o}" for o in self.outputs))
        return "\n".join(lines)


def _non_default(op: str, attrs: dict) -> dict:
    """The attributes that differ from what the op's defaults would give (keeps dumps short)."""
    spec = OPS[op]
    defaults = dict(attrs)
    for p in spec.params:
        if p.default is not REQUIRED:
            defaults[p.name] = p.kind.convert(p.default) if p.default is not None else None
    defaults = spec.normalize(defaults)
    return {k: v for k, v in attrs.items() if defaults.get(k) != v or spec.param(k).default is REQUIRED}


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        if v and all(x == v[0] for x in v):  # (3, 3) -> 3: kernels, strides, pads are mostly square
            return _fmt_value(v[0])
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in d.items())
