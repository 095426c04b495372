"""Example networks the compiler cannot lower yet: they use an op of `test_registry.EMIT_PENDING`
(issue 13's ops, registered with their torch reference before their kernels).  The tests that
compile every example take `compilable(...)`; a file returns to them by itself when the last of its
ops leaves EMIT_PENDING, and `test_every_pending_file_is_pending` keeps the list honest."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import archdsl
from test_registry import EMIT_PENDING


@lru_cache(maxsize=None)
def pending_ops(path: Path) -> frozenset[str]:
    """The ops of the file's default network that have no code-generation rule yet."""
    g = archdsl.load(path)
    return frozenset(g.op(n) for n in g.nodes) & EMIT_PENDING


def compilable(paths) -> list[Path]:
    return [p for p in paths if not pending_ops(p)]
