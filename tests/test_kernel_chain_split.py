"""kernels/conv2d_chain.py's split grid: output-channel groups and C_mid slices, and their choice.

A chain launch is parallel over output pixels; at batch 1 ResNet-50's layer3 chains (14 x 14
pixels, BLOCK_M = 64) are 4 programs on a 132-SM GPU.  The kernel also splits the 1x1 conv's
outputs into `split_n` groups (each program recomputes stage 1 for its group) and C_mid into
`split_mid` slices (each program computes one slice of both GEMMs exactly; an fp32 workspace and
a reduce launch sum the slices and apply epilogue 2).  Here:

* every split against the float64 chain (``test_kernel_chain.run_chain``: poisoned channel
  slices, residual, activations), with K not a multiple of BLOCK_N nor of a group, C_mid not a
  power of two, every stage-1 walk, and a slice that is all padding;
* the launcher's rule (``chain_default_split``) worked by hand, and the performance model's
  prediction of what it picks at ResNet-50's batch-1 layer3 chain, worked by hand too;
* the compiled ResNet-50 at its reduced size, run with the split a 132-SM GPU would pick.
"""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.runtime import perfmodel as pm
from test_kernel_chain import DEV, K, rel_err, run_chain

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
H200 = pm.Ceilings.h200_datasheet()


# --------------------------------------------------------------------------------------
# Every split computes the chain
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("split_n,split_mid", [(2, 1), (3, 1), (1, 2), (1, 4), (3, 2), (5, 4)],
                         ids=lambda v: str(v))
def test_split_grid_matches_the_float64_chain(split_n, split_mid):
    """K = 72 in BLOCK_N = 16 tiles (5 tiles, the last 8 wide): groups of 48 / 32 / 16 outputs, the
    last one past K; C_mid = 40 padded to 64, in slices of 32 or 16 (the fourth 16-slice, 48..63,
    is all padding: it must add exactly 0 whatever act1(0) is)."""
    run_chain(n=2, c=16, h=5, w=6, c_mid=40, k=72, kernel=(3, 3), pad=(1, 1, 1, 1), residual=True,
              act1=K.ACT_SIGMOID, act2=K.ACT_RELU, block_n=16, split_n=split_n, split_mid=split_mid,
              x_slice=(2, 1), out_slice=(3, 2), res_slice=(1, 2), walk="tap", seed=split_n * 10 + split_mid)


@pytest.mark.parametrize("walk,c,kernel,stride,pad", [
    ("flat", 3, (3, 3), (2, 1), (1, 0, 2, 1)),
    ("plain", 24, (1, 1), (1, 1), (0, 0, 0, 0)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_split_grid_every_walk_and_dtype(walk, c, kernel, stride, pad, dtype):
    run_chain(n=2, c=c, h=7, w=6, c_mid=32, k=20, kernel=kernel, stride=stride, pad=pad, dtype=dtype,
              residual=True, act1=K.ACT_TANH, act2=K.ACT_SIGMOID, block_n=16, split_n=2, split_mid=2, walk=walk)


def test_split_without_bias_or_residual_and_fp32_output_of_fp16():
    run_chain(n=1, c=16, h=6, w=5, c_mid=48, k=40, kernel=(3, 3), pad=(1, 1, 1, 1), bias1=False, bias2=False,
              act1=K.ACT_NONE, act2=K.ACT_NONE, block_n=16, split_n=2, split_mid=2)
    run_chain(n=2, c=16, h=5, w=6, c_mid=24, k=20, kernel=(3, 3), pad=(1, 1, 1, 1), dtype=torch.float16,
              out_dtype=torch.float32, residual=True, act2=K.ACT_RELU, block_n=16, split_n=2, split_mid=2)


def test_splits_agree_with_the_unsplit_kernel_to_summation_order():
    """fp32: the mid-slice partial sums are added in another order than one accumulator's; the
    output groups are the same dot products.  A lost or doubled slice or group would be O(1)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 6, 7, 16, generator=gen).to(DEV)
    w1 = K.pack_conv_weight(torch.randn(48, 16, 3, 3, generator=gen) / 12, 1, torch.float32).to(DEV)
    w2 = K.pack_conv_weight(torch.randn(50, 48, 1, 1, generator=gen) / 7, 1, torch.float32).to(DEV)
    b1, b2 = torch.randn(48, generator=gen).to(DEV), torch.randn(50, generator=gen).to(DEV)
    res = torch.randn(2, 6, 7, 50, generator=gen).to(DEV)
    outs = {}
    for split in ((1, 1), (4, 1), (1, 4), (2, 2)):
        out = torch.full((2, 6, 7, 50), float("nan"), device=DEV)
        K.conv2d_chain(x, w1, w2, out, kernel=(3, 3), pad=(1, 1, 1, 1), bias1=b1, act1=K.ACT_RELU, bias2=b2,
                       residual=res, act2=K.ACT_TANH, block_n=16, split_n=split[0], split_mid=split[1])
        outs[split] = out
    assert torch.equal(outs[(4, 1)], outs[(1, 1)])  # the same dots, the same order
    for split in ((1, 4), (2, 2)):
        assert rel_err(outs[split], outs[(1, 1)]) <= 1e-6


def test_bad_splits_raise():
    x = torch.randn(1, 6, 6, 16, device=DEV)
    w1 = K.pack_conv_weight(torch.randn(40, 16, 3, 3), 1, torch.float32).to(DEV)
    w2 = K.pack_conv_weight(torch.randn(24, 40, 1, 1), 1, torch.float32).to(DEV)
    out = torch.empty(1, 4, 4, 24, device=DEV)
    for bad in (dict(split_mid=3), dict(split_mid=8), dict(split_mid=0), dict(split_n=0), dict(split_n=2.0),
                dict(split_n=True)):
        with pytest.raises(ValueError, match="split_"):
            K.conv2d_chain(x, w1, w2, out, kernel=(3, 3), **bad)  # 8: 64 / 8 = 8 < 16 columns a slice


def test_split_shape_as_launched():
    # K = 72 in 16-wide tiles: 5 tiles; 3 groups of cdiv(5, 3) = 2 tiles (32 outputs) -> cdiv(72, 32) = 3
    assert K._chain_split_shape(40, 72, 16, 3, 2) == (32, 2, 32, 3)
    # 4 groups of cdiv(5, 4) = 2 tiles also launch as 3; 99 groups as 5 of one tile each
    assert K._chain_split_shape(40, 72, 16, 4, 1)[2:] == (32, 3)
    assert K._chain_split_shape(40, 72, 16, 99, 4) == (16, 4, 16, 5)


# --------------------------------------------------------------------------------------
# The launcher's rule, by hand
# --------------------------------------------------------------------------------------

# ResNet-50 layer3's chain at batch 1 in bf16 on the GPU: 14 x 14 pixels, 3x3 256 -> 256, 1x1 -> 1024,
# the template's GPU blocks (BLOCK_M 64 for MID = 256, BLOCK_N 64, BLOCK_K 32)
L3 = dict(m=196, c=256, taps=9, c_mid=256, k=1024)


def test_the_rule_splits_an_underfilled_chain_by_hand():
    assert K._chain_defaults(torch.bfloat16, False, False, "tap", 256, 9, 256, 196, 1024)[:3] == (64, 64, 32)
    # cdiv(196, 64) = 4 pixel blocks; stage 1 walks 9 * 256 = 2304 reductions, stage 2 1024 outputs
    unsplit = 64 * 256 * (2304 + 1024)            # one block a SM: 54,525,952 MACs on the busiest
    # (4, 8): 4 * 4 * 8 = 128 programs <= 132: one each, 64 x 32 x (2304 + 256) MACs, plus the reduce
    # (8 * 128 * 128 * 64) and the workspace's round trip (5/8 MAC a byte of 2 * 8 * 196 * 1024 * 4)
    chosen = 64 * 32 * (2304 + 256) + 8 * 128 * 128 * 64 + 5 / 8 * 2 * 8 * 196 * 1024 * 4
    assert chosen < unsplit / 2
    assert K.chain_default_split(**L3, blocks=(64, 64, 32), sms=132) == (4, 8)
    # the neighbours cost more: (4, 16) has 256 programs (two a SM), (2, 8) a bigger stage 2
    def cost(sn, sj):
        n_per = math.ceil(16 / sn) * 64
        fixed = (8 * 128 * 128 * 64 + 5 / 8 * 2 * sj * 196 * 1024 * 4) if sj > 1 else 0
        return math.ceil(4 * sn * sj / 132) * 64 * (256 // sj) * (2304 + n_per) + fixed
    assert cost(4, 8) == chosen
    assert all(cost(4, 8) < cost(sn, sj) for sn, sj in ((4, 16), (2, 8), (8, 8), (4, 4), (16, 1), (1, 1)))


def test_the_rule_leaves_full_launches_and_the_interpreter_alone():
    assert K.chain_default_split(**L3, blocks=(64, 64, 32), sms=4) == (1, 1)   # 4 blocks fill 4 SMs
    assert K.chain_default_split(**L3, blocks=(64, 64, 32), sms=0) == (1, 1)   # no GPU: never split
    big = dict(L3, m=256 * 196)                                                 # batch 256: 784 blocks
    assert K.chain_default_split(**big, blocks=(64, 64, 32), sms=132) == (1, 1)
    # C_mid = 40 (MID 64): slices of 16 would leave 48..63 empty: at most 2 slices
    assert K.chain_default_split(16, 16, 9, 40, 2048, (16, 16, 16), 132)[1] <= 2


# --------------------------------------------------------------------------------------
# The performance model: what the launcher picks, and what it predicts
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_schedule():
    from archdsl.codegen.schedule import make_schedule
    from archdsl.passes import optimize

    return make_schedule(optimize(archdsl.load(EXAMPLES / "resnet50.arch")).graph)


def test_the_model_predicts_the_split_layer3_chain_faster_by_hand(resnet50_schedule):
    """layer3.1's chain at batch 1, bf16, H200 datasheet (989 TFLOP/s over 132 SMs, 4.8 TB/s, 2.5 us
    a launch, 80% of peak): 4 programs before, 128 now, and 20.7 us -> 8.3 us."""
    auto = {p.name: p for p in pm.predict_schedule(resnet50_schedule, 1, "bfloat16", H200)}
    off = {p.name: p for p in pm.predict_schedule(resnet50_schedule, 1, "bfloat16", H200,
                                                  tuning={"layer3.1.conv3": {"split_n": 1, "split_mid": 1}})}
    split, plain = auto["layer3.1.conv3"], off["layer3.1.conv3"]
    assert (plain.tiles, plain.split_n, plain.split_k) == (4, 1, 1)
    assert (split.tiles, split.split_n, split.split_k) == (128, 4, 8)

    sm_flops = 989e12 / 132 * 0.8
    plain_us = 2.5 + 2 * 64 * 256 * (2304 + 1024) / sm_flops * 1e6                 # 2.5 + 18.19
    assert plain.us == pytest.approx(plain_us)
    x, w, out = 196 * 256 * 2, (256 * 9 * 256 + 256 * 1024) * 2, 2 * 196 * 1024 * 2  # out + residual
    ws = 8 * 196 * 1024 * 4
    compute = 2 * 64 * 32 * (2304 + 256) / sm_flops * 1e6                           # 1.75 us
    split_us = 2 * 2.5 + max(compute, (x + w + ws) / 4.8e12 * 1e6) + (ws + out) / 4.8e12 * 1e6
    assert split.us == pytest.approx(split_us)
    assert split.us < plain.us / 2
    # every other launch is predicted as before
    assert math.isclose(sum(p.us for p in auto.values() if p.name != "layer3.1.conv3"),
                        sum(p.us for p in off.values() if p.name != "layer3.1.conv3"))


def _chain_problems(schedule, batch, dtype):
    g, K_ = schedule.graph, pm._kernel_defaults()
    for launch in schedule.launches:
        if launch.kernel != "conv2d_chain":
            continue
        first = launch.on_chip[0]
        cin, h, w = g.shape(g.args(first)[0])
        k, p, q = g.shape(launch.node)
        geo = dict(launch.geometry)
        walk = K_._chain_walk(cin, geo["kernel"], geo["stride"], geo["pad"])
        elem = 4 if dtype == "float32" else 2
        yield walk, pm.chain_problem(launch.node, (batch, h, w, cin), g.shape(first)[0], (batch, p, q, k),
                                     geo["kernel"], launch.epilogue.residual, elem)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("batch", [1, 8, 32, 256])
def test_the_launchers_rule_is_the_models_fastest_split(resnet50_schedule, batch, dtype):
    """Wherever the rule splits (a launch under one wave), it picks the split the model predicts
    fastest among all the kernel can launch; it never picks one predicted slower than no split."""
    for walk, problem in _chain_problems(resnet50_schedule, batch, dtype):
        chosen = pm.chain_default_variant(problem, dtype, H200, walk=walk)
        chosen_us = pm.predict_chain(problem, chosen, H200).us
        plain_us = pm.predict_chain(problem, replace(chosen, split_n=1, split_mid=1), H200).us
        assert chosen_us <= plain_us
        if math.ceil(problem.m / chosen.tile.bm) < H200.sms:
            best = min(pm.predict_chain(problem, v, H200).us for v in pm.chain_variants(problem, chosen))
            assert chosen_us == pytest.approx(best), (problem.name, chosen)


def test_resnet50_batch1_chains_get_more_blocks_and_a_faster_prediction(resnet50_schedule):
    chains = {launch.node for launch in resnet50_schedule.launches if launch.kernel == "conv2d_chain"}
    unsplit = {n: {"split_n": 1, "split_mid": 1} for n in chains}
    auto = [p for p in pm.predict_schedule(resnet50_schedule, 1, "bfloat16", H200) if p.name in chains]
    off = {p.name: p for p in pm.predict_schedule(resnet50_schedule, 1, "bfloat16", H200, tuning=unsplit)}
    assert len(auto) == 13
    for p in auto:  # 25 (layer1), 13 (layer2), 4 (layer3) blocks before; 100, 104, 128 now
        assert off[p.name].tiles < p.tiles <= H200.sms and p.us < off[p.name].us
    assert sum(p.us for p in auto) < 0.6 * sum(p.us for p in off.values())


# --------------------------------------------------------------------------------------
# On a GPU: ResNet-50's batch-1 chains at full size, split by the rule (skipped without CUDA)
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chain", [(256, 14, 256, 1024, 1), (128, 56, 128, 512, 2), (64, 56, 64, 256, 1)],
                         ids=["layer3", "layer2.0", "layer1"])
def test_gpu_resnet50_batch1_chains_split_by_default(chain, dtype):
    c, h, c_mid, k, s = chain
    p = (h + 2 - 3) // s + 1
    mid = max(16, K._conv_pow2(c_mid))
    blocks = K._chain_defaults(dtype, False, False, "tap", c, 9, mid, p * p, k)
    assert K.chain_default_split(p * p, c, 9, c_mid, k, blocks, K._conv_sm_count(torch.device(DEV)), "tap",
                                 dtype == torch.float32) != (1, 1)
    run_chain(n=1, c=c, h=h, w=h, c_mid=c_mid, k=k, kernel=(3, 3), stride=(s, s), pad=(1, 1, 1, 1), dtype=dtype,
              residual=s == 1, act1=K.ACT_RELU, act2=K.ACT_RELU, out_slice=(16, 32))


def test_the_gpu_recorder_sees_the_split_chain_a_gpu_launches():
    """The warm stage records kernels on meta tensors with the GPU's 132 SMs (benchmarks/gpu/warm.py):
    a batch-1 layer3-like chain records its split kernel (SPLIT_MID 8, N_PER 256) and the reduce."""
    import json

    from benchmarks.gpu import profiles, warm

    net = profiles.Net("chain14", "network chain14 {\n    input 256 x 14 x 14\n    conv(256, 3, pad=1, bias=false)"
                                  " -> bn -> relu -> conv(1024, 1, bias=false) -> bn -> relu\n}\n")
    records, reports = warm.record([profiles.ProgramSpec(net, "bfloat16", (1,))], 1)
    assert [r["error"] for r in reports] == [None]
    assert {r.fn for r in records} == {"_chain_kernel", "_conv_splitk_reduce_kernel"}
    (chain,) = [json.loads(r.spec) for r in records if r.fn == "_chain_kernel"]
    assert chain["signature"]["ws_ptr"] == "*fp32"
    if "constant_keys" in chain:  # Triton 3.9's record format (3.6's differs; the reduce above shows the split)
        names = list(chain["signature"])
        consts = {names[i]: v for (i,), v in zip(chain["constant_keys"], chain["constant_vals"])}
        assert (consts["MID_SLICE"], consts["SPLIT_MID"], consts["N_PER"], consts["BLOCK_M"]) == (32, 8, 256, 64)


# --------------------------------------------------------------------------------------
# The compiled ResNet-50, split as a GPU would split it
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_resnet50_with_a_gpus_split_matches_the_reference():
    """The generated program's chains pick their split from the SM count (0 under the interpreter:
    no split).  Given 132, as on an H200, its chains split as the rule says (here: output groups);
    then with both splits forced wherever C_mid allows two slices.  Both match float64 PyTorch."""
    from smaller import smaller
    from test_compiled import randomize

    path = EXAMPLES / "resnet50.arch"
    spec = smaller(path)
    model = archdsl.compile(path, device=DEV, network=spec["network"], input_shape=spec["input_shape"],
                            **spec["params"])
    randomize(model)
    program = model._module
    program._conv_sm_count = lambda device: 132
    rule = program.chain_default_split
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(2)
    x = torch.randn(1, *model.graph.shape("input"))
    with torch.no_grad():
        ref = reference.double()(x.double())

    def forced(m, c, taps, c_mid, k, *args, **kwargs):
        return 2, (2 if c_mid > 16 else 1)  # C_mid <= 16 pads to one 16-wide slice

    for choose in (rule, forced):
        picked = []
        program.chain_default_split = lambda *a, choose=choose, **kw: picked.append(choose(*a, **kw)) or picked[-1]
        # no launch plans kept: every launch decides afresh
        program._host_plan_keep = lambda key, plan: plan
        assert rel_err(model(x), ref) <= 1e-4
        assert len(picked) == 16 and any(split != (1, 1) for split in picked), picked  # 16 chains at width 8
    assert sum(split[1] > 1 for split in picked) >= 8
