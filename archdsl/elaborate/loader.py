"""Files and imports -> a `Library` of every block and network definition in reach."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArchError, Note, SrcLoc
from ..frontend import ast
from ..frontend.parser import parse
from ..ops import OPS

MAX_IMPORTS = 256


@dataclass
class Library:
    """All definitions visible from the root file (its own and, transitively, its imports')."""

    root: str
    defs: dict[str, ast.BlockDef] = field(default_factory=dict)
    functions: dict[str, ast.FuncDef] = field(default_factory=dict)  # `def name(...) = expr`

    @property
    def networks(self) -> list[ast.BlockDef]:
        return [d for d in self.defs.values() if d.is_network]

    def add(self, d: ast.BlockDef) -> None:
        if isinstance(d, ast.FuncDef):
            from .evaluate import FUNCTIONS

            if d.name in FUNCTIONS:
                raise ArchError(f"function `{d.name}` has the name of a built-in function", d.loc,
                                hint="rename the function")
        elif not d.is_network and d.name in OPS:
            raise ArchError(f"block `{d.name}` has the name of a built-in op", d.loc,
                            hint=f"rename the block: a block named `{d.name}` would hide the op everywhere")
        prev = self.defs.get(d.name) or self.functions.get(d.name)
        if prev is not None and prev is not d:
            if prev.loc == d.loc:
                return
            raise ArchError(f"`{d.name}` is defined twice", d.loc,
                            hint="rename one of the definitions",
                            notes=[Note(prev.loc, "the other definition is here")])
        if isinstance(d, ast.FuncDef):
            self.functions[d.name] = d
        else:
            self.defs[d.name] = d


def load_file(path: str | Path) -> Library:
    """Parse `path` and everything it imports (paths relative to the importing file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ArchError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", SrcLoc(str(path), 0, 0)) from None
    return load_source(text, str(path), base=path.parent)


def load_source(text: str, filename: str = "<string>", base: Path | None = None) -> Library:
    lib = Library(filename)
    _Importer(lib).visit(parse(text, filename), base or Path.cwd(), stack=[_key(filename)])
    return lib


def _key(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except (OSError, ValueError, RuntimeError):  # a NUL in the name; a symlink loop
        return filename


def _q(text: str) -> str:
    """A path in double quotes, control characters escaped."""
    return json.dumps(text, ensure_ascii=False)


def _read(path: Path) -> str:
    """An imported file's text; refuses what is not a regular file (a FIFO or /dev/zero would hang)."""
    if path.exists() and not path.is_file():
        raise OSError(21 if path.is_dir() else 22, "not a regular file" if not path.is_dir() else "is a directory")
    return path.read_text(encoding="utf-8")


class _Importer:
    def __init__(self, lib: Library):
        self.lib = lib
        self.done: set[str] = set()

    def visit(self, module: ast.Module, base: Path, stack: list[str]) -> None:
        for imp in module.imports:
            target = (base / imp.path)
            key = _key(str(target))
            if key in stack:
                cycle = " -> ".join(Path(s).name for s in stack[stack.index(key):] + [key])
                raise ArchError(f"circular import: {cycle}", imp.loc,
                                hint="move the shared blocks into a file that both can import")
            if key in self.done:
                continue
            if len(self.done) >= MAX_IMPORTS:
                raise ArchError(f"more than {MAX_IMPORTS} imported files", imp.loc)
            try:
                text = _read(target)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                why = "no such file" if isinstance(exc, FileNotFoundError) else \
                    "not UTF-8 text:" if isinstance(exc, UnicodeDecodeError) else \
                    f"{getattr(exc, 'strerror', None) or 'invalid path'}:"
                raise ArchError(f"cannot import {_q(imp.path)}: {why} {_q(str(target))}", imp.loc,
                                hint="import paths are relative to the importing file") from None
            self.done.add(key)
            self.visit(parse(text, str(target)), target.parent, stack + [key])
        for d in (*module.defs, *module.functions):
            self.lib.add(d)
