"""The benchmark harness behind `archdsl bench` (protocol: docs and shared DESIGN.md, "Benchmark protocol").

One process, one run, the same weights (batch norm folded for every provider) and the same
inputs.  Two parts, each for every batch size and dtype asked for:

* **per layer** -- every distinct convolution of the network (distinct geometry: channels,
  kernel, stride, padding, dilation, groups, input size), timed alone: `F.conv2d` channels-last
  (cuDNN with ``cudnn.benchmark``) against archdsl's ``conv2d`` doing the same work (conv +
  bias), and against ``conv2d`` with the layer's fused epilogue (residual, activation).  Each
  row: µs, TFLOP/s, GB/s and the % of the roofline floor (`roofline_floor`), with the peaks
  measured in the same run (`measure_peaks`).
* **end to end** -- the table `E2E_PROVIDERS`: eager NCHW, eager channels-last with
  ``cudnn.benchmark``, that in a CUDA graph, ``torch.compile(mode="max-autotune")``, archdsl with
  plain launches, archdsl in a CUDA graph.

Every provider's output is checked against a float64 reference computed in the same run
(`rel_error`, `apply_checks`).  Times are the median of >= 100 runs after warm-up
(`CudaEventTimer`).

The structure keeps the logic testable without a GPU: providers are tables of (name, build
function); timing goes through a timer interface (`CudaEventTimer` on a GPU, `WallTimer` and
`FakeTimer` elsewhere); the roofline arithmetic, the distinct-conv extraction, result
aggregation and the checks are pure functions; rendering lives in `report`.  `run_bench` runs
on the CPU too (Triton's interpreter; providers that need CUDA are recorded as skipped) -- for
tests only: its numbers are not a benchmark.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from ..ops.registry import act_codes, family

# ---- configuration ----------------------------------------------------------------------------------

DEFAULT_BATCHES = (1, 32, 256)
DEFAULT_DTYPES = ("bfloat16", "float16")
DTYPE_ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                 "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

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
        self.layer_providers = self.layer_providers or tuple(p.name for p in LAYER_PROVIDERS
                                                             if p.name != "archdsl_tuned" or self.tune)
        self.e2e_providers = self.e2e_providers or tuple(p.name for p in E2E_PROVIDERS)
        if self.tune and "archdsl_tuned" not in self.layer_providers:
            self.layer_providers = (*self.layer_providers, "archdsl_tuned")
        if self.iters < 1:
            raise ValueError("iters must be positive")


# ---- environment ------------------------------------------------------------------------------------


def cuda_status() -> tuple[bool, str]:
    """(True, GPU name) when the benchmark can run, else (False, why not, in a sentence)."""
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed"
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return False, f"this PyTorch ({torch.__version__}) is built without CUDA, so no GPU can be used"
    if not torch.cuda.is_available():
        return False, (f"no CUDA GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda}: "
                       "torch.cuda.is_available() is False)")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False, "TRITON_INTERPRET is set: Triton would run its CPU interpreter instead of the GPU; unset it"
    return True, torch.cuda.get_device_name()


def _nvidia_smi(fields_: str) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={fields_}", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    return [v.strip() for v in line.split(",")] if line else None


def environment(device: Any = "cuda") -> dict:
    """The versions and the device, recorded with every run."""
    import torch

    from .. import __version__

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover
        triton_version = None
    env = {
        "archdsl": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update({
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2 ** 30, 1),
        })
        smi = _nvidia_smi("driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,"
                          "persistence_mode,compute_mode")
        keys = ("driver", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "power_limit_w", "temperature_c",
                "persistence_mode", "compute_mode")
        env.update(dict(zip(keys, smi)) if smi else {"driver": None})
    else:
        env.update({"gpu": None, "note": "CPU / Triton interpreter: these numbers are not a benchmark"})
    return env


# ---- timing -----------------------------------------------------------------------------------------


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


# ---- the roofline -----------------------------------------------------------------------------------


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


# ---- the distinct convolutions of a network ---------------------------------------------------------


@dataclass(frozen=True)
class ConvShape:
    """The geometry of one convolution (per sample); what makes two convs the same benchmark."""

    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    groups: int
    h: int
    w: int
    p: int  # output height
    q: int  # output width

    @property
    def macs_per_sample(self) -> int:
        kh, kw = self.kernel
        return kh * kw * (self.cin // self.groups) * self.cout * self.p * self.q

    def flops(self, batch: int) -> int:
        return 2 * self.macs_per_sample * batch

    def weight_elems(self) -> int:
        kh, kw = self.kernel
        return kh * kw * (self.cin // self.groups) * self.cout

    def bytes(self, batch: int, elem: int, *, bias: bool = False, residual: bool = False,
              bias_elem: int = 4) -> int:
        """The fewest bytes the conv must move: input, weight, output (and bias, residual) once each."""
        x = batch * self.cin * self.h * self.w
        out = batch * self.cout * self.p * self.q
        total = (x + self.weight_elems() + out + (out if residual else 0)) * elem
        return total + (self.cout * bias_elem if bias else 0)

    def label(self) -> str:
        kh, kw = self.kernel
        sh, sw = self.stride
        text = f"{self.cin}→{self.cout} {kh}×{kw}"
        text += f"/{sh}" if sh == sw and sh > 1 else (f"/{sh}×{sw}" if (sh, sw) != (1, 1) else "")
        if self.groups > 1:
            text += f" g{self.groups}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}"
        return f"{text} @{self.h}×{self.w}"

    def padding_arg(self) -> tuple[int, int] | None:
        """(ph, pw) for F.conv2d, or None when the padding is asymmetric (needs F.pad)."""
        t, b, l, r = self.pad
        return (t, l) if t == b and l == r else None


@dataclass
class ConvLayer:
    """One distinct convolution and the nodes of the network that have its geometry."""

    id: str
    shape: ConvShape
    nodes: list[str]
    bias: bool  # after BN folding (first occurrence)
    act: str  # the first occurrence's fused activation
    residual: bool  # the first occurrence fuses a residual add
    epilogues: list[str] = field(default_factory=list)  # every variant seen, e.g. "bias+relu"

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def fused(self) -> bool:
        """Whether the fused variant differs from conv + bias."""
        return self.act != "none" or self.residual

    def to_json(self, batch: int | None = None) -> dict:
        s = self.shape
        out = {"id": self.id, "label": s.label(), "count": self.count, "nodes": self.nodes,
               "cin": s.cin, "cout": s.cout, "kernel": list(s.kernel), "stride": list(s.stride),
               "pad": list(s.pad), "dilation": list(s.dilation), "groups": s.groups, "in_hw": [s.h, s.w],
               "out_hw": [s.p, s.q], "bias": self.bias, "act": self.act, "residual": self.residual,
               "epilogues": self.epilogues, "flops_per_sample": s.flops(1)}
        return out


def epilogue_text(bias: bool, act: str, residual: bool) -> str:
    parts = (["bias"] if bias else []) + (["residual"] if residual else []) + ([act] if act != "none" else [])
    return "+".join(parts) or "none"


def distinct_convs(graph) -> list[ConvLayer]:
    """Every distinct convolution geometry of `graph` (elaborated or optimized; or a launch
    schedule), in the order its launch schedule first computes one; ids c01, c02, ...  The epilogue timed for a geometry (bias, act, residual)
    is its most common one among the nodes that share it (ties: the first seen); `epilogues`
    lists every variant."""
    from ..codegen.schedule import Schedule, make_schedule

    schedule = graph if isinstance(graph, Schedule) else make_schedule(graph)
    graph = schedule.graph
    found: dict[ConvShape, ConvLayer] = {}
    variants: dict[ConvShape, dict[tuple, int]] = {}
    for n in schedule.order:
        if graph.op(n) not in family("conv"):
            continue
        a = graph.nodes[n]["attrs"]
        args = graph.args(n)
        cin, h, w = graph.shape(args[0])
        cout, p, q = graph.shape(n)
        shape = ConvShape(cin, cout, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), tuple(a["dilation"]),
                          a["groups"], h, w, p, q)
        variant = (bool(a["bias"]) or a.get("bn_eps") is not None, a.get("act", "none"), len(args) == 2)
        layer = found.get(shape)
        if layer is None:
            layer = found[shape] = ConvLayer(f"c{len(found) + 1:02d}", shape, [], *variant)
            variants[shape] = {}
        layer.nodes.append(n)
        seen = variants[shape]
        seen[variant] = seen.get(variant, 0) + 1
        text = epilogue_text(*variant)
        if text not in layer.epilogues:
            layer.epilogues.append(text)
    for shape, layer in found.items():
        seen = variants[shape]
        best = max(seen, key=lambda v: seen[v])  # max keeps the first of equals: dicts keep insertion order
        layer.bias, layer.act, layer.residual = best
    return list(found.values())


# ---- error checks -----------------------------------------------------------------------------------


def rel_error(out, ref) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (inf when out has a NaN or an inf, or the shapes differ)."""
    import torch

    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    o = out.detach().to(dtype=torch.float64)
    r = ref.detach().to(device=o.device, dtype=torch.float64)
    if not bool(torch.isfinite(o).all()):
        return math.inf
    denom = float(r.norm())
    return float((o - r).norm()) / (denom if denom > 0 else 1e-300)


def outputs_error(outs, refs) -> float:
    """The worst `rel_error` over a network's outputs (a tensor or a tuple of them)."""
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    refs = refs if isinstance(refs, (tuple, list)) else (refs,)
    if len(outs) != len(refs):
        return math.inf
    return max(rel_error(o, r) for o, r in zip(outs, refs))


def tolerance(dtype: str, baseline_error: float | None) -> float:
    """The most error a provider may have: max(floor, ratio x the baseline's error)."""
    floor = ERROR_FLOOR[dtype]
    if baseline_error is None or not math.isfinite(baseline_error):
        return floor
    return max(floor, ERROR_RATIO * baseline_error)


# ---- results ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measurement: a provider at a dtype and batch (and, per layer, one conv)."""

    kind: str  # "layer" or "e2e"
    provider: str
    dtype: str
    batch: int
    status: str = "ok"  # ok | wrong (failed its error check) | failed (raised) | skipped (unavailable)
    conv: str | None = None  # layer rows: the ConvLayer id
    ms: float | None = None  # median
    iters: int | None = None
    q10_ms: float | None = None
    q90_ms: float | None = None
    error: float | None = None  # relative error against the float64 reference
    tolerance: float | None = None
    flops: int | None = None
    bytes: int | None = None
    tflops: float | None = None
    gbs: float | None = None
    floor_ms: float | None = None
    pct_floor: float | None = None
    bound: str | None = None
    images_per_s: float | None = None
    config: dict | None = None  # the kernel configuration used (tuned rows)
    note: str = ""

    @property
    def us(self) -> float | None:
        return None if self.ms is None else self.ms * 1e3

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "Row":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def derive(row: Row, peaks: Peaks | None) -> Row:
    """Fill the derived columns of a timed row (TFLOP/s, GB/s, images/s, roofline) in place."""
    if row.ms is None or row.ms <= 0:
        return row
    seconds = row.ms * 1e-3
    if row.flops is not None:
        row.tflops = row.flops / seconds / 1e12
    if row.bytes is not None:
        row.gbs = row.bytes / seconds / 1e9
    if row.kind == "e2e":
        row.images_per_s = row.batch / seconds
    peak = peaks.flops(row.dtype) if peaks else None
    if peak and peaks.bandwidth and row.flops is not None and row.bytes is not None:
        floor = roofline_floor(row.flops, row.bytes, peak, peaks.bandwidth)
        row.floor_ms = floor.seconds * 1e3
        row.pct_floor = percent_of_floor(seconds, floor.seconds)
        row.bound = floor.bound
    return row


def apply_checks(rows: list[Row], baseline: str) -> None:
    """Give each timed row its tolerance and verdict, group by group (kind, dtype, batch, conv):
    the `baseline` provider's error sets the others' tolerance (`tolerance`); the baseline is
    held to ERROR_CEILING.  A row with no error measured, or a failed/skipped row, is left as is."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.dtype, r.batch, r.conv), []).append(r)
    for group in groups.values():
        base = next((r for r in group if r.provider == baseline and r.error is not None and r.status != "failed"), None)
        base_err = base.error if base is not None else None
        for r in group:
            if r.error is None or r.status in ("failed", "skipped"):
                continue
            r.tolerance = ERROR_CEILING[r.dtype] if r.provider == baseline else tolerance(r.dtype, base_err)
            passed = math.isfinite(r.error) and r.error <= r.tolerance
            r.status = "ok" if passed else "wrong"


@dataclass
class BenchRun:
    """Everything one run measured; `report` renders it."""

    network: str
    source: str
    params: dict
    input_shape: list
    env: dict
    protocol: dict
    peaks: Peaks | None
    convs: list[ConvLayer]
    rows: list[Row] = field(default_factory=list)
    macs_per_sample: int = 0
    seconds: float = 0.0

    def layer_rows(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "layer"]

    def e2e_rows(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "e2e"]

    def problems(self) -> list[Row]:
        """Rows that failed or gave a wrong answer (skipped rows are not problems)."""
        return [r for r in self.rows if r.status in ("failed", "wrong")]

    def to_json(self) -> dict:
        counts = {s: sum(1 for r in self.rows if r.status == s) for s in ("ok", "wrong", "failed", "skipped")}
        return {
            "archdsl_bench": 1,
            "network": self.network,
            "source": self.source,
            "params": self.params,
            "input": list(self.input_shape),
            "macs_per_sample": self.macs_per_sample,
            "env": self.env,
            "protocol": self.protocol,
            "peaks": self.peaks.to_json() if self.peaks else None,
            "convs": [c.to_json() for c in self.convs],
            "rows": [r.to_json() for r in self.rows],
            "checks": {**counts, "problems": [_problem(r) for r in self.problems()]},
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict) -> "BenchRun":
        convs = []
        for c in data["convs"]:
            shape = ConvShape(c["cin"], c["cout"], tuple(c["kernel"]), tuple(c["stride"]), tuple(c["pad"]),
                              tuple(c["dilation"]), c["groups"], *c["in_hw"], *c["out_hw"])
            convs.append(ConvLayer(c["id"], shape, list(c["nodes"]), c["bias"], c["act"], c["residual"],
                                   list(c.get("epilogues", []))))
        return cls(data["network"], data["source"], data["params"], data["input"], data["env"], data["protocol"],
                   Peaks.from_json(data["peaks"]) if data.get("peaks") else None, convs,
                   [Row.from_json(r) for r in data["rows"]], data.get("macs_per_sample", 0), data.get("seconds", 0.0))


def _problem(r: Row) -> str:
    where = f"{r.kind} {r.provider} {r.dtype} batch {r.batch}" + (f" {r.conv}" if r.conv else "")
    if r.status == "wrong":
        return f"{where}: error {r.error:.3g} > tolerance {r.tolerance:.3g}"
    return f"{where}: {r.note}"


# ---- progress ---------------------------------------------------------------------------------------


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """A progress bar on a terminal; a line every ~5% elsewhere (logs, pipes, CI); never raises."""

    def __init__(self, total: int, stream=None, width: int = 28, enabled: bool = True):
        self.total = max(1, int(total))
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = _isatty(self.stream)
        self.done = 0
        self.start = time.monotonic()
        self._every = max(1, math.ceil(self.total / 20))
        self._drawn = False

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError, AttributeError):
            self.enabled = False  # a closed or broken stream: stop drawing, keep measuring

    def line(self, done: int, label: str) -> str:
        frac = min(1.0, done / self.total)
        filled = int(round(frac * self.width))
        elapsed = time.monotonic() - self.start
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {done:>{len(str(self.total))}}/{self.total} "
                f"{100 * frac:3.0f}% {elapsed:6.1f}s  {label}")

    def step(self, label: str = "") -> None:
        self.done += 1
        if self.tty:
            text = self.line(self.done, label)
            cols = shutil.get_terminal_size((100, 20)).columns
            self._write("\r" + text[: cols - 1].ljust(cols - 1))
            self._drawn = True
        elif self.done % self._every == 0 or self.done >= self.total:
            self._write(self.line(self.done, label) + "\n")

    def message(self, text: str) -> None:
        """A line of text above the bar."""
        if self.tty and self._drawn:
            cols = shutil.get_terminal_size((100, 20)).columns
            self._write("\r" + " " * (cols - 1) + "\r")
            self._drawn = False
        self._write(text + "\n")

    def close(self) -> None:
        if self.tty and self._drawn:
            self._write("\n")
            self._drawn = False


# ---- models: BN folded, weights ---------------------------------------------------------------------


def fold_bn_graph(graph):
    """(graph', folds): every conv whose only reader is a 2-d batch norm takes it as a bias.

    folds maps conv -> (bn, eps).  The result is a plain graph (conv, relu, add, ...): the eager
    baselines run it, so each of them does exactly the inference work (BN folded) and no more.
    """
    from ..passes.rewrite import clone, redirect, sole_user

    g = clone(graph)
    folds = {}
    for n in graph.order():
        if n not in g or g.op(n) != "conv":
            continue
        user = sole_user(g, n)
        if user is None or g.op(user) != "bn" or len(g.shape(user)) != 3:
            continue
        folds[n] = (user, g.nodes[user]["attrs"]["eps"])
        g.nodes[n]["attrs"]["bias"] = True
        redirect(g, user, n)
        g.remove_node(user)
    g.lint()
    return g, folds


def folded_state(state: dict, folds: dict) -> dict:
    """The reference state dict with each folded BN moved into its conv's weight and bias
    (computed in float64, stored in float32), by the generated programs' own `fold_bn`."""
    from ..codegen.emit import host_helpers

    fold_bn = host_helpers().fold_bn
    out = dict(state)
    for conv, (bn, eps) in folds.items():
        w, b = fold_bn(state, conv, bn, eps)
        out[conv + ".weight"], out[conv + ".bias"] = w.float(), b.float()
        for key in [k for k in out if k.startswith(bn + ".") and "." not in k[len(bn) + 1:]]:
            del out[key]
    return out


def reference_state(graph, seed: int = 0, weights: str | None = None, calibration_batch: int = 4) -> dict:
    """The weights every provider gets (float32, CPU, reference names).

    From `weights` when given; otherwise PyTorch's initialization (seeded) with batch-norm
    statistics calibrated on one random batch (momentum None, one forward in train mode), so that
    activations keep a realistic scale through the network -- default statistics (mean 0,
    variance 1) would let them shrink or grow layer by layer and test fp16's range instead of the
    kernels.
    """
    import torch

    from ..backends.torch_backend import load_weights, to_torch

    torch.manual_seed(seed)
    model = to_torch(graph).eval()
    if weights:
        load_weights(model, weights)
        return {k: v.detach().float().clone() if v.is_floating_point() else v.clone()
                for k, v in model.state_dict().items()}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        gen = torch.Generator().manual_seed(seed + 1)
        xs = [torch.randn(calibration_batch, *graph.shape(n), generator=gen) for n in graph.inputs]
        with torch.no_grad():
            model(*xs)
        model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def network_inputs(graph, batch: int, seed: int) -> list:
    """Random normal NCHW inputs (float32, CPU), the same for every provider."""
    import torch

    gen = torch.Generator().manual_seed(seed * 7919 + batch)
    return [torch.randn(batch, *graph.shape(n), generator=gen) for n in graph.inputs]


# ---- providers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    build: Callable  # see E2EContext / LayerCase
    needs_cuda: bool = False
    cudnn_benchmark: bool = False  # set before the provider is built, captured, checked and timed


class Unavailable(Exception):
    """A provider that cannot run here (recorded as skipped, with the reason)."""


@dataclass
class Bound:
    """A provider bound to inputs: `fn()` runs it once and returns its outputs."""

    fn: Callable[[], Any]
    prepare: Callable[[], None] | None = None  # run before the checked call (poison outputs)
    config: dict | None = None  # the kernel configuration used (tuned rows)


class E2EContext:
    """What the end-to-end providers build from, for one dtype."""

    def __init__(self, graph, state: dict, folded: tuple, dtype: str, device, graph_backend=None, tune: bool = False):
        self.graph, self.state, self.dtype, self.device = graph, state, dtype, device
        self.folded_graph, self.folded_weights = folded
        self._graph_backend = graph_backend
        self.tune = tune  # tune the conv launches missing from the autotuning cache (GPU)
        self._compiled = None

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def graph_backend(self):
        from ..cudagraph import CudaGraphBackend

        return self._graph_backend or CudaGraphBackend()

    def folded_model(self, channels_last: bool = False):
        import torch

        from ..backends.torch_backend import to_torch

        model = to_torch(self.folded_graph).eval()
        model.load_state_dict(self.folded_weights)
        model = model.to(device=self.device, dtype=self.torch_dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def compiled_model(self):
        if self._compiled is None:
            from ..runtime import CompiledModel, build, cached_tuning

            compiled = build(self.graph, self.dtype)
            # the block sizes `archdsl.compile` would use on this GPU: the cache's (plain launches;
            # the providers capture CUDA graphs themselves)
            tuning = cached_tuning(compiled.optimized.graph, self.dtype, self.device, self.tune) \
                if self.device.type == "cuda" else None
            model = CompiledModel(compiled, self.device, tuning=tuning)
            model.load_state_dict(self.state)
            self._compiled = model
        return self._compiled


def _cl(xs):
    import torch

    return [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs]


def _graphed(ctx: E2EContext, fn, xs) -> Callable[[], Any]:
    from ..cudagraph import GraphedCallable

    graphed = GraphedCallable(fn, xs, backend=ctx.graph_backend())
    static = graphed.static_inputs(*xs)
    return lambda: graphed(*static)  # the static inputs themselves: no copy per call


def _e2e_eager(channels_last: bool, in_graph: bool):
    def build(ctx: E2EContext):
        model = ctx.folded_model(channels_last)

        def bind(xs):
            xs = _cl(xs) if channels_last else [x.contiguous() for x in xs]
            if in_graph:
                return Bound(_graphed(ctx, model, xs))
            return Bound(lambda: model(*xs))

        return bind

    return build


def _e2e_compile(ctx: E2EContext):
    import torch

    model = ctx.folded_model(channels_last=True)
    compiled = torch.compile(model, mode="max-autotune", dynamic=False)

    def bind(xs):
        xs = _cl(xs)
        return Bound(lambda: compiled(*xs))

    return bind


def _e2e_archdsl(in_graph: bool):
    def build(ctx: E2EContext):
        model = ctx.compiled_model()

        def bind(xs):
            xs = [x.contiguous() for x in xs]
            if in_graph:
                return Bound(_graphed(ctx, model, xs))
            return Bound(lambda: model(*xs))

        return bind

    return build


E2E_PROVIDERS: list[Provider] = [
    Provider("eager_nchw", "eager cuDNN, NCHW", _e2e_eager(False, False)),
    Provider("eager_cl", "eager cuDNN, channels-last, cudnn.benchmark", _e2e_eager(True, False),
             cudnn_benchmark=True),
    Provider("eager_cl_graph", "eager channels-last, cudnn.benchmark, in a CUDA graph", _e2e_eager(True, True),
             needs_cuda=True, cudnn_benchmark=True),
    Provider("torch_compile", 'torch.compile(mode="max-autotune"), channels-last', _e2e_compile, needs_cuda=True,
             cudnn_benchmark=True),
    Provider("archdsl", "archdsl, plain launches", _e2e_archdsl(False)),
    Provider("archdsl_graph", "archdsl in a CUDA graph", _e2e_archdsl(True), needs_cuda=True),
]
E2E_BASELINE = "eager_nchw"


class LayerCase:
    """One conv at one batch and dtype: the same random input, weight, bias and residual for every
    provider (NCHW channels-last tensors whose NHWC views are archdsl's operands), and the float64
    references of conv + bias and of the fused epilogue."""

    def __init__(self, layer: ConvLayer, batch: int, dtype: str, device, seed: int = 0, tuner=None):
        import torch
        import torch.nn.functional as F

        s = layer.shape
        self.layer, self.batch, self.dtype, self.device, self.tuner = layer, batch, dtype, device, tuner
        dt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(seed * 104729 + batch * 131 + int(layer.id[1:]))
        cl = torch.channels_last
        kh, kw = s.kernel
        fan_in = (s.cin // s.groups) * kh * kw
        self.x = torch.randn(batch, s.cin, s.h, s.w, generator=gen).to(device=device, dtype=dt).contiguous(
            memory_format=cl)
        w = torch.randn(s.cout, s.cin // s.groups, kh, kw, generator=gen) * math.sqrt(2.0 / fan_in)
        self.w = w.to(device=device, dtype=dt).contiguous(memory_format=cl)
        self.bias32 = (torch.randn(s.cout, generator=gen) * 0.1).to(device) if layer.bias else None
        self.bias = self.bias32.to(dt) if self.bias32 is not None else None
        self.residual = (torch.randn(batch, s.cout, s.p, s.q, generator=gen).to(device=device, dtype=dt)
                         .contiguous(memory_format=cl) if layer.residual else None)
        # float64 references on the rounded operands
        x64 = self.x.double().contiguous()
        pad = s.padding_arg()
        if pad is None:
            t, b, left, r = s.pad
            x64, pad = F.pad(x64, (left, r, t, b)), (0, 0)
        self.ref_plain = F.conv2d(x64, self.w.double(), self.bias32.double() if self.bias32 is not None else None,
                                  s.stride, pad, s.dilation, s.groups)
        fused = self.ref_plain + self.residual.double() if self.residual is not None else self.ref_plain
        from ..ops.torch_modules import apply_activation

        self.ref_fused = apply_activation(layer.act, fused)

    def nhwc(self, t):
        return t.permute(0, 2, 3, 1)  # a channels-last NCHW tensor's NHWC view: contiguous, same memory

    def new_out(self):
        import torch

        s = self.layer.shape
        return torch.empty(self.batch, s.p, s.q, s.cout, device=self.device, dtype=self.x.dtype)


def _layer_torch(case: LayerCase) -> Bound:
    import torch.nn.functional as F

    s = case.layer.shape
    pad = s.padding_arg()
    x, w, b = case.x, case.w, case.bias
    if pad is None:
        t, bt, left, r = s.pad
        return Bound(lambda: F.conv2d(F.pad(x, (left, r, t, bt)), w, b, s.stride, 0, s.dilation, s.groups))
    return Bound(lambda: F.conv2d(x, w, b, s.stride, pad, s.dilation, s.groups))


def _layer_archdsl(fused: bool, tuned: bool = False):
    def build(case: LayerCase) -> Bound:
        from ..tune import kernel_module

        mod = kernel_module("conv2d")
        s = case.layer.shape
        if fused and not tuned and not case.layer.fused:
            raise Unavailable("this conv has no epilogue beyond the bias")
        out = case.new_out()
        w = mod.pack_conv_weight(case.w, s.groups, case.x.dtype)
        kwargs = dict(kernel=s.kernel, stride=s.stride, pad=s.pad, dilation=s.dilation, groups=s.groups,
                      bias=case.bias32)
        if fused or tuned:
            kwargs.update(residual=case.nhwc(case.residual) if case.residual is not None else None,
                          act=act_codes()[case.layer.act])
        x = case.nhwc(case.x)
        config = {}
        if tuned:
            if case.tuner is None:
                raise Unavailable("autotuning was not asked for (--tune)")
            config = case.tuner(mod.conv2d, x, w, out, kwargs)
        out_nchw = out.permute(0, 3, 1, 2)

        def run():
            mod.conv2d(x, w, out, **kwargs, **config)
            return out_nchw

        return Bound(run, prepare=lambda: out.fill_(float("nan")), config=config or None)

    return build


LAYER_PROVIDERS: list[Provider] = [
    Provider("torch_conv", "F.conv2d channels-last (cuDNN, benchmark): conv + bias", _layer_torch,
             cudnn_benchmark=True),
    Provider("archdsl_conv", "archdsl conv2d: conv + bias", _layer_archdsl(False)),
    Provider("archdsl_fused", "archdsl conv2d with the layer's fused epilogue", _layer_archdsl(True)),
    Provider("archdsl_tuned", "archdsl conv2d, fused, autotuned (cached)", _layer_archdsl(True, tuned=True)),
]
LAYER_BASELINE = "torch_conv"


def provider(name: str) -> Provider:
    for p in E2E_PROVIDERS + LAYER_PROVIDERS:
        if p.name == name:
            return p
    raise KeyError(name)


def layer_work(layer: ConvLayer, provider_name: str, batch: int, dtype: str) -> tuple[int, int]:
    """(FLOPs, bytes) of one provider's row: conv + bias, or with the fused epilogue."""
    s = layer.shape
    fused = provider_name in ("archdsl_fused", "archdsl_tuned")
    return s.flops(batch), s.bytes(batch, DTYPE_BYTES[dtype], bias=layer.bias, residual=fused and layer.residual,
                                   bias_elem=4 if provider_name != LAYER_BASELINE else DTYPE_BYTES[dtype])


# ---- plan and run -----------------------------------------------------------------------------------


@dataclass
class Plan:
    network: str
    convs: list[ConvLayer]
    config: BenchConfig
    macs_per_sample: int

    @property
    def steps(self) -> int:
        c = self.config
        n = len(c.dtypes) + 1  # peaks
        if c.layers:
            n += len(self.convs) * len(c.batches) * len(c.dtypes) * len(c.layer_providers)
        if c.e2e:
            n += len(c.batches) * len(c.dtypes) * len(c.e2e_providers)
        return n


def plan(graph, config: BenchConfig) -> Plan:
    """What `run_bench` will measure (needs no GPU): the distinct convs of the optimized graph."""
    from ..analysis import analyze
    from ..passes import optimize

    optimized = optimize(graph).graph
    return Plan(graph.name, distinct_convs(optimized), config, analyze(graph).macs)


def _set_flags(flags: dict) -> None:
    import torch

    torch.backends.cudnn.benchmark = bool(flags.get("cudnn_benchmark", False))


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _measure(row: Row, prov: Provider, bound_fn: Callable[[], Bound], ref, timer, device) -> None:
    """Build and bind (under no_grad: models, graph capture, tuning), check once against `ref`
    (that call also warms up), then time (under inference_mode); failures are recorded.  The
    provider's cudnn.benchmark setting holds throughout (capture included)."""
    import torch

    try:
        _set_flags({"cudnn_benchmark": prov.cudnn_benchmark})
        with torch.no_grad():
            bound = bound_fn()
        with torch.inference_mode():
            if bound.prepare:
                bound.prepare()
            outs = bound.fn()
            _sync(device)
            row.error = outputs_error(outs, ref)
            del outs
            t = timer(bound.fn)
        row.config = bound.config
    except Unavailable as exc:
        row.status, row.note = "skipped", str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - one provider's failure must not end the run
        row.status, row.note = "failed", _failure(exc)
        return
    finally:
        _set_flags({})
    row.ms, row.iters, row.q10_ms, row.q90_ms = t.median_ms, t.iters, t.q10_ms, t.q90_ms


def run_bench(graph, config: BenchConfig, *, device: Any = "cuda", timer=None, progress: Progress | None = None,
              state: dict | None = None, source: str = "", graph_backend=None, tune_cache=None,
              peaks: Peaks | None = None) -> BenchRun:
    """Run the protocol on `graph` and return the results (see the module docstring).

    `timer` defaults to `CudaEventTimer(config.iters, config.warmup_ms, flush_l2=config.flush_l2)`;
    `state` to `reference_state(graph, config.seed, config.weights)`; `peaks` are measured unless
    given.  On a CPU device (tests) providers that need CUDA are skipped.
    """
    import torch

    started = time.monotonic()
    device = torch.device(device)
    timer = timer or CudaEventTimer(config.iters, config.warmup_ms, flush_l2=config.flush_l2)
    the_plan = plan(graph, config)
    progress = progress or Progress(the_plan.steps, enabled=False)
    state = state if state is not None else reference_state(graph, config.seed, config.weights)
    folded_graph, folds = fold_bn_graph(graph)
    folded = (folded_graph, folded_state(state, folds))
    protocol = {
        "timer": getattr(timer, "name", type(timer).__name__),
        "statistic": "median",
        "min_iters": config.iters,
        "warmup_ms": config.warmup_ms,
        "l2_flush": config.flush_l2,
        "batches": list(config.batches),
        "dtypes": list(config.dtypes),
        "bn_folded": True,
        "weights": config.weights or f"PyTorch init (seed {config.seed}), BN statistics calibrated on random input",
        "inputs": f"random normal (seed {config.seed}), the same for every provider",
        "reference": "float64, same weights (BN folded), on the dtype-rounded inputs",
        "tolerance": {"floor": ERROR_FLOOR, "ratio": ERROR_RATIO, "ceiling": ERROR_CEILING,
                      "baselines": {"layer": LAYER_BASELINE, "e2e": E2E_BASELINE}},
        "providers": {p.name: p.label for p in E2E_PROVIDERS + LAYER_PROVIDERS
                      if p.name in config.e2e_providers + config.layer_providers},
        "graph_capture": "input copies excluded: the static inputs are filled once",
        "tuning_end_to_end": "the autotuning cache's block sizes per conv launch" +
                             (" (missing shapes tuned in this run)" if config.tune else " where it has them"),
    }
    run = BenchRun(graph.name, source, dict(graph.graph["params"]), list(graph.shape(graph.inputs[0])),
                   environment(device), protocol, None, the_plan.convs, macs_per_sample=the_plan.macs_per_sample)

    run.peaks = peaks or measure_peaks(timer, device, config.dtypes, config.peak_matmul_n, config.peak_copy_bytes,
                                       progress)
    if peaks is not None:
        for _ in range(len(config.dtypes) + 1):
            progress.step("peaks (given)")

    if config.layers:
        _run_layers(run, config, device, timer, progress, tune_cache)
    if config.e2e:
        _run_e2e(run, graph, config, device, timer, progress, state, folded, graph_backend)
    for r in run.rows:
        derive(r, run.peaks)
    apply_checks(run.layer_rows(), LAYER_BASELINE)
    apply_checks(run.e2e_rows(), E2E_BASELINE)
    progress.close()
    run.seconds = time.monotonic() - started
    return run


def _tuner(config: BenchConfig, timer, cache):
    """conv2d's autotuner for the archdsl_tuned rows: candidates timed with a lighter timer (25
    runs, 5 ms of warm-up) than the protocol's, the winner cached on disk and then timed again
    by the protocol's timer like every other row."""
    from ..tune import TuneCache, tune_conv2d

    cache = cache if cache is not None else TuneCache()
    if isinstance(timer, CudaEventTimer):
        timer = CudaEventTimer(25, 5.0, flush_l2=timer.flush_l2)

    def tune(conv2d, x, w, out, kwargs):
        return tune_conv2d(x, w, out, timer=timer, cache=cache, conv2d=conv2d, **kwargs).config

    return tune


def _run_layers(run: BenchRun, config: BenchConfig, device, timer, progress: Progress, tune_cache) -> None:
    tuner = _tuner(config, timer, tune_cache) if config.tune else None
    chosen = [p for p in LAYER_PROVIDERS if p.name in config.layer_providers]
    for dtype in config.dtypes:
        for batch in config.batches:
            for layer in run.convs:
                try:
                    case = LayerCase(layer, batch, dtype, device, config.seed, tuner)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a large batch
                    for p in chosen:
                        run.rows.append(Row("layer", p.name, dtype, batch, "failed", conv=layer.id,
                                            note=f"inputs: {_failure(exc)}"))
                        progress.step(f"{dtype} b{batch} {layer.id} {p.name}")
                    continue
                for p in chosen:
                    row = Row("layer", p.name, dtype, batch, conv=layer.id)
                    row.flops, row.bytes = layer_work(layer, p.name, batch, dtype)
                    progress.step(f"{dtype} b{batch} {layer.id} {layer.shape.label()} {p.name}")
                    if p.needs_cuda and device.type != "cuda":
                        row.status, row.note = "skipped", "needs CUDA"
                    else:
                        ref = case.ref_fused if p.name in ("archdsl_fused", "archdsl_tuned") else case.ref_plain
                        _measure(row, p, lambda p=p: p.build(case), ref, timer, device)
                    if row.status == "skipped" and p.name == "archdsl_fused" and not layer.fused:
                        continue  # nothing to fuse: no row
                    run.rows.append(row)
                del case
            _free(device)


def _run_e2e(run: BenchRun, graph, config: BenchConfig, device, timer, progress: Progress, state, folded,
             graph_backend) -> None:
    import torch

    from ..backends.torch_backend import to_torch

    chosen = [p for p in E2E_PROVIDERS if p.name in config.e2e_providers]
    reference = to_torch(folded[0]).eval()
    reference.load_state_dict(folded[1])
    reference = reference.to(device=device, dtype=torch.float64)
    flops_per_sample = 2 * run.macs_per_sample
    for dtype in config.dtypes:
        ctx = E2EContext(graph, state, folded, dtype, device, graph_backend, tune=config.tune)
        built: dict[str, Any] = {}
        for batch in config.batches:
            xs = [x.to(device=device, dtype=getattr(torch, dtype)) for x in network_inputs(graph, batch, config.seed)]
            try:
                with torch.inference_mode():
                    ref = reference(*(x.double() for x in xs))
            except Exception as exc:  # noqa: BLE001
                ref, ref_failure = None, _failure(exc)
            for p in chosen:
                row = Row("e2e", p.name, dtype, batch)
                row.flops = flops_per_sample * batch
                progress.step(f"{dtype} b{batch} {p.name}")
                if p.needs_cuda and device.type != "cuda":
                    row.status, row.note = "skipped", "needs CUDA"
                elif ref is None:
                    row.status, row.note = "failed", f"float64 reference: {ref_failure}"
                else:
                    def bind(p=p):
                        if p.name not in built:
                            try:
                                built[p.name] = p.build(ctx)
                            except Exception as exc:  # noqa: BLE001 - remembered: not rebuilt per batch
                                built[p.name] = exc
                        if isinstance(built[p.name], Exception):
                            raise built[p.name]
                        return built[p.name](xs)

                    _measure(row, p, bind, ref, timer, device)
                run.rows.append(row)
            del ref, xs
            _free(device)
        del ctx, built
        _free(device)


__all__ = ["BenchConfig", "BenchRun", "ConvLayer", "ConvShape", "CudaEventTimer", "E2E_PROVIDERS", "FakeTimer",
           "Floor", "LAYER_PROVIDERS", "Peaks", "Progress", "Row", "Timing", "WallTimer", "apply_checks",
           "cuda_status", "derive", "distinct_convs", "environment", "measure_peaks", "percent_of_floor", "plan",
           "roofline_floor", "run_bench", "tolerance"]
