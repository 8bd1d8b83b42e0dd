"""The fused LS-convolution inference operator: SKA, the BatchNorm affine after it and the
residual add in one call (issue 22 item 2).

In :class:`lsnet.models.lsnet.LSConv` the SKA output goes through a BatchNorm and the input is
added back: ``bn(SKA(x, w)) + x``. In eval mode the BatchNorm is a per-channel affine map, so::

    ska_affine_residual(x, w, scale, shift) = SKA(x, w) * scale[c] + shift[c] + x

with ``scale = bn.weight / sqrt(bn.running_var + bn.eps)`` and
``shift = bn.bias - bn.running_mean * scale`` (:func:`bn_scale_shift`). The operator
``torch.ops.lsnet.ska_bn_residual(x, w, scale, shift)`` computes that without writing SKA's
output to memory:

* CUDA (Triton importable): the SKA forward kernel with the affine and residual as its
  epilogue (the residual reuses the centre tap's x tile); under ``torch.compile`` the
  ``lsnet::ska_bn_residual_triton`` triton_op, whose kernel inductor sees.
* CPU (and CUDA without Triton): the shifted multiply-accumulate of :mod:`lsnet.ops.ska`, then
  one ``x + shift`` and one ``addcmul`` by ``scale`` that also crop the padded grid. Measured
  with ``benchmarks/bench_ska.py --fused`` (one thread, LSNet-T shapes, a loaded 2-core host,
  medians): 1.3-1.6x faster than the unfused ``bn(ska(x, w)) + x`` at batch 1 and 16, and
  faster than the other order (starting the sum from ``shift + x`` with a prescaled x, 10-20%
  slower: it needs a second padded buffer).

Contract: x (N, C, H, W) and w (N, Cw, K*K, H, W) as for :func:`lsnet.ops.ska` (same dtype and
device; float32, float16, bfloat16 or float64); scale and shift one-dimensional of length C,
floating point, on x's device (float32 recommended even for half-precision x: the sum, the
affine and the residual are computed in float32, float64 for float64 x, and rounded once).
The result has x's dtype and is laid out like ``torch.empty_like(x)`` (channels-last in,
channels-last out). Inference only: the operator has no backward (its autograd formula raises);
:func:`ska_affine_residual` falls back to the unfused, differentiable composition when a
gradient is required.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from .backends import kernels_for
from .checks import check_ska_shapes
from .ska import _FlatGrid, _accumulate_dtype, _laid_out_like, _ska_unfold, _tracing, ska

__all__ = ["ska_affine_residual", "bn_scale_shift"]


def bn_scale_shift(bn: torch.nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), float32 (float64 for a float64 BatchNorm) vectors of length C, of an eval-mode BatchNorm: bn(t) = t * scale + shift
    (constants: computed without autograd)."""
    with torch.no_grad():
        return _bn_scale_shift(bn)


def _bn_scale_shift(bn: torch.nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.float64 if bn.running_var.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -bn.running_mean.to(dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return scale.contiguous(), shift.contiguous()


# Up to this many input elements the fused CPU path sums with the unfold form, above with the
# shifted form: the fused shifted form already beats the unfold one at 128 x 7 x 7 and
# 64 x 8 x 8, batch 1, one thread (benchmarks: 0.134 vs 0.148 ms, 0.120 vs 0.117 ms), the
# unfold one wins at 16 x 5 x 7 (0.047 vs 0.095 ms).
_FUSED_SMALL = 4096


def _check_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
    c = x.shape[1]
    for name, t in (("scale", scale), ("shift", shift)):
        if t.dim() != 1 or t.shape[0] != c:
            raise ValueError(f"ska_bn_residual: {name} must be a vector of length C={c}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"ska_bn_residual: {name} must be floating point, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"ska_bn_residual: {name} must be on x's device {x.device}, got {t.device}")


def _cpu_epilogue(x: torch.Tensor, w: torch.Tensor, k: int, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shifted multiply-accumulate on the flat grid, then ``(x + shift) + acc * scale`` in two
    passes that also crop the grid's junk columns and write the result in x's layout."""
    n, c, h, wd = x.shape
    cw = w.shape[1]
    acc_dtype = _accumulate_dtype(x.dtype)
    if x.numel() <= _FUSED_SMALL:
        acc = _ska_unfold_acc(x, w, k, acc_dtype)
    else:
        grid = _FlatGrid(h, wd, k)
        xp = grid.pad_input(x.contiguous()).view(n, c // cw, cw, -1)
        wp = grid.pad_right(w).unsqueeze(1)
        flat = torch.empty(n, c // cw, cw, grid.length, dtype=acc_dtype, device=x.device)
        for t, off in enumerate(grid.offsets()):
            src = xp[..., off: off + grid.length]
            if t == 0:
                torch.mul(src, wp[:, :, :, 0], out=flat)
            else:
                flat.addcmul_(src, wp[:, :, :, t])
        acc = grid.crop(flat.view(n, c, grid.length))
    scale = scale.to(acc_dtype).view(c, 1, 1)
    shift = shift.to(acc_dtype).view(c, 1, 1)
    if acc_dtype == x.dtype:
        out = torch.empty_like(x)
        torch.add(x, shift, out=out)
        return out.addcmul_(acc, scale)
    return _laid_out_like(torch.add(x, shift).addcmul_(acc, scale).to(x.dtype), x)


def _ska_unfold_acc(x: torch.Tensor, w: torch.Tensor, k: int, acc_dtype: torch.dtype) -> torch.Tensor:
    if acc_dtype == x.dtype:
        return _ska_unfold(x, w, k)
    return _ska_unfold(x.to(acc_dtype), w.to(acc_dtype), k)


def _cpu_prescaled(x: torch.Tensor, w: torch.Tensor, k: int, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The other order: start the sum from ``shift + x`` on the flat grid and accumulate the
    products of ``w`` with ``x * scale`` (scaled while padding). Kept for the measurement in
    ``benchmarks/bench_ska.py --fused``; the operator uses :func:`_cpu_epilogue`."""
    n, c, h, wd = x.shape
    cw = w.shape[1]
    acc_dtype = _accumulate_dtype(x.dtype)
    grid = _FlatGrid(h, wd, k)
    p = grid.p
    xa = x.to(acc_dtype)
    scale = scale.to(acc_dtype).view(c, 1, 1)
    shift = shift.to(acc_dtype).view(c, 1, 1)
    xs = torch.zeros(n, c, h + 2 * p + 1, grid.row, dtype=acc_dtype, device=x.device)
    torch.mul(xa, scale, out=xs[:, :, p: p + h, p: p + wd])
    xs = xs.view(n, c // cw, cw, -1)
    flat = torch.empty(n, c, h, grid.row, dtype=acc_dtype, device=x.device)
    flat[..., wd:].zero_()
    torch.add(xa, shift, out=flat[..., :wd])
    flat = flat.view(n, c // cw, cw, grid.length)
    wp = grid.pad_right(w).unsqueeze(1)
    for t, off in enumerate(grid.offsets()):
        flat.addcmul_(xs[..., off: off + grid.length], wp[:, :, :, t])
    return _laid_out_like(grid.crop(flat.view(n, c, grid.length)).to(x.dtype), x)


def _fused_eager(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    check_ska_shapes(x, w)
    _check_affine(x, scale, shift)
    return _fused_unchecked(x, w, scale, shift)


def _fused_unchecked(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    k = math.isqrt(w.shape[2])
    if x.device.type != "cpu":
        kernels = kernels_for(x.device.type)
        fused = getattr(kernels, "fused", None) if kernels is not None else None
        if fused is not None:
            return fused(x, w, k, scale, shift)
    return _cpu_epilogue(x, w, k, scale, shift)


@torch.library.custom_op("lsnet::ska_bn_residual", mutates_args=())
def _ska_bn_residual_op(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    # The operator trusts its arguments (no Python-side checks per call: host time matters at
    # small batches on a GPU); ska_affine_residual and the fake implementation validate them.
    return _fused_unchecked(x, w, scale, shift)


@_ska_bn_residual_op.register_fake
def _(x, w, scale, shift):
    check_ska_shapes(x, w)
    _check_affine(x, scale, shift)
    return torch.empty_like(x)


def _no_backward(ctx, gy):
    raise RuntimeError("lsnet::ska_bn_residual is an inference operator and has no backward; for training use "
                       "ska(x, w) followed by the BatchNorm and the residual add (lsnet.ops.ska_affine_residual "
                       "does so by itself when a gradient is required)")


_ska_bn_residual_op.register_autograd(_no_backward)


def _unfused(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return ska(x, w) * scale.view(c, 1, 1).to(x.dtype) + shift.view(c, 1, 1).to(x.dtype) + x


def ska_affine_residual(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``SKA(x, w) * scale[c] + shift[c] + x`` in one pass: an eval-mode LS convolution after LKP.

    ``scale`` and ``shift`` are the following BatchNorm's affine (:func:`bn_scale_shift`). See
    the module docstring for the full contract (shapes, dtypes, layout, inference only). When a
    gradient is required (autograd on and x, w, scale or shift requiring it) this computes the
    unfused composition instead, which is differentiable. Under ``torch.export`` / ONNX export
    the unfused composition is traced (standard operators); under ``torch.compile`` the fused
    operator is one node (on CUDA with Triton the triton_op, whose kernel inductor sees).
    """
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or scale.requires_grad
                                    or shift.requires_grad):
        return _unfused(x, w, scale, shift)
    if _tracing():
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
        if not torch.compiler.is_compiling() or exporting:
            return _unfused(x, w, scale, shift)
        if x.device.type == "cuda" and kernels_for("cuda") is not None:
            op = getattr(torch.ops.lsnet, "ska_bn_residual_triton", None)
            if op is not None:
                return op(x, w, scale, shift)
        return torch.ops.lsnet.ska_bn_residual(x, w, scale, shift)
    return _fused_eager(x, w, scale, shift)  # eager: the operator's body without the dispatcher

