"""The compiled model: generated Triton kernels (under the CPU interpreter here) against the
PyTorch reference, for every network of the zoo at the reduced size its header documents."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import archdsl
from pending import compilable
from smaller import EXAMPLES, smaller

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def compile_small(path: Path, input_shape="documented", **overrides):
    spec = smaller(path)
    params = {**spec["params"], **overrides}
    shape = spec["input_shape"] if input_shape == "documented" else input_shape
    return archdsl.compile(path, device=DEVICE, network=spec["network"], input_shape=shape, **params)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights and BN statistics away from PyTorch's defaults, so folding errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(".weight") and t.dim() == 1:  # BN gamma
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)


def rel_err(out, ref) -> float:
    return ((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.mark.slow
@pytest.mark.parametrize("path", compilable(sorted(EXAMPLES.glob("*.arch"))), ids=lambda p: p.stem)
def test_every_zoo_model_matches_the_reference(path):
    model = compile_small(path)
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    g = model.graph
    torch.manual_seed(1)
    xs = [torch.randn(2, *g.shape(n)) for n in g.inputs]
    outs = model(*xs)
    with torch.no_grad():
        refs = reference.double()(*(x.double() for x in xs))
    outs = outs if isinstance(outs, tuple) else (outs,)
    refs = refs if isinstance(refs, tuple) else (refs,)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        assert rel_err(o, r) <= 1e-4


EVERY_KERNEL = """
network every_kernel {
    input 3 x 13 x 11
    conv(6, 3, pad=(1, 0, 2, 1), stride=2, bias=false) -> bn -> relu as a
    concat { conv(4, 1) -> tanh; maxpool(3, stride=1, pad=1, ceil_mode=true) -> sigmoid } as b
    add { @b; conv(10, 3, pad=1, groups=2) } -> lrn(3) -> avgpool(3, stride=2, pad=1, ceil_mode=true)
    mean { identity; pad_channels(12) -> conv(10, 1) } -> adaptive_avgpool((2, 3)) as c
    @c -> global_avgpool -> flatten -> bn -> fc(5) -> softmax as d
    @c -> upsample((2, 1)) -> flatten -> dropout(0.5) -> fc(4) as e
    output d, e
}
"""


def test_forward_launches_no_pytorch_convolution_pooling_or_linear(monkeypatch):
    model = archdsl.compile(source=EVERY_KERNEL, device=DEVICE)
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 13, 11)
    model(x)  # prepare the weights first (that may use torch freely)

    def forbidden(*args, **kwargs):
        raise AssertionError("a PyTorch convolution, pooling, normalization or linear op was called")

    for mod, names in ((F, ("conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "linear",
                            "local_response_norm", "batch_norm", "softmax", "relu", "tanh", "sigmoid",
                            "interpolate")),
                       (torch, ("conv2d", "max_pool2d", "batch_norm", "matmul", "mm", "addmm", "bmm", "relu",
                                "softmax", "tanh", "sigmoid", "cat")),
                       (torch._C._nn, ("avg_pool2d", "adaptive_avg_pool2d", "linear", "upsample_nearest2d"))):
        for name in names:
            monkeypatch.setattr(mod, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "__matmul__", forbidden)
    outs = model(x)
    monkeypatch.undo()
    with torch.no_grad():
        refs = reference.double()(x.double())
    assert len(outs) == 2
    for o, r in zip(outs, refs):
        assert rel_err(o, r) <= 1e-4


@pytest.mark.slow
def test_batch_size_may_change_between_calls():
    model = compile_small(EXAMPLES / "resnet50.arch", width=4)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    for batch in (3, 1, 3):
        x = torch.randn(batch, *model.graph.shape("input"))
        with torch.no_grad():
            assert rel_err(model(x), reference.double()(x.double())) <= 1e-4


@pytest.mark.slow
def test_weights_load_by_reference_name_and_bn_is_folded_at_load_time():
    model = compile_small(EXAMPLES / "resnet50.arch", width=4)
    x = torch.randn(2, *model.graph.shape("input"))
    before = model(x)
    donor = archdsl.to_torch(model.graph).eval()
    randomize(donor, seed=5)
    archdsl.load_weights(model, donor.state_dict())  # new weights: the kernels' copies are rebuilt
    after = model(x)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        assert rel_err(after, donor.double()(x.double())) <= 1e-4
        model.bn1.running_var.mul_(4)  # an in-place change is seen too
    with torch.no_grad():
        donor.bn1.running_var.mul_(4)
        assert rel_err(model(x), donor.double()(x.double())) <= 1e-4


@pytest.mark.slow
def test_torchvision_weights_run_compiled():
    from tv import import_torchvision_models

    models = import_torchvision_models()
    theirs = models.resnet18(num_classes=10).eval()
    randomize(theirs, seed=3)
    ours = archdsl.compile(EXAMPLES / "resnet.arch", device=DEVICE, depth=18, classes=10, input_shape=(3, 16, 16))
    archdsl.load_weights(ours, theirs.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = theirs.double()(x.double())
    assert rel_err(ours(x), ref) <= 1e-4


def test_the_compiled_model_is_a_module_with_the_reference_parameters():
    model = compile_small(EXAMPLES / "lenet5.arch")
    reference = archdsl.build_torch(EXAMPLES / "lenet5.arch")
    assert isinstance(model, torch.nn.Module)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert "launches=7" in repr(model) and "conv2d(" in model.source


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["resnet50", "vgg16", "googlenet", "densenet121"])
def test_full_size_on_gpu_no_worse_than_pytorch_at_that_precision(name, dtype):
    path = EXAMPLES / f"{name}.arch"
    model = archdsl.compile(path, dtype=dtype, device="cuda")
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(8, *model.graph.shape("input"))
    with torch.no_grad():
        exact = reference.double()(x.double())
        torch_dtype = getattr(torch, dtype)
        theirs = reference.to("cuda", torch_dtype)(x.to("cuda", torch_dtype))
    exact = exact if isinstance(exact, tuple) else (exact,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    start = time.perf_counter()
    ours = model(x.cuda())
    torch.cuda.synchronize()
    ours = ours if isinstance(ours, tuple) else (ours,)
    for o, t, e in zip(ours, theirs, exact):
        if dtype == "float32":
            assert rel_err(o, e) <= 1e-4
        else:
            assert rel_err(o, e) <= 2 * rel_err(t, e) + 1e-3, (rel_err(o, e), rel_err(t, e))
    assert time.perf_counter() - start < 600


# ---- the tuning table and CUDA graphs, wired into the compiled model --------------------------------

TUNED_NET = """
network tuned {
    input 3 x 9 x 7
    stem: conv(8, 3, pad=1) -> bn -> relu
    residual { a: conv(8, 3, pad=1) -> relu -> b: conv(8, 3, pad=1) }
    relu -> global_avgpool -> flatten -> fc(5)
}
"""


def test_the_tuning_table_reaches_every_conv_launch():
    from archdsl.runtime import CompiledModel, build

    compiled = build(archdsl.loads(TUNED_NET))
    asked = []

    def tuning(batch):
        asked.append(batch)
        return {"stem": {"block_m": 16, "block_n": 16, "block_k": 16}, "a": {"block_m": 64}}

    model = CompiledModel(compiled, torch.device(DEVICE), tuning=tuning)
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        want = reference.double()(x.double())
    for _ in range(2):
        assert rel_err(model(x), want) < 1e-5
    assert asked == [2]  # once per batch size
    model(torch.randn(1, 3, 9, 7))
    assert asked == [2, 1]
    # the keyword arguments really arrive: a path that does not fit the stem's 3x3 conv is refused
    bad = CompiledModel(compiled, torch.device(DEVICE), tuning=lambda n: {"stem": {"path": "gemm"}})
    with pytest.raises(ValueError, match="path='gemm' needs a 1x1"):
        bad(x)


def test_cuda_graph_replay_in_the_compiled_model():
    from archdsl.runtime.cudagraph import EmulatedGraphBackend
    from archdsl.runtime import CompiledModel, build

    backend = EmulatedGraphBackend()
    model = CompiledModel(build(archdsl.loads(TUNED_NET)), torch.device(DEVICE), cuda_graph=True,
                          graph_backend=backend)
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(2, 3, 9, 7), torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        want_x, want_y = reference.double()(x.double()), reference.double()(y.double())
    first = model(x)
    assert rel_err(first, want_x) < 1e-5 and rel_err(model(y), want_y) < 1e-5  # a replay with new inputs
    assert rel_err(first, want_x) < 1e-5  # outputs are copies: the replay did not overwrite them
    assert len(model._call) == 1
    # new weights: the captured graph read the old ones, so it is captured again
    randomize(model, seed=5)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        want = reference.double()(x.double())
    assert rel_err(model(x), want) < 1e-5
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="needs a CUDA device"):
            archdsl.compile(source=TUNED_NET, device="cpu", cuda_graph=True)
        with pytest.raises(ValueError, match="needs a CUDA device"):
            archdsl.compile(source=TUNED_NET, device="cpu", tune=True)
