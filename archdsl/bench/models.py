"""The weights and inputs every provider of a run shares: the reference state (BN folded for
the eager baselines) and seeded inputs."""

from __future__ import annotations

def folded_state(state: dict, folds: dict) -> dict:
    """The reference state dict with each folded BN moved into its conv's weight and bias
    (computed in float64, stored in float32), by the generated programs' own `fold_bn`."""
    from ..codegen.emit import host_helpers

    fold_bn = host_helpers().fold_bn
    out = dict(state)
    for conv, (bn, eps) in folds.items():
        w, b = fold_bn(state, conv, bn, eps)
        out[conv + ".weight"], out[conv + ".bias"] = w.float(), b.float()
        for key in [k for k in out if k.startswith(bn + ".") and "." not in k[len(bn) + 1:]]:
            del out[key]
    return out


def reference_state(graph, seed: int = 0, weights: str | None = None, calibration_batch: int = 4) -> dict:
    """The weights every provider gets (float32, CPU, reference names).

    From `weights` when given; otherwise PyTorch's initialization (seeded) with batch-norm
    statistics calibrated on one random batch (momentum None, one forward in train mode), so that
    activations keep a realistic scale through the network -- default statistics (mean 0,
    variance 1) would let them shrink or grow layer by layer and test fp16's range instead of the
    kernels.
    """
    import torch

    from ..backends.torch_backend import load_weights, to_torch

    torch.manual_seed(seed)
    model = to_torch(graph).eval()
    if weights:
        load_weights(model, weights)
        return {k: v.detach().float().clone() if v.is_floating_point() else v.clone()
                for k, v in model.state_dict().items()}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        gen = torch.Generator().manual_seed(seed + 1)
        xs = [torch.randn(calibration_batch, *graph.shape(n), generator=gen) for n in graph.inputs]
        with torch.no_grad():
            model(*xs)
        model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def network_inputs(graph, batch: int, seed: int) -> list:
    """Random normal NCHW inputs (float32, CPU), the same for every provider."""
    import torch

    gen = torch.Generator().manual_seed(seed * 7919 + batch)
    return [torch.randn(batch, *graph.shape(n), generator=gen) for n in graph.inputs]
