"""The per-launch performance model (archdsl.runtime.perfmodel): its arithmetic, shown by hand."""

import math
from pathlib import Path

import pytest

import archdsl
from archdsl.runtime import perfmodel as pm

H200 = pm.Ceilings.h200_datasheet()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_occupancy_limits_worked_by_hand():
    # 8 warps at 255 registers: 255 * 32 = 8160 registers a warp, rounded up to 256s: 8192;
    # 65536 / (8192 * 8) = 1 program, the registers being the limit.
    o = pm.Occupancy.from_resources(8, 255, 0)
    assert (o.programs, o.limit) == (1, "registers")
    # 4 warps at 32 registers (1024 a warp: 16 programs by registers, 16 by warps) with 16 KiB of
    # shared memory each: 228 KiB / (16 KiB + 1 KiB reserved) = 13 programs.
    o = pm.Occupancy.from_resources(4, 32, 16 * 1024)
    assert (o.programs, o.limit) == (233472 // 17408, "shared memory") == (13, "shared memory")
    # 2 warps, tiny: 64 / 2 = 32 by warps, and 32 programs an SM at most
    assert pm.Occupancy.from_resources(2, 16, 0).programs == 32


def test_from_compiled_reads_a_kernels_resources():
    class Meta:
        num_warps, shared = 8, 100 * 1024

    class Compiled:
        n_regs, metadata = 128, Meta

    # 128 * 32 = 4096 registers a warp: 65536 / (4096 * 8) = 2 programs; shared: 233472 // 103424 = 2
    assert pm.Occupancy.from_compiled(Compiled).programs == 2


def _gemm(m, n, k, elem=2):
    return pm.Problem("g", m=m, n=n, k=k, a_bytes=m * k * elem, b_bytes=k * n * elem, out_bytes=m * n * elem,
                      elem_bytes=elem)


def test_wave_quantization():
    """One tile more than the SMs can take at once costs a whole second wave on the busiest SM."""
    tile = pm.Tile(128, 128, 64, 8, 3)
    full = pm.predict(_gemm(128 * H200.sms, 128, 4096), tile, H200)
    one_more = pm.predict(_gemm(128 * (H200.sms + 1), 128, 4096), tile, H200)
    assert (full.tiles, full.per_sm, one_more.per_sm) == (132, 1, 2)
    assert one_more.compute_us == pytest.approx(2 * full.compute_us)


def test_a_large_gemm_approaches_the_roofline_floor():
    p = _gemm(8192, 8192, 8192)
    pred = pm.predict(p, pm.Tile(128, 256, 64, 8, 3), H200)
    floor = pm.floor_us(p, H200)
    assert pred.bound == "compute"
    # 2 * 8192^3 / 989e12 s = 1111.7 us; the model adds the efficiency, the launch and the last
    # wave's quantization (2048 tiles over 132 SMs: 16 per SM for 15.5 on average)
    assert floor == pytest.approx(2 * 8192 ** 3 / 989e12 * 1e6)
    assert floor < pred.us <= floor / H200.efficiency * 16 / (2048 / 132) + H200.launch_us + 1e-6


def test_memory_bound_launch_costs_its_bytes():
    p = pm.memory_problem("relu", 256 * 2 ** 20, 256 * 2 ** 20)
    pred = pm.predict_memory(p, H200)
    assert pred.us == pytest.approx(H200.launch_us + 512 * 2 ** 20 / 4.8e12 * 1e6)
    assert pred.bound == "memory"


def test_prune_keeps_the_predicted_fastest_first():
    # 64 output rows: a 128-row tile computes twice the rows it keeps; 64-row tiles do not
    problem = _gemm(64, 4096, 4096)
    candidates = [{"block_m": bm, "block_n": bn, "block_k": 64, "num_warps": w, "num_stages": 3}
                  for bm, bn, w in ((128, 128, 8), (64, 128, 4), (64, 64, 4), (128, 64, 4))]
    kept = pm.prune(problem, candidates, H200, keep=2)
    times = [pm.predict(problem, pm.Tile.from_config(c, pm.Tile(1, 1, 1)), H200).us for c in candidates]
    assert len(kept) == 2
    assert kept[0] == candidates[times.index(min(times))]
    assert all(c["block_m"] == 64 for c in kept)


def test_conv_problem_counts_the_gemm_of_a_convolution():
    # ResNet-50's layer1 3x3: batch 2, 64 -> 64 channels at 56x56, pad 1
    p = pm.conv_problem("c", (2, 56, 56, 64), (2, 56, 56, 64), (3, 3), 1, False, 2)
    assert (p.m, p.n, p.k) == (2 * 56 * 56, 64, 64 * 9)
    assert p.flops == 2 * 2 * 56 * 56 * 64 * 64 * 9
    # a stride-2 1x1 projection reads one input pixel in four
    s2 = pm.conv_problem("d", (2, 56, 56, 256), (2, 28, 28, 512), (1, 1), 1, False, 2)
    assert s2.a_bytes == 2 * 28 * 28 * 256 * 2


def test_predict_schedule_covers_every_launch_and_reads_the_tuning_table():
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize

    g = archdsl.load(EXAMPLES / "resnet50.arch", params={"width": 16}, input_shape=(3, 64, 64))
    schedule = make_schedule(optimize(g).graph)
    preds = pm.predict_schedule(schedule, 8, "bfloat16", H200)
    names = [p.name for p in preds]
    assert len(set(names)) == len(names)
    assert set(names) <= {launch.node for launch in schedule.launches}
    gemms = [launch.node for launch in schedule.launches if launch.kernel in ("conv2d", "conv2d_chain", "linear")]
    assert set(gemms) <= set(names)
    assert all(p.us > H200.launch_us for p in preds)

    first_conv = next(launch.node for launch in schedule.launches if launch.kernel == "conv2d")
    default = next(p for p in preds if p.name == first_conv)
    tuned = pm.predict_schedule(schedule, 8, "bfloat16", H200,
                                tuning={first_conv: {"block_m": 16, "block_n": 16, "num_warps": 4}})
    small = next(p for p in tuned if p.name == first_conv)
    assert small.tiles > default.tiles
    assert math.isclose(sum(p.us for p in tuned if p.name != first_conv),
                        sum(p.us for p in preds if p.name != first_conv))


def test_tuning_space_pruned_to_fit_a_gpu_window():
    """ResNet-50 at batch 32 in bf16: every distinct conv2d launch tries `keep` candidates on a GPU
    instead of its path's whole list (which is what compiling ~450 variants came from)."""
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize
    from archdsl.runtime.tune import conv_candidates, conv_launches, launch_candidates

    schedule = make_schedule(optimize(archdsl.load(EXAMPLES / "resnet50.arch")).graph)
    distinct = {c.signature(): c for c in conv_launches(schedule, 32)}
    full = sum(len(conv_candidates(c.path, "bfloat16", "cuda")) for c in distinct.values())
    pruned = {sig: launch_candidates(c, "bfloat16", "cuda", keep=3, ceilings=H200) for sig, c in distinct.items()}
    # 3 kept, and on the gemm path the TMA kernel with the best 2 unsplit tiles of those
    assert all(1 <= len(p) <= (5 if distinct[s].path == "gemm" else 3) for s, p in pruned.items())
    for s, p in pruned.items():
        tma = [c for c in p if c.get("tma")]
        assert len(tma) == (2 if distinct[s].path == "gemm" else 0) and all(c["split_k"] == 1 for c in tma)
        assert p[3:] == tma  # after the kept ones
    knobs = (lambda c: str({k: v for k, v in c.items() if k not in ("split_k", "tma")}))  # variants of them too
    assert all(set(map(knobs, p)) <= set(map(str, conv_candidates(distinct[s].path, "bfloat16", "cuda")))
               for s, p in pruned.items())
    assert sum(map(len, pruned.values())) <= 5 * len(distinct) < full / 4
    # on the CPU (the interpreter) nothing is pruned: its few small blocks are for correctness
    any_launch = next(iter(distinct.values()))
    assert launch_candidates(any_launch, "float32", "cpu") == conv_candidates(any_launch.path, "float32", "cpu")


# ---- split-K ----------------------------------------------------------------------------------------

# ResNet-50's layer4 3x3 at batch 1 in bf16: M = 49 pixels, N = 512, K = 9 * 512, BLOCK 64 x 128 x 64
LAYER4_CONV2 = pm.conv_problem("layer4.1.conv2", (1, 7, 7, 512), (1, 7, 7, 512), (3, 3), 1, False, 2)


def test_split_k_spreads_an_underfilled_launch_over_the_sms():
    plain = pm.predict(LAYER4_CONV2, pm.Tile(64, 128, 64, 4, 4), H200)
    split = pm.predict(LAYER4_CONV2, pm.Tile(64, 128, 64, 4, 4, split_k=24), H200)
    # 4 tiles of 72 blocks; 24 slices of 3 blocks: 96 programs, each 1/24 of a tile's FLOPs
    assert (plain.tiles, split.tiles, split.split_k) == (4, 96, 24)
    assert split.compute_us == pytest.approx(plain.compute_us / 24)
    # the fp32 workspace (24 x 49 x 512 x 4 bytes) goes out and back in; two launches
    assert split.dram_bytes - plain.dram_bytes == 2 * 24 * 49 * 512 * 4
    assert split.us >= 2 * H200.launch_us
    assert split.us < plain.us / 2


def test_split_k_slices_as_the_launcher_runs_them():
    """72 blocks asked as 16 slices: cdiv(72, 16) = 5 blocks a slice, so cdiv(72, 5) = 15 slices run."""
    p = pm.predict(LAYER4_CONV2, pm.Tile(64, 128, 64, 4, 4, split_k=16), H200)
    assert (p.split_k, p.tiles) == (15, 60)
    assert pm.Tile.from_config({"split_k": 3}, pm.Tile(64, 128, 64)).split_k == 3


def test_predict_schedule_splits_resnet50_layer4_at_batch_1():
    """The launcher's automatic split (conv_default_split_k with the ceilings' SM count) is what the
    model predicts by default; a tuning table's split_k=1 turns it off for that launch."""
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize

    schedule = make_schedule(optimize(archdsl.load(EXAMPLES / "resnet50.arch")).graph)
    auto = {p.name: p for p in pm.predict_schedule(schedule, 1, "bfloat16", H200)}
    conv2 = auto["layer4.1.conv2"]
    assert conv2.split_k == 24 and conv2.tiles == 96
    off = {p.name: p for p in pm.predict_schedule(schedule, 1, "bfloat16", H200,
                                                  tuning={"layer4.1.conv2": {"split_k": 1}})}
    assert off["layer4.1.conv2"].split_k == 1 and off["layer4.1.conv2"].tiles == 4
    assert conv2.us < off["layer4.1.conv2"].us / 2
    # at batch 256 the same layer has 12544 / 128 * 4 = 392 tiles: no split
    big = {p.name: p for p in pm.predict_schedule(schedule, 256, "bfloat16", H200)}
    assert big["layer4.1.conv2"].split_k == 1


def test_launch_candidates_offer_split_k_where_the_gpu_is_underfilled():
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize
    from archdsl.runtime.tune import conv_candidates, conv_launches, launch_candidates, split_k_variants

    schedule = make_schedule(optimize(archdsl.load(EXAMPLES / "resnet50.arch")).graph)
    one = {c.node: c for c in conv_launches(schedule, 1)}["layer4.1.conv2"]
    kept = launch_candidates(one, "bfloat16", "cuda", keep=3, ceilings=H200)
    assert all(c.get("split_k", 1) > 1 for c in kept)  # the model ranks the split variants first
    every = split_k_variants(one, conv_candidates(one.path, "bfloat16", "cuda"), H200.sms)
    assert len(every) == 2 * len(conv_candidates(one.path, "bfloat16", "cuda"))  # each with and without
    # at batch 256 every candidate fills the GPU: nothing to split, the list is unchanged
    big = {c.node: c for c in conv_launches(schedule, 256)}["layer4.1.conv2"]
    assert split_k_variants(big, conv_candidates(big.path, "bfloat16", "cuda"), H200.sms) == \
        conv_candidates(big.path, "bfloat16", "cuda")


def test_bench_rows_get_the_models_prediction_beside_their_measurement():
    """archdsl's rows of a bench run carry the model's time from the run's own ceilings (the
    dtype's matmul rate, the bandwidth, the SM count); cuDNN's rows none; the report shows both."""
    from archdsl.bench import report
    from archdsl.bench.harness import BenchConfig, Peaks, Row, plan
    from archdsl.bench.predict import add_predictions, ceilings_of
    from archdsl.bench.results import BenchRun
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize

    g = archdsl.load(EXAMPLES / "resnet50.arch", params={"width": 16}, input_shape=(3, 64, 64))
    config = BenchConfig(batches=(1, 4), dtypes=("bfloat16",))
    convs = plan(g, config).convs
    peaks = Peaks({"bfloat16": 700e12}, 3.0e12)
    run = BenchRun(g.name, "", {}, [3, 64, 64], {"sm_count": 114, "gpu": "a GPU"},
                   {"batches": [1, 4], "dtypes": ["bfloat16"]}, peaks, convs)
    for b in (1, 4):
        run.rows += [Row("e2e", p, "bfloat16", b, ms=1.0) for p in ("eager_cl_graph", "archdsl_graph")]
        run.rows += [Row("layer", p, "bfloat16", b, conv=c.id, ms=0.01) for c in convs
                     for p in ("torch_conv", "archdsl_fused")]
    add_predictions(run, g)

    ceilings = ceilings_of(run, "bfloat16")
    assert (ceilings.sms, ceilings.matmul_tflops, ceilings.bandwidth_gbs, ceilings.measured) == (114, 700, 3000, True)
    schedule = make_schedule(optimize(g).graph)
    for r in run.rows:
        if r.provider == "archdsl_graph":
            want = sum(p.us for p in pm.predict_schedule(schedule, r.batch, "bfloat16", ceilings)) / 1e3
            assert r.predicted_ms == pytest.approx(want)
        elif r.provider in ("eager_cl_graph", "torch_conv"):
            assert r.predicted_ms is None
    fused = [r for r in run.rows if r.provider == "archdsl_fused"]
    # a layer is predicted when its first node is a conv2d launch (not one kept on chip by a chain)
    assert any(r.predicted_ms for r in fused) and all(r.predicted_ms is None or r.predicted_ms > 0 for r in fused)
    text = report.render_text(run)
    assert report.PREDICTED_LABEL in text and "model µs" in text


@pytest.mark.parametrize("name", ["shufflenet_v2", "googlenet", "densenet121", "resnet50"])
def test_predict_schedule_costs_the_launches_the_program_makes(name):
    """Views (flatten, chunk, a shuffle stored shuffled) and concats whose inputs wrote their own
    slices launch nothing in the generated program, so the model gives them no time either; a
    concat that copies pays one launch per copied input."""
    from archdsl.codegen.emit import generate
    from archdsl.passes import optimize

    program = generate(optimize(archdsl.load(EXAMPLES / f"{name}.arch")).graph, "bfloat16")
    preds = {p.name: p for p in pm.predict_schedule(program.schedule, 1, "bfloat16", H200)}
    assert len(preds) == sum(1 for s in program.steps if s.kernel)
    plan = program.plan
    assert not [n for n in preds if plan.kind.get(n) == "view"]
    for concat in (n for n in program.graph if program.graph.op(n) == "concat"):
        copies = len(plan.copies.get(concat, []))
        assert (concat in preds) == (copies > 0)
        if copies:
            moved = 2 * sum(math.prod(program.graph.shape(program.graph.args(concat)[port]))
                            for port in plan.copies[concat]) * 2  # read + write, bf16
            assert preds[concat].dram_bytes == moved
            assert preds[concat].us >= copies * H200.launch_us
