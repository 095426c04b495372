"""Scope bodies as element trees: chains and the join constructs (see structure.py)."""

from __future__ import annotations

import networkx as nx

from ..errors import ArchError
from ..ops import OPS
from ..ops.registry import REQUIRED
from .structure import (CannotStructure, Call, Dense, Group, Item, Join, Lit, Output, Ref, Residual, Scope, is_sequence,
                        scope_items)
from .trace import OpNode, Traced


class Emitter:
    def __init__(self, traced: Traced, label: dict[str, str | None]):
        self.traced = traced
        self.label = label
        self.users: dict[str, list[str]] = {}
        for n in traced.nodes:
            for a in n.args:
                self.users.setdefault(a, []).append(n.id)
        self.outputs = set(traced.outputs)
        self.shape = {n.id: n.shape for n in traced.nodes}
        self.names = 0
        self.block_scopes: list[Scope] = []  # scopes written as block calls, for blocks.py

    # -- elements of single nodes
    def node_elem(self, n: OpNode) -> Call:
        """Required arguments by position, the others by keyword (all of them: instances of one
        block compare argument by argument; the renderer leaves out those at their default)."""
        spec = OPS[n.op]
        args, kwargs = [], {}
        for p in spec.params:
            if p.name not in n.attrs:
                continue
            if p.default is REQUIRED:
                args.append(Lit(n.attrs[p.name]))
            else:
                default = p.default
                if p.name == "stride" and n.op in ("maxpool", "avgpool"):
                    default = n.attrs.get("kernel")  # the pools' stride defaults to the kernel
                kwargs[p.name] = Lit(n.attrs[p.name], _norm(default))
        label = self.label.get(n.id)
        return Call(n.op, args, kwargs, label=None if label is None or label.isdigit() else label)

    # -- scopes
    def scope_elem(self, scope: Scope):
        """The element standing for a child scope: a block call or a labelled group."""
        body = self.body(scope)
        scope.body = body
        if scope.name.isdigit() and scope.cls is not None and is_sequence(scope):
            # at a numbered position a group would be transparent: a `sequence` block opens the
            # scope `N` and numbers its own elements as nn.Sequential does
            scope.elem = Call("?", [], {}, label=None, block=True)
            scope.sequence = True
            self.block_scopes.append(scope)
        elif scope.cls is None or is_sequence(scope):
            scope.elem = Group(scope.name if not scope.name.isdigit() else None, body)
        else:
            scope.elem = Call("?", [], {}, label=scope.name if not scope.name.isdigit() else None, block=True)
            self.block_scopes.append(scope)
        return scope.elem

    def body(self, scope: Scope) -> list:
        items = scope_items(scope, self.users, self.outputs)
        for it in items:
            if it.child is not None:
                self.scope_elem(it.child)
                it.child.in_c = self.shape[it.child.inputs[0]][0] if it.child.inputs else 0
                it.child.out_c = self.shape[it.child.outputs[0]][0]
                if len(it.child.inputs) != 1:
                    raise ArchError(f"`{'.'.join(it.child.path)}` takes {len(it.child.inputs)} tensors from outside it "
                                    "(archdsl's blocks and groups take one input)",
                                    next(iter(it.child.all_nodes())).loc)
        made = {it.out: it for it in items}
        if scope.path == ():
            outs = list(self.traced.outputs)
            src = self.traced.input
        else:
            outs = scope.outputs
            src = scope.inputs[0] if scope.inputs else None
        try:
            return Structurer(self, items, made, src, outs, scope).run()
        except CannotStructure:
            return Flat(self, items, made, src, outs, scope).run()

    def fresh(self) -> str:
        self.names += 1
        return f"t{self.names}"


def _norm(v):
    """A default as the tracer writes values: pairs of equal items as one number."""
    if isinstance(v, tuple) and len(set(v)) == 1:
        return v[0]
    return v


def elem_of(item: Item, emitter: Emitter):
    return item.child.elem if item.child is not None else emitter.node_elem(item.node)


def tensor_name(elem, emitter: Emitter) -> str:
    label = getattr(elem, "label", None)
    if label:
        return label
    if elem.as_ is None:
        elem.as_ = emitter.fresh()
    return elem.as_


class Structurer:
    """Series-parallel dataflow -> chains and join constructs, by immediate dominators."""

    def __init__(self, emitter: Emitter, items: list[Item], made: dict[str, Item], src, outs, scope: Scope):
        self.e, self.items, self.made, self.src, self.outs, self.scope = emitter, items, made, src, outs, scope
        self.elems: dict[str, object] = {}
        self.visits: dict[str, int] = {}
        g = nx.DiGraph()
        g.add_node("IN")
        for it in items:
            g.add_node(it.out)
            for t in it.ins:
                g.add_edge(t if t in made else "IN", it.out)
        if any(t not in made and t != src for it in items for t in it.ins):
            raise CannotStructure("several inputs")
        self.idom = nx.immediate_dominators(g, "IN")

    def run(self) -> list:
        main = self.outs[0]
        body = [self.seq("IN", main)] if main in self.made else []
        extra_names = []
        for o in self.outs[1:]:
            d = self.idom.get(o)
            if d is None or d == "IN" or d not in self.elems:
                raise CannotStructure("an output that does not branch off the main chain")
            chain = self.seq(d, o)
            body.append([Ref(tensor_name(self.elems[d], self.e))] + chain)
        for o in self.outs:
            extra_names.append(tensor_name(self.elems[o], self.e) if len(self.outs) > 1 else None)
        if any(self.visits.get(it.out, 0) != 1 for it in self.items):
            raise CannotStructure("a tensor used on two paths")
        if len(self.outs) > 1:
            body.append([Output(extra_names)])
        return [chain for chain in body if chain]

    def seq(self, s: str, e: str) -> list:
        if e == s or (e not in self.made):
            if e != s and not (s == "IN" and e == self.src):
                raise CannotStructure("a path that does not start at the fork")
            return []
        item = self.made[e]
        self.visits[e] = self.visits.get(e, 0) + 1
        if self.visits[e] > 1:
            raise CannotStructure("visited twice")
        ins = [t if t in self.made else "IN" for t in item.ins]
        if len(ins) == 1:
            chain = self.seq(s, ins[0])
            elem = elem_of(item, self.e)
            self.elems[e] = elem
            return chain + [elem]
        d = self.idom[e]
        chain = self.seq(s, d)
        branches = [self.seq(d, t) for t in ins]
        elem = self.join(item.node, branches, d)
        self.elems[e] = elem
        return chain + [elem]

    def identity_ref(self, d: str) -> Ref:
        if d == "IN":
            return Ref("in")
        return Ref(tensor_name(self.elems[d], self.e))

    def join(self, node: OpNode, branches: list, d: str):
        kind = node.op
        if kind == "add" and len(branches) == 2 and (branches[0] or branches[1]):
            # x + f(x) and f(x) + x are the same numbers (IEEE addition commutes): the path is the
            # branch that is not the identity, or not the projection (`downsample`, `proj`, ...)
            path, short = branches if branches[0] else branches[::-1]
            if short and _is_projection(path) and not _is_projection(short):
                path, short = short, path
            src = self.src if d == "IN" else d
            meta = {"in_c": self.e.shape[src][0], "out_c": node.shape[0], "at_input": d == "IN"}
            return Residual([path], [short] if short else None, meta=meta)
        if kind == "concat" and len(branches) == 2 and not branches[0] and branches[1]:
            return Dense([branches[1]])
        return Join(kind, [b if b else [self.identity_ref(d)] for b in branches])


PROJECTIONS = ("downsample", "proj", "shortcut", "skip")


def _is_projection(chain: list) -> bool:
    return any(isinstance(e, (Call, Group)) and e.label and e.label.startswith(PROJECTIONS) for e in chain)


class Flat:
    """Any dataflow: one statement per item, `as` names and `@` references where needed."""

    def __init__(self, emitter: Emitter, items, made, src, outs, scope):
        self.e, self.items, self.made, self.src, self.outs, self.scope = emitter, items, made, src, outs, scope

    def run(self) -> list:
        body = []
        elems: dict[str, object] = {}
        prev = self.src

        def ref(t):
            if t not in self.made:
                return Ref("in")
            return Ref(tensor_name(elems[t], self.e))

        for it in self.items:
            if it.node is not None and len(it.ins) > 1:
                elem = Join(it.node.op, [[ref(t)] for t in it.ins])
                chain = [elem]
            else:
                elem = elem_of(it, self.e)
                chain = [elem] if it.ins[0] == prev else [ref(it.ins[0]), elem]
            elems[it.out] = elem
            body.append(chain)
            prev = it.out
        if len(self.outs) > 1 or (self.outs and self.outs[0] != prev):
            if self.scope.path == ():
                body.append([Output([tensor_name(elems[o], self.e) for o in self.outs])])
            else:
                body.append([ref(self.outs[0])])  # the block's result: `@t3` as its last statement
        return body
