"""kernels/conv2d.py's gate: a conv that multiplies its input by a per-sample, per-channel gate
while loading it (squeeze-and-excitation's `x * s` fused into the conv after it).

    out = conv(x * gate[n, c]) with the conv's usual prologue and epilogue after it

Against float64 PyTorch (F.conv2d of the padded product) in fp32, on every path; in fp16 / bf16
bit for bit against what the unfused program computes on a GPU: the product rounded to the
activation dtype (round to nearest even, as a GPU's store rounds it), then the same conv kernel
without a gate.  Gates differ per sample, are strided views (a slice of a wider buffer), and
inputs are channel slices, so a wrong batch or channel index cannot pass.

Without CUDA the kernels run in Triton's interpreter (conftest.py): small shapes.
"""

import pytest
import torch
import torch.nn.functional as F

from kernel_build import check_poison, load_templates, run_compile_check
from kernel_tensors import DEV, rel_err, sliced, twin_conv

K = load_templates("conv2d.py", module_name="archdsl_kernel_conv2d_se")

NAN = float("nan")

# one layer per path (conv_path picks the named one)
LAYERS = {
    "gemm": dict(c=24, k=10, kernel=(1, 1)),
    "implicit_tap": dict(c=16, k=8, kernel=(3, 3), pad=(1, 1, 1, 1)),
    "implicit_flat": dict(c=6, k=8, kernel=(3, 3), stride=(2, 1), pad=(1, 0, 1, 1), groups=2),
    "depthwise": dict(c=12, k=12, kernel=(3, 3), pad=(1, 1, 1, 1), groups=12),
}


def make(layer, n=3, h=5, w=6, dtype=torch.float32, seed=0):
    """Random x (NCHW), weight, bias and a gate in (0, 1) that differs per sample and channel."""
    gen = torch.Generator().manual_seed(seed)
    c, k, groups = layer["c"], layer["k"], layer.get("groups", 1)
    kh, kw = layer["kernel"]
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    wt = (torch.randn(k, c // groups, kh, kw, generator=gen) / (kh * kw * c // groups) ** 0.5).to(dtype)
    bias = torch.randn(k, generator=gen)
    gate = torch.rand(n, c, generator=gen).to(dtype)
    return x, wt, bias, gate


def out_size(layer, h, w):
    kh, kw = layer["kernel"]
    sh, sw = layer.get("stride", (1, 1))
    pt, pb, pl, pr = layer.get("pad", (0, 0, 0, 0))
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def reference(layer, x, wt, bias, gate, act=torch.relu):
    """act(conv(pad(x * gate)) + bias) in x's dtype (NCHW)."""
    pt, pb, pl, pr = layer.get("pad", (0, 0, 0, 0))
    xs = F.pad(x * gate[:, :, None, None], (pl, pr, pt, pb))
    y = F.conv2d(xs, wt, stride=layer.get("stride", (1, 1)), groups=layer.get("groups", 1))
    return act(y + bias.to(y.dtype).view(1, -1, 1, 1))


def run_kernel(layer, x, wt, bias, gate, *, dtype, gated=True, **extra):
    """K.conv2d on NHWC channel slices with the gate a strided view: (out view, its buffer)."""
    n, c, h, w = x.shape
    p, q = out_size(layer, h, w)
    xv, _ = sliced((n, h, w, c), dtype, 3, 2)
    xv.copy_(x.permute(0, 2, 3, 1))
    gbuf = torch.full((n, 1, 1, c + 5), NAN, dtype=dtype, device=DEV)  # batch stride c + 5
    gv = gbuf[..., 2:2 + c]
    gv.copy_(gate.view(n, 1, 1, c))
    out, obuf = sliced((n, p, q, layer["k"]), dtype, 1, 2)
    geometry = {key: layer[key] for key in ("kernel", "stride", "pad", "groups") if key in layer}
    K.conv2d(xv, K.pack_conv_weight(wt, layer.get("groups", 1), dtype).to(DEV), out, **geometry,
             bias=bias.to(DEV), act=K.ACT_RELU, in_gate=gv if gated else None, **extra)
    return out, obuf


def test_layers_take_the_paths_they_name():
    for path, layer in LAYERS.items():
        x = torch.empty(1, 5, 6, layer["c"])
        p, q = out_size(layer, 5, 6)
        got = K.conv_path(x, torch.empty(1, p, q, layer["k"]), kernel=layer["kernel"],
                          stride=layer.get("stride", (1, 1)), pad=layer.get("pad", (0, 0, 0, 0)),
                          groups=layer.get("groups", 1))
        assert got == path


@pytest.mark.parametrize("path", list(LAYERS))
def test_gate_against_float64(path):
    """fp32 within 1e-4 of float64 PyTorch; ignoring the gate, or one sample's gate for all, is far off."""
    layer = LAYERS[path]
    x, wt, bias, gate = make(layer, seed=len(path))
    ref = reference(layer, x.double(), wt.double(), bias.double(), gate.double())
    out, obuf = run_kernel(layer, x, wt, bias, gate, dtype=torch.float32)
    check_poison(out, obuf, 1, 2)
    assert rel_err(out.permute(0, 3, 1, 2), ref) <= 1e-4
    # the check can fail: the ungated conv and a gate read from the wrong sample are far away
    ungated = reference(layer, x.double(), wt.double(), bias.double(), torch.ones_like(gate).double())
    wrong_sample = reference(layer, x.double(), wt.double(), bias.double(), gate[[0] * len(gate)].double())
    assert rel_err(ungated, ref) > 1e-2 and rel_err(wrong_sample, ref) > 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("path", ["gemm", "implicit_tap"])
def test_low_precision_equals_the_unfused_program(path, dtype):
    """bf16 / fp16: bit-identical to the unfused program: the product x * gate rounded to the
    activation dtype (round to nearest even, PyTorch's cast), then the same conv without a gate."""
    layer = LAYERS[path]
    x, wt, bias, gate = make(layer, dtype=dtype, seed=3)
    stored = (x.float() * gate.float()[:, :, None, None]).to(dtype)  # what the mul kernel stores
    fused, _ = run_kernel(layer, x, wt, bias, gate, dtype=dtype)
    unfused, _ = run_kernel(layer, stored, wt, bias, gate, dtype=dtype, gated=False)
    assert torch.equal(fused, unfused)
    # and close to float64 (the rounding is the unfused program's, not an error of the fusion)
    ref = reference(layer, x.double(), wt.double(), bias.double(), gate.double())
    assert rel_err(fused.permute(0, 3, 1, 2), ref) < 2e-2


def test_gate_then_batch_norm_prologue_bf16():
    """Gate and batch-norm prologue together (mul -> bn -> relu -> conv): the product is rounded, then
    normalised and rounded again, exactly as the two stored tensors of the unfused program."""
    layer = LAYERS["implicit_tap"]
    dtype = torch.bfloat16
    x, wt, bias, gate = make(layer, dtype=dtype, seed=5)
    gen = torch.Generator().manual_seed(9)
    in_scale, in_shift = torch.rand(layer["c"], generator=gen) + 0.5, torch.randn(layer["c"], generator=gen)
    pre = dict(in_scale=in_scale.to(DEV), in_shift=in_shift.to(DEV), in_act=K.ACT_RELU)
    stored = (x.float() * gate.float()[:, :, None, None]).to(dtype)
    fused, _ = run_kernel(layer, x, wt, bias, gate, dtype=dtype, **pre)
    unfused, _ = run_kernel(layer, stored, wt, bias, gate, dtype=dtype, gated=False, **pre)
    assert torch.equal(fused, unfused)


@pytest.mark.parametrize("path", ["gemm", "implicit_tap"])
def test_gate_with_split_k(path):
    """Split-K slices load through the same main loops: the gate applies in each slice."""
    layer = dict(LAYERS[path], c=64)
    x, wt, bias, gate = make(layer, n=2, h=3, w=3, seed=7)
    ref = reference(layer, x.double(), wt.double(), bias.double(), gate.double())
    out, _ = run_kernel(layer, x, wt, bias, gate, dtype=torch.float32, split_k=2, block_k=16)
    assert rel_err(out.permute(0, 3, 1, 2), ref) <= 1e-4


def test_no_gate_is_the_plain_conv():
    """in_gate=None: bit-identical to a call without the argument."""
    x, wp, _, plain, gated_off = twin_conv(K, (2, 4, 5, 24), 10, 1, torch.bfloat16, seed=11)
    K.conv2d(x, wp, plain, kernel=(1, 1), act=K.ACT_SIGMOID)
    K.conv2d(x, wp, gated_off, kernel=(1, 1), act=K.ACT_SIGMOID, in_gate=None)
    assert torch.equal(plain, gated_off)


def test_gate_misuse_raises():
    x = torch.randn(2, 4, 4, 8, device=DEV)
    wp = K.pack_conv_weight(torch.randn(4, 8, 1, 1), 1, torch.float32).to(DEV)
    out = torch.empty(2, 4, 4, 4, device=DEV)
    with pytest.raises(ValueError, match="in_gate must have shape"):
        K.conv2d(x, wp, out, kernel=(1, 1), in_gate=torch.ones(2, 1, 1, 4, device=DEV))  # K, not C, channels
    with pytest.raises(ValueError, match="in_gate must have shape"):
        K.conv2d(x, wp, out, kernel=(1, 1), in_gate=torch.ones(1, 8, device=DEV))  # one sample for two
    with pytest.raises(ValueError, match="in_gate: dtype"):
        K.conv2d(x, wp, out, kernel=(1, 1), in_gate=torch.ones(2, 8, dtype=torch.int32, device=DEV))


_COMPILE_VARIANTS = r'''
vecs = {"bias_ptr": "fp32", "in_scale_ptr": "fp32", "in_shift_ptr": "fp32"}
ep = dict(HAS_SCALE=False, HAS_BIAS=True, ACT=K.ACT_RELU, INTERPRETED=False, HAS_PRE=False, HAS_IN_SCALE=False,
          HAS_IN_SHIFT=False, IN_ACT=K.ACT_NONE, HAS_OUT_SCALE=False, HAS_GATE=True)
compile_for(K._conv_gemm_kernel, dict(vecs, x="bf16"),
            dict(ep, HAS_RES=True, RES_AFTER_ACT=False, NUM_OUT=1, ACT1=0, ACT2=0, ACT3=0, K=512,
                 INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SWIZZLE_M=8), 8, 4)
compile_for(K._conv_gemm_splitk_kernel, dict(vecs, x="fp16"),
            dict(HAS_PRE=False, HAS_IN_SCALE=False, HAS_IN_SHIFT=False, IN_ACT=0, HAS_GATE=True, INTERPRETED=False,
                 K=2048, INPUT_PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, SWIZZLE_M=8, SLICE_ITERS=4),
            4, 4)
compile_for(K._conv_implicit_gemm_kernel, dict(vecs, x="bf16"),
            dict(ep, HAS_RES=False, RES_AFTER_ACT=False, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, DH=1, DW=1, CG=64,
                 FLAT=False, INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, SWIZZLE_M=8), 4, 4)
compile_for(K._conv_depthwise_kernel, dict(vecs, x="fp16"),
            dict(ep, HAS_RES=False, RES_AFTER_ACT=False, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, DH=1, DW=1,
                 BLOCK_M=64, BLOCK_C=64), 4, 2)
'''


@pytest.mark.slow
def test_gated_kernels_compile_for_gpus(tmp_path):
    """sm_90 builds of the gated GEMM (single pass and split-K), implicit and depthwise kernels."""
    run_compile_check(tmp_path, ["conv2d.py"], _COMPILE_VARIANTS)


# --------------------------------------------------------------------------------------
# The pass (archdsl/passes/gate.py): which products it fuses, which it declines and why
# --------------------------------------------------------------------------------------

import archdsl  # noqa: E402
from archdsl.codegen.plan import make_plan  # noqa: E402
from archdsl.codegen.schedule import make_schedule  # noqa: E402
from archdsl.passes import launch_groups, optimize  # noqa: E402
from test_passes import assert_same_function  # noqa: E402

SE = "mul { @x; global_avgpool -> conv(4, 1) -> relu -> conv(16, 1) -> sigmoid } as y"


def se_net(after: str, head: str = "conv(16, 1) -> relu as x", outputs: str = "") -> str:
    return f"network n {{\n input 8x5x5\n {head}\n {SE}\n {after}\n{outputs}}}\n"


def gate_report(o):
    return next(r for r in o.reports if r.name == "fuse_gate_into_conv_input")


def test_the_se_product_becomes_the_projection_convs_input_gate():
    g = archdsl.loads(se_net("conv(8, 1) -> bn -> relu as proj"))
    o = optimize(g)
    assert [n for n in o.graph.nodes if o.graph.op(n) == "mul"] == []
    (conv,) = [n for n in o.graph.nodes if o.graph.nodes[n]["attrs"].get("in_gate")]
    gate = o.graph.args(conv)[-1]
    assert o.graph.shape(gate) == (16, 1, 1) and o.graph.shape(o.graph.args(conv)[0]) == (16, 5, 5)
    assert gate_report(o).changed == [f"mul -> the input of {conv} (gate `{gate}`)"]
    assert_same_function(g, o)
    # the schedule reads the gate, and the emitted launch passes it
    launch = make_schedule(o.graph).launch_of(conv)
    assert launch.gate == gate and gate in launch.inputs and not launch.epilogue.residual


def test_a_gated_conv_keeps_its_residual_and_batch_norm_prologue():
    """mul -> bn -> relu -> conv(3x3, pad 1) + residual: the gate first, then the prologue; the
    residual stays port 1, the gate is last."""
    g = archdsl.loads("network n {\n input 16x5x5\n residual {\n conv(16, 1) -> relu as x\n " + SE +
                      "\n bn -> relu -> conv(16, 3, pad=1)\n }\n}\n")
    o = optimize(g)
    (conv,) = [n for n in o.graph.nodes if o.graph.nodes[n]["attrs"].get("in_gate")]
    a = o.graph.nodes[conv]["attrs"]
    assert a["pre_bn_eps"] is not None and len(o.graph.args(conv)) == 3
    assert "gate+bn+relu+" in archdsl.ops.OPS["fused_conv"].describe(a)
    assert make_schedule(o.graph).launch_of(conv).epilogue.residual
    assert_same_function(g, o)


@pytest.mark.parametrize("after,outputs,why", [
    ("conv(8, 1) as a\n @y -> conv(8, 1) as b", " output a, b\n", "2 inputs read it"),
    ("conv(8, 1) as a", " output a, y\n", "it is a graph output"),
    ("maxpool(2)", "", "(a maxpool) reads it"),
    ("conv(16, 1) as a\n add { @a; @y }", "", "2 inputs read it"),
])
def test_products_read_by_anything_else_are_declined(after, outputs, why):
    o = optimize(archdsl.loads(se_net(after, outputs=outputs)))
    assert "mul" in {o.graph.op(n) for n in o.graph.nodes}
    (declined,) = gate_report(o).declined
    assert declined.startswith("mul: ") and why in declined


def test_a_product_of_two_maps_is_not_a_gate():
    o = optimize(archdsl.loads("network n {\n input 8x5x5\n mul { conv(8, 1); conv(8, 3, pad=1) }\n conv(4, 1)\n}\n"))
    assert gate_report(o).declined == ["mul: it is not one C×H×W map times one C×1×1 gate"]


def test_the_gate_goes_before_a_chain_which_then_declines_the_gated_conv():
    """EfficientNet's first block: the projection conv could start a chain with the 1x1 after it, but
    the chain kernel applies no gate. The gate pass runs first (the gate saves the expanded map's
    write and read), and the chain pass declines the gated conv, saying why; with the gate pass
    off, the chain forms and the mul stays."""
    g = archdsl.loads(se_net("conv(8, 1) -> bn\n conv(24, 1) -> relu"))
    (proj,) = g.users("mul")
    o = optimize(g)
    assert gate_report(o).declined == [] and o.graph.nodes[proj]["attrs"]["in_gate"]
    chain = next(r for r in o.reports if r.name == "fuse_conv_chain")
    assert any(d.startswith(f"{proj} -> ") and "squeeze-and-excitation gate" in d for d in chain.declined), chain.declined
    assert not launch_groups(o.graph).grouped(proj)
    assert_same_function(g, o)
    ungated = optimize(g, disable=("fuse_gate_into_conv_input",))
    assert launch_groups(ungated.graph).grouped(proj) and "mul" in {ungated.graph.op(n) for n in ungated.graph}


def test_a_gated_conv_joins_no_sibling_gemm():
    """x is read by the gated projection (x times the gate) and by a plain 1x1 conv: one GEMM would
    read one input, so the sibling pass leaves the gated conv out and says why."""
    g = archdsl.loads(se_net("conv(4, 1) as a\n @x -> conv(6, 1) as b", outputs=" output a, b\n"))
    (proj,) = g.users("mul")
    o = optimize(g)
    assert o.graph.nodes[proj]["attrs"]["in_gate"] and not launch_groups(o.graph).grouped(proj)
    siblings = next(r for r in o.reports if r.name == "fuse_sibling_convs")
    assert any(proj in d and "squeeze-and-excitation gate" in d for d in siblings.declined), siblings.declined
    assert_same_function(g, o)


def test_the_gate_is_never_overwritten_in_place():
    """A strided 1x1 conv on a 2x2 map: its output (16, 1, 1) has the gate's shape and the gate is
    dead after it, but every program reads the whole gate: the planner must not write over it."""
    g = archdsl.loads("network n {\n input 8x2x2\n conv(16, 1) -> relu as x\n " + SE + "\n conv(16, 1, stride=2)\n}\n")
    o = optimize(g)
    (conv,) = [n for n in o.graph.nodes if o.graph.nodes[n]["attrs"].get("in_gate")]
    gate = o.graph.args(conv)[-1]
    assert o.graph.shape(gate) == o.graph.shape(conv)
    plan = make_plan(o.graph)
    assert plan.over.get(conv) != gate and plan.base[conv] != plan.base[gate]


# --------------------------------------------------------------------------------------
# Compiled end to end (the generated program under the interpreter) against float64 PyTorch
# --------------------------------------------------------------------------------------

from compiled_check import compiled_error, randomize_all  # noqa: E402


def test_compiled_se_network_launches_no_mul_and_matches():
    model = archdsl.compile(source=se_net("conv(8, 1) -> bn -> relu"), device="cpu")
    source = model.compiled.program.source
    assert "mul([" not in source and source.count("in_gate=t[") == 1
    unfused = archdsl.compile(source=se_net("conv(8, 1) -> bn -> relu"), device="cpu",
                              disable=("fuse_gate_into_conv_input",))
    assert unfused.compiled.program.launches == model.compiled.program.launches + 1  # the mul
    randomize_all(model, seed=1)
    assert compiled_error(model, torch.randn(3, 8, 5, 5)) <= 1e-4


def test_compiled_gate_with_prologue_halo_and_residual():
    model = archdsl.compile(source="network n {\n input 16x5x5\n residual {\n conv(16, 1) -> relu as x\n " + SE +
                            "\n bn -> relu -> conv(16, 3, pad=1)\n }\n}\n", device="cpu")
    assert model.compiled.program.source.count("in_gate=t[") == 1
    randomize_all(model, seed=4)
    assert compiled_error(model, torch.randn(2, 16, 5, 5)) <= 1e-4


@pytest.mark.slow
def test_compiled_mobilenet_v3_with_gated_projections():
    """examples/mobilenet_v3.arch at its documented reduced size: every SE product fused (8 in the
    large network), the output within 1e-4 of float64 PyTorch."""
    from smaller import EXAMPLES, smaller

    path = EXAMPLES / "mobilenet_v3.arch"
    spec = smaller(path)
    model = archdsl.compile(path, device="cpu", network=spec["network"], input_shape=spec["input_shape"],
                            **spec["params"])
    g = model.compiled.program.graph
    assert sum(1 for n in g.nodes if g.nodes[n]["attrs"].get("in_gate")) == 8
    assert "mul" not in {g.op(n) for n in g.nodes}
    randomize_all(model, seed=2)
    assert compiled_error(model, torch.randn(2, *g.shape(g.inputs[0]))) <= 1e-4


# --------------------------------------------------------------------------------------
# The GPU check's per-launch recorder: a gated launch replays, and PyTorch does the same work
# --------------------------------------------------------------------------------------


def test_gpu_check_replays_a_gated_launch_against_pytorch():
    from archdsl.bench.harness import fold_bn_graph, folded_state, reference_state, rel_error
    from benchmarks.gpu import launches as L
    from benchmarks.gpu.check import compiled_model

    graph = archdsl.loads(se_net("conv(8, 1) -> bn -> relu as proj"))
    state = reference_state(graph, 0)
    model = compiled_model(graph, "float32", torch.device("cpu"))
    model.load_state_dict(state)
    optimized = model.compiled.optimized.graph
    x = torch.randn(2, 8, 5, 5)
    with torch.inference_mode():
        model(x)  # the network is built (and its weights prepared) by the first call
        recorded = L.record_conv_launches(model._module, model._network, [x], optimized)
    (gated,) = [launch for launch in recorded if "in_gate" in launch.kwargs]
    assert any(t is gated.kwargs["in_gate"] for t in gated.inputs()) and "in_gate=T(2, 1, 1, 16)" in gated.signature
    _, folds = fold_bn_graph(graph)
    theirs = L.CudnnEquivalent.build(gated, optimized, folded_state(state, folds))
    with torch.inference_mode():
        L.randomize_inputs(gated, 3)
        L.poison_outputs(gated)
        gated.run()
        (ours,), (ref,) = L.outputs_nchw(gated), theirs.run()
        assert rel_error(ours, ref) < 1e-5
        gated.kwargs["in_gate"].fill_(1.0)  # the check can fail: without the gate the result differs
        assert rel_error(ours, theirs.run()[0]) > 1e-2
    (node,) = theirs.nodes
    assert node.gate and not node.residual
    _, nbytes = L.launch_work([node], "conv2d", 2, 4)
    x, gate, w, bias, out = 2 * 16 * 25, 2 * 16, 16 * 8, 8, 2 * 8 * 25
    assert nbytes == 4 * (x + gate + w + out) + 4 * bias


def test_the_perf_model_counts_the_bytes_the_fusion_saves():
    """Predicted (not measured): the fused network moves 2·N·C·H·W elements less (the product's
    write and read back; the gate's N·C are read either way) in one launch less."""
    from archdsl.runtime.perfmodel import Ceilings, conv_problem, predict_schedule

    g = archdsl.loads(se_net("conv(8, 1) -> bn -> relu"))
    fused = make_schedule(optimize(g).graph)
    plain = make_schedule(optimize(g, disable=("fuse_gate_into_conv_input",)).graph)
    batch, elem = 4, 2
    ceilings = Ceilings.h200_datasheet()
    p_fused, p_plain = (predict_schedule(s, batch, "bfloat16", ceilings) for s in (fused, plain))
    assert len(p_plain) - len(p_fused) == 1
    assert sum(p.dram_bytes for p in p_plain) - sum(p.dram_bytes for p in p_fused) == 2 * batch * 16 * 5 * 5 * elem
    gated = conv_problem("c", (batch, 5, 5, 16), (batch, 5, 5, 8), (1, 1), 1, False, elem, gate=True)
    plain_conv = conv_problem("c", (batch, 5, 5, 16), (batch, 5, 5, 8), (1, 1), 1, False, elem)
    assert gated.a_bytes - plain_conv.a_bytes == batch * 16 * elem


def test_the_tuner_keys_and_runs_a_gated_launch_with_its_gate(tmp_path):
    from archdsl.runtime import tune
    from archdsl.runtime.launches import conv_launches, conv_signature

    graph = optimize(archdsl.loads(se_net("conv(8, 1) -> bn -> relu"))).graph
    (gated,) = [launch for launch in conv_launches(graph, 2) if launch.gate]
    assert gated.signature().endswith("res0 act1 gate1 | gemm")
    plain = conv_signature((2, 5, 5, 16), (2, 5, 5, 8), kernel=1, act=1, path="gemm")
    assert plain == gated.signature().replace(" gate1", "")  # signatures without a gate are unchanged
    # tuning runs conv2d with a gate and records under the gated key
    seen = []
    k = load_templates("conv2d.py", module_name="archdsl_kernel_conv2d_se_tune")

    def conv2d(*args, **kwargs):
        seen.append(kwargs.get("in_gate"))
        return k.conv2d(*args, **kwargs)

    x, gate = torch.randn(2, 5, 5, 16), torch.rand(2, 1, 1, 16)
    wp = k.pack_conv_weight(torch.randn(8, 16, 1, 1), 1, torch.float32)
    cache = tune.TuneCache(tmp_path / "tune.json")
    info = tune.DeviceInfo("Fake GPU", "9.0", "2.13.0", "3.9.0")
    result = tune.tune_conv2d(x, wp, torch.empty(2, 5, 5, 8), kernel=1, act=1, in_gate=gate, conv2d=conv2d,
                              timer=lambda fn: (fn(), 1.0)[1], cache=cache, info=info,
                              candidates=[{"block_m": 16, "block_n": 16, "block_k": 16}])
    assert seen and all(s is gate for s in seen)
    key = tune.TuneKey.make(info, "conv2d", gated.signature(), torch.float32)
    assert tune.TuneCache(cache.path).get(key) == result.config
