"""Launch groups: which convs one kernel launch computes together (a decision, not a change of
what any node computes).

Two passes make such decisions: horizontal fusion (`horizontal.py`: sibling 1x1 convs reading one
tensor run as one wider GEMM) and bottleneck-chain fusion (`chain.py`: a conv and the 1x1 conv
after it in one kernel, the intermediate on chip).  They record them here, on the graph as a
whole (``g.graph["launch_groups"]``), never in node attributes; the launch schedule
(`archdsl.codegen.schedule`) is the one reader downstream.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Iterator

from ..ir.graph import Graph

KEY = "launch_groups"


@dataclass(frozen=True)
class LaunchGroups:
    """siblings: launcher -> the other 1x1 convs its launch computes, in order.
    chains:   second (1x1) conv -> the conv before it, computed on chip in the same launch."""

    siblings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)

    def launched_by(self, n: str) -> str | None:
        """The node whose launch computes `n`, when that is not `n` itself."""
        return self._launcher.get(n)

    @functools.cached_property
    def _launcher(self) -> dict[str, str]:  # computed once per (immutable) set of groups
        by = {m: first for first, rest in self.siblings.items() for m in rest}
        by.update({first: second for second, first in self.chains.items()})
        return by

    def grouped(self, n: str) -> bool:
        """Whether `n` takes part in any launch group already."""
        return n in self.siblings or n in self.chains or self.launched_by(n) is not None

    def with_siblings(self, first: str, rest: tuple[str, ...]) -> LaunchGroups:
        return replace(self, siblings={**self.siblings, first: tuple(rest)})

    def with_chain(self, first: str, second: str) -> LaunchGroups:
        return replace(self, chains={**self.chains, second: first})

    def problems(self, g: Graph) -> Iterator[str]:
        """What is inconsistent with `g` (run after every pass, like `Graph.lint`)."""
        seen: set[str] = set()
        for first, rest in self.siblings.items():
            for m in (first, *rest):
                if m not in g or g.op(m) != "fused_conv":
                    yield f"sibling group of {first!r}: {m!r} is not a fused_conv of the graph"
                elif g.args(m)[:1] != g.args(first)[:1]:
                    yield f"sibling group of {first!r}: {m!r} reads another tensor"
                if m in seen:
                    yield f"{m!r} is in two launch groups"
                seen.add(m)
        for second, first in self.chains.items():
            if second not in g or first not in g or g.args(second)[:1] != [first]:
                yield f"chain {first!r} -> {second!r}: not a conv and the conv reading it"
            for m in (first, second):
                if m in seen:
                    yield f"{m!r} is in two launch groups"
                seen.add(m)


def launch_groups(g: Graph) -> LaunchGroups:
    """The launch groups decided for `g` so far (none for a graph no pass has grouped)."""
    return g.graph.get(KEY) or LaunchGroups()


def set_launch_groups(g: Graph, groups: LaunchGroups) -> None:
    g.graph[KEY] = groups
