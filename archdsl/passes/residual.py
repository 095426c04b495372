"""Residual fusion: `add(a, b)` (+ an activation) folds into the conv that produces an operand.

The conv's epilogue computes act(acc * scale + bias + residual), so a residual add and the
ReLU after it cost no kernel of their own (ResNet, ResNeXt, Wide ResNet, pre-activation).
The operand chosen is the conv latest in execution order, so the other operand is ready when
it runs.  Declined (and said why): a mean join (the epilogue cannot scale the residual by
1/n), a conv that already applies an activation (it would come before the add), an operand
used elsewhere, more than two operands.  An add that keeps its own kernel still absorbs the
activation after it (`fused_add`).
"""

from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph
from .report import PassReport
from .rewrite import clone, redirect, sole_user

CONVS = ("conv", "fused_conv")
ACTS = ("relu", "tanh", "sigmoid")


def _fusable_conv(g: Graph, conv: str, other: str, add: str) -> str | None:
    """Why `conv` cannot take the add (None: it can)."""
    if g.op(conv) not in CONVS:
        return f"`{conv}` is a {g.op(conv)}, not a conv"
    if sole_user(g, conv) != add:
        return f"`{conv}` is read elsewhere too"
    if g.op(conv) == "fused_conv" and (g.nodes[conv]["attrs"]["act"] != "none" or len(g.args(conv)) > 1):
        return f"`{conv}` already applies an activation or a residual"
    if other == conv or nx.has_path(g, conv, other):
        return f"the other operand is computed from `{conv}`"
    return None


def _as_fused_conv(g: Graph, conv: str) -> None:
    d = g.nodes[conv]
    if d["op"] == "conv":
        d["op"] = "fused_conv"
        d["attrs"] = {**d["attrs"], "bn_eps": None, "act": "none", "sources": {"conv": conv}}
        d["meta"] = {**d["meta"], "fused": [conv]}


def fuse_residual_add(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_residual_add")
    order = {n: i for i, n in enumerate(graph.order())}
    for add in graph.order():
        if add not in g or g.op(add) not in ("add", "mean"):
            continue
        if g.op(add) == "mean":
            report.declined.append(f"{add}: a mean join (the conv epilogue adds its residual unscaled)")
            continue
        ins = g.args(add)
        act_node = sole_user(g, add)
        act = g.op(act_node) if act_node is not None and g.op(act_node) in ACTS else None
        reasons, chosen = [], None
        if len(ins) != 2:
            reasons.append(f"{len(ins)} operands (the epilogue takes one residual)")
        else:
            for conv, other in sorted(((ins[0], ins[1]), (ins[1], ins[0])), key=lambda p: -order[p[0]]):
                why = _fusable_conv(g, conv, other, add)
                if why is None:
                    chosen = (conv, other)
                    break
                reasons.append(why)
        if chosen is None:
            report.declined.append(f"{add}: " + "; ".join(reasons))
            if act is not None:  # the add keeps its kernel, but takes the activation
                g.nodes[add]["op"] = "fused_add"
                g.nodes[add]["attrs"] = {"act": act, "sources": {}}
                g.nodes[add]["meta"] = {**g.nodes[add]["meta"], "fused": [add, act_node]}
                redirect(g, act_node, add)
                g.remove_node(act_node)
                report.changed.append(f"{add} + {act_node} -> fused_add")
            continue
        conv, other = chosen
        _as_fused_conv(g, conv)
        d = g.nodes[conv]
        absorbed = [add] + ([act_node] if act else [])
        d["attrs"] = {**d["attrs"], "act": act or "none"}
        d["meta"] = {**d["meta"], "fused": d["meta"]["fused"] + absorbed}
        g.remove_edge(conv, add, key=g.args(add).index(conv))
        g.add_edge(other, conv, key=1, port=1)
        last = act_node if act else add
        redirect(g, last, conv)
        for m in absorbed:
            g.remove_node(m)
        report.changed.append(f"{conv} absorbs {' + '.join(absorbed)} (residual: {other})")
    return g, report
