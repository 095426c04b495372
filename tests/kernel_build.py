"""Kernel templates as the generated program holds them, and their sm_90 builds without a GPU.

* ``load_templates``: host.py and kernels/*.py files executed in order in one fresh module, as the code
  generator pastes them into one program (conv2d_chain.py calls conv2d.py's helpers by name).
* ``check_poison``: an output written everywhere, and nothing around its channel slice.
* ``run_compile_check``: the kernel tests' check that their kernels also compile for a real GPU
  (sm_90: H100 / H200).  Without CUDA the tests run under Triton's interpreter, which accepts
  programs the compiler rejects (loop-carried types, layouts, dot shapes); the compiler needs
  no GPU, only a process without TRITON_INTERPRET, so the check runs a script in a subprocess.
  Each test file writes its own list of variants as that script's body, calling
  ``compile_for`` on the templates loaded as ``K``.

Tests import this module by name: conftest.py puts the tests directory on sys.path.
"""

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
KERNELS = TESTS.parent / "kernels"


def load_templates(*names, module_name):
    """host.py, common.py, then the templates `names` (file names in kernels/) executed in order in
    one fresh module, as in a generated program (which always holds host.py, the launch-plan
    cache, and common.py, the device helpers every kernel calls).

    Each file is compiled under its own path so that Triton (inspect) finds the kernels' source.
    """
    mod = types.ModuleType(module_name)
    sys.modules[module_name] = mod
    for name in ("host.py", "common.py", *names):
        path = KERNELS / name
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), mod.__dict__)
    return mod


def compile_for(fn, ptr_types, consts, warps, stages, arch=90):
    """Compile the @triton.jit kernel `fn` for CUDA compute capability `arch`; the compiled kernel.

    consts:    values of its constexpr arguments (every one without a default in the kernel's
               signature; those with one, e.g. conv2d.py's HAS_GATE = False, take it when absent)
    ptr_types: Triton element type of each pointer argument (``*_ptr``) by name, "x" the default
               for those not named: {"x": "bf16", "bias_ptr": "fp32"}; and the type of each
               tensor-descriptor argument (``*_desc``): {"a_desc": "tensordesc<bf16[128, 64]>"}
    Of the other arguments, out_scale and ln_eps are fp32 and the rest are i32.  Pointers, strides and
    the reduction / channel counts N, KG, K_TOTAL and C get the divisibility-by-16 hint that
    Triton's launcher gives aligned values, as a real launch of large layers would.
    Raises (the compiler's error) when the kernel does not build.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    consts = {**{p.name: p.default for p in fn.params
                 if p.is_constexpr and getattr(p, "has_default", False) and p.name not in consts}, **consts}
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_desc"):  # a TMA tensor descriptor: its full type, "tensordesc<bf16[128, 64]>"
            sig[name] = ptr_types[name]
        elif name.endswith("_ptr"):
            sig[name] = "*" + ptr_types.get(name, ptr_types["x"])
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("out_scale", "ln_eps"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride") or name in ("N", "KG", "K_TOTAL", "C"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    k = triton.compile(ASTSource(fn, sig, consts, attrs=attrs), target=GPUTarget("cuda", arch, 32),
                       options={"num_warps": warps, "num_stages": stages})
    assert k.asm["cubin"], fn.__name__
    return k


def run_compile_check(tmp_path, templates, variants, env=None):
    """Run the script `variants` in a fresh interpreter without TRITON_INTERPRET; its result.

    templates: kernels/ file names loaded, in order, into one module the script sees as ``K``
    variants:  Python source calling ``compile_for`` (in scope) once per build to check
    env:       extra environment variables (TRITON_DUMP_PTXAS_LOG=1: ptxas -v on stdout)
    Skips without Triton's NVIDIA backend; fails with the script's stderr unless every build
    succeeded.  Compiled kernels are cached under tmp_path, so every run really compiles.
    """
    pytest.importorskip("triton.backends.nvidia")
    header = (f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
              f"from kernel_build import compile_for, load_templates\n"
              f"K = load_templates(*{tuple(templates)!r}, module_name='kernels_under_test')\n")
    script = tmp_path / "compile_check.py"
    script.write_text(header + textwrap.dedent(variants) + "\nprint('compiled')\n", encoding="utf-8")
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(TRITON_CACHE_DIR=str(tmp_path), **(env or {}))
    r = subprocess.run([sys.executable, str(script)], env=full_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]
    return r


def check_poison(view, buf, before, after):
    """The view was written everywhere; the channels around it (NaN poison) were not touched."""
    import torch

    assert not torch.isnan(view).any(), "an output element was not written"
    if before:
        assert torch.isnan(buf[..., :before]).all(), "a channel left of the output slice was written"
    if after:
        assert torch.isnan(buf[..., buf.shape[-1] - after:]).all(), "a channel right of the output slice was written"
