"""Small graph-surgery helpers shared by the passes."""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.fused import CONV_DEFAULTS
from ..ops.registry import family


def clone(g: Graph) -> Graph:
    """A copy whose node attributes and graph-level lists can be changed without touching `g`."""
    out = g.copy()
    out.graph = {**g.graph, "inputs": list(g.inputs), "outputs": list(g.outputs),
                 "output_names": list(g.graph.get("output_names", [])), "scopes": dict(g.graph["scopes"])}
    for n, d in out.nodes(data=True):
        d["attrs"] = dict(d["attrs"])
        d["meta"] = dict(d["meta"])
    return out


def redirect(g: Graph, old: str, new: str) -> None:
    """Make every consumer of `old` (and the graph's outputs) read `new` instead, same ports."""
    for _, user, port in list(g.out_edges(old, data="port")):
        g.remove_edge(old, user, key=port)
        g.add_edge(new, user, key=port, port=port)
    g.graph["outputs"] = [new if o == old else o for o in g.outputs]


def sole_user(g: Graph, n: str) -> str | None:
    """The one node that reads `n` (through one port), or None; outputs count as readers."""
    edges = list(g.out_edges(n))
    if len(edges) != 1 or n in g.outputs:
        return None
    return edges[0][1]


def conv_input_readers(g: Graph, node: str) -> tuple[list[str], str | None]:
    """(the convs reading `node`, None) when every reader of `node` is a conv reading it as its
    main input (port 0) -- what a prologue fusion needs: each of them can apply `node` while it
    loads -- else ([], why not, for the pass's report)."""
    if node in g.outputs:
        return [], "it is a graph output"
    users = list(g.out_edges(node, data="port"))
    if not users:
        return [], "nothing reads it"
    for _, user, port in users:
        if g.op(user) not in family("conv"):
            return [], f"`{user}` (a {g.op(user)}) reads it"
        if port != 0:
            return [], f"`{user}` reads it as its residual"
    return sorted({user for _, user, _ in users}), None


def conv_input_reader(g: Graph, node: str) -> tuple[str | None, str | None]:
    """(the one conv reading `node`, None) when it is `node`'s only reader, through its main
    input; else (None, why not)."""
    readers = len(g.out_edges(node))
    if readers != 1 and node not in g.outputs:
        return None, f"{readers} inputs read it (the conv would have to be the only one)"
    convs, why = conv_input_readers(g, node)
    return (convs[0], None) if why is None else (None, why)


def as_fused_conv(g: Graph, conv: str) -> dict:
    """Turn a plain `conv` node into a `fused_conv` that does the same (no-op if it is one already);
    returns its attrs, every epilogue/prologue field present."""
    d = g.nodes[conv]
    if d["op"] == "conv":
        d["op"] = "fused_conv"
        d["attrs"] = {**d["attrs"], **CONV_DEFAULTS, "sources": {"conv": conv}}
        d["meta"] = {**d["meta"], "fused": [conv]}
    return d["attrs"]


def read_through(g: Graph, node: str, conv: str, x: str) -> dict:
    """Make `conv`, which reads `node` as its main input (port 0), read `node`'s input `x` instead,
    applying `node` itself while it loads (a prologue); `node`, and whatever it had absorbed, is
    recorded as fused into `conv`.  Returns conv's attrs (as a `fused_conv`'s) for the caller to
    say what the prologue is; the caller removes `node` once nothing reads it."""
    a = as_fused_conv(g, conv)
    d = g.nodes[conv]
    d["meta"] = {**d["meta"], "fused": g.nodes[node]["meta"].get("fused", [node]) + d["meta"].get("fused", [conv])}
    g.remove_edge(node, conv, key=0)
    g.add_edge(x, conv, key=0, port=0)
    return a
