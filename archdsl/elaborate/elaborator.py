"""AST -> IR graph: expand blocks, repetition, conditionals and parameters into a flat DAG.

Naming (what makes ``layer3.2.conv1``):
- a labelled op is a node named by its label; a labelled block call, group, repetition or join
  is a *scope*, and everything inside it is named under ``label.``;
- a labelled group or repetition is a *sequence*: its unlabelled elements are numbered by
  position (``features.0``, ``features.1``, ... like `nn.Sequential`);
- elsewhere an unlabelled element is named after its op or block (``relu``, ``relu_1``, ...);
- unlabelled groups, joins, `residual`, `dense`, `if` and `for` are transparent: they add no
  name segment.

Every tensor has a shape the moment it is made, so a mistake is reported at the statement
that causes it, and `in.c` (the shape of a block's input) is available to expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError, InternalError, Note, SrcLoc, did_you_mean
from ..frontend import ast
from ..ir.graph import Graph, Scope
from ..ops import OPS
from ..ops.join import JoinMismatch
from ..ops.registry import REQUIRED, OpSpec, fmt_shape
from .evaluate import Env, Evaluator, normalize, show, type_name
from .hints import check_conv_order, foreign_name_hint
from .loader import Library

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUOTED_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # a quoted name may hold `-` (RegNet's `block1-0`)


@dataclass(frozen=True)
class Limits:
    """Sane bounds that keep a wrong program from running away."""

    depth: int = 64  # nested block calls (recursion)
    repeat: int = 10_000  # `x * n`
    nodes: int = 100_000
    steps: int = 250_000  # statements and elements elaborated: bounds loops that build nothing
    channels: int = 1 << 20
    spatial: int = 1 << 16


@dataclass(frozen=True)
class Value:
    """A tensor during elaboration: the node that produces it and its shape."""

    node: str
    shape: tuple[int, ...]


class Namer:
    """Hands out the names of one scope (see the module docstring for the rules)."""

    def __init__(self, claimed: dict[str, SrcLoc], prefix: str, positional: bool):
        self.claimed = claimed
        self.prefix = prefix
        self.positional = positional
        self.next_index = 0
        self.auto: dict[str, int] = {}
        self.members: list[str] = []  # what each claimed name is (op or block name), in order

    def full(self, segment: str) -> str:
        return f"{self.prefix}.{segment}" if self.prefix else segment

    def claim(self, label: str | None, hint: str, loc: SrcLoc, numbered: bool = True) -> str:
        """The name of the next element; `numbered=False` (a network's input) takes no position."""
        self.members.append(hint)
        index = self.next_index
        if self.positional and numbered:
            self.next_index += 1
        if label is not None:
            name = self.full(label)
            if name in self.claimed:
                if self.claimed[name] == loc:  # the same statement, elaborated again (a loop or repetition)
                    raise ArchError(f"the name `{name}` is made again by a repetition or a loop", loc,
                                    hint=f"make the label vary, e.g. `{label}{{i}}:` inside `for i in range(n)`, "
                                         "or move the repeated part into a block")
                raise ArchError(f"the name `{name}` is already used", loc, hint="labels must be unique in their scope",
                                notes=[Note(self.claimed[name], "first used here")])
        elif self.positional:
            name = self.full(str(index))
        else:
            name = self._auto(hint)
        self.claimed[name] = loc
        return name

    def _auto(self, hint: str) -> str:
        n = self.auto.get(hint, 0)
        while True:
            name = self.full(hint if n == 0 else f"{hint}_{n}")
            n += 1
            if name not in self.claimed:
                self.auto[hint] = n
                return name


@dataclass
class Ctx:
    """Where elaboration stands: variables, named tensors, the naming scope, the call depth."""

    env: Env
    namer: Namer
    depth: int = 0
    network_top: bool = False
    outputs: list[tuple[str, Value, SrcLoc]] = field(default_factory=list)

    @property
    def tensors(self) -> dict[str, Value]:
        return self.env.tensors

    def with_env(self, env: Env) -> Ctx:
        return Ctx(env, self.namer, self.depth, self.network_top, self.outputs)

    def with_namer(self, namer: Namer) -> Ctx:
        return Ctx(self.env.child(), namer, self.depth, self.network_top, self.outputs)


class Elaborator:
    def __init__(self, library: Library, limits: Limits = Limits()):
        self.lib = library
        self.limits = limits
        self.claimed: dict[str, SrcLoc] = {}
        self.graph = Graph()
        self._mergeable_means: set[str] = set()
        self.steps = 0
        self.evaluator = Evaluator(library.functions)
        self._input_override: tuple[int, int, int] | None = None

    # ---- entry point --------------------------------------------------------------------------

    def network(self, net: ast.BlockDef, overrides: dict[str, Any], input_shape: tuple[int, int, int] | None,
                override_loc: SrcLoc, name: str | None = None) -> Graph:
        params = self._network_params(net, overrides, override_loc)
        # the graph records plain values (1/2 as 0.5: JSON, reports and generated code take it);
        # the network body still computes with the exact rationals
        self.graph.graph.update(name=name or net.name, params={k: _plain(v) for k, v in params.items()})
        ctx = Ctx(Env(dict(params)), Namer(self.claimed, "", positional=net.sequence), network_top=True)
        self._input_override = input_shape
        cur = self.seq(net.body, None, ctx)
        if not self.graph.inputs:
            raise ArchError(f"network `{net.name}` has no input", net.loc,
                            hint="start the body with `input C x H x W`, e.g. `input 3 x 224 x 224`")
        if ctx.outputs:
            self.graph.graph["outputs"] = [v.node for _, v, _ in ctx.outputs]
            self.graph.graph["output_names"] = [n for n, _, _ in ctx.outputs]
        else:
            self.graph.graph["outputs"] = [cur.node]
            self.graph.graph["output_names"] = [cur.node]  # the same name in check, summary, viz and ONNX
        if cur.node in self.graph.inputs and not ctx.outputs:
            raise ArchError(f"network `{net.name}` has no layers", net.loc)
        return self.graph

    def _network_params(self, net: ast.BlockDef, overrides: dict[str, Any], loc: SrcLoc) -> dict[str, Any]:
        names = [p.name for p in net.params]
        for key in overrides:
            if key not in names:
                raise ArchError(f"network `{net.name}` has no parameter `{key}`", loc,
                                hint=did_you_mean(key, names) or
                                (f"its parameters: {', '.join(names)}" if names else "it takes no parameters"))
        env = Env()
        for p in net.params:
            if p.name in overrides:
                value = overrides[p.name]
            elif p.default is not None:
                value = self.evaluator.eval(p.default, env)
            else:
                raise ArchError(f"network parameter `{p.name}` has no value", p.loc,
                                hint=f"give it a default (`{p.name} = ...`) or set it: --set {p.name}=...")
            env.vars[p.name] = value
        return env.vars

    # ---- statements ---------------------------------------------------------------------------

    def seq(self, body: ast.Body, x: Value | None, ctx: Ctx) -> Value | None:
        """Run a body as a sequence: each statement consumes the previous one's output."""
        for st in body.stmts:
            self._tick(st.loc)
            x = self.stmt(st, x, ctx)
        return x

    def stmt(self, st: ast.Stmt, x: Value | None, ctx: Ctx) -> Value | None:
        if isinstance(st, ast.ChainStmt):
            return self.chain(st.chain, x, ctx)
        if isinstance(st, ast.IfStmt):
            chosen = self._choose(st, ctx)
            return self.seq(chosen, x, ctx.with_env(ctx.env.child())) if chosen else x
        if isinstance(st, ast.ForStmt):
            for bound in self._iterate(st, ctx):
                x = self.seq(st.body, x, ctx.with_env(ctx.env.child(**bound)))
            return x
        if isinstance(st, ast.InputStmt):
            return self._input(st, ctx)
        if isinstance(st, ast.OutputStmt):
            self._output(st, ctx)
            return x
        self._simple_stmt(st, ctx)
        return x

    def _simple_stmt(self, st: ast.Stmt, ctx: Ctx) -> None:
        if isinstance(st, ast.LetStmt):
            ctx.env.vars[st.name] = self.evaluator.eval(st.value, ctx.env)
        elif isinstance(st, ast.AssertStmt):
            if not self.evaluator.truth(st.cond, ctx.env):
                raise ArchError(f"assertion failed{': ' + st.message if st.message else ''}", st.loc)
        elif isinstance(st, (ast.InputStmt, ast.OutputStmt)):
            word = "input" if isinstance(st, ast.InputStmt) else "output"
            raise ArchError(f"`{word}` is only allowed at the top level of a network", st.loc)
        else:  # pragma: no cover - the parser makes no other statements
            raise InternalError(f"unknown statement {type(st).__name__}")

    def branches(self, body: ast.Body, x: Value, ctx: Ctx) -> list[Value]:
        """Run a body as parallel branches: every chain statement starts from `x`."""
        outs: list[Value] = []
        for st in body.stmts:
            self._tick(st.loc)
            if isinstance(st, ast.ChainStmt):
                outs.append(self.chain(st.chain, x, ctx))
            elif isinstance(st, ast.IfStmt):
                chosen = self._choose(st, ctx)
                if chosen:
                    outs += self.branches(chosen, x, ctx.with_env(ctx.env.child()))
            elif isinstance(st, ast.ForStmt):
                for bound in self._iterate(st, ctx):
                    outs += self.branches(st.body, x, ctx.with_env(ctx.env.child(**bound)))
            else:
                self._simple_stmt(st, ctx)
        return outs

    def _tick(self, loc: SrcLoc) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            raise ArchError(f"elaboration takes more than {self.limits.steps:,} steps", loc,
                            hint="loops, repetitions or recursion multiply each other here; check their counts")

    def _choose(self, st: ast.IfStmt, ctx: Ctx) -> ast.Body | None:
        for cond, body in st.cases:
            if self.evaluator.truth(cond, ctx.env):
                return body
        return st.otherwise

    def _iterate(self, st: ast.ForStmt, ctx: Ctx) -> list[dict[str, Any]]:
        """The loop variables' values for each iteration (unpacking items when several are named)."""
        items = self.evaluator.eval(st.iterable, ctx.env)
        if not isinstance(items, (list, tuple)):
            raise ArchError(f"`for` needs a list, got {type_name(items)} ({show(items)})", st.iterable.loc,
                            hint="use range(n) or a list like [64, 128, 256]")
        if len(st.vars) == 1:
            return [{st.vars[0]: item} for item in items]
        bound = []
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != len(st.vars):
                raise ArchError(f"cannot unpack {show(item)} into {len(st.vars)} names ({', '.join(st.vars)})",
                                st.iterable.loc, hint="each item must be a tuple with one value per name")
            bound.append(dict(zip(st.vars, item)))
        return bound

    def _input(self, st: ast.InputStmt, ctx: Ctx) -> Value:
        if not ctx.network_top:
            self._simple_stmt(st, ctx)
        if self._input_override is not None and not self.graph.inputs:
            dims = self._input_override
        else:
            dims = tuple(self.evaluator.integer(d, ctx.env, "an input dimension", 1) for d in st.dims)
        label = st.name or "input"
        name = ctx.namer.claim(label, "input", st.loc, numbered=False)
        attrs = dict(zip("chw", dims))
        value = self._add_node(name, OPS["input"], attrs, [], st.loc)
        self.graph.inputs.append(name)
        ctx.tensors[label] = value
        ctx.tensors.setdefault("in", value)
        return value

    def _output(self, st: ast.OutputStmt, ctx: Ctx) -> None:
        if not ctx.network_top:
            self._simple_stmt(st, ctx)
        for name, loc in st.names:
            value = self._lookup_tensor(name, loc, ctx)
            if any(v.node == value.node for _, v, _ in ctx.outputs):
                raise ArchError(f"`{name}` is already an output", loc)
            ctx.outputs.append((name, value, loc))

    # ---- chains and elements ------------------------------------------------------------------

    def chain(self, chain: ast.Chain, x: Value | None, ctx: Ctx) -> Value:
        for i, el in enumerate(chain.elements):
            if isinstance(el.primary, ast.TensorRef) and i > 0:
                raise ArchError(f"`@{self._label(el.primary.name, ctx)}` can only start a chain", el.loc,
                                hint="a reference picks the tensor a chain starts from; put it on its own line")
            x = self.element(el, x, ctx)
        return x

    def element(self, el: ast.Element, x: Value | None, ctx: Ctx) -> Value:
        self._tick(el.loc)
        label = self._label(el.label, ctx) if el.label else None
        if isinstance(el.primary, ast.TensorRef):
            if label or el.repeat is not None:
                raise ArchError("a tensor reference cannot be labelled or repeated", el.loc)
            out = self._lookup_tensor(self._label(el.primary.name, ctx), el.primary.loc, ctx)
        else:
            if x is None:
                raise ArchError("there is no input tensor here", el.loc,
                                hint="declare the network's input first: `input 3 x 224 x 224`")
            if el.repeat is None:
                out = self.primary(el.primary, x, ctx, label, el.loc)
            else:
                out = self._repeat(el, x, ctx, label)
        for name in (label, self._label(el.bind, ctx) if el.bind else None):
            if name is not None:
                ctx.tensors[name] = out
                self._mergeable_means.discard(out.node)  # a named mean is used as itself
        return out

    def _repeat(self, el: ast.Element, x: Value, ctx: Ctx, label: str | None) -> Value:
        count = self.evaluator.integer(el.repeat, ctx.env, "a repetition count", 0)
        if count > self.limits.repeat:
            raise ArchError(f"repetition count {count} is past the limit of {self.limits.repeat}", el.repeat.loc)
        inner = ctx
        if label is not None:
            inner = ctx.with_namer(self._scope(ctx, label, "sequence", "sequence", el.loc, positional=True))
        for _ in range(count):
            self._tick(el.loc)
            x = self.primary(el.primary, x, inner, None, el.loc)
        if label is not None:
            self._title_sequence(inner.namer)
        return x

    def _label(self, label: ast.Label, ctx: Ctx) -> str:
        text = ""
        for part in label.parts:
            if isinstance(part, str):
                text += part
                continue
            v = self.evaluator.eval(part, ctx.env)
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise ArchError(f"a label can contain integers and strings, not {type_name(v)} ({show(v)})", part.loc)
            text += str(v)
        if not (QUOTED_IDENT if label.quoted else IDENT).fullmatch(text):
            raise ArchError(f"`{text}` is not a valid label", label.loc,
                            hint="labels are letters, digits and underscores, starting with a letter"
                            + (" (and `-` in a quoted name)" if label.quoted else ""))
        return text

    def _scope(self, ctx: Ctx, label: str | None, hint: str, kind: str, loc: SrcLoc, positional: bool,
               title: str | None = None) -> Namer:
        name = ctx.namer.claim(label, hint, loc)
        self.graph.graph["scopes"][name] = Scope(kind, title or hint, loc)
        return Namer(self.claimed, name, positional)

    def _title_sequence(self, namer: Namer) -> None:
        """Describe a finished sequence scope by its direct members: "bottleneck ×4", "conv, relu ×2"."""
        scopes = self.graph.graph["scopes"]
        members = namer.members
        runs: list[list] = []
        for m in members:
            if runs and runs[-1][0] == m:
                runs[-1][1] += 1
            else:
                runs.append([m, 1])
        parts = [f"{m} ×{n}" if n > 1 else m for m, n in runs]
        title = ", ".join(parts) if len(parts) <= 3 else f"{len(members)} layers"
        old = scopes[namer.prefix]
        scopes[namer.prefix] = Scope(old.kind, title, old.src)

    # ---- primaries ----------------------------------------------------------------------------

    def primary(self, p: ast.Primary, x: Value, ctx: Ctx, label: str | None, loc: SrcLoc) -> Value:
        if isinstance(p, ast.Call):
            if p.name in self.lib.defs:
                return self.block_call(p, x, ctx, label)
            if p.name in OPS and p.name != "input" and not OPS[p.name].internal:
                return self.op_call(p, x, ctx, label)
            known = set(self.lib.defs) | {n for n, s in OPS.items() if n != "input" and not s.internal}
            raise ArchError(f"unknown op or block `{p.name}`", p.name_loc,
                            hint=foreign_name_hint(p.name, known) or did_you_mean(p.name, known))
        if isinstance(p, ast.Group):
            inner = ctx.with_env(ctx.env.child())
            if label is None:
                return self.seq(p.body, x, inner)
            inner = ctx.with_namer(self._scope(ctx, label, "sequence", "sequence", loc, positional=True))
            out = self.seq(p.body, x, inner)
            self._title_sequence(inner.namer)
            return out
        if isinstance(p, (ast.Join, ast.Residual, ast.Dense)):
            kind = p.kind if isinstance(p, ast.Join) else ("add" if isinstance(p, ast.Residual) else "concat")
            inner = ctx.with_env(ctx.env.child())
            if label is not None:
                word = {ast.Join: kind, ast.Residual: "residual", ast.Dense: "dense"}[type(p)]
                inner = ctx.with_namer(self._scope(ctx, label, word, "branches", loc, positional=False))
            out = self._join_construct(p, kind, x, inner)
            if kind == "mean" and label is None:
                self._mergeable_means.add(out.node)
            return out
        raise InternalError(f"unknown primary {type(p).__name__}")  # pragma: no cover

    def _join_construct(self, p, kind: str, x: Value, ctx: Ctx) -> Value:
        if isinstance(p, ast.Join):
            outs = self.branches(p.body, x, ctx)
            if kind == "mean":
                outs = [v for out in outs for v in self._merge_nested_mean(out)]
            if len(outs) < 2:
                raise ArchError(f"`{kind}` joins {len(outs)} branch{'es' if len(outs) != 1 else ''}; it needs two or more",
                                p.loc, hint="one statement per branch, on separate lines or separated by `;`")
            return self.join(kind, outs, ctx, p.loc)
        if not p.body.stmts:
            raise ArchError(f"`{'dense' if isinstance(p, ast.Dense) else 'residual'}` needs a body", p.loc,
                            hint="an empty body would join the input with itself")
        if isinstance(p, ast.Dense):
            return self.join("concat", [x, self.seq(p.body, x, ctx)], ctx, p.loc, roles=("the input", "the new features"))
        if p.cond is not None and not self.evaluator.truth(p.cond, ctx.env):
            return self.seq(p.body, x, ctx)  # `residual if cond`: the body alone, no add
        main = self.seq(p.body, x, ctx)
        short = x
        if p.shortcut is not None and (p.shortcut_cond is None or self.evaluator.truth(p.shortcut_cond, ctx.env)):
            short = self.seq(p.shortcut, x, ctx)
        return self.join("add", [main, short], ctx, p.loc,
                         roles=("the residual path", "the shortcut" if short is not x else "the identity shortcut"))

    def _merge_nested_mean(self, v: Value) -> list[Value]:
        """FractalNet's join rule: a branch that ends in an unlabelled `mean` join, used nowhere
        else, contributes that join's inputs, so all columns meeting at a point are averaged at once
        (Larsson et al. 2017, Fig. 1). Labelled or named means are kept as they are."""
        if v.node not in self._mergeable_means or self.graph.out_degree(v.node) > 0:
            return [v]
        ins = [Value(a, self.graph.shape(a)) for a in self.graph.args(v.node)]
        self.graph.remove_node(v.node)
        self._mergeable_means.discard(v.node)
        return ins

    def join(self, op: str, ins: list[Value], ctx: Ctx, loc: SrcLoc, roles: tuple[str, ...] | None = None) -> Value:
        name = ctx.namer.claim(None, op, loc)
        try:
            return self._add_node(name, OPS[op], {}, ins, loc)
        except JoinMismatch as exc:
            def role(i):
                return roles[i] if roles else f"branch {i + 1}"

            notes = [Note(self.graph.nodes[ins[i].node]["src"],
                          f"{role(i)} ends at `{ins[i].node}` with shape {fmt_shape(ins[i].shape)}")
                     for i in (0, exc.index)]
            raise ArchError(exc.message.replace(f"{op} of", f"{op} of {role(0)} and {role(exc.index)}:", 1)
                            if " of " in exc.message else exc.message, loc, exc.hint, notes) from None

    def op_call(self, call: ast.Call, x: Value, ctx: Ctx, label: str | None) -> Value:
        spec = OPS[call.name]
        if spec.arity != 1:
            raise ArchError(f"`{call.name}` joins several tensors; write `{call.name} {{ branch; branch }}`", call.loc)
        attrs = spec.normalize(self.bind(call, [(p.name, p.default) for p in spec.params], ctx, spec))
        if call.name == "conv":
            check_conv_order(call, attrs, x.shape)
        name = ctx.namer.claim(label, call.name, call.loc)
        return self._add_node(name, spec, attrs, [x], call.loc)

    def block_call(self, call: ast.Call, x: Value, ctx: Ctx, label: str | None) -> Value:
        block = self.lib.defs[call.name]
        if block.is_network:
            raise ArchError(f"`{call.name}` is a network, not a block", call.name_loc,
                            hint="declare reusable parts with `block`")
        if ctx.depth >= self.limits.depth:
            raise ArchError(f"blocks nest deeper than {self.limits.depth} calls (endless recursion?)", call.loc,
                            hint="make sure every recursive block has a base case that stops it")
        args = self.bind(call, [(p.name, p.default) for p in block.params], ctx, None, block_input=x)
        title = f"{block.name}({', '.join(f'{k}={show(v)}' for k, v in args.items())})"
        namer = self._scope(ctx, label, block.name, "block", call.loc, positional=block.sequence, title=title)
        inner = Ctx(Env(args, tensors={"in": x}), namer, ctx.depth + 1)
        try:
            return self.seq(block.body, x, inner)
        except ArchError as exc:
            _note_call(exc, call, block.name)
            raise

    # ---- arguments ----------------------------------------------------------------------------

    def bind(self, call: ast.Call, params: list[tuple[str, Any]], ctx: Ctx, spec: OpSpec | None,
             block_input: Value | None = None) -> dict[str, Any]:
        """Match a call's arguments to parameters; check their types when calling an op.

        A block's defaults are evaluated after its explicit arguments and may use them and `in`.
        """
        what = f"{'op' if spec else 'block'} `{call.name}`"
        names = [n for n, _ in params]
        values: dict[str, Any] = {}
        where: dict[str, SrcLoc] = {}  # each argument's value, for type errors
        given: dict[str, SrcLoc] = {}  # each argument as written, for "given twice"
        seen_keyword = False
        for i, arg in enumerate(call.args):
            if arg.name is None:
                if seen_keyword:
                    raise ArchError("a positional argument follows a keyword argument", arg.loc)
                if i >= len(names):
                    raise ArchError(f"{what} takes {len(names)} positional argument{'s' * (len(names) != 1)}, "
                                    f"got {sum(a.name is None for a in call.args)}", arg.loc,
                                    hint=_signature(call.name, params, spec is None))
                key = names[i]
            else:
                seen_keyword = True
                key = arg.name
                if key not in names:
                    raise ArchError(f"{what} has no argument `{key}`", arg.loc,
                                    hint=did_you_mean(key, names) or _signature(call.name, params, spec is None))
                if key in values:
                    raise ArchError(f"argument `{key}` given twice", arg.loc,
                                    notes=[Note(given[key], "first given here")])
            values[key] = self.evaluator.eval(arg.value, ctx.env)
            where[key], given[key] = arg.value.loc, arg.loc
        env = Env(dict(values), tensors={"in": block_input} if block_input else {})
        for name, default in params:
            if name in values:
                continue
            if default is REQUIRED or (spec is None and default is None):
                raise ArchError(f"{what} is missing the argument `{name}`", call.loc,
                                hint=_signature(call.name, params, spec is None))
            values[name] = self.evaluator.eval(default, env) if isinstance(default, ast.Expr) else default
            env.vars[name] = values[name]
        if spec is None:
            return {n: values[n] for n in names}
        return {n: self._convert(spec, n, values[n], where.get(n, call.loc)) for n in names}

    def _convert(self, spec: OpSpec, name: str, value: Any, loc: SrcLoc) -> Any:
        if value is None:
            return None
        plain = _plain(value)
        try:
            return spec.param(name).kind.convert(plain)
        except ValueError as exc:
            kind = spec.param(name).kind.describe
            detail = f" ({exc})" if str(exc) else ""
            hint = None
            if isinstance(plain, float) and "integer" in kind:
                hint = ("the value is too large" if plain.is_integer() else
                        "the value is not a whole number: use `//` for floor division, or round()")
            raise ArchError(f"{spec.name}: `{name}` must be {kind}, got {show(value)}{detail}", loc, hint=hint) from None

    # ---- nodes --------------------------------------------------------------------------------

    def _add_node(self, name: str, spec: OpSpec, attrs: dict, ins: list[Value], loc: SrcLoc) -> Value:
        try:
            shape = tuple(spec.shape(attrs, [v.shape for v in ins]))
        except JoinMismatch:
            raise
        except ArchError as exc:
            exc.message = f"`{name}`: {exc.message}"
            raise exc.at(loc) from None
        self._check_size(name, shape, loc)
        self.graph.add_op(name, spec.name, attrs, [v.node for v in ins], shape, loc)
        return Value(name, shape)

    def _check_size(self, name: str, shape: tuple[int, ...], loc: SrcLoc) -> None:
        if len(self.graph) >= self.limits.nodes:
            raise ArchError(f"the network has more than {self.limits.nodes} layers", loc,
                            hint="check repetition counts and recursion")
        if shape[0] > self.limits.channels or any(d > self.limits.spatial for d in shape[1:]):
            raise ArchError(f"`{name}` would have shape {fmt_shape(shape)}, past the sane limits "
                            f"({self.limits.channels} channels, {self.limits.spatial} pixels a side)", loc)

    def _lookup_tensor(self, name: str, loc: SrcLoc, ctx: Ctx) -> Value:
        try:
            return ctx.tensors[name]
        except KeyError:
            raise ArchError(f"no tensor named `{name}` here", loc,
                            hint=did_you_mean(name, ctx.tensors) or
                            "name a tensor with a label (`a: conv(...)`) or `as` (`conv(...) as a`) before using it")


MAX_CALL_NOTES = 6  # an error deep in recursion names the innermost calls, not hundreds


def _note_call(exc: ArchError, call: ast.Call, block: str) -> None:
    """Point an error inside a block at the call that made this instance of it, too."""
    calls = [n for n in exc.notes if n.message.startswith("in block `")]
    if len(calls) < MAX_CALL_NOTES:
        exc.notes.append(Note(call.loc, f"in block `{block}`, called here"))


def _plain(v: Any) -> Any:
    """Exact rationals become floats for op arguments (integral ones are already ints)."""
    v = normalize(v)
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    return float(v) if type(v).__name__ == "Fraction" else v


def _signature(name: str, params: list[tuple[str, Any]], is_block: bool) -> str:
    """`usage: conv(out, kernel, stride=1, ...)`; a block's parameters without default are required."""
    parts = []
    for n, default in params:
        if default is REQUIRED or (is_block and default is None):
            parts.append(n)
        elif isinstance(default, ast.Expr) or default is None:
            parts.append(f"{n}=…")
        else:
            parts.append(f"{n}={show(default)}")
    return f"usage: {name}({', '.join(parts)})"
