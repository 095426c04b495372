"""Option values the subcommands share, parsed into what the API takes (errors exit 2)."""

from __future__ import annotations

from ..elaborate import Limits
from ..errors import NO_LOC, ArchError


def parse_input(text: str) -> tuple[int, int, int]:
    """`--input CxHxW` (also `×` or `,` between the numbers) as (C, H, W)."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ArchError(f"--input {text}: expected CxHxW with positive integers", NO_LOC, hint="for example --input 3x32x32")
    limits = Limits()
    if dims[0] > limits.channels or max(dims[1:]) > limits.spatial:
        raise ArchError(f"--input {text}: past the sane limits ({limits.channels} channels, "
                        f"{limits.spatial} pixels a side)", NO_LOC)
    return dims
