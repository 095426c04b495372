"""archdsl: a language for convolutional network architectures, and a compiler for it.

    import archdsl
    g = archdsl.load("examples/resnet50.arch", params={"width": 32}, input_shape=(3, 64, 64))
    print(archdsl.analyze(g).params)

Pipeline (one subpackage per stage): frontend (text -> AST), elaborate (AST -> IR graph),
ir (the graph and its checks), ops (the op registry), analysis (shapes, costs, receptive field),
backends (the PyTorch reference model: `archdsl.to_torch(graph)`).
"""

from pathlib import Path

from . import ops as _ops  # noqa: F401  (registers every op)
from .analysis import Summary, analyze, collapse
from .elaborate import Limits, elaborate, load, loads
from .errors import ArchError, SrcLoc
from .importer import from_torch  # PyTorch module -> .arch source (torch imported when called)
from .ir import Graph

from .version import __version__  # noqa: F401  (one definition: archdsl/version.py)

__all__ = ["ArchError", "Graph", "Limits", "SrcLoc", "Summary", "analyze", "build_torch", "compile", "elaborate",
           "load", "load_weights", "loads", "summary", "to_torch"]


def summary(path_or_graph: str | Path | Graph, *, network: str | None = None, params: dict | None = None,
            input_shape: tuple[int, int, int] | None = None, depth: int = 0, batch: int | None = None) -> Summary:
    """What `archdsl summary` prints, for a `.arch` file (a path: never source text; for text
    use `summary(loads(text))`) or an elaborated `Graph`.

        >>> s = archdsl.summary("examples/resnet50.arch", depth=1, batch=32)
        >>> print(s)                       # the CLI's table, totals and memory
        >>> s.rows()[1]["params"], s.trainable_params, s.total_bytes()

    `depth` merges blocks nested deeper than N names into one row; `batch` scales the
    activation and input memory by the batch size.
    """
    if isinstance(path_or_graph, Graph):
        if network is not None or params or input_shape is not None:
            raise TypeError("summary(graph): network, params and input_shape apply to a path only")
        graph = path_or_graph
    elif isinstance(path_or_graph, (str, Path)):
        graph = load(path_or_graph, network, params, input_shape)
    else:
        raise TypeError(f"summary() takes a path or a Graph, got {type(path_or_graph).__name__}")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    result = analyze(graph, batch=batch)
    return collapse(result, graph, depth) if depth else result

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
