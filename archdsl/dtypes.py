"""The dtype spellings archdsl accepts, everywhere (`archdsl.compile`, `compile --dtype`, `bench
--dtypes`): one table, so that `fp16` means the same in each.

`canonical("fp16")` is "float16"; an unknown spelling is a ValueError naming the accepted ones.
A generated program computes in float32, float16 or bfloat16 (`COMPUTE`); analysis counts bytes
for a few more (`BYTES`).
"""

from __future__ import annotations

ALIASES = {"float32": "float32", "fp32": "float32", "float": "float32",
           "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
COMPUTE = ("float32", "float16", "bfloat16")  # what the kernels accept as activation dtype


def canonical(name: str) -> str:
    """The canonical name of a dtype spelling (case-insensitive); ValueError if unknown."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(ALIASES)}")
    return ALIASES[key]


def argument(text: str) -> str:
    """`canonical` for argparse's `type=`: an unknown spelling is a usage error saying which exist."""
    import argparse

    try:
        return canonical(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SPELLINGS = "float32 (fp32), float16 (fp16, half), bfloat16 (bf16)"


def name_of(dtype) -> str:
    """The canonical name of a torch dtype (`torch.bfloat16`) or of any spelling ("bf16")."""
    return canonical(str(dtype).removeprefix("torch."))
