"""Fuzzing the PyTorch importer (`archdsl.from_torch` / `archdsl import`) with random hand-written CNNs.

A seeded generator (`Gen`) draws modules the way people write them, out of what the importer maps:
Conv2d of every geometry (kernel, stride, padding incl. 'same'/'valid', dilation, groups, depthwise,
bias), BatchNorm2d (eps, momentum, affine), the activations (modules, functions, methods, in place
or not), max / average / adaptive pooling (padding, dilation, ceil_mode, count_include_pad; modules
and functions), nearest-neighbour upsampling (by factors or to a size), Dropout, LRN, Softmax,
Linear (on a feature map too), and heads (global pooling, `mean`, `view`, `reshape`, `flatten`,
Linear / MLP with BatchNorm1d, LayerNorm, Dropout, Softmax). They are put together in nn.Sequential
nests and custom nn.Module subclasses (the top module too is one or the other): forwards mixing
modules and functional calls, residual adds (`x + f(x)`, `y += proj(x)`, pre-activation blocks whose
in-place activation overwrites the x the shortcut reads), concatenations and sums of branches, dense
`cat([x, f(x)])` and DenseNet's loop, squeeze-excitation gates (`x * sigmoid(...)`), channel shuffle
and `chunk`, loops over nn.ModuleList / nn.ModuleDict, stages of identical blocks and ResNet-like
stages of one class with different arguments (the importer turns both into parametric blocks).
Shapes stay valid because every drawn layer is run on the current C×H×W before the next one is
drawn; a module whose output barely depends on its input is redrawn. Some attribute names are
awkward on purpose: keywords of the .arch language and of Python, op names, `-`, `input`.

For each valid module (float64, random weights and BN statistics away from 1/0): `from_torch`
succeeds, the text passes `archdsl check`, `build_torch` loads the module's state_dict strictly
and computes the same output (`import_and_check`), and a second import gives the same text.
Modules the importer must refuse (a layer or a call archdsl has no op for, data-dependent
control flow, shared weights, a number naming a module outside a sequence, ...) raise
`ArchError` and nothing else, and the CLI exits 2 leaving its output file as it was.

The fast tier draws 15 valid modules and one refused module of each of the 29 kinds, and
checks that another process (another string-hash seed) writes the same text (about 6 s); the
slow tier draws 300 valid and 100 refused modules (about 25 s).  Not generated as valid: a
top-level nn.Sequential with a forward of its own (refused), parallel branches or
DenseNet layers in an uncalled nn.ModuleList (refused: the list is not one piece), a module
named like a join made before it (`self.add` after `x + y`: refused), modules that return
several tensors or take several, train-mode behaviour.  Bugs found here have a named
regression test at the end of the file.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl
from archdsl.cli import main as cli_main
from archdsl.errors import ArchError
from test_import import import_and_compare, randomize

SHAPE = (3, 16, 16)
MAX_C = 24

# attribute names that must not break the .arch text: keywords, op names, `-`
AWKWARD = ["block", "network", "input", "output", "let", "if", "for", "in", "as", "residual", "shortcut", "dense",
           "concat", "add", "mean", "mul", "true", "false", "and", "or", "not", "def", "sequence", "x", "import",
           "conv", "bn", "relu", "fc", "sigmoid", "flatten", "maxpool", "dropout", "identity", "i", "c", "stride",
           "_", "_0", "a-b", "layer-1", "ReLU", "Conv2d", "block1", "net", "self", "input_", "t1", "chain"]
# a number names a module only in a sequence (nn.Sequential, nn.ModuleList): elsewhere it is refused;
# a join's name (`add`) names no branch of that join: the import may write the branch after the join
JOINS = ("add", "concat", "mul")
ATTRIBUTES = ("steps", "training", "forward", "body", "proj", "names", "join")  # the classes' own attributes


# ---- module classes the generator composes ------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNetV2 helper (the importer maps a function of this name to its op)."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


FUNCS = {
    "F.relu": F.relu, "torch.relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "F.silu": F.silu,
    "F.relu6": F.relu6, "F.hardswish": F.hardswish, "F.hardsigmoid": F.hardsigmoid, ".relu": lambda x: x.relu(),
    ".sigmoid": lambda x: x.sigmoid(), "F.max_pool2d": lambda x: F.max_pool2d(x, 2),
    "F.avg_pool2d": lambda x: F.avg_pool2d(x, 2, ceil_mode=True), "F.dropout": lambda x: F.dropout(x, 0.2, False),
    "contiguous": lambda x: x.contiguous(), "F.relu_inplace": lambda x: F.relu(x, inplace=True),
    ".relu_": lambda x: x.relu_(), "F.hardswish_inplace": lambda x: F.hardswish(x, inplace=True),
    "F.max_pool2d_3s1": lambda x: F.max_pool2d(x, 3, stride=1, padding=1),
    "F.avg_pool2d_3s2": lambda x: F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "F.max_pool2d_ceil": lambda x: F.max_pool2d(x, 3, 2, 0, 1, True),
}
SHAPE_KEEPING = [k for k in FUNCS if "pool" not in k]


class Chain(nn.Module):
    """A custom forward: named children and functional calls in a fixed order."""

    def __init__(self, steps):
        super().__init__()
        self.steps = []
        for kind, name, value in steps:
            if kind == "mod":
                self.add_module(name, value)
            self.steps.append((kind, name))

    def forward(self, x):
        for kind, name in self.steps:
            x = getattr(self, name)(x) if kind == "mod" else FUNCS[name](x)
        return x


class ResidualAdd(nn.Module):
    """x + body(x), body(x) + proj(x), with an optional activation after the add."""

    def __init__(self, body, proj=None, order=0, act=None):
        super().__init__()
        self.body, self.proj, self.order, self.act = body, proj, order, act

    def forward(self, x):
        y = self.body(x)
        s = self.proj(x) if self.proj is not None else x
        if self.order == 3:
            y += s
            out = y
        elif self.order == 4:
            out = y.add(s)
        else:
            out = y + s if self.order == 0 else (s + y if self.order == 1 else torch.add(s, y))
        return FUNCS[self.act](out) if self.act else out


class PreAct(nn.Module):
    """Pre-activation residual: an in-place act on x, whose overwritten value the shortcut reads."""

    def __init__(self, act, body, functional):
        super().__init__()
        self.act, self.body, self.functional = act, body, functional

    def forward(self, x):
        y = F.relu(x, inplace=True) if self.functional else self.act(x)
        return self.body(y) + x


class Unit(nn.Module):
    """A parametric block: conv(c_in -> c_out, stride) -> bn -> relu, with a shortcut (projected
    where the shape changes), as ResNet's blocks are written; instances differ in their arguments."""

    def __init__(self, c_in, c_out, stride, residual, k=3):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = None
        if residual and (stride != 1 or c_in != c_out):
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        if not self.residual:
            return out
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class DenseLoop(nn.ModuleDict):
    """DenseNet's block, as torchvision writes it (a ModuleDict with a forward): each layer reads
    the concatenation of all the features so far."""

    def __init__(self, layers):
        super().__init__({f"layer{i + 1}": layer for i, layer in enumerate(layers)})

    def forward(self, x):
        features = [x]
        for _name, layer in self.items():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Branches(nn.Module):
    """Parallel branches (named attributes), joined by a channel concat or a sum."""

    def __init__(self, branches, join="cat", names=None):
        super().__init__()
        self.names, self.join = names, join
        for name, b in zip(names, branches):
            self.add_module(name, b)

    def forward(self, x):
        outs = [getattr(self, name)(x) for name in self.names]
        if self.join == "cat":
            return torch.cat(outs, 1) if len(self.names) == 2 else torch.cat(tuple(outs), dim=-3)
        total = outs[0]
        for o in outs[1:]:
            total = total + o
        return total


class DenseCat(nn.Module):
    def __init__(self, body, first=True):
        super().__init__()
        self.body, self.first = body, first

    def forward(self, x):
        return torch.cat([x, self.body(x)] if self.first else [self.body(x), x], dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, gate="sigmoid", pool="adaptive", gate_first=False):
        super().__init__()
        self.pool_kind, self.gate, self.gate_first = pool, gate, gate_first
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = self.avgpool(x) if self.pool_kind == "adaptive" else x.mean((2, 3), keepdim=True)
        s = FUNCS[self.gate](self.fc2(F.relu(self.fc1(s))))
        return (s * x if self.gate_first else x * s) if self.pool_kind == "adaptive" else \
            (torch.mul(s, x) if self.gate_first else x.mul(s))


class Shuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class SplitHalf(nn.Module):
    """ShuffleNet's unit: half the channels through `body`, the other half as they are."""

    def __init__(self, body, method=True):
        super().__init__()
        self.body, self.method = body, method

    def forward(self, x):
        a, b = x.chunk(2, dim=1) if self.method else torch.chunk(x, 2, 1)
        return torch.cat((a, self.body(b)), dim=1)


class ListLoop(nn.Module):
    def __init__(self, layers, as_dict=False, names=None):
        super().__init__()
        self.as_dict = as_dict
        self.layers = nn.ModuleDict(dict(zip(names, layers))) if as_dict else nn.ModuleList(layers)

    def forward(self, x):
        for layer in (self.layers.values() if self.as_dict else self.layers):
            x = layer(x)
        return x


class Head(nn.Module):
    """A classifier: features, then a flattening (module, function, view, reshape or a spatial mean),
    then `fc` (a Linear or a small MLP, maybe with BatchNorm1d / Softmax)."""

    def __init__(self, body, flat, fc, how, size=1):
        super().__init__()
        self.body, self.flat_kind, self.fc = body, how, fc
        self.flat, self.pick_size = flat, size

    def forward(self, x):
        x = self.body(x)
        if self.flat_kind == "module":
            x = self.flat(x)
        elif self.flat_kind == "torch.flatten":
            x = torch.flatten(x, 1)
        elif self.flat_kind == "mean":
            x = x.mean((2, 3))
        elif self.flat_kind == "torch.mean":
            x = torch.mean(x, dim=[-2, -1])
        elif self.flat_kind == "view":
            x = x.view(x.size(0), -1)
        elif self.flat_kind == "F.adaptive":
            x = F.adaptive_avg_pool2d(x, self.pick_size).view(-1, x.shape[1])
        else:
            x = x.reshape(x.shape[0], -1)
        return self.fc(x)


# ---- the generator ------------------------------------------------------------------------------


def out_shape(module: nn.Module, shape: tuple) -> tuple | None:
    """The module's output shape on a 1×shape input, or None if it does not run or empties a dim."""
    try:
        with torch.no_grad():
            y = module.double().eval()(torch.zeros(1, *shape, dtype=torch.float64))
    except RuntimeError:
        return None
    return tuple(y.shape[1:]) if y.numel() > 0 else None


class Gen:
    """Draws factories (callables that build a fresh module) with the shapes they produce, so that
    a block drawn once can be built several times (identical submodules)."""

    def __init__(self, seed: int, awkward: float = 0.15):
        self.rng = random.Random(seed)
        self.awkward = awkward

    def pick(self, *xs):
        return self.rng.choice(xs)

    def coin(self, p=0.5) -> bool:
        return self.rng.random() < p

    def names(self, n: int, base: str, avoid=()) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            name = self.rng.choice(AWKWARD) if self.coin(self.awkward) else f"{base}{len(out) + 1}"
            if name not in out and name not in (*ATTRIBUTES, *avoid):
                out.append(name)
        return out

    # -- leaf layers
    def conv(self, shape):
        c, h, w = shape
        for _ in range(20):
            out = self.rng.randint(1, MAX_C)
            k = self.pick(1, 1, 3, 3, 2, 5, (1, 3), (3, 1))
            stride = self.pick(1, 1, 1, 2, (1, 2))
            dil = self.pick(1, 1, 1, 2)
            pad = self.pick(0, 1, 1, 2, "same", "valid", (0, 1))
            if pad == "same" and stride != 1:
                pad = 1
            groups = self.pick(*[g for g in (1, 1, 1, 2, 3, 4, c) if c % g == 0 and out % g == 0] or [1])
            if groups == c and self.coin():
                out = c  # depthwise
            kw = dict(kernel_size=k, stride=stride, padding=pad, dilation=dil, groups=groups, bias=self.coin())
            f = partial(nn.Conv2d, c, out, **kw)
            s = out_shape(f(), shape)
            if s is not None:
                return f, s
        return partial(nn.Conv2d, c, c, 1), shape

    def pool(self, shape):
        c, h, w = shape
        for _ in range(20):
            kind = self.pick("max", "avg", "adaptive", "adaptive1", *(("up",) if h * w <= 256 else ()))
            k = self.pick(2, 3, 2, (2, 3))
            stride = self.pick(None, 1, 2, 2)
            kmin = min(k) if isinstance(k, tuple) else k
            pad = self.pick(0, 0, kmin // 2)
            ceil = self.coin(0.3)
            if kind == "max":
                d = self.pick(1, 1, 2)
                f = partial(nn.MaxPool2d, k, stride, pad, d, ceil_mode=ceil)
            elif kind == "avg":
                cip = self.coin(0.7)
                f = partial(nn.AvgPool2d, k, stride, pad, ceil, cip)
            elif kind == "up":  # nearest-neighbour upsampling by whole factors
                f = self.pick(partial(nn.Upsample, scale_factor=self.pick(2, (2, 1), (1, 3))),
                              partial(nn.UpsamplingNearest2d, scale_factor=2), partial(nn.Upsample, size=(2 * h, w)))
            elif kind == "adaptive":
                size = self.pick(1, 2, (2, 1), min(h, w))
                f = partial(nn.AdaptiveAvgPool2d, size)
            else:
                f = partial(nn.AdaptiveAvgPool2d, (1, 1))
            s = out_shape(f(), shape)
            if s is not None:
                return f, s
        return nn.Identity, shape

    def act(self):
        return self.pick(nn.ReLU, partial(nn.ReLU, inplace=True), nn.Sigmoid, nn.Tanh, nn.ReLU6, nn.Hardswish,
                         nn.Hardsigmoid, nn.SiLU, nn.Identity, nn.GELU, partial(nn.GELU, approximate="tanh"),
                         partial(nn.Dropout, 0.3))

    def leaf(self, shape):
        r = self.rng.random()
        if r < 0.4:
            return self.conv(shape)
        if r < 0.55:
            return partial(nn.BatchNorm2d, shape[0], eps=self.pick(1e-5, 1e-3), momentum=self.pick(0.1, 0.01),
                           affine=self.coin(0.8)), shape
        if r < 0.75:
            return self.act(), shape
        if r < 0.8:
            return self.pick(partial(nn.LocalResponseNorm, self.pick(2, 3, 5), alpha=1e-3, k=2.0),
                             partial(nn.Softmax, dim=1)), shape
        if r < 0.83:  # nn.Linear on a feature map: along W
            w = self.rng.randint(2, 8)
            return partial(nn.Linear, shape[2], w, bias=self.coin()), (*shape[:2], w)
        return self.pool(shape)

    # -- blocks
    def sequential(self, shape, depth, n=None):
        n = n or self.rng.randint(1, 4)
        parts = []
        for _ in range(n):
            f, shape = self.block(shape, depth + 1) if self.coin(0.3) and depth < 3 else self.leaf(shape)
            parts.append(f)
        return (lambda: nn.Sequential(*[p() for p in parts])), shape

    def conv_bn_act(self, shape, same=False):
        """conv -> bn -> act, the most common block; `same`: keeps the shape (for residuals)."""
        if same:
            c = shape[0]
            k = self.pick(1, 3)
            groups = self.pick(1, c)
            f = partial(nn.Conv2d, c, c, k, 1, k // 2, groups=groups, bias=self.coin(0.3))
            s = shape
        else:
            f, s = self.conv(shape)
        bn = self.coin(0.8)
        act = self.act() if self.coin(0.7) else None
        fn = self.pick(None, None, *SHAPE_KEEPING)
        names = self.names(3, "op")
        steps = lambda: [("mod", names[0], f())] + ([("mod", names[1], nn.BatchNorm2d(s[0]))] if bn else []) + \
            ([("mod", names[2], act())] if act else []) + ([("fn", fn, None)] if fn else [])  # noqa: E731
        if self.coin(0.5):
            return (lambda: Chain(steps())), s
        return (lambda: nn.Sequential(*[m for kind, _, m in steps() if kind == "mod"])), s

    def same_body(self, shape, depth):
        """A body that keeps C×H×W (residual, split)."""
        n = self.rng.randint(1, 3)
        parts = [self.conv_bn_act(shape, same=True)[0] for _ in range(n)]
        if depth < 2 and self.coin(0.3):
            parts.append(self.block(shape, depth + 1, keep=True)[0])
        return lambda: nn.Sequential(*[p() for p in parts]) if len(parts) > 1 else parts[0]()

    def block(self, shape, depth=0, keep=False):
        c, h, w = shape
        kinds = ["residual", "se", "seq", "preact"] + \
            ([] if keep else ["branches", "dense", "stage", "loop", "cbr", "units", "dense_loop"])
        if c % 2 == 0:
            kinds += ["shuffle", "split"]
        kind = self.pick(*kinds)
        if kind == "residual":
            body = self.same_body(shape, depth)
            proj = None
            if not keep and self.coin(0.3):  # a body that changes the shape, with a projection
                out = self.rng.randint(2, MAX_C)
                stride = self.pick(1, 2)
                if min(h, w) >= 2 or stride == 1:
                    body = lambda: nn.Sequential(  # noqa: E731
                        nn.Conv2d(c, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU())
                    proj = partial(nn.Conv2d, c, out, 1, stride, bias=False)
                    shape = out_shape(body(), shape)
            order, act = self.pick(0, 1, 2, 3, 4), self.pick(None, "F.relu", ".relu", "F.relu_inplace")
            return (lambda: ResidualAdd(body(), proj() if proj else None, order, act)), shape
        if kind == "preact":
            body = self.same_body(shape, depth)
            functional = self.coin()
            act = partial(self.pick(nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU), inplace=True)
            return (lambda: PreAct(act(), body(), functional)), shape
        if kind == "units":  # ResNet-like stage: one class, instances with different arguments
            residual, k = self.coin(0.7), self.pick(1, 3)
            plan, c_in, hw = [], c, (h, w)
            for _ in range(self.rng.randint(2, 4)):
                c_out = self.pick(c_in, c_in, self.rng.randint(2, MAX_C))
                stride = self.pick(1, 1, 2) if min(hw) >= 2 else 1
                plan.append((c_in, c_out, stride))
                c_in, hw = c_out, tuple((d + 2 * (k // 2) - k) // stride + 1 for d in hw)
            return (lambda: nn.Sequential(*[Unit(*p, residual, k) for p in plan])), (c_in, *hw)
        if kind == "dense_loop":  # each layer: bn -> relu -> conv(growth)
            growth, n = self.rng.randint(2, 6), self.rng.randint(2, 4)
            make = lambda i: nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(inplace=True),  # noqa: E731
                                           nn.Conv2d(c + i * growth, growth, 3, padding=1, bias=False))
            return (lambda: DenseLoop([make(i) for i in range(n)])), (c + n * growth, h, w)
        if kind == "se":
            squeeze = self.rng.randint(1, max(1, c // 2))
            args = (c, squeeze, self.pick("sigmoid", "F.hardsigmoid"), self.pick("adaptive", "mean"), self.coin())
            return (lambda: SqueezeExcite(*args)), shape
        if kind == "shuffle":
            g = self.pick(*[g for g in (2, 3, 4) if c % g == 0])
            return (lambda: Shuffle(g)), shape
        if kind == "split":
            half = (c // 2, h, w)
            body = self.same_body(half, depth)
            method = self.coin()
            return (lambda: SplitHalf(body(), method)), shape
        if kind == "seq":
            return self.sequential(shape, depth) if not keep else (self.same_body(shape, depth + 1), shape)
        if kind == "cbr":
            return self.conv_bn_act(shape)
        if kind == "branches":
            join = self.pick("cat", "sum")
            n = self.rng.randint(2, 3)
            if join == "cat":
                fs = []
                outs = []
                for _ in range(n):
                    f, s = self.conv_bn_act(shape) if self.coin(0.7) else self.pool(shape)
                    fs.append(f)
                    outs.append(s)
                if len({s[1:] for s in outs}) != 1 or sum(s[0] for s in outs) > 3 * MAX_C:
                    fs = [lambda c=c: nn.Conv2d(c, 4, 1), lambda c=c: nn.Conv2d(c, 5, 3, padding=1)]
                    outs = [(4, h, w), (5, h, w)]
                shape = (sum(s[0] for s in outs), *outs[0][1:])
            else:
                fs = [self.same_body(shape, depth + 1) for _ in range(n)]
            names = self.names(len(fs), "branch", avoid=JOINS)
            return (lambda: Branches([f() for f in fs], join, names)), shape
        if kind == "dense":
            body, s = self.conv_bn_act(shape)
            if s[1:] != shape[1:]:
                body, s = self.conv_bn_act(shape, same=True)
            first = self.coin(0.7)
            return (lambda: DenseCat(body(), first)), (c + s[0], h, w)
        if kind in ("stage", "loop"):
            first, shape2 = self.block(shape, depth + 1) if depth < 2 else self.conv_bn_act(shape)
            rep, _ = self.block(shape2, depth + 1, keep=True) if depth < 2 else (self.same_body(shape2, 2), None)
            n = self.rng.randint(1, 3)
            if kind == "stage":
                return (lambda: nn.Sequential(first(), *[rep() for _ in range(n)])), shape2
            as_dict = self.coin()
            names = self.names(n + 1, "unit")
            return (lambda: ListLoop([first()] + [rep() for _ in range(n)], as_dict, names)), shape2
        raise AssertionError(kind)

    def network(self):
        shape = SHAPE
        parts = []
        for _ in range(self.rng.randint(1, 4)):
            f, shape = self.block(shape) if self.coin(0.7) else self.leaf(shape)
            parts.append(f)
        if self.coin(0.25):  # a top-level nn.Sequential: `network … sequence`, layers `0`, `1`, …
            head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], 10)] if self.coin() else []
            return nn.Sequential(*[p() for p in parts], *head)
        names = self.names(len(parts), "stage")
        body = lambda: Chain([("mod", n, p()) for n, p in zip(names, parts)])  # noqa: E731
        if self.coin(0.6):  # a classifier head
            how = self.pick("module", "torch.flatten", "view", "reshape", "mean", "torch.mean", "F.adaptive")
            pooled = ("mean", "torch.mean", "F.adaptive")
            pool = self.pick("adaptive", "none") if how not in pooled else "none"
            if pool == "none" and how not in pooled and shape[0] * shape[1] * shape[2] > 512:
                pool = "adaptive"
            inner = body
            if pool == "adaptive":
                body = lambda: nn.Sequential(inner(), nn.AdaptiveAvgPool2d(1))  # noqa: E731
            flat_n = shape[0] if pool == "adaptive" or how in pooled else shape[0] * shape[1] * shape[2]
            classes = self.rng.randint(2, 10)
            hidden = self.rng.randint(4, 16)
            bias, tail = self.coin(0.8), self.pick(None, None, "bn1d", "softmax", "dropout", "layer_norm")
            mlp = self.coin()

            def fc():
                if not mlp:
                    return nn.Linear(flat_n, classes, bias=bias)
                layers = [nn.Linear(flat_n, hidden), nn.ReLU(inplace=True)]
                layers += {"bn1d": [nn.BatchNorm1d(hidden)], "dropout": [nn.Dropout(0.5)],
                           "layer_norm": [nn.LayerNorm(hidden)]}.get(tail, [])
                layers.append(nn.Linear(hidden, classes, bias=bias))
                return nn.Sequential(*layers, *([nn.Softmax(dim=1)] if tail == "softmax" else []))
            flat = self.pick(nn.Flatten(), nn.Flatten(1, -1), nn.Flatten(1, 3)) if how == "module" else None
            return Head(body(), flat, fc(), how, self.pick(1, (1, 1)))
        return body()


def random_module(seed: int) -> nn.Module:
    """The seed's module: float64, random weights, eval mode.  A drawn module whose output barely
    depends on its input (saturated gates, everything pooled away) is redrawn: the comparison
    would not see a wrong answer."""
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for attempt in range(20):
        torch.manual_seed(seed)
        module = randomize(Gen(seed * 100 + attempt).network().double(), seed).eval()
        with torch.no_grad():
            y = module(x.clone())
        if (y[0] - y[1]).abs().max() > 1e-2 * y.abs().max():
            return module
    raise AssertionError(f"seed {seed}: no module with an input-dependent output in 20 draws")


# ---- modules the importer must refuse --------------------------------------------------------


def _conv_c(c, h, w):
    return nn.Conv2d(c, c, 3, padding=1)


# kind -> (the bad layer for a C×H×W input or None, what forward does with it)
REFUSED = {
    "conv_transpose": (lambda c, h, w: nn.ConvTranspose2d(c, 4, 2, 2), lambda m, x: m.bad(x)),
    "lstm": (lambda c, h, w: nn.LSTM(c, 4), lambda m, x: m.bad(x.mean((2, 3)).unsqueeze(0))[0]),
    "upsample_bilinear": (lambda c, h, w: nn.Upsample(scale_factor=2, mode="bilinear"), lambda m, x: m.bad(x)),
    "group_norm": (lambda c, h, w: nn.GroupNorm(1, c), lambda m, x: m.bad(x)),
    "leaky_relu": (lambda c, h, w: nn.LeakyReLU(0.1), lambda m, x: m.bad(x)),
    "elu": (lambda c, h, w: nn.ELU(), lambda m, x: m.bad(x)),
    "prelu": (lambda c, h, w: nn.PReLU(), lambda m, x: m.bad(x)),
    "adaptive_max": (lambda c, h, w: nn.AdaptiveMaxPool2d(1), lambda m, x: m.bad(x)),
    "reflect_pad": (lambda c, h, w: nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect"), lambda m, x: m.bad(x)),
    "bn_no_stats": (lambda c, h, w: nn.BatchNorm2d(c, track_running_stats=False), lambda m, x: m.bad(x)),
    "bn_cumulative_average": (lambda c, h, w: nn.BatchNorm2d(c, momentum=None), lambda m, x: m.bad(x)),
    "divisor_override": (lambda c, h, w: nn.AvgPool2d(1, divisor_override=2), lambda m, x: m.bad(x)),
    "data_dependent_if": (None, lambda m, x: x if x.sum() > 0 else -x),
    "data_dependent_loop": (None, lambda m, x: sum(x[:, i:i + 1] for i in range(x.shape[1]))),
    "transpose": (None, lambda m, x: x.transpose(2, 3)),
    "cat_along_height": (None, lambda m, x: torch.cat([x, x], 2)),
    "times_constant": (None, lambda m, x: x * 2.0),
    "subtract": (_conv_c, lambda m, x: x - m.bad(x)),
    "interpolate_fractional": (None, lambda m, x: F.interpolate(x, scale_factor=1.5)),
    "channel_slice": (None, lambda m, x: x[:, :1]),
    "mean_over_channels": (None, lambda m, x: x.mean(1, keepdim=True)),
    "shared_weights": (_conv_c, lambda m, x: m.bad(m.bad(x))),
    "loose_parameter": (lambda c, h, w: nn.Linear(1, 1), lambda m, x: x + m.bad.weight),
    "unused_layer": (_conv_c, lambda m, x: x),
    "two_inputs": (None, None),
    "module_list_branches": (lambda c, h, w: nn.ModuleList([nn.Conv2d(c, 2, 1), nn.Conv2d(c, 3, 1)]),
                             lambda m, x: torch.cat([b(x) for b in m.bad], 1)),
    "number_as_name": (None, None),
    "named_like_a_join_before_it": (_conv_c, None),
    "input_too_small": (lambda c, h, w: nn.Conv2d(c, 4, h + 1), lambda m, x: m.bad(x)),
}


class Refused(nn.Module):
    """A valid random front, then one thing archdsl cannot express."""

    def __init__(self, front, kind, shape):
        super().__init__()
        self.front, self.kind = front, kind
        make, _ = REFUSED[kind]
        if make is not None:
            self.bad = make(*shape)
        if kind == "number_as_name":
            self.add_module("0", nn.Conv2d(shape[0], 4, 1))
        if kind == "named_like_a_join_before_it":
            self.add_module("add", nn.Conv2d(shape[0], 4, 1))

    def forward(self, x):
        x = self.front(x)
        if self.kind == "number_as_name":
            return getattr(self, "0")(x)
        if self.kind == "named_like_a_join_before_it":
            return getattr(self, "add")(x + self.bad(x))
        return REFUSED[self.kind][1](self, x)


class TwoInputs(Refused):
    def forward(self, x, y):
        return self.front(x) + y


def refused_module(seed: int, kind: str | None = None) -> nn.Module:
    gen = Gen(seed)
    kind = kind or gen.pick(*REFUSED)
    front, shape = gen.block(SHAPE) if gen.coin(0.7) else gen.leaf(SHAPE)
    cls = TwoInputs if kind == "two_inputs" else Refused
    return cls(front(), kind, shape).double().eval()


# ---- the checks ----------------------------------------------------------------------------------


def import_and_check(module: nn.Module, path: Path, shape=SHAPE) -> str:
    return import_and_compare(module, path, shape)


def check_imports(seed: int, tmp_path: Path) -> None:
    module = random_module(seed)
    text = import_and_check(module, tmp_path / f"fuzz{seed}.arch")
    assert archdsl.from_torch(module, SHAPE) == text, "a second import wrote other text"


FAST_SEEDS = range(15)
SLOW_SEEDS = range(1000, 1300)


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_random_module_imports_and_computes_the_same(seed, tmp_path, one_thread):
    check_imports(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_many_random_modules_import_and_compute_the_same(seed, tmp_path, one_thread):
    check_imports(seed, tmp_path)


def check_refused(module: nn.Module, spec: str, tmp_path: Path) -> None:
    """from_torch raises ArchError (nothing else); `archdsl import` exits 2 and leaves the
    output file as it was (no temporary file either)."""
    try:
        archdsl.from_torch(module, SHAPE)
    except ArchError as exc:
        assert exc.message and str(exc)
    else:
        raise AssertionError(f"{spec}: imported, though archdsl cannot express it")
    script = tmp_path / "user_net.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_fuzz_import import refused_module

        def Net():
            return refused_module({spec})
        """))
    out = tmp_path / "out.arch"
    out.write_text("# the user's file\n")
    assert cli_main(["import", f"{script}:Net", "-o", str(out), "--input", "x".join(map(str, SHAPE))]) == 2
    assert out.read_text() == "# the user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arch", "user_net.py"]


@pytest.mark.parametrize("kind", list(REFUSED))
def test_what_archdsl_cannot_express_is_refused(kind, tmp_path, capsys):
    seed = list(REFUSED).index(kind)
    check_refused(refused_module(seed, kind), f"{seed}, {kind!r}", tmp_path)
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2000, 2100))
def test_many_random_refusals(seed, tmp_path):
    check_refused(refused_module(seed), str(seed), tmp_path)


# ---- regressions: the bugs this fuzzer found, each reduced to a minimal module ------------------


class KeywordNames(nn.Module):
    """Python keywords as module names: fx writes `self.in(x)` in the forward it generates, which
    does not compile (a SyntaxError escaped from_torch)."""

    def __init__(self):
        super().__init__()
        self.add_module("in", nn.Conv2d(3, 4, 1))
        self.add_module("if", nn.BatchNorm2d(4))

    def forward(self, x):
        return getattr(self, "if")(getattr(self, "in")(x))


def test_python_keywords_as_module_names(tmp_path, one_thread):
    text = import_and_check(randomize(KeywordNames().double()), tmp_path / "k.arch", (3, 6, 6))
    assert '"in": conv(4, 1)' in text


def test_a_top_level_module_named_input(tmp_path, one_thread):
    """`input` labelled a top-level module and also named the network's input node (an internal
    error: "the name `input` is already used"); the input node now takes another name."""
    module = Chain([("mod", "input", nn.Conv2d(3, 4, 1)), ("mod", "input_", nn.ReLU())])
    text = import_and_check(randomize(module.double()), tmp_path / "i.arch", (3, 6, 6))
    assert "input input__: 3 x 6 x 6" in text and '"input": conv(4, 1)' in text


class Half(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(x)


def test_a_chunk_branch_that_wraps_over_lines(tmp_path, one_thread):
    """A branch that is a chain over lines (`chunk -> block call`) was flattened into `{ … }` with
    `;` between its lines: `(chunk(2, 1); -> body: half)`, which does not parse (internal error)."""
    module = SplitHalf(Half(), method=True)
    text = import_and_check(randomize(module.double()), tmp_path / "s.arch", (4, 6, 6))
    assert "(chunk(2, 1) -> body: half)" in text


class InPlaceThenShortcut(nn.Module):
    """An in-place activation on a tensor that forward reads again afterwards: PyTorch reads the
    overwritten value, the import read the value before it (a silent wrong answer)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.block = InPlaceBlock()

    def forward(self, x):
        return self.block(self.conv(x))


class InPlaceBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(F.relu(x, inplace=True))
        y += x  # x is relu(x) by now
        return y


def test_an_in_place_activation_overwrites_what_forward_reads_later(tmp_path, one_thread):
    import_and_check(randomize(InPlaceThenShortcut().double()), tmp_path / "p.arch", (3, 6, 6))


def test_an_in_place_activation_of_the_input(tmp_path, one_thread):
    module = PreAct(nn.ReLU(inplace=True), nn.Conv2d(3, 3, 3, padding=1), functional=False)
    import_and_check(randomize(module.double()), tmp_path / "q.arch", (3, 6, 6))


def test_a_number_naming_a_module_outside_a_sequence_is_refused_clearly():
    """`self.add_module("0", …)` in a custom module: no archdsl label can be `0` (only sequences
    number their elements); the error said "cannot reproduce the module path" with a hint about
    nn.ModuleList loops."""
    module = Chain([("mod", "0", nn.Conv2d(3, 4, 1))])
    with pytest.raises(ArchError, match=r"module name `0` \(in `0`\) is a number in Chain, which is not a sequence"):
        archdsl.from_torch(module, (3, 6, 6))


class NumberedOwnForward(nn.Sequential):
    """An nn.Sequential subclass whose forward skips a layer: its numbers are not positions."""

    def forward(self, x):
        return self[1](x)


def test_a_top_level_sequential_with_a_forward_of_its_own_is_refused_clearly():
    """Refused with "cannot reproduce the module path `0`" and a hint about nn.ModuleList loops;
    now the error says what it is."""
    module = NumberedOwnForward(nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1))
    with pytest.raises(ArchError, match=r"top module is a NumberedOwnForward whose layers are numbered \(`1`\), but "
                                        r"its own forward does not run them in order"):
        archdsl.from_torch(module, (3, 6, 6))


def test_a_top_level_sequential(tmp_path, one_thread):
    """A top-level nn.Sequential was refused (a network's body was not positional); it is now a
    `network … sequence`, whose state-dict keys are `0.weight`, `1.running_mean`, … and whose
    input takes no position."""
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), nn.Conv2d(4, 4, 1),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    text = import_and_check(randomize(module.double()), tmp_path / "t.arch", (3, 6, 6))
    assert "network sequential_net sequence {" in text and "block sequential() sequence {" in text
    assert "relu -> sigmoid" in archdsl.from_torch(nn.Sequential(nn.ReLU(), nn.Sigmoid()), (3, 6, 6))


class GeluUnit(nn.Module):
    def __init__(self, approximate):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x):
        return self.act(self.conv(x))


def test_a_string_argument_is_quoted(tmp_path, one_thread):
    """gelu(approximate="tanh") was written `gelu(approximate=tanh)`, an undefined name (internal
    error); the same for a block parameter that is a string in some instances."""
    module = Chain([("mod", "a", GeluUnit("tanh")), ("mod", "b", GeluUnit("none"))])
    text = import_and_check(randomize(module.double()), tmp_path / "g.arch", (3, 6, 6))
    assert 'gelu(approximate=approximate)' in text and 'gelu_unit("tanh")' in text


def test_a_cumulative_batch_norm_is_refused():
    """BatchNorm2d(momentum=None) was written `bn(momentum=None)`, an undefined name (internal
    error); archdsl's bn takes a momentum in [0, 1], so the importer refuses it (see REFUSED)."""
    module = Chain([("mod", "bn", nn.BatchNorm2d(3, momentum=None))])
    with pytest.raises(ArchError, match="momentum=None"):
        archdsl.from_torch(module, (3, 6, 6))


def test_a_functional_op_before_a_module_named_like_it(tmp_path, one_thread):
    """`F.relu(...)` then `self.relu(...)` (called once): the unlabelled op was named `relu` first,
    then the label `relu` was "already used" (internal error); such ops now get labels of their own."""
    module = Chain([("mod", "conv", nn.Conv2d(3, 4, 1)), ("fn", "F.relu", None), ("mod", "relu", nn.ReLU()),
                    ("fn", "F.relu", None), ("mod", "relu_1", nn.Conv2d(4, 4, 1))])
    text = import_and_check(randomize(module.double()), tmp_path / "r.arch", (3, 6, 6))
    assert "conv: conv(4, 1) -> relu_2: relu -> relu: relu -> relu_3: relu" in text


def test_a_module_named_like_a_join_before_it_is_refused_clearly():
    """`self.add(x + self.a(x))`: the add's node is named `add` before the module is; the import
    wrote a file that did not elaborate (internal error), now it says why (see REFUSED)."""
    module = refused_module(0, "named_like_a_join_before_it")
    with pytest.raises(ArchError, match="module name `add` is the name archdsl gives a join"):
        archdsl.from_torch(module, SHAPE)


def test_a_flatten_module_to_the_last_dim_by_index(tmp_path, one_thread):
    """nn.Flatten(1, 3) on N×C×H×W is nn.Flatten(): it was refused ("archdsl flattens from dim 1
    to the end") while torch.flatten(x, 1, 3) was imported."""
    module = Head(nn.Conv2d(3, 4, 3), nn.Flatten(1, 3), nn.Linear(64, 5), "module")
    import_and_check(randomize(module.double()), tmp_path / "f.arch", (3, 6, 6))


def test_the_text_does_not_depend_on_the_process(tmp_path):
    """Another process, with another string-hash seed (set iteration order), writes the same text."""
    seeds = list(FAST_SEEDS)[:5]
    script = tmp_path / "import_seeds.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import archdsl
        from test_fuzz_import import SHAPE, random_module

        for seed in {seeds!r}:
            sys.stdout.write(archdsl.from_torch(random_module(seed), SHAPE))
        """))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "".join(archdsl.from_torch(random_module(seed), SHAPE) for seed in seeds)


def test_a_module_that_does_not_run_on_the_input_says_where_without_a_traceback(capsys):
    """ShapeProp printed the traceback of the failing node to stderr, and the error quoted its
    wrapper ("ShapeProp error for: node=... with meta={...}") instead of the cause; a forward with
    two inputs was reported as one that does not run on the input shape."""
    with pytest.raises(ArchError) as info:
        archdsl.from_torch(refused_module(0, "input_too_small"), SHAPE)
    assert "Kernel size can't be greater than actual input size" in info.value.message
    assert info.value.loc.file == __file__ and "ShapeProp" not in info.value.message
    with pytest.raises(ArchError, match="a forward with more than one input"):
        archdsl.from_torch(refused_module(0, "two_inputs"), SHAPE)
    assert "Traceback" not in capsys.readouterr().err
