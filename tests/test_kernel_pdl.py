"""Programmatic dependent launch (kernels/host.py): every kernel of the templates can be launched
so that it starts while the previous one finishes, and waits on the GPU for its writes.

What can be checked without a GPU:
* the contract that makes it safe: every @triton.jit kernel takes ``PDL`` (off by default) and,
  on, calls ``gdc_wait()`` before anything else -- no load or store can come before it -- then
  ``gdc_launch_dependents()``;
* every launch a generated program makes carries ``PDL=True, launch_pdl=True`` once its module's
  PROGRAMMATIC_LAUNCH is on (on meta tensors, as the GPU check's recorder runs it; the CPU
  interpreter never gets them), and none while it is off;
* the sm_90 builds contain the ``griddepcontrol`` instructions.
Whether it is faster is the GPU check's pdl_ab stage to say.
"""

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import torch

from kernel_build import load_templates, run_compile_check

ROOT = Path(__file__).resolve().parents[1]
ALL = ("conv2d.py", "conv2d_chain.py", "elementwise.py", "norm.py", "pool2d.py")
K = load_templates(*ALL, module_name="archdsl_kernel_pdl")


def _kernels():
    """Every launched @triton.jit function of the templates (the helpers they call are not launched)."""
    return sorted(name for name, v in vars(K).items() if name.endswith("_kernel") and hasattr(v, "fn"))


def test_every_kernel_waits_for_the_previous_grid_before_it_touches_memory():
    kernels = _kernels()
    assert len(kernels) >= 18, kernels
    for name in kernels:
        fn = getattr(K, name).fn
        pdl = inspect.signature(fn).parameters.get("PDL")
        assert pdl is not None and pdl.default is False and "constexpr" in str(pdl.annotation), name
        body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].body
        body = body[1:] if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        first = body[0]  # the first statement after the docstring
        assert isinstance(first, ast.If) and ast.unparse(first.test) == "PDL" and not first.orelse, name
        assert [ast.unparse(s) for s in first.body] == ["gdc_wait()", "gdc_launch_dependents()"], name


def test_launch_keywords_only_where_the_switch_is_on_and_the_gpu_has_it(monkeypatch):
    cuda, meta, cpu = torch.device("cuda", 0), torch.device("meta"), torch.device("cpu")
    monkeypatch.setattr(K, "PROGRAMMATIC_LAUNCH", False)
    assert K._host_pdl(meta) == K._host_pdl(cuda) == {}
    monkeypatch.setattr(K, "PROGRAMMATIC_LAUNCH", True)
    assert K._host_pdl(meta) == {"PDL": True, "launch_pdl": True}   # the recorder plays an sm_90
    assert K._host_pdl(cpu) == {}                                     # the interpreter: never
    for capability, want in (((8, 0), {}), ((9, 0), {"PDL": True, "launch_pdl": True})):
        monkeypatch.setattr(K, "_HOST_HOPPER", {})
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index, c=capability: c)
        assert K._host_pdl(cuda) == want, capability


@pytest.fixture
def launches(monkeypatch):
    """Every kernel launch as (kernel, its keyword arguments); none runs."""
    seen = []

    def run(self, *args, grid, warmup, **kwargs):
        seen.append((self.fn.__name__, kwargs))

    monkeypatch.setattr(type(K._conv_gemm_kernel), "run", run)
    return seen


# every template: conv paths, chains, split-K, pools, elementwise sums and products, layer norm, LRN
NETS = [("resnet50", (3, 32, 32)), ("mobilenet_v3", (3, 32, 32)), ("convnext", (3, 32, 32)),
        ("googlenet", (3, 96, 96)), ("densenet121", (3, 32, 32)), ("alexnet", (3, 67, 67)),
        ("resnext50_32x4d", (3, 32, 32))]


@pytest.mark.parametrize("net,shape", NETS, ids=[n for n, _ in NETS])
def test_every_launch_of_a_program_carries_the_switch(net, shape, launches):
    import archdsl
    from archdsl.backends.torch_backend import to_torch
    from archdsl.runtime import build, import_program

    graph = archdsl.load(ROOT / "examples" / f"{net}.arch", input_shape=shape)
    module = import_program(build(graph, "bfloat16").program.source)
    module._conv_sm_count = lambda device: 132  # split-K as on an H200
    state = {k: v.detach() for k, v in to_torch(graph).eval().state_dict().items()}
    meta = torch.device("meta")
    network = module.Network(state, meta)
    x = torch.empty(2, *shape, device=meta)
    network(x)
    off = list(launches)
    assert off and not any("PDL" in kw or "launch_pdl" in kw for _, kw in off)
    del launches[:]
    module.PROGRAMMATIC_LAUNCH = True
    network(x)
    assert [name for name, _ in launches] == [name for name, _ in off]  # the same kernels, the same order
    assert all(kw.get("PDL") is True and kw.get("launch_pdl") is True for _, kw in launches), \
        [name for name, kw in launches if kw.get("PDL") is not True]


def test_the_tma_kernel_and_split_k_carry_it_too(monkeypatch):
    """Launches the programs above do not make by default: conv2d(tma=True) and a split's two kernels."""
    monkeypatch.setattr(K, "PROGRAMMATIC_LAUNCH", True)
    meta = torch.device("meta")
    x, w = torch.empty(1, 7, 7, 512, device=meta, dtype=torch.bfloat16), torch.empty(512, 256, device=meta,
                                                                                     dtype=torch.bfloat16)
    out = torch.empty(1, 7, 7, 256, device=meta, dtype=torch.bfloat16)
    tma = K.conv_plan(x, w, out, kernel=(1, 1), tma=True, split_k=1).gemm.tma
    split = K.conv_plan(x, w, out, kernel=(1, 1), split_k=4).gemm
    for kwargs in (tma.kwargs, split.kwargs, split.reduce[2]):
        assert kwargs["PDL"] is True and kwargs["launch_pdl"] is True


_COMPILE_VARIANTS = r'''
pro = dict(HAS_PRE=False, HAS_IN_SCALE=False, HAS_IN_SHIFT=False, IN_ACT=0, INTERPRETED=False,
           INPUT_PRECISION="tf32", RES_AFTER_ACT=False, HAS_OUT_SCALE=False, PDL=True)
types = {"x": "bf16", "scale_ptr": "fp32", "bias_ptr": "fp32"}
builds = [
    compile_for(K._conv_gemm_kernel, types, dict(pro, HAS_SCALE=False, HAS_BIAS=True, HAS_RES=True, ACT=1,
                BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SWIZZLE_M=8, K=256, NUM_OUT=1, ACT1=0, ACT2=0, ACT3=0), 8, 4),
    compile_for(K._pool_window_kernel, {"x": "bf16"}, dict(KH=3, KW=3, IS_MAX=True, COUNT_INCLUDE_PAD=True,
                BLOCK_Q=16, BLOCK_C=64, PDL=True), 4, 1),
]
for k in builds:
    ptx = k.asm["ptx"]
    print("pdl", k.name, ptx.index("griddepcontrol.wait") < ptx.index("ld.global"),
          "griddepcontrol.launch_dependents" in ptx)
'''


@pytest.mark.slow
def test_sm90_builds_wait_before_their_first_load(tmp_path):
    r = run_compile_check(tmp_path, ["conv2d.py", "pool2d.py"], _COMPILE_VARIANTS)
    found = re.findall(r"pdl (\w+) (\w+) (\w+)", r.stdout)
    assert len(found) == 2 and all(w == d == "True" for _, w, d in found), r.stdout[-2000:]


@pytest.mark.slow
def test_the_warm_recorder_records_the_pdl_program_apart():
    """The GPU check's pdl_ab stage times a program with the switch on: the warm stage records
    (and so compiles) its kernels as they will be launched, apart from the same program's without."""
    import json

    from benchmarks.gpu import profiles, warm

    specs = [profiles.ProgramSpec(profiles.SMOKE.r50, "bfloat16", (2,), pdl=pdl) for pdl in (False, True)]
    records, reports = warm.record(specs, 1)
    assert [r["error"] for r in reports] == [None, None]
    options = [json.loads(r.spec)["options"] for r in records]
    on = [o for o in options if o.get("launch_pdl")]
    assert on and len(on) == len(options) - len(on)  # every kernel twice: with and without


@pytest.mark.gpu
def test_gpu_resnet50_with_programmatic_launch_computes_the_same_bits_plain_and_graphed():
    """On the GPU: the launches really go out with the attribute (sm_90+), inside a captured CUDA
    graph too, and change nothing in what is computed."""
    import archdsl
    from archdsl.runtime import CompiledModel, build

    graph = archdsl.load(ROOT / "examples" / "resnet50.arch")
    compiled = build(graph, "bfloat16")
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0)).cuda().to(torch.bfloat16)
    outs = {}
    models = {}
    for pdl in (False, True):
        for graphed in (False, True):
            model = CompiledModel(compiled, torch.device("cuda"), cuda_graph=graphed)
            if models:
                model.load_state_dict(next(iter(models.values())).state_dict())
            module = model._module  # one module per program source: switched back off below
            module.PROGRAMMATIC_LAUNCH = pdl
            try:
                with torch.inference_mode():
                    model(x)
                    outs[(pdl, graphed)] = model(x).float().cpu()  # graphed: the replay
            finally:
                module.PROGRAMMATIC_LAUNCH = False
            models[(pdl, graphed)] = model
    want = outs[(False, False)]
    assert torch.isfinite(want).all() and want.abs().max() > 0
    for key, got in outs.items():
        assert torch.equal(got, want), key
