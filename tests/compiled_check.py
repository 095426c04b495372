"""A compiled model (the generated program; under Triton's interpreter without a GPU) against the float64
PyTorch reference of its graph, both with the same random weights.

* ``randomize_all``: every floating parameter and buffer of a model away from its init;
* ``compiled_error``: ||model(x) - reference(x)|| / ||reference(x)||, the reference in float64.

Tests import this module by name: conftest.py puts the tests directory on sys.path.
"""

import torch

import archdsl


def randomize_all(model, seed=0):
    """Every floating parameter and buffer away from its init: weights random (variance 1/fan_in),
    biases and BN means small, BN variances positive, and the other vectors (norm affines γ, layer
    scales, named or not) of either sign and near 1 in size: at init a ConvNeXt branch is 1e-6 of the
    trunk and would hide a wrong block, and a fold must keep the signs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith((".bias", "running_mean")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif name.endswith("layer_scale") or t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 - 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) / max(1, t[0].numel()) ** 0.5)


def compiled_error(model, *xs, forbid=None) -> float:
    """The compiled model's relative error on inputs xs against its graph's float64 reference (same
    weights).  forbid: runs the model (a function of no arguments) with torch's compute ops made to
    fail, after a first call that prepares the weights (torch may be used freely there)."""
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    if forbid is None:
        out = model(*xs)
    else:
        model(*xs)
        out = forbid(lambda: model(*xs))
    with torch.no_grad():
        ref = reference.double()(*(x.double() for x in xs))
    assert out.shape == ref.shape
    return ((out.double().cpu() - ref).norm() / ref.norm()).item()
