"""Reports of a benchmark run: the terminal table, JSON, Markdown and a plot (SVG; PNG too when
matplotlib is installed -- it is not a dependency).

All renderers are pure functions of a `BenchRun` (`render_text`, `render_markdown`,
`render_json`, `render_svg`), so a run saved as JSON can be rendered again
(`BenchRun.from_json`).  `write_all` writes ``bench.json``, ``bench.md`` and ``bench.svg``
(and ``bench.png``) into a directory.

JSON schema (``"archdsl_bench": 1``): network, source, params, input, macs_per_sample; env (GPU,
capability, SM count, driver, CUDA runtime, cuDNN, torch, Triton, clocks as nvidia-smi reported
them); protocol (timer, statistic, min_iters, warm-up, L2 flush, tolerance rule, provider
labels); peaks (matmul_tflops per dtype, bandwidth_gbs, how they were measured); convs (one per
distinct geometry: id, label, count, nodes, geometry, epilogue, flops_per_sample); rows (one per
measurement: kind "layer"/"e2e", provider, dtype, batch, conv, status, ms, iters, q10_ms,
q90_ms, error, tolerance, flops, bytes, tflops, gbs, floor_ms, pct_floor, bound, images_per_s,
config, note); checks (counts per status and a line per problem); seconds.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from ..fileio import write_atomically
from .harness import Plan
from .providers import E2E_PROVIDERS, LAYER_PROVIDERS
from .results import BenchRun, Row

SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
COLUMN = {"torch_conv": "cuDNN", "archdsl_conv": "ours", "archdsl_fused": "ours+epi", "archdsl_tuned": "tuned"}
MARK = {"ok": "", "wrong": " WRONG", "failed": " FAILED", "skipped": " skipped"}


def _label(name: str) -> str:
    for p in E2E_PROVIDERS + LAYER_PROVIDERS:
        if p.name == name:
            return p.label
    return name


def _num(v: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits, no exponent for ordinary magnitudes."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v == math.inf:
        return "inf"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if mag >= 6 or mag < -3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{max(0, digits - 1 - mag)}f}"


def _err(v: float | None) -> str:
    if v is None:
        return "–"
    return "inf" if v == math.inf else f"{v:.1e}"


def _ordered(values, order):
    return sorted(set(values), key=lambda v: order.index(v) if v in order else len(order))


def _providers(rows: list[Row], table) -> list[str]:
    return _ordered([r.provider for r in rows], [p.name for p in table])


def _cell_status(r: Row | None) -> str:
    if r is None:
        return "–"
    if r.status in ("failed", "skipped"):
        return r.status
    return MARK[r.status].strip()


# ---- tables (shared by text and Markdown) -------------------------------------------------------


def _e2e_tables(run: BenchRun):
    """[(title, headers, rows)] for the end-to-end part, one table per dtype."""
    out = []
    rows = run.e2e_rows()
    batches = _ordered([r.batch for r in rows], list(run.protocol.get("batches", [])))
    for dtype in _ordered([r.dtype for r in rows], list(run.protocol.get("dtypes", []))):
        headers = ["provider"] + [f"batch {b}: ms" for b in batches] + [f"batch {b}: img/s" for b in batches] + [
            "max rel. error", "check"]
        body = []
        for name in _providers(rows, E2E_PROVIDERS):
            mine = {r.batch: r for r in rows if r.dtype == dtype and r.provider == name}
            if not mine:
                continue
            cells = [_label(name)]
            cells += [_num(mine[b].ms) + MARK[mine[b].status] if b in mine and mine[b].ms is not None
                      else (_cell_status(mine.get(b))) for b in batches]
            cells += [_num(mine[b].images_per_s, 4) if b in mine and mine[b].images_per_s else "–" for b in batches]
            errs = [r.error for r in mine.values() if r.error is not None]
            cells.append(_err(max(errs)) if errs else "–")
            statuses = {r.status for r in mine.values()}
            cells.append("ok" if statuses == {"ok"} else ", ".join(sorted(statuses)))
            body.append(cells)
        predicted = {r.batch: r.predicted_ms for r in rows
                     if r.dtype == dtype and r.provider in ("archdsl_graph", "archdsl") and r.predicted_ms}
        if predicted:  # the performance model's time for archdsl's launches (archdsl.bench.predict)
            body.append([PREDICTED_LABEL] + [_num(predicted.get(b)) if b in predicted else "–" for b in batches]
                        + [_num(b / (predicted[b] * 1e-3), 4) if b in predicted else "–" for b in batches]
                        + ["–", "model"])
        out.append((f"End to end, {dtype}", headers, body))
    return out


PREDICTED_LABEL = "predicted: archdsl (performance model)"


def _layer_tables(run: BenchRun, compact: bool = False):
    """[(title, headers, rows)] for the per-layer part, one table per (dtype, batch)."""
    out = []
    rows = run.layer_rows()
    providers = _providers(rows, LAYER_PROVIDERS)
    batches = _ordered([r.batch for r in rows], list(run.protocol.get("batches", [])))
    for dtype in _ordered([r.dtype for r in rows], list(run.protocol.get("dtypes", []))):
        for batch in batches:
            here = [r for r in rows if r.dtype == dtype and r.batch == batch]
            if not here:
                continue
            headers = ["conv", "shape", "×", "epilogue", "GFLOP"]
            for p in providers:
                short = COLUMN.get(p, p)
                headers += [f"{short} µs", f"{short} %floor"] if compact else [
                    f"{short} µs", f"{short} TFLOP/s", f"{short} GB/s", f"{short} %floor"]
            headers += ["model µs", "bound"]
            body = []
            totals = {p: 0.0 for p in providers}  # Σ count × µs over the network's convs
            complete = {p: True for p in providers}
            for conv in [c for c in run.convs if any(r.conv == c.id for r in here)]:
                cells = [conv.id, conv.shape.label(), str(conv.count), "/".join(conv.epilogues),
                         _num(conv.shape.flops(batch) / 1e9)]
                bound = "–"
                for p in providers:
                    r = next((r for r in here if r.conv == conv.id and r.provider == p), None)
                    same = r is None and p == "archdsl_fused" and not conv.fused  # nothing to fuse
                    if same:
                        r = next((x for x in here if x.conv == conv.id and x.provider == "archdsl_conv"), None)
                    if r is None or r.ms is None:
                        complete[p] = False
                        cells += [_cell_status(r)] + ["–"] * (1 if compact else 3)
                        continue
                    totals[p] += r.us * conv.count
                    mark = "=" if same else MARK[r.status]
                    cells += [_num(r.us) + mark, _num(r.pct_floor)] if compact else [
                        _num(r.us) + mark, _num(r.tflops), _num(r.gbs, 4), _num(r.pct_floor)]
                    bound = r.bound or bound
                model = next((r.predicted_ms for r in here if r.conv == conv.id and r.predicted_ms
                              and r.provider == "archdsl_fused"), None)
                cells += [_num(model * 1e3) if model else "–", bound]
                body.append(cells)
            total = ["all", "Σ count × µs", str(sum(c.count for c in run.convs)), "",
                     _num(sum(c.shape.flops(batch) * c.count for c in run.convs) / 1e9)]
            for p in providers:
                value = _num(totals[p]) if complete[p] else "–"
                total += [value, ""] if compact else [value, "", "", ""]
            body.append(total + ["", ""])
            out.append((f"Per layer, {dtype}, batch {batch}", headers, body))
    return out


def _md_table(headers, body, left: int = 2) -> list[str]:
    def esc(c):
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return lines


def _text_table(headers, body, left: int = 2) -> list[str]:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in body)) if body else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(headers), "  ".join("─" * w for w in widths)] + [line(r) for r in body]


# ---- header -------------------------------------------------------------------------------------


def _header(run: BenchRun) -> list[str]:
    env = run.env
    params = ", ".join(f"{k}={v}" for k, v in run.params.items()) or "none"
    lines = [f"network {run.network} from {run.source or '(source text)'} ({params}), input "
             f"{'×'.join(map(str, run.input_shape))}, {_num(run.macs_per_sample / 1e9)} GMACs per sample"]
    if env.get("gpu"):
        lines.append(f"GPU {env['gpu']} (compute capability {env.get('capability')}, {env.get('sm_count')} SMs, "
                     f"{env.get('memory_gib')} GiB), driver {env.get('driver')}, CUDA {env.get('cuda_runtime')}, "
                     f"cuDNN {env.get('cudnn')}")
    else:
        lines.append(f"device {env.get('device')}: {env.get('note', 'no GPU')}")
    lines.append(f"torch {env.get('torch')}, Triton {env.get('triton')}, archdsl {env.get('archdsl')}, "
                 f"Python {env.get('python')}")
    if run.peaks:
        flops = ", ".join(f"{SHORT.get(k, k)} matmul {_num(v / 1e12)} TFLOP/s"
                          for k, v in run.peaks.matmul_flops.items())
        lines.append(f"peaks measured in this run: {flops}; copy bandwidth {_num(run.peaks.bandwidth / 1e9, 4)} GB/s")
    p = run.protocol
    lines.append(f"timing: {p.get('statistic', 'median')} of >= {p.get('min_iters')} runs ({p.get('timer')}) after "
                 f"{p.get('warmup_ms')} ms of warm-up, L2 {'flushed' if p.get('l2_flush') else 'not flushed'} "
                 "before each run; BN folded for every provider; errors against a float64 reference")
    if p.get("fp32") and "float32" in p.get("dtypes", []):
        lines.append(f"fp32: {p['fp32']}")
    counts = {s: sum(1 for r in run.rows if r.status == s) for s in ("ok", "wrong", "failed", "skipped")}
    lines.append("checks: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines


def _problems(run: BenchRun) -> list[str]:
    """A line per failed or wrong row; skipped rows counted by reason."""
    out, skipped = [], {}
    for r in run.rows:
        where = f"{r.kind} {r.provider} {r.dtype} batch {r.batch}" + (f" {r.conv}" if r.conv else "")
        if r.status == "wrong":
            out.append(f"{where}: WRONG, error {_err(r.error)} > tolerance {_err(r.tolerance)}")
        elif r.status == "failed":
            out.append(f"{where}: failed: {r.note}")
        elif r.status == "skipped":
            key = (r.kind, r.provider, r.note)
            skipped[key] = skipped.get(key, 0) + 1
    out += [f"{kind} {provider}: skipped {n} time(s): {note}" for (kind, provider, note), n in skipped.items()]
    return out


# ---- renderers ----------------------------------------------------------------------------------


def render_json(run: BenchRun) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(run.to_json()), indent=1, ensure_ascii=False) + "\n"


def render_text(run: BenchRun) -> str:
    """The terminal report: header, end-to-end tables, compact per-layer tables, problems."""
    out = _header(run) + [""]
    for title, headers, body in _e2e_tables(run):
        out += [title, *_text_table(headers, body), ""]
    for title, headers, body in _layer_tables(run, compact=True):
        out += [title + "  (µs: median; %floor: roofline floor / time)", *_text_table(headers, body, left=4), ""]
    problems = _problems(run)
    if problems:
        out += ["Not measured, failed or wrong:", *(f"  {p}" for p in problems)]
    return "\n".join(out).rstrip() + "\n"


def render_markdown(run: BenchRun) -> str:
    out = [f"# archdsl bench: {run.network}", ""]
    out += [f"- {line}" for line in _header(run)]
    out += ["", "Providers:", ""]
    for name, label in run.protocol.get("providers", {}).items():
        out.append(f"- `{name}`: {label}")
    out += ["", "Roofline floor = max(FLOPs / peak FLOP/s, bytes / peak bandwidth) with the peaks above; "
            "bytes = input + weight + output (+ residual) once each; %floor = floor / measured time.", ""]
    e2e = _e2e_tables(run)
    if e2e:
        out += ["## End to end", ""]
        for title, headers, body in e2e:
            out += [f"### {title}", "", *_md_table(headers, body, left=1), ""]
    layers = _layer_tables(run)
    if layers:
        out += ["## Per layer", "", "Every distinct convolution of the network; × = how many layers share it.", ""]
        for title, headers, body in layers:
            out += [f"### {title}", "", *_md_table(headers, body, left=4), ""]
    problems = _problems(run)
    if problems:
        out += ["## Not measured, failed or wrong", "", *(f"- {p}" for p in problems), ""]
    return "\n".join(out).rstrip() + "\n"


def render_plan(plan: Plan) -> str:
    """What a run would measure (`archdsl bench --plan`; needs no GPU)."""
    c = plan.config
    out = [f"network {plan.network}: {len(plan.convs)} distinct convolutions, "
           f"{_num(plan.macs_per_sample / 1e9)} GMACs per sample",
           f"batches {', '.join(map(str, c.batches))}; dtypes {', '.join(c.dtypes)}; "
           f"{plan.steps} measurements (each the median of >= {c.iters} runs)"]
    if c.e2e:
        out.append("end to end: " + ", ".join(c.e2e_providers))
    if c.layers:
        out.append("per layer:  " + ", ".join(c.layer_providers))
        batch = max(c.batches)
        headers = ["conv", "shape", "×", "epilogue", "nodes", f"GFLOP (b{batch})"] + [
            f"MB {SHORT.get(d, d)} (b{batch})" for d in c.dtypes]
        body = []
        from ..dtypes import BYTES as DTYPE_BYTES

        for conv in plan.convs:
            nodes = ", ".join(conv.nodes[:2]) + (f", … (+{conv.count - 2})" if conv.count > 2 else "")
            body.append([conv.id, conv.shape.label(), str(conv.count), "/".join(conv.epilogues), nodes,
                         _num(conv.shape.flops(batch) / 1e9)] + [
                _num(conv.shape.bytes(batch, DTYPE_BYTES[d], bias=conv.bias, residual=conv.residual) / 1e6)
                for d in c.dtypes])
        out += ["", *_text_table(headers, body, left=5)]
    return "\n".join(out) + "\n"


# ---- the plot -----------------------------------------------------------------------------------

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd"]


def plot_panels(run: BenchRun) -> list[tuple[str, str, list[tuple[str, list[tuple[str, float | None]]]]]]:
    """[(title, unit, [(group, [(series, value)])])]: end-to-end throughput relative to the
    baseline per dtype (groups = batches), and per-layer % of the roofline floor per dtype at
    the largest batch (groups = convs)."""
    panels = []
    e2e = run.e2e_rows()
    base = run.protocol.get("tolerance", {}).get("baselines", {}).get("e2e", "eager_nchw")
    for dtype in _ordered([r.dtype for r in e2e], list(run.protocol.get("dtypes", []))):
        groups = []
        for batch in _ordered([r.batch for r in e2e], list(run.protocol.get("batches", []))):
            here = {r.provider: r for r in e2e if r.dtype == dtype and r.batch == batch}
            ref = here.get(base)
            series = []
            for name in _providers(e2e, E2E_PROVIDERS):
                r = here.get(name)
                ok = r is not None and r.ms and ref is not None and ref.ms and r.status == "ok"
                series.append((name, ref.ms / r.ms if ok else None))
            groups.append((f"batch {batch}", series))
        panels.append((f"End to end, {dtype}: throughput relative to {base}", "×", groups))
    layers = run.layer_rows()
    for dtype in _ordered([r.dtype for r in layers], list(run.protocol.get("dtypes", []))):
        batch = max(r.batch for r in layers if r.dtype == dtype)
        groups = []
        for conv in run.convs:
            here = {r.provider: r for r in layers if r.dtype == dtype and r.batch == batch and r.conv == conv.id}
            if here:
                groups.append((f"{conv.id} {conv.shape.label()}",
                               [(name, here[name].pct_floor if name in here and here[name].status == "ok" else None)
                                for name in _providers(layers, LAYER_PROVIDERS)]))
        panels.append((f"Per layer, {dtype}, batch {batch}: % of the roofline floor", "%", groups))
    return panels


def render_svg(run: BenchRun) -> str:
    """Horizontal grouped bar charts, one panel per plot_panels entry, as a standalone SVG."""
    panels = plot_panels(run)
    width, label_w, bar_h, gap = 960, 250, 9, 8
    plot_w = width - label_w - 70
    parts, y = [], 10
    series_all = []
    for _, _, groups in panels:
        for _, series in groups:
            series_all += [s for s, _ in series if s not in series_all]
    color = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series_all)}
    # legend
    x = 10
    for s in series_all:
        if x + 24 + 7 * len(s) > width - 10:  # wrap the legend
            x, y = 10, y + 18
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{color[s]}"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 10}">{html.escape(s)}</text>')
        x += 24 + 7 * len(s)
    y += 30
    for title, unit, groups in panels:
        parts.append(f'<text x="10" y="{y + 12}" font-weight="bold">{html.escape(title)}</text>')
        y += 24
        values = [v for _, series in groups for _, v in series if v is not None and math.isfinite(v)]
        vmax = max(values + [1.0 if unit == "×" else 100.0])
        top = y
        for group, series in groups:
            parts.append(f'<text x="{label_w - 8}" y="{y + len(series) * bar_h / 2 + 4}" '
                         f'text-anchor="end">{html.escape(group)}</text>')
            for name, v in series:
                if v is not None and math.isfinite(v):
                    w = max(1.0, plot_w * v / vmax)
                    parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 1}" '
                                 f'fill="{color[name]}"><title>{html.escape(name)}: {_num(v)}{unit}</title></rect>')
                    parts.append(f'<text x="{label_w + w + 3:.1f}" y="{y + bar_h - 1}" font-size="8">'
                                 f'{_num(v)}</text>')
                else:
                    parts.append(f'<text x="{label_w + 3}" y="{y + bar_h - 1}" font-size="8" fill="#999">'
                                 f'{html.escape(name)}: no result</text>')
                y += bar_h
            y += gap
        ref = 1.0 if unit == "×" else 100.0
        rx = label_w + plot_w * ref / vmax
        parts.append(f'<line x1="{rx:.1f}" y1="{top - 4}" x2="{rx:.1f}" y2="{y}" stroke="#333" '
                     f'stroke-dasharray="3,3"/>')
        parts.append(f'<text x="{rx + 3:.1f}" y="{top - 6}" font-size="9">{_num(ref)}{unit}</text>')
        y += 20
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
            f'font-family="sans-serif" font-size="10">')
    note = (f'<text x="{width - 10}" y="{y + 4}" text-anchor="end" font-size="8" fill="#666">'
            f'{html.escape(run.network)} on {html.escape(str(run.env.get("gpu") or run.env.get("device")))}</text>')
    return "\n".join([head, '<rect width="100%" height="100%" fill="white"/>', *parts, note, "</svg>"]) + "\n"


def write_png(run: BenchRun, path: str | Path) -> str | None:
    """The same panels as a PNG through matplotlib; returns None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: the plot is written as SVG only"
    panels = plot_panels(run)
    if not panels:
        return "nothing to plot"
    heights = [max(2.0, 0.12 * sum(len(s) + 1 for _, s in groups)) for _, _, groups in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, sum(heights) + 1), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    names = []
    for _, _, groups in panels:
        for _, series in groups:
            names += [s for s, _ in series if s not in names]
    for ax, (title, unit, groups) in zip(axes[:, 0], panels):
        y, ticks, labels = 0.0, [], []
        for group, series in groups:
            ticks.append(y + len(series) / 2 - 0.5)
            labels.append(group)
            for name, v in series:
                if v is not None and math.isfinite(v):
                    ax.barh(y, v, color=PALETTE[names.index(name) % len(PALETTE)], height=0.9)
                y += 1
            y += 1
        ax.axvline(1.0 if unit == "×" else 100.0, color="#333", linestyle="--", linewidth=0.8)
        ax.set_yticks(ticks, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(unit)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[i % len(PALETTE)]) for i in range(len(names))]
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ---- writing ------------------------------------------------------------------------------------


def write_all(run: BenchRun, outdir: str | Path, png: bool = True) -> tuple[list[Path], list[str]]:
    """Write bench.json, bench.md, bench.svg (and bench.png with matplotlib) into `outdir`;
    returns (paths written, notes such as why no PNG)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, text in (("bench.json", render_json(run)), ("bench.md", render_markdown(run)),
                       ("bench.svg", render_svg(run))):
        write_atomically(out / name, text)
        written.append(out / name)
    if png:
        why = write_png(run, out / "bench.png")
        if why is None:
            written.append(out / "bench.png")
        else:
            notes.append(why)
    return written, notes


__all__ = ["plot_panels", "render_json", "render_markdown", "render_plan", "render_svg", "render_text", "write_all",
           "write_png"]
