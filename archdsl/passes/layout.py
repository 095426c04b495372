"""ConvNeXt's channels-last stretch, computed channels-first: its linears become 1x1 GEMMs that
the conv passes fuse.

torchvision's CNBlock permutes C×H×W to H×W×C, applies a layer norm and linears over the last
axis (with an activation between), and permutes back.  Every op of that stretch works on each
position's channel vector alone, so the same arithmetic on the C×H×W map needs no permute:

    permute((1, 2, 0)) -> layer_norm(axis=-1) -> linear -> gelu -> linear -> permute((2, 0, 1))
    ==                    layer_norm(axis=0)  -> 1x1    -> gelu -> 1x1

Each linear becomes a 1x1 `fused_conv` with an empty epilogue whose weight is the linear's own
(role "linear": its (out, in) weight is read as a 1x1 conv's at load time), so the epilogue
passes fuse what follows it (the activation; a layer scale; the block's residual add) exactly
as for a conv.  Both permutes disappear (the compiled program had them as views already).
Declined (and said why): a stretch that branches (an intermediate read twice or an output), or
that holds an op with no per-position form here, or that never permutes back.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.fused import CONV_DEFAULTS
from ..ops.registry import activation_ops
from .report import PassReport
from .rewrite import clone, redirect, sole_user

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = (1, 2, 0), (2, 0, 1)


def _is_permute(g: Graph, n: str, order: tuple[int, ...]) -> bool:
    return g.op(n) == "permute" and tuple(g.nodes[n]["attrs"]["order"]) == order


def _per_position(g: Graph, n: str) -> bool:
    """An op of the stretch that reads only its own position's channel vector (over the last axis)."""
    op = g.op(n)
    if op == "layer_norm":
        return g.nodes[n]["attrs"]["axis"] == -1
    return op == "linear" or op in activation_ops()


def _stretch(g: Graph, first: str) -> tuple[list[str], str | None, str | None]:
    """(the ops after the permute `first`, the permute back, why not) for one channels-last stretch."""
    body, cur = [], first
    while True:
        nxt = sole_user(g, cur)
        if nxt is None:
            users = len(list(g.out_edges(cur)))
            return body, None, f"`{cur}` is read by {users} consumers" + (" and is an output" if cur in g.outputs else "")
        if _is_permute(g, nxt, TO_CHANNELS_FIRST):
            return body, nxt, None if body else "nothing between the permutes"
        if not _per_position(g, nxt):
            return body, None, f"`{nxt}` ({g.op(nxt)}) is not a per-position op over the last axis"
        body.append(nxt)
        cur = nxt


def _channels_first(g: Graph, n: str) -> None:
    """Rewrite one node of the stretch in place: its C×H×W shape and its channels-first op."""
    d = g.nodes[n]
    h, w, c = d["shape"]
    d["shape"] = (c, h, w)
    if d["op"] == "layer_norm":
        d["attrs"] = {**d["attrs"], "axis": 0}
    elif d["op"] == "linear":
        d["op"] = "fused_conv"
        d["attrs"] = {"out": d["attrs"]["out"], "kernel": (1, 1), "stride": (1, 1), "pad": (0, 0, 0, 0),
                      "dilation": (1, 1), "groups": 1, "bias": d["attrs"]["bias"], **CONV_DEFAULTS,
                      "sources": {"linear": n}}
        d["meta"] = {**d["meta"], "fused": [n]}


def to_channels_first(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("to_channels_first")
    for first in graph.order():
        if first not in g or not _is_permute(g, first, TO_CHANNELS_LAST) or len(g.shape(g.args(first)[0])) != 3:
            continue
        body, back, why = _stretch(g, first)
        if why is not None:
            report.declined.append(f"{first}: {why}")
            continue
        for n in body:
            _channels_first(g, n)
        redirect(g, first, g.args(first)[0])
        g.remove_node(first)
        redirect(g, back, body[-1])
        g.remove_node(back)
        linears = [n for n in body if g.op(n) == "fused_conv"]
        report.changed.append(f"removed {first} and {back}: {' -> '.join(body)} channels-first"
                              + (f" ({len(linears)} linear(s) as 1x1 GEMMs)" if linears else ""))
    return g, report
