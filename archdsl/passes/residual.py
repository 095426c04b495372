"""Residual fusion: `add(a, b)` (+ an activation) folds into the conv that produces an operand,
and so does a two-way `mean(a, b)` (FractalNet's join).

The conv's epilogue computes act(acc * scale + bias + residual), so a residual add and the
ReLU after it cost no kernel of their own (ResNet, ResNeXt, Wide ResNet, pre-activation).
A mean join comes after each branch's own activation: the epilogue computes
(act(acc * scale + bias) + residual) / 2 instead.
The operand chosen is the first (the block's body, before its shortcut) that qualifies; the
other operand becomes the conv's second input, so every later topological order computes it
first.  (Keeping the shortcut's conv free lets it join its siblings: see `horizontal.py`.)  Declined (and said why): a conv that already applies an activation before an add
(it would come before the add), an operand used elsewhere, more than two operands (the
epilogue takes one residual: FractalNet's 3- and 4-way joins keep their kernel).  An add that
keeps its own kernel still absorbs the activation after it (`fused_add`).
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import epilogue_act, family
from .report import PassReport
from .rewrite import as_fused_conv, clone, redirect, sole_user


def _fusable_conv(g: Graph, conv: str, other: str, join: str) -> str | None:
    """Why `conv` cannot take the join node `join` (None: it can)."""
    if g.op(conv) not in family("conv"):
        return f"`{conv}` is a {g.op(conv)}, not a conv"
    if sole_user(g, conv) != join:
        return f"`{conv}` is read elsewhere too"
    if g.op(conv) == "fused_conv" and len(g.args(conv)) > 1:
        return f"`{conv}` already adds a residual"
    if g.op(join) == "add" and g.op(conv) == "fused_conv" and g.nodes[conv]["attrs"]["act"] != "none":
        return f"`{conv}` applies an activation before the add"
    # (No other path from `conv` to `other` can exist: `conv`'s one reader is the join, which
    # reads `other`. Searching for one cost O(graph) per join: quadratic on deep networks.)
    if other == conv:
        return f"the other operand is computed from `{conv}`"
    return None


def fuse_residual_add(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_residual_add")
    for add in graph.order():
        if add not in g or g.op(add) not in ("add", "mean"):
            continue
        mean = g.op(add) == "mean"
        ins = g.args(add)
        act_node = sole_user(g, add)
        # an activation after a mean would have to follow the division: it keeps its kernel
        act = epilogue_act(g.op(act_node), g.nodes[act_node]["attrs"]) if act_node is not None and not mean else None
        reasons, chosen = [], None
        if len(ins) != 2:
            reasons.append(f"{len(ins)} operands (the epilogue takes one residual)")
        else:
            for conv, other in ((ins[0], ins[1]), (ins[1], ins[0])):
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
        as_fused_conv(g, conv)
        d = g.nodes[conv]
        absorbed = [add] + ([act_node] if act else [])
        d["attrs"] = {**d["attrs"], "join": "mean"} if mean else {**d["attrs"], "act": act or "none"}
        d["meta"] = {**d["meta"], "fused": d["meta"]["fused"] + absorbed}
        g.remove_edge(conv, add, key=g.args(add).index(conv))
        g.add_edge(other, conv, key=1, port=1)
        last = act_node if act else add
        redirect(g, last, conv)
        for m in absorbed:
            g.remove_node(m)
        report.changed.append(f"{conv} absorbs {' + '.join(absorbed)} (residual: {other})")
    return g, report
