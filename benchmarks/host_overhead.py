"""Host time of a generated program's forward: our Python per launch, Triton's launch left out.

    python -m benchmarks.host_overhead                       # resnet50, mobilenet_v3, convnext at batch 1
    python -m benchmarks.host_overhead --nets resnet50 --batch 8 --rounds 50
    python -m benchmarks.host_overhead --profile             # also a cProfile top list per network

Runs on the CPU (no GPU needed): TRITON_INTERPRET=1, every network compiled with
`archdsl.compile(file, device="cpu")`, and Triton's launch stubbed out
(`InterpretedFunction.run` replaced by a function that only counts), so a forward does all of
the generated program's host work and none of the kernels' work.

Counted ("forward"): one call of the generated `Network` (`model._network(x)`, not the
`CompiledModel` wrapper): the NCHW -> NHWC input copy, every launcher call (argument checks,
path / block / split-K choice, stride and pad normalisation, grid, keyword arguments) down to
`kernel[grid](...)` and the (stubbed) call it makes, the views the program takes, and the
output's `clone()`.
Not counted: Triton's own launch (binding the arguments, the specialization key, the cache
lookup, the driver call: about 15-30 µs a launch on a GPU host), the kernels, and
`CompiledModel.forward`'s input checks.
The input copy is timed on its own ("copy": the same `copy_` into the program's input buffer) and
subtracted: on the CPU it is a real 150k-element strided copy, on a GPU a kernel launch (one
more launch's worth of host time).  "per launch" = (forward - copy) / launches.
"calls" replays one forward's `kernel[grid](*args, **kwargs)` calls alone, with the arguments
recorded from it: Python passing those arguments (30-50 of them, mostly by keyword) through
`__getitem__`'s lambda into the stub, which Triton's launch pays on a GPU host too.  "ours" =
(forward - copy - calls) / launches: the launchers' and the program's own Python per launch.

Each figure is the fastest of --rounds rounds of --number calls (the minimum is the run least
disturbed by the other work on the machine), in µs per call.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors, no GPU

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NETS = {"resnet50": "examples/resnet50.arch", "mobilenet_v3": "examples/mobilenet_v3.arch",
        "convnext": "examples/convnext.arch"}


class LaunchCounter:
    """Replaces Triton's interpreted launch by a counter for as long as it is installed."""

    def __init__(self):
        from triton.runtime.interpreter import InterpretedFunction
        self.cls, self.count, self.calls = InterpretedFunction, 0, None

    def __enter__(self):
        self.original = self.cls.run

        def run(fn_self, *args, grid, warmup, **kwargs):  # the stub: no argument binding, no kernel
            self.count += 1
            if self.calls is not None:
                self.calls.append((fn_self, grid, args, kwargs))

        self.cls.run = run
        return self

    def __exit__(self, *exc):
        self.cls.run = self.original


def fastest(fn, rounds: int, number: int) -> float:
    """Seconds per call of fn(): the fastest of `rounds` rounds of `number` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def measure(name: str, batch: int, rounds: int, number: int, profile: bool, top: int) -> dict:
    import archdsl
    model = archdsl.compile(ROOT / NETS[name], device="cpu")
    shape = tuple(model.graph.shape(model.graph.inputs[0]))
    x = torch.randn(batch, *shape)
    with LaunchCounter() as counter:
        model(x)  # builds the Network (weights prepared) and its buffers for this batch size
        net = model._network
        counter.count, counter.calls = 0, []
        net(x)
        launches, calls, counter.calls = counter.count, counter.calls, None

        def replay():
            for kernel, grid, args, kwargs in calls:
                kernel[grid](*args, **kwargs)

        buffer = net.buffers(batch)["input"]
        copy = fastest(lambda: buffer.copy_(x.permute(0, 2, 3, 1)), rounds, number)
        bare = fastest(replay, rounds, number)
        forward = fastest(lambda: net(x), rounds, number)
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(rounds * number):
                net(x)
            prof.disable()
            print(f"\n--- {name}, batch {batch}: cProfile of {rounds * number} forwards (top {top} by own time)")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(top)
    return {"net": name, "batch": batch, "launches": launches, "forward_us": forward * 1e6,
            "copy_us": copy * 1e6, "calls_us": bare * 1e6, "per_launch_us": (forward - copy) * 1e6 / max(launches, 1),
            "ours_us": (forward - copy - bare) * 1e6 / max(launches, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30, help="rounds; the fastest counts")
    ap.add_argument("--number", type=int, default=10, help="forwards per round")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile top list per network")
    ap.add_argument("--top", type=int, default=25, help="rows of the cProfile list")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("host_overhead: run with TRITON_INTERPRET=1 (it stubs the interpreter's launch)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # the copy's time should not depend on how busy the other core is
    rows = [measure(n, args.batch, args.rounds, args.number, args.profile, args.top) for n in args.nets]
    print(f"\nhost time per forward, Triton's launch stubbed (fastest of {args.rounds} x {args.number}), µs")
    print(f"{'network':<14}{'batch':>6}{'launches':>10}{'forward':>10}{'copy':>9}{'calls':>9}{'per launch':>12}"
          f"{'ours':>8}")
    for r in rows:
        print(f"{r['net']:<14}{r['batch']:>6}{r['launches']:>10}{r['forward_us']:>10.0f}{r['copy_us']:>9.0f}"
              f"{r['calls_us']:>9.0f}{r['per_launch_us']:>12.1f}{r['ours_us']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
