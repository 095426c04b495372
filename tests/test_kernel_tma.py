"""kernels/conv2d.py's TMA path: ``conv2d(tma=True)`` on the gemm path runs
``_conv_gemm_tma_kernel``, a persistent kernel reading A and B through tensor descriptors.

It sums the same products in the same order as ``_conv_gemm_kernel`` with the same blocks, so its
output must equal that kernel's bit for bit, and both must match a float64 F.conv2d of the same
rounded inputs (relative error <= 1e-4 in fp32, one output rounding in fp16 / bf16).  Shapes are
tiny (the interpreter), with a reduction tail (K not a multiple of BLOCK_K), edge tiles in M and
N, and more tiles than programs, so the persistent loop's last round runs past the end.  The
knob is a preference: every call it does not fit runs the plain kernel, which the tests observe.
Whether it is faster is for a GPU to say (benchmarks/gpu: the tuner proposes it).
"""

import re

import pytest
import torch
import torch.nn.functional as F

from kernel_build import check_poison, load_templates, run_compile_check

K = load_templates("conv2d.py", module_name="archdsl_kernel_tma")

EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
BLOCKS = dict(block_m=16, block_n=32, block_k=32)


@pytest.fixture
def kernels_run(monkeypatch):
    """The names of the @triton.jit kernels each conv2d call launches, in order."""
    ran = []
    for name in ("_conv_gemm_kernel", "_conv_gemm_tma_kernel", "_conv_gemm_splitk_kernel"):
        real = getattr(K, name)

        class Recorded:
            def __getitem__(self, grid, real=real, name=name):
                ran.append(name)
                return real[grid]

        monkeypatch.setattr(K, name, Recorded())
    return ran


def make(dtype, *, n=2, h=5, w=7, c=40, k=72, residual=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, c, generator=gen).to(dtype)
    wt = (torch.randn(k, c, 1, 1, generator=gen) / c ** 0.5).to(dtype)
    return dict(x=x, w=wt, wp=K.pack_conv_weight(wt, 1, dtype),
                res=torch.randn(n, h, w, k, generator=gen).to(dtype) if residual else None,
                scale=torch.rand(k, generator=gen) + 0.5, bias=torch.randn(k, generator=gen))


def reference(t, act, residual_after_act=False, out_scale=1.0):
    y = F.conv2d(t["x"].permute(0, 3, 1, 2).double(), t["w"].double())
    y = y * t["scale"].double()[None, :, None, None] + t["bias"].double()[None, :, None, None]
    r = t["res"].permute(0, 3, 1, 2).double() if t["res"] is not None else 0
    y = {K.ACT_NONE: lambda v: v, K.ACT_RELU: torch.relu, K.ACT_SIGMOID: torch.sigmoid}[act](
        y if residual_after_act else y + r)
    return ((y + r if residual_after_act else y) * out_scale).permute(0, 2, 3, 1)


def run(t, out, **kw):
    K.conv2d(t["x"], t["wp"], out, kernel=(1, 1), scale=t["scale"], bias=t["bias"], residual=t["res"], **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act,residual_after_act,out_scale", [(K.ACT_RELU, False, 1.0), (K.ACT_SIGMOID, True, 0.5),
                                                              (K.ACT_NONE, False, 1.0)])
def test_tma_kernel_equals_the_plain_kernel_and_float64(dtype, act, residual_after_act, out_scale, kernels_run):
    t = make(dtype)
    buf = torch.full((2, 5, 7, 80), float("nan"), dtype=dtype)
    out = buf[..., 3:75]  # a channel slice: its row stride (80) is not its width (72)
    run(t, out, act=act, residual_after_act=residual_after_act, out_scale=out_scale, tma=True, **BLOCKS)
    check_poison(out, buf, 3, 5)
    plain = torch.empty_like(out)
    run(t, plain, act=act, residual_after_act=residual_after_act, out_scale=out_scale, **BLOCKS)
    assert kernels_run == ["_conv_gemm_tma_kernel", "_conv_gemm_kernel"]
    assert torch.equal(out, plain)
    ref = reference(t, act, residual_after_act, out_scale)
    if dtype == torch.float32:
        assert ((out.double() - ref).norm() / ref.norm()).item() <= 1e-4
    else:  # fp32 accumulation, one rounding of the output (plus the residual's, read as stored)
        torch.testing.assert_close(out.double(), ref, rtol=EPS[dtype], atol=EPS[dtype] * ref.abs().max().item())


def test_the_persistent_loop_covers_every_tile_once():
    """70 x 72 outputs in 16 x 32 tiles: 5 x 3 = 15 tiles over 2 programs (8 rounds, the last
    one's second tile past the end), a 2-block reduction with a tail (40 = 32 + 8)."""
    t = make(torch.float32, residual=False)
    plan = K.conv_plan(t["x"], t["wp"], torch.empty(2, 5, 7, 72), kernel=(1, 1), tma=True, **BLOCKS)
    kw = plan.gemm.tma.kwargs
    assert plan.gemm.tma.grid == (2,) and (kw["NUM_PROGS"], kw["TILES_PER_PROG"], kw["K_ITERS"]) == (2, 8, 2)
    out = torch.full((2, 5, 7, 72), float("nan"))
    run(t, out, tma=True, **BLOCKS)
    assert not torch.isnan(out).any()
    ref = reference(t, K.ACT_NONE)
    assert ((out.double() - ref).norm() / ref.norm()).item() <= 1e-4


def test_programs_are_one_per_sm_or_one_per_tile():
    assert K.conv_tma_programs(1000, 132) == 132
    assert K.conv_tma_programs(40, 132) == 40
    assert K.conv_tma_programs(15, 0) == 2  # the interpreter: a loop of several tiles
    assert K.conv_tma_programs(1, 0) == 1


def test_what_tma_can_copy():
    ok = K.conv_tma_supported
    assert ok(torch.bfloat16, 64, 256, (128, 128, 64)) is None
    assert ok(torch.float32, 4, 256, (128, 128, 32)) is None       # 16-byte rows
    assert "16 bytes apart" in ok(torch.bfloat16, 3, 256, (128, 128, 64))   # the 3-channel stem's rows
    assert ok(torch.bfloat16, 2048, 1000, (128, 128, 64)) is None    # ImageNet's classifier: 2000-byte rows
    assert "16 bytes apart" in ok(torch.float16, 64, 10, (128, 128, 64))    # a 10-wide weight
    assert "TMA box" in ok(torch.bfloat16, 64, 256, (512, 128, 64))
    assert "TMA box" in ok(torch.bfloat16, 64, 256, (128, 128, 4))          # an 8-byte inner side


def test_calls_the_knob_does_not_fit_run_the_plain_kernels(kernels_run):
    t = make(torch.float32, residual=False)
    x, wp = t["x"], t["wp"]
    out = torch.empty(2, 5, 7, 72)
    K.conv2d(x, wp, out, kernel=(1, 1), tma=True, in_scale=torch.rand(40) + 0.5, **BLOCKS)   # a prologue
    K.conv2d(x, wp, out, kernel=(1, 1), tma=True, split_k=2, **dict(BLOCKS, block_k=16))     # split
    K.conv2d(x, wp, (out[..., :30], out[..., 30:]), kernel=(1, 1), tma=True, **BLOCKS)      # two outputs
    odd = torch.randn(2, 5, 7, 41)[..., 1:]   # rows 41 floats apart: not a 16-byte multiple
    K.conv2d(odd, wp, out, kernel=(1, 1), tma=True, **BLOCKS)
    assert kernels_run == ["_conv_gemm_kernel", "_conv_gemm_splitk_kernel", "_conv_gemm_kernel",
                           "_conv_gemm_kernel"]
    del kernels_run[:]
    shifted = torch.randn(2, 5, 7, 44)[..., 4:]   # rows 44 floats apart (176 bytes) but starting 16 bytes in
    K.conv2d(shifted, wp, out, kernel=(1, 1), tma=True, **BLOCKS)
    skewed = torch.randn(2 * 5 * 7 * 44 + 1)[1:].view(2, 5, 7, 44)[..., :40]  # the same rows, 4 bytes in
    want = torch.empty_like(out)
    K.conv2d(skewed, wp, out, kernel=(1, 1), tma=True, **BLOCKS)
    K.conv2d(skewed, wp, want, kernel=(1, 1), **BLOCKS)
    assert kernels_run == ["_conv_gemm_tma_kernel", "_conv_gemm_kernel", "_conv_gemm_kernel"]  # same plan, per call
    assert torch.equal(out, want)


def test_tma_must_be_a_bool():
    t = make(torch.float32)
    with pytest.raises(ValueError, match="tma must be True or False"):
        run(t, torch.empty(2, 5, 7, 72), tma=1)


# --------------------------------------------------------------------------------------
# sm_90 builds: TMA copies and wgmma in the PTX, no register spills
# --------------------------------------------------------------------------------------
# (128 x 256 tiles with 8 warps spill with a residual epilogue -- 336 bytes here, 108 in
# _conv_gemm_kernel's -- so they are not among these; the tuner may still try and time them.)

_COMPILE_VARIANTS = r'''
types = {"x": "bf16", "scale_ptr": "fp32", "bias_ptr": "fp32"}
for bm, bn, bk, warps, stages in ((128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4)):
    k = compile_for(K._conv_gemm_tma_kernel,
                    dict(types, a_desc=f"tensordesc<bf16[{bm}, {bk}]>", b_desc=f"tensordesc<bf16[{bk}, {bn}]>"),
                    dict(HAS_SCALE=False, HAS_BIAS=True, HAS_RES=True, ACT=K.ACT_RELU, RES_AFTER_ACT=False,
                         HAS_OUT_SCALE=False, INPUT_PRECISION="tf32", INTERPRETED=False, BLOCK_M=bm, BLOCK_N=bn,
                         BLOCK_K=bk, SWIZZLE_M=8, K_ITERS=4, NUM_PROGS=132, TILES_PER_PROG=7, stride_oc=1),
                    warps, stages)
    ptx = k.asm["ptx"]
    print("build", bm, bn, bk, "tma", "cp.async.bulk.tensor" in ptx, "wgmma", "wgmma.mma_async" in ptx)
'''


@pytest.mark.slow
def test_tma_kernel_compiles_for_hopper_with_tma_and_wgmma_without_spills(tmp_path):
    r = run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS, env={"TRITON_DUMP_PTXAS_LOG": "1"})
    builds = re.findall(r"build (\d+) (\d+) (\d+) tma (\w+) wgmma (\w+)", r.stdout)
    assert len(builds) == 3 and all(tma == wgmma == "True" for *_, tma, wgmma in builds), r.stdout[-2000:]
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", r.stdout)]
    assert len(spills) >= 3 and not any(spills), f"register spills (bytes) per build: {spills}"


# --------------------------------------------------------------------------------------
# The tuner proposes the TMA kernel where it would run, and a tuned tma=True runs it
# --------------------------------------------------------------------------------------


def _launch(**kw):
    from archdsl.runtime.tune import ConvLaunch

    fields = dict(node="c", x_shape=(32, 56, 56, 64), out_shape=(32, 56, 56, 256), kernel=(1, 1), stride=(1, 1),
                  pad=(0, 0, 0, 0), dilation=(1, 1), groups=1, residual=True, act=K.ACT_RELU, path="gemm")
    return ConvLaunch(**{**fields, **kw})


def test_tma_variants_only_where_the_tma_kernel_would_run():
    from dataclasses import replace

    from archdsl.runtime.tune import conv_candidates, tma_variants

    kept = conv_candidates("gemm", "bfloat16", "cuda")[:4]
    kept = [{**kept[0], "split_k": 4}, *kept]  # a split variant of the first tile: the same tile
    variants = tma_variants(_launch(), kept, "bfloat16")
    assert variants == [{**kept[0], "split_k": 1, "tma": True}, {**kept[2], "split_k": 1, "tma": True}]
    assert len(tma_variants(_launch(), kept, "bfloat16", top=3)) == 3
    for other in (replace(_launch(), gate=True), replace(_launch(), ln=True),
                  replace(_launch(), path="implicit_tap", kernel=(3, 3), pad=(1, 1, 1, 1)),
                  _launch(x_shape=(32, 56, 56, 3))):          # 6-byte rows
        assert tma_variants(other, kept, "bfloat16") == []
    assert len(tma_variants(_launch(x_shape=(32, 56, 56, 4)), kept, "float32")) == 2   # 16-byte rows


def test_a_tuned_tma_config_wins_by_the_timer_and_computes_the_conv(tmp_path, kernels_run):
    from archdsl.runtime import tune

    t = make(torch.bfloat16)
    out = torch.empty(2, 5, 7, 72, dtype=torch.bfloat16)
    plain = dict(path="gemm", **BLOCKS)
    candidates = [plain, {**plain, "split_k": 1, "tma": True}]
    times = iter([2.0, 1.0])

    def timer(fn):
        fn()
        return next(times)

    info = tune.DeviceInfo("Fake GPU", "9.0", "2.13.0", "3.9.0")
    result = tune.tune_conv2d(t["x"], t["wp"], out, kernel=(1, 1), scale=t["scale"], bias=t["bias"],
                              residual=t["res"], act=K.ACT_RELU, timer=timer, cache=tune.TuneCache(tmp_path / "t.json"),
                              candidates=candidates, info=info, conv2d=K.conv2d)
    assert result.config == candidates[1]
    assert kernels_run[0] == "_conv_gemm_kernel" and kernels_run[-1] == "_conv_gemm_tma_kernel"  # each timed
    out.fill_(float("nan"))
    run(t, out, act=K.ACT_RELU, **{k: v for k, v in result.config.items() if k != "path"})
    ref = reference(t, K.ACT_RELU)
    torch.testing.assert_close(out.double(), ref, rtol=EPS[torch.bfloat16],
                               atol=EPS[torch.bfloat16] * ref.abs().max().item())


@pytest.mark.slow
def test_resnet50_tuned_to_tma_computes_bit_for_bit_what_it_computes_tuned_plain():
    """Every gemm-path conv of ResNet-50 given tma=True by its tuning: the ones it fits run the TMA
    kernel, the program's output equals the one tuned to the same blocks without it."""
    from pathlib import Path

    import archdsl
    from archdsl.runtime.model import CompiledModel
    from archdsl.runtime.tune import conv_launches

    model = archdsl.compile(Path(__file__).parents[1] / "examples" / "resnet50.arch", device="cpu",
                            input_shape=(3, 16, 16))
    gemms = [c.node for c in conv_launches(model.compiled.program.schedule, 1) if c.path == "gemm"]
    blocks = dict(BLOCKS, split_k=1)
    plain, tma = (CompiledModel(model.compiled, torch.device("cpu"),
                                tuning=lambda batch, extra=extra: {n: {**blocks, **extra} for n in gemms})
                  for extra in ({}, {"tma": True}))
    for m in (plain, tma):
        m.load_state_dict(model.state_dict())
    ran = []
    real = tma._module._conv_gemm_tma_kernel

    class Counted:
        def __getitem__(self, grid):
            ran.append(grid)
            return real[grid]

    tma._module._conv_gemm_tma_kernel = Counted()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want, got = plain(x), tma(x)
    assert len(ran) >= len(gemms) - 2 and len(gemms) >= 16, (len(ran), len(gemms))
    assert torch.equal(got, want) and want.abs().max() > 0


# --------------------------------------------------------------------------------------
# The GPU check's tune stage records (and so compiles 16-way) the TMA candidates
# --------------------------------------------------------------------------------------


def _record_smoke_tuning():
    from archdsl.runtime import perfmodel as pm
    from archdsl.runtime.tune import DeviceInfo
    from benchmarks.gpu import check, profiles

    info = DeviceInfo("NVIDIA H200", "9.0", "2.11.0", "3.6.0")
    report = check.record_task(("tune", profiles.SMOKE.r50, "bfloat16", 2, info, pm.Ceilings.h200_datasheet()))
    return report["error"], report["records"]


@pytest.mark.slow
def test_the_tune_stage_records_the_tma_candidates_and_they_compile_for_sm90(tmp_path, monkeypatch):
    import json
    import multiprocessing

    from benchmarks.gpu import warm

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # the spawned children inherit it
    with multiprocessing.get_context("spawn").Pool(1, initializer=warm._child_init) as pool:
        error, records = pool.apply(_record_smoke_tuning)
    assert error is None
    tma = [r for r in records if r.fn == "_conv_gemm_tma_kernel"]
    assert tma and all("tensordesc<bf16[" in json.dumps(json.loads(r.spec)["signature"]) for r in tma)
    chain = [r for r in records if r.fn == "_chain_kernel"]
    # compiled in a fresh process, from the one file each was recorded from (the tuner's templates:
    # runtime/launches.py's template_module), as the GPU machine's warm pool compiles them
    summary = warm.compile_records(tma[:1] + chain[:1], 1, timeout_s=240)
    assert chain and summary["compiled"] == 2 and summary["failed"] == 0, summary


# --------------------------------------------------------------------------------------
# GPU tier (skipped without CUDA): ResNet-50's 1x1 layers through TMA at full size
# --------------------------------------------------------------------------------------

GPU_1X1 = [(64, 56, 256), (256, 56, 64), (512, 28, 128), (1024, 14, 256), (2048, 7, 512)]  # (c, h, k), batch 4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("c,h,k", GPU_1X1, ids=[f"c{c}h{h}k{k}" for c, h, k in GPU_1X1])
def test_gpu_tma_kernel_runs_on_hopper_and_matches_float64(c, h, k, dtype, kernels_run):
    t = {name: (v.cuda() if isinstance(v, torch.Tensor) else v)
         for name, v in make(dtype, n=4, h=h, w=h, c=c, k=k, seed=c).items()}
    buf = torch.full((4, h, h, k + 16), float("nan"), dtype=dtype, device="cuda")
    out = buf[..., 8:8 + k]
    run(t, out, act=K.ACT_RELU, tma=True, split_k=1)
    plain = torch.empty_like(out)
    run(t, plain, act=K.ACT_RELU, split_k=1)
    torch.cuda.synchronize()
    has_tma = torch.cuda.get_device_capability()[0] >= 9
    assert kernels_run == (["_conv_gemm_tma_kernel"] if has_tma else ["_conv_gemm_kernel"]) + ["_conv_gemm_kernel"]
    check_poison(out, buf, 8, 8)
    ref = reference({name: (v.cpu() if isinstance(v, torch.Tensor) else v) for name, v in t.items()}, K.ACT_RELU)
    got = out.double().cpu()
    tol = EPS[dtype] * ref.abs().max().item()
    torch.testing.assert_close(got, ref, rtol=EPS[dtype], atol=tol)
    torch.testing.assert_close(got, plain.double().cpu(), rtol=EPS[dtype], atol=tol)  # the same sums
