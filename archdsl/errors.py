"""User-facing errors: every mistake in a `.arch` file becomes an `ArchError` with a location.

The CLI renders an `ArchError` as

    resnet.arch:12:9: error: unknown op `maxpol`
       12 |     conv(64, 3) -> maxpol(2)
          |                    ^~~~~~
    hint: did you mean `maxpool`?
    note: ...

and exits with status 2.  Anything else that escapes is a bug in archdsl (exit status 1).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

# Source text of every file read so far, so that errors can quote the offending line.
_SOURCES: dict[str, str] = {}


def register_source(filename: str, text: str) -> None:
    _SOURCES[filename] = text


def source_line(filename: str, line: int) -> str | None:
    text = _SOURCES.get(filename)
    if text is None:
        try:
            text = Path(filename).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    lines = split_lines(text)
    return lines[line - 1] if 0 < line <= len(lines) else None


def split_lines(text: str) -> list[str]:
    """The lines of `text` as the parser counts them: only `\n` ends a line (`str.splitlines`
    would also split at form feeds and other separators the lexer treats as ordinary characters)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences, bidi overrides)
    shown as `\\x1b`-style escapes, so a file name cannot recolour or rewrite the screen."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclass(frozen=True)
class SrcLoc:
    """A position in a source file (1-based line and column); `end_col` bounds the caret run."""

    file: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{printable(self.file)}:{self.line}:{self.col}"


NO_LOC = SrcLoc("<command line>", 0, 0)


@dataclass(frozen=True)
class Note:
    loc: SrcLoc | None
    message: str


@dataclass
class ArchError(Exception):
    """A mistake in the user's program (or command line), reported at `loc`."""

    message: str
    loc: SrcLoc | None = None
    hint: str | None = None
    notes: list[Note] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc and self.loc.line else ""
        return printable(f"{where}error: {self.message}")

    def at(self, loc: SrcLoc | None) -> "ArchError":
        """Give a location to an error raised where none was known (e.g. deep in a shape rule)."""
        if self.loc is None:
            self.loc = loc
        return self

    def render(self) -> str:
        """The full, human-readable report: header, quoted line with caret, hint and notes."""
        out = [str(self)]
        out += _quote(self.loc)
        if self.hint:
            out.append(f"hint: {self.hint}")
        for note in self.notes:
            where = f"{note.loc}: " if note.loc and note.loc.line else ""
            out.append(f"{where}note: {note.message}")
            out += _quote(note.loc)
        return "\n".join(printable(line) for line in "\n".join(out).split("\n"))


def _quote(loc: SrcLoc | None) -> list[str]:
    if loc is None or loc.line <= 0:
        return []
    text = source_line(loc.file, loc.line)
    if text is None:
        return []
    text = text.expandtabs(1)
    gutter = f"{loc.line:>5} | "
    width = max(1, (loc.end_col or loc.col + 1) - loc.col)
    caret = " " * (loc.col - 1) + "^" + "~" * (width - 1)
    return [gutter + text, " " * (len(gutter) - 2) + "| " + caret]


def did_you_mean(name: str, candidates) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


class InternalError(Exception):
    """An archdsl bug (an invariant of the IR broken by our own code), never a user mistake."""
