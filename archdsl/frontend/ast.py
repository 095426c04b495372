"""The abstract syntax tree: small frozen dataclasses, each carrying the `SrcLoc` it came from.

Parse trees never leave the front end; everything after it sees only these classes.
Expressions (`Expr`) are evaluated by the elaborator; statements (`Stmt`) build the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SrcLoc

# ---- expressions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    loc: SrcLoc


@dataclass(frozen=True)
class Literal(Expr):
    value: int | float | bool | str


@dataclass(frozen=True)
class Var(Expr):
    name: str


@dataclass(frozen=True)
class TensorAttr(Expr):
    """`x.c`, `in.h`: a dimension of a named tensor (`in` is the block's input)."""

    tensor: str
    attr: str


@dataclass(frozen=True)
class FuncCall(Expr):
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Expr):
    op: str  # '-', '+' or 'not'
    operand: Expr


@dataclass(frozen=True)
class Contains(Expr):
    """`x in xs` (or `x not in xs` when `negate`): membership in a list, tuple or string."""

    item: Expr
    seq: Expr
    negate: bool


@dataclass(frozen=True)
class Compare(Expr):
    """A chained comparison `a < b <= c`, as in Python."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str  # 'and' | 'or'
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class CondExpr(Expr):
    then: Expr
    cond: Expr
    otherwise: Expr


@dataclass(frozen=True)
class Index(Expr):
    """`cfg[i]`: an item of a list, tuple or string (negative indices count from the end)."""

    seq: Expr
    index: Expr


@dataclass(frozen=True)
class Slice(Expr):
    """`cfg[a:b]`, either bound optional: a sub-list, as in Python."""

    seq: Expr
    start: Expr | None
    stop: Expr | None


@dataclass(frozen=True)
class ListComp(Expr):
    """`[f(x) for x in xs if cond]`: one item per element of `xs` (unpacked into `vars`) that passes."""

    item: Expr
    vars: tuple[str, ...]
    iterable: Expr
    cond: Expr | None


@dataclass(frozen=True)
class TupleExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


# ---- chains and their elements -------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    loc: SrcLoc
    name: str | None  # None for a positional argument
    value: Expr


@dataclass(frozen=True)
class Label:
    """A name, possibly with computed parts: `conv1`, `denselayer{i + 1}` (parts are strings and
    expressions).  Used by labels (`conv1:`), `as name` and `@name`."""

    loc: SrcLoc
    parts: tuple[str | Expr, ...]
    quoted: bool = False  # `"block1-{i}"`: may be a reserved word and contain `-`


@dataclass(frozen=True)
class Primary:
    loc: SrcLoc


@dataclass(frozen=True)
class Call(Primary):
    """An op or a block applied to the current tensor: `conv(64, 3, pad=1)`, `relu`."""

    name: str
    args: tuple[Arg, ...]
    name_loc: SrcLoc


@dataclass(frozen=True)
class Group(Primary):
    """`{ ... }` or `( a -> b )`: a sub-sequence; a label turns it into a numbered scope."""

    body: Body


@dataclass(frozen=True)
class Join(Primary):
    """`concat { ... }`, `add { ... }`, `mean { ... }`: one branch per statement, all joined."""

    kind: str
    body: Body


@dataclass(frozen=True)
class Residual(Primary):
    """`residual { main } shortcut if cond { proj }`: add(main(x), proj(x) or x)."""

    body: Body
    shortcut: Body | None
    shortcut_cond: Expr | None
    cond: Expr | None = None  # `residual if cond { ... }`: without the add when false


@dataclass(frozen=True)
class Dense(Primary):
    """`dense { f }`: concat(x, f(x)), DenseNet's connectivity."""

    body: Body


@dataclass(frozen=True)
class TensorRef(Primary):
    """`@name` (or `@in`, `@col{j}`): start from a named tensor instead of the current one."""

    name: Label


@dataclass(frozen=True)
class Element:
    loc: SrcLoc
    label: Label | None
    primary: Primary
    repeat: Expr | None
    bind: Label | None  # `... as name`


@dataclass(frozen=True)
class Chain:
    loc: SrcLoc
    elements: tuple[Element, ...]


# ---- statements ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stmt:
    loc: SrcLoc


@dataclass(frozen=True)
class ChainStmt(Stmt):
    chain: Chain


@dataclass(frozen=True)
class InputStmt(Stmt):
    name: str | None
    dims: tuple[Expr, ...]


@dataclass(frozen=True)
class OutputStmt(Stmt):
    names: tuple[tuple[str, SrcLoc], ...]


@dataclass(frozen=True)
class LetStmt(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class IfStmt(Stmt):
    cases: tuple[tuple[Expr, Body], ...]
    otherwise: Body | None


@dataclass(frozen=True)
class ForStmt(Stmt):
    """`for i in range(n) { }`, or `for c, n in [(64, 2), (128, 2)] { }` unpacking each item."""

    vars: tuple[str, ...]
    iterable: Expr
    body: Body


@dataclass(frozen=True)
class AssertStmt(Stmt):
    cond: Expr
    message: str | None


@dataclass(frozen=True)
class Body:
    loc: SrcLoc
    stmts: tuple[Stmt, ...]


# ---- top level ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    loc: SrcLoc
    name: str
    default: Expr | None


@dataclass(frozen=True)
class BlockDef:
    """A `block` (reusable, called like an op) or a `network` (has `input`, may be compiled)."""

    loc: SrcLoc
    name: str
    params: tuple[Param, ...]
    body: Body
    is_network: bool
    sequence: bool = False  # `block/network name(...) sequence { ... }`: unlabelled elements numbered by position


@dataclass(frozen=True)
class FuncDef:
    """`def name(params) = expr`: a function of values, callable in expressions."""

    loc: SrcLoc
    name: str
    params: tuple[Param, ...]
    body: Expr
    is_network: bool = False


@dataclass(frozen=True)
class NetworkAlias:
    """`network resnext50_32x4d = resnet(depth=50, groups=32)`: the target network under a new
    name, with some parameters given new defaults (still overridable with --set)."""

    loc: SrcLoc
    name: str
    target: str
    target_loc: SrcLoc
    args: tuple[Arg, ...]
    is_network: bool = True


@dataclass(frozen=True)
class Import:
    loc: SrcLoc
    path: str


@dataclass(frozen=True)
class Module:
    file: str
    imports: tuple[Import, ...]
    defs: tuple[BlockDef | NetworkAlias, ...]
    functions: tuple[FuncDef, ...] = ()
