"""The IR: a network as a DAG of ops.

`Graph` is a directed multigraph with networkx's interface (`to_networkx()` converts) and this
schema:

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

import heapq
import re
from dataclasses import dataclass
from typing import Any, Iterator


from ..errors import InternalError, SrcLoc
from ..ops import OPS
from ..ops.registry import REQUIRED, fmt_shape

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|[0-9]+")  # `-`: quoted names (RegNet's `block1-0`)


class NodeView:
    """`g.nodes`: `g.nodes[n]` is node n's attribute dict; `g.nodes(data=True)` yields
    `(name, attributes)`; iterating gives the names in insertion order (networkx's spelling)."""

    __slots__ = ("_node",)

    def __init__(self, node: dict[str, dict]):
        self._node = node

    def __getitem__(self, n: str) -> dict:
        return self._node[n]

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __call__(self, data: bool = False):
        return iter(self._node.items()) if data else iter(self._node)


@dataclass(frozen=True)
class Scope:
    """A name prefix that groups nodes: a block instance (`kind="block"`) or a labelled sequence."""

    kind: str  # "block" | "sequence" | "branches"
    title: str  # e.g. "bottleneck(c=64, stride=1)"
    src: SrcLoc


class Graph:
    """A network DAG; see the module docstring for the node, edge and graph attributes.

    The storage is three dicts: node name -> attribute dict, consumer -> {port: producer}, and
    producer -> {consumer: [ports]}, all in insertion order.  Its methods are the part of
    networkx's `MultiDiGraph` interface the compiler uses (`nodes`, `in_edges`, `out_edges`,
    `successors`, `add_edge(u, v, key=port, port=port)`, ...), with an edge's key always equal
    to its port; `to_networkx()` gives the same graph as a `networkx.MultiDiGraph` for its
    algorithms.  (Not a subclass: `import networkx` alone costs ~0.1 s, a third of what
    `archdsl check` may take.)
    """

    def __init__(self, name: str = "network", **attr: Any):
        self.graph: dict[str, Any] = dict(attr)
        self._node: dict[str, dict] = {}
        self._in: dict[str, dict[int, str]] = {}  # consumer -> {port: producer}
        self._out: dict[str, dict[str, list[int]]] = {}  # producer -> {consumer: ports}
        self.nodes = NodeView(self._node)
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
            self.add_edge(producer, name, port=port)
        return name

    def add_node(self, n: str, **data: Any) -> None:
        if n in self._node:
            self._node[n].update(data)
            return
        self._node[n] = data
        self._in[n] = {}
        self._out[n] = {}

    def add_edge(self, u: str, v: str, key: int | None = None, *, port: int | None = None) -> None:
        """`u` feeds input `port` of `v` (`key`, networkx's name for it, is the same number)."""
        port = key if port is None else port
        if port is None or (key is not None and key != port):
            raise InternalError(f"edge {u!r} -> {v!r}: the key must be the port")
        for n in (u, v):
            if n not in self._node:
                raise InternalError(f"edge {u!r} -> {v!r}: no node {n!r}")
        if port in self._in[v]:
            raise InternalError(f"port {port} of {v!r} is fed twice")
        self._in[v][port] = u
        self._out[u].setdefault(v, []).append(port)

    def remove_edge(self, u: str, v: str, key: int | None = None) -> None:
        """Remove the edge `u -> v` into port `key` (the first such edge when `key` is None)."""
        ports = self._out.get(u, {}).get(v)
        if not ports or (key is not None and key not in ports):
            raise InternalError(f"no edge {u!r} -> {v!r}" + (f" at port {key}" if key is not None else ""))
        port = ports[0] if key is None else key
        ports.remove(port)
        if not ports:
            del self._out[u][v]
        del self._in[v][port]

    def remove_node(self, n: str) -> None:
        for port, u in self._in.pop(n).items():
            self._out[u][n].remove(port)
            if not self._out[u][n]:
                del self._out[u][n]
        for v in self._out.pop(n):
            if v in self._in:  # (not n itself: a self-loop went with n's inputs)
                self._in[v] = {p: u for p, u in self._in[v].items() if u != n}
        del self._node[n]

    def copy(self) -> "Graph":
        """A new graph with the same nodes and edges; attribute dicts are copied one level deep."""
        out = Graph.__new__(Graph)
        out.graph = dict(self.graph)
        out._node = {n: dict(d) for n, d in self._node.items()}
        out._in = {n: dict(ins) for n, ins in self._in.items()}
        out._out = {n: {v: list(ps) for v, ps in outs.items()} for n, outs in self._out.items()}
        out.nodes = NodeView(out._node)
        return out

    def subgraph(self, nodes) -> "Graph":
        """A copy holding only `nodes` and the edges between them."""
        keep = set(nodes)
        out = self.copy()
        for n in [n for n in out._node if n not in keep]:
            out.remove_node(n)
        return out

    def to_networkx(self):
        """The same graph as a `networkx.MultiDiGraph` (edge key = port), for its algorithms."""
        import networkx as nx
        
        g = nx.MultiDiGraph(**self.graph)
        g.add_nodes_from(self._node.items())
        g.add_edges_from((u, v, p, {"port": p}) for v, ins in self._in.items() for p, u in sorted(ins.items()))
        return g

    # -- queries
    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

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
        ins = self._in[node]
        return [ins[p] for p in sorted(ins)]

    def users(self, node: str) -> list[str]:
        return sorted(self._out[node])

    def successors(self, node: str) -> Iterator[str]:
        """The nodes that read `node`, each once, in the order their edges were added."""
        return iter(list(self._out[node]))

    def predecessors(self, node: str) -> Iterator[str]:
        return iter(dict.fromkeys(self.args(node)))

    def in_edges(self, node: str, data: bool | str = False) -> list[tuple]:
        """`(producer, node)` per input, in port order; with `data="port"`, `(producer, node, port)`."""
        return [self._edge(u, node, p, data) for p, u in sorted(self._in[node].items())]

    def out_edges(self, node: str, data: bool | str = False) -> list[tuple]:
        """`(node, consumer)` per edge leaving `node`; with `data="port"`, `(node, consumer, port)`."""
        return [self._edge(node, v, p, data) for v, ports in self._out[node].items() for p in ports]

    def edges(self, data: bool | str = False) -> list[tuple]:
        return [e for n in self._node for e in self.out_edges(n, data)]

    @staticmethod
    def _edge(u: str, v: str, port: int, data: bool | str) -> tuple:
        if data is False:
            return (u, v)
        if data is True:
            return (u, v, {"port": port})
        if data == "port":
            return (u, v, port)
        raise InternalError(f"edges carry only `port`, not {data!r}")

    def in_degree(self, node: str) -> int:
        return len(self._in[node])

    def out_degree(self, node: str) -> int:
        return sum(len(ps) for ps in self._out[node].values())

    def number_of_edges(self, u: str | None = None, v: str | None = None) -> int:
        if u is None:
            return sum(len(ins) for ins in self._in.values())
        return len(self._out.get(u, {}).get(v, ()))

    def op(self, node: str) -> str:
        return self._node[node]["op"]

    def shape(self, node: str) -> tuple[int, ...]:
        return self._node[node]["shape"]

    def order(self) -> list[str]:
        """A deterministic topological order: of the nodes whose inputs are all computed, the
        one added first goes next (networkx's `lexicographical_topological_sort` by insertion)."""
        rank = {n: i for i, n in enumerate(self._node)}
        waiting = {n: len(ins) for n, ins in self._in.items()}
        ready = [rank[n] for n, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        names = list(self._node)
        out = []
        while ready:
            n = names[heapq.heappop(ready)]
            out.append(n)
            for v, ports in self._out[n].items():
                waiting[v] -= len(ports)
                if waiting[v] == 0:
                    heapq.heappush(ready, rank[v])
        if len(out) != len(self._node):
            raise InternalError(f"the graph has a cycle through {self.find_cycle()}")
        return out

    def walk(self) -> Iterator[tuple[str, dict]]:
        for n in self.order():
            yield n, self._node[n]

    def ancestors(self, node: str) -> set[str]:
        """Every node `node` depends on (not itself)."""
        return self._reach(node, lambda n: self._in[n].values())

    def descendants(self, node: str) -> set[str]:
        """Every node that depends on `node` (not itself)."""
        return self._reach(node, lambda n: self._out[n])

    def has_path(self, u: str, v: str) -> bool:
        """Whether `v` is `u` or depends on it (a search from `u` that stops at `v`)."""
        seen, todo = {u}, [u]
        while todo:
            n = todo.pop()
            if n == v:
                return True
            for m in self._out[n]:
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return False

    @staticmethod
    def _reach(start: str, step) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for m in step(todo.pop()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    def find_cycle(self) -> list[str] | None:
        """The nodes of one cycle, in edge order, or None for a DAG."""
        state: dict[str, int] = {}  # 1: on the current path, 2: finished
        for root in self._node:
            if root in state:
                continue
            path, stack = [root], [iter(self._out[root])]
            state[root] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    return path[path.index(nxt):]
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self._out[nxt]))
        return None

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
        cycle = self.find_cycle()
        if cycle is not None:
            yield f"cycle: {' -> '.join(cycle + cycle[:1])}"
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
        ports = sorted(self._in[n])
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
