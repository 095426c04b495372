"""What a benchmark run measures (batches, dtypes, which providers) and how strictly its outputs
are checked against the float64 reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..dtypes import ALIASES as DTYPE_ALIASES

DEFAULT_BATCHES = (1, 32, 256)
DEFAULT_DTYPES = ("bfloat16", "float16")

# Error checks (relative Frobenius error against the float64 reference).  A provider passes when
# its error is finite and at most max(FLOOR[dtype], RATIO x the baseline's error at the same
# precision and batch); the baseline itself (eager PyTorch / F.conv2d) passes when under
# CEILING[dtype] (that catches overflow, NaN, a broken library, not a small difference).
ERROR_FLOOR = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 1.6e-2}
ERROR_RATIO = 4.0
ERROR_CEILING = {"float32": 1e-2, "float16": 2e-2, "bfloat16": 1e-1}


def parse_batches(text: str) -> tuple[int, ...]:
    """ "1,32,256" -> (1, 32, 256); ValueError with a readable message otherwise."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"batch sizes must be positive integers, got {part!r} in {text!r}")
        out.append(int(part))
    if not out:
        raise ValueError("no batch sizes given")
    return tuple(dict.fromkeys(out))


def parse_dtypes(text: str) -> tuple[str, ...]:
    """ "bf16,fp16" -> ("bfloat16", "float16")."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if part.lower() not in DTYPE_ALIASES:
            raise ValueError(f"unknown dtype {part!r}; choose from bfloat16 (bf16), float16 (fp16), float32 (fp32)")
        out.append(DTYPE_ALIASES[part.lower()])
    if not out:
        raise ValueError("no dtypes given")
    return tuple(dict.fromkeys(out))


def parse_names(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if part not in known:
            raise ValueError(f"unknown {what} {part!r}; choose from {', '.join(known)}")
        out.append(part)
    if not out:
        raise ValueError(f"no {what}s given")
    return tuple(dict.fromkeys(out))


@dataclass
class BenchConfig:
    batches: tuple[int, ...] = DEFAULT_BATCHES
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    layers: bool = True  # the per-layer part
    e2e: bool = True  # the end-to-end part
    layer_providers: tuple[str, ...] = ()  # () = all of LAYER_PROVIDERS
    e2e_providers: tuple[str, ...] = ()  # () = all of E2E_PROVIDERS
    iters: int = 100  # at least this many timed runs per measurement
    warmup_ms: float = 25.0
    flush_l2: bool = True  # clear the L2 cache before each timed run (as triton.testing.do_bench does)
    tune: bool = False  # autotune each conv (archdsl_tuned rows), through the on-disk cache
    seed: int = 0
    weights: str | None = None  # a weights file; default: PyTorch's init, BN statistics calibrated
    peak_matmul_n: int = 8192  # the square matmul that measures peak FLOP/s
    peak_copy_bytes: int = 1 << 30  # the device-to-device copy that measures bandwidth

    def __post_init__(self):
        from .providers import E2E_PROVIDERS, LAYER_PROVIDERS

        self.layer_providers = self.layer_providers or tuple(p.name for p in LAYER_PROVIDERS
                                                             if p.name != "archdsl_tuned" or self.tune)
        self.e2e_providers = self.e2e_providers or tuple(p.name for p in E2E_PROVIDERS)
        if self.tune and "archdsl_tuned" not in self.layer_providers:
            self.layer_providers = (*self.layer_providers, "archdsl_tuned")
        if self.iters < 1:
            raise ValueError("iters must be positive")
