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

What is tuned, and where a configuration comes from
---------------------------------------------------
Every conv2d launch (block sizes, warps, stages, split-K), every conv2d_chain launch (the same
and its split_n / split_mid) and every linear (fc) launch of a network, each under its kernel's
name in the key ("conv2d", "conv2d_chain", "linear") and its signature (`conv_signature`,
`ChainLaunch.signature`, `LinearLaunch.signature`).  A launch's configuration is looked up in
the user's cache first (their own measurement wins), then in the tables shipped with archdsl
(`ShippedTables`: archdsl/runtime/tuned/*.json, one per GPU, measured by the GPU check's
``--only tune`` run and merged by ``benchmarks/gpu/collect.py --tuned``), else the kernel's
defaults run (`find_config`; ``archdsl compile --explain`` prints which, per launch).

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
import os
import re
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
                info: DeviceInfo | None = None, in_gate=None, in_ln=None, in_ln_eps: float = 1e-6) -> TuneResult:
    """Autotune ``conv2d`` for these exact arguments (NHWC tensors on their device).

    The path is the one ``conv2d`` would take by default (`conv_path`); the block sizes, warps
    and stages are searched.  Recorded in `cache` under (device, versions, "conv2d",
    `conv_signature(...)`, dtype); `out` is overwritten.  in_gate: a squeeze-and-excitation gate
    the conv scales its input by (conv2d's argument; its own kernel specialization and key).  in_ln,
    in_ln_eps: a layer norm of the input folded in (conv2d's arguments; its own specialization and key).
    """
    mod = kernel_module("conv2d")
    conv2d = conv2d or mod.conv2d
    geometry = dict(kernel=kernel, stride=stride, pad=pad, dilation=dilation, groups=groups)
    path = mod.conv_path(x, out, residual=residual, **geometry)
    info = info or DeviceInfo.current(x.device)
    key = TuneKey.make(info, "conv2d", conv_signature(x.shape, out.shape, residual=residual is not None, act=act,
                                                      path=path, gate=in_gate is not None, ln=in_ln is not None,
                                                      **geometry), x.dtype)
    gated = {} if in_gate is None else {"in_gate": in_gate}
    gated.update({} if in_ln is None else {"in_ln": in_ln, "in_ln_eps": in_ln_eps})
    if candidates is None:
        candidates = conv_candidates(path, x.dtype, x.device.type)
    return autotune(conv2d, candidates, (x, w_packed, out), timer,
                    kwargs=dict(scale=scale, bias=bias, residual=residual, act=act, **gated, **geometry), key=key,
                    cache=cache)


def lookup_conv2d(cache: TuneCache, info: DeviceInfo, x_shape, out_shape, dtype, *, kernel, stride=1, pad=0,
                  dilation=1, groups: int = 1, residual: bool = False, act: int = 0, path: str,
                  gate: bool = False, ln: bool = False) -> dict:
    """The tuned keyword arguments for one conv2d launch, or {} (the kernel's defaults) on a miss.

    What a runtime calls when it prepares a network for a batch size (no tensors needed).
    """
    sig = conv_signature(x_shape, out_shape, kernel=kernel, stride=stride, pad=pad, dilation=dilation,
                         groups=groups, residual=residual, act=act, path=path, gate=gate, ln=ln)
    return cache.get(TuneKey.make(info, "conv2d", sig, dtype)) or {}


# ---- tuned tables shipped with the package ------------------------------------------------------

SHIPPED_MATCH_ENV = "ARCHDSL_SHIPPED_TUNING"
MATCHES = ("device", "exact", "off")


@dataclass(frozen=True)
class Found:
    """One launch's configuration and where it came from: "cache" (the user's own measurement),
    "shipped" (a table shipped with archdsl) or "default" ({}: the kernel's own choice).  `note`
    names the versions a shipped entry was measured with when they are not this machine's."""

    config: dict
    source: str
    note: str = ""

    @property
    def exact(self) -> bool:
        """Measured for exactly this key (the user's cache, or a shipped entry of these versions)."""
        return self.source == "cache" or (self.source == "shipped" and not self.note)

    def describe(self) -> str:
        return self.source + (f" ({self.note})" if self.note else "")


def table_file_name(device: str, capability: str) -> str:
    """The shipped table's file for a device: ``table_file_name("NVIDIA H200", "9.0")`` is
    'nvidia-h200-sm90.json'."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"
    return f"{slug}-sm{re.sub(r'[^0-9a-z]', '', capability.lower())}.json"


def shipped_dir():
    """archdsl/runtime/tuned/ as package data (`importlib.resources`: a wheel's copy, or the checkout's)."""
    from importlib import resources

    return resources.files("archdsl.runtime").joinpath("tuned")


def _version_tuple(text: str) -> tuple[str, ...]:
    return tuple(re.split(r"[.+]", text)[:2])


class ShippedTables:
    """The read-only tuning tables shipped inside the package: ``archdsl/runtime/tuned/*.json``,
    one file per device (`table_file_name`), written by ``python -m benchmarks.gpu.collect OUT
    --tuned`` from a GPU check's measurements.  Each file has the user cache's format and keys
    (`TuneCache`, `TuneKey`: device, capability, torch, Triton, kernel, shape, dtype), plus the
    device's name and capability at the top.  Consulted after the user's cache (`find_config`).

    `match` (default ``$ARCHDSL_SHIPPED_TUNING``, else "device"):

    exact   an entry of this exact key only;
    device  the exact entry if there is one, else the same device, capability, kernel, shape
            and dtype measured with other torch / Triton versions: the nearest (the same Triton,
            then the same Triton major.minor, then the same torch, then the latest recorded),
            returned with a note naming the versions it was measured with;
    off     no shipped table.

    Why "device" by default: a configuration is block sizes, warps, stages and splits -- keyword
    arguments every version of the kernel takes, chosen for the device's SMs and shared memory --
    and a user rarely runs the exact torch build (2.13.0+cu128 vs +cu130) a table was measured
    with, so exact matching would almost never help.  Such an entry is not counted as tuned:
    `network_tuning(autotune_missing=True)` (``compile --tune``) measures the launch again, and
    the user's measurement then wins.  "exact" or "off" turn the fallback off.
    """

    def __init__(self, directory: Any = None, match: str | None = None):
        self.directory = directory if directory is not None else shipped_dir()
        self.match = match or os.environ.get(SHIPPED_MATCH_ENV) or "device"
        if self.match not in MATCHES:
            raise ValueError(f"shipped tuning match {self.match!r}: choose one of {', '.join(MATCHES)} "
                             f"(${SHIPPED_MATCH_ENV})")
        self._entries: dict[str, dict] | None = None
        self._by_shape: dict[tuple, list[dict]] = {}

    def _files(self) -> list:
        directory = Path(self.directory) if isinstance(self.directory, (str, os.PathLike)) else self.directory
        try:
            return sorted((f for f in directory.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def entries(self) -> dict[str, dict]:
        """Every shipped entry by key text (the files read once; an unreadable one is skipped with a warning)."""
        if self._entries is None:
            self._entries = {}
            if self.match != "off":
                for f in self._files():
                    self._entries.update(read_table(f))
            for record in self._entries.values():
                k = record["key"]
                self._by_shape.setdefault(
                    (k["device"], k["capability"], k["kernel"], k["shape"], k["dtype"]), []).append(record)
        return self._entries

    def devices(self) -> list[tuple[str, str, int]]:
        """(device, capability, entries) of every device with a shipped entry."""
        counts: dict[tuple[str, str], int] = {}
        for record in self.entries().values():
            k = record["key"]
            counts[(k["device"], k["capability"])] = counts.get((k["device"], k["capability"]), 0) + 1
        return [(d, c, n) for (d, c), n in sorted(counts.items())]

    def lookup(self, key: TuneKey) -> Found | None:
        """The shipped configuration for `key` (see the class docstring for the rule), or None."""
        entries = self.entries()
        record = entries.get(key.text())
        if record is not None:
            return Found(dict(record["config"]), "shipped")
        if self.match != "device":
            return None
        others = self._by_shape.get((key.device, key.capability, key.kernel, key.shape, key.dtype), [])
        if not others:
            return None

        def nearness(r: dict) -> tuple:
            k = r["key"]
            return (k["triton"] == key.triton, _version_tuple(k["triton"]) == _version_tuple(key.triton),
                    k["torch"] == key.torch, str(r.get("recorded", "")))

        best = max(others, key=nearness)
        return Found(dict(best["config"]), "shipped",
                     f"measured with torch {best['key']['torch']}, Triton {best['key']['triton']}")


def read_table(path: Any) -> dict[str, dict]:
    """The entries of a tuning table file (`TuneCache`'s format); {} with a `TuneCacheWarning`
    when it cannot be read.  Each entry's text key must be its own "key" record's."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.warn(f"ignoring the tuning table {path}: {exc}", TuneCacheWarning, stacklevel=3)
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        warnings.warn(f"ignoring the tuning table {path}: not an archdsl tuning table of format {FORMAT}",
                      TuneCacheWarning, stacklevel=3)
        return {}
    out = {}
    for text, record in data["entries"].items():
        try:
            ok = isinstance(record.get("config"), dict) and TuneKey(**record["key"]).text() == text
        except (AttributeError, TypeError, KeyError):
            ok = False
        if ok:
            out[text] = record
    return out


def find_config(key: TuneKey, cache: TuneCache | None, shipped: ShippedTables | None) -> Found:
    """The configuration for one launch: the user's cache first (their own measurement wins),
    then the shipped tables, else {} (the kernel's defaults)."""
    config = cache.get(key) if cache is not None else None
    if config is not None:
        return Found(config, "cache")
    found = shipped.lookup(key) if shipped is not None else None
    return found or Found({}, "default")


# ---- chains and linear layers -------------------------------------------------------------------


@dataclass(frozen=True)
class ChainLaunch:
    """One conv2d_chain launch (a conv, then the 1x1 conv `node` with the intermediate on chip) at
    one batch size, NHWC shapes; `mid` the first conv's output channels."""

    node: str
    first: str
    x_shape: tuple[int, int, int, int]
    mid: int
    out_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    dilation: tuple[int, int]
    residual: bool
    act1: int
    act2: int
    groups: int = 1  # the first conv's (> 1: the chain kernel's grouped variant)

    def geometry(self) -> dict:
        return dict(kernel=self.kernel, stride=self.stride, pad=self.pad, dilation=self.dilation)

    def signature(self) -> str:
        """'n32 h56 w56 c64 -> mid64 -> p56 q56 k256 | r3x3 s1x1 pad1,1,1,1 d1x1 | res1 act1,1', with
        ' g32' after the dilation for a grouped first conv (a different kernel: its own key; ungrouped
        keys are unchanged)."""
        n, h, w, c = self.x_shape
        _, p, q, k = self.out_shape
        grouped = f" g{self.groups}" if self.groups > 1 else ""
        return (f"n{n} h{h} w{w} c{c} -> mid{self.mid} -> p{p} q{q} k{k} | r{self.kernel[0]}x{self.kernel[1]} "
                f"s{self.stride[0]}x{self.stride[1]} pad{','.join(map(str, self.pad))} "
                f"d{self.dilation[0]}x{self.dilation[1]}{grouped} | res{int(self.residual)} act{self.act1},{self.act2}")


@dataclass(frozen=True)
class LinearLaunch:
    """One `linear` (fc) launch: (batch, features) @ (features, outputs)."""

    node: str
    batch: int
    features: int
    outputs: int
    act: int

    def signature(self) -> str:
        """'n32 f2048 -> o1000 | act0'"""
        return f"n{self.batch} f{self.features} -> o{self.outputs} | act{self.act}"


def launch_kernel(launch: Any) -> str:
    """The kernel name of a tuning key: "conv2d", "conv2d_chain" or "linear"."""
    return {ChainLaunch: "conv2d_chain", LinearLaunch: "linear"}.get(type(launch), "conv2d")


def _schedule(schedule):
    from ..codegen.schedule import Schedule, make_schedule

    return schedule if isinstance(schedule, Schedule) else make_schedule(schedule)


def chain_launches(schedule, batch: int) -> list[ChainLaunch]:
    """The conv2d_chain launches of a launch schedule (or an optimized graph) at `batch`."""
    from ..ops.registry import act_codes

    schedule = _schedule(schedule)
    graph = schedule.graph
    out = []
    for launch in schedule.gemm_launches("conv2d_chain"):
        first = launch.on_chip[0]
        cin, h, w = graph.shape(graph.args(first)[0])
        k, p, q = graph.shape(launch.node)
        geometry = launch.geom()
        out.append(ChainLaunch(launch.node, first, (batch, h, w, cin), graph.shape(first)[0], (batch, p, q, k),
                               tuple(geometry["kernel"]), tuple(geometry["stride"]), tuple(geometry["pad"]),
                               tuple(geometry["dilation"]), launch.epilogue.residual,
                               act_codes()[graph.nodes[first]["attrs"].get("act", "none")],
                               act_codes()[launch.epilogue.act], geometry.get("groups", 1)))
    return out


def linear_launches(schedule, batch: int) -> list[LinearLaunch]:
    """The `linear` (fc) launches of a launch schedule (or an optimized graph) at `batch`."""
    from ..ops.registry import act_codes

    schedule = _schedule(schedule)
    graph = schedule.graph
    return [LinearLaunch(launch.node, batch, math.prod(graph.shape(launch.inputs[0])),
                         math.prod(graph.shape(launch.node)), act_codes()[launch.epilogue.act])
            for launch in schedule.gemm_launches("linear")]


def tuning_launches(schedule, batch: int) -> list:
    """Every tunable launch (conv2d, conv2d_chain, linear) of a schedule at `batch`, in execution order."""
    schedule = _schedule(schedule)
    order = {launch.node: i for i, launch in enumerate(schedule.launches)}
    launches = [*conv_launches(schedule, batch), *chain_launches(schedule, batch), *linear_launches(schedule, batch)]
    return sorted(launches, key=lambda launch: order[launch.node])


def chain_module():
    """kernels/conv2d.py and conv2d_chain.py in one module, as a generated program pastes them
    (the chain template calls conv2d's helpers by name): ``template_module``."""
    from .launches import template_module

    return template_module("conv2d.py", "conv2d_chain.py")


def _random(shape, g, device, dtype, uniform: bool = False):
    """Random values of `shape` from the CPU generator `g`, on `device`; on "meta" (recording the
    kernels a tuning compiles, benchmarks/gpu/check.py) an empty tensor, nothing generated."""
    import torch

    if torch.device(device).type == "meta":
        return torch.empty(shape, device="meta", dtype=dtype)
    values = torch.rand(shape, generator=g) if uniform else torch.randn(shape, generator=g)
    return values.to(device=device, dtype=dtype)


# Devices whose candidates are a GPU's: "meta" stands for the GPU whose kernels a recording
# run collects without one (benchmarks/gpu/check.py compiles them in parallel before tuning).
GPU_LIKE = ("cuda", "meta")


def _elem_bytes(dtype: Any) -> int:
    import torch

    return getattr(torch, dtype_name(dtype)).itemsize


def chain_candidates(launch: ChainLaunch, dtype: Any, device: Any = "cuda", keep: int | None = 4,
                     ceilings: Any = None) -> list[dict]:
    """The configurations autotuning tries for one chain launch (every key set: block_m, block_n,
    block_k, num_warps, num_stages, split_n, split_mid).

    On a GPU: blocks around the template's defaults -- never a larger on-chip (BLOCK_M x C_mid
    slice) intermediate than the default's, which is what keeps a chain free of register spills --
    times every split `chain_variants` allows, ranked by `predict_chain`; the `keep` fastest,
    plus the default variant itself (so tuning never ends slower than the defaults as measured).
    On the CPU (the interpreter): the smallest blocks, unsplit and split in two each way."""
    import torch

    from .perfmodel import (Ceilings, ChainVariant, Tile, chain_default_variant, chain_problem, chain_variants,
                            chain_walk, predict_chain)

    device = torch.device(device)
    K = chain_module()
    problem = chain_problem(launch.node, launch.x_shape, launch.mid, launch.out_shape, launch.kernel,
                            launch.residual, _elem_bytes(dtype), launch.groups)
    walk = chain_walk(problem, dict(launch.geometry()), K)

    def config(v: ChainVariant) -> dict:
        t = v.tile
        return {"block_m": t.bm, "block_n": t.bn, "block_k": t.bk, "num_warps": t.warps, "num_stages": t.stages,
                "split_n": v.split_n, "split_mid": v.split_mid}

    if device.type not in GPU_LIKE:
        base = ChainVariant(Tile(16, 16, 16, 4, 2), walk)
        splits = [v for v in chain_variants(problem, base) if v.split_n <= 2 and v.split_mid <= 2]
        return [config(v) for v in sorted(splits, key=lambda v: (v.split_n * v.split_mid, v.split_mid))]
    ceilings = ceilings or Ceilings.for_device(device)
    default = chain_default_variant(problem, dtype, ceilings, K, walk)
    if launch.groups > 1:
        return _grouped_chain_candidates(problem, default, ceilings, keep, config)
    mid = max(16, 1 << max(0, launch.mid - 1).bit_length())
    d = default.tile
    bks = sorted({d.bk} | ({32} if walk == "flat" or launch.x_shape[3] % 32 == 0 else set())
                 | ({64} if walk != "flat" and launch.x_shape[3] % 64 == 0 else set()))
    scored = []
    for bm in (32, 64, 128):
        for bn in (32, 64, 128):
            for bk in bks:
                warps = 4 if bm * mid < 64 * 64 else 8
                base = ChainVariant(Tile(bm, bn, bk, warps, d.stages), walk)
                for v in chain_variants(problem, base):
                    if bm * (mid // v.split_mid) > d.bm * mid:  # a larger on-chip tile than the default's
                        continue
                    scored.append((predict_chain(problem, v, ceilings).us, len(scored), config(v)))
    scored.sort(key=lambda s: s[:2])
    kept = _diverse([c for _, _, c in scored], keep or len(scored),
                    (("block_m",), ("block_m", "block_n"), ("block_m", "block_n", "split_n", "split_mid")))
    return kept + ([config(default)] if config(default) not in kept else [])


def _grouped_chain_candidates(problem: Any, default: Any, ceilings: Any, keep: int | None, config) -> list[dict]:
    """`chain_candidates` for a grouped first conv: only a (BLOCK_M, SUB) slice of mid is on chip,
    so the register budget is the second accumulator's -- never a larger BLOCK_M x BLOCK_N than the
    default's; BLOCK_K stays the default's (it divides a slice's input channels); every split."""
    from .perfmodel import ChainVariant, Tile, chain_variants, predict_chain

    d = default.tile
    scored = []
    for bm in (32, 64, 128):
        for bn in (32, 64, 128, 256):
            if bm * bn > d.bm * d.bn:
                continue
            base = ChainVariant(Tile(bm, bn, d.bk, 4 if bm * bn < 64 * 128 else 8, d.stages), default.walk)
            for v in chain_variants(problem, base):
                scored.append((predict_chain(problem, v, ceilings).us, len(scored), config(v)))
    scored.sort(key=lambda s: s[:2])
    kept = _diverse([c for _, _, c in scored], keep or len(scored),
                    (("block_m",), ("block_m", "block_n"), ("block_m", "block_n", "split_n", "split_mid")))
    return kept + ([config(default)] if config(default) not in kept else [])


def _diverse(ranked: list[dict], keep: int, rounds: Sequence[Sequence[str]]) -> list[dict]:
    """`keep` of the `ranked` configs (fastest first): the fastest of each distinct value of
    rounds[0]'s keys, then of rounds[1]'s, ..., then the rest in order.  A memory-bound launch's
    predictions tie across block shapes; this keeps such ties from filling the list with one
    block_m, so the timing decides between shapes the model cannot tell apart."""
    kept: list[dict] = []
    for keys in (*rounds, None):
        seen = {tuple(c[k] for k in keys) for c in kept} if keys else set()
        for c in ranked:
            if len(kept) >= keep:
                return kept
            shape = tuple(c[k] for k in keys) if keys else None
            if c in kept or (keys and shape in seen):
                continue
            kept.append(c)
            seen.add(shape)
    return kept


def linear_candidates(launch: LinearLaunch, dtype: Any, device: Any = "cuda", keep: int | None = 4,
                      ceilings: Any = None) -> list[dict]:
    """The configurations autotuning tries for one linear launch: the GEMM candidates of conv2d
    (`conv_candidates("gemm")`, without the path: ``linear`` has one), on a GPU the `keep` the
    performance model ranks fastest for (batch x features) @ (features x outputs)."""
    import torch

    from .perfmodel import Ceilings, Problem, prune

    device = torch.device(device)
    candidates = [{k: v for k, v in c.items() if k != "path"} for c in conv_candidates("gemm", dtype, device.type)]
    if not keep or device.type not in GPU_LIKE:
        return candidates
    elem = _elem_bytes(dtype)
    n, f, o = launch.batch, launch.features, launch.outputs
    problem = Problem(launch.node, m=n, n=o, k=f, a_bytes=n * f * elem, b_bytes=f * o * elem, out_bytes=n * o * elem,
                      elem_bytes=elem)
    return prune(problem, candidates, ceilings or Ceilings.for_device(device), keep=keep)


def tune_chain(launch: ChainLaunch, dtype: Any, device: Any, cache: TuneCache | None, info: DeviceInfo,
               timer=None, seed: int = 0, candidates: Iterable[Mapping[str, Any]] | None = None) -> TuneResult:
    """Autotune ``conv2d_chain`` for one launch on random tensors of its shapes on `device`;
    recorded under (device, versions, "conv2d_chain", its signature, dtype)."""
    import torch

    mod = chain_module()
    g = torch.Generator().manual_seed(seed)
    (kh, kw), cin, k = launch.kernel, launch.x_shape[3], launch.out_shape[3]
    x = _random(launch.x_shape, g, device, dtype)
    cg = cin // launch.groups
    w1 = torch.randn(launch.mid, cg, kh, kw, generator=g) / math.sqrt(kh * kw * cg)
    w2 = torch.randn(k, launch.mid, 1, 1, generator=g) / math.sqrt(launch.mid)
    w1p = mod.pack_chain_weight(w1, launch.groups, dtype).to(device)
    w2p = mod.pack_conv_weight(w2, 1, dtype).to(device)
    out = torch.empty(launch.out_shape, device=device, dtype=dtype)
    bias1, bias2 = torch.randn(launch.mid, generator=g).to(device), torch.randn(k, generator=g).to(device)
    res = _random(launch.out_shape, g, device, dtype) if launch.residual else None
    if candidates is None:
        candidates = chain_candidates(launch, dtype, device)
    return autotune(mod.conv2d_chain, candidates, (x, w1p, w2p, out), timer,
                    kwargs=dict(bias1=bias1, act1=launch.act1, bias2=bias2, residual=res, act2=launch.act2,
                                groups=launch.groups, **launch.geometry()),
                    key=TuneKey.make(info, "conv2d_chain", launch.signature(), dtype), cache=cache)


def tune_linear(launch: LinearLaunch, dtype: Any, device: Any, cache: TuneCache | None, info: DeviceInfo,
                timer=None, seed: int = 0, candidates: Iterable[Mapping[str, Any]] | None = None) -> TuneResult:
    """Autotune ``linear`` for one launch on random tensors of its shapes on `device`; recorded
    under (device, versions, "linear", its signature, dtype)."""
    import torch

    mod = kernel_module("conv2d")
    g = torch.Generator().manual_seed(seed)
    x = _random((launch.batch, launch.features), g, device, dtype)
    w = torch.randn(launch.outputs, launch.features, generator=g) / math.sqrt(launch.features)
    wp = mod.pack_linear_weight(w, dtype).to(device)
    out = torch.empty(launch.batch, launch.outputs, device=device, dtype=dtype)
    bias = torch.randn(launch.outputs, generator=g).to(device)
    if candidates is None:
        candidates = linear_candidates(launch, dtype, device)
    return autotune(mod.linear, candidates, (x, wp, out), timer, kwargs=dict(bias=bias, act=launch.act),
                    key=TuneKey.make(info, "linear", launch.signature(), dtype), cache=cache)


# ---- a whole network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchTuning:
    """One tunable launch of a network at a batch size, and the configuration it gets."""

    launch: Any  # ConvLaunch, ChainLaunch or LinearLaunch
    kernel: str
    signature: str
    found: Found

    @property
    def node(self) -> str:
        return self.launch.node

    def kwargs(self) -> dict:
        """What the generated program passes the kernel: the config without conv2d's `path`
        (``conv2d`` picks it from the tensors it gets, so it always fits them)."""
        return {k: v for k, v in self.found.config.items() if k != "path"}


def launch_tunings(schedule, batch: int, dtype: Any, cache: TuneCache | None, info: DeviceInfo,
                   shipped: ShippedTables | None) -> list[LaunchTuning]:
    """Every tunable launch of a schedule at `batch` with its configuration and its source
    (`find_config`: the user's cache, then the shipped tables, else the defaults).  No GPU needed."""
    out = []
    for launch in tuning_launches(schedule, batch):
        kernel, sig = launch_kernel(launch), launch.signature()
        out.append(LaunchTuning(launch, kernel, sig, find_config(TuneKey.make(info, kernel, sig, dtype), cache,
                                                                  shipped)))
    return out


def network_tuning(schedule, batch: int, dtype: Any, cache: TuneCache | None = None, info: DeviceInfo | None = None, *,
                   autotune_missing: bool = False, device: Any = None, timer=None, seed: int = 0,
                   keep: int | None = 4, progress: Callable[[int, int, str], None] | None = None,
                   shipped: ShippedTables | None = None, ceilings: Any = None) -> dict[str, dict]:
    """{node: kernel keyword arguments} for the tunable launches (conv2d, conv2d_chain, linear) of
    a launch schedule (or an optimized graph, scheduled first) at `batch`: each from the user's
    cache, else the shipped tables (`shipped`; default: the package's, `ShippedTables`), else left
    out (the kernel's defaults).  A conv2d's `path` is part of its key but not of its arguments:
    ``conv2d`` picks it from the tensors it gets (whole buffers or channel slices of a concat's),
    so a launch never gets a path that does not fit them.

    With `autotune_missing`, every signature without an exact entry (neither in the cache nor
    shipped for these versions) is first tuned on random tensors of its shapes on `device` (one
    tuning per distinct signature) and recorded in the cache.  This is what a runtime calls once
    per batch size; the generated program takes the result as its tuning table.  On a GPU only
    the `keep` candidates the performance model ranks fastest (with `ceilings`, default the
    device's) are tried (`launch_candidates`, `chain_candidates`, `linear_candidates`; None: all).
    `progress(done, total, node)` is called before each signature is tuned and once at the end
    (total: the signatures to tune).
    """
    import torch

    cache = cache if cache is not None else TuneCache()
    shipped = shipped if shipped is not None else ShippedTables()
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    info = info or DeviceInfo.current(device)
    dt = getattr(torch, dtype_name(dtype))
    rows = launch_tunings(schedule, batch, dt, cache, info, shipped)
    todo: dict[tuple[str, str], LaunchTuning] = {}  # the first launch of each signature to tune, in order
    for r in rows if autotune_missing else ():
        if not r.found.exact:
            todo.setdefault((r.kernel, r.signature), r)
    tuned = {}
    for i, (sig, row) in enumerate(todo.items()):
        if progress is not None:
            progress(i, len(todo), row.node)
        tuned[sig] = _tune_one(row.launch, dt, device, cache, info, timer, seed, keep, ceilings)
    if progress is not None and todo:
        progress(len(todo), len(todo), "")
    table = {}
    for r in rows:
        config = tuned.get((r.kernel, r.signature), r.found.config)
        kwargs = {k: v for k, v in config.items() if k != "path"}
        if kwargs:
            table[r.node] = kwargs
    return table


def _tune_one(launch, dtype, device, cache, info, timer, seed, keep, ceilings) -> dict:
    kernel = launch_kernel(launch)
    if kernel == "conv2d_chain":
        return tune_chain(launch, dtype, device, cache, info, timer, seed,
                          chain_candidates(launch, dtype, device, keep, ceilings)).config
    if kernel == "linear":
        return tune_linear(launch, dtype, device, cache, info, timer, seed,
                           linear_candidates(launch, dtype, device, keep, ceilings)).config
    return _tune_launch(launch, dtype, device, cache, info, timer, seed, keep, ceilings)


def explain_tuning(rows: list[LaunchTuning]) -> list[str]:
    """Where each launch's configuration comes from, one line per launch, a count first (what
    ``archdsl compile --explain`` prints)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.found.source] = counts.get(r.found.source, 0) + 1
    head = ", ".join(f"{counts[s]} from {label}" for s, label in
                     (("cache", "your tuning cache"), ("shipped", "archdsl's shipped table"),
                      ("default", "the kernels' defaults")) if counts.get(s))
    lines = [f"tuning: {len(rows)} tunable launches: {head or 'none'}"]
    for r in rows:
        config = " ".join(f"{k}={v}" for k, v in sorted(r.kwargs().items())) or "-"
        lines.append(f"  {r.node:<28} {r.kernel:<13} {r.found.describe():<10} {config}")
    return lines


def tuning_report(schedule, dtype: Any, batches: Sequence[int], cache: TuneCache | None = None,
                  shipped: ShippedTables | None = None, infos: Sequence[DeviceInfo] | None = None) -> list[str]:
    """``archdsl compile --explain``'s tuning lines: for each device of `infos` (default: this
    machine's GPU; without one, each GPU with a shipped table, taken with this machine's torch and
    Triton versions) and batch size, where each tunable launch's configuration comes from."""
    import torch

    cache = cache if cache is not None else TuneCache()
    shipped = shipped if shipped is not None else ShippedTables()
    if infos is None:
        if torch.cuda.is_available():
            infos = [DeviceInfo.current("cuda")]
        else:
            here = DeviceInfo.current("cpu")
            infos = [DeviceInfo(name, capability, here.torch, here.triton) for name, capability, _ in shipped.devices()]
    if not infos:
        return ["tuning: no GPU here and no shipped table for any GPU: every launch would use the kernels' defaults"]
    lines = []
    for info in infos:
        for batch in batches:
            rows = launch_tunings(schedule, batch, dtype, cache, info, shipped)
            body = explain_tuning(rows)
            lines += [f"{body[0]} (on {info.name}, sm {info.capability}, batch {batch})", *body[1:]]
    return lines


def launch_candidates(launch: ConvLaunch, dtype: Any, device: Any = "cuda", keep: int | None = 4,
                      ceilings: Any = None, tma_top: int = 2) -> list[dict]:
    """The configurations autotuning tries for one conv2d launch: `conv_candidates` of its path,
    on a GPU pruned to the `keep` the performance model (`archdsl.runtime.perfmodel`) predicts
    fastest with `ceilings` (default: the device's SM count and L2 on H200 datasheet rates).
    Where a candidate's tiles leave the GPU under-filled, it competes as two: without split-K
    and with the split ``conv2d`` would choose (`split_k_variants`).  A gemm-path launch also
    tries the TMA kernel with the best `tma_top` unsplit tiles (`tma_variants`): the model cannot
    tell the two kernels apart, the timing can."""
    import torch

    from .perfmodel import Ceilings, conv_problem, prune

    device = torch.device(device)
    candidates = conv_candidates(launch.path, dtype, device.type)
    if not keep or device.type not in GPU_LIKE:
        return candidates
    ceilings = ceilings or Ceilings.for_device(device)
    problem = conv_problem(launch.node, launch.x_shape, launch.out_shape, launch.kernel, launch.groups,
                           launch.residual, getattr(torch, dtype_name(dtype)).itemsize,
                           depthwise=launch.path == "depthwise", gate=launch.gate)
    kept = prune(problem, split_k_variants(launch, candidates, ceilings.sms), ceilings, keep=keep)
    return kept + tma_variants(launch, kept, dtype, top=tma_top)


def tma_variants(launch: ConvLaunch, candidates: Iterable[Mapping[str, Any]], dtype: Any, top: int = 2) -> list[dict]:
    """{..., split_k: 1, tma: True} for the first `top` distinct tiles of `candidates` where
    ``conv2d(tma=True)`` would run its TMA kernel on this launch: the gemm path, no gate or layer
    norm, rows TMA can copy (``conv_tma_supported``).  Elsewhere, none.  (A launch whose conv
    also applies a prologue in the program falls back to the plain kernel there: ConvLaunch
    does not carry the prologue, so that is the one mismatch left, and it costs no error.)"""
    import torch

    if launch.path != "gemm" or launch.gate or launch.ln:
        return []
    supported = kernel_module("conv2d").conv_tma_supported
    torch_dtype = getattr(torch, dtype_name(dtype))
    out, seen = [], set()
    for config in candidates:
        if len(out) == top:
            break
        blocks = tuple(config.get(k) for k in ("block_m", "block_n", "block_k", "num_warps", "num_stages"))
        if blocks in seen or not all(blocks[:3]):
            continue
        seen.add(blocks)
        if supported(torch_dtype, launch.x_shape[3], launch.out_shape[3], blocks[:3]) is None:
            out.append({**config, "split_k": 1, "tma": True})
    return out


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
        split = split_rule(launch.path, m, kg, k, blocks, sms, launch.groups, cg, ln=launch.ln) if all(blocks) else 1
        out += [{**config, "split_k": 1}, {**config, "split_k": split}] if split > 1 else [dict(config)]
    return out


def _tune_launch(launch: ConvLaunch, dtype, device, cache, info, timer, seed, keep=4, ceilings=None) -> dict:
    import torch

    mod = kernel_module("conv2d")
    g = torch.Generator().manual_seed(seed)
    kh, kw = launch.kernel
    cin, cout = launch.x_shape[3], launch.out_shape[3]
    x = _random(launch.x_shape, g, device, dtype)
    w = torch.randn(cout, cin // launch.groups, kh, kw, generator=g) / math.sqrt(kh * kw * cin / launch.groups)
    wp = mod.pack_conv_weight(w, launch.groups, dtype).to(device)
    out = torch.empty(launch.out_shape, device=device, dtype=dtype)
    bias = torch.randn(cout, generator=g).to(device)
    res = _random(launch.out_shape, g, device, dtype) if launch.residual else None
    gate = _random((launch.x_shape[0], 1, 1, cin), g, device, dtype, uniform=True) if launch.gate else None
    ln = w.reshape(cout, cin).sum(dim=1).float().to(device) if launch.ln else None  # a folded layer norm's c
    return tune_conv2d(x, wp, out, bias=bias, residual=res, act=launch.act, timer=timer, cache=cache, info=info,
                       candidates=launch_candidates(launch, dtype, device, keep, ceilings), in_gate=gate, in_ln=ln,
                       **launch.geometry()).config


__all__ = ["ChainLaunch", "ConvLaunch", "DeviceInfo", "Found", "LaunchTuning", "LinearLaunch", "ShippedTables",
           "TuneCache", "TuneCacheWarning", "TuneError", "TuneKey", "TuneResult", "Trial", "autotune", "chain_candidates",
           "chain_launches", "conv_candidates", "conv_launches", "conv_signature", "default_cache_path", "explain_tuning",
           "find_config", "kernel_module", "launch_candidates", "launch_tunings", "linear_candidates", "linear_launches",
           "lookup_conv2d", "network_tuning", "read_table", "shipped_dir", "split_k_variants", "table_file_name",
           "tma_variants", "tune_chain", "tune_conv2d", "tune_linear", "tuning_launches"]
