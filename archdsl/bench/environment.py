"""The machine a benchmark ran on: GPU, driver, library versions (recorded with every run)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from typing import Any

def cuda_status() -> tuple[bool, str]:
    """(True, GPU name) when the benchmark can run, else (False, why not, in a sentence)."""
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed"
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return False, f"this PyTorch ({torch.__version__}) is built without CUDA, so no GPU can be used"
    if not torch.cuda.is_available():
        return False, (f"no CUDA GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda}: "
                       "torch.cuda.is_available() is False)")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False, "TRITON_INTERPRET is set: Triton would run its CPU interpreter instead of the GPU; unset it"
    return True, torch.cuda.get_device_name()


def _nvidia_smi(fields_: str) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={fields_}", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    return [v.strip() for v in line.split(",")] if line else None


def environment(device: Any = "cuda") -> dict:
    """The versions and the device, recorded with every run."""
    import torch

    from ..version import __version__

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover
        triton_version = None
    env = {
        "archdsl": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update({
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2 ** 30, 1),
        })
        smi = _nvidia_smi("driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,"
                          "persistence_mode,compute_mode")
        keys = ("driver", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "power_limit_w", "temperature_c",
                "persistence_mode", "compute_mode")
        env.update(dict(zip(keys, smi)) if smi else {"driver": None})
    else:
        env.update({"gpu": None, "note": "CPU / Triton interpreter: these numbers are not a benchmark"})
    return env
