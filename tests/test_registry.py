"""The op registry holds every per-op fact, and every op has what each stage needs from it.

A stage that needs a set of ops (the conv ops, the activations, the ops that may write in place)
derives it from the specs' fields (`archdsl.ops.registry`): these tests check the facts are
complete and consistent with the code that relies on them (the kernels' ACT_* codes, the
emitter's rules, the torch reference).
"""

from __future__ import annotations

import re

import pytest

from archdsl.codegen.emit import RULES, kernel_dir
from archdsl.ops import OPS
from archdsl.ops import registry as reg

# Ops that may be registered before their code-generation rule exists: issue 13 adds the ops
# of post-2016 CNNs (archdsl/ops/modern.py) to the registry and the torch reference first; each
# leaves this list when its kernel and emit rule land.  Any other op without a rule fails below.
EMIT_PENDING = frozenset()

# `input` is emitted by the program's entry (the caller's NCHW -> NHWC copy), not by a rule.
NOT_EMITTED = frozenset({"input"})


def test_every_op_has_a_torch_lowering():
    missing = [n for n, s in OPS.items() if s.torch is None and n not in NOT_EMITTED]
    assert not missing, f"ops without a reference nn.Module: {missing}"


def test_every_op_has_an_emit_rule():
    missing = sorted(n for n in OPS if n not in RULES and n not in NOT_EMITTED | EMIT_PENDING)
    assert not missing, f"ops without a code generation rule (archdsl/codegen/emit.py RULES): {missing}"
    assert not set(RULES) - set(OPS), "emit rules for ops the registry does not know"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_that_computes_counts_its_work(name):
    """An op that does arithmetic (elementwise, a reduction, a GEMM) has a cost rule that says so;
    only data movement (injective) and the input may cost nothing."""
    s = OPS[name]
    for rule in (s.param_count, s.buffer_count, s.macs, s.other_ops):
        assert callable(rule)
    if s.fusion in ("reduction", "out_fusable") or (s.fusion == "elementwise" and not s.inference_noop):
        assert s.macs is not reg.no_cost or s.other_ops is not reg.no_cost, name


@pytest.mark.parametrize("name", sorted(OPS))
def test_facts_are_well_formed(name):
    s = OPS[name]
    assert s.fusion in reg.FUSION_KINDS
    assert s.base in OPS, f"{name}: family {s.base!r} is not an op"
    if s.inplace_ports == reg.ANY_PORT:
        assert s.arity is None and s.fusion == "elementwise", name  # any operand: n-ary elementwise joins
    else:
        assert isinstance(s.inplace_ports, tuple) and all(isinstance(p, int) and p >= 0 for p in s.inplace_ports)
    if s.act_code is not None:
        assert s.fusion == "elementwise" and not s.params, name  # an epilogue applies it without arguments
    for form in s.act_forms:  # one form per setting of the op's own parameters
        assert s.fusion == "elementwise" and {k for k, _ in form.when} <= {p.name for p in s.params}, name
    if s.inference_noop:
        assert s.arity == 1 and not s.inplace_ports


def test_groups_are_derived_from_the_facts():
    assert reg.family("conv") == {"conv", "fused_conv"}
    assert reg.family("bn") == {"bn", "fused_bn"}
    assert reg.family("fc") == {"fc", "fused_fc"}
    assert {"relu", "tanh", "sigmoid"} <= set(reg.activations())
    assert reg.inference_noops() == {"dropout", "drop_path", "identity", "stochastic_depth"}
    assert "input" not in reg.strided_out_ops() and "conv" in reg.strided_out_ops()
    assert reg.act_codes()["none"] == 0 and len(set(reg.act_codes().values())) == len(reg.act_codes())


def test_a_new_op_joins_its_groups_by_declaring_facts():
    spec = reg.OpSpec(name="test_only_act", doc="", params=(), shape=lambda a, ins: ins[0], fusion="elementwise",
                      act_code=99, inplace_ports=(0,), strided_out=True)
    reg.register(spec)
    try:
        assert "test_only_act" in reg.activations() and reg.act_codes()["test_only_act"] == 99
        assert "test_only_act" in reg.strided_out_ops() and "test_only_act" in reg.of_fusion("elementwise")
    finally:
        del reg.OPS["test_only_act"]
    with pytest.raises(ValueError, match="fusion"):
        reg.OpSpec(name="bad", doc="", params=(), shape=lambda a, ins: ins[0], fusion="fancy")


@pytest.mark.parametrize("template", ["conv2d.py", "elementwise.py"])
def test_activation_codes_are_the_kernels_constants(template):
    """The ACT_* constants the emitted code names exist in the kernels with the registry's codes."""
    text = (kernel_dir() / template).read_text(encoding="utf-8")
    m = re.search(r"^(ACT_\w+(?:, ACT_\w+)*) = ([\d, ]+)$", text, flags=re.M)
    assert m, template
    constants = dict(zip(m.group(1).split(", "), map(int, m.group(2).split(", "))))
    for act, code in reg.act_codes().items():
        if act in EMIT_PENDING:
            continue
        assert constants.get(reg.act_constant(act)) == code, (template, act)


def test_fused_activation_is_the_ops_own_reference():
    import torch

    x = torch.linspace(-4, 4, 17, dtype=torch.float64)
    for act, (op, form) in reg.act_table().items():  # gelu_tanh: the gelu op with approximate="tanh"
        assert torch.equal(reg.apply_activation(act, x), OPS[op].torch(dict(form.when), [(17,)])(x)), act
        assert reg.epilogue_act(op, dict(form.when)) == act
    assert reg.apply_activation("none", x) is x
