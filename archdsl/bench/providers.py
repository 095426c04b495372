"""Providers: what is timed.  End to end (`E2E_PROVIDERS`: eager PyTorch, torch.compile,
archdsl with and without a CUDA graph) and per layer (`LAYER_PROVIDERS`: F.conv2d and
archdsl's conv2d on one conv's operands, `LayerCase`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..dtypes import BYTES as DTYPE_BYTES
from ..ops.registry import act_codes, apply_activation
from .convs import ConvLayer

@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    build: Callable  # see E2EContext / LayerCase
    needs_cuda: bool = False
    cudnn_benchmark: bool = False  # set before the provider is built, captured, checked and timed


class Unavailable(Exception):
    """A provider that cannot run here (recorded as skipped, with the reason)."""


@dataclass
class Bound:
    """A provider bound to inputs: `fn()` runs it once and returns its outputs."""

    fn: Callable[[], Any]
    prepare: Callable[[], None] | None = None  # run before the checked call (poison outputs)
    config: dict | None = None  # the kernel configuration used (tuned rows)


class E2EContext:
    """What the end-to-end providers build from, for one dtype."""

    def __init__(self, graph, state: dict, folded: tuple, dtype: str, device, graph_backend=None, tune: bool = False):
        self.graph, self.state, self.dtype, self.device = graph, state, dtype, device
        self.folded_graph, self.folded_weights = folded
        self._graph_backend = graph_backend
        self.tune = tune  # tune the conv launches missing from the autotuning cache (GPU)
        self._compiled = None

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def graph_backend(self):
        from ..runtime.cudagraph import CudaGraphBackend

        return self._graph_backend or CudaGraphBackend()

    def folded_model(self, channels_last: bool = False):
        import torch

        from ..backends.torch_backend import to_torch

        model = to_torch(self.folded_graph).eval()
        model.load_state_dict(self.folded_weights)
        model = model.to(device=self.device, dtype=self.torch_dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def compiled_model(self):
        if self._compiled is None:
            from ..runtime.model import CompiledModel, build, cached_tuning

            compiled = build(self.graph, self.dtype)
            # the block sizes `archdsl.compile` would use on this GPU: the cache's (plain launches;
            # the providers capture CUDA graphs themselves)
            tuning = cached_tuning(compiled.optimized.graph, self.dtype, self.device, self.tune) \
                if self.device.type == "cuda" else None
            model = CompiledModel(compiled, self.device, tuning=tuning)
            model.load_state_dict(self.state)
            self._compiled = model
        return self._compiled


def _cl(xs):
    import torch

    return [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs]


def _graphed(ctx: E2EContext, fn, xs) -> Callable[[], Any]:
    from ..runtime.cudagraph import GraphedCallable

    graphed = GraphedCallable(fn, xs, backend=ctx.graph_backend())
    static = graphed.static_inputs(*xs)
    return lambda: graphed(*static)  # the static inputs themselves: no copy per call


def _e2e_eager(channels_last: bool, in_graph: bool):
    def build(ctx: E2EContext):
        model = ctx.folded_model(channels_last)

        def bind(xs):
            xs = _cl(xs) if channels_last else [x.contiguous() for x in xs]
            if in_graph:
                return Bound(_graphed(ctx, model, xs))
            return Bound(lambda: model(*xs))

        return bind

    return build


def _e2e_compile(ctx: E2EContext):
    import torch

    model = ctx.folded_model(channels_last=True)
    compiled = torch.compile(model, mode="max-autotune", dynamic=False)

    def bind(xs):
        xs = _cl(xs)
        return Bound(lambda: compiled(*xs))

    return bind


def _e2e_archdsl(in_graph: bool):
    def build(ctx: E2EContext):
        model = ctx.compiled_model()

        def bind(xs):
            xs = [x.contiguous() for x in xs]
            if in_graph:
                return Bound(_graphed(ctx, model, xs))
            return Bound(lambda: model(*xs))

        return bind

    return build


E2E_PROVIDERS: list[Provider] = [
    Provider("eager_nchw", "eager cuDNN, NCHW", _e2e_eager(False, False)),
    Provider("eager_cl", "eager cuDNN, channels-last, cudnn.benchmark", _e2e_eager(True, False),
             cudnn_benchmark=True),
    Provider("eager_cl_graph", "eager channels-last, cudnn.benchmark, in a CUDA graph", _e2e_eager(True, True),
             needs_cuda=True, cudnn_benchmark=True),
    Provider("torch_compile", 'torch.compile(mode="max-autotune"), channels-last', _e2e_compile, needs_cuda=True,
             cudnn_benchmark=True),
    Provider("archdsl", "archdsl, plain launches", _e2e_archdsl(False)),
    Provider("archdsl_graph", "archdsl in a CUDA graph", _e2e_archdsl(True), needs_cuda=True),
]
E2E_BASELINE = "eager_nchw"


class LayerCase:
    """One conv at one batch and dtype: the same random input, weight, bias and residual for every
    provider (NCHW channels-last tensors whose NHWC views are archdsl's operands), and the float64
    references of conv + bias and of the fused epilogue."""

    def __init__(self, layer: ConvLayer, batch: int, dtype: str, device, seed: int = 0, tuner=None):
        import torch
        import torch.nn.functional as F

        s = layer.shape
        self.layer, self.batch, self.dtype, self.device, self.tuner = layer, batch, dtype, device, tuner
        dt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(seed * 104729 + batch * 131 + int(layer.id[1:]))
        cl = torch.channels_last
        kh, kw = s.kernel
        fan_in = (s.cin // s.groups) * kh * kw
        self.x = torch.randn(batch, s.cin, s.h, s.w, generator=gen).to(device=device, dtype=dt).contiguous(
            memory_format=cl)
        w = torch.randn(s.cout, s.cin // s.groups, kh, kw, generator=gen) * math.sqrt(2.0 / fan_in)
        self.w = w.to(device=device, dtype=dt).contiguous(memory_format=cl)
        self.bias32 = (torch.randn(s.cout, generator=gen) * 0.1).to(device) if layer.bias else None
        self.bias = self.bias32.to(dt) if self.bias32 is not None else None
        self.residual = (torch.randn(batch, s.cout, s.p, s.q, generator=gen).to(device=device, dtype=dt)
                         .contiguous(memory_format=cl) if layer.residual else None)
        # float64 references on the rounded operands
        x64 = self.x.double().contiguous()
        pad = s.padding_arg()
        if pad is None:
            t, b, left, r = s.pad
            x64, pad = F.pad(x64, (left, r, t, b)), (0, 0)
        self.ref_plain = F.conv2d(x64, self.w.double(), self.bias32.double() if self.bias32 is not None else None,
                                  s.stride, pad, s.dilation, s.groups)
        fused = self.ref_plain + self.residual.double() if self.residual is not None else self.ref_plain
        self.ref_fused = apply_activation(layer.act, fused)

    def nhwc(self, t):
        return t.permute(0, 2, 3, 1)  # a channels-last NCHW tensor's NHWC view: contiguous, same memory

    def new_out(self):
        import torch

        s = self.layer.shape
        return torch.empty(self.batch, s.p, s.q, s.cout, device=self.device, dtype=self.x.dtype)


def _layer_torch(case: LayerCase) -> Bound:
    import torch.nn.functional as F

    s = case.layer.shape
    pad = s.padding_arg()
    x, w, b = case.x, case.w, case.bias
    if pad is None:
        t, bt, left, r = s.pad
        return Bound(lambda: F.conv2d(F.pad(x, (left, r, t, bt)), w, b, s.stride, 0, s.dilation, s.groups))
    return Bound(lambda: F.conv2d(x, w, b, s.stride, pad, s.dilation, s.groups))


def _layer_archdsl(fused: bool, tuned: bool = False):
    def build(case: LayerCase) -> Bound:
        from ..runtime.tune import kernel_module

        mod = kernel_module("conv2d")
        s = case.layer.shape
        if fused and not tuned and not case.layer.fused:
            raise Unavailable("this conv has no epilogue beyond the bias")
        out = case.new_out()
        w = mod.pack_conv_weight(case.w, s.groups, case.x.dtype)
        kwargs = dict(kernel=s.kernel, stride=s.stride, pad=s.pad, dilation=s.dilation, groups=s.groups,
                      bias=case.bias32)
        if fused or tuned:
            kwargs.update(residual=case.nhwc(case.residual) if case.residual is not None else None,
                          act=act_codes()[case.layer.act])
        x = case.nhwc(case.x)
        config = {}
        if tuned:
            if case.tuner is None:
                raise Unavailable("autotuning was not asked for (--tune)")
            config = case.tuner(mod.conv2d, x, w, out, kwargs)
        out_nchw = out.permute(0, 3, 1, 2)

        def run():
            mod.conv2d(x, w, out, **kwargs, **config)
            return out_nchw

        return Bound(run, prepare=lambda: out.fill_(float("nan")), config=config or None)

    return build


LAYER_PROVIDERS: list[Provider] = [
    Provider("torch_conv", "F.conv2d channels-last (cuDNN, benchmark): conv + bias", _layer_torch,
             cudnn_benchmark=True),
    Provider("archdsl_conv", "archdsl conv2d: conv + bias", _layer_archdsl(False)),
    Provider("archdsl_fused", "archdsl conv2d with the layer's fused epilogue", _layer_archdsl(True)),
    Provider("archdsl_tuned", "archdsl conv2d, fused, autotuned (cached)", _layer_archdsl(True, tuned=True)),
]
LAYER_BASELINE = "torch_conv"


def provider(name: str) -> Provider:
    for p in E2E_PROVIDERS + LAYER_PROVIDERS:
        if p.name == name:
            return p
    raise KeyError(name)


def layer_work(layer: ConvLayer, provider_name: str, batch: int, dtype: str) -> tuple[int, int]:
    """(FLOPs, bytes) of one provider's row: conv + bias, or with the fused epilogue."""
    s = layer.shape
    fused = provider_name in ("archdsl_fused", "archdsl_tuned")
    return s.flops(batch), s.bytes(batch, DTYPE_BYTES[dtype], bias=layer.bias, residual=fused and layer.residual,
                                   bias_elem=4 if provider_name != LAYER_BASELINE else DTYPE_BYTES[dtype])
