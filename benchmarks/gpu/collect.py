"""Turn a GPU check's output folder into the results committed to the repository.

    python -m benchmarks.gpu.collect OUT                       # -> benchmarks/results/<date>-<gpu>/
    python -m benchmarks.gpu.collect OUT --dest DIR            # -> DIR/<date>-<gpu>/
    python -m benchmarks.gpu.collect OUT --summary             # the short table only
    python -m benchmarks.gpu.collect OUT --tuned               # OUT/tune.json -> archdsl/runtime/tuned/<gpu>.json

OUT holds results.jsonl (one JSON row per check or timing, as check.py emitted it).  The results
folder gets results.json (device, driver, torch, Triton, CUDA and cuDNN versions, one row per
check or timing with its numbers and whether it passed), results.md (tables) and results.png (the
end-to-end throughput and the per-launch speed against cuDNN; drawn with matplotlib where it is
installed -- the GPU machine has it -- or copied from OUT when the run drew it there).

With --tuned, the tuning entries a run measured (OUT/tune.json, written by `check.py --only tune`,
in the user tuning cache's format) are merged into the table shipped for their device,
archdsl/runtime/tuned/<device>-sm<capability>.json (`archdsl.runtime.tune.ShippedTables`): a new
measurement replaces the entry of the same key, every other entry is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys

ENV_KEYS = ("gpu", "capability", "sm_count", "memory_gib", "driver", "torch", "triton", "cuda_runtime", "cudnn",
            "python", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "triton_cache_fingerprint", "ptxas",
            "lark", "profile", "fp32_math", "time")


def load_rows(path: str) -> list[dict]:
    """The rows of a results.jsonl; a last line cut short by a time-out is ignored."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def passed(row: dict) -> bool | None:
    """True / False for a row that is a verdict (it has "ok"); None otherwise."""
    ok = row.get("ok")
    return None if ok is None else bool(ok)


def build_results(rows: list[dict]) -> dict:
    env = next((r for r in rows if r.get("kind") == "env"), {})
    stages = {r["stage"]: r["status"] for r in rows if r.get("kind") == "stage"}
    verdicts = [passed(r) for r in rows]
    return {
        "archdsl_gpu_check": 1,
        "device": env.get("gpu") or env.get("device"),
        **{k: env.get(k) for k in ENV_KEYS if k != "gpu"},
        "stages": stages,
        "passed": sum(1 for v in verdicts if v is True),
        "failed": sum(1 for v in verdicts if v is False),
        "rows": [r for r in rows if r.get("kind") != "env"],
    }


def _num(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _verdict(r: dict) -> str:
    v = passed(r)
    return "–" if v is None else ("ok" if v else "FAIL")


def _table(headers: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_num(c) for c in line) + " |" for line in lines]
    return out


def sections(rows: list[dict]) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, lines) per kind of result, shared by the Markdown and the printed summary."""
    out = []
    stages = [r for r in rows if r.get("kind") == "stage"]
    if stages:
        out.append(("Stages", ["stage", "status", "seconds", "budget s", "note"],
                    [[r["stage"], r["status"], r.get("seconds"), r.get("budget_s"),
                      (r.get("error") or r.get("why") or "")[:80]] for r in stages]))
    ceilings = [r for r in rows if r.get("kind") == "ceiling"]
    if ceilings:
        out.append(("Measured ceilings", ["what", "value", "unit"],
                    [[r["what"], r["value"], r["unit"]] for r in ceilings]))
    checks = [r for r in rows if r.get("kind") == "check" and "err" in r]
    if checks:
        out.append(("Correctness (relative error vs float64)",
                    ["net", "dtype", "batch", "archdsl err", "PyTorch err", "tolerance", "poisoned rerun =",
                     "graph = plain", "2nd input =", "verdict"],
                    [[r["net"], r["dtype"], r["batch"], r["err"], r["torch_err"], r["tol"],
                      r["poisoned_rerun_identical"], r["graph_equals_plain"], r["graph_second_input_equals_plain"],
                      _verdict(r)] for r in checks]))
    e2e = [r for r in rows if r.get("kind") == "timing" and r.get("provider")
           and r.get("stage") not in ("chain_ab", "pdl_ab", "tuned_e2e")]
    if e2e:
        out.append(("End to end (median)", ["stage", "provider", "dtype", "batch", "ms", "images/s", "err", "status"],
                    [[r["stage"], r["provider"], r["dtype"], r["batch"], r.get("ms"), r.get("img_s"), r.get("err"),
                      r.get("status")] for r in e2e]))
    chain = [r for r in rows if r.get("stage") == "chain_ab" and r.get("kind") == "timing"]
    if chain:
        out.append(("Chain fusion A/B (graphed)", ["chain", "batch", "ms", "images/s", "verdict"],
                    [[r["chain"], r["batch"], r.get("ms"), r.get("img_s"), _verdict(r)] for r in chain]))
    pdl = [r for r in rows if r.get("stage") == "pdl_ab" and r.get("kind") == "timing"]
    if pdl:
        out.append(("Programmatic dependent launch A/B (graphed)", ["pdl", "batch", "ms", "images/s", "verdict"],
                    [[r["pdl"], r["batch"], r.get("ms"), r.get("img_s"), _verdict(r)]
                     for r in pdl]))
    tuning = [r for r in rows if r.get("kind") == "tune"]
    if tuning:
        out.append(("Tuning (launches by where their configuration comes from)",
                    ["net", "dtype", "batch", "launches", "signatures", "tuned here", "shipped", "default", "seconds",
                     "note"],
                    [[r["net"], r["dtype"], r["batch"], r["launches"], r["signatures"], r["cache"], r["shipped"],
                      r["default"], r["seconds"], r.get("why") or ""] for r in tuning]))
    tuned = [r for r in rows if r.get("stage") == "tuned_e2e" and r.get("kind") == "timing"]
    if tuned:
        out.append(("Tuned against the defaults (graphed)", ["net", "tuned", "batch", "ms", "images/s", "verdict"],
                    [[r["net"], r["tuned"], r["batch"], r.get("ms"), r.get("img_s"), _verdict(r)] for r in tuned]))
    layers = [r for r in rows if r.get("stage") == "layers" and r.get("kind") == "timing"]
    if layers:
        out.append(("Per launch, bf16 (archdsl vs the cuDNN convs it replaces)",
                    ["launch", "kernel", "batch", "×", "archdsl µs", "cuDNN µs", "speedup", "archdsl TFLOP/s",
                     "archdsl % floor", "cuDNN % floor", "err", "verdict"],
                    [[r["launch"], r.get("kernel"), r["batch"], r.get("count"), r.get("archdsl_us"), r.get("cudnn_us"),
                      r.get("speedup_vs_cudnn"), r.get("archdsl_tflops"), r.get("archdsl_pct_floor"),
                      r.get("cudnn_pct_floor"), r.get("err_vs_cudnn"), _verdict(r) if "ok" in r else r.get("status")]
                     for r in layers]))
    other = [r for r in rows if r.get("kind") in ("compile",) or (r.get("kind") == "check" and "err" not in r)]
    if other:
        out.append(("Other", ["stage", "what", "verdict", "details"],
                    [[r["stage"], r.get("what") or r.get("kind"), _verdict(r),
                      json.dumps({k: v for k, v in r.items() if k not in ("t", "stage", "kind", "ok", "what")})[:160]]
                     for r in other]))
    return out


def markdown(results: dict) -> str:
    head = [f"# archdsl GPU check: {results.get('device')} ({results.get('time') or 'date unknown'})", "",
            " · ".join(f"{k} {results.get(k)}" for k in ("driver", "torch", "triton", "cuda_runtime", "cudnn")), "",
            f"Verdicts: {results['passed']} passed, {results['failed']} failed. fp32: {results.get('fp32_math')}.", ""]
    body = []
    for title, headers, lines in sections(results["rows"]):
        body += [f"## {title}", ""] + _table(headers, lines) + [""]
    return "\n".join(head + body)


def summary_table(rows: list[dict]) -> str:
    """The short table printed last by a run: stages, failures, the headline numbers."""
    lines = []
    for r in rows:
        if r.get("kind") == "stage":
            note = (r.get("error") or r.get("why") or "")[:90]
            lines.append(f"{r['stage']:<13} {r['status']:<8} {_num(r.get('seconds'))}s {note}")
    fails = [r for r in rows if passed(r) is False]
    lines.append(f"verdicts: {sum(1 for r in rows if passed(r))} ok, {len(fails)} FAIL")
    for r in fails[:20]:
        lines.append("  FAIL " + json.dumps({k: r[k] for k in r if k not in ("t", "traceback")})[:240])
    for r in rows:
        if r.get("kind") == "ceiling":
            lines.append(f"ceiling {r['what']}: {_num(r['value'])} {r['unit']}")
        elif r.get("kind") == "timing" and r.get("img_s") and r.get("stage") != "layers":
            chain = "".join(f" {k}={r[k]}" for k in ("chain", "tuned") if k in r)
            lines.append(f"{r['stage']:<10} {r['provider']:<15} {r['dtype']:<9} b{r['batch']:<4}{chain} "
                         f"{_num(r.get('ms'))} ms {_num(r['img_s'])} img/s")
    layers = [r for r in rows if r.get("stage") == "layers" and r.get("speedup_vs_cudnn")]
    if layers:
        geo = math.exp(sum(math.log(r["speedup_vs_cudnn"]) for r in layers) / len(layers))
        lines.append(f"layers: {len(layers)} launches, geometric-mean speedup vs cuDNN {geo:.2f}x")
    return "\n".join(lines)


def plot(results: dict, path: str) -> bool:
    """results.png: end-to-end images/s per provider and batch, and per-launch speedup vs cuDNN.
    False (nothing written) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = results["rows"]
    e2e = [r for r in rows if r.get("stage") == "e2e" and r.get("img_s")]
    layers = [r for r in rows if r.get("stage") == "layers" and r.get("speedup_vs_cudnn")]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    batches = sorted({r["batch"] for r in e2e})
    providers = list(dict.fromkeys(r["provider"] for r in e2e))
    width = 0.8 / max(1, len(providers))
    for i, prov in enumerate(providers):
        vals = [next((r["img_s"] for r in e2e if r["provider"] == prov and r["batch"] == b), 0) for b in batches]
        axes[0].bar([j + i * width for j in range(len(batches))], vals, width, label=prov)
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
    axes[0].set_ylabel("images/s (bf16)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title("ResNet-50 end to end")
    axes[1].barh(range(len(layers)), [r["speedup_vs_cudnn"] for r in layers])
    axes[1].set_yticks(range(len(layers)), [f"b{r['batch']} {r['launch'][:40]}" for r in layers], fontsize=6)
    axes[1].axvline(1.0, color="k", lw=0.8)
    axes[1].set_xlabel("speedup vs cuDNN (>1: archdsl faster)")
    axes[1].set_title("Per conv launch, bf16")
    fig.suptitle(f"archdsl on {results.get('device')} ({results.get('time')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def folder_name(results: dict) -> str:
    """<date>-<gpu>, e.g. 2026-12-04-nvidia-h200."""
    date = (results.get("time") or "0000-00-00")[:10]
    gpu = re.sub(r"[^a-z0-9]+", "-", str(results.get("device") or "unknown").lower()).strip("-")
    return f"{date}-{gpu}"


def collect(out: str, dest: str) -> str:
    """Write results.json, results.md and results.png for the run in `out`; returns the folder."""
    results = build_results(load_rows(os.path.join(out, "results.jsonl")))
    folder = os.path.join(dest, folder_name(results))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(folder, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results))
    png = os.path.join(folder, "results.png")
    if not plot(results, png) and os.path.exists(os.path.join(out, "results.png")):
        shutil.copyfile(os.path.join(out, "results.png"), png)
    return folder


def ship_tuned(tune_json: str, dest: str) -> list[str]:
    """Merge the entries of a run's tune.json into the shipped table of each device they were
    measured on (`dest`: archdsl/runtime/tuned/); the files written.  Entries measured under the
    interpreter (capability "cpu") are never shipped: their times say nothing about a GPU."""
    from pathlib import Path

    from archdsl.fileio import write_atomically
    from archdsl.runtime.tune import FORMAT, read_table, table_file_name

    measured = read_table(Path(tune_json))
    by_device: dict[tuple[str, str], dict] = {}
    for text, record in measured.items():
        key = record["key"]
        if key["capability"] == "cpu":
            continue
        by_device.setdefault((key["device"], key["capability"]), {})[text] = record
    written = []
    for (device, capability), entries in sorted(by_device.items()):
        path = Path(dest) / table_file_name(device, capability)
        merged = {**(read_table(path) if path.exists() else {}), **entries}
        table = {"format": FORMAT, "device": device, "capability": capability, "entries": merged}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
        written.append(str(path))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the folder a check wrote (holds results.jsonl)")
    ap.add_argument("--dest", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    ap.add_argument("--summary", action="store_true", help="print the short table only")
    ap.add_argument("--tuned", action="store_true", help="merge OUT/tune.json into the shipped tuning tables only")
    ap.add_argument("--tuned-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "archdsl", "runtime",
                                                        "tuned"), help="where the shipped tables are (--tuned)")
    a = ap.parse_args(argv)
    if a.tuned:
        tune_json = os.path.join(a.out, "tune.json")
        if not os.path.exists(tune_json):
            print(f"collect: {tune_json} does not exist (a `check.py --only tune` run writes it)", file=sys.stderr)
            return 2
        written = ship_tuned(tune_json, os.path.normpath(a.tuned_dir))
        if not written:
            print(f"collect: {tune_json} holds no GPU measurement to ship", file=sys.stderr)
            return 2
        print("\n".join(written))
        return 0
    path = os.path.join(a.out, "results.jsonl")
    if not os.path.exists(path):
        print(f"collect: {path} does not exist", file=sys.stderr)
        return 2
    if a.summary:
        print(summary_table(load_rows(path)))
        return 0
    print(collect(a.out, os.path.normpath(a.dest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
