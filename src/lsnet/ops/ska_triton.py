"""Triton kernels for SKA (small-kernel aggregation), forward and backward.

Definition (see :mod:`lsnet.ops.ska`), for x (N, C, H, W) and w (N, Cw, K*K, H, W)::

    y[n, c, h, v] = sum_{i,j} x[n, c, h+i-P, v+j-P] * w[n, c mod Cw, i*K+j, h, v]

Kernel layout. Every kernel runs a 1-D grid of N * Cw * ceil(H*W / BLOCK) programs; a
program owns one (n, r) pair (r = kernel index in 0..Cw-1) and one block of BLOCK
flattened spatial positions. It keeps a [KK_PAD, BLOCK] register tile (one row per tap,
KK_PAD = next power of two >= K*K, extra rows masked off) and loops over the G = C / Cw
channels c = r, r + Cw, r + 2*Cw, ... that share kernel r:

* forward: the w tile is loaded once; per channel the x tile at the K*K shifted
  positions is loaded and reduced over taps into y.
* grad_x: the w tile is loaded once at the *reflected* positions (p - d_t); per channel
  the gy tile at those positions is loaded and reduced over taps.
* grad_w: a float32 tile accumulates gy[p] * x[p + d_t] over the G channels and is
  written once. Each grad_w element has exactly one owner program, so there are no
  atomics and the result is deterministic.

All sums are accumulated in float32 (float64 for float64 inputs); results are stored in
the input dtype. Plane offsets are int64 so that N*C*H*W may exceed 2**31.

Importing this module needs Triton but not CUDA; without Triton it raises ImportError.
When ``TRITON_INTERPRET=1`` was set before Triton was imported, the kernels are run by the
Triton interpreter and :func:`ska_triton` also accepts CPU tensors (used by the tests).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl
except ImportError:
    raise
except Exception as exc:  # a broken Triton install must look like a missing one to the caller
    raise ImportError(f"lsnet.ops.ska_triton: Triton failed to import: {exc!r}") from exc

from .backends import SKAKernels, register_ska_backend, register_ska_kernels
from .checks import check_ska_shapes

__all__ = ["ska_triton", "SKATriton"]

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _block_and_taps(HW, CW, H, W, K: tl.constexpr, KK_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """This program's (n, r) and nr = n * CW + r (the kernel slice of w it owns), the
    flattened spatial positions ``offs`` of its block (``inb``: inside the image) with their
    row h and column v, and the taps t (``tap_ok``: t < K*K) with their offsets (dy, dx)."""
    nblk = tl.cdiv(HW, BLOCK)
    pid = tl.program_id(0)
    nr = pid // nblk
    offs = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    P: tl.constexpr = (K - 1) // 2
    t = tl.arange(0, KK_PAD)
    return nr // CW, nr % CW, nr, offs, offs < HW, offs // W, offs % W, t, t < K * K, t // K - P, t % K - P


@triton.jit
def _kernel_offsets(nr, t, pos, HW, K: tl.constexpr):
    """Offsets into w (or grad_w) of tap ``t`` at flattened positions ``pos`` of slice nr."""
    return nr.to(tl.int64) * (K * K) * HW + t[:, None].to(tl.int64) * HW + pos


@triton.jit
def _shifted(h, v, dy, dx, mask, H, W, SIGN: tl.constexpr):
    """Flattened offsets of the pixels at (h + SIGN*dy, v + SIGN*dx) for every (tap, position),
    and ``mask`` narrowed to those inside the image (zero padding comes from the mask)."""
    hs = h[None, :] + SIGN * dy[:, None]
    vs = v[None, :] + SIGN * dx[:, None]
    return hs * W + vs, mask & (hs >= 0) & (hs < H) & (vs >= 0) & (vs < W)


@triton.jit
def _ska_gather_kernel(src_ptr, w_ptr, dst_ptr, C, CW, G, H, W, HW, K: tl.constexpr, KK_PAD: tl.constexpr,
                       BLOCK: tl.constexpr, ACC: tl.constexpr, SIGN: tl.constexpr):
    """dst[p] = sum_t src[p + SIGN * d_t] * w[t at q], for the G channels sharing slice r.

    SIGN = 1 is the forward pass (src = x, q = p: y at p gathers x at p + d_t). SIGN = -1 is
    the gradient of x (src = grad y, q = p - d_t: x at p fed output p - d_t through tap t);
    a gather, not a scatter, so every element is written by one program. The weights are
    loaded once and reused by every channel."""
    n, r, nr, offs, inb, h, v, t, tap_ok, dy, dx = _block_and_taps(HW, CW, H, W, K, KK_PAD, BLOCK)
    src_off, m = _shifted(h, v, dy, dx, tap_ok[:, None] & inb[None, :], H, W, SIGN)
    if SIGN == 1:
        w_pos = offs[None, :] + tl.zeros_like(src_off)
    else:
        w_pos = src_off
    wt = tl.load(w_ptr + _kernel_offsets(nr, t, w_pos, HW, K), mask=m, other=0.0).to(ACC)
    for g in range(G):
        plane = (n * C + g * CW + r).to(tl.int64) * HW
        st = tl.load(src_ptr + plane + src_off, mask=m, other=0.0).to(ACC)
        tl.store(dst_ptr + plane + offs, tl.sum(st * wt, axis=0).to(dst_ptr.dtype.element_ty), mask=inb)


@triton.jit
def _ska_bwd_w_kernel(gy_ptr, x_ptr, gw_ptr, C, CW, G, H, W, HW, K: tl.constexpr, KK_PAD: tl.constexpr,
                      BLOCK: tl.constexpr, ACC: tl.constexpr):
    """grad_w[n, r, t, p] = sum over the G channels c of slice r of grad_y[c, p] * x[c, p + d_t];
    this program is the only writer of its block, so it sums the channels itself."""
    n, r, nr, offs, inb, h, v, t, tap_ok, dy, dx = _block_and_taps(HW, CW, H, W, K, KK_PAD, BLOCK)
    w_mask = tap_ok[:, None] & inb[None, :]
    x_off, x_mask = _shifted(h, v, dy, dx, w_mask, H, W, 1)
    acc = tl.zeros((KK_PAD, BLOCK), dtype=ACC)
    for g in range(G):
        plane = (n * C + g * CW + r).to(tl.int64) * HW
        gy = tl.load(gy_ptr + plane + offs, mask=inb, other=0.0).to(ACC)
        xt = tl.load(x_ptr + plane + x_off, mask=x_mask, other=0.0).to(ACC)
        acc += xt * gy[None, :]
    tl.store(gw_ptr + _kernel_offsets(nr, t, offs[None, :], HW, K), acc.to(gw_ptr.dtype.element_ty), mask=w_mask)


# ---------------------------------------------------------------------------- host side

# The interpreter decision is taken by triton.jit when this module is imported, so the
# kernel object (not the current environment) says whether CPU tensors can be launched.
_INTERPRETED = not isinstance(_ska_gather_kernel, triton.runtime.jit.JITFunction)


def _launch_config(k: int, hw: int):
    """(KK_PAD, BLOCK, num_warps): a tile of about 4K elements, no wider than the image."""
    kk_pad = triton.next_power_of_2(k * k)
    block = max(32, min(256, 4096 // kk_pad))
    block = min(block, max(32, triton.next_power_of_2(hw)))  # tiny images: fewer idle lanes
    num_warps = 4 if kk_pad * block >= 2048 else 2
    return kk_pad, block, num_warps


def _check_device(t: torch.Tensor) -> None:
    if t.is_cuda:
        return
    if _INTERPRETED and t.device.type == "cpu":
        return
    raise ValueError(
        f"ska_triton: needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before "
        f"Triton was imported); got a tensor on {t.device}"
    )


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch(kernel, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, cw: int, k: int, acc, **extra) -> None:
    """Run one of the three kernels over the (n, r, spatial block) grid; ``a`` is (N, C, H, W)."""
    n, c, h, wd = a.shape
    hw = h * wd
    kk_pad, block, num_warps = _launch_config(k, hw)
    grid = (n * cw * triton.cdiv(hw, block),)
    args = (a, b, out, c, cw, c // cw, h, wd, hw)
    meta = dict(K=k, KK_PAD=kk_pad, BLOCK=block, ACC=acc, num_warps=num_warps, **extra)
    if a.is_cuda:
        # launch on the tensors' device even when another device is current
        with torch.cuda.device(a.device):
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


def _forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if y.numel() > 0:
        _launch(_ska_gather_kernel, x, w, y, w.shape[1], k, _acc_dtype(x.dtype), SIGN=1)
    return y


def _grad_x(gy: torch.Tensor, w: torch.Tensor, k: int, x_dtype: torch.dtype) -> torch.Tensor:
    gx = torch.empty(gy.shape, dtype=x_dtype, device=gy.device)
    if gx.numel() > 0:
        _launch(_ska_gather_kernel, gy, w, gx, w.shape[1], k, _acc_dtype(x_dtype), SIGN=-1)
    return gx


def _grad_w(gy: torch.Tensor, x: torch.Tensor, w_shape, k: int, w_dtype: torch.dtype) -> torch.Tensor:
    gw = torch.empty(w_shape, dtype=w_dtype, device=gy.device)
    if gy.numel() > 0:
        _launch(_ska_bwd_w_kernel, gy, x, gw, w_shape[1], k, _acc_dtype(w_dtype))
    else:
        gw.zero_()  # no channels or pixels summed: the gradient is zero, not garbage
    return gw


class SKATriton(torch.autograd.Function):
    """Autograd wrapper of the Triton SKA kernels (inputs made contiguous here; shapes checked
    by the caller, K given)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
        if x.dtype not in _SUPPORTED:
            raise TypeError(f"ska_triton: unsupported dtype {x.dtype}; use float32, float16 or bfloat16")
        _check_device(x)
        x = x.contiguous()
        w = w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.k = k
        return _forward(x, w, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # the kernels index gy as a dense (N, C, H, W) array and upcast it themselves
        gy = gy.contiguous()
        grad_x = _grad_x(gy, w, ctx.k, x.dtype) if need_x else None
        grad_w = _grad_w(gy, x, w.shape, ctx.k, w.dtype) if need_w else None
        return grad_x, grad_w, None


def ska_triton(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """SKA of ``x`` (N, C, H, W) with per-pixel kernels ``w`` (N, Cw, K*K, H, W) on the GPU.

    Differentiable in both arguments; returns a contiguous tensor of ``x``'s dtype.
    """
    return SKATriton.apply(x, w, check_ska_shapes(x, w))


def _ska_triton_checked(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The registered backend: :func:`lsnet.ops.ska` has checked the shapes already."""
    return SKATriton.apply(x, w, math.isqrt(w.shape[2]))


register_ska_backend("cuda", _ska_triton_checked)


def _kernels_forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    y = _forward(x.contiguous(), w.contiguous(), k)
    return y if y.stride() == x.stride() else torch.empty_like(x).copy_(y)


def _kernels_backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool, need_w: bool):
    gy, xc, wc = gy.contiguous(), x.contiguous(), w.contiguous()
    gx = torch.empty_like(x).copy_(_grad_x(gy, wc, k, x.dtype)) if need_x else x.new_empty(0)
    gw = torch.empty_like(w).copy_(_grad_w(gy, xc, w.shape, k, w.dtype)) if need_w else w.new_empty(0)
    return gx, gw


register_ska_kernels("cuda", SKAKernels(_kernels_forward, _kernels_backward))
