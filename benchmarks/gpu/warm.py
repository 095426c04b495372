"""Warm Triton's on-disk cache before anything is timed: record every kernel specialization the
check will launch, then compile them all in parallel (16 processes on the H200 machine).

Without this, Triton compiles each specialization serially at its first launch (about 2-3 s for
a bf16/fp16 kernel, 6 s for an fp32 one, on one core), in the middle of the timed stages.

Recording needs no GPU: in a child process a fake Triton driver reports what an H100/H200 reports
(target cuda, sm_90, warp 32), the generated program runs on tensors of torch's `meta` device, and
`knobs.runtime.jit_cache_hook` records each specialization (and skips compiling and launching).
Meta tensors keep their storage offsets in `data_ptr()`, so a view into the activation arena has
the alignment it has on the GPU (whose allocations start 512-byte aligned): the same 16-byte
divisibility, the same specialization.  Compiling a record (`JITFunction.preload`) writes the same
cache entry the launch would have: the later real launches load it from TRITON_CACHE_DIR.

    python -m benchmarks.gpu.warm --profile full -j 16            # record + compile
    python -m benchmarks.gpu.warm --profile full --save specs.json  # record only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

# The SM count conv2d's automatic split-K sees while recording (H100 SXM and H200: 132 SMs).
TARGET_SMS = int(os.environ.get("ARCHDSL_WARM_SMS", "132"))

# Compiled first, so that the longest compiles do not end up alone at the tail of the pool.
SLOW_FIRST = ("_chain_kernel", "_chain_grouped_kernel", "_conv_implicit_gemm_kernel", "_conv_gemm_kernel")


@dataclass(frozen=True)
class Record:
    """One kernel specialization: enough to compile it in another process."""

    module: str  # the generated program's module name
    path: str  # its file (Triton reads kernels' source from files)
    fn: str  # the @triton.jit function
    spec: str  # Triton's serialized specialization (JITFunction.preload's argument)

    def key(self) -> tuple:
        return (self.module, self.fn, self.spec)


# ---- in a child process -----------------------------------------------------------------------


def install_fake_sm90_driver() -> None:
    """Make this process's Triton believe it drives an sm_90 GPU (no launch ever happens)."""
    os.environ.pop("TRITON_INTERPRET", None)  # kernels must be JITFunctions, not interpreted
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class FakeSm90Driver:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("meta")

    driver.set_active(FakeSm90Driver())


def _child_init() -> None:
    install_fake_sm90_driver()


def _hook_recording_into(found: dict, only: str | None = None):
    """A jit_cache_hook adding each specialization to `found` and skipping the compile (unless
    the function is `only`, which then compiles -- or loads from the disk cache)."""

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):  # noqa: A002 - Triton's names
        f = fn.jit_function
        rec = Record(f.__module__, f.fn.__code__.co_filename, fn.name, compile["specialization_data"])
        found.setdefault(rec.key(), rec)
        return only is None or fn.name != only

    return hook


def run_program_on_meta(spec, batch: int) -> None:
    """What the check does with this program at this batch, on meta tensors: build it as the
    check builds it (`archdsl.runtime.build`, origin ""), prepare its weights, run a forward."""
    import torch

    from archdsl.backends.torch_backend import to_torch
    from archdsl.runtime import build, import_program

    graph = spec.net.load()
    module = import_program(build(graph, spec.dtype, disable=spec.disable).program.source)
    if hasattr(module, "_conv_sm_count"):  # split-K is chosen from the SM count: the GPU's, not meta's 0
        module._conv_sm_count = lambda device: TARGET_SMS
    module.PROGRAMMATIC_LAUNCH = spec.pdl  # set either way: a pool child reuses modules across tasks
    meta = torch.device("meta")
    state = {k: v.detach() for k, v in to_torch(graph).eval().state_dict().items()}
    network = module.Network(state, meta)
    inputs = [torch.empty(batch, *graph.shape(n), device=meta) for n in graph.inputs]
    network(*inputs)


def record_one(task) -> dict:
    """(ProgramSpec, batch) -> the specializations its forward launches."""
    spec, batch = task
    from triton import knobs

    found: dict = {}
    t0 = time.perf_counter()
    knobs.runtime.jit_cache_hook = _hook_recording_into(found)
    try:
        run_program_on_meta(spec, batch)
        error = None
    except Exception as exc:  # noqa: BLE001 - reported, the other programs go on
        error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        knobs.runtime.jit_cache_hook = None
    return {"program": spec.label(), "batch": batch, "records": list(found.values()), "error": error,
            "seconds": round(time.perf_counter() - t0, 2)}


def load_from_cache(task) -> int:
    """(ProgramSpec, batch, fn): run the program on meta tensors again, compiling only `fn`'s
    launches (no launch: JITFunction.run(warmup=True)); a record compiled earlier is then a
    load from TRITON_CACHE_DIR, not a new entry.  Returns how many specializations were met."""
    spec, batch, fn = task
    from triton import knobs
    from triton.runtime.jit import JITFunction

    found: dict = {}
    original = JITFunction.__getitem__
    JITFunction.__getitem__ = lambda self, grid: (lambda *a, **k: self.run(*a, grid=grid, warmup=True, **k))
    knobs.runtime.jit_cache_hook = _hook_recording_into(found, only=fn)
    try:
        run_program_on_meta(spec, batch)
    finally:
        knobs.runtime.jit_cache_hook = None
        JITFunction.__getitem__ = original
    return len(found)


def _import_file(module: str, path: str):
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        spec.loader.exec_module(mod)
    return sys.modules[module]


def build_launcher(kernel) -> str | None:
    """Build the kernel's host-side launcher into the cache too; None when built, else why not.

    Triton 3.6 (the GPU machine's) compiles a small C launcher per kernel signature and constants
    with the host C compiler (about a second each) at a kernel's first launch, serially, and
    caches it in TRITON_CACHE_DIR; building it here moves that into the parallel pool.  Later
    Tritons launch through one generic launcher: nothing to build, and this reports why."""
    try:
        from triton.backends.nvidia.driver import CudaLauncher

        CudaLauncher(kernel.src, kernel.metadata)
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. no libcuda on a CPU machine; the launch will build it
        return f"{type(exc).__name__}: {exc}"[:200]


def compile_one(rec: Record) -> tuple[str, float, str | None, str | None]:
    """Compile one record into TRITON_CACHE_DIR (a fast load when it is there already), and its
    launcher: (function, seconds, compile error, launcher error)."""
    t0 = time.perf_counter()
    launcher_error = None
    try:
        data = json.loads(rec.spec)
        data["options"].pop("extern_libs", None)  # an absolute path where it was recorded: use this machine's
        kernel = getattr(_import_file(rec.module, rec.path), rec.fn).preload(json.dumps(data))
        error = None
        launcher_error = build_launcher(kernel)
    except Exception as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"[:300]
    return rec.fn, time.perf_counter() - t0, error, launcher_error


# ---- in the parent ----------------------------------------------------------------------------


def _pool(jobs: int):
    # spawn, never fork: a forked child would inherit this process's Triton (maybe interpreted,
    # maybe bound to the real driver); the children must start clean with the fake driver.
    return multiprocessing.get_context("spawn").Pool(max(1, jobs), initializer=_child_init)


def record(specs, jobs: int, timeout_s: float = 300.0) -> tuple[list[Record], list[dict]]:
    """Every distinct specialization the programs launch at their batch sizes, and one report
    per (program, batch)."""
    tasks = [(s, b) for s in specs for b in s.batches]
    with _pool(min(jobs, len(tasks))) as pool:
        # a limit: a pool whose children die at start would otherwise respawn them forever
        reports = pool.map_async(record_one, tasks, chunksize=1).get(timeout=timeout_s)
    seen: dict = {}
    for r in reports:
        for rec in r.pop("records"):
            seen.setdefault(rec.key(), rec)
        r["distinct_so_far"] = len(seen)
    return list(seen.values()), reports


def compile_records(records: list[Record], jobs: int, timeout_s: float) -> dict:
    """Compile `records` in `jobs` processes; stops waiting after `timeout_s` (what is compiled
    by then stays in the cache)."""
    order = sorted(records, key=lambda r: (r.fn not in SLOW_FIRST, SLOW_FIRST.index(r.fn) if r.fn in SLOW_FIRST
                                           else 0, -len(r.spec)))
    t0 = time.perf_counter()
    done, errors, launcher_errors, cpu, timed_out = 0, [], [], 0.0, False
    pool = _pool(jobs)
    try:
        results = pool.imap_unordered(compile_one, order, chunksize=1)
        for _ in order:
            try:
                fn, seconds, error, launcher_error = results.next(
                    timeout=max(0.1, timeout_s - (time.perf_counter() - t0)))
            except multiprocessing.TimeoutError:
                timed_out = True
                break
            done += 1
            cpu += seconds
            if error:
                errors.append(f"{fn}: {error}")
            elif launcher_error:
                launcher_errors.append(f"{fn}: {launcher_error}")
    finally:
        pool.terminate()
        pool.join()
    return {"kernels": len(records), "compiled": done, "failed": len(errors), "errors": errors[:10],
            "launchers_built": done - len(errors) - len(launcher_errors), "launcher_errors": launcher_errors[:3],
            "timed_out": timed_out, "wall_s": round(time.perf_counter() - t0, 1), "compile_cpu_s": round(cpu, 1),
            "jobs": jobs}


def save_records(records: list[Record], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump([r.__dict__ for r in records], f)


def load_records(path: str) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return [Record(**r) for r in json.load(f)]


def cache_entries(cache_dir: str | None = None) -> int:
    """How many compiled kernels Triton's on-disk cache holds (one .json of metadata each, beside
    its binary); None-safe: 0 when the directory does not exist."""
    root = cache_dir or os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton",
                                                                           "cache")
    count = 0
    for _, _, files in os.walk(root):
        count += sum(1 for f in files if f.endswith(".json") and not f.startswith("__grp__"))
    return count


def main(argv=None) -> int:
    from .profiles import PROFILES, programs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="full", choices=sorted(PROFILES))
    ap.add_argument("--stages", default="correctness,zoo,e2e,chain_ab,layers,pdl_ab,modern,e2e_fp16")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--save", help="write the records to this JSON file; do not compile")
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args(argv)
    specs = programs(PROFILES[a.profile], tuple(a.stages.split(",")))
    records, reports = record(specs, a.jobs)
    for r in reports:
        print(json.dumps(r))
    if a.save:
        save_records(records, a.save)
        print(f"warm: {len(records)} specializations saved to {a.save}")
        return 0
    summary = compile_records(records, a.jobs, a.timeout)
    print(json.dumps(summary))
    return 1 if summary["failed"] or summary["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main())
