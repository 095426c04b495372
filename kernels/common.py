"""
Device helpers every kernel template shares
===========================================

The code generator pastes the templates into one program, host.py first and then by file name,
so this file comes before every kernel template and its helpers are in scope for all of them
(the tests' ``load_templates`` and archdsl's ``template_module`` load it first as well).

Rounding to bf16 under the interpreter.  Every kernel computes in fp32 and rounds once, on the
store, to the output's dtype.  A GPU's fp32 -> bf16 conversion rounds to nearest, ties to even;
Triton's interpreter (3.6 and 3.9 alike) truncates, which would make a bf16 program on the CPU
differ from the same program on a GPU in the last bit of every other element.  So each kernel
casts through ``_common_cast`` with its INTERPRETED constexpr (True for CPU tensors): the
interpreter then gets the rounding in integer arithmetic, a GPU the plain cast.
"""

import triton
import triton.language as tl


@triton.jit
def _common_round_to_bf16(y):
    """fp32 -> bf16 rounded to nearest, ties to even, in integer arithmetic (finite y)."""
    bits = y.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _common_cast(y, DTYPE: tl.constexpr, INTERPRETED: tl.constexpr):
    """The fp32 block y as DTYPE, rounded as a GPU rounds (module docstring)."""
    if INTERPRETED:
        if DTYPE == tl.bfloat16:
            y = _common_round_to_bf16(y)
    return y.to(DTYPE)
