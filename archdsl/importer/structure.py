"""Traced nodes -> a tree of .arch elements, scope by scope (the module hierarchy).

Every node lives in a *scope*: a leaf module called once lives in its parent's scope under its
own name (its label, so that the state-dict key is its module path); a functional op, or a
parameter-free module called several times (`self.relu`), lives in the scope of the module
whose forward made it, unlabelled.  A scope's body is written from its dataflow: chains, and
at each join the construct that says what it is: `residual { … } shortcut { … }` for an add
of a path and the block input (or a projection of it), `dense { … }` for `cat([x, f(x)])`,
`concat { … }` / `add { … }` for parallel branches.  A scope whose dataflow is not
series-parallel is written flat, with `as` names and `@` references.

A child scope with one input and one output becomes a block call (the block is shared by the
instances of its class: see `blocks.py`) or, for containers (nn.Sequential, nn.ModuleList), a
labelled group whose positions number its elements as PyTorch does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ArchError
from .trace import OpNode, Traced

# ---- the element tree --------------------------------------------------------------------------


_NONE = object()


@dataclass
class Lit:
    """A literal argument value; block extraction turns differing ones into parameters.  A
    keyword argument equal to its `default` is not written."""

    value: Any
    default: Any = _NONE

    def is_default(self) -> bool:
        return self.default is not _NONE and repr(self.value) == repr(self.default)


@dataclass
class Call:
    name: str  # an op or a block
    args: list  # positional: Lit or str (an expression)
    kwargs: dict  # name -> Lit or str
    label: str | None = None
    as_: str | None = None
    block: bool = False
    repeat: Any = None  # Lit or str: `call * n`


@dataclass
class Group:
    label: str | None
    body: list  # statements: each a list of elements (a chain)
    as_: str | None = None


@dataclass
class Join:
    kind: str
    branches: list  # each a chain
    as_: str | None = None


@dataclass
class Residual:
    body: list  # statements
    shortcut: list | None  # statements, or None for the identity
    cond: str | None = None  # `shortcut if COND`
    as_: str | None = None
    when: str | None = None  # `residual if WHEN`: the add only in some instances of a block
    meta: dict = field(default_factory=dict)  # in_c, out_c, at_input: for the shortcut's condition


@dataclass
class Dense:
    body: list
    as_: str | None = None


@dataclass
class Ref:
    name: str


@dataclass
class Loop:
    """`for i in range(count) { prefix{i + start}: call }`"""

    count: Any  # Lit or str
    prefix: str
    start: int
    call: Call


@dataclass
class Output:
    names: list


# ---- scopes ---------------------------------------------------------------------------------------


@dataclass
class Scope:
    path: tuple[str, ...]
    cls: type | None  # None: a container that is not called (nn.ModuleList), or not a module
    children: dict[str, "Scope"] = field(default_factory=dict)
    nodes: list[OpNode] = field(default_factory=list)
    # filled while building
    order: int = 1 << 30
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    elem: Any = None  # the element that stands for this scope in its parent's body
    body: list | None = None  # its body (blocks and groups)
    sequence: bool = False  # written as a `sequence` block
    in_c: int = 0
    out_c: int = 0
    wrapped: bool = False  # its body was one `residual { … }` (blocks.py unwraps it while comparing)

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""

    def walk(self):
        yield self
        for c in self.children.values():
            yield from c.walk()

    def all_nodes(self):
        for s in self.walk():
            yield from s.nodes


def is_sequence(scope: Scope) -> bool:
    """A container written as a labelled group (positions number its elements as PyTorch's
    names do): not a called module, nn.Sequential / nn.ModuleList themselves, or a subclass of
    nn.Sequential that keeps its forward and numbers its children (one that names them, like
    DenseNet's _Transition, is a block: its labels need no positions)."""
    cls = scope.cls
    if cls is None or cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        return True
    numbered = any(k.isdigit() for k in scope.children) or any(n.path and n.path[-1].isdigit() for n in scope.nodes)
    return issubclass(cls, nn.Sequential) and cls.forward is nn.Sequential.forward and numbered


_NUMBERED = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # containers whose elements archdsl numbers
LABEL_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z|[0-9]+\Z")  # `-` only quoted (RegNet's `block1-0`)


def place(traced: Traced, module: nn.Module) -> tuple[Scope, dict[str, tuple[str, ...]], dict[str, str | None]]:
    """The scope tree; each node's home scope and label."""
    home: dict[str, tuple[str, ...]] = {}
    label: dict[str, str | None] = {}
    for n in traced.nodes:
        if n.op == "input":
            home[n.id], label[n.id] = (), None
        elif n.path is not None and n.calls == 1:
            home[n.id], label[n.id] = n.path[:-1], n.path[-1]
        elif n.path is not None and n.stateful:
            raise ArchError(f"module `{n.what}` ({n.op}) is called {n.calls} times: its weights are shared, "
                            "which archdsl cannot express (every layer owns its weights)", n.loc)
        else:
            home[n.id], label[n.id] = n.scope, None
    for n in traced.nodes:
        for i, seg in enumerate(n.path or ()):
            if not LABEL_OK.match(seg):
                raise ArchError(f"the module name `{seg}` (in `{n.what}`) cannot be an archdsl label", n.loc,
                                hint="labels are letters, digits, `_` and `-`, starting with a letter or `_`")
            if not (seg.isdigit() and n.stateful):  # a layer without weights needs no name of its own
                continue
            parent = module.get_submodule(".".join(n.path[:i]))
            if not isinstance(parent, _NUMBERED):
                raise ArchError(f"the module name `{seg}` (in `{n.what}`) is a number in {type(parent).__name__}, "
                                "which is not a sequence", n.loc,
                                hint="archdsl numbers the elements of sequences (nn.Sequential, nn.ModuleList) by "
                                     "position; elsewhere a label starts with a letter or `_`")
            if i == 0 and not is_sequence(Scope((), type(module), nodes=[n])):
                raise ArchError(f"the top module is a {type(module).__name__} whose layers are numbered (`{n.what}`), "
                                "but its own forward does not run them in order", n.loc,
                                hint="archdsl numbers the layers of a `network … sequence` (an nn.Sequential) by "
                                     "position; a forward of its own needs labels: import a module that holds it "
                                     "as an attribute, or name its layers")
    _rewrite_concat_prefixes(traced)
    _hoist_concats(traced, home)
    root = Scope((), type(module))
    for i, n in enumerate(traced.nodes):
        scope = root
        for depth in range(len(home[n.id])):
            path = home[n.id][: depth + 1]
            if path[-1] not in scope.children:
                cls = traced.classes.get(path)
                scope.children[path[-1]] = Scope(path, cls)
            scope = scope.children[path[-1]]
            scope.order = min(scope.order, i)
        scope.nodes.append(n)
    return root, home, label


def _rewrite_concat_prefixes(traced: Traced) -> None:
    """cat([a, b, c]) after cat([a, b]) is cat(cat([a, b]), c): DenseNet's layers, each of which
    concatenates all the features so far, become one concat each (the same numbers)."""
    by_args: dict[tuple[str, ...], str] = {}
    for n in traced.nodes:
        if n.op != "concat":
            continue
        args = tuple(n.args)
        if len(args) > 2 and args[:-1] in by_args:
            n.args = [by_args[args[:-1]], args[-1]]
        by_args.setdefault(args, n.id)


def _hoist_concats(traced: Traced, home: dict[str, tuple[str, ...]]) -> None:
    """A concat of a scope's input and its last result, made at the start of the next scope
    (DenseNet's layer concatenating its inputs), moves to the end of the scope it closes: that
    scope becomes `dense { … }` and the next one takes one input."""
    producer = {n.id: n for n in traced.nodes}
    consumers: dict[str, list[OpNode]] = {}
    for n in traced.nodes:
        for a in n.args:
            consumers.setdefault(a, []).append(n)
    for n in traced.nodes:
        if n.op != "concat" or len(n.args) != 2:
            continue
        a, b = n.args
        hb, hn = home[b], home[n.id]
        common = 0
        while common < min(len(hb), len(hn)) and hb[common] == hn[common]:
            common += 1
        if common >= len(hb):
            continue
        target = hb[: common + 1]
        inside = lambda x: home[x][: len(target)] == target  # noqa: E731
        if inside(n.id) or not inside(b) or inside(a) or producer[a].op == "input" and not target:
            continue
        if not any(inside(c.id) for c in consumers.get(a, [])):
            continue
        if any(not inside(c.id) and c is not n for c in consumers.get(b, [])):
            continue
        home[n.id] = target


# ---- dataflow of one scope ---------------------------------------------------------------------


class CannotStructure(Exception):
    pass


@dataclass
class Item:
    """A node of the scope, or a child scope (one output)."""

    key: str
    ins: list[str]
    out: str
    node: OpNode | None = None
    child: Scope | None = None


def scope_items(scope: Scope, all_users: dict[str, list[str]], network_outputs: set[str]) -> list[Item]:
    """The scope's items in execution order, and each child scope's inputs and outputs."""
    items = []
    for n in scope.nodes:
        if n.op != "input":
            items.append((n.index, Item(n.id, list(n.args), n.id, node=n)))
    for child in scope.children.values():
        made = {n.id for n in child.all_nodes()}
        ins: list[str] = []
        outs: list[str] = []
        for n in child.all_nodes():
            for a in n.args:
                if a not in made and a not in ins:
                    ins.append(a)
            if n.id in network_outputs or any(u not in made for u in all_users.get(n.id, [])):
                outs.append(n.id)
        child.inputs, child.outputs = ins, outs
        if len(outs) != 1:
            first = next(child.all_nodes())
            raise ArchError(f"`{'.'.join(child.path)}` is not one piece of the network: {len(outs)} of its results are "
                            "used outside it (archdsl's blocks and groups have one output)", first.loc,
                            hint="a loop over an nn.ModuleList with other ops between its modules interleaves them: "
                                 "put each step (module and ops) in a module of its own")
        items.append((child.order, Item("scope:" + ".".join(child.path), ins, outs[0], child=child)))
    items.sort(key=lambda t: t[0])
    return [it for _, it in items]
