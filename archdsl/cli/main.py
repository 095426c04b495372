"""`archdsl` command line: summary, check (and, later, compile/run/bench)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from pathlib import Path

from .. import __version__, dtypes
from ..analysis import DTYPE_BYTES, analyze, collapse, output_labels, output_names
from ..elaborate import load
from ..errors import NO_LOC, ArchError, SrcLoc, did_you_mean, printable
from ..frontend.gcpause import paused_gc
from .progress import Count, Stages
from .import_cmd import add_import_parser
from .options import parse_input
from .table import render


def _parse_set(text: str):
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise ArchError(f"--set {text}: expected NAME=VALUE", NO_LOC, hint="for example --set width=16")
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key, low == "true"
    for conv in (int, float):
        try:
            value = conv(raw)
        except ValueError:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            break
        return key, value
    raise ArchError(f"--set {text}: the value must be a finite number, true or false", NO_LOC)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .arch file")
    p.add_argument("--network", help="which network of the file (default: its only one)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a network parameter")
    p.add_argument("--input", metavar="CxHxW", help="override the input shape, e.g. 3x32x32")


def _graph(args):
    params = dict(_parse_set(s) for s in args.set)
    shape = parse_input(args.input) if args.input else None
    graph = load(args.file, args.network, params, shape)
    for loc, message in graph.graph["warnings"]:
        print(printable(f"{loc}: warning: {message}"), file=sys.stderr)
    return graph


def _say(text: str, file=None) -> None:
    """Print a line that may hold a user's file or label names, control characters escaped."""
    print("\n".join(printable(line) for line in text.split("\n")), file=file)


def cmd_summary(args) -> int:
    g = _graph(args)
    summary = analyze(g, batch=args.batch)
    if args.depth:
        summary = collapse(summary, g, args.depth)
    if args.json:
        sys.stdout.write(summary_json(summary.to_json(args.dtype)))
    else:
        scopes = g.graph["scopes"] if not args.depth else \
            {k: v for k, v in g.graph["scopes"].items() if k.count(".") < args.depth - 1}
        _say(render(summary, scopes, args.dtype, width=_terminal_width()))
    return 0


def summary_json(data: dict) -> str:
    """`summary --json`'s text: indented, one layer per line. json.dumps(indent=2) would run the
    pure-Python encoder over every field of every layer (a third of the time at 100k layers);
    each line here is the C encoder's."""
    parts = []
    for key, value in data.items():
        if key == "layers":
            rows = ",\n".join("    " + json.dumps(row) for row in value)
            parts.append(f'  "layers": [\n{rows}\n  ]')
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _terminal_width() -> int | None:
    """The terminal's width when printing to one (the table then fits it); None when piped."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def cmd_check(args) -> int:
    g = _graph(args)
    if args.dump:
        _say(g.dump())
    else:
        _say(f"{args.file}: ok — network {g.name}, {len(g)} nodes, outputs: {', '.join(output_labels(g))}")
    return 0


def cmd_export(args) -> int:
    graph = _graph(args)  # the file's own mistakes first, before torch is imported
    onnx_path = _check_onnx_path(args.onnx)
    with Stages("export", ["build the model", "load weights", "export to ONNX"]) as progress:
        progress.step("build the model")
        from ..backends.torch_backend import load_weights, to_torch
        from ..export import export_onnx

        model = to_torch(graph, seed=0)
        if args.weights:
            progress.step("load weights")
            load_weights(model, args.weights)
            _print_weight_warnings(model)
        progress.step("export to ONNX")
        path = export_onnx(model, onnx_path, opset=args.opset)
    _say(f"wrote {path} (ONNX opset {args.opset}, dynamic batch; inputs: {', '.join(model.graph.inputs)}; "
         f"outputs: {', '.join(output_names(graph))})")
    return 0


def _check_onnx_path(text: str) -> Path:
    path = Path(text)
    loc = SrcLoc(text, 0, 0)
    if path.is_dir():
        raise ArchError(f"--onnx {printable(text)} is a directory; name the .onnx file to write", loc)
    if not path.parent.is_dir():
        raise ArchError(f"--onnx {printable(text)}: no directory {printable(str(path.parent))}", loc)
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ArchError(f"--onnx {printable(text)}: cannot write in {printable(str(path.parent))}", loc)
    return path


def _print_weight_warnings(model) -> None:
    for warning in getattr(getattr(model, "load_report", None), "warnings", []):
        _say(f"archdsl: warning: {warning}", file=sys.stderr)


def cmd_compile(args) -> int:
    """Every mistake that can be found without torch (the file, the options, the output
    directory, the memory the weights need) is reported before torch is imported (~5 s)."""
    import time

    from ..analysis import check_weight_memory
    from ..codegen import artifacts
    from ..codegen.emit import check_lowerable

    graph = _graph(args)
    disable = _disabled_passes(args)
    batches = _tune_batches(args.tune) if args.tune else ()
    out = artifacts.check_output_dir(Path(args.output) if args.output else Path("build") / graph.name, args.force)
    if args.weights:
        _check_weights_path(args.weights)
    check_weight_memory(graph)
    check_lowerable(graph)
    settings = ([w for s in args.set for w in ("--set", s)] + (["--network", args.network] if args.network else [])
                + (["--input", args.input] if args.input else [])
                + (["--dtype", args.dtype] if args.dtype != "float32" else [])
                + [w for name in args.disable for w in ("--disable", name)])  # the model.py header's command
    stages = ["load torch", "optimize and generate", "initialize weights", "write"]
    with Stages("compile", stages) as progress:
        progress.step("load torch")
        _require_cuda_for_tuning(batches)
        from ..backends.torch_backend import load_weights, to_torch
        from ..runtime import build

        progress.step("optimize and generate")
        start = time.perf_counter()
        compiled = build(graph, args.dtype, origin=args.file, settings=settings, disable=disable)
        seconds = time.perf_counter() - start
        progress.step("initialize weights")
        model = to_torch(graph, seed=0)  # seeded: the same file compiles to the same bytes
        if args.weights:
            load_weights(model, args.weights)
        progress.step("write")
        artifacts.write(compiled, model.state_dict(), out, force=args.force)
    _print_weight_warnings(model)
    if args.dump_after:
        _say(compiled.optimized.after[args.dump_after].dump())
    if args.explain:
        from ..codegen.plan import explain

        for report in compiled.optimized.reports:
            _say(report.text())
        _say("\n".join(explain(compiled)))
        from ..runtime.tune import tuning_report  # where each launch's block sizes come from

        _say("\n".join(tuning_report(compiled.program.schedule, args.dtype, batches or (1,))))
    program = compiled.program
    _say(f"wrote {out}/ (model.py, weights.safetensors, report.md): {program.launches} kernel launches per "
         f"forward, {len(graph)} -> {len(compiled.optimized.graph)} nodes; generated in {seconds * 1000:.0f} ms")
    if batches:
        from ..runtime.tune import TuneCache, network_tuning

        cache = TuneCache()
    for batch in batches:
        with Count(f"tune batch {batch}") as progress:
            table = network_tuning(compiled.program.schedule, batch, args.dtype, cache, autotune_missing=True,
                                   device="cuda", progress=progress)
        print(f"tuned batch {batch}: {len(table)} launches (conv, chain, linear) have tuned block sizes ({cache.path})")
    return 0


def _check_weights_path(text: str) -> None:
    path = Path(text)
    if not path.is_file():
        raise ArchError(f"--weights {printable(text)}: no such file", SrcLoc(text, 0, 0),
                        hint="a state dict saved with torch.save (.pt, .pth) or a .safetensors file")


def _tune_batches(text: str) -> tuple[int, ...]:
    """`--tune 1,32,256`, checked before any work (the GPU is checked once torch is loaded)."""
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise ArchError(f"--tune takes batch sizes like 1,32,256, got {text!r}", NO_LOC)
    return batches


def _require_cuda_for_tuning(batches: tuple[int, ...]) -> None:
    if not batches:
        return
    import torch

    if not torch.cuda.is_available():
        raise ArchError("--tune times kernels on a CUDA GPU and this machine has none", NO_LOC,
                        hint="compile without --tune here; the compiled model uses the kernels' default blocks")


def _disabled_passes(args) -> tuple[str, ...]:
    """--passes (run only these) and --disable (skip these), checked against the pipeline."""
    from ..passes import PIPELINE

    names = [name for name, _ in PIPELINE]
    chosen = [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes is not None else names
    for name in chosen + args.disable + ([args.dump_after] if args.dump_after else []):
        if name not in names:
            raise ArchError(f"there is no pass `{name}`", NO_LOC,
                            hint=did_you_mean(name, names) or f"passes: {', '.join(names)}")
    disabled = tuple(n for n in names if n not in chosen or n in args.disable)
    if args.dump_after in disabled:
        raise ArchError(f"--dump-after {args.dump_after}: that pass does not run", NO_LOC)
    return disabled


def cmd_run(args) -> int:
    import time

    graph = _graph(args)  # the file's own mistakes first, before torch is imported
    if args.weights:
        _check_weights_path(args.weights)
    if args.batch < 1:
        raise ArchError(f"--batch {args.batch}: the batch size must be at least 1", NO_LOC)
    from ..analysis import check_weight_memory
    from ..codegen.emit import check_lowerable

    check_weight_memory(graph)
    check_lowerable(graph)
    stages = ["load torch", "compile", "first forward (Triton compiles)", "second forward", "float64 reference"]
    with Stages("run", stages) as progress:
        progress.step("load torch")
        import torch

        from ..backends.torch_backend import load_weights, to_torch
        from ..runtime import compile as compile_model

        if args.interpret:
            os.environ["TRITON_INTERPRET"] = "1"
        device = "cpu" if args.interpret or not torch.cuda.is_available() else "cuda"
        progress.step("compile")
        model = compile_model(graph, dtype=args.dtype, device=device)  # the graph checked above
        if args.weights:
            load_weights(model, args.weights)
        reference = to_torch(graph).eval()
        reference.load_state_dict(model.state_dict())
        torch.manual_seed(0)
        xs = [torch.randn(args.batch, *graph.shape(n)) for n in graph.inputs]
        timings = []
        for step in stages[2:4]:  # the first call includes Triton's compilation (or the interpreter's warm-up)
            progress.step(step)
            start = time.perf_counter()
            outs = model(*xs)
            if device == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - start)
        progress.step("float64 reference")
        with torch.no_grad():
            refs = reference.double()(*(x.double() for x in xs))
    outs = outs if isinstance(outs, tuple) else (outs,)
    refs = refs if isinstance(refs, tuple) else (refs,)
    where = "Triton interpreter on the CPU" if device == "cpu" else torch.cuda.get_device_name()
    _say(f"{graph.name}: batch {args.batch}, {model.compiled.program.launches} launches, {args.dtype}, {where}")
    for name, o, r in zip(output_names(graph), outs, refs):
        err = ((o.double().cpu() - r).norm() / r.norm().clamp_min(1e-30)).item()
        _say(f"  {name:<12} {tuple(o.shape)}  relative error vs float64 reference: {err:.2e}")
    print(f"  forward: {timings[0] * 1000:.1f} ms the first time (Triton compiles), then {timings[1] * 1000:.1f} ms"
          " (a wall-clock figure, not a benchmark: see archdsl bench)")
    return 0


def cmd_viz(args) -> int:
    from .. import viz

    g = _graph(args)
    path = viz.write(g, args.output, args.format, args.depth, args.rankdir)
    if path != "-":
        _say(f"wrote {path}")
    return 0


def _add_viz_parser(sub) -> None:
    from ..viz import FORMATS, RANKDIRS

    p = sub.add_parser("viz", help="draw the network with Graphviz (DOT; SVG, PNG, PDF when `dot` is installed)")
    _add_model_args(p)
    p.add_argument("-o", "--output", metavar="OUT",
                   help="the file to write (its suffix implies the format; - for stdout); default NETWORK.dot")
    p.add_argument("--format", choices=FORMATS, help="dot (always), or svg/png/pdf (needs Graphviz's `dot`)")
    p.add_argument("--depth", type=int, default=0, metavar="N",
                   help="draw blocks nested deeper than N names as one box")
    p.add_argument("--rankdir", choices=RANKDIRS, default="TB", help="top to bottom (TB) or left to right (LR)")
    p.set_defaults(run=cmd_viz)


def cmd_bench(args) -> int:
    """`archdsl bench FILE`: the benchmark protocol on a CUDA GPU (see archdsl/bench/harness.py)."""
    from ..bench import harness, report

    graph = _graph(args)  # the file's own mistakes first, with their locations
    try:
        config = harness.BenchConfig(
            batches=harness.parse_batches(args.batch), dtypes=harness.parse_dtypes(args.dtype),
            layers=args.only in ("all", "layers"), e2e=args.only in ("all", "e2e"),
            e2e_providers=harness.parse_names(args.providers, [p.name for p in harness.E2E_PROVIDERS], "provider")
            if args.providers else (),
            iters=args.iters, warmup_ms=args.warmup_ms, flush_l2=not args.no_flush_l2, tune=args.tune,
            seed=args.seed, weights=args.weights)
    except ValueError as exc:
        raise ArchError(str(exc), NO_LOC) from None
    if args.iters < 100:
        print(f"archdsl bench: warning: --iters {args.iters}: the protocol asks for at least 100 timed runs",
              file=sys.stderr)
    if args.plan:
        print(report.render_plan(harness.plan(graph, config)), end="")
        return 0
    ok, why = harness.cuda_status()
    if not ok:
        print(f"archdsl bench: error: {why}.\n"
              "The benchmark times kernels on a CUDA GPU (an H100 or H200 is what the protocol is written for) "
              "and cannot run without one; nothing was measured and nothing was written.\n"
              "hint: `archdsl bench FILE --plan` shows what would be measured; `archdsl run FILE --interpret` "
              "checks the compiled network on the CPU.", file=sys.stderr)
        return 2
    out = Path(args.output or Path("build") / "bench" / graph.name)
    the_plan = harness.plan(graph, config)
    progress = harness.Progress(the_plan.steps, sys.stderr, enabled=not args.quiet)
    progress.message(f"archdsl bench: {graph.name} on {why}: {the_plan.steps} measurements")
    run = harness.run_bench(graph, config, device="cuda", progress=progress, source=args.file)
    print(report.render_text(run), end="")
    paths, notes = report.write_all(run, out, png=not args.no_png)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    for note in notes:
        print(f"note: {note}")
    problems = run.problems()
    if problems:
        print(f"archdsl bench: {len(problems)} measurement(s) failed or gave a wrong answer (see above)",
              file=sys.stderr)
        return 3
    return 0


def _add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark on a CUDA GPU: every distinct conv and the whole network against cuDNN and "
        "torch.compile (JSON, Markdown, plot)",
        description="Per layer (every distinct conv: archdsl vs F.conv2d channels-last; µs, TFLOP/s, GB/s, % of the "
        "roofline floor) and end to end (eager NCHW, eager channels-last + cudnn.benchmark, that in a CUDA graph, "
        "torch.compile max-autotune, archdsl, archdsl in a CUDA graph), each output checked against a float64 "
        "reference. Exit status: 0 all ok, 2 no GPU or a usage error, 3 some measurement failed or was wrong.")
    _add_model_args(p)
    p.add_argument("--batch", default="1,32,256", metavar="B1,B2", help="batch sizes (default 1,32,256)")
    p.add_argument("--dtype", default="bfloat16,float16", metavar="T1,T2",
                   help="dtypes: bfloat16/bf16, float16/fp16, float32/fp32 (default bfloat16,float16)")
    p.add_argument("--only", choices=("all", "layers", "e2e"), default="all", help="run one part only")
    p.add_argument("--providers", metavar="P1,P2", help="end-to-end providers (default: all)")
    p.add_argument("--iters", type=int, default=100, help="at least this many timed runs per measurement")
    p.add_argument("--warmup-ms", type=float, default=25.0, help="warm-up before timing (ms)")
    p.add_argument("--no-flush-l2", action="store_true", help="do not clear the L2 cache before each timed run")
    p.add_argument("--tune", action="store_true",
                   help="also autotune each conv (archdsl_tuned rows; results cached in $ARCHDSL_CACHE/tune.json)")
    p.add_argument("--weights", metavar="FILE", help="weights to use (default: PyTorch's init with calibrated BN)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where to write bench.json/.md/.svg (default build/bench/NETWORK)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG plot even when matplotlib is installed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plan", action="store_true",
                   help="print what would be measured (distinct convs, FLOPs, bytes) and exit; needs no GPU")
    p.set_defaults(run=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archdsl", description="A language and compiler for CNN architectures.")
    parser.add_argument("--version", action="version", version=f"archdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, activations, receptive field")
    _add_model_args(p)
    p.add_argument("--depth", type=int, default=0, metavar="N", help="collapse blocks nested deeper than N names")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPE_BYTES), help="bytes per activation value")
    p.add_argument("--batch", type=_positive, metavar="N",
                   help="count activations and memory for a batch of N (default: per image)")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("check", help="parse and elaborate; report the first error")
    _add_model_args(p)
    p.add_argument("--dump", action="store_true", help="print the elaborated graph")
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("export", help="export the reference model (e.g. to ONNX)")
    _add_model_args(p)
    p.add_argument("--onnx", required=True, metavar="OUT", help="write an ONNX file")
    p.add_argument("--weights", metavar="FILE", help="load weights first (.pt, .pth or .safetensors)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer; default 18)")
    p.set_defaults(run=cmd_export)
    p = sub.add_parser("compile", help="generate the Triton program, its weights and a report")
    _add_model_args(p)
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (default build/NETWORK); an existing "
                   "one is replaced only if it is empty or an earlier archdsl output")
    p.add_argument("--force", action="store_true",
                   help="replace the output directory even if it holds files archdsl did not write")
    p.add_argument("--dtype", default="float32", type=dtypes.argument,
                   help=f"activation and weight dtype: {dtypes.SPELLINGS} (accumulation is always float32)")
    p.add_argument("--weights", metavar="FILE", help="weights to ship (.pt, .pth or .safetensors); default: "
                   "PyTorch's initialization")
    p.add_argument("--disable", action="append", default=[], metavar="PASS", help="skip an optimization pass")
    p.add_argument("--passes", metavar="P1,P2", help="run only these passes (in pipeline order)")
    p.add_argument("--explain", action="store_true", help="print what each pass fused, and why it declined, and "
                   "where each launch's block sizes come from (your tuning cache, archdsl's shipped table or the "
                   "kernels' defaults) at batch 1 (or the --tune batches)")
    p.add_argument("--dump-after", metavar="PASS", help="print the graph as PASS left it")
    p.add_argument("--tune", metavar="BATCHES", help="also autotune every conv launch for these batch sizes "
                   "(e.g. 1,32,256) on this machine's GPU, into the cache the compiled model reads; needs CUDA")
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("run", help="compile, run on random input, report the error against the reference")
    _add_model_args(p)
    p.add_argument("--batch", type=int, default=2, help="batch size of the random input (default 2)")
    p.add_argument("--dtype", default="float32", type=dtypes.argument,
                   help=f"activation and weight dtype of the compiled model: {dtypes.SPELLINGS}")
    p.add_argument("--weights", metavar="FILE", help="weights to run with (.pt, .pth or .safetensors); default: "
                   "PyTorch's initialization")
    p.add_argument("--interpret", action="store_true", help="run in Triton's CPU interpreter (no GPU needed)")
    p.set_defaults(run=cmd_run)
    _add_viz_parser(sub)
    _add_bench_parser(sub)
    add_import_parser(sub)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run in (cmd_summary, cmd_check):  # front end only: a few objects per layer, all kept
            with paused_gc():
                return args.run(args)
        return args.run(args)
    except ArchError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, said plainly
        print(f"archdsl: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug in archdsl, not in your file; please report it with the file that caused it.",
              file=sys.stderr)
        if os.environ.get("ARCHDSL_DEBUG"):
            traceback.print_exc()
        else:
            print("(set ARCHDSL_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
