"""The model zoo, checked in one place: every network of the lecture, as a file in examples/ and
as a compact program written here, against arithmetic and PyTorch.

One table (ZOO) lists every file of examples/ and every variant its header documents, with the
facts every network must have:

- it elaborates, and its parameter count is the one its header states, which is also what the
  arithmetic written out below gives (from the layer widths, as PyTorch counts parameters) and
  what the state dict our node names imply holds;
- every conv, pool and fc node has the output shape torch.nn.functional gives for its input, on
  `meta` tensors (no memory, no time);
- the reduced-size variant its header's "Smaller:" line gives (REDUCED: what the interpreter and
  the compiled-model tests run) elaborates, has the arithmetic's (smaller) count, and runs end to
  end through the PyTorch reference backend;
- for the five classic examples, the ReLUs are where the papers put them.

Then, family by family, the structure each paper (or torchvision) describes: names, strides,
groups, joins, shortcuts, drop rates; the lecture's tables (VGG16 row by row, GoogLeNet's Table 1)
where they are right, and where they are not (VGG16's "24M" activations); and each architecture
written as a compact program with the language's constructs (tables, loops, recursion, named
tensors), its shapes and counts against arithmetic done here and, for a few, PyTorch modules on
the `meta` device.  Every program is elaborated symbolically, so full-size networks are cheap.

The only totals written as numbers are published ones (torchvision's documented counts) and the
ones the headers state; each is also recomputed by the arithmetic.  torchvision itself (state-dict
keys, shapes and outputs) is compared in tests/test_torchvision_compat.py; here replicas of
torchvision's module structure (TV replicas at the end) check the names our graphs imply.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl
from archdsl import ArchError, analyze
from archdsl.analysis import collapse
from archdsl.cli import main
from archdsl.ops import OPS

from arith import bn_p, conv_p, fc_p, out_size, replay
from smaller import smaller
from test_modern import MODERN_FILES
from snippets import BASIC_BLOCK as BASIC

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# ---- reading graphs ------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _load(file: str, params: tuple, input_shape):
    g = archdsl.load(EXAMPLES / f"{file}.arch", params=dict(params), input_shape=input_shape)
    return g, archdsl.analyze(g)


def load(file: str, input_shape=None, **params):
    """The graph of examples/<file>.arch and its summary (cached: the tests only read them)."""
    return _load(file, tuple(sorted(params.items())), input_shape)


def path(name: str) -> str:
    return str(EXAMPLES / f"{name}.arch")


def header(file: str) -> str:
    """The leading comment block, with the `#` and line breaks folded into single spaces."""
    head = (EXAMPLES / f"{file}.arch").read_text().split("\n\n")[0]
    return " ".join(line.lstrip("#").strip() for line in head.splitlines())


def rows(summary) -> dict:
    return {r.name: r for r in summary.layers}


def of_op(g, op, prefix=""):
    """Nodes of one op, in elaboration order, optionally under a name prefix."""
    return [n for n in g.nodes if g.op(n) == op and (not prefix or n.startswith(prefix + "."))]


def under(g, prefix):
    return [n for n in g.nodes if n.startswith(prefix + ".")]


def params_under(g, prefix):
    r = rows(analyze(g))
    return sum(r[n].params for n in under(g, prefix))


def bias_count(g, node: str) -> int:
    d = g.nodes[node]
    return d["shape"][0] if d["op"] in ("conv", "fc") and d["attrs"]["bias"] else 0


def weights(g, summary, prefix: str | None = None) -> int:
    """Parameters without biases (what the lecture and the GoogLeNet paper count)."""
    return sum(r.params - bias_count(g, r.name) for r in summary.layers
               if prefix is None or r.name == prefix or r.name.startswith(prefix + "."))


def scope_shapes(g, summary, depth: int = 1) -> dict:
    """Output shape of every top-level scope (a block instance or labelled sequence)."""
    return {r.name: r.shape for r in collapse(summary, g, depth).layers}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- PyTorch as the reference for shapes and state-dict keys --------------------------------------


def state_dict_of(g) -> dict:
    """The state_dict our node names imply: conv/fc weight (+ bias), BN affine params + buffers."""
    sd = {}
    for n, d in g.walk():
        op, a = d["op"], d["attrs"]
        ins = [g.shape(x) for x in g.args(n)]
        if op == "conv":
            sd[f"{n}.weight"] = (a["out"], ins[0][0] // a["groups"], *a["kernel"])
            if a["bias"]:
                sd[f"{n}.bias"] = (a["out"],)
        elif op == "fc":
            sd[f"{n}.weight"] = (a["out"], ins[0][0])
            if a["bias"]:
                sd[f"{n}.bias"] = (a["out"],)
        elif op == "bn":
            c = ins[0][0]
            sd.update({f"{n}.weight": (c,), f"{n}.bias": (c,), f"{n}.running_mean": (c,),
                       f"{n}.running_var": (c,), f"{n}.num_batches_tracked": ()})
    return sd


def implied_counts(g) -> tuple[int, int]:
    """Parameters and buffers of the state dict our node names imply (conv/fc weight and bias, BN)."""
    params = buffers = 0
    for key, shape in state_dict_of(g).items():
        numel = 1
        for s in shape:
            numel *= s
        if key.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked"):
            buffers += numel
        else:
            params += numel
    return params, buffers


def check_against_replica(g, model: nn.Module, input_shape) -> None:
    """Same state_dict (keys and shapes), same parameter count, same output shape per module."""
    ours = state_dict_of(g)
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == archdsl.analyze(g).params
    seen = {}
    for name, mod in model.named_modules():
        if name in g and isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)):
            mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    model.eval()(torch.empty(1, *input_shape, device="meta"))
    assert len(seen) >= len([k for k in ours if k.endswith(".weight")])
    for name, shape in seen.items():
        assert g.shape(name) == shape, name


# ---- each family's count, from its layer widths ---------------------------------------------------
# Every function takes the network's parameters (with the file's defaults) and the input side.

def lenet5_params(classes=10, c1=6, c3=16, f5=120, f6=84, side=32):
    s = ((side - 4) // 2 - 4) // 2  # two 5x5 convs, each followed by a 2x2/2 pool
    return conv_p(1, c1, 5) + conv_p(c1, c3, 5) + fc_p(c3 * s * s, f5) + fc_p(f5, f6) + fc_p(f6, classes)


def alexnet_params(classes=1000, width=96, hidden=4096, side=227, **_):
    c1, c2, c3 = width, width * 8 // 3, width * 4  # 96, 256, 384
    s = side
    for k, stride in ((11, 4), (3, 2), (3, 2), (3, 2)):  # conv1 and the three pools (convs 2-5 keep the size)
        s = out_size(s, k, stride)
    return (conv_p(3, c1, 11) + conv_p(c1, c2, 5, groups=2) + conv_p(c2, c3, 3) + conv_p(c3, c3, 3, groups=2)
            + conv_p(c3, c2, 3, groups=2) + fc_p(c2 * s * s, hidden) + fc_p(hidden, hidden) + fc_p(hidden, classes))


def alexnet_tv_params(classes=1000, width=64, hidden=4096, side=224, **_):
    total, cin = 0, 3
    for c, k in ((width, 11), (3 * width, 5), (6 * width, 3), (4 * width, 3), (4 * width, 3)):
        total, cin = total + conv_p(cin, c, k), c
    # AdaptiveAvgPool2d((6, 6)): the classifier sees 6x6 maps whatever the input size
    return total + fc_p(cin * 6 * 6, hidden) + fc_p(hidden, hidden) + fc_p(hidden, classes)


def zfnet_params(classes=1000, width=96, hidden=4096, wide=True, side=224, **_):
    s = out_size(side, 7, 2, 1)  # conv1
    s = out_size(s, 3, 2, 1)  # pool1
    s = out_size(s, 5, 2)  # conv2
    s = out_size(s, 3, 2, 1)  # pool2
    s = out_size(s, 3, 2)  # pool5
    c2 = 256 * width // 96
    c3, c4, c5 = ((512, 1024, 512) if wide else (384, 384, 256))
    c3, c4, c5 = (c * width // 96 for c in (c3, c4, c5))
    return (conv_p(3, width, 7) + conv_p(width, c2, 5) + conv_p(c2, c3, 3) + conv_p(c3, c4, 3) + conv_p(c4, c5, 3)
            + fc_p(c5 * s * s, hidden) + fc_p(hidden, hidden) + fc_p(hidden, classes))


VGG_CONVS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # Table 1, A B D E


def vgg_params(depth=16, bn=False, classes=1000, width=64, hidden=4096, side=224, **_):
    total, cin = 0, 3
    for s, n in enumerate(VGG_CONVS[depth]):
        c = width * 2 ** min(s, 3)
        for _ in range(n):
            total, cin = total + conv_p(cin, c, 3) + (bn_p(c) if bn else 0), c
    # AdaptiveAvgPool2d((7, 7)) before the classifier
    return total + fc_p(cin * 7 * 7, hidden) + fc_p(hidden, hidden) + fc_p(hidden, classes)


# Table 1 of Szegedy et al. 2014: output size, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj, params (weights, in K = 1024) and ops (multiply-adds, in M = 10^6).
GOOGLENET_TABLE = {
    "inception3a": ((28, 28, 256), (64, 96, 128, 16, 32, 32), 159, 128),
    "inception3b": ((28, 28, 480), (128, 128, 192, 32, 96, 64), 380, 304),
    "inception4a": ((14, 14, 512), (192, 96, 208, 16, 48, 64), 364, 73),
    "inception4b": ((14, 14, 512), (160, 112, 224, 24, 64, 64), 437, 88),
    "inception4c": ((14, 14, 512), (128, 128, 256, 24, 64, 64), 463, 100),
    "inception4d": ((14, 14, 528), (112, 144, 288, 32, 64, 64), 580, 119),
    "inception4e": ((14, 14, 832), (256, 160, 320, 32, 128, 128), 840, 170),
    "inception5a": ((7, 7, 832), (256, 160, 320, 32, 128, 128), 1072, 54),
    "inception5b": ((7, 7, 1024), (384, 192, 384, 48, 128, 128), 1388, 71),
}
# its widths alone: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTIONS = {name: widths for name, (_, widths, _, _) in GOOGLENET_TABLE.items()}


def inception_weights(cin, c1, c3r, c3, c5r, c5, pp):
    return cin * c1 + cin * c3r + 3 * 3 * c3r * c3 + cin * c5r + 5 * 5 * c5r * c5 + cin * pp


def googlenet_main_params():
    total = (7 * 7 * 3 * 64 + 64) + (64 * 64 + 64) + (9 * 64 * 192 + 192)  # conv1, conv2 reduce, conv2
    cin = 192
    for (_, _, c), widths, _, _ in GOOGLENET_TABLE.values():
        total += inception_weights(cin, *widths) + sum(widths)  # weights + one bias per filter
        cin = c
    return total + 1024 * 1000 + 1000  # the classifier


def aux_params(cin, classes=1000, side=4):
    return (cin * 128 + 128) + (128 * side * side * 1024 + 1024) + (1024 * classes + classes)


def googlenet_params(classes=1000, aux=True, side=224, **_):
    """The paper's GoogLeNet (examples/googlenet.arch): Table 1's widths, the stem, the heads."""
    assert classes == 1000
    s = out_size(side, 7, 2, 3)
    for _ in range(3):  # pool1, pool2, pool3 (3x3/2, rounding up) before inception 4a
        s = out_size(s, 3, 2, ceil=True)
    side4 = out_size(s, 5, 3, ceil=True)  # the auxiliary heads' 5x5/3 average pool
    return googlenet_main_params() + (aux_params(512, side=side4) + aux_params(528, side=side4) if aux else 0)


def basic_conv_p(cin, cout, k):  # torchvision's BasicConv2d: conv without bias + BN
    return conv_p(cin, cout, k, bias=False) + bn_p(cout)


def googlenet_tv_params(classes=1000, aux=True, side=224, **_):
    total = basic_conv_p(3, 64, 7) + basic_conv_p(64, 64, 1) + basic_conv_p(64, 192, 3)
    cin = 192
    for c1, c3r, c3, c5r, c5, pp in INCEPTIONS.values():  # branch3 is 3x3 in torchvision
        total += (basic_conv_p(cin, c1, 1) + basic_conv_p(cin, c3r, 1) + basic_conv_p(c3r, c3, 3)
                  + basic_conv_p(cin, c5r, 1) + basic_conv_p(c5r, c5, 3) + basic_conv_p(cin, pp, 1))
        cin = c1 + c3 + c5 + pp
    total += fc_p(cin, classes)
    if aux:  # InceptionAux on 4a (512 channels) and 4d (528): adaptive 4x4 pool, 1x1 conv 128, fc 2048 -> 1024
        total += sum(basic_conv_p(c, 128, 1) + fc_p(128 * 4 * 4, 1024) + fc_p(1024, classes) for c in (512, 528))
    return total


RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet_params(depth=50, classes=1000, groups=1, width_per_group=64, width=64, side=224, **_):
    """torchvision's ResNet: BasicBlock below 50 layers, Bottleneck (with groups and base width) from 50."""
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    total, cin = conv_p(3, width, 7, bias=False) + bn_p(width), width
    for s, n in enumerate(RESNET_BLOCKS[depth]):
        planes = width * 2 ** s
        out = planes * expansion
        for i in range(n):
            stride = 2 if s > 0 and i == 0 else 1
            if bottleneck:
                w = planes * width_per_group // 64 * groups  # int(planes * (base_width / 64.)) * groups
                total += (conv_p(cin, w, 1, bias=False) + bn_p(w) + conv_p(w, w, 3, groups=groups, bias=False)
                          + bn_p(w) + conv_p(w, out, 1, bias=False) + bn_p(out))
            else:
                total += conv_p(cin, planes, 3, bias=False) + bn_p(planes) + conv_p(planes, planes, 3, bias=False) + bn_p(planes)
            if stride != 1 or cin != out:  # the downsample: 1x1 conv + BN
                total += conv_p(cin, out, 1, bias=False) + bn_p(out)
            cin = out
    return total + fc_p(cin, classes)


def resnet50_arithmetic(width=64, side=224, classes=1000, blocks=(3, 4, 6, 3)):
    """Params, MACs and stage output shapes of torchvision's ResNet-50, counted by hand."""
    h = out_size(side, 7, 2, 3)
    params, macs = 7 * 7 * 3 * width + 2 * width, 7 * 7 * 3 * width * h * h  # conv1 + bn1
    h = out_size(h, 3, 2, 1)  # max pool
    cin, stages = width, {}
    for i, n in enumerate(blocks):
        c = width * 2**i
        for b in range(n):
            stride = 2 if b == 0 and i > 0 else 1
            ho = out_size(h, 3, stride, 1)
            convs = [(1, cin, c, h), (3, c, c, ho), (1, c, 4 * c, ho)]  # (k, cin, cout, output side)
            if b == 0:
                convs.append((1, cin, 4 * c, ho))  # the projection shortcut
            for k, ci, co, o in convs:
                params += k * k * ci * co + 2 * co  # conv weights + BN weight and bias
                macs += k * k * ci * co * o * o
            cin, h = 4 * c, ho
        stages[f"layer{i + 1}"] = (cin, h, h)
    params += cin * classes + classes
    macs += cin * classes
    return params, macs, stages


def preact_params(depth=164, classes=10, width=16, side=32, bn=True, **_):
    """Pre-activation bottleneck ResNet for CIFAR; bn=False leaves out the BN scales and shifts."""
    n = (depth - 2) // 9
    total, cin = conv_p(3, width, 3, bias=False), width
    for s in range(3):
        c = 4 * width * 2 ** s
        b = c // 4
        for i in range(n):
            total += conv_p(cin, b, 1, bias=False) + conv_p(b, b, 3, bias=False) + conv_p(b, c, 1, bias=False)
            total += bn_p(cin) + bn_p(b) + bn_p(b) if bn else 0
            if i == 0:
                total += conv_p(cin, c, 1, bias=False)  # the projection shortcut
            cin = c
    return total + (bn_p(cin) if bn else 0) + fc_p(cin, classes)


def wrn_params(depth=28, k=10, classes=10, side=32, **_):
    n = (depth - 4) // 6
    total, cin = conv_p(3, 16, 3, bias=False), 16
    for g in range(3):
        w = 16 * k * 2 ** g
        for i in range(n):
            total += bn_p(cin) + conv_p(cin, w, 3, bias=False) + bn_p(w) + conv_p(w, w, 3, bias=False)
            if cin != w:
                total += conv_p(cin, w, 1, bias=False)  # convShortcut
            cin = w
    return total + bn_p(cin) + fc_p(cin, classes)


def sd_params(n=18, classes=10, width=16, bias=True, side=32, **_):
    """CIFAR ResNet-(6n+2) with option-A shortcuts (no parameters)."""
    total, cin = conv_p(3, width, 3, bias=bias) + bn_p(width), width
    for s in range(3):
        c = width * 2 ** s
        for _ in range(n):
            total += conv_p(cin, c, 3, bias=bias) + bn_p(c) + conv_p(c, c, 3, bias=bias) + bn_p(c)
            cin = c
    return total + fc_p(cin, classes)


DENSENET_BLOCKS = {121: (6, 12, 24, 16), 161: (6, 12, 36, 24), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


def densenet_arithmetic(growth=32, bn_size=4, init=64, side=224, classes=1000, blocks=(6, 12, 24, 16)):
    """Params and the shape after each dense block / transition, counted by hand."""
    h = out_size(out_size(side, 7, 2, 3), 3, 2, 1)
    c = init
    params = 7 * 7 * 3 * init + 2 * init  # conv0 + norm0
    shapes = {}
    for i, n in enumerate(blocks):
        for _ in range(n):  # norm1, conv1 (1x1 to bn_size*growth), norm2, conv2 (3x3 to growth)
            params += 2 * c + c * bn_size * growth + 2 * bn_size * growth + 9 * bn_size * growth * growth
            c += growth
        shapes[f"features.denseblock{i + 1}"] = (c, h, h)
        if i < len(blocks) - 1:
            params += 2 * c + c * (c // 2)  # norm, 1x1 conv with compression 0.5
            c, h = c // 2, h // 2
            shapes[f"features.transition{i + 1}"] = (c, h, h)
    params += 2 * c + c * classes + classes  # norm5, classifier
    return params, shapes


def densenet_params(depth=121, classes=1000, growth=None, init=None, bn_size=4, side=224, **_):
    growth = growth or (48 if depth == 161 else 32)
    init = init or 2 * growth
    return densenet_arithmetic(growth=growth, bn_size=bn_size, init=init, side=side, classes=classes,
                               blocks=DENSENET_BLOCKS[depth])[0]


def fractal_params(cols=4, width=64, classes=10, side=32, **_):
    total, cin = 0, 3
    for c in (width, 2 * width, 4 * width, 8 * width, 8 * width):
        # 2^C - 1 conv layers per block: one per column reads the block input, the rest read c channels
        total += cols * (conv_p(cin, c, 3) + bn_p(c)) + (2 ** cols - 1 - cols) * (conv_p(c, c, 3) + bn_p(c))
        cin = c
    s = side // 2 ** 5  # five 2x2 max pools
    return total + fc_p(cin * s * s, classes)


def squeezenet_params(version=1.0, classes=1000, side=224, **_):
    cin = 96 if version == 1.0 else 64
    total = conv_p(3, 96, 7) if version == 1.0 else conv_p(3, 64, 3)
    for k in range(8):  # fire2 .. fire9
        s = 16 * (1 + k // 2)
        total += conv_p(cin, s, 1) + conv_p(s, 4 * s, 1) + conv_p(s, 4 * s, 3)
        cin = 8 * s
    return total + conv_p(cin, classes, 1)


def nin_params(classes=10, width=192, side=32, **_):
    w = width
    return (conv_p(3, w, 5) + conv_p(w, 5 * w // 6, 1) + conv_p(5 * w // 6, w // 2, 1)
            + conv_p(w // 2, w, 5) + 2 * conv_p(w, w, 1)
            + conv_p(w, w, 3) + conv_p(w, w, 1) + conv_p(w, classes, 1))


# ---- the zoo: one table of networks and their facts ---------------------------------------------------

@dataclass(frozen=True)
class Variant:
    file: str  # examples/<file>.arch
    params: dict  # --set values; {} is the file's default network
    total: int  # the count the header states
    source: str  # where that number comes from
    arithmetic: Callable[..., int]
    relus: int | None = None  # how many ReLUs the paper puts in (the classic examples)

    @property
    def id(self) -> str:
        return "-".join([self.file] + [f"{k}={v}" for k, v in self.params.items()])


TV = "torchvision's documented count"
ARITH = "the header's arithmetic"

ZOO = [
    # the five classic examples; relus: where the nonlinearities are, counted from each paper's description
    Variant("lenet5", {}, 61_706, ARITH, lenet5_params,
            relus=2 + 2),  # after C1, C3, F5, F6
    Variant("vgg16", {}, 138_357_544, TV + " (vgg16)", vgg_params,
            relus=13 + 2),  # after every conv and the two hidden fc layers
    Variant("googlenet", {}, 13_378_280, ARITH + " (Table 1's widths, with the auxiliary heads)", googlenet_params,
            relus=3 + 9 * 6 + 2 * 2),  # stem convs, 6 convs per inception, aux conv + fc1 (x2)
    Variant("googlenet", {"aux": False}, 6_998_552, ARITH, googlenet_params),
    Variant("resnet50", {}, 25_557_032, TV + " (resnet50)", resnet_params,
            relus=1 + 16 * 3),  # stem; in each bottleneck after bn1, bn2 and the addition
    Variant("densenet121", {}, 7_978_856, TV + " (densenet121)", densenet_params,
            relus=1 + 2 * (6 + 12 + 24 + 16) + 3 + 1),  # relu0, 2 per dense layer, transitions, final
    # the zoo
    Variant("alexnet", {}, 60_965_224, ARITH + " (the paper's two-tower network)", alexnet_params),
    Variant("alexnet", {"pool_first": True}, 60_965_224, ARITH + " (the lecture's order, same layers)", alexnet_params),
    Variant("alexnet_tv", {}, 61_100_840, TV + " (alexnet)", alexnet_tv_params),
    Variant("zfnet", {}, 107_627_624, ARITH + " (Table 3's 512/1024/512)", zfnet_params),
    Variant("zfnet", {"wide": False}, 62_357_608, ARITH + " (Figure 3's 384/384/256)", zfnet_params),
    Variant("vgg", {"depth": 11}, 132_863_336, TV + " (vgg11)", vgg_params),
    Variant("vgg", {"depth": 13}, 133_047_848, TV + " (vgg13)", vgg_params),
    Variant("vgg", {"depth": 16}, 138_357_544, TV + " (vgg16)", vgg_params),
    Variant("vgg", {"depth": 19}, 143_667_240, TV + " (vgg19)", vgg_params),
    Variant("vgg", {"depth": 11, "bn": True}, 132_868_840, TV + " (vgg11_bn)", vgg_params),
    Variant("vgg", {"depth": 13, "bn": True}, 133_053_736, TV + " (vgg13_bn)", vgg_params),
    Variant("vgg", {"depth": 16, "bn": True}, 138_365_992, TV + " (vgg16_bn)", vgg_params),
    Variant("vgg", {"depth": 19, "bn": True}, 143_678_248, TV + " (vgg19_bn)", vgg_params),
    Variant("googlenet_tv", {"aux": False}, 6_624_904, TV + " (googlenet, without the aux heads)", googlenet_tv_params),
    Variant("googlenet_tv", {}, 13_004_888, "torchvision's googlenet(aux_logits=True)", googlenet_tv_params),
    Variant("resnet", {"depth": 18}, 11_689_512, TV + " (resnet18)", resnet_params),
    Variant("resnet", {"depth": 34}, 21_797_672, TV + " (resnet34)", resnet_params),
    Variant("resnet", {}, 25_557_032, TV + " (resnet50)", resnet_params),
    Variant("resnet", {"depth": 101}, 44_549_160, TV + " (resnet101)", resnet_params),
    Variant("resnet", {"depth": 152}, 60_192_808, TV + " (resnet152)", resnet_params),
    Variant("resnet", {"groups": 32, "width_per_group": 4}, 25_028_904, TV + " (resnext50_32x4d)", resnet_params),
    Variant("resnet", {"depth": 101, "groups": 32, "width_per_group": 8}, 88_791_336, TV + " (resnext101_32x8d)",
            resnet_params),
    Variant("resnet", {"depth": 101, "groups": 64, "width_per_group": 4}, 83_455_272, TV + " (resnext101_64x4d)",
            resnet_params),
    Variant("resnet", {"width_per_group": 128}, 68_883_240, TV + " (wide_resnet50_2)", resnet_params),
    Variant("resnet", {"depth": 101, "width_per_group": 128}, 126_886_696, TV + " (wide_resnet101_2)", resnet_params),
    # aliases of resnet.arch's network with new defaults (`network x = resnet(...)`)
    Variant("resnext50_32x4d", {}, 25_028_904, TV + " (resnext50_32x4d)",
            lambda **kw: resnet_params(**{"groups": 32, "width_per_group": 4, **kw})),
    Variant("wide_resnet50_2", {}, 68_883_240, TV + " (wide_resnet50_2)",
            lambda **kw: resnet_params(**{"width_per_group": 128, **kw})),
    Variant("preact_resnet", {}, 1_703_258, ARITH + " (the paper: 1.7M)", preact_params),
    Variant("preact_resnet", {"depth": 1001}, 10_327_706, ARITH + " (the paper: 10.2M, without BN)", preact_params),
    Variant("wrn", {}, 36_479_194, ARITH + " (the paper: 36.5M)", wrn_params),
    Variant("resnet110_sd", {}, 1_732_010, ARITH + " (the authors' code: convs with bias)", sd_params),
    Variant("resnet110_sd", {"bias": False}, 1_727_962, ARITH + " (He et al.: 1.7M)", sd_params),
    Variant("densenet", {}, 7_978_856, TV + " (densenet121)", densenet_params),
    Variant("densenet", {"depth": 161}, 28_681_000, TV + " (densenet161)", densenet_params),
    Variant("densenet", {"depth": 169}, 14_149_480, TV + " (densenet169)", densenet_params),
    Variant("densenet", {"depth": 201}, 20_013_928, TV + " (densenet201)", densenet_params),
    Variant("fractalnet", {}, 76_128_714, ARITH + " (C = 4)", fractal_params),
    Variant("fractalnet", {"cols": 3}, 33_734_922, ARITH + " (C = 3)", fractal_params),
    Variant("squeezenet", {}, 1_248_424, TV + " (squeezenet1_0)", squeezenet_params),
    Variant("squeezenet", {"version": 1.1}, 1_235_496, TV + " (squeezenet1_1)", squeezenet_params),
    Variant("nin", {}, 966_986, ARITH, nin_params),
]
ZOO_IDS = [v.id for v in ZOO]

# The reduced variant of each file, exactly as its header's "Smaller:" line writes it.
REDUCED = {
    "lenet5": ["--input 1x28x28"],  # (lenet5.arch has no Smaller: line: MNIST's size)
    "vgg16": ["--set width=16 --set hidden=256 --input 3x32x32"],
    "googlenet": ["--input 3x64x64"],
    "resnet50": ["--set width=8 --input 3x64x64"],
    "densenet121": ["--set growth=8 --set init=16 --input 3x64x64"],
    "alexnet": ["--set width=24 --set hidden=256 --set classes=10 --input 3x67x67"],
    "alexnet_tv": ["--set width=16 --set hidden=256 --set classes=10 --input 3x64x64"],
    "zfnet": ["--set width=24 --set hidden=256 --set classes=10 --input 3x64x64"],
    "vgg": ["--set width=8 --set hidden=64 --set classes=10 --input 3x32x32"],
    "googlenet_tv": ["--set classes=10 --input 3x64x64"],
    "resnet": ["--set width=8 --set classes=10 --input 3x64x64",
               "--set width=16 --set groups=4 --set width_per_group=4"],
    "resnext50_32x4d": ["--set width=16 --set groups=4 --set classes=10 --input 3x64x64"],
    "wide_resnet50_2": ["--set width=8 --set width_per_group=16 --set classes=10 --input 3x64x64"],
    "preact_resnet": ["--set depth=29 --set width=4 --input 3x16x16"],
    "wrn": ["--set depth=10 --set k=1 --input 3x16x16"],
    "resnet110_sd": ["--set n=3 --input 3x16x16"],
    "densenet": ["--set growth=8 --set init=16 --set classes=10 --input 3x64x64"],
    "fractalnet": ["--set cols=2 --set width=8 --input 3x32x32"],
    "squeezenet": ["--set classes=10 --input 3x64x64"],
    "nin": ["--set width=48 --input 3x16x16"],
}


# The reduced DenseNets take 3-5 s through the reference backend (measured): the slow tier.
SLOW_REDUCED = {"densenet121", "densenet"}
REDUCED_CASES = [(f, args) if f not in SLOW_REDUCED else pytest.param(f, args, marks=pytest.mark.slow)
                 for f, all_args in REDUCED.items() for args in all_args]


ARITHMETIC = {v.file: v.arithmetic for v in ZOO}


def parse_args(args: str) -> tuple[dict, tuple[int, int, int] | None]:
    """`--set k=v ... --input CxHxW` as the command line reads them."""
    params, shape = {}, None
    for flag, value in re.findall(r"--(set|input) (\S+)", args):
        if flag == "input":
            shape = tuple(int(d) for d in value.split("x"))
        else:
            k, v = value.split("=")
            params[k] = {"true": True, "false": False}.get(v) if v in ("true", "false") else (
                float(v) if "." in v else int(v))
    return params, shape


# ---- every file, every variant -----------------------------------------------------------------


def test_every_example_is_in_the_zoo():
    # the modern families are checked against torchvision, variant by variant, in tests/test_modern.py
    files = sorted(p.stem for p in EXAMPLES.glob("*.arch") if p.name not in MODERN_FILES)
    assert files == sorted({v.file for v in ZOO}) == sorted(REDUCED)


@pytest.mark.parametrize("file", sorted(REDUCED))
def test_header_documents_paper_variant_input_params_and_smaller(file):
    head = header(file)
    for word in ("Paper:", "Variant:", "Input:", "Params:") + (("Smaller:",) if file != "lenet5" else ()):
        assert word in head, (file, word)
    for v in ZOO:
        if v.file == file:
            assert f"{v.total:,}" in head, (file, v.params, v.total)  # every count the test checks is stated
    if file != "lenet5":
        for args in REDUCED[file]:
            assert args in head, (file, args)  # the test builds what the header tells users to
        # and the first is what tests/smaller.py (the other tests' reduced sizes) reads there
        spec = smaller(EXAMPLES / f"{file}.arch")
        assert parse_args(REDUCED[file][0]) == (spec["params"], spec["input_shape"])
    g, s = load(file)
    c, h, w = s.input
    assert re.search(rf"Input:\s+{c} x {h} x {w}\b", head), (file, s.input)


@pytest.mark.parametrize("v", ZOO, ids=ZOO_IDS)
def test_params_are_the_headers_and_the_arithmetics(v):
    g, s = load(v.file, **v.params)
    assert s.params == v.total == v.arithmetic(**v.params), v.source
    # the state dict the node names imply holds exactly the counted parameters and buffers
    assert implied_counts(g) == (s.params, s.buffers)


@pytest.mark.parametrize("v", ZOO, ids=ZOO_IDS)
def test_every_conv_pool_and_fc_has_pytorchs_shape(v):
    g, _ = load(v.file, **v.params)
    assert replay(g) > 5


@pytest.mark.parametrize("v", [v for v in ZOO if v.relus is not None], ids=lambda v: v.file)
def test_relus_are_where_the_papers_put_them(v):
    g, _ = load(v.file, **v.params)
    assert sum(d["op"] == "relu" for _, d in g.walk()) == v.relus
    if v.file in ("googlenet", "vgg16", "lenet5"):  # no BN: a ReLU right after every conv
        assert all(g.op(u) == "relu" for n, d in g.walk() if d["op"] == "conv" for u in g.users(n))


@pytest.mark.parametrize("file, args", REDUCED_CASES, ids=[f"{f}-{i}" for f, a in REDUCED.items() for i in range(len(a))])
def test_reduced_variant_builds_and_runs(file, args):
    params, shape = parse_args(args)
    g, s = load(file, shape, **params)
    full = load(file)[1]
    if shape is not None:
        assert s.input == shape
    assert s.params == ARITHMETIC[file](**params, **({"side": shape[1]} if shape else {}))
    assert s.params < full.params and s.macs < full.macs
    assert replay(g) >= 5
    # end to end through the PyTorch reference backend, in eval mode, on random input
    torch.manual_seed(0)
    model = archdsl.to_torch(g).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *s.input))
    outs = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in outs] == [(2, *g.shape(n)) for n in g.outputs]
    assert all(torch.isfinite(o).all() for o in outs)


# ---- LeNet-5 --------------------------------------------------------------------------------------


def test_lenet5_params_layer_by_layer():
    g, s = load("lenet5")
    r = rows(s)
    expected = {
        "features.0.conv": 5 * 5 * 1 * 6 + 6,  # C1: 156
        "features.1.conv": 5 * 5 * 6 * 16 + 16,  # C3: 2,416 (fully connected to S2)
        "classifier.0": 16 * 5 * 5 * 120 + 120,  # F5: 48,120
        "classifier.2": 120 * 84 + 84,  # F6: 10,164
        "classifier.4": 84 * 10 + 10,  # output: 850
    }
    assert {n: r[n].params for n in expected} == expected
    assert s.params == sum(expected.values()) == 61_706
    shapes = {n: r[n].shape for n in ("features.0.conv", "features.0.pool", "features.1.conv",
                                      "features.1.pool", "flatten", "classifier.4")}
    assert shapes == {"features.0.conv": (6, 28, 28), "features.0.pool": (6, 14, 14),
                      "features.1.conv": (16, 10, 10), "features.1.pool": (16, 5, 5),
                      "flatten": (400,), "classifier.4": (10,)}
    # the documented choice: ReLU after every layer but the last, 2x2/2 max pooling
    assert [d["op"] for _, d in g.walk()] == ["input"] + ["conv", "relu", "maxpool"] * 2 + [
        "flatten", "fc", "relu", "fc", "relu", "fc"]


def test_lenet5_on_28x28_shrinks_the_first_fc():
    g, s = load("lenet5", (1, 28, 28))
    side = (out_size(28, 5) // 2 - 4) // 2  # 28 -> 24 -> 12 -> 8 -> 4
    assert side == 4 and g.shape("flatten") == (16 * side * side,)
    assert rows(s)["classifier.0"].params == 16 * side * side * 120 + 120
    assert s.params == 61_706 - (16 * 5 * 5 - 16 * 4 * 4) * 120


LENET5 = """
# LeNet-5 with ReLU and average pooling (the language has no tanh; C3's partial connection table
# is not expressible, so C3 is fully connected, as in most modern re-implementations).
network lenet5(classes = 10) {
    input 1 x 32 x 32
    c1: conv(6, 5) -> relu -> s2: avgpool(2)
    c3: conv(16, 5) -> relu -> s4: avgpool(2)
    c5: conv(120, 5) -> relu -> flatten
    f6: fc(84) -> relu
    out: fc(classes)
}
"""


def test_lenet5():
    g = archdsl.loads(LENET5)
    assert [g.shape(n) for n in ("c1", "s2", "c3", "s4", "c5", "f6", "out")] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
    r = rows(analyze(g))
    assert [r[n].params for n in ("c1", "c3", "c5", "f6", "out")] == [
        (5 * 5 * 1 + 1) * 6, (5 * 5 * 6 + 1) * 16, (5 * 5 * 16 + 1) * 120, (120 + 1) * 84, (84 + 1) * 10]
    assert analyze(g).params == 156 + 2416 + 48120 + 10164 + 850


# ---- AlexNet and ZFNet ------------------------------------------------------------------------------


def test_alexnet_layers_groups_and_the_papers_order():
    g, s = load("alexnet")
    s1 = out_size(227, 11, 4)  # (227 - 11) / 4 + 1 = 55
    p1, p2, p3 = out_size(s1, 3, 2), out_size(out_size(s1, 3, 2), 3, 2), 6
    assert (s1, p1, p2) == (55, 27, 13) and out_size(p2, 3, 2) == p3
    expect = {"conv1": (96, 55, 55), "norm1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
              "norm2": (256, 27, 27), "pool2": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
              "conv5": (256, 13, 13), "pool3": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    assert {n: g.shape(n) for n in expect} == expect
    # the paper: ReLU -> normalization -> max pool; conv1 is read by its ReLU, which the LRN reads
    assert [g.op(n) for n in (g.args("norm1")[0], g.args("pool1")[0])] == ["relu", "lrn"]
    assert [g.nodes[f"conv{i}"]["attrs"]["groups"] for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert [g.nodes[n]["attrs"]["p"] for n, d in g.walk() if d["op"] == "dropout"] == [0.5, 0.5]
    # the lecture's order: pool first, LRN on the pooled 27x27 map
    g2, _ = load("alexnet", pool_first=True)
    assert g2.shape("norm1") == (96, 27, 27) and g2.args("norm1") == ["pool1"]
    assert g2.shape("norm2") == (256, 13, 13) and g2.shape("pool3") == (256, 6, 6)


def test_alexnet_lrn_is_the_papers_normalization():
    """b = a / (k + alpha * sum over n neighbouring channels of a^2)^beta, with the paper's
    n = 5, k = 2, alpha = 1e-4, beta = 0.75 (Section 3.3), computed here by hand."""
    g, _ = load("alexnet")
    attrs = g.nodes["norm1"]["attrs"]
    assert attrs == {"size": 5, "alpha": pytest.approx(5e-4), "beta": 0.75, "k": 2.0}
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 30  # large enough that alpha matters
    sq = F.pad(a * a, (0, 0, 0, 0, 2, 2))  # zero channels beyond the edges
    window = sum(sq[:, j:j + a.shape[1]] for j in range(5))  # channels i-2 .. i+2
    paper = a / (2 + 1e-4 * window) ** 0.75
    ours = OPS["lrn"].torch(attrs, [(12, 5, 5)])(a)
    assert torch.allclose(ours, paper, rtol=1e-12, atol=0)
    # with the paper's alpha passed unscaled, PyTorch's rule (alpha / n) would be another network
    assert not torch.allclose(F.local_response_norm(a, 5, 1e-4, 0.75, 2.0), paper, rtol=1e-3)


def test_alexnet_tv_is_torchvisions_layout():
    g, _ = load("alexnet_tv")
    convs = [n for n, d in g.walk() if d["op"] == "conv"]
    assert convs == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    assert [g.shape(n)[0] for n in convs] == [64, 192, 384, 256, 256]
    assert [n for n, d in g.walk() if d["op"] == "maxpool"] == ["features.2", "features.5", "features.12"]
    assert [n for n, d in g.walk() if d["op"] == "fc"] == ["classifier.1", "classifier.4", "classifier.6"]
    assert [g.op(f"classifier.{i}") for i in (0, 3)] == ["dropout", "dropout"]
    assert g.shape("features.0") == (64, out_size(224, 11, 4, 2), 55) and g.shape("avgpool") == (256, 6, 6)
    assert not any(d["op"] in ("lrn", "bn") for _, d in g.walk())


ALEXNET = """
# AlexNet as in the paper: 227 input (the lecture's table), LRN, and the two-GPU split as
# groups=2 on conv2, conv4 and conv5 (conv3 and the fc layers see both towers).  conv1 is split
# too, but both towers read the whole image, which is exactly one ungrouped conv of 96 filters.
block norm() { lrn(size=5, alpha=0.0001, beta=0.75, k=2) }
network alexnet(classes = 1000) {
    input 3 x 227 x 227
    conv1: conv(96, 11, stride=4) -> relu -> pool1: maxpool(3, stride=2) -> norm1: norm()
    conv2: conv(256, 5, pad=2, groups=2) -> relu -> pool2: maxpool(3, stride=2) -> norm2: norm()
    conv3: conv(384, 3, pad=1) -> relu
    conv4: conv(384, 3, pad=1, groups=2) -> relu
    conv5: conv(256, 3, pad=1, groups=2) -> relu -> pool3: maxpool(3, stride=2)
    flatten
    fc6: fc(4096) -> relu -> dropout
    fc7: fc(4096) -> relu -> dropout
    fc8: fc(classes)
}
"""


def test_alexnet():
    g = archdsl.loads(ALEXNET)
    r = rows(analyze(g))
    s1 = out_size(227, 11, 4)  # (227 - 11) / 4 + 1 = 55
    p1 = out_size(s1, 3, 2)  # 27
    p2 = out_size(p1, 3, 2)  # 13
    p3 = out_size(p2, 3, 2)  # 6
    assert (s1, p1, p2, p3) == (55, 27, 13, 6)
    expect = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1.lrn": (96, 27, 27), "conv2": (256, 27, 27),
              "pool2": (256, 13, 13), "norm2.lrn": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
              "conv5": (256, 13, 13), "pool3": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    assert {n: g.shape(n) for n in expect} == expect
    assert r["conv1"].params == (11 * 11 * 3) * 96 + 96 == 34944
    assert r["conv1"].macs == 11 * 11 * 3 * 96 * 55 * 55
    assert [g.nodes[n]["attrs"]["groups"] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]
    # grouped: each tower's filters see half the input channels
    assert r["conv2"].params == 5 * 5 * (96 // 2) * 256 + 256
    assert r["conv4"].params == 3 * 3 * (384 // 2) * 384 + 384
    assert r["conv5"].params == 3 * 3 * (384 // 2) * 256 + 256
    assert g.nodes["norm1.lrn"]["attrs"] == {"size": 5, "alpha": 0.0001, "beta": 0.75, "k": 2.0}
    total = (conv_p(3, 96, 11) + conv_p(96, 256, 5, groups=2) + conv_p(256, 384, 3) + conv_p(384, 384, 3, groups=2)
             + conv_p(384, 256, 3, groups=2) + fc_p(256 * 6 * 6, 4096) + fc_p(4096, 4096) + fc_p(4096, 1000))
    assert analyze(g).params == total == 60_965_224  # the paper's two-tower AlexNet

    torch = pytest.importorskip("torch")
    nn = torch.nn
    with torch.device("meta"):
        ref = {"conv1": nn.Conv2d(3, 96, 11, 4), "pool1": nn.MaxPool2d(3, 2),
               "norm1.lrn": nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
               "conv2": nn.Conv2d(96, 256, 5, padding=2, groups=2), "pool2": nn.MaxPool2d(3, 2),
               "norm2.lrn": nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
               "conv3": nn.Conv2d(256, 384, 3, padding=1), "conv4": nn.Conv2d(384, 384, 3, padding=1, groups=2),
               "conv5": nn.Conv2d(384, 256, 3, padding=1, groups=2), "pool3": nn.MaxPool2d(3, 2),
               "flatten": nn.Flatten(), "fc6": nn.Linear(9216, 4096), "fc7": nn.Linear(4096, 4096),
               "fc8": nn.Linear(4096, 1000)}
        x = torch.empty(1, 3, 227, 227)
        for name, m in ref.items():
            x = m(x)
            assert tuple(x.shape[1:]) == g.shape(name), name
            assert sum(p.numel() for p in m.parameters()) == r[name].params, name


def test_zfnet_sizes_of_figure_3():
    g, _ = load("zfnet")
    s1 = out_size(224, 7, 2, 1)
    q1 = out_size(s1, 3, 2, 1)
    s2 = out_size(q1, 5, 2)
    q2 = out_size(s2, 3, 2, 1)
    assert (s1, q1, s2, q2, out_size(q2, 3, 2)) == (110, 55, 26, 13, 6)  # Figure 3's sizes
    assert [g.shape(n) for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")] == [
        (96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13), (512, 13, 13), (1024, 13, 13),
        (512, 13, 13), (512, 6, 6)]
    assert g.nodes["conv1"]["attrs"]["kernel"] == (7, 7) and g.nodes["conv1"]["attrs"]["stride"] == (2, 2)
    assert all(g.nodes[n]["attrs"]["groups"] == 1 for n, d in g.walk() if d["op"] == "conv")  # one GPU
    narrow, _ = load("zfnet", wide=False)
    assert [narrow.shape(f"conv{i}")[0] for i in (3, 4, 5)] == [384, 384, 256]


ZFNET = """
# ZFNet = AlexNet with conv1 7x7 stride 2 and conv3-5 of 512, 1024, 512 filters (one GPU: no groups)
network zfnet(classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(96, 7, stride=2, pad=1) -> relu -> maxpool(3, stride=2, pad=1) -> lrn(size=5)
    conv2: conv(256, 5, stride=2) -> relu -> maxpool(3, stride=2, pad=1) -> lrn(size=5)
    for i, c in [(3, 512), (4, 1024), (5, 512)] {
        conv{i}: conv(c, 3, pad=1) -> relu
    }
    pool5: maxpool(3, stride=2)
    flatten -> fc6: fc(4096) -> relu -> dropout -> fc7: fc(4096) -> relu -> dropout -> fc8: fc(classes)
}
"""


ZFNET_WRITTEN_OUT = ZFNET.replace("""    for i, c in [(3, 512), (4, 1024), (5, 512)] {
        conv{i}: conv(c, 3, pad=1) -> relu
    }""", """    conv3: conv(512, 3, pad=1) -> relu
    conv4: conv(1024, 3, pad=1) -> relu
    conv5: conv(512, 3, pad=1) -> relu""")


@pytest.mark.parametrize("text", [ZFNET, ZFNET_WRITTEN_OUT], ids=["table", "written-out"])
def test_zfnet(text):
    assert "conv4: conv(1024" in ZFNET_WRITTEN_OUT
    g = archdsl.loads(text)
    s1 = out_size(224, 7, 2, 1)  # (224 + 2 - 7) // 2 + 1 = 110
    q1 = out_size(s1, 3, 2, 1)  # 55
    s2 = out_size(q1, 5, 2)  # 26
    q2 = out_size(s2, 3, 2, 1)  # 13
    q5 = out_size(q2, 3, 2)  # 6
    assert (s1, q1, s2, q2, q5) == (110, 55, 26, 13, 6)
    assert g.shape("conv1") == (96, 110, 110) and g.nodes["conv1"]["attrs"]["kernel"] == (7, 7)
    assert g.nodes["conv1"]["attrs"]["stride"] == (2, 2)
    assert [g.shape(c) for c in ("conv2", "conv3", "conv4", "conv5", "pool5")] == [
        (256, 26, 26), (512, 13, 13), (1024, 13, 13), (512, 13, 13), (512, 6, 6)]
    total = (conv_p(3, 96, 7) + conv_p(96, 256, 5) + conv_p(256, 512, 3) + conv_p(512, 1024, 3)
             + conv_p(1024, 512, 3) + fc_p(512 * 6 * 6, 4096) + fc_p(4096, 4096) + fc_p(4096, 1000))
    assert analyze(g).params == total


# ---- VGG: the lecture's VGG16 table, torchvision's names, the stage table ------------------------------

# The lecture's VGG16 table, row by row: its label, the node it is here, the shape as the lecture
# writes it ([H x W x C]), "memory" (the activation count) and "params (not counting biases)".
VGG_TABLE = [
    ("INPUT", "input", (224, 224, 3), 224 * 224 * 3, 0),
    ("CONV3-64", "features.0", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 3) * 64),
    ("CONV3-64", "features.2", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 64) * 64),
    ("POOL2", "features.4", (112, 112, 64), 112 * 112 * 64, 0),
    ("CONV3-128", "features.5", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 64) * 128),
    ("CONV3-128", "features.7", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 128) * 128),
    ("POOL2", "features.9", (56, 56, 128), 56 * 56 * 128, 0),
    ("CONV3-256", "features.10", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 128) * 256),
    ("CONV3-256", "features.12", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("CONV3-256", "features.14", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("POOL2", "features.16", (28, 28, 256), 28 * 28 * 256, 0),
    ("CONV3-512", "features.17", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 256) * 512),
    ("CONV3-512", "features.19", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "features.21", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("POOL2", "features.23", (14, 14, 512), 14 * 14 * 512, 0),
    ("CONV3-512", "features.24", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "features.26", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "features.28", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("POOL2", "features.30", (7, 7, 512), 7 * 7 * 512, 0),
    ("FC", "classifier.0", (1, 1, 4096), 4096, 7 * 7 * 512 * 4096),
    ("FC", "classifier.3", (1, 1, 4096), 4096, 4096 * 4096),
    ("FC", "classifier.6", (1, 1, 1000), 1000, 4096 * 1000),
]


@pytest.mark.parametrize("label, node, hwc, memory, params", VGG_TABLE,
                         ids=[f"{i:02d}-{row[0]}" for i, row in enumerate(VGG_TABLE)])
def test_vgg16_matches_the_lecture_row(label, node, hwc, memory, params):
    g, s = load("vgg16")
    r = rows(s)[node]
    h, w, c = hwc
    assert r.shape == ((c,) if label == "FC" else (c, h, w))
    assert r.op == {"INPUT": "input", "POOL2": "maxpool", "FC": "fc"}.get(label, "conv")
    assert r.activations == memory
    assert r.params - bias_count(g, node) == params


def test_vgg16_totals_and_the_lectures_memory_figure():
    g, s = load("vgg16")
    assert s.params == 138_357_544
    # 13 conv biases + 3 fc biases on top of the lecture's weight column:
    assert s.params == sum(p for *_, p in VGG_TABLE) + 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512 + 2 * 4096 + 1000
    # Every layer of the network is a row of the table (ReLU/dropout are in place, flatten a
    # view), except torchvision's adaptive 7x7 average pool, which at 224 returns a new 7x7x512
    # tensor that the lecture's table does not list:
    true_total = sum(m for _, _, _, m, _ in VGG_TABLE)
    assert true_total == 15_237_608
    assert s.activations == true_total + 7 * 7 * 512
    # The lecture says "TOTAL memory: 24M * 4 bytes ~= 96MB / image".  Its own rows add up to
    # 15.2M values (even its rounded entries: 150K + 2*3.2M + 800K + 2*1.6M + 400K + 3*800K +
    # 200K + 3*400K + 100K + 3*100K + 25K + ~9K = 15.2M), i.e. 61 MB (58.1 MiB) of float32 per
    # image for the forward pass, not 96 MB.  The 24M is an overcount that the table does not
    # support: ~9M values too many (counting a separate ReLU output after every conv would give
    # 28.8M instead, so not even that explains it).
    assert round(true_total / 1e6) == 15 and round(true_total / 1e6) != 24
    assert 4 * true_total == 60_950_432
    # "Most memory is in early CONV": the first two stages hold more than half of it ...
    early = sum(m for label, node, _, m, _ in VGG_TABLE[1:8] if label.startswith("CONV"))
    assert early > true_total / 2
    # ... "most params are in late FC": nearly 90 % are in the three fc layers.
    fc = sum(rows(s)[n].params for n in ("classifier.0", "classifier.3", "classifier.6"))
    assert fc / s.params > 0.89


def test_vgg16_receptive_fields():
    g, s = load("vgg16")
    r = rows(s)
    # Independent recurrence: size += (k - 1) * jump; jump *= stride.
    size, jump, expected = 1, 1, {}
    for node, op in ((n, g.nodes[n]["op"]) for n, _ in g.walk()):
        if op == "conv":
            size += (3 - 1) * jump
        elif op == "maxpool":
            size, jump = size + (2 - 1) * jump, jump * 2
        if op in ("conv", "maxpool"):
            expected[node] = (size, jump)
    assert {n: (r[n].rf.h, r[n].rf.jump_h) for n in expected} == expected
    assert r["features.0"].rf.h == 3
    assert r["features.2"].rf.h == 5  # conv1_2: two stacked 3x3 see 5x5
    # Stage 3's three stacked 3x3 convs (at jump 4) widen the field by 3 * 2 * 4 input pixels:
    assert r["features.14"].rf.h - r["features.9"].rf.h == 3 * (3 - 1) * 4
    assert (r["features.30"].rf.h, r["features.30"].rf.jump_h) == (212, 32)


def test_three_stacked_3x3_convs_see_what_one_7x7_sees_with_fewer_params():
    c = 64
    stacked = archdsl.analyze(archdsl.loads(
        f"network s() {{ input {c} x 32 x 32\n conv({c}, 3, pad=1, bias=false) * 3 }}"))
    single = archdsl.analyze(archdsl.loads(f"network s() {{ input {c} x 32 x 32\n conv({c}, 7, pad=3, bias=false) }}"))
    assert stacked.layers[-1].rf.h == single.layers[-1].rf.h == 7
    assert stacked.params == 3 * (3**2 * c**2) < single.params == 7**2 * c**2


def test_vgg16_names_are_torchvisions():
    g, _ = load("vgg16")
    convs = [n for n, d in g.walk() if d["op"] == "conv"]
    assert convs == [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    assert [n for n, d in g.walk() if d["op"] == "maxpool"] == [f"features.{i}" for i in (4, 9, 16, 23, 30)]
    assert [n for n, d in g.walk() if d["op"] == "fc"] == ["classifier.0", "classifier.3", "classifier.6"]
    assert g.op("avgpool") == "adaptive_avgpool" and g.op("flatten") == "flatten"
    check_against_replica(g, tv_vgg16(), (3, 224, 224))


def test_vgg16_with_width_16_on_32x32():
    g, s = load("vgg16", (3, 32, 32), width=16)
    assert g.shape("features.30") == (8 * 16, 32 // 2**5, 32 // 2**5) == (128, 1, 1)
    assert g.shape("avgpool") == (128, 7, 7)  # adaptive: pooled up to 7x7 as torchvision does
    assert rows(s)["classifier.0"].params == 128 * 7 * 7 * 4096 + 4096
    # (the header's Smaller: line also narrows the classifier: REDUCED; this is the width alone)
    assert s.input == (3, 32, 32) and replay(g) > 5
    assert s.params < load("vgg16")[1].params


def torchvision_vgg_names(depth, bn):
    """The names torchvision's make_layers gives: every module of `features` takes a number."""
    cfg, i, convs, pools = [], 0, [], []
    for s, n in enumerate(VGG_CONVS[depth]):
        cfg += [64 * 2 ** min(s, 3)] * n + ["M"]
    for v in cfg:
        if v == "M":
            pools.append(f"features.{i}")
            i += 1
        else:
            convs.append(f"features.{i}")
            i += 3 if bn else 2  # conv, [BN,] ReLU
    return convs, pools


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("bn", [False, True])
def test_vgg_names_are_torchvisions(depth, bn):
    g, _ = load("vgg", depth=depth, bn=bn)
    convs, pools = torchvision_vgg_names(depth, bn)
    assert [n for n, d in g.walk() if d["op"] == "conv"] == convs
    assert [n for n, d in g.walk() if d["op"] == "maxpool"] == pools
    bns = [n for n, d in g.walk() if d["op"] == "bn"]
    assert bns == ([f"features.{int(c.split('.')[1]) + 1}" for c in convs] if bn else [])
    assert [n for n, d in g.walk() if d["op"] == "fc"] == ["classifier.0", "classifier.3", "classifier.6"]
    assert len(convs) + 3 == depth
    assert g.shape(pools[-1]) == (512, 7, 7)


def test_vgg_rejects_other_depths_and_vgg16_is_vgg16():
    with pytest.raises(ArchError, match="VGG depth is 11, 13, 16 or 19"):
        load("vgg", depth=17)
    a, _ = load("vgg")
    b, _ = load("vgg16")
    assert [(n, d["op"], d["shape"]) for n, d in a.walk()] == [(n, d["op"], d["shape"]) for n, d in b.walk()]


VGG_STAGES = """
# VGG: five stages of 3x3 convs (stride 1, pad 1) and a 2x2/2 max pool; 2, 2, then 3 (VGG16) or 4 (VGG19)
block stage(c, n) {
    convs: (conv(c, 3, pad=1) -> relu) * n
    pool: maxpool(2, stride=2)
}
network vgg(depth = 19, width = 64, fc_width = 4096, classes = 1000) {
    input 3 x 224 x 224
    let n = (depth - 7) // 3          # convs in each of stages 3-5: 3 (VGG16) or 4 (VGG19)
    features: { for m in [1, 2, 4, 8, 8] { stage(width * m, 2 if m < 4 else n) } }
    classifier: (flatten -> fc(fc_width) -> relu -> dropout -> fc(fc_width) -> relu -> dropout -> fc(classes))
}
"""


def vgg_stages_params(convs_per_stage, width=64, fc_width=4096, classes=1000, hw=224):
    p, cin = 0, 3
    for s, n in enumerate(convs_per_stage):
        c = width * 2 ** min(s, 3)
        p += conv_p(cin, c, 3) + (n - 1) * conv_p(c, c, 3)
        cin = c
        hw //= 2
    return p + fc_p(cin * hw * hw, fc_width) + fc_p(fc_width, fc_width) + fc_p(fc_width, classes)


@pytest.mark.parametrize("depth, convs, known", [(16, [2, 2, 3, 3, 3], 138_357_544),
                                                 (19, [2, 2, 4, 4, 4], 143_667_240)])
def test_vgg_stage_repetition(depth, convs, known):
    g = archdsl.loads(VGG_STAGES, params={"depth": depth})
    assert len(of_op(g, "conv")) == sum(convs) == depth - 3
    for s, n in enumerate(convs):
        assert g.graph["scopes"][f"features.{s}"].kind == "block"
        assert [g.op(x) for x in under(g, f"features.{s}.convs")] == ["conv", "relu"] * n
        assert under(g, f"features.{s}.convs")[-1] == f"features.{s}.convs.{2 * n - 1}"
        assert g.nodes[f"features.{s}.convs.0"]["attrs"]["out"] == 64 * 2 ** min(s, 3)
    assert g.shape("features.4.pool") == (512, 7, 7) and g.shape("classifier.7") == (1000,)
    assert analyze(g).params == vgg_stages_params(convs) == known  # known: torchvision's vgg16 / vgg19
    small = archdsl.loads(VGG_STAGES, params={"depth": depth, "width": 8, "fc_width": 64, "classes": 10},
                          input_shape=(3, 32, 32))
    assert small.shape("features.4.pool") == (64, 1, 1)
    assert analyze(small).params == vgg_stages_params(convs, 8, 64, 10, hw=32)


VGG_CFG = """
# The torchvision way: a configuration list; "M" is a max pool.  Names match torchvision's
# (features.0 is the first conv, features.36 the last pool of VGG19, classifier.6 the last fc).
network vgg19 {
    input 3 x 224 x 224
    let cfg = [64, 64, "M", 128, 128, "M"] + ([256] * 4 + ["M"]) + ([512] * 4 + ["M"]) * 2
    features: {
        for v in cfg {
            if v == "M" { maxpool(2, stride=2) } else { conv(v, 3, pad=1) -> relu }
        }
    }
    global_avgpool
    flatten
    classifier: (fc(4096) -> relu -> dropout -> fc(4096) -> relu -> dropout -> fc(1000))
}
"""


def test_vgg_configuration_list_gives_torchvision_names():
    g = archdsl.loads(VGG_CFG)
    feats = under(g, "features")
    assert feats == [f"features.{i}" for i in range(16 * 2 + 5)]
    assert [n for n in feats if g.op(n) == "maxpool"] == ["features.4", "features.9", "features.18",
                                                           "features.27", "features.36"]
    assert g.op("features.34") == "conv" and g.shape("features.34") == (512, 14, 14)
    assert [n for n in under(g, "classifier") if g.op(n) == "fc"] == ["classifier.0", "classifier.3", "classifier.6"]


VGG_POW = VGG_STAGES.replace(
    "    features: { for m in [1, 2, 4, 8, 8] { stage(width * m, 2 if m < 4 else n) } }",
    "    for s in range(5) { stage{s + 1}: stage(width * 2 ** min(s, 3), 2 if s < 2 else n) }")


def test_power_operator():
    # `2 ** 3` once lexed as `2 * * 3` (the `*` of MUL_OP won over `**`)
    g = archdsl.loads("network n {\n input 3x8x8\n conv(4 * 2 ** 3, 1)\n}")
    assert g.shape("conv") == (32, 8, 8)
    assert VGG_POW != VGG_STAGES
    g = archdsl.loads(VGG_POW, params={"depth": 19})
    assert [g.nodes[f"stage{s + 1}.convs.0"]["attrs"]["out"] for s in range(5)] == [64, 128, 256, 512, 512]
    assert analyze(g).params == vgg_stages_params([2, 2, 4, 4, 4])


# ---- GoogLeNet: Table 1, the paper's network and torchvision's ---------------------------------------


def test_googlenet_inception_modules_against_table_1():
    g, s = load("googlenet")
    cin = 192  # after conv2 and pool2: 28 x 28 x 192
    for name, ((h, w, c), widths, table_k, table_mops) in GOOGLENET_TABLE.items():
        assert g.shape(name + ".concat") == (c, h, w), name
        assert c == widths[0] + widths[2] + widths[4] + widths[5]  # the concatenated branches
        exact = inception_weights(cin, *widths)
        assert weights(g, s, name) == exact, name
        assert rows(s)[name + ".concat"].params == 0
        macs = sum(r.macs for r in s.layers if r.name.startswith(name + "."))
        assert macs == exact * h * w, name
        # Table 1's ops column is these MACs in millions, except for 5a (54M listed; 51.1M from
        # its own widths).
        if name != "inception5a":
            assert abs(macs / 1e6 - table_mops) < 1, name
        # Its params column agrees within 2 % (K = 1024), except for 4c (463K listed, 497.5K
        # from its widths, which its own 100M ops confirm) and 5a (1072K listed, 1018K).
        if name not in ("inception4c", "inception5a"):
            assert abs(exact / 1024 / table_k - 1) < 0.02, name
        cin = c
    # The arithmetic, branch by branch, for three of them:
    assert weights(g, s, "inception3a") == (192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32
                                            + 192 * 32) == 163_328  # 159.5K
    assert weights(g, s, "inception4a") == (480 * 192 + 480 * 96 + 9 * 96 * 208 + 480 * 16 + 25 * 16 * 48
                                            + 480 * 64) == 375_552
    assert weights(g, s, "inception5b") == (832 * 384 + 832 * 192 + 9 * 192 * 384 + 832 * 48 + 25 * 48 * 128
                                            + 832 * 128) == 1_442_816  # 1409K
    assert rows(s)["inception3a.branch5x5"].params == 25 * 16 * 32 + 32  # with its bias


def test_googlenet_stem_and_head_shapes():
    g, s = load("googlenet")
    expected = {"conv1": (64, 112, 112), "pool1": (64, 56, 56), "conv2": (192, 56, 56), "pool2": (192, 28, 28),
                "pool3": (480, 14, 14), "pool4": (832, 7, 7), "pool5": (1024, 1, 1), "fc": (1000,)}
    assert {n: g.shape(n) for n in expected} == expected
    assert g.nodes["pool5"]["attrs"]["kernel"] == (7, 7) and g.op("pool5") == "avgpool"
    assert [g.nodes[n]["attrs"]["ceil_mode"] for n in ("pool1", "pool2", "pool3", "pool4")] == [True] * 4
    assert g.op("norm1") == g.op("norm2") == "lrn"
    assert g.nodes["dropout"]["attrs"]["p"] == 0.4
    # Table 1's conv rows: conv2 = 1x1 reduce + 3x3 = 112K weights; the fc 1000K.
    assert weights(g, s, "conv2_reduce") + weights(g, s, "conv2") == 64 * 64 + 9 * 64 * 192 == 112 * 1024
    assert weights(g, s, "fc") == 1024 * 1000
    # "22 layers deep" counting layers with weights along the longest path of the main network
    main_net = g.subgraph(g.ancestors("fc") | {"fc"})
    assert max(_weighted_depth(main_net).values()) == 22


def _weighted_depth(g) -> dict:
    depth = {}
    for n in g.order():
        here = 1 if g.nodes[n]["op"] in ("conv", "fc") else 0
        depth[n] = here + max((depth[p] for p in g.predecessors(n)), default=0)
    return depth


def test_googlenet_outputs_and_aux_heads():
    g, s = load("googlenet")
    assert g.outputs == ["fc", "aux1.fc2", "aux2.fc2"]
    assert g.graph["output_names"] == ["logits", "aux1", "aux2"]
    assert g.args("aux1.pool") == ["inception4a.concat"]
    assert g.args("aux2.pool") == ["inception4d.concat"]
    assert g.shape("aux1.pool") == (512, 4, 4) and g.shape("aux2.pool") == (528, 4, 4)
    assert g.shape("aux1.fc1") == g.shape("aux2.fc1") == (1024,)
    assert g.nodes["aux1.dropout"]["attrs"]["p"] == 0.7
    assert weights(g, s, "aux1") == 512 * 128 + 128 * 4 * 4 * 1024 + 1024 * 1000
    main_params = googlenet_main_params()
    assert main_params == 6_998_552
    assert s.params == main_params + aux_params(512) + aux_params(528)
    # Table 1's params column (conv1 2.7K, conv2 112K, the nine inceptions, linear 1000K) sums to
    # 6,797.7K; our main network's weights are within 0.5 % of that, in spite of the column's slips.
    column = 2.7 + 112 + sum(k for _, _, k, _ in GOOGLENET_TABLE.values()) + 1000
    main_weights = weights(g, s, None) - weights(g, s, "aux1") - weights(g, s, "aux2")
    assert round(column, 1) == 6797.7 and abs(main_weights / 1024 / column - 1) < 0.005

    g2, s2 = load("googlenet", aux=False)
    assert g2.outputs == ["fc"] and not any(n.startswith("aux") for n in g2)
    assert s2.params == main_params


def test_googlenet_small_inputs():
    g, s = load("googlenet", (3, 64, 64))
    side = out_size(64, 7, 2, 3)  # 32
    for _ in range(2):  # pool1, pool2: 3x3/2, rounding up
        side = -(-(side - 3) // 2) + 1
    assert side == 8 and g.shape("inception3a.concat") == (256, 8, 8)
    assert g.shape("inception5b.concat") == (1024, 2, 2) and g.shape("pool5") == (1024, 1, 1)
    assert g.shape("aux1.pool") == (512, 1, 1)  # 4x4 at 4a, one (partial) 5x5 window
    assert s.params == googlenet_main_params() + aux_params(512, side=1) + aux_params(528, side=1)


def test_googlenet_tv_structure():
    g, _ = load("googlenet_tv")
    cin = 192
    for name, (c1, c3r, c3, c5r, c5, pp) in INCEPTIONS.items():
        assert g.shape(f"{name}.branch1.conv")[0] == c1
        assert g.nodes[f"{name}.branch3.1.conv"]["attrs"]["kernel"] == (3, 3)  # torchvision's "5x5" branch
        assert g.args(f"{name}.branch4.1.conv") == [f"{name}.branch4.0"] and g.op(f"{name}.branch4.0") == "maxpool"
        assert g.shape(f"{name}.concat")[0] == c1 + c3 + c5 + pp
        assert len(g.args(f"{name}.concat")) == 4
    assert all(not d["attrs"]["bias"] for _, d in g.walk() if d["op"] == "conv")
    assert all(d["attrs"]["eps"] == 0.001 for _, d in g.walk() if d["op"] == "bn")
    assert all(d["attrs"]["ceil_mode"] for _, d in g.walk() if d["op"] == "maxpool")
    assert g.nodes["maxpool4"]["attrs"]["kernel"] == (2, 2)
    sides = {n: g.shape(n)[1] for n in ("conv1.conv", "maxpool1", "maxpool2", "maxpool3", "maxpool4")}
    assert sides == {"conv1.conv": 112, "maxpool1": 56, "maxpool2": 28, "maxpool3": 14, "maxpool4": 7}
    assert g.outputs == ["fc", "aux1.fc2", "aux2.fc2"]
    assert g.args("aux1.adaptive_avgpool") == ["inception4a.concat"]
    assert g.args("aux2.adaptive_avgpool") == ["inception4d.concat"]
    assert g.shape("aux1.conv.conv") == (128, 4, 4) and g.shape("aux2.fc1") == (1024,)
    assert [g.nodes[n]["attrs"]["p"] for n in ("dropout", "aux1.dropout")] == [0.2, 0.7]
    assert not any(d["op"] == "lrn" for _, d in g.walk())
    g2, _ = load("googlenet_tv", aux=False)
    assert g2.outputs == ["fc"] and not any(n.startswith("aux") for n in g2)


INCEPTION = """
block inception(c1, c3r, c3, c5r, c5, pp) {
    concat {
        b1: (conv(c1, 1) -> relu)
        b2: (conv(c3r, 1) -> relu -> conv(c3, 3, pad=1) -> relu)
        b3: (conv(c5r, 1) -> relu -> conv(c5, 5, pad=2) -> relu)
        b4: (maxpool(3, stride=1, pad=1) -> conv(pp, 1) -> relu)
    }
}
block aux_head(classes) {
    avgpool(5, stride=3) -> conv(128, 1) -> relu -> flatten -> fc(1024) -> relu -> dropout(0.7) -> fc(classes)
}
network googlenet_part(classes = 1000) {
    input 192 x 28 x 28
    inc3a: inception(64, 96, 128, 16, 32, 32)
    inc3b: inception(128, 128, 192, 32, 96, 64)
    maxpool(3, stride=2, pad=1)
    inc4a: inception(192, 96, 208, 16, 48, 64) as a4
    aux: aux_head(classes)
    @a4 -> inc4b: inception(160, 112, 224, 24, 64, 64)
    global_avgpool -> flatten -> dropout(0.4) -> fc(classes) as logits
    output logits, aux
}
"""


def inception_params(cin, c1, c3r, c3, c5r, c5, pp):
    return (conv_p(cin, c1, 1) + conv_p(cin, c3r, 1) + conv_p(c3r, c3, 3) + conv_p(cin, c5r, 1)
            + conv_p(c5r, c5, 5) + conv_p(cin, pp, 1))


def test_googlenet_inception_and_auxiliary_output():
    g = archdsl.loads(INCEPTION)
    assert g.args("inc3a.concat") == ["inc3a.b1.1", "inc3a.b2.3", "inc3a.b3.3", "inc3a.b4.2"]
    assert [g.shape(a)[0] for a in g.args("inc3a.concat")] == [64, 128, 32, 32]
    assert all(g.args(f"inc3a.{b}.0") == ["input"] for b in ("b1", "b2", "b3", "b4"))
    assert g.shape("inc3a.concat") == (64 + 128 + 32 + 32, 28, 28) == (256, 28, 28)
    assert g.shape("inc3b.concat") == (128 + 192 + 96 + 64, 28, 28) == (480, 28, 28)
    assert g.shape("inc4a.concat") == (192 + 208 + 48 + 64, 14, 14) == (512, 14, 14)
    assert params_under(g, "inc3a") == inception_params(192, 64, 96, 128, 16, 32, 32)
    assert params_under(g, "inc4a") == inception_params(480, 192, 96, 208, 16, 48, 64)
    # the auxiliary classifier hangs off inc4a and is the second output
    assert g.args("aux.avgpool") == ["inc4a.concat"] and g.shape("aux.avgpool") == (512, out_size(14, 5, 3), 4)
    assert g.args("inc4b.b1.0") == ["inc4a.concat"]
    assert g.graph["output_names"] == ["logits", "aux"] and g.outputs == ["fc", "aux.fc_1"]
    assert params_under(g, "aux") == conv_p(512, 128, 1) + fc_p(128 * 4 * 4, 1024) + fc_p(1024, 1000)


# ---- ResNet family: ResNet-50, the depth table, ResNeXt and wide ResNets --------------------------------


def test_resnet50_params_macs_and_stage_shapes():
    g, s = load("resnet50")
    params, macs, stages = resnet50_arithmetic()
    assert s.params == params == 25_557_032
    assert s.macs == macs and round(macs / 1e9, 2) == 4.09
    assert stages == {"layer1": (256, 56, 56), "layer2": (512, 28, 28), "layer3": (1024, 14, 14),
                      "layer4": (2048, 7, 7)}
    shapes = scope_shapes(g, s)
    assert {k: shapes[k] for k in stages} == stages
    assert shapes["maxpool"] == (64, 56, 56) and shapes["fc"] == (1000,)
    # 3 BN buffers per channel pair: running mean and var per channel, one counter per BN.
    bns = [n for n, d in g.walk() if d["op"] == "bn"]
    assert s.buffers == sum(2 * g.shape(n)[0] + 1 for n in bns) and len(bns) == 1 + 3 * 16 + 4


def test_resnet50_names_are_torchvisions():
    g, _ = load("resnet50")
    assert g.op("layer1.0.downsample.0") == "conv" and g.op("layer1.0.downsample.1") == "bn"
    assert not any(n.startswith("layer1.1.downsample") for n in g)
    assert [n for n in g if n.endswith("downsample.0")] == [f"layer{i}.0.downsample.0" for i in range(1, 5)]
    # v1.5: the stride is on the 3x3 conv of the first block of layers 2-4
    assert g.nodes["layer2.0.conv2"]["attrs"]["stride"] == (2, 2)
    assert g.nodes["layer2.0.conv1"]["attrs"]["stride"] == (1, 1)
    assert g.nodes["layer2.0.downsample.0"]["attrs"]["stride"] == (2, 2)
    assert [n for n in g if n.startswith("layer3.") and n.endswith(".conv1")] == [f"layer3.{i}.conv1" for i in range(6)]
    check_against_replica(g, tv_resnet50(), (3, 224, 224))


def test_resnet50_with_width_8_on_64x64():
    g, s = load("resnet50", (3, 64, 64), width=8)
    params, macs, stages = resnet50_arithmetic(width=8, side=64)
    assert stages == {"layer1": (32, 16, 16), "layer2": (64, 8, 8), "layer3": (128, 4, 4), "layer4": (256, 2, 2)}
    shapes = scope_shapes(g, s)
    assert {k: shapes[k] for k in stages} == stages
    assert (s.params, s.macs) == (params, macs)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_blocks_strides_and_downsamples(depth):
    g, _ = load("resnet", depth=depth)
    bottleneck = depth >= 50
    out = 4 if bottleneck else 1
    for s, n in enumerate(RESNET_BLOCKS[depth], 1):
        assert sorted({x.split(".")[1] for x in g if x.startswith(f"layer{s}.")}, key=int) == [
            str(i) for i in range(n)]
        assert (f"layer{s}.0.conv3" in g) == bottleneck
        # the projection: every first block of a bottleneck ResNet; stages 2-4 of a basic one
        assert (f"layer{s}.0.downsample.0" in g) == (bottleneck or s > 1)
        assert not any(x.startswith(f"layer{s}.1.downsample") for x in g)
        strided = "conv2" if bottleneck else "conv1"  # v1.5: on the 3x3 conv of a bottleneck
        assert g.nodes[f"layer{s}.0.{strided}"]["attrs"]["stride"] == ((2, 2) if s > 1 else (1, 1))
        last = f"layer{s}.{n - 1}.relu_{2 if bottleneck else 1}"
        assert g.shape(last) == (64 * 2 ** (s - 1) * out, 56 // 2 ** (s - 1), 56 // 2 ** (s - 1))
    assert g.shape("fc") == (1000,) and g.shape("maxpool") == (64, 56, 56)


def test_resnext_and_wide_resnet_widths():
    g, _ = load("resnet", groups=32, width_per_group=4)
    a = g.nodes["layer1.0.conv2"]["attrs"]
    assert (a["groups"], a["out"]) == (32, 32 * 4)  # cardinality 32, 4 channels per group
    assert g.shape("layer4.0.conv2") == (32 * 4 * 8, 7, 7) and g.shape("layer4.2.bn3") == (2048, 7, 7)
    w, _ = load("resnet", width_per_group=128)
    assert w.nodes["layer1.0.conv2"]["attrs"]["groups"] == 1
    assert [w.shape(f"layer{s}.0.conv2")[0] for s in (1, 2, 3, 4)] == [128, 256, 512, 1024]  # 2x the bottleneck
    assert w.shape("layer1.0.conv3")[0] == 256  # the block outputs are resnet50's
    with pytest.raises(ArchError, match="BasicBlock only supports groups=1"):
        load("resnet", depth=18, groups=32, width_per_group=4)
    with pytest.raises(ArchError, match="ResNet depth"):
        load("resnet", depth=42)


def test_resnet50_file_and_resnet_file_agree():
    a, _ = load("resnet")
    b, _ = load("resnet50")
    assert {n: d["shape"] for n, d in a.walk() if d["op"] in ("conv", "bn", "fc")} == {
        n: d["shape"] for n, d in b.walk() if d["op"] in ("conv", "bn", "fc")}


RESNET18 = BASIC + """
network resnet18(width = 64, classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(width, 7, stride=2, pad=3, bias=false) -> bn1: bn -> relu -> maxpool: maxpool(3, stride=2, pad=1)
    layer1: basic(width) * 2
    layer2: (basic(2 * width, stride=2) -> basic(2 * width))
    layer3: (basic(4 * width, stride=2) -> basic(4 * width))
    layer4: (basic(8 * width, stride=2) -> basic(8 * width))
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


RESNET_TABLE = BASIC + """
network resnet(blocks = [3, 4, 6, 3], width = 64, classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(width, 7, stride=2, pad=3, bias=false) -> bn1: bn -> relu -> maxpool: maxpool(3, stride=2, pad=1)
    for s in range(len(blocks)) {
        let c = width * 2 ** s
        layer{s + 1}: (basic(c, stride = 1 if s == 0 else 2) -> basic(c) * (blocks[s] - 1))
    }
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


def resnet_basic_params(blocks, width=64, classes=1000):
    total, cin = conv_p(3, width, 7, bias=False) + bn_p(width), width
    for s, n in enumerate(blocks):
        w = width * 2 ** s
        total += conv_p(cin, w, 3, bias=False) + conv_p(w, w, 3, bias=False) + 2 * bn_p(w)
        if s > 0:
            total += conv_p(cin, w, 1, bias=False) + bn_p(w)
        total += (n - 1) * (2 * conv_p(w, w, 3, bias=False) + 2 * bn_p(w))
        cin = w
    return total + fc_p(cin, classes)


@pytest.mark.parametrize("blocks, known", [([3, 4, 6, 3], 21_797_672), ([2, 2, 2, 2], 11_689_512)])
def test_resnet_stage_table(blocks, known):
    g = archdsl.loads(RESNET_TABLE, params={"blocks": blocks})
    for s, n in enumerate(blocks, 1):
        assert sorted({x.split(".")[1] for x in under(g, f"layer{s}")}) == [str(i) for i in range(n)]
    assert g.shape(f"layer4.{blocks[3] - 1}.relu_1") == (512, 7, 7)
    assert analyze(g).params == resnet_basic_params(blocks) == known  # torchvision's resnet34 / resnet18


def test_resnet_basic_blocks():
    g = archdsl.loads(RESNET18)
    assert g.shape("maxpool") == (64, 56, 56)
    assert [g.shape(f"layer{s}.1.relu_1") for s in (1, 2, 3, 4)] == [
        (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert "layer1.0.downsample.0" not in g and all(f"layer{s}.0.downsample.0" in g for s in (2, 3, 4))
    assert g.args("layer3.1.add") == ["layer3.1.bn2", "layer3.0.relu_1"]
    assert analyze(g).params == resnet_basic_params([2, 2, 2, 2]) == 11_689_512  # torchvision's resnet18


RESNEXT = """
# ResNeXt: the bottleneck's 3x3 conv is grouped; cardinality = groups, d channels per group
block resnext(c, card = 32, d = 4, stride = 1) {
    residual {
        reduce: conv(card * d, 1, bias=false) -> bn -> relu
        grouped: conv(card * d, 3, stride=stride, pad=1, groups=card, bias=false) -> bn -> relu
        expand: conv(c, 1, bias=false) -> bn
    } shortcut if stride != 1 or in.c != c {
        proj: conv(c, 1, stride=stride, bias=false) -> bn
    }
    relu
}
# the equivalent "aggregated transformations" form (a): `card` separate paths summed
block resnext_paths(c, card = 32, d = 4) {
    add {
        for i in range(card) {
            path{i}: (conv(d, 1, bias=false) -> conv(d, 3, pad=1, bias=false) -> conv(c, 1, bias=false))
        }
    }
}
"""


def test_resnext_cardinality_is_groups():
    g = archdsl.loads(RESNEXT + """
        network part {
            input 64 x 56 x 56
            b1: resnext(256)
            b2: resnext(256)
            b3: resnext(512, d=8, stride=2)
        }
    """)
    r = rows(analyze(g))
    C, card = 32 * 4, 32
    assert g.nodes["b1.grouped"]["attrs"]["groups"] == 32
    assert r["b1.grouped"].params == 3 * 3 * (C // card) * C == 4608  # vs 3*3*128*128 = 147456 dense
    assert r["b1.grouped"].macs == 3 * 3 * (C // card) * C * 56 * 56
    assert r["b3.grouped"].params == 3 * 3 * (256 // 32) * 256 and g.shape("b3.grouped") == (256, 28, 28)
    assert "b1.proj" in g and "b2.proj" not in g and "b3.proj" in g
    assert params_under(g, "b1") == (conv_p(64, C, 1, bias=False) + bn_p(C) + 3 * 3 * (C // card) * C + bn_p(C)
                                     + conv_p(C, 256, 1, bias=False) + bn_p(256)
                                     + conv_p(64, 256, 1, bias=False) + bn_p(256))

    paths = archdsl.loads(RESNEXT + "network p {\n input 256 x 8 x 8\n x: resnext_paths(256)\n}")
    assert len(paths.args("x.add")) == 32 and paths.args("x.add")[0] == "x.path0.2"
    grouped = archdsl.loads(RESNEXT + "network p {\n input 256 x 8 x 8\n reduce: conv(128, 1, bias=false) -> "
                                      "conv(128, 3, pad=1, groups=32, bias=false) -> conv(256, 1, bias=false)\n}")
    # 32 * (256*4 + 9*4*4 + 4*256) = 256*128 + 9*4*128 + 128*256: the two forms have the same weights
    assert analyze(paths).params == 32 * (256 * 4 + 9 * 4 * 4 + 4 * 256) == analyze(grouped).params


RESNEXT50 = RESNEXT + """
network resnext50 {
    input 3 x 224 x 224
    conv1: conv(64, 7, stride=2, pad=3, bias=false) -> bn -> relu -> maxpool(3, stride=2, pad=1)
    layer1: resnext(256) * 3
    layer2: (resnext(512, d=8, stride=2) -> resnext(512, d=8) * 3)
    layer3: (resnext(1024, d=16, stride=2) -> resnext(1024, d=16) * 5)
    layer4: (resnext(2048, d=32, stride=2) -> resnext(2048, d=32) * 2)
    global_avgpool -> flatten -> fc(1000)
}
"""


def test_resnext50_32x4d():
    g = archdsl.loads(RESNEXT50)
    total, cin = conv_p(3, 64, 7, bias=False) + bn_p(64), 64
    for s, n in enumerate([3, 4, 6, 3]):
        out, C = 256 * 2 ** s, 128 * 2 ** s
        for i in range(n):
            total += conv_p(cin, C, 1, bias=False) + conv_p(C, C, 3, groups=32, bias=False) + 2 * bn_p(C)
            total += conv_p(C, out, 1, bias=False) + bn_p(out)
            if i == 0:
                total += conv_p(cin, out, 1, bias=False) + bn_p(out)
            cin = out
    total += fc_p(2048, 1000)
    assert analyze(g).params == total == 25_028_904  # torchvision's resnext50_32x4d
    assert g.shape("layer4.2.relu_2") == (2048, 7, 7)


# ---- pre-activation, wide and stochastic-depth ResNets ------------------------------------------------


def test_preact_resnet_units():
    g, _ = load("preact_resnet")
    n = (164 - 2) // 9
    assert n == 18
    for s in (1, 2, 3):
        c, side = 64 * 2 ** (s - 1), 32 // 2 ** (s - 1)
        first, second = f"layer{s}.0", f"layer{s}.1"
        # where the shape changes: BN-ReLU before the split; the projection reads the activation
        assert g.args(f"{first}.shortcut") == [f"{first}.relu"] and g.args(f"{first}.conv1") == [f"{first}.relu"]
        assert g.args(f"{first}.add") == [f"{first}.conv3", f"{first}.shortcut"]
        assert g.nodes[f"{first}.conv1"]["attrs"]["stride"] == ((2, 2) if s > 1 else (1, 1))
        # elsewhere: identity of the raw unit input (the previous addition), BN-ReLU inside the path
        assert g.args(f"{second}.add") == [f"{second}.conv3", f"{first}.add"]
        assert g.args(f"{second}.bn1") == [f"{first}.add"] and f"{second}.shortcut" not in g
        assert g.shape(f"layer{s}.{n - 1}.add") == (c, side, side)
        assert g.shape(f"{first}.conv2") == (c // 4, side, side)
    # no ReLU after an addition; the extra activation after the last unit
    adds = [x for x, d in g.walk() if d["op"] == "add"]
    assert len(adds) == 3 * n and not any(g.op(u) == "relu" for x in adds for u in g.users(x))
    assert g.args("bn") == [f"layer3.{n - 1}.add"] and g.op(g.users("bn")[0]) == "relu"
    # depth counts the convs of the units, conv1 and fc (shortcuts are not counted)
    weighted = [x for x, d in g.walk() if d["op"] in ("conv", "fc") and not x.endswith("shortcut")]
    assert len(weighted) == 164
    with pytest.raises(ArchError, match="9n"):
        load("preact_resnet", depth=165)
    # the paper's 1.7M and 10.2M are these networks without the BN scales and shifts
    assert round(preact_params(bn=False) / 1e6, 1) == 1.7 and round(preact_params(1001, bn=False) / 1e6, 1) == 10.2


PREACT = """
# Pre-activation block (He et al. 2016): BN -> ReLU before each conv, no ReLU after the add.
# The projection shortcut starts from the pre-activated tensor (`as pre`); the identity carries
# the raw block input (`@in`).  `drop` puts dropout between the convs (Wide ResNet).
block preact(c, stride = 1, drop = 0.0) {
    bn -> relu as pre
    add {
        {
            conv1: conv(c, 3, stride=stride, pad=1, bias=false) -> bn -> relu
            if drop > 0 { dropout(drop) }
            conv2: conv(c, 3, pad=1, bias=false)
        }
        if stride != 1 or in.c != c { @pre -> shortcut: conv(c, 1, stride=stride, bias=false) } else { @in }
    }
}
"""


def test_preactivation_resnet():
    g = archdsl.loads(PREACT + """
        network preresnet(width = 8) {
            input 3 x 32 x 32
            conv1: conv(width, 3, pad=1, bias=false)
            layer1: preact(width) * 2
            layer2: (preact(2 * width, stride=2) -> preact(2 * width))
            bn -> relu -> global_avgpool -> flatten -> fc(10)
        }
    """)
    # the block starts with bn -> relu; conv1 reads the pre-activation
    assert g.args("layer1.0.bn") == ["conv1"] and g.args("layer1.0.conv1") == ["layer1.0.relu"]
    # identity: the raw block input (conv1 of the stem / the previous add), not the pre-activation
    assert g.args("layer1.0.add") == ["layer1.0.conv2", "conv1"]
    assert g.args("layer1.1.add") == ["layer1.1.conv2", "layer1.0.add"]
    # projection: from the pre-activated tensor
    assert g.args("layer2.0.shortcut") == ["layer2.0.relu"]
    assert g.args("layer2.0.add") == ["layer2.0.conv2", "layer2.0.shortcut"]
    assert g.shape("layer2.0.add") == (16, 16, 16)
    # no relu after the add: the next block's bn reads the sum
    assert g.args("layer2.0.bn") == ["layer1.1.add"]
    assert of_op(g, "dropout") == []
    assert params_under(g, "layer2") == (bn_p(8) + conv_p(8, 16, 3, bias=False)
                                         + bn_p(16) + conv_p(16, 16, 3, bias=False)
                                         + conv_p(8, 16, 1, bias=False)
                                         + 2 * (bn_p(16) + conv_p(16, 16, 3, bias=False)))


def test_wide_resnet_28_10():
    g, _ = load("wrn")
    n = (28 - 4) // 6
    for grp in (1, 2, 3):
        w, side = 160 * 2 ** (grp - 1), 32 // 2 ** (grp - 1)
        assert g.shape(f"group{grp}.{n - 1}.add") == (w, side, side)
        assert f"group{grp}.0.convShortcut" in g and f"group{grp}.1.convShortcut" not in g
        assert g.args(f"group{grp}.0.convShortcut") == [f"group{grp}.0.relu"]
    assert not any(d["op"] == "dropout" for _, d in g.walk())
    d, _ = load("wrn", drop=0.3)
    drops = [x for x, dd in d.walk() if dd["op"] == "dropout"]
    assert len(drops) == 3 * n and all(d.args(x)[0].endswith("conv1") for x in drops)
    assert d.users(drops[0]) == ["group1.0.bn2"]


WRN = PREACT + """
# Wide ResNet WRN-depth-k: three groups of n = (depth - 4) / 6 pre-activation blocks, widths 16k, 32k, 64k
network wrn(depth = 16, k = 4, drop = 0.0, classes = 10) {
    input 3 x 32 x 32
    assert (depth - 4) % 6 == 0, "WRN depth is 6n + 4"
    let n = (depth - 4) / 6
    conv1: conv(16, 3, pad=1, bias=false)
    group1: { for i in range(n) { preact(16 * k, drop=drop) } }
    group2: { for i in range(n) { preact(32 * k, stride = 2 if i == 0 else 1, drop=drop) } }
    group3: { for i in range(n) { preact(64 * k, stride = 2 if i == 0 else 1, drop=drop) } }
    bn -> relu -> global_avgpool -> flatten -> fc(classes)
}
"""


@pytest.mark.parametrize("depth, k", [(16, 1), (16, 4), (10, 2), (28, 10)])
def test_wide_resnet(depth, k):
    g = archdsl.loads(WRN, params={"depth": depth, "k": k, "drop": 0.3})
    n = (depth - 4) // 6
    for grp in (1, 2, 3):
        assert sorted({x.split(".")[1] for x in under(g, f"group{grp}")}) == [str(i) for i in range(n)]
        w = 16 * k * 2 ** (grp - 1)
        assert g.shape(f"group{grp}.{n - 1}.add") == (w, 32 // 2 ** (grp - 1), 32 // 2 ** (grp - 1))
    # WRN-d-1 has no projection in group 1 (16 -> 16 channels, stride 1); k > 1 needs one
    assert ("group1.0.shortcut" in g) == (k != 1)
    assert len(of_op(g, "dropout")) == 3 * n
    assert analyze(g).params == wrn_params(depth, k)
    if (depth, k) == (28, 10):
        assert analyze(g).params == 36_479_194  # the usual count of WRN-28-10 on CIFAR-10
    with pytest.raises(ArchError, match="WRN depth is 6n"):
        archdsl.loads(WRN, params={"depth": 17})  # (17 - 4) / 6 is not a whole number of blocks
    with pytest.raises(ArchError, match="range"):  # without the assert, range() rejects 13/6
        archdsl.loads(WRN.replace('assert (depth - 4) % 6 == 0, "WRN depth is 6n + 4"', ""), params={"depth": 17})


def test_stochastic_depth_survival_decays_linearly():
    g, _ = load("resnet110_sd")
    L = 3 * 18
    drops = [n for n, d in g.walk() if d["op"] == "drop_path"]
    assert drops == [f"layer{s}.{i}.drop_path" for s in (1, 2, 3) for i in range(18)]
    for l, node in enumerate(drops, 1):
        # p_l = 1 - l/L (1 - p_L) survives; drop_path's p is the death rate
        assert g.nodes[node]["attrs"]["p"] == pytest.approx(l / L * (1 - 0.5))
        assert g.args(f"{node.rsplit('.', 1)[0]}.add")[0] == node
    assert g.nodes[drops[-1]]["attrs"]["p"] == pytest.approx(0.5)
    # option A where the shape changes: 2x2/2 average pool, zero channels appended; identity elsewhere
    shortcuts = {n.rsplit(".", 1)[0] for n, d in g.walk() if d["op"] == "pad_channels"}
    assert shortcuts == {"layer2.0", "layer3.0"}
    assert g.args("layer2.0.pad_channels") == ["layer2.0.avgpool"] and g.args("layer2.0.avgpool") == ["layer1.17.relu_1"]
    assert g.shape("layer2.0.avgpool") == (16, 16, 16) and g.shape("layer2.0.pad_channels") == (32, 16, 16)
    assert g.args("layer1.1.add") == ["layer1.1.drop_path", "layer1.0.relu_1"]
    assert sum(d["op"] == "conv" for _, d in g.walk()) + 1 == 110  # 6n + 2 layers with weights


STOCHASTIC_DEPTH = """
# Stochastic depth: block l of L drops its residual path with probability l/L * (1 - p_last)
# (linear decay of the survival probability to p_last); drop_path is an identity at inference.
block sd_block(c, p, stride = 1) {
    residual {
        conv(c, 3, stride=stride, pad=1, bias=false) -> bn -> relu
        conv(c, 3, pad=1, bias=false) -> bn
        drop_path(p)
    } shortcut if stride != 1 or in.c != c {
        conv(c, 1, stride=stride, bias=false) -> bn
    }
    relu
}
network sd_resnet(n = 3, p_last = 0.5, width = 16) {
    input 3 x 32 x 32
    conv(width, 3, pad=1, bias=false) -> bn -> relu
    let L = 3 * n
    for s in range(3) {
        layer{s + 1}: {
            for i in range(n) {
                let l = s * n + i + 1
                sd_block(width * 2 ** s, l / L * (1 - p_last), stride = 2 if s > 0 and i == 0 else 1)
            }
        }
    }
    global_avgpool -> flatten -> fc(10)
}
"""


@pytest.mark.parametrize("n, p_last", [(3, 0.5), (18, 0.5), (2, 0.2)])
def test_stochastic_depth_linear_decay(n, p_last):
    g = archdsl.loads(STOCHASTIC_DEPTH, params={"n": n, "p_last": p_last})
    L = 3 * n
    drops = of_op(g, "drop_path")
    assert drops == [f"layer{s + 1}.{i}.drop_path" for s in range(3) for i in range(n)]
    for l, node in enumerate(drops, 1):
        assert g.nodes[node]["attrs"]["p"] == pytest.approx(l / L * (1 - p_last))
        block = node.rsplit(".", 1)[0]
        assert g.args(f"{block}.add")[0] == node  # drop_path ends the residual path, before the add
    assert g.nodes[drops[-1]]["attrs"]["p"] == pytest.approx(1 - p_last)
    r = rows(analyze(g))
    assert all(r[d].params == 0 and r[d].activations == 0 for d in drops)


# ---- DenseNet -------------------------------------------------------------------------------------------


def test_densenet121_params_and_channels():
    g, s = load("densenet121")
    params, shapes = densenet_arithmetic()
    assert s.params == params == 7_978_856
    assert [shapes[f"features.denseblock{i}"][0] for i in range(1, 5)] == [
        64 + 6 * 32, 128 + 12 * 32, 256 + 24 * 32, 512 + 16 * 32]  # 256, 512, 1024, 1024
    assert [shapes[f"features.transition{i}"][0] for i in range(1, 4)] == [256 // 2, 512 // 2, 1024 // 2]
    got = scope_shapes(g, s, depth=2)
    assert {k: got[k] for k in shapes} == shapes
    assert g.shape("features.norm5") == (1024, 7, 7) and g.shape("classifier") == (1000,)
    # 121 layers with weights: conv0, 2 per dense layer, 3 transitions, the classifier
    assert sum(d["op"] in ("conv", "fc") for _, d in g.walk()) == 1 + 2 * (6 + 12 + 24 + 16) + 3 + 1 == 121


def test_densenet121_names_are_torchvisions():
    g, _ = load("densenet121")
    for n in ("features.conv0", "features.norm0", "features.denseblock1.denselayer1.norm1",
              "features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.norm2",
              "features.denseblock1.denselayer1.conv2", "features.denseblock3.denselayer24.conv2",
              "features.transition1.norm", "features.transition1.conv", "features.transition3.pool",
              "features.denseblock4.denselayer16.norm1", "features.norm5", "classifier"):
        assert n in g, n
    assert "features.denseblock1.denselayer7.conv1" not in g and "features.transition4.conv" not in g
    assert g.op("features.transition1.pool") == "avgpool" and g.op("features.pool0") == "maxpool"
    # each dense layer concatenates its input with `growth` new maps
    assert g.shape("features.denseblock1.denselayer1.concat") == (64 + 32, 56, 56)
    check_against_replica(g, tv_densenet121(), (3, 224, 224))


def test_densenet121_reduced():
    g, s = load("densenet121", (3, 64, 64), growth=8, init=16)
    params, shapes = densenet_arithmetic(growth=8, init=16, side=64)
    assert shapes["features.denseblock1"] == (16 + 6 * 8, 16, 16) and shapes["features.denseblock4"][1:] == (2, 2)
    got = scope_shapes(g, s, depth=2)
    assert {k: got[k] for k in shapes} == shapes
    assert s.params == params


def test_densenet_channels_and_names():
    for depth, blocks in DENSENET_BLOCKS.items():
        g, s = load("densenet", depth=depth)
        growth = 48 if depth == 161 else 32
        _, shapes = densenet_arithmetic(growth=growth, init=2 * growth, blocks=blocks)
        assert {k: g.shape(f"{k}.denselayer{blocks[int(k[-1]) - 1]}.concat")
                for k in shapes if "denseblock" in k} == {k: v for k, v in shapes.items() if "denseblock" in k}
        assert {k: g.shape(f"{k}.pool") for k in shapes if "transition" in k} == {
            k: v for k, v in shapes.items() if "transition" in k}
        assert sum(d["op"] in ("conv", "fc") for _, d in g.walk()) == depth
        assert f"features.denseblock4.denselayer{blocks[3]}.conv2" in g and "features.transition4.conv" not in g
    a, _ = load("densenet")
    b, _ = load("densenet121")
    assert [(n, d["op"], d["shape"]) for n, d in a.walk()] == [(n, d["op"], d["shape"]) for n, d in b.walk()]


DENSENET = """
block dense_layer(g, bn_size = 4) {
    dense { bn -> relu -> conv(bn_size * g, 1, bias=false) -> bn -> relu -> conv(g, 3, pad=1, bias=false) }
}
block dense_block(n, g) { for i in range(n) { denselayer{i + 1}: dense_layer(g) } }
block transition(c = in.c // 2) { bn -> relu -> conv(c, 1, bias=false) -> avgpool(2, stride=2) }
network densenet(n = 4, g = 12, blocks = 3, classes = 10) {
    input 3 x 32 x 32
    conv0: conv(2 * g, 3, pad=1, bias=false)
    for b in range(blocks) {
        denseblock{b + 1}: dense_block(n, g)
        if b < blocks - 1 { transition{b + 1}: transition() }
    }
    bn -> relu -> global_avgpool -> flatten -> fc(classes)
}
"""


@pytest.mark.parametrize("n, g_", [(4, 12), (6, 32)])
def test_densenet(n, g_):
    g = archdsl.loads(DENSENET, params={"n": n, "g": g_})
    c, total, hw = 2 * g_, conv_p(3, 2 * g_, 3, bias=False), 32
    prev = "conv0"
    for b in range(1, 4):
        for i in range(1, n + 1):
            layer = f"denseblock{b}.denselayer{i}"
            # output = concat(input, new features), the input first
            assert g.args(f"{layer}.concat") == [prev, f"{layer}.conv_1"]
            assert g.shape(f"{layer}.concat") == (c + g_, hw, hw)
            total += bn_p(c) + conv_p(c, 4 * g_, 1, bias=False) + bn_p(4 * g_) + conv_p(4 * g_, g_, 3, bias=False)
            c += g_
            prev = f"{layer}.concat"
        if b < 3:
            total += bn_p(c) + conv_p(c, c // 2, 1, bias=False)
            c, hw = c // 2, hw // 2
            assert g.shape(f"transition{b}.avgpool") == (c, hw, hw)
            prev = f"transition{b}.avgpool"
    total += bn_p(c) + fc_p(c, 10)
    assert analyze(g).params == total


# ---- FractalNet -----------------------------------------------------------------------------------------


def longest_conv_path(g, start, end):
    depth = {start: 0}
    for n in g.order():
        preds = [depth[a] for a in g.args(n) if a in depth]
        if n != start and preds:
            depth[n] = max(preds) + (g.op(n) == "conv")
    return depth[end]


def test_fractalnet_joins_columns_and_depth():
    g, _ = load("fractalnet")
    C = 4
    block_in = "input"
    for b, c in enumerate((64, 128, 256, 512, 512), 1):
        block = f"fractal{b}"
        convs = [n for n, d in g.walk() if d["op"] == "conv" and n.startswith(block + ".")]
        means = [n for n, d in g.walk() if d["op"] == "mean" and n.startswith(block + ".")]
        assert len(convs) == 2 ** C - 1 == 15
        # Figure 1: the joins of a 4-column block average 2, 3, 2 and 4 columns
        assert [len(g.args(m)) for m in means] == [2, 3, 2, 4]
        assert sum(g.args(x) == [block_in] for x in convs) == C  # one conv per column reads the block input
        assert longest_conv_path(g, block_in, means[-1]) == 2 ** (C - 1) == 8
        assert g.users(means[-1]) == [f"pool{b}"] and g.shape(f"pool{b}") == (c, 32 // 2 ** b, 32 // 2 ** b)
        block_in = f"pool{b}"
    assert longest_conv_path(g, "input", "fc") == 5 * 2 ** (C - 1) == 40
    assert not any(d["op"] == "dropout" for _, d in g.walk())
    d, _ = load("fractalnet", drop=True)
    rates = sorted({x["attrs"]["p"] for _, x in d.walk() if x["op"] == "dropout"})
    assert rates == [0.1, 0.2, 0.3, 0.4]  # block 1 has none (0 %)


FRACTAL = """
# FractalNet: f_1 = conv;  f_{C+1}(x) = join(f_C(f_C(x)), conv(x)), the join an elementwise mean.
# Written literally this nests joins (mean(mean(..), conv)); the paper's join instead averages,
# in one flat mean, every column that meets at that point (Fig. 1: joins of 2, 3, 2, 4 inputs for
# four columns).  The elaborator gives the paper's join: an unlabelled, unnamed `mean` that ends
# a branch of a `mean` is merged into it (a labelled or named mean is kept, so literal nesting
# stays expressible).  `fractal3_flat` writes the three-column flat structure out by hand with
# named tensors, for comparison.
block cbr(c) { conv(c, 3, pad=1) -> bn -> relu }
block fractal(c, cols) {
    if cols == 1 {
        cbr(c)
    } else {
        mean {
            fractal(c, cols - 1) -> fractal(c, cols - 1)
            cbr(c)
        }
    }
}
block fractal3_flat(c) {
    mean {
        cbr(c) -> cbr(c)        # column 3, first two convs
        cbr(c)                  # column 2, first conv
    } as j1
    mean {
        @j1 -> cbr(c) -> cbr(c) # column 3, last two convs
        @j1 -> cbr(c)           # column 2, second conv
        @in -> cbr(c)           # column 1
    }
}
network fractalnet(cols = 3, widths = [8, 16], classes = 10, flat = false) {
    input 3 x 32 x 32
    features: {
        for c in widths {
            if flat { fractal3_flat(c) } else { fractal(c, cols) }
            maxpool(2)
        }
    }
    global_avgpool -> flatten -> fc(classes)
}
"""


def trailing_zeros(j):
    return (j & -j).bit_length() - 1


@pytest.mark.parametrize("C", [3, 4])
def test_fractalnet_recursive(C):
    g = archdsl.loads(FRACTAL, params={"cols": C})
    for b, (cin, c) in enumerate([(3, 8), (8, 16)]):
        block = f"features.{2 * b}"
        block_in = "input" if b == 0 else "features.1"
        assert g.op(block_in) in ("input", "maxpool")
        convs, means = of_op(g, "conv", block), of_op(g, "mean", block)
        assert len(convs) == 2 ** C - 1  # n(1) = 1, n(C+1) = 2 n(C) + 1
        # one join after every second conv of the deepest column (2^(C-1) convs): 2^(C-2) joins;
        # join j (1-based) is where 2 + tz(j) columns meet (tz = trailing zero bits): 2, 3, 2, 4 for C = 4
        assert [len(g.args(m)) for m in means] == [2 + trailing_zeros(j) for j in range(1, 2 ** (C - 2) + 1)]
        assert sum(len(g.args(m)) for m in means) == 2 ** (C - 1) - 1 + 2 ** (C - 2)  # the nested form's inputs
        last = means[-1]
        assert len(g.args(last)) == C and g.users(last) == [f"features.{2 * b + 1}"]
        # the flat join's inputs, deepest column first; the shallowest is the single conv on the block input
        assert g.args(last)[-1] == f"{block}.cbr.relu" and g.args(f"{block}.cbr.conv") == [block_in]
        # one conv per column reads the block input; the deepest column has 2^(C-1) convs
        assert len([x for x in convs if g.args(x) == [block_in]]) == C
        assert longest_conv_path(g, block_in, last) == 2 ** (C - 1)
        assert params_under(g, block) == (C * conv_p(cin, c, 3) + (2 ** C - 1 - C) * conv_p(c, c, 3)
                                          + (2 ** C - 1) * bn_p(c))
    assert g.shape("features.3") == (16, 8, 8)


def test_fractalnet_flat_joins_written_out_match_the_recursive_form():
    flat = archdsl.loads(FRACTAL, params={"flat": True})
    rec = archdsl.loads(FRACTAL, params={"cols": 3})
    means = of_op(flat, "mean", "features.0")
    assert [len(flat.args(m)) for m in means] == [2, 3]
    assert len(of_op(flat, "conv", "features.0")) == 2 ** 3 - 1
    assert flat.args(means[1]) == ["features.0.cbr_4.relu", "features.0.cbr_5.relu", "features.0.cbr_6.relu"]
    assert flat.args("features.0.cbr_6.conv") == ["input"] and flat.args("features.0.cbr_5.conv") == [means[0]]
    assert longest_conv_path(flat, "input", means[1]) == 4
    assert analyze(flat).params == analyze(rec).params
    arity = [sorted(len(x.args(m)) for m in of_op(x, "mean", "features.0")) for x in (rec, flat)]
    assert arity[0] == arity[1] == [2, 3]


# ---- SqueezeNet and Network in Network ------------------------------------------------------------------


@pytest.mark.parametrize("version, fires, pools", [
    (1.0, [3, 4, 5, 7, 8, 9, 10, 12], [2, 6, 11]),
    (1.1, [3, 4, 6, 7, 9, 10, 11, 12], [2, 5, 8]),
])
def test_squeezenet_names_are_torchvisions(version, fires, pools):
    g, _ = load("squeezenet", version=version)
    assert [n for n, d in g.walk() if d["op"] == "maxpool"] == [f"features.{i}" for i in pools]
    for k, i in enumerate(fires):
        s = 16 * (1 + k // 2)
        f = f"features.{i}"
        assert [g.shape(f"{f}.{x}")[0] for x in ("squeeze", "expand1x1", "expand3x3")] == [s, 4 * s, 4 * s]
        assert g.args(f"{f}.concat") == [f"{f}.expand1x1_activation", f"{f}.expand3x3_activation"]
        assert g.nodes[f"{f}.expand3x3"]["attrs"]["pad"] == (1, 1, 1, 1)
    assert g.shape("features.0")[0] == (96 if version == 1.0 else 64)
    assert g.op("classifier.0") == "dropout" and g.shape("classifier.1") == (1000, 13, 13)
    assert g.op("classifier.2") == "relu" and g.shape("classifier.3") == (1000, 1, 1)
    assert g.shape(g.outputs[0]) == (1000,)


SQUEEZENET = """
# SqueezeNet 1.0: fire module = squeeze 1x1 -> concat(expand 1x1, expand 3x3).
# Fire i (i = 2..9) has 16 * (1 + (i - 2) // 2) squeeze and 4x as many expand filters of each kind.
block fire(s, e1, e3) {
    squeeze: conv(s, 1) -> relu
    concat {
        expand1x1: conv(e1, 1) -> relu
        expand3x3: conv(e3, 3, pad=1) -> relu
    }
}
network squeezenet(classes = 1000) {
    input 3 x 224 x 224
    conv1: conv(96, 7, stride=2) -> relu -> maxpool(3, stride=2, ceil_mode=true)
    for i in range(2, 10) {
        let s = 16 * (1 + (i - 2) // 2)
        fire{i}: fire(s, 4 * s, 4 * s)
        if i == 4 or i == 8 { maxpool(3, stride=2, ceil_mode=true) }
    }
    dropout(0.5) -> conv10: conv(classes, 1) -> relu -> global_avgpool -> flatten
}
"""


def test_squeezenet_fire_modules():
    g = archdsl.loads(SQUEEZENET)
    # fire: the squeeze output feeds both expands; concat order is (1x1, 3x3)
    assert g.args("fire2.expand1x1") == ["fire2.relu"] and g.args("fire2.expand3x3") == ["fire2.relu"]
    assert g.args("fire2.concat") == ["fire2.relu_1", "fire2.relu_2"]
    a = out_size(224, 7, 2)  # 109
    b = out_size(a, 3, 2, ceil=True)  # 54
    c = out_size(b, 3, 2, ceil=True)  # 27
    d = out_size(c, 3, 2, ceil=True)  # 13
    assert (a, b, c, d) == (109, 54, 27, 13)
    assert g.shape("conv1") == (96, 109, 109) and g.shape("fire2.concat") == (128, 54, 54)
    assert g.shape("fire8.concat") == (512, 27, 27) and g.shape("conv10") == (1000, 13, 13)
    total, cin = conv_p(3, 96, 7), 96
    for i in range(2, 10):
        s = 16 * (1 + (i - 2) // 2)
        assert g.nodes[f"fire{i}.squeeze"]["attrs"]["out"] == s
        total += conv_p(cin, s, 1) + conv_p(s, 4 * s, 1) + conv_p(s, 4 * s, 3)
        cin = 8 * s
    total += conv_p(cin, 1000, 1)
    assert analyze(g).params == total == 1_248_424  # torchvision's squeezenet1_0

    torch = pytest.importorskip("torch")
    nn = torch.nn
    with torch.device("meta"):
        def fire(cin, s, e):
            return nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)
        x = nn.MaxPool2d(3, 2, ceil_mode=True)(nn.Conv2d(3, 96, 7, 2)(torch.empty(1, 3, 224, 224)))
        assert tuple(x.shape[1:]) == g.shape("maxpool")
        cin = 96
        for i in range(2, 10):
            s = 16 * (1 + (i - 2) // 2)
            sq, e1, e3 = fire(cin, s, 4 * s)
            y = sq(x)
            x = torch.cat([e1(y), e3(y)], 1)
            assert tuple(x.shape[1:]) == g.shape(f"fire{i}.concat")
            if i in (4, 8):
                x = nn.MaxPool2d(3, 2, ceil_mode=True)(x)
            cin = 8 * s


def test_network_in_network_has_no_fc():
    g, _ = load("nin")
    convs = [n for n, d in g.walk() if d["op"] == "conv"]
    assert len(convs) == 9 and all(g.op(g.users(c)[0]) == "relu" for c in convs)
    assert [g.nodes[c]["attrs"]["kernel"] for c in convs] == [(5, 5), (1, 1), (1, 1)] * 2 + [(3, 3), (1, 1), (1, 1)]
    assert not any(d["op"] == "fc" for _, d in g.walk())
    assert (g.shape("pool1"), g.shape("pool2")) == ((96, 16, 16), (192, 8, 8))
    assert [out_size(32, 3, 2, ceil=True), out_size(16, 3, 2, ceil=True)] == [16, 8]  # Caffe rounds up
    assert g.shape("mlpconv3.cccp2") == (10, 8, 8) and g.shape(g.outputs[0]) == (10,)


NIN = """
# Network in Network: mlpconv = a k x k conv followed by two 1x1 convs (the "micro network"),
# each with a ReLU; no fc layers: the last mlpconv makes one map per class, then global average pooling.
block mlpconv(c, k, pad = 0, c1 = c, c2 = c1) {
    conv(c, k, pad=pad) -> relu -> conv(c1, 1) -> relu -> conv(c2, 1) -> relu
}
network nin(classes = 10) {
    input 3 x 32 x 32
    mlp1: mlpconv(192, 5, pad=2, c1=160, c2=96) -> maxpool(3, stride=2, pad=1) -> dropout
    mlp2: mlpconv(192, 5, pad=2) -> avgpool(3, stride=2, pad=1) -> dropout
    mlp3: mlpconv(192, 3, pad=1, c2=classes)
    gap: global_avgpool -> flatten
}
"""


def test_network_in_network():
    g = archdsl.loads(NIN)
    for b in ("mlp1", "mlp2", "mlp3"):
        convs = of_op(g, "conv", b)
        assert [g.nodes[c]["attrs"]["kernel"] for c in convs][1:] == [(1, 1), (1, 1)]
        assert [g.op(g.args(c)[0]) for c in convs[1:]] == ["relu", "relu"]
    assert g.shape("mlp1.conv_2") == (96, 32, 32) and g.shape("maxpool") == (96, 16, 16)
    assert g.shape("mlp2.conv_2") == (192, 16, 16) and g.shape("avgpool") == (192, 8, 8)
    assert g.shape("mlp3.conv_2") == (10, 8, 8) and g.shape("gap") == (10, 1, 1)
    assert of_op(g, "fc") == [] and g.shape(g.outputs[0]) == (10,)
    total = (conv_p(3, 192, 5) + conv_p(192, 160, 1) + conv_p(160, 96, 1)
             + conv_p(96, 192, 5) + 2 * conv_p(192, 192, 1)
             + conv_p(192, 192, 3) + conv_p(192, 192, 1) + conv_p(192, 10, 1))
    assert analyze(g).params == total


# ---- the command line ------------------------------------------------------------------------------


def test_cli_summary_json_of_a_reduced_resnet(capsys):
    code, out, err = run(capsys, "summary", path("resnet50"), "--set", "width=8", "--input", "3x64x64", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    params, macs, _ = resnet50_arithmetic(width=8, side=64)
    assert data["params_env"] == {"classes": 1000, "width": 8}
    assert (data["totals"]["params"], data["totals"]["macs"]) == (params, macs)
    assert data["outputs"] == ["fc"]


def test_cli_googlenet_aux_switch(capsys):
    code, out, _ = run(capsys, "check", path("googlenet"))
    assert code == 0 and out.strip().endswith("outputs: logits (fc), aux1 (aux1.fc2), aux2 (aux2.fc2)")
    code, out, _ = run(capsys, "check", path("googlenet"), "--set", "aux=false")
    assert code == 0 and out.strip().endswith("outputs: logits (fc)")


def test_cli_vgg16_table(capsys):
    code, out, err = run(capsys, "summary", path("vgg16"))
    assert code == 0 and err == ""
    assert "138,357,544" in out and f"{15_237_608 + 7 * 7 * 512:,}" in out  # the table + adaptive pool
    code, out, err = run(capsys, "summary", path("densenet121"), "--depth", "2")
    assert code == 0 and "7,978,856" in out and "features.denseblock3" in out


# ---- replicas of torchvision's module structure (on the meta device: no memory, no torchvision) ------


def tv_vgg16(classes=1000) -> nn.Module:
    with torch.device("meta"):
        layers, c = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = v

        class VGG(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(*layers)
                self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
                self.classifier = nn.Sequential(
                    nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                    nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, classes))

            def forward(self, x):
                return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

        return VGG()


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def tv_resnet50(classes=1000) -> nn.Module:
    with torch.device("meta"):
        class ResNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.inplanes = 64
                self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
                self.bn1 = nn.BatchNorm2d(64)
                self.relu = nn.ReLU(inplace=True)
                self.maxpool = nn.MaxPool2d(3, 2, 1)
                self.layer1 = self._make_layer(64, 3)
                self.layer2 = self._make_layer(128, 4, 2)
                self.layer3 = self._make_layer(256, 6, 2)
                self.layer4 = self._make_layer(512, 3, 2)
                self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
                self.fc = nn.Linear(2048, classes)

            def _make_layer(self, planes, blocks, stride=1):
                downsample = None
                if stride != 1 or self.inplanes != planes * 4:
                    downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                               nn.BatchNorm2d(planes * 4))
                layers = [_Bottleneck(self.inplanes, planes, stride, downsample)]
                self.inplanes = planes * 4
                layers += [_Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
                return nn.Sequential(*layers)

            def forward(self, x):
                x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
                x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
                return self.fc(torch.flatten(self.avgpool(x), 1))

        return ResNet()


class _DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], 1)


def tv_densenet121(growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, classes=1000) -> nn.Module:
    with torch.device("meta"):
        features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(init)),
            ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, 1))]))
        c = init
        for i, n in enumerate(blocks):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", _DenseLayer(c + j * growth, growth, bn_size)) for j in range(n)))
            features.add_module(f"denseblock{i + 1}", block)
            c += n * growth
            if i != len(blocks) - 1:
                features.add_module(f"transition{i + 1}", nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm2d(c)), ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(c, c // 2, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2))])))
                c //= 2
        features.add_module("norm5", nn.BatchNorm2d(c))

        class DenseNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = features
                self.classifier = nn.Linear(c, classes)

            def forward(self, x):
                x = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))
                return self.classifier(torch.flatten(x, 1))

        return DenseNet()
