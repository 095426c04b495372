"""Host-side helpers of a generated program: weight folding and packing, a small reader of
safetensors files (so a generated program needs nothing but torch and triton), the launch
plans every launcher keeps (``_host_plan``), and the switch of programmatic dependent launch.

Weights arrive under their reference names (PyTorch's state_dict keys, e.g. torchvision's) and
are prepared once, at load time: batch norm is folded into the convolution before it, fc
columns are reordered for NHWC flattening, and every tensor is packed for its kernel.
"""

import json
import struct

import torch


def _bn_stats(state, bn):
    """A batch norm's running mean and variance, weight and bias (1 and 0 without affine), float64."""
    mean, var = state[bn + ".running_mean"].double(), state[bn + ".running_var"].double()
    gamma, beta = state.get(bn + ".weight"), state.get(bn + ".bias")
    gamma = torch.ones_like(mean) if gamma is None else gamma.double()
    beta = torch.zeros_like(mean) if beta is None else beta.double()
    return mean, var, gamma, beta


def fold_bn(state, conv, bn, eps):
    """Fold inference batch norm `bn` into the preceding convolution `conv` (computed in float64):
    W' = W * s,  b' = (b - mean) * s + beta,  with s = gamma / sqrt(var + eps) per output channel."""
    w = state[conv + ".weight"].double()
    b = state.get(conv + ".bias")
    b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.double()
    if bn is None:
        return w, b
    mean, var, gamma, beta = _bn_stats(state, bn)
    s = gamma / torch.sqrt(var + eps)
    return w * s.reshape(-1, *([1] * (w.dim() - 1))), (b - mean) * s + beta


def bn_scale_shift(state, bn, eps):
    """A standalone inference batch norm as y = x * scale + shift (fp32 vectors)."""
    mean, var, gamma, beta = _bn_stats(state, bn)
    scale = gamma / torch.sqrt(var + eps)
    return scale.float(), (beta - mean * scale).float()


def chw_to_hwc_columns(w, c, h, wd):
    """Reorder an fc weight's input columns from PyTorch's (C, H, W) flattening to NHWC's (H, W, C)."""
    return w.reshape(w.shape[0], c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], c * h * wd)


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_safetensors(path):
    """{name: tensor} from a .safetensors file (the format: an 8-byte little-endian header size,
    a JSON header of dtype/shape/byte offsets, then the raw little-endian data)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=_DTYPES[info["dtype"]]) if end > start else \
            torch.empty(0, dtype=_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


# ---- launch plans -------------------------------------------------------------------------------
# A launcher's checks and choices (path, blocks, split, grid, the keyword arguments) depend only on
# its tensors' shapes, strides, dtypes and devices and on its other arguments, so each distinct call
# is planned once and the plan kept: a later call that matches -- a generated program's launch at
# the same batch size, every forward -- only hands its tensors to the plan.  A call that fails a
# check raises before anything is kept, so misuse raises the same error every time.  Plans hold no
# tensors (no memory kept alive); the Triton launch itself, which specializes on pointer alignment,
# is made on every call.  Every template's launchers share this one cache.

_HOST_PLANS = {}  # (planner, each tensor's _host_sig, other arguments, their types) -> plan
_HOST_PLANS_MAX = 4096  # a tuner's sweep makes many; start over beyond this


def _host_sig(t):
    """What a plan depends on in a tensor argument: shape, strides, dtype, device (None: absent; a
    tuple of tensors, e.g. several destinations: one each)."""
    if t is None:
        return None
    if isinstance(t, (tuple, list)):
        return tuple(map(_host_sig, t))
    return (t.shape, t.stride(), t.dtype, t.device)


def _host_plan_lookup(planner, tensors, args):
    """(key, the plan kept under it or None) for a call of `planner`: its tensors' signatures, its
    other arguments (hashable) and their types (True == 1 is not a block size).  The key is None
    when it cannot be built (an argument not a tensor, or not hashable): such a call is planned
    afresh every time, and the planner's checks say what is wrong."""
    try:
        # (absent tensors skip the call: a conv2d call passes ten, about half of them None)
        key = (planner, tuple([t if t is None else _host_sig(t) for t in tensors]), args, tuple(map(type, args)),
               PROGRAMMATIC_LAUNCH)
        return key, _HOST_PLANS.get(key)
    except (AttributeError, TypeError):
        return None, None


def _host_plan_keep(key, plan):
    """Keep `plan` under `key` (from ``_host_plan_lookup``); the plan."""
    if key is not None:
        if len(_HOST_PLANS) >= _HOST_PLANS_MAX:
            _HOST_PLANS.clear()
        _HOST_PLANS[key] = plan
    return plan


def _host_plan(planner, tensors, args):
    """The plan ``planner(tensors, *args)`` for a call: kept from an earlier call with the same key,
    else made and kept.  (Launchers whose planner takes keyword arguments call the two steps above
    themselves, which costs no closure per call.)"""
    key, plan = _host_plan_lookup(planner, tensors, args)
    if plan is None:
        plan = _host_plan_keep(key, planner(tensors, *args))
    return plan


# ---- programmatic dependent launch (Hopper) ----------------------------------------------------
# Between two kernels of a stream a GPU idles: the next grid is launched only once the previous one
# has finished and flushed.  With programmatic dependent launch (sm_90+) the next grid is launched
# as soon as every program of the previous one has started, its programs wait on the GPU
# (``gdc_wait``) until the previous grid's writes are visible, and only then touch memory -- so
# the launch latency hides behind the previous kernel's last wave.  Each kernel of these templates
# takes a PDL constexpr: on, it waits first thing (nothing before it reads or writes memory: by
# induction every earlier kernel has finished too, so reusing a buffer stays safe) and then lets
# the next grid launch.  Off by default until a GPU measures it faster (benchmarks/gpu's pdl_ab
# stage); a program turns it on by setting its module's PROGRAMMATIC_LAUNCH (plans made before are
# kept apart: the switch is part of every plan's key; a captured CUDA graph keeps its launches).

PROGRAMMATIC_LAUNCH = False
_HOST_HOPPER = {}  # CUDA device index -> whether it is sm_90 or later, read once


def _host_hopper(device):
    """Whether `device` is a GPU of compute capability 9.0 or later (Hopper's TMA and programmatic
    dependent launch), or meta: the warm recorder, which plays an sm_90."""
    if device.type == "meta":
        return True
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _HOST_HOPPER:
        _HOST_HOPPER[index] = torch.cuda.get_device_capability(index)[0] >= 9
    return _HOST_HOPPER[index]


def _host_pdl(device):
    """The keyword arguments that launch a template's kernel with programmatic dependent launch on
    `device`: {} unless PROGRAMMATIC_LAUNCH is on and the device has it (``_host_hopper``)."""
    return {"PDL": True, "launch_pdl": True} if PROGRAMMATIC_LAUNCH and _host_hopper(device) else {}
