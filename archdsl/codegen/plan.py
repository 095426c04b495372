"""The buffer plan: where every activation of a generated program lives, and for how long.

Three decisions, all made from the optimized graph before any code is emitted:

1. Concat elimination.  A concat's inputs are written straight into their channel slices of
   the concat's buffer, so the concat itself costs nothing.  Concats are visited from the last
   to the first, so a concat that feeds a later concat becomes a slice of that one's buffer in
   turn: DenseNet's `concat_k = concat(concat_{k-1}, new_k)` chain is one buffer per dense
   block, every concat a prefix of it, every layer writing its `growth` channels at its own
   offset.  An input stays a buffer of its own, and the concat copies it (`copy_channels`),
   when it is a graph input or output, a flatten view, has a flatten user (a view of a channel
   slice would not be a view), was already placed into another concat (a tensor joined twice),
   or is made by an op not known to write through a strided view (`OpSpec.strided_out`).

   Channel shuffles after a concat.  ShuffleNet's `concat -> channel_shuffle(g)` is a
   relabeling when the concat's buffer holds the shuffled order: channel j of group i (the
   concat's channels i*C/g .. (i+1)*C/g - 1) lives at channel j*g + i, so a concat input lying
   in one group is written through a channel stride of g (NHWC: every g-th channel from its
   first), the shuffle is a view of the concat's buffer, and the `chunk` after it is the plain
   channel slice it always was.  This needs the concat's only reader to be the shuffle, every
   input within one group, and the inputs' kernels to write through a channel stride
   (`OpSpec.channel_step_out`, and a launch of their own: not a chain's or a sibling group's);
   an input whose kernel cannot is written to its own buffer and copied into its shuffled
   channels, and the shuffle stays a copy kernel when that would take more launches than the
   shuffle's own (`Plan.shuffle_copied` says why, for the report and `--explain`).

2. In-place steps.  An elementwise step (batch norm, activation, add, mean) writes over an
   input, and a fused convolution (or a chain kernel) over its residual, when that input's
   buffer has no reader after this step: the kernels read each element (the epilogue its residual tile) before
   writing the same element.  The input must be the whole of its buffer (not a concat's slice,
   not a view) and no other operand of the step may share that buffer.

3. Memory planning.  Every base buffer (a tensor with memory of its own, together with the
   concat slices and in-place results that live in it) is alive from the first step that
   writes it to the last step that reads it — through any of its members or their flatten
   views; graph outputs to the end, graph inputs from the start.  Base buffers are packed into
   one arena, largest first, each at the lowest-waste offset that overlaps no base buffer
   alive at the same time ("greedy by size", as in TensorFlow Lite's planner).  Offsets and
   sizes are per sample; a batch of n scales every offset by n, which keeps disjoint ranges
   disjoint.  Steps run in order on one stream, so memory is reused only after every reader of
   its previous occupant has run.

Times: a graph input is written at -1, the node at position i of the launch schedule's order
(`schedule.py`) runs at i, and outputs are read at `end = len(order)` (when they are returned).
A node computed by another node's launch (a sibling 1x1 conv) is written when that launch runs;
a conv computed on chip inside a chain kernel has no memory ("onchip") and runs, reading its
input, when the chain's launch does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import dtypes
from ..ir.graph import Graph
from ..ops.registry import ANY_PORT, OPS, family
from .schedule import Schedule, make_schedule

ALIGN = 64  # values: every base buffer starts at a multiple of this (times the batch size)
ELEMENT_BYTES = dtypes.BYTES

# Which ops write through a strided view (may write straight into a concat's channel slice:
# `OpSpec.strided_out`) and which may overwrite an input (`OpSpec.inplace_ports`) are facts of
# the op registry.  `flatten` writes a slice only when it is a copy (see `flatten_is_view`).


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-sample (C, H, W) shape in the generated program's NHWC order; (F,) stays."""
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---- layouts: how a per-sample 3-D tensor is laid out in memory ----------------------------------------
#
# "nhwc"   a feature map (C, H, W) stored [H][W][C] (channels innermost): every tensor by default.
# "plain"  a tensor (A, B, C) stored [A][B][C] in its own axis order: the channels-last (H, W, C)
#          tensors ConvNeXt makes with `permute((1, 2, 0))`.  Its memory is that of the NHWC map it
#          was permuted from, so both permutes of ConvNeXt are relabelings (views), and the ops
#          between them (layer norm and linear over the last axis, GELU) see an (N, H, W, C) tensor.
# Only the ops in `PLAIN_OPS` accept a "plain" input; their result is "plain" too.

_MEMORY_ORDER = {"nhwc": (1, 2, 0), "plain": (0, 1, 2)}  # axes of the (A, B, C) shape, outermost first
PLAIN_OPS = frozenset({"gelu", "add", "mean", "mul", "identity", "dropout", "drop_path", "stochastic_depth",
                       "linear", "layer_norm", "permute", "relu", "tanh", "sigmoid", "relu6", "hardsigmoid",
                       "hardswish", "silu"})


def storage_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """A per-sample shape in memory order: `nhwc(shape)`, or the shape itself when "plain"."""
    return tuple(shape) if layout == "plain" else nhwc(shape)


def permute_layout(g: Graph, n: str, layout: dict[str, str]) -> str | None:
    """The layout in which the permute `n` is a relabeling of its input's memory (a view), or None
    when no layout makes it one (a copy would be needed)."""
    src = g.args(n)[0]
    order = g.nodes[n]["attrs"]["order"]
    if len(order) != 3 or layout.get(src, "nhwc") not in _MEMORY_ORDER:
        return None  # (an input the emitter reports as unsupported: this permute is too)
    src_memory = _MEMORY_ORDER[layout.get(src, "nhwc")]
    for candidate in ("nhwc", "plain"):
        if tuple(order[m] for m in _MEMORY_ORDER[candidate]) == src_memory:
            return candidate
    return None


def layouts(g: Graph) -> dict[str, str]:
    """Every node's layout (see above); a node whose input layouts its op cannot take is marked
    "unsupported" (the emitter says so, with its location)."""
    layout: dict[str, str] = {}
    for n in g.order():
        op, args = g.op(n), g.args(n)
        plain_in = [a for a in args if layout.get(a) == "plain" and len(g.shape(a)) == 3]
        if op == "permute":
            layout[n] = permute_layout(g, n, layout) or "unsupported"
        elif op in ("layer_norm", "linear") and len(g.shape(n)) == 3:
            # over the last axis: the channels of a "plain" tensor; axis=0 layer norm: an NHWC map's channels
            last_axis = op == "linear" or g.nodes[n]["attrs"]["axis"] == -1
            ok = bool(plain_in) if last_axis else not plain_in
            layout[n] = ("plain" if last_axis else "nhwc") if ok else "unsupported"
        elif plain_in:
            same = len(plain_in) == len([a for a in args if len(g.shape(a)) == 3])
            layout[n] = "plain" if op in PLAIN_OPS and same else "unsupported"
        else:
            layout[n] = "nhwc"
    return layout


def flatten_is_view(g: Graph, n: str) -> bool:
    """Whether the flatten `n` is emitted as a reshape of its input (no copy): its input is flat
    or 1x1 already, or every user is an fc (whose weight columns are reordered instead)."""
    src = g.args(n)[0]
    shape = g.shape(src)
    users = list(g.successors(n))
    return len(shape) == 1 or shape[1] * shape[2] == 1 or (
        bool(users) and all(g.op(u) in family("fc") for u in users) and n not in g.outputs)


@dataclass
class Plan:
    """Where each node's result lives.  `kind[n]`:

    "buffer"   a base buffer: `offset[n]` values per sample into the arena, `size[n]` long
    "slice"    channels channel[n], channel[n] + step[n], ... (C of them) of base `base[n]` (a
               concat's input; step 1 but in a shuffled concat, see `shuffled`)
    "inplace"  the very tensor of base `base[n]`: written over a dead input
    "view"     a flatten view of its input, a permute that relabels it, a chunk's channel slice of
               it (made in the step), or a channel shuffle of a concat stored shuffled; memory of `base[n]`
    "onchip"   never in memory: the first conv of a chain kernel (its tile stays on chip)

    `over[n]` names the input an "inplace" node overwrites; `copies[c]` the ports of concat `c`
    that are copied (every other input is a slice of its buffer already); `shuffled[c]` the groups
    of the channel shuffle concat `c`'s buffer is stored in (its inputs' slots: `port_slots`);
    `shuffle_copied[s]` why the channel shuffle `s` stays a copy kernel.
    """

    graph: Graph
    schedule: Schedule
    order: list[str]
    time: dict[str, int]
    kind: dict[str, str] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    channel: dict[str, int] = field(default_factory=dict)
    step: dict[str, int] = field(default_factory=dict)  # node -> its channel stride in its base (1 but in shuffles)
    copies: dict[str, list[int]] = field(default_factory=dict)  # concat -> ports it copies
    shuffled: dict[str, int] = field(default_factory=dict)  # concat stored in its shuffle's order -> groups
    shuffle_copied: dict[str, str] = field(default_factory=dict)  # channel shuffle kept a copy -> why
    over: dict[str, str] = field(default_factory=dict)  # in-place node -> the input it overwrites
    lifetime: dict[str, tuple[int, int]] = field(default_factory=dict)  # base -> (first write, last read)
    offset: dict[str, int] = field(default_factory=dict)  # base -> values per sample
    size: dict[str, int] = field(default_factory=dict)  # base -> values per sample (rounded to ALIGN)
    arena: int = 0  # values per sample
    layout: dict[str, str] = field(default_factory=dict)  # node -> "nhwc" or "plain" (see `layouts`)
    last_read: dict[str, int] = field(default_factory=dict, repr=False)  # node -> last read (views' readers too)
    _members: dict[str, list[str]] | None = field(default=None, repr=False)  # base -> nodes, once planned

    @property
    def end(self) -> int:
        return len(self.order)

    @property
    def bases(self) -> list[str]:
        return [n for n in self.order if self.kind[n] == "buffer"]

    def members(self, base: str) -> list[str]:
        """The nodes living in `base` (itself, concat slices, in-place results, views), in order."""
        if self._members is None:
            self._members = {}
            for n in self.order:
                self._members.setdefault(self.base[n], []).append(n)
        return self._members.get(base, [])

    def node_lifetime(self, n: str) -> tuple[int, int]:
        """(written, last read) of one node's value: its flatten views' readers count."""
        return self.time[n], self.last_read[n]

    def peak_live(self) -> int:
        """The most values per sample alive at once (exact sizes): no packing of these base buffers
        into memory can use less (the arena exceeds it by alignment and fragmentation only)."""
        events: dict[int, int] = {}
        for b in self.bases:
            first, last = self.lifetime[b]
            events[first] = events.get(first, 0) + numel(nhwc(self.graph.shape(b)))
            events[last + 1] = events.get(last + 1, 0) - numel(nhwc(self.graph.shape(b)))
        live = peak = 0
        for t in sorted(events):
            live += events[t]
            peak = max(peak, live)
        return peak

    def naive(self) -> int:
        """Values per sample with one buffer per tensor (no concat elimination, no reuse)."""
        return sum(numel(nhwc(self.graph.shape(n))) for n in self.order if self.kind[n] != "view")

    def reads(self, n: str) -> list[str]:
        """The tensors the step of `n` reads from memory (`Schedule.reads`)."""
        return self.schedule.reads(n)

    def port_slots(self, c: str) -> list[tuple[int, int]]:
        """(first channel, channel stride) of each input of concat `c` within `c`'s own tensor:
        (offset, 1) in concat order, or its channels' places in the shuffled order."""
        return _port_slots(self.graph, c, self.shuffled.get(c, 1))


def make_plan(g: Graph | Schedule, inplace: bool = True) -> Plan:
    """The plan for an (optimized) graph's launch schedule; see the module docstring."""
    schedule = g if isinstance(g, Schedule) else make_schedule(g)
    g, order = schedule.graph, schedule.order
    time = {n: (-1 if n in g.inputs else i) for i, n in enumerate(order)}
    for n in order:  # a node computed by another's launch is written (and reads) when that runs
        time[n] = time[schedule.launcher(n)]
    p = Plan(g, schedule, order, time, layout=layouts(g))
    for n in order:
        p.kind[n], p.base[n], p.channel[n], p.step[n] = "buffer", n, 0, 1
        if g.op(n) == "flatten" and flatten_is_view(g, n):
            p.kind[n] = "view"
        elif g.op(n) == "permute" and p.layout[n] != "unsupported":
            p.kind[n] = "view"  # a relabeling of its input's memory (see `layouts`)
        elif g.op(n) == "chunk":
            p.kind[n] = "view"  # a channel slice of its input: every kernel reads through row strides
        elif schedule.on_chip(n):
            p.kind[n] = "onchip"
    _place_concats(p)  # may make channel shuffles views
    for n in order:  # views of views: follow to the first real tensor
        if p.kind[n] == "view":
            p.base[n] = p.base[g.args(n)[0]]
    p.last_read = _last_reads(p)
    if inplace:
        _place_inplace(p)
    p._members = None  # bases are final: index them on first use
    _lifetimes(p)
    _allocate(p)
    return p


def _last_reads(p: Plan) -> dict[str, int]:
    """Every node's last read: by its readers, through flatten views (whose readers read it), at
    the end for an output.  One pass, readers first: the launch order is topological."""
    g, outputs, last = p.graph, set(p.graph.outputs), {}
    for n in reversed(p.order):
        t = p.end if n in outputs else p.time[n]
        for u in g.successors(n):
            t = max(t, last[u] if p.kind[u] == "view" else p.time[u])
        last[n] = t
    return last


def _sliceable(p: Plan, a: str) -> bool:
    g = p.graph
    return (a not in g.inputs and a not in g.outputs and p.kind[a] == "buffer" and OPS[g.op(a)].strided_out
            and not any(g.op(u) == "flatten" for u in g.successors(a)))


def _steppable(p: Plan, a: str) -> bool:
    """Whether `a`'s step can write through a channel stride: its op's kernel can, in a launch of
    its own (a chain kernel's or a sibling GEMM's outputs are written with stride 1), or it is a
    concat (whose inputs are placed, or copied, through the stride in turn)."""
    g = p.graph
    if g.op(a) == "concat":
        return True
    launch = p.schedule.launch_of(a)
    return (OPS[g.op(a)].channel_step_out and launch is not None and launch.nodes == (a,)
            and launch.kernel in (None, "conv2d"))


def _port_slots(g: Graph, c: str, groups: int) -> list[tuple[int, int]]:
    """See `Plan.port_slots`; an input straddling two shuffle groups has no single stride: None."""
    size, slots, offset = g.shape(c)[0] // groups, [], 0
    for a in g.args(c):
        if groups == 1:
            slots.append((offset, 1))
        else:
            group, within = divmod(offset, size)
            slots.append((within * groups + group, groups) if within + g.shape(a)[0] <= size else None)
        offset += g.shape(a)[0]
    return slots


def _shuffle_after(p: Plan, c: str) -> str | None:
    """The channel shuffle concat `c`'s buffer can hold (its only reader), or None with the reason
    recorded when there is one but the buffer cannot hold its order."""
    g = p.graph
    users = list(g.successors(c))
    shuffles = [u for u in users if g.op(u) == "channel_shuffle"]
    if not shuffles:
        return None
    s = shuffles[0]
    groups = g.nodes[s]["attrs"]["groups"]
    slots = _port_slots(g, c, groups)
    why = None
    if p.kind[s] != "buffer":
        why = f"it writes straight into its slice of the concat `{p.base[s]}`"
    elif len(users) > 1:
        why = f"the concat `{c}` is read unshuffled too"
    elif c in g.outputs:
        why = f"the concat `{c}` is a graph output"
    elif p.layout.get(s) != "nhwc":
        why = "not a channels-last feature map"
    elif None in slots:
        why = f"an input of `{c}` straddles two of its {groups} groups (no single channel stride)"
    else:
        plain = sum(not _sliceable(p, a) for a in g.args(c))
        stepped = sum(not (_sliceable(p, a) and _steppable(p, a)) for a in g.args(c))
        if stepped > plain + 1:
            why = (f"{stepped} inputs of `{c}` would be copied into their shuffled channels "
                   f"(their kernels write channels with stride 1) instead of {plain} and one shuffle")
    if why is not None:
        p.shuffle_copied[s] = why
        return None
    return s


def _place_concats(p: Plan) -> None:
    g = p.graph
    for c in reversed(p.order):
        if g.op(c) != "concat":
            continue
        shuffle = _shuffle_after(p, c)
        if shuffle is not None:  # the buffer holds the shuffled order: the shuffle relabels it
            p.kind[shuffle] = "view"
            p.shuffled[c] = g.nodes[shuffle]["attrs"]["groups"]
        root, start, step = p.base[c], p.channel[c], p.step[c]
        copies = []
        for port, (a, (first, stride)) in enumerate(zip(g.args(c), p.port_slots(c))):
            if _sliceable(p, a) and (step * stride == 1 or _steppable(p, a)):
                p.kind[a], p.base[a] = "slice", root
                p.channel[a], p.step[a] = start + step * first, step * stride
            else:
                copies.append(port)
        p.copies[c] = copies
    for s in p.order:
        if g.op(s) == "channel_shuffle" and p.kind[s] != "view" and s not in p.shuffle_copied:
            p.shuffle_copied[s] = f"its input `{g.args(s)[0]}` is not a concat (nothing else writes its channels)"


def _place_inplace(p: Plan) -> None:
    """Linear in the graph: each base's last read and its views are kept up to date as in-place
    steps join it, instead of being recomputed from every member for every candidate."""
    g = p.graph
    group_last: dict[str, int] = {}  # base -> the last read of any tensor living in it
    views: dict[str, list[str]] = {}  # base -> the flatten views of its tensors
    for n in p.order:
        if p.kind[n] == "view":
            views.setdefault(p.base[n], []).append(n)
        else:
            group_last[p.base[n]] = max(group_last.get(p.base[n], -2), p.last_read[n])
    for n in p.order:
        spec = OPS[g.op(n)]
        if not spec.inplace_ports or p.kind[n] != "buffer":
            continue
        args = p.reads(n)  # a chain kernel reads its first conv's input, not that conv's result
        ports = spec.inplace_ports
        for port in (range(len(args)) if ports == ANY_PORT else ports):
            if port >= len(args):
                continue
            x = args[port]
            if x == p.schedule.gate_of(n):
                continue  # a gate is read by every tile of the conv: never overwritten
            if p.kind[x] not in ("buffer", "inplace") or nhwc(g.shape(x)) != nhwc(g.shape(n)):
                continue
            root = p.base[x]
            if nhwc(g.shape(root)) != nhwc(g.shape(n)):
                continue
            others = [y for q, y in enumerate(args) if q != port and p.base[y] == root]
            if others and (spec.fusion != "elementwise" or any(y != x for y in others)):
                continue  # another operand shares the buffer (x twice is fine elementwise)
            if group_last[root] > p.time[n]:
                continue
            p.kind[n], p.base[n], p.over[n] = "inplace", root, x
            group_last[root] = max(group_last[root], group_last.pop(n))
            for v in views.pop(n, ()):  # flatten views of n follow it
                p.base[v] = root
                views.setdefault(root, []).append(v)
            break


def _lifetimes(p: Plan) -> None:
    for n in p.order:
        if p.kind[n] in ("view", "onchip"):
            continue
        b = p.base[n]
        first, last = p.lifetime.get(b, (p.time[n], p.last_read[n]))
        p.lifetime[b] = (min(first, p.time[n]), max(last, p.last_read[n]))


def _allocate(p: Plan) -> None:
    """Greedy by size: largest base first, into the smallest gap among the buffers alive with it."""
    g = p.graph
    bases = p.bases
    for b in bases:
        p.size[b] = -(-numel(nhwc(g.shape(b))) // ALIGN) * ALIGN
    placed: list[str] = []
    for b in sorted(bases, key=lambda b: (-p.size[b], p.lifetime[b][0])):  # stable: ties in order
        first, last = p.lifetime[b]
        busy = sorted((p.offset[o], p.offset[o] + p.size[o]) for o in placed
                      if p.lifetime[o][0] <= last and first <= p.lifetime[o][1])
        best, best_gap, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= p.size[b] and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        p.offset[b] = cursor if best is None else best
        placed.append(b)
    p.arena = max((p.offset[b] + p.size[b] for b in bases), default=0)


# ---- what the plan buys: numbers for the report and `archdsl compile --explain` ---------------------


def bytes_moved_unoptimized(graph: Graph, dtype: str = "float32") -> int:
    """Activation bytes read + written per image if every op of `graph` ran as its own kernel,
    reading each input and writing its output (the graph inputs' NCHW -> NHWC copy excluded)."""
    total = 0
    for n in graph.order():
        if graph.op(n) == "input":
            continue
        total += sum(numel(graph.shape(a)) for a in graph.args(n)) + numel(graph.shape(n))
    return total * ELEMENT_BYTES[dtype]


def bytes_moved(plan: Plan, dtype: str = "float32") -> int:
    """Activation bytes read + written per image by the generated steps: each kernel reads its
    operands (a fused conv its residual too) and writes its result; a flatten view and an
    in-place concat move nothing; a concat moves only the inputs it copies."""
    g, total = plan.graph, 0
    for n in plan.order:
        if g.op(n) == "input" or plan.kind[n] in ("view", "onchip"):
            continue
        if g.op(n) == "concat":
            args = g.args(n)
            total += sum(2 * numel(g.shape(args[port])) for port in plan.copies[n])
        else:
            total += sum(numel(g.shape(a)) for a in plan.reads(n)) + numel(g.shape(n))
    return total * ELEMENT_BYTES[dtype]


def summary(original: Graph, plan: Plan, dtype: str = "float32", launches: int | None = None) -> dict:
    """The plan's numbers: memory per sample, copies eliminated, bytes moved per image."""
    size = ELEMENT_BYTES[dtype]
    inputs = sum(len(plan.graph.args(c)) for c in plan.copies)
    copies = sum(len(v) for v in plan.copies.values())
    out = {
        "dtype": dtype,
        "arena_bytes_per_sample": plan.arena * size,
        "naive_bytes_per_sample": plan.naive() * size,
        "live_peak_bytes_per_sample": plan.peak_live() * size,
        "base_buffers": len(plan.bases),
        "tensors": sum(1 for n in plan.order if plan.kind[n] not in ("view", "onchip")),
        "in_place_steps": sum(1 for n in plan.order if plan.kind[n] == "inplace"),
        "concat_inputs": inputs,
        "concat_copies": copies,
        "copies_eliminated": inputs - copies,
        "shuffles": sum(1 for n in plan.order if plan.graph.op(n) == "channel_shuffle"),
        "shuffle_views": len(plan.shuffled),
        "shuffle_copies": dict(plan.shuffle_copied),
        "bytes_moved_before": bytes_moved_unoptimized(original, dtype),
        "bytes_moved_after": bytes_moved(plan, dtype),
    }
    if launches is not None:
        out["launches_before"] = sum(1 for n in original if original.op(n) != "input")  # one kernel per op
        out["launches"] = launches
    return out


def explain(compiled) -> list[str]:
    """The lines for `archdsl compile --explain`, from a `runtime.Compiled`."""
    program = compiled.program
    return summary_lines(summary(compiled.graph, program.plan, program.dtype, program.launches))


def _shuffle_lines(data: dict) -> list[str]:
    """The channel shuffles: how many are views of their concat's buffer, and why the others copy."""
    if not data.get("shuffles"):
        return []
    copied = data["shuffle_copies"]
    lines = [f"channel shuffles: {data['shuffle_views']} of {data['shuffles']} are views (their concat's inputs "
             f"write the shuffled channels), {len(copied)} copied"]
    return lines + [f"  {s} copies: {why}" for s, why in list(copied.items())[:8]] + (
        [f"  ... and {len(copied) - 8} more"] if len(copied) > 8 else [])


def _mb(b: int) -> str:
    return f"{b / 2**20:,.2f} MiB"


def summary_lines(data: dict) -> list[str]:
    """`summary(...)` as readable lines (the report and `--explain`)."""
    ratio = data["arena_bytes_per_sample"] / max(data["naive_bytes_per_sample"], 1)
    moved = data["bytes_moved_after"] / max(data["bytes_moved_before"], 1)
    launches = [f"kernel launches per forward: {data['launches_before']} unoptimized (one per op) -> "
                f"{data['launches']} generated"] if "launches" in data else []
    return launches + [
        f"activation memory per sample ({data['dtype']}): {_mb(data['arena_bytes_per_sample'])} planned "
        f"vs {_mb(data['naive_bytes_per_sample'])} naive (one buffer per tensor): {ratio:.1%}; "
        f"at least {_mb(data['live_peak_bytes_per_sample'])} is alive at once",
        f"buffers: {data['tensors']} tensors in {data['base_buffers']} base buffers, one arena; "
        f"{data['in_place_steps']} steps write over a dead input",
        f"concat elimination: {data['copies_eliminated']} of {data['concat_inputs']} concat inputs written in "
        f"place, {data['concat_copies']} copied",
        *_shuffle_lines(data),
        f"activation bytes moved per image: {_mb(data['bytes_moved_before'])} unoptimized -> "
        f"{_mb(data['bytes_moved_after'])} generated ({moved:.1%})",
    ]
