"""Epilogue fusion: conv -> [bn] -> [act] becomes one `fused_conv`; fc -> act one `fused_fc`.

`fuse_bn_act` pairs a batch norm that has no conv before it (pre-activation blocks, DenseNet)
with the activation after it: one scale-shift kernel.  The batch norm is folded into the convolution's weights and bias when weights are loaded
(inference), so the fused kernel applies only a bias and the activation to its fp32
accumulator.  An activation fuses when the registry's act table has a kernel form for it
(`epilogue_act`): every parameterless one, and gelu in both forms ("gelu", "gelu_tanh").  A
head may also be a fused node whose epilogue is still empty (a per-position linear that
`layout.py` made a 1x1 `fused_conv`), and an fc may be a `linear` on a flat vector.  A candidate is declined when an intermediate result is
used by anything else (or is a graph output): fusing would lose a tensor someone reads.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.fused import CONV_DEFAULTS
from ..ops.registry import epilogue_act
from .report import PassReport
from .rewrite import clone, redirect, sole_user


def _fits(g: Graph, m: str, stage: str) -> bool:
    """Whether node `m` is what the epilogue stage `stage` ("bn" or "act") can take."""
    if stage == "bn":
        return g.op(m) == "bn" and len(g.shape(m)) == 3
    return epilogue_act(g.op(m), g.nodes[m]["attrs"]) is not None


def _absorb(g: Graph, head: str, report: PassReport, allow_bn: bool) -> list[str]:
    """The chain of nodes after `head` that can be fused into it: [bn] then [act]."""
    chain, cur = [], head
    for stage in ("bn", "act") if allow_bn else ("act",):
        nxt = sole_user(g, cur)
        if nxt is None:
            if any(_fits(g, u, stage) for u in g.successors(cur)):
                report.declined.append(f"{head}: `{cur}` is read by {len(list(g.out_edges(cur)))} consumers"
                                       + (" and is an output" if cur in g.outputs else ""))
            break
        if not _fits(g, nxt, stage):
            continue
        chain.append(nxt)
        cur = nxt
    return chain


def _is_head(g: Graph, n: str, base: str, fused: str) -> bool:
    """A `base` node (a `linear` on a flat vector counts as an fc: the same attributes, weights and
    kernel), or a `fused` one with nothing in its epilogue yet (one input, no bn, no activation, no
    layer scale): what comes after it still applies to its accumulator."""
    if g.op(n) == base or (base == "fc" and g.op(n) == "linear" and len(g.shape(n)) == 1):
        return True
    a = g.nodes[n]["attrs"]
    return g.op(n) == fused and len(g.args(n)) == 1 and a.get("act", "none") == "none" and \
        a.get("bn_eps") is None and not a.get("layer_scale") and a.get("join", "add") == "add"


def _fuse(graph: Graph, base: str, fused: str, allow_bn: bool, name: str) -> tuple[Graph, PassReport]:
    """Fuse every `base` node with the [bn] -> [act] chain after it into one `fused` node."""
    g = clone(graph)
    report = PassReport(name)
    for n in graph.order():
        if n not in g or not _is_head(g, n, base, fused):
            continue
        chain = _absorb(g, n, report, allow_bn)
        if not chain:
            continue
        attrs = dict(g.nodes[n]["attrs"])
        fresh = g.op(n) != fused
        sources = {base: n} if fresh else dict(attrs["sources"])
        if fresh and base == "bn":
            attrs = {k: v for k, v in attrs.items() if k != "bn_eps"}
        if fresh and base == "conv":
            attrs.update(CONV_DEFAULTS)
        if base != "bn":
            attrs["bn_eps"] = None
        attrs["act"] = "none"
        for m in chain:
            if g.op(m) == "bn":
                attrs["bn_eps"] = g.nodes[m]["attrs"]["eps"]
                sources["bn"] = m
            else:
                attrs["act"] = epilogue_act(g.op(m), g.nodes[m]["attrs"])
        attrs["sources"] = sources
        d = g.nodes[n]
        d["op"], d["attrs"] = fused, attrs
        d["meta"] = {**d["meta"], "fused": [*d["meta"].get("fused", [n]), *chain]}
        redirect(g, chain[-1], n)
        g.nodes[n]["shape"] = g.shape(chain[-1])
        for m in chain:
            g.remove_node(m)
        report.changed.append(f"{n} + {' + '.join(chain)} -> {fused}")
    return g, report


def fuse_conv_bn_act(graph: Graph) -> tuple[Graph, PassReport]:
    return _fuse(graph, "conv", "fused_conv", allow_bn=True, name="fuse_conv_bn_act")


def fuse_fc_act(graph: Graph) -> tuple[Graph, PassReport]:
    return _fuse(graph, "fc", "fused_fc", allow_bn=False, name="fuse_fc_act")


def fuse_bn_act(graph: Graph) -> tuple[Graph, PassReport]:
    """A batch norm left standalone (pre-activation: bn -> relu -> conv) and its activation."""
    return _fuse(graph, "bn", "fused_bn", allow_bn=False, name="fuse_bn_act")
