"""What the GPU check runs: one profile per size (full on an H100/H200, smoke on a CPU under
Triton's interpreter), and from it the list of programs whose kernels the warm stage compiles.

The check's stages and the warm compile both read `programs(profile, stages)`, so a kernel the
check launches is a kernel the warm stage recorded: they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NO_CHAIN = ("fuse_conv_chain",)


@dataclass(frozen=True)
class Net:
    """A network to compile: an example file (`source` a path) or .arch text, with overrides."""

    name: str
    source: str
    params: tuple[tuple[str, int], ...] = ()
    input_shape: tuple[int, int, int] | None = None

    def load(self):
        import archdsl

        params = dict(self.params) or None
        if "\n" in self.source:
            return archdsl.loads(self.source, params=params, input_shape=self.input_shape)
        return archdsl.load(self.source, params=params, input_shape=self.input_shape)


def example(name: str) -> Net:
    return Net(name, str(EXAMPLES / f"{name}.arch"))


# A ResNet in miniature for the smoke run: a stem, a bottleneck whose projection is a sibling 1x1
# conv (one GEMM, two outputs) and one with a stride-2 projection; each has a 3x3 -> 1x1 chain.
MINI_RESNET = """
block bottleneck(c, stride = 1) {
    residual {
        conv1: conv(c, 1, bias=false) -> bn1: bn -> relu
        conv2: conv(c, 3, stride=stride, pad=1, bias=false) -> bn2: bn -> relu
        conv3: conv(4 * c, 1, bias=false) -> bn3: bn
    } shortcut if stride != 1 or in.c != 4 * c {
        downsample: (conv(4 * c, 1, stride=stride, bias=false) -> bn)
    }
    relu
}

network mini_resnet(classes = 10) {
    input 3 x 16 x 16
    conv1: conv(8, 3, pad=1, bias=false) -> bn1: bn -> relu -> maxpool: maxpool(3, stride=2, pad=1)
    layer1: bottleneck(4)
    layer2: bottleneck(8, stride=2)
    avgpool: global_avgpool -> flatten -> fc: fc(classes)
}
"""


@dataclass(frozen=True)
class Profile:
    name: str
    device: str  # "cuda" or "cpu" (Triton's interpreter)
    r50: Net
    r50_dtypes: tuple[str, ...]
    r50_batches: tuple[int, ...]
    zoo: tuple[Net, ...]
    zoo_batch: int
    modern: tuple[Net, ...]  # depthwise / SE networks: correctness at zoo_batch, end to end at modern_batches
    modern_batches: tuple[int, ...]
    e2e_batches: tuple[int, ...]
    layer_batches: tuple[int, ...]
    peak_n: int  # the square bf16 matmul of the ceiling
    copy_bytes: int  # the device copy of the ceiling
    iters: int  # timed runs per measurement (at least)
    warmup_ms: float
    compile_kernels: bool  # warm stage: compile the recorded kernels (else record only)
    budgets: dict = field(default_factory=dict)  # stage -> seconds that must be left to start it


# Budgets: the most each stage is expected to take on an H200 with the warm cache (README: the
# estimates and how they were derived).  A stage starts only if its budget is left.
FULL_BUDGETS = {"stack": 15, "warm": 150, "peaks": 10, "correctness": 90, "zoo": 40, "e2e": 75, "chain_ab": 30,
                "layers": 60, "pdl_ab": 30, "modern": 60, "e2e_fp16": 60, "torch_compile": 300, "pytest_gpu": 240}
SMOKE_BUDGETS = {name: 0 for name in FULL_BUDGETS}

FULL = Profile(
    name="full", device="cuda", r50=example("resnet50"), r50_dtypes=("bfloat16", "float16", "float32"),
    r50_batches=(1, 32, 256), zoo=tuple(example(n) for n in ("vgg16", "googlenet", "densenet121", "resnext50_32x4d")),
    zoo_batch=8, modern=(example("mobilenet_v3"), example("efficientnet")), modern_batches=(1, 32),
    e2e_batches=(1, 32, 256), layer_batches=(32, 256), peak_n=8192, copy_bytes=1 << 30, iters=100,
    warmup_ms=10.0, compile_kernels=True, budgets=FULL_BUDGETS)

SMOKE = Profile(
    name="smoke", device="cpu", r50=Net("mini_resnet", MINI_RESNET), r50_dtypes=("bfloat16", "float32"),
    r50_batches=(2,), zoo=(Net("mini_resnet_8", MINI_RESNET, (("classes", 8),), (3, 8, 8)),), zoo_batch=1,
    modern=(Net("mini_resnet_8", MINI_RESNET, (("classes", 8),), (3, 8, 8)),), modern_batches=(2,),
    e2e_batches=(2,), layer_batches=(2,), peak_n=64, copy_bytes=1 << 16, iters=1, warmup_ms=0.0,
    compile_kernels=False, budgets=SMOKE_BUDGETS)

PROFILES = {p.name: p for p in (FULL, SMOKE)}


@dataclass(frozen=True)
class ProgramSpec:
    """One generated program and the batch sizes it runs at: the unit the warm stage records."""

    net: Net
    dtype: str
    batches: tuple[int, ...]
    disable: tuple[str, ...] = ()
    pdl: bool = False  # launched with programmatic dependent launch (the program's PROGRAMMATIC_LAUNCH)

    def label(self) -> str:
        off = f" without {','.join(self.disable)}" if self.disable else ""
        return f"{self.net.name} {self.dtype}{off}{' pdl' if self.pdl else ''} batch {','.join(map(str, self.batches))}"


def programs(profile: Profile, stages: tuple[str, ...]) -> list[ProgramSpec]:
    """Every program the given stages launch, merged by (net, dtype, disabled passes, PDL)."""
    wanted: dict[tuple, set[int]] = {}

    def add(net, dtype, batches, disable=(), pdl=False):
        wanted.setdefault((net, dtype, disable, pdl), set()).update(batches)

    if "correctness" in stages:
        for dtype in profile.r50_dtypes:
            add(profile.r50, dtype, profile.r50_batches)
    if "zoo" in stages:
        for net in profile.zoo:
            add(net, "bfloat16", (profile.zoo_batch,))
    if "e2e" in stages:
        add(profile.r50, "bfloat16", profile.e2e_batches)
    if "chain_ab" in stages:
        add(profile.r50, "bfloat16", profile.e2e_batches)
        add(profile.r50, "bfloat16", profile.e2e_batches, NO_CHAIN)
    if "layers" in stages:
        add(profile.r50, "bfloat16", profile.layer_batches)
    if "pdl_ab" in stages:
        add(profile.r50, "bfloat16", profile.e2e_batches)
        add(profile.r50, "bfloat16", profile.e2e_batches, pdl=True)
    if "modern" in stages:
        for net in profile.modern:
            add(net, "bfloat16", (profile.zoo_batch, *profile.modern_batches))
    if "e2e_fp16" in stages:
        add(profile.r50, "float16", profile.e2e_batches)
    return [ProgramSpec(net, dtype, tuple(sorted(b)), disable, pdl) for (net, dtype, disable, pdl), b in wanted.items()]
