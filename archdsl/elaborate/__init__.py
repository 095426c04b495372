"""Elaboration: a `Library` of definitions + network parameters -> a flat, shaped IR `Graph`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import NO_LOC, ArchError, Note, did_you_mean
from ..ir.graph import Graph
from .elaborator import Elaborator, Limits
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
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))  # deep (but bounded) block recursion
    try:
        graph = Elaborator(lib, limits).network(net, dict(params or {}), input_shape, NO_LOC)
    except RecursionError:
        raise ArchError("the program nests too deeply to elaborate", net.loc) from None
    finally:
        sys.setrecursionlimit(old)
    graph.lint()
    graph.graph["warnings"] = _unused_warnings(graph)
    return graph


def _unused_warnings(graph: Graph) -> list[tuple]:
    """Layers that reach no output: kept (the user wrote them) but worth a warning."""
    live = set(graph.outputs)
    for out in graph.outputs:
        live |= nx.ancestors(graph, out)
    dead = [n for n in graph.nodes if n not in live and n not in graph.inputs]
    return [(graph.nodes[n]["src"], f"`{n}` ({graph.op(n)}) does not contribute to any output") for n in dead]


def load(path: str | Path, network: str | None = None, params: dict[str, Any] | None = None,
         input_shape: tuple[int, int, int] | None = None, limits: Limits = Limits()) -> Graph:
    """Parse, elaborate and check a `.arch` file: the front half of every command."""
    return elaborate(load_file(path), network, params, input_shape, limits)


def loads(text: str, network: str | None = None, params: dict[str, Any] | None = None,
          input_shape: tuple[int, int, int] | None = None, filename: str = "<string>",
          limits: Limits = Limits()) -> Graph:
    """Like `load`, from source text (imports resolve against the working directory)."""
    return elaborate(load_source(text, filename), network, params, input_shape, limits)
