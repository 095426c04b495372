"""The distinct convolutions of a network, as its launch schedule computes them: what the
per-layer benchmark times, each geometry once, with the arithmetic of its work."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops.fused import conv_extra_inputs
from ..ops.registry import family

@dataclass(frozen=True)
class ConvShape:
    """The geometry of one convolution (per sample); what makes two convs the same benchmark."""

    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    groups: int
    h: int
    w: int
    p: int  # output height
    q: int  # output width

    @property
    def macs_per_sample(self) -> int:
        kh, kw = self.kernel
        return kh * kw * (self.cin // self.groups) * self.cout * self.p * self.q

    def flops(self, batch: int) -> int:
        return 2 * self.macs_per_sample * batch

    def weight_elems(self) -> int:
        kh, kw = self.kernel
        return kh * kw * (self.cin // self.groups) * self.cout

    def bytes(self, batch: int, elem: int, *, bias: bool = False, residual: bool = False,
              bias_elem: int = 4) -> int:
        """The fewest bytes the conv must move: input, weight, output (and bias, residual) once each."""
        x = batch * self.cin * self.h * self.w
        out = batch * self.cout * self.p * self.q
        total = (x + self.weight_elems() + out + (out if residual else 0)) * elem
        return total + (self.cout * bias_elem if bias else 0)

    def label(self) -> str:
        kh, kw = self.kernel
        sh, sw = self.stride
        text = f"{self.cin}→{self.cout} {kh}×{kw}"
        text += f"/{sh}" if sh == sw and sh > 1 else (f"/{sh}×{sw}" if (sh, sw) != (1, 1) else "")
        if self.groups > 1:
            text += f" g{self.groups}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}"
        return f"{text} @{self.h}×{self.w}"

    def padding_arg(self) -> tuple[int, int] | None:
        """(ph, pw) for F.conv2d, or None when the padding is asymmetric (needs F.pad)."""
        t, b, l, r = self.pad
        return (t, l) if t == b and l == r else None


@dataclass
class ConvLayer:
    """One distinct convolution and the nodes of the network that have its geometry."""

    id: str
    shape: ConvShape
    nodes: list[str]
    bias: bool  # after BN folding (first occurrence)
    act: str  # the first occurrence's fused activation
    residual: bool  # the first occurrence fuses a residual add
    epilogues: list[str] = field(default_factory=list)  # every variant seen, e.g. "bias+relu"

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def fused(self) -> bool:
        """Whether the fused variant differs from conv + bias."""
        return self.act != "none" or self.residual

    def to_json(self, batch: int | None = None) -> dict:
        s = self.shape
        out = {"id": self.id, "label": s.label(), "count": self.count, "nodes": self.nodes,
               "cin": s.cin, "cout": s.cout, "kernel": list(s.kernel), "stride": list(s.stride),
               "pad": list(s.pad), "dilation": list(s.dilation), "groups": s.groups, "in_hw": [s.h, s.w],
               "out_hw": [s.p, s.q], "bias": self.bias, "act": self.act, "residual": self.residual,
               "epilogues": self.epilogues, "flops_per_sample": s.flops(1)}
        return out


def epilogue_text(bias: bool, act: str, residual: bool) -> str:
    parts = (["bias"] if bias else []) + (["residual"] if residual else []) + ([act] if act != "none" else [])
    return "+".join(parts) or "none"


def distinct_convs(graph) -> list[ConvLayer]:
    """Every distinct convolution geometry of `graph` (elaborated or optimized; or a launch
    schedule), in the order its launch schedule first computes one; ids c01, c02, ...  The epilogue timed for a geometry (bias, act, residual)
    is its most common one among the nodes that share it (ties: the first seen); `epilogues`
    lists every variant."""
    from ..codegen.schedule import Schedule, make_schedule

    schedule = graph if isinstance(graph, Schedule) else make_schedule(graph)
    graph = schedule.graph
    found: dict[ConvShape, ConvLayer] = {}
    variants: dict[ConvShape, dict[tuple, int]] = {}
    for n in schedule.order:
        if graph.op(n) not in family("conv"):
            continue
        a = graph.nodes[n]["attrs"]
        args = graph.args(n)
        cin, h, w = graph.shape(args[0])
        cout, p, q = graph.shape(n)
        shape = ConvShape(cin, cout, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), tuple(a["dilation"]),
                          a["groups"], h, w, p, q)
        residual = bool(conv_extra_inputs(a, args)[0])  # a gated conv's last input is its gate, not a residual
        variant = (bool(a["bias"]) or a.get("bn_eps") is not None, a.get("act", "none"), residual)
        layer = found.get(shape)
        if layer is None:
            layer = found[shape] = ConvLayer(f"c{len(found) + 1:02d}", shape, [], *variant)
            variants[shape] = {}
        layer.nodes.append(n)
        seen = variants[shape]
        seen[variant] = seen.get(variant, 0) + 1
        text = epilogue_text(*variant)
        if text not in layer.epilogues:
            layer.epilogues.append(text)
    for shape, layer in found.items():
        seen = variants[shape]
        best = max(seen, key=lambda v: seen[v])  # max keeps the first of equals: dicts keep insertion order
        layer.bias, layer.act, layer.residual = best
    return list(found.values())
