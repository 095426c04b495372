"""The graph's inputs."""

from __future__ import annotations

from .registry import OpSpec, Param, int_kind, register

register(OpSpec(
    name="input", doc="A network input of shape C×H×W (per sample).",
    params=(Param("c", int_kind(1)), Param("h", int_kind(1)), Param("w", int_kind(1))),
    shape=lambda a, ins: (a["c"], a["h"], a["w"]),
    arity=0,
    fusion="opaque",  # never strided: the NCHW -> NHWC copy is the caller's, the tensor the user may inspect
))
