"""Layer-norm fusion: a layer norm over the channels is computed by the 1x1 GEMM that reads it, so
the normalized tensor is never written nor read back.

ConvNeXt's block, once `to_channels_first` has run, is dwconv7x7 -> layer_norm(axis=0) -> 1x1
(its first linear, gelu fused) -> 1x1.  As its own kernel the layer norm reads and writes the
whole C×H×W map and costs a launch.  Fused, the conv multiplies the *raw* input by W * γ (per
input channel, folded at load) while summing each pixel's x and x² from the blocks it loads
anyway, then turns its fp32 accumulator into rstd · (acc − mean · c) (c: the column sums of the
folded weight) and adds W·β to its bias; kernels/conv2d.py ("Layer norm folded into the GEMM")
has the algebra and the numerics.  The conv gets `in_ln_eps` and the norm as its `in_ln`
source (its γ and β); the layer_norm node goes.

Runs after the chain and sibling fusions: a chain keeps the (larger) intermediate of the two
GEMMs on chip, and neither launch kind folds a layer norm, so a conv they group is declined.
Declined (and said why): the norm is a graph output or read by anything but one conv's main
input; it is not over the channels of a C×H×W map, or has no affine weight; the conv is not
1x1, stride 1, unpadded, undilated and ungrouped (the kernel's GEMM path), or already applies a
prologue (batch norm, activation, a gate or a layer norm) to its input.
"""

from __future__ import annotations

from ..ir.graph import Graph
from .groups import launch_groups
from .report import PassReport
from .rewrite import clone, conv_input_reader, read_through

_GEMM_GEOMETRY = {"kernel": (1, 1), "stride": (1, 1), "pad": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1}


def _prologue(a: dict) -> str | None:
    """What the conv already applies to its input (None: nothing)."""
    if a.get("pre_bn_eps") is not None or a.get("pre_act", "none") != "none":
        return "a batch norm or activation"
    if a.get("in_gate"):
        return "a gate"
    if a.get("in_ln_eps") is not None:
        return "a layer norm"
    return None


def _why_not(g: Graph, ln: str) -> str | None:
    a = g.nodes[ln]["attrs"]
    if ln in g.outputs:
        return "it is a graph output"
    if a["axis"] != 0 or len(g.shape(ln)) != 3:
        return "it is not over the channels of a C×H×W map"
    if not a["affine"]:
        return "it has no affine weight and bias (only affine layer norms fold)"
    conv, why = conv_input_reader(g, ln)
    if why is not None:
        return why
    c = g.nodes[conv]["attrs"]
    if any((tuple(c[k]) if isinstance(v, tuple) else c[k]) != v for k, v in _GEMM_GEOMETRY.items()):
        return f"`{conv}` is not a 1x1, stride-1, unpadded, ungrouped conv (the GEMM path)"
    prologue = _prologue(c)
    if prologue is not None:
        return f"`{conv}` already applies {prologue} to its input"
    if launch_groups(g).grouped(conv):
        return f"`{conv}` computes in one launch with other convs (siblings or a chain: no layer norm there)"
    return None


def fuse_layer_norm_into_conv(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_layer_norm_into_conv")
    for ln in graph.order():
        if g.op(ln) != "layer_norm":
            continue
        why = _why_not(g, ln)
        if why is not None:
            report.declined.append(f"{ln}: {why}")
            continue
        x = g.args(ln)[0]
        (_, conv), = g.out_edges(ln)
        a = read_through(g, ln, conv, x)
        a["in_ln_eps"] = g.nodes[ln]["attrs"]["eps"]
        a["sources"] = {**a["sources"], "in_ln": ln}  # γ and β, folded into the weights at load
        g.remove_node(ln)
        report.changed.append(f"{ln} -> the input of {conv}")
    return g, report
