"""Tensors the kernel tests hand to the kernels, and how they compare the results with float64 PyTorch.

* ``DEV``: where the kernels run (CUDA with a GPU, else the CPU under Triton's interpreter);
* ``rel_err``: ||out - ref|| / ||ref||, computed in float64 on the CPU;
* ``sliced``: a view that is a channel slice (optionally also a spatial crop) of a NaN-filled wider
  buffer, so that a stray write (``kernel_build.check_poison``) or a stray read shows;
* ``square``: the geometry arguments of a square kernel, one stride and one padding all round;
* ``twin_conv``: operands for two calls of a conv2d template that must agree bit for bit.

Tests import this module by name: conftest.py puts the tests directory on sys.path.
"""

import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(out, ref) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    return ((out - ref).norm() / ref.norm()).item()


def sliced(shape, dtype, before=0, after=0, spatial_crop=False):
    """A tensor of `shape` (NHWC or (N, F)) that is a view into a NaN-filled wider buffer: (view, buffer).

    before / after: channels of the buffer left / right of the view (a concat slice);
    spatial_crop: the view is a crop of a buffer 2 pixels larger in H and W (4-d only), so its rows
    are not evenly strided.
    """
    *lead, c = shape
    if spatial_crop:
        n, h, w = lead
        buf = torch.full((n, h + 2, w + 2, before + c + after), float("nan"), dtype=dtype, device=DEV)
        return buf[:, 1:h + 1, 2:w + 2, before:before + c], buf
    buf = torch.full((*lead, before + c + after), float("nan"), dtype=dtype, device=DEV)
    return buf[..., before:before + c], buf


def square(r, s, p):
    """kernel=, stride= and pad= of an r x r kernel with stride s and p pixels of padding on every side."""
    return dict(kernel=(r, r), stride=(s, s), pad=(p, p, p, p))


def twin_conv(K, shape, k, r, dtype, seed, bias=False):
    """Seeded operands of K.conv2d on DEV for a call and a variant that must give the same bits: x, an
    NHWC `shape` (n, h, w, c) tensor, then the packed k x c x r x r weight, then (bias=True) an fp32 (k,)
    bias, all in `dtype` but the bias; and two NaN-filled (n, h, w, k) outputs (stride 1, `same` padding).
    Returns (x, packed weight, bias or None, out, out_again)."""
    gen = torch.Generator().manual_seed(seed)
    n, h, w, c = shape
    x = torch.randn(n, h, w, c, generator=gen).to(DEV, dtype)
    wp = K.pack_conv_weight(torch.randn(k, c, r, r, generator=gen), 1, dtype).to(DEV)
    b = torch.randn(k, generator=gen).to(DEV) if bias else None
    out, again = (torch.full((n, h, w, k), float("nan"), dtype=dtype, device=DEV) for _ in range(2))
    return x, wp, b, out, again
