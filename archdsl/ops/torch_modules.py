"""PyTorch modules for the ops that torch.nn has no module for (imported only by the torch backend).

Each takes its inputs positionally, in port order, and keeps PyTorch's parameter names
(`weight`, `bias`, `running_mean`, ...) so that state_dict keys are `<node name>.<param>`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Conv2d):
    """nn.Conv2d with per-side padding (top, bottom, left, right); symmetric padding is passed
    to the convolution itself, so the common case is exactly nn.Conv2d."""

    def __init__(self, cin, out, kernel, stride, pad, dilation, groups, bias):
        top, bottom, left, right = pad
        symmetric = top == bottom and left == right
        super().__init__(cin, out, kernel, stride, (top, left) if symmetric else 0, dilation, groups, bias)
        self.side_pad = None if symmetric else (left, right, top, bottom)

    def forward(self, x):
        if self.side_pad is not None:
            x = F.pad(x, self.side_pad)
        return super().forward(x)


class DropPath(nn.Module):
    """Stochastic depth: while training, zero each sample's whole tensor with probability p and
    scale survivors by 1/(1-p); at inference, the identity."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        keep.bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PadChannels(nn.Module):
    """Append zero channels up to `out` (CIFAR ResNets' parameter-free 'option A' shortcut)."""

    def __init__(self, out: int):
        super().__init__()
        self.out = out

    def forward(self, x):
        extra = self.out - x.shape[1]
        return F.pad(x, (0, 0) * (x.dim() - 2) + (0, extra)) if extra else x


class Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mean(nn.Module):
    def forward(self, *xs):
        return Add.forward(self, *xs) / len(xs)


class Concat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, dim=1)


class PointwiseLinear(nn.Linear):
    """nn.Linear at every position of an NCHW map: ConvNeXt's per-position linear kept
    channels-first (a 1x1 conv holding the linear's own (out, in) weight and its keys)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Fused(nn.Module):
    """Reference semantics of a fused node: its original modules, by role, state-dict keys
    `<node>.<role>.<param>` (`archdsl.passes.fused_state_dict` maps reference keys to them).

    fused_conv / fused_fc / fused_bn:  x -> [pre_act(pre_bn(x))] -> [in_ln] -> conv or linear or fc or bn -> [bn]
    -> [· layer_scale γ] then, join "add":  act(y + residual)    join "mean":  (act(y) + residual) / 2
    (γ, `scale_shape` given, is a bare parameter: key `<node>.layer_scale`, as the reference holds it.)
    With `gate`, the last input is a per-channel gate x is multiplied by first (fused_conv's in_gate).
    An `in_ln` role (fused_conv's in_ln_eps) is the layer norm over the channels, applied (as the
    roles are: in order) right before the conv.
    """

    def __init__(self, act: str, pre_act: str = "none", join: str = "add", *, activation,
                 scale_shape: tuple[int, ...] | None = None, gate: bool = False, **roles: nn.Module):
        super().__init__()
        for role, module in roles.items():
            self.add_module(role, module)
        self.layer_scale = None if scale_shape is None else nn.Parameter(torch.ones(scale_shape))
        self.act, self.pre_act, self.join = act, pre_act, join
        self.gate = gate  # the last input is a per-channel gate the input is multiplied by first
        self.activation = activation  # (name, x) -> the op `name` applied to x (registry.apply_activation)

    def forward(self, x, *residual):
        if self.gate:  # squeeze-and-excitation's scale, before anything else (fused_conv's in_gate)
            x, residual = x * residual[-1], residual[:-1]
        if "pre_bn" in self._modules:
            x = self.pre_bn(x)
        x = self.activation(self.pre_act, x)
        for role, module in self.named_children():
            if role != "pre_bn":
                x = module(x)
        if self.layer_scale is not None:
            x = self.layer_scale * x
        if self.join == "mean":
            return (self.activation(self.act, x) + sum(residual)) / (1 + len(residual))
        for r in residual:
            x = x + r
        return self.activation(self.act, x)

    def extra_repr(self) -> str:
        extra = (f", pre_act={self.pre_act}" if self.pre_act != "none" else "") + \
            (f", join={self.join}" if self.join != "add" else "")
        return f"act={self.act}{extra}"


class FusedAdd(nn.Module):
    def __init__(self, act: str, *, activation):
        super().__init__()
        self.act = act
        self.activation = activation

    def forward(self, *xs):
        return self.activation(self.act, Add.forward(self, *xs))
