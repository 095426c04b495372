"""Test-wide setup: without a CUDA GPU, Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at
collection time.  Tests marked `gpu` are skipped without CUDA.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import their helpers (smaller, tv, ...)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tvm():
    """torchvision's models module (imported without its compiled ops: see tests/tv.py); a test
    that needs it fails, never skips, when torchvision cannot be imported."""
    from tv import TorchvisionUnavailable, import_torchvision_models

    try:
        return import_torchvision_models()
    except TorchvisionUnavailable as exc:
        reason = str(exc)
    pytest.fail(f"torchvision: {reason}", pytrace=False)


@pytest.fixture
def one_thread():
    """Small float64 forwards are a few hundred tiny ops: one thread runs them several times faster
    than two (and far faster than two on a busy machine, where OpenMP threads spin)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
