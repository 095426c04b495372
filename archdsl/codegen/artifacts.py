"""What `archdsl compile` writes: the generated module, its weights and a report, all at once.

    DIR/model.py            the generated Python + Triton program (standalone: torch and triton)
    DIR/weights.safetensors reference-named weights (PyTorch state-dict keys)
    DIR/report.md           what was generated: kernels, launches, buffers, fusions
    DIR/report.json         the same, for tools

The directory is built next to its destination and renamed into place, so a failure never
leaves a half-written output. DIR/.archdsl-output.json lists what archdsl wrote: a directory
holding anything else is never replaced without --force (see `check_output_dir`).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import ArchError, SrcLoc, printable
from . import plan as planning

if TYPE_CHECKING:
    import torch

_DTYPE_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors format, written directly: 8-byte header size, JSON header, raw data."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        # the raw bytes of a contiguous CPU tensor (ctypes: numpy is not a dependency)
        data = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        header[name] = {"dtype": _DTYPE_CODES[str(t.dtype).removeprefix("torch.")], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for chunk in chunks:
            f.write(chunk)


def report(compiled) -> dict:
    """The compile report as data."""
    g, program = compiled.optimized.graph, compiled.program
    before = sum(1 for n in compiled.graph if compiled.graph.op(n) != "input")
    memory = planning.summary(compiled.graph, program.plan, program.dtype, program.launches)
    return {
        "network": g.name,
        "params": dict(g.graph["params"]),
        "dtype": program.dtype,
        "nodes_before": len(compiled.graph),
        "nodes_after": len(g),
        "ops_before_optimization": before,
        "launches_per_forward": program.launches,
        "kernels": dict(sorted(program.kernel_counts().items())),
        "buffers": memory["base_buffers"],
        "memory": memory,
        "fused": [{"node": n, "absorbed": g.nodes[n]["meta"]["fused"][1:], "op": g.op(n)}
                  for n in g.order() if "fused" in g.nodes[n]["meta"]],
        "passes": [{"name": r.name, "changed": r.changed, "declined": r.declined} for r in compiled.optimized.reports],
    }


def report_markdown(data: dict) -> str:
    lines = [
        f"# {data['network']}: compile report",
        "",
        f"- parameters: {', '.join(f'{k}={v}' for k, v in data['params'].items()) or 'none'}; dtype {data['dtype']}",
        f"- IR nodes: {data['nodes_before']} elaborated -> {data['nodes_after']} after the passes",
        *(f"- {line}" for line in planning.summary_lines(data["memory"])),
        "",
        "| kernel | launches |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in data["kernels"].items()),
        "",
        "## Passes",
        "",
    ]
    for p in data["passes"]:
        lines.append(f"### {p['name']}: {len(p['changed'])} change(s)")
        lines.append("")
        lines += [f"- {c}" for c in p["changed"]] or ["- (nothing)"]
        lines += [f"- not fused: {d}" for d in p["declined"]]
        lines.append("")
    return "\n".join(lines)


MANIFEST = ".archdsl-output.json"  # marks a directory archdsl wrote, and lists what it wrote


def check_output_dir(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse, before any work, an output directory whose replacement would lose a user's files.

    Fine: a path that does not exist yet, an empty directory, or an earlier archdsl output
    (it holds the manifest and nothing it does not list). A directory holding anything else is
    replaced only with `force`. A file in the way, `.` and `..`, an unusable parent: errors.
    """
    out = Path(out_dir)
    loc = SrcLoc(str(out), 0, 0)
    if out.name in ("", ".", "..") or out.name != Path(os.path.normpath(out)).name:
        raise ArchError(f"-o {_show(out)}: name a directory for the output, not `{out.name or out}`", loc,
                        hint="for example -o build/mynet (it is created, or replaced if archdsl wrote it)")
    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise _path_error(out, exc) from None
    if target == here or target in here.parents:
        raise ArchError(f"-o {_show(out)} is the working directory or one above it; "
                        "archdsl replaces its output directory as a whole", loc, hint="choose a new directory")
    try:
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise ArchError(f"-o {_show(out)}: a file is in the way (the output is a directory)", loc,
                            hint="choose another name, or move the file away")
        parent = out.parent if str(out.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            raise ArchError(f"-o {_show(out)}: {_show(parent)} is a file, not a directory", loc)
        if out.is_dir():
            foreign = foreign_files(out)
            if foreign and not force:
                shown = ", ".join(_show(f) for f in foreign[:5]) + (f" and {len(foreign) - 5} more"
                                                                   if len(foreign) > 5 else "")
                raise ArchError(f"-o {_show(out)} already holds files archdsl did not write ({shown}); "
                                "they would be deleted", loc,
                                hint="choose a new or empty directory, or add --force to replace it")
        _probe_writable(parent)
        if len(os.fsencode(out.name)) > 255:
            raise OSError(36, "File name too long", str(out))
    except OSError as exc:
        raise _path_error(out, exc) from None
    except ValueError as exc:  # a NUL in the path
        raise _path_error(out, exc) from None
    return out


def foreign_files(out: Path) -> list[str]:
    """What `out` holds that no archdsl manifest there lists (everything, without a manifest)."""
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return []
    try:
        listed = set(json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return names
    return [n for n in names if n not in listed]


def _probe_writable(parent: Path) -> None:
    """The nearest existing ancestor must let us create entries (checked now, not after the work)."""
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", str(probe))


def _path_error(out: Path, exc: Exception) -> ArchError:
    why = getattr(exc, "strerror", None) or str(exc)
    where = getattr(exc, "filename", None)
    detail = f"{why}" + (f" ({_show(where)})" if where and str(where) != str(out) else "")
    return ArchError(f"cannot write -o {_show(out)}: {detail}", SrcLoc(str(out), 0, 0),
                     hint="choose a directory you can write, with a shorter name")


def _show(path) -> str:
    """A path as printed in a message: control characters escaped (see errors.printable)."""
    return printable(str(path))


def write(compiled, state: dict[str, torch.Tensor], out_dir: Path, force: bool = False) -> Path:
    """Write the artifacts into `out_dir`, atomically: built in a temporary directory next to it and
    renamed into place. An existing `out_dir` is replaced only if `check_output_dir` allows it."""
    out_dir = check_output_dir(out_dir, force)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".archdsl-tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise _path_error(out_dir, exc) from None
    try:
        (tmp / "model.py").write_text(compiled.program.source, encoding="utf-8")
        write_safetensors(state, tmp / "weights.safetensors")
        data = report(compiled)
        (tmp / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(data) + "\n", encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MANIFEST).write_text(json.dumps({"written_by": "archdsl compile", "files": files}, indent=2) + "\n",
                                    encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=".archdsl-old-", dir=out_dir.parent))
            os.replace(out_dir, old / "out")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OSError as exc:
        raise _path_error(out_dir, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
