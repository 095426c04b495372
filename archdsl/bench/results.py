"""Results: one row per measurement, the error checks against the float64 reference, and a
whole run (rows, environment, peaks)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .config import ERROR_CEILING, ERROR_FLOOR, ERROR_RATIO
from .convs import ConvLayer, ConvShape
from .roofline import Peaks, percent_of_floor, roofline_floor

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
    predicted_ms: float | None = None  # the performance model's time (archdsl rows: archdsl.bench.predict)
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
