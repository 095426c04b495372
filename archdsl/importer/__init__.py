"""`archdsl import`: a PyTorch module -> a readable `.arch` file whose labels are the module's
paths, so that `archdsl.build_torch(FILE)` loads the module's `state_dict()` with strict=True.

Stages (one module each): trace (torch.fx -> archdsl op nodes), structure (the module
hierarchy as scopes), emit (each scope's dataflow as chains and join constructs), blocks
(repeated submodules -> parametric blocks, runs -> repetition), render (text).  The result is
elaborated before it is returned: a module path that the text would not reproduce is an error,
never a file that loads the wrong weights.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path

from ..errors import NO_LOC, ArchError, InternalError
from ..fileio import write_atomically  # noqa: F401  (the CLI writes through it)

__all__ = ["from_torch", "load_callable", "write_atomically"]


def from_torch(module, input_shape: tuple[int, int, int] = (3, 224, 224), name: str | None = None) -> str:
    """The `.arch` source of `module` (an `nn.Module`) for inputs of `input_shape` (C, H, W)."""
    from torch import nn

    from ..elaborate import loads
    from .blocks import compress_tree, extract, label_clashing_ops, rename_tensors
    from .emit import Emitter
    from .render import RESERVED, INDENT, Renderer, value
    from .structure import is_sequence, place
    from .trace import trace

    if not isinstance(module, nn.Module):
        raise ArchError(f"archdsl import takes a torch.nn.Module, got {type(module).__name__}", NO_LOC)
    input_shape = tuple(int(d) for d in input_shape)
    traced = trace(module, input_shape)
    root, _home, label = place(traced, module)
    emitter = Emitter(traced, label)
    body = emitter.body(root)
    taken: set[str] = set()
    defs = extract(emitter.block_scopes, taken)
    positional = is_sequence(root)  # a top-level nn.Sequential: `network … sequence`, layers `0`, `1`, …
    body = compress_tree(body, sequence=positional)
    rename_tensors(body)
    label_clashing_ops(body, positional=positional)
    for d in defs:
        label_clashing_ops(d.body, positional=d.sequence)
    net = name or re.sub(r"\W", "_", type(module).__name__.lower()).strip("_") or "imported"
    if not net.isidentifier() or net in RESERVED:
        raise ArchError(f"--name {net!r}: a network name is a letter or `_` followed by letters, digits, `_`", NO_LOC)
    while net in taken:
        net += "_net"
    cls = type(module)
    lines = [f"# {cls.__name__} ({cls.__module__}.{cls.__qualname__}), imported from PyTorch by `archdsl import`.",
             "# Labels are the module's paths: archdsl.build_torch(this file) loads its state_dict() with",
             "# strict=True.  Blocks are the module's repeated submodules; comments name their classes.", ""]
    for d in defs:
        r = Renderer(lit=lambda lit, d=d: d.exprs.get(id(lit), value(lit.value)))
        params = ", ".join(p if default is None else f"{p} = {value(default)}" for p, default, _ in d.params)
        lines.append(f"# {d.cls.__module__}.{d.cls.__qualname__}")
        lines.append(f"block {d.name}({params}) {'sequence ' if d.sequence else ''}{{")
        for chain in d.body:
            lines += r.statement(chain, 1)
        lines += ["}", ""]
    c, h, w = input_shape
    lines.append(f"network {net} {'sequence ' if positional else ''}{{")
    image = "input"  # the input node's name: not one of the top module's labels
    while image in module._modules:
        image += "_"
    lines.append(f"{INDENT}input {'' if image == 'input' else image + ': '}{c} x {h} x {w}")
    r = Renderer()
    for chain in body:
        lines += r.statement(chain, 1)
    lines.append("}")
    text = "\n".join(lines) + "\n"
    _verify(text, traced, module, loads)
    return text


def _verify(text: str, traced, module, loads) -> None:
    """The text elaborates, and every layer with weights is the node its module path names."""
    try:
        graph = loads(text, filename="<imported>")
    except ArchError as exc:
        raise InternalError(f"archdsl import wrote a file that does not elaborate: {exc}\n{text}") from exc
    for n in traced.nodes:
        if n.stateful:
            key = ".".join(n.path)
            if key not in graph or graph.op(key) != n.op:
                raise ArchError(f"cannot reproduce the module path `{key}` ({n.op}) as an archdsl name", n.loc,
                                hint="archdsl numbers the elements of a labelled sequence by position; a loop over "
                                     "an nn.ModuleList with other ops between its modules is not expressible yet")
    used = {".".join(n.path) for n in traced.nodes if n.stateful}
    unused = sorted({k.rsplit(".", 1)[0] for k in module.state_dict() if k not in used} - used)
    if unused:
        raise ArchError(f"{len(unused)} module(s) with weights are not used by forward: {', '.join(unused[:5])}",
                        NO_LOC, hint="an archdsl network holds only the layers that compute its outputs (GoogLeNet's "
                                     "auxiliary heads run in train mode only: import it in train mode or without them)")


def load_callable(spec: str):
    """`package.module:callable` or `path/to/file.py:callable`, called with no arguments."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ArchError(f"{spec!r}: expected MODULE:CALLABLE or FILE.py:CALLABLE", NO_LOC,
                        hint="for example torchvision.models:resnet50 or my_net.py:Net")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ArchError(f"no file {target}", NO_LOC)
        mod_name = f"_archdsl_import_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as exc:  # noqa: BLE001 - the user's file does not run
            raise ArchError(f"running {target} failed: {type(exc).__name__}: {exc}", NO_LOC) from None
        finally:
            sys.path.pop(0)
    else:
        if target.split(".")[0] == "torchvision":
            _prepare_torchvision()
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            raise ArchError(f"cannot import {target}: {exc}", NO_LOC) from None
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise ArchError(f"{target} has no callable `{attr}`", NO_LOC)
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - e.g. a constructor that needs arguments
        raise ArchError(f"{spec}() failed: {type(exc).__name__}: {exc}", NO_LOC,
                        hint="SPEC names something callable with no arguments: wrap the call in a function") from None


def _prepare_torchvision() -> None:
    """torchvision's models import on a CPU-only torch whose compiled ops do not load (tests/tv.py
    explains why): without its fake kernels, which model code never uses."""
    if "torchvision" in sys.modules:
        return
    import types

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            so = Path(folder) / f"_C{suffix}"
            if so.is_file():
                try:
                    torch.ops.load_library(str(so))
                    return
                except (OSError, ImportError):
                    sys.modules.setdefault("torchvision._meta_registrations",
                                           types.ModuleType("torchvision._meta_registrations"))
                    return


