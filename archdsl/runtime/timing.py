"""Timers: `timer(fn) -> Timing` runs a zero-argument function as often as it needs and returns
a typical time.  `CudaEventTimer` on a GPU, `WallTimer` elsewhere, `FakeTimer` in tests; the
autotuner and the benchmark both time through this interface."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

@dataclass(frozen=True)
class Timing:
    """Summary of repeated runs of one thing, in milliseconds; float() gives the median."""

    median_ms: float
    iters: int
    q10_ms: float
    q90_ms: float
    min_ms: float

    def __float__(self) -> float:
        return self.median_ms

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> "Timing":
        if not samples:
            raise ValueError("no samples")
        s = sorted(float(x) for x in samples)
        return cls(_quantile(s, 0.5), len(s), _quantile(s, 0.1), _quantile(s, 0.9), s[0])


def _quantile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default); q=0.5 is the median."""
    pos = (len(sorted_samples) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


class CudaEventTimer:
    """The median of >= `min_iters` runs, each timed by a pair of CUDA events.

    What ``triton.testing.do_bench`` does, with a guaranteed minimum count: one untimed call
    (compilation, allocation, cuDNN's algorithm search), an estimate from 5 runs, warm-up runs
    filling `warmup_ms`, then max(min_iters, min(max_iters, rep_ms / estimate)) timed runs.  With `flush_l2`, a 256 MiB buffer is zeroed before each timed run (outside
    its events), so no run finds its operands in the L2 cache left by the previous one.
    """

    name = "cuda-events"

    def __init__(self, min_iters: int = 100, warmup_ms: float = 25.0, rep_ms: float = 50.0, flush_l2: bool = True,
                 max_iters: int = 500):
        self.min_iters, self.warmup_ms, self.rep_ms = min_iters, warmup_ms, rep_ms
        self.flush_l2, self.max_iters = flush_l2, max_iters
        self._flush = None

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        import torch

        if self.flush_l2 and self._flush is None:
            self._flush = torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda")
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            fn()
        end.record()
        torch.cuda.synchronize()
        estimate = max(start.elapsed_time(end) / 5, 1e-4)
        for _ in range(max(1, int(self.warmup_ms / estimate))):
            fn()
        n = max(self.min_iters, min(self.max_iters, int(self.rep_ms / estimate)))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            if self._flush is not None:
                self._flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return Timing.from_samples([s.elapsed_time(e) for s, e in zip(starts, ends)])


class WallTimer:
    """Host wall clock per run (with `sync` after each): for the CPU, where events do not exist."""

    name = "wall-clock"

    def __init__(self, min_iters: int = 5, warmup: int = 1, sync: Callable[[], None] | None = None):
        self.min_iters, self.warmup, self.sync = min_iters, warmup, sync or (lambda: None)

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        for _ in range(self.warmup):
            fn()
        self.sync()
        samples = []
        for _ in range(self.min_iters):
            t0 = time.perf_counter()
            fn()
            self.sync()
            samples.append((time.perf_counter() - t0) * 1e3)
        return Timing.from_samples(samples)


class FakeTimer:
    """For tests: runs `fn` `runs` times (0: never) and returns `ms` -- a number, or a function of
    the call's index -- as if it had been measured `iters` times."""

    name = "fake"

    def __init__(self, ms: float | Callable[[int], float] = 1.0, runs: int = 1, iters: int = 100):
        self.ms, self.runs, self.iters = ms, runs, iters
        self.calls = 0

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        for _ in range(self.runs):
            fn()
        value = self.ms(self.calls) if callable(self.ms) else float(self.ms)
        self.calls += 1
        return Timing(value, self.iters, value, value, value)


def default_timer(min_iters: int = 100, warmup_ms: float = 25.0, flush_l2: bool = True):
    """CUDA events on a GPU; the wall clock (a few runs) elsewhere."""
    import torch

    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return CudaEventTimer(min_iters, warmup_ms, flush_l2=flush_l2)
    return WallTimer()
