"""How each front-end and compiler stage scales with the network's size: time at N and 2N nodes.

    python -m benchmarks.scaling                 # N = 10,000 and 20,000 nodes, both shapes
    python -m benchmarks.scaling --nodes 40000   # N = 40,000 and 80,000
    python -m benchmarks.scaling --stages parse,elaborate,analyze,summary-json

For every stage the ratio T(2N) / T(N) is printed: about 2 means linear, about 4 quadratic.
Three shapes of network: `relu` (one long chain, `relu * n`: what in-place planning and every
per-node walk see at their worst), `resnet` (residual blocks of conv, bn, relu and add: what
fusion, the passes and the planner have to work through) and `lines` (one labelled statement
per line: the text grows with the network, which the parser sees). Timings are wall clock on
whatever machine runs this: read the ratios, not the seconds. Each size runs --repeat times and
the fastest counts, but on a loaded machine a ratio still wanders (1.3 to 3 for a stage that is
linear); a quadratic stage shows 4 and more, and grows with N.

Stages: parse (text -> AST), elaborate (AST -> checked IR, lint included), analyze (counts
and receptive fields), summary-json (`archdsl summary --json`'s data and its JSON text),
passes (the optimization pipeline), plan (buffers and in-place reuse), emit (the generated
program, plan included).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archdsl.analysis import analyze  # noqa: E402
from archdsl.elaborate import elaborate  # noqa: E402
from archdsl.elaborate.loader import Library, _Importer  # noqa: E402
from archdsl.frontend.parser import parse  # noqa: E402

STAGES = ("parse", "elaborate", "analyze", "summary-json", "passes", "plan", "emit")


def relu_chain(nodes: int) -> str:
    """`relu * n` in blocks of at most 5,000 (the repetition limit is 10,000)."""
    per = min(5_000, nodes - 2)
    blocks = (nodes - 2) // per
    rest = nodes - 2 - per * blocks
    lines = ["block run() {", f"    relu * {per}", "}", "network chain {", "    input 8 x 8 x 8", "    conv(8, 1)"]
    lines += ["    run()"] * blocks
    if rest > 0:
        lines.append(f"    relu * {rest}")
    return "\n".join(lines + ["}", ""])


def resnet_chain(nodes: int) -> str:
    """Residual blocks of 7 nodes each (conv, bn, relu, conv, bn, add, relu)."""
    blocks = max(1, (nodes - 2) // 7)
    return "\n".join([
        "block basic(c) {",
        "    residual { conv(c, 3, pad=1, bias=false) -> bn -> relu -> conv(c, 3, pad=1, bias=false) -> bn }",
        "    relu",
        "}",
        "block stage(n) {",
        "    basic(8) * n",
        "}",
        "network deep {",
        "    input 8 x 8 x 8",
        "    conv(8, 1)",
        *(["    stage(1000)"] * (blocks // 1000)),
        *([f"    stage({blocks % 1000})"] if blocks % 1000 else []),
        "}",
        "",
    ])


def written_out(nodes: int) -> str:
    """One statement per line, nothing repeated: the text grows with the network (the parser's case)."""
    body = [f"    c{i}: conv(8, 1)" if i % 2 == 0 else f"    r{i}: relu" for i in range(nodes - 1)]
    return "\n".join(["network flat {", "    input 8 x 8 x 8", *body, "}", ""])


SHAPES = {"relu": relu_chain, "resnet": resnet_chain, "lines": written_out}


def _timed(fn):
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(source: str, stages: tuple[str, ...]) -> tuple[int, dict[str, float]]:
    """(node count, seconds per stage) for one network."""
    parse(relu_chain(4), "<warm-up>")  # the parser's tables and lexer are built once per process
    times: dict[str, float] = {}
    times["parse"], module = _timed(lambda: parse(source, "<bench>"))
    library = Library("<bench>")
    _Importer(library).visit(module, Path.cwd(), stack=["<bench>"])  # no imports: just the definitions
    times["elaborate"], graph = _timed(lambda: elaborate(library))
    times["analyze"], summary = _timed(lambda: analyze(graph))
    if "summary-json" in stages:
        from archdsl.cli.main import summary_json
        from archdsl.frontend.gcpause import paused_gc

        def summary_command():  # what `archdsl summary --json` does after elaborating
            with paused_gc():
                return summary_json(analyze(graph).to_json())

        times["summary-json"], _ = _timed(summary_command)
    if {"passes", "plan", "emit"} & set(stages):
        from archdsl.codegen import generate
        from archdsl.codegen.plan import make_plan
        from archdsl.passes import optimize

        times["passes"], optimized = _timed(lambda: optimize(graph))
        if "plan" in stages:
            times["plan"], _ = _timed(lambda: make_plan(optimized.graph))
        if "emit" in stages:
            times["emit"], _ = _timed(lambda: generate(optimized.graph))
    return len(graph), {s: times[s] for s in stages if s in times}


def best_of(repeat: int, source: str, stages: tuple[str, ...]) -> tuple[int, dict[str, float]]:
    """The fastest of `repeat` runs per stage: other processes only ever add time."""
    runs = [measure(source, stages) for _ in range(repeat)]
    return runs[0][0], {s: min(r[1][s] for r in runs) for s in runs[0][1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10_000, help="N: the smaller size (the larger is 2N)")
    p.add_argument("--shapes", default="relu,resnet,lines", help="network shapes: relu, resnet, lines")
    p.add_argument("--stages", default=",".join(STAGES), help=f"stages to time ({', '.join(STAGES)})")
    p.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest counts (default 3)")
    args = p.parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s): {', '.join(unknown)}")
    for shape in args.shapes.split(","):
        make = SHAPES[shape]
        n1, small = best_of(args.repeat, make(args.nodes), stages)
        n2, large = best_of(args.repeat, make(2 * args.nodes), stages)
        print(f"{shape}: {n1:,} and {n2:,} nodes")
        print(f"  {'stage':<13} {'T(N) s':>9} {'T(2N) s':>9} {'ratio':>6}")
        for stage in small:
            ratio = large[stage] / small[stage] if small[stage] > 0 else float("nan")
            verdict = "" if ratio < 2.6 else "  <- superlinear"
            print(f"  {stage:<13} {small[stage]:9.3f} {large[stage]:9.3f} {ratio:6.2f}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
