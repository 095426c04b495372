"""Autotuning with a persistent on-disk cache.

A kernel launcher (``conv2d`` of ``kernels/conv2d.py``) takes its tuning knobs as keyword
arguments (``block_m``, ``block_n``, ``block_k``, ``num_warps``, ``num_stages``, ``path``).
`autotune` tries a list of such configurations on real arguments, skips the ones that fail to
compile or launch, times the rest with a *timer* and keeps the fastest; `TuneCache` remembers the
winner on disk so that the next process does not time anything.

The cache
---------
One JSON file, ``$ARCHDSL_CACHE/tune.json`` (else ``$XDG_CACHE_HOME/archdsl/tune.json``, else
``~/.cache/archdsl/tune.json``; the same root as the runtime's ``programs/``)::

    {"format": 1,
     "entries": {"<key text>": {"key": {...}, "config": {"block_m": 128, ...},
                                "ms": 0.0123, "timer": "cuda-events", "tried": 12, "failed": 1,
                                "recorded": "2026-01-01T00:00:00Z"}}}

A key (`TuneKey`) is (device name, compute capability, torch version, triton version, kernel
name, shape signature, dtype): a result measured on one GPU, or with another compiler, is never
reused for another.  Its text form (the JSON dictionary key) is the key's fields as a compact
JSON array, so it is unambiguous whatever the device name contains.

Robustness: a file that cannot be read or parsed (or has the wrong format) is ignored with a
`TuneCacheWarning` (never an exception) and rewritten at the next `put`.  Writes go to a temporary
file in the same directory, then ``os.replace`` it over the cache: readers see the old file or
the new one, never half of one.  A writer re-reads the file just before replacing it and merges
its entry in, under an advisory lock (``fcntl.flock`` on ``tune.json.lock`` where available), so
concurrent tuners do not drop each other's results.  When the directory is not writable the
result stays in memory and a warning says so.

Timers
------
A timer is any callable ``timer(fn) -> milliseconds`` that runs the zero-argument ``fn`` as
often as it needs and returns a typical time (`archdsl.runtime.timing.CudaEventTimer`
returns the median of >= 100 CUDA-event-timed runs, as a `Timing`, which converts with
``float()``).  Tests pass a fake timer, so the tuning logic runs without a GPU (under Triton's
interpreter).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .. import dtypes
from ..fileio import write_atomically
from .cache import tune_file
from .launches import ConvLaunch, conv_launches, conv_signature, kernel_module  # noqa: F401  (re-exported)

CACHE_FILE = "tune.json"
FORMAT = 1


class TuneCacheWarning(UserWarning):
    """The autotuning cache could not be read or written; tuning goes on without it."""


class TuneError(RuntimeError):
    """No candidate configuration compiled, launched and timed."""


# ---- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """What a tuning result depends on besides the kernel and the problem."""

    name: str  # "NVIDIA H100 80GB HBM3", or "cpu (Triton interpreter)"
    capability: str  # "9.0", or "cpu"
    torch: str
    triton: str

    @classmethod
    def current(cls, device: Any = None) -> "DeviceInfo":
        """The device `device` ("cuda", "cuda:1", a torch.device; None: CUDA when available)."""
        import torch

        try:
            import triton

            triton_version = triton.__version__
        except ImportError:  # pragma: no cover - triton is installed wherever kernels run
            triton_version = "none"
        dev = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        if dev.type == "cuda":
            major, minor = torch.cuda.get_device_capability(dev)
            return cls(torch.cuda.get_device_name(dev), f"{major}.{minor}", torch.__version__, triton_version)
        return cls("cpu (Triton interpreter)", "cpu", torch.__version__, triton_version)


@dataclass(frozen=True)
class TuneKey:
    device: str
    capability: str
    torch: str
    triton: str
    kernel: str
    shape: str
    dtype: str

    @classmethod
    def make(cls, info: DeviceInfo, kernel: str, shape: str, dtype: Any) -> "TuneKey":
        return cls(info.name, info.capability, info.torch, info.triton, kernel, shape, dtype_name(dtype))

    def text(self) -> str:
        """The dictionary key in the cache file."""
        return json.dumps([self.device, self.capability, self.torch, self.triton, self.kernel, self.shape,
                           self.dtype], separators=(",", ":"))


dtype_name = dtypes.name_of  # "bfloat16" for torch.bfloat16, "bfloat16" or "bf16"


# ---- the cache ----------------------------------------------------------------------------------


def default_cache_path() -> Path:
    """``tune.json`` under archdsl's cache root (`archdsl.runtime.cache`)."""
    return tune_file()


@contextlib.contextmanager
def _locked(path: Path):
    """An advisory exclusive lock beside `path` (POSIX); a no-op where locking is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        handle.close()  # releases the lock


class TuneCache:
    """The on-disk cache of tuning results (see the module docstring for the format)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self._entries: dict[str, dict] | None = None
        self._warned: set[str] = set()
        self.hits = 0
        self.misses = 0

    # -- reading
    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, TuneCacheWarning, stacklevel=3)

    def _read(self) -> dict[str, dict]:
        """The entries on disk now; {} (with a warning) when the file is unreadable or corrupt."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self._warn(f"ignoring the autotuning cache {self.path}: cannot read it ({exc})")
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            self._warn(f"ignoring the autotuning cache {self.path}: not valid JSON ({exc}); "
                       "it will be rewritten")
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
            self._warn(f"ignoring the autotuning cache {self.path}: not an archdsl tuning cache of format "
                       f"{FORMAT}; it will be rewritten")
            return {}
        return {k: v for k, v in data["entries"].items()
                if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("config"), dict)}

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def reload(self) -> None:
        """Forget what was read; the next lookup reads the file again."""
        self._entries = None

    def entry(self, key: TuneKey) -> dict | None:
        """The full record for `key` (config, time, timer, ...), or None."""
        found = self.entries().get(key.text())
        return json.loads(json.dumps(found)) if found is not None else None

    def get(self, key: TuneKey) -> dict | None:
        """The best configuration recorded for `key`, or None (counted in `hits` / `misses`)."""
        found = self.entries().get(key.text())
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return dict(found["config"])

    def __len__(self) -> int:
        return len(self.entries())

    # -- writing
    def put(self, key: TuneKey, config: Mapping[str, Any], **meta: Any) -> None:
        """Record `config` as the best for `key`, merged into the file as it is now, atomically."""
        record = {"key": asdict(key), "config": dict(config), **meta,
                  "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        json.dumps(record)  # fail here, not halfway through a write, on a value JSON cannot hold
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path):
                entries = self._read()
                entries[key.text()] = record
                self._write(entries)
        except OSError as exc:
            self._warn(f"cannot write the autotuning cache {self.path} ({exc}); "
                       "the result is kept for this process only")
            entries = dict(self._entries or {})
            entries[key.text()] = record
        self._entries = entries

    def _write(self, entries: dict[str, dict]) -> None:
        text = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True) + "\n"
        write_atomically(self.path, text, fsync=True)


# ---- autotuning ---------------------------------------------------------------------------------


@dataclass
class Trial:
    config: dict
    ms: float | None  # None: it failed
    error: str | None = None


@dataclass
class TuneResult:
    config: dict
    ms: float | None  # the winner's time (from the cache when `cached`)
    cached: bool
    trials: list[Trial] = field(default_factory=list)

    @property
    def failures(self) -> list[Trial]:
        return [t for t in self.trials if t.error is not None]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def autotune(kernel_fn: Callable[..., Any], candidates: Iterable[Mapping[str, Any]], args: Sequence[Any] = (),
             timer: Callable[[Callable[[], Any]], Any] | None = None, *, kwargs: Mapping[str, Any] | None = None,
             key: TuneKey | None = None, cache: TuneCache | None = None) -> TuneResult:
    """The fastest of `candidates` for ``kernel_fn(*args, **kwargs, **config)``.

    With `key` and `cache`, a recorded result is returned without running anything
    (``cached=True``); otherwise every candidate is launched once (which compiles it: a config
    that fails to compile or launch is skipped, its error kept in `trials`), then timed with
    ``timer(fn)`` (milliseconds; anything ``float()`` accepts).  The fastest is recorded in the
    cache and returned; ties go to the earlier candidate.  `TuneError` when none worked.

    The kernel must be safe to run repeatedly on the same arguments (it writes its output
    buffer; it does not accumulate into it).
    """
    if key is not None and cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return TuneResult(hit, (cache.entry(key) or {}).get("ms"), True, [])
    if timer is None:
        from .timing import default_timer

        timer = default_timer()
    kwargs = dict(kwargs or {})
    trials: list[Trial] = []
    for candidate in candidates:
        config = dict(candidate)
        clash = set(config) & set(kwargs)
        if clash:
            raise ValueError(f"autotune: candidate {config} sets {sorted(clash)}, which kwargs already set")

        def run(config=config):
            return kernel_fn(*args, **kwargs, **config)

        try:
            run()  # compiles and launches: a config that cannot is skipped
            ms = float(timer(run))
            if not math.isfinite(ms) or ms < 0:
                raise ValueError(f"the timer returned {ms}")
        except Exception as exc:  # noqa: BLE001 - any failure disqualifies the config, never the tuning
            trials.append(Trial(config, None, _describe(exc)))
            continue
        trials.append(Trial(config, ms))
    ok = [t for t in trials if t.error is None]
    if not ok:
        reasons = "; ".join(f"{t.config}: {t.error}" for t in trials[:5]) or "no candidates"
        raise TuneError(f"autotune: no configuration worked ({len(trials)} tried): {reasons}")
    best = min(ok, key=lambda t: t.ms)
    if key is not None and cache is not None:
        cache.put(key, best.config, ms=best.ms, timer=getattr(timer, "name", type(timer).__name__),
                  tried=len(trials), failed=len(trials) - len(ok))
    return TuneResult(dict(best.config), best.ms, False, trials)


# ---- the convolution kernel ---------------------------------------------------------------------


def conv_candidates(path: str, dtype: Any, device_type: str = "cuda", *, smem_bytes: int = 227 * 1024) -> list[dict]:
    """Configurations of ``conv2d`` worth trying for a path ("gemm", "implicit_tap", ...).

    On a GPU: the block shapes Triton's matmul tutorials use on Hopper, pruned of those whose
    software pipeline would not fit `smem_bytes` of shared memory.  On the CPU (the
    interpreter, where only correctness and the harness's logic can be tested): a few small
    blocks.  Every config names its `path`, so a cached config is complete.
    """
    elem = 4 if dtype_name(dtype) == "float32" else 2
    if path == "depthwise":
        if device_type == "cpu":
            return [{"path": path, "block_m": m, "block_n": c} for m, c in ((16, 16), (32, 16), (32, 32))]
        return [{"path": path, "block_m": m, "block_n": c, "num_warps": wp, "num_stages": 2}
                for m in (32, 64, 128) for c in (32, 64, 128) for wp in (4, 8) if m * c <= 8192]
    if device_type == "cpu":
        return [{"path": path, "block_m": m, "block_n": n, "block_k": k}
                for m, n, k in ((16, 16, 16), (32, 16, 16), (16, 32, 16), (32, 32, 16))]
    shapes = [(128, 256, 64, 8), (256, 128, 64, 8), (128, 128, 64, 8), (128, 128, 64, 4), (128, 128, 32, 4),
              (128, 64, 64, 4), (64, 128, 64, 4), (64, 64, 64, 4), (128, 64, 32, 4), (64, 128, 32, 4),
              (64, 64, 32, 4), (32, 64, 64, 4), (64, 32, 64, 4)]
    out = []
    for bm, bn, bk, warps in shapes:
        for stages in (3, 4, 5):
            if stages * (bm * bk + bk * bn) * elem > smem_bytes:
                continue
            out.append({"path": path, "block_m": bm, "block_n": bn, "block_k": bk, "num_warps": warps,
                        "num_stages": stages})
    return out


def tune_conv2d(x, w_packed, out, *, kernel, stride=1, pad=0, dilation=1, groups: int = 1, scale=None,
                bias=None, residual=None, act: int = 0, timer=None, cache: TuneCache | None = None,
                candidates: Iterable[Mapping[str, Any]] | None = None, conv2d: Callable | None = None,
                info: DeviceInfo | None = None, in_gate=None) -> TuneResult:
    """Autotune ``conv2d`` for these exact arguments (NHWC tensors on their device).

    The path is the one ``conv2d`` would take by default (`conv_path`); the block sizes, warps
    and stages are searched.  Recorded in `cache` under (device, versions, "conv2d",
    `conv_signature(...)`, dtype); `out` is overwritten.  in_gate: a squeeze-and-excitation gate
    the conv scales its input by (conv2d's argument; its own kernel specialization and key).
    """
    mod = kernel_module("conv2d")
    conv2d = conv2d or mod.conv2d
    geometry = dict(kernel=kernel, stride=stride, pad=pad, dilation=dilation, groups=groups)
    path = mod.conv_path(x, out, residual=residual, **geometry)
    info = info or DeviceInfo.current(x.device)
    key = TuneKey.make(info, "conv2d", conv_signature(x.shape, out.shape, residual=residual is not None, act=act,
                                                      path=path, gate=in_gate is not None, **geometry), x.dtype)
    gated = {} if in_gate is None else {"in_gate": in_gate}
    if candidates is None:
        candidates = conv_candidates(path, x.dtype, x.device.type)
    return autotune(conv2d, candidates, (x, w_packed, out), timer,
                    kwargs=dict(scale=scale, bias=bias, residual=residual, act=act, **gated, **geometry), key=key,
                    cache=cache)


def lookup_conv2d(cache: TuneCache, info: DeviceInfo, x_shape, out_shape, dtype, *, kernel, stride=1, pad=0,
                  dilation=1, groups: int = 1, residual: bool = False, act: int = 0, path: str,
                  gate: bool = False) -> dict:
    """The tuned keyword arguments for one conv2d launch, or {} (the kernel's defaults) on a miss.

    What a runtime calls when it prepares a network for a batch size (no tensors needed).
    """
    sig = conv_signature(x_shape, out_shape, kernel=kernel, stride=stride, pad=pad, dilation=dilation,
                         groups=groups, residual=residual, act=act, path=path, gate=gate)
    return cache.get(TuneKey.make(info, "conv2d", sig, dtype)) or {}


# ---- a whole network ----------------------------------------------------------------------------

def network_tuning(schedule, batch: int, dtype: Any, cache: TuneCache | None = None, info: DeviceInfo | None = None, *,
                   autotune_missing: bool = False, device: Any = None, timer=None, seed: int = 0,
                   keep: int | None = 4, progress: Callable[[int, int, str], None] | None = None) -> dict[str, dict]:
    """{node: conv2d keyword arguments} for the conv2d launches of a launch schedule (or an
    optimized graph, scheduled first) at `batch`:
    the cached configurations (a node without one is left out: the kernel's defaults).  The
    `path` is part of the key but not of the arguments: ``conv2d`` picks it from the tensors it
    gets (whole buffers or channel slices of a concat's), so a launch never gets a path that
    does not fit them; the block sizes are the tuned ones.

    With `autotune_missing`, every signature not in the cache is first tuned on random tensors of
    its shapes on `device` (one tuning per distinct signature) and recorded.  This is what a
    runtime calls once per batch size; the generated program takes the result as its tuning table.
    On a GPU only the `keep` candidates the performance model ranks fastest are tried
    (`launch_candidates`; None: all of them).  `progress(done, total, node)` is called before
    each signature is tuned and once at the end (total: the signatures to tune).
    """
    import torch

    cache = cache if cache is not None else TuneCache()
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    info = info or DeviceInfo.current(device)
    dt = getattr(torch, dtype_name(dtype))
    table, tuned = {}, {}
    launches = [(launch, launch.signature()) for launch in conv_launches(schedule, batch)]
    configs = {sig: cache.get(TuneKey.make(info, "conv2d", sig, dt)) for _, sig in launches}
    total = sum(1 for config in configs.values() if config is None) if autotune_missing else 0
    for launch, sig in launches:
        config = configs[sig]
        if config is None and autotune_missing:
            if sig not in tuned:
                if progress is not None:
                    progress(len(tuned), total, launch.node)
                tuned[sig] = _tune_launch(launch, dt, device, cache, info, timer, seed, keep)
            config = tuned[sig]
        if config:
            table[launch.node] = {k: v for k, v in config.items() if k != "path"}
    if progress is not None and total:
        progress(total, total, "")
    return table


def launch_candidates(launch: ConvLaunch, dtype: Any, device: Any = "cuda", keep: int | None = 4,
                      ceilings: Any = None) -> list[dict]:
    """The configurations autotuning tries for one conv2d launch: `conv_candidates` of its path,
    on a GPU pruned to the `keep` the performance model (`archdsl.runtime.perfmodel`) predicts
    fastest with `ceilings` (default: the device's SM count and L2 on H200 datasheet rates).
    Where a candidate's tiles leave the GPU under-filled, it competes as two: without split-K
    and with the split ``conv2d`` would choose (`split_k_variants`)."""
    import torch

    from .perfmodel import Ceilings, conv_problem, prune

    device = torch.device(device)
    candidates = conv_candidates(launch.path, dtype, device.type)
    if not keep or device.type != "cuda":
        return candidates
    ceilings = ceilings or Ceilings.for_device(device)
    problem = conv_problem(launch.node, launch.x_shape, launch.out_shape, launch.kernel, launch.groups,
                           launch.residual, getattr(torch, dtype_name(dtype)).itemsize,
                           depthwise=launch.path == "depthwise", gate=launch.gate)
    return prune(problem, split_k_variants(launch, candidates, ceilings.sms), ceilings, keep=keep)


def split_k_variants(launch: ConvLaunch, candidates: Iterable[Mapping[str, Any]], sms: int) -> list[dict]:
    """`candidates` with split-K made explicit where it applies: a config whose tiles fill too few of
    `sms` SMs (``conv_default_split_k`` > 1) becomes {split_k: 1} and {split_k: S}, S that choice;
    the others stay as they are (``conv2d`` does not split them on that GPU either)."""
    split_rule = kernel_module("conv2d").conv_default_split_k
    m = launch.out_shape[0] * launch.out_shape[1] * launch.out_shape[2]
    cg, kg = launch.x_shape[3] // launch.groups, launch.out_shape[3] // launch.groups
    k = launch.kernel[0] * launch.kernel[1] * cg
    out = []
    for config in candidates:
        blocks = (config.get("block_m"), config.get("block_n"), config.get("block_k"))
        split = split_rule(launch.path, m, kg, k, blocks, sms, launch.groups, cg) if all(blocks) else 1
        out += [{**config, "split_k": 1}, {**config, "split_k": split}] if split > 1 else [dict(config)]
    return out


def _tune_launch(launch: ConvLaunch, dtype, device, cache, info, timer, seed, keep=4) -> dict:
    import torch

    mod = kernel_module("conv2d")
    g = torch.Generator().manual_seed(seed)
    kh, kw = launch.kernel
    cin, cout = launch.x_shape[3], launch.out_shape[3]
    x = torch.randn(launch.x_shape, generator=g).to(device=device, dtype=dtype)
    w = torch.randn(cout, cin // launch.groups, kh, kw, generator=g) / math.sqrt(kh * kw * cin / launch.groups)
    wp = mod.pack_conv_weight(w, launch.groups, dtype).to(device)
    out = torch.empty(launch.out_shape, device=device, dtype=dtype)
    bias = torch.randn(cout, generator=g).to(device)
    res = torch.randn(launch.out_shape, generator=g).to(device=device, dtype=dtype) if launch.residual else None
    gate = torch.rand(launch.x_shape[0], 1, 1, cin, generator=g).to(device=device, dtype=dtype) if launch.gate else None
    return tune_conv2d(x, wp, out, bias=bias, residual=res, act=launch.act, timer=timer, cache=cache, info=info,
                       candidates=launch_candidates(launch, dtype, device, keep), in_gate=gate,
                       **launch.geometry()).config


__all__ = ["ConvLaunch", "DeviceInfo", "TuneCache", "TuneCacheWarning", "TuneError", "TuneKey", "TuneResult", "Trial", "autotune",
           "conv_candidates", "conv_launches", "conv_signature", "default_cache_path", "kernel_module", "launch_candidates",
           "lookup_conv2d", "network_tuning", "split_k_variants", "tune_conv2d"]
