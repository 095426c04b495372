"""torchvision's model zoo on the CPU-only torch: the reference the real-architecture tests compare with.

Install (after `pip install torch==2.13.0 '.[test]'`, which brings numpy and pillow):

    python -m pip install --no-deps torchvision==0.28.0

`--no-deps` because torchvision's wheels are built against the CUDA torch: letting pip resolve
them may pull a CUDA torch and its nvidia-* packages.  0.28.0 is the release whose metadata
requires `torch==2.13.0`.

Why a shim: the wheel's compiled ops (`torchvision/_C.so`) link against `libtorch_cuda.so` and
`libc10_cuda.so`, which the CPU torch does not have.  torchvision expects that and carries on
without them (`torchvision.extension._has_ops()` is then False, and `torchvision.ops.nms` & co.
raise "Couldn't load custom C++ ops" when called), except in one place: at import,
`torchvision/_meta_registrations.py` registers fake (meta) kernels for `torchvision::nms` and
`torchvision::qnms` without checking that the ops exist, and `import torchvision` fails with

    RuntimeError: operator torchvision::nms does not exist

Fake kernels only serve `torch.compile`/FakeTensor tracing of the compiled detection ops, which
the classification models never call.  So, when the compiled ops do not load, we put an empty
module in `sys.modules["torchvision._meta_registrations"]` before importing torchvision: its
pure-Python model code then imports and runs unchanged.  Nothing in site-packages is modified,
and nothing is done when the compiled ops load (a CUDA torch with its matching torchvision).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

INSTALL = "python -m pip install --no-deps torchvision==0.28.0"
_STUBBED = "torchvision._meta_registrations"

# Why the compiled ops did not load (None: they loaded, or torchvision is not imported yet).
compiled_ops_error: str | None = None


class TorchvisionUnavailable(RuntimeError):
    """torchvision is missing, does not match the installed torch, or does not import."""


def _check_versions() -> str:
    """torchvision's version; raise if it is absent or built for another torch."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        tv_version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        raise TorchvisionUnavailable(f"torchvision is not installed; install it with `{INSTALL}`") from None
    torch_version = Version(importlib.metadata.version("torch"))
    for line in importlib.metadata.requires("torchvision") or []:
        req = Requirement(line)
        if req.name == "torch" and req.marker is None:
            # `2.13.0+cpu` satisfies `==2.13.0` (local labels are ignored), as pip decides it.
            if not req.specifier.contains(Version(torch_version.base_version), prereleases=True):
                raise TorchvisionUnavailable(
                    f"torchvision {tv_version} requires {req}, but torch {torch_version} is installed; "
                    f"install the torchvision release made for this torch with `pip install --no-deps "
                    f"torchvision==VERSION` (for torch 2.13.0: `{INSTALL}`)")
    return tv_version


def _load_compiled_ops() -> str | None:
    """Load `torchvision/_C` as torchvision would; None if it loads, else why it does not."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise TorchvisionUnavailable(f"torchvision is not importable; install it with `{INSTALL}`")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_C{suffix}"
            if path.is_file():
                try:
                    torch.ops.load_library(str(path))
                except (OSError, ImportError) as exc:
                    return f"{type(exc).__name__}: {exc}"
                return None
    return "torchvision/_C is not in the package"


def import_torchvision_models() -> types.ModuleType:
    """`torchvision.models`, importable on the CPU-only torch (see the module docstring).

    Raises `TorchvisionUnavailable` with what to do when torchvision is missing, built for
    another torch, or fails to import all the same.
    """
    global compiled_ops_error
    if "torchvision.models" in sys.modules and "torchvision" in sys.modules:
        return sys.modules["torchvision.models"]
    version = _check_versions()
    # A failed `import torchvision` leaves its submodules behind; start from a clean slate.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    compiled_ops_error = _load_compiled_ops()
    if compiled_ops_error is not None:
        stub = types.ModuleType(_STUBBED, "Stand-in (tests/tv.py): no fake kernels without the compiled ops.")
        sys.modules[_STUBBED] = stub
    try:
        models = importlib.import_module("torchvision.models")
    except Exception as exc:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        raise TorchvisionUnavailable(
            f"torchvision {version} does not import on torch {importlib.metadata.version('torch')}"
            + (f" (its compiled ops did not load: {compiled_ops_error})" if compiled_ops_error else "")
            + f": {type(exc).__name__}: {exc}") from exc
    return models


# ---- torchvision's models with random weights: the references the tests compare with ----------------


def build_tv(tvm, model: str, kwargs: dict | None = None, device: str = "meta", dtype=None):
    """torchvision's `model` built with `kwargs` on `device` (meta: shapes only, no memory and no init
    time), its floating tensors in `dtype` (torch's default when None).  RegNet computes its stage
    widths with torch and reads them back (`.tolist()`), which meta tensors cannot do: that part runs
    on the CPU."""
    import torch
    from torchvision.models import regnet

    params = regnet.BlockParams.from_init_params  # bound: callable as it is
    descriptor = regnet.BlockParams.__dict__["from_init_params"]  # restored as it was

    def on_cpu(*args, **kw):
        with torch.device("cpu"):
            return params(*args, **kw)

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype or old)
    regnet.BlockParams.from_init_params = on_cpu
    try:
        with torch.device(device):
            return getattr(tvm, model)(weights=None, **(kwargs or {}))
    finally:
        torch.set_default_dtype(old)
        regnet.BlockParams.from_init_params = descriptor


def randomize_tv(m, gen):
    """Every tensor of m's state dict filled from `gen`, none left at its init, m in eval mode.

    Weights are uniform with variance 2/fan_in (He), so activations keep their scale through the
    ReLUs; batch and layer norms get affine terms (and BN running statistics) away from the fresh
    1, 0 (, 0, 1), which would hide a wrong eps or a swapped mean and variance; ConvNeXt's layer
    scales are far from their 1e-6 init, so the branch counts.  Fails on a tensor it cannot fill.
    """
    import torch

    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)
    filled = set()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, norms):
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    c = mod.num_features
                    mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen, dtype=torch.float64))
                    mod.running_var.uniform_(0.5, 1.5, generator=gen)
                    mod.num_batches_tracked.zero_()
                    filled |= {id(mod.running_mean), id(mod.running_var), id(mod.num_batches_tracked)}
                if mod.weight is not None:
                    mod.weight.uniform_(0.5, 1.5, generator=gen)
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen, dtype=torch.float64))
                    filled |= {id(mod.weight), id(mod.bias)}
                continue
            for name, p in mod.named_parameters(recurse=False):
                if id(p) in filled:
                    continue
                if name == "layer_scale":
                    p.uniform_(0.5, 1.5, generator=gen)
                elif p.dim() > 1:
                    bound = (6 / p[0].numel()) ** 0.5
                    p.uniform_(-bound, bound, generator=gen)
                else:
                    p.uniform_(-0.1, 0.1, generator=gen)
                filled.add(id(p))
    left = [k for k, t in m.state_dict(keep_vars=True).items() if id(t) not in filled]
    assert not left, f"randomize_tv does not know how to fill {left[:5]}"
    return m.eval()


def random_tv(tvm, model: str, kwargs: dict | None, gen):
    """torchvision's `model` in float64 with random weights (``randomize_tv``), in eval mode: built on
    the meta device and filled here, several times faster than letting torchvision initialize float32
    weights and converting them (VGG has 138 M)."""
    import torch

    m = build_tv(tvm, model, kwargs, dtype=torch.float64)
    m.to_empty(device="cpu")
    return randomize_tv(m, gen)
