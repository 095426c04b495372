"""archdsl's one cache directory: ``$ARCHDSL_CACHE``, else ``$XDG_CACHE_HOME/archdsl``, else
``~/.cache/archdsl``.  Under it: ``programs/`` (generated programs imported by a compiled model:
Triton reads kernels' source from files) and ``tune.json`` (the autotuning cache)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "archdsl")
    return Path(root)


def programs_dir() -> Path:
    """Where generated programs are written to be imported (created on first use)."""
    path = cache_root() / "programs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tune_file() -> Path:
    return cache_root() / "tune.json"
