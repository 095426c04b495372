"""Inference-only simplification: dropout, drop-path and identity are identities at inference."""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import inference_noops
from .report import PassReport
from .rewrite import clone, redirect


def strip_inference_noops(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("strip_inference_noops")
    noops = inference_noops()
    for n in graph.order():
        if g.op(n) not in noops:
            continue
        (src,) = g.args(n)
        if n in g.outputs and src in g.inputs:
            report.declined.append(f"{n}: an output that is the input itself")
            continue
        redirect(g, n, src)
        g.remove_node(n)
        report.changed.append(f"removed {n} ({graph.op(n)})")
    return g, report
