"""Our networks against torchvision's, the models everybody knows the numbers of.

torchvision (random weights, no download) is imported through `tests/tv.py`, which makes its
pure-Python model code import on the CPU-only torch; install it with
`python -m pip install --no-deps torchvision==0.28.0` (the README's test command does).  Nothing
here skips: a torchvision that is missing or does not import fails every test with the reason.

1. Every listed torchvision model has the parameter count torchvision documents.
2. For each of them, the network of `examples/*.arch` that describes it (CASES): the state-dict
   keys and shapes our graph implies (conv / fc / bn, by the formulas in `implied_state`) are exactly
   torchvision's, and the implied parameter and buffer totals are what `archdsl.analyze` counts.
3. For the same pairs, `archdsl.to_torch(graph)` has torchvision's state dict, accepts it with
   `strict=True`, and computes the same outputs in float64 (eval mode, batch-norm statistics
   randomized so that eps and statistics matter).

The fast tier (`pytest -m "not slow"`) runs the forwards of the small models (SqueezeNets,
ResNet-18), which also load torchvision's state dict strictly; 1, 2 and the large models'
forwards (each over 3 s, or 0.5 s a case, when measured) are marked `slow`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.elaborate.loader import load_file
from tv import build_tv, random_tv


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# The parameter counts in torchvision's documentation (the weights' "num_params"); GoogLeNet's
# is the network without its two auxiliary classifiers, which only training uses.
DOCUMENTED_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
}

# torchvision builder arguments for the documented variant: GoogLeNet without its auxiliary
# heads (and with its explicit init, which otherwise warns).
TV_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class Case:
    """A torchvision model (with builder arguments) and the .arch network that describes it."""

    model: str
    file: str
    network: str
    params: dict = field(default_factory=dict)
    tv_kwargs: dict | None = None  # None: TV_KWARGS[model] or nothing

    @property
    def id(self) -> str:
        extra = [f"{k}={v}" for k, v in self.params.items()]
        return "-".join([self.model, self.file.removesuffix(".arch"), *extra])

    def kwargs(self) -> dict:
        return TV_KWARGS.get(self.model, {}) if self.tv_kwargs is None else self.tv_kwargs


# Every (torchvision model, .arch network) pair that is compared (each listed model at least once).
CASES = [
    Case("alexnet", "alexnet_tv.arch", "alexnet_tv"),
    Case("vgg16", "vgg16.arch", "vgg16"),
    *[Case(f"vgg{d}", "vgg.arch", "vgg", {"depth": d}) for d in (11, 13, 16, 19)],
    Case("googlenet", "googlenet_tv.arch", "googlenet_tv", {"aux": False}),
    Case("googlenet", "googlenet_tv.arch", "googlenet_tv", {"aux": True},
         tv_kwargs={"aux_logits": True, "init_weights": True}),
    Case("resnet50", "resnet50.arch", "resnet50"),
    *[Case(f"resnet{d}", "resnet.arch", "resnet", {"depth": d}) for d in (18, 34, 50, 101, 152)],
    Case("wide_resnet50_2", "resnet.arch", "resnet", {"depth": 50, "width_per_group": 128}),
    Case("resnext50_32x4d", "resnet.arch", "resnet", {"depth": 50, "groups": 32, "width_per_group": 4}),
    Case("wide_resnet50_2", "wide_resnet50_2.arch", "wide_resnet50_2"),
    Case("resnext50_32x4d", "resnext50_32x4d.arch", "resnext50_32x4d"),
    Case("densenet121", "densenet121.arch", "densenet121"),
    *[Case(f"densenet{d}", "densenet.arch", "densenet", {"depth": d}) for d in (121, 169, 201)],
    Case("squeezenet1_0", "squeezenet.arch", "squeezenet", {"version": 1.0}),
    Case("squeezenet1_1", "squeezenet.arch", "squeezenet", {"version": 1.1}),
]
assert {c.model for c in CASES} == DOCUMENTED_PARAMS.keys()
CASE_IDS = [c.id for c in CASES]


def load_ours(case: Case, input_shape=None) -> archdsl.Graph:
    path = EXAMPLES / case.file
    where = "tests/test_torchvision_compat.py (CASES) expects"
    if not path.is_file():
        pytest.fail(f"{where} {path}, which does not exist", pytrace=False)
    own = [n.name for n in load_file(path).networks if Path(n.loc.file).resolve() == path.resolve()]
    if case.network not in own:
        pytest.fail(f"{where} a network `{case.network}` in {case.file}; it has: {', '.join(own) or 'none'}",
                    pytrace=False)
    try:
        return archdsl.load(path, case.network, case.params, input_shape)
    except archdsl.ArchError as exc:  # e.g. a parameter the network does not have
        reason = str(exc)
    pytest.fail(f"{where} {case.network}({case.params}) to elaborate: {reason}", pytrace=False)


def implied_state(g: archdsl.Graph) -> tuple[dict[str, tuple[int, ...]], int, int]:
    """State-dict key -> shape as PyTorch's Conv2d / Linear / BatchNorm would hold them, with
    the parameter and buffer element counts."""
    state: dict[str, tuple[int, ...]] = {}
    n_params = n_buffers = 0
    for n, d in g.walk():
        a, op = d["attrs"], d["op"]
        ins = [g.shape(x) for x in g.args(n)]
        params: dict[str, tuple[int, ...]] = {}
        buffers: dict[str, tuple[int, ...]] = {}
        if op == "conv":
            params["weight"] = (a["out"], ins[0][0] // a["groups"], *a["kernel"])
            if a["bias"]:
                params["bias"] = (a["out"],)
        elif op == "fc":
            params["weight"] = (a["out"], ins[0][0])
            if a["bias"]:
                params["bias"] = (a["out"],)
        elif op == "bn":
            c = ins[0][0]
            if a["affine"]:
                params["weight"] = params["bias"] = (c,)
            buffers = {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}
        for k, shape in {**params, **buffers}.items():
            state[f"{n}.{k}"] = shape
        n_params += sum(_numel(s) for s in params.values())
        n_buffers += sum(_numel(s) for s in buffers.values())
    return state, n_params, n_buffers


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def diff(ours: dict, theirs: dict, limit: int = 10) -> str:
    missing = [k for k in theirs if k not in ours]
    extra = [k for k in ours if k not in theirs]
    wrong = [f"{k}: ours {ours[k]}, torchvision {theirs[k]}" for k in ours if k in theirs and ours[k] != theirs[k]]
    lines = []
    for title, items in (("torchvision has, we lack", missing), ("we have, torchvision lacks", extra),
                         ("shapes differ", wrong)):
        if items:
            lines.append(f"{len(items)} {title}: " + "; ".join(items[:limit]) + (" ..." if len(items) > limit else ""))
    return "\n".join(lines)


# ---- the shim ----------------------------------------------------------------------------------


def test_torchvision_imports_on_this_torch(tvm):
    import torchvision

    import tv

    assert tvm is sys.modules["torchvision.models"]
    for model in DOCUMENTED_PARAMS:
        assert callable(getattr(tvm, model)), model
    if tv.compiled_ops_error is None:  # a torch that torchvision's compiled ops load into
        assert torchvision.extension._has_ops()
    else:  # the CPU torch: the compiled ops are absent and say so when called
        assert not torchvision.extension._has_ops()
        assert not hasattr(sys.modules["torchvision._meta_registrations"], "meta_nms")  # tv.py's stand-in
        assert torch.version.cuda is None, f"CUDA torch {torch.__version__}, yet: {tv.compiled_ops_error}"
        with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
            torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)


# ---- 1. parameter counts ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", list(DOCUMENTED_PARAMS))
def test_documented_param_count(tvm, model):
    m = build_tv(tvm, model, TV_KWARGS.get(model, {}), "meta")  # shapes only: no memory, no initialization time
    assert sum(p.numel() for p in m.parameters()) == DOCUMENTED_PARAMS[model]


# ---- 2. state-dict keys and shapes, from the graph alone ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_matches_torchvision(tvm, case):
    g = load_ours(case)
    ours, n_params, n_buffers = implied_state(g)
    summary = archdsl.analyze(g)
    # The formulas above cover every op that has weights: the totals agree with the analysis.
    assert (n_params, n_buffers) == (summary.params, summary.buffers), \
        "a node holds weights that implied_state does not know of"
    tv_model = build_tv(tvm, case.model, case.kwargs(), "meta")
    theirs = shapes(tv_model)
    assert ours == theirs, f"{case.id} vs torchvision.models.{case.model}:\n{diff(ours, theirs)}"
    assert summary.params == sum(p.numel() for p in tv_model.parameters())


# ---- 3. the PyTorch backend, with torchvision's weights ------------------------------------------------


# A float64 forward of a large model takes seconds (VGGs ~25 s on a busy 2-core machine, ResNets and
# DenseNets 5-14 s): those are the slow tier; the models measured under 3 s stay in the fast one.
FAST_FORWARDS = {"squeezenet1_0", "squeezenet1_1", "resnet18"}
FORWARD_CASES = [c if c.model in FAST_FORWARDS else pytest.param(c, marks=pytest.mark.slow, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=CASE_IDS)
def test_to_torch_computes_what_torchvision_does(tvm, case, one_thread):
    gen = torch.Generator().manual_seed(0)
    theirs = random_tv(tvm, case.model, case.kwargs(), gen)
    size = 64  # small and fast, yet every last convolution still sees a map of 2x2 or more
    g = load_ours(case, input_shape=(3, size, size))
    with torch.device("meta"):  # no memory and no initialization: the weights are torchvision's
        ours = archdsl.to_torch(g)
    assert shapes(ours) == implied_state(g)[0], "to_torch's state dict differs from the graph's implied one"
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    ours.eval()
    on_meta = [k for k, v in [*ours.named_parameters(), *ours.named_buffers()] if v.is_meta]
    assert not on_meta, f"to_torch made tensors that are not in the state dict: {on_meta[:5]}"
    x = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = theirs(x)
        got = ours(x)
    if isinstance(got, tuple):  # auxiliary outputs follow the main one
        got = got[0]
    assert got.shape == want.shape == (2, 1000)
    # Deep residual stacks grow the scale by orders of magnitude: compare relative to it,
    # after making sure the output is not degenerate (the two samples must differ).
    scale = want.abs().max().item()
    assert torch.isfinite(want).all() and scale > 0 and (want[0] - want[1]).abs().max() > 1e-3 * scale, \
        f"degenerate torchvision output (max |y| = {scale:g}): the comparison would prove little"
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * scale)
