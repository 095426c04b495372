"""The one-run GPU check (benchmarks/gpu), tested where there is no GPU.

What can be tested here is tested here: the stage runner's deadline, results reaching disk row by
row, the report built from a results file, the warm stage's recording of Triton specializations
(for an sm_90 target, through a fake driver), the per-launch recorder and its PyTorch equivalent,
and (slow) the whole check at toy sizes under Triton's interpreter.
"""

import json
import multiprocessing
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu import collect, profiles, runner, warm  # noqa: E402

# ---- the stage runner ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _rows_on_disk(out):
    return [json.loads(line) for line in (Path(out) / runner.RESULTS).read_text().splitlines()]


def test_stages_past_their_budget_are_skipped_and_recorded(tmp_path):
    clock = FakeClock()
    results = runner.Results(str(tmp_path), clock=clock, echo=False)
    ctx = runner.Context(results, clock() + 100, {})
    ran = []

    def spend(seconds):
        def stage(c):
            ran.append(seconds)
            clock.now += seconds
        return stage

    def broken(c):
        c.emit(stage="broken", kind="check", ok=True)
        raise RuntimeError("boom")

    stages = [runner.Stage("a", 10, spend(60)),      # 100 s left: runs, leaves 40
              runner.Stage("b", 50, spend(1)),       # needs 50: skipped
              runner.Stage("broken", 5, broken),     # fails: recorded, the run goes on
              runner.Stage("c", 40, spend(30)),      # exactly 40 left: runs
              runner.Stage("d", 11, spend(1))]       # 10 left: skipped
    outcome = runner.run_stages(stages, ctx)
    results.close()
    assert outcome == {"a": "done", "b": "skipped", "broken": "failed", "c": "done", "d": "skipped"}
    assert ran == [60, 30]
    stage_rows = {r["stage"]: r for r in _rows_on_disk(tmp_path) if r["kind"] == "stage"}
    assert stage_rows["b"]["why"] == "40 s left < budget 50 s"
    assert stage_rows["a"]["seconds"] == 60 and stage_rows["c"]["seconds"] == 30
    assert "RuntimeError: boom" in stage_rows["broken"]["error"] and "boom" in stage_rows["broken"]["traceback"]
    timeline = (tmp_path / runner.TIMELINE).read_text()
    assert "b: skipped (40 s left, budget 50 s)" in timeline and "broken: failed" in timeline


def test_rows_reach_the_file_as_they_are_emitted(tmp_path):
    clock = FakeClock()
    results = runner.Results(str(tmp_path), clock=clock, echo=False)
    results.emit(stage="x", kind="check", err=float("inf"), ok=False, shape=(1, 2))
    clock.now += 2.5
    results.emit(stage="x", kind="timing", ms=1.0)
    # read before close: a run killed by a time-out leaves exactly this
    rows = _rows_on_disk(tmp_path)
    assert [r["t"] for r in rows] == [0.0, 2.5]
    assert rows[0]["err"] == "inf" and rows[0]["shape"] == [1, 2]  # JSON has no inf; tuples become lists
    results.close()


def test_a_results_file_cut_mid_line_still_loads(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"stage": "a", "kind": "stage", "status": "done"}\n{"stage": "b", "ki')
    assert collect.load_rows(str(path)) == [{"stage": "a", "kind": "stage", "status": "done"}]


# ---- the report --------------------------------------------------------------------------------

ENV = {"stage": "stack", "kind": "env", "gpu": "NVIDIA H200", "driver": "580.159.04", "torch": "2.11.0+cu130",
       "triton": "3.6.0", "cuda_runtime": "13.0", "cudnn": 91200, "time": "2026-12-04T20:00:00Z",
       "fp32_math": "archdsl: IEEE fp32 FMA; PyTorch baseline: IEEE fp32 (TF32 off)"}


def _synthetic_rows():
    check = dict(stage="correctness", kind="check", net="resnet50", dtype="bfloat16", err=3e-3, torch_err=2.5e-3,
                 tol=1.6e-2, poisoned_rerun_identical=True, graph_equals_plain=True,
                 graph_second_input_equals_plain=True)
    return [ENV,
            {"stage": "peaks", "kind": "ceiling", "what": "matmul bfloat16", "value": 780.0, "unit": "TFLOP/s"},
            {**check, "batch": 1, "ok": True},
            {**check, "batch": 256, "graph_equals_plain": False, "ok": False},
            {"stage": "e2e", "kind": "timing", "provider": "archdsl_graph", "dtype": "bfloat16", "batch": 32,
             "ms": 4.0, "img_s": 8000.0, "status": "ok", "ok": True},
            {"stage": "e2e", "kind": "timing", "provider": "eager_cl", "dtype": "bfloat16", "batch": 32,
             "ms": 5.0, "img_s": 6400.0, "status": "ok", "ok": True},
            {"stage": "layers", "kind": "timing", "launch": "layer1.0.conv2 + layer1.0.conv3", "kernel": "conv2d_chain",
             "batch": 32, "count": 1, "archdsl_us": 50.0, "cudnn_us": 100.0, "speedup_vs_cudnn": 2.0, "ok": True},
            {"stage": "layers", "kind": "timing", "launch": "conv1", "kernel": "conv2d", "batch": 32, "count": 1,
             "archdsl_us": 80.0, "cudnn_us": 40.0, "speedup_vs_cudnn": 0.5, "ok": True},
            {"stage": "e2e_fp16", "kind": "stage", "status": "skipped", "why": "20 s left < budget 60 s"}]


def test_results_folder_from_a_synthetic_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _synthetic_rows()))
    folder = Path(collect.collect(str(out), str(tmp_path / "results")))
    assert folder.name == "2026-12-04-nvidia-h200"
    data = json.loads((folder / "results.json").read_text())
    assert (data["device"], data["driver"], data["torch"], data["triton"], data["cudnn"]) == \
        ("NVIDIA H200", "580.159.04", "2.11.0+cu130", "3.6.0", 91200)
    assert (data["passed"], data["failed"]) == (5, 1)
    assert data["stages"] == {"e2e_fp16": "skipped"}
    assert all(r.get("kind") != "env" for r in data["rows"]) and len(data["rows"]) == len(_synthetic_rows()) - 1
    md = (folder / "results.md").read_text()
    assert "# archdsl GPU check: NVIDIA H200 (2026-12-04T20:00:00Z)" in md
    assert "IEEE fp32 (TF32 off)" in md
    failing = [line for line in md.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and "| 256 |" in failing[0]
    assert "| archdsl_graph | bfloat16 | 32 | 4 | 8000 |" in md
    summary = collect.summary_table(collect.load_rows(str(out / "results.jsonl")))
    assert "verdicts: 5 ok, 1 FAIL" in summary
    assert "geometric-mean speedup vs cuDNN 1.00x" in summary  # sqrt(2 * 0.5)
    assert "e2e_fp16      skipped" in summary


def test_the_plot_is_drawn_where_matplotlib_is(tmp_path):
    pytest.importorskip("matplotlib")
    results = collect.build_results(_synthetic_rows())
    path = tmp_path / "results.png"
    assert collect.plot(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_line_names_its_stages():
    from benchmarks.gpu import check

    assert check.parse_args([]).stage_names == check.MAIN_RUN
    assert check.parse_args(["--only", "pytest-gpu"]).stage_names == ("stack", "pytest_gpu")
    assert check.parse_args(["--stages", "stack,correctness"]).stage_names == ("stack", "correctness")
    with pytest.raises(SystemExit) as exc:
        check.parse_args(["--stages", "stack,bogus"])
    assert exc.value.code == 2
    # every stage of the main run has a budget on the GPU (none may start with no time left)
    assert all(profiles.FULL.budgets[name] > 0 for name in check.MAIN_RUN)


# ---- the programs and the warm stage -----------------------------------------------------------


def test_the_warm_stage_covers_every_program_the_main_run_launches():
    from benchmarks.gpu.check import MAIN_RUN

    specs = {(p.net.name, p.dtype, p.disable, p.pdl): p.batches for p in profiles.programs(profiles.FULL, MAIN_RUN)}
    assert specs[("resnet50", "bfloat16", (), False)] == (1, 32, 256)  # correctness, e2e, chain A/B, layers
    assert specs[("resnet50", "bfloat16", profiles.NO_CHAIN, False)] == (1, 32, 256)
    assert specs[("resnet50", "bfloat16", (), True)] == (1, 32, 256)  # the PDL A/B's other program
    assert specs[("resnet50", "float32", (), False)] == (1, 32, 256)
    assert specs[("googlenet", "bfloat16", (), False)] == (8,)
    modern = [specs[(name, "bfloat16", (), False)] for name in ("mobilenet_v3", "efficientnet")]
    assert modern == [(1, 8, 32)] * 2
    assert len(specs) == 11  # resnet50 x 3 dtypes, without the chain, with PDL, 4 zoo nets, 2 modern nets
    assert profiles.programs(profiles.FULL, ("stack", "peaks")) == []


def _spawn_pool():
    return multiprocessing.get_context("spawn").Pool(1, initializer=warm._child_init)


def test_the_recorder_finds_every_kernel_of_a_program_for_sm90():
    spec = profiles.ProgramSpec(profiles.SMOKE.r50, "bfloat16", (1, 2))
    records, reports = warm.record([spec], 2)
    assert [r["error"] for r in reports] == [None, None]
    # the mini ResNet: a 3x3 stem (implicit GEMM), a max pool, 1x1 convs and the fc (GEMM), the
    # two 3x3 -> 1x1 chains, the global average pool
    assert {r.fn for r in records} == {"_conv_implicit_gemm_kernel", "_pool_window_kernel", "_conv_gemm_kernel",
                                       "_chain_kernel", "_pool_adaptive_avg_kernel"}
    for rec in records:
        data = json.loads(rec.spec)
        if "target" in data:  # Triton 3.9 writes the target into the record (3.6 does not)
            assert data["target"]["backend"] == "cuda" and data["target"]["arch"] == 90
        if rec.fn.startswith("_conv") or rec.fn == "_chain_kernel":
            assert "*bf16" in json.dumps(data["signature"])  # the program's activations, as on the GPU
        assert Path(rec.path).is_file() and rec.module.startswith("archdsl_program_")
    # batch 1 and 2 are recorded apart where the specialization differs (a size of 1 is special)
    assert len(records) > len({r.fn for r in records})


# A kernel of this file, recorded in a child process (where it is a JITFunction, not interpreted).
def _aligned_and_misaligned_specs():
    import torch
    import triton
    import triton.language as tl
    from triton import knobs

    @triton.jit
    def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n), mask=i < n)

    found = {}
    knobs.runtime.jit_cache_hook = warm._hook_recording_into(found)
    arena = torch.empty(1024, dtype=torch.bfloat16, device="meta")
    y = torch.empty(64, dtype=torch.bfloat16, device="meta")
    for offset in (0, 8, 3):  # 0 and 16 bytes: 16-byte aligned; 6 bytes: not
        _copy[(1,)](arena[offset:offset + 64], y, 64, BLOCK=64)
    return [json.loads(r.spec)["attrs_vals"] for r in found.values()]


def test_the_recorder_sees_each_views_alignment_as_a_gpu_would():
    """Meta tensors carry their storage offset in data_ptr(), and a GPU allocation starts 512-byte
    aligned: a view 6 bytes in is not 16-byte divisible there either, and specializes apart."""
    with _spawn_pool() as pool:
        attrs = pool.apply(_aligned_and_misaligned_specs)
    assert len(attrs) == 2  # offsets 0 and 8 share one specialization; offset 3 has its own
    assert attrs[0] != attrs[1]


@pytest.mark.slow
def test_a_compiled_record_is_the_cache_entry_the_launch_looks_up(tmp_path, monkeypatch):
    """Compile one recorded specialization for sm_90 (ptxas, on this CPU), then run the program
    again compiling that kernel where it is launched: it must load, not add a cache entry."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # the spawned children inherit it
    spec = profiles.ProgramSpec(profiles.SMOKE.r50, "bfloat16", (2,))
    records, _ = warm.record([spec], 1)
    (pool_kernel,) = [r for r in records if r.fn == "_pool_adaptive_avg_kernel"]
    summary = warm.compile_records([pool_kernel], 1, timeout_s=240)
    assert summary["compiled"] == 1 and summary["failed"] == 0, summary
    entries = warm.cache_entries()
    assert entries == 1
    with _spawn_pool() as pool:
        met = pool.apply(warm.load_from_cache, ((spec, 2, pool_kernel.fn),))
    assert met == len(records)
    assert warm.cache_entries() == entries  # the launch's key found the warm stage's entry


# ---- the per-launch recorder -------------------------------------------------------------------


def test_conv_launches_map_to_their_nodes_and_match_pytorch():
    import torch

    from archdsl.bench.harness import fold_bn_graph, folded_state, reference_state, rel_error
    from benchmarks.gpu import check
    from benchmarks.gpu import launches as L
    from benchmarks.gpu.check import compiled_model

    graph = profiles.SMOKE.r50.load()
    state = reference_state(graph, 0)
    model = compiled_model(graph, "float32", torch.device("cpu"))
    model.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected_net = model(x).clone()
        recorded = L.record_conv_launches(model._module, model._network, [x], model.compiled.optimized.graph)
        assert torch.equal(model._network(x), expected_net)  # the launchers are restored
        check.poison_arena(model, 2)
        assert torch.equal(model(x), expected_net)  # every element rewritten after the NaN poison
        check.poison_arena(model, 2)
        assert torch.isnan(model._network.buffers(2)["conv1"]).all()  # the poison reaches the arena
    labels = [launch.label() for launch in recorded]
    assert labels == ["conv1", "layer1.conv1 + layer1.downsample.0", "layer1.conv2 + layer1.conv3", "layer2.conv1",
                      "layer2.downsample.0", "layer2.conv2 + layer2.conv3"]  # the fc is no conv launch
    assert [launch.kernel for launch in recorded].count("conv2d_chain") == 2
    assert len(L.distinct_launches(recorded + recorded[:1])) == 6
    assert L.distinct_launches(recorded + recorded[:1])[0].count == 2
    folded_graph, folds = fold_bn_graph(graph)
    fstate = folded_state(state, folds)
    optimized = model.compiled.optimized.graph
    for i, launch in enumerate(recorded):
        if launch.writes_over_an_input():
            launch = launch.with_private_outputs()
        theirs = L.CudnnEquivalent.build(launch, optimized, fstate)
        with torch.inference_mode():
            L.randomize_inputs(launch, i)
            L.poison_outputs(launch)
            launch.run()
            for ours, ref in zip(L.outputs_nchw(launch), theirs.run(), strict=True):
                assert rel_error(ours, ref) < 1e-5, launch.label()  # fp32: IEEE on both sides
    # the work of a chain: two convs' FLOPs, its intermediate not counted as traffic
    chain = L.CudnnEquivalent.build(recorded[2], optimized, fstate).nodes
    flops, nbytes = L.launch_work(chain, "conv2d_chain", 2, 4)
    assert flops == 2 * 2 * (4 * 8 * 8 * 9 * 4 + 16 * 8 * 8 * 4)  # 3x3 4->4 then 1x1 4->16 at 8x8
    x_in, w, bias, out, res = 2 * 4 * 64, 9 * 4 * 4 + 4 * 16, 4 + 16, 2 * 16 * 64, 2 * 16 * 64
    assert nbytes == 4 * (x_in + w + out + res) + 4 * bias


# ---- the whole check, tiny, on the CPU ---------------------------------------------------------


@pytest.mark.slow
def test_the_smoke_run_passes_every_stage_and_collects(tmp_path, capsys):
    from benchmarks.gpu import check

    out = tmp_path / "out"
    status = check.main(["--profile", "smoke", "--out", str(out), "-j", "2"])
    printed = capsys.readouterr().out
    rows = collect.load_rows(str(out / "results.jsonl"))
    stages = {r["stage"]: r["status"] for r in rows if r["kind"] == "stage"}
    assert stages == {name: "done" for name in check.MAIN_RUN}, [r for r in rows if r.get("status") == "failed"]
    assert status == 0
    assert [r for r in rows if r.get("ok") is False] == []
    checks = [r for r in rows if r["kind"] == "check" and "err" in r]
    assert {(r["net"], r["dtype"]) for r in checks} == {("mini_resnet", "bfloat16"), ("mini_resnet", "float32"),
                                                        ("mini_resnet_8", "bfloat16")}
    assert all(r["poisoned_rerun_identical"] and r["graph_equals_plain"] for r in checks)
    assert next(r for r in checks if r["dtype"] == "float32")["fp32_math"].endswith("(TF32 off)")
    warm_rows = [r for r in rows if r["stage"] == "warm" and r["kind"] == "compile"]
    assert warm_rows and warm_rows[0]["kernels"] >= 5
    assert {r["provider"] for r in rows if r["stage"] == "e2e" and r["kind"] == "timing"} == set(check.E2E)
    assert {r["chain"] for r in rows if r["stage"] == "chain_ab" and r["kind"] == "timing"} == {True, False}
    pdl = [r for r in rows if r["stage"] == "pdl_ab" and r["kind"] == "timing"]
    assert {r["pdl"] for r in pdl} == {True, False} and all(r["ok"] for r in pdl if r["pdl"])  # the same bits
    assert len([r for r in rows if r["stage"] == "layers" and r["kind"] == "timing"]) == 6
    assert (out / "env.json").exists() and (out / runner.TIMELINE).exists()
    assert "verdicts: " in printed and "geometric-mean speedup" in printed.splitlines()[-1]  # the table comes last
    results_md = Path(collect.collect(str(out), str(tmp_path / "results"))).joinpath("results.md")
    assert "Programmatic dependent launch A/B" in results_md.read_text()


def test_the_recorder_sees_the_split_k_launches_a_gpu_makes():
    """conv2d picks split-K from the SM count; on meta tensors that is 0 (no split), so the
    recorder gives the program the GPU's 132 SMs: a 7x7 layer with a long reduction at batch 1
    (4 output tiles for 132 SMs) records its split and reduce kernels, as the GPU will launch them."""
    net = profiles.Net("deep_narrow", "network deep_narrow {\n    input 512 x 7 x 7\n"
                                      "    conv(512, 3, pad=1, bias=false) -> bn -> relu\n}\n")
    records, reports = warm.record([profiles.ProgramSpec(net, "bfloat16", (1,))], 1)
    assert [r["error"] for r in reports] == [None]
    assert {"_conv_implicit_splitk_kernel", "_conv_splitk_reduce_kernel"} <= {r.fn for r in records}
