"""Code generation: an optimized IR graph -> one readable, standalone Python + Triton module.

The generated module contains, in order:
  1. the kernel templates of `kernels/` (copied verbatim: the Triton kernels and their launchers),
  2. `prepare(state, device)`: reference-named weights (PyTorch state-dict keys) -> the tensors
     the kernels read (batch norm folded, packed, fc columns reordered for NHWC),
  3. `Network`: preallocated NHWC buffers per batch size and a `__call__` that launches one
     kernel per step, each preceded by a comment naming the node(s) and the `.arch` line.

Every identifier in the generated code is made here (`t[3]`, `w["conv1.weight"]`); names from
the user's file appear only inside string literals written with `repr()` and in comments
built from node names, which contain only [A-Za-z0-9_.] — so a file cannot inject code.
Same graph in, byte-identical source out.
"""

from .emit import Program, generate

__all__ = ["Program", "generate"]
