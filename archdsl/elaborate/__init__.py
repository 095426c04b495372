"""Elaboration: a `Library` of definitions + network parameters -> a flat, shaped IR `Graph`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


from ..errors import NO_LOC, ArchError, Note, did_you_mean
from ..ir.graph import Graph
from ..frontend import ast
from ..frontend.gcpause import paused_gc
from .elaborator import Elaborator, Limits
from .evaluate import Env, Evaluator
from .loader import Library, load_file, load_source

__all__ = ["Limits", "Library", "elaborate", "load", "loads", "select_network"]


def select_network(lib: Library, name: str | None):
    """The network to build: the one named, or the file's only network."""
    networks = lib.networks
    if name is not None:
        d = lib.defs.get(name)
        if d is None or not d.is_network:
            raise ArchError(f"no network named `{name}` in {lib.root}", NO_LOC,
                            hint=did_you_mean(name, [n.name for n in networks]) or
                            f"networks here: {', '.join(n.name for n in networks) or 'none'}")
        return d
    own = [n for n in networks if n.loc.file == lib.root] or networks
    if not own:
        raise ArchError(f"{lib.root} defines no network", NO_LOC,
                        hint="add `network name(...) { input ... }`, or import this file from one that does")
    if len(own) > 1:
        raise ArchError(f"{lib.root} defines several networks: {', '.join(n.name for n in own)}", own[1].loc,
                        hint="choose one with --network NAME",
                        notes=[Note(own[0].loc, f"`{own[0].name}` is defined here")])
    return own[0]


def elaborate(lib: Library, network: str | None = None, params: dict[str, Any] | None = None,
              input_shape: tuple[int, int, int] | None = None, limits: Limits = Limits()) -> Graph:
    """Build the IR graph of one network of `lib`, with parameters and input shape overridden."""
    net = select_network(lib, network)
    name = net.name
    if isinstance(net, ast.NetworkAlias):
        net, alias_params = _resolve_alias(lib, net)
        params = {**alias_params, **(params or {})}
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))  # deep (but bounded) block recursion
    try:
        with paused_gc():
            graph = Elaborator(lib, limits).network(net, dict(params or {}), input_shape, NO_LOC, name=name)
            graph.lint()
    except RecursionError:
        raise ArchError("the program nests too deeply to elaborate", _deepest(net.loc),
                        hint="split deep expressions with `let`, or check a recursion's base case") from None
    finally:
        sys.setrecursionlimit(old)
    graph.graph["warnings"] = _unused_warnings(graph)
    return graph


def _deepest(loc):
    """Where the network's file nests deepest (the likely culprit), else the network itself."""
    from ..errors import _SOURCES
    from ..frontend.parser import deepest_nesting

    text = _SOURCES.get(loc.file)
    found = deepest_nesting(text, loc.file) if text else None
    return found if found is not None and found.col > 0 and (found.line, found.col) != (1, 1) else loc


def _resolve_alias(lib: Library, alias: ast.NetworkAlias) -> tuple[ast.BlockDef, dict[str, Any]]:
    """The network an alias names (through other aliases), and the defaults the alias sets."""
    params: dict[str, Any] = {}
    seen = [alias.name]
    while isinstance(alias, ast.NetworkAlias):
        target = lib.defs.get(alias.target)
        if target is None or not target.is_network:
            raise ArchError(f"`{alias.target}` is not a network", alias.target_loc,
                            hint=did_you_mean(alias.target, [n.name for n in lib.networks]))
        if target.name in seen:
            raise ArchError(f"network `{alias.name}` is defined in terms of itself", alias.loc)
        seen.append(target.name)
        own = _alias_args(alias, target, lib)
        params = {**own, **params}  # the outer alias wins
        alias = target
    return alias, params


def _alias_args(alias: ast.NetworkAlias, target, lib: Library) -> dict[str, Any]:
    names = [p.name for p in target.params] if isinstance(target, ast.BlockDef) else None
    evaluator, values = Evaluator(), {}
    for i, arg in enumerate(alias.args):
        if arg.name is None:
            if names is None or i >= len(names):
                raise ArchError(f"`{alias.target}` takes {len(names or [])} parameters; name this one", arg.loc)
            key = names[i]
        else:
            key = arg.name
            if names is not None and key not in names:
                raise ArchError(f"network `{alias.target}` has no parameter `{key}`", arg.loc,
                                hint=did_you_mean(key, names))
        if key in values:
            raise ArchError(f"parameter `{key}` given twice", arg.loc)
        values[key] = evaluator.eval(arg.value, Env())
    return values


def _unused_warnings(graph: Graph) -> list[tuple]:
    """Layers that reach no output: kept (the user wrote them) but worth a warning."""
    live = set(graph.outputs)
    for out in graph.outputs:
        live |= graph.ancestors(out)
    dead = [n for n in graph.nodes if n not in live and n not in graph.inputs]
    return [(graph.nodes[n]["src"], f"`{n}` ({graph.op(n)}) does not contribute to any output") for n in dead]


def load(path: str | Path, network: str | None = None, params: dict[str, Any] | None = None,
         input_shape: tuple[int, int, int] | None = None, limits: Limits = Limits()) -> Graph:
    """Parse, elaborate and check a `.arch` file: the front half of every command.

    `path` is always a path, never source text (that is `loads`): nothing is guessed from the
    characters it holds, so `models/net{v2}.arch` is a file name like any other."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"load() takes the path of a .arch file, got {type(path).__name__}")
    if isinstance(path, str) and "\n" in path and not _exists(path):  # as archdsl.compile says it
        raise TypeError("load(path) got text with a line break: pass program text to archdsl.loads(text)")
    return elaborate(load_file(path), network, params, input_shape, limits)


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def loads(text: str, network: str | None = None, params: dict[str, Any] | None = None,
          input_shape: tuple[int, int, int] | None = None, filename: str = "<string>",
          limits: Limits = Limits()) -> Graph:
    """Like `load`, from source text (imports resolve against the working directory).

    `text` is always source text, never a path (that is `load`)."""
    if isinstance(text, Path):
        raise TypeError("loads() takes source text; for a path use archdsl.load(path)")
    if not isinstance(text, str):
        raise TypeError(f"loads() takes source text (a str), got {type(text).__name__}")
    if "\n" not in text and text.strip().endswith(".arch") and _exists(text.strip()):
        raise TypeError(f"loads(text) got {text.strip()!r}, the name of a file: pass a path to archdsl.load(path)")
    return elaborate(load_source(text, filename), network, params, input_shape, limits)
