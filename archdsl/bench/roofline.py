"""The roofline: the least time a computation can take at the measured peak FLOP/s and
bandwidth, and the peaks themselves (measured in the same run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .progress import Progress

@dataclass(frozen=True)
class Floor:
    seconds: float  # max(compute, memory): no implementation runs (much) faster
    compute_s: float  # FLOPs / peak FLOP/s
    memory_s: float  # bytes / peak bandwidth
    bound: str  # "compute" or "memory": the larger term


def roofline_floor(flops: float, nbytes: float, peak_flops: float, peak_bandwidth: float) -> Floor:
    """The roofline floor: max(FLOPs / peak FLOP/s, bytes / peak bytes/s), and which term wins."""
    if peak_flops <= 0 or peak_bandwidth <= 0:
        raise ValueError("peaks must be positive")
    compute, memory = flops / peak_flops, nbytes / peak_bandwidth
    return Floor(max(compute, memory), compute, memory, "compute" if compute >= memory else "memory")


def percent_of_floor(measured_s: float, floor_s: float) -> float:
    """How close a measured time is to the floor: 100 at the floor, 50 at twice the floor."""
    if measured_s <= 0:
        raise ValueError("measured time must be positive")
    return 100.0 * floor_s / measured_s


@dataclass
class Peaks:
    """Ceilings measured in the run: a large square matmul per dtype, a large device copy."""

    matmul_flops: dict[str, float]  # dtype -> FLOP/s
    bandwidth: float  # bytes/s (bytes read + bytes written)
    how: dict = field(default_factory=dict)

    def flops(self, dtype: str) -> float | None:
        return self.matmul_flops.get(dtype)

    def to_json(self) -> dict:
        return {"matmul_tflops": {k: v / 1e12 for k, v in self.matmul_flops.items()},
                "bandwidth_gbs": self.bandwidth / 1e9, "how": self.how}

    @classmethod
    def from_json(cls, data: dict) -> "Peaks":
        return cls({k: v * 1e12 for k, v in data["matmul_tflops"].items()}, data["bandwidth_gbs"] * 1e9,
                   data.get("how", {}))


def matmul_flops(n: int) -> int:
    """FLOPs of an n x n by n x n matrix product: n^2 dot products of n multiply-adds."""
    return 2 * n ** 3


def copy_bytes(nbytes: int) -> int:
    """Bytes a copy of `nbytes` moves: each read once and written once."""
    return 2 * nbytes


def measure_peaks(timer, device: Any, dtypes: Sequence[str], matmul_n: int = 8192, copy_nbytes: int = 1 << 30,
                  progress: "Progress | None" = None) -> Peaks:
    """Peak FLOP/s per dtype (torch.matmul of random n x n matrices: cuBLAS) and bandwidth (a copy)."""
    import torch

    flops = {}
    g = torch.Generator(device="cpu").manual_seed(1234)
    for dtype in dtypes:
        dt = getattr(torch, dtype)
        a = torch.randn(matmul_n, matmul_n, generator=g).to(device=device, dtype=dt)
        b = torch.randn(matmul_n, matmul_n, generator=g).to(device=device, dtype=dt)
        out = torch.empty(matmul_n, matmul_n, device=device, dtype=dt)
        t = timer(lambda: torch.matmul(a, b, out=out))
        flops[dtype] = matmul_flops(matmul_n) / (float(t) * 1e-3)
        del a, b, out
        if progress:
            progress.step(f"peak matmul {dtype}")
    numel = copy_nbytes // 4
    src = torch.rand(numel, device=device)  # random, never zeros
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    bandwidth = copy_bytes(numel * 4) / (float(t) * 1e-3)
    del src, dst
    if progress:
        progress.step("peak bandwidth (copy)")
    how = {"matmul": f"torch.matmul, {matmul_n}x{matmul_n} @ {matmul_n}x{matmul_n}, random normal",
           "copy": f"Tensor.copy_ of {numel * 4} bytes (float32, random); counted read + write"}
    return Peaks(flops, bandwidth, how)
