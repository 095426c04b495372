"""The language expresses every construct of DESIGN.md and every architecture of the lecture.

Part 1 checks each construct on the elaborated graph: node names, ops, attributes, edges in port
order (`g.args(n)`), shapes, outputs and scopes, with the naming rules of the docstring of
archdsl/elaborate/elaborator.py.  Part 2 writes each architecture of the lecture as a compact
program and checks its shapes and its parameter count against arithmetic done here (and, for a
few, against PyTorch modules built on the `meta` device, which cost no memory or time).

Every program is elaborated symbolically, so full-size networks are cheap; the file runs in a
few seconds.
"""

from __future__ import annotations

import json
import textwrap

import pytest

import archdsl
from archdsl import ArchError, Limits, analyze
from archdsl.cli import main as cli_main
from arith import bn_p, conv_p, fc_p, out_size
from snippets import BASIC_BLOCK


def of_op(g, op, prefix=""):
    """Nodes of one op, in elaboration order, optionally under a name prefix."""
    return [n for n in g.nodes if g.op(n) == op and (not prefix or n.startswith(prefix + "."))]


def under(g, prefix):
    return [n for n in g.nodes if n.startswith(prefix + ".")]


def rows(g):
    return {r.name: r for r in analyze(g).layers}


def params_under(g, prefix):
    r = rows(g)
    return sum(r[n].params for n in under(g, prefix))


def loads(text, **kw):
    return archdsl.loads(textwrap.dedent(text), **kw)


def structure(g):
    return [(n, g.op(n), g.nodes[n]["attrs"], g.shape(n), g.args(n)) for n in g.order()]


# =================================================================================================
# Part 1: constructs
# =================================================================================================

def test_positional_and_keyword_arguments():
    g = loads("""
        block pair(c, k = 3, stride = 1) { conv(c, k, stride=stride, pad=k // 2) -> relu }
        network n {
            input 3 x 16 x 16
            a: conv(8, 3, stride=2, pad=1, bias=false)
            b: conv(out=4, kernel=(1, 3), pad=(0, 1))
            m: maxpool(2)
            p: pair(6, stride=2)
            q: pair(6, 5)
            d: dropout(p=0.25)
        }
    """)
    a = g.nodes["a"]["attrs"]
    assert (a["out"], a["kernel"], a["stride"], a["pad"], a["groups"], a["bias"]) == (
        8, (3, 3), (2, 2), (1, 1, 1, 1), 1, False)
    assert g.shape("a") == (8, out_size(16, 3, 2, 1), out_size(16, 3, 2, 1)) == (8, 8, 8)
    b = g.nodes["b"]["attrs"]
    assert (b["out"], b["kernel"], b["pad"], b["stride"], b["bias"]) == (4, (1, 3), (0, 0, 1, 1), (1, 1), True)
    assert g.shape("b") == (4, 8, 8)
    assert g.nodes["m"]["attrs"]["stride"] == (2, 2)  # stride defaults to the kernel
    assert g.shape("m") == (4, 4, 4)
    # block: positional c, keyword stride, default k = 3 and pad = k // 2 = 1
    assert g.nodes["p.conv"]["attrs"]["kernel"] == (3, 3) and g.nodes["p.conv"]["attrs"]["stride"] == (2, 2)
    assert g.shape("p.conv") == (6, out_size(4, 3, 2, 1), out_size(4, 3, 2, 1)) == (6, 2, 2)
    assert g.nodes["q.conv"]["attrs"]["kernel"] == (5, 5) and g.nodes["q.conv"]["attrs"]["pad"] == (2, 2, 2, 2)
    assert g.nodes["d"]["attrs"]["p"] == 0.25
    assert rows(g)["a"].params == conv_p(3, 8, 3, bias=False) == 3 * 3 * 3 * 8

    base = "network n {\n input 3x8x8\n %s\n}\n"
    for bad, words in [("conv(out=8, 3)", "positional argument follows a keyword"),
                       ("conv(8, 3, strid=2)", "has no argument `strid`"),
                       ("conv(8, 3, out=4)", "given twice"),
                       ("conv(8)", "missing the argument `kernel`"),
                       ("relu(1)", "takes 0 positional")]:
        with pytest.raises(ArchError, match=words):
            archdsl.loads(base % bad)


def test_sequences_arrow_lines_and_semicolons_build_the_same_graph():
    head = "network n {\n input 3x8x8\n"
    arrow = archdsl.loads(head + " conv(4, 3, pad=1) -> bn -> relu -> maxpool(2)\n}")
    lines = archdsl.loads(head + " conv(4, 3, pad=1)\n bn\n relu\n maxpool(2)\n}")
    semis = archdsl.loads(head + " conv(4, 3, pad=1); bn; relu; maxpool(2)\n}")
    mixed = archdsl.loads(head + " conv(4, 3, pad=1) -> bn\n relu -> maxpool(2)\n}")
    assert structure(arrow) == structure(lines) == structure(semis) == structure(mixed)
    assert [(n, arrow.args(n)) for n in arrow.order()] == [
        ("input", []), ("conv", ["input"]), ("bn", ["conv"]), ("relu", ["bn"]), ("maxpool", ["relu"])]
    assert arrow.outputs == ["maxpool"] and arrow.shape("maxpool") == (4, 4, 4)


BASIC = BASIC_BLOCK


def test_labels_give_hierarchical_names():
    g = loads(BASIC + """
        network n(width = 8) {
            input 3x32x32
            stem: conv(width, 3, pad=1)
            features: (conv(width, 3, pad=1) -> relu -> c: conv(width, 3, pad=1) -> relu)
            layer1: basic(width) * 2
            layer2: (basic(2 * width, stride=2) -> basic(2 * width))
            layer3: basic(2 * width) * 3
            relu
            (conv(16, 1) -> relu)
            basic(16)
            basic(16)
            inc: concat { conv(4, 1); conv(4, 1) -> relu }
            for i in range(2) { stage{i + 1}: conv(8, 1) }
            p{1}q{2 * 3}: relu
        }
    """)
    # a labelled op is named by its label
    assert g.op("stem") == "conv"
    # a labelled group is a sequence: every element counts for the position, labelled or not
    assert [(n, g.op(n)) for n in under(g, "features")] == [
        ("features.0", "conv"), ("features.1", "relu"), ("features.c", "conv"), ("features.3", "relu")]
    # labelled repetition -> positions, each a block scope named inside by the block's labels
    assert "layer3.2.conv1" in g and g.op("layer3.2.conv1") == "conv"
    assert g.args("layer3.2.conv1") == ["layer3.1.relu_1"]
    assert {n.split(".")[1] for n in under(g, "layer1")} == {"0", "1"}
    # the labelled group layer2 numbers its block calls; the labelled group `downsample` inside
    assert g.op("layer2.0.downsample.0") == "conv" and g.op("layer2.0.downsample.1") == "bn"
    assert [n for n in under(g, "layer2") if n.endswith(".conv1")] == ["layer2.0.conv1", "layer2.1.conv1"]
    # unlabelled elements: auto names, op/block name then _1, _2 ... (unlabelled groups are transparent)
    assert g.op("relu") == "relu" and g.op("relu_1") == "relu" and g.args("relu_1") == ["conv"]
    assert g.args("conv") == ["relu"]
    assert g.op("basic.conv1") == "conv" and g.op("basic_1.conv1") == "conv"
    assert g.args("basic_1.conv1") == ["basic.relu_1"]
    # a labelled join is a scope whose members are auto-named
    assert [(n, g.op(n)) for n in under(g, "inc")] == [
        ("inc.conv", "conv"), ("inc.conv_1", "conv"), ("inc.relu", "relu"), ("inc.concat", "concat")]
    # label templates
    assert g.args("stage2") == ["stage1"] and g.op("stage1") == "conv"
    assert g.op("p1q6") == "relu"
    scopes = g.graph["scopes"]
    kinds = {k: scopes[k].kind for k in ("features", "layer1", "layer1.0", "layer2", "layer2.0",
                                         "layer2.0.downsample", "basic", "basic_1", "inc")}
    assert kinds == {"features": "sequence", "layer1": "sequence", "layer1.0": "block", "layer2": "sequence",
                     "layer2.0": "block", "layer2.0.downsample": "sequence", "basic": "block",
                     "basic_1": "block", "inc": "branches"}
    assert scopes["layer2.0"].title.startswith("basic(") and "stride=2" in scopes["layer2.0"].title

    with pytest.raises(ArchError, match="already used"):
        archdsl.loads("network n {\n input 3x8x8\n a: relu\n a: relu\n}")


def test_block_parameters_defaults_arithmetic_and_in():
    g = loads("""
        block widen(c = 2 * in.c, k = 3, pad = k // 2, mid = c / 4) {
            squeeze: conv(mid, 1) -> full: conv(c, k, pad=pad)
        }
        block norm(eps = 1 / 1000, m = 0.5 * 0.2) { bn(eps=eps, momentum=m) }
        network n {
            input 8x16x16
            a: widen()
            b: widen(k=5)
            c: widen(12)
            d: norm()
        }
    """)
    # a: c = 2 * in.c = 16, k = 3, pad = 1, mid = 16 / 4 = 4
    assert g.nodes["a.squeeze"]["attrs"]["out"] == 4 and g.nodes["a.full"]["attrs"]["out"] == 16
    assert g.nodes["a.full"]["attrs"]["pad"] == (1, 1, 1, 1)
    # b: in.c is a's output (16): c = 32, pad = 5 // 2 = 2, mid = 8
    assert g.nodes["b.squeeze"]["attrs"]["out"] == 8 and g.nodes["b.full"]["attrs"]["pad"] == (2, 2, 2, 2)
    assert g.shape("b.full") == (32, 16, 16)
    # c: explicit c = 12, mid = 12 / 4 = 3 (exact division gives an integer)
    assert g.nodes["c.squeeze"]["attrs"]["out"] == 3 and g.shape("c.full") == (12, 16, 16)
    assert g.nodes["d.bn"]["attrs"]["eps"] == pytest.approx(0.001)
    assert g.nodes["d.bn"]["attrs"]["momentum"] == pytest.approx(0.1)
    # 6 / 4 is 1.5: not an integer channel count
    with pytest.raises(ArchError, match="integer"):
        loads("""
            block widen(c = 2 * in.c, mid = c / 4) { conv(mid, 1) }
            network n { input 3x8x8; widen() }
        """)
    with pytest.raises(ArchError, match="missing the argument `c`"):
        loads("""
            block b(c) { conv(c, 1) }
            network n { input 3x8x8; b() }
        """)


def test_repetition_zero_n_and_varying_the_first_iteration():
    g = loads(BASIC + """
        network n(blocks = 3) {
            input 8x16x16
            none: basic(8) * 0
            relu * blocks
            layer2: (basic(16, stride=2) -> basic(16) * blocks)
            layer3: { for i in range(blocks) { basic(32, stride = 2 if i == 0 else 1) } }
        }
    """)
    # * 0: nothing at all, the chain continues from the input
    assert under(g, "none") == []
    assert [n for n in g.nodes if g.op(n) == "relu" and "." not in n] == ["relu", "relu_1", "relu_2"]
    assert g.args("relu") == ["input"]
    # explicit first element + repetition inside a labelled group: positions 0..blocks
    for layer in ("layer2", "layer3"):
        blocks = sorted({n.split(".")[1] for n in under(g, layer)})
        assert blocks == [str(i) for i in range(1 + 3 if layer == "layer2" else 3)]
        strides = [g.nodes[f"{layer}.{i}.conv1"]["attrs"]["stride"] for i in range(len(blocks))]
        assert strides == [(2, 2)] + [(1, 1)] * (len(blocks) - 1)
        assert f"{layer}.0.downsample.0" in g and f"{layer}.1.downsample.0" not in g
        assert g.graph["scopes"][f"{layer}.0"].kind == "block"
    assert g.shape("layer2.3.relu_1") == (16, 8, 8) and g.shape("layer3.2.relu_1") == (32, 4, 4)
    assert g.outputs == ["layer3.2.relu_1"]

    g0 = loads(BASIC + "network n(blocks = 3) { input 8x8x8; conv(4, 1); layer: basic(4) * blocks }",
               params={"blocks": 0})
    assert g0.outputs == ["conv"]
    with pytest.raises(ArchError, match="at least 0"):
        loads("network n { input 3x8x8; relu * (0 - 1) }")


def test_joins_keep_branch_order_in_ports():
    g = loads("""
        network n(wide = true) {
            input 4x8x8
            conv(8, 1) as x
            cat: concat { conv(2, 1); conv(3, 1); @in -> conv(5, 1) }
            @x -> sum: add { conv(8, 3, pad=1); identity; @x }
            avg: mean { for k in [1, 3, 5] { conv(8, k, pad=k // 2) } ; if wide { maxpool(3, stride=1, pad=1) } }
            twice: add { @x; @x }
        }
    """)
    assert g.args("cat.concat") == ["cat.conv", "cat.conv_1", "cat.conv_2"]
    assert g.args("cat.conv") == ["conv"] and g.args("cat.conv_2") == ["input"]
    assert g.shape("cat.concat") == (2 + 3 + 5, 8, 8)
    assert g.args("sum.add") == ["sum.conv", "sum.identity", "conv"]
    assert g.args("avg.mean") == ["avg.conv", "avg.conv_1", "avg.conv_2", "avg.maxpool"]
    assert [g.nodes[n]["attrs"]["kernel"] for n in g.args("avg.mean")[:3]] == [(1, 1), (3, 3), (5, 5)]
    assert g.args("twice.add") == ["conv", "conv"]  # one tensor feeding two ports
    assert g.number_of_edges("conv", "twice.add") == 2
    s = rows(g)
    assert s["avg.mean"].other_ops == 4 * 8 * 8 * 8  # n adds/multiplies per element, n = 4 inputs
    assert s["sum.add"].other_ops == 2 * 8 * 8 * 8  # (n - 1) adds per element

    narrow = loads("""
        network n(wide = true) {
            input 4x8x8
            mean { conv(4, 1); if wide { identity } else { relu } }
        }
    """, params={"wide": False})
    assert [narrow.op(a) for a in narrow.args("mean")] == ["conv", "relu"]
    with pytest.raises(ArchError, match="needs two or more"):
        archdsl.loads("network n {\n input 3x8x8\n concat { relu }\n}")
    with pytest.raises(ArchError, match="different shapes"):
        archdsl.loads("network n {\n input 3x8x8\n add { conv(4, 1); conv(5, 1) }\n}")


def test_residual_identity_and_conditional_projection():
    g = loads(BASIC + """
        network n {
            input 8x16x16
            same: basic(8)
            wider: basic(16)
            down: basic(16, stride=2)
            always: residual { conv(16, 3, pad=1) } shortcut { conv(16, 1) }
            plain: residual { conv(16, 3, pad=1) -> relu }
        }
    """)
    # identity shortcut: add(residual path, block input)
    assert g.args("same.add") == ["same.bn2", "input"] and "same.downsample.0" not in g
    # projection because in.c (8) != c (16)
    assert g.args("wider.add") == ["wider.bn2", "wider.downsample.1"]
    assert g.args("wider.downsample.0") == ["same.relu_1"]
    assert g.nodes["wider.downsample.0"]["attrs"]["stride"] == (1, 1)
    # projection because stride != 1 (channels equal)
    assert g.args("down.add") == ["down.bn2", "down.downsample.1"]
    assert g.nodes["down.downsample.0"]["attrs"]["stride"] == (2, 2) and g.shape("down.add") == (16, 8, 8)
    # unconditional shortcut, and a labelled residual with an identity shortcut
    assert g.args("always.add") == ["always.conv", "always.conv_1"]
    assert g.args("plain.add") == ["plain.relu", "always.add"]
    assert g.graph["scopes"]["plain"].kind == "branches"
    r = rows(g)
    assert params_under(g, "wider") == (conv_p(8, 16, 3, bias=False) + bn_p(16) + conv_p(16, 16, 3, bias=False)
                                        + bn_p(16) + conv_p(8, 16, 1, bias=False) + bn_p(16))
    assert r["same.add"].params == 0


def test_dense_concatenates_input_and_new_features():
    g = loads("""
        network n {
            input 8x8x8
            d1: dense { bn -> relu -> conv(4, 3, pad=1) }
            dense { conv(2, 1) }
        }
    """)
    assert g.args("d1.concat") == ["input", "d1.conv"] and g.shape("d1.concat") == (8 + 4, 8, 8)
    assert g.args("concat") == ["d1.concat", "conv"] and g.shape("concat") == (12 + 2, 8, 8)


def test_named_tensors_wire_arbitrary_graphs():
    g = loads("""
        block side(c) {
            conv(c, 1) as a
            relu
            concat { @in; @a; identity }
        }
        network n {
            input 3x16x16
            stem: conv(8, 3, pad=1) -> relu as act
            conv(8, 3, pad=1) as b
            @act -> conv(8, 1) as c
            add { @b; @c; @stem }
            conv(2 * act.c + stem.h, 1)
            @in -> s: side(4)
            output s
        }
    """)
    assert g.args("relu") == ["stem"] and g.args("conv") == ["relu"] and g.args("conv_1") == ["relu"]
    assert g.args("add") == ["conv", "conv_1", "stem"]
    assert g.nodes["conv_2"]["attrs"]["out"] == 2 * 8 + 16  # act.c and stem.h in an expression
    # inside a block: `as` names a tensor and @in is the block's input
    assert g.args("s.conv") == ["input"]
    assert g.args("s.concat") == ["input", "s.conv", "s.identity"]
    assert g.args("s.identity") == ["s.relu"]
    assert g.shape("s.concat") == (3 + 4 + 4, 16, 16)
    with pytest.raises(ArchError, match="can only start a chain"):
        archdsl.loads("network n {\n input 3x8x8\n relu as a\n relu -> @a\n}")
    with pytest.raises(ArchError, match="no tensor named `nope`"):
        archdsl.loads("network n {\n input 3x8x8\n @nope -> relu\n}")
    # a block sees only its own tensors
    with pytest.raises(ArchError, match="no tensor named `x`"):
        archdsl.loads("block b() { @x -> relu }\nnetwork n {\n input 3x8x8\n relu as x\n b()\n}")


def test_several_outputs_in_declared_order():
    g = loads("""
        network n {
            input 3x16x16
            conv(8, 3, pad=1) -> relu as feat
            aux: (global_avgpool -> flatten -> fc(5))
            @feat -> maxpool(2) -> head: (global_avgpool -> flatten -> fc(10)) as logits
            output logits, aux, feat
        }
    """)
    assert g.outputs == ["head.2", "aux.2", "relu"]
    assert g.graph["output_names"] == ["logits", "aux", "feat"]
    assert [g.shape(o) for o in g.outputs] == [(10,), (5,), (8, 16, 16)]
    assert analyze(g).outputs == g.outputs
    # default: the last tensor
    assert loads("network n { input 3x8x8; conv(4, 1) -> relu }").outputs == ["relu"]
    with pytest.raises(ArchError, match="already an output"):
        archdsl.loads("network n {\n input 3x8x8\n relu as a\n output a, a\n}")


@pytest.mark.parametrize("mode, expected", [(0, ["relu", "conv"]), (1, ["conv", "conv"]), (2, ["maxpool", "conv"]),
                                            (7, ["maxpool", "conv"])])
def test_if_elif_else_and_conditional_expressions(mode, expected):
    g = loads("""
        network n(mode = 1, flag = false) {
            input 3x8x8
            if mode == 0 { relu } elif mode == 1 { conv(4, 1) } else { maxpool(2) }
            last: conv(8 if mode > 0 and not flag else 2, 1)
            if flag or mode > 5 { relu }
        }
    """, params={"mode": mode})
    assert [g.op(n) for n in g.order()][1:3] == expected
    assert g.nodes["last"]["attrs"]["out"] == (8 if mode > 0 else 2)
    assert g.outputs == (["relu"] if mode > 5 else ["last"])
    with pytest.raises(ArchError, match="must be true or false"):
        archdsl.loads("network n {\n input 3x8x8\n if 1 { relu }\n}")


def test_for_over_ranges_and_lists():
    g = loads("""
        network n {
            input 3x32x32
            for c in [4, 8, 16] { conv(c, 3, pad=1) -> relu }
            for i in range(1, 7, 2) { s{i}: conv(i * 2, 1) }
            for a in range(2) { for b in range(2) { m{a}x{b}: relu } }
            for p in [0.1, 0.2] { dropout(p) }
            tail: { for c, n in [(4, 1), (6, 2)] { (conv(c, 1) -> relu) * n } }
        }
    """)
    assert [g.nodes[n]["attrs"]["out"] for n in of_op(g, "conv") if "." not in n and n[0] == "c"] == [4, 8, 16]
    assert [(n, g.nodes[n]["attrs"]["out"]) for n in ("s1", "s3", "s5")] == [("s1", 2), ("s3", 6), ("s5", 10)]
    assert [n for n in g.nodes if n.startswith("m")] == ["m0x0", "m0x1", "m1x0", "m1x1"]
    assert [g.nodes[n]["attrs"]["p"] for n in of_op(g, "dropout")] == [0.1, 0.2]
    assert g.args("s1") == ["relu_2"] and g.args("m0x0") == ["s5"]
    # unpacking: one (c, n) pair per iteration, numbered as one sequence
    assert [(n, g.op(n), g.shape(n)[0]) for n in under(g, "tail") if g.op(n) == "conv"] == [
        ("tail.0", "conv", 4), ("tail.2", "conv", 6), ("tail.4", "conv", 6)]
    with pytest.raises(ArchError, match="`for` needs a list"):
        archdsl.loads("network n {\n input 3x8x8\n for i in 3 { relu }\n}")


def test_bounded_recursion_and_the_depth_limit():
    src = """
        block chain(n) { if n > 0 { conv(4, 1) -> chain(n - 1) } }
        block forever() { relu -> forever() }
        network n(depth = 5) {
            input 3x8x8
            c: chain(depth)
        }
    """
    g = loads(src)
    convs = of_op(g, "conv")
    assert convs == ["c.conv"] + ["c" + ".chain" * k + ".conv" for k in range(1, 5)]
    assert all(g.args(b) == [a] for a, b in zip(convs, convs[1:]))
    # chain(63) nests 64 calls (n = 63 .. 0): exactly the limit; chain(64) is one too many
    assert len(of_op(loads(src, params={"depth": 63}), "conv")) == 63
    with pytest.raises(ArchError, match="deeper than 64"):
        loads(src, params={"depth": 64})
    with pytest.raises(ArchError, match="deeper than 64 calls"):
        loads(src.replace("c: chain(depth)", "forever()"))
    with pytest.raises(ArchError, match="deeper than 8"):
        loads(src, params={"depth": 9}, limits=Limits(depth=8))


def test_in_shape_inside_blocks():
    g = loads("""
        block pool_to(size) {
            conv(5, 1)
            avgpool((in.h // size, in.w // size))
            conv(in.c * 2, 1)
        }
        network n {
            input 6x32x16
            p: pool_to(4)
        }
    """)
    assert g.nodes["p.avgpool"]["attrs"]["kernel"] == (32 // 4, 16 // 4) and g.shape("p.avgpool") == (5, 4, 4)
    # in.c is the block's input (6 channels), not the previous op's output (5)
    assert g.nodes["p.conv_1"]["attrs"]["out"] == 2 * 6
    with pytest.raises(ArchError, match="assertion failed: square input"):
        loads("""
            block b() { assert in.h == in.w, "square input"; relu }
            network n { input 3x8x16; b() }
        """)


def test_imports_relative_nested_and_shared(tmp_path, monkeypatch):
    (tmp_path / "lib" / "common").mkdir(parents=True)
    (tmp_path / "nets").mkdir()
    (tmp_path / "lib" / "common" / "act.arch").write_text("block act() { bn -> relu }\n")
    (tmp_path / "lib" / "blocks.arch").write_text(
        'import "common/act.arch"\nblock cbr(c, k = 3) { conv: conv(c, k, pad=k // 2, bias=false) -> act() }\n')
    (tmp_path / "lib" / "heads.arch").write_text(
        'import "common/act.arch"\nblock head(n) { act() -> global_avgpool -> flatten -> fc(n) }\n')
    main = tmp_path / "nets" / "main.arch"
    main.write_text('import "../lib/blocks.arch"\nimport "../lib/heads.arch"\n'
                    "network n(classes = 10) {\n input 3x8x8\n a: cbr(8)\n act()\n h: head(classes)\n}\n")
    g = archdsl.load(main)
    assert [n for n in g.order()] == ["input", "a.conv", "a.act.bn", "a.act.relu", "act.bn", "act.relu",
                                      "h.act.bn", "h.act.relu", "h.global_avgpool", "h.flatten", "h.fc"]
    assert g.nodes["a.conv"]["src"].file.endswith("blocks.arch")
    assert g.nodes["a.act.bn"]["src"].file.endswith("act.arch")
    assert g.shape("h.fc") == (10,)
    # loads(): imports resolve against the working directory
    monkeypatch.chdir(tmp_path / "lib")
    g2 = archdsl.loads('import "blocks.arch"\nnetwork m {\n input 3x8x8\n cbr(4, k=1)\n}\n')
    assert g2.nodes["cbr.conv"]["attrs"]["kernel"] == (1, 1)
    (tmp_path / "lib" / "loop_a.arch").write_text('import "loop_b.arch"\n')
    (tmp_path / "lib" / "loop_b.arch").write_text('import "loop_a.arch"\n')
    with pytest.raises(ArchError, match="circular import"):
        archdsl.loads('import "loop_a.arch"\nnetwork m { input 3x8x8; relu }\n')
    with pytest.raises(ArchError, match="cannot import"):
        archdsl.loads('import "missing.arch"\nnetwork m { input 3x8x8; relu }\n')


RESNET_SMALL = BASIC + """
network r(width = 8, classes = 10) {
    input 3 x 224 x 224
    conv1: conv(width, 3, pad=1, bias=false) -> bn1: bn -> relu
    layer1: basic(width) * 2
    layer2: (basic(2 * width, stride=2) -> basic(2 * width))
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


def resnet_small_params(w, classes=10):
    stem = conv_p(3, w, 3, bias=False) + bn_p(w)
    layer1 = 2 * (2 * conv_p(w, w, 3, bias=False) + 2 * bn_p(w))
    layer2 = (conv_p(w, 2 * w, 3, bias=False) + conv_p(2 * w, 2 * w, 3, bias=False) + 2 * bn_p(2 * w)
              + conv_p(w, 2 * w, 1, bias=False) + bn_p(2 * w)
              + 2 * conv_p(2 * w, 2 * w, 3, bias=False) + 2 * bn_p(2 * w))
    head = fc_p(2 * w, classes)
    return stem, layer1, layer2, head


def test_network_params_and_input_overridden_by_api():
    g = archdsl.loads(RESNET_SMALL, params={"width": 16}, input_shape=(3, 32, 32))
    assert g.graph["params"] == {"width": 16, "classes": 10}
    assert g.shape("input") == (3, 32, 32) and g.shape("layer2.1.relu_1") == (32, 16, 16)
    assert analyze(g).params == sum(resnet_small_params(16))
    with pytest.raises(ArchError, match="no parameter `widht`"):
        archdsl.loads(RESNET_SMALL, params={"widht": 16})
    with pytest.raises(ArchError, match="has no value"):
        archdsl.loads("network n(c) {\n input 3x8x8\n conv(c, 1)\n}")
    assert archdsl.loads("network n(c) {\n input 3x8x8\n conv(c, 1)\n}", params={"c": 5}).shape("conv") == (5, 8, 8)


def run_cli(capsys, *argv):
    rc = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_network_params_and_input_overridden_by_cli(tmp_path, capsys):
    path = tmp_path / "r.arch"
    path.write_text(RESNET_SMALL)
    rc, out, err = run_cli(capsys, "summary", path, "--set", "width=16", "--input", "3x32x32", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["params_env"] == {"width": 16, "classes": 10}
    assert data["input"] == [3, 32, 32]
    layers = {r["name"]: r for r in data["layers"]}
    assert layers["conv1"]["output_shape"] == [16, 32, 32]
    assert layers["layer2.0.conv1"]["output_shape"] == [32, 16, 16]
    assert layers["fc"]["params"] == fc_p(32, 10)
    assert data["totals"]["params"] == sum(resnet_small_params(16))
    assert data["totals"]["flops"] == 2 * data["totals"]["macs"]
    rc, _, err = run_cli(capsys, "summary", path, "--set", "depth=3")
    assert rc == 2 and "no parameter `depth`" in err


def test_cli_depth_collapses_scopes_into_rows_with_summed_params(tmp_path, capsys):
    path = tmp_path / "r.arch"
    path.write_text(RESNET_SMALL)
    w = 8
    stem, layer1, layer2, head = resnet_small_params(w)
    rc, out, err = run_cli(capsys, "summary", path, "--input", "3x32x32", "--depth", "1", "--json")
    assert rc == 0, err
    data = json.loads(out)
    names = [r["name"] for r in data["layers"]]
    assert names == ["input", "conv1", "bn1", "relu", "layer1", "layer2", "avgpool", "flatten", "fc"]
    layers = {r["name"]: r for r in data["layers"]}
    assert layers["layer1"]["params"] == layer1 and layers["layer2"]["params"] == layer2
    assert layers["layer1"]["nodes"] == 2 * 7  # conv1 bn1 relu conv2 bn2 add relu_1, twice
    assert layers["layer2"]["nodes"] == 7 + 2 + 7  # + the two downsample nodes
    assert layers["layer1"]["op"] == "sequence" and layers["layer2"]["output_shape"] == [16, 16, 16]
    assert data["totals"]["params"] == stem + layer1 + layer2 + head

    rc, out, err = run_cli(capsys, "summary", path, "--input", "3x32x32", "--depth", "2", "--json")
    data = json.loads(out)
    layers = {r["name"]: r for r in data["layers"]}
    assert [n for n in layers if n.startswith("layer")] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert layers["layer2.0"]["op"] == "block" and layers["layer2.0"]["nodes"] == 9
    assert layers["layer2.0"]["params"] == (conv_p(w, 2 * w, 3, bias=False) + conv_p(2 * w, 2 * w, 3, bias=False)
                                            + 3 * bn_p(2 * w) + conv_p(w, 2 * w, 1, bias=False))
    assert data["totals"]["params"] == stem + layer1 + layer2 + head


def test_cli_check_dump_prints_one_line_per_node(tmp_path, capsys):
    path = tmp_path / "r.arch"
    path.write_text(RESNET_SMALL)
    rc, out, err = run_cli(capsys, "check", path, "--dump")
    assert rc == 0, err
    g = archdsl.load(path)
    node_lines = [ln for ln in out.splitlines() if ln.startswith("  %")]
    assert [ln.split()[0] for ln in node_lines] == ["%" + n for n in g.order()]
    assert len(node_lines) == len(g) == 1 + 3 + 14 + 16 + 3  # input, stem, layer1, layer2, head
    rc, out, _ = run_cli(capsys, "check", path)
    assert rc == 0 and "ok" in out and f"{len(g)} nodes" in out


# =================================================================================================
# Part 2: every architecture of the lecture
# =================================================================================================

ALEXNET = """
# AlexNet as in the paper: 227 input (the lecture's table), LRN, and the two-GPU split as
# groups=2 on conv2, conv4 and conv5 (conv3 and the fc layers see both towers).  conv1 is split
# too, but both towers read the whole image, which is exactly one ungrouped conv of 96 filters.
block norm() { lrn(size=5, alpha=0.0001, beta=0.75, k=2) }
network alexnet(classes = 1000) {
    input 3 x 227 x 227
    conv1: conv(96, 11, stride=4) -> relu -> pool1: maxpool(3, stride=2) -> norm1: norm()
    conv2: conv(256, 5, pad=2, groups=2) -> relu -> pool2: maxpool(3, stride=2) -> norm2: norm()
    conv3: conv(384, 3, pad=1) -> relu
    conv4: conv(384, 3, pad=1, groups=2) -> relu
    conv5: conv(256, 3, pad=1, groups=2) -> relu -> pool3: maxpool(3, stride=2)
    flatten
    fc6: fc(4096) -> relu -> dropout
    fc7: fc(4096) -> relu -> dropout
    fc8: fc(classes)
}
"""


def test_alexnet():
    g = archdsl.loads(ALEXNET)
    r = rows(g)
    s1 = out_size(227, 11, 4)  # (227 - 11) / 4 + 1 = 55
    p1 = out_size(s1, 3, 2)  # 27
    p2 = out_size(p1, 3, 2)  # 13
    p3 = out_size(p2, 3, 2)  # 6
    assert (s1, p1, p2, p3) == (55, 27, 13, 6)
    expect = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1.lrn": (96, 27, 27), "conv2": (256, 27, 27),
              "pool2": (256, 13, 13), "norm2.lrn": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
              "conv5": (256, 13, 13), "pool3": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    assert {n: g.shape(n) for n in expect} == expect
    assert r["conv1"].params == (11 * 11 * 3) * 96 + 96 == 34944
    assert r["conv1"].macs == 11 * 11 * 3 * 96 * 55 * 55
    assert [g.nodes[n]["attrs"]["groups"] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]
    # grouped: each tower's filters see half the input channels
    assert r["conv2"].params == 5 * 5 * (96 // 2) * 256 + 256
    assert r["conv4"].params == 3 * 3 * (384 // 2) * 384 + 384
    assert r["conv5"].params == 3 * 3 * (384 // 2) * 256 + 256
    assert g.nodes["norm1.lrn"]["attrs"] == {"size": 5, "alpha": 0.0001, "beta": 0.75, "k": 2.0}
    total = (conv_p(3, 96, 11) + conv_p(96, 256, 5, groups=2) + conv_p(256, 384, 3) + conv_p(384, 384, 3, groups=2)
             + conv_p(384, 256, 3, groups=2) + fc_p(256 * 6 * 6, 4096) + fc_p(4096, 4096) + fc_p(4096, 1000))
    assert analyze(g).params == total == 60_965_224  # the paper's two-tower AlexNet

    torch = pytest.importorskip("torch")
    nn = torch.nn
    with torch.device("meta"):
        ref = {"conv1": nn.Conv2d(3, 96, 11, 4), "pool1": nn.MaxPool2d(3, 2),
               "norm1.lrn": nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
               "conv2": nn.Conv2d(96, 256, 5, padding=2, groups=2), "pool2": nn.MaxPool2d(3, 2),
               "norm2.lrn": nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
               "conv3": nn.Conv2d(256, 384, 3, padding=1), "conv4": nn.Conv2d(384, 384, 3, padding=1, groups=2),
               "conv5": nn.Conv2d(384, 256, 3, padding=1, groups=2), "pool3": nn.MaxPool2d(3, 2),
               "flatten": nn.Flatten(), "fc6": nn.Linear(9216, 4096), "fc7": nn.Linear(4096, 4096),
               "fc8": nn.Linear(4096, 1000)}
        x = torch.empty(1, 3, 227, 227)
        for name, m in ref.items():
            x = m(x)
            assert tuple(x.shape[1:]) == g.shape(name), name
            assert sum(p.numel() for p in m.parameters()) == r[name].params, name


ZFNET = """
# ZFNet = AlexNet with conv1 7x7 stride 2 and conv3-5 of 512, 1024, 512 filters (one GPU: no groups)
network zfnet(classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(96, 7, stride=2, pad=1) -> relu -> maxpool(3, stride=2, pad=1) -> lrn(size=5)
    conv2: conv(256, 5, stride=2) -> relu -> maxpool(3, stride=2, pad=1) -> lrn(size=5)
    for i, c in [(3, 512), (4, 1024), (5, 512)] {
        conv{i}: conv(c, 3, pad=1) -> relu
    }
    pool5: maxpool(3, stride=2)
    flatten -> fc6: fc(4096) -> relu -> dropout -> fc7: fc(4096) -> relu -> dropout -> fc8: fc(classes)
}
"""

ZFNET_WRITTEN_OUT = ZFNET.replace("""    for i, c in [(3, 512), (4, 1024), (5, 512)] {
        conv{i}: conv(c, 3, pad=1) -> relu
    }""", """    conv3: conv(512, 3, pad=1) -> relu
    conv4: conv(1024, 3, pad=1) -> relu
    conv5: conv(512, 3, pad=1) -> relu""")


@pytest.mark.parametrize("text", [ZFNET, ZFNET_WRITTEN_OUT], ids=["table", "written-out"])
def test_zfnet(text):
    assert "conv4: conv(1024" in ZFNET_WRITTEN_OUT
    g = archdsl.loads(text)
    s1 = out_size(224, 7, 2, 1)  # (224 + 2 - 7) // 2 + 1 = 110
    q1 = out_size(s1, 3, 2, 1)  # 55
    s2 = out_size(q1, 5, 2)  # 26
    q2 = out_size(s2, 3, 2, 1)  # 13
    q5 = out_size(q2, 3, 2)  # 6
    assert (s1, q1, s2, q2, q5) == (110, 55, 26, 13, 6)
    assert g.shape("conv1") == (96, 110, 110) and g.nodes["conv1"]["attrs"]["kernel"] == (7, 7)
    assert g.nodes["conv1"]["attrs"]["stride"] == (2, 2)
    assert [g.shape(c) for c in ("conv2", "conv3", "conv4", "conv5", "pool5")] == [
        (256, 26, 26), (512, 13, 13), (1024, 13, 13), (512, 13, 13), (512, 6, 6)]
    total = (conv_p(3, 96, 7) + conv_p(96, 256, 5) + conv_p(256, 512, 3) + conv_p(512, 1024, 3)
             + conv_p(1024, 512, 3) + fc_p(512 * 6 * 6, 4096) + fc_p(4096, 4096) + fc_p(4096, 1000))
    assert analyze(g).params == total


VGG_STAGES = """
# VGG: five stages of 3x3 convs (stride 1, pad 1) and a 2x2/2 max pool; 2, 2, then 3 (VGG16) or 4 (VGG19)
block stage(c, n) {
    convs: (conv(c, 3, pad=1) -> relu) * n
    pool: maxpool(2, stride=2)
}
network vgg(depth = 19, width = 64, fc_width = 4096, classes = 1000) {
    input 3 x 224 x 224
    let n = (depth - 7) // 3          # convs in each of stages 3-5: 3 (VGG16) or 4 (VGG19)
    features: { for m in [1, 2, 4, 8, 8] { stage(width * m, 2 if m < 4 else n) } }
    classifier: (flatten -> fc(fc_width) -> relu -> dropout -> fc(fc_width) -> relu -> dropout -> fc(classes))
}
"""


def vgg_params(convs_per_stage, width=64, fc_width=4096, classes=1000, hw=224):
    p, cin = 0, 3
    for s, n in enumerate(convs_per_stage):
        c = width * 2 ** min(s, 3)
        p += conv_p(cin, c, 3) + (n - 1) * conv_p(c, c, 3)
        cin = c
        hw //= 2
    return p + fc_p(cin * hw * hw, fc_width) + fc_p(fc_width, fc_width) + fc_p(fc_width, classes)


@pytest.mark.parametrize("depth, convs, known", [(16, [2, 2, 3, 3, 3], 138_357_544),
                                                 (19, [2, 2, 4, 4, 4], 143_667_240)])
def test_vgg_stage_repetition(depth, convs, known):
    g = archdsl.loads(VGG_STAGES, params={"depth": depth})
    assert len(of_op(g, "conv")) == sum(convs) == depth - 3
    for s, n in enumerate(convs):
        assert g.graph["scopes"][f"features.{s}"].kind == "block"
        assert [g.op(x) for x in under(g, f"features.{s}.convs")] == ["conv", "relu"] * n
        assert under(g, f"features.{s}.convs")[-1] == f"features.{s}.convs.{2 * n - 1}"
        assert g.nodes[f"features.{s}.convs.0"]["attrs"]["out"] == 64 * 2 ** min(s, 3)
    assert g.shape("features.4.pool") == (512, 7, 7) and g.shape("classifier.7") == (1000,)
    assert analyze(g).params == vgg_params(convs) == known  # known: torchvision's vgg16 / vgg19
    small = archdsl.loads(VGG_STAGES, params={"depth": depth, "width": 8, "fc_width": 64, "classes": 10},
                          input_shape=(3, 32, 32))
    assert small.shape("features.4.pool") == (64, 1, 1)
    assert analyze(small).params == vgg_params(convs, 8, 64, 10, hw=32)


VGG_CFG = """
# The torchvision way: a configuration list; "M" is a max pool.  Names match torchvision's
# (features.0 is the first conv, features.36 the last pool of VGG19, classifier.6 the last fc).
network vgg19 {
    input 3 x 224 x 224
    let cfg = [64, 64, "M", 128, 128, "M"] + ([256] * 4 + ["M"]) + ([512] * 4 + ["M"]) * 2
    features: {
        for v in cfg {
            if v == "M" { maxpool(2, stride=2) } else { conv(v, 3, pad=1) -> relu }
        }
    }
    global_avgpool
    flatten
    classifier: (fc(4096) -> relu -> dropout -> fc(4096) -> relu -> dropout -> fc(1000))
}
"""


def test_vgg_configuration_list_gives_torchvision_names():
    g = archdsl.loads(VGG_CFG)
    feats = under(g, "features")
    assert feats == [f"features.{i}" for i in range(16 * 2 + 5)]
    assert [n for n in feats if g.op(n) == "maxpool"] == ["features.4", "features.9", "features.18",
                                                           "features.27", "features.36"]
    assert g.op("features.34") == "conv" and g.shape("features.34") == (512, 14, 14)
    assert [n for n in under(g, "classifier") if g.op(n) == "fc"] == ["classifier.0", "classifier.3", "classifier.6"]


VGG_POW = VGG_STAGES.replace(
    "    features: { for m in [1, 2, 4, 8, 8] { stage(width * m, 2 if m < 4 else n) } }",
    "    for s in range(5) { stage{s + 1}: stage(width * 2 ** min(s, 3), 2 if s < 2 else n) }")


def test_power_operator():
    # `2 ** 3` once lexed as `2 * * 3` (the `*` of MUL_OP won over `**`)
    g = archdsl.loads("network n {\n input 3x8x8\n conv(4 * 2 ** 3, 1)\n}")
    assert g.shape("conv") == (32, 8, 8)
    assert VGG_POW != VGG_STAGES
    g = archdsl.loads(VGG_POW, params={"depth": 19})
    assert [g.nodes[f"stage{s + 1}.convs.0"]["attrs"]["out"] for s in range(5)] == [64, 128, 256, 512, 512]
    assert analyze(g).params == vgg_params([2, 2, 4, 4, 4])


NIN = """
# Network in Network: mlpconv = a k x k conv followed by two 1x1 convs (the "micro network"),
# each with a ReLU; no fc layers: the last mlpconv makes one map per class, then global average pooling.
block mlpconv(c, k, pad = 0, c1 = c, c2 = c1) {
    conv(c, k, pad=pad) -> relu -> conv(c1, 1) -> relu -> conv(c2, 1) -> relu
}
network nin(classes = 10) {
    input 3 x 32 x 32
    mlp1: mlpconv(192, 5, pad=2, c1=160, c2=96) -> maxpool(3, stride=2, pad=1) -> dropout
    mlp2: mlpconv(192, 5, pad=2) -> avgpool(3, stride=2, pad=1) -> dropout
    mlp3: mlpconv(192, 3, pad=1, c2=classes)
    gap: global_avgpool -> flatten
}
"""


def test_network_in_network():
    g = archdsl.loads(NIN)
    for b in ("mlp1", "mlp2", "mlp3"):
        convs = of_op(g, "conv", b)
        assert [g.nodes[c]["attrs"]["kernel"] for c in convs][1:] == [(1, 1), (1, 1)]
        assert [g.op(g.args(c)[0]) for c in convs[1:]] == ["relu", "relu"]
    assert g.shape("mlp1.conv_2") == (96, 32, 32) and g.shape("maxpool") == (96, 16, 16)
    assert g.shape("mlp2.conv_2") == (192, 16, 16) and g.shape("avgpool") == (192, 8, 8)
    assert g.shape("mlp3.conv_2") == (10, 8, 8) and g.shape("gap") == (10, 1, 1)
    assert of_op(g, "fc") == [] and g.shape(g.outputs[0]) == (10,)
    total = (conv_p(3, 192, 5) + conv_p(192, 160, 1) + conv_p(160, 96, 1)
             + conv_p(96, 192, 5) + 2 * conv_p(192, 192, 1)
             + conv_p(192, 192, 3) + conv_p(192, 192, 1) + conv_p(192, 10, 1))
    assert analyze(g).params == total


INCEPTION = """
block inception(c1, c3r, c3, c5r, c5, pp) {
    concat {
        b1: (conv(c1, 1) -> relu)
        b2: (conv(c3r, 1) -> relu -> conv(c3, 3, pad=1) -> relu)
        b3: (conv(c5r, 1) -> relu -> conv(c5, 5, pad=2) -> relu)
        b4: (maxpool(3, stride=1, pad=1) -> conv(pp, 1) -> relu)
    }
}
block aux_head(classes) {
    avgpool(5, stride=3) -> conv(128, 1) -> relu -> flatten -> fc(1024) -> relu -> dropout(0.7) -> fc(classes)
}
network googlenet_part(classes = 1000) {
    input 192 x 28 x 28
    inc3a: inception(64, 96, 128, 16, 32, 32)
    inc3b: inception(128, 128, 192, 32, 96, 64)
    maxpool(3, stride=2, pad=1)
    inc4a: inception(192, 96, 208, 16, 48, 64) as a4
    aux: aux_head(classes)
    @a4 -> inc4b: inception(160, 112, 224, 24, 64, 64)
    global_avgpool -> flatten -> dropout(0.4) -> fc(classes) as logits
    output logits, aux
}
"""


def inception_params(cin, c1, c3r, c3, c5r, c5, pp):
    return (conv_p(cin, c1, 1) + conv_p(cin, c3r, 1) + conv_p(c3r, c3, 3) + conv_p(cin, c5r, 1)
            + conv_p(c5r, c5, 5) + conv_p(cin, pp, 1))


def test_googlenet_inception_and_auxiliary_output():
    g = archdsl.loads(INCEPTION)
    assert g.args("inc3a.concat") == ["inc3a.b1.1", "inc3a.b2.3", "inc3a.b3.3", "inc3a.b4.2"]
    assert [g.shape(a)[0] for a in g.args("inc3a.concat")] == [64, 128, 32, 32]
    assert all(g.args(f"inc3a.{b}.0") == ["input"] for b in ("b1", "b2", "b3", "b4"))
    assert g.shape("inc3a.concat") == (64 + 128 + 32 + 32, 28, 28) == (256, 28, 28)
    assert g.shape("inc3b.concat") == (128 + 192 + 96 + 64, 28, 28) == (480, 28, 28)
    assert g.shape("inc4a.concat") == (192 + 208 + 48 + 64, 14, 14) == (512, 14, 14)
    assert params_under(g, "inc3a") == inception_params(192, 64, 96, 128, 16, 32, 32)
    assert params_under(g, "inc4a") == inception_params(480, 192, 96, 208, 16, 48, 64)
    # the auxiliary classifier hangs off inc4a and is the second output
    assert g.args("aux.avgpool") == ["inc4a.concat"] and g.shape("aux.avgpool") == (512, out_size(14, 5, 3), 4)
    assert g.args("inc4b.b1.0") == ["inc4a.concat"]
    assert g.graph["output_names"] == ["logits", "aux"] and g.outputs == ["fc", "aux.fc_1"]
    assert params_under(g, "aux") == conv_p(512, 128, 1) + fc_p(128 * 4 * 4, 1024) + fc_p(1024, 1000)


RESNET18 = BASIC + """
network resnet18(width = 64, classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(width, 7, stride=2, pad=3, bias=false) -> bn1: bn -> relu -> maxpool: maxpool(3, stride=2, pad=1)
    layer1: basic(width) * 2
    layer2: (basic(2 * width, stride=2) -> basic(2 * width))
    layer3: (basic(4 * width, stride=2) -> basic(4 * width))
    layer4: (basic(8 * width, stride=2) -> basic(8 * width))
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


RESNET_TABLE = BASIC + """
network resnet(blocks = [3, 4, 6, 3], width = 64, classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(width, 7, stride=2, pad=3, bias=false) -> bn1: bn -> relu -> maxpool: maxpool(3, stride=2, pad=1)
    for s in range(len(blocks)) {
        let c = width * 2 ** s
        layer{s + 1}: (basic(c, stride = 1 if s == 0 else 2) -> basic(c) * (blocks[s] - 1))
    }
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


def resnet_basic_params(blocks, width=64, classes=1000):
    total, cin = conv_p(3, width, 7, bias=False) + bn_p(width), width
    for s, n in enumerate(blocks):
        w = width * 2 ** s
        total += conv_p(cin, w, 3, bias=False) + conv_p(w, w, 3, bias=False) + 2 * bn_p(w)
        if s > 0:
            total += conv_p(cin, w, 1, bias=False) + bn_p(w)
        total += (n - 1) * (2 * conv_p(w, w, 3, bias=False) + 2 * bn_p(w))
        cin = w
    return total + fc_p(cin, classes)


@pytest.mark.parametrize("blocks, known", [([3, 4, 6, 3], 21_797_672), ([2, 2, 2, 2], 11_689_512)])
def test_resnet_stage_table(blocks, known):
    g = archdsl.loads(RESNET_TABLE, params={"blocks": blocks})
    for s, n in enumerate(blocks, 1):
        assert sorted({x.split(".")[1] for x in under(g, f"layer{s}")}) == [str(i) for i in range(n)]
    assert g.shape(f"layer4.{blocks[3] - 1}.relu_1") == (512, 7, 7)
    assert analyze(g).params == resnet_basic_params(blocks) == known  # torchvision's resnet34 / resnet18


def test_resnet_basic_blocks():
    g = archdsl.loads(RESNET18)
    assert g.shape("maxpool") == (64, 56, 56)
    assert [g.shape(f"layer{s}.1.relu_1") for s in (1, 2, 3, 4)] == [
        (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert "layer1.0.downsample.0" not in g and all(f"layer{s}.0.downsample.0" in g for s in (2, 3, 4))
    assert g.args("layer3.1.add") == ["layer3.1.bn2", "layer3.0.relu_1"]
    assert analyze(g).params == resnet_basic_params([2, 2, 2, 2]) == 11_689_512  # torchvision's resnet18


PREACT = """
# Pre-activation block (He et al. 2016): BN -> ReLU before each conv, no ReLU after the add.
# The projection shortcut starts from the pre-activated tensor (`as pre`); the identity carries
# the raw block input (`@in`).  `drop` puts dropout between the convs (Wide ResNet).
block preact(c, stride = 1, drop = 0.0) {
    bn -> relu as pre
    add {
        {
            conv1: conv(c, 3, stride=stride, pad=1, bias=false) -> bn -> relu
            if drop > 0 { dropout(drop) }
            conv2: conv(c, 3, pad=1, bias=false)
        }
        if stride != 1 or in.c != c { @pre -> shortcut: conv(c, 1, stride=stride, bias=false) } else { @in }
    }
}
"""


def test_preactivation_resnet():
    g = archdsl.loads(PREACT + """
        network preresnet(width = 8) {
            input 3 x 32 x 32
            conv1: conv(width, 3, pad=1, bias=false)
            layer1: preact(width) * 2
            layer2: (preact(2 * width, stride=2) -> preact(2 * width))
            bn -> relu -> global_avgpool -> flatten -> fc(10)
        }
    """)
    # the block starts with bn -> relu; conv1 reads the pre-activation
    assert g.args("layer1.0.bn") == ["conv1"] and g.args("layer1.0.conv1") == ["layer1.0.relu"]
    # identity: the raw block input (conv1 of the stem / the previous add), not the pre-activation
    assert g.args("layer1.0.add") == ["layer1.0.conv2", "conv1"]
    assert g.args("layer1.1.add") == ["layer1.1.conv2", "layer1.0.add"]
    # projection: from the pre-activated tensor
    assert g.args("layer2.0.shortcut") == ["layer2.0.relu"]
    assert g.args("layer2.0.add") == ["layer2.0.conv2", "layer2.0.shortcut"]
    assert g.shape("layer2.0.add") == (16, 16, 16)
    # no relu after the add: the next block's bn reads the sum
    assert g.args("layer2.0.bn") == ["layer1.1.add"]
    assert of_op(g, "dropout") == []
    assert params_under(g, "layer2") == (bn_p(8) + conv_p(8, 16, 3, bias=False)
                                         + bn_p(16) + conv_p(16, 16, 3, bias=False)
                                         + conv_p(8, 16, 1, bias=False)
                                         + 2 * (bn_p(16) + conv_p(16, 16, 3, bias=False)))


WRN = PREACT + """
# Wide ResNet WRN-depth-k: three groups of n = (depth - 4) / 6 pre-activation blocks, widths 16k, 32k, 64k
network wrn(depth = 16, k = 4, drop = 0.0, classes = 10) {
    input 3 x 32 x 32
    assert (depth - 4) % 6 == 0, "WRN depth is 6n + 4"
    let n = (depth - 4) / 6
    conv1: conv(16, 3, pad=1, bias=false)
    group1: { for i in range(n) { preact(16 * k, drop=drop) } }
    group2: { for i in range(n) { preact(32 * k, stride = 2 if i == 0 else 1, drop=drop) } }
    group3: { for i in range(n) { preact(64 * k, stride = 2 if i == 0 else 1, drop=drop) } }
    bn -> relu -> global_avgpool -> flatten -> fc(classes)
}
"""


def wrn_params(depth, k, classes=10):
    n = (depth - 4) // 6
    p, cin = conv_p(3, 16, 3, bias=False), 16
    for grp in range(3):
        w = 16 * k * 2 ** grp
        for i in range(n):
            stride = 2 if grp > 0 and i == 0 else 1
            p += bn_p(cin) + conv_p(cin, w, 3, bias=False) + bn_p(w) + conv_p(w, w, 3, bias=False)
            if stride != 1 or cin != w:
                p += conv_p(cin, w, 1, bias=False)
            cin = w
    return p + bn_p(cin) + fc_p(cin, classes)


@pytest.mark.parametrize("depth, k", [(16, 1), (16, 4), (10, 2), (28, 10)])
def test_wide_resnet(depth, k):
    g = archdsl.loads(WRN, params={"depth": depth, "k": k, "drop": 0.3})
    n = (depth - 4) // 6
    for grp in (1, 2, 3):
        assert sorted({x.split(".")[1] for x in under(g, f"group{grp}")}) == [str(i) for i in range(n)]
        w = 16 * k * 2 ** (grp - 1)
        assert g.shape(f"group{grp}.{n - 1}.add") == (w, 32 // 2 ** (grp - 1), 32 // 2 ** (grp - 1))
    # WRN-d-1 has no projection in group 1 (16 -> 16 channels, stride 1); k > 1 needs one
    assert ("group1.0.shortcut" in g) == (k != 1)
    assert len(of_op(g, "dropout")) == 3 * n
    assert analyze(g).params == wrn_params(depth, k)
    if (depth, k) == (28, 10):
        assert analyze(g).params == 36_479_194  # the usual count of WRN-28-10 on CIFAR-10
    with pytest.raises(ArchError, match="WRN depth is 6n"):
        archdsl.loads(WRN, params={"depth": 17})  # (17 - 4) / 6 is not a whole number of blocks
    with pytest.raises(ArchError, match="range"):  # without the assert, range() rejects 13/6
        archdsl.loads(WRN.replace('assert (depth - 4) % 6 == 0, "WRN depth is 6n + 4"', ""), params={"depth": 17})


RESNEXT = """
# ResNeXt: the bottleneck's 3x3 conv is grouped; cardinality = groups, d channels per group
block resnext(c, card = 32, d = 4, stride = 1) {
    residual {
        reduce: conv(card * d, 1, bias=false) -> bn -> relu
        grouped: conv(card * d, 3, stride=stride, pad=1, groups=card, bias=false) -> bn -> relu
        expand: conv(c, 1, bias=false) -> bn
    } shortcut if stride != 1 or in.c != c {
        proj: conv(c, 1, stride=stride, bias=false) -> bn
    }
    relu
}
# the equivalent "aggregated transformations" form (a): `card` separate paths summed
block resnext_paths(c, card = 32, d = 4) {
    add {
        for i in range(card) {
            path{i}: (conv(d, 1, bias=false) -> conv(d, 3, pad=1, bias=false) -> conv(c, 1, bias=false))
        }
    }
}
"""


def test_resnext_cardinality_is_groups():
    g = archdsl.loads(RESNEXT + """
        network part {
            input 64 x 56 x 56
            b1: resnext(256)
            b2: resnext(256)
            b3: resnext(512, d=8, stride=2)
        }
    """)
    r = rows(g)
    C, card = 32 * 4, 32
    assert g.nodes["b1.grouped"]["attrs"]["groups"] == 32
    assert r["b1.grouped"].params == 3 * 3 * (C // card) * C == 4608  # vs 3*3*128*128 = 147456 dense
    assert r["b1.grouped"].macs == 3 * 3 * (C // card) * C * 56 * 56
    assert r["b3.grouped"].params == 3 * 3 * (256 // 32) * 256 and g.shape("b3.grouped") == (256, 28, 28)
    assert "b1.proj" in g and "b2.proj" not in g and "b3.proj" in g
    assert params_under(g, "b1") == (conv_p(64, C, 1, bias=False) + bn_p(C) + 3 * 3 * (C // card) * C + bn_p(C)
                                     + conv_p(C, 256, 1, bias=False) + bn_p(256)
                                     + conv_p(64, 256, 1, bias=False) + bn_p(256))

    paths = archdsl.loads(RESNEXT + "network p {\n input 256 x 8 x 8\n x: resnext_paths(256)\n}")
    assert len(paths.args("x.add")) == 32 and paths.args("x.add")[0] == "x.path0.2"
    grouped = archdsl.loads(RESNEXT + "network p {\n input 256 x 8 x 8\n reduce: conv(128, 1, bias=false) -> "
                                      "conv(128, 3, pad=1, groups=32, bias=false) -> conv(256, 1, bias=false)\n}")
    # 32 * (256*4 + 9*4*4 + 4*256) = 256*128 + 9*4*128 + 128*256: the two forms have the same weights
    assert analyze(paths).params == 32 * (256 * 4 + 9 * 4 * 4 + 4 * 256) == analyze(grouped).params


RESNEXT50 = RESNEXT + """
network resnext50 {
    input 3 x 224 x 224
    conv1: conv(64, 7, stride=2, pad=3, bias=false) -> bn -> relu -> maxpool(3, stride=2, pad=1)
    layer1: resnext(256) * 3
    layer2: (resnext(512, d=8, stride=2) -> resnext(512, d=8) * 3)
    layer3: (resnext(1024, d=16, stride=2) -> resnext(1024, d=16) * 5)
    layer4: (resnext(2048, d=32, stride=2) -> resnext(2048, d=32) * 2)
    global_avgpool -> flatten -> fc(1000)
}
"""


def test_resnext50_32x4d():
    g = archdsl.loads(RESNEXT50)
    total, cin = conv_p(3, 64, 7, bias=False) + bn_p(64), 64
    for s, n in enumerate([3, 4, 6, 3]):
        out, C = 256 * 2 ** s, 128 * 2 ** s
        for i in range(n):
            total += conv_p(cin, C, 1, bias=False) + conv_p(C, C, 3, groups=32, bias=False) + 2 * bn_p(C)
            total += conv_p(C, out, 1, bias=False) + bn_p(out)
            if i == 0:
                total += conv_p(cin, out, 1, bias=False) + bn_p(out)
            cin = out
    total += fc_p(2048, 1000)
    assert analyze(g).params == total == 25_028_904  # torchvision's resnext50_32x4d
    assert g.shape("layer4.2.relu_2") == (2048, 7, 7)


STOCHASTIC_DEPTH = """
# Stochastic depth: block l of L drops its residual path with probability l/L * (1 - p_last)
# (linear decay of the survival probability to p_last); drop_path is an identity at inference.
block sd_block(c, p, stride = 1) {
    residual {
        conv(c, 3, stride=stride, pad=1, bias=false) -> bn -> relu
        conv(c, 3, pad=1, bias=false) -> bn
        drop_path(p)
    } shortcut if stride != 1 or in.c != c {
        conv(c, 1, stride=stride, bias=false) -> bn
    }
    relu
}
network sd_resnet(n = 3, p_last = 0.5, width = 16) {
    input 3 x 32 x 32
    conv(width, 3, pad=1, bias=false) -> bn -> relu
    let L = 3 * n
    for s in range(3) {
        layer{s + 1}: {
            for i in range(n) {
                let l = s * n + i + 1
                sd_block(width * 2 ** s, l / L * (1 - p_last), stride = 2 if s > 0 and i == 0 else 1)
            }
        }
    }
    global_avgpool -> flatten -> fc(10)
}
"""


@pytest.mark.parametrize("n, p_last", [(3, 0.5), (18, 0.5), (2, 0.2)])
def test_stochastic_depth_linear_decay(n, p_last):
    g = archdsl.loads(STOCHASTIC_DEPTH, params={"n": n, "p_last": p_last})
    L = 3 * n
    drops = of_op(g, "drop_path")
    assert drops == [f"layer{s + 1}.{i}.drop_path" for s in range(3) for i in range(n)]
    for l, node in enumerate(drops, 1):
        assert g.nodes[node]["attrs"]["p"] == pytest.approx(l / L * (1 - p_last))
        block = node.rsplit(".", 1)[0]
        assert g.args(f"{block}.add")[0] == node  # drop_path ends the residual path, before the add
    assert g.nodes[drops[-1]]["attrs"]["p"] == pytest.approx(1 - p_last)
    r = rows(g)
    assert all(r[d].params == 0 and r[d].activations == 0 for d in drops)


DENSENET = """
block dense_layer(g, bn_size = 4) {
    dense { bn -> relu -> conv(bn_size * g, 1, bias=false) -> bn -> relu -> conv(g, 3, pad=1, bias=false) }
}
block dense_block(n, g) { for i in range(n) { denselayer{i + 1}: dense_layer(g) } }
block transition(c = in.c // 2) { bn -> relu -> conv(c, 1, bias=false) -> avgpool(2, stride=2) }
network densenet(n = 4, g = 12, blocks = 3, classes = 10) {
    input 3 x 32 x 32
    conv0: conv(2 * g, 3, pad=1, bias=false)
    for b in range(blocks) {
        denseblock{b + 1}: dense_block(n, g)
        if b < blocks - 1 { transition{b + 1}: transition() }
    }
    bn -> relu -> global_avgpool -> flatten -> fc(classes)
}
"""


@pytest.mark.parametrize("n, g_", [(4, 12), (6, 32)])
def test_densenet(n, g_):
    g = archdsl.loads(DENSENET, params={"n": n, "g": g_})
    c, total, hw = 2 * g_, conv_p(3, 2 * g_, 3, bias=False), 32
    prev = "conv0"
    for b in range(1, 4):
        for i in range(1, n + 1):
            layer = f"denseblock{b}.denselayer{i}"
            # output = concat(input, new features), the input first
            assert g.args(f"{layer}.concat") == [prev, f"{layer}.conv_1"]
            assert g.shape(f"{layer}.concat") == (c + g_, hw, hw)
            total += bn_p(c) + conv_p(c, 4 * g_, 1, bias=False) + bn_p(4 * g_) + conv_p(4 * g_, g_, 3, bias=False)
            c += g_
            prev = f"{layer}.concat"
        if b < 3:
            total += bn_p(c) + conv_p(c, c // 2, 1, bias=False)
            c, hw = c // 2, hw // 2
            assert g.shape(f"transition{b}.avgpool") == (c, hw, hw)
            prev = f"transition{b}.avgpool"
    total += bn_p(c) + fc_p(c, 10)
    assert analyze(g).params == total


FRACTAL = """
# FractalNet: f_1 = conv;  f_{C+1}(x) = join(f_C(f_C(x)), conv(x)), the join an elementwise mean.
# Written literally this nests joins (mean(mean(..), conv)); the paper's join instead averages,
# in one flat mean, every column that meets at that point (Fig. 1: joins of 2, 3, 2, 4 inputs for
# four columns).  The elaborator gives the paper's join: an unlabelled, unnamed `mean` that ends
# a branch of a `mean` is merged into it (a labelled or named mean is kept, so literal nesting
# stays expressible).  `fractal3_flat` writes the three-column flat structure out by hand with
# named tensors, for comparison.
block cbr(c) { conv(c, 3, pad=1) -> bn -> relu }
block fractal(c, cols) {
    if cols == 1 {
        cbr(c)
    } else {
        mean {
            fractal(c, cols - 1) -> fractal(c, cols - 1)
            cbr(c)
        }
    }
}
block fractal3_flat(c) {
    mean {
        cbr(c) -> cbr(c)        # column 3, first two convs
        cbr(c)                  # column 2, first conv
    } as j1
    mean {
        @j1 -> cbr(c) -> cbr(c) # column 3, last two convs
        @j1 -> cbr(c)           # column 2, second conv
        @in -> cbr(c)           # column 1
    }
}
network fractalnet(cols = 3, widths = [8, 16], classes = 10, flat = false) {
    input 3 x 32 x 32
    features: {
        for c in widths {
            if flat { fractal3_flat(c) } else { fractal(c, cols) }
            maxpool(2)
        }
    }
    global_avgpool -> flatten -> fc(classes)
}
"""


def longest_conv_path(g, start, end):
    depth = {}
    for n in g.order():
        preds = [depth[a] for a in g.args(n) if a in depth]
        if n == start:
            depth[n] = 0
        elif preds:
            depth[n] = max(preds) + (g.op(n) == "conv")
    return depth[end]


def trailing_zeros(j):
    return (j & -j).bit_length() - 1


@pytest.mark.parametrize("C", [3, 4])
def test_fractalnet_recursive(C):
    g = archdsl.loads(FRACTAL, params={"cols": C})
    for b, (cin, c) in enumerate([(3, 8), (8, 16)]):
        block = f"features.{2 * b}"
        block_in = "input" if b == 0 else "features.1"
        assert g.op(block_in) in ("input", "maxpool")
        convs, means = of_op(g, "conv", block), of_op(g, "mean", block)
        assert len(convs) == 2 ** C - 1  # n(1) = 1, n(C+1) = 2 n(C) + 1
        # one join after every second conv of the deepest column (2^(C-1) convs): 2^(C-2) joins;
        # join j (1-based) is where 2 + tz(j) columns meet (tz = trailing zero bits): 2, 3, 2, 4 for C = 4
        assert [len(g.args(m)) for m in means] == [2 + trailing_zeros(j) for j in range(1, 2 ** (C - 2) + 1)]
        assert sum(len(g.args(m)) for m in means) == 2 ** (C - 1) - 1 + 2 ** (C - 2)  # the nested form's inputs
        last = means[-1]
        assert len(g.args(last)) == C and g.users(last) == [f"features.{2 * b + 1}"]
        # the flat join's inputs, deepest column first; the shallowest is the single conv on the block input
        assert g.args(last)[-1] == f"{block}.cbr.relu" and g.args(f"{block}.cbr.conv") == [block_in]
        # one conv per column reads the block input; the deepest column has 2^(C-1) convs
        assert len([x for x in convs if g.args(x) == [block_in]]) == C
        assert longest_conv_path(g, block_in, last) == 2 ** (C - 1)
        assert params_under(g, block) == (C * conv_p(cin, c, 3) + (2 ** C - 1 - C) * conv_p(c, c, 3)
                                          + (2 ** C - 1) * bn_p(c))
    assert g.shape("features.3") == (16, 8, 8)


def test_fractalnet_flat_joins_written_out_match_the_recursive_form():
    flat = archdsl.loads(FRACTAL, params={"flat": True})
    rec = archdsl.loads(FRACTAL, params={"cols": 3})
    means = of_op(flat, "mean", "features.0")
    assert [len(flat.args(m)) for m in means] == [2, 3]
    assert len(of_op(flat, "conv", "features.0")) == 2 ** 3 - 1
    assert flat.args(means[1]) == ["features.0.cbr_4.relu", "features.0.cbr_5.relu", "features.0.cbr_6.relu"]
    assert flat.args("features.0.cbr_6.conv") == ["input"] and flat.args("features.0.cbr_5.conv") == [means[0]]
    assert longest_conv_path(flat, "input", means[1]) == 4
    assert analyze(flat).params == analyze(rec).params
    arity = [sorted(len(x.args(m)) for m in of_op(x, "mean", "features.0")) for x in (rec, flat)]
    assert arity[0] == arity[1] == [2, 3]


def test_a_labelled_mean_stays_nested():
    g = loads("""
        network n {
            input 4x8x8
            mean { inner: mean { conv(4, 1); conv(4, 1) }; conv(4, 1) }
        }
    """)
    assert [len(g.args(m)) for m in of_op(g, "mean")] == [2, 2]
    assert g.args("mean") == ["inner.mean", "conv"]


SQUEEZENET = """
# SqueezeNet 1.0: fire module = squeeze 1x1 -> concat(expand 1x1, expand 3x3).
# Fire i (i = 2..9) has 16 * (1 + (i - 2) // 2) squeeze and 4x as many expand filters of each kind.
block fire(s, e1, e3) {
    squeeze: conv(s, 1) -> relu
    concat {
        expand1x1: conv(e1, 1) -> relu
        expand3x3: conv(e3, 3, pad=1) -> relu
    }
}
network squeezenet(classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(96, 7, stride=2) -> relu -> maxpool(3, stride=2, ceil_mode=true)
    for i in range(2, 10) {
        let s = 16 * (1 + (i - 2) // 2)
        fire{i}: fire(s, 4 * s, 4 * s)
        if i == 4 or i == 8 { maxpool(3, stride=2, ceil_mode=true) }
    }
    dropout(0.5) -> conv10: conv(classes, 1) -> relu -> global_avgpool -> flatten
}
"""


def test_squeezenet_fire_modules():
    g = archdsl.loads(SQUEEZENET)
    # fire: the squeeze output feeds both expands; concat order is (1x1, 3x3)
    assert g.args("fire2.expand1x1") == ["fire2.relu"] and g.args("fire2.expand3x3") == ["fire2.relu"]
    assert g.args("fire2.concat") == ["fire2.relu_1", "fire2.relu_2"]
    a = out_size(224, 7, 2)  # 109
    b = out_size(a, 3, 2, ceil=True)  # 54
    c = out_size(b, 3, 2, ceil=True)  # 27
    d = out_size(c, 3, 2, ceil=True)  # 13
    assert (a, b, c, d) == (109, 54, 27, 13)
    assert g.shape("conv1") == (96, 109, 109) and g.shape("fire2.concat") == (128, 54, 54)
    assert g.shape("fire8.concat") == (512, 27, 27) and g.shape("conv10") == (1000, 13, 13)
    total, cin = conv_p(3, 96, 7), 96
    for i in range(2, 10):
        s = 16 * (1 + (i - 2) // 2)
        assert g.nodes[f"fire{i}.squeeze"]["attrs"]["out"] == s
        total += conv_p(cin, s, 1) + conv_p(s, 4 * s, 1) + conv_p(s, 4 * s, 3)
        cin = 8 * s
    total += conv_p(cin, 1000, 1)
    assert analyze(g).params == total == 1_248_424  # torchvision's squeezenet1_0

    torch = pytest.importorskip("torch")
    nn = torch.nn
    with torch.device("meta"):
        def fire(cin, s, e):
            return nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)
        x = nn.MaxPool2d(3, 2, ceil_mode=True)(nn.Conv2d(3, 96, 7, 2)(torch.empty(1, 3, 224, 224)))
        assert tuple(x.shape[1:]) == g.shape("maxpool")
        cin = 96
        for i in range(2, 10):
            s = 16 * (1 + (i - 2) // 2)
            sq, e1, e3 = fire(cin, s, 4 * s)
            y = sq(x)
            x = torch.cat([e1(y), e3(y)], 1)
            assert tuple(x.shape[1:]) == g.shape(f"fire{i}.concat")
            if i in (4, 8):
                x = nn.MaxPool2d(3, 2, ceil_mode=True)(x)
            cin = 8 * s


LENET5 = """
# LeNet-5 with ReLU and average pooling (the language has no tanh; C3's partial connection table
# is not expressible, so C3 is fully connected, as in most modern re-implementations).
network lenet5(classes = 10) {
    input 1 x 32 x 32
    c1: conv(6, 5) -> relu -> s2: avgpool(2)
    c3: conv(16, 5) -> relu -> s4: avgpool(2)
    c5: conv(120, 5) -> relu -> flatten
    f6: fc(84) -> relu
    out: fc(classes)
}
"""


def test_lenet5():
    g = archdsl.loads(LENET5)
    assert [g.shape(n) for n in ("c1", "s2", "c3", "s4", "c5", "f6", "out")] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
    r = rows(g)
    assert [r[n].params for n in ("c1", "c3", "c5", "f6", "out")] == [
        (5 * 5 * 1 + 1) * 6, (5 * 5 * 6 + 1) * 16, (5 * 5 * 16 + 1) * 120, (120 + 1) * 84, (84 + 1) * 10]
    assert analyze(g).params == 156 + 2416 + 48120 + 10164 + 850


# ---- later additions: templates in `as`/`@`, slices and sum, continuation lines, ops' names ----


def test_as_and_references_take_templates():
    g = archdsl.loads(textwrap.dedent("""
        network cols {
            input 3 x 8 x 8
            identity as col{0}
            for j in range(1, 4) { @col{j - 1} -> conv(4 * j, 1) as col{j} }
            concat { @col{1}; @col{2}; @col{3} }
        }
    """))
    assert g.args("concat") == ["conv", "conv_1", "conv_2"]
    assert g.shape("concat") == (4 + 8 + 12, 8, 8)
    assert g.args("conv_2") == ["conv_1"]


def test_stochastic_depth_over_unequal_stages_with_slices_and_sum():
    g = archdsl.loads(textwrap.dedent("""
        network sd(blocks = [3, 4, 6, 3], p_last = 0.5) {
            input 3 x 8 x 8
            for s in range(len(blocks)) {
                for i in range(blocks[s]) {
                    drop_path(p_last * (sum(blocks[:s]) + i + 1) / sum(blocks))
                }
            }
        }
    """))
    ps = [d["attrs"]["p"] for _, d in g.walk() if d["op"] == "drop_path"]
    total = 3 + 4 + 6 + 3
    assert ps == pytest.approx([0.5 * l / total for l in range(1, total + 1)])


def test_else_elif_and_shortcut_may_start_a_line():
    g = archdsl.loads(textwrap.dedent("""
        block b(c) {
            residual { conv(c, 3, pad=1) }
            shortcut if in.c != c { conv(c, 1) }
        }
        network n(k = 2) {
            input 3 x 8 x 8
            if k == 1 {
                relu
            }
            elif k == 2 {
                b(4)
            }
            else {
                identity
            }
        }
    """))
    assert g.args("b.add") == ["b.conv", "b.conv_1"]
    with pytest.raises(ArchError, match="unexpected"):  # `else` still needs an `if` before it
        archdsl.loads("network n {\n    input 3x8x8\n    relu\n    else { relu }\n}")


def test_a_block_cannot_take_an_ops_name():
    with pytest.raises(ArchError, match="block `relu` has the name of a built-in op") as exc:
        archdsl.loads("block relu() { conv(5, 1) }\nnetwork n { input 3x8x8; relu }")
    assert exc.value.loc.line == 1


@pytest.mark.parametrize("construct", ["residual { }", "dense { }"])
def test_empty_residual_or_dense_is_an_error_not_x_plus_x(construct):
    with pytest.raises(ArchError, match="needs a body"):
        archdsl.loads(f"network n {{ input 3x8x8; {construct} }}")


def test_whole_floats_are_integers_for_op_arguments():
    g = archdsl.loads("network n { input 3x8x8; conv(3.5 * 2, 1.0 * 3, pad=0.5 * 2) }")
    assert g.nodes["conv"]["attrs"]["out"] == 7 and g.nodes["conv"]["attrs"]["kernel"] == (3, 3)
    assert g.nodes["conv"]["attrs"]["pad"] == (1, 1, 1, 1)
    with pytest.raises(ArchError, match="`out` must be an integer"):
        archdsl.loads("network n { input 3x8x8; conv(3.5, 1) }")


def test_a_repeated_label_says_it_was_made_by_the_repetition():
    with pytest.raises(ArchError) as exc:
        archdsl.loads("network n {\n    input 3x8x8\n    s: (c: conv(4, 3, pad=1)) * 2\n}")
    assert "made again by a repetition or a loop" in exc.value.message
    assert "c{i}" in exc.value.hint and not exc.value.notes


def test_output_inside_a_labelled_group_at_the_top_level():
    g = archdsl.loads("network n {\n input 3x8x8\n f: { relu as a; conv(2, 1) as b; output b, a }\n}")
    assert g.outputs == ["f.1", "f.0"] and g.graph["output_names"] == ["b", "a"]


def test_elaboration_work_is_bounded_even_when_nothing_is_built():
    with pytest.raises(ArchError, match="more than 1,000 steps"):
        archdsl.loads("network n {\n input 3x8x8\n for i in range(100) { for j in range(100) { let a = i } }\n}",
                      limits=Limits(steps=1000))


def test_a_network_alias_is_its_target_with_new_defaults(tmp_path):
    (tmp_path / "base.arch").write_text(textwrap.dedent("""
        network base(width = 8, classes = 10) {
            input 3 x 8 x 8
            conv(width, 3, pad=1) -> global_avgpool -> flatten -> fc(classes)
        }
    """))
    (tmp_path / "alias.arch").write_text('import "base.arch"\nnetwork wide = base(width = 32)\n'
                                         "network wider = wide(classes = 5)\n")
    g = archdsl.load(tmp_path / "alias.arch", network="wide")
    assert g.name == "wide" and g.graph["params"] == {"width": 32, "classes": 10}
    assert g.shape("conv") == (32, 8, 8)
    g = archdsl.load(tmp_path / "alias.arch", network="wider", params={"width": 4})  # --set still wins
    assert g.graph["params"] == {"width": 4, "classes": 5} and g.shape("fc") == (5,)
    with pytest.raises(ArchError, match="has no parameter `widht`"):
        archdsl.loads('network base(width = 8) { input 3x8x8; relu }\nnetwork w = base(widht = 2)', network="w")
    with pytest.raises(ArchError, match="`nope` is not a network"):
        archdsl.loads("network w = nope(width = 2)")
    with pytest.raises(ArchError, match="in terms of itself"):
        archdsl.loads("network a = b()\nnetwork b = a()", network="a")


def test_membership_tests():
    g = archdsl.loads(textwrap.dedent("""
        network m(depth = 16) {
            input 3 x 8 x 8
            assert depth in [11, 13, 16, 19], "VGG has 11, 13, 16 or 19 layers"
            if depth not in (11, 13) { relu }
            if true in [1, 2] { identity }
        }
    """))
    assert [d["op"] for _, d in g.walk()] == ["input", "relu"]  # `true in [1, 2]` is false: no bool/int mixing
    with pytest.raises(ArchError, match="VGG has 11, 13, 16 or 19 layers"):
        archdsl.loads("network m(depth = 12) {\n input 3x8x8\n assert depth in [11, 13], \"VGG has 11, 13, 16 or 19 layers\"\n relu\n}")
    with pytest.raises(ArchError, match="`in` needs a list"):
        archdsl.loads("network m { input 3x8x8; if 3 in 4 { relu } }")
