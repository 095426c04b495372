"""Bottleneck-chain fusion: a conv followed by a 1x1 conv runs as one kernel whose intermediate
tile never leaves the chip.

A ResNet bottleneck ends with 3x3 (c channels) -> 1x1 expand (4c channels); NiN's mlpconv is a
conv followed by two 1x1 convs.  Fused, a program computes a tile of BLOCK_M pixels x all c
intermediate channels of the first conv in registers, applies its epilogue, and multiplies it
by the 1x1 weights tile after tile of output channels: the intermediate tensor (read and
written once each, 2 * M * c values) disappears, and so does one launch.

The cost rule (`why_not`): the intermediate must fit on chip next to the second GEMM's
accumulator: c <= CHAIN_MAX_MID channels (kernels/conv2d_chain.py; a BLOCK_M x c fp32 tile is
64 KiB of registers at c = 256 and BLOCK_M = 64).  A grouped first conv (ResNeXt's 3x3) runs the
kernel's grouped variant: mid is computed a slice of whole groups at a time (16 columns at
ResNeXt's widths), each slice from its groups' input channels with a block-diagonal weight,
so only one slice is on chip and c is not bounded -- but the zeros of that weight are MMA
work, and the slices are recomputed per output tile.  Such a chain must be predicted faster
than the two launches it replaces (`archdsl.runtime.perfmodel.chain_pair_us`, bf16 on the H200
datasheet ceilings) at batch 1, 32 and 256, else it declines with both figures.  Depthwise
first convs (MobileNet, ShuffleNet, EfficientNet) decline: 15 of 16 MMA columns would be zeros
against a CUDA-core kernel of their own, and a chain's output cannot be written through the
channel stride of ShuffleNet's shuffled concat, a copy the pairwise price does not see.  The first
conv's result must be read by the 1x1 conv alone; the 1x1 conv must be stride 1, unpadded, ungrouped.  Neither may carry
a prologue or be fused with siblings, and the first may not add a residual or join.  Chains are
pairs: in NiN's conv -> 1x1 -> 1x1 the first two fuse and the last is declined.

The price is memory, not time: the first conv's input stays alive until the chain runs.  In a
block whose shortcut is a conv, that is past the shortcut (which the chain's residual needs
first), so ResNet-50's stride-2 blocks hold the block input, conv1's output and the projection
at once: the planned peak rises from 4.98 to 6.12 MiB per image (fp32) while the activation
traffic falls from 107.6 to 97.6 MiB.  `--disable fuse_conv_chain` trades back.

The decision is recorded in the graph's launch groups (`groups.py`): the 1x1 conv's launch
computes the first conv too; both nodes keep computing what they computed.
"""

from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import family
from .groups import LaunchGroups, launch_groups, set_launch_groups
from .report import PassReport
from .rewrite import as_fused_conv, clone, sole_user

CHAIN_MAX_MID = 256  # = kernels/conv2d_chain.py's CHAIN_MAX_MID (tests check they agree)


def _has_prologue(a: dict) -> bool:
    return a.get("pre_bn_eps") is not None or a.get("pre_act", "none") != "none"


def why_not(g: Graph, first: str, second: str, groups: LaunchGroups | None = None) -> str | None:
    """Why `first -> second` cannot run as one chain kernel (None: it can)."""
    a, b = g.nodes[first]["attrs"], g.nodes[second]["attrs"]
    if sole_user(g, first) != second:
        return f"`{first}` is read by {len(list(g.out_edges(first)))} consumers" + \
            (" and is an output" if first in g.outputs else "")
    if a["groups"] > 1 and a["groups"] == g.shape(first)[0] == g.shape(g.args(first)[0])[0]:
        return f"`{first}` is depthwise: its own kernel runs it on CUDA cores, where chained 15 of a slice's " \
               "16 MMA columns would be zeros (and a shuffled concat after the 1x1 conv would need a copy)"
    if a["groups"] > 1 and set(a.get("sources", {})) & {"linear", "layer_scale", "in_ln"}:
        return f"`{first}` is grouped and folds a linear, layer scale or layer norm into its weight " \
               "(a grouped chain packs a plain conv weight)"
    if a["groups"] > 1 and g.shape(first)[0] // a["groups"] > CHAIN_MAX_MID:
        return f"`{first}`'s groups are {g.shape(first)[0] // a['groups']} channels wide, more than the " \
               f"{CHAIN_MAX_MID} kept on chip"
    if a.get("in_gate") or b.get("in_gate"):
        return "a conv of the pair applies a squeeze-and-excitation gate to its input (the chain kernel takes none)"
    if len(g.args(first)) > 1 or a.get("join", "add") != "add":
        return f"`{first}` adds a residual"
    if b.get("join") == "mean":
        return f"`{second}` ends a mean join (the chain kernel adds its residual before the activation)"
    if _has_prologue(a) or _has_prologue(b):
        return "a conv of the pair has an input prologue"
    groups = launch_groups(g) if groups is None else groups
    if groups.grouped(first) or groups.grouped(second):
        return "a conv of the pair is already fused with another conv"
    mid = g.shape(first)[0]
    if a["groups"] > 1:
        return _grouped_cost(g, first, second)
    if mid > CHAIN_MAX_MID:
        return f"the intermediate has {mid} channels, more than the {CHAIN_MAX_MID} kept on chip"
    return None


PRICED_BATCHES = (1, 32, 256)  # a grouped chain must be predicted faster at each


def _grouped_cost(g: Graph, first: str, second: str) -> str | None:
    """Why the grouped chain `first -> second` does not pay (None: it does): at some batch of
    PRICED_BATCHES its launch is not predicted faster than the two it replaces."""
    from ..runtime.perfmodel import Ceilings, chain_pair_us  # the model prices launches; it never runs passes

    ceilings = Ceilings.h200_datasheet()
    for batch in PRICED_BATCHES:
        chained, pair = chain_pair_us(g, first, second, batch, "bfloat16", ceilings)
        if chained >= pair:
            return (f"`{first}` is grouped ({g.nodes[first]['attrs']['groups']} groups) and the chain is not "
                    f"predicted faster at batch {batch}: {chained:.1f} us chained vs {pair:.1f} us as two launches "
                    f"(bf16, H200 datasheet)")
    return None


def _is_pointwise(a: dict) -> bool:
    return (tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), a["groups"]) == \
        ((1, 1), (1, 1), (0, 0, 0, 0), 1)


def fuse_conv_chain(graph: Graph) -> tuple[Graph, PassReport]:
    g = clone(graph)
    report = PassReport("fuse_conv_chain")
    convs = family("conv")
    groups = launch_groups(g)
    for second in graph.order():
        if g.op(second) not in convs or not _is_pointwise(g.nodes[second]["attrs"]):
            continue
        first = g.args(second)[0]
        if g.op(first) not in convs:
            continue
        why = why_not(g, first, second, groups)
        if why is not None:
            report.declined.append(f"{first} -> {second}: {why}")
            continue
        as_fused_conv(g, second)
        as_fused_conv(g, first)
        groups = groups.with_chain(first, second)
        mid, n_groups = g.shape(first)[0], g.nodes[first]["attrs"]["groups"]
        report.changed.append(f"{first} -> {second}: one kernel, the {mid}-channel intermediate on chip" +
                              (f" (grouped: {n_groups} groups, a slice of whole groups at a time)" if n_groups > 1
                               else ""))
    set_launch_groups(g, groups)
    return g, report
