"""Stages with a deadline, and results streamed to disk as they are produced.

Nothing here knows about GPUs: `Results` appends one JSON line per row (flushed at once, so a run
killed by a time-out still leaves everything it measured), `run_stages` starts each stage only if
its time budget is still left before the deadline and records every stage as done, failed or
skipped.  A stage's failure never ends the run.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

RESULTS = "results.jsonl"
TIMELINE = "timeline.txt"


def _plain(value: Any) -> Any:
    """JSON-safe: inf/nan become strings (JSON has neither), tuples lists, unknown objects str."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Results:
    """results.jsonl + timeline.txt in `out`, appended and flushed row by row."""

    def __init__(self, out: str, clock: Callable[[], float] = time.monotonic, echo: bool = True):
        os.makedirs(out, exist_ok=True)
        self.out, self.clock, self.echo = out, clock, echo
        self.start = clock()
        self._rows = open(os.path.join(out, RESULTS), "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._timeline = open(os.path.join(out, TIMELINE), "a", encoding="utf-8")  # noqa: SIM115
        self.rows: list[dict] = []

    def elapsed(self) -> float:
        return self.clock() - self.start

    def emit(self, **row: Any) -> dict:
        """Append one row (with `t`, seconds since the run began) and flush it to disk now."""
        row = {"t": round(self.elapsed(), 2), **_plain(row)}
        self._rows.write(json.dumps(row) + "\n")
        self._rows.flush()
        self.rows.append(row)
        if self.echo:
            print(json.dumps(row)[:300], flush=True)
        return row

    def log(self, text: str) -> None:
        """One line of the timeline ("[  12.3s] text")."""
        self._timeline.write(f"[{self.elapsed():7.1f}s] {text}\n")
        self._timeline.flush()
        if self.echo:
            print(f"[{self.elapsed():7.1f}s] {text}", flush=True)

    def close(self) -> None:
        self._rows.close()
        self._timeline.close()


@dataclass(frozen=True)
class Stage:
    name: str
    budget_s: float  # started only when at least this much time is left before the deadline
    run: Callable[["Context"], None]
    doc: str = ""


@dataclass
class Context:
    """What a stage gets: the results, the time left, a dict shared between stages."""

    results: Results
    deadline: float  # in the results' clock
    shared: dict
    options: Any = None

    def left(self) -> float:
        return self.deadline - self.results.clock()

    def emit(self, **row: Any) -> dict:
        return self.results.emit(**row)


def run_stages(stages: list[Stage], ctx: Context, after_each: Callable[[], None] | None = None) -> dict[str, str]:
    """Run `stages` in order; {name: "done" | "failed" | "skipped"}.  Each gets a "stage" row."""
    outcome = {}
    for stage in stages:
        left = ctx.left()
        if left < stage.budget_s:
            ctx.emit(stage=stage.name, kind="stage", status="skipped", budget_s=stage.budget_s,
                     why=f"{left:.0f} s left < budget {stage.budget_s:.0f} s")
            ctx.results.log(f"{stage.name}: skipped ({left:.0f} s left, budget {stage.budget_s:.0f} s)")
            outcome[stage.name] = "skipped"
            continue
        ctx.results.log(f"{stage.name}: start (budget {stage.budget_s:.0f} s, {left:.0f} s left)")
        t0 = ctx.results.clock()
        try:
            stage.run(ctx)
            status, extra = "done", {}
        except Exception as exc:  # noqa: BLE001 - one stage's failure must not end the run
            status = "failed"
            extra = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}
        seconds = round(ctx.results.clock() - t0, 2)
        ctx.emit(stage=stage.name, kind="stage", status=status, seconds=seconds, budget_s=stage.budget_s, **extra)
        ctx.results.log(f"{stage.name}: {status} in {seconds:.1f} s" + (f": {extra['error'][:200]}" if extra else ""))
        outcome[stage.name] = status
        if after_each is not None:
            try:
                after_each()
            except Exception as exc:  # noqa: BLE001
                ctx.results.log(f"after {stage.name}: {type(exc).__name__}: {exc}")
    return outcome
