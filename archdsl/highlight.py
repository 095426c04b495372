"""A Pygments lexer for `.arch` files: `pygmentize -l arch FILE.arch` once archdsl is installed
(registered under the `pygments.lexers` entry point in pyproject.toml), and the docs' ```arch
code blocks wherever they are rendered with Pygments.

Token classes follow the grammar (grammars/arch.lark): its reserved words are keywords (`true`
and `false` constants, `and`/`or`/`not` operator words), the registry's op names builtins,
the expression functions functions, `label:` and `as name` labels, `@name` tensor references,
numbers (including `3x224x224` shapes), strings, comments and operators.  tests/test_highlight.py
checks every token of the example files against the grammar's own lexer.

Pygments is an optional dependency (`pip install 'archdsl[highlight]'`): nothing else in
archdsl imports this module.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

KEYWORDS = ("import", "block", "sequence", "def", "network", "input", "output", "let", "if", "elif", "else", "for",
            "in", "assert", "as", "residual", "shortcut", "dense", "concat", "add", "mean", "mul")
CONSTANTS = ("true", "false")
WORD_OPERATORS = ("and", "or", "not")
FUNCTIONS = ("min", "max", "abs", "int", "floor", "ceil", "round", "float", "range", "len", "sum")


def op_names() -> tuple[str, ...]:
    """The ops users can write, from the op registry (one place for every op fact)."""
    from .ops import OPS

    return tuple(sorted(name for name, spec in OPS.items() if not spec.internal and name != "input"))


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TEMPLATE = r"[A-Za-z_][A-Za-z0-9_]*(?:\{[^}\n]*\}[A-Za-z0-9_]*)*"  # `denselayer{i + 1}`


class ArchLexer(RegexLexer):
    """The archdsl CNN architecture language (.arch)."""

    name = "archdsl"
    aliases = ["arch", "archdsl"]
    filenames = ["*.arch"]
    mimetypes = ["text/x-archdsl"]

    tokens = {
        "root": [
            (r"[ \t\f]+", Whitespace),
            (r"\\\r?\n", Text),
            (r"\r?\n", Whitespace),
            (r"#.*$", Comment.Single),
            # definitions: `block name(`, `network name`, `def name(`
            (r"\b(block|network|def)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            # `input 3 x 224 x 224`: the `x` between dimensions is the language's
            (r"\b(input)\b", Keyword, "dims"),
            # labels: `conv1:`, `denselayer{i + 1}:`, `"block":` (not `::`)
            (r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"(?=\s*:(?!:))', Name.Label),
            (r"(" + _TEMPLATE + r")(?=\s*:(?!:))", Name.Label),
            (r"\b(as)(\s+)(" + _TEMPLATE + ")", bygroups(Keyword, Whitespace, Name.Label)),
            (r"@(?:in\b|" + _TEMPLATE + ")", Name.Variable),
            include("expr"),
        ],
        "dims": [
            (r"[ \t\f]+", Whitespace),
            (r"(" + _NAME + r")(\s*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
            (r"\bx\b", Keyword),
            (r"(?=\r?\n|;|#|\})", Text, "#pop"),
            include("expr"),
        ],
        "expr": [
            (r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"', String.Double),
            (r"[0-9]+x[0-9]+x[0-9]+\b", Number),  # a shape written as one word
            (r"[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(WORD_OPERATORS, suffix=r"\b"), Operator.Word),
            (words(FUNCTIONS, suffix=r"\b(?=\s*\()"), Name.Function),
            (words(op_names(), prefix=r"\b", suffix=r"\b"), Name.Builtin),
            (_NAME, Name),
            (r"->|\*\*|//|==|!=|<=|>=|[-+*/%<>=]", Operator),
            (r"[()\[\]{},;:.]", Punctuation),
            (r"[ \t\f]+", Whitespace),
        ],
    }
