"""The model zoo: every network in examples/*.arch, checked against arithmetic and PyTorch.

For every file (and every variant its header documents):

- it elaborates, and its parameter count is the one its header states, which is also what the
  arithmetic written out below gives (from the layer widths, as PyTorch counts parameters) and
  what the state dict our node names imply holds;
- every conv, pool and fc node has the output shape torch.nn.functional gives for its input, on
  `meta` tensors (no memory, no time);
- the reduced-size variant its header's "Smaller:" line gives elaborates, has the arithmetic's
  (smaller) count, and runs end to end through the PyTorch reference backend;
- the structure each paper (or torchvision) describes is there: names, strides, groups, joins,
  shortcuts, drop rates.

The only totals written as numbers are published ones (torchvision's documented counts, which
the issue lists) and the ones the headers state; each is also recomputed by the arithmetic.
torchvision itself (state-dict keys, shapes and outputs of the torchvision models) is compared
in tests/test_torchvision_compat.py; here the torchvision names are spot-checked, and torchvision
is not needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import networkx as nx
import pytest
import torch
import torch.nn.functional as F

import archdsl
from archdsl import ArchError
from archdsl.ops import OPS

from arith import bn_p, conv_p, fc_p, out_size, replay
from smaller import smaller
from test_examples import aux_params, densenet_arithmetic, googlenet_main_params, state_dict_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


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


# Table 1 of the GoogLeNet paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


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


def googlenet_params(classes=1000, aux=True, side=224, **_):
    """The paper's GoogLeNet (examples/googlenet.arch), from tests/test_examples.py's arithmetic."""
    assert classes == 1000
    s = out_size(side, 7, 2, 3)
    for _ in range(3):  # pool1, pool2, pool3 (3x3/2, rounding up) before inception 4a
        s = out_size(s, 3, 2, ceil=True)
    side4 = out_size(s, 5, 3, ceil=True)  # the auxiliary heads' 5x5/3 average pool
    return googlenet_main_params() + (aux_params(512, side=side4) + aux_params(528, side=side4) if aux else 0)


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


# ---- the zoo ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    file: str  # examples/<file>.arch
    params: dict  # --set values; {} is the file's default network
    total: int  # the count the header states
    source: str  # where that number comes from
    arithmetic: Callable[..., int]

    @property
    def id(self) -> str:
        return "-".join([self.file] + [f"{k}={v}" for k, v in self.params.items()])


TV = "torchvision's documented count"
ARITH = "the header's arithmetic"

ZOO = [
    # the five examples of tests/test_examples.py
    Variant("lenet5", {}, 61_706, ARITH, lenet5_params),
    Variant("vgg16", {}, 138_357_544, TV + " (vgg16)", vgg_params),
    Variant("googlenet", {}, 13_378_280, ARITH + " (Table 1's widths, with the auxiliary heads)", googlenet_params),
    Variant("googlenet", {"aux": False}, 6_998_552, ARITH, googlenet_params),
    Variant("resnet50", {}, 25_557_032, TV + " (resnet50)", resnet_params),
    Variant("densenet121", {}, 7_978_856, TV + " (densenet121)", densenet_params),
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
    "lenet5": ["--input 1x28x28"],  # (lenet5.arch has no Smaller: line; tests/test_examples.py's size)
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
REDUCED_CASES = [(f, args) for f, all_args in REDUCED.items() for args in all_args]
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


@lru_cache(maxsize=None)
def _load(file: str, params: tuple, input_shape):
    g = archdsl.load(EXAMPLES / f"{file}.arch", params=dict(params), input_shape=input_shape)
    return g, archdsl.analyze(g)


def load(file: str, input_shape=None, **params):
    """The graph and its summary (cached: the tests only read them)."""
    return _load(file, tuple(sorted(params.items())), input_shape)


def header(file: str) -> str:
    """The leading comment block, with the `#` and line breaks folded into single spaces."""
    head = (EXAMPLES / f"{file}.arch").read_text().split("\n\n")[0]
    return " ".join(line.lstrip("#").strip() for line in head.splitlines())


# ---- PyTorch as the reference for shapes and state-dict keys ----------------------------------------

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


# ---- every file, every variant -----------------------------------------------------------------


def test_every_example_is_in_the_zoo():
    files = sorted(p.stem for p in EXAMPLES.glob("*.arch"))
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
    assert replay(g) >= 5


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


# ---- AlexNet ---------------------------------------------------------------------------------------


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


# ---- VGG -------------------------------------------------------------------------------------------


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


# ---- GoogLeNet (torchvision) -------------------------------------------------------------------


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


# ---- ResNet family ----------------------------------------------------------------------------


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


def longest_conv_path(g, start, end):
    depth = {start: 0}
    for n in nx.topological_sort(g):
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


def test_network_in_network_has_no_fc():
    g, _ = load("nin")
    convs = [n for n, d in g.walk() if d["op"] == "conv"]
    assert len(convs) == 9 and all(g.op(g.users(c)[0]) == "relu" for c in convs)
    assert [g.nodes[c]["attrs"]["kernel"] for c in convs] == [(5, 5), (1, 1), (1, 1)] * 2 + [(3, 3), (1, 1), (1, 1)]
    assert not any(d["op"] == "fc" for _, d in g.walk())
    assert (g.shape("pool1"), g.shape("pool2")) == ((96, 16, 16), (192, 8, 8))
    assert [out_size(32, 3, 2, ceil=True), out_size(16, 3, 2, ceil=True)] == [16, 8]  # Caffe rounds up
    assert g.shape("mlpconv3.cccp2") == (10, 8, 8) and g.shape(g.outputs[0]) == (10,)
