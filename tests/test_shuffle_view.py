"""Channel shuffles as relabelings (codegen/plan.py): a `concat -> channel_shuffle(g)` whose buffer
holds the shuffled order, its inputs writing every g-th channel, so the shuffle launches nothing.

The plan is checked from the shuffle's definition (channel j of group i goes to j*g + i); the
compiled programs (Triton's interpreter) against the float64 PyTorch reference with randomized
batch-norm statistics; the shuffles that cannot be views (not after a concat, an input
straddling two groups) keep their copy kernel and say why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.codegen import plan as planning
from archdsl.runtime import build
from kernel_build import load_templates
from smaller import EXAMPLES
from test_compiled import compile_small, randomize, rel_err

UNIT = """
block unit(c, stride) {
    let half = c // 2
    concat {
        if stride == 1 {
            chunk(2, 0)
            chunk(2, 1) -> (conv(half, 1, bias=false) -> bn -> relu
                            -> conv(half, 3, pad=1, groups=half, bias=false) -> bn
                            -> conv(half, 1, bias=false) -> bn -> relu)
        } else {
            (conv(in.c, 3, stride=stride, pad=1, groups=in.c, bias=false) -> bn
             -> conv(half, 1, bias=false) -> bn -> relu)
            (conv(half, 1, bias=false) -> bn -> relu
             -> conv(half, 3, stride=stride, pad=1, groups=half, bias=false) -> bn
             -> conv(half, 1, bias=false) -> bn -> relu)
        }
    }
    channel_shuffle(2)
}
"""

# ShuffleNetV2's units at toy size: a stride-2 unit (two conv branches) and two stride-1 units (a
# chunk kept, the other half through the branch), each ending in concat -> shuffle(2) -> chunk.
TINY_SHUFFLENET = UNIT + """
network tiny_shufflenet {
    input 3 x 16 x 16
    conv(8, 3, stride=2, pad=1, bias=false) -> bn -> relu
    unit(16, 2) -> unit(16, 1) -> unit(16, 1)
    global_avgpool -> flatten -> fc(5)
}
"""

# Every kind of concat input: a conv, a standalone batch norm (the scale-shift kernel), a
# channels-last ("plain") linear permuted back (a view: copied into its shuffled channels), inputs
# of unequal widths within the groups; then shuffles that stay copies: an input straddling two
# groups, a shuffle of a conv's output, a concat also read unshuffled.
MIXED = """
network mixed_shuffles {
    input 4 x 6 x 5
    conv(8, 3, pad=1) -> relu
    concat {
        conv(4, 3, pad=1)
        conv(2, 3, pad=1) -> relu -> bn
        permute((1, 2, 0)) -> layer_norm(eps=1e-6, axis=-1) -> linear(2) -> permute((2, 0, 1))
    }
    channel_shuffle(2) as s
    concat { chunk(2, 0); chunk(2, 1) -> conv(4, 1) -> relu } -> channel_shuffle(4) as straddling
    @straddling -> conv(6, 1) -> channel_shuffle(3) as after_conv
    concat { conv(3, 1); conv(3, 1) -> tanh } as both
    @both -> channel_shuffle(2) as read_twice
    add { @read_twice; @both } -> conv(6, 1) as joined
    concat { @after_conv; @joined } -> global_avgpool -> flatten -> fc(5)
}
"""


# MIXED keeps its channels-last stretch (the pass that would turn it channels-first is off)
KEEP_PLAIN = ("to_channels_first",)


K = load_templates("elementwise.py", "conv2d.py", module_name="archdsl_kernel_shuffle_view")


@pytest.mark.parametrize("kernel, stride, groups, channels, split_k", [
    (1, 1, 1, 8, None),    # the GEMM path
    (1, 1, 1, 32, 2),      # split-K: the reduce kernel stores
    (3, 1, 8, 8, None),    # depthwise
    (3, 2, 1, 8, None),    # implicit GEMM (flat)
    (3, 1, 1, 16, 2),      # implicit GEMM split over K
], ids=["gemm", "gemm-splitk", "depthwise", "implicit", "implicit-splitk"])
def test_conv_writes_every_gth_channel_and_nothing_between(kernel, stride, groups, channels, split_k):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, channels)
    k = channels if groups > 1 else 6
    w = torch.randn(k, channels // groups, kernel, kernel)
    want = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).double(), w.double(), stride=stride, padding=kernel // 2,
                                      groups=groups).permute(0, 2, 3, 1)
    buf = torch.full((2, *want.shape[1:3], 3 * k), float("nan"))
    out = buf[..., 2::3]  # channel j at 3j + 2: the third of three groups
    K.conv2d(x, K.pack_conv_weight(w, groups, torch.float32), out, kernel=(kernel, kernel), stride=(stride, stride),
             pad=kernel // 2, groups=groups, split_k=split_k)
    assert torch.isnan(buf[..., 0::3]).all() and torch.isnan(buf[..., 1::3]).all()
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_copies_and_batch_norm_write_every_gth_channel():
    x = torch.randn(2, 3, 4, 5)
    buf = torch.full((2, 3, 4, 10), float("nan"))
    K.copy_channels(x, buf[..., 1::2])
    scale, shift = torch.rand(5) + 0.5, torch.randn(5)
    K.scale_shift(x, buf[..., 0::2], scale=scale, shift=shift, act=K.ACT_RELU)
    assert torch.equal(buf[..., 1::2], x)
    torch.testing.assert_close(buf[..., 0::2], torch.relu(x * scale + shift))


def plan_of(text: str, disable: tuple[str, ...] = ()):
    program = build(archdsl.loads(text), disable=disable).program
    return program, program.plan


def shuffled_channels(plan, c: str) -> list[int]:
    """Channel k of concat `c` (in concat order) is channel (k % (C/g)) * g + k // (C/g) of the
    shuffle after it: the definition of the shuffle, written out."""
    groups = plan.shuffled[c]
    size = plan.graph.shape(c)[0] // groups
    return [(k % size) * groups + k // size for k in range(plan.graph.shape(c)[0])]


def test_concat_shuffle_chunk_is_strided_views_and_no_shuffle_launch():
    program, plan = plan_of(TINY_SHUFFLENET)
    g = plan.graph
    shuffles = [n for n in g.order() if g.op(n) == "channel_shuffle"]
    assert len(shuffles) == 3
    for s in shuffles:
        c = g.args(s)[0]
        assert g.op(c) == "concat" and plan.shuffled[c] == 2
        assert plan.kind[s] == "view" and plan.base[s] == plan.base[c] == c and plan.kind[c] == "buffer"
        where = shuffled_channels(plan, c)
        offset = 0
        for port, a in enumerate(g.args(c)):
            width = g.shape(a)[0]
            want = where[offset:offset + width]
            assert want == list(range(want[0], want[0] + 2 * width, 2))  # every other channel
            if port in plan.copies[c]:  # a chunk view: copied into its shuffled channels
                assert plan.kind[a] == "view" and g.op(a) == "chunk"
                assert f"copy_channels(t[{a!r}], t[{c!r}][..., {want[0]}:{want[-1] + 1}:2])" in program.source
            else:  # a conv wrote them through channel stride 2
                assert (plan.kind[a], plan.base[a], plan.channel[a], plan.step[a]) == ("slice", c, want[0], 2)
                assert f"({'slice'!r}, {c!r}, {want[0]}, {want[-1] + 1}, 2)" in program.source
            offset += width
        assert f"t[{s!r}] = t[{c!r}]" in program.source
        for user in g.successors(s):  # the next unit's halves: plain channel slices of the buffer
            assert g.op(user) in ("chunk", "global_avgpool")
            assert plan.kind[user] == "view" and plan.base[user] == c or g.op(user) != "chunk"
    assert "channel_shuffle" not in program.kernel_counts()
    # the stride-2 unit copies nothing; each stride-1 unit copies its kept half, as it did before
    assert [len(plan.copies[g.args(s)[0]]) for s in shuffles] == [0, 1, 1]
    summary = planning.summary(program.graph, plan, launches=program.launches)
    assert (summary["shuffles"], summary["shuffle_views"], summary["shuffle_copies"]) == (3, 3, {})
    assert "channel shuffles: 3 of 3 are views" in "\n".join(planning.summary_lines(summary))


def test_shuffles_that_cannot_be_views_keep_the_copy_and_say_why():
    program, plan = plan_of(MIXED, KEEP_PLAIN)
    g = plan.graph
    s, straddling, after_conv, read_twice = [n for n in g.order() if g.op(n) == "channel_shuffle"]
    c = g.args(s)[0]
    assert plan.kind[s] == "view" and plan.shuffled[c] == 2
    conv, bn, permuted = g.args(c)
    # widths 4, 2, 2 in two groups of 4: the conv fills group 0, the others halves of group 1
    assert (plan.channel[conv], plan.step[conv]) == (0, 2) and (plan.channel[bn], plan.step[bn]) == (1, 2)
    assert g.op(permuted) == "permute" and plan.copies[c] == [2]
    assert f"copy_channels(t[{permuted!r}], t[{c!r}][..., 5:8:2])" in program.source
    why = plan.shuffle_copied
    assert set(why) == {straddling, after_conv, read_twice}
    assert "straddles two of its 4 groups" in why[straddling]
    assert "is not a concat" in why[after_conv]
    assert "read unshuffled too" in why[read_twice]
    assert program.kernel_counts()["channel_shuffle"] == 3
    assert "not a view: the concat" in program.source  # the reason, in the step's comment
    lines = planning.summary_lines(planning.summary(program.graph, plan, launches=program.launches))
    assert "channel shuffles: 1 of 4 are views (their concat's inputs write the shuffled channels), 3 copied" in lines
    assert any(line.startswith(f"  {straddling} copies: ") for line in lines)


def test_a_concat_whose_kernels_cannot_stride_keeps_the_shuffle_copy():
    """Pooling kernels write channels with stride 1: both inputs would be copied into their
    shuffled channels, more launches than the one shuffle, so the plan keeps the shuffle's copy."""
    program, plan = plan_of("""
network pooled {
    input 4 x 6 x 6
    conv(4, 1) -> relu
    concat { maxpool(3, stride=1, pad=1); avgpool(3, stride=1, pad=1) } -> channel_shuffle(2) -> conv(4, 1)
}
""")
    g = plan.graph
    s = next(n for n in g.order() if g.op(n) == "channel_shuffle")
    assert plan.kind[s] == "buffer" and "2 inputs" in plan.shuffle_copied[s]
    assert plan.copies[g.args(s)[0]] == []  # the pools still write their plain slices
    assert program.kernel_counts()["channel_shuffle"] == 1


def compiled_matches_reference(model, shape, seed=1, tol=1e-5):
    randomize(model)
    reference = archdsl.to_torch(model.graph).eval()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(seed)
    x = torch.randn(2, *shape)
    out = model(x)
    with torch.no_grad():
        ref = reference.double()(x.double())
    assert out.shape == ref.shape
    assert ref.abs().max() > 0 and rel_err(out, ref) <= tol


def test_tiny_shufflenet_compiled_equals_the_reference():
    model = archdsl.compile(source=TINY_SHUFFLENET, device="cpu")
    assert "channel_shuffle" not in model.compiled.program.kernel_counts()
    compiled_matches_reference(model, (3, 16, 16))


def test_every_kind_of_shuffle_input_and_the_copies_compute_the_reference():
    """Channels-last feature maps and a channels-last ("plain") tensor permuted back: the two
    layouts of the plan, the second reaching a shuffled concat as a copied view."""
    model = archdsl.compile(source=MIXED, device="cpu", disable=KEEP_PLAIN)
    plan = model.compiled.program.plan
    assert set(plan.layout.values()) == {"nhwc", "plain"}
    compiled_matches_reference(model, (4, 6, 5))


@pytest.mark.slow
def test_shufflenet_v2_at_its_reduced_size_equals_the_reference():
    path = EXAMPLES / "shufflenet_v2.arch"
    model = compile_small(Path(path))
    program = model.compiled.program
    g = program.graph
    shuffles = [n for n in g.order() if g.op(n) == "channel_shuffle"]
    assert len(shuffles) == 16 and all(program.plan.kind[s] == "view" for s in shuffles)
    assert "channel_shuffle" not in program.kernel_counts()
    compiled_matches_reference(model, g.shape(g.inputs[0]), tol=1e-4)
