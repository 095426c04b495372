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


class _Labelled(nn.Module):
    """A module whose children are named by the user's labels, any of which may also be the
    name of a Module attribute (`training`, `forward`, `to`...): see `_add_child`."""

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module refuses to assign a non-module to a name held by a child (`self.training = False`
        # under a label `training`); such an attribute is the instance's own, so set it directly.
        if not isinstance(value, nn.Module) and name in self.__dict__.get("_modules", {}):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class Container(_Labelled):
    """A scope of the name hierarchy (a block instance or a labelled sequence): holds children,
    reachable by name or position like nn.Sequential's (`model.layer1[0].conv1`)."""

    def __getitem__(self, key: int | str) -> nn.Module:
        return self._modules[str(key)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _add_child(parent: nn.Module, name: str, child: nn.Module) -> None:
    """Register `child` under any label the language allows, `forward`, `to`, `training` or
    `_modules` included. `add_module` refuses names that are already attributes; the child goes
    straight into `_modules`, which is all that state_dict, load_state_dict, named_modules and
    `.to()` walk. Such a child is reached as `model["forward"]` (the attribute stays the method)."""
    if hasattr(parent, name) and name not in parent._modules:
        parent._modules[name] = child
    else:
        parent.add_module(name, child)


@dataclass(frozen=True)
class Step:
    node: str
    module: nn.Module
    args: tuple[int, ...]  # slots of the input tensors, in port order
    out: int  # slot of the result
    free: tuple[int, ...]  # slots whose last use is this step


class ArchModule(_Labelled):
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
                _add_child(parent, seg, child)
            parent = child
        if hasattr(module, "attach"):  # a bare parameter of its scope (layer_scale): key `<node>`
            module.attach(parent, leaf)
            return
        _add_child(parent, leaf, module)

    def __getitem__(self, key: str) -> nn.Module:
        """`model["forward"]`: a child whose label is also a Module attribute (see `_add_child`)."""
        return self._modules[str(key)]

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


def to_torch(graph: Graph, seed: int | None = None) -> ArchModule:
    """The reference `nn.Module` of a graph (float32, freshly initialized as PyTorch does).

    With `seed`, the initialization is drawn from that seed without touching the caller's
    random state (`archdsl compile` uses 0, so the same file gives the same weights file).
    A network whose weights cannot fit in memory is an `ArchError` naming the largest layer,
    raised before anything is allocated."""
    from ..analysis import check_weight_memory

    check_weight_memory(graph)
    if seed is None:
        return ArchModule(graph)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
    warnings: list[str] = field(default_factory=list)  # values converted on the way in (float64 -> float32)

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
        raise ArchError(f"{path} holds a {type(data).__name__}, not a state dict", loc,
                        hint="expected a state dict saved with torch.save(model.state_dict(), path)")
    not_tensors = [(k, type(v).__name__) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(f"`{k}` ({t})" for k, t in not_tensors[:5])
        raise ArchError(f"{path} holds {len(not_tensors)} entr{'y' if len(not_tensors) == 1 else 'ies'} that "
                        f"are not tensors: {shown}", loc,
                        hint="a state dict maps names to tensors; save one with torch.save(model.state_dict(), path)")
    return data


def load_weights(model_or_graph: ArchModule | Graph, source: Any, strict: bool = True) -> ArchModule:
    """Load weights by name into the reference model (built first when given a graph).

    With `strict` (the default) any missing, unexpected or mis-shaped key is an `ArchError` that
    lists them; otherwise the matching keys are loaded and `model.load_report` says what was not.
    """
    model = to_torch(model_or_graph) if isinstance(model_or_graph, Graph) else model_or_graph
    theirs = read_state_dict(source)
    mine = model.state_dict()
    warnings = check_values(theirs, mine)
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
    report.warnings = warnings
    object.__setattr__(model, "load_report", report)
    return model


def check_values(theirs: dict[str, torch.Tensor], mine: dict[str, torch.Tensor]) -> list[str]:
    """Refuse weights no network could mean; return warnings for the ones converted on the way in.

    Errors: a NaN or infinity (every output would be NaN: a diverged or corrupt checkpoint);
    a negative BN `running_var` (the variance is a mean of squares, and sqrt(var + eps) would be
    NaN); integers where the model holds floating point (a quantized or mislabelled file: copying
    them in would silently turn codes into weights). Warning: float64 (or float16) values for a
    float32 model are legitimate weights, rounded to the model's precision, so they load.
    """
    problems, warnings = [], []
    for key, value in theirs.items():
        want = mine.get(key)
        if want is None or not isinstance(value, torch.Tensor):
            continue
        if want.is_floating_point() and not value.is_floating_point():
            problems.append(f"`{key}` holds {str(value.dtype).removeprefix('torch.')} values where the model has "
                            f"{str(want.dtype).removeprefix('torch.')} (quantized or mislabelled weights?)")
            continue
        if not value.is_floating_point():
            continue
        bad = (~torch.isfinite(value)).sum().item()
        if bad:
            problems.append(f"`{key}` holds {bad:,} NaN or infinite value(s) of {value.numel():,}")
        elif key.endswith("running_var") and (value < 0).any():
            problems.append(f"`{key}` holds {(value < 0).sum().item():,} negative variance(s) "
                            f"(smallest {value.min().item():.3g}); a variance is never negative")
        elif value.dtype != want.dtype:
            warnings.append(f"`{key}` is {str(value.dtype).removeprefix('torch.')}; converted to the model's "
                            f"{str(want.dtype).removeprefix('torch.')}")
    if problems:
        shown = problems[:8] + ([f"… and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise ArchError("the weights hold values no network can use:\n" + "\n".join(shown), NO_LOC,
                        hint="check the checkpoint: it may come from a run that diverged, or be another format")
    if len(warnings) > 3:
        warnings = [f"{len(warnings)} tensors are not float32 (e.g. {warnings[0]}); converted to float32"]
    return warnings


def _naming_hint(report: LoadReport) -> str | None:
    if report.missing and report.unexpected:
        return ("the names differ: labels in the .arch file become state-dict keys "
                f"(e.g. the model wants `{report.missing[0]}`, the source has `{report.unexpected[0]}`)")
    if report.mismatched:
        return "the architecture differs (widths or kernel sizes): check the network parameters (--set)"
    return None
