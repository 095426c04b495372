"""The conv2d launches of a launch schedule as the tuner and the performance model see them: one
`ConvLaunch` (NHWC shapes at a batch size, geometry, epilogue, the kernel's path) per conv2d
launch, and its signature, the shape part of a tuning key.  Shared by `tune.py` and
`perfmodel.py`, so neither imports the other for it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Sequence

from ..ops.registry import act_codes
from .cache import import_program


@functools.cache
def template_module(*names: str) -> ModuleType:
    """host.py, common.py and the templates `names` as one imported program (``template_source``):
    kernels/ as a generated program holds them, for the tuner and the performance model."""
    from ..codegen.emit import template_source

    return import_program(template_source(*names))


def kernel_module(name: str = "conv2d") -> ModuleType:
    """kernels/<name>.py with what it needs (``template_module``)."""
    return template_module(f"{name}.py")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(e) for e in v)


def _pads(pad) -> tuple[int, int, int, int]:
    if isinstance(pad, int):
        return (pad,) * 4
    pad = tuple(int(e) for e in pad)
    return (pad[0], pad[0], pad[1], pad[1]) if len(pad) == 2 else pad


def conv_signature(x_shape: Sequence[int], out_shape: Sequence[int], *, kernel, stride=1, pad=0, dilation=1,
                   groups: int = 1, residual: bool = False, act: int = 0, path: str = "", gate: bool = False,
                   ln: bool = False) -> str:
    """The shape signature of one conv2d launch (NHWC shapes, batch included: it sets the grid).

    >>> conv_signature((32, 56, 56, 64), (32, 56, 56, 256), kernel=1, path="gemm")
    'n32 h56 w56 c64 -> p56 q56 k256 | r1x1 s1x1 pad0,0,0,0 d1x1 g1 | res0 act0 | gemm'

    gate: the conv scales its input by a squeeze-and-excitation gate (another kernel
    specialization: " gate1" after act; signatures without one are unchanged).  ln: it applies a
    layer norm of its input over the channels (conv2d's in_ln: " ln1" after act, likewise).
    """
    n, h, w, c = (int(e) for e in x_shape)
    _, p, q, k = (int(e) for e in out_shape)
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    pads = ",".join(str(e) for e in _pads(pad))
    return (f"n{n} h{h} w{w} c{c} -> p{p} q{q} k{k} | r{kh}x{kw} s{sh}x{sw} pad{pads} d{dh}x{dw} g{groups} | "
            f"res{int(bool(residual))} act{int(act)}{' gate1' if gate else ''}{' ln1' if ln else ''} | {path}")


@dataclass(frozen=True)
class ConvLaunch:
    """One conv2d launch of a generated program, at one batch size (NHWC shapes)."""

    node: str
    x_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    residual: bool
    act: int
    path: str
    gate: bool = False  # scales its input by a squeeze-and-excitation gate while loading it
    ln: bool = False  # layer-normalizes its input over the channels (conv2d's in_ln; never split)

    def geometry(self) -> dict:
        return dict(kernel=self.kernel, stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)

    def signature(self) -> str:
        return conv_signature(self.x_shape, self.out_shape, residual=self.residual, act=self.act, path=self.path,
                              gate=self.gate, ln=self.ln, **self.geometry())


def conv_launches(schedule, batch: int) -> list[ConvLaunch]:
    """The `conv2d` launches of a launch schedule (`archdsl.codegen.schedule`; an optimized graph
    is scheduled first), in execution order, at `batch`.  The path is `conv_path` on shape-only
    (meta) tensors: the generated program gives every conv whole, contiguous NHWC buffers.  A
    sibling group's launch is as wide as the group; chain kernels (`conv2d_chain`) are not
    conv2d launches and keep their default blocks."""
    import torch

    from ..codegen.schedule import Schedule, make_schedule

    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    graph = schedule.graph
    conv_path = kernel_module("conv2d").conv_path
    out = []
    for launch in schedule.gemm_launches("conv2d"):
        cin, h, w = graph.shape(launch.inputs[0])
        _, p, q = graph.shape(launch.node)
        cout = sum(graph.shape(m)[0] for m in launch.outputs)
        x_shape, out_shape = (batch, h, w, cin), (batch, p, q, cout)
        geometry = launch.geom()
        meta = [torch.empty(s, device="meta") for s in (x_shape, out_shape)]
        residual = launch.epilogue.residual
        path = conv_path(*meta, residual=meta[1] if residual else None, **geometry)
        out.append(ConvLaunch(launch.node, x_shape, out_shape, **geometry, residual=residual,
                              act=act_codes()[launch.epilogue.act], path=path, gate=launch.gate is not None,
                              ln=launch.ln))
    return out
