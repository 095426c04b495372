"""Arithmetic the tests check our counts and shapes against: parameter counts as PyTorch counts
them, PyTorch's output-size rule, and PyTorch itself replaying every shape on meta tensors."""

import torch
import torch.nn.functional as F


def conv_p(cin, cout, k, groups=1, bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    return kh * kw * (cin // groups) * cout + (cout if bias else 0)


def fc_p(fin, fout, bias=True):
    return fin * fout + (fout if bias else 0)


def bn_p(c):
    return 2 * c  # weight and bias; running stats are buffers


def out_size(size, k, stride=1, pad=0, ceil=False):
    """PyTorch's conv/pool output size (ceil mode: the last window must start inside the input)."""
    span = size + 2 * pad - k
    if not ceil:
        return span // stride + 1
    n = -(-span // stride) + 1
    return n - 1 if (n - 1) * stride >= size + pad else n


def replay(g) -> int:
    """Every conv / pool / fc / lrn / pad_channels node through torch.nn.functional, on meta
    tensors of its input's shape: the output shapes must be ours."""
    checked = 0
    for n, d in g.walk():
        op, a = d["op"], d["attrs"]
        if op not in ("conv", "maxpool", "avgpool", "adaptive_avgpool", "global_avgpool", "fc", "lrn", "pad_channels"):
            continue
        (src,) = g.args(n)
        x = torch.empty(1, *g.shape(src), device="meta")
        if op == "conv":
            top, bottom, left, right = a["pad"]
            w = torch.empty(a["out"], x.shape[1] // a["groups"], *a["kernel"], device="meta")
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, stride=a["stride"], dilation=a["dilation"],
                         groups=a["groups"])
        elif op == "maxpool":
            y = F.max_pool2d(x, a["kernel"], a["stride"], a["pad"], a["dilation"], ceil_mode=a["ceil_mode"])
        elif op == "avgpool":
            y = F.avg_pool2d(x, a["kernel"], a["stride"], a["pad"], ceil_mode=a["ceil_mode"],
                             count_include_pad=a["count_include_pad"])
        elif op == "adaptive_avgpool":
            y = F.adaptive_avg_pool2d(x, a["size"])
        elif op == "global_avgpool":
            y = F.adaptive_avg_pool2d(x, 1)
        elif op == "lrn":
            y = F.local_response_norm(x, a["size"], a["alpha"], a["beta"], a["k"])
        elif op == "pad_channels":
            y = F.pad(x, (0, 0, 0, 0, 0, a["out"] - x.shape[1]))
        else:
            y = F.linear(x, torch.empty(a["out"], x.shape[1], device="meta"))
        assert tuple(y.shape[1:]) == d["shape"], n
        checked += 1
    return checked
