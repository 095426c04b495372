"""archdsl: a language for convolutional network architectures, and a compiler for it.

    import archdsl
    g = archdsl.load("examples/resnet50.arch", params={"width": 32}, input_shape=(3, 64, 64))
    print(archdsl.analyze(g).params)

Pipeline (one subpackage per stage): frontend (text -> AST), elaborate (AST -> IR graph),
ir (the graph and its checks), ops (the op registry), analysis (shapes, costs, receptive field),
backends (the PyTorch reference model: `archdsl.to_torch(graph)`).
"""

from . import ops as _ops  # noqa: F401  (registers every op)
from .analysis import Summary, analyze
from .elaborate import Limits, elaborate, load, loads
from .errors import ArchError, SrcLoc
from .ir import Graph

__version__ = "0.1.0"

__all__ = ["ArchError", "Graph", "Limits", "SrcLoc", "Summary", "analyze", "build_torch", "compile", "elaborate",
           "load", "load_weights", "loads", "to_torch"]

_TORCH_API = {"to_torch", "build_torch", "load_weights"}


def __getattr__(name: str):
    """The torch backend's functions and `compile`, imported on first use (summary and check need
    neither torch nor triton)."""
    if name in _TORCH_API:
        from .backends import torch_backend

        return getattr(torch_backend, name)
    if name == "compile":
        from .runtime import compile

        return compile
    raise AttributeError(f"module 'archdsl' has no attribute {name!r}")
