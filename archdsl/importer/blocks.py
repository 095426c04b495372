"""Blocks from repeated submodules: instances of one class with one structure share a block.

Two instances share a block when their bodies are the same tree up to literal values (and up
to an optional shortcut).  A literal that differs between instances becomes a parameter, or an
expression of one when it always relates to it (`4 * c`, `in.c // 2`); literals that agree stay
literals.  A shortcut present in some instances only is `shortcut if COND`, with the condition
ResNet's (`stride != 1 or in.c != 4 * c`) when that is what decides it, else a boolean parameter.
Runs of identical calls become `call * n` (positions) or `for` loops (numbered labels).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import NO_LOC, ArchError
from ..ops import OPS
from .render import RESERVED
from .structure import Call, Dense, Group, Join, Lit, Loop, Output, Ref, Residual, Scope


@dataclass
class BlockDef:
    name: str
    cls: type
    params: list  # (name, default or None)
    body: list
    sequence: bool = False
    exprs: dict = field(default_factory=dict)  # id(Lit) -> expression text
    conds: dict = field(default_factory=dict)


# ---- walking element trees ----------------------------------------------------------------------


def _key(e, names: dict, lits: list | None, shortcuts: list | None) -> str:
    """A structural key (literals as `?`); collects the main-body literals and each residual's
    shortcut (kept out of the key: an optional part)."""
    k = lambda x: _key(x, names, lits, shortcuts)  # noqa: E731
    if isinstance(e, list):
        return "[" + ",".join(k(x) for x in e) + "]"
    if isinstance(e, Lit):
        if lits is not None:
            lits.append(e)
        return "?"
    if isinstance(e, str):
        return repr(e)
    if isinstance(e, Call):
        args = ",".join(k(a) for a in e.args)
        kwargs = ",".join(f"{n}={k(v)}" for n, v in e.kwargs.items())
        rep = k(e.repeat) if e.repeat is not None else ""
        return f"C({e.name},{e.label},{args};{kwargs}*{rep}{_as(e, names)})"
    if isinstance(e, Group):
        return f"G({e.label},{k(e.body)}{_as(e, names)})"
    if isinstance(e, Join):
        return f"J({e.kind},{k(e.branches)}{_as(e, names)})"
    if isinstance(e, Residual):
        if shortcuts is not None:
            shortcuts.append(e)
        return f"R({k(e.body)}{_as(e, names)})"
    if isinstance(e, Dense):
        return f"D({k(e.body)}{_as(e, names)})"
    if isinstance(e, Ref):
        return "@" + names.get(e.name, e.name)
    if isinstance(e, Loop):
        return f"L({k(e.count)},{e.prefix},{e.start},{k(e.call)})"
    if isinstance(e, Output):
        return "O(" + ",".join(names.get(n, n) for n in e.names) + ")"
    raise TypeError(type(e))


def _as(e, names: dict) -> str:
    if not e.as_:
        return ""
    names.setdefault(e.as_, f"t{len(names) + 1}")
    return " as " + names[e.as_]


def contexts(e, out: list) -> None:
    """Each literal's (op or block, parameter name), in `_key`'s order (main body only)."""
    if isinstance(e, list):
        for x in e:
            contexts(x, out)
    elif isinstance(e, Call):
        spec = OPS.get(e.name) if not e.block else None
        for i, a in enumerate(e.args):
            if isinstance(a, Lit):
                pname = spec.params[i].name if spec else (e.param_names[i] if hasattr(e, "param_names") else "p")
                out.append((e.name, pname, e.block))
        for n, v in e.kwargs.items():
            if isinstance(v, Lit):
                out.append((e.name, n, e.block))
        if isinstance(e.repeat, Lit):
            out.append((e.name, "n", True))
    elif isinstance(e, Group):
        contexts(e.body, out)
    elif isinstance(e, Join):
        contexts(e.branches, out)
    elif isinstance(e, (Residual, Dense)):
        contexts(e.body, out)
    elif isinstance(e, Loop):
        if isinstance(e.count, Lit):
            out.append(("for", "n", True))
        contexts([e.call], out)


def rename_tensors(body: list) -> None:
    """`as` names numbered t1, t2 ... in order of appearance within one body."""
    names: dict[str, str] = {}
    _key(body, names, None, None)

    def visit(e):
        if isinstance(e, list):
            for x in e:
                visit(x)
            return
        if getattr(e, "as_", None):
            e.as_ = names.get(e.as_, e.as_)
        if isinstance(e, Ref):
            e.name = names.get(e.name, e.name)
        if isinstance(e, Output):
            e.names = [names.get(n, n) for n in e.names]
        for attr in ("body", "branches", "shortcut"):
            if getattr(e, attr, None) is not None:
                visit(getattr(e, attr))

    visit(body)


@dataclass
class _JoinNode:
    op: str  # the op whose name the join's node gets (`add` for `residual`, `concat` for `dense`)


def _refuse_labels_after_joins(level: list) -> None:
    """A module named like a join's node (`self.add` after `x + f(x)`) cannot be labelled so: the
    join took the name first."""
    claimed: set[str] = set()
    for e in level:
        if isinstance(e, _JoinNode):
            name, k = e.op, 0
            while name in claimed:
                k += 1
                name = f"{e.op}_{k}"
            claimed.add(name)
        elif getattr(e, "label", None):
            if e.label in claimed:
                raise ArchError(f"the module name `{e.label}` is the name archdsl gives a join (`{e.label}`) made "
                                "before it in the same module's forward", NO_LOC,
                                hint="rename the module (archdsl names an unlabelled join after its op)")
            claimed.add(e.label)


def label_clashing_ops(body: list, positional: bool) -> None:
    """An unlabelled op is named after its op (`relu`, then `relu_1`, ...) when it is made, and a
    later label that repeats such a name is an error: `F.relu(...)` before a module called `relu`.
    In a scope with such a label, the unlabelled ops of that kind get labels of their own (they
    have no weights: no state-dict key changes).  Positional scopes number them instead; labelled
    groups open positional scopes, so only this level's transparent constructs are looked into."""
    level: list = []

    def collect(e):
        if isinstance(e, list):
            for x in e:
                collect(x)
        elif isinstance(e, Group) and e.label:
            label_clashing_ops(e.body, positional=True)
            level.append(e)
        elif isinstance(e, (Group, Residual, Dense, Join)):
            level.append(e)
            for attr in ("body", "branches", "shortcut"):
                if getattr(e, attr, None) is not None:
                    collect(getattr(e, attr))
            if not isinstance(e, Group):  # the join's node is made after its branches
                level.append(_JoinNode("add" if isinstance(e, Residual) else "concat" if isinstance(e, Dense)
                                       else e.kind))
        elif isinstance(e, Call):
            level.append(e)

    collect(body)
    if positional:
        return
    _refuse_labels_after_joins(level)
    labels = {e.label for e in level if getattr(e, "label", None)}
    kinds = {e.name for e in level if isinstance(e, Call) and not e.block and e.label is None and e.repeat is None
             and any(lb == e.name or re.fullmatch(re.escape(e.name) + r"_\d+", lb) for lb in labels)}
    for e in level:
        if isinstance(e, Call) and e.name in kinds and not e.block and e.label is None and e.repeat is None:
            k = 1
            while f"{e.name}_{k}" in labels:
                k += 1
            e.label = f"{e.name}_{k}"
            labels.add(e.label)


# ---- runs ------------------------------------------------------------------------------------------

_NUMBERED = re.compile(r"(.*?[A-Za-z_-])(\d+)\Z")


def _call_text(c: Call) -> str:
    return _key([Call(c.name, c.args, c.kwargs, None, None, c.block)], {}, None, None)


def _values(c: Call) -> str:
    from .render import Renderer

    return Renderer().call(Call(c.name, c.args, c.kwargs))


def compress(body: list, sequence: bool) -> list:
    """Runs of identical block calls: `b * n` in a positional sequence, a `for` loop over
    numbered labels (`denselayer1` .. `denselayer6`)."""
    plain = all(not isinstance(e, (Ref, Output, Loop)) for chain in body for e in chain)
    chains = [[e for chain in body for e in chain]] if plain and sequence else body
    out = []
    for chain in chains:
        merged: list = []
        for e in chain:
            prev = merged[-1] if merged else None
            if (sequence and isinstance(e, Call) and e.block and not e.label and not e.as_ and isinstance(prev, Call)
                    and prev.block and not prev.label and _values(prev) == _values(e)):
                prev.repeat = Lit((prev.repeat.value if prev.repeat else 1) + 1)
                continue
            merged.append(e)
        out += _loops(merged) if not sequence else [merged]
    return out


def _loops(chain: list) -> list:
    """Split a chain around runs of numbered labels into `for` statements."""
    stmts, current, i = [], [], 0
    while i < len(chain):
        e = chain[i]
        m = _NUMBERED.match(e.label or "") if isinstance(e, Call) and e.block and not e.as_ else None
        j = i + 1
        if m:
            while j < len(chain):
                f = chain[j]
                mf = _NUMBERED.match(getattr(f, "label", None) or "") if isinstance(f, Call) and f.block else None
                if not (mf and mf.group(1) == m.group(1) and int(mf.group(2)) == int(m.group(2)) + (j - i)
                        and _values(f) == _values(e) and not f.as_):
                    break
                j += 1
        if m and j - i >= 2:
            if current:
                stmts.append(current)
                current = []
            stmts.append([Loop(Lit(j - i), m.group(1), int(m.group(2)), Call(e.name, e.args, e.kwargs, block=True))])
            i = j
            continue
        current.append(e)
        i += 1
    if current:
        stmts.append(current)
    return stmts


def compress_tree(body: list, sequence: bool) -> list:
    """compress() in this body and in every group nested in it."""
    def visit(e):
        if isinstance(e, list):
            for x in e:
                visit(x)
        elif isinstance(e, Group):
            visit(e.body)
            e.body = compress(e.body, sequence=True)
        elif isinstance(e, (Residual, Dense)):
            visit(e.body)
            if getattr(e, "shortcut", None):
                visit(e.shortcut)
        elif isinstance(e, Join):
            visit(e.branches)

    visit(body)
    return compress(body, sequence)


# ---- blocks -----------------------------------------------------------------------------------------


def snake(name: str) -> str:
    name = name.strip("_")
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s).lower()
    s = re.sub(r"[^a-z0-9_]", "_", s) or "block"
    return s if s[0].isalpha() else "b_" + s


def _height(scope: Scope, blocks: set[int]) -> int:
    below = [_height(c, blocks) + (1 if id(c) in blocks else 0) for c in scope.children.values()]
    return max(below, default=0)


PARAM_NAMES = {("conv", "out"): "c", ("fc", "out"): "out", ("linear", "out"): "out", ("conv", "kernel"): "k"}
NO_DEFAULT = {"c", "out", "n"}


def extract(block_scopes: list[Scope], taken: set[str]) -> list[BlockDef]:
    ids = {id(s) for s in block_scopes}
    by_height: dict[int, list[Scope]] = {}
    for s in block_scopes:
        by_height.setdefault(_height(s, ids), []).append(s)
    defs: list[BlockDef] = []
    for h in sorted(by_height):
        groups: dict[tuple, list[Scope]] = {}
        for s in by_height[h]:
            s.body = compress_tree(s.body, sequence=False)
            rename_tensors(s.body)
            s.wrapped = _unwrap(s)
            res: list = []
            main = _key(s.body, {}, None, res)
            groups.setdefault((s.cls, main, s.sequence), []).append((s, [_key(r.shortcut, {}, None, None)
                                                             if r.shortcut is not None else None for r in res]))
        groups = _split_shortcuts(groups)
        for key, scopes in sorted(groups.items(), key=lambda kv: kv[1][0].order):
            defs.append(_define(key[0], scopes, taken))
    return defs


def _split_shortcuts(groups: dict) -> dict:
    """Instances share a block only if each residual's shortcut, where present, is one structure."""
    out: dict[tuple, list[Scope]] = {}
    for key, members in groups.items():
        consistent = all(len({m[1][r] for m in members} - {None}) <= 1 for r in range(len(members[0][1])))
        for s, sc in members:
            out.setdefault(key if consistent else key + (tuple(sc),), []).append(s)
    return out


def _define(cls: type, scopes: list[Scope], taken: set[str]) -> BlockDef:
    base = snake(cls.__name__)
    if base in OPS or base in RESERVED:
        base += "_block"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    rep = scopes[0]
    lits_per = []
    resid_per = []
    for s in scopes:
        lits: list = []
        res: list = []
        _key(s.body, {}, lits, res)
        lits_per.append(lits)
        resid_per.append(res)
    ctx: list = []
    contexts(rep.body, ctx)
    holes = [[lits[j].value for lits in lits_per] for j in range(len(lits_per[0]))]
    in_c = [s.in_c for s in scopes]
    block = BlockDef(name, cls, [], rep.body, rep.sequence)
    exprs: dict[int, str] = {}
    found: list[tuple[str, list]] = []  # (expression, vector) usable by later holes
    for j, vec in enumerate(holes):
        lit = lits_per[0][j]
        if len(set(map(repr, vec))) == 1:
            continue
        expr = _relate(vec, found, in_c)
        if expr is None:
            pname = _param_name(ctx[j] if j < len(ctx) else ("", "p", False), block.params)
            default = None
            if pname.rstrip("0123456789") not in NO_DEFAULT:
                common, count = Counter(map(repr, vec)).most_common(1)[0]
                if count >= 2:
                    default = next(v for v in vec if repr(v) == common)
            block.params.append((pname, default, vec))
            expr = pname
            found.append((pname, vec))
        exprs[id(lit)] = expr
        found.append((expr, vec))
    # optional shortcuts: the representative shows the shortcut of the first instance that has one
    for r, res in enumerate(resid_per[0]):
        present = [rp[r].shortcut is not None for rp in resid_per]
        if not any(present):
            continue
        shortcuts = [rp[r].shortcut for rp in resid_per]
        first = present.index(True)
        res.shortcut = shortcuts[first]
        sc_lits: list = []
        _key(res.shortcut, {}, sc_lits, None)
        per: list = []
        for sc in shortcuts:
            other: list = []
            if sc is not None:
                _key(sc, {}, other, None)
            per.append(other)
        for t, lit in enumerate(sc_lits):
            vec = [other[t].value if other else None for other in per]
            known = [v for v in vec if v is not None]
            if len(set(map(repr, known))) <= 1:
                same = next((e for e, v in found if e != "in.c" and _agrees(vec, v)), None)
                if same is not None and not isinstance(known[0], bool):
                    exprs[id(lit)] = same  # `stride=stride` rather than `stride=2`
                continue
            expr = _relate(vec, found, in_c)
            if expr is None:
                pname = _param_name(("", "p", False), block.params)
                block.params.append((pname, Counter(known).most_common(1)[0][0], vec))
                expr = pname
            exprs[id(lit)] = expr
        if not all(present):
            res.cond = _condition(present, [rp[r].meta for rp in resid_per], block, found, res)
    _rewrap(block, scopes, found)
    block.exprs = exprs
    # order: parameters without a default first (they are passed by position)
    block.params.sort(key=lambda p: p[1] is not None)
    for i, s in enumerate(scopes):
        args, kwargs = [], {}
        for pname, default, vec in block.params:
            v = vec[i]
            if default is None:
                args.append(Lit(v))
            else:  # every keyword, so that calls compare argument by argument; defaults are not written
                kwargs[pname] = Lit(default if v is None else v, default)
        s.elem.name, s.elem.args, s.elem.kwargs = name, args, kwargs
        s.elem.param_names = [p[0] for p in block.params if p[1] is None]
    return block


def _unwrap(scope: Scope) -> bool:
    """A body that is one `residual { … }` without a shortcut compares as its inside, so that
    MobileNet's inverted residuals with and without the add share a block (`residual if`)."""
    body = scope.body
    if len(body) == 1 and len(body[0]) == 1 and isinstance(body[0][0], Residual):
        r = body[0][0]
        if r.shortcut is None and not r.as_ and r.meta.get("at_input"):
            scope.body = r.body
            return True
    return False


def _rewrap(block: BlockDef, scopes: list[Scope], found: list) -> None:
    wrapped = [s.wrapped for s in scopes]
    if not any(wrapped):
        return
    when = None
    if not all(wrapped):
        out_c, in_c = [s.out_c for s in scopes], [s.in_c for s in scopes]
        oc = next((e for e, v in found if v == out_c), None) or _relate(out_c, found, in_c)
        strides = [(p[0], p[2]) for p in block.params if p[0].startswith("stride")]
        if oc is not None and oc != "in.c" and all(
                w == (all(v[i] == 1 for _, v in strides) and in_c[i] == out_c[i]) for i, w in enumerate(wrapped)):
            when = " and ".join([f"{s} == 1" for s, _ in strides] + [f"in.c == {oc}"])
        else:
            when = _param_name(("", "use_residual", True), block.params)
            block.params.append((when, False, wrapped))
    block.body = [[Residual(block.body, None, when=when)]]


def _param_name(ctx: tuple, params: list) -> str:
    op, pname, is_block = ctx
    base = pname if is_block else PARAM_NAMES.get((op, pname), pname)
    taken = {p[0] for p in params} | RESERVED
    name, k = base, 2
    while name in taken:
        name, k = f"{base}{k}", k + 1
    return name


def _relate(vec: list, found: list, in_c: list) -> str | None:
    """An expression of a known parameter (or of `in.c`) that gives `vec` in every instance."""
    pairs = lambda other: [(v, o) for v, o in zip(vec, other) if v is not None and o is not None]  # noqa: E731
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in vec if v is not None)
    for expr, other in found:
        if [repr(v) for v, _ in pairs(other)] == [repr(o) for _, o in pairs(other)]:
            return expr
    if not ints:
        return None
    if pairs(in_c) and all(v == o for v, o in pairs(in_c)):
        return "in.c"
    bases = [(e, v) for e, v in found if " " not in e]  # a parameter or in.c, not an expression of one
    for expr, other in bases + [("in.c", in_c)]:
        ps = pairs(other)
        if not ps or not all(isinstance(o, int) and not isinstance(o, bool) and o > 0 for _, o in ps):
            continue
        if all(v % o == 0 for v, o in ps) and len({v // o for v, o in ps}) == 1:
            k = ps[0][0] // ps[0][1]
            if k > 1:
                return f"{k} * {_paren(expr)}"
        if all(v > 0 and o % v == 0 for v, o in ps) and len({o // v for v, o in ps}) == 1:
            k = ps[0][1] // ps[0][0]
            if k > 1:
                return f"{_paren(expr)} // {k}"
    return None


def _agrees(vec: list, other: list) -> bool:
    pairs = [(v, o) for v, o in zip(vec, other) if v is not None and o is not None]
    return bool(pairs) and all(repr(v) == repr(o) for v, o in pairs)


def _paren(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


def _condition(present: list, metas: list, block: BlockDef, found: list, res: Residual) -> str:
    """`stride != 1 or in.c != 4 * c` when the shape change decides it, else a boolean parameter."""
    if all(m.get("at_input") for m in metas):
        out_c = [m["out_c"] for m in metas]
        in_c = [m["in_c"] for m in metas]
        oc = next((expr for expr, vec in found if vec == out_c), None) or _relate(out_c, found, in_c)
        strides = [(p[0], p[2]) for p in block.params if p[0].startswith("stride")]
        if oc is not None and oc != "in.c":
            ok = all(want == (any(v[i] != 1 for _, v in strides) or metas[i]["in_c"] != out_c[i])
                     for i, want in enumerate(present))
            if ok:
                return " or ".join([f"{s} != 1" for s, _ in strides] + [f"in.c != {oc}"])
    label = next((e.label for chain in res.shortcut for e in chain if getattr(e, "label", None)), "project")
    pname = _param_name(("", label, True), block.params)
    block.params.append((pname, False, present))
    return pname
