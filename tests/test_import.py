"""`archdsl import` / `archdsl.from_torch`: PyTorch modules -> .arch files that compute the same.

For each torchvision CNN the language can express, and for hand-written modules that use
functional ops and nn.ModuleList loops: import -> `archdsl check` -> `build_torch` -> strict load
of the original's state_dict -> equal outputs in float64 (batch-norm statistics and affine
weights randomized first).  Two small networks are also compiled under the Triton interpreter.
Bad input: an error naming the op, the module path and the line of the user's forward, exit
status 2, nothing written.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl
from archdsl.cli import main as cli_main
from tv import random_tv, randomize_tv


HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"

# torchvision's CNNs of the lecture families (the zoo): model -> builder arguments.
FAST = {
    "resnet18": {},
    "densenet121": {},
    "googlenet": {"aux_logits": False, "init_weights": False},
    "squeezenet1_0": {},
    "alexnet": {},
}
SLOW = {
    "vgg11": {}, "vgg13": {}, "vgg16": {}, "vgg19": {}, "vgg11_bn": {}, "vgg16_bn": {},
    "resnet34": {}, "resnet50": {}, "resnet101": {}, "resnet152": {},
    "resnext50_32x4d": {}, "resnext101_32x8d": {}, "resnext101_64x4d": {},
    "wide_resnet50_2": {}, "wide_resnet101_2": {},
    "densenet161": {}, "densenet169": {}, "densenet201": {},
    "squeezenet1_1": {},
    # the modern families (issue 13's ops)
    "mobilenet_v2": {}, "mobilenet_v3_small": {}, "mobilenet_v3_large": {},
    "efficientnet_b0": {}, "efficientnet_v2_s": {},
    "shufflenet_v2_x0_5": {}, "shufflenet_v2_x1_0": {}, "mnasnet0_5": {}, "mnasnet1_0": {},
    "regnet_x_400mf": {}, "regnet_y_400mf": {}, "convnext_tiny": {},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}
SIZE = {"inception_v3": 96}
# what a reader should find: the structure recovered, not merely the same numbers
EXPECT = {
    "resnet18": ["block basic_block(c, stride = 1)", "shortcut if stride != 1 or in.c != c"],
    "densenet121": ["for i in range(n) { denselayer{i + 1}: dense_layer }", "conv(in.c // 2, 1, bias=false)",
                    "dense {"],
    "googlenet": ["inception3a: inception(64, 96, 128, 16, 32, 32)", "concat {"],
    "squeezenet1_0": ["fire(16) * 2", "conv(4 * c, 3, pad=1)"],
    "mobilenet_v2": ["residual if stride == 1 and in.c == c", "block conv2d_norm_activation(", ") sequence {"],
    "shufflenet_v2_x1_0": ["chunk(2, 1)", "channel_shuffle(2)"],
    "convnext_tiny": ["layer_scale: layer_scale", "permute((1, 2, 0))"],
}  # input side: 64, or what the network needs (Inception v3: 75 or more)
CASES = [pytest.param(m, kw, id=m) for m, kw in FAST.items()] + \
    [pytest.param(m, kw, id=m, marks=pytest.mark.slow) for m, kw in SLOW.items()]


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """A float64 module's weights random (tests/tv.py: randomize_tv), in eval mode."""
    return randomize_tv(module, torch.Generator().manual_seed(seed))


def tv_model(tvm, name: str, kwargs: dict) -> nn.Module:
    """torchvision's model in float64 with random weights, in eval mode."""
    return random_tv(tvm, name, kwargs, torch.Generator().manual_seed(0))


def import_and_compare(module: nn.Module, path: Path, shape: tuple[int, int, int], batch: int = 2) -> str:
    """from_torch -> FILE -> check -> build_torch -> strict load -> the same float64 outputs.  The
    module runs on a copy of the input: one that overwrites its input in place (a pre-activation
    block first) must not change what ours reads."""
    text = archdsl.from_torch(module, shape)
    path.write_text(text)
    assert cli_main(["check", str(path)]) == 0
    with torch.device("meta"):
        ours = archdsl.build_torch(path)
    ours.load_state_dict(module.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        want, got = module(x.clone()), ours(x)
    if isinstance(got, tuple):
        got = got[0]
    scale = want.abs().max().item()
    assert torch.isfinite(want).all() and (want[0] - want[-1]).abs().max() > 1e-3 * scale, "degenerate output"
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * scale)
    return text


@pytest.mark.parametrize("name,kwargs", CASES)
def test_torchvision_model_imports_and_computes_the_same(tvm, name, kwargs, tmp_path, one_thread):
    module = tv_model(tvm, name, kwargs)
    size = SIZE.get(name, 64)
    text = import_and_compare(module, tmp_path / f"{name}.arch", (3, size, size))
    assert "block " in text or name.startswith(("alexnet", "vgg")), "repeated submodules should make blocks"
    for snippet in EXPECT.get(name, []):
        assert snippet in text


@pytest.mark.slow
def test_googlenet_with_auxiliary_heads_imports_in_train_mode(tvm, tmp_path, one_thread):
    module = tv_model(tvm, "googlenet", {"aux_logits": True, "init_weights": False}).train()
    text = archdsl.from_torch(module, (3, 64, 64))
    assert "output " in text  # the main output and the two heads
    path = tmp_path / "g.arch"
    path.write_text(text)
    with torch.device("meta"):
        ours = archdsl.build_torch(path)
    ours.load_state_dict(module.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x)[0], module.eval()(x), rtol=1e-9, atol=1e-9)
    with pytest.raises(archdsl.ArchError, match="not used by forward"):
        archdsl.from_torch(module.eval(), (3, 64, 64))  # eval mode leaves the heads' weights unused


def test_imported_resnet50_reads_like_the_hand_written_one(tvm):
    text = archdsl.from_torch(tv_model(tvm, "resnet50", {}), name="resnet50")
    hand = len((EXAMPLES / "resnet50.arch").read_text().splitlines())
    assert len(text.splitlines()) <= 2 * hand
    # one parametric bottleneck with ResNet's shortcut rule, the stages as repetitions
    assert text.count("\nblock ") == 1
    assert "shortcut if stride != 1 or in.c != 4 * c" in text
    assert "layer1: bottleneck(64) * 3" in text and "bottleneck(256) * 5" in text
    assert "# torchvision.models.resnet.Bottleneck" in text


def test_output_is_deterministic(tvm):
    a = archdsl.from_torch(tv_model(tvm, "resnet18", {}), (3, 64, 64))
    b = archdsl.from_torch(tv_model(tvm, "resnet18", {}), (3, 64, 64))
    assert a == b


# ---- hand-written modules ----------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self, c: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c if stride == 1 else c // 2, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c // 2, c, 1, stride, bias=False) if stride != 1 else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = self.proj(x) if self.proj is not None else x
        return F.relu(y + shortcut)


class Functional(nn.Module):
    """Functional ops between modules, nn.ModuleList loops, a cat of branches, a dense cat."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()])
        self.blocks = nn.ModuleList([Residual(8), Residual(8), Residual(16, stride=2), Residual(16)])
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        for layer in self.stem:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        y = torch.cat([self.left(x), F.relu(self.right(x))], dim=1)
        x = torch.cat([x, y], 1)
        x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)
        return self.head(x)


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.features(x)
        x = x + torch.sigmoid(x)
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def test_hand_written_module_with_functional_ops_and_loops(tmp_path, one_thread):
    module = randomize(Functional().double()).eval()
    text = import_and_compare(module, tmp_path / "functional.arch", (3, 16, 16))
    assert "# test_import.Residual" in text
    assert "dense {" in text and "concat {" in text
    assert "shortcut if stride != 1" in text or "shortcut if" in text


def test_mean_and_sigmoid(tmp_path, one_thread):
    module = randomize(MeanHead().double()).eval()
    import_and_compare(module, tmp_path / "mean.arch", (3, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("make,shape", [(Functional, (3, 8, 8)), (MeanHead, (3, 8, 8))], ids=["functional", "mean"])
def test_imported_module_compiles_under_the_interpreter(make, shape, tmp_path):
    module = randomize(make().double()).eval()
    path = tmp_path / "net.arch"
    path.write_text(archdsl.from_torch(module, shape))
    compiled = archdsl.compile(path, device="cpu")
    compiled.load_state_dict({k: v.float() for k, v in module.state_dict().items()}, strict=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = module(x.double())
        got = compiled(x).double()
    assert (got - want).norm() / want.norm() <= 1e-4


class TopDown(nn.Module):
    """A feature pyramid's top-down path: lateral 1×1 convs plus the coarser level upsampled
    (nn.Upsample, F.interpolate by a factor, and to another tensor's size), then a concat."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1)
        self.lateral = nn.Conv2d(8, 8, 1)
        self.up = nn.Upsample(scale_factor=(2, 1))
        self.head = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        c1 = F.relu(self.c1(x))
        c2 = F.relu(self.c2(c1))
        p2 = self.lateral(c2) + self.up(F.relu(self.c3(c2)))
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="nearest")
        return self.head(torch.cat([p1, F.interpolate(c1, scale_factor=1.0)], 1))


def test_nearest_upsampling_imports(tmp_path, one_thread):
    text = import_and_compare(randomize(TopDown().double()), tmp_path / "fpn.arch", (3, 16, 12))
    assert "up: upsample((2, 1))" in text and "upsample(2)" in text and "upsample(1)" in text


@pytest.mark.slow
def test_an_imported_feature_pyramid_compiles_under_the_interpreter(tmp_path):
    module = randomize(TopDown().double()).eval()
    path = tmp_path / "fpn.arch"
    path.write_text(archdsl.from_torch(module, (3, 16, 12)))
    compiled = archdsl.compile(path, device="cpu")
    compiled.load_state_dict({k: v.float() for k, v in module.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 16, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = module(x.double())
        got = compiled(x).double()
    assert (got - want).norm() / want.norm() <= 1e-4


class Interpolate(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv, self.kwargs = nn.Conv2d(3, 4, 1), kwargs

    def forward(self, x):
        return F.interpolate(self.conv(x), **self.kwargs)


@pytest.mark.parametrize("module,message", [
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2, mode="bilinear")), "mode='bilinear'"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=1.5)), "scale_factor=1.5"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(size=(12, 8))), r"size=\(12, 8\) from 8×8"),
    (Interpolate(scale_factor=2.0, mode="bicubic"), "interpolate with mode='bicubic'"),
    (Interpolate(size=(12, 12)), r"interpolate with size=\(12, 12\) from 8×8"),
], ids=["bilinear", "fractional", "size", "bicubic", "fractional-size"])
def test_upsampling_archdsl_lacks_is_refused(module, message):
    with pytest.raises(archdsl.ArchError, match=message):
        archdsl.from_torch(module, (3, 8, 8))


# ---- what cannot be imported -------------------------------------------------------------------


class Transposes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        return x.transpose(2, 3)  # the line the error must point at


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


def _line_of(cls, text: str) -> int:
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, ln in enumerate(lines) if text in ln)


def test_an_op_archdsl_lacks_names_the_op_module_and_line():
    with pytest.raises(archdsl.ArchError) as info:
        archdsl.from_torch(Transposes(), (3, 8, 8))
    err = info.value
    assert "Tensor.transpose" in err.message and "Transposes" in err.message
    assert err.loc.file == __file__ and err.loc.line == _line_of(Transposes, "x.transpose(2, 3)")


def test_shared_weights_are_refused():
    with pytest.raises(archdsl.ArchError, match="`conv` .*called 2 times"):
        archdsl.from_torch(Shared(), (4, 8, 8))


def test_cli_writes_nothing_when_it_cannot_import(tmp_path, capsys):
    out = tmp_path / "t.arch"
    out.write_text("# the user's file\n")
    assert cli_main(["import", f"{__file__}:Transposes", "-o", str(out), "--input", "3x8x8"]) == 2
    assert out.read_text() == "# the user's file\n"
    err = capsys.readouterr().err
    assert "error: archdsl has no op for `Tensor.transpose`" in err and "x.transpose(2, 3)" in err
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_cli_imports_a_torchvision_model(tvm, tmp_path):
    """In a fresh process, as a user runs it (torchvision not imported yet: the CLI's own shim)."""
    out = tmp_path / "r18.arch"
    run = subprocess.run([sys.executable, "-m", "archdsl", "import", "torchvision.models:resnet18", "-o", str(out),
                          "--input", "3x64x64"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    text = out.read_text()
    assert "network resnet18 {" in text and "input 3 x 64 x 64" in text
    assert cli_main(["check", str(out)]) == 0
    model = archdsl.build_torch(out)
    model.load_state_dict(tvm.resnet18(weights=None).state_dict(), strict=True)


def test_cli_import_of_a_file(tmp_path):
    out = tmp_path / "m.arch"
    assert cli_main(["import", f"{__file__}:MeanHead", "-o", str(out), "--input", "3x8x8", "--name", "head"]) == 0
    assert "network head {" in out.read_text()
    assert cli_main(["import", f"{tmp_path}/missing.py:X", "-o", str(out)]) == 2
    assert cli_main(["import", "no_colon", "-o", str(out)]) == 2
    assert cli_main(["import", f"{__file__}:Residual", "-o", str(out)]) == 2  # needs arguments
    assert cli_main(["import", "torch.nn:Identity", "-o", str(tmp_path / "x.txt")]) == 2  # not a .arch path


class Interleaved(nn.Module):
    """A ModuleList of convs with a functional op between them: the list is not one piece."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1) for _ in range(2)])

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def test_a_module_list_interleaved_with_ops_is_refused_clearly():
    with pytest.raises(archdsl.ArchError, match="`convs` is not one piece") as info:
        archdsl.from_torch(Interleaved(), (3, 8, 8))
    assert info.value.loc.file == __file__ and "module of its own" in info.value.hint


class Tangled(nn.Module):
    """Not series-parallel: `y` and `z` each feed two joins, so the text names tensors (`as`, `@`)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.c1(x)
        z = torch.relu(self.c2(y))
        return torch.flatten(torch.cat([y, z, self.c3(z + y)], 1), 1)


def test_a_dataflow_that_is_not_series_parallel(tmp_path, one_thread):
    module = randomize(Tangled().double()).eval()
    text = import_and_compare(module, tmp_path / "tangled.arch", (3, 6, 6))
    assert " as t1" in text and "@t1" in text
