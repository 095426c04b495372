"""The buffer plan (archdsl/codegen/plan.py): concat elimination, in-place steps, memory reuse.

The plan's invariants are checked here from first principles (each tensor's lifetime recomputed
from the graph, each tensor's memory from the plan's offsets and channel ranges) over every zoo
network at full size and over random join-heavy networks; the generated code is checked to
allocate exactly what the plan says; compiled models with copies, in-place steps and nested
concats are compared with the PyTorch reference (the whole zoo is in test_compiled.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.cli import main as cli_main
from archdsl.codegen import plan as planning
from archdsl.ops import OPS
from archdsl.passes import launch_groups
from archdsl.runtime import build, import_program
from pending import compilable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ZOO = compilable(sorted(EXAMPLES.glob("*.arch")))  # tests/pending.py: the files whose ops all have kernels


def compiled(path_or_text, **kw):
    g = archdsl.load(path_or_text, **kw) if isinstance(path_or_text, Path) else archdsl.loads(path_or_text, **kw)
    return build(g)


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---- the invariants, recomputed independently -------------------------------------------------------


def node_lifetimes(plan) -> dict[str, tuple[int, int]]:
    """(written, last read) per tensor in memory: inputs written at -1, outputs read at the end,
    every other node when the step that computes it runs: its own, or its launcher's (a sibling
    1x1 conv, or a conv kept on chip by a chain kernel); a flatten view's readers read its source.
    Checks on the way that the launch order computes every operand before its reader."""
    g = plan.graph
    assert sorted(plan.order) == sorted(g), "the launch order must hold every node once"
    end = len(plan.order)
    position = {n: i for i, n in enumerate(plan.order)}
    groups = launch_groups(g)
    t = {n: -1 if n in g.inputs else position[groups.launched_by(n) or n] for n in g}
    for n in g:
        for a in g.args(n):
            on_chip = groups.chains.get(n) == a
            assert t[a] < t[n] or (on_chip and t[a] == t[n]), (a, n)

    def last(n):
        r = end if n in g.outputs else t[n]
        for u in g.successors(n):
            r = max(r, last(u) if plan.kind[u] == "view" else t[u])
        return r

    return {n: (t[n], last(n)) for n in plan.order if plan.kind[n] not in ("view", "onchip")}


def launch_reads(g, n) -> list[str]:
    """What the step computing `n` reads: nothing for a node computed by another's launch; a
    chain kernel reads its first conv's input (and its residual), never that conv's result."""
    groups = launch_groups(g)
    if groups.launched_by(n):
        return []
    if n in groups.chains:
        return g.args(groups.chains[n])[:1] + g.args(n)[1:]
    return g.args(n)


def contains(g, outer, inner) -> bool:
    """`outer` is a concat that holds `inner` (directly or through nested concats)."""
    if g.op(outer) != "concat":
        return False
    return any(a == inner or contains(g, a, inner) for a in g.args(outer))


def concat_order(plan, c: str, k: int) -> int:
    """Where channel k (in concat order) of concat `c` is in `c`'s tensor: k, or its place after
    the channel shuffle the buffer is stored in (group k // (C/g), index k % (C/g) -> index*g + group)."""
    groups = plan.shuffled.get(c, 1)
    size = plan.graph.shape(c)[0] // groups
    return (k % size) * groups + k // size


def check_invariants(plan) -> None:
    g = plan.graph
    life = node_lifetimes(plan)
    # every tensor's memory: (base, its channels of the base in order); bases own [offset, offset + size)
    mem = {}
    for n in life:
        b = plan.base[n]
        assert plan.kind[b] == "buffer" and plan.base[b] == b, n
        shape, base_shape = planning.nhwc(g.shape(n)), planning.nhwc(g.shape(b))
        assert shape[:-1] == base_shape[:-1], n
        chans = tuple(range(plan.channel[n], plan.channel[n] + plan.step[n] * shape[-1], plan.step[n]))
        assert 0 <= chans[0] and chans[-1] < base_shape[-1], n
        if plan.kind[n] in ("buffer", "inplace"):
            assert chans == tuple(range(base_shape[-1])), n
        mem[n] = (b, chans)
        if plan.kind[n] == "slice":
            assert OPS[g.op(n)].strided_out and n not in g.inputs and n not in g.outputs, n
            assert plan.step[n] == 1 or OPS[g.op(n)].channel_step_out or g.op(n) == "concat", n
    for b in plan.bases:
        assert plan.offset[b] % planning.ALIGN == 0 and plan.size[b] >= numel(planning.nhwc(g.shape(b)))
        assert plan.offset[b] + plan.size[b] <= plan.arena
    # a concat's inputs are in its buffer at their offsets, or it copies them
    for c in g.order():
        if g.op(c) != "concat":
            continue
        offset = 0
        for port, a in enumerate(g.args(c)):
            slot = tuple(mem[c][1][concat_order(plan, c, k)] for k in range(offset, offset + g.shape(a)[0]))
            in_place = a in mem and mem[a] == (mem[c][0], slot)
            assert in_place != (port in plan.copies[c]), (c, a)
            offset += g.shape(a)[0]
    # no two tensors alive at once share memory, except by design
    names = sorted(life)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (wa, ra), (wb, rb) = life[a], life[b]
            if ra < wb or rb < wa:
                continue  # never alive together
            (ba, ca), (bb, cb) = mem[a], mem[b]
            if ba != bb:
                assert plan.offset[ba] + plan.size[ba] <= plan.offset[bb] or \
                    plan.offset[bb] + plan.size[bb] <= plan.offset[ba], (a, b)
                continue
            if not set(ca) & set(cb):
                continue  # disjoint channels of one buffer
            if contains(g, a, b) or contains(g, b, a):
                continue  # a concat and what it holds: the same values by design
            # otherwise only a step writing over its input, read for the last time by that step
            first, second = (a, b) if wa < wb else (b, a)
            reads = launch_reads(g, second)
            assert plan.kind[second] == "inplace" and first in reads, (a, b)
            assert life[first][1] == life[second][0] and mem[a] == mem[b], (a, b)
            assert OPS[g.op(second)].inplace_ports
            # no other operand of that step may live in the memory it overwrites (a convolution reads
            # its input's neighbourhood; an elementwise step may read the very same tensor twice)
            ports = [q for q, y in enumerate(reads) if y == first]
            for q, y in enumerate(reads):
                if q in ports or y not in mem:
                    continue
                same = mem[y][0] == mem[first][0] or not (
                    plan.offset[mem[y][0]] + plan.size[mem[y][0]] <= plan.offset[mem[first][0]]
                    or plan.offset[mem[first][0]] + plan.size[mem[first][0]] <= plan.offset[mem[y][0]])
                assert not same, (second, y)
            if OPS[g.op(second)].fusion != "elementwise":
                assert len(ports) == 1 and ports[0] in OPS[g.op(second)].inplace_ports, second


@pytest.mark.slow
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_the_plan_never_overlaps_live_tensors(path):
    plan = compiled(path).program.plan
    check_invariants(plan)
    assert plan.peak_live() <= plan.arena <= plan.naive()


# ---- concat elimination ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, concats, inputs_each", [
    ("densenet121", 6 + 12 + 24 + 16, 2),  # one concat per dense layer: concat(x, new features)
    ("googlenet", 9, 4),  # nine inception modules, four branches each
    ("squeezenet", 8, 2),  # fire2..fire9, expand 1x1 and 3x3
])
def test_concat_networks_run_no_copy_kernel(name, concats, inputs_each):
    c = compiled(EXAMPLES / f"{name}.arch")
    program = c.program
    assert "copy_channels" not in program.kernel_counts()
    assert "copy_channels(t" not in program.source
    data = planning.summary(c.graph, program.plan, "float32")
    assert data["concat_inputs"] == concats * inputs_each == data["copies_eliminated"]
    assert data["concat_copies"] == 0
    # each concat step emits no code at all
    g = program.graph
    assert sum(1 for n in g if g.op(n) == "concat") == concats
    # one launch per node but the concats and flatten views, and those computed by another's launch
    assert program.launches == sum(1 for n in g if g.op(n) not in ("input", "concat", "flatten")
                                   and not launch_groups(g).launched_by(n))


@pytest.mark.slow
def test_a_dense_block_is_one_buffer_every_layer_appending_its_slice():
    program = compiled(EXAMPLES / "densenet121.arch").program
    plan, g = program.plan, program.graph
    block = "features.denseblock1"
    last = f"{block}.denselayer6.concat"
    assert plan.kind[last] == "buffer" and planning.nhwc(g.shape(last)) == (56, 56, 64 + 6 * 32)
    assert plan.base["features.pool0"] == last and plan.channel["features.pool0"] == 0
    for k in range(1, 7):
        conv2, concat = f"{block}.denselayer{k}.conv2", f"{block}.denselayer{k}.concat"
        assert (plan.kind[conv2], plan.base[conv2], plan.channel[conv2]) == ("slice", last, 64 + 32 * (k - 1))
        assert plan.base[concat] == last and plan.channel[concat] == 0  # a prefix
    assert {plan.base[n] for n in g if n.startswith(block + ".") and g.op(n) == "concat"} == {last}
    # the transition's conv reads the whole block, batch-normalizing it as it loads (a prologue)
    assert g.args("features.transition1.conv") == [last]
    assert g.nodes["features.transition1.conv"]["attrs"]["sources"]["pre_bn"] == "features.transition1.norm"
    # the generated code: the producers write into slices of that one tensor
    assert f"    '{block}.denselayer3.conv2': " in program.source  # BUFFERS, by name
    assert f"('slice', '{last}', 128, 160)," in program.source


COPIES = """
network copies {
    input 4 x 6 x 5
    concat { identity; conv(3, 1) -> relu } as a        # the graph input: copied
    concat { @a; conv(2, 3, pad=1) } as b               # a nested concat: in place
    concat { @b; @b } as c                              # b twice: the second is copied
    concat { conv(4, 1) as d; @d; maxpool(3, stride=1, pad=1) } as e   # d twice
    output e, a
}
"""


def test_inputs_that_cannot_be_placed_are_copied():
    program = compiled(COPIES).program
    plan, g = program.plan, program.graph
    check_invariants(plan)
    a, b, c, e = (g.outputs[1], *[n for n in g.order() if g.op(n) == "concat"][1:])
    assert plan.copies[a] == [0]  # the input; the conv writes in place (a is an output: its own buffer)
    assert plan.kind[a] == "buffer"
    assert plan.copies[b] == [0] and plan.kind[g.args(b)[1]] == "slice"  # a is an output: not moved
    assert plan.copies[c] == [1] and plan.kind[b] == "slice" and plan.base[b] == c
    assert plan.copies[e] == [1]
    assert program.kernel_counts()["copy_channels"] == 4  # one launch per copied input
    assert program.source.count("copy_channels(t[") == 4


@pytest.mark.slow
def test_copies_nesting_and_in_place_steps_compute_the_reference():
    torch.manual_seed(0)
    for text in (COPIES, INPLACE):
        model = archdsl.compile(source=text, device="cpu")
        reference = archdsl.to_torch(model.graph).eval()
        reference.load_state_dict(model.state_dict())
        g = model.graph
        x = torch.randn(2, *g.shape(g.inputs[0]))
        with torch.no_grad():
            refs = reference.double()(x.double())
        for _ in range(2):  # twice: the arena is reused across calls
            outs = model(x)
            for o, r in zip(outs, refs):  # (a ReLU output may be all zeros: then o must be too)
                assert (o.double() - r).norm().item() <= 1e-5 * max(r.norm().item(), 1e-3)


# ---- in-place steps and memory reuse ---------------------------------------------------------------

INPLACE = """
network inplace {
    input 3 x 6 x 6
    c0: conv(8, 3, pad=1) -> bn -> relu
    residual { c1: conv(8, 3, pad=1) -> bn -> relu -> c2: conv(8, 3, pad=1) -> bn }
    relu -> b3: bn -> relu as y
    j: add { c4: conv(8, 1); @y; identity }
    k: add { c7: conv(8, 3, pad=1); identity }
    m: mean { c5: conv(8, 1); c6: conv(8, 1) -> tanh } -> global_avgpool -> flatten -> fc(5) -> relu as out
    output out, y
}
"""


def test_in_place_steps_write_over_dead_inputs_only():
    program = compiled(INPLACE).program
    plan, g = program.plan, program.graph
    check_invariants(plan)
    assert g.args("c2") == ["c1", "c0"]  # the residual conv took the add (and the relu after it)
    assert g.args("j.add") == ["j.c4", "b3", "b3"] and g.args("k.c7") == ["j.add", "j.add"]
    assert plan.over == {
        "c2": "c0",  # c0 is read by c1 and, last, as c2's residual
        "b3": "c2",  # bn + relu over the add's result (b3 is an output: that memory lives to the end)
        "j.add": "j.c4",  # not over y: it is an output
        "m.c5": "m.c6",  # the mean join fused into c5: (c5 + c6) / 2 written over c6
    }
    # k.c7 reads j.add as its input and its residual: a convolution cannot overwrite its own input
    assert plan.kind["k.c7"] == "buffer" and plan.node_lifetime("j.add")[1] == plan.time["k.c7"]
    assert {plan.base[n] for n in ("c0", "c2", "b3")} == {"c0"}
    assert planning.make_plan(g, inplace=False).over == {}


def test_memory_planning_shrinks_resnet50():
    c = compiled(EXAMPLES / "resnet50.arch")
    plan = c.program.plan
    data = planning.summary(c.graph, plan, "float16")
    assert data["arena_bytes_per_sample"] == 2 * plan.arena
    g = plan.graph
    assert data["naive_bytes_per_sample"] == 2 * sum(numel(g.shape(n)) for n in g if g.op(n) != "flatten")
    # the largest tensor, conv1's 112x112x64 output, and the max pool's 56x56x64 are alive together
    assert plan.peak_live() >= 112 * 112 * 64 + 56 * 56 * 64
    assert plan.arena < plan.naive() / 4
    # without in-place steps the plan needs more: each bottleneck's output overwrites its shortcut
    assert planning.make_plan(plan.graph, inplace=False).arena > plan.arena


def test_bytes_moved_by_formula():
    c = compiled("network t { input 3 x 8 x 8\n conv(4, 3, pad=1) -> relu -> flatten -> fc(5) }")
    e = 4  # float32
    x, y, f = 3 * 8 * 8, 4 * 8 * 8, 5
    # unoptimized: conv reads x, writes y; relu reads y, writes y; flatten the same; fc reads y, writes f
    assert planning.bytes_moved_unoptimized(c.graph) == e * ((x + y) + (y + y) + (y + y) + (y + f))
    # generated: conv + relu one kernel; flatten a view; fc
    assert planning.bytes_moved(c.program.plan) == e * ((x + y) + (y + f))


@pytest.mark.slow
def test_report_states_memory_copies_and_bytes_moved(tmp_path):
    out = tmp_path / "g"
    assert cli_main(["compile", str(EXAMPLES / "squeezenet.arch"), "-o", str(out), "--dtype", "float16"]) == 0
    data = json.loads((out / "report.json").read_text())["memory"]
    assert data["dtype"] == "float16" and data["copies_eliminated"] == 16 and data["concat_copies"] == 0
    assert data["live_peak_bytes_per_sample"] <= data["arena_bytes_per_sample"] < data["naive_bytes_per_sample"]
    assert data["bytes_moved_after"] < data["bytes_moved_before"]
    md = (out / "report.md").read_text()
    assert "concat elimination: 16 of 16 concat inputs written in place" in md
    assert "activation memory per sample (float16)" in md and "bytes moved per image" in md


# ---- the generated code allocates what the plan says -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "googlenet", "resnet50", "fractalnet"])
def test_generated_buffers_follow_the_plan(name):
    program = compiled(EXAMPLES / f"{name}.arch").program
    plan, g = program.plan, program.graph
    module = import_program(program.source)
    assert module.ARENA == plan.arena
    net = module.Network.__new__(module.Network)
    net.device, net._buffers = torch.device("cpu"), {}
    n = 2
    t = net.buffers(n)
    assert net.buffers(n) is t  # made once per batch size
    start = min(t[program.slot[b]].data_ptr() for b in plan.bases if plan.offset[b] == 0)
    item = t[program.slot[plan.bases[0]]].element_size()
    for node in plan.order:
        i = program.slot[node]
        if plan.kind[node] in ("view", "onchip"):
            assert t[i] is None
            continue
        shape = planning.nhwc(g.shape(node))
        assert tuple(t[i].shape) == (n, *shape) and t[i].stride(-1) == 1
        base = t[program.slot[plan.base[node]]]
        assert t[i].data_ptr() == base.data_ptr() + plan.channel[node] * item
        assert t[i].stride() == base.stride()
        if plan.kind[node] == "buffer":
            assert t[i].is_contiguous() and t[i].data_ptr() == start + n * plan.offset[node] * item


# ---- random join-heavy networks --------------------------------------------------------------------


def random_network(rng: random.Random) -> str:
    """Chains, concats (nested, with repeated and input operands), dense and residual blocks,
    adds, means, standalone batch norms and activations, named tensors read from far away."""
    names = {"in": 4}
    lines, cur, c = [], "in", 4

    def branch(cin):
        kind = rng.choice(["conv", "conv", "pool", "act", "ref", "id", "concat"])
        if kind == "conv":
            k = rng.randint(1, 5)
            return rng.choice([f"conv({k}, 3, pad=1) -> relu", f"conv({k}, 1)"]), k
        if kind == "pool":
            return "maxpool(3, stride=1, pad=1)", cin
        if kind == "act":
            return rng.choice(["relu", "bn", "bn -> relu", "sigmoid"]), cin
        if kind == "ref":
            ref = rng.choice(sorted(names))
            return f"@{ref}", names[ref]
        if kind == "id":
            return "identity", cin
        parts = [branch(cin) for _ in range(2)]
        return "concat { " + "; ".join(p for p, _ in parts) + " }", sum(k for _, k in parts)

    for i in range(rng.randint(3, 7)):
        kind = rng.choice(["concat", "concat", "dense", "residual", "add", "mean", "chain"])
        if kind == "concat":
            parts = [branch(c) for _ in range(rng.randint(2, 4))]
            stmt, c = "concat { " + "; ".join(p for p, _ in parts) + " }", sum(k for _, k in parts)
        elif kind == "dense":
            g = rng.randint(1, 4)
            stmt, c = f"dense {{ bn -> relu -> conv({g}, 3, pad=1) }}", c + g
        elif kind == "residual":
            stmt = f"residual {{ conv({c}, 3, pad=1) -> bn -> relu -> conv({c}, 1) -> bn }} -> relu"
        elif kind in ("add", "mean"):
            stmt = f"{kind} {{ conv({c}, 1); {rng.choice(['identity', 'relu', f'conv({c}, 3, pad=1)'])} }}"
        else:
            stmt = rng.choice(["bn -> relu", "relu", "bn", f"conv({c}, 1) -> bn"])
        name = f"t{i}"
        lines.append(f"    {stmt} as {name}")
        names[name] = c
        if rng.random() < 0.2:  # continue from an older tensor
            ref = rng.choice(sorted(names))
            lines.append(f"    @{ref} -> conv({names[ref]}, 1) as r{i}")
            names[f"r{i}"], c = names[ref], names[ref]
    outs = sorted(rng.sample(sorted(names), k=min(2, len(names)))) if rng.random() < 0.3 else []
    tail = ["    global_avgpool -> flatten -> fc(3) as logits"]
    out_line = f"    output logits{''.join(', ' + o for o in outs if o != 'in')}"
    return "network r {\n    input 4 x 5 x 5\n" + "\n".join(lines + tail + [out_line]) + "\n}\n"


def _random_programs(count, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        text = random_network(rng)
        try:
            archdsl.loads(text)
        except archdsl.ArchError:
            continue
        out.append(text)
    return out


@pytest.mark.slow
def test_random_networks_keep_the_invariants():
    for text in _random_programs(150, seed=7):
        plan = compiled(text).program.plan
        check_invariants(plan)
        assert plan.peak_live() <= plan.arena <= plan.naive()


@pytest.mark.slow
def test_random_networks_compute_the_reference():
    for text in _random_programs(8, seed=11):
        model = archdsl.compile(source=text, device="cpu")
        reference = archdsl.to_torch(model.graph).eval()
        reference.load_state_dict(model.state_dict())
        x = torch.randn(2, 4, 5, 5)
        with torch.no_grad():
            refs = reference.double()(x.double())
        outs = model(x)
        outs, refs = (outs if isinstance(outs, tuple) else (outs,)), (refs if isinstance(refs, tuple) else (refs,))
        for o, r in zip(outs, refs):
            assert ((o.double() - r).norm() / r.norm().clamp_min(1e-30)).item() < 1e-5, text


def test_returned_outputs_are_copies_not_the_reused_arena():
    # a 1x1 map is contiguous as NCHW too: `.contiguous()` alone would hand out the buffer itself
    model = archdsl.compile(source="network t { input 3 x 4 x 4\n conv(5, 3, pad=1) -> global_avgpool as a\n"
                            " @a -> flatten as b\n output a, b }", device="cpu")
    first = model(torch.randn(1, 3, 4, 4))
    kept = [o.clone() for o in first]
    model(torch.randn(1, 3, 4, 4))
    assert all(torch.equal(o, k) for o, k in zip(first, kept))
