"""The PyTorch reference backend: an IR graph -> a trainable NCHW `torch.nn.Module`.

This is the oracle every other backend is checked against, so it is deliberately plain:
one submodule per node, built by the op's registry entry (`OpSpec.torch`), placed in a module
tree that mirrors the hierarchical node names.  `layer1.0.conv1` is the module
`model.layer1[0].conv1`, and its weight is the state_dict key `layer1.0.conv1.weight` — the
same key torchvision uses when the `.arch` labels follow torchvision's names.

`forward` runs the nodes in the graph's deterministic topological order, feeding each its
inputs in port order and dropping every tensor after its last use.  Several outputs come back
as a tuple in declared order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import NO_LOC, ArchError, SrcLoc
from ..ir.graph import Graph
from ..ops import OPS


class Container(nn.Module):
    """A scope of the name hierarchy (a block instance or a labelled sequence): holds children,
    reachable by name or position like nn.Sequential's (`model.layer1[0].conv1`)."""

    def __getitem__(self, key: int | str) -> nn.Module:
        return self._modules[str(key)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


@dataclass(frozen=True)
class Step:
    node: str
    module: nn.Module
    args: tuple[int, ...]  # slots of the input tensors, in port order
    out: int  # slot of the result
    free: tuple[int, ...]  # slots whose last use is this step


class ArchModule(nn.Module):
    """An elaborated network as a module; `graph` is the IR it executes (read-only)."""

    def __init__(self, graph: Graph):
        super().__init__()
        graph.lint()
        object.__setattr__(self, "graph", graph)  # not a submodule, not in the state_dict
        self._steps, self._input_slots, self._output_slots = self._plan(graph)
        self._slots = len(graph)

    def _plan(self, g: Graph):
        order = g.order()
        slot = {n: i for i, n in enumerate(order)}
        last_use: dict[str, str] = {}
        for n in order:
            for a in g.args(n):
                last_use[a] = n
        keep = set(g.outputs)
        steps = []
        for n in order:
            if g.op(n) == "input":
                continue
            d = g.nodes[n]
            module = OPS[d["op"]].torch(d["attrs"], [g.shape(a) for a in g.args(n)])
            self._place(n, module)
            args = g.args(n)
            free = tuple(sorted({slot[a] for a in args if last_use.get(a) == n and a not in keep}))
            steps.append(Step(n, module, tuple(slot[a] for a in args), slot[n], free))
        return steps, [slot[n] for n in g.inputs], [slot[n] for n in g.outputs]

    def _place(self, name: str, module: nn.Module) -> None:
        *scopes, leaf = name.split(".")
        parent: nn.Module = self
        for seg in scopes:
            child = parent._modules.get(seg)
            if child is None:
                child = Container()
                parent.add_module(seg, child)
            parent = child
        if hasattr(module, "attach"):  # a bare parameter of its scope (layer_scale): key `<node>`
            module.attach(parent, leaf)
            return
        parent.add_module(leaf, module)

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self._input_slots):
            raise TypeError(f"{self.graph.name} takes {len(self._input_slots)} input(s), got {len(inputs)}")
        values: list[torch.Tensor | None] = [None] * self._slots
        for s, x in zip(self._input_slots, inputs):
            values[s] = x
        for step in self._steps:
            values[step.out] = step.module(*[values[a] for a in step.args])
            for s in step.free:
                values[s] = None
        outs = tuple(values[s] for s in self._output_slots)
        return outs[0] if len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return f"network={self.graph.name!r}, nodes={len(self.graph)}"


def to_torch(graph: Graph) -> ArchModule:
    """The reference `nn.Module` of a graph (float32, freshly initialized as PyTorch does)."""
    return ArchModule(graph)


def build_torch(path: str | Path, network: str | None = None, input_shape: tuple[int, int, int] | None = None,
                **params: Any) -> ArchModule:
    """Parse, elaborate and build in one call: `build_torch("examples/resnet50.arch", width=32)`."""
    from ..elaborate import load

    return to_torch(load(path, network, params, input_shape))


# ---- weights -------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What `load_weights` found: keys the model needs but the source lacks, keys the source has
    that the model does not, and keys whose shapes disagree (key, model shape, source shape)."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def text(self, limit: int = 8) -> str:
        lines = []
        for title, items in (("missing from the source", self.missing),
                             ("in the source but not in the model", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", … ({len(items) - limit} more)" if len(items) > limit else "")
                lines.append(f"{len(items)} key(s) {title}: {shown}")
        for key, mine, theirs in self.mismatched[:limit]:
            lines.append(f"shape mismatch at {key}: the model has {tuple(mine)}, the source {tuple(theirs)}")
        if len(self.mismatched) > limit:
            lines.append(f"… {len(self.mismatched) - limit} more shape mismatches")
        return "\n".join(lines)


def read_state_dict(source: Any) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a module, a `.pt`/`.pth` file or a `.safetensors` file."""
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, dict):
        return source
    path = Path(source)
    loc = SrcLoc(str(path), 0, 0)
    if not path.is_file():
        raise ArchError(f"no weights file {path}", loc)
    if path.suffix == ".safetensors":
        from ..codegen.emit import host_helpers

        try:
            return host_helpers().read_safetensors(str(path))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file is the user's to fix
            raise ArchError(f"cannot read weights from {path}: not a valid safetensors file ({exc})", loc) from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ArchError(f"cannot read weights from {path}: {exc}", loc,
                        hint="expected a state dict saved with torch.save(model.state_dict(), path)") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]  # a training checkpoint
    if not isinstance(data, dict):
        raise ArchError(f"{path} holds a {type(data).__name__}, not a state dict", loc)
    return data


def load_weights(model_or_graph: ArchModule | Graph, source: Any, strict: bool = True) -> ArchModule:
    """Load weights by name into the reference model (built first when given a graph).

    With `strict` (the default) any missing, unexpected or mis-shaped key is an `ArchError` that
    lists them; otherwise the matching keys are loaded and `model.load_report` says what was not.
    """
    model = to_torch(model_or_graph) if isinstance(model_or_graph, Graph) else model_or_graph
    theirs = read_state_dict(source)
    mine = model.state_dict()
    report = LoadReport()
    report.missing = [k for k in mine if k not in theirs]
    report.unexpected = [k for k in theirs if k not in mine]
    report.mismatched = [(k, tuple(mine[k].shape), tuple(theirs[k].shape)) for k in mine
                         if k in theirs and tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if strict and not report.ok:
        raise ArchError(f"the weights do not fit network `{model.graph.name}`:\n" + report.text(), NO_LOC,
                        hint=_naming_hint(report))
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in theirs.items() if k in mine and k not in bad}
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    object.__setattr__(model, "load_report", report)
    return model


def _naming_hint(report: LoadReport) -> str | None:
    if report.missing and report.unexpected:
        return ("the names differ: labels in the .arch file become state-dict keys "
                f"(e.g. the model wants `{report.missing[0]}`, the source has `{report.unexpected[0]}`)")
    if report.mismatched:
        return "the architecture differs (widths or kernel sizes): check the network parameters (--set)"
    return None
