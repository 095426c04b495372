"""`archdsl bench` without a GPU: the harness's logic, the reports, CUDA-graph bookkeeping, the CLI.

What a GPU is needed for (the timings themselves, CUDA graphs, torch.compile) is marked `gpu`
and skipped here; everything else runs on the CPU: pure functions on known numbers, and a whole
`run_bench` of a small network under Triton's interpreter with a fake timer (its numbers are
fake; its error checks are real).
"""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.analysis import analyze
from archdsl.bench import harness, providers, report
from archdsl.bench.harness import (BenchConfig, ConvShape, FakeTimer, Peaks, Progress, Row, Timing, apply_checks,
                                   derive, distinct_convs, percent_of_floor, roofline_floor)
from archdsl.cli import main
from archdsl.runtime.cudagraph import EmulatedGraphBackend, GraphCaptureError, GraphedCallable, maybe_graph
from archdsl.passes import optimize
from snippets import BASIC_BLOCK

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAS_CUDA = torch.cuda.is_available()

TINY = BASIC_BLOCK + """network tiny(classes = 10) {
    input 3 x 8 x 8
    stem: conv(8, 3, pad=1, bias=false) -> bn -> relu
    layer1: basic(8) * 2
    layer2: basic(16, stride=2)
    pool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


# ---- distinct convolutions -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    return archdsl.load(EXAMPLES / "resnet50.arch")


def test_resnet50_has_23_distinct_convs(resnet50):
    # Per stage (torchvision's v1.5: the stride on the 3x3), geometry = (cin, cout, k, stride, H):
    #   stem: 7x7/2 3->64 @224                                                          1
    #   layer1 @56: 64->64 1x1, 64->64 3x3, 64->256 1x1 (conv3 = downsample), 256->64 1x1   4
    #   layer2..4, each: block 0 conv1 (cin->c 1x1), conv2 (3x3/2), conv3 (c->4c 1x1),
    #   downsample (1x1/2); blocks 1..: conv1 (4c->c 1x1), conv2 (3x3/1); conv3 repeats   6 each
    expected = 1 + 4 + 3 * 6
    for graph in (resnet50, optimize(resnet50).graph):
        convs = distinct_convs(graph)
        assert len(convs) == expected == 23
        # every conv node is in exactly one group
        nodes = [n for n in graph.order() if graph.op(n) in ("conv", "fused_conv")]
        assert sorted(n for c in convs for n in c.nodes) == sorted(nodes) and len(nodes) == 53
    c01 = convs[0]
    s = c01.shape
    assert (s.cin, s.cout, s.kernel, s.stride, s.h) == (3, 64, (7, 7), (2, 2), 224)
    assert c01.nodes == ["conv1"] and c01.act == "relu" and c01.bias


def test_distinct_conv_flops_add_up_to_the_networks_conv_macs(resnet50):
    convs = distinct_convs(resnet50)
    fc_macs = 2048 * 1000
    assert sum(c.shape.macs_per_sample * c.count for c in convs) == analyze(resnet50).macs - fc_macs
    assert sum(c.shape.flops(32) * c.count for c in convs) == 2 * 32 * (4_089_184_256 - fc_macs)


def test_the_timed_epilogue_is_the_most_common_one(resnet50):
    convs = {c.shape.label(): c for c in distinct_convs(optimize(resnet50).graph)}
    c = convs["64→256 1×1 @56×56"]  # layer1.0.conv3 (plain: the residual went to the downsample), 2 more conv3s
    assert c.count == 4 and set(c.epilogues) == {"bias", "bias+residual+relu"}
    assert c.residual and c.act == "relu" and c.fused
    plain = convs["64→64 3×3 @56×56"]
    assert plain.epilogues == ["bias+relu"] and not plain.residual


# ---- roofline and bytes ----------------------------------------------------------------------------


def test_roofline_floor_on_known_numbers():
    # 1 TFLOP at 1000 TFLOP/s = 1 ms; 1 GB at 2 TB/s = 0.5 ms: compute bound, floor 1 ms
    f = roofline_floor(1e12, 1e9, 1e15, 2e12)
    assert f.compute_s == pytest.approx(1e-3) and f.memory_s == pytest.approx(5e-4)
    assert f.seconds == pytest.approx(1e-3) and f.bound == "compute"
    # 1 GFLOP, 3 GB at the same peaks: 1 µs vs 1.5 ms: memory bound
    g = roofline_floor(1e9, 3e9, 1e15, 2e12)
    assert g.seconds == pytest.approx(1.5e-3) and g.bound == "memory"
    assert percent_of_floor(2e-3, f.seconds) == pytest.approx(50.0)
    assert percent_of_floor(1e-3, f.seconds) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        roofline_floor(1, 1, 0, 1)


def test_conv_bytes_and_flops_by_hand():
    s = ConvShape(64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 56, 56, 56, 56)
    n, e = 32, 2
    x = n * 64 * 56 * 56
    w = 3 * 3 * 64 * 64
    assert s.macs_per_sample == 3 * 3 * 64 * 64 * 56 * 56
    assert s.flops(n) == 2 * n * 3 * 3 * 64 * 64 * 56 * 56
    assert s.bytes(n, e) == (x + w + x) * e
    assert s.bytes(n, e, bias=True, residual=True) == (x + w + 2 * x) * e + 64 * 4
    grouped = ConvShape(64, 128, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 32, 56, 56, 28, 28)
    assert grouped.macs_per_sample == 3 * 3 * 2 * 128 * 28 * 28 and grouped.label() == "64→128 3×3/2 g32 @56×56"


def test_timing_statistics_and_derived_columns():
    t = Timing.from_samples([5, 1, 4, 2, 3])
    assert (t.median_ms, t.min_ms, t.iters) == (3, 1, 5) and float(t) == 3
    assert t.q10_ms == pytest.approx(1.4) and t.q90_ms == pytest.approx(4.6)
    peaks = Peaks({"bfloat16": 800e12}, 3e12)
    row = derive(Row("layer", "archdsl_conv", "bfloat16", 32, flops=8e9, bytes=30e6, ms=0.02), peaks)
    assert row.tflops == pytest.approx(400.0) and row.gbs == pytest.approx(1500.0)
    # floor: max(8e9 / 800e12 = 10 µs, 30e6 / 3e12 = 10 µs) = 10 µs; measured 20 µs -> 50 %
    assert row.floor_ms == pytest.approx(0.01) and row.pct_floor == pytest.approx(50.0)
    e2e = derive(Row("e2e", "archdsl", "bfloat16", 256, flops=2e12, ms=4.0), peaks)
    assert e2e.images_per_s == pytest.approx(64_000) and e2e.tflops == pytest.approx(500.0)
    assert e2e.pct_floor is None  # no bytes counted end to end: no roofline claimed


# ---- error checks ----------------------------------------------------------------------------------


def test_rel_error_and_nan():
    ref = torch.tensor([3.0, 4.0])
    assert harness.rel_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert harness.rel_error(torch.tensor([float("nan"), 4.0]), ref) == math.inf
    assert harness.rel_error(torch.ones(3), ref) == math.inf
    assert harness.outputs_error((torch.tensor([3.0, 4.0]), torch.tensor([1.0])),
                                 (ref, torch.tensor([2.0]))) == pytest.approx(0.5)


def test_checks_scale_with_the_baselines_error():
    rows = [Row("e2e", "eager_nchw", "bfloat16", 1, error=1e-2),
            Row("e2e", "archdsl", "bfloat16", 1, error=3.9e-2),  # < 4 x 1e-2
            Row("e2e", "archdsl_graph", "bfloat16", 1, error=4.1e-2),  # > 4 x 1e-2
            Row("e2e", "eager_cl", "bfloat16", 1, error=math.inf),
            Row("e2e", "torch_compile", "bfloat16", 1, status="failed", note="boom"),
            Row("e2e", "eager_nchw", "float16", 1, error=0.5),  # the baseline itself, past its ceiling
            Row("e2e", "archdsl", "float16", 1, error=1e-3)]  # under the floor: passes whatever the baseline
    apply_checks(rows, "eager_nchw")
    assert [r.status for r in rows] == ["ok", "ok", "wrong", "wrong", "failed", "wrong", "ok"]
    assert rows[1].tolerance == pytest.approx(4e-2)
    assert rows[6].tolerance == pytest.approx(max(harness.ERROR_FLOOR["float16"], 4 * 0.5))
    # without a baseline, the floor alone
    lone = [Row("layer", "archdsl_conv", "float32", 1, conv="c01", error=2e-4)]
    apply_checks(lone, "torch_conv")
    assert lone[0].status == "wrong" and lone[0].tolerance == harness.ERROR_FLOOR["float32"]


# ---- BN folding and weights -------------------------------------------------------------------------


def test_folded_graph_computes_what_the_reference_computes():
    g = archdsl.loads(TINY)
    state = harness.reference_state(g, seed=0)
    assert any(not torch.allclose(v, torch.ones_like(v)) for k, v in state.items() if k.endswith("running_var"))
    folded_graph, folds = harness.fold_bn_graph(g)
    assert not [n for n in folded_graph if folded_graph.op(n) == "bn"]
    # BNs: the stem's, 2 per basic block in layer1 (2 blocks), 2 + the downsample's in layer2
    assert len(folds) == sum(1 for n in g if g.op(n) == "bn") == 1 + 2 * 2 + (2 + 1)
    fstate = harness.folded_state(state, folds)
    assert all(conv + ".bias" in fstate and bn + ".running_var" not in fstate for conv, (bn, _) in folds.items())
    ref = archdsl.to_torch(g).eval().double()
    ref.load_state_dict(state)
    fm = archdsl.to_torch(folded_graph).eval()
    fm.load_state_dict(fstate)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fm.double()(x), ref(x), rtol=1e-5, atol=1e-6)


# ---- a whole run on the CPU --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_run():
    g = archdsl.loads(TINY)
    config = BenchConfig(batches=(1, 2), dtypes=("float32",), peak_matmul_n=32, peak_copy_bytes=1 << 16)
    stream = io.StringIO()
    run = harness.run_bench(g, config, device="cpu", timer=FakeTimer(lambda i: 1.0 + 0.01 * i),
                            progress=Progress(harness.plan(g, config).steps, stream), source="tiny.arch")
    return run, config, stream.getvalue()


@pytest.mark.slow
def test_a_cpu_run_measures_every_row_and_checks_every_output(cpu_run):
    run, config, progress = cpu_run
    convs = run.convs
    fused = sum(1 for c in convs if c.fused)
    # per (dtype, batch): every conv for torch_conv and archdsl_conv, the fused ones for archdsl_fused
    assert len(run.layer_rows()) == len(config.batches) * (2 * len(convs) + fused)
    assert len(run.e2e_rows()) == len(config.batches) * len(harness.E2E_PROVIDERS)
    for r in run.rows:
        needs_cuda = harness.provider(r.provider).needs_cuda
        assert r.status == ("skipped" if needs_cuda else "ok"), (r.provider, r.status, r.note)
        if not needs_cuda:
            assert r.error is not None and r.error < 1e-4 and r.ms is not None and r.iters == 100
    assert all(r.pct_floor is not None and r.tflops is not None for r in run.layer_rows())
    assert run.peaks.matmul_flops["float32"] > 0 and not run.problems()
    assert progress.count("\n") <= 21 and "\r" not in progress  # not a TTY: a few plain lines


@pytest.mark.slow
def test_tuned_rows_use_and_fill_the_cache(tmp_path):
    from archdsl.runtime.tune import TuneCache

    g = archdsl.loads(TINY)
    config = BenchConfig(batches=(1,), dtypes=("float32",), e2e=False, tune=True, peak_matmul_n=16,
                         peak_copy_bytes=1 << 12)
    assert config.layer_providers[-1] == "archdsl_tuned"
    cache = TuneCache(tmp_path / "tune.json")
    run = harness.run_bench(g, config, device="cpu", timer=FakeTimer(1.0), tune_cache=cache)
    tuned = [r for r in run.rows if r.provider == "archdsl_tuned"]
    assert len(tuned) == len(run.convs) and all(r.ok and r.config and "path" in r.config for r in tuned)
    assert len(TuneCache(cache.path)) == len(run.convs)  # one key per distinct conv (batch 1, fp32)


@pytest.mark.slow
def test_json_round_trips_and_renders_identically(cpu_run, tmp_path):
    run, _, _ = cpu_run
    data = json.loads(report.render_json(run))
    assert data["archdsl_bench"] == 1 and data["network"] == "tiny" and data["input"] == [3, 8, 8]
    assert {"torch", "triton", "cudnn", "driver" if run.env.get("gpu") else "note"} <= set(data["env"])
    assert data["protocol"]["min_iters"] == 100 and data["protocol"]["bn_folded"]
    assert len(data["convs"]) == len(run.convs) and data["checks"]["wrong"] == data["checks"]["failed"] == 0
    again = harness.BenchRun.from_json(data)
    assert report.render_markdown(again) == report.render_markdown(run)
    assert report.render_text(again) == report.render_text(run)


@pytest.mark.slow
def test_write_all_writes_json_markdown_and_svg(cpu_run, tmp_path):
    run, _, _ = cpu_run
    paths, notes = report.write_all(run, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"bench.json", "bench.md", "bench.svg"} <= names
    root = ET.parse(tmp_path / "out" / "bench.svg").getroot()
    assert root.tag.endswith("svg") and len(root) > 20
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "bench.png" not in names and any("matplotlib" in n for n in notes)
    else:
        assert "bench.png" in names


def fake_run() -> harness.BenchRun:
    """A run built by hand: known numbers, to check what the renderers print."""
    shape = ConvShape(64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 56, 56, 56, 56)
    conv = harness.ConvLayer("c01", shape, ["a.conv", "b.conv"], True, "relu", False, ["bias+relu"])
    peaks = Peaks({"bfloat16": 800e12}, 3e12, {})
    protocol = {"timer": "fake", "statistic": "median", "min_iters": 100, "warmup_ms": 25.0, "l2_flush": True,
                "batches": [32], "dtypes": ["bfloat16"], "providers": {"eager_nchw": "eager cuDNN, NCHW"},
                "tolerance": {"baselines": {"e2e": "eager_nchw"}}}
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sm_count": 132, "memory_gib": 79.1,
           "driver": "570.00", "cuda_runtime": "12.8", "cudnn": 91000, "torch": "2.13", "triton": "3.9",
           "archdsl": "0.1.0", "python": "3.11"}
    rows = []
    for provider, us in (("torch_conv", 40.0), ("archdsl_conv", 50.0), ("archdsl_fused", 80.0)):
        flops, nbytes = harness.layer_work(conv, provider, 32, "bfloat16")
        rows.append(derive(Row("layer", provider, "bfloat16", 32, conv="c01", ms=us / 1e3, iters=100, error=2e-3,
                               flops=flops, bytes=nbytes), peaks))
    rows.append(derive(Row("e2e", "eager_nchw", "bfloat16", 32, ms=10.0, iters=100, error=5e-3, flops=2 * 4e9 * 32),
                       peaks))
    rows.append(derive(Row("e2e", "archdsl", "bfloat16", 32, ms=8.0, iters=100, error=0.5, flops=2 * 4e9 * 32),
                       peaks))
    rows.append(Row("e2e", "torch_compile", "bfloat16", 32, status="failed", note="RuntimeError: boom"))
    apply_checks([r for r in rows if r.kind == "layer"], "torch_conv")
    apply_checks([r for r in rows if r.kind == "e2e"], "eager_nchw")
    return harness.BenchRun("resnet50", "resnet50.arch", {"width": 64}, [3, 224, 224], env, protocol, peaks, [conv],
                            rows, macs_per_sample=4_000_000_000)


def test_markdown_of_a_fake_run_shows_the_numbers():
    run = fake_run()
    md = report.render_markdown(run)
    assert md.startswith("# archdsl bench: resnet50")
    assert "NVIDIA H100 80GB HBM3" in md and "driver 570.00" in md and "cuDNN 91000" in md
    assert "bf16 matmul 800 TFLOP/s" in md and "3000 GB/s" in md
    # c01 at batch 32: 2*9*64*64*56*56*32 = 7.40 GFLOP; floor = max(7.40e9 / 800e12 = 9.25 µs,
    # (2 * 32*64*56*56 + 9*64*64) * 2 bytes / 3e12 = 8.6 µs) = 9.25 µs: compute bound; cuDNN's 40 µs
    # is then 185 TFLOP/s and 23.1 % of the floor
    flops = 2 * 9 * 64 * 64 * 56 * 56 * 32
    nbytes = (2 * 32 * 64 * 56 * 56 + 9 * 64 * 64) * 2 + 64 * 2
    table = next(line for line in md.splitlines() if line.startswith("| c01 "))
    cells = [c.strip() for c in table.strip("|").split("|")]
    assert cells[:5] == ["c01", "64→64 3×3 @56×56", "2", "bias+relu", "7.40"]
    assert cells[5] == "40.0" and float(cells[6]) == pytest.approx(flops / 40e-6 / 1e12, rel=1e-2)
    assert float(cells[7]) == pytest.approx(nbytes / 40e-6 / 1e9, rel=1e-3)
    assert float(cells[8]) == pytest.approx(100 * (flops / 800e12) / 40e-6, rel=1e-2) == pytest.approx(23.1, rel=1e-2)
    assert cells[-1] == "compute"
    assert cells[9] == "50.0" and cells[13] == "80.0"
    total = next(line for line in md.splitlines() if line.startswith("| all "))
    assert "| 80.0 |" in total and "| 100 |" in total  # Σ count × µs: 2 × 40, 2 × 50
    e2e = next(line for line in md.splitlines() if line.startswith("| archdsl, plain launches"))
    assert "8.00 WRONG" in e2e and "4000" in e2e and "5.0e-01" in e2e
    assert "failed: RuntimeError: boom" in md and "WRONG, error 5.0e-01 > tolerance 2.0e-02" in md
    data = json.loads(report.render_json(run))
    assert data["checks"]["wrong"] == 1 and data["checks"]["failed"] == 1
    assert any("boom" in p for p in data["checks"]["problems"])


def test_plot_panels_and_text_of_a_fake_run():
    run = fake_run()
    panels = report.plot_panels(run)
    (title, unit, groups), (ltitle, lunit, lgroups) = panels
    assert unit == "×" and groups[0][0] == "batch 32"
    series = dict(groups[0][1])
    assert series["eager_nchw"] == pytest.approx(1.0) and series["archdsl"] is None  # wrong: not plotted
    assert lunit == "%" and dict(lgroups[0][1])["archdsl_conv"] == pytest.approx(run.rows[1].pct_floor)
    text = report.render_text(run)
    assert "Per layer, bfloat16, batch 32" in text and "failed" in text
    ET.fromstring(report.render_svg(run))  # well-formed


@pytest.mark.slow
def test_failing_and_wrong_providers_are_recorded_and_the_run_goes_on(monkeypatch):
    seen = {}

    def recording(ctx):
        seen["build"] = torch.backends.cudnn.benchmark

        def bind(xs):
            model = ctx.folded_model()

            def fn():
                seen["run"] = torch.backends.cudnn.benchmark
                return model(*xs)

            return harness.Bound(fn)

        return bind

    def broken(ctx):
        raise RuntimeError("cannot build this")

    def wrong(ctx):
        model = ctx.folded_model()
        return lambda xs: harness.Bound(lambda: model(*xs) * 1.5)

    table = [harness.provider("eager_nchw"),
             harness.Provider("recording", "records cudnn.benchmark", recording, cudnn_benchmark=True),
             harness.Provider("broken", "raises", broken), harness.Provider("wrong", "off by 50 %", wrong)]
    monkeypatch.setattr(providers, "E2E_PROVIDERS", table)  # where the table lives
    g = archdsl.loads(TINY)
    config = BenchConfig(batches=(1, 2), dtypes=("float32",), layers=False, peak_matmul_n=16,
                         peak_copy_bytes=1 << 12)
    run = harness.run_bench(g, config, device="cpu", timer=FakeTimer(2.0))
    status = {(r.provider, r.batch): r.status for r in run.rows}
    assert status == {(p, b): s for b in (1, 2) for p, s in (("eager_nchw", "ok"), ("recording", "ok"),
                                                              ("broken", "failed"), ("wrong", "wrong"))}
    assert seen == {"build": True, "run": True} and torch.backends.cudnn.benchmark is False
    assert all("cannot build this" in r.note for r in run.rows if r.provider == "broken")
    wrong_row = next(r for r in run.rows if r.provider == "wrong")
    assert wrong_row.error == pytest.approx(0.5, rel=1e-6) and wrong_row.ms == 2.0
    assert len(run.problems()) == 4


def test_the_cli_prints_writes_and_exits_3_when_a_check_fails(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "cuda_status", lambda: (True, "NVIDIA H100 80GB HBM3"))
    monkeypatch.setattr(harness, "run_bench", lambda graph, config, **kw: fake_run())
    out = tmp_path / "out"
    code = main(["bench", str(EXAMPLES / "resnet50.arch"), "-o", str(out), "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 3 and "failed or gave a wrong answer" in err
    assert "End to end, bfloat16" in stdout and f"wrote {out / 'bench.json'}" in stdout
    assert json.loads((out / "bench.json").read_text())["network"] == "resnet50"


# ---- the progress bar ------------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Closed:
    def isatty(self):
        raise ValueError("I/O operation on closed file")

    def write(self, text):
        raise ValueError("I/O operation on closed file")

    def flush(self):
        raise ValueError("closed")


@pytest.mark.parametrize("stream", [io.StringIO(), FakeTTY(), Closed(), object()],
                         ids=["pipe", "tty", "closed", "bare"])
def test_the_progress_bar_never_crashes(stream):
    p = Progress(7, stream)
    for i in range(7):
        p.step(f"item {i}")
        if i == 3:
            p.message("a note")
    p.close()
    if isinstance(stream, FakeTTY):
        out = stream.getvalue()
        assert "\r" in out and "7/7 100%" in out and out.endswith("\n")
    elif isinstance(stream, io.StringIO):
        out = stream.getvalue()
        assert "\r" not in out and "7/7 100%" in out and "a note" in out


# ---- CUDA graphs, emulated ---------------------------------------------------------------------------


def test_graphed_callable_captures_once_per_signature_and_aliases_outputs():
    calls = []

    def fn(x, y):
        calls.append(x.shape)
        return x * 2 + y, x.sum()

    backend = EmulatedGraphBackend(warmup=1)
    g = GraphedCallable(fn, backend=backend)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    out1, s1 = g(x, y)
    assert torch.allclose(out1, x * 2 + y) and backend.captures == 1
    x2 = torch.randn(2, 3)
    out2, _ = g(x2, y)
    assert out2 is out1 and torch.allclose(out1, x2 * 2 + y)  # the same tensor, overwritten by the replay
    g(torch.randn(4, 3), torch.randn(4, 3))
    assert backend.captures == 2 and len(g) == 2
    static = g.static_inputs(x, y)
    static[0].copy_(x)
    g(*static)  # no copy needed: the static inputs themselves
    assert torch.allclose(out1, x * 2 + y)
    g.invalidate()
    assert len(g) == 0
    with pytest.raises(TypeError, match="tensors only"):
        g(x, 3)


def test_maybe_graph_and_cloned_outputs():
    fn = lambda x: x + 1  # noqa: E731
    assert maybe_graph(fn, False) is fn
    graphed = maybe_graph(fn, True, backend=EmulatedGraphBackend())
    a, b = graphed(torch.zeros(2)), graphed(torch.ones(2))
    assert a is not b and torch.equal(a, torch.ones(2)) and torch.equal(b, torch.full((2,), 2.0))


def test_cuda_capture_refuses_cpu_tensors_clearly():
    g = GraphedCallable(lambda x: x + 1)
    with pytest.raises(GraphCaptureError, match="CUDA"):
        g(torch.zeros(2))


@pytest.mark.slow
def test_the_archdsl_graph_provider_computes_the_reference_with_an_emulated_graph():
    g = archdsl.loads(TINY)
    state = harness.reference_state(g, seed=1)
    folded_graph, folds = harness.fold_bn_graph(g)
    folded = (folded_graph, harness.folded_state(state, folds))
    ctx = harness.E2EContext(g, state, folded, "float32", torch.device("cpu"), EmulatedGraphBackend(warmup=0))
    xs = harness.network_inputs(g, 2, seed=0)
    ref = archdsl.to_torch(g).eval().double()
    ref.load_state_dict(state)
    with torch.no_grad():
        expected = ref(*(x.double() for x in xs))
        for name in ("archdsl_graph", "eager_cl_graph"):
            bound = harness.provider(name).build(ctx)(xs)
            assert harness.outputs_error(bound.fn(), expected) < 1e-5
            assert harness.outputs_error(bound.fn(), expected) < 1e-5  # a replay


# ---- the command line ------------------------------------------------------------------------------


def test_bench_without_a_gpu_exits_2_and_writes_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "cuda_status", lambda: (False, "no CUDA GPU is visible (test)"))
    out = tmp_path / "out"
    code = main(["bench", str(EXAMPLES / "resnet50.arch"), "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert "no CUDA GPU is visible" in err and "nothing was written" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="checks the real detection on a machine without CUDA")
def test_cuda_status_says_why_here():
    ok, why = harness.cuda_status()
    assert not ok and ("CUDA" in why or "GPU" in why)


def test_bench_plan_needs_no_gpu(capsys):
    code = main(["bench", str(EXAMPLES / "resnet50.arch"), "--plan", "--batch", "32", "--dtype", "bf16"])
    out, err = capsys.readouterr()
    assert code == 0 and "23 distinct convolutions" in out
    steps = 2 + 23 * 3 + len(harness.E2E_PROVIDERS)  # peaks (bf16 matmul, copy) + 3 per conv + end to end
    assert f"{steps} measurements" in out
    assert "c01   3→64 7×7/2 @224×224" in out


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "positive integers"),
    (["--dtype", "int8"], "unknown dtype"),
    (["--providers", "nope"], "unknown provider"),
])
def test_bench_rejects_bad_options_with_exit_2(capsys, argv, message):
    code = main(["bench", str(EXAMPLES / "resnet50.arch"), "--plan", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err


# ---- on a GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_graph_replays_match_eager():
    lin = torch.nn.Linear(64, 64).cuda()
    x = torch.randn(8, 64, device="cuda")
    with torch.no_grad():
        g = GraphedCallable(lin, (x,))
        y = torch.randn(8, 64, device="cuda")
        assert torch.allclose(g(y), lin(y))


@pytest.mark.gpu
def test_a_small_gpu_run_is_all_ok():
    g = archdsl.loads(TINY)
    config = BenchConfig(batches=(2,), dtypes=("bfloat16",), iters=100, peak_matmul_n=2048,
                         e2e_providers=("eager_nchw", "eager_cl", "eager_cl_graph", "archdsl", "archdsl_graph"))
    run = harness.run_bench(g, config, device="cuda")
    assert not run.problems(), [r.note for r in run.problems()]
    assert all(r.iters >= 100 for r in run.rows if r.status == "ok")


@pytest.mark.slow
def test_fp32_rows_say_both_sides_compute_ieee_fp32(cpu_run):
    """cuDNN computes fp32 in TF32 by default, archdsl's kernels in IEEE fp32: the bench turns
    TF32 off for the baselines and the report says so (issue 10)."""
    run, _, _ = cpu_run
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert "fp32: IEEE fp32 on both sides" in report.render_text(run)
