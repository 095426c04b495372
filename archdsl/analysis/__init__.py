"""Per-layer analysis: parameters, buffers, MACs, other operations, activations, receptive field.

Conventions (also printed under every summary):
- Params are weights and biases as PyTorch counts `parameters()`; BN's running statistics and
  `num_batches_tracked` are buffers, counted separately.
- MACs are the multiply-accumulates of conv (kh·kw·Cin/groups·Cout·H·W) and fc (in·out);
  FLOPs = 2·MACs.  Every other op reports its own operation count ("other ops"), defined in its
  registry entry (e.g. a ReLU: one per element; a k×k max pool: k·k-1 per output).
- Activations: the input plus every op output that is a new tensor; ReLU, dropout and
  drop-path work in place and flatten/identity are views, so they add nothing.  Bytes are per
  sample at 4 bytes (float32) unless another dtype is asked for.
- Receptive field: size and jump (stride product) in input pixels per axis; through a join the
  union of its inputs' fields (their extent, tracked with where each field starts); global
  pooling and flatten see every position of their input.  Sizes are not clipped to the image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import ArchError
from ..frontend.gcpause import paused_gc
from ..ir.graph import Graph
from ..ops import OPS
from ..ops.registry import fmt_shape, numel
from .conventions import CONVENTIONS, DTYPE_BYTES  # re-exported: the CLI reads them here


@dataclass(frozen=True)
class RF:
    """Receptive field per axis: size (pixels of the input seen), jump (input pixels per output
    step) and start (the input row/column where output position 0's field begins; negative
    inside the padding).  Tracking the start makes joins exact: a join sees the union of its
    inputs' fields, which is wider than the largest when the branches are not centred alike.

    After an upsampling op the jump is a Fraction below 1 (an output step is half an input
    pixel after `upsample(2)`), and sizes and starts may be fractions too: they are kept exact
    here and shown whole (`shown()`: the size rounded up, the start down)."""

    h: int | Fraction
    w: int | Fraction
    jump_h: int | Fraction
    jump_w: int | Fraction
    start_h: int | Fraction = 0
    start_w: int | Fraction = 0

    def shown(self) -> dict[str, list]:
        """The field as plain numbers: whole pixels for size and start, the jump as an int or a float."""
        return {"size": [math.ceil(self.h), math.ceil(self.w)],
                "jump": [_plain_number(self.jump_h), _plain_number(self.jump_w)],
                "start": [math.floor(self.start_h), math.floor(self.start_w)]}

    def text(self) -> str:
        shown = self.shown()
        (h, w), (jh, jw) = shown["size"], shown["jump"]
        size = f"{h}" if h == w else f"{h}×{w}"
        jump = f"{jh:g}" if jh == jw else f"{jh:g}×{jw:g}"
        return f"{size}/{jump}"


def _plain_number(v: int | Fraction) -> int | float:
    return int(v) if v == int(v) else float(v)


@dataclass(frozen=True)
class LayerStats:
    name: str
    op: str
    describe: str
    shape: tuple[int, ...]
    params: int
    buffers: int
    macs: int
    other_ops: int
    activations: int
    rf: RF
    src: str
    nodes: int = 1  # >1 for a collapsed block


@dataclass
class Summary:
    """What `archdsl summary` prints: `print(summary)` shows the table, `summary.rows()` the rows
    as dicts, `summary.to_json()` everything. Counts are per image; `batch` (when given) scales
    the activation and input memory, as torchinfo's batch dimension does."""

    network: str
    input: tuple[int, ...]
    layers: list[LayerStats]
    outputs: list[str]  # output node names
    params_env: dict = field(default_factory=dict)
    scopes: dict = field(default_factory=dict, repr=False)  # name -> Scope, for the nested table
    batch: int | None = None
    output_labels: list[str] = field(default_factory=list)  # `logits (fc)`: declared name (node)

    def __str__(self) -> str:
        from .table import render

        return render(self)

    def rows(self) -> list[dict]:
        """One dict per row, as in `to_json()["layers"]`."""
        return self.to_json()["layers"]

    @property
    def trainable_params(self) -> int:
        return self.params  # every parameter of an archdsl network trains

    @property
    def non_trainable_params(self) -> int:
        return 0  # BN's running statistics are buffers, not parameters (see `buffers`)

    def parameter_bytes(self, dtype: str = "float32") -> int:
        """Parameters and buffers, stored at `dtype` (what the weights file and the GPU hold)."""
        return (self.params + self.buffers) * DTYPE_BYTES[dtype]

    def input_bytes(self, dtype: str = "float32") -> int:
        return numel(self.input) * (self.batch or 1) * DTYPE_BYTES[dtype]

    def total_bytes(self, dtype: str = "float32") -> int:
        """Parameters + every activation of a forward pass, the input included (torchinfo's estimated total)."""
        return self.parameter_bytes(dtype) + self.activation_bytes(dtype)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def buffers(self) -> int:
        return sum(r.buffers for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def other_ops(self) -> int:
        return sum(r.other_ops for r in self.layers)

    @property
    def activations(self) -> int:
        return sum(r.activations for r in self.layers)

    def activation_bytes(self, dtype: str = "float32") -> int:
        return self.activations * (self.batch or 1) * DTYPE_BYTES[dtype]

    def to_json(self, dtype: str = "float32") -> dict:
        return {
            "network": self.network,
            "input": list(self.input),
            "params_env": self.params_env,
            "layers": [
                {"name": r.name, "op": r.op, "output_shape": list(r.shape), "params": r.params,
                 "buffers": r.buffers, "macs": r.macs, "other_ops": r.other_ops, "activations": r.activations,
                 "rf": r.rf.shown(), "src": r.src,
                 **({"nodes": r.nodes} if r.nodes > 1 else {})}
                for r in self.layers
            ],
            "outputs": self.outputs,
            "output_names": [label.split(" (")[0] for label in self.output_labels] or self.outputs,
            "batch": self.batch,
            "totals": {"params": self.params, "trainable_params": self.trainable_params,
                       "non_trainable_params": self.non_trainable_params, "buffers": self.buffers,
                       "macs": self.macs, "flops": 2 * self.macs, "other_ops": self.other_ops,
                       "activations": self.activations, "activation_bytes": self.activation_bytes(dtype),
                       "parameter_bytes": self.parameter_bytes(dtype), "input_bytes": self.input_bytes(dtype),
                       "total_bytes": self.total_bytes(dtype), "dtype": dtype},
            "conventions": list(CONVENTIONS),
        }


def analyze(g: Graph, batch: int | None = None) -> Summary:
    """Compute every node's statistics (stored in its `meta`) and return the per-layer summary."""
    with paused_gc():
        return _analyze(g, batch)


def _analyze(g: Graph, batch: int | None) -> Summary:
    rows = []
    nodes = g.nodes
    for n in g.order():
        d = nodes[n]
        spec = OPS[d["op"]]
        args = g.args(n)
        ins = [nodes[a]["shape"] for a in args]
        a, out = d["attrs"], d["shape"]
        meta = d["meta"]
        meta["params"] = spec.param_count(a, ins, out)
        meta["buffers"] = spec.buffer_count(a, ins, out)
        meta["macs"] = spec.macs(a, ins, out)
        meta["other_ops"] = spec.other_ops(a, ins, out)
        meta["activations"] = numel(out) if spec.activation == "new" else 0
        meta["rf"] = _receptive_field(g, args, spec, a, ins)
        src = d["src"]
        rows.append(LayerStats(n, d["op"], spec.describe(a), out, meta["params"], meta["buffers"], meta["macs"],
                               meta["other_ops"], meta["activations"], meta["rf"], f"{src.file}:{src.line}"))
    first = g.inputs[0]
    return Summary(g.name, g.shape(first), rows, list(g.outputs), dict(g.graph["params"]), g.graph["scopes"], batch,
                   output_labels(g))


def output_names(g: Graph) -> list[str]:
    """Each output's name: as declared (`output logits, aux`), else its node's. ONNX uses these."""
    names = g.graph.get("output_names") or []
    return [names[i] if i < len(names) else node for i, node in enumerate(g.outputs)]


def output_labels(g: Graph) -> list[str]:
    """Outputs as check, summary and viz print them: `fc`, or `logits (fc)` when declared by another name."""
    return [name if name == node else f"{name} ({node})" for name, node in zip(output_names(g), g.outputs)]


def check_weight_memory(g: Graph, available: int | None = None, dtype: str = "float32") -> None:
    """Refuse, before allocating anything, a network whose weights cannot fit in this machine's
    memory, naming the layer that needs the most. (PyTorch's allocator would fail deep inside
    `nn.Linear` with a message that names no layer.) `available` defaults to the free memory."""
    available = _available_memory() if available is None else available
    if available is None:
        return
    need = {n: (OPS[d["op"]].param_count(d["attrs"], [g.shape(a) for a in g.args(n)], d["shape"]) +
                OPS[d["op"]].buffer_count(d["attrs"], [g.shape(a) for a in g.args(n)], d["shape"])) *
            DTYPE_BYTES[dtype] for n, d in g.nodes(data=True)}
    total = sum(need.values())
    if total <= available:
        return
    from .table import human_bytes

    biggest = max(need, key=need.get)
    raise ArchError(f"the weights need {human_bytes(total)} ({total:,} bytes at {dtype}) and this machine has "
                    f"{human_bytes(available)} of memory free; `{biggest}` ({g.op(biggest)}, shape "
                    f"{fmt_shape(g.shape(biggest))}) alone needs {human_bytes(need[biggest])} ({need[biggest]:,} bytes)",
                    g.nodes[biggest]["src"], hint="check the widths and the input size; `archdsl summary` "
                    "shows every layer's parameters")


def _available_memory() -> int | None:
    """Free memory (MemAvailable) in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _receptive_field(g: Graph, args: list[str], spec, attrs, ins) -> RF:
    preds = [g.nodes[a]["meta"]["rf"] for a in args]
    if not preds:
        return RF(1, 1, 1, 1)
    # Union of the inputs' fields at output position 0 (joins), then the op's own window.
    start_h, start_w = min(p.start_h for p in preds), min(p.start_w for p in preds)
    end_h = max(p.start_h + p.h for p in preds)
    end_w = max(p.start_w + p.w for p in preds)
    jh, jw = max(p.jump_h for p in preds), max(p.jump_w for p in preds)
    win = spec.window(attrs, ins)
    return RF(end_h - start_h + (win.kh - 1) * jh, end_w - start_w + (win.kw - 1) * jw, jh * win.sh, jw * win.sw,
              start_h - win.pad_top * jh, start_w - win.pad_left * jw)


def collapse(summary: Summary, g: Graph, depth: int) -> Summary:
    """Merge every scope nested deeper than `depth` name segments into one row per scope."""
    if depth <= 0:
        return summary
    scopes = g.graph["scopes"]
    rows: list[LayerStats] = []
    groups: dict[str, list[LayerStats]] = {}
    for r in summary.layers:
        parts = r.name.split(".")
        key = ".".join(parts[:depth]) if len(parts) > depth else None
        if key is None or key not in scopes:
            rows.append(r)
            continue
        if key not in groups:
            groups[key] = []
            rows.append(LayerStats(key, "", "", (), 0, 0, 0, 0, 0, r.rf, r.src))  # placeholder, filled below
        groups[key].append(r)
    out = []
    for r in rows:
        members = groups.get(r.name) if not r.op else None
        if members is None:
            out.append(r)
            continue
        last = members[-1]
        scope = scopes[r.name]
        out.append(LayerStats(r.name, scope.kind, scope.title, last.shape, sum(m.params for m in members),
                              sum(m.buffers for m in members), sum(m.macs for m in members),
                              sum(m.other_ops for m in members), sum(m.activations for m in members),
                              last.rf, f"{scope.src.file}:{scope.src.line}", nodes=len(members)))
    return Summary(summary.network, summary.input, out, summary.outputs, summary.params_env,
                   {k: v for k, v in summary.scopes.items() if k.count(".") < depth - 1}, summary.batch,
                   summary.output_labels)
