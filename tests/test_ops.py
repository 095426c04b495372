"""The op registry against PyTorch: shapes, parameters, buffers, MACs, receptive fields, activations.

Every number here comes from PyTorch itself (output shapes of the real functional ops, `numel` of
real modules' parameters and buffers, `FlopCounterMode`, gradients of hand-built models) or from
a formula written out in the test; nothing is pasted.  Configurations are drawn from seeded
`random.Random` generators, so a failure is reproducible and its message prints the `.arch` text.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import archdsl
from archdsl import ArchError, analyze
from archdsl.ops import OPS
from archdsl.ops.modern import MODERN_OPS

N_RANDOM = 300  # configurations per randomized property


# ---- helpers -----------------------------------------------------------------------------------


def arch(v) -> str:
    """A Python value as `.arch` source."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "(" + ", ".join(arch(i) for i in v) + ")"
    return repr(v)


def call(op: str, *pos, **kw) -> str:
    args = [arch(p) for p in pos] + [f"{k}={arch(v)}" for k, v in kw.items() if v is not None]
    return f"{op}({', '.join(args)})" if args else op


def net(shape, body: str) -> str:
    c, h, w = shape
    return f"network t {{\n    input {c} x {h} x {w}\n    {body}\n}}"


def build(shape, body: str):
    return archdsl.loads(net(shape, body))


def our_shape(shape, body: str):
    """The output shape of the network's last node, or None where elaboration raises ArchError."""
    try:
        g = build(shape, body)
    except ArchError:
        return None
    return g.shape(g.outputs[-1])


def torch_shape(fn):
    """The per-sample output shape of a torch computation, or None where torch rejects it."""
    try:
        with torch.no_grad():
            return tuple(fn().shape[1:])
    except (RuntimeError, ValueError):
        return None


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


def rand_pair(rng, lo, hi):
    return rng.randint(lo, hi) if rng.random() < 0.5 else (rng.randint(lo, hi), rng.randint(lo, hi))


def node_of(g, op):
    """The last node of op `op` in the graph."""
    return [n for n, d in g.walk() if d["op"] == op][-1]


def row(summary, name):
    return next(r for r in summary.layers if r.name == name)


def compare(cases):
    """`cases` are (description, ours, torch's); fail listing every disagreement."""
    bad = [(d, o, t) for d, o, t in cases if o != t]
    msg = "\n\n".join(f"{d}\n  ours:  {o}\n  torch: {t}" for d, o, t in bad[:8])
    assert not bad, f"{len(bad)} of {len(cases)} disagree with PyTorch:\n{msg}"


def padding4(pad):
    """A conv `pad` argument as (top, bottom, left, right)."""
    if isinstance(pad, int):
        return (pad,) * 4
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    return pad


# ---- 1. shapes ---------------------------------------------------------------------------------


def rand_conv(rng):
    groups = rng.choice([1, 1, 1, 2, 3, 4])
    cin, cout = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    if rng.random() < 0.1:  # channel counts that `groups` does not divide
        if rng.random() < 0.5:
            cin += 1
        else:
            cout += 1
    shape = (cin, rng.randint(1, 24), rng.randint(1, 24))
    kind = rng.randrange(3)
    pad = (rng.randint(0, 4) if kind == 0 else tuple(rng.randint(0, 4) for _ in range(2 * kind)))
    kw = dict(stride=rand_pair(rng, 1, 4), pad=pad, dilation=rand_pair(rng, 1, 3), groups=groups,
              bias=rng.random() < 0.5)
    return shape, cout, rand_pair(rng, 1, 6), kw


def valid_convs(rng, count):
    """`count` random convolutions that elaborate: (shape, cout, kernel, kw, body, graph)."""
    found = 0
    while found < count:
        shape, cout, kernel, kw = rand_conv(rng)
        body = call("conv", cout, kernel, **kw)
        try:
            g = build(shape, body)
        except ArchError:
            continue
        found += 1
        yield shape, cout, kernel, kw, body, g


def torch_conv(shape, cout, kernel, kw, weight=torch.zeros):
    """F.pad (per-side padding, which Conv2d does not have) + F.conv2d on a batch of one."""
    cin, h, w = shape
    (kh, kwd), g = pair(kernel), kw["groups"]
    t, b, l, r = padding4(kw["pad"])
    x = F.pad(torch.randn(1, cin, h, w), (l, r, t, b))
    wt = weight(cout, max(cin // g, 1), kh, kwd)
    bias = torch.zeros(cout) if kw["bias"] else None
    return F.conv2d(x, wt, bias, stride=pair(kw["stride"]), padding=0, dilation=pair(kw["dilation"]), groups=g)


def test_conv_shapes_match_torch():
    rng = random.Random(1)
    cases, rejected = [], 0
    for _ in range(N_RANDOM):
        shape, cout, kernel, kw = rand_conv(rng)
        body = call("conv", cout, kernel, **kw)
        ref = torch_shape(lambda: torch_conv(shape, cout, kernel, kw))
        rejected += ref is None
        cases.append((net(shape, body), our_shape(shape, body), ref))
    compare(cases)
    assert 10 < rejected < N_RANDOM // 2, "the generator should mix valid and invalid convolutions"


def test_conv_symmetric_padding_is_conv2d_padding():
    """`pad=p` and `pad=(ph, pw)` mean Conv2d's own `padding`, with no F.pad involved."""
    rng = random.Random(2)
    cases = []
    for _ in range(100):
        cin, h, w = rng.randint(1, 4), rng.randint(3, 20), rng.randint(3, 20)
        k, s, d, p = rand_pair(rng, 1, 3), rand_pair(rng, 1, 3), rand_pair(rng, 1, 2), rand_pair(rng, 0, 3)
        body = call("conv", 5, k, stride=s, pad=p, dilation=d)
        ref = torch_shape(lambda: nn.Conv2d(cin, 5, k, s, p, d)(torch.randn(1, cin, h, w)))
        cases.append((net((cin, h, w), body), our_shape((cin, h, w), body), ref))
    compare(cases)


@pytest.mark.parametrize("cin,cout,groups", [(6, 4, 4), (4, 6, 4), (5, 5, 2), (3, 3, 3), (8, 4, 8)])
def test_conv_groups_divisibility(cin, cout, groups):
    body = call("conv", cout, 3, pad=1, groups=groups)
    ref = torch_shape(lambda: nn.Conv2d(cin, cout, 3, padding=1, groups=groups)(torch.randn(1, cin, 8, 8))) \
        if cin % groups == 0 and cout % groups == 0 else None
    if ref is None:  # nn.Conv2d refuses to be built; F.conv2d refuses to run
        with pytest.raises(ValueError):
            nn.Conv2d(cin, cout, 3, groups=groups)
        assert torch_shape(lambda: torch_conv((cin, 8, 8), cout, 3, dict(stride=1, pad=1, dilation=1,
                                                                          groups=groups, bias=True))) is None
    assert our_shape((cin, 8, 8), body) == ref


def pool_config(rng, op):
    shape = (rng.randint(1, 3), rng.randint(1, 20), rng.randint(1, 20))
    kernel = rand_pair(rng, 1, 5)
    stride = None if rng.random() < 0.2 else rand_pair(rng, 1, 4)
    # pads up to half the kernel, and now and then one more (which PyTorch rejects)
    pad = tuple(rng.randint(0, k // 2 + (rng.random() < 0.1)) for k in pair(kernel))
    kw = dict(stride=stride, pad=pad if pad[0] != pad[1] else pad[0], ceil_mode=rng.random() < 0.6)
    if op == "maxpool":
        kw["dilation"] = rand_pair(rng, 1, 3)
    else:
        kw["count_include_pad"] = rng.random() < 0.5
    return shape, kernel, kw


def torch_pool(op, shape, kernel, kw):
    x = torch.randn(1, *shape)
    stride = pair(kw["stride"]) if kw["stride"] is not None else None
    if op == "maxpool":
        return F.max_pool2d(x, pair(kernel), stride, pair(kw["pad"]), pair(kw["dilation"]), kw["ceil_mode"])
    return F.avg_pool2d(x, pair(kernel), stride, pair(kw["pad"]), kw["ceil_mode"], kw["count_include_pad"])


def naive_ceil(size, k, s, p, d):
    """ceil((size + 2p - d(k-1) - 1) / s) + 1: the count *before* PyTorch drops a window in the padding."""
    return -(-(size + 2 * p - d * (k - 1) - 1) // s) + 1


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pool_shapes_match_torch(op):
    rng = random.Random(3 if op == "maxpool" else 4)
    cases, rejected, dropped = [], 0, 0
    for _ in range(N_RANDOM):
        shape, kernel, kw = pool_config(rng, op)
        body = call(op, kernel, **kw)
        ref = torch_shape(lambda: torch_pool(op, shape, kernel, kw))
        rejected += ref is None
        if ref is not None and kw["ceil_mode"]:
            s = pair(kw["stride"] if kw["stride"] is not None else kernel)
            d = pair(kw.get("dilation", 1))
            naive = tuple(naive_ceil(shape[i + 1], pair(kernel)[i], s[i], pair(kw["pad"])[i], d[i]) for i in (0, 1))
            dropped += naive != ref[1:]
        cases.append((net(shape, body), our_shape(shape, body), ref))
    compare(cases)
    assert dropped >= 5, "the generator should hit ceil_mode's dropped last window"
    assert 10 < rejected < N_RANDOM // 2


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
@pytest.mark.parametrize("size,k,s,p,expected", [
    (4, 2, 3, 1, 2),  # ceil gives 3, but the third window would start at 6 ≥ 4 + 1: dropped
    (5, 3, 2, 1, 3),  # ceil: (5+2-3)/2 = 2 -> 3 windows; the last starts at 4 < 6: kept
    (6, 2, 4, 1, 2),  # ceil: 3; third would start at 8 ≥ 7: dropped
    (7, 3, 3, 0, 3),  # ceil: 3; third starts at 6 < 7: kept (partly outside the input)
    (1, 1, 2, 0, 1),
    (8, 2, 2, 0, 4),  # exact fit: ceil == floor
    (2, 2, 5, 1, 1),
])
def test_pool_ceil_mode_edges(op, size, k, s, p, expected):
    kw = dict(stride=s, pad=p, ceil_mode=True)
    pool = F.max_pool2d if op == "maxpool" else F.avg_pool2d
    ref = torch_shape(lambda: pool(torch.randn(1, 2, size, size + 1), k, stride=s, padding=p, ceil_mode=True))
    assert ref[1] == expected  # the table above is PyTorch's behaviour
    assert our_shape((2, size, size + 1), call(op, k, **kw)) == ref


@pytest.mark.parametrize("op,k,p,d", [(op, k, p, d) for k, p, d in [(3, 2, 1), (4, 3, 1), (1, 1, 1), (3, 1, 1),
                                                                      (4, 2, 1), (2, 2, 3), (3, 2, 2), (2, 1, 3)]
                                        for op in ("maxpool", "avgpool") if op == "maxpool" or d == 1])
def test_pool_padding_limit(op, k, p, d):
    """PyTorch: pad ≤ kernel_size / 2 of the *undilated* kernel (and of the dilated one)."""
    kw = dict(stride=1, pad=p, ceil_mode=False, **({"dilation": d} if op == "maxpool" else {"count_include_pad": True}))
    ref = torch_shape(lambda: torch_pool(op, (1, 16, 16), k, kw))
    assert (ref is None) == (2 * p > k)  # the rule, as PyTorch applies it
    assert our_shape((1, 16, 16), call(op, k, **kw)) == ref


def test_global_avgpool_flatten_fc_lrn_softmax_shapes():
    rng = random.Random(5)
    cases = []
    for _ in range(60):
        shape = (rng.randint(1, 8), rng.randint(1, 12), rng.randint(1, 12))
        x = torch.randn(1, *shape)
        cases.append((f"global_avgpool {shape}", our_shape(shape, "global_avgpool"),
                      torch_shape(lambda: F.adaptive_avg_pool2d(x, 1))))
        cases.append((f"flatten {shape}", our_shape(shape, "flatten"), torch_shape(lambda: torch.flatten(x, 1))))
        out = rng.randint(1, 20)
        n = shape[0] * shape[1] * shape[2]
        cases.append((f"flatten -> fc({out}) {shape}", our_shape(shape, f"flatten -> fc({out})"),
                      torch_shape(lambda: F.linear(torch.flatten(x, 1), torch.zeros(out, n), torch.zeros(out)))))
        size = rng.randint(1, 7)
        cases.append((f"lrn({size}) {shape}", our_shape(shape, f"lrn({size})"),
                      torch_shape(lambda: F.local_response_norm(x, size))))
        cases.append((f"softmax {shape}", our_shape(shape, "softmax"), torch_shape(lambda: F.softmax(x, 1))))
    compare(cases)


def test_ops_that_need_a_map_or_a_vector_raise_arch_error():
    # torch rejects LRN of a flat (N, F) batch
    assert torch_shape(lambda: F.local_response_norm(torch.randn(1, 10), 3)) is None
    assert our_shape((2, 5, 1), "flatten -> lrn(3)") is None
    # Linear on a map would act on the last axis only; archdsl asks for an explicit flatten
    assert our_shape((2, 5, 5), "fc(3)") is None
    for op in ("conv(4, 1)", "maxpool(2)", "avgpool(2)", "global_avgpool"):
        assert our_shape((2, 4, 4), f"flatten -> {op}") is None, op


def test_concat_and_add_shapes_match_torch():
    rng = random.Random(6)
    cases = []
    for _ in range(100):
        shape = (rng.randint(1, 4), rng.randint(2, 12), rng.randint(2, 12))
        branches = []  # (.arch text, torch function)
        for _ in range(rng.randint(2, 4)):
            c, k = rng.randint(1, 5), rng.choice([1, 3, 5])
            p = rng.choice([k // 2, k // 2, 0])  # sometimes "valid": spatial sizes then disagree
            branches.append((call("conv", c, k, pad=p),
                             lambda x, c=c, k=k, p=p: F.conv2d(x, torch.zeros(c, x.shape[1], k, k), padding=p)))
        if rng.random() < 0.3:
            branches.append(("identity", lambda x: x))
        x = torch.randn(1, *shape)
        body = "concat { " + "; ".join(b for b, _ in branches) + " }"
        cases.append((net(shape, body), our_shape(shape, body),
                      torch_shape(lambda: torch.cat([f(x) for _, f in branches], 1))))
        c = rng.randint(1, 4)  # add: one channel count, spatial sizes that may disagree
        same = []
        for k in rng.choices([1, 3, 5], k=rng.randint(2, 3)):
            p = rng.choice([k // 2, k // 2, 0])
            same.append((call("conv", c, k, pad=p),
                         lambda x, k=k, p=p: F.conv2d(x, torch.zeros(c, x.shape[1], k, k), padding=p)))
        if c == shape[0] and rng.random() < 0.5:
            same.append(("identity", lambda x: x))
        body = "add { " + "; ".join(b for b, _ in same) + " }"
        ref = torch_shape(lambda: torch.stack([f(x) for _, f in same]).sum(0))  # stack: equal shapes, no broadcast
        cases.append((net(shape, body), our_shape(shape, body), ref))
    compare(cases)
    assert any(t is None for _, _, t in cases) and any(t is not None for _, _, t in cases)


# ---- 2. parameters and buffers -----------------------------------------------------------------


def torch_counts(module):
    return (sum(p.numel() for p in module.parameters()), sum(b.numel() for b in module.buffers()))


def our_counts(shape, body, op):
    g = build(shape, body)
    r = row(analyze(g), node_of(g, op))
    return (r.params, r.buffers)


def test_conv_params_match_torch():
    rng = random.Random(7)
    cases = []
    while len(cases) < 150:
        shape, cout, kernel, kw = rand_conv(rng)
        if shape[0] % kw["groups"] or cout % kw["groups"]:
            continue
        shape = (shape[0], 30, 30)  # large enough for every kernel
        m = nn.Conv2d(shape[0], cout, pair(kernel), pair(kw["stride"]), 0, pair(kw["dilation"]), kw["groups"],
                      kw["bias"])
        body = call("conv", cout, kernel, **kw)
        cases.append((net(shape, body), our_counts(shape, body, "conv"), torch_counts(m)))
    compare(cases)


def test_fc_and_bn_params_and_buffers_match_torch():
    rng = random.Random(8)
    cases = []
    for _ in range(60):
        shape = (rng.randint(1, 16), rng.randint(1, 6), rng.randint(1, 6))
        n = shape[0] * shape[1] * shape[2]
        out, bias, affine = rng.randint(1, 50), rng.random() < 0.5, rng.random() < 0.5
        body = f"flatten -> {call('fc', out, bias=bias)}"
        cases.append((body, our_counts(shape, body, "fc"), torch_counts(nn.Linear(n, out, bias))))
        body = call("bn", affine=affine)
        cases.append((f"{body} {shape}", our_counts(shape, body, "bn"),
                      torch_counts(nn.BatchNorm2d(shape[0], affine=affine))))
        body = f"flatten -> {call('bn', eps=0.001, affine=affine)}"
        cases.append((f"{body} {shape}", our_counts(shape, body, "bn"), torch_counts(nn.BatchNorm1d(n, affine=affine))))
    compare(cases)
    # the buffers are running_mean, running_var and num_batches_tracked
    assert {name for name, _ in nn.BatchNorm2d(4).named_buffers()} == {"running_mean", "running_var",
                                                                        "num_batches_tracked"}


@pytest.mark.parametrize("body,module", [
    ("lrn(5)", nn.LocalResponseNorm(5)),
    ("maxpool(3, stride=2, pad=1)", nn.MaxPool2d(3, 2, 1)),
    ("avgpool(2)", nn.AvgPool2d(2)),
    ("global_avgpool", nn.AdaptiveAvgPool2d(1)),
    ("relu", nn.ReLU(inplace=True)),
    ("dropout(0.3)", nn.Dropout(0.3)),
    ("softmax", nn.Softmax(1)),
    ("identity", nn.Identity()),
    ("flatten", nn.Flatten()),
    ("drop_path(0.2)", nn.Identity()),  # torch has no module; drop_path has no state either
])
def test_ops_without_state(body, module):
    op = body.split("(")[0]
    assert our_counts((4, 9, 9), body, op) == torch_counts(module) == (0, 0)


# ---- 3. MACs -----------------------------------------------------------------------------------


def test_conv_and_fc_macs_formula():
    rng = random.Random(9)
    for shape, cout, kernel, kw, body, g in valid_convs(rng, 150):
        r = row(analyze(g), "conv")
        cin, (kh, kwd), (p, q) = shape[0], pair(kernel), r.shape[1:]
        assert r.macs == kh * kwd * (cin // kw["groups"]) * cout * p * q, body
    for _ in range(50):
        shape = (rng.randint(1, 8), rng.randint(1, 5), rng.randint(1, 5))
        out = rng.randint(1, 30)
        g = build(shape, f"flatten -> {call('fc', out, bias=rng.random() < 0.5)}")
        assert row(analyze(g), "fc").macs == shape[0] * shape[1] * shape[2] * out


def test_macs_match_torch_flop_counter():
    flop_counter = pytest.importorskip("torch.utils.flop_counter")
    rng = random.Random(10)
    for shape, cout, kernel, kw, body, g in valid_convs(rng, 12):
        with flop_counter.FlopCounterMode(display=False) as counter:
            torch_conv(shape, cout, kernel, kw)
        assert counter.get_total_flops() == 2 * analyze(g).macs, body
    for shape, out in [((3, 4, 5), 10), ((16, 1, 1), 7), ((1, 2, 2), 1)]:
        g = build(shape, f"flatten -> fc({out})")
        x = torch.randn(1, *shape)
        with flop_counter.FlopCounterMode(display=False) as counter:
            nn.Linear(x[0].numel(), out)(torch.flatten(x, 1))
        assert counter.get_total_flops() == 2 * analyze(g).macs


# ---- 4. receptive field ------------------------------------------------------------------------


def measure_rf(model, shape, at=None):
    """Backprop from one output position (summed over channels) of `model` on a positive input;
    returns the input rows and columns with a nonzero gradient as (r0, r1, c0, c1), and the output size."""
    x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    y = model(x)
    i, j = at if at is not None else (y.shape[2] // 2, y.shape[3] // 2)
    y[0, :, i, j].sum().backward()
    nz = x.grad[0].abs().sum(0) > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    box = (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))
    assert box[0] > 0 and box[1] < shape[1] - 1 and box[2] > 0 and box[3] < shape[2] - 1, \
        f"the receptive field {box} touches the border of a {shape} input: use a larger one"
    return box, tuple(y.shape[2:])


def empirical_rf(model, shape):
    """(size_h, size_w, jump_h, jump_w, start_h, start_w): the extent at a central output, how far it
    moves one step on, and where output position 0's field would begin (extrapolated back)."""
    (r0, r1, c0, c1), (p, q) = measure_rf(model, shape)
    i, j = p // 2, q // 2
    (r0b, _, _, _), _ = measure_rf(model, shape, (i + 1, j))
    (_, _, c0b, _), _ = measure_rf(model, shape, (i, j + 1))
    jh, jw = r0b - r0, c0b - c0
    return (r1 - r0 + 1, c1 - c0 + 1, jh, jw, r0 - i * jh, c0 - j * jw)


def ones_conv(cin, cout, k, stride=1, pad=0, dilation=1, groups=1):
    m = nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False).double()
    nn.init.ones_(m.weight)
    return m


def avg(k, stride=None, pad=0):
    """Max pooling's window with a gradient into every position of it."""
    return nn.AvgPool2d(k, stride, pad, count_include_pad=True)


class Branches(nn.Module):
    def __init__(self, join, *branches):
        super().__init__()
        self.join, self.branches = join, nn.ModuleList(branches)

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        return torch.cat(outs, 1) if self.join == "concat" else sum(outs)


def ours_rf(shape, body):
    g = build(shape, body)
    rf = row(analyze(g), g.outputs[-1]).rf
    return (rf.h, rf.w, rf.jump_h, rf.jump_w, rf.start_h, rf.start_w)


HAND_BUILT = [
    ("conv stack with strides",
     "conv(4, 3, stride=2, pad=1) -> relu -> conv(4, 3, stride=2, pad=1) -> relu -> conv(4, 5, stride=1)",
     lambda: nn.Sequential(ones_conv(2, 4, 3, 2, 1), nn.ReLU(), ones_conv(4, 4, 3, 2, 1), nn.ReLU(),
                           ones_conv(4, 4, 5))),
    ("dilated and anisotropic convs",
     "conv(3, (3, 5), stride=(1, 2), dilation=(2, 1)) -> conv(3, 3, dilation=3) -> conv(3, (1, 3), stride=(2, 1))",
     lambda: nn.Sequential(ones_conv(2, 3, (3, 5), (1, 2), 0, (2, 1)), ones_conv(3, 3, 3, 1, 0, 3),
                           ones_conv(3, 3, (1, 3), (2, 1)))),
    ("AlexNet-like stem with pooling",
     "conv(4, 11, stride=4, pad=2) -> relu -> maxpool(3, stride=2) -> conv(4, 5, pad=2, groups=2) -> "
     "maxpool(3, stride=2) -> conv(4, 3, pad=1)",
     lambda: nn.Sequential(ones_conv(2, 4, 11, 4, 2), nn.ReLU(), avg(3, 2), ones_conv(4, 4, 5, 1, 2, groups=2),
                           avg(3, 2), ones_conv(4, 4, 3, 1, 1))),
    ("avgpool with padding, then a 1×1",
     "avgpool(2) -> avgpool(3, stride=1, pad=1) -> conv(2, 1) -> avgpool(4, stride=3, pad=2)",
     lambda: nn.Sequential(avg(2), avg(3, 1, 1), ones_conv(2, 2, 1), avg(4, 3, 2))),
    ("inception-like concat with different branch RFs",
     "conv(4, 3, stride=2, pad=1) -> concat { conv(2, 1); conv(2, 1) -> conv(2, 3, pad=1); "
     "conv(2, 1) -> conv(2, 5, pad=2); maxpool(3, stride=1, pad=1) -> conv(2, 1) } -> conv(3, 3, pad=1)",
     lambda: nn.Sequential(ones_conv(2, 4, 3, 2, 1),
                           Branches("concat", ones_conv(4, 2, 1),
                                    nn.Sequential(ones_conv(4, 2, 1), ones_conv(2, 2, 3, 1, 1)),
                                    nn.Sequential(ones_conv(4, 2, 1), ones_conv(2, 2, 5, 1, 2)),
                                    nn.Sequential(avg(3, 1, 1), ones_conv(4, 2, 1))),
                           ones_conv(8, 3, 3, 1, 1))),
    ("residual add: 3×3-3×3 against a strided 1×1 projection",
     "residual { conv(4, 3, stride=2, pad=1) -> conv(4, 3, pad=1) } shortcut { conv(4, 1, stride=2) } "
     "-> residual { conv(4, 3, pad=1) -> conv(4, 3, pad=1) }",
     lambda: nn.Sequential(Branches("add", nn.Sequential(ones_conv(2, 4, 3, 2, 1), ones_conv(4, 4, 3, 1, 1)),
                                    ones_conv(2, 4, 1, 2)),
                           Branches("add", nn.Sequential(ones_conv(4, 4, 3, 1, 1), ones_conv(4, 4, 3, 1, 1)),
                                    nn.Identity()))),
    ("off-centre branches (per-side padding) joined by add: the field is their union",
     "add { conv(2, 2, pad=(0, 1, 0, 1)); conv(2, 2, pad=(1, 0, 1, 0)) } -> conv(2, 3)",
     lambda: nn.Sequential(Branches("add", nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ones_conv(2, 2, 2)),
                                    nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), ones_conv(2, 2, 2))),
                           ones_conv(2, 2, 3))),
    ("dilated branches joined by add (ASPP-like)",
     "add { conv(2, 3, pad=1); conv(2, 3, pad=3, dilation=3); conv(2, 3, pad=6, dilation=6) } -> maxpool(2)",
     lambda: nn.Sequential(Branches("add", ones_conv(2, 2, 3, 1, 1), ones_conv(2, 2, 3, 1, 3, 3),
                                    ones_conv(2, 2, 3, 1, 6, 6)), avg(2))),
]


@pytest.mark.parametrize("what,body,model", HAND_BUILT, ids=[h[0] for h in HAND_BUILT])
def test_receptive_field_matches_gradient(what, body, model):
    shape = (2, 150, 161)
    measured = empirical_rf(model(), shape)
    assert ours_rf(shape, body) == measured


def test_receptive_field_through_an_upsample():
    """upsample(s) is a 1×1 window of stride 1/s: after a stride-2 conv and an upsample(2) the jump
    is back to 1; an upsample of the input makes it a fraction, shown as a decimal, and a field
    of a fractional size is shown rounded up (the JSON too)."""
    body = "conv(4, 3, stride=2, pad=1) -> upsample(2) -> conv(4, 3, pad=1)"
    assert ours_rf((2, 40, 40), body) == (5, 5, 1, 1, -2, -2)
    g = build((2, 8, 8), "upsample((2, 4)) -> conv(2, 2)")
    rf = row(analyze(g), g.outputs[-1]).rf
    assert (rf.h, rf.w, rf.jump_h, rf.jump_w) == (Fraction(3, 2), Fraction(5, 4), Fraction(1, 2), Fraction(1, 4))
    assert rf.shown() == {"size": [2, 2], "jump": [0.5, 0.25], "start": [0, 0]} and rf.text() == "2/0.5×0.25"
    assert json.loads(json.dumps(analyze(g).to_json()))["layers"][-1]["rf"] == rf.shown()


def graph_model(g):
    """A torch function that follows the graph `g`, with all-ones weights and every pooling window
    replaced by a depthwise all-ones convolution of the same geometry (so the gradient reaches
    every position a window sees).  The geometry comes from the node attributes; the test above
    checks those against hand-built models."""

    def run(x):
        vals = {}
        for n, d in g.walk():
            op, a, args = d["op"], d["attrs"], [vals[p] for p in g.args(n)]
            if op == "input":
                y = x
            elif op == "conv":
                t, b, l, r = a["pad"]
                cin = args[0].shape[1]
                w = torch.ones(a["out"], cin // a["groups"], *a["kernel"], dtype=x.dtype)
                y = F.conv2d(F.pad(args[0], (l, r, t, b)), w, None, a["stride"], 0, a["dilation"], a["groups"])
            elif op in ("maxpool", "avgpool"):
                assert not a["ceil_mode"]
                c = args[0].shape[1]
                w = torch.ones(c, 1, *a["kernel"], dtype=x.dtype)
                y = F.conv2d(args[0], w, None, a["stride"], a["pad"], a.get("dilation", (1, 1)), c)
            elif op in ("relu", "bn", "identity", "dropout", "drop_path", "lrn"):
                y = args[0]
            elif op == "concat":
                y = torch.cat(args, 1)
            elif op in ("add", "mean"):
                y = sum(args)
            else:
                raise AssertionError(op)
            assert tuple(y.shape[1:]) == d["shape"], n  # the graph's shapes hold in torch too
            vals[n] = y
        return vals[g.outputs[-1]]

    return run


def rand_layer(rng, c):
    kind = rng.choice(["conv", "conv", "conv", "maxpool", "avgpool", "pointwise", "join"])
    if kind == "conv":
        k = rand_pair(rng, 1, 5)
        return call("conv", c, k, stride=rand_pair(rng, 1, 2), pad=rand_pair(rng, 0, 2),
                    dilation=rng.choice([1, 1, 2, 3]), groups=rng.choice([1, c]))
    if kind in ("maxpool", "avgpool"):
        k = rand_pair(rng, 1, 4)
        pad = tuple(rng.randint(0, i // 2) for i in pair(k))
        extra = {"dilation": rng.choice([1, 2])} if kind == "maxpool" else {}
        return call(kind, k, stride=rand_pair(rng, 1, 3), pad=pad, **extra)
    if kind == "pointwise":
        return rng.choice(["relu", "bn", "identity", "dropout(0.1)", "lrn(3)"])
    # branches centred on the same position (odd kernels, "same" padding): their union is the largest
    branches = []
    for _ in range(rng.randint(2, 3)):
        k, d = rng.choice([1, 3, 5]), rng.choice([1, 2])
        branches.append(call("conv", c, k, pad=d * (k // 2), dilation=d) if rng.random() < 0.8 else "identity")
    if all(b == "identity" for b in branches):
        branches[0] = call("conv", c, 3, pad=1)
    join = rng.choice(["add", "mean"])  # same channel count, so chains can continue
    return f"{join} {{ {'; '.join(branches)} }}"


@pytest.mark.slow
def test_receptive_field_of_random_chains():
    rng = random.Random(11)
    checked = 0
    while checked < 25:
        c = rng.randint(1, 3)
        body = " -> ".join(rand_layer(rng, c) for _ in range(rng.randint(2, 5)))
        try:
            h, w, jh, jw, sh, sw = ours_rf((c, 400, 400), body)  # the receptive field does not depend on the input size
        except ArchError:
            continue
        shape = (c, h + 4 * jh + 8, w + 4 * jw + 8)  # room for the field, a step on, and a border
        g = build(shape, body)
        assert ours_rf(shape, body) == (h, w, jh, jw, sh, sw)
        assert empirical_rf(graph_model(g), shape) == (h, w, jh, jw, sh, sw), net(shape, body)
        checked += 1


def test_receptive_field_model_follows_torch_ops():
    """`graph_model` (used for random chains) agrees with the hand-built torch models."""
    for what, body, model in HAND_BUILT:
        shape = (2, 150, 161)
        x = torch.rand(1, *shape, dtype=torch.float64)
        with torch.no_grad():
            ours = graph_model(build(shape, body))(x)
            ref = model()(x)
        if "pool" not in body:  # pooling: a window sum here, a window mean there
            torch.testing.assert_close(ours, ref)
        assert ours.shape == ref.shape, what


# ---- 5. activation counting --------------------------------------------------------------------

NEW = {"input", "conv", "bn", "maxpool", "avgpool", "global_avgpool", "add", "mean", "concat", "fc", "lrn",
       "softmax", "adaptive_avgpool", "tanh", "sigmoid", "pad_channels", "upsample"}
FREE = {"relu", "dropout", "drop_path", "flatten", "identity"}


def test_activation_counting_convention():
    # fused ops: see test_passes.py; the modern families' ops (archdsl/ops/modern.py): tests/test_modern.py
    user_ops = {name for name, spec in OPS.items() if not spec.internal and name not in MODERN_OPS}
    assert NEW | FREE == user_ops  # every op a user can write is classified here
    body = ("conv(4, 3, pad=1) -> bn -> relu -> dropout(0.3) -> drop_path(0.2) -> identity -> maxpool(2) "
            "-> avgpool(3, stride=1, pad=1) -> lrn(3) -> concat { conv(2, 1); identity } "
            "-> add { conv(6, 1) -> relu; identity } -> mean { conv(6, 3, pad=1); identity } -> softmax "
            "-> adaptive_avgpool(3) -> tanh -> sigmoid -> pad_channels(8) -> upsample((2, 1)) -> global_avgpool "
            "-> flatten -> fc(5) -> relu")
    g = build((3, 12, 10), body)
    s = analyze(g)
    assert {r.op for r in s.layers} == user_ops
    for r in s.layers:
        c = 1
        for d in r.shape:
            c *= d
        assert r.activations == (c if r.op in NEW else 0), r.name
    assert row(s, "input").activations == 3 * 12 * 10
    input_, conv_bn, pooled, branch, joined = 3 * 12 * 10, 4 * 12 * 10, 4 * 6 * 5, 2 * 6 * 5, 6 * 6 * 5
    assert s.activations == (input_ + 2 * conv_bn  # input; conv, bn
                             + 3 * pooled  # maxpool, avgpool, lrn
                             + branch + joined  # concat's conv(2, 1); concat
                             + 2 * joined + 2 * joined  # add's conv and add; mean's conv and mean
                             + joined + 6 * 3 * 3  # softmax, adaptive_avgpool
                             + 2 * 6 * 3 * 3 + 8 * 3 * 3  # tanh, sigmoid, pad_channels
                             + 8 * 6 * 3  # upsample((2, 1))
                             + 8 + 5)  # global_avgpool, fc
    # the counting mirrors what torch allocates: in-place ReLU/dropout reuse storage, flatten is a view
    x = torch.randn(2, 4, 6, 5)
    assert torch.flatten(x, 1).data_ptr() == x.data_ptr()
    assert F.relu(x, inplace=True).data_ptr() == x.data_ptr()
    assert F.dropout(x, 0.3, training=True, inplace=True).data_ptr() == x.data_ptr()
    assert nn.Identity()(x) is x


# ---- adaptive average pooling ----------------------------------------------------------------------


def test_adaptive_avgpool_shapes_and_ops_match_torch():
    rng = random.Random(5)
    cases = []
    for _ in range(150):
        c, h, w, oh, ow = rng.randint(1, 3), rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 9), rng.randint(1, 9)
        x = torch.zeros(1, c, h, w)
        cases.append((f"{c}x{h}x{w} -> {oh}x{ow}", our_shape((c, h, w), f"adaptive_avgpool(({oh}, {ow}))"),
                      tuple(F.adaptive_avg_pool2d(x, (oh, ow)).shape[1:])))
    compare(cases)
    # other ops = the number of input values summed: windows overlap when the size does not divide
    g = build((1, 10, 10), "adaptive_avgpool(4)")
    starts_ends = [(0, 3), (2, 5), (5, 8), (7, 10)]  # floor(i*10/4), ceil((i+1)*10/4)
    per_axis = sum(e - s for s, e in starts_ends)
    assert row(analyze(g), "adaptive_avgpool").other_ops == per_axis * per_axis


@pytest.mark.parametrize("size, out", [(14, 7), (12, 4), (9, 3)])
def test_adaptive_avgpool_receptive_field_is_exact_when_the_size_divides(size, out):
    body = f"conv(2, 3, pad=1) -> adaptive_avgpool({out}) -> conv(2, 1)"
    model = nn.Sequential(ones_conv(2, 2, 3, 1, 1), nn.AdaptiveAvgPool2d(out), ones_conv(2, 2, 1))
    shape = (2, size, size)
    ours = ours_rf(shape, body)
    # the gradient test needs an interior output; here the field covers the map edge, so check by arithmetic:
    k = size // out
    assert ours[:4] == (3 + (k - 1), 3 + (k - 1), k, k)
    assert ours[4:] == (-1, -1)
    y = model(torch.ones(1, *shape, dtype=torch.float64))
    assert tuple(y.shape[2:]) == (out, out)


def test_pad_channels_tanh_sigmoid_match_torch():
    x = torch.randn(1, 3, 5, 7)
    assert our_shape((3, 5, 7), "pad_channels(8)") == tuple(F.pad(x, (0, 0, 0, 0, 0, 5)).shape[1:]) == (8, 5, 7)
    assert our_shape((3, 5, 7), "pad_channels(3)") == (3, 5, 7)
    assert our_shape((3, 5, 7), "pad_channels(2)") is None  # cannot shrink: an ArchError
    for op, fn in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        assert our_shape((3, 5, 7), op) == tuple(fn(x).shape[1:])
    g = build((3, 5, 7), "pad_channels(8) -> tanh -> sigmoid")
    s = analyze(g)
    assert [r.params for r in s.layers] == [0, 0, 0, 0]
    assert row(s, "tanh").other_ops == row(s, "sigmoid").other_ops == 8 * 5 * 7
