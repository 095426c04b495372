"""`archdsl viz`: the DOT picture (structure, collapsing, escaping, determinism) and the CLI paths.

The DOT text is checked structurally by a small parser of the line format `to_dot` writes
(one statement per line); where Graphviz's `dot` is installed, it also renders the pictures.
"""

import os
import re
import shutil
import stat
import subprocess
import sys
from collections import Counter
from html import unescape
from pathlib import Path

import pytest

from archdsl import fileio, viz
from archdsl.analysis import analyze, collapse
from archdsl.cli import main
from archdsl.elaborate import load, loads
from archdsl.ops.registry import fmt_shape

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's `dot` is not installed")


# ---- a parser for the DOT that to_dot writes ------------------------------------------------------

NODE = re.compile(r'^\s*"([^"\\]+)" \[label=<(.*)>, shape=(\w+),')
EDGE = re.compile(r'^\s*"([^"\\]+)" -> "([^"\\]+)" \[label=<([^<>]*)>\];$')
OPEN = re.compile(r'^\s*subgraph "(cluster_\d+)" \{$')
CLUSTER_NAME = re.compile(r"<b>([^<]*)</b>")


class Dot:
    """Nodes (id -> (label, shape, enclosing cluster names)), edges [(tail, head, label)], clusters."""

    def __init__(self, text: str):
        self.nodes: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self.node_count: Counter = Counter()
        self.edges: list[tuple[str, str, str]] = []
        self.clusters: dict[str, tuple[str, ...]] = {}  # name -> enclosing cluster names
        stack: list[str] = []
        lines = text.splitlines()
        assert lines[0].startswith("digraph ") and lines[-1] == "}"
        for i, line in enumerate(lines[1:-1], 1):
            if m := OPEN.match(line):
                header = lines[i + 1]
                assert header.strip().startswith("graph [label=<")
                name = unescape(CLUSTER_NAME.search(header).group(1))
                assert name not in self.clusters, f"cluster {name} drawn twice"
                self.clusters[name] = tuple(stack)
                stack.append(name)
            elif line.strip() == "}":
                stack.pop()
            elif m := EDGE.match(line):
                self.edges.append((m.group(1), m.group(2), unescape(m.group(3))))
            elif m := NODE.match(line):
                self.node_count[m.group(1)] += 1
                self.nodes[m.group(1)] = (m.group(2), m.group(3), tuple(stack))
        assert not stack, "unbalanced subgraphs"


def scope_chain(name: str, scopes: dict) -> tuple[str, ...]:
    parts = name.split(".")
    return tuple(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in scopes)


def example(name: str, **kw):
    return load(EXAMPLES / f"{name}.arch", **kw)


def render_svg(text: str) -> str:
    proc = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", proc.stderr.decode()  # no warnings (bad HTML labels warn and fall back)
    return proc.stdout.decode()


# ---- the full picture ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "densenet121", "lenet5"])
def test_every_node_edge_and_scope_is_drawn_once_where_it_belongs(name):
    g = example(name)
    dot = Dot(viz.to_dot(g))
    scopes = g.graph["scopes"]
    outputs = {f"output:{i}" for i in range(len(g.outputs))}
    assert set(dot.nodes) == set(g.nodes) | outputs
    assert set(dot.node_count.values()) == {1}
    # every edge of the graph, one per input port, labelled with the producer's shape
    expected = Counter((u, v, fmt_shape(g.shape(u))) for u, v in g.edges())
    expected.update((o, f"output:{i}", fmt_shape(g.shape(o))) for i, o in enumerate(g.outputs))
    assert Counter(dot.edges) == expected
    # clusters: exactly the scopes that hold nodes, nested as the names nest
    used = {s for n in g.nodes for s in scope_chain(n, scopes)}
    assert set(dot.clusters) == used
    for c, parents in dot.clusters.items():
        assert parents == scope_chain(c, scopes)
    for n in g.nodes:
        assert dot.nodes[n][2] == scope_chain(n, scopes), n


def test_labels_show_the_op_and_its_key_attributes():
    g = example("resnet50")
    dot = Dot(viz.to_dot(g))
    label = dot.nodes["conv1"][0]
    assert "<b>conv1</b>" in label and "conv 7×7/2, 64" in label
    assert f"{viz.human(7 * 7 * 3 * 64)} params" in label  # 9.41k: conv1 has no bias
    assert dot.nodes["fc"][0].startswith("fc 1000")
    assert "maxpool 3×3/2" in dot.nodes["maxpool"][0]
    # joins stand out: the residual add is a circle, inputs and outputs are dark terminals
    assert dot.nodes["layer1.0.add"][1] == "circle"
    assert "3×224×224" in dot.nodes["input"][0]
    line = next(x for x in viz.to_dot(g).splitlines() if x.startswith('  "input" ['))
    assert f'fillcolor="{viz.STYLES["io"].fill}"' in line
    inc = Dot(viz.to_dot(example("googlenet")))
    assert inc.nodes["inception3a.concat"][1] == "box" and "concat" in inc.nodes["inception3a.concat"][0]
    assert "<b>logits</b>" in inc.nodes["output:0"][0] and "<b>aux1</b>" in inc.nodes["output:1"][0]


def test_the_same_tensor_twice_into_one_op_is_two_edges():
    g = loads("network twice { input 3x8x8\n relu as x\n add { @x; @x } }")
    dot = Dot(viz.to_dot(g))
    assert dot.edges.count(("relu", "add", "3×8×8")) == 2


# ---- collapsing -----------------------------------------------------------------------------------------


def _reachable(edges, start):
    seen, todo = {start}, [start]
    while todo:
        n = todo.pop()
        for u, v, _ in edges:
            if u == n and v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


@pytest.mark.parametrize("name,depth", [("resnet50", 1), ("resnet50", 2), ("resnet50", 3), ("googlenet", 1),
                                        ("densenet121", 2), ("densenet121", 3)])
def test_depth_collapses_scopes_into_boxes_like_summary(name, depth):
    g = example(name)
    full = Dot(viz.to_dot(g))
    dot = Dot(viz.to_dot(g, depth=depth))
    rows = collapse(analyze(g), g, depth).layers
    boxes = {r.name for r in rows if r.nodes > 1 or r.op in ("block", "sequence", "branches")}
    assert boxes and boxes <= set(dot.nodes)
    assert set(dot.nodes) == {r.name for r in rows} | {f"output:{i}" for i in range(len(g.outputs))}
    assert len(dot.nodes) < len(full.nodes)
    # boxes show their title and summed params; no cluster is deeper than the depth
    for r in rows:
        if r.name in boxes:
            label = dot.nodes[r.name][0]
            assert viz.html(viz.wrap(g.graph["scopes"][r.name].title, 44)[0]) in label
            if r.params:
                assert f"{viz.human(r.params)} params" in label
            assert fmt_shape(r.shape) in label
    assert all(c.count(".") < depth for c in dot.clusters)
    # every edge joins drawn nodes, every output is reachable from the input, nothing is repeated
    assert all(u in dot.nodes and v in dot.nodes for u, v, _ in dot.edges)
    reach = _reachable(dot.edges, g.inputs[0])
    assert all(f"output:{i}" in reach for i in range(len(g.outputs)))
    assert len(dot.edges) == len(set(dot.edges))


def test_depth_counts_for_resnet50():
    g = example("resnet50")
    blocks = (3, 4, 6, 3)  # Table 1 of the ResNet paper
    d1, d2 = Dot(viz.to_dot(g, depth=1)), Dot(viz.to_dot(g, depth=2))
    stem = ["input", "conv1", "bn1", "relu", "maxpool", "avgpool", "flatten", "fc", "output:0"]
    assert set(d1.nodes) == set(stem) | {f"layer{i}" for i in range(1, 5)}
    assert set(d2.nodes) == set(stem) | {f"layer{i + 1}.{j}" for i, n in enumerate(blocks) for j in range(n)}
    # one edge between consecutive boxes, with the stage's output shape: 4·64 channels at 56×56, ...
    assert ("layer1", "layer2", f"{4 * 64}×56×56") in d1.edges
    assert [e for e in d1.edges if e[:2] == ("layer3", "layer4")] == [("layer3", "layer4", f"{4 * 256}×14×14")]
    # layer1.1's input feeds both its conv1 and its identity shortcut: drawn once
    assert [e for e in d2.edges if e[:2] == ("layer1.0", "layer1.1")] == [("layer1.0", "layer1.1", "256×56×56")]
    assert set(d2.clusters) == {"layer1", "layer2", "layer3", "layer4"}


def test_recursive_blocks_nest_and_collapse():
    src = """
    block fractal(c, depth) {
        if depth == 1 { conv(c, 3, pad=1) -> relu }
        else { mean { conv(c, 3, pad=1) -> relu
                      fractal(c, depth - 1) -> fractal(c, depth - 1) } }
    }
    network fr { input 3x16x16
        b1: fractal(8, 3) }
    """
    g = loads(src)
    dot = Dot(viz.to_dot(g))
    assert dot.clusters["b1.fractal.fractal"] == ("b1", "b1.fractal")
    # FractalNet's flat join: the last mean averages 3 columns
    assert sum(1 for _, v, _ in dot.edges if v == "b1.mean") == 3
    assert dot.nodes["b1.mean"][1] == "circle"
    d1 = Dot(viz.to_dot(g, depth=1))
    assert set(d1.nodes) == {"input", "b1", "output:0"}
    assert d1.edges == [("input", "b1", "3×16×16"), ("b1", "output:0", "8×16×16")]
    # 7 convs (1 + 2·(1 + 2·1)); the first of each of the 3 columns sees the 3 input channels
    params = 3 * (3 * 9 * 8 + 8) + 4 * (8 * 9 * 8 + 8)
    assert "fractal(c=8, depth=3)" in d1.nodes["b1"][0] and f"{viz.human(params)} params" in d1.nodes["b1"][0]


# ---- determinism and escaping ----------------------------------------------------------------------------


def test_dot_is_byte_identical_across_runs():
    a = viz.to_dot(example("googlenet"), depth=1)
    b = viz.to_dot(example("googlenet"), depth=1)
    assert a == b
    assert viz.to_dot(example("densenet121")) == viz.to_dot(example("densenet121"))


def test_html_and_quote_escape_everything_graphviz_interprets():
    assert viz.html('a"b<c>&d') == "a&quot;b&lt;c&gt;&amp;d"
    assert viz.html("x\\Ny") == "x\\\\Ny"  # Graphviz would put the node's name for \N
    assert viz.html("t\tu\x00") == "t\\\\x09u\\\\x00"  # control characters shown, not passed on
    assert viz.quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert viz.quote("two\nlines") == '"two\\nlines"'


WEIRD = r'''
block b(s = "a\"b<>{}|&amp;\\N ]]> x\\", t = 1) { relu }
network weird { input 3x8x8
    x1: b()
    x2: b(s="	tab and <b>bold</b>")
}
'''


def test_weird_strings_in_titles_are_escaped():
    g = loads(WEIRD)
    text = viz.to_dot(g)
    title = g.graph["scopes"]["x1"].title
    assert title == 'b(s="a"b<>{}|&amp;\\N ]]> x\\", t=1)'
    labels = re.sub(r'tooltip="(?:[^"\\]|\\.)*"', "", text)  # tooltips are quoted strings, not markup
    assert "<b>bold</b>" not in labels and "&lt;b&gt;bold&lt;/b&gt;" in labels
    assert 'tooltip="x2: b(s=\\"\\\\x09tab and <b>bold</b>\\", t=1)"' in text
    assert viz.html(title) in text
    dot = Dot(text)
    assert set(dot.clusters) == {"x1", "x2"}
    if HAVE_DOT:
        svg = render_svg(text)
        texts = [unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]
        assert title in texts  # shown exactly as the title reads
        assert any("\\x09tab and <b>bold</b>" in t for t in texts)


@needs_dot
@pytest.mark.parametrize("name,depth,rankdir", [("lenet5", 0, "TB"), ("googlenet", 1, "LR"), ("resnet50", 2, "TB")])
def test_graphviz_renders_the_dot_without_warnings(name, depth, rankdir):
    svg = render_svg(viz.to_dot(example(name), depth=depth, rankdir=rankdir))
    assert "<svg" in svg and ("conv 5×5, 6" if name == "lenet5" else "conv 7×7/2, 64") in svg


def test_bad_depth_and_rankdir_are_user_errors():
    g = example("lenet5")
    with pytest.raises(viz.ArchError, match="depth"):
        viz.to_dot(g, depth=-1)
    with pytest.raises(viz.ArchError, match="rankdir"):
        viz.to_dot(g, rankdir="BT")


# ---- the command line ----------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


LENET = str(EXAMPLES / "lenet5.arch")


def test_cli_default_output_is_network_dot(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "viz", LENET)
    assert (code, out.strip(), err) == (0, "wrote lenet5.dot", "")
    text = (tmp_path / "lenet5.dot").read_text()
    assert text == viz.to_dot(example("lenet5"))
    mode = stat.S_IMODE(os.stat(tmp_path / "lenet5.dot").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not the 0600 of a temporary file
    assert sorted(os.listdir(tmp_path)) == ["lenet5.dot"]  # no temporary file left over


def test_cli_options_reach_the_picture(capsys, tmp_path):
    out = tmp_path / "r.gv"
    code, _, err = run(capsys, "viz", str(EXAMPLES / "resnet50.arch"), "-o", str(out), "--depth", "1",
                       "--rankdir", "LR", "--set", "width=16", "--input", "3x64x64")
    assert code == 0, err
    text = out.read_text()
    assert "rankdir=LR" in text and '"layer1" -> "layer2" [label=<64×16×16>]' in text  # 4·16 channels, 64/4
    code, stdout, _ = run(capsys, "viz", LENET, "-o", "-")
    assert code == 0 and stdout == viz.to_dot(example("lenet5"))


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("svg", b"<?xml"), ("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF")],
                         ids=["svg", "png", "pdf"])
def test_cli_renders_with_graphviz(capsys, tmp_path, fmt, magic):
    out = tmp_path / f"net.{fmt}"
    code, stdout, err = run(capsys, "viz", LENET, "-o", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(magic)
    other = tmp_path / "other"
    code, _, err = run(capsys, "viz", LENET, "-o", str(other), "--format", fmt)
    assert code == 0 and other.read_bytes().startswith(magic)
    assert sorted(os.listdir(tmp_path)) == sorted([out.name, "other"])


def test_cli_format_and_suffix_must_agree(capsys, tmp_path):
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "x.dot"), "--format", "png")
    assert code == 2 and "says dot but --format says png" in err and "x.png" in err
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "x.jpg"))
    assert code == 2 and "cannot tell the format from `.jpg`" in err
    assert os.listdir(tmp_path) == []
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "x.txt"), "--format", "dot")
    assert code == 0 and (tmp_path / "x.txt").read_text().startswith('digraph "lenet5" {')


def _no_dot(monkeypatch, tmp_path, how):
    if how == "which":
        monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: None)
    else:
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("how", ["which", "PATH"])
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_cli_without_graphviz_says_so_and_writes_nothing(capsys, tmp_path, monkeypatch, how, fmt):
    _no_dot(monkeypatch, tmp_path, how)
    out = tmp_path / f"net.{fmt}"
    code, stdout, err = run(capsys, "viz", LENET, "-o", str(out))
    assert code == 2 and stdout == ""
    assert "Graphviz's `dot` program is not installed" in err and "nothing was written" in err
    assert "apt-get install graphviz" in err and "--format dot" in err
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p != "bin"]
    # the DOT source still works without Graphviz
    code, _, _ = run(capsys, "viz", LENET, "-o", str(tmp_path / "net.dot"))
    assert code == 0 and (tmp_path / "net.dot").exists()


def _fake_dot(tmp_path, monkeypatch, script):
    folder = tmp_path / "fakebin"
    folder.mkdir()
    exe = folder / "dot"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for dot")
def test_a_failing_dot_leaves_the_old_file_alone(capsys, tmp_path, monkeypatch):
    _fake_dot(tmp_path, monkeypatch,
              "cat >/dev/null; printf 'partial'; echo 'Error: syntax error in line 1' >&2; exit 1")
    out = tmp_path / "net.svg"
    out.write_text("old picture")
    code, _, err = run(capsys, "viz", LENET, "-o", str(out))
    assert code == 2 and "dot -Tsvg` failed" in err and "syntax error in line 1" in err and "Traceback" not in err
    assert out.read_text() == "old picture"
    assert sorted(os.listdir(tmp_path)) == ["fakebin", "net.svg"]


def test_a_failing_write_leaves_no_temporary_file(capsys, tmp_path, monkeypatch):
    out = tmp_path / "net.dot"
    out.write_text("old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)  # the one atomic writer (archdsl.fileio)
    code, _, err = run(capsys, "viz", LENET, "-o", str(out))
    assert code == 2 and "cannot write" in err and "No space left on device" in err
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["net.dot"]
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "missing" / "net.dot"))
    assert code == 2 and "cannot write" in err


def test_cli_rejects_negative_depth(capsys, tmp_path):
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "x.dot"), "--depth", "-1")
    assert code == 2 and "--depth" in err and os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.arch")), ids=lambda p: p.stem)
def test_every_zoo_network_draws(path):
    """Every example at full detail and folded to its top-level blocks; rendered when `dot` exists."""
    g = load(path)
    for depth in (0, 1):
        text = viz.to_dot(g, depth=depth)
        drawn = {m.group(1) for m in (NODE.match(line) for line in text.splitlines()) if m}
        if depth == 0:
            assert {n for n in g.nodes if g.op(n) != "input"} <= drawn
        if HAVE_DOT:
            assert "<svg" in render_svg(text)
