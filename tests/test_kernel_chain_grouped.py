"""Grouped first convs in the chain kernel (kernels/conv2d_chain.py, ``_chain_grouped_kernel``).

ResNeXt's bottleneck is ``3x3 conv (32 groups) -> 1x1 conv``: the chain computes mid a slice of
whole groups at a time (SUB = max(16, pow2(group width)) columns), each slice from its groups'
input channels only, with a block-diagonal packed weight (``pack_chain_weight``).  Here:

* the kernel against float64 torch (``F.conv2d(groups=...)`` then the 1x1) at group widths 1, 2,
  4, 8, a middle width that is not a multiple of the slice (a short last slice, input channels
  past C), residual and activations, every stage-1 walk, split_n / split_mid; bf16 against
  the unfused program run by PyTorch in bf16 (bound: twice PyTorch's own error + 2^-10);
* the packing (block-diagonal, zeros elsewhere) and the launcher's checks;
* the chain pass: grouped pairs chained where the model predicts a gain at batch 1, 32 and
  256, declined with both figures where it does not;
* the model: one grouped chain's prediction worked by hand, and ResNeXt-50's totals before
  (no grouped chains) and after, the difference being exactly the chained pairs' gains;
* the compiled ResNeXt at its reduced size against float64 PyTorch (slow).
"""

import math
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.passes import optimize
from archdsl.runtime import perfmodel as pm
from kernel_build import check_poison
from test_kernel_chain import DEV, EPS, K, chain_ref, rel_err, sliced

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
H200 = pm.Ceilings.h200_datasheet()


def run_grouped(*, n, c, h, w, c_mid, k, groups, kernel=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1),
                dtype=torch.float32, residual=True, act1=K.ACT_RELU, act2=K.ACT_RELU, walk=None, seed=0, **knobs):
    """K.conv2d_chain(groups=...) on random data (NaN-poisoned channel slices) against float64."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    cg = c // groups
    if walk is not None:
        assert K._chain_walk(K._chain_group_slices(c, c_mid, groups)[2], kernel, stride, pad) == walk
    x_nchw = torch.randn(n, c, h, w, generator=gen).to(dtype)
    w1 = (torch.randn(c_mid, cg, kh, kw, generator=gen) / (kh * kw * cg) ** 0.5).to(dtype)
    w2 = (torch.randn(k, c_mid, 1, 1, generator=gen) / c_mid ** 0.5).to(dtype)
    b1, b2 = torch.randn(c_mid, generator=gen), torch.randn(k, generator=gen)
    pt, pb, pl, pr = pad
    p = (h + pt + pb - kh) // stride[0] + 1
    q = (w + pl + pr - kw) // stride[1] + 1
    res_nchw = torch.randn(n, k, p, q, generator=gen).to(dtype) if residual else None
    geo = dict(groups=groups, stride=stride, pad=pad)
    ref = chain_ref(x_nchw.double(), w1.double(), w2.double(), b1, b2, res_nchw, act1, act2, mid_dtype=dtype, **geo)

    x, _ = sliced((n, h, w, c), dtype, 2, 1)
    x.copy_(x_nchw.permute(0, 2, 3, 1))
    out, obuf = sliced((n, p, q, k), dtype, 1, 2)
    res = None
    if residual:
        res, _ = sliced((n, p, q, k), dtype, 3, 0)
        res.copy_(res_nchw.permute(0, 2, 3, 1))
    K.conv2d_chain(x, K.pack_chain_weight(w1, groups, dtype).to(DEV), K.pack_conv_weight(w2, 1, dtype).to(DEV), out,
                   kernel=kernel, bias1=b1.to(DEV), act1=act1, bias2=b2.to(DEV), residual=res, act2=act2, **geo,
                   **knobs)
    check_poison(out, obuf, 1, 2)
    err = rel_err(out.permute(0, 3, 1, 2), ref)
    if dtype == torch.float32:
        bound = 1e-5
    else:  # PyTorch's own error running the unfused program in `dtype`
        lp = chain_ref(x_nchw.to(DEV), w1.to(DEV), w2.to(DEV), b1.to(DEV), b2.to(DEV),
                         None if res_nchw is None else res_nchw.to(DEV), act1, act2, mid_dtype=dtype, **geo)
        bound = 2 * rel_err(lp, ref) + EPS[dtype] / 8
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
    return err


# --------------------------------------------------------------------------------------
# The kernel against float64
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_group_widths(width):
    """groups = 6 of `width` outputs (C_mid = 6 * width) from 3 input channels each (C = 18): SUB = 16
    holds 16 // width groups, so C_mid = 6, 12, 24, 48 is 1, 1, 2, 3 slices, the last one short
    (its columns past C_mid and input channels past C masked) except at width 8.  SUB_C = 48, 24,
    12, 6 channels a slice: the tap walk at width 1, the flat walk otherwise."""
    run_grouped(n=2, c=18, h=5, w=6, c_mid=6 * width, k=20, groups=6, act1=K.ACT_SIGMOID, act2=K.ACT_TANH,
                walk="tap" if width == 1 else "flat", seed=width)


def test_resnext_shape_tap_walk_with_split_grid():
    """ResNeXt's own proportions (4 in, 4 out a group; SUB_C = 16: the tap walk), 10 groups: 3 slices
    (the last of 8 channels); split_mid = 2 programs of 2 slices each (the second with one slice
    past the last one: all masked) and split_n = 2 output groups of BLOCK_N = 16."""
    run_grouped(n=2, c=40, h=5, w=4, c_mid=40, k=40, groups=10, block_n=16, split_n=2, split_mid=2, walk="tap")


@pytest.mark.parametrize("split_n,split_mid", [(1, 3), (3, 1), (2, 2)], ids=str)
def test_splits(split_n, split_mid):
    run_grouped(n=1, c=12, h=4, w=5, c_mid=24, k=36, groups=6, block_n=16, split_n=split_n, split_mid=split_mid,
                act1=K.ACT_NONE, act2=K.ACT_SIGMOID, seed=split_n + 10 * split_mid)


def test_strided_first_conv_without_residual():
    run_grouped(n=2, c=16, h=7, w=6, c_mid=32, k=24, groups=8, stride=(2, 1), pad=(1, 0, 1, 1), residual=False,
                act1=K.ACT_TANH, act2=K.ACT_NONE)


def test_grouped_1x1_first_conv_plain_walk():
    run_grouped(n=2, c=32, h=4, w=4, c_mid=32, k=16, groups=2, kernel=(1, 1), pad=(0, 0, 0, 0), walk="plain")


def test_bf16_against_the_unfused_program():
    """bf16: within twice PyTorch's own error of the unfused bf16 program (both against float64)."""
    err = run_grouped(n=2, c=32, h=5, w=5, c_mid=32, k=48, groups=8, dtype=torch.bfloat16, walk="tap")
    assert err < 2 ** -6  # and small in absolute terms: a few bf16 roundings


_COMPILE_GROUPED = r'''
import torch

SMEM = 232448               # the most shared memory one block may use on sm_90 (227 KiB)
PTR = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

def compile_grouped(dtype, allow_tf32, c, c_mid, k, groups, m, kernel=3):
    # conv2d_chain's own defaults and split (132 SMs) for a grouped 3x3 (or 1x1) chain of m pixels
    sub, sub_real, sub_c, n_sub = K._chain_group_slices(c, c_mid, groups)
    walk = K._chain_walk(sub_c, (kernel, kernel), (1, 1), (1, 1, 1, 1) if kernel == 3 else (0, 0, 0, 0))
    bm, bn, bk, warps, stages = K._chain_grouped_defaults(dtype, allow_tf32, False, walk, sub_c, kernel * kernel, m, k)
    split_n, split_mid = K.chain_default_split(m, c, kernel * kernel, c_mid, k, (bm, bn, bk), 132, walk,
                                               dtype == torch.float32 and not allow_tf32, groups=groups)
    subs_per, split_mid, n_per, _ = K._chain_grouped_split_shape(n_sub, k, bn, split_n, split_mid)
    pad = kernel // 2
    consts = dict(C=c, C_MID=c_mid, K=k, KH=kernel, KW=kernel, SH=1, SW=1, PH=pad, PW=pad, DH=1, DW=1,
                  WALK=K._CHAIN_WALKS[walk], HAS_BIAS1=True, ACT1=K.ACT_RELU, HAS_BIAS2=True, HAS_RES=True,
                  ACT2=K.ACT_RELU, INPUT_PRECISION=K._conv_input_precision(dtype, allow_tf32), INTERPRETED=False,
                  SUB=sub, SUB_REAL=sub_real, SUB_C=sub_c, N_SUB=n_sub, SUBS_PER=subs_per, SPLIT_MID=split_mid,
                  N_PER=n_per, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    ptrs = {"x": PTR[dtype], "bias1_ptr": "fp32", "bias2_ptr": "fp32", "ws_ptr": "fp32"}
    built = compile_for(K._chain_grouped_kernel, ptrs, consts, warps, stages)
    assert built.metadata.shared <= SMEM, (dtype, c, c_mid, k, built.metadata.shared)

# ResNeXt-50's chained blocks: layer1 (56 x 56, 4 channels a group), layer2 (28 x 28, 8), layer3.0
# (14 x 14, 16) at batch 256 and 1 (split), then a 1x1 grouped first conv and 3 input channels a group
for dtype, tf32 in ((torch.bfloat16, False), (torch.float16, False), (torch.float32, False), (torch.float32, True)):
    for c, c_mid, k, m in ((128, 128, 256, 256 * 3136), (256, 256, 512, 784), (512, 512, 1024, 196)):
        compile_grouped(dtype, tf32, c, c_mid, k, 32, m)
compile_grouped(torch.bfloat16, False, 64, 64, 256, 4, 10 ** 5, kernel=1)
compile_grouped(torch.bfloat16, False, 96, 96, 64, 32, 10 ** 5)
'''


@pytest.mark.slow
def test_grouped_kernel_compiles_for_gpus(tmp_path):
    """sm_90 builds of the grouped kernel with the launcher's defaults and splits (bf16, fp16, fp32,
    tf32) succeed, fit in shared memory and, where ptxas reports it, spill no registers."""
    import re

    from kernel_build import run_compile_check

    r = run_compile_check(tmp_path, ["conv2d.py", "conv2d_chain.py"], _COMPILE_GROUPED,
                          env={"TRITON_DUMP_PTXAS_LOG": "1"})
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", r.stdout)]
    assert not any(spills), f"register spills (bytes) per build: {spills}"


# --------------------------------------------------------------------------------------
# Packing and checks
# --------------------------------------------------------------------------------------


def test_packing_is_block_diagonal_per_slice():
    """C = 12, C_mid = 24, 6 groups (2 in, 4 out each): SUB = 16 holds 4 groups (16 real columns,
    8 input channels); 2 slices, the second short (2 groups: 8 columns, 4 channels)."""
    w = torch.arange(1, 24 * 2 * 3 * 3 + 1, dtype=torch.float32).reshape(24, 2, 3, 3)
    assert K._chain_group_slices(12, 24, 6) == (16, 16, 8, 2)
    packed = K.pack_chain_weight(w, 6, torch.float32)
    assert packed.shape == (2 * 9 * 8, 16)
    blocks = packed.reshape(2, 3, 3, 8, 16)
    for t in range(2):
        for i in range(8):
            for j in range(16):
                g_out, g_in = (t * 16 + j) // 4, (t * 8 + i) // 2
                want = w[t * 16 + j, i % 2] if t * 16 + j < 24 and t * 8 + i < 12 and g_out == g_in else 0
                assert torch.equal(blocks[t, :, :, i, j], torch.as_tensor(want, dtype=torch.float32).expand(3, 3))
    assert torch.equal(K.pack_chain_weight(w[:, :1], 1, torch.float32), K.pack_conv_weight(w[:, :1], 1, torch.float32))


def test_limits_and_errors():
    assert K.chain_supported(512, 32) and K.chain_supported(8, 8) and not K.chain_supported(30, 4)
    assert not K.chain_supported(2 * (K.CHAIN_MAX_MID + 1), 2)
    x = torch.zeros(1, 4, 4, 8)
    w1 = torch.zeros(16, 2, 3, 3)
    w2 = K.pack_conv_weight(torch.zeros(8, 16, 1, 1), 1, torch.float32)
    out = torch.zeros(1, 4, 4, 8)
    with pytest.raises(ValueError, match="pack_chain_weight"):  # a groups=1 packing with groups=4
        K.conv2d_chain(x, K.pack_conv_weight(w1, 4, torch.float32), w2, out, kernel=3, pad=(1, 1, 1, 1), groups=4)
    with pytest.raises(ValueError, match="groups=4.*pack_chain_weight"):  # a grouped weight without groups=
        K.conv2d_chain(x, K.pack_conv_weight(w1, 4, torch.float32), w2, out, kernel=3, pad=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="dividing C"):
        K.conv2d_chain(x, K.pack_chain_weight(w1, 4, torch.float32), w2, out, kernel=3, pad=(1, 1, 1, 1), groups=3)


# --------------------------------------------------------------------------------------
# The pass and the model
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnext():
    graph = archdsl.load(EXAMPLES / "resnext50_32x4d.arch")
    return graph, optimize(graph), optimize(graph, disable=("fuse_conv_chain",))


def _chain_report(optimized):
    return next(r for r in optimized.reports if r.name == "fuse_conv_chain")


def test_the_pass_chains_where_the_model_predicts_a_gain(resnext):
    """Layer1-2 and layer3.0 chain; layer3.1-3.5 lose at batch 256 and layer4 at batch 32: declined
    with both figures.  Every decision is the model's, re-asked here."""
    _, after, _ = resnext
    report = _chain_report(after)
    chained = [c.split(" -> ")[0] for c in report.changed]
    assert chained == [f"layer1.{i}.conv2" for i in range(3)] + [f"layer2.{i}.conv2" for i in range(4)] + \
        ["layer3.0.conv2"]
    declined = {d.split(" -> ")[0]: d for d in report.declined if "grouped" in d}
    assert sorted(declined) == [f"layer3.{i}.conv2" for i in range(1, 6)] + [f"layer4.{i}.conv2" for i in range(3)]
    assert "not predicted faster at batch 256" in declined["layer3.1.conv2"]
    assert "not predicted faster at batch 32" in declined["layer4.0.conv2"]
    g = after.graph
    for first in chained:
        second = first.replace("conv2", "conv3")
        for batch in (1, 32, 256):
            chain_us, pair_us = pm.chain_pair_us(g, first, second, batch, "bfloat16", H200)
            assert chain_us < pair_us
    chain_us, pair_us = pm.chain_pair_us(g, "layer3.1.conv2", "layer3.1.conv3", 256, "bfloat16", H200)
    assert chain_us >= pair_us and f"{chain_us:.1f} us chained vs {pair_us:.1f} us" in declined["layer3.1.conv2"]


def test_what_the_pass_still_declines():
    """A grouped conv read twice, a depthwise conv, and groups wider than CHAIN_MAX_MID keep their reasons."""
    src = """
network t {
    input 8 x 6 x 6
    conv(16, 3, pad=1, groups=4) -> relu as a  # its node: `conv`
    add { conv(8, 1); @a -> conv(8, 1) }
    conv(1040, 3, pad=1, groups=2) -> conv(8, 1) -> conv(8, 3, pad=1, groups=8) -> conv(4, 1)
}
"""
    report = _chain_report(optimize(archdsl.loads(src)))
    assert any(d.startswith("conv -> ") and "`conv` is read by 2 consumers" in d for d in report.declined), \
        report.declined
    assert any("groups are 520 channels wide, more than the 256 kept on chip" in d for d in report.declined), \
        report.declined
    assert any("is depthwise: its own kernel runs it on CUDA cores" in d for d in report.declined), report.declined


def test_one_grouped_chain_worked_by_hand():
    """layer1.0 at batch 256: M = 256*56*56 = 802816 pixels, 128 -> 128 (32 groups of 4) -> 256.
    SUB = 16 (4 groups a slice, SUB_C = 16 channels: the tap walk, BLOCK_K = 16), N_SUB = 8;
    blocks (64, 256, 16): one output tile, no recompute.  A program: 64 * 8 slices * 16 *
    (9 taps * 16 + 256) = 3,276,800 MACs; 12544 programs.  Bytes: the input 802816*128*2, the
    packed weights (8*9*16*16 + 128*256)*2, the output and residual 2*802816*256*2."""
    problem = pm.chain_problem("c", (256, 56, 56, 128), 128, (256, 56, 56, 256), (3, 3), True, 2, groups=32)
    variant = pm.chain_default_variant(problem, "bfloat16", H200, walk="tap")
    assert (variant.tile.bm, variant.tile.bn, variant.tile.bk, variant.split_n, variant.split_mid) == (64, 256, 16, 1, 1)
    pred = pm.predict_chain(problem, variant, H200)
    assert pred.tiles == 12544 and pred.per_sm == math.ceil(12544 / H200.sms)
    dram = 802816 * 128 * 2 + (8 * 9 * 16 * 16 + 128 * 256) * 2 + 2 * 802816 * 256 * 2
    assert pred.dram_bytes == dram
    memory_us = dram / (H200.bandwidth_gbs * 1e9) * 1e6
    flops = pred.per_sm * 2 * 3_276_800
    assert pred.compute_us * (H200.matmul_tflops * 1e12 / H200.sms) / 1e6 * H200.efficiency >= flops * 0.999
    assert pred.us == pytest.approx(H200.launch_us + max(pred.compute_us, memory_us))
    # the useful work is 1/4 of stage 1's (16 columns of which 4 share a group with a channel)
    assert problem.flops == 2 * 802816 * 128 * (9 * 128 // 32 + 256)


def test_resnext_totals_before_and_after(resnext):
    """Before: no grouped chains (the pass disabled: ResNeXt has no other chain).  After: the
    total at each batch falls by exactly the chained pairs' predicted gains."""
    _, after, before = resnext
    from archdsl.codegen.schedule import make_schedule

    s_after, s_before = make_schedule(after.graph), make_schedule(before.graph)
    chains = [launch for launch in s_after.launches if launch.kernel == "conv2d_chain"]
    assert len(chains) == 8 and len(s_before.launches) - len(s_after.launches) == 8
    for batch in (1, 32, 256):
        t_after = sum(p.us for p in pm.predict_schedule(s_after, batch, "bfloat16", H200))
        t_before = sum(p.us for p in pm.predict_schedule(s_before, batch, "bfloat16", H200))
        gains = 0.0
        for launch in chains:
            chain_us, pair_us = pm.chain_pair_us(after.graph, launch.on_chip[0], launch.node, batch, "bfloat16", H200)
            gains += pair_us - chain_us
        assert gains > 0 and t_after == pytest.approx(t_before - gains, rel=1e-9)


# --------------------------------------------------------------------------------------
# The compiled ResNeXt
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_resnext_small_matches_float64():
    """The documented reduced ResNeXt (4 groups of 1, 2, 4, 8 channels): layer1's 3x3 (4 channels in
    4 groups) is depthwise and declines, the other 13 grouped 3x3 chain (widths 2, 4, 8);
    randomized weights and BN statistics, against float64 PyTorch."""
    from archdsl.codegen.schedule import make_schedule
    from test_compiled import compile_small, randomize
    from test_compiled import rel_err as model_err

    model = compile_small(EXAMPLES / "resnext50_32x4d.arch")
    g = model.graph
    schedule = make_schedule(optimize(g).graph)
    grouped = [launch for launch in schedule.launches
               if launch.kernel == "conv2d_chain" and dict(launch.geometry)["groups"] == 4]
    assert sorted(launch.on_chip[0] for launch in grouped) == sorted(
        [f"layer2.{i}.conv2" for i in range(4)] + [f"layer3.{i}.conv2" for i in range(6)] +
        [f"layer4.{i}.conv2" for i in range(3)])
    randomize(model)
    reference = archdsl.to_torch(g).eval()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    x = torch.randn(2, *g.shape(g.inputs[0]))
    out = model(x)
    with torch.no_grad():
        ref = reference.double()(x.double())
    assert out.shape == ref.shape and model_err(out, ref) <= 1e-4


def test_the_gpu_checks_recorder_replays_a_grouped_chain_against_pytorch():
    """benchmarks/gpu/launches.py: a grouped chain launch recorded from a generated program, replayed,
    matches its PyTorch equivalent (F.conv2d with the first conv's groups, then the 1x1); its work
    counts the grouped conv's MACs (C / groups a output), not the packed weight's zeros."""
    from archdsl.bench.harness import fold_bn_graph, folded_state, reference_state, rel_error
    from benchmarks.gpu import launches as L
    from benchmarks.gpu.check import compiled_model

    graph = archdsl.loads("network g {\n input 8 x 6 x 6\n"
                          " conv(16, 3, pad=1, groups=4, bias=false) -> bn -> relu -> conv(12, 1) -> relu\n}")
    state = reference_state(graph, 0)
    model = compiled_model(graph, "float32", torch.device("cpu"))
    model.load_state_dict(state)
    x = torch.randn(2, 8, 6, 6)
    with torch.inference_mode():
        expected = model(x).clone()  # builds the network
        recorded = L.record_conv_launches(model._module, model._network, [x], model.compiled.optimized.graph)
        assert torch.equal(model(x), expected)
    assert [launch.kernel for launch in recorded] == ["conv2d_chain"] and recorded[0].kwargs["groups"] == 4
    _, folds = fold_bn_graph(graph)
    theirs = L.CudnnEquivalent.build(recorded[0], model.compiled.optimized.graph, folded_state(state, folds))
    assert theirs.nodes[0].groups == 4
    with torch.inference_mode():
        L.randomize_inputs(recorded[0], 0)
        L.poison_outputs(recorded[0])
        recorded[0].run()
        (ours,), (ref,) = L.outputs_nchw(recorded[0]), theirs.run()
    assert rel_error(ours, ref) < 1e-5
    flops, _ = L.launch_work(theirs.nodes, "conv2d_chain", 2, 4)
    assert flops == 2 * 2 * 36 * (16 * 9 * 2 + 12 * 16)  # 3x3 (2 channels a group) then 1x1 16 -> 12, 6x6
