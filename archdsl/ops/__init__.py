"""The op registry and every op archdsl knows (importing this package registers them all)."""

from . import io, join, linear, pointwise, pool  # noqa: F401,I001  (registration side effects, in order)
from . import fused  # noqa: F401  (registration side effects)
from . import modern  # noqa: F401  (registration side effects: MobileNet .. ConvNeXt ops)
from .registry import OPS, OpSpec, get

__all__ = ["OPS", "OpSpec", "get"]
