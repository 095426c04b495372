"""`archdsl.compile` as a user calls it: paths and source text told apart, every dtype spelling of
`archdsl.dtypes`, labels that are attribute names of the compiled model, flatten chains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl import dtypes
from archdsl.codegen import generate
from archdsl.passes import optimize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = "network tiny {\n input 3 x 4 x 4\n conv(4, 3, pad=1) -> relu -> global_avgpool -> flatten -> fc(2)\n}\n"


def matches_reference(model, shape=(2, 3, 4, 4)) -> None:
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(*shape)
    with torch.no_grad():
        refs = reference.double()(x.double())
    outs = model(x)
    outs, refs = (outs, refs) if isinstance(outs, tuple) else ((outs,), (refs,))
    for o, r in zip(outs, refs):
        assert o.shape == r.shape and (o.double() - r).norm().item() <= 1e-5 * max(r.norm().item(), 1e-3)


def test_a_path_with_braces_is_a_path(tmp_path):
    path = tmp_path / "net{v2}.arch"
    path.write_text(TINY, encoding="utf-8")
    model = archdsl.compile(path, device="cpu")
    assert model.graph.name == "tiny"
    assert archdsl.compile(str(path), device="cpu").graph.name == "tiny"


def test_source_text_is_given_as_source():
    assert archdsl.compile(source=TINY, device="cpu").graph.name == "tiny"
    with pytest.raises(TypeError, match="source="):
        archdsl.compile(TINY, device="cpu")  # text where a path belongs: said, never guessed
    with pytest.raises(TypeError, match="exactly one"):
        archdsl.compile(EXAMPLES / "lenet5.arch", source=TINY)
    with pytest.raises(TypeError, match="exactly one"):
        archdsl.compile()
    with pytest.raises(archdsl.ArchError):
        archdsl.compile("no/such/file{1}.arch")  # a missing path is a missing file, not a parse error


def test_a_graph_compiles_too():
    g = archdsl.loads(TINY)
    assert archdsl.compile(g, device="cpu").graph is g
    with pytest.raises(TypeError, match="path or source only"):
        archdsl.compile(g, network="tiny")


@pytest.mark.parametrize("spelling", sorted(dtypes.ALIASES))
def test_every_dtype_spelling_is_accepted_by_compile_and_codegen(spelling):
    g = optimize(archdsl.loads(TINY)).graph
    assert generate(g, spelling).dtype == dtypes.canonical(spelling)
    assert generate(g, spelling.upper()).source == generate(g, dtypes.canonical(spelling)).source


def test_compile_fp16_and_an_unknown_dtype():
    model = archdsl.compile(source=TINY, dtype="fp16", device="cpu")
    assert model.compiled.program.dtype == "float16" and "DTYPE = torch.float16" in model.source
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; use one of"):
        archdsl.compile(source=TINY, dtype="fp8", device="cpu")


def test_bench_and_compile_read_one_table():
    from archdsl.bench.harness import parse_dtypes

    assert parse_dtypes(",".join(dtypes.ALIASES)) == tuple(dict.fromkeys(dtypes.ALIASES.values()))


LABELS = """
network n {
    input 3 x 6 x 6
    forward: conv(4, 3, pad=1) -> training: bn -> tuning: relu
    run_device: conv(4, 1) -> compiled: relu -> _network: maxpool(2)
    source: flatten -> refresh: fc(5) -> state_dict: relu -> cuda: fc(3)
}
"""


def test_labels_named_like_the_compiled_models_attributes():
    torch.manual_seed(0)
    model = archdsl.compile(source=LABELS, device="cpu")
    assert callable(model.refresh) and isinstance(model.source, str) and model.run_device.type == "cpu"
    for _ in range(2):  # the second call reuses the prepared weights
        matches_reference(model, (2, 3, 6, 6))
    model.eval()
    assert model.training is False


@pytest.mark.parametrize("chain", ["flatten -> fc(5) -> flatten -> fc(2)", "flatten -> flatten -> fc(2)",
                                   "global_avgpool -> flatten -> flatten -> fc(2)"])
def test_flatten_chains_compile_and_compute_the_reference(chain):
    torch.manual_seed(0)
    model = archdsl.compile(source=f"network n {{\n input 3 x 4 x 4\n {chain}\n}}\n", device="cpu")
    matches_reference(model)


def test_a_copied_example_path_compiles(tmp_path):
    path = tmp_path / "a dir" / "lenet 5.arch"
    path.parent.mkdir()
    shutil.copy(EXAMPLES / "lenet5.arch", path)
    assert archdsl.compile(path, device="cpu").graph.name


def test_the_command_line_takes_the_same_spellings(tmp_path, capsys):
    from archdsl.cli.main import main

    assert main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(tmp_path / "o"), "--dtype", "fp16"]) == 0
    assert "DTYPE = torch.float16" in (tmp_path / "o" / "model.py").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["compile", str(EXAMPLES / "lenet5.arch"), "-o", str(tmp_path / "p"), "--dtype", "fp8"])
    assert exit_.value.code == 2 and "unknown dtype 'fp8'" in capsys.readouterr().err
