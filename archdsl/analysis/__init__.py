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

from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..ops import OPS
from ..ops.registry import numel

CONVENTIONS = (
    "Params: weights + biases as PyTorch counts them; BN running stats are buffers (listed separately).",
    "MACs: conv k·k·Cin/groups·Cout·H·W and fc in·out; FLOPs = 2 × MACs. Other ops: each op's own count.",
    "Activations: input + every new tensor (ReLU/dropout in place, flatten a view), per sample.",
    "RF: receptive field size/jump in input pixels; a join sees the union of its inputs' fields; not clipped.",
)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


@dataclass(frozen=True)
class RF:
    """Receptive field per axis: size (pixels of the input seen), jump (input pixels per output
    step) and start (the input row/column where output position 0's field begins; negative
    inside the padding).  Tracking the start makes joins exact: a join sees the union of its
    inputs' fields, which is wider than the largest when the branches are not centred alike."""

    h: int
    w: int
    jump_h: int
    jump_w: int
    start_h: int = 0
    start_w: int = 0

    def text(self) -> str:
        size = f"{self.h}" if self.h == self.w else f"{self.h}×{self.w}"
        jump = f"{self.jump_h}" if self.jump_h == self.jump_w else f"{self.jump_h}×{self.jump_w}"
        return f"{size}/{jump}"


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
    network: str
    input: tuple[int, ...]
    layers: list[LayerStats]
    outputs: list[str]
    params_env: dict = field(default_factory=dict)

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
        return self.activations * DTYPE_BYTES[dtype]

    def to_json(self, dtype: str = "float32") -> dict:
        return {
            "network": self.network,
            "input": list(self.input),
            "params_env": self.params_env,
            "layers": [
                {"name": r.name, "op": r.op, "output_shape": list(r.shape), "params": r.params,
                 "buffers": r.buffers, "macs": r.macs, "other_ops": r.other_ops, "activations": r.activations,
                 "rf": {"size": [r.rf.h, r.rf.w], "jump": [r.rf.jump_h, r.rf.jump_w],
                        "start": [r.rf.start_h, r.rf.start_w]}, "src": r.src,
                 **({"nodes": r.nodes} if r.nodes > 1 else {})}
                for r in self.layers
            ],
            "outputs": self.outputs,
            "totals": {"params": self.params, "buffers": self.buffers, "macs": self.macs,
                       "flops": 2 * self.macs, "other_ops": self.other_ops, "activations": self.activations,
                       "activation_bytes": self.activation_bytes(dtype), "dtype": dtype},
            "conventions": list(CONVENTIONS),
        }


def analyze(g: Graph) -> Summary:
    """Compute every node's statistics (stored in its `meta`) and return the per-layer summary."""
    rows = []
    for n, d in g.walk():
        spec = OPS[d["op"]]
        ins = [g.shape(a) for a in g.args(n)]
        a, out = d["attrs"], d["shape"]
        meta = d["meta"]
        meta["params"] = spec.param_count(a, ins, out)
        meta["buffers"] = spec.buffer_count(a, ins, out)
        meta["macs"] = spec.macs(a, ins, out)
        meta["other_ops"] = spec.other_ops(a, ins, out)
        meta["activations"] = numel(out) if spec.activation == "new" else 0
        meta["rf"] = _receptive_field(g, n, spec, a, ins)
        src = d["src"]
        rows.append(LayerStats(n, d["op"], spec.describe(a), out, meta["params"], meta["buffers"], meta["macs"],
                               meta["other_ops"], meta["activations"], meta["rf"], f"{src.file}:{src.line}"))
    first = g.inputs[0]
    return Summary(g.name, g.shape(first), rows, list(g.outputs), dict(g.graph["params"]))


def _receptive_field(g: Graph, n: str, spec, attrs, ins) -> RF:
    preds = [g.nodes[a]["meta"]["rf"] for a in g.args(n)]
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
    return Summary(summary.network, summary.input, out, summary.outputs, summary.params_env)
