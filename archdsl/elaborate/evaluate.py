"""Expressions: integers, exact rationals (`/`), floats, booleans, strings, tuples and lists.

`/` is exact (`in.c / 2` is the integer 64 when in.c is 128, and 63.5 when in.c is 127, which an
integer argument then rejects); `//` floors.  Values stay small: integers beyond 2**53 and
non-finite floats are errors, so no expression can hang or exhaust memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from ..errors import ArchError, did_you_mean
from ..frontend import ast

MAX_INT = 2**53
MAX_LIST = 10_000


@dataclass
class Env:
    """Scalar variables, lexically scoped (a block sees only its parameters and its own lets),
    and the named tensors of the block instance being elaborated (shared by its child scopes)."""

    vars: dict[str, Any] = field(default_factory=dict)
    parent: Env | None = None
    tensors: dict[str, Any] = field(default_factory=dict)

    def lookup(self, name: str):
        env = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        raise KeyError(name)

    def names(self) -> set[str]:
        out, env = set(), self
        while env is not None:
            out |= env.vars.keys()
            env = env.parent
        return out

    def child(self, **vars: Any) -> Env:
        return Env(dict(vars), self, self.tensors)


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, (float, Fraction)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, tuple):
        return "a tuple"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


SHOW_ITEMS = 8


def _magnitude(v: int) -> str:
    """A huge integer, briefly (`{:g}` would overflow converting it to float past 1e308)."""
    digits = str(abs(v)) if v.bit_length() < 10_000 else None
    if digits is None:
        return f"{'-' if v < 0 else ''}2**{v.bit_length() - 1}…"
    return f"{'-' if v < 0 else ''}{digits[0]}.{digits[1:3]}e+{len(digits) - 1}" if len(digits) > 12 else str(v)


def show(v: Any, depth: int = 0) -> str:
    """A value as the user would write it (long or deep lists abbreviated with `…`)."""
    if isinstance(v, (tuple, list)):
        if depth > 3:
            return "(…)" if isinstance(v, tuple) else "[…]"
        items = [show(x, depth + 1) for x in v[:SHOW_ITEMS]] + (["…"] if len(v) > SHOW_ITEMS else [])
        if isinstance(v, tuple):
            return "(" + ", ".join(items) + ("," if len(v) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        return _magnitude(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Fraction):
        return f"{float(v):g}"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def normalize(v: Any) -> Any:
    """Collapse exact rationals: integral ones become ints."""
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else v
    return v


def _num(v) -> bool:
    return isinstance(v, (int, float, Fraction)) and not isinstance(v, bool)


MAX_CALL_DEPTH = 64  # nested calls of user functions (`def`), as for blocks


# Python's spellings, which the language writes in lower case
_PYTHON_WORDS = {"True": "write `true` (lower case)", "False": "write `false` (lower case)",
                 "None": "archdsl has no `None`: leave the argument out to get its default"}


class Evaluator:
    """Evaluates `ast.Expr` in an `Env` (variables, and named tensors for `x.c`); `functions` are
    the user's `def`s, called with their own parameters only (they see no variables or tensors)."""

    def __init__(self, functions: dict[str, ast.FuncDef] | None = None):
        self.functions = functions or {}
        self.depth = 0

    def eval(self, e: ast.Expr, env: Env) -> Any:
        method = self._dispatch.get(type(e))
        if method is None:
            method = self._dispatch[type(e)] = getattr(type(self), "_" + type(e).__name__)
        return self._check(method(self, e, env), e)

    _dispatch: dict[type, Any] = {}

    def _check(self, v: Any, e: ast.Expr) -> Any:
        t = type(v)  # exact type tests: this runs for every sub-expression
        if t is int:
            if -MAX_INT <= v <= MAX_INT:
                return v
            raise ArchError(f"value {_magnitude(v)} is too large (limit 2**53)", e.loc)
        if t is float:
            if math.isfinite(v):
                return v
            raise ArchError("arithmetic overflow (the result is not a finite number)", e.loc)
        if t is Fraction:
            v = normalize(v)
            if type(v) is int:
                return self._check(v, e)
            if abs(v) > MAX_INT or v.denominator > MAX_INT:
                raise ArchError("value is too large", e.loc)
        return v

    def _Literal(self, e: ast.Literal, env: Env):
        return e.value

    def _Var(self, e: ast.Var, env: Env):
        try:
            return env.lookup(e.name)
        except KeyError:
            raise ArchError(f"undefined name `{e.name}`", e.loc, hint=_PYTHON_WORDS.get(e.name)
                            or did_you_mean(e.name, env.names())
                            or ("blocks see only their own parameters; pass the value as an argument"
                                if env.names() else None)) from None

    def _TensorAttr(self, e: ast.TensorAttr, env: Env):
        if e.tensor not in env.tensors:
            raise ArchError(f"no tensor named `{e.tensor}` here", e.loc, hint=did_you_mean(e.tensor, env.tensors))
        shape = env.tensors[e.tensor].shape
        dims = {"c": 0, "h": 1, "w": 2}
        if e.attr not in dims:
            raise ArchError(f"a tensor has no attribute `{e.attr}`", e.loc, hint="use .c, .h or .w")
        if len(shape) == 1 and e.attr != "c":
            raise ArchError(f"`{e.tensor}` is a flat vector ({shape[0]}); it has no `.{e.attr}`", e.loc)
        return shape[dims[e.attr]]

    def _Index(self, e: ast.Index, env: Env):
        seq, i = self.eval(e.seq, env), self.eval(e.index, env)
        if not isinstance(seq, (list, tuple, str)):
            raise ArchError(f"cannot index {type_name(seq)} ({show(seq)})", e.seq.loc, hint="only lists, tuples and strings have items")
        if not isinstance(i, int) or isinstance(i, bool):
            raise ArchError(f"an index must be an integer, got {type_name(i)} ({show(i)})", e.index.loc)
        if not -len(seq) <= i < len(seq):
            raise ArchError(f"index {i} is out of range for {len(seq)} items", e.index.loc)
        return seq[i]

    def _Slice(self, e: ast.Slice, env: Env):
        seq = self.eval(e.seq, env)
        if not isinstance(seq, (list, tuple, str)):
            raise ArchError(f"cannot slice {type_name(seq)} ({show(seq)})", e.seq.loc)
        bounds = []
        for b in (e.start, e.stop):
            v = None if b is None else self.eval(b, env)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ArchError(f"a slice bound must be an integer, got {type_name(v)} ({show(v)})", b.loc)
            bounds.append(v)
        return seq[bounds[0]:bounds[1]]

    def _TupleExpr(self, e: ast.TupleExpr, env: Env):
        return tuple(self.eval(x, env) for x in e.items)

    def _ListExpr(self, e: ast.ListExpr, env: Env):
        return [self.eval(x, env) for x in e.items]

    def _ListComp(self, e: ast.ListComp, env: Env):
        items = self.eval(e.iterable, env)
        if not isinstance(items, (list, tuple)):
            raise ArchError(f"a list comprehension needs a list, got {type_name(items)} ({show(items)})",
                            e.iterable.loc, hint="iterate over range(n) or a list")
        out = []
        for item in items:
            if len(e.vars) == 1:
                inner = env.child(**{e.vars[0]: item})
            elif isinstance(item, (list, tuple)) and len(item) == len(e.vars):
                inner = env.child(**dict(zip(e.vars, item)))
            else:
                raise ArchError(f"cannot unpack {show(item)} into {len(e.vars)} names ({', '.join(e.vars)})",
                                e.iterable.loc, hint="each item must be a tuple with one value per name")
            if e.cond is None or self.truth(e.cond, inner):
                out.append(self.eval(e.item, inner))
        return out

    def _CondExpr(self, e: ast.CondExpr, env: Env):
        return self.eval(e.then, env) if self.truth(e.cond, env) else self.eval(e.otherwise, env)

    def _BoolOp(self, e: ast.BoolOp, env: Env):
        if e.op == "and":
            return all(self.truth(x, env) for x in e.operands)
        return any(self.truth(x, env) for x in e.operands)

    def _UnaryOp(self, e: ast.UnaryOp, env: Env):
        if e.op == "not":
            return not self.truth(e.operand, env)
        v = self.eval(e.operand, env)
        if not _num(v):
            raise ArchError(f"cannot apply `{e.op}` to {type_name(v)}", e.loc)
        return -v if e.op == "-" else v

    def _Contains(self, e: ast.Contains, env: Env):
        item, seq = self.eval(e.item, env), self.eval(e.seq, env)
        if not isinstance(seq, (list, tuple, str)):
            raise ArchError(f"`in` needs a list, tuple or string on its right, got {type_name(seq)} ({show(seq)})",
                            e.seq.loc)
        if isinstance(seq, str) and not isinstance(item, str):
            raise ArchError(f"`in` a string needs a string on its left, got {type_name(item)}", e.item.loc)
        found = any(isinstance(x, bool) == isinstance(item, bool) and x == item for x in seq) \
            if not isinstance(seq, str) else item in seq
        return found != e.negate

    def _Compare(self, e: ast.Compare, env: Env):
        vals = [self.eval(x, env) for x in e.operands]
        for (a, b), op, node in zip(zip(vals, vals[1:]), e.ops, e.operands[1:]):
            if op in ("==", "!="):
                same = isinstance(a, bool) == isinstance(b, bool) and a == b  # true != 1 here
                ok = same if op == "==" else not same
            else:
                if not (_num(a) and _num(b)):
                    raise ArchError(f"cannot compare {type_name(a)} and {type_name(b)} with `{op}`", node.loc)
                ok = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
            if not ok:
                return False
        return True

    def _BinOp(self, e: ast.BinOp, env: Env):
        a, b = self.eval(e.left, env), self.eval(e.right, env)
        if e.op == "+" and isinstance(a, (tuple, list)) and type(a) is type(b):
            return self._sized(a + b, e)
        if e.op == "*" and isinstance(a, (tuple, list)) and isinstance(b, int) and not isinstance(b, bool):
            self._sized(a, e, len(a) * b)  # before multiplying: `[1] * 2**53` would exhaust memory
            return a * max(b, 0)
        if not (_num(a) and _num(b)):
            raise ArchError(f"cannot apply `{e.op}` to {type_name(a)} and {type_name(b)}", e.loc)
        if e.op in ("/", "//", "%") and b == 0:
            raise ArchError("division by zero", e.right.loc,
                            hint=f"`{_src(e.right)}` evaluates to 0 here" if _src(e.right) else None)
        if e.op == "**":
            return self._power(a, b, e)
        if e.op == "/":
            if isinstance(a, float) or isinstance(b, float):
                return a / b
            return Fraction(a) / Fraction(b)
        ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b, "%": lambda: a % b}
        return ops[e.op]()

    def _power(self, a, b, e):
        if isinstance(b, int) and not isinstance(a, float):
            if abs(b) > 64 or (abs(a) > 1 and abs(b) * math.log2(abs(a)) > 60):
                raise ArchError("exponent too large", e.loc)
            if a == 0 and b < 0:
                raise ArchError("division by zero: 0 to a negative power", e.loc)
            return Fraction(a) ** b
        try:
            result = float(a) ** float(b)
        except (OverflowError, ZeroDivisionError):
            raise ArchError("arithmetic overflow in `**`", e.loc) from None
        if isinstance(result, complex):
            raise ArchError("`**` gives a complex number here", e.loc)
        return result

    def _sized(self, seq, e, n=None):
        if (n if n is not None else len(seq)) > MAX_LIST:
            raise ArchError(f"list longer than {MAX_LIST} items", e.loc)
        return seq

    def _FuncCall(self, e: ast.FuncCall, env: Env):
        if e.func in self.functions:
            return self._user_call(self.functions[e.func], e, env)
        fn = FUNCTIONS.get(e.func)
        if fn is None:
            known = {**FUNCTIONS, **self.functions}
            raise ArchError(f"unknown function `{e.func}`", e.loc,
                            hint=did_you_mean(e.func, known) or f"functions: {', '.join(sorted(known))}")
        args = [self.eval(a, env) for a in e.args]
        try:
            return fn(*args)
        except (TypeError, ValueError, OverflowError) as exc:
            call = f"{e.func}({', '.join(show(a) for a in args)})"
            raise ArchError(f"{call}: {_reason(exc)}", e.loc) from None

    def _user_call(self, f: ast.FuncDef, e: ast.FuncCall, env: Env):
        """A `def`: positional arguments, then defaults (which may use the earlier parameters)."""
        args = [self.eval(a, env) for a in e.args]
        if len(args) > len(f.params):
            raise ArchError(f"function `{f.name}` takes at most {len(f.params)} arguments, got {len(args)}", e.loc)
        scope = Env()
        for i, p in enumerate(f.params):
            if i < len(args):
                scope.vars[p.name] = args[i]
            elif p.default is not None:
                scope.vars[p.name] = self.eval(p.default, scope)
            else:
                raise ArchError(f"function `{f.name}` is missing the argument `{p.name}`", e.loc,
                                hint=f"usage: {f.name}({', '.join(p.name for p in f.params)})")
        if self.depth >= MAX_CALL_DEPTH:
            raise ArchError(f"functions nest deeper than {MAX_CALL_DEPTH} calls (endless recursion?)", e.loc)
        self.depth += 1
        try:
            return self.eval(f.body, scope)
        finally:
            self.depth -= 1

    # -- helpers
    def truth(self, e: ast.Expr, env: Env) -> bool:
        v = self.eval(e, env)
        if not isinstance(v, bool):
            raise ArchError(f"a condition must be true or false, got {type_name(v)} ({show(v)})", e.loc,
                            hint="compare explicitly, e.g. `n > 0`")
        return v

    def integer(self, e: ast.Expr, env: Env, what: str, minimum: int = 0) -> int:
        v = self.eval(e, env)
        if isinstance(v, float) and v.is_integer():
            if abs(v) > MAX_INT:  # int(1e300) would be a 301-digit integer in the message
                raise ArchError(f"{what} {show(v)} is too large (limit 2**53)", e.loc)
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ArchError(f"{what} must be an integer, got {type_name(v)} ({show(v)})", e.loc)
        if v < minimum:
            raise ArchError(f"{what} must be at least {minimum}, got {v}", e.loc)
        return v


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _src(e: ast.Expr) -> str | None:
    if isinstance(e, ast.Var):
        return e.name
    if isinstance(e, ast.TensorAttr):
        return f"{e.tensor}.{e.attr}"
    return None


def _nums(*xs):
    for x in xs:
        if not _num(x):
            raise TypeError(f"expects numbers, got {type_name(x)}")


def _minmax(pick):
    def fn(*xs):
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
            xs = tuple(xs[0])
        if not xs:
            raise ValueError("needs at least one value")
        _nums(*xs)
        return pick(xs)

    return fn


def _unary(f):
    def fn(*xs):
        if len(xs) != 1:
            raise TypeError(f"takes one argument, got {len(xs)}")
        _nums(xs[0])
        return f(xs[0])

    return fn


def _range(*xs):
    if not 1 <= len(xs) <= 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in xs):
        raise TypeError("takes one to three integers: range(n), range(a, b), range(a, b, step)")
    r = range(*xs)
    if len(r) > MAX_LIST:
        raise ValueError(f"{len(r)} items; the limit is {MAX_LIST}")
    return list(r)


def _sum(*xs):
    if len(xs) != 1 or not isinstance(xs[0], (list, tuple)):
        raise TypeError("takes one list or tuple of numbers")
    _nums(*xs[0])
    return sum(xs[0])


def _len(*xs):
    if len(xs) != 1 or not isinstance(xs[0], (list, tuple, str)):
        raise TypeError("takes one list, tuple or string")
    return len(xs[0])


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": _minmax(min),
    "max": _minmax(max),
    "abs": _unary(abs),
    "int": _unary(lambda x: int(x)),  # truncates toward zero, like Python's int()
    "floor": _unary(math.floor),
    "ceil": _unary(math.ceil),
    "round": _unary(lambda x: int(round(x))),
    "float": _unary(float),
    "range": _range,
    "len": _len,
    "sum": _sum,
}
