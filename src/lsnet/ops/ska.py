"""SKA (small-kernel aggregation): the dynamic depth-wise convolution of LS convolution.

For inputs ``x`` of shape (N, C, H, W) and per-pixel kernels ``w`` of shape
(N, Cw, K*K, H, W)::

    y[n, c, h, v] = sum_{i,j} x[n, c, h+i-P, v+j-P] * w[n, c mod Cw, i*K+j, h, v]

with zero padding and P = (K-1)/2. Channels c, c+Cw, c+2Cw, ... share one kernel.

Two CPU implementations live here:

* :func:`ska_reference` - ``F.unfold`` plus a broadcast multiply and a sum. Short enough
  to check by eye; it materialises an (N, C, K*K, H, W) tensor. Tests compare against it.
* :func:`ska_shift` - a shifted multiply-accumulate over the K*K taps with a hand-written
  backward of the same form. It never builds the unfolded tensor, so it needs far less
  memory and is faster; it is the default on CPU.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["ska", "ska_reference", "ska_shift", "check_ska_shapes", "register_ska_backend", "SKA"]


def check_ska_shapes(x: torch.Tensor, w: torch.Tensor) -> int:
    """Validate ``x`` (N, C, H, W) against ``w`` (N, Cw, K*K, H, W) and return K.

    Raises ``ValueError`` naming both shapes when they do not fit together.
    """
    got = f"got x of shape {tuple(x.shape)} and w of shape {tuple(w.shape)}"
    if x.dim() != 4:
        raise ValueError(f"ska: x must be 4-D (N, C, H, W); {got}")
    if w.dim() != 5:
        raise ValueError(f"ska: w must be 5-D (N, Cw, K*K, H, W); {got}")
    n, c, h, wd = x.shape
    if w.shape[0] != n or w.shape[3] != h or w.shape[4] != wd:
        raise ValueError(f"ska: x and w must agree on N, H and W; {got}")
    cw, kk = w.shape[1], w.shape[2]
    if cw == 0 or c % cw != 0:
        raise ValueError(f"ska: the channels of x (C={c}) must be a multiple of w's Cw={cw}; {got}")
    k = math.isqrt(kk)
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"ska: w's third dimension must be K*K for an odd K (9, 25, ...), not {kk}; {got}")
    if x.dtype != w.dtype:
        raise ValueError(f"ska: x and w must have the same dtype, got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"ska: x and w must be on the same device, got {x.device} and {w.device}")
    return k


def ska_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Unfold-based SKA: the plain definition, used as the ground truth in tests."""
    k = check_ska_shapes(x, w)
    n, c, h, wd = x.shape
    cw = w.shape[1]
    cols = F.unfold(x, kernel_size=k, padding=(k - 1) // 2)  # (N, C*K*K, H*W), tap-major per channel
    cols = cols.view(n, c // cw, cw, k * k, h, wd)
    # channel c = g*Cw + r uses kernel r = c mod Cw: broadcast w over the group axis g
    return (cols * w.unsqueeze(1)).sum(dim=3).reshape(n, c, h, wd)


def _taps(k: int):
    """Yield (tap index, row offset, column offset) for a K x K window."""
    p = (k - 1) // 2
    for i in range(k):
        for j in range(k):
            yield i * k + j, i - p, j - p


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision sums over K*K taps lose digits; accumulate them in float32
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _shifted(t: torch.Tensor, dy: int, dx: int, h: int, wd: int) -> torch.Tensor:
    """View of ``t`` (zero padded by P on H and W) shifted by (dy, dx), cropped to H x W."""
    p_h = (t.shape[-2] - h) // 2
    p_w = (t.shape[-1] - wd) // 2
    return t[..., p_h + dy : p_h + dy + h, p_w + dx : p_w + dx + wd]


def _ska_shift_forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    n, c, h, wd = x.shape
    cw = w.shape[1]
    p = (k - 1) // 2
    acc = _accumulate_dtype(x.dtype)
    xp = F.pad(x, (p, p, p, p)).view(n, c // cw, cw, h + 2 * p, wd + 2 * p)
    wt = w.unsqueeze(1)  # (N, 1, Cw, KK, H, W): broadcast over channel groups
    y = torch.zeros(n, c // cw, cw, h, wd, dtype=acc, device=x.device)
    for t, dy, dx in _taps(k):
        y.addcmul_(_shifted(xp, dy, dx, h, wd), wt[:, :, :, t])
    return y.view(n, c, h, wd).to(x.dtype)


def _ska_shift_backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool, need_w: bool):
    n, c, h, wd = x.shape
    cw = w.shape[1]
    g = c // cw
    p = (k - 1) // 2
    acc = _accumulate_dtype(x.dtype)
    gy = gy.reshape(n, g, cw, h, wd)
    grad_x = grad_w = None
    if need_x:
        # x[h+dy] received w[t, h] * gy[h]: scatter the products back by the opposite shift
        gxp = torch.zeros(n, g, cw, h + 2 * p, wd + 2 * p, dtype=acc, device=x.device)
        wt = w.unsqueeze(1)
        for t, dy, dx in _taps(k):
            _shifted(gxp, dy, dx, h, wd).addcmul_(gy, wt[:, :, :, t])
        grad_x = gxp[..., p : p + h, p : p + wd].reshape(n, c, h, wd).to(x.dtype)
    if need_w:
        xp = F.pad(x, (p, p, p, p)).view(n, g, cw, h + 2 * p, wd + 2 * p)
        grad_w = torch.empty(n, cw, k * k, h, wd, dtype=acc, device=x.device)
        for t, dy, dx in _taps(k):
            # channels sharing a kernel contribute to its gradient: sum over the groups
            torch.sum(_shifted(xp, dy, dx, h, wd) * gy, dim=1, dtype=acc, out=grad_w[:, :, t])
        grad_w = grad_w.to(w.dtype)
    return grad_x, grad_w


class _SKAShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        k = math.isqrt(w.shape[2])
        ctx.save_for_backward(x, w)
        ctx.k = k
        return _ska_shift_forward(x, w, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        return _ska_shift_backward(gy, x, w, ctx.k, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


def ska_shift(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Shifted multiply-accumulate SKA with a matching hand-written backward."""
    check_ska_shapes(x, w)
    return _SKAShift.apply(x, w)


# Device type -> implementation. Other modules (e.g. the Triton kernels) register here,
# so that importing lsnet never needs them.
_BACKENDS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}


def register_ska_backend(device_type: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Use ``fn(x, w)`` for SKA on tensors of ``device_type`` (e.g. ``"cuda"``)."""
    _BACKENDS[device_type] = fn


def ska(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Small-kernel aggregation ``y = SKA(x, w)``; see the module docstring for the definition.

    Dispatches on the device of ``x``: a registered backend when there is one, otherwise
    the shifted multiply-accumulate path, which runs anywhere PyTorch does.
    """
    check_ska_shapes(x, w)
    fn = _BACKENDS.get(x.device.type)
    if fn is None and x.device.type == "cuda":
        fn = _load_triton_backend()
    if fn is not None:
        return fn(x, w)
    return _SKAShift.apply(x, w)


_TRITON_TRIED = False


def _load_triton_backend():
    """Register the Triton kernels for CUDA on first use; None (shift path) without Triton."""
    global _TRITON_TRIED
    if not _TRITON_TRIED:
        _TRITON_TRIED = True
        try:
            from .ska_triton import ska_triton  # noqa: WPS433 - optional dependency
        except ImportError:
            return None
        register_ska_backend("cuda", ska_triton)
    return _BACKENDS.get("cuda")


class SKA(torch.nn.Module):
    """Module wrapper of :func:`ska` (no parameters), so that it appears in the model tree."""

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ska(x, w)
