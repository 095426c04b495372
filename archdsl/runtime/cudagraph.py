"""CUDA-graph capture behind a small interface: capture a callable once per input signature, replay it.

A CNN forward at batch 1 is hundreds of short kernel launches; the host's launch overhead
(Python, Triton's launcher, the driver) can exceed the GPU time.  A CUDA graph records the
launches once and replays them with one call.  The price: everything the graph touches lives at
fixed addresses.  So `GraphedCallable`

* keeps, per input signature (shapes, dtypes, device), *static* input tensors, a captured graph
  and the output tensors that capture produced (they live in the graph's memory pool);
* on each call copies the inputs into the static ones (skipped when the caller passes the
  static tensors themselves: `static_inputs`), replays the graph and returns the outputs —
  the same tensors every time, overwritten by the next replay, unless ``clone_outputs=True``;
* warms the callable up on a side stream before capturing (Triton compiles, the generated
  network allocates its per-batch buffers, cuDNN picks algorithms: none of that may happen
  during capture), as PyTorch's documentation prescribes;
* shares one memory pool among the graphs of one callable.

Whatever the callable reads besides its inputs (weights, the generated network's activation
buffers) is captured by address: if it is reallocated (a `CompiledModel` re-preparing its
weights after `load_state_dict`), call `invalidate()`.

Capture itself is a *backend*: `CudaGraphBackend` (torch.cuda.CUDAGraph) on a GPU;
`EmulatedGraphBackend` runs the callable again on replay and copies its results into the
captured output tensors, so the bookkeeping above (signatures, static inputs, output aliasing,
invalidation) is tested on the CPU.  `maybe_graph(fn, enabled)` is the runtime's entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence


class GraphCaptureError(RuntimeError):
    """The callable cannot be captured (no CUDA, inputs on the CPU, a non-capturable operation)."""


def _map(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply `fn` to every tensor in a tensor / tuple / list / dict structure."""
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> list:
    found: list = []
    _map(obj, lambda t: found.append(t) or t)
    return found


def signature(inputs: Sequence[Any]) -> tuple:
    """What selects a graph: each input's shape, dtype and device."""
    import torch

    sig = []
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"graphed callables take tensors only; input {i} is a {type(x).__name__}")
        sig.append((tuple(x.shape), x.dtype, x.device))
    return tuple(sig)


def cuda_graphs_available(device: Any = "cuda") -> str | None:
    """None when CUDA graphs can be captured on `device`, else the reason they cannot."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return f"CUDA graphs need CUDA tensors; these are on {dev}"
    if not torch.cuda.is_available():
        return f"CUDA is not available (torch {torch.__version__})"
    return None


# ---- backends -----------------------------------------------------------------------------------


class CudaGraphBackend:
    """Capture with torch.cuda.CUDAGraph (warm-up on a side stream first)."""

    name = "cuda"

    def __init__(self, warmup: int = 3):
        self.warmup = warmup

    def check(self, inputs: Sequence[Any]) -> None:
        """GraphCaptureError unless every input is a CUDA tensor and CUDA is available."""
        for x in inputs or ("cuda",):
            why = cuda_graphs_available(x.device if hasattr(x, "device") else x)
            if why:
                raise GraphCaptureError(why)

    def new_pool(self):
        import torch

        return torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[..., Any], static_inputs: Sequence[Any],
                pool) -> tuple[Callable[[], None], Any, Any]:
        """(replay, outputs, graph object) for fn(*static_inputs)."""
        import torch

        self.check(static_inputs)
        device = static_inputs[0].device if static_inputs else torch.device("cuda")
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(*static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=pool):
                outputs = fn(*static_inputs)
        except RuntimeError as exc:
            raise GraphCaptureError(f"capture failed: {exc}") from exc
        return graph.replay, outputs, graph


class EmulatedGraphBackend:
    """For tests and CPUs: 'capture' runs fn once; 'replay' runs it again and copies its results
    into the captured output tensors, which is what a replay leaves behind on a GPU."""

    name = "emulated"

    def __init__(self, warmup: int = 1):
        self.warmup = warmup
        self.captures = 0
        self.replays = 0

    def new_pool(self):
        return None

    def capture(self, fn, static_inputs, pool):
        for _ in range(self.warmup):
            fn(*static_inputs)
        outputs = _map(fn(*static_inputs), lambda t: t.clone())
        self.captures += 1

        def replay():
            self.replays += 1
            fresh = _tensors(fn(*static_inputs))
            for dst, src in zip(_tensors(outputs), fresh):
                dst.copy_(src)

        return replay, outputs, None


# ---- the graphed callable -----------------------------------------------------------------------


@dataclass
class Captured:
    inputs: tuple  # the static input tensors
    outputs: Any  # what capture returned; overwritten by each replay
    replay: Callable[[], None]
    graph: Any  # the backend's graph object (torch.cuda.CUDAGraph), kept alive here


class GraphedCallable:
    """`fn` captured per input signature and replayed; see the module docstring.

    ``GraphedCallable(fn, example_inputs)`` captures at once; without examples, the first call
    of each signature captures.  Outputs are the graph's own tensors (overwritten by the next
    replay) unless ``clone_outputs``.
    """

    def __init__(self, fn: Callable[..., Any], example_inputs: Sequence[Any] | None = None, *,
                 backend: Any = None, clone_outputs: bool = False, warmup: int = 3):
        self.fn = fn
        self.backend = backend if backend is not None else CudaGraphBackend(warmup)
        self.clone_outputs = clone_outputs
        self._graphs: dict[tuple, Captured] = {}
        self._pool = None
        if example_inputs is not None:
            self.capture(*example_inputs)

    def __len__(self) -> int:
        """How many graphs (input signatures) are captured."""
        return len(self._graphs)

    def capture(self, *inputs: Any) -> Captured:
        """Capture (or return the already captured graph) for inputs of this signature; the
        static inputs start as copies of `inputs`."""
        key = signature(inputs)
        found = self._graphs.get(key)
        if found is not None:
            return found
        check = getattr(self.backend, "check", None)
        if check is not None:
            check(inputs)
        if self._pool is None:
            self._pool = self.backend.new_pool()
        static = tuple(x.detach().clone() for x in inputs)
        replay, outputs, graph = self.backend.capture(self.fn, static, self._pool)
        captured = Captured(static, outputs, replay, graph)
        self._graphs[key] = captured
        return captured

    def static_inputs(self, *inputs: Any) -> tuple:
        """The static input tensors for this signature (capturing if needed): write new inputs
        into them and call with them to skip the copy."""
        return self.capture(*inputs).inputs

    def __call__(self, *inputs: Any) -> Any:
        captured = self.capture(*inputs)
        for static, x in zip(captured.inputs, inputs):
            if x is not static and x.data_ptr() != static.data_ptr():
                static.copy_(x)
        captured.replay()
        if self.clone_outputs:
            return _map(captured.outputs, lambda t: t.clone())
        return captured.outputs

    def invalidate(self) -> None:
        """Drop every graph (call when what `fn` reads besides its inputs was reallocated)."""
        self._graphs.clear()
        self._pool = None


def maybe_graph(fn: Callable[..., Any], enabled: bool, *, backend: Any = None, clone_outputs: bool = True,
                warmup: int = 3) -> Callable[..., Any]:
    """`fn` itself when not `enabled`, else a `GraphedCallable` of it (capture on first call per
    input signature).  Outputs are cloned by default: a caller that keeps results across calls
    is then safe, at the cost of one small copy per output."""
    if not enabled:
        return fn
    return GraphedCallable(fn, backend=backend, clone_outputs=clone_outputs, warmup=warmup)


__all__ = ["Captured", "CudaGraphBackend", "EmulatedGraphBackend", "GraphCaptureError", "GraphedCallable",
           "cuda_graphs_available", "maybe_graph", "signature"]
