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
