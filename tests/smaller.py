"""Reduced-size variants of the example networks, read from each file's `# Smaller:` header line.

Every zoo file documents how to build a small version (`# Smaller:  --set width=16 --input
3x32x32`); tests that run models use exactly that, so the documented recipe is what is tested.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _value(raw: str):
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    raise ValueError(f"cannot read --set value {raw!r}")


def smaller(path: Path) -> dict:
    """`{"params": {...}, "input_shape": (c, h, w) or None, "network": name or None}` for `path`."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    match = next((re.search(r"Smaller:\s*(.*)", line) for line in header if "Smaller:" in line), None)
    out: dict = {"params": {}, "input_shape": None, "network": None}
    if match is None:
        return out
    words = shlex.split(match.group(1).split("(")[0])
    for flag, arg in zip(words, words[1:]):
        if flag == "--set":
            key, _, raw = arg.partition("=")
            out["params"][key] = _value(raw.rstrip(",;."))
        elif flag == "--input":
            out["input_shape"] = tuple(int(v) for v in arg.rstrip(",;.").split("x"))
        elif flag == "--network":
            out["network"] = arg
    return out


def load_small(path: Path):
    import archdsl

    spec = smaller(path)
    return archdsl.load(path, spec["network"], spec["params"], spec["input_shape"])
