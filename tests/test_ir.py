"""The IR: its schema, the verifier (`Graph.lint`), the text dump and determinism."""

import networkx as nx
import pytest

import archdsl
from archdsl.errors import InternalError
from archdsl.ir import Graph
from snippets import BASIC_BLOCK

SMALL = BASIC_BLOCK + """network small(width = 8) {
    input 3 x 16 x 16
    conv1: conv(width, 3, pad=1) -> relu
    layer1: (basic(width) -> basic(2 * width, stride=2))
    concat { identity; maxpool(3, stride=1, pad=1) } as both
    head: (global_avgpool -> flatten -> fc(10))
    output head, both
}
"""


@pytest.fixture
def graph():
    return archdsl.loads(SMALL, filename="small.arch")


def test_graph_has_the_documented_attributes_and_converts_to_networkx(graph):
    for n, d in graph.nodes(data=True):
        assert set(d) == {"op", "attrs", "shape", "src", "meta"}
        assert d["op"] in archdsl.ops.OPS
        assert d["src"].file == "small.arch" and d["src"].line >= 1
    nxg = graph.to_networkx()
    assert isinstance(nxg, nx.MultiDiGraph) and list(nxg.nodes) == list(graph.nodes)
    assert nxg.number_of_edges() == graph.number_of_edges() == len(graph.edges())
    for u, v, k, d in nxg.edges(keys=True, data=True):
        assert k == d["port"] and graph.args(v)[k] == u
    assert graph.order() == list(nx.lexicographical_topological_sort(nxg, key=list(graph.nodes).index))
    assert graph.inputs == ["input"]
    assert graph.outputs == ["head.2", "concat"]
    assert graph.graph["params"] == {"width": 8}


def test_ports_give_operand_order(graph):
    add = "layer1.1.add"
    assert graph.args(add) == ["layer1.1.bn2", "layer1.1.downsample.1"]
    assert graph.args("concat") == ["identity", "maxpool"]
    assert graph.shape("concat") == (32, 8, 8)


def test_one_tensor_may_feed_two_ports_of_one_op():
    g = archdsl.loads("network t { input 3 x 8 x 8; relu as r; add { @r; @r } }")
    assert g.args("add") == ["relu", "relu"]
    assert sorted(p for _, _, p in g.in_edges("add", data="port")) == [0, 1]
    g.lint()


def test_scopes_record_blocks_and_sequences(graph):
    scopes = graph.graph["scopes"]
    assert scopes["layer1"].kind == "sequence" and scopes["layer1"].title == "basic ×2"
    assert scopes["layer1.0"].kind == "block" and scopes["layer1.0"].title == "basic(c=8, stride=1)"
    assert scopes["layer1.1.downsample"].kind == "sequence"


def test_lint_accepts_elaborated_graphs(graph):
    graph.lint()


@pytest.mark.parametrize("breakage, message", [
    (lambda g: g.add_edge("head.2", "conv1", key=1, port=1), "cycle"),
    (lambda g: g.nodes["conv1"].__setitem__("shape", (9, 16, 16)), "its rule gives 8×16×16"),
    (lambda g: g.nodes["relu"].__setitem__("op", "nonsense"), "unknown op"),
    (lambda g: g.remove_edge("layer1.1.downsample.1", "layer1.1.add", key=1), "add joins two or more"),
    (lambda g: (g.remove_edge("identity", "concat", key=0),
                g.add_edge("identity", "concat", key=2, port=2)), "are not 0..1"),
    (lambda g: g.graph["outputs"].append("nowhere"), "missing node"),
    (lambda g: g.add_op("bad name!", "relu", {}, ["conv1"], g.shape("conv1"), g.nodes["conv1"]["src"]),
     "malformed name"),
    (lambda g: g.nodes["conv1"].pop("meta"), "missing attributes"),
])
def test_lint_catches_each_broken_invariant(graph, breakage, message):
    breakage(graph)
    with pytest.raises(InternalError, match=message):
        graph.lint()


def test_dump_lists_every_node_once_in_execution_order(graph):
    text = graph.dump()
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("%")]
    assert len(lines) == len(graph)
    order = [ln.split("=")[0].strip()[1:] for ln in lines]
    position = {n: i for i, n in enumerate(order)}
    for u, v in graph.edges():
        assert position[u] < position[v]
    conv1 = next(ln for ln in lines if ln.strip().startswith("%conv1 "))
    assert "conv(%input, out=8, kernel=3, pad=1)" in conv1 and ": 8×16×16" in conv1 and "# small.arch:13" in conv1
    assert text.splitlines()[-1].strip() == "outputs: %head.2, %concat"


def test_elaboration_is_deterministic():
    a = archdsl.loads(SMALL, filename="small.arch")
    b = archdsl.loads(SMALL, filename="small.arch")
    assert a.dump() == b.dump()
    assert list(a.nodes) == list(b.nodes)


def test_empty_graph_fails_lint():
    with pytest.raises(InternalError, match="no inputs"):
        Graph("empty").lint()


def test_surgery_keeps_ports_and_multi_edges_consistent():
    g = archdsl.loads("network t { input 3 x 8 x 8; relu as r; add { @r; @r } -> sigmoid }")
    assert g.number_of_edges("relu", "add") == 2 and g.out_degree("relu") == 2
    assert list(g.successors("relu")) == ["add"] and g.users("relu") == ["add"]
    assert g.out_edges("relu", data="port") == [("relu", "add", 0), ("relu", "add", 1)]
    g.remove_edge("relu", "add", key=0)
    assert g.in_edges("add", data="port") == [("relu", "add", 1)] and g.number_of_edges("relu", "add") == 1
    g.add_edge("input", "add", key=0, port=0)
    assert g.args("add") == ["input", "relu"]
    g.remove_node("relu")
    assert "relu" not in g and g.args("add") == ["input"] and list(g.successors("input")) == ["add"]
    assert g.ancestors("sigmoid") == {"add", "input"} and g.descendants("input") == {"add", "sigmoid"}
    assert g.has_path("input", "sigmoid") and not g.has_path("sigmoid", "input")


def test_copy_is_independent_of_the_original(graph):
    copy = graph.copy()
    copy.remove_node("head.2")
    copy.nodes["conv1"]["op"] = "nonsense"
    assert "head.2" in graph and graph.op("conv1") == "conv" and graph.args("head.2") == ["head.1"]
    graph.lint()


def test_cycles_are_found_and_named(graph):
    assert graph.find_cycle() is None
    graph.add_edge("layer1.1.relu", "layer1.0.conv1", key=1, port=1)
    cycle = graph.find_cycle()
    assert cycle[0] == "layer1.0.conv1" and cycle[-1] == "layer1.1.relu"
    assert all(b in graph.users(a) for a, b in zip(cycle, cycle[1:] + cycle[:1]))
    with pytest.raises(InternalError, match="cycle"):
        graph.order()


def test_the_front_end_does_not_import_networkx():
    """`archdsl check`/`summary` start in well under 0.3 s; networkx alone would cost ~0.1 s."""
    import subprocess
    import sys

    code = ("import sys, archdsl; from archdsl.cli.main import main; from archdsl.analysis import analyze; "
            "analyze(archdsl.loads('network t { input 3 x 8 x 8; conv(4, 3) }')); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('networkx', 'torch', 'triton')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
