"""Horizontal fusion: sibling 1x1 convs that read the same tensor run as one wider GEMM.

GoogLeNet's inception module reads its input with three 1x1 convs (the 1x1 branch and the
3x3 and 5x5 branches' reductions); a ResNet stage's first block reads it with `conv1` and
the projection shortcut.  One launch with the filters side by side reads the input once
instead of once per sibling and fills the GPU with one larger grid.  Each column range lands
where its own tensor lives (a concat's channel slice, or a buffer of its own) and gets its own
activation, so nothing after the launch changes.

The decision is recorded in the graph's launch groups (`groups.py`; the nodes keep computing
what they computed): the first sibling in execution order launches the others, in order.  The kernel writes at most `MAX_SIBLINGS` outputs.

Declined (and said why) for a conv that reads a tensor other 1x1 convs read: not 1x1 /
stride 1 / unpadded / ungrouped (a 3x3 sibling would waste 8/9 of its products as zeros), a
residual or a mean join in its epilogue, a prologue different from the others', or a
conv already fused in another way.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import family
from .groups import launch_groups, set_launch_groups
from .report import PassReport
from .rewrite import as_fused_conv, clone

MAX_SIBLINGS = 4


def _why_not(g: Graph, conv: str, grouped: bool) -> str | None:
    a = g.nodes[conv]["attrs"]
    geometry = (tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), tuple(a["dilation"]), a["groups"])
    if geometry != ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1):
        k, s = a["kernel"], a["stride"]
        return f"{k[0]}x{k[1]} stride {s[0]}" + (f" groups {a['groups']}" if a["groups"] > 1 else "") + \
            ("" if tuple(a["pad"]) == (0, 0, 0, 0) else " padded") + " (one GEMM needs 1x1, stride 1, unpadded, ungrouped)"
    if a.get("in_gate"):
        return "applies a squeeze-and-excitation gate to its input (its own: one GEMM reads one input)"
    if len(g.args(conv)) > 1:
        return "adds a residual"
    if grouped:
        return "already fused with another conv"
    return None


def _prologue(g: Graph, conv: str) -> tuple:
    a = g.nodes[conv]["attrs"]
    return (a.get("pre_bn_eps"), a.get("pre_act", "none"), a.get("sources", {}).get("pre_bn"))


def fuse_sibling_convs(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_sibling_convs")
    order = {n: i for i, n in enumerate(graph.order())}
    convs = family("conv")
    groups = launch_groups(g)
    for x in graph.order():
        readers = sorted({u for _, u, p in g.out_edges(x, data="port") if p == 0 and g.op(u) in convs},
                         key=order.get)
        if len(readers) < 2:
            continue
        ok = []
        for conv in readers:
            why = _why_not(g, conv, groups.grouped(conv))
            if why is None and ok and _prologue(g, conv) != _prologue(g, ok[0]):
                why = f"its input prologue differs from `{ok[0]}`'s"
            if why is None:
                ok.append(conv)
            else:
                report.declined.append(f"{conv}: a sibling of {len(readers) - 1} other conv(s) reading `{x}`, but {why}")
        for i in range(0, len(ok), MAX_SIBLINGS):
            group = ok[i:i + MAX_SIBLINGS]
            if len(group) < 2:
                if i:
                    report.declined.append(f"{group[0]}: the kernel writes at most {MAX_SIBLINGS} outputs per launch")
                continue
            first, rest = group[0], group[1:]
            for conv in group:
                as_fused_conv(g, conv)
            groups = groups.with_siblings(first, tuple(rest))
            channels = " + ".join(str(g.shape(c)[0]) for c in group)
            report.changed.append(f"{first} launches {', '.join(rest)} too: one 1x1 GEMM of {channels} channels over `{x}`")
    set_launch_groups(g, groups)
    return g, report
