"""archdsl/runtime/tune.py: the autotuning cache and `autotune`, with a fake timer, under Triton's interpreter.

The kernel tuned is the real ``conv2d`` of kernels/conv2d.py (on CPU tensors it runs in the
interpreter); the timer is fake, so which configuration wins is decided by the test.
"""

from __future__ import annotations

import json
import multiprocessing
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archdsl.runtime import tune
from archdsl.runtime.tune import DeviceInfo, TuneCache, TuneCacheWarning, TuneError, TuneKey, autotune
from kernel_tensors import DEV, rel_err

INFO = DeviceInfo("Fake GPU 80GB", "9.0", "2.13.0", "3.9.0")


def key(shape="n1 h8", kernel="conv2d", info=INFO, dtype="bfloat16") -> TuneKey:
    return TuneKey.make(info, kernel, shape, dtype)


@pytest.fixture
def cache(tmp_path):
    return TuneCache(tmp_path / "tune.json")


# ---- keys and the file ---------------------------------------------------------------------------


def test_key_has_every_field_and_each_one_matters():
    base = key()
    assert json.loads(base.text()) == ["Fake GPU 80GB", "9.0", "2.13.0", "3.9.0", "conv2d", "n1 h8", "bfloat16"]
    variants = [
        TuneKey.make(DeviceInfo("Other GPU", "9.0", "2.13.0", "3.9.0"), "conv2d", "n1 h8", "bfloat16"),
        TuneKey.make(DeviceInfo("Fake GPU 80GB", "8.0", "2.13.0", "3.9.0"), "conv2d", "n1 h8", "bfloat16"),
        TuneKey.make(DeviceInfo("Fake GPU 80GB", "9.0", "2.14.0", "3.9.0"), "conv2d", "n1 h8", "bfloat16"),
        TuneKey.make(DeviceInfo("Fake GPU 80GB", "9.0", "2.13.0", "3.10.0"), "conv2d", "n1 h8", "bfloat16"),
        key(kernel="linear"), key(shape="n2 h8"), key(dtype=torch.float16),
    ]
    assert len({v.text() for v in variants} | {base.text()}) == len(variants) + 1
    assert key(dtype=torch.bfloat16) == base  # a torch dtype and its name are the same key


def test_default_cache_path_follows_archdsl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path / "c"))
    assert tune.default_cache_path() == tmp_path / "c" / "tune.json"
    monkeypatch.delenv("ARCHDSL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tune.default_cache_path() == tmp_path / "xdg" / "archdsl" / "tune.json"
    assert TuneCache().path == tmp_path / "xdg" / "archdsl" / "tune.json"


def test_put_persists_atomically_and_a_new_cache_reads_it(cache, tmp_path):
    assert cache.get(key()) is None and cache.misses == 1
    cache.put(key(), {"block_m": 64, "num_warps": 4}, ms=0.5)
    data = json.loads(cache.path.read_text())
    assert data["format"] == 1 and len(data["entries"]) == 1
    (entry,) = data["entries"].values()
    assert entry["config"] == {"block_m": 64, "num_warps": 4} and entry["ms"] == 0.5
    assert entry["key"]["torch"] == "2.13.0"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left
    fresh = TuneCache(cache.path)
    assert fresh.get(key()) == {"block_m": 64, "num_warps": 4} and fresh.hits == 1


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", '{"format": 99, "entries": {}}', "\x00\x01garbage"])
def test_a_corrupt_file_is_ignored_with_a_warning_then_rewritten(cache, content):
    cache.path.write_text(content)
    with pytest.warns(TuneCacheWarning, match="ignoring the autotuning cache"):
        assert cache.get(key()) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuneCacheWarning)
        cache.put(key(), {"block_m": 32})
    assert TuneCache(cache.path).get(key()) == {"block_m": 32}
    assert json.loads(cache.path.read_text())["format"] == 1


def test_malformed_entries_are_dropped_not_fatal(cache):
    good = key("good")
    cache.path.write_text(json.dumps({"format": 1, "entries": {
        good.text(): {"config": {"block_m": 16}}, key("bad").text(): {"config": "oops"}, key("worse").text(): 7}}))
    assert cache.get(good) == {"block_m": 16}
    assert cache.get(key("bad")) is None and cache.get(key("worse")) is None


def test_two_writers_that_loaded_before_each_other_keep_both_entries(tmp_path):
    a, b = TuneCache(tmp_path / "tune.json"), TuneCache(tmp_path / "tune.json")
    assert a.get(key("x")) is None and b.get(key("y")) is None  # both loaded the (empty) file
    a.put(key("x"), {"block_m": 1})
    b.put(key("y"), {"block_m": 2})  # b re-reads the file before replacing it: x survives
    merged = TuneCache(tmp_path / "tune.json")
    assert merged.get(key("x")) == {"block_m": 1} and merged.get(key("y")) == {"block_m": 2}


def _writer(path: str, worker: int, n: int) -> None:
    c = TuneCache(path)
    for i in range(n):
        c.put(key(f"w{worker} i{i}"), {"block_m": i})


def test_concurrent_processes_never_corrupt_the_file_nor_lose_entries(tmp_path):
    path = str(tmp_path / "tune.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = json.loads(open(path).read())["entries"]  # parses: never half-written
    assert len(entries) == 4 * 10


def test_an_unwritable_cache_warns_and_keeps_the_result_in_memory(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")  # unwritable even for root
    c = TuneCache(blocker / "tune.json")
    with pytest.warns(TuneCacheWarning, match="cannot write"):
        c.put(key(), {"block_m": 8})
    assert c.get(key()) == {"block_m": 8}
    assert blocker.read_text().startswith("a file")


# ---- autotune with a fake timer --------------------------------------------------------------------


class ConfigTimer:
    """A fake timer: runs fn once (so the kernel really executes) and returns the time the test
    assigned to the configuration that fn just launched."""

    name = "config-fake"

    def __init__(self, recorder, times):
        self.recorder, self.times, self.calls = recorder, times, 0

    def __call__(self, fn):
        fn()
        self.calls += 1
        cfg = self.recorder.last
        return self.times[(cfg["block_m"], cfg["block_n"], cfg["block_k"])]


class Recorder:
    """Wraps conv2d: records each launch's configuration and counts launches."""

    def __init__(self, conv2d):
        self.conv2d, self.last, self.launches = conv2d, None, 0

    def __call__(self, *args, **kwargs):
        self.launches += 1
        self.last = {k: kwargs.get(k) for k in ("block_m", "block_n", "block_k", "path")}
        return self.conv2d(*args, **kwargs)


def conv_problem(dtype=torch.float32, seed=0):
    """A 3x3 conv, 8 -> 16 channels, 6x6, batch 2, NHWC operands, bias; and its reference."""
    mod = tune.kernel_module("conv2d")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 8, 6, 6, generator=g).to(dtype)
    w = (torch.randn(16, 8, 3, 3, generator=g) * 0.2).to(dtype)
    b = torch.randn(16, generator=g)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    xn = x.permute(0, 2, 3, 1).contiguous().to(DEV)
    out = torch.full((2, 6, 6, 16), float("nan"), dtype=dtype, device=DEV)
    wp = mod.pack_conv_weight(w, 1, dtype).to(DEV)
    return mod, xn, wp, out, b.to(DEV), ref


CANDIDATES = [
    {"block_m": 16, "block_n": 16, "block_k": 16},
    {"block_m": 32, "block_n": 16, "block_k": 16},
    {"block_m": 16, "block_n": 32, "block_k": 16},
    {"block_m": 32, "block_n": 32, "block_k": 16},
]
TIMES = {(16, 16, 16): 3.0, (32, 16, 16): 2.0, (16, 32, 16): 0.5, (32, 32, 16): 1.0}
GEOMETRY = dict(kernel=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1), dilation=(1, 1), groups=1)


class FakeTuning:
    """conv_problem()'s conv, its conv2d wrapped in a Recorder, a ConfigTimer giving TIMES, and `tune`:
    tune_conv2d over CANDIDATES with them (or with another timer or device)."""

    def __init__(self):
        self.mod, self.x, self.w, self.out, self.b, self.ref = conv_problem()
        self.rec = Recorder(self.mod.conv2d)
        self.timer = ConfigTimer(self.rec, TIMES)

    def tune(self, cache, timer=None, info=INFO):
        return tune.tune_conv2d(self.x, self.w, self.out, bias=self.b, timer=timer or self.timer, cache=cache,
                                candidates=CANDIDATES, conv2d=self.rec, info=info, **GEOMETRY)


@pytest.mark.slow
def test_the_fastest_config_by_the_timer_wins_and_is_correct(cache):
    t = FakeTuning()
    result = t.tune(cache)
    assert not result.cached and t.timer.calls == 4
    assert result.config == {"block_m": 16, "block_n": 32, "block_k": 16} and result.ms == 0.5
    assert [trial.ms for trial in result.trials] == [3.0, 2.0, 0.5, 1.0]
    # the winner computes the convolution
    t.out.fill_(float("nan"))
    t.mod.conv2d(t.x, t.w, t.out, bias=t.b, **GEOMETRY, **result.config)
    assert rel_err(t.out.permute(0, 3, 1, 2), t.ref) < 1e-5
    # recorded on disk under the conv2d key
    (entry,) = json.loads(cache.path.read_text())["entries"].values()
    assert entry["config"] == result.config and entry["ms"] == 0.5 and entry["timer"] == "config-fake"
    assert entry["tried"] == 4 and entry["failed"] == 0
    assert entry["key"]["kernel"] == "conv2d" and entry["key"]["dtype"] == "float32"
    assert entry["key"]["shape"].startswith("n2 h6 w6 c8 -> p6 q6 k16 | r3x3 s1x1 pad1,1,1,1")


@pytest.mark.slow
def test_a_second_lookup_hits_the_cache_without_timing_or_launching(cache):
    t = FakeTuning()
    first = t.tune(cache)
    calls, launches = t.timer.calls, t.rec.launches
    again = t.tune(TuneCache(cache.path))
    assert again.cached and again.config == first.config and again.ms == first.ms
    assert (t.timer.calls, t.rec.launches) == (calls, launches)  # nothing timed, nothing launched
    # what a runtime would call at load time (no tensors): the same key
    path = t.mod.conv_path(t.x, t.out, **GEOMETRY)
    assert tune.lookup_conv2d(cache, INFO, t.x.shape, t.out.shape, t.x.dtype, path=path, **GEOMETRY) == first.config
    assert tune.lookup_conv2d(cache, INFO, (4, 6, 6, 8), (4, 6, 6, 16), t.x.dtype, path=path, **GEOMETRY) == {}


@pytest.mark.slow
def test_a_different_torch_version_misses_and_tunes_again(cache):
    t = FakeTuning()
    t.tune(cache)
    newer = DeviceInfo(INFO.name, INFO.capability, "2.14.0.dev", INFO.triton)
    swapped = {**TIMES, (16, 32, 16): 9.0}  # and on the new version another config wins
    result = t.tune(cache, timer=ConfigTimer(t.rec, swapped), info=newer)
    assert not result.cached and result.config == {"block_m": 32, "block_n": 32, "block_k": 16}
    assert len(TuneCache(cache.path)) == 2  # both versions' results kept


@pytest.mark.slow
def test_configs_that_fail_to_compile_or_launch_are_skipped(cache):
    t = FakeTuning()
    bad = [
        {"block_m": 16, "block_n": 16, "block_k": 16, "path": "gemm"},  # a 3x3 conv: the launcher refuses
        {"block_m": 24, "block_n": 16, "block_k": 16},  # not a power of two: Triton refuses to compile
    ]
    times = {**TIMES, (24, 16, 16): 0.01}
    result = autotune(t.rec, bad + CANDIDATES[:2], (t.x, t.w, t.out), ConfigTimer(t.rec, times),
                      kwargs=dict(bias=t.b, **GEOMETRY), key=key("fails"), cache=cache)
    assert [t.error is not None for t in result.trials] == [True, True, False, False]
    assert "ValueError" in result.trials[0].error and "gemm" in result.trials[0].error
    assert result.config == CANDIDATES[1]
    assert TuneCache(cache.path).entry(key("fails"))["failed"] == 2


def test_when_nothing_works_autotune_raises_and_records_nothing(cache):
    def broken(*args, **kwargs):
        raise RuntimeError("out of resources")

    with pytest.raises(TuneError, match="no configuration worked.*out of resources"):
        autotune(broken, CANDIDATES, (), lambda fn: 1.0, key=key(), cache=cache)
    assert not cache.path.exists()


def test_ties_go_to_the_earlier_candidate_and_kwargs_may_not_clash():
    calls = []
    result = autotune(lambda **kw: calls.append(kw), [{"a": 1}, {"a": 2}], (), lambda fn: 1.0)
    assert result.config == {"a": 1} and len(calls) == 2
    with pytest.raises(ValueError, match="kwargs already set"):
        autotune(lambda **kw: None, [{"a": 1}], (), lambda fn: 1.0, kwargs={"a": 0})


def test_candidates_fit_shared_memory_and_name_their_path():
    for path in ("gemm", "implicit_tap", "implicit_flat"):
        for dtype, elem in ((torch.bfloat16, 2), (torch.float32, 4)):
            cands = tune.conv_candidates(path, dtype, "cuda")
            assert cands and all(c["path"] == path for c in cands)
            assert all(c["num_stages"] * (c["block_m"] * c["block_k"] + c["block_k"] * c["block_n"]) * elem
                       <= 227 * 1024 for c in cands)
            assert len({tuple(sorted(c.items())) for c in cands}) == len(cands)
        assert all(max(c["block_m"], c["block_n"]) <= 32 for c in tune.conv_candidates(path, torch.float32, "cpu"))
    assert all("block_k" not in c for c in tune.conv_candidates("depthwise", torch.bfloat16, "cuda"))


@pytest.mark.slow
def test_the_cpu_candidates_all_run_in_the_interpreter(cache):
    """The candidate list `tune_conv2d` picks by default on this device compiles and computes."""
    mod, x, w, out, b, ref = conv_problem(torch.bfloat16, seed=3)
    result = tune.tune_conv2d(x, w, out, bias=b, timer=lambda fn: 1.0, cache=cache, info=INFO, **GEOMETRY)
    assert not result.failures and result.config["path"] == "implicit_flat"  # 8 channels: the flat walk
    assert rel_err(out.permute(0, 3, 1, 2), ref) < 1e-2


# ---- a whole network: what the runtime would consult -------------------------------------------------

NET = """
network small(classes = 4) {
    input 3 x 8 x 8
    conv(8, 3, pad=1, bias=false) -> bn -> relu
    residual { a: conv(8, 3, pad=1) -> relu -> b: conv(8, 3, pad=1) }
    relu -> conv(16, 1) -> global_avgpool -> flatten -> fc(classes)
}
"""


@pytest.mark.slow
def test_network_tuning_reads_the_cache_and_tunes_misses_once_per_signature(cache):
    import archdsl
    from archdsl.passes import optimize

    graph = optimize(archdsl.loads(NET)).graph
    launches = tune.conv_launches(graph, 2)
    assert [(l.residual, l.act, l.path) for l in launches] == [
        (False, 1, "implicit_flat"), (False, 1, "implicit_flat"), (True, 1, "implicit_flat"), (False, 0, "gemm")]
    assert tune.network_tuning(graph, 2, torch.float32, cache, INFO, device=DEV) == {}  # nothing cached yet
    timer = lambda fn: 1.0  # noqa: E731 - every config ties: the first candidate wins
    calls = []
    table = tune.network_tuning(graph, 2, torch.float32, cache, INFO, autotune_missing=True, device=DEV, timer=timer,
                                progress=lambda done, total, node: calls.append((done, total, node)))
    every = tune.tuning_launches(graph, 2)  # the 4 convs, then the fc (a linear launch, tuned too)
    assert [tune.launch_kernel(l) for l in every] == ["conv2d"] * 4 + ["linear"]
    assert sorted(table) == sorted(l.node for l in every)
    firsts = list({l.signature(): l.node for l in reversed(every)}.values())[::-1]  # first launch per signature
    assert calls == [(i, 5, node) for i, node in enumerate(sorted(firsts, key=[l.node for l in every].index))] \
        + [(5, 5, "")]
    assert all("path" not in table[l.node] and {"block_m", "block_n"} <= set(table[l.node]) for l in launches)
    # 5 distinct signatures (3 -> 8, 8 -> 8, 8 -> 8 with the residual, the 1x1, the fc): 5 tunings, 5 keys
    assert len({l.signature() for l in every}) == 5 == len(TuneCache(cache.path))
    calls.clear()
    again = tune.network_tuning(graph, 2, "float32", TuneCache(cache.path), INFO, device=DEV, autotune_missing=True,
                                progress=lambda *a: calls.append(a))
    assert again == table and calls == []  # everything cached: nothing to count
    assert tune.network_tuning(graph, 3, "float32", TuneCache(cache.path), INFO, device=DEV) == {}  # another batch


def test_conv_launches_follow_the_launch_decisions():
    import archdsl
    from archdsl.passes import launch_groups, optimize

    graph = optimize(archdsl.loads("network n {\n input 8 x 6 x 6\n concat { a: conv(4, 1); b: conv(6, 1) -> relu }\n"
                                   " c: conv(8, 3, pad=1) -> relu -> d: conv(5, 1)\n}")).graph
    groups = launch_groups(graph)
    assert groups.siblings == {"a": ("b",)} and groups.chains == {"d": "c"}
    launches = tune.conv_launches(graph, 2)
    # b is computed by a's launch (one GEMM 4 + 6 wide); c -> d is a conv2d_chain launch, not conv2d
    assert [(l.node, l.out_shape, l.path) for l in launches] == [("a", (2, 6, 6, 10), "gemm")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_compile_tune_without_a_gpu_says_so_and_writes_nothing(tmp_path, capsys):
    from archdsl.cli.main import main

    examples = Path(__file__).resolve().parents[1] / "examples"
    out = tmp_path / "o"
    assert main(["compile", str(examples / "lenet5.arch"), "-o", str(out), "--tune", "1,32"]) == 2
    assert "--tune times kernels on a CUDA GPU and this machine has none" in capsys.readouterr().err
    assert main(["compile", str(examples / "lenet5.arch"), "-o", str(out), "--tune", "0"]) == 2
    assert "--tune takes batch sizes like 1,32,256, got '0'" in capsys.readouterr().err
    assert not out.exists()
