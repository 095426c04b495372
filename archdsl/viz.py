"""Pictures of networks: Graphviz DOT, and SVG/PNG/PDF through Graphviz's `dot` program.

`to_dot(graph, depth, rankdir)` draws every op as a node labelled with its name and key
attributes ("conv 3×3/2, 64"), every edge with the shape of the tensor it carries (the producer's
output shape), joins as orange circles or boxes, inputs and outputs as dark terminals, and each
scope (block instance, labelled sequence or join) as a cluster nested as the names nest.
With `depth=N`, a scope whose name has N segments is drawn as one box (its title, output
shape and summed params) instead of its members, which are deeper than N — the same rule as
`archdsl summary --depth N` — and the edges into a box are merged (one per tensor shape).

The DOT text is deterministic (same graph, same bytes) and safe: every id is quoted, every label
is an HTML-like label with `&<>"` escaped and control characters made visible, every tooltip an
escaped string.  `render(dot, fmt)` runs `dot`; `write(...)` writes a file atomically (a temporary
file renamed over the target), so a failure never leaves a partial picture behind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .analysis import analyze
from .errors import NO_LOC, ArchError
from .fileio import write_atomically
from .ir.graph import Graph
from .ops import OPS
from .ops.registry import fmt_shape

FORMATS = ("dot", "svg", "png", "pdf")
SUFFIXES = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf"}
RANKDIRS = ("TB", "LR")
FONT = "Helvetica,Arial,sans-serif"
PNG_DPI = 144  # crisp on a slide; SVG and PDF are vector anyway
INSTALL_HINT = "install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: " \
               "conda install graphviz)"

# ---- palette -----------------------------------------------------------------------------------

INK = "#263238"  # text
MUTED = "#607D8B"  # secondary text, edge labels
EDGE = "#78909C"


@dataclass(frozen=True)
class Style:
    fill: str
    border: str
    shape: str = "box"
    style: str = "rounded,filled"
    font: str = INK
    fontsize: int = 11
    penwidth: float = 1.2


STYLES = {
    "conv": Style("#DCEAF9", "#3D7CC9"),
    "fc": Style("#E7DFF5", "#7E57C2"),
    "pool": Style("#DDF0DF", "#4A9A52"),
    "norm": Style("#EEEFF1", "#9AA5AE", fontsize=10),
    "act": Style("#FAFAFA", "#B0BEC5", fontsize=10),
    "reg": Style("#FFFFFF", "#B0BEC5", style="rounded,filled,dashed", fontsize=10),
    "reshape": Style("#FFFFFF", "#90A4AE", fontsize=10),
    "join": Style("#FFD9A8", "#E8870E", penwidth=1.5),
    "io": Style("#37474F", "#263238", font="#FFFFFF", penwidth=1.0),
    "box": Style("#E3E8F6", "#3F51B5", penwidth=1.6),
    "other": Style("#FFF8E1", "#BCAAA4"),
}

CATEGORY = {
    "conv": "conv", "fc": "fc",
    "maxpool": "pool", "avgpool": "pool", "global_avgpool": "pool", "adaptive_avgpool": "pool", "upsample": "pool",
    "bn": "norm", "lrn": "norm",
    "relu": "act", "tanh": "act", "sigmoid": "act", "softmax": "act",
    "dropout": "reg", "drop_path": "reg",
    "flatten": "reshape", "identity": "reshape", "pad_channels": "reshape",
    "add": "join", "mean": "join", "concat": "join",
    "input": "io",
}
LIGHT = {"norm", "act", "reg", "reshape"}  # one-line labels
JOIN_SYMBOL = {"add": "+", "mean": "mean"}  # drawn as circles; other joins (concat) as boxes

CLUSTER_FILLS = ("#F4F7FB", "#EAF0F7", "#E0E8F2", "#D7E1EE")
CLUSTER_BORDER = "#A7B6C6"
TITLE_WIDTH = 34  # wrap long block titles at argument boundaries


def category(op: str) -> str:
    if op in CATEGORY:
        return CATEGORY[op]
    spec = OPS.get(op)
    if spec is not None and spec.arity is None:
        return "join"
    return "io" if spec is not None and spec.arity == 0 else "other"


# ---- escaping ------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def html(text: str) -> str:
    """Text for inside an HTML-like label: markup characters escaped, control characters shown,
    backslashes doubled (Graphviz expands `\\N`, `\\G` and `\\\\` even inside HTML labels)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text)).replace("\\", "\\\\")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def quote(text: str) -> str:
    """A DOT quoted string (ids, escString attributes such as tooltips): `\\` and `"` escaped,
    newlines as `\\n`, other control characters shown as text."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + _CONTROL.sub(lambda m: f"\\\\x{ord(m.group()):02x}", text) + '"'


def wrap(text: str, width: int = TITLE_WIDTH) -> list[str]:
    """Break a title like `bottleneck(c=64, stride=1, expansion=4)` after commas, near `width`."""
    parts = re.split(r"(?<=,) ", text)
    lines, line = [], ""
    for p in parts:
        if line and len(line) + 1 + len(p) > width:
            lines.append(line)
            line = "  " + p
        else:
            line = f"{line} {p}" if line else p
    return lines + [line] if line else lines


def human(n: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}" if n / scale < 100 else f"{n / scale:.0f}{suffix}"
    return str(n)


# ---- the picture as data -------------------------------------------------------------------------


@dataclass
class Item:
    """One drawn node: an op, a collapsed scope or an output terminal."""

    id: str
    label: str  # HTML, without the outer < >
    style: Style
    cluster: str | None  # the scope it is drawn in
    order: int  # position in the graph's topological order (first member for boxes)
    tooltip: str
    shape: str | None = None  # overrides style.shape (join circles)
    members: list[str] = field(default_factory=list)


@dataclass
class Cluster:
    name: str
    parent: str | None
    title: str
    depth: int
    order: int = 1 << 60


@dataclass
class Picture:
    title: str  # HTML
    items: dict[str, Item]
    clusters: dict[str, Cluster]
    edges: list[tuple[str, str, str]]  # (tail, head, shape label)
    node_of: dict[str, str]  # graph node -> drawn item id


def _describe(op: str, attrs: dict) -> str:
    """`conv 3×3/2, 64`, `fc 1000`, `maxpool 3×3/2`: the op and its key attributes."""
    text = OPS[op].describe(attrs) if op in OPS else ""
    out = attrs.get("out")
    if out is not None and str(out) not in text:
        text = f"{text}, {out}" if text else str(out)
    return f"{op} {text}".strip()


def _is_auto(segment: str, op: str) -> bool:
    """Names the elaborator made up (`relu_3`, sequence positions) rather than user labels."""
    return segment.isdigit() or segment == op or re.fullmatch(re.escape(op) + r"_\d+", segment) is not None


def _grey(text: str, size: int = 9) -> str:
    return f'<font point-size="{size}" color="{MUTED}">{html(text)}</font>'


def _op_item(g: Graph, n: str, order: int, cluster: str | None) -> Item:
    d = g.nodes[n]
    op, attrs = d["op"], d["attrs"]
    cat = category(op)
    style = STYLES[cat]
    seg = n.rsplit(".", 1)[-1]
    named = not _is_auto(seg, op)
    src = d["src"]
    tooltip = f"{n}\n{_describe(op, attrs)} → {fmt_shape(d['shape'])}\n{src.file}:{src.line}"
    shape = None
    if cat == "io":
        label = f"<b>{html(seg)}</b><br/>{html(fmt_shape(d['shape']))}"
    elif cat == "join":
        symbol = JOIN_SYMBOL.get(op)
        shape = "circle" if symbol else "box"
        label = f'<font point-size="16">{html(symbol)}</font>' if symbol == "+" else f"<b>{html(symbol or op)}</b>"
        if named:
            label += f"<br/>{_grey(seg)}"
    elif cat in LIGHT:
        desc = _describe(op, attrs)
        label = f"<b>{html(seg)}</b> {_grey(desc, style.fontsize)}" if named else html(desc)
    else:
        desc = html(_describe(op, attrs))
        label = f"<b>{html(seg)}</b><br/>{desc}" if named else desc
        params = d["meta"].get("params", 0)
        if params:
            label += f"<br/>{_grey(human(params) + ' params')}"
    return Item(n, label, style, cluster, order, tooltip, shape, [n])


def collapse_key(name: str, scopes: dict, depth: int) -> str | None:
    """The scope a node is folded into at `depth` (None: drawn itself) — `summary --depth`'s rule."""
    if depth <= 0:
        return None
    parts = name.split(".")
    if len(parts) <= depth:
        return None
    key = ".".join(parts[:depth])
    return key if key in scopes else None


def _enclosing(name: str, scopes: dict) -> str | None:
    """The innermost scope strictly containing `name`."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in scopes:
            return prefix
    return None


def picture(g: Graph, depth: int = 0) -> Picture:
    """What to draw: items (ops, collapsed scopes, outputs), clusters and edges."""
    if not all("params" in d["meta"] for _, d in g.nodes(data=True)):
        analyze(g)
    scopes = g.graph["scopes"]
    order = g.order()
    rank = {n: i for i, n in enumerate(order)}
    items: dict[str, Item] = {}
    node_of: dict[str, str] = {}
    boxes: dict[str, list[str]] = {}
    for n in order:
        key = collapse_key(n, scopes, depth)
        if key is None:
            items[n] = _op_item(g, n, rank[n], _enclosing(n, scopes))
            node_of[n] = n
        else:
            boxes.setdefault(key, []).append(n)
            node_of[n] = key
    for key, members in boxes.items():
        items[key] = _box_item(g, key, members, rank[members[0]], _enclosing(key, scopes))

    # Clusters: every scope that holds something drawn, with its enclosing scopes.
    clusters: dict[str, Cluster] = {}
    for item in sorted(items.values(), key=lambda it: it.order):
        c = item.cluster
        while c is not None and c not in clusters:
            scope = scopes[c]
            clusters[c] = Cluster(c, _enclosing(c, scopes), scope.title, c.count(".") + 1, item.order)
            c = clusters[c].parent

    edges: list[tuple[str, str, str]] = []
    seen: set[tuple] = set()
    for v in order:
        for u, _, port in sorted(g.in_edges(v, data="port"), key=lambda e: e[2]):
            tail, head = node_of[u], node_of[v]
            if tail == head:
                continue
            shape = fmt_shape(g.shape(u))
            # Into a drawn op: one edge per input port.  Into a collapsed box: one per shape.
            key = (tail, head, u, port) if head == v else (tail, head, shape)
            if key not in seen:
                seen.add(key)
                edges.append((tail, head, shape))
    names = g.graph.get("output_names") or []
    for i, o in enumerate(g.outputs):
        name = names[i] if i < len(names) else "output"
        tid = f"output:{i}"
        label = f"<b>{html(name)}</b><br/>{html(fmt_shape(g.shape(o)))}"
        items[tid] = Item(tid, label, STYLES["io"], None, len(order) + i, f"output {name} = {o}")
        edges.append((node_of[o], tid, fmt_shape(g.shape(o))))

    params = ", ".join(f"{k}={_value(v)}" for k, v in g.graph["params"].items())
    total = sum(d["meta"]["params"] for _, d in g.nodes(data=True))
    ins = " + ".join(fmt_shape(g.shape(i)) for i in g.inputs)
    stats = f"input {ins}  ·  {human(total)} params" + (f"  ·  blocks collapsed below depth {depth}" if depth else "")
    title = "<br/>".join(f"<b>{html(line)}</b>" for line in wrap(f"{g.name}({params})", 90))
    title += f'<br/><font point-size="11" color="{MUTED}">{html(stats)}</font>'
    return Picture(title, items, clusters, edges, node_of)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _box_item(g: Graph, key: str, members: list[str], order: int, cluster: str | None) -> Item:
    scope = g.graph["scopes"][key]
    inside = set(members)
    leaving = [n for n in members if n in g.outputs or any(v not in inside for v in g.successors(n))]
    shapes = list(dict.fromkeys(fmt_shape(g.shape(n)) for n in (leaving or members[-1:])))
    params = sum(g.nodes[n]["meta"]["params"] for n in members)
    seg = key.rsplit(".", 1)[-1]
    name = key if seg.isdigit() else seg
    title = "<br/>".join(html(line) for line in wrap(scope.title, 44))
    stats = " · ".join([", ".join(shapes)] + ([f"{human(params)} params"] if params else []))
    label = f"<b>{html(name)}</b><br/>{title}<br/>{_grey(stats)}"
    tooltip = f"{key}: {scope.title}\n{len(members)} ops, {params:,} params\n{scope.src.file}:{scope.src.line}"
    return Item(key, label, STYLES["box"], cluster, order, tooltip, members=list(members))


# ---- DOT text --------------------------------------------------------------------------------------


def to_dot(g: Graph, depth: int = 0, rankdir: str = "TB") -> str:
    """The Graphviz source of the network's picture (deterministic)."""
    if rankdir not in RANKDIRS:
        raise ArchError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}", NO_LOC)
    if depth < 0:
        raise ArchError(f"--depth must be 0 (everything) or more, not {depth}", NO_LOC)
    pic = picture(g, depth)
    out = [
        f"digraph {quote(g.name)} {{",
        f'  graph [rankdir={rankdir}, fontname="{FONT}", fontsize=14, fontcolor="{INK}", labelloc=t, '
        f'labeljust=c, label=<{pic.title}<br/><font point-size="6"> </font>>, nodesep=0.25, ranksep=0.32, '
        f'newrank=true, bgcolor="white", pad=0.3];',
        f'  node [fontname="{FONT}", fontsize=11, fontcolor="{INK}", shape=box, style="rounded,filled", '
        f'height=0.32, margin="0.14,0.05"];',
        f'  edge [fontname="{FONT}", fontsize=9, fontcolor="{MUTED}", color="{EDGE}", arrowsize=0.6, '
        f'penwidth=1.1];',
    ]
    children: dict[str | None, list] = {}
    for c in pic.clusters.values():
        children.setdefault(c.parent, []).append((c.order, 0, c.name))
    for item in pic.items.values():
        children.setdefault(item.cluster, []).append((item.order, 1, item.id))
    cluster_ids = {name: f"cluster_{i}" for i, name in enumerate(sorted(pic.clusters, key=lambda c: (
        pic.clusters[c].order, pic.clusters[c].depth)))}

    def emit(parent: str | None, indent: str) -> None:
        for _, kind, name in sorted(children.get(parent, [])):
            if kind == 1:
                out.append(indent + _node_line(pic.items[name]))
                continue
            c = pic.clusters[name]
            fill = CLUSTER_FILLS[min(c.depth, len(CLUSTER_FILLS)) - 1]
            out.append(f"{indent}subgraph {quote(cluster_ids[name])} {{")
            out.append(f'{indent}  graph [label=<{_cluster_label(name, c.title)}>, style="rounded,filled", '
                       f'fillcolor="{fill}", color="{CLUSTER_BORDER}", fontsize=11, labeljust=r, labelloc=b, '
                       f'margin=10, tooltip={quote(name + ": " + c.title)}];')
            emit(name, indent + "  ")
            out.append(f"{indent}}}")

    emit(None, "  ")
    for tail, head, shape in pic.edges:
        out.append(f"  {quote(tail)} -> {quote(head)} [label=<{html(shape)}>];")
    out.append("}")
    return "\n".join(out) + "\n"


def _cluster_label(name: str, title: str) -> str:
    """Name (bold) over title (grey), in the bottom right corner, right-aligned in a cell about
    twice as wide as the text: the cluster is at least that wide, so the edges that enter and
    leave a block at its centre (the usual case) miss the text."""
    lines = wrap(title, 48)
    width = max(6.3 * len(name), *(5.0 * len(line) for line in lines))
    text = f'<b>{html(name)}</b><br align="right"/>' + "".join(
        f'<font point-size="10" color="{MUTED}">{html(line)}</font><br align="right"/>' for line in lines)
    return (f'<table border="0" cellborder="0" cellpadding="0" cellspacing="0"><tr>'
            f'<td align="right" balign="right" width="{round(2 * width + 8)}">{text}</td></tr></table>')


def _node_line(item: Item) -> str:
    s = item.style
    attrs = [f"label=<{item.label}>", f'shape={item.shape or s.shape}', f'style="{s.style}"',
             f'fillcolor="{s.fill}"', f'color="{s.border}"', f"penwidth={s.penwidth}", f"tooltip={quote(item.tooltip)}"]
    if s.font != INK:
        attrs.append(f'fontcolor="{s.font}"')
    if s.fontsize != 11:
        attrs.append(f"fontsize={s.fontsize}")
    if item.shape == "circle":
        attrs.append("width=0.42, fixedsize=false, margin=0.02")
    return f"{quote(item.id)} [{', '.join(attrs)}];"


# ---- files ---------------------------------------------------------------------------------------


def resolve_output(out: str | None, fmt: str | None, network: str) -> tuple[str, str]:
    """(path, format) from -o and --format: the suffix of -o implies the format; default `<network>.dot`."""
    if fmt is not None and fmt not in FORMATS:
        raise ArchError(f"unknown format {fmt!r}", NO_LOC, hint=f"choose one of {', '.join(FORMATS)}")
    if out is None:
        fmt = fmt or "dot"
        return f"{network}.{fmt}", fmt
    if out == "-":
        return out, fmt or "dot"
    suffix = Path(out).suffix.lower()
    implied = SUFFIXES.get(suffix)
    if suffix and implied is None and fmt is None:
        raise ArchError(f"-o {out}: cannot tell the format from `{suffix}`", NO_LOC,
                        hint=f"name the file .dot, .svg, .png or .pdf, or add --format ({', '.join(FORMATS)})")
    if fmt is not None and implied is not None and implied != fmt:
        raise ArchError(f"-o {out} says {implied} but --format says {fmt}", NO_LOC,
                        hint=f"drop one of them, or name the file {Path(out).with_suffix('.' + fmt)}")
    return out, fmt or implied or "dot"


def render(dot_source: str, fmt: str) -> bytes:
    """The picture in `fmt`: the DOT text itself, or what Graphviz's `dot` makes of it."""
    if fmt == "dot":
        return dot_source.encode("utf-8")
    exe = shutil.which("dot")
    if exe is None:
        raise ArchError(f"cannot draw the {fmt.upper()} picture: Graphviz's `dot` program is not installed "
                        "(or not on PATH); nothing was written", NO_LOC,
                        hint=f"{INSTALL_HINT}; or write the DOT source with `--format dot` (or `-o NAME.dot`) and "
                             f"render it elsewhere with `dot -T{fmt} NAME.dot -o NAME.{fmt}`")
    cmd = [exe, f"-T{fmt}"] + ([f"-Gdpi={PNG_DPI}"] if fmt == "png" else [])
    try:
        proc = subprocess.run(cmd, input=dot_source.encode("utf-8"), capture_output=True, check=False)
    except OSError as exc:
        raise ArchError(f"cannot run Graphviz's `dot` ({exe}): {exc.strerror or exc}", NO_LOC,
                        hint=INSTALL_HINT) from None
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        raise ArchError(f"Graphviz's `dot -T{fmt}` failed; nothing was written:\n{detail}", NO_LOC,
                        hint=f"check that your Graphviz supports {fmt} (`dot -T?` lists the formats), or use "
                             "`--format dot`")
    return proc.stdout


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` all or nothing (`archdsl.fileio`); a failure is a user error."""
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise ArchError(f"cannot write {path}: {exc.strerror or exc}", NO_LOC) from None


def write(g: Graph, out: str | None = None, fmt: str | None = None, depth: int = 0, rankdir: str = "TB") -> str:
    """Draw `g` into a file (or stdout for `-`); returns the path written."""
    path, fmt = resolve_output(out, fmt, g.name)
    data = render(to_dot(g, depth, rankdir), fmt)
    if path == "-":
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            if fmt != "dot":
                raise ArchError(f"cannot write {fmt} to this stdout (text only)", NO_LOC, hint="use -o FILE")
            sys.stdout.write(data.decode("utf-8"))
        else:
            sys.stdout.flush()
            stream.write(data)
            stream.flush()
    else:
        write_atomic(path, data)
    return path
