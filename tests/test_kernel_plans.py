"""Launch plans: the launchers decide once per distinct call and launch the same thing every time.

``conv2d``, ``linear`` and the pool / norm / elementwise launchers keep what they decided for a
set of shapes, strides, dtypes, devices and other arguments (kernels/host.py, "launch plans").
These tests record every launch instead of running it (Triton's ``run`` replaced), so they are
fast, and check that
* a second call with *other* tensors of the same shapes reuses the plan and launches exactly what
  a freshly made plan launches, with this call's tensors in the same places (a plan that kept a
  tensor of the first call would show it here);
* a call with another shape makes a new plan;
* misuse raises the same error on every call, and a failed call keeps nothing;
* a generated program's second forward makes no plan and launches what the first launched.
Speed is measured by benchmarks/host_overhead.py, not here.
"""

from pathlib import Path

import pytest
import torch

from kernel_build import load_templates

K = load_templates("conv2d.py", module_name="archdsl_kernel_plans_conv2d")
EW = load_templates("elementwise.py", "norm.py", module_name="archdsl_kernel_plans_ew")
POOL = load_templates("pool2d.py", module_name="archdsl_kernel_plans_pool")
ROOT = Path(__file__).resolve().parents[1]


WORKSPACES = []  # split-K's workspaces, made per call (``_conv_splitk_workspace``)


@pytest.fixture
def launches(monkeypatch):
    """Every launch as (kernel, grid, positional args, keyword args), none run."""
    seen = []
    cls = type(K._conv_gemm_kernel)  # InterpretedFunction here, JITFunction without the interpreter

    def run(self, *args, grid, warmup, **kwargs):
        seen.append((self.fn.__name__, grid, args, kwargs))

    monkeypatch.setattr(cls, "run", run)
    workspace = K._conv_splitk_workspace
    monkeypatch.setattr(K, "_conv_splitk_workspace", lambda *a: WORKSPACES.append(workspace(*a)) or WORKSPACES[-1])
    yield seen
    WORKSPACES.clear()


def _described(recorded, tensors):
    """The launches with each tensor replaced by the name of the call's tensor it points into (its
    data pointer), its shape, strides and dtype: comparable across calls with other tensors."""
    where = {**{ws.data_ptr(): "workspace" for ws in WORKSPACES}, **{t.data_ptr(): name for name, t in tensors.items()}}

    def one(v):
        if isinstance(v, torch.Tensor):
            return ("tensor", where.get(v.data_ptr(), "FOREIGN"), tuple(v.shape), v.stride(), v.dtype)
        return v

    return [(name, grid, [one(a) for a in args], {k: one(v) for k, v in sorted(kwargs.items())})
            for name, grid, args, kwargs in recorded]


def _tensors_in(obj, seen=None):
    """The tensors reachable from a plan (its fields, tuples, lists and dicts): a plan must keep none."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (tuple, list)):
        items = list(obj)
    elif isinstance(obj, K._ConvPlan):
        items = list(vars(obj).values())
    else:
        return []
    return [t for item in items for t in _tensors_in(item, seen)]


def _fresh(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=gen) for name, shape in shapes.items()}


# (what, tensors' shapes, the call) -- every conv2d path, several outputs, split-K, the fusions, linear
CONV_CASES = {
    "gemm": ({"x": (1, 4, 5, 16), "w": (16, 8), "out": (1, 4, 5, 8), "bias": (8,), "res": (1, 4, 5, 8)},
             lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), bias=t["bias"], residual=t["res"],
                                      act=K.ACT_RELU, **kw)),
    "implicit_tap": ({"x": (1, 6, 6, 16), "w": (144, 8), "out": (1, 6, 6, 8), "scale": (8,)},
                     lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(3, 3), pad=(1, 1, 1, 1),
                                              scale=t["scale"], **kw)),
    "implicit_flat": ({"x": (2, 9, 9, 3), "w": (147, 8), "out": (2, 2, 2, 8)},
                      lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(7, 7), stride=(2, 2), **kw)),
    "depthwise": ({"x": (1, 5, 5, 8), "w": (9, 8), "out": (1, 5, 5, 8), "bias": (8,)},
                  lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(3, 3), pad=1, groups=8,
                                           bias=t["bias"], act=K.ACT_HARDSWISH, **kw)),
    "several": ({"x": (1, 4, 4, 8), "w": (8, 10), "a": (1, 4, 4, 4), "b": (1, 4, 4, 6), "bias": (10,)},
                lambda t, **kw: K.conv2d(t["x"], t["w"], (t["a"], t["b"]), kernel=(1, 1), bias=t["bias"],
                                         act=(K.ACT_RELU, K.ACT_NONE), **kw)),
    "split_implicit": ({"x": (1, 4, 4, 16), "w": (144, 8), "out": (1, 4, 4, 8), "bias": (8,), "res": (1, 4, 4, 8)},
                       lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(3, 3), pad=1, bias=t["bias"],
                                                residual=t["res"], split_k=3, block_k=16, **kw)),
    "split_gemm": ({"x": (1, 2, 2, 96), "w": (96, 8), "out": (1, 2, 2, 8)},
                   lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), split_k=2, block_k=16, **kw)),
    "prologue_gate": ({"x": (2, 5, 5, 16), "w": (144, 8), "out": (2, 5, 5, 8), "s": (16,), "h": (16,),
                       "gate": (2, 16)},
                      lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(3, 3), pad=1, in_scale=t["s"],
                                               in_shift=t["h"], in_act=K.ACT_RELU, in_gate=t["gate"],
                                               out_scale=0.5, **kw)),
    "layer_norm": ({"x": (1, 3, 3, 16), "w": (16, 8), "out": (1, 3, 3, 8), "ln": (8,), "bias": (8,)},
                   lambda t, **kw: K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), bias=t["bias"], in_ln=t["ln"],
                                            in_ln_eps=1e-6, **kw)),
    "linear": ({"x": (2, 12), "w": (12, 5), "out": (2, 5), "bias": (5,)},
               lambda t, **kw: K.linear(t["x"], t["w"], t["out"], bias=t["bias"], act=K.ACT_TANH, **kw)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_a_second_call_reuses_the_plan_and_launches_what_a_fresh_plan_does(case, launches, monkeypatch):
    shapes, call = CONV_CASES[case]
    plans = []
    for name in ("conv_plan", "linear_plan"):
        made = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _made=made, **kw: plans.append(1) or _made(*a, **kw))
    K._HOST_PLANS.clear()
    first, second = _fresh(shapes, 1), _fresh(shapes, 2)
    call(first)
    assert len(plans) == 1 and launches, case
    call(second)                         # other tensors, same shapes: the plan is reused ...
    assert len(plans) == 1
    reused = _described(launches[-len(launches) // 2:], second)
    assert len(launches) % 2 == 0
    K._HOST_PLANS.clear()                # ... and launches what a fresh plan launches on them
    del launches[:]
    call(second)
    assert len(plans) == 2
    assert _described(launches, second) == reused
    assert "FOREIGN" not in repr(reused)
    assert K._HOST_PLANS and not _tensors_in(list(K._HOST_PLANS.values()))
    bigger = {k: (2 * v[0], *v[1:]) if k in ("x", "out", "res", "a", "b", "gate") else v for k, v in shapes.items()}
    call(_fresh(bigger, 3))              # another batch size: another plan
    assert len(plans) == 3


def _reused_then_fresh(module, shapes, call) -> tuple[dict, torch.Tensor]:
    """(the tensors, `out` as a plan made by an earlier call with other tensors computes it), `out`
    left as a freshly made plan computes it: kernels really run."""
    module._HOST_PLANS.clear()
    call(_fresh(shapes, 4))
    t = _fresh(shapes, 5)
    call(t)
    reused = t["out"].clone()
    module._HOST_PLANS.clear()
    call(t)
    return t, reused


def test_the_reused_plan_computes_the_same_bits():
    """A conv planned by an earlier call with other tensors gives exactly the output of a freshly
    planned one, and both match PyTorch."""
    t, reused = _reused_then_fresh(K, *CONV_CASES["implicit_tap"])
    assert torch.equal(reused, t["out"])
    w = t["w"].reshape(3, 3, 16, 8).permute(3, 2, 0, 1)
    want = torch.nn.functional.conv2d(t["x"].permute(0, 3, 1, 2).double(), w.double(), padding=1)
    want = want * t["scale"].double()[None, :, None, None]
    torch.testing.assert_close(reused.permute(0, 3, 1, 2).double(), want, rtol=1e-4, atol=1e-4)


def test_misuse_raises_the_same_error_every_time_and_keeps_no_plan(launches):
    t = _fresh(CONV_CASES["gemm"][0], 6)
    K._HOST_PLANS.clear()
    K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), split_k=1)
    kept = dict(K._HOST_PLANS)
    for _ in range(2):
        with pytest.raises(ValueError, match="split_k must be None"):   # True == 1, but not a slice count
            K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), split_k=True)
        with pytest.raises(ValueError, match=r"bias must be a contiguous \(8,\) vector"):
            K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), bias=torch.zeros(9))
        with pytest.raises(ValueError, match="out is 4x5 but the convolution gives 2x3"):
            K.conv2d(t["x"], t["w"], t["out"], kernel=(1, 1), stride=2)
        with pytest.raises(ValueError, match="x and out must be 2-d"):
            K.linear(t["x"], t["w"], t["out"])
    assert K._HOST_PLANS == kept
    assert len(launches) == 1
    K.conv2d(t["x"], t["w"], t["out"], kernel=[1, 1])   # a list: not a key, planned afresh, same launch
    assert K._HOST_PLANS == kept and _described(launches[:1], t) == _described(launches[1:], t)


OTHER_CASES = {
    "max_pool2d": (POOL, {"x": (1, 7, 7, 8), "out": (1, 4, 4, 8)},
                   lambda t: POOL.max_pool2d(t["x"], t["out"], kernel=3, stride=2, pad=1)),
    "global_avg_pool": (POOL, {"x": (1, 5, 5, 8), "out": (1, 1, 1, 8)},
                        lambda t: POOL.global_avg_pool(t["x"], t["out"])),
    "layer_norm": (EW, {"x": (1, 3, 3, 8), "out": (1, 3, 3, 8), "w": (8,), "b": (8,)},
                   lambda t: EW.layer_norm(t["x"], t["out"], weight=t["w"], bias=t["b"], eps=1e-6)),
    "softmax": (EW, {"x": (2, 10), "out": (2, 10)}, lambda t: EW.softmax(t["x"], t["out"])),
    "lrn": (EW, {"x": (1, 2, 2, 8), "out": (1, 2, 2, 8)},
            lambda t: EW.lrn(t["x"], t["out"], size=5, alpha=1e-4, beta=0.75, k=2.0)),
    "add": (EW, {"a": (1, 2, 3, 8), "b": (1, 2, 3, 8), "c": (1, 2, 3, 8), "out": (1, 2, 3, 8)},
            lambda t: EW.add([t["a"], t["b"], t["c"]], t["out"], act=EW.ACT_RELU)),
    "scale_shift": (EW, {"x": (1, 2, 3, 8), "out": (1, 2, 3, 8), "s": (8,)},
                    lambda t: EW.scale_shift(t["x"], t["out"], scale=t["s"])),
    "mul": (EW, {"x": (2, 3, 3, 8), "gate": (2, 8), "out": (2, 3, 3, 8)},
            lambda t: EW.mul([t["x"], t["gate"]], t["out"], act=EW.ACT_SIGMOID)),
    "channel_shuffle": (EW, {"x": (1, 2, 2, 8), "out": (1, 2, 2, 8)},
                        lambda t: EW.channel_shuffle(t["x"], t["out"], 2)),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_pool_norm_elementwise_plans_are_reused_per_shape(case, launches):
    mod, shapes, call = OTHER_CASES[case]
    plans = mod._HOST_PLANS  # host.py's: every launcher's plans
    plans.clear()
    call(_fresh(shapes, 1))
    second = _fresh(shapes, 2)
    call(second)
    assert len(plans) == 1 and len(launches) == 2
    reused = _described(launches[1:], second)
    plans.clear()
    call(second)
    assert _described(launches[2:], second) == reused and "FOREIGN" not in repr(reused)
    assert not _tensors_in(list(plans.values()))
    call(_fresh({k: (3 * v[0], *v[1:]) if len(v) > 1 else v for k, v in shapes.items()}, 3))
    assert len(plans) == 2


def test_pool_and_norm_misuse_raise_every_time():
    x = torch.randn(1, 4, 4, 8)
    for _ in range(2):
        with pytest.raises(ValueError, match="N and C must match"):
            POOL.max_pool2d(x, torch.empty(1, 2, 2, 4), kernel=2, stride=2, pad=0)
        with pytest.raises(ValueError, match="give both weight and bias"):
            EW.layer_norm(x, torch.empty_like(x), weight=torch.ones(8))
        with pytest.raises(ValueError, match="at least 2 inputs"):
            EW.add([x], torch.empty_like(x))


def test_a_generated_programs_second_forward_plans_nothing_and_launches_the_same(launches):
    """resnet50 as compiled: every launch of a forward at a batch size is planned once."""
    import archdsl
    model = archdsl.compile(ROOT / "examples" / "resnet50.arch", device="cpu", input_shape=(3, 32, 32))
    program = model._module
    x = torch.randn(1, 3, 32, 32)
    model(x)
    first, kept = list(launches), dict(program._HOST_PLANS)
    assert len(first) == model.compiled.program.launches
    del launches[:]
    model(torch.randn(1, 3, 32, 32))
    assert program._HOST_PLANS == kept

    def strip(recorded):  # the same buffers every forward: compare pointers too
        return [(n, g, [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args],
                 {k: v.data_ptr() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
                for n, g, args, kw in recorded]

    assert strip(launches) == strip(first)
    model(torch.randn(2, 3, 32, 32))
    assert len(program._HOST_PLANS) > len(kept)


# ---- the chain launcher (kernels/conv2d_chain.py): the same plans ----------------------------------

CH = load_templates("conv2d.py", "conv2d_chain.py", module_name="archdsl_kernel_plans_chain")


def _chain_call(groups=1, **knobs):
    def call(t, **kw):
        CH.conv2d_chain(t["x"], t["w1"], t["w2"], t["out"], kernel=(3, 3), pad=(1, 1, 1, 1), bias1=t["b1"],
                        act1=CH.ACT_RELU, bias2=t["b2"], residual=t["res"], act2=CH.ACT_RELU, groups=groups,
                        **knobs, **kw)
    return call


_CHAIN_SHAPES = {"x": (1, 5, 5, 8), "w1": (72, 32), "w2": (32, 8), "out": (1, 5, 5, 8), "b1": (32,), "b2": (8,),
                 "res": (1, 5, 5, 8)}
CHAIN_CASES = {
    "chain": (_CHAIN_SHAPES, _chain_call()),
    "chain_split": (_CHAIN_SHAPES, _chain_call(split_n=2, split_mid=2)),  # a workspace and a reduce launch
    "chain_grouped": ({**_CHAIN_SHAPES, "w1": tuple(CH.pack_chain_weight(torch.zeros(32, 4, 3, 3), 2,
                                                                         torch.float32).shape)},
                      _chain_call(groups=2)),
}


@pytest.mark.parametrize("case", sorted(CHAIN_CASES))
def test_a_chain_call_reuses_its_plan_and_launches_what_a_fresh_plan_does(case, launches, monkeypatch):
    shapes, call = CHAIN_CASES[case]
    plans = []
    made = CH.chain_plan
    monkeypatch.setattr(CH, "chain_plan", lambda *a, **kw: plans.append(1) or made(*a, **kw))
    CH._HOST_PLANS.clear()
    first, second = _fresh(shapes, 1), _fresh(shapes, 2)
    call(first)
    call(second)                         # other tensors, same shapes: the plan is reused ...
    assert len(plans) == 1 and len(launches) % 2 == 0 and launches
    reused = _described(launches[len(launches) // 2:], second)
    CH._HOST_PLANS.clear()               # ... and launches what a fresh plan launches on them
    del launches[:]
    call(second)
    assert len(plans) == 2 and _described(launches, second) == reused
    assert {name for name, *_ in reused} == ({"_chain_kernel", "_conv_splitk_reduce_kernel"} if case == "chain_split" else
                                             {"_chain_grouped_kernel" if case == "chain_grouped" else "_chain_kernel"})
    assert not _tensors_in(list(CH._HOST_PLANS.values()))
    bigger = {k: (2 * v[0], *v[1:]) if k in ("x", "out", "res") else v for k, v in shapes.items()}
    call(_fresh(bigger, 3))              # another batch size: another plan
    assert len(plans) == 3


def test_a_reused_chain_plan_computes_what_a_fresh_one_does():
    t, reused = _reused_then_fresh(CH, *CHAIN_CASES["chain_split"])
    assert torch.equal(reused, t["out"])
    with pytest.raises(ValueError, match="residual shape"):  # misuse: the same error, planned or not
        CH.conv2d_chain(t["x"], t["w1"], t["w2"], t["out"], kernel=(3, 3), pad=(1, 1, 1, 1),
                        residual=torch.zeros(1, 5, 5, 9))
