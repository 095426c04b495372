"""Running generated programs: the compiled model, CUDA graphs, autotuning, timing, one cache.

    model.py      `archdsl.compile` and `CompiledModel` (a torch.nn.Module running the kernels)
    cudagraph.py  replaying a forward as a CUDA graph, per input shape
    tune.py       autotuning the conv2d launches of a launch schedule, cached on disk
    timing.py     timers (CUDA events, wall clock, a fake for tests): the tuner's and the bench's
    cache.py      the one cache directory (generated programs and their import, the tuning cache)

The compiled model's names are importable from here; they are loaded on first use, so that
importing `archdsl.runtime.tune` or `.cache` does not import torch.
"""

from __future__ import annotations

import importlib

_FROM_MODEL = ("Compiled", "CompiledModel", "build", "cached_tuning", "compile")
_FROM_CACHE = ("import_program",)


def __getattr__(name: str):
    if name in _FROM_MODEL:
        return getattr(importlib.import_module(".model", __name__), name)
    if name in _FROM_CACHE:
        return getattr(importlib.import_module(".cache", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_FROM_MODEL + _FROM_CACHE)
