"""Tuned tables shipped with the package (archdsl/runtime/tuned/), the lookup order around them,
the GPU check's path from a run's measurements to a shipped file, and chain / linear tuning.

No GPU: keys name a fake device, timers are fake, kernels run under Triton's interpreter.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.runtime import tune
from archdsl.runtime.perfmodel import Ceilings, chain_default_variant, chain_problem, predict_chain
from archdsl.runtime.tune import DeviceInfo, Found, ShippedTables, TuneCache, TuneCacheWarning, TuneKey

H200 = DeviceInfo("NVIDIA H200", "9.0", "2.13.0", "3.9.0")
CEILINGS = Ceilings.h200_datasheet()

# a stem conv, a 3x3 -> 1x1 chain (its intermediate on chip) and an fc: one launch of each kind
NET = """
network t(classes = 5) {
    input 3 x 6 x 6
    stem: conv(8, 3, pad=1) -> bn -> relu
    c: conv(16, 3, pad=1) -> bn -> relu -> d: conv(32, 1) -> relu
    global_avgpool -> flatten -> fc: fc(classes)
}
"""


def write_table(directory: Path, entries: dict[TuneKey, dict], name: str = "nvidia-h200-sm90.json") -> Path:
    """A shipped table file as collect.py writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps({"format": 1, "entries": {k.text(): {"key": asdict(k), "config": c, "ms": 0.1}
                                                          for k, c in entries.items()}}))
    return path


def key(info=H200, shape="n1 h8", kernel="conv2d", dtype="bfloat16") -> TuneKey:
    return TuneKey.make(info, kernel, shape, dtype)


@pytest.fixture
def schedule():
    from archdsl.runtime import build

    return build(archdsl.loads(NET)).program.schedule


# ---- lookup order and version rules ---------------------------------------------------------------


def test_the_users_cache_wins_over_the_shipped_table_which_wins_over_the_defaults(tmp_path):
    shipped = ShippedTables(tmp_path / "tuned")
    write_table(tmp_path / "tuned", {key(): {"block_m": 64}, key(shape="n2 h8"): {"block_m": 128}})
    cache = TuneCache(tmp_path / "tune.json")
    cache.put(key(), {"block_m": 32})
    assert tune.find_config(key(), cache, shipped) == Found({"block_m": 32}, "cache")
    assert tune.find_config(key(shape="n2 h8"), cache, shipped) == Found({"block_m": 128}, "shipped")
    assert tune.find_config(key(shape="n3 h8"), cache, shipped) == Found({}, "default")
    assert tune.find_config(key(), None, shipped) == Found({"block_m": 64}, "shipped")
    assert tune.find_config(key(), None, None) == Found({}, "default")


def test_versions_fall_back_to_the_nearest_measurement_of_the_same_device_with_a_note(tmp_path):
    old = DeviceInfo("NVIDIA H200", "9.0", "2.9.1", "3.6.0")
    write_table(tmp_path, {key(old): {"block_m": 36}, key(H200): {"block_m": 39}})
    tables = ShippedTables(tmp_path, match="device")
    exact = tables.lookup(key(H200))
    assert exact == Found({"block_m": 39}, "shipped") and exact.exact
    newer_torch = tables.lookup(key(DeviceInfo("NVIDIA H200", "9.0", "2.13.1", "3.9.0")))
    assert newer_torch.config == {"block_m": 39} and not newer_torch.exact  # the same Triton first
    assert newer_torch.note == "measured with torch 2.13.0, Triton 3.9.0"
    triton_patch = tables.lookup(key(DeviceInfo("NVIDIA H200", "9.0", "2.13.1", "3.6.2")))
    assert triton_patch.config == {"block_m": 36} and "Triton 3.6.0" in triton_patch.note  # same major.minor
    # never across devices, capabilities, kernels, shapes or dtypes
    for other in (key(DeviceInfo("NVIDIA H100 80GB HBM3", "9.0", "2.13.0", "3.9.0")),
                  key(DeviceInfo("NVIDIA H200", "10.0", "2.13.0", "3.9.0")),
                  key(kernel="linear"), key(shape="n2 h8"), key(dtype="float16")):
        assert tables.lookup(other) is None
    exact_only = ShippedTables(tmp_path, match="exact")
    assert exact_only.lookup(key(H200)).config == {"block_m": 39}
    assert exact_only.lookup(key(DeviceInfo("NVIDIA H200", "9.0", "2.13.1", "3.9.0"))) is None
    assert ShippedTables(tmp_path, match="off").lookup(key(H200)) is None


def test_the_match_rule_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch):
    write_table(tmp_path, {key(DeviceInfo("NVIDIA H200", "9.0", "2.9.1", "3.6.0")): {"block_m": 36}})
    monkeypatch.setenv(tune.SHIPPED_MATCH_ENV, "exact")
    assert ShippedTables(tmp_path).lookup(key()) is None
    monkeypatch.setenv(tune.SHIPPED_MATCH_ENV, "device")
    assert ShippedTables(tmp_path).lookup(key()).config == {"block_m": 36}
    monkeypatch.setenv(tune.SHIPPED_MATCH_ENV, "sometimes")
    with pytest.raises(ValueError, match="device, exact, off"):
        ShippedTables(tmp_path)


def test_a_broken_table_is_skipped_with_a_warning_and_the_others_still_count(tmp_path):
    write_table(tmp_path, {key(): {"block_m": 64}})
    (tmp_path / "broken.json").write_text("{not json")
    good = key(shape="n5 h8")
    forged = {"format": 1, "entries": {good.text(): {"key": asdict(key(shape="n6 h8")), "config": {"block_m": 1}},
                                       "x": {"key": {"device": "?"}, "config": {}}}}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    with pytest.warns(TuneCacheWarning, match="ignoring the tuning table .*broken.json"):
        tables = ShippedTables(tmp_path)
        assert tables.lookup(key()).config == {"block_m": 64}
    assert tables.lookup(good) is None  # an entry whose text key is not its own key record's is dropped
    assert tables.devices() == [("NVIDIA H200", "9.0", 1)]
    assert ShippedTables(tmp_path / "absent").entries() == {}


def test_table_file_names_are_per_device_and_capability():
    assert tune.table_file_name("NVIDIA H200", "9.0") == "nvidia-h200-sm90.json"
    assert tune.table_file_name("NVIDIA H100 80GB HBM3", "9.0") == "nvidia-h100-80gb-hbm3-sm90.json"
    assert tune.table_file_name("../x", "9.0") == "x-sm90.json"  # nothing but the slug reaches the path


# ---- the compiled network uses shipped entries ----------------------------------------------------


def _chain_node(schedule) -> str:
    (chain,) = schedule.gemm_launches("conv2d_chain")
    return chain.node


def shipped_for(schedule, tmp_path, info=H200, dtype=torch.float32) -> tuple[ShippedTables, dict]:
    """A table with an entry for every launch of NET (blocks unlike the defaults; the chain split)."""
    configs = {"conv2d": {"path": None, "block_m": 16, "block_n": 16, "block_k": 16},
               "conv2d_chain": {"block_m": 16, "block_n": 16, "block_k": 16, "num_warps": 4, "num_stages": 2,
                                "split_n": 2, "split_mid": 1},
               "linear": {"block_m": 16, "block_n": 16, "block_k": 16}}
    entries, want = {}, {}
    for launch in tune.tuning_launches(schedule, 2):
        kernel = tune.launch_kernel(launch)
        config = dict(configs[kernel], **({"path": launch.path} if kernel == "conv2d" else {}))
        entries[TuneKey.make(info, kernel, launch.signature(), dtype)] = config
        want[launch.node] = {k: v for k, v in config.items() if k != "path"}
    write_table(tmp_path / "tuned", entries)
    return ShippedTables(tmp_path / "tuned"), want


def test_network_tuning_takes_shipped_entries_and_does_not_retune_them(schedule, tmp_path):
    shipped, want = shipped_for(schedule, tmp_path)
    assert sorted(want) == ["d", "fc", "stem"]  # one conv2d, one chain (named by its 1x1 conv), one linear
    cache = TuneCache(tmp_path / "tune.json")
    calls = []
    table = tune.network_tuning(schedule, 2, "float32", cache, H200, device="cpu", shipped=shipped,
                                autotune_missing=True, timer=lambda fn: 1.0, progress=lambda *a: calls.append(a))
    assert table == want and calls == [] and len(cache) == 0  # exact shipped entries count as tuned
    assert tune.network_tuning(schedule, 2, "float32", cache, H200, device="cpu",
                               shipped=ShippedTables(tmp_path / "none")) == {}  # nothing anywhere: defaults


def test_an_entry_from_other_versions_is_used_but_retuned_when_asked(schedule, tmp_path):
    old = DeviceInfo("NVIDIA H200", "9.0", "2.9.1", "3.6.0")
    shipped, want = shipped_for(schedule, tmp_path, info=old)
    assert tune.network_tuning(schedule, 2, "float32", TuneCache(tmp_path / "tune.json"), H200, device="cpu",
                               shipped=shipped) == want
    rows = tune.launch_tunings(schedule, 2, torch.float32, None, H200, shipped)
    assert {r.found.note for r in rows} == {"measured with torch 2.9.1, Triton 3.6.0"}
    cache = TuneCache(tmp_path / "tune.json")
    calls = []
    table = tune.network_tuning(schedule, 2, "float32", cache, H200, device="cpu", shipped=shipped,
                                autotune_missing=True, timer=lambda fn: 1.0, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(0, 3), (1, 3), (2, 3), (3, 3)] and len(cache) == 3
    assert set(table) == set(want)  # now the user's own measurements, which win from here on
    assert {r.found.source for r in tune.launch_tunings(schedule, 2, torch.float32, cache, H200, shipped)} == {"cache"}


def test_the_generated_program_launches_with_the_shipped_configuration(schedule, tmp_path, monkeypatch):
    from archdsl.runtime import CompiledModel, build

    compiled = build(archdsl.loads(NET))
    shipped, want = shipped_for(compiled.program.schedule, tmp_path)
    source = compiled.program.source
    assert "**tuned['d'])" in source and "**tuned['fc'])" in source and "**tuned['stem'])" in source
    model = CompiledModel(compiled, torch.device("cpu"), tuning=lambda batch: tune.network_tuning(
        compiled.program.schedule, batch, "float32", TuneCache(tmp_path / "tune.json"), H200, device="cpu",
        shipped=shipped))
    seen = {}
    for name in ("conv2d", "conv2d_chain", "linear"):
        original = getattr(model._module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            seen[_name] = {k: kwargs[k] for k in ("block_m", "split_n") if k in kwargs}
            return _original(*args, **kwargs)

        monkeypatch.setattr(model._module, name, spy)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():  # BN statistics and biases away from their defaults
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 6, 6, generator=g)
    with torch.no_grad():
        out, expected = model(x), reference.double()(x.double())
    assert seen == {"conv2d": {"block_m": 16}, "conv2d_chain": {"block_m": 16, "split_n": 2},
                    "linear": {"block_m": 16}}
    assert ((out.double() - expected).norm() / expected.norm()).item() < 1e-5


def test_explain_says_where_each_configuration_comes_from(schedule, tmp_path):
    shipped, _ = shipped_for(schedule, tmp_path)
    cache = TuneCache(tmp_path / "tune.json")
    stem = next(l for l in tune.tuning_launches(schedule, 2) if l.node == "stem")
    cache.put(TuneKey.make(H200, "conv2d", stem.signature(), torch.float32), {"path": stem.path, "block_m": 64})
    lines = tune.tuning_report(schedule, "float32", (2, 3), cache, shipped, infos=[H200])
    assert lines[0] == ("tuning: 3 tunable launches: 1 from your tuning cache, 2 from archdsl's shipped table "
                        "(on NVIDIA H200, sm 9.0, batch 2)")
    row = {line.split()[0]: line.split() for line in lines[1:4]}
    assert row["stem"][1:4] == ["conv2d", "cache", "block_m=64"]
    assert row["d"][1:3] == ["conv2d_chain", "shipped"] and "split_n=2" in row["d"]
    assert row["fc"][1:3] == ["linear", "shipped"]
    assert lines[4] == "tuning: 3 tunable launches: 3 from the kernels' defaults (on NVIDIA H200, sm 9.0, batch 3)"
    # without a GPU: every device with a shipped table, with this machine's versions
    report = tune.tuning_report(schedule, "float32", (2,), None, shipped)
    assert report[0] == ("tuning: 3 tunable launches: 3 from archdsl's shipped table "
                         "(on NVIDIA H200, sm 9.0, batch 2)")
    assert tune.tuning_report(schedule, "float32", (2,), None, ShippedTables(tmp_path / "none")) == [
        "tuning: no GPU here and no shipped table for any GPU: every launch would use the kernels' defaults"]


# ---- chain and linear launches --------------------------------------------------------------------


def test_chain_and_linear_launches_and_their_signatures(schedule):
    chains, linears = tune.chain_launches(schedule, 4), tune.linear_launches(schedule, 4)
    assert [c.signature() for c in chains] == [
        "n4 h6 w6 c8 -> mid16 -> p6 q6 k32 | r3x3 s1x1 pad1,1,1,1 d1x1 | res0 act1,1"]
    assert [(l.node, l.signature()) for l in linears] == [("fc", "n4 f32 -> o5 | act0")]
    assert [tune.launch_kernel(l) for l in tune.tuning_launches(schedule, 4)] == ["conv2d", "conv2d_chain", "linear"]


def _resnet_chains(batch):
    from archdsl.passes import optimize

    graph = optimize(archdsl.load(Path(__file__).resolve().parents[1] / "examples" / "resnet50.arch")).graph
    return {c.signature(): c for c in tune.chain_launches(graph, batch)}


@pytest.mark.parametrize("batch", [1, 256])
def test_gpu_chain_candidates_are_pruned_valid_and_never_worse_than_the_default_on_paper(batch):
    K = tune.chain_module()
    for launch in _resnet_chains(batch).values():
        candidates = tune.chain_candidates(launch, "bfloat16", "cuda", keep=4, ceilings=CEILINGS)
        problem = chain_problem(launch.node, launch.x_shape, launch.mid, launch.out_shape, launch.kernel,
                                launch.residual, 2)
        walk = K._chain_walk(launch.x_shape[3], launch.kernel, launch.stride, launch.pad)
        default = chain_default_variant(problem, "bfloat16", CEILINGS, K, walk)
        default_config = {"block_m": default.tile.bm, "block_n": default.tile.bn, "block_k": default.tile.bk,
                          "num_warps": default.tile.warps, "num_stages": default.tile.stages,
                          "split_n": default.split_n, "split_mid": default.split_mid}
        assert 2 <= len(candidates) <= 5 and default_config in candidates
        assert len({c["block_m"] for c in candidates}) >= 2  # ties between shapes are not all one block_m
        mid = max(16, 1 << (launch.mid - 1).bit_length())
        for c in candidates:
            K._chain_split_shape(launch.mid, launch.out_shape[3], c["block_n"], c["split_n"], c["split_mid"])
            assert c["block_m"] * mid // c["split_mid"] <= default.tile.bm * mid  # no larger on-chip tile
        first = candidates[0]
        from archdsl.runtime.perfmodel import ChainVariant, Tile

        best = ChainVariant(Tile(first["block_m"], first["block_n"], first["block_k"], first["num_warps"],
                                 first["num_stages"]), walk, first["split_n"], first["split_mid"])
        assert predict_chain(problem, best, CEILINGS).us <= predict_chain(problem, default, CEILINGS).us


def test_gpu_linear_candidates_are_gemm_blocks_pruned_without_a_path():
    launch = tune.LinearLaunch("fc", 32, 2048, 1000, 0)
    every = tune.linear_candidates(launch, "bfloat16", "cuda", keep=None)
    kept = tune.linear_candidates(launch, "bfloat16", "cuda", keep=3, ceilings=CEILINGS)
    assert len(kept) == 3 and all(c in every for c in kept) and len(every) > 3
    assert all("path" not in c and {"block_m", "block_n", "block_k", "num_warps", "num_stages"} == set(c)
               for c in every)


def test_cpu_chain_candidates_split_both_ways_where_the_shape_allows():
    launch = tune.ChainLaunch("d", "c", (1, 4, 4, 16), 32, (1, 4, 4, 40), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1),
                              False, 1, 0)
    splits = [(c["split_n"], c["split_mid"]) for c in tune.chain_candidates(launch, "float32", "cpu")]
    assert splits == [(1, 1), (2, 1), (1, 2), (2, 2)]  # 40 outputs: 3 tiles of 16; C_mid 32: two slices of 16


def test_tuning_a_chain_and_a_linear_records_the_fastest_under_their_own_kernel_names(tmp_path):
    cache = TuneCache(tmp_path / "tune.json")
    chain = tune.ChainLaunch("d", "c", (1, 4, 4, 16), 32, (1, 4, 4, 40), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1),
                             True, 1, 1)
    candidates = tune.chain_candidates(chain, torch.float32, "cpu")
    times = iter([3.0, 2.0, 1.0, 4.0])  # the third candidate is the fastest
    result = tune.tune_chain(chain, torch.float32, "cpu", cache, H200, timer=lambda fn: next(times),
                             candidates=candidates)
    assert result.config == candidates[2] and not result.failures
    linear = tune.LinearLaunch("fc", 3, 24, 10, 1)
    lin_candidates = tune.linear_candidates(linear, torch.float32, "cpu")
    times = iter([2.0, 1.0, 3.0, 4.0])
    assert tune.tune_linear(linear, torch.float32, "cpu", cache, H200, timer=lambda fn: next(times),
                            candidates=lin_candidates).config == lin_candidates[1]
    entries = json.loads(cache.path.read_text())["entries"]
    assert sorted(e["key"]["kernel"] for e in entries.values()) == ["conv2d_chain", "linear"]
    assert cache.get(TuneKey.make(H200, "conv2d_chain", chain.signature(), torch.float32)) == candidates[2]


# ---- the GPU run's measurements become the shipped table -------------------------------------------


def test_collect_ships_a_runs_measurements_merged_into_the_devices_table(tmp_path, capsys):
    from benchmarks.gpu import collect

    out, dest = tmp_path / "out", tmp_path / "tuned"
    run = TuneCache(out / "tune.json")  # what check.py --only tune writes to OUT
    run.put(key(shape="n1 a"), {"block_m": 128}, ms=0.5, timer="CudaEventTimer")
    run.put(key(shape="n1 b", kernel="conv2d_chain"), {"block_m": 64, "split_n": 2}, ms=0.7)
    run.put(key(info=DeviceInfo.current("cpu"), shape="n1 c"), {"block_m": 16}, ms=9.0)  # interpreter: not shipped
    write_table(dest, {key(shape="n1 a"): {"block_m": 32}, key(shape="n9 z"): {"block_m": 256}})
    assert collect.main([str(out), "--tuned", "--tuned-dir", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest / "nvidia-h200-sm90.json")
    table = json.loads((dest / "nvidia-h200-sm90.json").read_text())
    assert (table["device"], table["capability"], table["format"]) == ("NVIDIA H200", "9.0", 1)
    assert sorted(e["key"]["shape"] for e in table["entries"].values()) == ["n1 a", "n1 b", "n9 z"]
    tables = ShippedTables(dest)
    assert tables.lookup(key(shape="n1 a")).config == {"block_m": 128}  # the new measurement replaced the old
    assert tables.lookup(key(shape="n9 z")).config == {"block_m": 256}  # the others kept
    assert tables.lookup(key(shape="n1 b", kernel="conv2d_chain")).config == {"block_m": 64, "split_n": 2}
    assert sorted(p.name for p in dest.iterdir()) == ["nvidia-h200-sm90.json"]
    assert collect.main([str(tmp_path / "nowhere"), "--tuned", "--tuned-dir", str(dest)]) == 2


def test_collect_refuses_a_run_that_measured_nothing_on_a_gpu(tmp_path, capsys):
    from benchmarks.gpu import collect

    TuneCache(tmp_path / "tune.json").put(key(info=DeviceInfo.current("cpu")), {"block_m": 16})
    assert collect.main([str(tmp_path), "--tuned", "--tuned-dir", str(tmp_path / "tuned")]) == 2
    assert "no GPU measurement" in capsys.readouterr().err and not (tmp_path / "tuned").exists()


def test_the_tune_only_run_is_a_stage_list_with_budgets():
    from benchmarks.gpu import check

    opts = check.parse_args(["--only", "tune", "--out", "/nonexistent"])
    assert opts.stage_names == ("stack", "tune", "tuned_e2e")
    stages = check.stages_for(opts.stage_names, opts.profile)
    assert [(s.name, s.budget_s) for s in stages] == [("stack", 15), ("tune", 120), ("tuned_e2e", 90)]


# ---- package data ---------------------------------------------------------------------------------


def test_the_shipped_directory_is_package_data_and_every_table_in_it_is_valid():
    directory = tune.shipped_dir()
    assert directory.is_dir() and directory.joinpath("README.md").is_file()
    assert Path(str(directory)) == Path(tune.__file__).resolve().parent / "tuned"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuneCacheWarning)  # a committed table that does not parse fails here
        for f in directory.iterdir():
            if f.name.endswith(".json"):
                table = json.loads(f.read_text())
                entries = tune.read_table(f)
                assert len(entries) == len(table["entries"]) > 0, f.name
                assert f.name == tune.table_file_name(table["device"], table["capability"])
                assert {(e["key"]["device"], e["key"]["capability"]) for e in entries.values()} == {
                    (table["device"], table["capability"])}


def test_a_built_wheel_carries_the_shipped_tables(tmp_path):
    pytest.importorskip("hatchling")
    import shutil
    import zipfile

    from hatchling.builders.wheel import WheelBuilder

    root, tree = Path(__file__).resolve().parents[1], tmp_path / "tree"  # a copy: the shared tree is left alone
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    for name in ("archdsl", "grammars", "kernels"):
        shutil.copytree(root / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "archdsl" / "runtime" / "tuned" / "nvidia-h200-sm90.json").write_text('{"format": 1, "entries": {}}')
    (wheel,) = list(WheelBuilder(str(tree)).build(directory=str(tmp_path / "dist"), versions=["standard"]))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"archdsl/runtime/tuned/README.md", "archdsl/runtime/tuned/nvidia-h200-sm90.json"} <= set(names)


@pytest.mark.slow
def test_the_smoke_tune_run_tunes_every_launch_and_times_tuned_against_defaults(tmp_path, capsys):
    """`check.py --only tune` end to end on the CPU (the smoke profile's mini ResNet, interpreted)."""
    from benchmarks.gpu import check, collect

    out = tmp_path / "out"
    assert check.main(["--profile", "smoke", "--only", "tune", "--out", str(out)]) == 0
    rows = collect.load_rows(str(out / "results.jsonl"))
    assert {r["stage"]: r["status"] for r in rows if r["kind"] == "stage"} == {
        "stack": "done", "tune": "done", "tuned_e2e": "done"}
    (tuned,) = [r for r in rows if r["kind"] == "tune"]
    assert tuned["cache"] == tuned["launches"] > 0 and tuned["default"] == 0 and tuned["ok"]
    kernels = {e["key"]["kernel"] for e in json.loads((out / "tune.json").read_text())["entries"].values()}
    assert kernels == {"conv2d", "conv2d_chain", "linear"}  # the mini ResNet has all three
    timed = {r["tuned"]: r for r in rows if r["stage"] == "tuned_e2e" and r["kind"] == "timing"}
    assert set(timed) == {False, True} and timed[True]["ok"] and timed[True]["err_vs_default"] <= timed[True]["tol"]
    capsys.readouterr()
    assert collect.main([str(out), "--tuned", "--tuned-dir", str(tmp_path / "tuned")]) == 2  # interpreter times


@pytest.mark.slow
def test_recording_a_tuning_on_meta_collects_every_candidate_the_gpu_will_time():
    """The tune stage compiles before it times: in a child with the fake sm_90 driver, tuning on
    meta tensors launches (records, never compiles or runs) exactly the candidates a GPU tunes."""
    from benchmarks.gpu import check, warm
    from benchmarks.gpu.profiles import SMOKE

    with warm._pool(1) as pool:
        (report,) = pool.map(check.record_task, [("tune", SMOKE.r50, "bfloat16", 2, H200, CEILINGS)])
    assert report["error"] is None

    def constants(rec) -> dict:
        spec = json.loads(rec.spec)
        names = list(spec["signature"])
        return {names[i[0]]: v for i, v in zip(spec["constant_keys"], spec["constant_vals"])}

    recorded = {(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["SPLIT_MID"])
                for c in map(constants, (r for r in report["records"] if r.fn == "_chain_kernel"))}
    from archdsl.runtime import build

    schedule = build(SMOKE.r50.load(), "bfloat16").program.schedule
    wanted = {(c["block_m"], c["block_n"], c["block_k"], c["split_mid"])
              for launch in tune.chain_launches(schedule, 2)
              for c in tune.chain_candidates(launch, "bfloat16", "cuda", 4, CEILINGS)}
    assert wanted and wanted <= recorded
