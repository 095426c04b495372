"""The benchmark harness behind `archdsl bench` (the protocol: below, and docs/architecture.md).

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

The harness is split by what each part does, and this module runs them:

    config.py       what a run measures (`BenchConfig`) and the error tolerances
    environment.py  the machine (GPU, driver, versions)
    roofline.py     peaks and the roofline floor
    convs.py        the distinct convolutions of the network's launch schedule
    providers.py    what is timed: end-to-end and per-layer providers
    models.py       the shared weights (BN folded for the baselines) and inputs
    results.py      rows, error checks, the run
    progress.py     progress lines
    report.py       rendering (text, JSON, markdown)

Timers come from `archdsl.runtime.timing` (`CudaEventTimer` on a GPU, `WallTimer` and
`FakeTimer` elsewhere), shared with the autotuner.  The logic stays testable without a GPU:
providers are tables of (name, build function), the arithmetic and checks are pure functions.  `run_bench` runs
on the CPU too (Triton's interpreter; providers that need CUDA are recorded as skipped) -- for
tests only: its numbers are not a benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..passes.fold import fold_bn_graph
from ..runtime.timing import CudaEventTimer, FakeTimer, Timing, WallTimer, default_timer
from . import providers  # the tables are read where they live (tests replace them there)
from .config import (DEFAULT_BATCHES, DEFAULT_DTYPES, ERROR_CEILING, ERROR_FLOOR, ERROR_RATIO, BenchConfig,
                     parse_batches, parse_dtypes, parse_names)
from .convs import ConvLayer, ConvShape, distinct_convs, epilogue_text
from .environment import cuda_status, environment
from .models import folded_state, network_inputs, reference_state
from .progress import Progress
from .providers import (E2E_BASELINE, E2E_PROVIDERS, LAYER_BASELINE, LAYER_PROVIDERS, Bound, E2EContext, LayerCase,
                        Provider, Unavailable, layer_work, provider)
from .predict import add_predictions
from .results import BenchRun, Row, apply_checks, derive, outputs_error, rel_error, tolerance
from .roofline import Floor, Peaks, measure_peaks, percent_of_floor, roofline_floor


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
    # fp32 baselines in IEEE fp32, as archdsl's kernels compute (cuDNN's default is TF32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


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
        "fp32": "IEEE fp32 on both sides: archdsl's kernels use FMA, PyTorch's TF32 is turned off",
        "tolerance": {"floor": ERROR_FLOOR, "ratio": ERROR_RATIO, "ceiling": ERROR_CEILING,
                      "baselines": {"layer": LAYER_BASELINE, "e2e": E2E_BASELINE}},
        "providers": {p.name: p.label for p in providers.E2E_PROVIDERS + providers.LAYER_PROVIDERS
                      if p.name in config.e2e_providers + config.layer_providers},
        "graph_capture": "input copies excluded: the static inputs are filled once",
        "tuning_end_to_end": "per conv, chain and linear launch: the autotuning cache's configuration, else "
                             "archdsl's shipped table for this GPU, else the kernels' defaults" +
                             (" (shapes with no entry for these versions tuned in this run)" if config.tune else ""),
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
    add_predictions(run, graph)
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
    from ..runtime.tune import TuneCache, tune_conv2d

    cache = cache if cache is not None else TuneCache()
    if isinstance(timer, CudaEventTimer):
        timer = CudaEventTimer(25, 5.0, flush_l2=timer.flush_l2)

    def tune(conv2d, x, w, out, kwargs):
        return tune_conv2d(x, w, out, timer=timer, cache=cache, conv2d=conv2d, **kwargs).config

    return tune


def _run_layers(run: BenchRun, config: BenchConfig, device, timer, progress: Progress, tune_cache) -> None:
    tuner = _tuner(config, timer, tune_cache) if config.tune else None
    chosen = [p for p in providers.LAYER_PROVIDERS if p.name in config.layer_providers]
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

    chosen = [p for p in providers.E2E_PROVIDERS if p.name in config.e2e_providers]
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


# The harness's public names, wherever they live now (the CLI, the tests and benchmarks/gpu
# import them from here).
__all__ = ["DEFAULT_BATCHES", "DEFAULT_DTYPES", "E2E_BASELINE", "E2E_PROVIDERS", "ERROR_CEILING", "ERROR_FLOOR",
           "ERROR_RATIO", "LAYER_BASELINE", "LAYER_PROVIDERS", "BenchConfig", "BenchRun", "Bound", "ConvLayer",
           "ConvShape", "CudaEventTimer", "E2EContext", "FakeTimer", "Floor", "LayerCase", "Peaks", "Plan", "Progress",
           "Provider", "Row", "Timing", "Unavailable", "WallTimer", "apply_checks", "cuda_status", "default_timer",
           "derive", "distinct_convs", "environment", "epilogue_text", "fold_bn_graph", "folded_state", "layer_work",
           "measure_peaks", "network_inputs", "outputs_error", "parse_batches", "parse_dtypes", "parse_names",
           "percent_of_floor", "plan", "provider", "reference_state", "rel_error", "roofline_floor", "run_bench",
           "tolerance"]
