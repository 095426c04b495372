"""Batch-norm folding as a graph rewrite, for the eager PyTorch baselines of the benchmark: every
conv whose only reader is a 2-d batch norm takes it as a bias, so the baselines do exactly the
inference work a fused program does, and no more.  (The compiler's own pipeline fuses instead:
`fuse.py`, with the batch norm folded into the weights when they are loaded.)"""

from __future__ import annotations

from ..ir.graph import Graph
from .rewrite import clone, redirect, sole_user


def fold_bn_graph(graph: Graph) -> tuple[Graph, dict]:
    """(graph', folds): every conv whose only reader is a 2-d batch norm takes it as a bias.

    folds maps conv -> (bn, eps).  The result is a plain graph (conv, relu, add, ...): the eager
    baselines run it, so each of them does exactly the inference work (BN folded) and no more.
    """
    g = clone(graph)
    folds = {}
    for n in graph.order():
        if n not in g or g.op(n) != "conv":
            continue
        user = sole_user(g, n)
        if user is None or g.op(user) != "bn" or len(g.shape(user)) != 3:
            continue
        folds[n] = (user, g.nodes[user]["attrs"]["eps"])
        g.nodes[n]["attrs"]["bias"] = True
        redirect(g, user, n)
        g.remove_node(user)
    g.lint()
    return g, folds
