"""Predicted beside measured: the performance model's time for each archdsl row of a run.

The model (`archdsl.runtime.perfmodel`) prices every launch from the ceilings measured in the
same run (the matmul rate of the row's dtype, the copy bandwidth) and the device's SM count.
A measured time far above its prediction marks the launch worth profiling; a prediction far
above the measurement marks a model to recalibrate.  What is predicted:

    end to end, archdsl / archdsl_graph    the sum over the program's launches (CUDA-graph
                                           replay: the model has no Python launch overhead)
    per layer, archdsl_fused / _tuned      the conv2d launch of that layer (default blocks /
                                           the row's tuned configuration)

Other rows (cuDNN, torch.compile, the unfused archdsl_conv) get none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..runtime.perfmodel import Ceilings, predict_conv, predict_schedule
from .results import BenchRun

E2E_PREDICTED = ("archdsl", "archdsl_graph")
LAYER_PREDICTED = ("archdsl_fused", "archdsl_tuned")


def ceilings_of(run: BenchRun, dtype: str) -> Ceilings:
    """The datasheet ceilings with what this run measured: the dtype's matmul rate, the copy
    bandwidth, the device's SM count (where the run recorded them)."""
    c = Ceilings.h200_datasheet()
    sms = run.env.get("sm_count") if run.env else None
    if sms:
        c = replace(c, sms=int(sms), name=str(run.env.get("gpu", c.name)))
    if run.peaks is not None:
        rate = run.peaks.flops(dtype)
        c = c.with_measured(matmul_tflops=rate / 1e12 if rate and dtype != "float32" else None,
                            bandwidth_gbs=run.peaks.bandwidth / 1e9 if run.peaks.bandwidth else None)
        if rate and dtype == "float32":
            c = replace(c, fp32_tflops=rate / 1e12)
    return c


def add_predictions(run: BenchRun, graph: Any) -> None:
    """Fill `predicted_ms` of the run's archdsl rows (in place); needs no GPU."""
    from ..codegen.schedule import make_schedule
    from ..passes import optimize
    from ..runtime.launches import conv_launches

    schedule = make_schedule(optimize(graph).graph)
    totals: dict[tuple[str, int], float] = {}
    launches: dict[int, dict] = {}
    for row in run.rows:
        ceilings = ceilings_of(run, row.dtype)
        if row.kind == "e2e" and row.provider in E2E_PREDICTED:
            key = (row.dtype, row.batch)
            if key not in totals:
                totals[key] = sum(p.us for p in predict_schedule(schedule, row.batch, row.dtype, ceilings)) / 1e3
            row.predicted_ms = totals[key]
        elif row.kind == "layer" and row.provider in LAYER_PREDICTED and row.conv is not None:
            by_node = launches.setdefault(row.batch, {c.node: c for c in conv_launches(schedule, row.batch)})
            layer = next((c for c in run.convs if c.id == row.conv), None)
            launch = next((by_node[n] for n in (layer.nodes if layer else ()) if n in by_node), None)
            if launch is not None:
                config = row.config if row.provider == "archdsl_tuned" else None
                row.predicted_ms = predict_conv(launch, row.dtype, ceilings, config).us / 1e3
