"""Every user mistake is a precise, located error (DESIGN.md, "Errors").

Each test writes a small program, runs `archdsl check` on it through `archdsl.cli.main` and
checks what the user sees on stderr:

    FILE:LINE:COL: error: MESSAGE        <- exact position of the offending token
     LINE | the source line               <- quoted
          |        ^~~~                   <- caret under the token
    hint: ...                             <- where one helps
    FILE:LINE:COL: note: ...              <- e.g. where each input of a bad join came from

exit status 2, and never a Python traceback.  An internal failure exits 1 and says it is a bug.
Positions are found with `at(source, token)` (the token's line and 1-based column, computed
from the text here, independently of archdsl), or written out where that is clearer.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import archdsl
from archdsl.cli import main as cli_main
from archdsl.ir.graph import Graph

# Internal names that must never reach the user (Lark terminal names, parser objects).
LEAK = re.compile(r"__ANON|\$END|\b(?:RPAR|LPAR|LBRACE|RBRACE|LSQB|RSQB|COMP_OP|ADD_OP|MUL_OP|_NL|SEMICOLON)\b|"
                  r"Token\(|Unexpected[A-Z]|Tree\(|<class|object at 0x")
# ... and, in a syntax error (which has no usage text), no upper-case terminal name at all.
INTERNAL = re.compile(LEAK.pattern + r"|\b(?:NAME|INT|FLOAT|STRING|DIMS|COMMA|STAR|EQUAL|COLON)\b")


@dataclass
class Run:
    rc: int
    out: str
    err: str
    path: str  # the file as named on the command line (and so in the error header)
    source: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def message(self) -> str:
        """The error header without its location."""
        return self.lines[0].split(" error: ", 1)[1]

    @property
    def hint(self) -> str | None:
        return next((ln[len("hint: "):] for ln in self.lines if ln.startswith("hint: ")), None)

    def notes(self) -> list[tuple[str, int, int, str]]:
        """(file, line, col, message) of every `note:` line."""
        out = []
        for ln in self.lines:
            m = re.match(r"(.*):(\d+):(\d+): note: (.*)", ln)
            if m:
                out.append((m[1], int(m[2]), int(m[3]), m[4]))
        return out


def write(tmp_path: Path, source: str, name: str = "model.arch") -> tuple[Path, str]:
    text = textwrap.dedent(source).lstrip("\n")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


def check(tmp_path, capsys, source: str, *options: str, name: str = "model.arch") -> Run:
    path, text = write(tmp_path, source, name)
    rc = cli_main(["check", str(path), *options])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return Run(rc, out, err, str(path), text)


def at(source: str, token: str, nth: int = 0) -> tuple[int, int]:
    """(line, col) of the nth occurrence of `token` in the dedented source (1-based)."""
    text = textwrap.dedent(source).lstrip("\n")
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(token, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def assert_error(run: Run, line: int, col: int, *fragments: str, hint: str | None = None,
                 width: int | None = None, file: str | None = None) -> None:
    """Exit 2; header at FILE:LINE:COL; the message contains `fragments`; the line is quoted with a
    caret under column `col` (`width` characters of `^~~`); `hint` (a fragment) on a hint line."""
    assert run.rc == 2, run.err
    file = file or run.path
    assert run.err.startswith(f"{file}:{line}:{col}: error: "), run.err
    for frag in fragments:
        assert frag in run.message, f"{frag!r} not in {run.message!r}"
    src = Path(file).read_text(encoding="utf-8").split("\n")[line - 1]
    quote = f"{line:>5} | {src}"
    assert quote in run.lines, run.err
    caret_line = run.lines[run.lines.index(quote) + 1]
    gutter = " " * 6 + "| "
    assert caret_line.startswith(gutter + " " * (col - 1) + "^"), run.err
    if width is not None:
        assert caret_line[len(gutter):].strip() == "^" + "~" * (width - 1), run.err
    if hint is not None:
        assert run.hint is not None and hint in run.hint, run.err
    assert not LEAK.search(run.message), run.message
    assert not LEAK.search(run.hint or ""), run.hint


def assert_cli_error(run: Run, *fragments: str, hint: str | None = None) -> None:
    """A mistake on the command line: exit 2, `error: ...` with no file position."""
    assert run.rc == 2, run.err
    assert run.err.startswith("error: "), run.err
    for frag in fragments:
        assert frag in run.lines[0], run.err
    if hint is not None:
        assert run.hint is not None and hint in run.hint, run.err


# ---- syntax ---------------------------------------------------------------------------------


def test_unclosed_brace_is_reported_at_end_of_file_with_the_opener(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(8, 3) -> relu
        """
    run = check(tmp_path, capsys, src)
    # the end of the file: just after the last character of the last line
    last = textwrap.dedent(src).lstrip("\n").rstrip("\n").split("\n")
    assert_error(run, len(last), len(last[-1]) + 1, "end of file", "never closed", hint="`}`")
    assert (run.path, *at(src, "{"), "the `{` opened here") in run.notes()


def test_unclosed_paren_at_end_of_file_points_at_the_paren(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            let a = max(1, 2
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, 3, len("    let a = max(1, 2") + 1, "end of file", hint="`)`")
    assert (run.path, *at(src, "("), "the `(` opened here") in run.notes()


def test_stray_token(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(8, 3) ) -> relu
        }
        """
    run = check(tmp_path, capsys, src)
    line, col = at(src, ") )")
    assert_error(run, line, col + 2, "unexpected `)`", hint="expected", width=1)
    assert "`}`" in run.hint  # the likely fix comes first and is spelt as the user writes it


def test_single_quoted_string(tmp_path, capsys):
    src = """
        import 'blocks.arch'
        network n {
            input 3x32x32
            relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, 1, 8, "unexpected character", "'", hint='double quotes: "..."')


def test_unterminated_string(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            assert true, "oops
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, '"oops'), "unexpected character", hint="same line")


@pytest.mark.parametrize("body, token", [
    ("conv(8, 3) -> -> relu", "-> relu"),
    ("conv(8, 3,, 2)", ", 2"),
    ("conv 8", "8"),
    ("conv(8, 3 -> relu", "->"),
    ("let = 3", "="),
    ("for in range(3) { relu }", "range"),
    ("concat { relu } )", ")"),
    ("let a = 1 === 2", "= 2"),
    ("residual { relu } shortcut if { relu }", "{ relu }\n"),
    ("let a = [1, 2,, 3]", ", 3"),
])
def test_syntax_errors_name_the_token_and_readable_expectations(tmp_path, capsys, body, token):
    src = "network n {\n    input 3x32x32\n    " + body + "\n}\n"
    run = check(tmp_path, capsys, src)
    line, col = at(src, token)
    assert_error(run, line, col, "unexpected", hint="expected")
    assert not INTERNAL.search(run.err.replace(run.path, "")), run.err


def test_missing_token_at_end_of_line(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(8, 3) ->
        }
        """
    run = check(tmp_path, capsys, src)
    # points just past the `->`, where an op was expected
    assert_error(run, 3, len("    conv(8, 3) ->") + 1, "unexpected end of line", hint="`(`")
    assert "a new line" not in run.message


@pytest.mark.parametrize("body, token, hint", [
    ("if 1 > 0 { relu } else if 2 > 1 { relu }", "if 2", "`elif`"),
    ("a = 3", "=", "`let name = value`"),
    ("let a = 1 && 2", "&", "`and`"),
    ("let a = 1 || 2", "|", "`or`"),
])
def test_syntax_hints_for_habits_from_other_languages(tmp_path, capsys, body, token, hint):
    src = "network n {\n    input 3x32x32\n    " + body + "\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, token), "unexpected", hint=hint)


def test_integer_literal_too_long_to_convert(tmp_path, capsys):
    digits = "9" * 5000  # past Python's int <-> str digit limit
    src = f"network n {{\n    input 3x32x32\n    conv({digits}, 1)\n}}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, 3, 10, "integer literal", "too large")


def test_huge_integer_value(tmp_path, capsys):
    src = "network n {\n    input 3x32x32\n    conv(" + "9" * 400 + ", 1)\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, 3, 10, "too large", "2**53")


def test_huge_float_where_an_integer_is_needed(tmp_path, capsys):
    src = """
        network n {
            input 1e300 x 8 x 8
            relu
        }
        """
    run = check(tmp_path, capsys, src)  # not a 301-digit integer in the message
    assert_error(run, *at(src, "1e300"), "input dimension", "1e+300", "too large", width=5)
    assert len(run.lines[0]) < 200


def test_duplicate_parameter(tmp_path, capsys):
    src = """
        block b(c, k, c) { conv(c, k) }
        network n {
            input 3x32x32
            b(8, 3, 8)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "c)"), "parameter `c`", "twice")
    assert (run.path, *at(src, "c,"), "first declared here") in run.notes()


def test_form_feed_does_not_shift_the_quoted_line(tmp_path, capsys):
    src = "network n {\n    input 3x32x32\f\n    conv(8, 3) -> maxpol\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, 3, 19, "`maxpol`", hint="`maxpool`")


# ---- unknown names --------------------------------------------------------------------------


def test_unknown_op_did_you_mean(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64, 3) -> maxpol(2)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "maxpol"), "unknown op or block `maxpol`", hint="did you mean `maxpool`", width=6)


def test_unknown_block_did_you_mean(tmp_path, capsys):
    src = """
        block bottleneck(c) { conv(c, 1) }
        network n {
            input 3x32x32
            botleneck(16)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "botleneck"), "`botleneck`", hint="`bottleneck`", width=9)


def test_unknown_function(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(mx(8, 16), 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "mx("), "unknown function `mx`", hint="`max`")


def test_undefined_variable(tmp_path, capsys):
    src = """
        network n(width = 16) {
            input 3x32x32
            conv(widht, 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "widht"), "undefined name `widht`", hint="`width`", width=5)


def test_block_cannot_see_the_callers_variables(tmp_path, capsys):
    src = """
        block b() { conv(width, 3) }
        network n(width = 16) {
            input 3x32x32
            b
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "width,"), "undefined name `width`")


def test_undefined_tensor(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            a: conv(8, 3)
            @x -> relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "@x"), "no tensor named `x`", hint="label", width=2)


def test_undefined_tensor_attribute(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            stem: conv(8, 3)
            conv(stme.c * 2, 1)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "stme"), "no tensor named `stme`", hint="`stem`")


def test_output_of_unknown_tensor(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            global_avgpool -> flatten -> fc(10) as logits
            output logit
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "logit\n"), "no tensor named `logit`", hint="`logits`", width=5)


# ---- arguments --------------------------------------------------------------------------------


def test_argument_of_wrong_type_non_integer_groups(tmp_path, capsys):
    src = """
        network n {
            input 4x32x32
            conv(64, 3, groups=1.5)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "1.5"), "`groups`", "integer", "1.5", hint="whole number", width=3)


@pytest.mark.parametrize("call, token, fragments", [
    ("conv(8, 3, bias=1)", "1)", ("`bias`", "true or false")),
    ('maxpool("two")', '"two"', ("`kernel`", '"two"')),
    ("conv(8, 3, pad=(1, 2, 3))", "(1, 2, 3)", ("`pad`", "(1, 2, 3)")),
    ("dropout(1.5)", "1.5", ("`p`", "[0.0, 1.0)")),
    ("conv(0, 3)", "0,", ("`out`", "≥ 1")),
])
def test_argument_of_wrong_type_or_range(tmp_path, capsys, call, token, fragments):
    src = "network n {\n    input 4x32x32\n    " + call + "\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, token), *fragments)


def test_missing_argument(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "conv"), "`conv`", "missing the argument `kernel`", hint="usage: conv(out, kernel",
                 width=len("conv(64)"))


def test_missing_block_argument(tmp_path, capsys):
    src = """
        block stage(c, k) { conv(c, k) }
        network n {
            input 3x32x32
            stage(16)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "stage(16)"), "`stage`", "missing the argument `k`", hint="stage(c, k)")


def test_unknown_argument_did_you_mean(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64, 3, strid=2)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "strid"), "no argument `strid`", hint="`stride`", width=5)


def test_duplicate_argument(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64, 3, stride=2, stride=1)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "stride", 1), "`stride`", "twice", width=6)
    notes = run.notes()
    assert len(notes) == 1 and notes[0][1] == 3 and "first given here" in notes[0][3]


def test_duplicate_argument_positional_and_keyword(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64, 3, out=32)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "out"), "`out`", "twice")


def test_positional_after_keyword(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv(64, kernel=3, 2)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "2)"), "positional argument follows a keyword argument")


def test_too_many_positional_arguments(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            relu(2)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "2)"), "`relu` takes 0 positional arguments, got 1", hint="usage: relu()")


# ---- limits -----------------------------------------------------------------------------------


def test_recursion_without_base_case(tmp_path, capsys):
    src = """
        block forever(c) {
            conv(c, 1) -> forever(c)
        }
        network n {
            input 3x32x32
            forever(8)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "forever(c)", 1), "deeper than 64", "recursion", hint="base case")


def test_repetition_past_the_limit(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            relu * 100000
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "100000"), "100000", "limit", width=6)


def test_size_past_sane_limits(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            huge: conv(10000000, 1)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "conv"), "`huge`", "10000000×32×32", "sane limits")


def test_range_past_the_limit(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            for i in range(1000000) { relu }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "range"), "range(1000000)", "limit")


@pytest.mark.parametrize("expr, fragment", [
    ("2 ** 100", "exponent too large"),
    ("0 ** -1", "division by zero"),
    ("(-8) ** 0.5", "complex"),
    ("10.0 ** 400", "overflow"),
])
def test_power_errors(tmp_path, capsys, expr, fragment):
    src = "network n {\n    input 3x32x32\n    conv(" + expr + ", 3)\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, expr), fragment, width=len(expr))


# ---- arithmetic -------------------------------------------------------------------------------


def test_division_by_zero(tmp_path, capsys):
    src = """
        network n(k = 0) {
            input 3x32x32
            conv(64 / k, 1)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "k,"), "division by zero", hint="`k` evaluates to 0", width=1)


@pytest.mark.parametrize("expr, divisor", [("7 // (2 - 2)", "2 - 2"), ("7 % 0", "0")])
def test_floor_division_and_modulo_by_zero(tmp_path, capsys, expr, divisor):
    src = "network n {\n    input 3x32x32\n    conv(" + expr + ", 1)\n}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, divisor), "division by zero", width=len(divisor))


def test_non_integer_channel_count(tmp_path, capsys):
    src = """
        block half() {
            conv(in.c / 2, 1)
        }
        network n {
            input 3x32x32
            half
        }
        """
    run = check(tmp_path, capsys, src)  # in.c = 3, so in.c / 2 = 1.5 (exact division)
    assert_error(run, *at(src, "in.c"), "`out`", "integer", "1.5", hint="`//`", width=len("in.c / 2"))


def test_condition_must_be_boolean(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            if 1 { relu }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "1 {"), "condition", "true or false", "integer", hint="n > 0", width=1)


def test_for_over_a_number(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            for i in 3 { relu }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "3 {"), "`for` needs a list", hint="range(n)")


def test_type_error_in_arithmetic(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            conv("8" + 1, 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, '"8"'), "`+`", "string", "integer")


def test_failed_assertion(tmp_path, capsys):
    src = """
        network n(width = 24) {
            input 3x32x32
            assert width % 16 == 0, "width must be a multiple of 16"
            conv(width, 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "assert"), "assertion failed", "multiple of 16")


# ---- shapes -----------------------------------------------------------------------------------


def test_non_positive_output_size_names_layer_and_formula(tmp_path, capsys):
    src = """
        network n {
            input 3x3x3
            c1: conv(8, 7)
        }
        """
    run = check(tmp_path, capsys, src)
    out = (3 + 2 * 0 - (7 - 1) - 1) // 1 + 1  # PyTorch's rule: -3
    assert out == -3
    assert_error(run, *at(src, "conv"), "`c1`", f"would be {out}", f"floor((3 + 2·0 - (7-1) - 1) / 1) + 1 = {out}",
                 "3×3×3", hint="smaller than the kernel")


def test_pool_window_larger_than_input(tmp_path, capsys):
    src = """
        network n {
            input 8x3x3
            pool: maxpool(5)
        }
        """
    run = check(tmp_path, capsys, src)
    out = (3 - (5 - 1) - 1) // 5 + 1  # 0
    assert_error(run, *at(src, "maxpool"), "`pool`", f"would be {out}", "8×3×3")


def test_add_of_mismatched_shapes_names_both_inputs(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            add {
                conv(8, 3, pad=1)
                conv(16, 3, pad=1)
            }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "add"), "add of branch 1 and branch 2", "8×32×32", "16×32×32", hint="channel counts")
    notes = run.notes()
    assert [(n[1], n[2]) for n in notes] == [at(src, "conv(8"), at(src, "conv(16")]
    assert "branch 1" in notes[0][3] and "8×32×32" in notes[0][3]
    assert "branch 2" in notes[1][3] and "16×32×32" in notes[1][3]


def test_mean_of_named_tensors_points_at_their_definitions(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            a: conv(8, 3, pad=1)
            @in -> b: conv(8, 3, stride=2, pad=1)
            mean {
                @a
                @b
            }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "mean"), "mean", "8×32×32", "8×16×16", hint="spatial sizes differ")
    notes = run.notes()
    assert [(n[1], n[2]) for n in notes] == [at(src, "conv(8, 3, pad"), at(src, "conv(8, 3, stride")]
    assert "`a`" in notes[0][3] and "`b`" in notes[1][3]


def test_residual_with_wrong_shortcut(tmp_path, capsys):
    src = """
        block basic(c, stride = 1) {
            residual {
                conv(c, 3, stride=stride, pad=1) -> bn -> relu
                conv(c, 3, pad=1) -> bn
            } shortcut {
                conv(c, 1) -> bn
            }
        }
        network n {
            input 16x32x32
            basic(16, stride=2)
        }
        """
    run = check(tmp_path, capsys, src)
    # main path: floor((32 + 2 - 2 - 1)/2) + 1 = 16; the shortcut keeps 32
    assert_error(run, *at(src, "residual"), "residual path", "shortcut", "16×16×16", "16×32×32",
                 hint="stride")
    notes = run.notes()
    assert len(notes) == 2
    assert (notes[0][1], notes[1][1]) == (at(src, "conv(c, 3, pad")[0], at(src, "conv(c, 1)")[0])
    assert "the residual path ends at `basic.bn_1`" in notes[0][3]
    assert "the shortcut ends at `basic.bn_2`" in notes[1][3]


def test_residual_identity_shortcut_needs_projection(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            residual {
                conv(8, 3, pad=1)
            }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "residual"), "identity shortcut", "8×32×32", "3×32×32", hint="1×1 conv")
    assert [n[1] for n in run.notes()] == [at(src, "conv")[0], at(src, "input")[0]]


def test_concat_with_mismatched_spatial_size(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            concat {
                conv(8, 3, pad=1)
                conv(8, 3)
            }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "concat"), "concat", "spatial", "8×32×32", "8×30×30", hint="H×W")
    assert [n[1] for n in run.notes()] == [at(src, "conv(8, 3, pad")[0], at(src, "conv(8, 3)")[0]]


@pytest.mark.parametrize("shape, out, which", [("3x32x32", 64, "input channels (3)"),
                                               ("4x32x32", 63, "output channels (63)")])
def test_channels_not_divisible_by_groups(tmp_path, capsys, shape, out, which):
    src = f"network n {{\n    input {shape}\n    g: conv({out}, 3, groups=2)\n}}\n"
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "conv"), "`g`", "groups=2", which, "not divisible by 2", hint="multiples of `groups`")


def test_fc_without_flatten(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            global_avgpool -> fc(10)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "fc"), "fc needs a flat input", "3×1×1", hint="`flatten ->`")


def test_conv_after_flatten(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            flatten -> conv(8, 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "conv"), "feature map", str(3 * 32 * 32), hint="before `flatten`")


def test_join_with_one_branch(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            concat { relu }
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "concat"), "1 branch", "two or more", hint="one statement per branch")


# ---- files and definitions --------------------------------------------------------------------


def test_missing_import_file(tmp_path, capsys):
    src = """
        import "blocks/resnet.arch"
        network n {
            input 3x32x32
            relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, 1, 1, '"blocks/resnet.arch"', "no such file", hint="relative to the importing file")
    assert str(tmp_path / "blocks" / "resnet.arch") in run.message


def test_import_of_a_directory(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    run = check(tmp_path, capsys, 'import "lib"\nnetwork n {\n    input 3x32x32\n    relu\n}\n')
    assert_error(run, 1, 1, 'cannot import "lib"', "directory")


def test_circular_import(tmp_path, capsys):
    write(tmp_path, 'import "b.arch"\nnetwork n {\n    input 3x32x32\n    relu\n}\n', "a.arch")
    write(tmp_path, '# helpers\nimport "a.arch"\nblock helper() { relu }\n', "b.arch")
    rc = cli_main(["check", str(tmp_path / "a.arch")])
    out, err = capsys.readouterr()
    b = str(tmp_path / "b.arch")
    run = Run(rc, out, err, b, "")
    assert_error(run, 2, 1, "circular import: a.arch -> b.arch -> a.arch", hint="move the shared blocks", file=b)


def test_error_in_an_imported_file_is_located_there(tmp_path, capsys):
    write(tmp_path, "block stem(c) {\n    conv(c, 3) -> relu -> maxpol(2)\n}\n", "blocks.arch")
    path, _ = write(tmp_path, 'import "blocks.arch"\nnetwork n {\n    input 3x32x32\n    stem(8)\n}\n')
    rc = cli_main(["check", str(path)])
    out, err = capsys.readouterr()
    lib = str(tmp_path / "blocks.arch")
    assert_error(Run(rc, out, err, lib, ""), 2, 27, "`maxpol`", hint="`maxpool`", file=lib)


def test_duplicate_label(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            c1: conv(8, 3)
            c1: conv(8, 3)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "conv", 1), "`c1`", "already used", hint="unique")
    assert [(n[1], n[2]) for n in run.notes()] == [at(src, "conv")]


def test_duplicate_definition(tmp_path, capsys):
    src = """
        block stem() { relu }
        block stem() { conv(8, 3) }
        network n {
            input 3x32x32
            stem
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "stem", 1), "`stem` is defined twice", hint="rename")
    assert [(n[1], n[2]) for n in run.notes()] == [at(src, "stem")]


def test_duplicate_definition_across_files(tmp_path, capsys):
    write(tmp_path, "block stem() { relu }\n", "blocks.arch")
    src = 'import "blocks.arch"\nblock stem() { relu }\nnetwork n {\n    input 3x32x32\n    stem\n}\n'
    run = check(tmp_path, capsys, src)
    assert run.rc == 2 and "`stem` is defined twice" in run.err
    locs = {(run.path, 2, 7), (str(tmp_path / "blocks.arch"), 1, 7)}
    header = re.match(r"(.*):(\d+):(\d+): error", run.lines[0])
    assert {(header[1], int(header[2]), int(header[3])), run.notes()[0][:3]} == locs


def test_input_inside_a_block(tmp_path, capsys):
    src = """
        block b() {
            input 3x32x32
            relu
        }
        network n {
            input 3x32x32
            b
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "input"), "`input`", "top level of a network")


def test_output_inside_a_block(tmp_path, capsys):
    src = """
        block b() {
            relu as r
            output r
        }
        network n {
            input 3x32x32
            b
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "output"), "`output`", "top level of a network")


def test_network_parameter_without_default(tmp_path, capsys):
    src = """
        network n(classes) {
            input 3x32x32
            global_avgpool -> flatten -> fc(classes)
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "classes"), "`classes` has no value", hint="--set classes=", width=7)


def test_network_parameter_without_default_is_fine_when_set(tmp_path, capsys):
    src = "network n(classes) {\n    input 3x32x32\n    global_avgpool -> flatten -> fc(classes)\n}\n"
    run = check(tmp_path, capsys, src, "--set", "classes=10")
    assert run.rc == 0, run.err


def test_network_without_input(tmp_path, capsys):
    src = """
        network n {
            let a = 1
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "n {"), "network `n` has no input", hint="input 3 x 224 x 224")


def test_layer_before_input(tmp_path, capsys):
    src = """
        network n {
            relu
            input 3x32x32
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "relu"), "no input tensor", hint="input")


def test_several_networks_without_choice(tmp_path, capsys):
    src = """
        network small {
            input 3x32x32
            relu
        }
        network large {
            input 3x224x224
            relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert run.rc == 2
    assert "several networks" in run.lines[0] and "small" in run.lines[0] and "large" in run.lines[0]
    assert "--network" in run.hint
    assert check(tmp_path, capsys, src, "--network", "large").rc == 0


def test_several_networks_error_is_located(tmp_path, capsys):
    src = """
        network small {
            input 3x32x32
            relu
        }
        network large {
            input 3x224x224
            relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "large"), "several networks", hint="--network")


def test_unknown_network_name(tmp_path, capsys):
    src = "network resnet {\n    input 3x32x32\n    relu\n}\n"
    run = check(tmp_path, capsys, src, "--network", "resnte")
    assert run.rc == 2 and "no network named `resnte`" in run.err and "`resnet`" in run.hint


def test_file_without_network(tmp_path, capsys):
    run = check(tmp_path, capsys, "block b() { relu }\n")
    assert run.rc == 2 and "defines no network" in run.lines[0] and "network name" in run.hint


def test_network_called_as_a_block(tmp_path, capsys):
    src = """
        network inner {
            input 3x32x32
            relu
        }
        network outer {
            input 3x32x32
            inner
        }
        """
    run = check(tmp_path, capsys, src, "--network", "outer")
    assert_error(run, *at(src, "inner", 1), "`inner` is a network, not a block", hint="`block`")


def test_label_template_producing_invalid_name(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            for i in range(2) {
                layer{i - 1}: relu
            }
        }
        """
    run = check(tmp_path, capsys, src)  # i = 0 gives `layer-1`
    assert_error(run, *at(src, "layer"), "`layer-1` is not a valid label", hint="letters, digits and underscores")


def test_label_template_with_a_float(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            layer{1.5}: relu
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "1.5"), "label", "1.5")


def test_tensor_reference_in_the_middle_of_a_chain(tmp_path, capsys):
    src = """
        network n {
            input 3x32x32
            relu as r
            conv(8, 3) -> @r
        }
        """
    run = check(tmp_path, capsys, src)
    assert_error(run, *at(src, "@r"), "`@r` can only start a chain", hint="own line")


# ---- command line -----------------------------------------------------------------------------

NET = "network n(width = 16) {\n    input 3x32x32\n    conv(width, 3)\n}\n"


def test_set_of_unknown_parameter(tmp_path, capsys):
    run = check(tmp_path, capsys, NET, "--set", "widht=8")
    assert_cli_error(run, "no parameter `widht`", hint="`width`")


@pytest.mark.parametrize("option, fragment", [
    (("--set", "width"), "NAME=VALUE"),
    (("--set", "=8"), "NAME=VALUE"),
    (("--set", "2w=8"), "NAME=VALUE"),
    (("--set", "width=abc"), "number, true or false"),
    (("--input", "3x32"), "CxHxW"),
    (("--input", "0x32x32"), "positive"),
    (("--input", "axbxc"), "CxHxW"),
    (("--input=-3x32x32",), "CxHxW"),
])
def test_malformed_set_and_input(tmp_path, capsys, option, fragment):
    run = check(tmp_path, capsys, NET, *option)
    assert_cli_error(run, option[-1].split("=", 1)[-1] if len(option) == 1 else option[1], fragment)


@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_set_of_non_finite_number_is_a_command_line_error(tmp_path, capsys, value):
    run = check(tmp_path, capsys, NET, "--set", f"width={value}")
    assert_cli_error(run, "--set", value)


def test_set_and_input_that_work(tmp_path, capsys):
    run = check(tmp_path, capsys, NET, "--set", "width=8", "--input", "3x16x16")
    assert run.rc == 0 and "ok" in run.out


def test_missing_file(tmp_path, capsys):
    rc = cli_main(["check", str(tmp_path / "nope.arch")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: cannot read") and "nope.arch" in err and "Traceback" not in err


# ---- internal errors ---------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("invariant broken")


def test_internal_error_exits_1_and_says_it_is_a_bug(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCHDSL_DEBUG", raising=False)
    monkeypatch.setattr(Graph, "lint", _boom)
    run = check(tmp_path, capsys, NET)
    assert run.rc == 1
    assert "internal error" in run.err and "RuntimeError: invariant broken" in run.err
    assert "bug" in run.err and "ARCHDSL_DEBUG" in run.err
    assert "Traceback" not in run.err


def test_internal_error_traceback_with_debug(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHDSL_DEBUG", "1")
    monkeypatch.setattr(Graph, "lint", _boom)
    path, _ = write(tmp_path, NET)
    rc = cli_main(["check", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and "bug" in err and "Traceback" in err and "_boom" in err


def test_user_errors_are_arch_errors_in_the_api():
    """The same mistakes through the Python API: an ArchError with a location, no other exception."""
    with pytest.raises(archdsl.ArchError) as info:
        archdsl.loads("network n {\n    input 3x32x32\n    maxpol(2)\n}\n", filename="api.arch")
    err = info.value
    assert (err.loc.file, err.loc.line, err.loc.col) == ("api.arch", 3, 5)
    assert "did you mean `maxpool`" in err.hint
    assert str(err).startswith("api.arch:3:5: error: unknown op or block `maxpol`")
