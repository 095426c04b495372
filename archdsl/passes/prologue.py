"""Prologue fusion: a batch norm (and the activation after it) that *precedes* convolutions is
applied by those convolutions while they load their input, so it never makes a tensor.

Pre-activation ResNets (bn -> relu -> conv) and DenseNet (concat -> bn -> relu -> conv) have
such batch norms; DenseNet's follows a concat, whose buffer keeps growing, so the normalized
copy would cost a full read and write of the block's features per layer.  Folding the batch
norm into the conv's *weights* is exact only without padding and without an activation in
between; the prologue is exact always: the conv normalizes each element it loads, keeps the
padding halo at zero (the reference pads the normalized tensor), and casts the result to the
activation dtype, as the unfused program would have stored it.

Declined (and said why): the normalized tensor is a graph output, or something other than a
conv's main input reads it (a pooling layer, a residual operand, a concat).  When several
convs read it, each applies the prologue itself.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import family
from .report import PassReport
from .rewrite import clone, conv_input_readers, read_through


def _why_not(g: Graph, bn: str) -> str | None:
    convs, why = conv_input_readers(g, bn)
    if why is not None:
        return why
    for conv in convs:
        a = g.nodes[conv]["attrs"]
        if a.get("pre_bn_eps") is not None or a.get("pre_act", "none") != "none":
            return f"`{conv}` already has a prologue"
    return None


def fuse_bn_into_conv_input(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_bn_into_conv_input")
    bns = family("bn")
    for bn in graph.order():
        if g.op(bn) not in bns or len(g.shape(bn)) != 3:
            continue
        why = _why_not(g, bn)
        if why is not None:
            report.declined.append(f"{bn}: {why}")
            continue
        d = g.nodes[bn]
        (x,) = g.args(bn)
        original = d["attrs"].get("sources", {}).get("bn", bn)
        users = sorted({u for _, u in g.out_edges(bn)})
        for user in users:
            a = read_through(g, bn, user, x)
            a["pre_bn_eps"], a["pre_act"] = d["attrs"]["eps"], d["attrs"].get("act", "none")
            a["sources"] = {"pre_bn": original, **a["sources"]}
        g.remove_node(bn)
        report.changed.append(f"{bn} -> the input of {', '.join(users)}")
    return g, report
