"""PyTorch reference modules of the ops in `modern.py`, written as torchvision computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mul(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class LayerNorm2d(nn.LayerNorm):
    """torchvision's LayerNorm2d: nn.LayerNorm over the channels of NCHW, at each position."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def layer_norm(size: int, eps: float, affine: bool, channels_first: bool) -> nn.Module:
    return (LayerNorm2d if channels_first else nn.LayerNorm)(size, eps=eps, elementwise_affine=affine)


class Permute(nn.Module):
    def __init__(self, order: tuple[int, ...]):
        super().__init__()
        self.order = (0,) + tuple(i + 1 for i in order)  # the batch axis stays first

    def forward(self, x):
        return torch.permute(x, self.order)


class LayerScale(nn.Module):
    """x · γ, γ a bare parameter of the enclosing scope (key `<node name>`, not `<node>.weight`).

    The torch backend calls `attach(parent, name)` instead of adding this module to the tree;
    `forward` reads γ from the parent each time, so `load_state_dict(assign=True)` and dtype or
    device conversions of the model reach it."""

    def __init__(self, shape: tuple[int, ...], init: float):
        super().__init__()
        self.shape, self.init = shape, init

    def attach(self, parent: nn.Module, name: str) -> None:
        parent.register_parameter(name, nn.Parameter(torch.full(self.shape, self.init)))
        object.__setattr__(self, "_owner", (parent, name))  # not a submodule: no second key

    def forward(self, x):
        parent, name = self._owner
        return getattr(parent, name) * x


class Chunk(nn.Module):
    def __init__(self, parts: int, index: int):
        super().__init__()
        self.parts, self.index = parts, index

    def forward(self, x):
        return x.chunk(self.parts, dim=1)[self.index]


class ChannelShuffle(nn.Module):
    """torchvision.models.shufflenetv2.channel_shuffle."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.size()
        x = x.view(b, self.groups, c // self.groups, h, w)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(b, c, h, w)


class StochasticDepth(nn.Module):
    """torchvision.ops.stochastic_depth (modes "row" and "batch"), the identity in eval mode."""

    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"
