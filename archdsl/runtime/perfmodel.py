"""A per-launch performance model: what a kernel launch should cost on a GPU, from ceilings.

Why: a GPU is lent rarely and briefly, so tuning cannot try every configuration of every
launch there (ResNet-50's conv space is ~450 compiled variants, ~26 minutes of compiling).  The
model ranks the candidates of a launch on paper, so that only a handful per launch are
compiled and timed, and it says what each launch *should* take, so that a measured time far
from its prediction points at the launch worth a look.

The model (a roofline with wave quantization; every constant is a lead until calibrated
against measurements, see `Ceilings`):

    tiles      = ceil(M / BM) * ceil(N / BN) * groups          output tiles, one program each
    per_sm     = ceil(tiles / SMs)                               tiles on the busiest SM
    compute    = per_sm * flops_per_tile / (rate / SMs) / eff    the SM's share of the peak
    memory     = dram_bytes / bandwidth
    time       = launch + max(compute, memory)

Split-K (`Tile.split_k` = S > 1; kernels/conv2d.py's split kernels): S programs per tile, each
computing ceil(blocks / S) of the tile's reduction blocks, write fp32 partials (S * M * N * 4
bytes) that a second launch reads back, sums and finishes (the epilogue, the output's bytes):

    time       = launch + max(compute, memory without the output + workspace write)
               + launch + (workspace read + output) / bandwidth

`flops_per_tile` counts the padded tile (2 * BM * BN * ceil(K / BK) * BK), so ragged edges
cost what the hardware spends on them.  `eff` is the fraction of the peak a program reaches
with the warps resident on its SM: latency hiding needs about two warp groups (8 warps)
in flight; fewer scale it down.  `dram_bytes` is each operand once (programs run in grouped
order, so those that share an activation panel run together), except weights larger than half
of L2, read once per wave.

A chain launch (kernels/conv2d_chain.py: a conv and the 1x1 conv after it, the intermediate
on chip) is priced by `predict_chain`: the same roofline over its grid of pixel blocks x
output-channel groups x C_mid slices, where an output group recomputes the first conv and C_mid
slices add a split-K-like workspace and reduce launch.  A grouped first conv (ResNeXt) is priced
as the kernel's grouped variant runs it: its block-diagonal weight's zeros counted as MMA work,
its first conv recomputed per output tile (`_chain_grid`); `chain_pair_us` compares such a chain
with the two launches it replaces, which is how the chain pass decides (passes/chain.py).

Occupancy (programs resident per SM) comes from the compiled kernel's registers and shared
memory (`Occupancy.from_compiled`) or, before compiling, from an estimate of both
(`Occupancy.estimate`).  Hopper (sm_90) limits: 64 warps, 32 programs, 64 Ki registers and
228 KiB of shared memory per SM (1 KiB of it reserved per program); registers are allocated
per warp in units of 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

# ---- the device ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ceilings:
    """What a GPU can do at most; measured in the same run where possible (`measured` says).

    matmul_tflops: dense fp16/bf16 tensor-core rate; fp32_tflops: IEEE fp32 FMA rate (our fp32
    kernels do not use TF32 unless asked); vector_tflops: the CUDA-core rate for non-MMA
    kernels (depthwise); bandwidth_gbs: device-memory copy bandwidth (read + write counted);
    launch_us: one launch's fixed cost inside a CUDA graph.
    """

    name: str
    sms: int
    matmul_tflops: float
    fp32_tflops: float
    bandwidth_gbs: float
    l2_bytes: int
    launch_us: float = 2.5
    efficiency: float = 0.8  # the fraction of peak a well-fed MMA program reaches
    measured: bool = False

    @classmethod
    def h200_datasheet(cls) -> "Ceilings":
        """The vendor's H200 SXM figures (dense bf16 ~990 TFLOP/s, fp32 ~67, 4.8 TB/s, 50 MB
        L2, 132 SMs): leads, not measurements; replace them with the first-contact check's."""
        return cls("NVIDIA H200 (datasheet)", 132, 989.0, 67.0, 4800.0, 50 * 2 ** 20)

    @classmethod
    def for_device(cls, device: Any = "cuda") -> "Ceilings":
        """The datasheet rates with this device's SM count and L2 size (what ranking needs most)."""
        import torch

        props = torch.cuda.get_device_properties(device)
        return replace(cls.h200_datasheet(), name=f"{props.name} (H200 datasheet rates)",
                       sms=props.multi_processor_count, l2_bytes=props.L2_cache_size)

    def with_measured(self, *, matmul_tflops: float | None = None, bandwidth_gbs: float | None = None,
                      name: str | None = None) -> "Ceilings":
        """These ceilings with the rates measured on the device (others kept)."""
        return replace(self, name=name or self.name, measured=True,
                       matmul_tflops=matmul_tflops or self.matmul_tflops,
                       bandwidth_gbs=bandwidth_gbs or self.bandwidth_gbs)


# Hopper's per-SM limits (CUDA occupancy rules for compute capability 9.0)
SM_WARPS, SM_PROGRAMS, SM_REGISTERS = 64, 32, 65536
SM_SHARED, SHARED_RESERVED = 228 * 1024, 1024
REG_UNIT = 256  # registers are allocated per warp in units of 256


@dataclass(frozen=True)
class Occupancy:
    """Programs (CTAs) of one kernel resident on an SM at once, and what limits them."""

    programs: int
    limit: str  # "warps", "registers", "shared memory" or "programs"
    warps: int

    @classmethod
    def from_resources(cls, warps: int, registers: int, shared: int) -> "Occupancy":
        """From a compiled kernel's `num_warps`, registers per thread and shared bytes."""
        per_warp = math.ceil(registers * 32 / REG_UNIT) * REG_UNIT
        limits = {
            "warps": SM_WARPS // warps,
            "registers": SM_REGISTERS // (per_warp * warps) if per_warp else SM_PROGRAMS,
            "shared memory": SM_SHARED // (shared + SHARED_RESERVED),
            "programs": SM_PROGRAMS,
        }
        limit = min(limits, key=limits.get)
        return cls(limits[limit], limit, warps)

    @classmethod
    def from_compiled(cls, kernel: Any) -> "Occupancy":
        """From a `triton.compile` result (its n_regs, metadata.shared and num_warps)."""
        return cls.from_resources(kernel.metadata.num_warps, kernel.n_regs, kernel.metadata.shared)

    @classmethod
    def estimate(cls, tile: "Tile", elem_bytes: int) -> "Occupancy":
        """Before compiling: the pipeline's shared memory and the fp32 accumulator's registers
        (plus ~64 per thread for addresses and operands), for ranking candidates only."""
        threads = 32 * tile.warps
        shared = tile.stages * (tile.bm * tile.bk + tile.bk * tile.bn) * elem_bytes
        registers = min(255, tile.bm * tile.bn // threads + 64)
        return cls.from_resources(tile.warps, registers, shared)


# ---- the work of one launch ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    bm: int
    bn: int
    bk: int
    warps: int = 4
    stages: int = 3
    split_k: int = 1  # slices of the reduction (split-K); 1: one pass

    @classmethod
    def from_config(cls, config: Mapping[str, Any], default: "Tile") -> "Tile":
        """A tuning config (``block_m``, ``block_n``, ``block_k``, ``num_warps``, ``num_stages``,
        ``split_k``)."""
        return cls(config.get("block_m") or default.bm, config.get("block_n") or default.bn,
                   config.get("block_k") or default.bk, config.get("num_warps") or default.warps,
                   config.get("num_stages") or default.stages, config.get("split_k") or default.split_k)


@dataclass(frozen=True)
class Problem:
    """One launch as a (grouped) GEMM: `groups` products of (M x K) by (K x N), plus the bytes
    that must cross device memory at least once (operands, output, residual)."""

    name: str
    m: int
    n: int
    k: int
    groups: int = 1
    a_bytes: int = 0  # the activation operand (input feature map)
    b_bytes: int = 0  # the weights
    out_bytes: int = 0  # outputs and residuals
    mma: bool = True  # a tensor-core (dot) kernel; False: CUDA cores (depthwise)
    elem_bytes: int = 2

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.groups

    @property
    def min_bytes(self) -> int:
        return self.a_bytes + self.b_bytes + self.out_bytes


@dataclass(frozen=True)
class Prediction:
    name: str
    us: float
    compute_us: float
    memory_us: float
    tiles: int
    per_sm: int
    occupancy: Occupancy
    dram_bytes: int
    split_k: int = 1  # a conv2d's split-K slices; a chain's split_mid
    split_n: int = 1  # a chain's output-channel groups

    @property
    def bound(self) -> str:
        return "compute" if self.compute_us >= self.memory_us else "memory"

    def row(self) -> dict:
        return {"launch": self.name, "predicted_us": round(self.us, 2), "compute_us": round(self.compute_us, 2),
                "memory_us": round(self.memory_us, 2), "bound": self.bound, "tiles": self.tiles,
                "per_sm": self.per_sm, "programs_per_sm": self.occupancy.programs,
                "occupancy_limit": self.occupancy.limit, "split_k": self.split_k}


def _rate_tflops(problem: Problem, ceilings: Ceilings) -> float:
    if not problem.mma or problem.elem_bytes == 4:
        return ceilings.fp32_tflops
    return ceilings.matmul_tflops


def predict(problem: Problem, tile: Tile, ceilings: Ceilings, occupancy: Occupancy | None = None) -> Prediction:
    """The predicted time of `problem` run with `tile` (see the module docstring)."""
    occupancy = occupancy or Occupancy.estimate(tile, problem.elem_bytes)
    blocks = max(1, math.ceil(problem.k / tile.bk))  # the reduction's BLOCK_K steps
    per_slice = math.ceil(blocks / max(1, tile.split_k))
    split = math.ceil(blocks / per_slice)  # as the launcher runs it: no empty slice
    tiles = math.ceil(problem.m / tile.bm) * math.ceil(problem.n / tile.bn) * problem.groups * split
    per_sm = math.ceil(tiles / ceilings.sms)
    flops_per_tile = 2 * tile.bm * tile.bn * per_slice * tile.bk
    resident_warps = max(1, min(occupancy.programs, per_sm)) * tile.warps
    eff = ceilings.efficiency * min(1.0, resident_warps / 8)
    sm_rate = _rate_tflops(problem, ceilings) * 1e12 / ceilings.sms
    compute_us = per_sm * flops_per_tile / (sm_rate * eff) * 1e6

    # Programs run in grouped order: the programs sharing an activation panel run together, so
    # it comes from DRAM once; the weights are read by every wave, from L2 while they fit in
    # half of it, else from DRAM once per wave.
    waves = math.ceil(per_sm / max(1, occupancy.programs))
    b_reads = 1 if problem.b_bytes <= ceilings.l2_bytes // 2 else waves
    bandwidth = ceilings.bandwidth_gbs * 1e9
    if split == 1:
        dram = problem.a_bytes + problem.b_bytes * b_reads + problem.out_bytes
        memory_us = dram / bandwidth * 1e6
        us = ceilings.launch_us + max(compute_us, memory_us)
    else:  # the partials' workspace out and back in; the reduce launch writes the output
        workspace = split * problem.m * problem.n * problem.groups * 4
        main_us = (problem.a_bytes + problem.b_bytes * b_reads + workspace) / bandwidth * 1e6
        reduce_us = (workspace + problem.out_bytes) / bandwidth * 1e6
        dram = problem.a_bytes + problem.b_bytes * b_reads + 2 * workspace + problem.out_bytes
        memory_us = main_us + reduce_us
        us = 2 * ceilings.launch_us + max(compute_us, main_us) + reduce_us
    return Prediction(problem.name, us, compute_us, memory_us, tiles, per_sm, occupancy, dram, split)


def floor_us(problem: Problem, ceilings: Ceilings) -> float:
    """The roofline floor: max(FLOPs / peak, minimal bytes / bandwidth), no launch cost."""
    return max(problem.flops / (_rate_tflops(problem, ceilings) * 1e12),
               problem.min_bytes / (ceilings.bandwidth_gbs * 1e9)) * 1e6


def prune(problem: Problem, candidates: Iterable[Mapping[str, Any]], ceilings: Ceilings, *, keep: int = 4,
          default: Tile = Tile(128, 128, 64, 8, 3)) -> list[dict]:
    """The `keep` candidates predicted fastest for `problem`, fastest first (ties: the one
    with less shared memory, then the earlier).  What autotuning compiles and times."""
    scored = []
    for i, config in enumerate(candidates):
        tile = Tile.from_config(config, default)
        p = predict(problem, tile, ceilings)
        shared = tile.stages * (tile.bm * tile.bk + tile.bk * tile.bn)
        scored.append((p.us, shared, i, dict(config)))
    scored.sort(key=lambda s: s[:3])
    return [s[3] for s in scored[:keep]]


# ---- launches of a generated program as problems --------------------------------------------------


def conv_problem(name: str, x_shape: Sequence[int], out_shape: Sequence[int], kernel: Sequence[int], groups: int,
                 residual: bool, elem_bytes: int, depthwise: bool = False, gate: bool = False) -> Problem:
    """A conv2d launch (NHWC shapes, as `archdsl.runtime.tune.ConvLaunch` has them) as a GEMM:
    M = N*P*Q output pixels, N = output channels per group, K = input channels per group * taps.
    gate: it scales its input by a squeeze-and-excitation gate while loading it: N*C more bytes
    read (the gate), and no separate mul launch reading and writing the map (see passes/gate.py)."""
    n, h, w, c = x_shape
    _, p, q, k = out_shape
    taps = kernel[0] * kernel[1]
    out_elems = n * p * q * k * (2 if residual else 1)
    read_pixels = min(n * h * w, n * p * q * taps)  # a strided 1x1 conv reads 1 pixel in stride**2
    return Problem(name, m=n * p * q, n=k // groups, k=c // groups * taps, groups=groups,
                   a_bytes=(read_pixels * c + (n * c if gate else 0)) * elem_bytes,
                   b_bytes=k * (c // groups) * taps * elem_bytes,
                   out_bytes=out_elems * elem_bytes, mma=not depthwise, elem_bytes=elem_bytes)


@dataclass(frozen=True)
class ChainProblem:
    """One conv2d_chain launch: a conv (taps * c -> c_mid) then a 1x1 conv (c_mid -> k) over m
    output pixels, the (m x c_mid) intermediate on chip; the bytes that must cross device memory
    at least once (the input, both weights, the output and residual)."""

    name: str
    m: int
    c: int
    taps: int
    c_mid: int
    k: int
    a_bytes: int
    b_bytes: int
    out_bytes: int
    elem_bytes: int = 2
    groups: int = 1  # the first conv's (> 1: kernels/conv2d_chain.py's grouped kernel)

    @property
    def flops(self) -> int:
        """The useful FLOPs (a grouped stage 1 reads c / groups channels an output)."""
        return 2 * self.m * self.c_mid * (self.taps * self.c // self.groups + self.k)


@dataclass(frozen=True)
class ChainVariant:
    """How a chain launches: blocks as `Tile`, stage 1's walk ("plain", "tap", "flat"), and
    its split (kernels/conv2d_chain.py): split_n groups of the outputs (each recomputing
    stage 1), split_mid slices of C_mid (an fp32 workspace and a reduce launch when > 1)."""

    tile: Tile
    walk: str = "tap"
    split_n: int = 1
    split_mid: int = 1


def chain_problem(name: str, x_shape: Sequence[int], mid: int, out_shape: Sequence[int], kernel: Sequence[int],
                  residual: bool, elem_bytes: int, groups: int = 1) -> ChainProblem:
    """A conv2d_chain launch (NHWC shapes; `mid` the first conv's output channels, in `groups`:
    its packed weight is then the block-diagonal slices `pack_chain_weight` makes)."""
    n, h, w, c = x_shape
    _, p, q, k = out_shape
    taps = kernel[0] * kernel[1]
    out_elems = n * p * q * k * (2 if residual else 1)
    w1 = c * taps * mid
    if groups > 1:
        sub, _, sub_c, n_sub = _kernel_defaults()._chain_group_slices(c, mid, groups)
        w1 = n_sub * taps * sub_c * sub
    return ChainProblem(name, m=n * p * q, c=c, taps=taps, c_mid=mid, k=k, a_bytes=n * h * w * c * elem_bytes,
                        b_bytes=(w1 + mid * k) * elem_bytes, out_bytes=out_elems * elem_bytes,
                        elem_bytes=elem_bytes, groups=groups)


def _chain_grid(problem: ChainProblem, variant: ChainVariant) -> tuple[int, int, int, int]:
    """(programs, FLOPs a program, split_mid, split_n) as the launcher runs `variant`.

    Ungrouped: MID_SLICE = pow2(c_mid) (>= 16) / split_mid columns a program, N_PER its outputs,
    2 * BM * MID_SLICE * (stage-1 reduction padded to BK steps + N_PER) FLOPs.  Grouped
    (kernels/conv2d_chain.py's `_chain_group_slices`, `_chain_grouped_macs`): SUBS_PER slices of
    SUB columns a program, stage 1 (SUB_C channels a slice, the block-diagonal zeros counted)
    recomputed for each of its N_PER / BN output tiles:
    2 * BM * SUBS_PER * SUB * (N_PER / BN * reduction + N_PER)."""
    t = variant.tile
    if problem.groups > 1:
        K = _kernel_defaults()
        sub, _, sub_c, n_sub = K._chain_group_slices(problem.c, problem.c_mid, problem.groups)
        subs_per, split_mid, n_per, split_n = K._chain_grouped_split_shape(n_sub, problem.k, t.bn, variant.split_n,
                                                                           variant.split_mid)
        red1 = K._chain_reduction(variant.walk, sub_c, problem.taps, t.bk)
        flops = 2 * K._chain_grouped_macs(t.bm, t.bn, sub, red1, subs_per, n_per)
        return math.ceil(problem.m / t.bm) * split_n * split_mid, flops, split_mid, split_n
    mid = max(16, 1 << max(0, problem.c_mid - 1).bit_length())
    mid_slice = mid // variant.split_mid
    n_per = math.ceil(math.ceil(problem.k / t.bn) / variant.split_n) * t.bn
    split_n = math.ceil(problem.k / n_per)  # as the launcher runs it: no empty group
    if variant.walk == "flat":
        red1 = math.ceil(problem.taps * problem.c / t.bk) * t.bk
    else:
        red1 = problem.taps * math.ceil(problem.c / t.bk) * t.bk
    programs = math.ceil(problem.m / t.bm) * split_n * variant.split_mid
    return programs, 2 * t.bm * mid_slice * (red1 + n_per), variant.split_mid, split_n


def _chain_occupancy(tile: Tile, mid_slice: int, elem_bytes: int) -> Occupancy:
    """Before compiling: registers for the (BM, MID_SLICE) fp32 accumulator, the rounded mid tile
    and the (BM, BN) second accumulator (+64 a thread), shared memory for stage 1's pipeline."""
    threads = 32 * tile.warps
    registers = min(255, (tile.bm * mid_slice * (4 + elem_bytes) // 4 + tile.bm * tile.bn) // threads + 64)
    shared = tile.stages * (tile.bm * tile.bk + tile.bk * mid_slice) * elem_bytes
    return Occupancy.from_resources(tile.warps, registers, shared)


def predict_chain(problem: ChainProblem, variant: ChainVariant, ceilings: Ceilings,
                  occupancy: Occupancy | None = None) -> Prediction:
    """The predicted time of a conv2d_chain launch run as `variant`.

        programs   = ceil(M / BM) * split_n * split_mid           grid (pixels, outputs, mid)
        MID_SLICE  = pow2(c_mid) (>= 16) / split_mid;  N_PER = ceil(ceil(k / BN) / split_n) * BN
        per prog   = 2 * BM * MID_SLICE * (stage-1 reduction, padded to BK steps + N_PER) FLOPs
        compute    = ceil(programs / SMs) * per prog / (rate / SMs) / eff     (eff as `predict`)

    split_mid == 1: time = launch + max(compute, (input + weights + output) / bandwidth).
    split_mid > 1, like split-K: the main launch also writes split_mid * M * k fp32 partials,
    which a reduce launch reads back, sums and finishes (epilogue 2, the output's bytes):
    time = launch + max(compute, (input + weights + workspace) / bw) + launch + (workspace +
    output) / bw.  Recomputing stage 1 per output group costs FLOPs, no memory (the input panel
    is re-read from L2).  A grouped first conv (problem.groups > 1) runs the grouped grid of
    `_chain_grid`: only a SUB-column slice of mid is live, its stage 1 counts the zeros of the
    block-diagonal weight and is recomputed per output tile; the bytes are the same roofline's."""
    t = variant.tile
    programs, flops_per_program, split_mid, split_n = _chain_grid(problem, variant)
    if problem.groups > 1:
        mid_slice = _kernel_defaults()._chain_group_slices(problem.c, problem.c_mid, problem.groups)[0]
    else:
        mid_slice = max(16, 1 << max(0, problem.c_mid - 1).bit_length()) // variant.split_mid
    occupancy = occupancy or _chain_occupancy(t, mid_slice, problem.elem_bytes)
    per_sm = math.ceil(programs / ceilings.sms)
    resident_warps = max(1, min(occupancy.programs, per_sm)) * t.warps
    eff = ceilings.efficiency * min(1.0, resident_warps / 8)
    rate = ceilings.fp32_tflops if problem.elem_bytes == 4 else ceilings.matmul_tflops
    compute_us = per_sm * flops_per_program / (rate * 1e12 / ceilings.sms * eff) * 1e6

    waves = math.ceil(per_sm / max(1, occupancy.programs))
    b_reads = 1 if problem.b_bytes <= ceilings.l2_bytes // 2 else waves
    bandwidth = ceilings.bandwidth_gbs * 1e9
    operands = problem.a_bytes + problem.b_bytes * b_reads
    if split_mid == 1:
        dram = operands + problem.out_bytes
        memory_us = dram / bandwidth * 1e6
        us = ceilings.launch_us + max(compute_us, memory_us)
    else:
        workspace = split_mid * problem.m * problem.k * 4
        main_us = (operands + workspace) / bandwidth * 1e6
        reduce_us = (workspace + problem.out_bytes) / bandwidth * 1e6
        dram = operands + 2 * workspace + problem.out_bytes
        memory_us = main_us + reduce_us
        us = 2 * ceilings.launch_us + max(compute_us, main_us) + reduce_us
    return Prediction(problem.name, us, compute_us, memory_us, programs, per_sm, occupancy, dram,
                      split_mid, split_n)


def chain_walk(problem: ChainProblem, geometry: Mapping[str, Any], kernels: Any = None) -> str:
    """Stage 1's walk ("plain", "tap", "flat") as the launcher picks it: over the input channels,
    or for a grouped first conv over one slice's SUB_C of them."""
    K = kernels or _kernel_defaults()
    c = problem.c
    if problem.groups > 1:
        c = K._chain_group_slices(problem.c, problem.c_mid, problem.groups)[2]
    return K._chain_walk(c, geometry["kernel"], geometry["stride"], geometry["pad"])


def chain_pair_us(graph: Any, first: str, second: str, batch: int, dtype: Any, ceilings: Ceilings) -> tuple[float, float]:
    """(predicted us of `first -> second` as one conv2d_chain launch, of the two conv2d launches
    it replaces) at `batch`, both with the launchers' default blocks and splits.  What the chain
    pass asks before chaining a grouped first conv (`archdsl.passes.chain`)."""
    import torch

    from ..codegen.schedule import GEOMETRY
    from .launches import ConvLaunch, kernel_module

    def geometry_of(node):
        a = graph.nodes[node]["attrs"]
        return {key: a[key] if key == "groups" else tuple(a[key]) for key in GEOMETRY}

    K = _kernel_defaults()
    elem = _torch_dtype(dtype).itemsize
    conv_path = kernel_module("conv2d").conv_path
    residual = len(graph.args(second)) > 1
    cin, h, w = graph.shape(graph.args(first)[0])
    mid, p, q = graph.shape(first)
    k = graph.shape(second)[0]
    convs = []
    for node, x_shape, out_shape, res in ((first, (batch, h, w, cin), (batch, p, q, mid), False),
                                          (second, (batch, p, q, mid), (batch, p, q, k), residual)):
        geometry = geometry_of(node)
        meta = [torch.empty(s, device="meta") for s in (x_shape, out_shape)]
        path = conv_path(*meta, residual=meta[1] if res else None, **geometry)
        convs.append(ConvLaunch(node, x_shape, out_shape, **geometry, residual=res, act=0, path=path))
    pair = sum(predict_conv(c, dtype, ceilings, None, K).us for c in convs)
    geometry = geometry_of(first)
    problem = chain_problem(second, (batch, h, w, cin), mid, (batch, p, q, k), geometry["kernel"], residual, elem,
                            geometry["groups"])
    walk = chain_walk(problem, geometry, K)
    return predict_chain(problem, chain_default_variant(problem, dtype, ceilings, K, walk), ceilings).us, pair


def chain_default_variant(problem: ChainProblem, dtype: Any, ceilings: Ceilings, kernels: Any = None,
                          walk: str = "tap") -> ChainVariant:
    """The variant ``conv2d_chain`` launches by default on a GPU with `ceilings.sms` SMs: the
    template's `_chain_defaults` blocks and its `chain_default_split`."""
    K = kernels or _kernel_defaults()
    tdtype = _torch_dtype(dtype)
    if problem.groups > 1:
        sub_c = K._chain_group_slices(problem.c, problem.c_mid, problem.groups)[2]
        blocks = K._chain_grouped_defaults(tdtype, False, False, walk, sub_c, problem.taps, problem.m, problem.k)
        split_n, split_mid = K.chain_default_split(problem.m, problem.c, problem.taps, problem.c_mid, problem.k,
                                                   blocks, ceilings.sms, walk, fma=tdtype.itemsize == 4,
                                                   groups=problem.groups)
        return ChainVariant(Tile(*blocks), walk, split_n, split_mid)
    mid = max(16, 1 << max(0, problem.c_mid - 1).bit_length())
    bm, bn, bk, warps, stages = K._chain_defaults(tdtype, False, False, walk, problem.c, problem.taps, mid,
                                                  problem.m, problem.k)
    split_n, split_mid = K.chain_default_split(problem.m, problem.c, problem.taps, problem.c_mid, problem.k,
                                               (bm, bn, bk), ceilings.sms, walk, fma=tdtype.itemsize == 4)
    return ChainVariant(Tile(bm, bn, bk, warps, stages), walk, split_n, split_mid)


def chain_variants(problem: ChainProblem, base: ChainVariant) -> list[ChainVariant]:
    """Every split of `base`'s blocks the kernel can launch: split_mid 1, 2, 4, ... with no empty
    C_mid slice, times split_n 1 .. ceil(k / BN) (each a distinct grid).  Grouped: split_mid any
    count of programs sharing the N_SUB slices (each distinct launched grid once)."""
    if problem.groups > 1:
        K = _kernel_defaults()
        n_sub = K._chain_group_slices(problem.c, problem.c_mid, problem.groups)[3]
        grids = {}
        for split_mid in range(1, n_sub + 1):
            for split_n in range(1, math.ceil(problem.k / base.tile.bn) + 1):
                shape = K._chain_grouped_split_shape(n_sub, problem.k, base.tile.bn, split_n, split_mid)
                grids.setdefault((shape[3], shape[1]), replace(base, split_n=shape[3], split_mid=shape[1]))
        return list(grids.values())
    mid = max(16, 1 << max(0, problem.c_mid - 1).bit_length())
    n_tiles = math.ceil(problem.k / base.tile.bn)
    out, split_mid = [], 1
    while mid // split_mid >= 16 and (split_mid - 1) * (mid // split_mid) < problem.c_mid:
        for split_n in range(1, n_tiles + 1):
            if math.ceil(problem.k / (math.ceil(n_tiles / split_n) * base.tile.bn)) == split_n:
                out.append(replace(base, split_n=split_n, split_mid=split_mid))
        split_mid *= 2
    return out


def memory_problem(name: str, read_bytes: int, write_bytes: int) -> Problem:
    """A launch with no matrix product (pooling, elementwise): its bytes are its cost."""
    return Problem(name, m=0, n=0, k=0, a_bytes=read_bytes, out_bytes=write_bytes, mma=False)


def predict_memory(problem: Problem, ceilings: Ceilings) -> Prediction:
    memory_us = problem.min_bytes / (ceilings.bandwidth_gbs * 1e9) * 1e6
    return Prediction(problem.name, ceilings.launch_us + memory_us, 0.0, memory_us, 0, 0,
                      Occupancy(0, "none", 0), problem.min_bytes)


# ---- a whole generated program ----------------------------------------------------------------------


def _kernel_defaults():
    """conv2d.py and conv2d_chain.py in one module, as in a generated program (the chain template
    calls conv2d's helpers): their default-block functions."""
    from .launches import template_module

    return template_module("conv2d.py", "conv2d_chain.py")


def _torch_dtype(dtype: Any):
    import torch

    from ..dtypes import name_of as dtype_name

    return getattr(torch, dtype_name(dtype))


def predict_conv(c: Any, dtype: Any, ceilings: Ceilings, config: Mapping[str, Any] | None = None,
                 kernels: Any = None) -> Prediction:
    """The predicted time of one conv2d launch (`archdsl.runtime.launches.ConvLaunch`): with the
    tuning `config` where given, else the blocks and split-K the launcher picks by default
    (`conv_default_blocks`, `conv_default_split_k` for `ceilings.sms` SMs)."""
    K = kernels or _kernel_defaults()
    config = config or {}
    tdtype = _torch_dtype(dtype)
    g = c.groups
    cg, kg = c.x_shape[3] // g, c.out_shape[3] // g
    m = c.out_shape[0] * c.out_shape[1] * c.out_shape[2]
    taps = c.kernel[0] * c.kernel[1]
    depthwise = c.path == "depthwise"
    bm, bn, bk, warps, stages = K.conv_default_blocks(c.path, m, c.out_shape[3] if depthwise else kg,
                                                      taps * cg, tdtype, False, cg=cg)
    tile = Tile.from_config(config, Tile(bm, bn, bk, warps, stages))
    if "split_k" not in config:  # the launcher's automatic choice
        split = K.conv_default_split_k(c.path, m, kg, taps * cg, (tile.bm, tile.bn, tile.bk), ceilings.sms, g, cg,
                                       ln=getattr(c, "ln", False))  # a folded layer norm is never split
        tile = replace(tile, split_k=split)
    problem = conv_problem(c.node, c.x_shape, c.out_shape, c.kernel, g, c.residual, tdtype.itemsize, depthwise,
                           gate=getattr(c, "gate", False))
    if depthwise:  # one program per (BLOCK_M pixels, BLOCK_C channels), taps as its K
        problem = replace(problem, n=c.out_shape[3], groups=1)
        tile = replace(tile, bk=1)
    return predict(problem, tile, ceilings)


def predict_schedule(schedule: Any, batch: int, dtype: Any, ceilings: Ceilings,
                     tuning: Mapping[str, Mapping[str, Any]] | None = None) -> list[Prediction]:
    """The predicted time of every launch of a launch schedule (`archdsl.codegen.schedule`) at
    `batch`, in execution order.  conv2d launches use `tuning[node]` where given (a tuning
    table's kwargs), else the launcher's defaults (`conv_default_blocks`, and split-K as
    `conv_default_split_k` picks it for `ceilings.sms` SMs); chains (`predict_chain`) likewise
    `tuning[node]` of their 1x1 conv (block_m .. num_stages, split_n, split_mid), else
    `_chain_defaults` and the split `chain_default_split` picks for `ceilings.sms` SMs; every
    other launch is costed by its bytes, as the memory plan (`codegen.plan`) has it: a view
    (flatten, permute, chunk, a shuffle stored shuffled) and a concat whose inputs were written
    into its slices launch nothing; a concat copies only the inputs it could not place."""
    from ..codegen.plan import make_plan
    from ..codegen.schedule import Schedule, make_schedule
    from .launches import conv_launches

    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    graph, tuning = schedule.graph, tuning or {}
    plan = make_plan(schedule)
    K = _kernel_defaults()
    tdtype = _torch_dtype(dtype)
    elem = tdtype.itemsize
    convs = {c.node: c for c in conv_launches(schedule, batch)}
    preds = []
    for launch in schedule.launches:
        if launch.kernel == "conv2d":
            preds.append(predict_conv(convs[launch.node], dtype, ceilings, tuning.get(launch.node), K))
        elif launch.kernel == "conv2d_chain":
            first, second = launch.on_chip[0], launch.node
            a = graph.nodes[first]["attrs"]
            cin, h, w = graph.shape(graph.args(first)[0])
            mid = graph.shape(first)[0]
            k, p, q = graph.shape(second)
            kernel = a["kernel"] if not isinstance(a["kernel"], int) else (a["kernel"], a["kernel"])
            geometry = dict(launch.geometry)  # the first conv's, normalized: pairs, 4 pads
            problem = chain_problem(second, (batch, h, w, cin), mid, (batch, p, q, k), kernel,
                                    launch.epilogue.residual, elem, geometry.get("groups", 1))
            walk = chain_walk(problem, geometry, K)
            config = tuning.get(second) or {}
            variant = chain_default_variant(problem, dtype, ceilings, K, walk)
            if config:  # a tuning table's blocks / split for this chain
                variant = ChainVariant(Tile.from_config(config, variant.tile), walk,
                                       config.get("split_n") or variant.split_n,
                                       config.get("split_mid") or variant.split_mid)
            preds.append(predict_chain(problem, variant, ceilings))
        else:
            inputs, outputs = launch.inputs, launch.outputs
            if plan.kind.get(launch.node) == "view":
                continue
            if graph.op(launch.node) == "concat":  # only the copied inputs move; the rest are slices
                inputs = [graph.args(launch.node)[port] for port in plan.copies.get(launch.node, [])]
                outputs = inputs
            read = sum(batch * math.prod(graph.shape(t)) for t in inputs) * elem
            write = sum(batch * math.prod(graph.shape(t)) for t in outputs) * elem
            if launch.kernel == "linear":
                f = math.prod(graph.shape(launch.inputs[0]))
                o = math.prod(graph.shape(launch.node))
                problem = Problem(launch.node, m=batch, n=o, k=f, a_bytes=batch * f * elem, b_bytes=f * o * elem,
                                  out_bytes=write, elem_bytes=elem)
                preds.append(predict(problem, Tile(*K.conv_default_blocks("gemm", batch, o, f, tdtype, False)),
                                     ceilings))
            elif read or write:
                pred = predict_memory(memory_problem(launch.node, read, write), ceilings)
                if len(inputs) > 1 and graph.op(launch.node) == "concat":  # one copy launch per input
                    pred = replace(pred, us=pred.us + (len(inputs) - 1) * ceilings.launch_us)
                preds.append(pred)
    return preds
