"""archdsl's one cache directory: ``$ARCHDSL_CACHE``, else ``$XDG_CACHE_HOME/archdsl``, else
``~/.cache/archdsl``.  Under it: ``programs/`` (generated programs imported by a compiled model,
and the kernel templates the tuner and the performance model import: Triton reads kernels' source
from files) and ``tune.json`` (the autotuning cache)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


def cache_root() -> Path:
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "archdsl")
    return Path(root)


def programs_dir() -> Path:
    """Where generated programs are written to be imported (created on first use)."""
    path = cache_root() / "programs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def import_program(source: str) -> ModuleType:
    """Import generated source as a module (from a file: Triton reads its kernels' source)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"archdsl_program_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = programs_dir() / f"{name}.py"
    if not path.exists() or path.read_text(encoding="utf-8") != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tune_file() -> Path:
    return cache_root() / "tune.json"
