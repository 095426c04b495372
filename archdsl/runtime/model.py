"""The compiled model: `archdsl.compile(...)` -> a `torch.nn.Module` that runs generated Triton.

`CompiledModel` keeps its weights exactly as the reference model does (same module tree, same
state-dict keys), so `archdsl.load_weights` and `load_state_dict` work unchanged — torchvision
state dicts included.  The kernels read prepared copies (BN folded, packed), rebuilt whenever a
weight changes (tracked through the tensors' version counters).  Its forward launches only the
generated kernels: no PyTorch convolution, pooling or linear op runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import dtypes
from ..backends.torch_backend import ArchModule
from ..codegen import Program, generate
from ..elaborate import load, loads
from ..ir.graph import Graph
from ..passes import Optimized, optimize
from .cache import import_program
from .cudagraph import maybe_graph


@dataclass
class Compiled:
    """Everything one compilation produced."""

    graph: Graph  # as elaborated (the reference semantics)
    optimized: Optimized
    program: Program


def build(graph: Graph, dtype: str = "float32", origin: str = "", settings: str = "",
          disable: tuple[str, ...] = ()) -> Compiled:
    """Optimize and generate (no GPU, no Triton needed)."""
    optimized = optimize(graph, disable)
    return Compiled(graph, optimized, generate(optimized.graph, dtype, origin, settings))


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cpu":
        # Triton runs on the CPU only in its interpreter, chosen when kernels are defined.
        os.environ["TRITON_INTERPRET"] = "1"
    return device


class CompiledModel(ArchModule):
    """A network compiled to Triton kernels; NCHW in, outputs like the reference model's.

    `tuning`: a function of the batch size giving {node: conv2d keyword arguments} (see
    `archdsl.runtime.tune.network_tuning`), asked once per batch size; `cuda_graph`: replay the whole
    forward as a CUDA graph per input shape (`archdsl.runtime.cudagraph`), captured on the first call of
    each shape and again whenever the weights change; `graph_backend` replaces CUDA's (tests).
    """

    def __init__(self, compiled: Compiled, device: torch.device, *, tuning=None, cuda_graph: bool = False,
                 graph_backend=None):
        super().__init__(compiled.graph)
        object.__setattr__(self, "compiled", compiled)
        self.run_device = device
        self.tuning = tuning
        self.cuda_graph = cuda_graph
        self.graph_backend = graph_backend
        self._module = import_program(compiled.program.source)
        self._network = None
        self._call = None
        self._signature = None
        self._tensors = None

    @property
    def source(self) -> str:
        """The generated Python + Triton source."""
        return self.compiled.program.source

    def _weights_signature(self) -> tuple:
        """The version counter of every weight tensor: any in-place change (load_state_dict,
        an optimizer step, `bn.running_var.mul_`) bumps one.  The tensor list is cached; module
        methods that replace tensors (`.to`, `.double`) go through `_apply`, which clears it."""
        if self._tensors is None:
            self._tensors = list(self.state_dict(keep_vars=True).values())
        return tuple(t._version for t in self._tensors)

    def _apply(self, fn, *args, **kwargs):
        self._tensors = None
        self._network = self._call = None
        return super()._apply(fn, *args, **kwargs)

    def refresh(self) -> None:
        """Re-prepare the kernels' weights now (done automatically when a weight changes); any
        captured CUDA graph read the old weights' memory, so it is dropped too."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        self._network = self._module.Network(state, self.run_device, tuning=self.tuning)
        self._call = maybe_graph(self._network, self.cuda_graph, backend=self.graph_backend)
        self._signature = self._weights_signature()

    def forward(self, *inputs: torch.Tensor):
        self._check_inputs(inputs)
        if self._network is None or self._signature != self._weights_signature():
            self.refresh()
        return self._call(*(x.to(self.run_device) for x in inputs))

    def _check_inputs(self, inputs) -> None:
        """The generated program's buffers are sized for the shapes it was compiled for (any
        batch): say so, and how to recompile, instead of failing inside a kernel or a copy."""
        graph = self.graph
        if len(inputs) != len(graph.inputs):
            raise TypeError(f"{graph.name} takes {len(graph.inputs)} input(s) ({', '.join(graph.inputs)}), "
                            f"got {len(inputs)}")
        for name, x in zip(graph.inputs, inputs):
            want = tuple(graph.shape(name))
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{graph.name}: input `{name}` must be a tensor, got {type(x).__name__}")
            got = tuple(x.shape)
            if got == want:
                raise ValueError(f"{graph.name}: input `{name}` has shape {got}, one sample without its batch "
                                 f"dimension: pass x.unsqueeze(0)")
            if x.dim() != len(want) + 1 or got[1:] != want:
                per_sample = got[1:] if x.dim() == len(want) + 1 else got[-len(want):]
                raise ValueError(
                    f"{graph.name} was compiled for input `{name}` of shape (N, {', '.join(map(str, want))}); "
                    f"got {got}. Compile it for the shape you have: archdsl.compile(..., input_shape={per_sample}) "
                    f"or `archdsl compile FILE --input {'x'.join(map(str, per_sample))}`")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, device={self.run_device}, launches={self.compiled.program.launches}"


def compile(path: str | Path | Graph | None = None, *, source: str | None = None, dtype: str = "float32",
            device: str | torch.device | None = None, network: str | None = None,
            input_shape: tuple[int, int, int] | None = None, disable: tuple[str, ...] = (), tune: bool = False,
            cuda_graph: bool | None = None, **params: Any) -> CompiledModel:
    """Compile a network to a `CompiledModel` running generated Triton kernels.

    The network is a `.arch` file (`path`: always a path, whatever characters it holds), the text
    of a program (`source=`), or an elaborated `Graph` (`path`), as `archdsl.load`, `loads` and
    `summary` take them.  `dtype`: any spelling of `archdsl.dtypes` ("float16", "fp16", ...).
    `device`: "cuda" (default when available) or "cpu" (Triton's interpreter: slow, for tests).
    `params` override network parameters; weights start as PyTorch initializes the reference
    model; load others with `archdsl.load_weights(model, source)`.
    On a GPU, conv, chain and linear launches use the block sizes in the autotuning cache
    (`archdsl.runtime.tune`) for their shapes, else those of the table shipped for this GPU
    (archdsl/runtime/tuned/); `tune=True` also tunes (once, then cached on disk) every shape
    with neither (or with a shipped entry measured on other versions).
    `cuda_graph` (default: on for CUDA) replays the forward as a CUDA graph per input shape.
    """
    graph, origin = _network(path, source, network, params, input_shape)
    dtype = dtypes.canonical(dtype)
    run_device = _resolve_device(device)
    compiled = build(graph, dtype, origin=origin, disable=disable)
    on_gpu = run_device.type == "cuda"
    if tune and not on_gpu:
        raise ValueError("tune=True needs a CUDA device: block sizes are timed on the GPU they are for")
    if cuda_graph and not on_gpu:
        raise ValueError("cuda_graph=True needs a CUDA device")
    tuning = cached_tuning(compiled.program.schedule, dtype, run_device, tune) if on_gpu else None
    return CompiledModel(compiled, run_device, tuning=tuning, cuda_graph=on_gpu if cuda_graph is None else cuda_graph)


def _network(path, source, network, params, input_shape) -> tuple[Graph, str]:
    """The graph `compile` was asked for, and the file it came from ("" for text or a graph)."""
    if (path is None) == (source is None):
        raise TypeError("compile() takes a path (or a Graph) or source=..., exactly one of them")
    if source is not None:
        if not isinstance(source, str):
            raise TypeError(f"compile(source=...) takes the program's text, got {type(source).__name__}")
        return loads(source, network, params, input_shape), ""
    if isinstance(path, Graph):
        if network is not None or params or input_shape is not None:
            raise TypeError("compile(graph): network, params and input_shape apply to a path or source only")
        return path, ""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"compile() takes a path, a Graph or source=..., got {type(path).__name__}")
    if isinstance(path, str) and "\n" in path:
        raise TypeError("compile(path) got text with a line break: pass program text as compile(source=...)")
    return load(path, network, params, input_shape), str(path)


def cached_tuning(schedule, dtype: str, device: torch.device, tune_missing: bool):
    """batch -> {node: kernel kwargs} for a launch schedule, from the autotuning cache, else the
    shipped tables (tuning misses if asked)."""
    from .tune import network_tuning

    return lambda batch: network_tuning(schedule, batch, dtype, autotune_missing=tune_missing, device=device)
