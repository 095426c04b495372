"""Hints for what people bring from PyTorch and Keras: their layer names, and Conv2d's argument order.

Tables as data: `FOREIGN_NAMES` maps a name as PyTorch (`torch.nn`) or Keras spell it, lowercased,
to the archdsl op that does the same thing.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArchError
from ..frontend import ast

FOREIGN_NAMES = {
    # torch.nn
    "conv2d": "conv", "batchnorm": "bn", "batchnorm2d": "bn", "batchnorm1d": "bn", "linear": "fc",
    "maxpool2d": "maxpool", "avgpool2d": "avgpool", "adaptiveavgpool2d": "adaptive_avgpool",
    "dropout2d": "dropout", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
    "silu": "silu", "gelu": "gelu", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid",
    "identity": "identity", "flatten": "flatten", "dropout": "dropout", "softmax": "softmax",
    "localresponsenorm": "lrn", "layernorm": "layer_norm", "channelshuffle": "channel_shuffle",
    # Keras
    "dense": "fc", "batchnormalization": "bn", "maxpooling2d": "maxpool", "averagepooling2d": "avgpool",
    "globalaveragepooling2d": "global_avgpool", "globalavgpool2d": "global_avgpool", "concatenate": "concat",
    "cat": "concat", "layernormalization": "layer_norm",
}


def foreign_name_hint(name: str, known) -> str | None:
    """`BatchNorm2d` -> "archdsl calls it `bn`"; None when the name is nobody's layer."""
    low = name.lower().removeprefix("nn.")
    ours = low if low in known else FOREIGN_NAMES.get(low)
    if ours is None or ours not in known:
        return None
    if ours == name.lower():
        return f"op names are lower case: `{ours}`"
    return f"`{name}` is PyTorch's or Keras's name; archdsl's op is `{ours}`"


BIG_KERNEL = 16  # a kernel this large reads as a channel count (classic CNNs stop at 11×11)
SMALL = 11  # ... and a "stride" this small reads as PyTorch's kernel_size


def check_conv_order(call: ast.Call, attrs: dict[str, Any], in_shape: tuple[int, ...]) -> None:
    """Catch PyTorch's `Conv2d(in, out, kernel)` order written as archdsl's `conv(out, kernel, stride)`.

    `conv(3, 64, 3)` after a 3-channel input is, to archdsl, 3 outputs from a 64×64 kernel at
    stride 3: a network that silently collapses to 3×1×1. The mistake is reported when all of:
    (1) the first three arguments are positional, as in a PyTorch call; (2) the first repeats the
    input's channels, as PyTorch's in_channels does; (3) the "kernel" is channel-sized (≥ 16) and
    the "stride" kernel-sized (≤ 11); (4) the conv is dense (groups = 1).
    No network of examples/ meets them; the large-kernel convs that exist (RepLKNet's 31×31) are
    depthwise, so (4) spares them, and any conv meant this way is still written by naming
    the kernel (`conv(64, kernel=17, stride=2)`), which (1) never flags.
    """
    positional = [a for a in call.args[:3] if a.name is None]
    if len(positional) < 3 or len(in_shape) != 3:
        return
    out, (kh, kw), (sh, sw) = attrs["out"], attrs["kernel"], attrs["stride"]
    if out != in_shape[0] or attrs.get("groups", 1) != 1 or min(kh, kw) < BIG_KERNEL or max(sh, sw) > SMALL:
        return
    raise ArchError(
        f"conv({out}, {kh}, {sh}) reads as {out} output channels, a {kh}×{kw} kernel and stride {sh}: "
        f"is this PyTorch's Conv2d(in_channels={out}, out_channels={kh}, kernel_size={sh}) order?",
        call.loc, hint=f"archdsl's conv is conv(out, kernel, stride) and takes the input channels from the "
        f"input: write conv({kh}, {sh}); if you did mean a {kh}×{kw} kernel, name it: "
        f"conv({out}, kernel={kh}, stride={sh})")
