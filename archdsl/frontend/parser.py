"""Text -> AST.  Lark parses with `grammars/arch.lark`; `ToAst` turns the tree into `ast` nodes.

Syntax errors become `ArchError`s that name what was found and what would have been accepted.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .grammar import grammar_text  # noqa: F401  (tests and tools read it here)
from .gcpause import paused_gc
from ..errors import ArchError, Note, SrcLoc, register_source, split_lines

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = set(_OPENERS.values())


class NewlineFilter:
    """Post-lexer: drop newlines inside ( ) and [ ] (argument lists wrap), keep them in { }."""

    always_accept = ("_NL",)

    def process(self, stream):
        stack: list[str] = []
        for tok in stream:
            if tok.type in _OPENERS:
                stack.append(tok.type)
            elif tok.type in _CLOSERS and stack:
                stack.pop()
            elif tok.type == "_NL" and stack and stack[-1] != "LBRACE":
                continue
            yield tok


_LARK_OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


@functools.cache
def _parser() -> Lark:
    """The LALR parser, its tables loaded from a cache when one is there.

    Building the tables takes Lark ~0.2-0.7 s, longer than everything else `archdsl check`
    does, so they are pickled once per grammar: the cache file's name holds a hash of the
    grammar text, Lark's version and Python's, so an edited grammar or an upgrade never loads
    stale tables. It lives in the user's cache directory (not next to the package, which may
    be read-only) and is written under a temporary name and renamed, so two processes never
    see half a file. Without a writable directory the parser is simply built each time.
    """
    text = grammar_text()
    path = _cache_path(text)
    if path is not None and not path.is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        parser = Lark(text, postlex=NewlineFilter(), cache=str(tmp), **_LARK_OPTIONS)
        try:
            os.replace(tmp, path)
        except OSError:
            _remove_quietly(tmp)
        return parser
    return Lark(text, postlex=NewlineFilter(), cache=str(path) if path else False, **_LARK_OPTIONS)


def _cache_path(grammar: str) -> Path | None:
    """Where the parser tables for this grammar live, or None when no directory is writable."""
    import hashlib
    import sys
    import tempfile

    import lark

    key = hashlib.sha256(f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}\0{_LARK_OPTIONS}".encode())
    name = f"arch-parser-{key.hexdigest()[:20]}.pickle"
    for root in _cache_roots(tempfile.gettempdir()):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK | os.X_OK) or (root / name).is_file():
            return root / name
    return None


def _cache_roots(tmp: str) -> list[Path]:
    """$ARCHDSL_CACHE, else $XDG_CACHE_HOME/archdsl, else ~/.cache/archdsl; then the temp dir."""
    env = os.environ.get("ARCHDSL_CACHE")
    if env:
        return [Path(env), Path(tmp) / f"archdsl-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        home = Path(xdg) if xdg else Path.home() / ".cache"
    except RuntimeError:  # no home directory
        home = Path(tmp)
    return [home / "archdsl", Path(tmp) / f"archdsl-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def parse(text: str, filename: str = "<string>") -> ast.Module:
    """Parse one `.arch` source into an `ast.Module` (imports are not followed here)."""
    with paused_gc():
        return _parse(text, filename)


def _parse(text: str, filename: str) -> ast.Module:
    register_source(filename, text)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except RecursionError:
        raise _too_deep(text, filename) from None
    try:
        return ToAst(filename, text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, ArchError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, RecursionError):  # Lark wraps errors raised inside a rule method
            raise _too_deep(text, filename) from None
        raise
    except RecursionError:
        raise _too_deep(text, filename) from None


def _too_deep(text: str, filename: str) -> ArchError:
    """Nesting past what the parser's recursion allows, reported where it is deepest."""
    return ArchError("the program is nested too deeply to parse", deepest_nesting(text, filename),
                     hint="split the expression with `let` or the layers into blocks")


def deepest_nesting(text: str, filename: str) -> SrcLoc:
    """Where the program nests deepest: the first bracket of the deepest ( [ { level, or the start
    of the longest run of prefix operators (`- - - 1` nests as deeply as brackets do)."""
    depth = best = run = 0
    line, col, where, run_at = 1, 0, (1, 1), (1, 1)
    for ch in text:
        col += 1
        if ch in "-+~":
            run, run_at = run + 1, run_at if run else (line, col)
            if run > best:
                best, where = run, run_at
            continue
        if ch not in " \t":
            run = 0
        if ch == "\n":
            line, col = line + 1, 0
        elif ch in "([{":
            depth += 1
            if depth > best:
                best, where = depth, (line, col)
        elif ch in ")]}":
            depth = max(0, depth - 1)
    return SrcLoc(filename, where[0], where[1], where[1] + 1)


# ---- syntax errors ------------------------------------------------------------------------------

_READABLE = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "DIMS": "a shape like 3x224x224",
    "_NL": "a new line",
    "$END": "the end of the file",
    "COMP_OP": "a comparison",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//` or `%`",
}


def _describe(terminal: str) -> str:
    if terminal in _READABLE:
        return _READABLE[terminal]
    for term in _parser().terminals:
        if term.name == terminal and term.pattern.type == "str":
            return f"`{term.pattern.value}`"
    return terminal.lower()


def _expected_phrase(expected) -> str:
    def rank(s: str):
        return (s not in ("`}`", "`)`", "`]`"), not s.startswith("`"), s[1:2].isalpha(), s)

    names = sorted({_describe(t) for t in expected}, key=rank)
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _syntax_error(exc: UnexpectedInput, text: str, filename: str) -> ArchError:
    line, col = max(getattr(exc, "line", 1) or 1, 1), max(getattr(exc, "column", 1) or 1, 1)
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        return ArchError(f"unexpected character {char!r}", SrcLoc(filename, line, col),
                         hint=_char_hint(char))
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = split_lines(text) or [""]
        loc = SrcLoc(filename, len(lines), len(lines[-1]) + 1)
        opener = _unclosed(text, filename)
        if opener is None:
            return ArchError("unexpected end of file", loc, hint=f"expected {_expected_phrase(exc.expected)}")
        char, where = opener
        return ArchError(f"unexpected end of file: `{char}` is never closed", loc,
                         hint=f"add the missing `{_PAIRS[char]}`",
                         notes=[Note(where, f"the `{char}` opened here")])
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    found = "end of line" if tok.type == "_NL" else f"`{tok.value}`"
    end = col + len(tok.value) if tok.type != "_NL" else None
    if tok.type == "_NL":  # point at the end of the line that stopped early
        lines = split_lines(text)
        line_text = lines[line - 1] if 0 < line <= len(lines) else ""
        col = len(line_text.rstrip()) + 1
    before = text[:tok.start_pos].rstrip() if tok.start_pos is not None else ""
    hint = f"expected {_expected_phrase(exc.accepts or exc.expected)}"
    if tok.type == "IF" and before.endswith("else"):
        hint = "write `elif` instead of `else if`"
    elif tok.type == "LPAR" and re.search(r"(^|[^\w.])dense$", before):
        hint = "`dense { ... }` is DenseNet's concatenating block; Keras's Dense layer is `fc(units)`"
    elif tok.type == "EQUAL" and _is_plain_name(before.rsplit("\n", 1)[-1].strip(" \t;{")):
        hint = "define a variable with `let name = value`; compare with `==`"
    return ArchError(f"unexpected {found}", SrcLoc(filename, line, col, end), hint=hint)


def _is_plain_name(word: str) -> bool:
    """An identifier that is not a reserved word (for the `x = 3` -> `let x = 3` hint)."""
    keywords = {t.pattern.value for t in _parser().terminals if t.pattern.type == "str" and t.pattern.value.isalpha()}
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word) is not None and word not in keywords - {"x"}


_PAIRS = {"{": "}", "(": ")", "[": "]"}


def _unclosed(text: str, filename: str) -> tuple[str, SrcLoc] | None:
    """The innermost bracket still open at the end of `text` (for an 'unexpected end of file')."""
    stack = []
    try:
        for tok in _parser().lex(text):
            if tok.value in _PAIRS and tok.type in _OPENERS:
                stack.append(tok)
            elif tok.type in _CLOSERS and stack:
                stack.pop()
    except UnexpectedInput:
        return None
    if not stack:
        return None
    tok = stack[-1]
    return tok.value, SrcLoc(filename, tok.line, tok.column, tok.column + 1)


def _char_hint(char: str) -> str | None:
    if char == "'":
        return 'strings use double quotes: "..."'
    if char == '"':
        return "a string must end with `\"` on the same line"
    if char in "&|":
        return "the logical operators are `and`, `or` and `not`"
    if char in "=!<>":
        return "comparisons are `==`, `!=`, `<`, `<=`, `>`, `>=`"
    return None


# ---- parse tree -> AST --------------------------------------------------------------------------


class ToAst(Transformer):
    """One small method per grammar rule; each returns an `ast` node with its location."""

    def __init__(self, filename: str, source: str = ""):
        super().__init__()
        self.file = filename
        self.source = source  # for the `{expr}` parts of quoted names

    def _loc(self, meta_or_tok) -> SrcLoc:
        if isinstance(meta_or_tok, Token):
            return SrcLoc(self.file, meta_or_tok.line, meta_or_tok.column, meta_or_tok.end_column)
        if getattr(meta_or_tok, "empty", False):
            return SrcLoc(self.file, 1, 1)
        end = meta_or_tok.end_column if meta_or_tok.end_line == meta_or_tok.line else None
        return SrcLoc(self.file, meta_or_tok.line, meta_or_tok.column, end)

    # -- top level
    @v_args(meta=True)
    def start(self, meta, items):
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        defs = tuple(i for i in items if isinstance(i, (ast.BlockDef, ast.NetworkAlias)))
        functions = tuple(i for i in items if isinstance(i, ast.FuncDef))
        return ast.Module(self.file, imports, defs, functions)

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        (path,) = children
        return ast.Import(self._loc(meta), _unquote(path))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, params, sequence, body = children
        return ast.BlockDef(self._loc(name), str(name), params or (), body, is_network=False,
                            sequence=sequence is not None)

    def seq_marker(self, children):
        return True

    @v_args(meta=True)
    def func_def(self, meta, children):
        name, params, body = children
        return ast.FuncDef(self._loc(name), str(name), params or (), body)

    @v_args(meta=True)
    def network_def(self, meta, children):
        name, params, sequence, body = children
        return ast.BlockDef(self._loc(name), str(name), params or (), body, is_network=True,
                            sequence=sequence is not None)

    @v_args(meta=True)
    def network_alias(self, meta, children):
        name, target, args = children
        return ast.NetworkAlias(self._loc(name), str(name), str(target), self._loc(target), args or ())

    def params(self, children):
        params = tuple(c for c in children if c is not None)
        seen: dict[str, ast.Param] = {}
        for p in params:
            if p.name in seen:
                raise ArchError(f"parameter `{p.name}` is declared twice", p.loc, hint="rename one of them",
                                notes=[Note(seen[p.name].loc, "first declared here")])
            seen[p.name] = p
        return params

    @v_args(meta=True)
    def param(self, meta, children):
        name, default = children
        return ast.Param(self._loc(name), str(name), default)

    @v_args(meta=True)
    def body(self, meta, children):
        return ast.Body(self._loc(meta), tuple(c for c in children if isinstance(c, ast.Stmt)))

    # -- statements
    @v_args(meta=True)
    def input_stmt(self, meta, children):
        name, dims = children
        return ast.InputStmt(self._loc(meta), str(name) if name is not None else None, dims)

    @v_args(meta=True)
    def dims(self, meta, children):
        if len(children) == 1 and isinstance(children[0], Token):
            tok = children[0]
            loc = self._loc(tok)
            return tuple(ast.Literal(loc, _int(v, loc)) for v in tok.value.split("x"))
        return tuple(children)

    @v_args(meta=True)
    def output_stmt(self, meta, children):
        return ast.OutputStmt(self._loc(meta), tuple((str(t), self._loc(t)) for t in children if t is not None))

    @v_args(meta=True)
    def let_stmt(self, meta, children):
        name, value = children
        return ast.LetStmt(self._loc(meta), str(name), value)

    @v_args(meta=True)
    def if_stmt(self, meta, children):
        cond, body, *rest = children
        otherwise = rest.pop()  # the `else` body, or None (maybe_placeholders)
        cases = [(cond, body), *rest]
        return ast.IfStmt(self._loc(meta), tuple(cases), otherwise)

    def elif_clause(self, children):
        return tuple(children)

    @v_args(meta=True)
    def for_stmt(self, meta, children):
        *names, iterable, body = children
        return ast.ForStmt(self._loc(meta), tuple(str(n) for n in names), iterable, body)

    @v_args(meta=True)
    def assert_stmt(self, meta, children):
        cond, message = children
        return ast.AssertStmt(self._loc(meta), cond, _unquote(message) if message is not None else None)

    @v_args(meta=True)
    def chain(self, meta, children):
        chain = ast.Chain(self._loc(meta), tuple(children))
        return ast.ChainStmt(chain.loc, chain)

    @v_args(meta=True)
    def element(self, meta, children):
        label, primary, repeat, bind = children
        return ast.Element(self._loc(meta), label, primary, repeat, bind)

    def label(self, children):
        return children[0]

    @v_args(meta=True)
    def name_template(self, meta, children):
        head, *parts = children
        flat: list[str | ast.Expr] = [str(head)]
        for expr, tail in parts:
            flat.append(expr)
            if tail is not None:
                flat.append(str(tail))
        return ast.Label(self._loc(meta), tuple(flat))

    def label_part(self, children):
        return tuple(children)

    @v_args(meta=True)
    def quoted_name(self, meta, children):
        from .quoted import quoted_label

        return quoted_label(children[0], self._loc(children[0]), self.source, self)

    def repeat(self, children):
        return children[0]

    # -- primaries
    @v_args(meta=True)
    def call(self, meta, children):
        name, args = children
        return ast.Call(self._loc(meta), str(name), args or (), self._loc(name))

    def args(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def posarg(self, meta, children):
        return ast.Arg(self._loc(meta), None, children[0])

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, value = children
        return ast.Arg(self._loc(name), str(name), value)

    @v_args(meta=True)
    def group(self, meta, children):
        return ast.Group(self._loc(meta), children[0])

    @v_args(meta=True)
    def paren_group(self, meta, children):
        (stmt,) = children
        return ast.Group(self._loc(meta), ast.Body(stmt.loc, (stmt,)))

    @v_args(meta=True)
    def join(self, meta, children):
        kind, body = children
        return ast.Join(self._loc(meta), kind, body)

    def join_kind(self, children):
        return str(children[0])

    @v_args(meta=True)
    def residual(self, meta, children):
        only_if, body, shortcut = children
        cond, proj = shortcut if shortcut is not None else (None, None)
        return ast.Residual(self._loc(meta), body, proj, cond, only_if)

    def shortcut(self, children):
        cond, body = children
        return (cond, body)

    @v_args(meta=True)
    def dense(self, meta, children):
        return ast.Dense(self._loc(meta), children[0])

    @v_args(meta=True)
    def tensor_ref(self, meta, children):
        return ast.TensorRef(self._loc(meta), children[0])

    @v_args(meta=True)
    def in_ref(self, meta, children):
        loc = self._loc(meta)
        return ast.TensorRef(loc, ast.Label(loc, ("in",)))

    # -- expressions
    @v_args(meta=True)
    def cond_expr(self, meta, children):
        then, cond, otherwise = children
        return ast.CondExpr(self._loc(meta), then, cond, otherwise)

    @v_args(meta=True)
    def or_expr(self, meta, children):
        return ast.BoolOp(self._loc(meta), "or", tuple(children))

    @v_args(meta=True)
    def and_expr(self, meta, children):
        return ast.BoolOp(self._loc(meta), "and", tuple(children))

    @v_args(meta=True)
    def not_expr(self, meta, children):
        return ast.UnaryOp(self._loc(meta), "not", children[0])

    @v_args(meta=True)
    def comparison(self, meta, children):
        return ast.Compare(self._loc(meta), tuple(children[0::2]), tuple(str(t) for t in children[1::2]))

    @v_args(meta=True)
    def contains(self, meta, children):
        item, seq = children
        return ast.Contains(self._loc(meta), item, seq, negate=False)

    @v_args(meta=True)
    def not_contains(self, meta, children):
        item, seq = children
        return ast.Contains(self._loc(meta), item, seq, negate=True)

    @v_args(meta=True)
    def binop(self, meta, children):
        left = children[0]
        for op, right in zip(children[1::2], children[2::2]):
            left = ast.BinOp(SrcLoc(self.file, left.loc.line, left.loc.col, right.loc.end_col), str(op), left, right)
        return left

    @v_args(meta=True)
    def unary(self, meta, children):
        op, operand = children
        return ast.UnaryOp(self._loc(meta), str(op), operand)

    @v_args(meta=True)
    def index(self, meta, children):
        seq, idx = children
        return ast.Index(self._loc(meta), seq, idx)

    @v_args(meta=True)
    def slice(self, meta, children):
        seq, start, stop = children
        return ast.Slice(self._loc(meta), seq, start, stop)

    @v_args(meta=True)
    def power(self, meta, children):
        base, _, exponent = children
        return ast.BinOp(self._loc(meta), "**", base, exponent)

    @v_args(meta=True)
    def int_lit(self, meta, children):
        loc = self._loc(meta)
        return ast.Literal(loc, _int(children[0], loc))

    @v_args(meta=True)
    def float_lit(self, meta, children):
        return ast.Literal(self._loc(meta), float(children[0]))

    @v_args(meta=True)
    def str_lit(self, meta, children):
        return ast.Literal(self._loc(meta), _unquote(children[0]))

    @v_args(meta=True)
    def true_lit(self, meta, children):
        return ast.Literal(self._loc(meta), True)

    @v_args(meta=True)
    def false_lit(self, meta, children):
        return ast.Literal(self._loc(meta), False)

    @v_args(meta=True)
    def var(self, meta, children):
        return ast.Var(self._loc(meta), str(children[0]))

    @v_args(meta=True)
    def tensor_attr(self, meta, children):
        tensor, attr = children
        return ast.TensorAttr(self._loc(meta), str(tensor), str(attr))

    @v_args(meta=True)
    def in_attr(self, meta, children):
        return ast.TensorAttr(self._loc(meta), "in", str(children[-1]))

    @v_args(meta=True)
    def func_call(self, meta, children):
        name, *args = children
        return ast.FuncCall(self._loc(meta), str(name), tuple(a for a in args if a is not None))

    @v_args(meta=True)
    def tuple_lit(self, meta, children):
        return ast.TupleExpr(self._loc(meta), tuple(c for c in children if c is not None))

    @v_args(meta=True)
    def list_comp(self, meta, children):
        item, *names, iterable, cond = children
        return ast.ListComp(self._loc(meta), item, tuple(str(n) for n in names), iterable, cond)

    @v_args(meta=True)
    def list_lit(self, meta, children):
        return ast.ListExpr(self._loc(meta), tuple(c for c in children if c is not None))


def _int(digits: str, loc: SrcLoc) -> int:
    try:
        return int(digits)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ArchError(f"integer literal with {len(digits)} digits is far too large", loc) from None


def _unquote(tok) -> str:
    return str(tok)[1:-1].replace('\\"', '"').replace("\\\\", "\\")
