"""ONNX export of the reference model: `archdsl export FILE --onnx out.onnx`.

The model is exported with PyTorch's `torch.export`-based ONNX exporter (opset 18 by default,
at least 17), with a dynamic batch dimension, every weight inside the one `.onnx` file, and
inputs and outputs named as the `.arch` file names them.  The file is written next to its
destination and renamed into place only once it has been checked, so a failure never leaves
a partial file behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .errors import NO_LOC, ArchError, SrcLoc

MIN_OPSET = 17


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise ArchError(f"ONNX export needs the `{package}` package", NO_LOC,
                        hint="pip install 'archdsl[onnx]' (onnx, onnxscript; onnxruntime to check the result)") from None


def export_onnx(model: Any, path: str | Path, opset: int = 18, batch: int = 2) -> Path:
    """Export an `ArchModule` (see `archdsl.to_torch`) to `path`; return the path written."""
    torch = _require("torch", "torch")
    onnx = _require("onnx", "onnx")
    _require("onnxscript", "onnxscript")
    if opset < MIN_OPSET:
        raise ArchError(f"opset {opset} is too old; archdsl exports opset {MIN_OPSET} or newer", NO_LOC)
    graph = model.graph
    model = _exportable(model)
    path = Path(path)
    if not path.parent.is_dir():
        raise ArchError(f"cannot write {path}: no directory {path.parent}", SrcLoc(str(path), 0, 0))
    examples = tuple(torch.randn(batch, *graph.shape(n)) for n in graph.inputs)
    dim = torch.export.Dim("batch", min=1, max=65536)
    input_names = [str(n) for n in graph.inputs]
    output_names = _unique([str(n) for n in graph.graph.get("output_names", graph.outputs)])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    was_training = model.training
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._export"):
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), examples, tmp, opset_version=opset, dynamo=True, external_data=False,
                              input_names=input_names, output_names=output_names, verbose=False,
                              dynamic_shapes=(tuple({0: dim} for _ in examples),))
        onnx.checker.check_model(tmp, full_check=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        for leftover in (tmp, tmp + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return path


def _exportable(model: Any) -> Any:
    """`model`, or the same computation under child names torch.export can walk.

    torch.export reaches each weight by attribute (`model.forward.weight`), so a label that is
    also a Module attribute (`forward`, `to`, `training`) breaks it. Then the leaf modules (the
    very same objects, no copy) are put in a fresh tree where each such name gets a `_` suffix,
    and the original model runs the forward pass.
    """
    from torch import nn

    names = [name for name, _ in model.named_modules() if name]
    if all(_plain_name(model, name) for name in names):
        return model

    class Renamed(nn.Module):
        def forward(self, *xs):
            return model(*xs)

    root = Renamed()
    object.__setattr__(root, "graph", model.graph)  # first, so that a label `graph` is renamed too
    for name, module in model.named_modules():
        if not name or next(module.children(), None) is not None:
            continue  # only the leaves: the containers are rebuilt
        parent = root
        *scopes, leaf = name.split(".")
        for seg in scopes:
            seg = _free_name(parent, seg)
            if seg not in parent._modules:
                parent.add_module(seg, nn.Module())
            parent = parent._modules[seg]
        parent.add_module(_free_name(parent, leaf), module)
    return root


def _plain_name(model: Any, dotted: str) -> bool:
    """Whether attribute access along `dotted` reaches the child module of that name."""
    from torch import nn

    obj = model
    for seg in dotted.split("."):
        obj = getattr(obj, seg, None)
        if not isinstance(obj, nn.Module):
            return False
    return True


def _free_name(parent: Any, seg: str) -> str:
    while seg not in parent._modules and hasattr(parent, seg):
        seg += "_"
    return seg


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Silence the exporter's progress chatter; errors still raise."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return out
