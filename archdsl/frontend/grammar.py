"""Where the grammar (grammars/arch.lark, the one definition of the syntax) is read from."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def grammar_text() -> str:
    """The grammar: shipped inside the installed package, or read from the source checkout."""
    packaged = resources.files("archdsl") / "grammars" / "arch.lark"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "arch.lark").read_text(encoding="utf-8")
