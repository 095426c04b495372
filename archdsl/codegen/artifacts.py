"""What `archdsl compile` writes: the generated module, its weights and a report, all at once.

    DIR/model.py            the generated Python + Triton program (standalone: torch and triton)
    DIR/weights.safetensors reference-named weights (PyTorch state-dict keys)
    DIR/report.md           what was generated: kernels, launches, buffers, fusions
    DIR/report.json         the same, for tools

The directory is built next to its destination and renamed into place, so a failure never
leaves a half-written output.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from . import plan as planning

_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors format, written directly: 8-byte header size, JSON header, raw data."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        # the raw bytes of a contiguous CPU tensor (ctypes: numpy is not a dependency)
        data = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
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


def write(compiled, state: dict[str, torch.Tensor], out_dir: Path) -> Path:
    """Write the artifacts into `out_dir` (replacing it), atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "model.py").write_text(compiled.program.source, encoding="utf-8")
        write_safetensors(state, tmp / "weights.safetensors")
        data = report(compiled)
        (tmp / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(data) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
