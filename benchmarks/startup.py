"""How long the everyday commands take from a cold process: what a user waits for.

    python -m benchmarks.startup                  # summary, check and a syntax error, 15 runs each
    python -m benchmarks.startup --runs 30 --file examples/vgg16.arch

Each command runs --runs times as a fresh process; the fastest wall time and the fastest CPU
time (user + system, from the child's rusage) count, next to a bare `python -c pass`, which is
the floor nothing can go under.  CPU time wanders less than wall time on a busy machine.
`--imports` lists the heaviest modules `archdsl summary` imports (`python -X importtime`).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], runs: int) -> tuple[float, float]:
    """(fastest wall seconds, fastest CPU seconds) of `runs` fresh runs of `cmd`."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def heaviest_imports(file: str, top: int = 12) -> list[tuple[int, str]]:
    """(cumulative µs, module) of the slowest top-level imports of `archdsl summary file`."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "archdsl", "summary", file], cwd=ROOT,
                         capture_output=True, text=True, check=False).stderr
    rows = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 3:  # top level and one below
            rows.append((int(m.group(1)), m.group(2) + m.group(3)))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--file", default="examples/resnet50.arch")
    ap.add_argument("--imports", action="store_true", help="also list the heaviest imports")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        broken = os.path.join(tmp, "broken.arch")
        Path(broken).write_text("network n {\n    input 3 x 8 x 8\n    conv(8, 3) -> batchnorm\n}\n")
        archdsl = [sys.executable, "-m", "archdsl"]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            f"archdsl summary {args.file}": [*archdsl, "summary", args.file],
            f"archdsl check {args.file}": [*archdsl, "check", args.file],
            "archdsl check <a file with an error>": [*archdsl, "check", broken],
        }
        print(f"{'command':<52} {'wall':>8} {'cpu':>8}   (fastest of {args.runs})")
        for name, cmd in commands.items():
            wall, cpu = measure(cmd, args.runs)
            print(f"{name:<52} {wall * 1e3:6.0f} ms {cpu * 1e3:6.0f} ms")
    if args.imports:
        print("\nheaviest imports of `archdsl summary` (cumulative):")
        for us, mod in heaviest_imports(args.file):
            print(f"  {us / 1e3:7.1f} ms  {mod}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
