"""The emitter: one rule per op (the `RULES` table) turns a node into launch code and weight
preparation code; `generate` assembles them with the kernel templates into a module."""

from __future__ import annotations

import functools
import importlib.util
import io
import re
import shlex
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from ..version import __version__
from .. import dtypes
from ..errors import ArchError
from ..ir.graph import Graph
from ..ops.fused import conv_extra_inputs
from ..ops.registry import act_constant, activation_ops, epilogue_act, inference_noops
from .plan import Plan, make_plan, storage_shape
from .schedule import Schedule, make_schedule



# ---- kernel templates ------------------------------------------------------------------------------


def kernel_dir() -> Path:
    """`kernels/`: inside the installed package, or at the top of a source checkout."""
    packaged = resources.files("archdsl") / "kernels"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "kernels"


@functools.cache
def host_helpers() -> ModuleType:
    """kernels/host.py as a module: the generated programs' weight folding and safetensors
    reader, used by archdsl itself too (one copy of that code)."""
    spec = importlib.util.spec_from_file_location("archdsl_kernels_host", kernel_dir() / "host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template_source(*names: str) -> str:
    """host.py, common.py and the templates `names` (file names in kernels/) as one program's
    text, in a generated program's order: what archdsl's own use of the kernels imports (the
    tuner, the performance model's default blocks: ``runtime.launches.template_module``).  One
    text, so that it imports from one file -- also in a fresh process that compiles a kernel
    recorded from it (benchmarks/gpu/warm.py) -- and a template may call an earlier one's helpers."""
    wanted = {"host.py", "common.py", *names}
    return "from __future__ import annotations\n\n" + "\n\n".join(
        text for name, text in templates() if name in wanted)


def templates() -> list[tuple[str, str]]:
    """(file name, source) of every template; `host.py` first, then the kernels by name."""
    files = sorted(kernel_dir().glob("*.py"), key=lambda p: (p.name != "host.py", p.name))
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        # One `from __future__` import may stand only at the top of the generated module.
        text = re.sub(r"^from __future__ import [^\n]*\n", "", text, flags=re.M)
        out.append((path.name, text.strip() + "\n"))
    return out


# ---- the program being emitted ---------------------------------------------------------------------


def _safe(text: str) -> str:
    """Text for a comment: printable ASCII without anything that could end the comment line."""
    return re.sub(r"[^A-Za-z0-9_.,:/+ ×()=-]", "?", text)


@dataclass
class Step:
    comment: str
    code: list[str]
    kernel: str | None  # the kernel launched (None for views and copies)
    count: int = 1  # how many times (a concat copies each input that is not in place)


@dataclass
class Program:
    """What `generate` decided: buffers, steps and weight preparation, kept for the report."""

    graph: Graph
    dtype: str
    slot: dict[str, str] = field(default_factory=dict)  # node -> its key in the program's tensors `t` (its name)
    buffers: list[tuple[tuple[int, ...], str]] = field(default_factory=list)  # per-sample NHWC shape, node
    views: dict[str, str] = field(default_factory=dict)  # flatten node -> node whose buffer it views
    schedule: Schedule | None = None  # the launches, in order (schedule.py)
    plan: Plan | None = None  # where each tensor lives (concat slices, in-place steps, the arena)
    steps: list[Step] = field(default_factory=list)
    weights: list[tuple[tuple, str]] = field(default_factory=list)  # (WEIGHTS row, comment): see `_prepare`
    deferred: list[tuple[tuple, str]] = field(default_factory=list)  # rows that need every node's weights
    source: str = ""

    @property
    def launches(self) -> int:
        return sum(s.count for s in self.steps if s.kernel)

    def kernel_counts(self) -> Counter:
        counts = Counter()
        for s in self.steps:
            if s.kernel:
                counts[s.kernel] += s.count
        return counts

    # -- helpers for the rules
    def t(self, node: str) -> str:
        return f"t[{self.slot[node]!r}]"

    def arg(self, node: str, port: int) -> str:
        return self.t(self.graph.args(node)[port])

    def comment(self, node: str) -> str:
        d = self.graph.nodes[node]
        names = d["meta"].get("fused", [node])
        src = d["src"]
        return f"# {' + '.join(_safe(n) for n in names)}   [{_safe(Path(src.file).name)}:{src.line}]"


# ---- emit rules: op -> launch code (and weight preparation) ------------------------------------------


def wkey(node: str, part: str) -> str:
    """The prepared-weight dictionary entry for a node, as a Python expression: w['conv1.w']."""
    return f"w[{node + '.' + part!r}]"


def _pairs(a: dict, *keys: str) -> str:
    return ", ".join(f"{k}={tuple(a[k])!r}" for k in keys)


def _has_bias(a: dict) -> bool:
    """Whether a conv's prepared weights include a bias: its own, its folded batch norm's shift, or
    its folded layer norm's W·β."""
    src = a.get("sources", {})
    return a["bias"] or src.get("bn") is not None or src.get("in_ln") is not None


def _prepare_conv(p: Program, n: str) -> bool:
    """Weight preparation of one conv node (BN folded in); returns whether it has a bias."""
    a = p.graph.nodes[n]["attrs"]
    src = a.get("sources", {"conv": n})
    conv, bn = src.get("conv", src.get("linear", n)), src.get("bn")
    has_bias = _has_bias(a)
    if "linear" in src or "layer_scale" in src or "in_ln" in src:  # a 2-d weight, or a γ to fold in too
        row = ("conv_scaled", n, conv, bn, a.get("bn_eps"), a["groups"], has_bias, src.get("layer_scale"))
        row += (src["in_ln"],) if "in_ln" in src else ()  # the layer norm the GEMM applies (passes/norm.py)
    elif a["groups"] > 1 and p.schedule.on_chip(n):  # a grouped chain's block-diagonal slices
        row = ("chain_conv", n, conv, bn, a.get("bn_eps"), a["groups"], has_bias)
    else:
        row = ("conv", n, conv, bn, a.get("bn_eps"), a["groups"], has_bias)
    p.weights.append((row, p.comment(n)))
    if a.get("pre_bn_eps") is not None:
        p.weights.append((("pre_bn", n, src["pre_bn"], a["pre_bn_eps"]), f"# {_safe(n)}: its input's batch norm"))
    return has_bias


def _prologue_args(p: Program, n: str) -> list[str]:
    a = p.graph.nodes[n]["attrs"]
    args = []
    if a.get("pre_bn_eps") is not None:
        args += [f"in_scale={wkey(n, 'in_scale')}", f"in_shift={wkey(n, 'in_shift')}"]
    if a.get("pre_act", "none") != "none":
        args.append(f"in_act={act_constant(a['pre_act'])}")
    gate = p.schedule.gate_of(n)
    if gate is not None:  # squeeze-and-excitation's scale, applied while loading (passes/gate.py)
        args.append(f"in_gate={p.t(gate)}")
    if a.get("in_ln_eps") is not None:  # the layer norm of the input, folded in (passes/norm.py)
        args += [f"in_ln={wkey(n, 'ln_c')}", f"in_ln_eps={a['in_ln_eps']!r}"]
    return args


def _epilogue_args(p: Program, n: str, has_bias: bool, suffix: str = "") -> list[str]:
    a = p.graph.nodes[n]["attrs"]
    args = [f"bias{suffix}={wkey(n, 'b')}"] if has_bias else []
    residuals, _ = conv_extra_inputs(a, p.graph.args(n))
    if residuals:
        args.append(f"residual={p.t(residuals[0])}")
        if a.get("join") == "mean":  # (act(conv) + residual) / 2
            args += ["residual_after_act=True", "out_scale=0.5"]
    if a.get("act", "none") != "none":
        args.append(f"act{suffix}={act_constant(a['act'])}")
    return args


def _conv(p: Program, n: str) -> Step:
    g = p.graph
    a = g.nodes[n]["attrs"]
    has_bias = _prepare_conv(p, n)
    launch = p.schedule.launch_of(n)
    if launch.node != n:  # computed by another node's launch (a sibling, or on chip in a chain): see there
        return Step("", [], None)
    geometry = [_pairs(a, "kernel", "stride", "pad", "dilation"), f"groups={a['groups']}"]
    if launch.kernel == "conv2d_chain":
        return _chain_launch(p, launch.on_chip[0], n, has_bias)
    if len(launch.nodes) > 1:
        return _sibling_launch(p, n, has_bias, geometry)
    args = [p.arg(n, 0), wkey(n, "w"), p.t(n), *geometry, *_prologue_args(p, n), *_epilogue_args(p, n, has_bias),
            _tuned(n)]
    return Step(p.comment(n), [f"conv2d({', '.join(args)})"], "conv2d")


def _tuned(n: str) -> str:
    """A conv2d, conv2d_chain or linear launch's block sizes (and splits) from the tuning table
    (empty: the kernel's defaults); see `archdsl.runtime.tune.network_tuning`."""
    return f"**tuned[{n!r}]"


def _sibling_launch(p: Program, n: str, has_bias: bool, geometry: list[str]) -> Step:
    """One GEMM for `n` and its sibling 1x1 convs: weights side by side (joined once, at load
    time), each column range written to its own tensor with its own activation."""
    g = p.graph
    group = list(p.schedule.launch_of(n).nodes)
    biased = {m: _has_bias(g.nodes[m]["attrs"]) for m in group}
    p.deferred.append((("siblings", n, tuple(group), tuple(g.shape(m)[0] for m in group),
                        tuple(biased[m] for m in group)),
                       f"# {' + '.join(_safe(m) for m in group)}: one GEMM, weights side by side"))
    args = [p.arg(n, 0), wkey(n, "w"), "(" + ", ".join(p.t(m) for m in group) + ")", *geometry, *_prologue_args(p, n)]
    if any(biased.values()):
        args.append(f"bias={wkey(n, 'b')}")
    acts = [act_constant(g.nodes[m]["attrs"]["act"]) for m in group]
    args.append(f"act={acts[0]}" if len(set(acts)) == 1 else f"act=({', '.join(acts)})")
    args.append(_tuned(n))
    comment = "\n".join(p.comment(m) for m in group) + f"  (siblings: one GEMM, {len(group)} outputs)"
    return Step(comment, [f"conv2d({', '.join(args)})"], "conv2d")


def _chain_launch(p: Program, first: str, n: str, has_bias: bool) -> Step:
    """`first` (any conv) then the 1x1 conv `n` in one kernel; the intermediate stays on chip."""
    g = p.graph
    a1 = g.nodes[first]["attrs"]
    args = [p.arg(first, 0), wkey(first, "w"), wkey(n, "w"), p.t(n), _pairs(a1, "kernel", "stride", "pad", "dilation")]
    if _has_bias(a1):
        args.append(f"bias1={wkey(first, 'b')}")
    if a1["act"] != "none":
        args.append(f"act1={act_constant(a1['act'])}")
    if a1["groups"] > 1:  # the grouped kernel; its weight from prepare_chain_conv
        args.append(f"groups={a1['groups']}")
    args += _epilogue_args(p, n, has_bias, suffix="2")
    args.append(_tuned(n))  # blocks and splits, tuned under the 1x1 conv's name
    comment = f"{p.comment(first)}\n{p.comment(n)}  (one kernel: the intermediate stays on chip)"
    return Step(comment, [f"conv2d_chain({', '.join(args)})"], "conv2d_chain")


def _fc(p: Program, n: str) -> Step:
    g = p.graph
    a = g.nodes[n]["attrs"]
    fc = a.get("sources", {"fc": n}).get("fc", n)
    src = g.args(n)[0]
    flat_map = src in p.views and g.op(src) == "flatten" and len(g.shape(g.args(src)[0])) == 3
    # a view of an NHWC map: the weight's columns are reordered (a flat input is in order already)
    chw = tuple(g.shape(g.args(src)[0])) if flat_map else None
    p.weights.append((("fc", n, fc, chw, bool(a["bias"])), p.comment(n)))
    args = [p.arg(n, 0), f"{wkey(n, 'w')}", p.t(n)]
    if a["bias"]:
        args.append(f"bias={wkey(n, 'b')}")
    if a.get("act", "none") != "none":
        args.append(f"act={act_constant(a['act'])}")
    args.append(_tuned(n))
    return Step(p.comment(n), [f"linear({', '.join(args)})"], "linear")


def _bn(p: Program, n: str) -> Step:
    a = p.graph.nodes[n]["attrs"]
    bn = a.get("sources", {}).get("bn", n)
    p.weights.append((("bn", n, bn, a["eps"]), p.comment(n)))
    x, out = _as_map(p, p.arg(n, 0), n), _as_map(p, p.t(n), n)
    act = a.get("act", "none")
    tail = f", act={act_constant(act)}" if act != "none" else ""
    return Step(p.comment(n), [f"scale_shift({x}, {out}, scale={wkey(n, 'scale')}, shift={wkey(n, 'shift')}{tail})"],
                "scale_shift")


def _as_map(p: Program, t: str, n: str) -> str:
    """A flat (N, F) tensor as (N, 1, 1, F), for the per-channel kernels."""
    return f"{t}[:, None, None, :]" if len(p.graph.shape(n)) == 1 else t


def _act(p: Program, n: str) -> Step:
    """A standalone activation: the scale-shift kernel with only its ACT_* form (gelu's from its
    `approximate` setting: the registry's act table)."""
    act = epilogue_act(p.graph.op(n), p.graph.nodes[n]["attrs"])
    x, out = _as_map(p, p.arg(n, 0), n), _as_map(p, p.t(n), n)
    return Step(p.comment(n), [f"scale_shift({x}, {out}, act={act_constant(act)})"], "scale_shift")


def _pool(kernel: str, *keys: str, extra: Callable[[dict], str] = lambda a: "") -> Callable[[Program, str], Step]:
    def rule(p: Program, n: str) -> Step:
        a = p.graph.nodes[n]["attrs"]
        args = [p.arg(n, 0), p.t(n)] + ([_pairs(a, *keys)] if keys else []) + ([extra(a)] if extra(a) else [])
        return Step(p.comment(n), [f"{kernel}({', '.join(args)})"], kernel)

    return rule


def _join(kernel: str) -> Callable[[Program, str], Step]:
    def rule(p: Program, n: str) -> Step:
        ins = ", ".join(p.t(a) for a in p.graph.args(n))
        act = p.graph.nodes[n]["attrs"].get("act", "none")
        tail = f", act={act_constant(act)}" if act != "none" else ""
        return Step(p.comment(n), [f"{kernel}([{ins}], {p.t(n)}{tail})"], kernel)

    return rule


def _concat(p: Program, n: str) -> Step:
    """Inputs placed by the plan already wrote their slices; copy only the others (into every
    g-th channel when the buffer holds the order of the channel shuffle after it)."""
    lines = []
    copies = p.plan.copies[n]
    for port, (a, (first, step)) in enumerate(zip(p.graph.args(n), p.plan.port_slots(n))):
        c = p.graph.shape(a)[0]
        if port in copies:
            stop = first + step * (c - 1) + 1
            lines.append(f"copy_channels({p.t(a)}, {p.t(n)}[..., {first}:{stop}{f':{step}' if step > 1 else ''}])")
    if not lines:
        return Step(p.comment(n) + "  (in place: every input wrote its own channel slice)", [], None)
    note = "" if len(lines) == len(copies) == len(p.graph.args(n)) else "  (the other inputs wrote their slices)"
    return Step(p.comment(n) + note, lines, "copy_channels", len(lines))


def _flatten(p: Program, n: str) -> Step:
    src = p.graph.args(n)[0]
    if n in p.views:  # a view (plan.flatten_is_view): fc weights are reordered instead (see _fc)
        return Step(p.comment(n) + "  (a view)", [f"{p.t(n)} = {p.t(src)}.reshape(n, -1)"], None)
    # PyTorch's channel-major order is needed as is: copy NHWC -> (C, H, W) order
    return Step(p.comment(n) + "  (NHWC -> channel-major order)",
                [f"{p.t(n)}.copy_({p.t(src)}.permute(0, 3, 1, 2).reshape(n, -1))"], None)


def _softmax(p: Program, n: str) -> Step:
    return Step(p.comment(n), [f"softmax({p.arg(n, 0)}, {p.t(n)})"], "softmax")


def _identity(p: Program, n: str) -> Step:
    return Step(p.comment(n), [f"{p.t(n)}.copy_({p.arg(n, 0)})"], None)


def _mul(p: Program, n: str) -> Step:
    """The broadcasting product (the SE scale): operands of size 1 on an axis are read with stride 0."""
    ins = ", ".join(p.t(a) for a in p.graph.args(n))
    return Step(p.comment(n), [f"mul([{ins}], {p.t(n)})"], "mul", len(p.graph.args(n)) - 1)


def _chunk(p: Program, n: str) -> Step:
    """One part of a channel split: a view, the channel slice of its input (every kernel reads its
    operands through their row strides; a concat copies it like any view)."""
    a = p.graph.nodes[n]["attrs"]
    c = p.graph.shape(n)[0]
    lo = a["index"] * c
    return Step(p.comment(n) + "  (a view: a channel slice)", [f"{p.t(n)} = {p.arg(n, 0)}[..., {lo}:{lo + c}]"], None)


def _channel_shuffle(p: Program, n: str) -> Step:
    """A relabeling when the plan stored the concat before it in shuffled order (its inputs wrote
    their channels there); otherwise a gathering copy, the plan's reason in the comment."""
    if p.plan.kind[n] == "view":
        return Step(p.comment(n) + "  (a view: the concat's inputs wrote their shuffled channels)",
                    [f"{p.t(n)} = {p.arg(n, 0)}"], None)
    groups = p.graph.nodes[n]["attrs"]["groups"]
    why = p.plan.shuffle_copied.get(n)
    note = f"; not a view: {_safe(why.replace('`', ''))}" if why else ""
    return Step(p.comment(n) + f"  (index arithmetic: one gathering copy{note})",
                [f"channel_shuffle({p.arg(n, 0)}, {p.t(n)}, groups={groups})"], "channel_shuffle")


def _layer_norm(p: Program, n: str) -> Step:
    """Over each position's channels (axis 0 of an NHWC map, axis -1 of a channels-last "plain"
    tensor, or a flat vector): the same row-wise kernel (plan.layouts says which input it takes)."""
    a = p.graph.nodes[n]["attrs"]
    args = [p.arg(n, 0), p.t(n)]
    if a["affine"]:
        p.weights.append((("layer_norm", n, n), p.comment(n)))
        args += [f"weight={wkey(n, 'weight')}", f"bias={wkey(n, 'bias')}"]
    args.append(f"eps={a['eps']!r}")
    return Step(p.comment(n), [f"layer_norm({', '.join(args)})"], "layer_norm")


def _linear(p: Program, n: str) -> Step:
    """A per-position linear layer: on a flat vector the fc kernel; on a channels-last (N, H, W, C)
    tensor a 1x1 conv (the conv2d GEMM) with the (out, in) weight packed as (in, out)."""
    a = p.graph.nodes[n]["attrs"]
    if len(p.graph.shape(n)) == 1:
        p.weights.append((("fc", n, n, None, bool(a["bias"])), p.comment(n)))
        args = [p.arg(n, 0), wkey(n, "w"), p.t(n)] + ([f"bias={wkey(n, 'b')}"] if a["bias"] else [])
        return Step(p.comment(n), [f"linear({', '.join(args)})"], "linear")
    p.weights.append((("linear_1x1", n, n, bool(a["bias"])), p.comment(n)))
    args = [p.arg(n, 0), wkey(n, "w"), p.t(n), "kernel=(1, 1)"] + ([f"bias={wkey(n, 'b')}"] if a["bias"] else [])
    return Step(p.comment(n) + "  (per position: a 1x1 conv)", [f"conv2d({', '.join(args)})"], "conv2d")


def _permute(p: Program, n: str) -> Step:
    """Only relabelings reach here (plan.layouts marks the others unsupported): the same memory."""
    return Step(p.comment(n) + "  (a view: the same memory, relabeled)", [f"{p.t(n)} = {p.arg(n, 0)}"], None)


def _layer_scale(p: Program, n: str) -> Step:
    p.weights.append((("layer_scale", n, n), p.comment(n)))
    x, out = _as_map(p, p.arg(n, 0), n), _as_map(p, p.t(n), n)
    return Step(p.comment(n), [f"scale_shift({x}, {out}, scale={wkey(n, 'scale')})"], "scale_shift")


RULES: dict[str, Callable[[Program, str], Step]] = {
    "conv": _conv,
    "fused_conv": _conv,
    "fc": _fc,
    "fused_fc": _fc,
    "bn": _bn,
    "fused_bn": _bn,
    "maxpool": _pool("max_pool2d", "kernel", "stride", "pad", "dilation"),
    "avgpool": _pool("avg_pool2d", "kernel", "stride", "pad",
                     extra=lambda a: f"count_include_pad={a['count_include_pad']!r}"),
    "adaptive_avgpool": _pool("adaptive_avg_pool2d"),
    "global_avgpool": _pool("global_avg_pool"),
    "lrn": _pool("lrn", extra=lambda a: f"size={a['size']!r}, alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r}"),
    "softmax": _softmax,
    "add": _join("add"),
    "fused_add": _join("add"),
    "mean": _join("mean"),
    "concat": _concat,
    "pad_channels": _pool("pad_channels"),
    "upsample": _pool("upsample_nearest", "scale"),
    "flatten": _flatten,
    "identity": _identity,
    "dropout": _identity,
    "drop_path": _identity,
    "stochastic_depth": _identity,  # stripped by the passes (an identity at inference); kept for unoptimized graphs
    "mul": _mul,
    "chunk": _chunk,
    "channel_shuffle": _channel_shuffle,
    "layer_norm": _layer_norm,
    "linear": _linear,
    "permute": _permute,
    "layer_scale": _layer_scale,
    # every activation (an op with epilogue forms, gelu included): the scale-shift kernel with only its activation
    **{op: _act for op in sorted(activation_ops())},
}


# ---- assembling the module --------------------------------------------------------------------------


def _not_lowered(graph: Graph, nodes: list[str]) -> ArchError:
    ops = sorted({graph.op(n) for n in nodes})
    first = nodes[0]
    return ArchError(f"`{first}`: archdsl compile has no Triton kernel for `{graph.op(first)}` yet",
                     graph.nodes[first]["src"],
                     hint=f"not lowered yet: {', '.join(ops)} ({len(nodes)} node{'s' * (len(nodes) > 1)}); "
                          "`archdsl.build_torch` runs this network as a PyTorch model, and `archdsl summary`, "
                          "`viz` and `export` work on it")


def _layout_not_lowered(graph: Graph, n: str) -> ArchError:
    shapes = ", ".join("×".join(map(str, graph.shape(a))) for a in graph.args(n))
    return ArchError(f"`{n}`: archdsl compile cannot lower `{graph.op(n)}` on this tensor layout yet ({shapes})",
                     graph.nodes[n]["src"],
                     hint="the compiled program keeps feature maps channels-last; it lowers `permute((1, 2, 0))` "
                          "to H×W×C, then layer_norm(axis=-1), linear and elementwise ops, then "
                          "`permute((2, 0, 1))` back (ConvNeXt's block); `archdsl.build_torch` runs any layout")


def check_lowerable(graph: Graph) -> None:
    """Raise (an ArchError at the first such node) when the graph has an op the code generator
    cannot lower, apart from inference no-ops, which the passes remove.  Cheap and torch-free, so
    `archdsl compile` says it before anything heavy runs."""
    skip = inference_noops() | {"input"}
    missing = [n for n in graph.order() if graph.op(n) not in RULES and graph.op(n) not in skip]
    if missing:
        raise _not_lowered(graph, missing)


def generate(graph: Graph, dtype: str = "float32", origin: str = "", settings: str | Sequence[str] = "") -> Program:
    """Emit the program for an (optimized) graph.  `origin`: the `.arch` file as the user named it;
    `settings`: the other `archdsl compile` arguments that made it (a list of words, or one string
    of space-separated words): together the header's "regenerate with" command."""
    dtype = dtypes.canonical(dtype)  # ValueError for a spelling archdsl.dtypes does not know
    if dtype not in dtypes.COMPUTE:
        raise ValueError(f"the kernels compute in {', '.join(dtypes.COMPUTE)}, not {dtype}")
    p = Program(graph, dtype)
    p.schedule = make_schedule(graph)
    p.plan = make_plan(p.schedule)
    order = p.plan.order
    for n in order:
        p.slot[n] = n
        p.buffers.append((storage_shape(graph.shape(n), p.plan.layout[n]), n))
        if p.plan.kind[n] == "view":
            p.views[n] = graph.args(n)[0]
    for n in order:
        op = graph.op(n)
        if op == "input":
            continue
        rule = RULES.get(op)
        if rule is None:
            raise _not_lowered(graph, [n])
        if p.plan.layout[n] == "unsupported":
            raise _layout_not_lowered(graph, n)
        p.steps.append(rule(p, n))
    p.source = _module(p, origin, settings)
    return p


def _module(p: Program, origin: str, settings: str | Sequence[str]) -> str:
    network = _weights_table(p) + _buffers_table(p) + _network_class(p)
    kernels = _used_templates(network)
    body = []
    for name, text in kernels:
        body += [f"# {'=' * 30} kernels/{name} {'=' * 30}", "", text]
    body += [f"# {'=' * 30} this network {'=' * 30}", "", f"DTYPE = torch.{p.dtype}", ""]
    return "\n".join(_header(p, origin, settings, kernels) + body + network).rstrip() + "\n"


def _header(p: Program, origin: str, settings: str | Sequence[str], kernels: list[tuple[str, str]]) -> list[str]:
    g = p.graph
    counts = ", ".join(f"{k} ×{c}" for k, c in sorted(p.kernel_counts().items()))
    params = ", ".join(f"{k}={v!r}" for k, v in g.graph["params"].items())
    return [
        '"""',
        f"{_safe(g.name)}: generated by archdsl {__version__}{' from ' + _safe(Path(origin).name) if origin else ''}."
        " Do not edit: regenerate (the command is below).",
        "",
        f"Network parameters: {_safe(params) or 'none'}.",
        f"Inputs (per sample, NCHW): {', '.join(_safe(i) + ' ' + 'x'.join(map(str, g.shape(i))) for i in g.inputs)}.",
        f"Activations are NHWC {p.dtype} inside; every kernel accumulates in float32.",
        f"{p.launches} kernel launches per forward: {counts}.",
        f"Kernel templates included (only those this network uses): {', '.join(n for n, _ in kernels)}.",
        "",
        "Use:  net = load(\"weights.safetensors\", device=\"cuda\");  outputs = net(x)",
        '"""',
        f"# regenerate with: {regenerate_command(origin, settings)}",
        "",
        "import collections",
        "import math",
        "import os",
        "",
        "import torch",
        "import triton",
        "import triton.language as tl",
        "",
    ]


def regenerate_command(origin: str, settings: str | Sequence[str] = "") -> str:
    """`archdsl compile FILE ARGS...` as a shell command line (each word quoted as the shell needs),
    for a comment: a word holding anything but printable ASCII (a line break could end the
    comment) is left out and said so."""
    words = ["archdsl", "compile", origin or "FILE.arch"]
    words += settings.split() if isinstance(settings, str) else list(settings)
    shown = [shlex.quote(w) if _printable(w) else "<unprintable>" for w in words]
    note = "" if origin else "  (compiled from text or a graph: FILE.arch stands for it)"
    return " ".join(shown) + note


def _printable(word: str) -> bool:
    return all(" " <= c <= "~" for c in word)


# ---- which kernel templates a program needs -------------------------------------------------------

_DEFINITION = re.compile(r"^(?:def|class)\s+(\w+)|^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?::[^=]*)?=(?!=)", re.M)


def _defines(text: str) -> set[str]:
    """The names a template defines at its top level (functions, classes, constants)."""
    names = set()
    for fn, assigned in _DEFINITION.findall(text):
        names |= {fn} if fn else {n.strip() for n in assigned.split(",")}
    return names


_CALL = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\s*\(|\b(ACT_\w+)\b")


def _calls(lines: list[str]) -> set[str]:
    """What the network's own code takes from the templates: the functions it calls and the
    ACT_* codes it names (comments cut off; fast on a network of thousands of launches)."""
    names = set()
    for line in dict.fromkeys(line.split("#", 1)[0] for line in lines):
        names.update(a or b for a, b in _CALL.findall(line))
    return names


@functools.lru_cache(maxsize=32)
def _references(text: str) -> frozenset[str]:
    """The names code uses: not in comments or strings, not attributes (`x.mean`), not keywords
    of a call or names being assigned (`mean=...`)."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    names = set()
    for i, t in enumerate(tokens):
        after_dot = i > 0 and tokens[i - 1].string == "."
        before_eq = i + 1 < len(tokens) and tokens[i + 1].string == "="
        if t.type == tokenize.NAME and not after_dot and not before_eq:
            names.add(t.string)
    return frozenset(names)


def _used_templates(network: list[str]) -> list[tuple[str, str]]:
    """host.py and the templates defining what the network's code calls, closed over what those
    call in turn; a name several templates define (the ACT_* codes) comes from one already in."""
    every = templates()
    defines = {name: _defines(text) for name, text in every}
    chosen = {"host.py"}
    wanted = _calls(network)
    while True:
        have = set().union(*(defines[n] for n in chosen))
        missing = wanted - have
        unique = [n for n, _ in every if n not in chosen and any(
            x in defines[n] and sum(x in d for d in defines.values()) == 1 for x in missing)]
        shared = [n for n, _ in every if n not in chosen and missing & defines[n]]
        add = unique[:1] or shared[:1]
        if not add:
            break
        chosen.add(add[0])
        wanted |= _references(dict(every)[add[0]])
    return [(name, text) for name, text in every if name in chosen]


# ---- the network: its weights, its buffers, its steps -------------------------------------------------

_PREPARE_HELPERS = {
    "conv": [
        "def prepare_conv(w, state, node, conv, bn, eps, groups, bias):",
        '    """A conv\'s packed weight, its batch norm (if any) folded in, and its bias."""',
        "    wt, b = fold_bn(state, conv, bn, eps)",
        '    w[node + ".w"] = pack_conv_weight(wt.to(DTYPE), groups, DTYPE)',
        "    if bias:",
        '        w[node + ".b"] = b.float()',
    ],
    "chain_conv": [
        "def prepare_chain_conv(w, state, node, conv, bn, eps, groups, bias):",
        '    """A grouped conv computed on chip by a chain: its weight packed as conv2d_chain\'s grouped',
        '    kernel reads it (pack_chain_weight: block-diagonal slices of whole groups)."""',
        "    wt, b = fold_bn(state, conv, bn, eps)",
        '    w[node + ".w"] = pack_chain_weight(wt.to(DTYPE), groups, DTYPE)',
        "    if bias:",
        '        w[node + ".b"] = b.float()',
    ],
    "conv_scaled": [
        "def prepare_conv_scaled(w, state, node, conv, bn, eps, groups, bias, scale, ln=None):",
        '    """A conv, or a per-position linear\'s (out, in) weight as a 1x1 conv\'s, its batch norm (if any)',
        '    and then its layer scale gamma (if any: the bare parameter `scale`) folded in, in float64:',
        '    W\' = gamma * W and b\' = gamma * b per output channel.  Then the layer norm `ln` of its input',
        '    (if any) per input channel: W * ln.weight, b + W @ ln.bias, and the column sums the GEMM',
        '    subtracts the mean with (fold_layer_norm)."""',
        "    wt, b = fold_bn(state, conv, bn, eps)",
        "    if wt.dim() == 2:",
        "        wt = wt[:, :, None, None]",
        "    if scale is not None:",
        "        gamma = state[scale].reshape(-1).double()",
        "        wt, b = wt * gamma.reshape(-1, 1, 1, 1), b * gamma",
        "    if ln is not None:",
        '        w[node + ".w"], w[node + ".b"], w[node + ".ln_c"] = fold_layer_norm(',
        '            wt, b, state[ln + ".weight"], state[ln + ".bias"], DTYPE)',
        "        return",
        '    w[node + ".w"] = pack_conv_weight(wt.to(DTYPE), groups, DTYPE)',
        "    if bias:",
        '        w[node + ".b"] = b.float()',
    ],
    "pre_bn": [
        "def prepare_pre_bn(w, state, node, bn, eps):",
        '    """The batch norm a conv applies to its input while loading it, as a scale and a shift."""',
        '    w[node + ".in_scale"], w[node + ".in_shift"] = bn_scale_shift(state, bn, eps)',
    ],
    "fc": [
        "def prepare_fc(w, state, node, fc, chw, bias):",
        '    """A linear layer\'s packed weight (columns in NHWC order when it reads a flattened map)."""',
        '    wt = state[fc + ".weight"]',
        "    if chw is not None:",
        "        wt = chw_to_hwc_columns(wt, *chw)",
        '    w[node + ".w"] = pack_linear_weight(wt.to(DTYPE), DTYPE)',
        "    if bias:",
        '        w[node + ".b"] = state[fc + ".bias"].float()',
    ],
    "bn": [
        "def prepare_bn(w, state, node, bn, eps):",
        '    """A batch norm of its own, as a scale and a shift."""',
        '    w[node + ".scale"], w[node + ".shift"] = bn_scale_shift(state, bn, eps)',
    ],
    "layer_norm": [
        "def prepare_layer_norm(w, state, node, ln):",
        '    """A layer norm\'s weight and bias as the kernel reads them."""',
        '    w[node + ".weight"] = state[ln + ".weight"].float().contiguous()',
        '    w[node + ".bias"] = state[ln + ".bias"].float().contiguous()',
    ],
    "linear_1x1": [
        "def prepare_linear_1x1(w, state, node, lin, bias):",
        '    """A per-position linear layer\'s (out, in) weight packed as a 1x1 conv\'s, and its bias."""',
        '    w[node + ".w"] = pack_conv_weight(state[lin + ".weight"][:, :, None, None].to(DTYPE), 1, DTYPE)',
        "    if bias:",
        '        w[node + ".b"] = state[lin + ".bias"].float()',
    ],
    "layer_scale": [
        "def prepare_layer_scale(w, state, node, key):",
        '    """A layer scale\'s bare parameter (C, 1, 1) as the per-channel scale vector."""',
        '    w[node + ".scale"] = state[key].reshape(-1).float().contiguous()',
    ],
    "siblings": [
        "def prepare_siblings(w, state, node, group, channels, biased):",
        '    """Sibling 1x1 convs launched as one GEMM: their weights side by side, biases joined (zeros',
        '    for a conv without one); the launcher\'s input scale and shift serve the whole group."""',
        '    w[node + ".w"] = torch.cat([w.pop(m + ".w") for m in group], dim=1)',
        "    if any(biased):",
        '        w[node + ".b"] = torch.cat([w.pop(m + ".b") if b else torch.zeros(c)',
        "                                    for m, c, b in zip(group, channels, biased)])",
        "    for m in group[1:]:",
        '        w.pop(m + ".in_scale", None)',
        '        w.pop(m + ".in_shift", None)',
    ],
}


def _weights_table(p: Program) -> list[str]:
    rows = p.weights + p.deferred
    kinds = sorted({row[0] for row, _ in rows}, key=list(_PREPARE_HELPERS).index)
    lines = []
    for kind in kinds:
        lines += _PREPARE_HELPERS[kind] + ["", ""]
    lines += [
        "# What `prepare` makes of the reference weights (PyTorch state-dict names): one row per",
        "# layer, (helper, node, arguments...), run in order by the helper of that name above.",
        "WEIGHTS = [",
    ]
    for row, comment in rows:
        lines += [f"    {c.strip()}" for c in comment.split("\n") if c.strip()]
        lines.append(f"    {row!r},")
    lines += [
        "]",
        "PREPARE = {" + ", ".join(f"{k!r}: prepare_{k}" for k in kinds) + "}",
        "",
        "",
        "def prepare(state, device):",
        '    """Reference weights -> the tensors the kernels read (the WEIGHTS table), on `device`."""',
        "    w = {}",
        "    for kind, *args in WEIGHTS:",
        "        PREPARE[kind](w, state, *args)",
        "    return {k: v.to(device) for k, v in w.items()}",
        "",
        "",
    ]
    return lines


def _buffers_table(p: Program) -> list[str]:
    plan = p.plan
    order = plan.order
    when = {-1: "input", plan.end: "return"}

    def step(t: int) -> str:
        return when.get(t) or _safe(order[t])

    lines = [
        "# Memory plan (archdsl/codegen/plan.py).  Every activation lives in one arena of ARENA values per",
        "# sample (times the batch size); tensors whose lifetimes do not overlap share memory.  One buffer",
        f"# per tensor would take {plan.naive():,} values per sample.  BUFFERS says where each tensor t[name] is:",
        '#   ("arena", offset, shape)       an NHWC buffer at `offset` values (times the batch size) into the arena',
        '#   ("slice", base, start, stop)   channels [start, stop) of t[base]: this tensor is written in place',
        "#                                  into its concat's buffer (so the concat copies nothing);",
        "#                                  (\"slice\", base, start, stop, step): every step-th channel (its",
        "#                                  places in the order of the channel shuffle after the concat)",
        '#   ("same", base)                 t[base] itself: this step writes over its input, dead after it',
        "#   None                           a view made in __call__ (flatten), or never in memory (on chip)",
        "# A buffer's comment says from which step to which its memory is in use.",
        f"ARENA = {plan.arena}",
        "BUFFERS = {",
    ]
    for shape, node in p.buffers:
        kind, base = plan.kind[node], plan.base[node]
        if kind == "buffer":
            value = repr(("arena", plan.offset[node], tuple(shape)))
            first, last = plan.lifetime[node]
            note = f"live {step(first)} .. {step(last)}"
        elif kind == "slice":
            start, stride = plan.channel[node], plan.step[node]
            stop = start + stride * (shape[-1] - 1) + 1
            value = repr(("slice", base, start, stop) + ((stride,) if stride > 1 else ()))
            note = "in its concat" + (", shuffled" if stride > 1 else "")
        elif kind == "inplace":
            value = repr(("same", base))
            note = f"written over {_safe(plan.over[node])}"
        elif kind == "onchip":
            value, note = "None", f"on chip in the chain kernel of {_safe(p.schedule.launcher(node))}"
        else:
            value, note = "None", "a view"
        key = repr(node) + ":"
        lines.append(f"    {key:<28} {value + ',':<44} # {note}")
    return lines + ["}", "", ""]


# What a program says on a machine that cannot run it (rather than Triton's "0 active drivers").
_CHECK_DEVICE = [
    "def _check_device(device):",
    '    """Triton runs these kernels on a CUDA GPU, or on the CPU in its (slow) interpreter."""',
    '    if device.type == "cuda" and not torch.cuda.is_available():',
    '        raise RuntimeError("no CUDA GPU here: to run this program on the CPU (slowly, for checking), "',
    '                           "set TRITON_INTERPRET=1 before it is imported and use device=\'cpu\'")',
    '    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "yes", "on"):',
    '        raise RuntimeError("Triton runs kernels on the CPU only in its interpreter: set TRITON_INTERPRET=1 "',
    '                           "before this program is imported (TRITON_INTERPRET=1 python your_script.py)")',
    "",
    "",
]


def _network_class(p: Program) -> list[str]:
    g = p.graph
    outs = []
    for o in g.outputs:
        t = p.t(o)
        # always a copy: the buffers are reused by the next call (`.contiguous()` would return the
        # buffer itself when it is already contiguous as NCHW: 1x1 maps, single channels)
        outs.append(f"{t}.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)"
                    if len(g.shape(o)) == 3 and p.plan.layout[o] == "nhwc" else f"{t}.clone()")
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    lines = _CHECK_DEVICE + [
        "class Network:",
        '    """The compiled network: call it with NCHW input(s) on its device.',
        "",
        "    `tuning`: None, or a function of the batch size returning {node: kernel keyword arguments}",
        '    (block sizes found by archdsl\'s autotuner, for conv2d, conv2d_chain and linear launches); a launch',
        '    without an entry uses the kernel\'s defaults."""',
        "",
        "    def __init__(self, state, device, tuning=None):",
        "        self.device = torch.device(device)",
        "        _check_device(self.device)",
        "        self.w = prepare(state, self.device)",
        "        self.tuning = tuning",
        "        self._buffers = {}",
        "        self._tuned = {}",
        "",
        "    def tuned(self, n):",
        '        """The tuning table for batch size n, asked for once."""',
        "        if n not in self._tuned:",
        "            self._tuned[n] = collections.defaultdict(dict, self.tuning(n) if self.tuning else {})",
        "        return self._tuned[n]",
        "",
        "    def buffers(self, n):",
        '        """The activation tensors for batch size n, by name (see BUFFERS): views of one arena, made once."""',
        "        if n not in self._buffers:",
        "            arena = torch.empty(n * ARENA, device=self.device, dtype=DTYPE)",
        "            t = {}",
        "            for name, b in BUFFERS.items():",
        '                if b is not None and b[0] == "arena":',
        "                    _, offset, shape = b",
        "                    t[name] = arena[n * offset:n * (offset + math.prod(shape))].view(n, *shape)",
        "            for name, b in BUFFERS.items():",
        "                if b is None:",
        "                    t[name] = None",
        '                elif b[0] == "slice":',
        "                    t[name] = t[b[1]][..., slice(*b[2:])]",
        '                elif b[0] == "same":',
        "                    t[name] = t[b[1]]",
        "            self._buffers[n] = t",
        "        return self._buffers[n]",
        "",
        f"    def __call__(self, {', '.join(f'x{i}' for i in range(len(g.inputs)))}):",
        "        w = self.w",
        "        n = x0.shape[0]",
        "        t = self.buffers(n)",
        "        tuned = self.tuned(n)",
    ]
    for i, name in enumerate(g.inputs):
        lines.append(f"        {p.t(name)}.copy_(x{i}.permute(0, 2, 3, 1))  # NCHW -> NHWC")
    for step in p.steps:
        if not step.comment and not step.code:
            continue  # a node computed by another node's launch
        lines.append("")
        lines += [f"        {c}" for c in step.comment.split("\n")]
        lines += [f"        {c}" for c in step.code]
    lines += ["", f"        return {ret}", "", ""]
    lines += [
        "def load(weights, device=\"cuda\"):",
        '    """A `Network` from a .safetensors file (or a state dict) of reference-named weights."""',
        "    state = read_safetensors(weights) if isinstance(weights, str) else weights",
        "    return Network(state, device)",
    ]
    return lines
