"""Fuzzing the back half: random valid networks through the passes, the planner and the kernels.

`test_fuzz.py` throws text at the front end; this file builds networks that elaborate, out of
the pieces the passes look for, mixed at random: convs of every shape (depthwise, grouped,
strided, padded) with and without batch norm and each activation; residual blocks with and
without a projection shortcut; pre-activation (bn -> relu -> conv); squeeze-and-excitation
(`mul` by a gate, then a 1x1 conv); concats, channel shuffles and chunks (ShuffleNet); ConvNeXt's
channels-last stretch (permute, layer norm, linears, gelu, layer scale, stochastic depth); channel
layer norms, some read by a 1x1 conv; pooling; U-Net-like skips (a map joined with a pooled,
convolved and upsampled copy); a classifier head, sometimes with dropout.  Over
400 networks every pass of the pipeline fires (the rarest, the layer norm folded into a GEMM, in
32).  For each:

- the optimized graph's PyTorch reference computes what the original's does, in float64, with
  EVERY parameter randomized (batch norm statistics and affines, biases, layer norms, layer
  scales: at their defaults a wrongly folded scale or shift would hide);
- the program generates, and its memory plan keeps every tensor's memory to itself while it is
  live (`test_plan.check_invariants`); the performance model costs each launch it makes;
- (slow) the compiled program, under Triton's interpreter, matches the float64 reference.

Hypothesis runs derandomized, so a failure repeats; it prints the network's source.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.codegen.emit import generate
from archdsl.passes import fused_state_dict, optimize
from test_plan import check_invariants

FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ACTS = ["relu", "relu6", "sigmoid", "tanh", "hardsigmoid", "hardswish", "silu", "gelu", 'gelu(approximate="tanh")']

BLOCKS = """
block se(squeeze, gate) {
    mul {
        @in
        {
            global_avgpool -> conv(squeeze, 1) -> relu -> conv(in.c, 1)
            if gate == "hard" { hardsigmoid } else { sigmoid }
        }
    }
}
block se_sigmoid(squeeze) {
    mul { @in; global_avgpool -> conv(squeeze, 1) -> silu -> conv(in.c, 1) -> sigmoid }
}
block shuffle_unit(c) {
    concat {
        chunk(2, 0)
        chunk(2, 1) -> (conv(c // 2, 1, bias=false) -> bn -> relu
                        -> conv(c // 2, 3, pad=1, groups=c // 2, bias=false) -> bn)
    }
    channel_shuffle(2)
}
block convnext(scale) {
    residual {
        (conv(in.c, 7, pad=3, groups=in.c) -> permute((1, 2, 0)) -> layer_norm(eps=1e-6, axis=-1)
         -> linear(2 * in.c) -> gelu -> linear(in.c) -> permute((2, 0, 1)))
        layer_scale(scale)
        stochastic_depth(0.1)
    }
}
"""


class Net:
    """The network being written: its statements and the current tensor's channels and size."""

    def __init__(self, channels: int, size: int):
        self.lines: list[str] = []
        self.c, self.size = channels, size

    def add(self, line: str, c: int | None = None, size: int | None = None) -> None:
        self.lines.append(line)
        self.c = c if c is not None else self.c
        self.size = size if size is not None else self.size


def _act(draw, allow_none: bool = True) -> str:
    act = draw(st.sampled_from(ACTS + (["none"] * 3 if allow_none else [])))
    return "" if act == "none" else f" -> {act}"


def _conv(draw, net: Net) -> None:
    c = net.c
    k = draw(st.sampled_from([1, 3, 3, 5]))
    stride = draw(st.sampled_from([1, 1, 2])) if net.size >= 4 else 1
    pad = draw(st.sampled_from([0, k // 2, k // 2])) if net.size + 2 * (k // 2) >= k else k // 2
    kind = draw(st.sampled_from(["plain", "plain", "depthwise", "grouped"]))
    if kind == "depthwise":
        out, groups = c * draw(st.sampled_from([1, 1, 2])), c
    elif kind == "grouped" and c % 2 == 0:
        out, groups = 2 * draw(st.integers(2, 5)), 2
    else:
        out, groups = draw(st.integers(3, 10)), 1
    size = (net.size + 2 * pad - k) // stride + 1
    if size < 1:
        pad, size = k // 2, (net.size + 2 * (k // 2) - k) // stride + 1
    bias = draw(st.booleans())
    bn = " -> bn" if draw(st.booleans()) else ""
    net.add(f"conv({out}, {k}, stride={stride}, pad={pad}, groups={groups}, bias={'true' if bias else 'false'})"
            f"{bn}{_act(draw)}", out, size)


def _residual(draw, net: Net) -> None:
    c = net.c
    act = _act(draw, allow_none=False)
    if draw(st.booleans()):  # a projection shortcut: the block changes the width
        out = draw(st.integers(3, 10))
        body = f"conv({c}, 3, pad=1, bias=false) -> bn{act} -> conv({out}, 1, bias=false) -> bn"
        net.add(f"residual {{ {body} }} shortcut {{ conv({out}, 1, bias=false) -> bn }}{_act(draw)}", out)
    else:
        body = f"conv({c}, 3, pad=1, bias=false) -> bn{act} -> conv({c}, 3, pad=1, bias=false) -> bn"
        net.add(f"residual {{ {body} }}{_act(draw)}")


def _preact(draw, net: Net) -> None:
    out = draw(st.integers(3, 10))
    net.add(f"bn -> relu -> conv({out}, 3, pad=1)", out)


def _se(draw, net: Net) -> None:
    squeeze = max(1, net.c // 2)
    if draw(st.booleans()):
        net.add(f"se({squeeze}, \"{draw(st.sampled_from(['hard', 'plain']))}\")")
    else:
        net.add(f"se_sigmoid({squeeze})")
    if draw(st.booleans()):  # the projection that may apply the gate while it loads
        out = draw(st.integers(3, 10))
        net.add(f"conv({out}, 1, bias=false) -> bn", out)


def _shuffle(draw, net: Net) -> None:
    if net.c % 2:
        net.add(f"conv({net.c + 1}, 1)", net.c + 1)
    branch = draw(st.sampled_from(["unit", "concat"]))
    if branch == "unit":
        net.add(f"shuffle_unit({net.c})")
    else:
        a, b = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        total = a + b
        groups = 2 if total % 2 == 0 else 1
        net.add(f"concat {{ conv({a}, 1) -> relu; conv({b}, 3, pad=1) -> bn }}"
                + (f" -> channel_shuffle({groups})" if groups > 1 else ""), total)


def _convnext(draw, net: Net) -> None:
    scale = draw(st.sampled_from([0.5, 1.0, 1e-6]))
    net.add(f"convnext({scale})")


def _norm(draw, net: Net) -> None:
    if draw(st.booleans()):  # a channel layer norm read by a 1x1 GEMM: the GEMM may fold it in
        out = draw(st.integers(3, 10))
        net.add(f"layer_norm(eps=1e-6) -> conv({out}, 1){_act(draw)}", out)
    else:
        net.add(draw(st.sampled_from(["layer_norm(eps=1e-6)", "bn", "bn -> relu"])) + _act(draw))


def _pool(draw, net: Net) -> None:
    if net.size >= 2 and draw(st.booleans()):
        net.add("maxpool(2)", size=net.size // 2)
    else:
        net.add(draw(st.sampled_from(["avgpool(3, stride=1, pad=1)", "maxpool(3, stride=1, pad=1)"])))


def _fork(draw, net: Net) -> None:
    a, b = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    k = draw(st.sampled_from([1, 3]))  # two 1x1 convs of one tensor: one sibling GEMM
    net.add(f"concat {{ conv({a}, 1){_act(draw)}; conv({b}, {k}, pad={k // 2}){_act(draw)}; "
            "maxpool(3, stride=1, pad=1) }", a + b + net.c)


def _skip(draw, net: Net) -> None:
    """A U-Net / feature-pyramid skip: the map joined with a coarser copy of itself upsampled back
    (an odd-sized map: a finer copy pooled back), concatenated (the upsample writes its slice of
    the concat) or added."""
    concat = draw(st.booleans())
    a = draw(st.integers(2, 6)) if concat else net.c
    pool = draw(st.sampled_from(["maxpool(2)", "avgpool(2)"]))
    conv = f"conv({a}, 3, pad=1){_act(draw)}"
    branch = f"{pool} -> {conv} -> upsample(2)" if net.size % 2 == 0 else f"upsample(2) -> {conv} -> {pool}"
    if concat:
        net.add(f"concat {{ identity; {branch} }}", net.c + a)
    else:
        net.add(f"add {{ identity; {branch} }}")


UNITS = [_conv, _conv, _residual, _preact, _se, _shuffle, _convnext, _norm, _pool, _fork, _skip, _skip]


@st.composite
def networks(draw) -> str:
    """The source of one random network (valid: every unit keeps the shapes consistent)."""
    first, size = draw(st.integers(2, 6)), draw(st.sampled_from([5, 6, 8, 9]))
    net = Net(first, size)
    stem = draw(st.integers(4, 8))
    net.add(f"conv({stem}, 3, pad=1) -> bn -> relu", stem)
    for _ in range(draw(st.integers(1, 5))):
        draw(st.sampled_from(UNITS))(draw, net)
    if draw(st.booleans()):
        dropout = " -> dropout(0.2)" if draw(st.booleans()) else ""
        net.add(f"global_avgpool -> flatten{dropout} -> fc({draw(st.integers(2, 7))}){_act(draw)}")
    body = "\n".join(f"    {line}" for line in net.lines)
    return f"{BLOCKS}\nnetwork fuzz {{\n    input {first} x {size} x {size}\n{body}\n}}\n"


def randomize_all(state: dict, seed: int = 0) -> dict:
    """Every float parameter and buffer random: variances positive, everything else around 0..1."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t
        elif name.endswith("running_var"):
            out[name] = torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5
        elif name.endswith(("running_mean", ".bias")):
            out[name] = torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.2
        elif t.dim() <= 1 or name.endswith("layer_scale"):  # norm affines, layer scales: either sign
            out[name] = (torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5) * \
                torch.where(torch.rand(t.shape, generator=g) < 0.2, -1.0, 1.0).double()
        else:
            fan_in = math.prod(t.shape[1:]) or 1
            out[name] = torch.randn(t.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
    return out


def _reference(graph, state: dict | None = None):
    model = archdsl.to_torch(graph).double().eval()
    model.load_state_dict(state if state is not None else randomize_all(model.state_dict()), strict=True)
    return model


def _outputs(model, xs):
    with torch.no_grad():
        out = model(*xs)
    return out if isinstance(out, tuple) else (out,)


def check_back_half(source: str) -> None:
    """Passes preserve the function (float64, every parameter random); the program generates;
    its plan is sound; the performance model costs exactly the launches it makes."""
    from archdsl.runtime.perfmodel import Ceilings, predict_schedule

    g = archdsl.loads(source, filename="fuzz.arch")
    archdsl.analyze(g)
    reference = _reference(g)
    o = optimize(g)
    optimized = _reference(o.graph, fused_state_dict(o.graph, reference.state_dict()))
    torch.manual_seed(0)
    xs = [torch.randn(2, *g.shape(n), dtype=torch.float64) for n in g.inputs]
    for got, want in zip(_outputs(optimized, xs), _outputs(reference, xs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    program = generate(o.graph, "bfloat16")
    check_invariants(program.plan)
    preds = predict_schedule(program.schedule, 2, "bfloat16", Ceilings.h200_datasheet())
    assert len(preds) == sum(1 for s in program.steps if s.kernel)


@settings(max_examples=25, **FUZZ)
@given(networks())
def test_random_networks_survive_the_passes_and_the_planner(source):
    check_back_half(source)


@pytest.mark.slow
@settings(max_examples=400, **FUZZ)
@given(networks())
def test_random_networks_survive_the_passes_and_the_planner_at_length(source):
    check_back_half(source)


@pytest.mark.slow
@settings(max_examples=60, **FUZZ)
@given(networks())
def test_random_networks_compiled_match_the_reference(source):
    """The generated Triton program under the interpreter, fp32, against float64."""
    model = archdsl.compile(source=source, device="cpu")
    state = randomize_all(model.state_dict(), seed=1)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
    reference = _reference(model.graph, state)
    torch.manual_seed(1)
    xs = [torch.randn(2, *model.graph.shape(n)) for n in model.graph.inputs]
    outs = model(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for got, want in zip(outs, _outputs(reference, [x.double() for x in xs]), strict=True):
        err = ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()
        assert err <= 1e-4, f"relative error {err:.2e}"
