"""The summary table: aligned columns, thousands separators, human units, nested blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ops.registry import fmt_shape
from .conventions import CONVENTIONS

if TYPE_CHECKING:
    from . import LayerStats, Summary

COLUMNS = ("Layer", "Op", "Output", "Params", "MACs", "Other ops", "Activations", "RF/jump")
RIGHT = {"Params", "MACs", "Other ops", "Activations"}
# Dropped in this order, as needed, to fit a narrow terminal (the totals under the table keep them)
OPTIONAL = ("RF/jump", "Other ops", "Activations", "MACs")


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; small numbers stay exact."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}" if n / scale < 100 else f"{n / scale:.1f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip() if unit else f"{n:,}"


def human_bytes(n: int) -> str:
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{n} B"


def _num(n: int) -> str:
    return f"{n:,}" if n else "·"


def _layer_cells(r: LayerStats, indent: int, scoped_name: str) -> list[str]:
    op = f"{r.op} {r.describe}".strip() if r.nodes == 1 else f"{r.describe}"
    return ["  " * indent + scoped_name, op, fmt_shape(r.shape), _num(r.params), human(r.macs) if r.macs else "·",
            human(r.other_ops) if r.other_ops else "·", _num(r.activations), r.rf.text()]


def render(summary: Summary, scopes: dict | None = None, dtype: str = "float32", width: int | None = None) -> str:
    """The table, then totals and conventions; with `width`, columns are dropped to fit it."""
    scopes = summary.scopes if scopes is None else scopes
    rows: list[list[str] | None] = []
    opened: set[str] = set()
    for r in summary.layers:
        parts = r.name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        chain = [p for p in prefixes if p in scopes]
        for depth, p in enumerate(chain):
            if p not in opened:
                opened.add(p)
                rows.append(["  " * depth + p, scopes[p].title, "", "", "", "", "", ""])
        rows.append(_layer_cells(r, len(chain), r.name))
    rows.append(None)  # rule
    rows.append(["Total", f"{len(summary.layers)} rows", "", f"{summary.params:,}", human(summary.macs),
                 human(summary.other_ops), f"{summary.activations:,}", ""])
    widths = [max(len(c), *(len(row[i]) for row in rows if row)) for i, c in enumerate(COLUMNS)]
    shown = list(range(len(COLUMNS)))
    for drop in OPTIONAL:
        if width is None or sum(widths[i] + 2 for i in shown) - 2 <= width:
            break
        shown.remove(COLUMNS.index(drop))

    def line(cells):
        return "  ".join(cells[i].rjust(widths[i]) if COLUMNS[i] in RIGHT else cells[i].ljust(widths[i])
                         for i in shown).rstrip()

    rule = "─" * len(line(COLUMNS))
    shape = fmt_shape(summary.input)
    params = ", ".join(f"{k}={v}" for k, v in summary.params_env.items())
    batch = f"  batch {summary.batch}" if summary.batch else ""
    out = [f"{summary.network}({params})  input {shape}{batch}", rule, line(COLUMNS), rule]
    out += [rule if row is None else line(row) for row in rows]
    out.append(rule)
    per = f"per batch of {summary.batch}" if summary.batch else "per image"
    nbytes = summary.activation_bytes(dtype)
    out += [
        f"Params       {summary.params:,} ({human(summary.params)})" +
        (f"   + buffers {summary.buffers:,}" if summary.buffers else ""),
        f"Trainable    {summary.trainable_params:,} params; non-trainable {summary.non_trainable_params:,}",
        f"MACs         {summary.macs:,} ({human(summary.macs)}MACs = {human(2 * summary.macs)}FLOPs) per image",
        f"Activations  {summary.activations:,} values = {human_bytes(nbytes)} {per} at {dtype}"
        " (forward; about ×2 with backward)",
        f"Memory       params + buffers {human_bytes(summary.parameter_bytes(dtype))}, input "
        f"{human_bytes(summary.input_bytes(dtype))}, total {human_bytes(summary.total_bytes(dtype))} {per} (forward)",
        f"Outputs      {', '.join(summary.output_labels or summary.outputs)}",
        "",
        *("  " + c for c in CONVENTIONS),
    ]
    return "\n".join(out)
