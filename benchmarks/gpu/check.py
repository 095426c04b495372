"""archdsl's one-run GPU check: stages with a deadline, every result streamed to OUT as it comes.

    python -m benchmarks.gpu.check --out OUT --budget 450            # the full run (check.sh does this)
    python -m benchmarks.gpu.check --profile smoke --out OUT         # tiny, on the CPU (Triton's interpreter)
    python -m benchmarks.gpu.check --only torch-compile --out OUT    # torch.compile max-autotune: its own run
    python -m benchmarks.gpu.check --only pytest-gpu --out OUT       # the GPU test tier after a warm compile
    python -m benchmarks.gpu.check --only tune --out OUT             # tune into OUT/tune.json, then tuned vs default

Stages, in order of value (each started only while its budget is left; see profiles.FULL_BUDGETS):
  stack        versions, device, clocks, Triton's cache fingerprint
  warm         record every kernel specialization the later stages launch; compile them in parallel
  peaks        measured ceilings: bf16 matmul TFLOP/s, copy GB/s
  correctness  ResNet-50 bf16/fp16/fp32 x batch 1/32/256 against float64, next to PyTorch's own error;
               NaN-poisoned arena rerun bit-identical; CUDA-graph replay equal to plain launches; a
               second input through the captured graph
  zoo          the same checks for VGG16, GoogLeNet, DenseNet-121, ResNeXt-50 at a small batch
  e2e          bf16 end to end: eager NCHW, eager channels-last + cudnn.benchmark, that in a CUDA graph,
               archdsl plain, archdsl graphed (the bench harness's providers and checks)
  chain_ab     ResNet-50 bf16 graphed, with and without the conv-chain fusion
  layers       every distinct ResNet-50 conv launch against the cuDNN convs it replaces: µs, TFLOP/s, %
               of the roofline floor
  pdl_ab       ResNet-50 bf16 graphed, with and without programmatic dependent launch (same bits)
  e2e_fp16     fp16 end to end, if time is left

`--only tune` (a run of its own): stack; tune (ResNet-50 bf16's conv, chain and linear launches at
batch 1/32/256, candidates compiled 16-way first, into OUT/tune.json); tuned_e2e (graphed, tuned
against the defaults, both programs' kernels compiled 16-way first).  `python -m benchmarks.gpu.collect OUT --tuned` ships the entries.

fp32: archdsl's kernels compute fp32 in IEEE FMA; PyTorch's fp32 baselines are taken with TF32 off
(both flags), and every fp32 row says so (`fp32_math`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import subprocess
import sys
import time

# The archdsl names this check relies on (kept short: the runtime and bench modules are being
# reorganized; these must keep existing under these names).
from archdsl.backends.torch_backend import to_torch
from archdsl.bench.harness import (BenchConfig, CudaEventTimer, WallTimer, environment,
                                   fold_bn_graph, folded_state, measure_peaks, reference_state, rel_error,
                                   roofline_floor, run_bench, tolerance)
from archdsl.runtime.cudagraph import EmulatedGraphBackend
from archdsl.runtime import CompiledModel, build

from . import launches as L
from .profiles import NO_CHAIN, PROFILES, Profile, programs
from .runner import Context, Results, Stage, run_stages

E2E = ("eager_nchw", "eager_cl", "eager_cl_graph", "archdsl", "archdsl_graph")
FP32_MATH = "archdsl: IEEE fp32 FMA; PyTorch baseline: IEEE fp32 (TF32 off)"


# ---- helpers ----------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _sync(device) -> None:
    if device.type == "cuda":
        _torch().cuda.synchronize()


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        _torch().cuda.empty_cache()


def tf32_off() -> None:
    """PyTorch's fp32 convs and matmuls in IEEE fp32, as archdsl's kernels compute."""
    torch = _torch()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def make_timer(profile: Profile, device, flush_l2: bool = True):
    if device.type == "cuda":
        return CudaEventTimer(min_iters=profile.iters, warmup_ms=profile.warmup_ms, flush_l2=flush_l2)
    return WallTimer(min_iters=max(1, profile.iters), warmup=0)


def compiled_model(graph, dtype: str, device, *, graphed: bool = False, disable=()) -> CompiledModel:
    """The program the warm stage recorded (`build(graph, dtype, disable=...)`, origin ""), on the
    kernels' default block sizes; graphed: CUDA-graph replay (emulated on the CPU)."""
    backend = None if device.type == "cuda" else EmulatedGraphBackend(warmup=0)
    return CompiledModel(build(graph, dtype, disable=tuple(disable)), device, cuda_graph=graphed,
                         graph_backend=backend)


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def poison_arena(model: CompiledModel, batch: int) -> None:
    """NaN into every byte of the model's activation arena for this batch size."""
    torch = _torch()
    buffers = model._network.buffers(batch)  # by name (a list in older generated programs)
    for t in buffers.values() if isinstance(buffers, dict) else buffers:
        if t is not None and t.is_floating_point():
            storage = t.untyped_storage()
            whole = torch.empty(0, dtype=t.dtype, device=t.device)
            whole.set_(storage, 0, (storage.nbytes() // t.element_size(),)).fill_(float("nan"))


# ---- stages -----------------------------------------------------------------------------------


def stage_stack(ctx: Context) -> None:
    torch = _torch()
    opts = ctx.options
    env = environment(opts.device)
    env["triton_cache_fingerprint"] = triton_fingerprint()
    env["triton_cache_dir"] = os.environ.get("TRITON_CACHE_DIR")
    env["ptxas"] = ptxas_version() if opts.device.type == "cuda" else None
    try:
        import lark

        env["lark"] = f"{lark.__version__} from {os.path.dirname(lark.__file__)}"
    except ImportError as exc:  # archdsl's parser needs it: nothing else would work
        env["lark"] = f"missing: {exc}"
    env["profile"] = opts.profile.name
    try:
        env["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    except RuntimeError as exc:  # a torch that refuses the legacy flags' getters: say so, go on
        env["tf32"] = f"unknown: {exc}"[:200]
    env["fp32_math"] = FP32_MATH
    if opts.device.type == "cuda":
        props = torch.cuda.get_device_properties(opts.device)
        env["l2_mib"] = round(getattr(props, "L2_cache_size", 0) / 2 ** 20, 1)
    ctx.shared["env"] = env
    import json

    with open(os.path.join(opts.out, "env.json"), "w", encoding="utf-8") as f:
        json.dump(env, f, indent=1, default=str)
    ctx.emit(stage="stack", kind="env", **env)


def triton_fingerprint() -> str | None:
    """sha256(triton_key())[:16]: equal on two machines = a cache built on one is valid on the other."""
    try:
        from triton.runtime.cache import triton_key
    except ImportError:
        try:
            from triton.compiler.compiler import triton_key
        except ImportError:
            return None
    return hashlib.sha256(triton_key().encode()).hexdigest()[:16]


def ptxas_version() -> str | None:
    try:
        from triton import knobs

        path = knobs.nvidia.ptxas.path
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
        return f"{path}: {out.strip().splitlines()[-1]}"
    except Exception as exc:  # noqa: BLE001 - informational only
        return f"unknown ({type(exc).__name__})"


def stage_warm(ctx: Context) -> None:
    from . import warm

    opts = ctx.options
    specs = programs(opts.profile, opts.stage_names)
    before = warm.cache_entries()
    records, reports = warm.record(specs, opts.jobs, timeout_s=max(10.0, ctx.left() - 120))
    for r in reports:
        ctx.emit(stage="warm", kind="record", **r)
    summary = {"kernels": len(records)}
    if opts.profile.compile_kernels:
        # past 240 s the rest compile at first launch (serially): better than nothing else running
        summary = warm.compile_records(records, opts.jobs, timeout_s=max(10.0, min(240.0, ctx.left() - 60)))
    summary["cache_entries_before"], summary["cache_entries_after"] = before, warm.cache_entries()
    ctx.emit(stage="warm", kind="compile", ok=not summary.get("failed") and not summary.get("timed_out"), **summary)


def stage_peaks(ctx: Context) -> None:
    opts = ctx.options
    peaks = measure_peaks(make_timer(opts.profile, opts.device, flush_l2=False), opts.device,
                          ("bfloat16", "float16"), opts.profile.peak_n, opts.profile.copy_bytes)
    ctx.shared["peaks"] = peaks
    for dtype, flops in peaks.matmul_flops.items():
        ctx.emit(stage="peaks", kind="ceiling", what=f"matmul {dtype}", value=round(flops / 1e12, 2), unit="TFLOP/s",
                 how=peaks.how["matmul"])
    ctx.emit(stage="peaks", kind="ceiling", what="copy", value=round(peaks.bandwidth / 1e9, 1), unit="GB/s",
             how=peaks.how["copy"])


def check_net(ctx: Context, stage: str, net, dtype: str, batches) -> None:
    """Correctness of one network at one dtype, per batch; one "check" row each."""
    torch = _torch()
    device = ctx.options.device
    graph = net.load()
    state = reference_state(graph, 0)
    folded_graph, folds = fold_bn_graph(graph)
    fstate = folded_state(state, folds)
    ref64 = to_torch(folded_graph).eval()
    ref64.load_state_dict(fstate)
    ref64 = ref64.to(device=device, dtype=torch.float64)
    dt = getattr(torch, dtype)
    theirs = to_torch(folded_graph).eval()
    theirs.load_state_dict(fstate)
    theirs = theirs.to(device=device, dtype=dt).to(memory_format=torch.channels_last)
    plain = compiled_model(graph, dtype, device)
    plain.load_state_dict(state)
    graphed = compiled_model(graph, dtype, device, graphed=True)
    graphed.load_state_dict(state)
    gen = torch.Generator().manual_seed(1234)
    shape = graph.shape(graph.inputs[0])
    for batch in batches:
        x = torch.randn(batch, *shape, generator=gen).to(device=device, dtype=dt)  # fresh inputs per check
        x2 = torch.randn(batch, *shape, generator=gen).to(device=device, dtype=dt)
        t0 = time.perf_counter()
        with torch.inference_mode():
            expected = _first(ref64(x.double()))
            torch_out = _first(theirs(x.contiguous(memory_format=torch.channels_last)))
            ours = _first(plain(x)).clone()
            poison_arena(plain, batch)
            ours_poisoned = _first(plain(x)).clone()
            ours_graphed = _first(graphed(x)).clone()  # capture (after warm-up) and replay
            ours_graphed2 = _first(graphed(x2)).clone()  # a second input through the captured graph
            ours2 = _first(plain(x2)).clone()
            _sync(device)
        err, torch_err = rel_error(ours, expected), rel_error(torch_out, expected)
        row = dict(stage=stage, kind="check", net=net.name, dtype=dtype, batch=batch, err=err, torch_err=torch_err,
                   tol=tolerance(dtype, torch_err), finite=bool(torch.isfinite(ours).all()),
                   poisoned_rerun_identical=bool(torch.equal(ours, ours_poisoned)),
                   graph_equals_plain=bool(torch.equal(ours_graphed, ours)),
                   graph_second_input_equals_plain=bool(torch.equal(ours_graphed2, ours2)),
                   seconds=round(time.perf_counter() - t0, 2))
        if dtype == "float32":
            row["fp32_math"] = FP32_MATH
        row["ok"] = bool(row["finite"] and err <= row["tol"] and row["poisoned_rerun_identical"]
                         and row["graph_equals_plain"] and row["graph_second_input_equals_plain"])
        ctx.emit(**row)
        del x, x2, expected, torch_out, ours, ours_poisoned, ours_graphed, ours_graphed2, ours2
    del plain, graphed, theirs, ref64
    _free(device)


def stage_correctness(ctx: Context) -> None:
    p = ctx.options.profile
    for dtype in p.r50_dtypes:
        check_net(ctx, "correctness", p.r50, dtype, p.r50_batches)


def nets_in_time(ctx: Context, stage: str, nets):
    """The networks a stage still has time for; the others are recorded as skipped."""
    for net in nets:
        if ctx.left() < 5:
            ctx.emit(stage=stage, kind="check", net=net.name, status="skipped", why="out of time")
        else:
            yield net


def stage_zoo(ctx: Context) -> None:
    p = ctx.options.profile
    for net in nets_in_time(ctx, "zoo", p.zoo):
        check_net(ctx, "zoo", net, "bfloat16", (p.zoo_batch,))


def bench_e2e(ctx: Context, stage: str, dtype: str, providers=E2E, batches=None, net=None) -> None:
    """The bench harness's end-to-end providers and checks (of `net`, default ResNet-50); one
    "timing" row per provider x batch."""
    opts, p = ctx.options, ctx.options.profile
    net = net or p.r50
    graph = net.load()
    config = BenchConfig(batches=tuple(batches or p.e2e_batches), dtypes=(dtype,), layers=False, e2e=True,
                         e2e_providers=tuple(providers), iters=max(1, p.iters), warmup_ms=p.warmup_ms,
                         peak_matmul_n=p.peak_n, peak_copy_bytes=p.copy_bytes)
    run = run_bench(graph, config, device=opts.device, timer=make_timer(p, opts.device), peaks=ctx.shared.get("peaks"),
                    source=net.name)
    for r in run.rows:
        ctx.emit(stage=stage, kind="timing", net=net.name, provider=r.provider, dtype=r.dtype, batch=r.batch,
                 status=r.status, ms=r.ms, q10_ms=r.q10_ms, q90_ms=r.q90_ms, iters=r.iters, err=r.error,
                 tol=r.tolerance, img_s=r.images_per_s, tflops=r.tflops, pct_floor=r.pct_floor, note=r.note[:300],
                 ok=r.status in ("ok", "skipped"))
    _free(opts.device)


def stage_e2e(ctx: Context) -> None:
    bench_e2e(ctx, "e2e", "bfloat16")


def stage_modern(ctx: Context) -> None:
    """MobileNetV3 and EfficientNet-B0 (depthwise convs and SE scales, where cuDNN's channels-last
    path is weakest): correctness as the zoo's, then end to end against cuDNN in a CUDA graph."""
    p = ctx.options.profile
    for net in nets_in_time(ctx, "modern", p.modern):
        check_net(ctx, "modern", net, "bfloat16", (p.zoo_batch,))
        bench_e2e(ctx, "modern", "bfloat16", providers=("eager_cl_graph", "archdsl_graph"), batches=p.modern_batches,
                  net=net)


def stage_e2e_fp16(ctx: Context) -> None:
    bench_e2e(ctx, "e2e_fp16", "float16")


def stage_torch_compile(ctx: Context) -> None:
    bench_e2e(ctx, "torch_compile", "bfloat16", providers=("eager_cl_graph", "torch_compile"))


def _ab_setup(ctx: Context, seed: int):
    """What an A/B stage of ResNet-50 bf16 needs: its graph, reference weights, a timer and one
    input per end-to-end batch size."""
    torch = _torch()
    opts, p = ctx.options, ctx.options.profile
    graph = p.r50.load()
    gen = torch.Generator().manual_seed(seed)
    shape = graph.shape(graph.inputs[0])
    xs = {b: torch.randn(b, *shape, generator=gen).to(device=opts.device, dtype=torch.bfloat16)
          for b in p.e2e_batches}
    return graph, reference_state(graph, 0), make_timer(p, opts.device), xs


def stage_chain_ab(ctx: Context) -> None:
    """ResNet-50 bf16 in a CUDA graph with and without the chain fusion: time and agreement."""
    torch = _torch()
    opts, p = ctx.options, ctx.options.profile
    graph, state, timer, xs = _ab_setup(ctx, 99)
    outs = {}
    for disable in ((), NO_CHAIN):
        model = compiled_model(graph, "bfloat16", opts.device, graphed=True, disable=disable)
        model.load_state_dict(state)
        for b, x in xs.items():
            with torch.inference_mode():
                outs[(disable, b)] = _first(model(x)).clone()
                t = timer(lambda: model(x))
            row = dict(stage="chain_ab", kind="timing", net=p.r50.name, provider="archdsl_graph", dtype="bfloat16",
                       batch=b, chain=not disable, ms=t.median_ms, q10_ms=t.q10_ms, q90_ms=t.q90_ms, iters=t.iters,
                       img_s=b / (t.median_ms * 1e-3))
            if disable:  # the unfused program computes the same function
                row["err_vs_chain"] = rel_error(outs[(disable, b)], outs[((), b)])
                row["tol"] = tolerance("bfloat16", None)
                row["ok"] = row["err_vs_chain"] <= row["tol"]
            ctx.emit(**row)
        del model
        _free(opts.device)


def stage_pdl_ab(ctx: Context) -> None:
    """ResNet-50 bf16 in a CUDA graph with and without programmatic dependent launch (kernels/host.py:
    each kernel launches while the previous one finishes and waits on the GPU for its writes): time,
    and the outputs, which must be the same bits."""
    torch = _torch()
    opts, p = ctx.options, ctx.options.profile
    graph, state, timer, xs = _ab_setup(ctx, 98)
    outs = {}
    for pdl in (False, True):
        model = compiled_model(graph, "bfloat16", opts.device, graphed=True)
        model.load_state_dict(state)
        module = model._module  # shared by every model of this source: the switch goes back off below
        module.PROGRAMMATIC_LAUNCH = pdl
        try:
            for b, x in xs.items():
                with torch.inference_mode():
                    outs[(pdl, b)] = _first(model(x)).clone()  # captured here, with the switch as set
                    t = timer(lambda: model(x))
                row = dict(stage="pdl_ab", kind="timing", net=p.r50.name, provider="archdsl_graph",
                           dtype="bfloat16", batch=b, pdl=pdl, ms=t.median_ms, q10_ms=t.q10_ms, q90_ms=t.q90_ms,
                           iters=t.iters, img_s=b / (t.median_ms * 1e-3))
                if pdl:  # the same kernels on the same data: the same bits
                    row["ok"] = bool(torch.equal(outs[(pdl, b)], outs[(False, b)]))
                ctx.emit(**row)
        finally:
            module.PROGRAMMATIC_LAUNCH = False
        del model
        _free(opts.device)


def stage_layers(ctx: Context) -> None:
    """Every distinct conv launch of ResNet-50 bf16 against PyTorch doing the same nodes' work."""
    torch = _torch()
    opts, p = ctx.options, ctx.options.profile
    device, dtype = opts.device, "bfloat16"
    graph = p.r50.load()
    state = reference_state(graph, 0)
    folded_graph, folds = fold_bn_graph(graph)
    fstate = folded_state(state, folds)
    model = compiled_model(graph, dtype, device)
    model.load_state_dict(state)
    optimized = model.compiled.optimized.graph
    peaks = ctx.shared.get("peaks")
    timer = make_timer(p, device)
    gen = torch.Generator().manual_seed(7)
    shape = graph.shape(graph.inputs[0])
    for batch in p.layer_batches:
        with torch.inference_mode():
            model(torch.randn(batch, *shape, generator=gen).to(device=device, dtype=torch.bfloat16))  # prepares
            network = model._network
            recorded = L.record_conv_launches(model._module, network,
                                              [torch.randn(batch, *shape, generator=gen).to(device=device)], optimized)
        for i, launch in enumerate(L.distinct_launches(recorded)):
            if ctx.left() < 3:
                ctx.emit(stage="layers", kind="timing", launch=launch.label(), batch=batch, status="skipped",
                         why="out of time")
                continue
            ctx.emit(**time_launch(launch, optimized, fstate, timer, peaks, dtype, i))
        _free(device)
    del model
    _free(device)


def time_launch(launch, graph, folded, timer, peaks, dtype, seed) -> dict:
    """One launch: ours and PyTorch's on the same inputs, checked against each other, timed."""
    torch = _torch()
    row = dict(stage="layers", kind="timing", launch=launch.label(), kernel=launch.kernel, batch=launch.batch,
               dtype=dtype, count=launch.count, in_place=launch.writes_over_an_input())
    if row["in_place"]:  # replays must not change their own inputs
        launch = launch.with_private_outputs()
    try:
        theirs = L.CudnnEquivalent.build(launch, graph, folded)
    except L.NotModelled as exc:
        return {**row, "status": "skipped", "why": str(exc), "ok": True}
    flops, nbytes = L.launch_work(theirs.nodes, launch.kernel, launch.batch, 2)
    row.update(flops=flops, bytes=nbytes, convs=len(theirs.nodes))
    torch.backends.cudnn.benchmark = True
    try:
        with torch.inference_mode():
            L.randomize_inputs(launch, seed)
            L.poison_outputs(launch)
            launch.run()
            expected = theirs.run()
            ours = L.outputs_nchw(launch)
            row["err_vs_cudnn"] = max(rel_error(o, e) for o, e in zip(ours, expected))
            t_ours = timer(launch.run)
            t_theirs = timer(theirs.run)
    finally:
        torch.backends.cudnn.benchmark = False
    row["tol"] = tolerance(dtype, None)
    row["ok"] = row["err_vs_cudnn"] <= row["tol"]
    row["status"] = "ok" if row["ok"] else "wrong"
    for who, t in (("archdsl", t_ours), ("cudnn", t_theirs)):
        seconds = t.median_ms * 1e-3
        row[f"{who}_us"] = t.median_ms * 1e3
        row[f"{who}_tflops"] = flops / seconds / 1e12
        if peaks is not None and peaks.flops(dtype):
            floor = roofline_floor(flops, nbytes, peaks.flops(dtype), peaks.bandwidth)
            row[f"{who}_pct_floor"] = 100.0 * floor.seconds / seconds
            row["bound"] = floor.bound
    row["speedup_vs_cudnn"] = t_theirs.median_ms / t_ours.median_ms
    return row


# ---- tuning: the entries shipped in archdsl/runtime/tuned/ ----------------------------------------

# What `--only tune` tunes, per profile: (network, dtype, batch sizes).  ResNet-50 bf16 at the
# end-to-end batch sizes: the launches the e2e and layers stages time.
TUNE_FILE = "tune.json"  # in OUT: the entries measured in this run (collect.py --tuned ships them)


def tune_plan(profile: Profile):
    return [(profile.r50, "bfloat16", profile.e2e_batches)]


class OutOfTime(Exception):
    """Raised from the tuner's progress callback: the stage's time is up (what was measured stays)."""


def _tuning_on_meta(net, dtype, batch, info, ceilings) -> None:
    """Tune one network at one batch size on meta tensors with a timer that runs nothing: every
    candidate of every launch without an exact entry is launched once (which the jit hook records)."""
    import tempfile

    from archdsl.runtime import build
    from archdsl.runtime.tune import TuneCache, network_tuning

    with tempfile.TemporaryDirectory() as tmp:
        schedule = build(net.load(), dtype).program.schedule
        network_tuning(schedule, batch, dtype, TuneCache(os.path.join(tmp, TUNE_FILE)), info,
                       autotune_missing=True, device="meta", timer=lambda fn: 1.0, ceilings=ceilings)


def _program_on_meta(net, dtype, batch, table) -> None:
    """One forward of the program the tuned_e2e stage builds, on meta tensors, with `table` as its
    tuning table ({}: the kernels' defaults)."""
    import torch

    from archdsl.backends.torch_backend import to_torch
    from archdsl.runtime import import_program

    graph = net.load()
    module = import_program(build(graph, dtype).program.source)
    from . import warm

    module._conv_sm_count = lambda device: warm.TARGET_SMS
    meta = torch.device("meta")
    state = {k: v.detach() for k, v in to_torch(graph).eval().state_dict().items()}
    network = module.Network(state, meta, tuning=lambda n: table)
    network(*[torch.empty(batch, *graph.shape(i), device=meta) for i in graph.inputs])


def record_task(task) -> dict:
    """In a warm.py pool child (fake sm_90 driver): the kernel specializations one task launches,
    recorded by Triton's jit hook (nothing compiles or runs).  ("tune", net, dtype, batch, info,
    ceilings): every candidate its tuning times; ("program", net, dtype, batch, table): a forward."""
    from triton import knobs

    from archdsl.runtime.tune import chain_module, kernel_module

    from . import warm

    what, net, dtype, batch, *rest = task
    for module in (kernel_module("conv2d"), chain_module()):  # split choices see the GPU's SM count
        module._conv_sm_count = lambda device: warm.TARGET_SMS
    found: dict = {}
    knobs.runtime.jit_cache_hook = warm._hook_recording_into(found)
    try:
        if what == "tune":
            _tuning_on_meta(net, dtype, batch, *rest)
        else:
            _program_on_meta(net, dtype, batch, *rest)
        error = None
    except Exception as exc:  # noqa: BLE001 - reported; what was recorded still compiles
        error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        knobs.runtime.jit_cache_hook = None
    return {"program": f"{what} {net.name} {dtype}", "batch": batch, "records": list(found.values()), "error": error}


def warm_tasks(ctx: Context, stage: str, tasks: list) -> None:
    """Record `tasks` (`record_task`) in parallel, then compile what they launch 16-way: serially,
    each specialization would compile at its first launch (2-3 s apiece, hundreds of them)."""
    from . import warm

    opts = ctx.options
    with warm._pool(min(opts.jobs, len(tasks))) as pool:
        reports = pool.map_async(record_task, tasks, chunksize=1).get(timeout=max(10.0, ctx.left() / 3))
    records: dict = {}
    for r in reports:
        for rec in r.pop("records"):
            records.setdefault(rec.key(), rec)
        ctx.emit(stage=stage, kind="record", **r)
    summary = warm.compile_records(list(records.values()), opts.jobs, timeout_s=max(10.0, ctx.left() / 2))
    ctx.emit(stage=stage, kind="compile", ok=not summary.get("failed") and not summary.get("timed_out"), **summary)


def stage_tune(ctx: Context) -> None:
    """Tune ResNet-50's conv, chain and linear launches (candidates pruned by the performance
    model, compiled in parallel first) into OUT/tune.json, until 20 s before the deadline; one
    "tune" row per batch size.  `python -m benchmarks.gpu.collect OUT --tuned` turns the file
    into the table shipped for this GPU."""
    torch = _torch()
    from archdsl.runtime.tune import DeviceInfo, ShippedTables, TuneCache, launch_tunings, network_tuning

    opts, p = ctx.options, ctx.options.profile
    device = opts.device
    info = DeviceInfo.current(device)
    ceilings = None
    if device.type == "cuda":
        from archdsl.runtime.perfmodel import Ceilings

        ceilings = Ceilings.for_device(device)
    if p.compile_kernels:
        warm_tasks(ctx, "tune", [("tune", net, dtype, b, info, ceilings) for net, dtype, batches in tune_plan(p)
                                 for b in batches])
    cache, shipped = TuneCache(os.path.join(opts.out, TUNE_FILE)), ShippedTables()
    timer = make_timer(p, device)
    margin = 20 + (EXTRA_BUDGETS["tuned_e2e"] if "tuned_e2e" in opts.stage_names else 0)

    def progress(done, total, node):
        if node and ctx.left() < margin:
            raise OutOfTime(f"{done} of {total} signatures tuned")

    for net, dtype, batches in tune_plan(p):
        schedule = build(net.load(), dtype).program.schedule
        for batch in batches:
            t0, why = time.perf_counter(), None
            try:
                with torch.inference_mode():
                    network_tuning(schedule, batch, dtype, cache, info, autotune_missing=True, device=device,
                                   timer=timer, ceilings=ceilings, shipped=shipped, progress=progress)
            except OutOfTime as exc:
                why = f"out of time: {exc}"
            rows = launch_tunings(schedule, batch, dtype, TuneCache(cache.path), info, shipped)
            sources = {s: sum(1 for r in rows if r.found.source == s) for s in ("cache", "shipped", "default")}
            ctx.emit(stage="tune", kind="tune", net=net.name, dtype=dtype, batch=batch, launches=len(rows),
                     signatures=len({(r.kernel, r.signature) for r in rows}), **sources,
                     seconds=round(time.perf_counter() - t0, 1), why=why, ok=why is None)
            _free(device)


def stage_tuned_e2e(ctx: Context) -> None:
    """ResNet-50 graphed with this run's tuning table against the kernels' defaults: both timed,
    the outputs compared (tuning must not change the function beyond rounding)."""
    torch = _torch()
    from archdsl.runtime.tune import DeviceInfo, TuneCache, network_tuning

    opts, p = ctx.options, ctx.options.profile
    info = DeviceInfo.current(opts.device)
    cache = TuneCache(os.path.join(opts.out, TUNE_FILE))
    timer = make_timer(p, opts.device)
    if p.compile_kernels:  # both programs' kernels, the tuned ones with this run's table
        tasks = []
        for net, dtype, batches in tune_plan(p):
            schedule = build(net.load(), dtype).program.schedule
            for b in batches:
                table = network_tuning(schedule, b, dtype, cache, info, device=opts.device)
                tasks += [("program", net, dtype, b, {}), ("program", net, dtype, b, table)]
        warm_tasks(ctx, "tuned_e2e", tasks)
    for net, dtype, batches in tune_plan(p):
        graph = net.load()
        state = reference_state(graph, 0)
        gen = torch.Generator().manual_seed(5)
        xs = {b: torch.randn(b, *graph.shape(graph.inputs[0]), generator=gen).to(opts.device, getattr(torch, dtype))
              for b in batches}
        outs = {}
        for tuned in (False, True):
            model = compiled_model(graph, dtype, opts.device, graphed=True)
            if tuned:
                schedule = model.compiled.program.schedule
                model.tuning = lambda b, s=schedule: network_tuning(s, b, dtype, cache, info, device=opts.device)
            model.load_state_dict(state)
            for b, x in xs.items():
                if ctx.left() < 5:
                    ctx.emit(stage="tuned_e2e", kind="timing", net=net.name, batch=b, tuned=tuned, status="skipped",
                             why="out of time")
                    continue
                with torch.inference_mode():
                    outs[(tuned, b)] = _first(model(x)).clone()
                    t = timer(lambda: model(x))
                row = dict(stage="tuned_e2e", kind="timing", net=net.name, provider="archdsl_graph", dtype=dtype,
                           batch=b, tuned=tuned, ms=t.median_ms, q10_ms=t.q10_ms, q90_ms=t.q90_ms, iters=t.iters,
                           img_s=b / (t.median_ms * 1e-3))
                if tuned and (False, b) in outs:
                    row["err_vs_default"] = rel_error(outs[(True, b)], outs[(False, b)])
                    row["tol"] = tolerance(dtype, None)
                    row["ok"] = row["err_vs_default"] <= row["tol"]
                ctx.emit(**row)
            del model
            _free(opts.device)


# ---- the GPU test tier ------------------------------------------------------------------------


def _pytest(args: list[str], timeout_s: float, **kwargs) -> int | None:
    """Run pytest in a child process; its exit status, or None when cut at `timeout_s`."""
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *args], timeout=max(30.0, timeout_s),
                              **kwargs).returncode
    except subprocess.TimeoutExpired:
        return None


def stage_pytest_gpu(ctx: Context) -> None:
    """`pytest -m gpu`: first a pass that only records the kernels the tests launch (none is
    compiled or run: the tests fail, that is expected), then compile them in parallel, then the
    real run.  The output goes to OUT/pytest_gpu.txt."""
    from . import warm

    opts = ctx.options
    # not in OUT: at most 8 files come back from there
    records_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "archdsl_pytest_gpu_kernels.json")
    if os.path.exists(records_file):
        os.remove(records_file)
    t0 = time.perf_counter()
    _pytest(["-q", "-m", "gpu", "-p", "benchmarks.gpu.record_kernels", "tests"], ctx.left() / 4,
            env={**os.environ, "ARCHDSL_RECORD_KERNELS": records_file}, capture_output=True)
    records = warm.load_records(records_file) if os.path.exists(records_file) else []
    summary = warm.compile_records(records, opts.jobs, timeout_s=max(10.0, ctx.left() - 150))
    ctx.emit(stage="pytest_gpu", kind="compile", record_and_compile_s=round(time.perf_counter() - t0, 1), **summary)
    log_path = os.path.join(opts.out, "pytest_gpu.txt")
    with open(log_path, "w", encoding="utf-8") as log:
        status = _pytest(["-q", "-m", "gpu", "-ra", "tests"], ctx.left() - 10, stdout=log, stderr=subprocess.STDOUT)
    lines = open(log_path, encoding="utf-8").read().strip().splitlines()  # noqa: SIM115 - read once
    ctx.emit(stage="pytest_gpu", kind="check", what="pytest -m gpu", returncode=status,
             summary=lines[-1] if lines else "", timed_out=status is None, ok=status == 0)


STAGES = {
    "stack": (stage_stack, "versions, device, Triton cache fingerprint"),
    "warm": (stage_warm, "record every kernel specialization, compile in parallel"),
    "peaks": (stage_peaks, "bf16 matmul TFLOP/s, copy GB/s"),
    "correctness": (stage_correctness, "ResNet-50 bf16/fp16/fp32 x batches vs float64; poison; graphs"),
    "zoo": (stage_zoo, "VGG16, GoogLeNet, DenseNet-121, ResNeXt-50 at a small batch"),
    "e2e": (stage_e2e, "bf16 end to end: eager, channels-last, graphed, archdsl plain/graphed"),
    "chain_ab": (stage_chain_ab, "chain fusion on/off, graphed"),
    "layers": (stage_layers, "every distinct ResNet-50 conv launch vs cuDNN"),
    "pdl_ab": (stage_pdl_ab, "programmatic dependent launch on/off, graphed"),
    "modern": (stage_modern, "MobileNetV3, EfficientNet-B0: correctness, end to end vs cuDNN graphed"),
    "e2e_fp16": (stage_e2e_fp16, "fp16 end to end"),
    "torch_compile": (stage_torch_compile, 'torch.compile(mode="max-autotune") (its own run)'),
    "pytest_gpu": (stage_pytest_gpu, "pytest -m gpu after a parallel warm compile (its own run)"),
    "tune": (stage_tune, "tune ResNet-50's conv, chain and linear launches into OUT/tune.json (its own run)"),
    "tuned_e2e": (stage_tuned_e2e, "ResNet-50 graphed, this run's tuning table against the defaults"),
}
MAIN_RUN = ("stack", "warm", "peaks", "correctness", "zoo", "e2e", "chain_ab", "layers", "pdl_ab", "modern",
            "e2e_fp16")
ONLY = {"torch-compile": ("stack", "warm", "torch_compile"), "pytest-gpu": ("stack", "pytest_gpu"),
        "tune": ("stack", "tune", "tuned_e2e")}
# Budgets of the stages profiles.FULL_BUDGETS does not hold (seconds that must be left to start):
# tune stops itself 20 s before the deadline (before tuned_e2e's budget, when that follows);
# tuned_e2e records and compiles two programs' kernels, then times two graphed ResNet-50s at 3 batches.
EXTRA_BUDGETS = {"tune": 120, "tuned_e2e": 90}


def stages_for(names, profile: Profile) -> list[Stage]:
    budgets = {**EXTRA_BUDGETS, **profile.budgets} if profile.device == "cuda" else profile.budgets
    return [Stage(n, budgets.get(n, 0), STAGES[n][0], STAGES[n][1]) for n in names]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    ap.add_argument("--profile", default="full", choices=sorted(PROFILES))
    ap.add_argument("--budget", type=float, default=450.0, help="seconds from now after which no stage starts")
    ap.add_argument("--stages", help="comma-separated stage names (default: the main run)")
    ap.add_argument("--only", choices=sorted(ONLY), help="a run of its own: torch-compile, pytest-gpu or tune")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="warm-compile processes")
    a = ap.parse_args(argv)
    a.profile = PROFILES[a.profile]
    names = ONLY[a.only] if a.only else tuple(a.stages.split(",")) if a.stages else MAIN_RUN
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    a.stage_names = names
    return a


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.profile.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
    torch = _torch()
    opts.device = torch.device(opts.profile.device)
    if opts.device.type == "cuda" and not torch.cuda.is_available():
        print("check: no CUDA GPU is visible; use --profile smoke on a CPU", file=sys.stderr)
        return 2
    tf32_off()
    results = Results(opts.out)
    ctx = Context(results, results.clock() + opts.budget, {}, opts)
    results.log(f"check: profile {opts.profile.name}, stages {','.join(opts.stage_names)}, budget {opts.budget:.0f} s")
    from . import warm

    counts = {"before": warm.cache_entries()}

    def after_each():
        _free(opts.device)
        now = warm.cache_entries()
        results.log(f"Triton cache: {now} kernels (+{now - counts['before']} since the last stage)")
        counts["before"] = now

    outcome = run_stages(stages_for(opts.stage_names, opts.profile), ctx, after_each)
    results.close()
    from .collect import summary_table

    print(summary_table(results.rows))
    return 0 if all(s != "failed" for s in outcome.values()) and all(r.get("ok", True) for r in results.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
