"""Gate fusion: squeeze-and-excitation's scale is applied by the conv that reads it, while that conv
loads its input, so the scaled tensor is never written nor read back.

MobileNetV3, EfficientNet and RegNetY end each SE block with `mul { @in; gate }`: a C×H×W map
times a C×1×1 gate, read by one (1×1 projection) conv.  As its own kernel the product costs a
read and a write of the expanded map and a launch; fused, the conv multiplies each element it
loads by gate[n, c] (fp32, rounded to the activation dtype as the mul's store would round it,
then the conv's batch-norm prologue if it has one: mul -> bn -> conv stays in that order).  The
conv gets `in_gate` and the gate as its last input; the mul node goes.

Runs before the sibling and chain fusions: a gate saves the expanded map's write and read, more
than chaining the projection conv would; those passes then decline a gated conv (neither kernel
applies a gate).  Declined (and said why): the product is a graph output or read by
anything but one conv's main input; the mul does not multiply one C×H×W map by one C×1×1 gate;
the conv already has a gate or computes together with other convs (a launch group).
"""

from __future__ import annotations

from ..ir.graph import Graph
from .groups import launch_groups
from .report import PassReport
from .rewrite import clone, conv_input_reader, read_through


def _operands(g: Graph, mul: str) -> tuple[str, str] | None:
    """(the map, the gate) of a two-operand mul of a C×H×W map by a C×1×1 gate, else None."""
    args = g.args(mul)
    if len(args) != 2 or args[0] == args[1]:
        return None
    out = tuple(g.shape(mul))
    if len(out) != 3 or out[1:] == (1, 1):  # a 1×1 map: which operand is the gate is ambiguous
        return None
    for x, gate in (args, args[::-1]):
        if tuple(g.shape(x)) == out and tuple(g.shape(gate)) == (out[0], 1, 1):
            return x, gate
    return None


def _why_not(g: Graph, mul: str) -> str | None:
    if mul in g.outputs:
        return "it is a graph output"
    if g.nodes[mul]["attrs"].get("act", "none") != "none":
        return "it applies an activation"
    if _operands(g, mul) is None:
        return "it is not one C×H×W map times one C×1×1 gate"
    user, why = conv_input_reader(g, mul)
    if why is not None:
        return why
    if g.nodes[user]["attrs"].get("in_gate"):
        return f"`{user}` already has a gate"
    if launch_groups(g).grouped(user):
        return f"`{user}` computes in one launch with other convs (siblings or a chain: no gate there)"
    return None


def fuse_gate_into_conv_input(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_gate_into_conv_input")
    for mul in graph.order():
        if g.op(mul) != "mul":
            continue
        why = _why_not(g, mul)
        if why is not None:
            report.declined.append(f"{mul}: {why}")
            continue
        x, gate = _operands(g, mul)
        (_, conv), = g.out_edges(mul)
        read_through(g, mul, conv, x)["in_gate"] = True
        last = len(g.args(conv))  # the gate goes after x and the residual: fused_conv's last input
        g.add_edge(gate, conv, key=last, port=last)
        g.remove_node(mul)
        report.changed.append(f"{mul} -> the input of {conv} (gate `{gate}`)")
    return g, report
