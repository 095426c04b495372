"""Quoted names: `"block":`, `"block{s + 1}-{i}"` (reserved words, `-`, spliced `{expr}` parts).

The `{…}` parts are parsed with the grammar's own `expr` rule, from a copy of the source in
which everything but the part is blanked out, so their locations are the real ones.
"""

from __future__ import annotations

import functools

from lark import Lark
from lark.exceptions import UnexpectedInput

from ..errors import ArchError, SrcLoc
from . import ast


class _NoNewlines:
    """Post-lexer for the expression parser: a spliced part never contains a statement break."""

    always_accept = ("_NL",)

    def process(self, stream):
        return (tok for tok in stream if tok.type != "_NL")


@functools.cache
def _expr_parser() -> Lark:
    from .grammar import grammar_text

    return Lark(grammar_text(), parser="lalr", lexer="contextual", start="expr", postlex=_NoNewlines(),
                propagate_positions=True, maybe_placeholders=True)


def split_template(text: str, loc: SrcLoc) -> list[tuple[str, int]]:
    """`block{s}-{i}` -> [("block", 0), ("{s}", 5), ("-", 8), ("{i}", 9)]: literal and spliced parts
    with their offsets in `text`; a `{` without its `}` is an error."""
    parts, i, lit = [], 0, 0
    while i < len(text):
        if text[i] == "{":
            end = text.find("}", i)
            if end < 0:
                raise ArchError("`{` without `}` in a quoted name", SrcLoc(loc.file, loc.line, loc.col + 1 + i),
                                hint="a quoted name splices in expressions written as `{expr}`")
            if lit < i:
                parts.append((text[lit:i], lit))
            parts.append((text[i:end + 1], i))
            i = lit = end + 1
        else:
            i += 1
    if lit < len(text):
        parts.append((text[lit:], lit))
    return parts


def quoted_label(token, loc: SrcLoc, source: str, to_ast) -> ast.Label:
    """The `ast.Label` of a quoted name token (its text without the quotes, `{expr}` parsed)."""
    text = str(token)[1:-1]
    if "\\" in text:
        raise ArchError("a quoted name cannot contain `\\`", loc)
    parts: list[str | ast.Expr] = []
    for part, offset in split_template(text, loc):
        if not part.startswith("{"):
            parts.append(part)
            continue
        start = token.start_pos + 1 + offset + 1  # after the quote and the `{`
        blanked = "".join(c if c in "\r\n" else " " for c in source[:start]) + part[1:-1]
        try:
            tree = _expr_parser().parse(blanked)
        except UnexpectedInput as exc:
            raise ArchError(f"cannot read the expression `{part[1:-1].strip()}` in a quoted name", loc,
                            hint=f"the part at column {getattr(exc, 'column', '?')} is not an expression") from None
        parts.append(to_ast.transform(tree))
    if not parts:
        raise ArchError("an empty quoted name", loc)
    return ast.Label(loc, tuple(parts), quoted=True)
