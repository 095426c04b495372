"""Optimization passes: plain functions `Graph -> (Graph, PassReport)`, run in one pipeline.

Each pass returns a new graph (its input is left untouched), says what it changed and, for
fusions, why each candidate it saw was not fused.  `Graph.lint()` runs after every pass, so a
pass that breaks the IR is caught where it happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import InternalError
from ..ir.graph import Graph
from .chain import fuse_conv_chain
from .fuse import fuse_bn_act, fuse_conv_bn_act, fuse_fc_act
from .fold import fold_bn_graph
from .gate import fuse_gate_into_conv_input
from .groups import LaunchGroups, launch_groups
from .horizontal import fuse_sibling_convs
from .inference import strip_inference_noops
from .layout import to_channels_first
from .norm import fuse_layer_norm_into_conv
from .prologue import fuse_bn_into_conv_input
from .report import PassReport
from .residual import fuse_residual_add
from .scale import fold_layer_scale

Pass = Callable[[Graph], tuple[Graph, PassReport]]

# The inference pipeline, in order.
PIPELINE: list[tuple[str, Pass]] = [
    ("strip_inference_noops", strip_inference_noops),
    ("to_channels_first", to_channels_first),
    ("fuse_conv_bn_act", fuse_conv_bn_act),
    ("fold_layer_scale", fold_layer_scale),
    ("fuse_fc_act", fuse_fc_act),
    ("fuse_residual_add", fuse_residual_add),
    ("fuse_bn_act", fuse_bn_act),
    ("fuse_bn_into_conv_input", fuse_bn_into_conv_input),
    # before the launch groups: a gate saves the expanded map's write and read, more than a chain
    # of the projection conv saves (EfficientNet's first block); gated convs then join no group
    ("fuse_gate_into_conv_input", fuse_gate_into_conv_input),
    ("fuse_sibling_convs", fuse_sibling_convs),
    ("fuse_conv_chain", fuse_conv_chain),
    ("fuse_layer_norm_into_conv", fuse_layer_norm_into_conv),  # after the chains: they keep more on chip
]


@dataclass
class Optimized:
    graph: Graph
    reports: list[PassReport] = field(default_factory=list)
    after: dict[str, Graph] = field(default_factory=dict)  # the graph as each pass left it


def optimize(graph: Graph, disable: tuple[str, ...] = ()) -> Optimized:
    """Run the pipeline (minus the passes named in `disable`) over a copy of `graph`."""
    known = {name for name, _ in PIPELINE}
    unknown = set(disable) - known
    if unknown:
        raise ValueError(f"unknown passes {sorted(unknown)}; passes: {', '.join(known)}")
    result = Optimized(graph)
    for name, run in PIPELINE:
        if name in disable:
            continue
        result.graph, report = run(result.graph)
        result.graph.lint()
        _check_launch_groups(result.graph, name)
        result.reports.append(report)
        result.after[name] = result.graph
    return result


def _check_launch_groups(g: Graph, name: str) -> None:
    problems = list(launch_groups(g).problems(g))
    if problems:
        raise InternalError(f"launch groups inconsistent after {name}:\n  " + "\n  ".join(problems))


def fused_state_dict(optimized: Graph, state: dict) -> dict:
    """The reference weights (keys of the unoptimized graph) under the optimized graph's keys:
    a fused node's `<node>.<role>.<param>` comes from `<sources[role]>.<param>`, and a bare parameter
    (a layer scale's γ, keyed by its node's name) becomes `<node>.<role>`."""
    out = dict(state)
    for n, d in optimized.nodes(data=True):
        for role, original in d["attrs"].get("sources", {}).items() if d["op"].startswith("fused_") else ():
            if original in state:
                out[f"{n}.{role}"] = state[original]
                out.pop(original, None)
            prefix = original + "."
            for key in [k for k in state if k.startswith(prefix) and "." not in k[len(prefix):]]:
                out[f"{n}.{role}.{key[len(prefix):]}"] = state[key]
                out.pop(key, None)
    return out


__all__ = ["PIPELINE", "LaunchGroups", "Optimized", "PassReport", "fold_bn_graph", "fused_state_dict", "launch_groups",
           "optimize"]
