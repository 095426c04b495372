"""Element trees -> .arch text, laid out as a person would: a line per conv (or block call, or
join) with its norm, activation and pooling after it, groups and joins indented."""

from __future__ import annotations

from .structure import Call, Dense, Group, Join, Lit, Loop, Output, Ref, Residual

RESERVED = {"import", "block", "network", "input", "output", "let", "if", "elif", "else", "for", "in", "assert",
            "as", "residual", "shortcut", "dense", "concat", "add", "mean", "mul", "true", "false", "and", "or",
            "not", "def", "sequence"}
WIDTH = 110
INDENT = "    "


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        return text if "e" in text or "." in text else text + ".0"
    if isinstance(v, str):  # a choice (gelu's approximate="tanh"), not a name
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def arg(a, lit=None) -> str:
    if isinstance(a, Lit):
        return lit(a) if lit else value(a.value)
    return str(a)


def label_text(name: str) -> str:
    return f'"{name}"' if name in RESERVED or "-" in name else name


class Renderer:
    def __init__(self, lit=None):
        self.lit = lit  # how a literal prints (blocks.py prints holes as parameters)

    def call(self, c: Call) -> str:
        parts = [arg(a, self.lit) for a in c.args]
        for k, v in c.kwargs.items():
            text = arg(v, self.lit)
            if isinstance(v, Lit) and v.is_default() and text == value(v.value):
                continue  # a keyword argument at the op's default
            parts.append(f"{k}={text}")
        text = c.name + (f"({', '.join(parts)})" if parts else "")
        if c.repeat is not None:
            text += f" * {arg(c.repeat, self.lit)}"
        return text

    def elem(self, e, depth: int) -> str:
        if isinstance(e, Ref):
            return "@" + e.name
        if isinstance(e, Call):
            text = self.call(e)
        elif isinstance(e, Group):
            text = self.group(e, depth)
        elif isinstance(e, Join):
            text = self.join(e, depth)
        elif isinstance(e, Residual):
            text = "residual " + (f"if {e.when} " if e.when else "") + self.braces(e.body, depth)
            if e.shortcut is not None:
                text += " shortcut " + (f"if {e.cond} " if e.cond else "") + self.braces(e.shortcut, depth)
        elif isinstance(e, Dense):
            text = "dense " + self.braces(e.body, depth)
        else:
            raise TypeError(type(e))
        label = getattr(e, "label", None)
        if label:
            text = f"{label_text(label)}: {text}"
        if getattr(e, "as_", None):
            text += f" as {e.as_}"
        return text

    def group(self, g: Group, depth: int) -> str:
        if len(g.body) == 1:
            only = g.body[0]
            if len(only) == 1 and isinstance(only[0], Call) and only[0].repeat is not None and not only[0].label:
                return self.call(only[0])  # `layer1: bottleneck(64) * 3` is a sequence already
            lines = self.statement(only, depth, paren=True)
            text = "\n".join(lines).strip()
            return text if len(lines) > 1 else f"({text})"
        return self.braces(g.body, depth)

    def join(self, j: Join, depth: int) -> str:
        return j.kind + " " + self.braces([[b] if not isinstance(b, list) else b for b in j.branches], depth,
                                          branches=True)

    def braces(self, stmts: list, depth: int, branches: bool = False) -> str:
        per_stmt = [self.statement(chain, depth + 1, paren=branches) for chain in stmts]
        lines = [line for stmt in per_stmt for line in stmt]
        # a branch wrapped over lines is one parenthesised chain: its lines rejoin with spaces
        flat = "; ".join((" " if branches else "; ").join(line.strip() for line in stmt) for stmt in per_stmt)
        if "\n" not in flat and len(lines) <= 3 and len(flat) + depth * 4 < 70 and not any("{" in ln for ln in lines):
            return "{ " + flat + " }"
        return "{\n" + "\n".join(lines) + "\n" + INDENT * depth + "}"

    def chain(self, chain: list, depth: int, paren: bool = False) -> str:
        lines = self.statement(chain, depth, paren=paren)
        return "\n".join(lines).strip()

    def statement(self, chain: list, depth: int, paren: bool = False) -> list[str]:
        """One chain, as lines: a new line before each conv, block call or join once the line
        has one (inside parentheses when it must wrap and is a branch)."""
        if len(chain) == 1 and isinstance(chain[0], Loop):
            return self.loop(chain[0], depth)
        if len(chain) == 1 and isinstance(chain[0], Output):
            return [INDENT * depth + "output " + ", ".join(chain[0].names)]
        pieces: list[list[str]] = [[]]
        for e in chain:
            text = self.elem(e, depth)
            current = pieces[-1]
            after_ref = len(current) == 1 and isinstance(chain[0], Ref) and len(pieces) == 1
            too_long = len(" -> ".join(current + [text])) + 4 * depth > WIDTH
            if current and not after_ref and (_starts_line(e) or too_long):
                pieces.append([])
            pieces[-1].append(text)
            if "\n" in text:  # a multi-line group or join ends its line
                pieces.append([])
        pieces = [p for p in pieces if p]
        if len(pieces) == 1:
            return [INDENT * depth + " -> ".join(pieces[0])]
        if paren:
            out = [INDENT * depth + "(" + " -> ".join(pieces[0])]
            out += [INDENT * (depth + 1) + "-> " + " -> ".join(p) for p in pieces[1:]]
            out[-1] += ")"
            return out
        # a statement per line: each continues from the previous one's result
        return [INDENT * depth + " -> ".join(p) for p in pieces]

    def loop(self, loop: Loop, depth: int) -> list[str]:
        index = "i" if loop.start == 0 else f"i + {loop.start}"
        head = f"for i in range({arg(loop.count, self.lit)}) {{"
        label = f"{loop.prefix}{{{index}}}"
        inner = f"{label_text(label) if '-' in label else label}: {self.call(loop.call)}"
        one = INDENT * depth + f"{head} {inner} }}"
        if len(one) <= WIDTH:
            return [one]
        return [INDENT * depth + head, INDENT * (depth + 1) + inner, INDENT * depth + "}"]


def _starts_line(e) -> bool:
    return (isinstance(e, Call) and (e.block or e.name in ("conv", "fc", "linear"))) or \
        isinstance(e, (Group, Join, Residual, Dense))
