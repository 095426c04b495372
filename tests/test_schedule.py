"""The launch schedule is the one list of launches: the emitter, the buffer planner, the tuner and
the benchmark all read it, so they agree on what a network launches by construction."""

from __future__ import annotations

from pathlib import Path

import pytest

import archdsl
from archdsl.bench.harness import distinct_convs
from archdsl.codegen import generate
from archdsl.codegen.schedule import make_schedule
from archdsl.passes import launch_groups, optimize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def resnet50():
    return optimize(archdsl.load(EXAMPLES / "resnet50.arch")).graph


def test_resnet50_launches(resnet50):
    s = make_schedule(resnet50)
    g = resnet50
    # every node but the input computed by exactly one launch
    computed = [n for launch in s.launches for n in launch.nodes]
    assert sorted(computed) == sorted(n for n in g if n not in g.inputs)
    # 53 convs: 13 chains (layer1..3's 3x3 -> 1x1 expand) are one conv2d_chain each, the stem's
    # layer1.0.conv1 + projection one sibling conv2d: 53 - 13 - 1 = 39 conv2d launches
    chains, convs = s.gemm_launches("conv2d_chain"), s.gemm_launches("conv2d")
    assert len(chains) == 3 + 4 + 6 == len(launch_groups(g).chains)
    assert len(convs) == 53 - 2 * 13 - 1 == 26  # chains: 2 convs each; the sibling pair: 2 convs, 1 launch
    sib = s.launch_of("layer1.0.downsample.0")
    assert sib.nodes == ("layer1.0.conv1", "layer1.0.downsample.0") and sib.outputs == sib.nodes
    assert s.siblings("layer1.0.conv1") == ("layer1.0.downsample.0",) and s.launched_by("layer1.0.downsample.0")
    chain = s.launch_of("layer1.0.conv2")
    assert chain.kernel == "conv2d_chain" and chain.node == "layer1.0.conv3" and chain.on_chip == ("layer1.0.conv2",)
    assert chain.inputs[0] == g.args("layer1.0.conv2")[0] and s.on_chip("layer1.0.conv2")
    assert "layer1.0.conv2" not in chain.outputs and s.reads("layer1.0.conv2") == []
    assert chain.epilogue.residual and chain.epilogue.act == "relu"
    fc = s.launch_of("fc")
    assert fc.kernel == "linear" and not fc.epilogue.residual


def test_the_order_runs_every_operand_first(resnet50):
    s = make_schedule(resnet50)
    position = {n: i for i, n in enumerate(s.order)}
    assert sorted(s.order) == sorted(resnet50)
    for launch in s.launches:
        for x in launch.inputs:
            assert position[s.launcher(x)] < position[launch.node] or x in resnet50.inputs, (x, launch.node)


def test_emitter_planner_tuner_and_bench_read_the_same_launches(resnet50):
    from archdsl.runtime import tune

    s = make_schedule(resnet50)
    program = generate(resnet50)
    assert program.plan.order == s.order
    counts = program.kernel_counts()
    assert counts["conv2d"] == len(s.gemm_launches("conv2d")) and counts["linear"] == len(s.gemm_launches("linear"))
    assert counts["conv2d_chain"] == len(s.gemm_launches("conv2d_chain"))
    launches = tune.conv_launches(s, 2)
    assert [l.node for l in launches] == [l.node for l in s.gemm_launches("conv2d")]
    sib = next(l for l in launches if l.node == "layer1.0.conv1")
    assert sib.out_shape[-1] == 64 + 256  # the group's GEMM is as wide as both outputs
    convs = distinct_convs(s)
    assert sorted(n for c in convs for n in c.nodes) == sorted(n for n in s.order if resnet50.op(n) == "fused_conv")


def test_graphs_without_groups_launch_each_node():
    g = archdsl.loads("network n {\n input 3x8x8\n conv(4, 3) -> relu -> maxpool(2) -> flatten -> fc(2)\n}")
    s = make_schedule(g)
    assert [l.node for l in s.launches] == [n for n in g.order() if n not in g.inputs]
    assert [l.kernel for l in s.launches] == ["conv2d", None, None, None, "linear"]
