"""Syntax highlighting: the Pygments lexer (archdsl/highlight.py) and the TextMate grammar
(editors/vscode) colour every token class of grammars/arch.lark in the example files.

The reference is the grammar's own lexer (Lark, comments kept): each of its tokens is given a
class (keyword, op, number, string, comment, label, operator, ...) from its terminal and its
neighbours, and both highlighters must put the token's first character in that class.  The
TextMate grammar is run by a small interpreter of its `match` / `begin`-`end` rules below
(Python's `re` reads the grammar's regexes the way Oniguruma does).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lark import Lark

from archdsl.frontend.parser import grammar_text
from archdsl.ops import OPS

pytest.importorskip("pygments", reason="Pygments is the optional `highlight` extra (pip install 'archdsl[highlight]')")

from pygments.token import Comment, Keyword, Name, Number, Operator, String  # noqa: E402

from archdsl.highlight import FUNCTIONS, ArchLexer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.arch"))
TM = json.loads((ROOT / "editors" / "vscode" / "syntaxes" / "arch.tmLanguage.json").read_text())
WORDS = sorted(set(re.findall(r'"([a-z]+)"', grammar_text())))  # the grammar's reserved words
OP_NAMES = sorted(n for n, s in OPS.items() if not s.internal and n != "input")

# class -> (Pygments token type, TextMate scope prefixes)
CLASSES = {
    "keyword": (Keyword, ("keyword.control", "keyword.other")),
    "constant": (Keyword.Constant, ("constant.language",)),
    "word_operator": (Operator.Word, ("keyword.operator.logical",)),
    "op": (Name.Builtin, ("support.function.op",)),
    "function": (Name.Function, ("support.function.builtin",)),
    "definition": (Name.Function, ("entity.name.function",)),
    "number": (Number, ("constant.numeric",)),
    "string": (String, ("string.",)),
    "comment": (Comment, ("comment.",)),
    "label": (Name.Label, ("entity.name.tag.label",)),
    "reference": (Name.Variable, ("variable.other.tensor",)),
    "operator": (Operator, ("keyword.operator",)),
}
# the token classes every highlighter must show somewhere in the examples
REQUIRED = {"keyword", "op", "number", "string", "comment", "label", "operator", "constant", "reference"}


@functools.cache
def _lexer() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic")


def reference_tokens(text: str) -> list[tuple[int, str, str]]:
    """(offset, class, text) of the grammar's tokens, classified."""
    toks = [t for t in _lexer().lex(text, dont_ignore=True)
            if t.type not in ("_NL", "CONTINUATION") and t.value.strip()]
    out = []
    for i, t in enumerate(toks):
        prev = toks[i - 1].value if i else ""
        nxt = toks[i + 1].value if i + 1 < len(toks) else ""
        end = _template_end(toks, i) if t.type == "NAME" else i + 1
        labelled = end < len(toks) and toks[end].value == ":" and prev not in ("[", ":")
        kind = None
        if prev == "@":
            pass  # `@name`, `@in`: checked at the `@`
        elif t.type == "COMMENT":
            kind = "comment"
        elif t.type == "STRING":
            kind = "label" if labelled else "string"
        elif t.type in ("INT", "FLOAT", "DIMS"):
            kind = "number" if prev != "{" else None
        elif t.type == "NAME":
            if prev in ("block", "network", "def"):
                kind = "definition"
            elif labelled or prev == "as":
                kind = "label"
            elif prev == "@":
                kind = None  # checked at the `@`
            elif t.value in OP_NAMES and prev not in (".", "=") and nxt != "=":
                kind = "op"
            elif t.value in FUNCTIONS and nxt == "(":
                kind = "function"
        elif t.value == "@":
            kind = "reference"
        elif t.value in ("true", "false"):
            kind = "constant"
        elif t.value in ("and", "or", "not"):
            kind = "word_operator"
        elif t.value.isalpha():
            kind = "label" if labelled else "keyword"  # `shortcut: conv(…)`: a word the parser allows as a label
        elif t.type in ("COMP_OP", "ADD_OP", "MUL_OP", "POW") or t.value in ("->", "=", "*"):
            kind = "operator"
        if kind and not _in_template(text, t.start_pos):
            out.append((t.start_pos, kind, t.value))
    return out


def _template_end(toks: list, i: int) -> int:
    """The index after a name template `name{expr}part{expr}` that starts at toks[i]."""
    j = i + 1
    while j < len(toks) and toks[j].value == "{" and toks[j].end_pos == toks[j - 1].end_pos + 1 \
            and toks[j].start_pos == toks[j - 1].end_pos:
        depth = 0
        while j < len(toks):
            depth += {"{": 1, "}": -1}.get(toks[j].value, 0)
            j += 1
            if depth == 0:
                break
        if j < len(toks) and toks[j].type == "NAME" and toks[j].start_pos == toks[j - 1].end_pos:
            j += 1
    return j


def _in_template(text: str, pos: int) -> bool:
    """Inside the `{…}` of a label template (`denselayer{i + 1}:`): part of the label's colour."""
    line_start = text.rfind("\n", 0, pos) + 1
    before = text[line_start:pos]
    return before.count("{") > before.count("}") and re.search(r"[A-Za-z0-9_]\{[^}]*$", before) is not None


def _pygments_at(text: str) -> list:
    """The token type of every character of `text`."""
    out = [None] * len(text)
    for start, ttype, value in ArchLexer().get_tokens_unprocessed(text):
        for k in range(start, start + len(value)):
            if k < len(out):
                out[k] = ttype
    return out


# ---- a small TextMate interpreter ----------------------------------------------------------------


def _resolve(patterns: list) -> list:
    out = []
    for p in patterns:
        if "include" in p:
            rule = TM["repository"][p["include"].lstrip("#")]
            out += _resolve(rule["patterns"]) if "patterns" in rule and "match" not in rule and "begin" not in rule \
                else [rule]
        else:
            out.append(p)
    return out


def textmate_scopes(text: str) -> list:
    """The innermost scope name of every character (None: no rule), line by line as editors do."""
    scopes: list = []
    stack: list = []  # open begin/end rules
    for line in text.split("\n"):
        line_scopes = [None] * len(line)
        pos = 0
        while True:
            rules = _resolve(stack[-1]["patterns"]) if stack else _resolve(TM["patterns"])
            best = None
            if stack:
                m = re.compile(stack[-1]["end"]).search(line, pos)
                if m:
                    best = (m.start(), -1, m, None)
            for i, rule in enumerate(rules):
                m = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), i, m, rule)
            if best is None:
                break
            _, _, m, rule = best
            if rule is None:  # the open rule ends
                stack.pop()
                pos = max(m.end(), pos)
                continue
            _paint(line_scopes, m, rule.get("name"), rule.get("captures") or rule.get("beginCaptures") or {})
            if "begin" in rule:
                stack.append(rule)
            if m.end() == pos and "begin" not in rule:
                pos += 1  # an empty match: move on
            else:
                pos = m.end()
        scopes += line_scopes + [None]
    return scopes[: len(text)]


def _paint(scopes: list, m: re.Match, name: str | None, captures: dict) -> None:
    if name:
        for k in range(m.start(), m.end()):
            scopes[k] = name
    for group, capture in captures.items():
        if m.group(int(group)) is not None:
            for k in range(m.start(int(group)), m.end(int(group))):
                scopes[k] = capture["name"]


# ---- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_token_of_an_example_is_highlighted_by_both(path):
    text = path.read_text()
    tokens = reference_tokens(text)
    assert tokens, "the grammar's lexer found nothing"
    py = _pygments_at(text)
    tm = textmate_scopes(text)
    wrong = []
    for pos, kind, value in tokens:
        want_py, want_tm = CLASSES[kind]
        line = text.count("\n", 0, pos) + 1
        if py[pos] is None or py[pos] not in want_py:
            wrong.append(f"{path.name}:{line}: `{value}` ({kind}) is {py[pos]} in Pygments")
        if tm[pos] is None or not tm[pos].startswith(want_tm):
            wrong.append(f"{path.name}:{line}: `{value}` ({kind}) has scope {tm[pos]} in the TextMate grammar")
    assert not wrong, "\n".join(wrong[:20])


def test_the_examples_show_every_token_class():
    seen = set()
    for path in EXAMPLES:
        seen |= {kind for _, kind, _ in reference_tokens(path.read_text())}
    assert REQUIRED <= seen, f"no example shows {REQUIRED - seen}"


def test_both_know_every_word_and_op_of_the_language():
    from archdsl.highlight import CONSTANTS, KEYWORDS, WORD_OPERATORS, op_names

    words = set(KEYWORDS) | set(CONSTANTS) | set(WORD_OPERATORS) | {"x"}
    assert set(WORDS) <= words, f"reserved words the Pygments lexer lacks: {set(WORDS) - words}"
    tm_text = json.dumps(TM)
    missing_tm = [w for w in WORDS if w != "x" and not re.search(rf"[|(:]{w}[|)]", tm_text)]
    assert not missing_tm, f"reserved words the TextMate grammar lacks: {missing_tm}"
    assert set(op_names()) == set(OP_NAMES)
    op_rule = next(p for p in TM["repository"]["expression"]["patterns"] if p["name"] == "support.function.op.arch")
    listed = set(re.findall(r"[a-z_0-9]+", op_rule["match"].split("(?:", 1)[1]))
    assert set(OP_NAMES) <= listed, f"ops the TextMate grammar lacks: {sorted(set(OP_NAMES) - listed)}"


def test_the_reference_classes_of_a_small_file():
    """The reference classification itself, and both highlighters on it."""
    text = "network n {\n    input 3 x 8 x 8\n    conv1: conv(8, 3) -> relu  # c\n}\n"
    kinds = {v: k for _, k, v in reference_tokens(text)}
    assert kinds == {"network": "keyword", "n": "definition", "input": "keyword", "3": "number", "x": "keyword",
                     "8": "number", "conv1": "label", "conv": "op", "->": "operator", "relu": "op", "# c": "comment"}
    py = _pygments_at(text)
    tm = textmate_scopes(text)
    assert py[text.index("conv(")] in Name.Builtin and tm[text.index("conv(")].startswith("support.function.op")
    assert py[text.index("conv1")] in Name.Label and tm[text.index("conv1")].startswith("entity.name.tag.label")


def test_pygmentize_finds_the_lexer_by_name(tmp_path):
    """The `pygments.lexers` entry point (pyproject.toml) of the installed package."""
    from importlib.metadata import entry_points

    assert any(ep.value == "archdsl.highlight:ArchLexer" for ep in entry_points(group="pygments.lexers"))
    out = subprocess.run([sys.executable, "-m", "pygments", "-l", "arch", "-f", "html",
                          str(ROOT / "examples" / "resnet50.arch")], capture_output=True, text=True, check=True).stdout
    assert '<span class="nb">conv</span>' in out and '<span class="nl">conv1</span>' in out
