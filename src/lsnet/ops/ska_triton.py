"""Triton kernels for SKA (small-kernel aggregation): forward (optionally with the LS
convolution's BatchNorm affine and residual as an epilogue) and one backward kernel for both
gradients.

Definition (see :mod:`lsnet.ops.ska`), for x (N, C, H, W) and w (N, Cw, K*K, H, W), G = C / Cw::

    y[n, c, h, v] = sum_{i,j} x[n, c, h+i-P, v+j-P] * w[n, c mod Cw, i*K+j, h, v]

Design (issue 22 item 1: bandwidth). The spatial axes are handled flattened, p = h * W + v,
so every tensor is addressed as (N, channels, P = H*W) through its strides: NCHW-contiguous and
channels-last tensors (and the channels-last view LKP's convolution hands over as w) are both
read in place, never copied. A program owns one sample n, a block of BR kernel indices r, all G
channels c = g * Cw + r that share each kernel, and a block of BP positions: a
[BR, BG, BP] register tile (BG = G rounded up to a power of two). For each of the K*K taps,
unrolled at compile time with ``tl.static_range`` (no padding of the tap axis), it loads the
x tile shifted by that tap and the kernel weights once, as a [BR, BP] tile broadcast over the
G channels, so each byte of w is read once for all the channels that share it, each byte of
x once from memory (the neighbouring taps hit the cache) and each y byte written once.

* forward: ``acc += x[p + d_t] * w[t, p]``; epilogue ``y = acc`` or, for the fused LS
  convolution, ``y = acc * scale[c] + shift[c] + x[p]``.
* backward (one kernel, both gradients, each optional): grad_w[t, p] = sum over the G
  channels of grad_y[p] * x[p + d_t], reduced inside the tile (every grad_w element has one
  writer: deterministic, no atomics); grad_x[p] = sum_t grad_y[p - d_t] * w[t, p - d_t], a
  gather, so grad_x too has one writer per element.

Launch settings: a tile of about 1024 elements (forward; 512 backward) shaped by the layout and
(C, Cw, H*W), cached per shape. On CUDA the first eager call of each shape class also times
two other tile sizes (2x and 0.5x) and keeps the fastest (``LSNET_SKA_TUNE=0`` turns this off;
it is skipped while a CUDA graph is captured and under torch.compile tracing, which use the
measured choice when there is one and the default otherwise).
Sums are accumulated in float32 (float64 for float64 inputs) and stored in the input dtype.
The sample offset is computed in int64 (N*C*H*W may exceed 2**31; one sample may not).

Operators: ``torch.ops.lsnet.ska_triton`` / ``ska_triton_backward`` /
``ska_bn_residual_triton`` are ``torch.library.triton_op`` s (torch >= 2.6) whose kernels are
launched through ``wrap_triton``, so that ``torch.compile`` on CUDA sees the kernels themselves
(no graph break, no replacement by generic code). Eager calls go through the plain launchers.
The module also registers the kernels for the ``torch.ops.lsnet.ska`` dispatcher operators
on CUDA (:func:`lsnet.ops.backends.register_ska_kernels`).

Importing this module needs Triton but not CUDA; without Triton it raises ImportError.
When ``TRITON_INTERPRET=1`` was set before Triton was imported, the kernels are run by the
Triton interpreter and the launchers also accept CPU tensors (used by the tests).
"""

from __future__ import annotations

import math
import os
from typing import Optional, Tuple

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
from .ska import register_ska_autograd

__all__ = ["ska_triton", "SKATriton", "ska_triton_forward", "ska_triton_backward", "ska_triton_fused",
           "launch_config"]

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# ---------------------------------------------------------------------------- device code

@triton.jit
def _tile(CW, G, P, W, BR: tl.constexpr, BG: tl.constexpr, BP: tl.constexpr):
    """This program's sample n (int64), kernel indices r [BR], channels c = g * CW + r [BR, BG],
    their masks, positions p [BP] with their mask, row h and column v."""
    pid = tl.program_id(0)
    npb = tl.cdiv(P, BP)
    nrb = tl.cdiv(CW, BR)
    pb = pid % npb
    rest = pid // npb
    rb = rest % nrb
    n = (rest // nrb).to(tl.int64)
    r = rb * BR + tl.arange(0, BR)
    g = tl.arange(0, BG)
    p = pb * BP + tl.arange(0, BP)
    rmask = r < CW
    cmask = rmask[:, None] & (g < G)[None, :]
    c = g[None, :] * CW + r[:, None]
    pmask = p < P
    return n, r, c, rmask, cmask, p, pmask, p // W, p % W


@triton.jit
def _inside(h, v, pmask, H, W, DY: tl.constexpr, DX: tl.constexpr):
    """``pmask`` narrowed to the positions whose neighbour (h + DY, v + DX) lies in the image
    (the zero padding); only the tests a tap needs are emitted."""
    ok = pmask
    if DY < 0:
        ok = ok & (h >= -DY)
    if DY > 0:
        ok = ok & (h < H - DY)
    if DX < 0:
        ok = ok & (v >= -DX)
    if DX > 0:
        ok = ok & (v < W - DX)
    return ok


@triton.jit
def _ska_fwd_kernel(x_ptr, w_ptr, y_ptr, scale_ptr, shift_ptr, CW, G, H, W, P,
                    xsN, xsC, xsP, wsN, wsR, wsT, wsP, ysN, ysC, ysP,
                    K: tl.constexpr, BR: tl.constexpr, BG: tl.constexpr, BP: tl.constexpr,
                    ACC: tl.constexpr, AFFINE: tl.constexpr):
    """y = SKA(x, w) (AFFINE: y = SKA(x, w) * scale[c] + shift[c] + x) on one [BR, BG, BP] tile."""
    n, r, c, rmask, cmask, p, pmask, h, v = _tile(CW, G, P, W, BR, BG, BP)
    PAD: tl.constexpr = (K - 1) // 2
    x_rows = x_ptr + n * xsN + c[:, :, None] * xsC  # [BR, BG, 1]
    w_rows = w_ptr + n * wsN + r[:, None] * wsR + p[None, :] * wsP  # [BR, BP]
    cm = cmask[:, :, None]
    wm = rmask[:, None] & pmask[None, :]
    acc = tl.zeros([BR, BG, BP], dtype=ACC)
    for t in tl.static_range(K * K):
        DY = t // K - PAD  # compile-time values: t is a static_range constant
        DX = t % K - PAD
        ok = _inside(h, v, pmask, H, W, DY, DX)
        q = p + (DY * W + DX)
        xt = tl.load(x_rows + q[None, None, :] * xsP, mask=cm & ok[None, None, :], other=0.0).to(ACC)
        wt = tl.load(w_rows + t * wsT, mask=wm, other=0.0).to(ACC)
        acc += xt * wt[:, None, :]
    om = cm & pmask[None, None, :]
    if AFFINE:
        sc = tl.load(scale_ptr + c, mask=cmask, other=0.0).to(ACC)
        sh = tl.load(shift_ptr + c, mask=cmask, other=0.0).to(ACC)
        xc = tl.load(x_rows + p[None, None, :] * xsP, mask=om, other=0.0).to(ACC)  # the centre tap: cached
        acc = acc * sc[:, :, None] + sh[:, :, None] + xc
    y_off = n * ysN + c[:, :, None] * ysC + p[None, None, :] * ysP
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=om)


@triton.jit
def _ska_bwd_kernel(gy_ptr, x_ptr, w_ptr, gx_ptr, gw_ptr, CW, G, H, W, P,
                    gsN, gsC, gsP, xsN, xsC, xsP, wsN, wsR, wsT, wsP, gxsN, gxsC, gxsP, gwsN, gwsR, gwsT, gwsP,
                    K: tl.constexpr, BR: tl.constexpr, BG: tl.constexpr, BP: tl.constexpr, ACC: tl.constexpr,
                    NEED_X: tl.constexpr, NEED_W: tl.constexpr):
    """grad_x (a gather over the reflected taps) and grad_w (summed over the G channels inside
    the tile) of one [BR, BG, BP] tile, in one pass over grad_y."""
    n, r, c, rmask, cmask, p, pmask, h, v = _tile(CW, G, P, W, BR, BG, BP)
    PAD: tl.constexpr = (K - 1) // 2
    cm = cmask[:, :, None]
    om = cm & pmask[None, None, :]
    wm = rmask[:, None] & pmask[None, :]
    gy_rows = gy_ptr + n * gsN + c[:, :, None] * gsC
    if NEED_W:
        gy_here = tl.load(gy_rows + p[None, None, :] * gsP, mask=om, other=0.0).to(ACC)
        x_rows = x_ptr + n * xsN + c[:, :, None] * xsC
        gw_rows = gw_ptr + n * gwsN + r[:, None] * gwsR + p[None, :] * gwsP
    if NEED_X:
        w_rows = w_ptr + n * wsN + r[:, None] * wsR
        gx_acc = tl.zeros([BR, BG, BP], dtype=ACC)
    for t in tl.static_range(K * K):
        DY = t // K - PAD  # compile-time values: t is a static_range constant
        DX = t % K - PAD
        if NEED_W:
            ok = _inside(h, v, pmask, H, W, DY, DX)
            q = p + (DY * W + DX)
            xt = tl.load(x_rows + q[None, None, :] * xsP, mask=cm & ok[None, None, :], other=0.0).to(ACC)
            tl.store(gw_rows + t * gwsT, tl.sum(gy_here * xt, axis=1).to(gw_ptr.dtype.element_ty), mask=wm)
        if NEED_X:
            # x at p fed the output at p - d_t through tap t
            okm = _inside(h, v, pmask, H, W, -DY, -DX)
            qm = p - (DY * W + DX)
            gyt = tl.load(gy_rows + qm[None, None, :] * gsP, mask=cm & okm[None, None, :], other=0.0).to(ACC)
            wt = tl.load(w_rows + t * wsT + qm[None, :] * wsP, mask=rmask[:, None] & okm[None, :],
                         other=0.0).to(ACC)
            gx_acc += gyt * wt[:, None, :]
    if NEED_X:
        gx_off = n * gxsN + c[:, :, None] * gxsC + p[None, None, :] * gxsP
        tl.store(gx_ptr + gx_off, gx_acc.to(gx_ptr.dtype.element_ty), mask=om)


# ---------------------------------------------------------------------------- host side

# The interpreter decision is taken by triton.jit when this module is imported, so the
# kernel object (not the current environment) says whether CPU tensors can be launched.
_INTERPRETED = not isinstance(_ska_fwd_kernel, triton.runtime.jit.JITFunction)

# Elements per program tile. The forward holds the accumulator and one loaded x tile, the
# backward grad_y, the grad_x accumulator and two loaded tiles, so it gets half. Compiled for
# sm_90 (tests/test_ska_triton.py), fp32 NCHW: the 2048-element forward tile takes 185 registers
# per thread, 1024 about half; no spills. Which is fastest on a GPU is measured on the first
# call of each shape class (see _tuned_target) unless LSNET_SKA_TUNE=0.
_TILE_CANDIDATES = {False: (1024, 2048, 512), True: (512, 1024, 256)}  # the first is the default
_CONFIGS: dict = {}
_TUNED: dict = {}  # (backward, channels_last, n, c, cw, hw, dtype[, affine]) -> chosen tile size
_TUNE = os.environ.get("LSNET_SKA_TUNE", "1") != "0"


def launch_config(backward: bool, channels_last: bool, n: int, c: int, cw: int, hw: int,
                  target: Optional[int] = None):
    """(grid, BR, BG, BP, num_warps) for one shape and a tile of about ``target`` elements
    (default: the first candidate), cached.

    The tile always holds all G = C / Cw channels of its kernels (grad_w sums over them in
    registers). NCHW: positions are the contiguous axis, so BP grows first (up to the image)
    and the rest of the tile goes to more kernels (BR). Channels-last: channels are contiguous
    (c = g * Cw + r), so BR grows first (all Cw kernels make every position's C channels one
    contiguous run) and BP takes the rest.
    """
    if target is None:
        target = _TILE_CANDIDATES[backward][0]
    key = (backward, channels_last, n, c, cw, hw, target)
    hit = _CONFIGS.get(key)
    if hit is not None:
        return hit
    bg = triton.next_power_of_2(c // cw)
    cw_pow2 = triton.next_power_of_2(cw)
    if channels_last:
        br = min(cw_pow2, max(1, target // bg))
        bp = min(triton.next_power_of_2(hw), max(1, target // (bg * br)))
    else:
        bp = min(triton.next_power_of_2(hw), max(16, target // bg), 1024)
        br = min(cw_pow2, max(1, target // (bg * bp)))
    elems = br * bg * bp
    num_warps = 8 if elems >= 4096 else 4 if elems >= 1024 else 2 if elems >= 256 else 1
    grid = (n * triton.cdiv(cw, br) * triton.cdiv(hw, bp),)
    if len(_CONFIGS) > 4096:  # shapes of a model are few; bound the cache anyway
        _CONFIGS.clear()
    _CONFIGS[key] = out = (grid, br, bg, bp, num_warps)
    return out


def _tuning_enabled(t: torch.Tensor) -> bool:
    """Measure tile sizes for ``t``'s shape now? Only eagerly on CUDA, never while a CUDA graph
    is being captured (the measurement synchronises the device)."""
    return _TUNE and t.is_cuda and not torch.cuda.is_current_stream_capturing()


def _time_ms(launch) -> float:
    """Median ms of ``launch()`` over a few runs after one warm-up (which compiles), CUDA events."""
    launch()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        times.append((start, end))
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in times)[len(times) // 2]


def _tuned_target(key, launch) -> Optional[int]:
    """The tile size for this shape class: measured once (``launch(target)`` runs the kernel with
    that tile; every kernel overwrites its outputs, so the trial runs leave no trace), else None
    (the default candidate)."""
    hit = _TUNED.get(key)
    if hit is None:
        timings = {target: _time_ms(lambda target=target: launch(target)) for target in _TILE_CANDIDATES[key[0]]}
        _TUNED[key] = hit = min(timings, key=timings.get)
    return hit


def _flat_stride(t: torch.Tensor) -> Optional[int]:
    """Stride of the flattened H*W axis of ``t`` (last two dims), or None when (H, W) cannot be
    addressed as one axis."""
    h, wd = t.shape[-2], t.shape[-1]
    if wd == 1:
        return t.stride(-2)
    if h == 1 or t.stride(-2) == wd * t.stride(-1):
        return t.stride(-1)
    return None


def _flat(t: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``t`` (or a contiguous copy when its H, W cannot be flattened) and the flat stride."""
    s = _flat_stride(t)
    if s is None:
        t = t.contiguous()
        s = _flat_stride(t)
    return t, s


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_dtype(x: torch.Tensor) -> None:
    if x.dtype not in _SUPPORTED:
        raise TypeError(f"ska_triton: unsupported dtype {x.dtype}; use float32, float16, bfloat16 or float64")


def _check_device(t: torch.Tensor) -> None:
    if t.is_cuda or (_INTERPRETED and t.device.type == "cpu"):
        return
    raise ValueError(
        f"ska_triton: needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before "
        f"Triton was imported); got a tensor on {t.device}"
    )


def _device_guard(t: torch.Tensor):
    """A ``torch.cuda.device`` context only when ``t`` is not on the current device."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return None


# Allocator of every kernel output (the tests and benchmarks/gpu_suite.py swap in a NaN-filling
# one to catch elements a kernel forgets to write).
_new_like = torch.empty_like


def _forward(x: torch.Tensor, w: torch.Tensor, k: int, scale: Optional[torch.Tensor] = None,
             shift: Optional[torch.Tensor] = None, kernel=_ska_fwd_kernel) -> torch.Tensor:
    """Launch the forward kernel into a new tensor laid out as ``torch.empty_like(x)``.

    ``kernel`` is the kernel itself in eager calls and ``wrap_triton(kernel)`` in the
    triton_ops (traced by torch.compile). No shape checks: the callers made them."""
    y = _new_like(x)
    if y.numel() == 0:
        return y
    n, c, h, wd = x.shape
    cw = w.shape[1]
    hw = h * wd
    xk, xsp = _flat(x)
    wk, wsp = _flat(w)
    yk, ysp = (y, _flat_stride(y))
    if ysp is None:  # not for any dense x; kept for odd strides
        yk = _new_like(xk)
        ysp = _flat_stride(yk)
    channels_last = xk.stride(1) == 1 and c > 1
    affine = scale is not None

    def launch(target=None):
        grid, br, bg, bp, warps = launch_config(False, channels_last, n, c, cw, hw, target)
        kernel[grid](xk, wk, yk, scale if affine else xk, shift if affine else xk, cw, c // cw, h, wd, hw,
                     xk.stride(0), xk.stride(1), xsp, wk.stride(0), wk.stride(1), wk.stride(2), wsp,
                     yk.stride(0), yk.stride(1), ysp,
                     K=k, BR=br, BG=bg, BP=bp, ACC=_acc_dtype(x.dtype), AFFINE=affine, num_warps=warps)

    key = (False, channels_last, n, c, cw, hw, x.dtype, affine)
    target = _TUNED.get(key)
    if target is None and kernel is _ska_fwd_kernel and _tuning_enabled(x):
        target = _tuned_target(key, launch)
    launch(target)
    if yk is not y:
        y.copy_(yk)
    return y


def _backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool, need_w: bool,
              kernel=_ska_bwd_kernel) -> Tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel: (grad_x laid out like x, grad_w laid out like w); a gradient
    that is not needed is an empty (0,) tensor."""
    gx = _new_like(x) if need_x else x.new_empty(0)
    gw = _new_like(w) if need_w else w.new_empty(0)
    if not (need_x or need_w):
        return gx, gw
    if x.numel() == 0:
        if need_w:
            gw.zero_()  # no channels or pixels summed: the gradient is zero, not garbage
        return gx, gw
    n, c, h, wd = x.shape
    cw = w.shape[1]
    hw = h * wd
    gyk, gsp = _flat(gy)
    xk, xsp = _flat(x)
    wk, wsp = _flat(w)
    gxk, gxsp = (gx, _flat_stride(gx)) if need_x else (gyk, gsp)  # placeholders are never touched
    if gxsp is None:
        gxk = _new_like(xk)
        gxsp = _flat_stride(gxk)
    gwk, gwsp = (gw, _flat_stride(gw)) if need_w else (wk, wsp)
    if gwsp is None:
        gwk = _new_like(wk)
        gwsp = _flat_stride(gwk)
    channels_last = xk.stride(1) == 1 and c > 1

    def launch(target=None):
        grid, br, bg, bp, warps = launch_config(True, channels_last, n, c, cw, hw, target)
        kernel[grid](gyk, xk, wk, gxk, gwk, cw, c // cw, h, wd, hw,
                     gyk.stride(0), gyk.stride(1), gsp, xk.stride(0), xk.stride(1), xsp,
                     wk.stride(0), wk.stride(1), wk.stride(2), wsp,
                     gxk.stride(0), gxk.stride(1), gxsp, gwk.stride(0), gwk.stride(1), gwk.stride(2), gwsp,
                     K=k, BR=br, BG=bg, BP=bp, ACC=_acc_dtype(x.dtype), NEED_X=need_x, NEED_W=need_w,
                     num_warps=warps)

    key = (True, channels_last, n, c, cw, hw, x.dtype)
    target = _TUNED.get(key)
    if target is None and kernel is _ska_bwd_kernel and _tuning_enabled(x):
        target = _tuned_target(key, launch)
    launch(target)
    if need_x and gxk is not gx:
        gx.copy_(gxk)
    if need_w and gwk is not gw:
        gw.copy_(gwk)
    return gx, gw


def ska_triton_forward(x: torch.Tensor, w: torch.Tensor, k: int, scale: Optional[torch.Tensor] = None,
                       shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SKA forward kernel on shape-checked inputs (no autograd); with ``scale`` and ``shift``
    (float32, length C, contiguous) the fused ``SKA * scale + shift + x``. y is laid out as
    ``torch.empty_like(x)``."""
    _check_dtype(x)
    _check_device(x)
    guard = _device_guard(x)
    if guard is None:
        return _forward(x, w, k, scale, shift)
    with guard:
        return _forward(x, w, k, scale, shift)


def ska_triton_backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool = True,
                        need_w: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both SKA gradients in one kernel on shape-checked inputs (see :func:`_backward`)."""
    guard = _device_guard(x)
    if guard is None:
        return _backward(gy, x, w, k, need_x, need_w)
    with guard:
        return _backward(gy, x, w, k, need_x, need_w)


class SKATriton(torch.autograd.Function):
    """Autograd wrapper of the Triton SKA kernels (shapes checked by the caller, K given).
    Inputs are read in place (NCHW or channels-last); y is laid out like x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
        y = ska_triton_forward(x, w, k)
        ctx.save_for_backward(x, w)
        ctx.k = k
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gw = ska_triton_backward(gy, x, w, ctx.k, need_x, need_w)
        return (gx if need_x else None), (gw if need_w else None), None


def _ska_triton_checked(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The registered backend of :func:`lsnet.ops.ska` (which has checked the shapes): inference
    skips the autograd.Function."""
    k = math.isqrt(w.shape[2])
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return SKATriton.apply(x, w, k)
    return ska_triton_forward(x, w, k)


def ska_triton(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """SKA of ``x`` (N, C, H, W) with per-pixel kernels ``w`` (N, Cw, K*K, H, W) on the GPU.

    Differentiable in both arguments; returns a tensor of ``x``'s dtype laid out like ``x``.
    """
    check_ska_shapes(x, w)
    return _ska_triton_checked(x, w)


def _kernels_forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    return ska_triton_forward(x, w, k)


def ska_triton_fused(x: torch.Tensor, w: torch.Tensor, k: int, scale: torch.Tensor,
                     shift: torch.Tensor) -> torch.Tensor:
    """``SKA(x, w) * scale[c] + shift[c] + x`` on shape-checked inputs (the forward kernel with
    its affine + residual epilogue); see :mod:`lsnet.ops.ska_fused` for the contract."""
    return ska_triton_forward(x, w, k, scale.contiguous(), shift.contiguous())


register_ska_backend("cuda", _ska_triton_checked)
register_ska_kernels("cuda", SKAKernels(_kernels_forward, ska_triton_backward, ska_triton_fused))


# ---------------------------------------------------------------------------- torch.compile

def _register_triton_ops() -> bool:
    """``lsnet::ska_triton`` (+ backward) and ``lsnet::ska_bn_residual_triton`` as triton_ops: under
    torch.compile inductor sees the kernels (wrap_triton) instead of an opaque call."""
    if not hasattr(torch.library, "triton_op"):  # torch < 2.6: torch.compile uses lsnet::ska
        return False
    from torch.library import triton_op, wrap_triton

    @triton_op("lsnet::ska_triton", mutates_args=())
    def _ska_triton_op(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _forward(x, w, math.isqrt(w.shape[2]), kernel=wrap_triton(_ska_fwd_kernel))

    @triton_op("lsnet::ska_triton_backward", mutates_args=())
    def _ska_triton_backward_op(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                                need_w: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        return _backward(gy, x, w, math.isqrt(w.shape[2]), need_x, need_w, kernel=wrap_triton(_ska_bwd_kernel))

    @triton_op("lsnet::ska_bn_residual_triton", mutates_args=())
    def _ska_bn_residual_triton_op(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
                                   shift: torch.Tensor) -> torch.Tensor:
        return _forward(x, w, math.isqrt(w.shape[2]), scale, shift, kernel=wrap_triton(_ska_fwd_kernel))

    register_ska_autograd(_ska_triton_op, torch.ops.lsnet.ska_triton_backward)

    if _INTERPRETED:
        # wrap_triton hands back the interpreted kernel, which cannot run on fake tensors: give
        # the ops plain fake implementations (the interpreter tests run them eagerly)
        @_ska_triton_op.register_fake
        def _(x, w):
            return torch.empty_like(x)

        @_ska_triton_backward_op.register_fake
        def _(gy, x, w, need_x, need_w):
            return (torch.empty_like(x) if need_x else x.new_empty(0),
                    torch.empty_like(w) if need_w else w.new_empty(0))

        @_ska_bn_residual_triton_op.register_fake
        def _(x, w, scale, shift):
            return torch.empty_like(x)
    return True


TRITON_OPS = _register_triton_ops()
