"""Layer-scale folding: a `layer_scale` (x · γ, γ a learnable per-channel vector: ConvNeXt) right
after a conv is folded into that conv's weights and bias when weights are loaded.

    conv -> [bn] -> layer_scale    computes    γ·(W*x + b) = (γ·W)*x + γ·b

exactly (γ scales output channel k of the weight and the bias: W'[k] = γ[k]·W[k], b'[k] =
γ[k]·b[k], after any batch norm is folded the same way), so the scale costs no kernel and, in
ConvNeXt's block, the residual add after it becomes the GEMM's epilogue (`residual.py`).  The
conv records the scale as `layer_scale=true` with the scale's node as role `layer_scale`.
Declined (and said why): a conv that applies an activation or adds a residual already (γ would
come after them, where no weight can hold it), or whose result is read elsewhere too.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import family
from .report import PassReport
from .rewrite import as_fused_conv, clone, redirect, sole_user


def _why_not(g: Graph, conv: str, scale: str) -> str | None:
    """Why the layer scale `scale` cannot fold into its input `conv` (None: it can)."""
    if g.op(conv) not in family("conv"):
        return f"its input `{conv}` is a {g.op(conv)}, not a conv"
    if sole_user(g, conv) != scale:
        return f"`{conv}` is read elsewhere too"
    a = g.nodes[conv]["attrs"]
    if len(g.args(conv)) > 1 or a.get("join", "add") != "add":
        return f"`{conv}` adds a residual before the scale"
    if a.get("act", "none") != "none":
        return f"`{conv}` applies {a['act']} before the scale"
    if a.get("layer_scale"):
        return f"`{conv}` has a layer scale already"
    return None


def fold_layer_scale(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fold_layer_scale")
    for scale in graph.order():
        if scale not in g or g.op(scale) != "layer_scale":
            continue
        conv = g.args(scale)[0]
        why = _why_not(g, conv, scale)
        if why is not None:
            report.declined.append(f"{scale}: {why}")
            continue
        attrs = as_fused_conv(g, conv)
        d = g.nodes[conv]
        d["attrs"] = {**attrs, "layer_scale": True, "sources": {**attrs["sources"], "layer_scale": scale}}
        d["meta"] = {**d["meta"], "fused": d["meta"]["fused"] + [scale]}
        redirect(g, scale, conv)
        g.remove_node(scale)
        report.changed.append(f"{conv} absorbs {scale} (γ folded into its weights and bias)")
    return g, report
