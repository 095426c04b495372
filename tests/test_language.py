"""The language expresses every construct of DESIGN.md.

Each construct is checked on the elaborated graph: node names, ops, attributes, edges in port
order (`g.args(n)`), shapes, outputs and scopes, with the naming rules of the docstring of
archdsl/elaborate/elaborator.py.  The architectures of the lecture, written with these constructs,
are checked with the model zoo in tests/test_zoo.py.

Every program is elaborated symbolically; the file runs in a few seconds.
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


def test_a_labelled_mean_stays_nested():
    g = loads("""
        network n {
            input 4x8x8
            mean { inner: mean { conv(4, 1); conv(4, 1) }; conv(4, 1) }
        }
    """)
    assert [len(g.args(m)) for m in of_op(g, "mean")] == [2, 2]
    assert g.args("mean") == ["inner.mean", "conv"]
