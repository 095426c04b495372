"""A pytest plugin for the GPU test tier's first pass: record every Triton specialization the
tests launch, compile and launch none (so the tests fail: expected), and write the records to
$ARCHDSL_RECORD_KERNELS at the end.  check.py's pytest_gpu stage then compiles them in parallel
and runs `pytest -m gpu` for real, on a warm cache.

    ARCHDSL_RECORD_KERNELS=kernels.json python -m pytest -m gpu -p benchmarks.gpu.record_kernels tests
"""

from __future__ import annotations

import os

from .warm import _hook_recording_into, save_records

_found: dict = {}


def pytest_configure(config):
    from triton import knobs

    knobs.runtime.jit_cache_hook = _hook_recording_into(_found)


def _save() -> None:
    path = os.environ.get("ARCHDSL_RECORD_KERNELS")
    if path:
        save_records(list(_found.values()), path)


def pytest_runtest_logfinish(nodeid, location):
    _save()  # after every test: a pass cut by a time-out keeps what it recorded


def pytest_unconfigure(config):
    from triton import knobs

    knobs.runtime.jit_cache_hook = None
    _save()
