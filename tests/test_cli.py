"""The command line: `archdsl summary` (table and JSON) and `archdsl check`."""

import json
import re

import pytest

from archdsl.cli import main

NET = """
block stage(c, n) {
    (conv(c, 3, pad=1) -> relu) * n
    maxpool(2)
}
network tiny(width = 4, classes = 10) {
    input 3 x 32 x 32
    features: (stage(width, 2) -> stage(2 * width, 2))
    flatten -> fc(classes)
}
"""


@pytest.fixture
def arch(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(NET)
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_json_has_the_documented_schema(capsys, arch):
    code, out, err = run(capsys, "summary", arch, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["network"] == "tiny" and data["input"] == [3, 32, 32]
    for layer in data["layers"]:
        assert {"name", "op", "output_shape", "params", "macs", "activations", "rf"} <= set(layer)
    assert {"params", "macs", "activations", "activation_bytes"} <= set(data["totals"])
    # conv 3->4, 4->4, 4->8, 8->8 (3x3, bias) and fc 8*8*8 -> 10
    params = (27 * 4 + 4) + (36 * 4 + 4) + (36 * 8 + 8) + (72 * 8 + 8) + (512 * 10 + 10)
    assert data["totals"]["params"] == params
    macs = 27 * 4 * 32 * 32 + 36 * 4 * 32 * 32 + 36 * 8 * 16 * 16 + 72 * 8 * 16 * 16 + 512 * 10
    assert data["totals"]["macs"] == macs
    acts = 3 * 32 * 32 + 2 * 4 * 32 * 32 + 4 * 16 * 16 + 2 * 8 * 16 * 16 + 8 * 8 * 8 + 10
    assert data["totals"]["activations"] == acts
    assert data["totals"]["activation_bytes"] == 4 * acts
    last = data["layers"][-1]
    assert last["name"] == "fc" and last["output_shape"] == [10]


def test_summary_table_is_aligned_and_explains_its_conventions(capsys, arch):
    code, out, _ = run(capsys, "summary", arch)
    assert code == 0
    lines = out.splitlines()
    rules = [i for i, ln in enumerate(lines) if ln.startswith("─")]
    header = lines[rules[0] + 1]
    body = lines[rules[1] + 1:rules[2]]
    for column in ("Params", "MACs", "Activations"):
        edge = header.index(column) + len(column) - 1
        for row in body:  # numbers are right-aligned: each ends exactly under its header's last letter
            if row[edge:edge + 1].strip():
                assert row[edge] in "0123456789·kMG" and row[edge + 1:edge + 2] in (" ", ""), (column, row)
    assert len(body) == 13 + 3  # 13 nodes, plus a header row for `features` and each stage block
    assert "features.0.conv_1" in out and "stage(c=4, n=2)" in out
    assert "6,270" in out  # thousands separators: total params (see the JSON test)
    assert "Activations" in out and "in place" in out and "not clipped" in out


def test_depth_collapses_blocks_and_keeps_totals(capsys, arch):
    full = json.loads(run(capsys, "summary", arch, "--json")[1])
    one = json.loads(run(capsys, "summary", arch, "--json", "--depth", "1")[1])
    two = json.loads(run(capsys, "summary", arch, "--json", "--depth", "2")[1])
    assert [r["name"] for r in one["layers"]] == ["input", "features", "flatten", "fc"]
    assert [r["name"] for r in two["layers"]][1:3] == ["features.0", "features.1"]
    assert one["layers"][1]["output_shape"] == [8, 8, 8]
    for collapsed in (one, two):
        assert collapsed["totals"] == full["totals"]
    assert sum(r["params"] for r in one["layers"]) == full["totals"]["params"]


def test_set_and_input_overrides(capsys, arch):
    data = json.loads(run(capsys, "summary", arch, "--json", "--set", "width=2", "--set", "classes=3",
                          "--input", "3x16x16")[1])
    assert data["input"] == [3, 16, 16]
    assert data["layers"][-1]["output_shape"] == [3]
    assert data["params_env"] == {"width": 2, "classes": 3}


def test_check_reports_ok_and_dumps(capsys, arch):
    code, out, _ = run(capsys, "check", arch)
    assert code == 0 and "ok" in out and "network tiny" in out
    code, out, _ = run(capsys, "check", arch, "--dump")
    assert code == 0 and out.startswith("graph tiny(width=4, classes=10)")
    assert "%features.0.conv = conv(%input, out=4, kernel=3, pad=1)" in re.sub(r" +", " ", out)


def test_a_user_mistake_exits_2_with_a_located_message(capsys, tmp_path):
    path = tmp_path / "bad.arch"
    path.write_text("network n {\n    input 3 x 8 x 8\n    conv(4, 3) -> maxpol(2)\n}\n")
    code, out, err = run(capsys, "check", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"{path}:3:19: error: unknown op or block `maxpol`")
    assert "^~~~~~" in err and "did you mean `maxpool`" in err
    assert "Traceback" not in err


def test_layers_that_reach_no_output_are_warned_about(capsys, tmp_path):
    path = tmp_path / "dead.arch"
    path.write_text("network n {\n    input 3 x 8 x 8\n    conv(8, 3) as a\n    conv(4, 3)\n    @a -> relu\n}\n")
    code, out, err = run(capsys, "check", str(path))
    assert code == 0
    assert f"{path}:4:5: warning: `conv_1` (conv) does not contribute to any output" in err
    assert "conv`" not in err.replace("conv_1`", "")  # the live conv is not reported
