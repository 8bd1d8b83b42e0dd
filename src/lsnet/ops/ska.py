"""SKA (small-kernel aggregation): the dynamic depth-wise convolution of LS convolution.

For inputs ``x`` of shape (N, C, H, W) and per-pixel kernels ``w`` of shape
(N, Cw, K*K, H, W)::

    y[n, c, h, v] = sum_{i,j} x[n, c, h+i-P, v+j-P] * w[n, c mod Cw, i*K+j, h, v]

with zero padding and P = (K-1)/2. Channels c, c+Cw, c+2Cw, ... share one kernel.

Two CPU implementations live here:

* :func:`ska_reference` - ``F.unfold`` plus a broadcast multiply and a sum. Short enough
  to check by eye; it materialises an (N, C, K*K, H, W) tensor. Tests compare against it.
* :func:`ska_shift` - a shifted multiply-accumulate over the K*K taps, on a flattened padded
  grid where every tap is one contiguous slice, with a hand-written backward of the same
  form. It never builds the unfolded tensor, so it needs far less memory and is faster; it
  is the default on CPU.

``torch.ops.lsnet.ska`` (with ``torch.ops.lsnet.ska_backward``) is SKA as one dispatcher
operator for every device: the eager kernels here on the CPU, the Triton kernels on CUDA when
Triton is importable. ``torch.compile`` (on the CPU) and ``torch.jit.script`` (through
:class:`SKA`) call it instead of tracing into the kernels.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .backends import _BACKENDS, backend_for, kernels_for, register_ska_backend, ska_backend
from .checks import check_ska_shapes

__all__ = ["ska", "ska_reference", "ska_shift", "ska_functional", "check_ska_shapes", "register_ska_backend", "ska_backend", "SKA"]


def ska_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Unfold-based SKA: the plain definition, used as the ground truth in tests."""
    k = check_ska_shapes(x, w)
    n, c, h, wd = x.shape
    cw = w.shape[1]
    cols = F.unfold(x, kernel_size=k, padding=(k - 1) // 2)  # (N, C*K*K, H*W), tap-major per channel
    cols = cols.view(n, c // cw, cw, k * k, h, wd)
    # channel c = g*Cw + r uses kernel r = c mod Cw: broadcast w over the group axis g
    return (cols * w.unsqueeze(1)).sum(dim=3).reshape(n, c, h, wd)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision sums over K*K taps lose digits; accumulate them in float32
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _FlatGrid:
    """Geometry of the flattened, zero-padded grid on which every tap is a contiguous slice.

    The input is padded by P on every side plus one extra bottom row, and flattened over
    (rows, columns). Outputs are computed for all H x (W + 2P) positions of that width, the
    2P extra columns per row being junk that is cropped afterwards. Then tap (i, j) reads
    the input slice starting at ``i * (W + 2P) + j`` of length ``H * (W + 2P)``: one long
    contiguous run per tap instead of H short rows, which is what makes it fast on small maps.
    """

    def __init__(self, h: int, w: int, k: int):
        self.h, self.w, self.k, self.p = h, w, k, (k - 1) // 2
        self.row = w + 2 * self.p
        self.length = h * self.row

    def offsets(self):
        """Start of each tap's slice, in tap order t = i * K + j."""
        return [i * self.row + j for i in range(self.k) for j in range(self.k)]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., (H + 2P + 1) * (W + 2P)), zero padded."""
        p = self.p
        return F.pad(x, (p, p, p, p + 1)).flatten(-2)

    def pad_right(self, t: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., H * (W + 2P)): values on the wide grid, zeros in the junk columns."""
        return F.pad(t, (0, 2 * self.p)).flatten(-2)

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """(..., H * (W + 2P)) -> (..., H, W)."""
        return t.unflatten(-1, (self.h, self.row))[..., : self.w]


def _ska_shift_forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    n, c, h, wd = x.shape
    cw = w.shape[1]
    grid = _FlatGrid(h, wd, k)
    xp = grid.pad_input(x.contiguous()).view(n, c // cw, cw, -1)
    wp = grid.pad_right(w).unsqueeze(1)  # (N, 1, Cw, KK, L): broadcast over channel groups
    y = torch.empty(n, c // cw, cw, grid.length, dtype=_accumulate_dtype(x.dtype), device=x.device)
    for t, off in enumerate(grid.offsets()):
        src = xp[..., off: off + grid.length]
        if t == 0:
            torch.mul(src, wp[:, :, :, 0], out=y)
        else:
            y.addcmul_(src, wp[:, :, :, t])
    return grid.crop(y.view(n, c, grid.length)).to(x.dtype)


def _ska_shift_backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool, need_w: bool):
    n, c, h, wd = x.shape
    cw = w.shape[1]
    g = c // cw
    acc = _accumulate_dtype(x.dtype)
    grid = _FlatGrid(h, wd, k)
    gyp = grid.pad_right(gy).view(n, g, cw, grid.length)  # junk columns are zero: they add nothing
    grad_x = grad_w = None
    if need_x:
        # input position q received w[t, q - off_t] * gy[q - off_t]: scatter back along the same slices
        gxp = torch.zeros(n, g, cw, (h + 2 * grid.p + 1) * grid.row, dtype=acc, device=x.device)
        wp = grid.pad_right(w).unsqueeze(1)
        for t, off in enumerate(grid.offsets()):
            gxp[..., off: off + grid.length].addcmul_(gyp, wp[:, :, :, t])
        gxp = gxp.view(n, c, h + 2 * grid.p + 1, grid.row)
        grad_x = gxp[..., grid.p: grid.p + h, grid.p: grid.p + wd].to(x.dtype)
    if need_w:
        xp = grid.pad_input(x.contiguous()).view(n, g, cw, -1)
        grad_wp = torch.empty(n, cw, k * k, grid.length, dtype=acc, device=x.device)
        for t, off in enumerate(grid.offsets()):
            # channels sharing a kernel all contribute to its gradient: sum over the groups
            torch.sum(xp[..., off: off + grid.length] * gyp, dim=1, dtype=acc, out=grad_wp[:, :, t])
        grad_w = grid.crop(grad_wp).to(w.dtype)
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


# Below this many input elements the K*K small ops of the shift form cost more in dispatch
# than the unfold form's three large ones (measured by benchmarks/bench_ska.py at batch 1).
_SMALL = 16384


def ska_functional(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """SKA as out-of-place standard ops (pad, slice, multiply, add) on the flat grid.

    Used while tracing for ``torch.compile`` (which fuses it into one loop) and for ONNX
    export (every op is a standard ONNX operator); autograd differentiates it directly.
    """
    k = check_ska_shapes(x, w)
    n, c, h, wd = x.shape
    cw = w.shape[1]
    grid = _FlatGrid(h, wd, k)
    xp = grid.pad_input(x).reshape(n, c // cw, cw, -1)
    wp = grid.pad_right(w).unsqueeze(1)
    y = None
    for t, off in enumerate(grid.offsets()):
        term = xp[..., off: off + grid.length] * wp[:, :, :, t]
        y = term if y is None else y + term
    return grid.crop(y.reshape(n, c, grid.length))


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def _ska_unfold(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    # the reference's few large ops (differentiable by autograd), in the accumulation dtype
    acc = _accumulate_dtype(x.dtype)
    n, c, h, wd = x.shape
    cw = w.shape[1]
    cols = F.unfold(x.to(acc), k, padding=(k - 1) // 2).view(n, c // cw, cw, k * k, h, wd)
    return (cols * w.to(acc).unsqueeze(1)).sum(dim=3).reshape(n, c, h, wd).to(x.dtype)


def _ska_cpu(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    if x.numel() <= _SMALL:
        return _ska_unfold(x, w, k)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _SKAShift.apply(x, w)
    return _ska_shift_forward(x, w, k)  # inference: skip the autograd.Function's overhead


def _torch_forward(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """The operator's forward where no device kernels are registered (the CPU; CUDA without
    Triton): the eager kernels above, result laid out as ``torch.empty_like(x)``."""
    y = _ska_unfold(x, w, k) if x.numel() <= _SMALL else _ska_shift_forward(x, w, k)
    return _laid_out_like(y, x)


def _torch_backward(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int, need_x: bool, need_w: bool):
    grad_x, grad_w = _ska_shift_backward(gy, x, w, k, need_x, need_w)
    return (_laid_out_like(grad_x, x) if need_x else x.new_empty(0),
            _laid_out_like(grad_w, w) if need_w else w.new_empty(0))


def _laid_out_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` (a fresh result) with the strides of ``torch.empty_like(ref)``; copied only if they differ."""
    out = torch.empty_like(ref)
    return t if t.stride() == out.stride() else out.copy_(t)


# SKA as one dispatcher operator, torch.ops.lsnet.ska (with torch.ops.lsnet.ska_backward for
# autograd), for every device: registered device kernels (the Triton ones on CUDA) when there
# are any, otherwise the eager kernels above. It is what TorchScript runs (SKA.forward calls it
# when scripted) and what torch.compile sees on the CPU: one opaque operator running the eager
# kernels, because inductor's own loop for the traced ska_functional is 2.7-3.8x slower than them
# at batch 16 on LSNet-T's shapes (benchmarks/bench_ska.py --compile). On CUDA, torch.compile
# gets the Triton kernels through torch.ops.lsnet.ska_triton (a triton_op, see ska_triton.py);
# export and ONNX still trace ska_functional (standard ops only).
#
# Layout contract: y and grad_x are laid out as torch.empty_like(x) (a channels-last x gives a
# channels-last y), grad_w as torch.empty_like(w); a gradient not asked for is an empty (0,)
# tensor.
@torch.library.custom_op("lsnet::ska", mutates_args=())
def _ska_op(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    k = check_ska_shapes(x, w)
    kernels = kernels_for(x.device.type) if x.device.type != "cpu" else None
    if kernels is not None:
        return kernels.forward(x, w, k)
    return _torch_forward(x, w, k)


@_ska_op.register_fake
def _(x, w):
    check_ska_shapes(x, w)
    return torch.empty_like(x)


@torch.library.custom_op("lsnet::ska_backward", mutates_args=())
def _ska_backward_op(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                     need_w: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    k = math.isqrt(w.shape[2])
    kernels = kernels_for(x.device.type) if x.device.type != "cpu" else None
    if kernels is not None:
        return kernels.backward(gy, x, w, k, need_x, need_w)
    return _torch_backward(gy, x, w, k, need_x, need_w)


@_ska_backward_op.register_fake
def _(gy, x, w, need_x, need_w):
    return (torch.empty_like(x) if need_x else x.new_empty(0),
            torch.empty_like(w) if need_w else w.new_empty(0))


def register_ska_autograd(op, backward_op) -> None:
    """Autograd of an SKA operator ``op(x, w) -> y`` (this module's, or the Triton one) through
    its backward operator ``backward_op(gy, x, w, need_x, need_w) -> (grad_x, grad_w)``."""

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w = backward_op(gy, x, w, need_x, need_w)
        return (grad_x if need_x else None), (grad_w if need_w else None)

    op.register_autograd(backward, setup_context=setup)


register_ska_autograd(_ska_op, torch.ops.lsnet.ska_backward)


def _compiled_op(x: torch.Tensor):
    """The operator torch.compile should see for ``x``'s device: the Triton op on CUDA when the
    Triton kernels are available (inductor sees and schedules the kernels), the opaque
    ``lsnet::ska`` otherwise."""
    if x.device.type == "cuda":
        triton_op = getattr(torch.ops.lsnet, "ska_triton", None) if kernels_for("cuda") is not None else None
        if triton_op is not None:
            return triton_op
    return torch.ops.lsnet.ska


def ska_shift(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Shifted multiply-accumulate SKA with a matching hand-written backward (CPU default).

    Inputs of at most ``_SMALL`` elements take the unfold form instead, which is faster there.
    """
    return _ska_cpu(x, w, check_ska_shapes(x, w))


def ska(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Small-kernel aggregation ``y = SKA(x, w)``; see the module docstring for the definition.

    Dispatches on the device of ``x``: a registered backend when there is one, otherwise
    the shifted multiply-accumulate path, which runs anywhere PyTorch does. Under
    ``torch.compile`` it is one operator (``torch.ops.lsnet.ska``, or on CUDA the Triton op);
    under ``torch.export`` / ONNX export / ``torch.jit.trace`` it is ``ska_functional``'s
    standard operators.
    """
    k = check_ska_shapes(x, w)
    if _tracing():
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)()  # torch < 2.6 lacks it
        if torch.compiler.is_compiling() and not exporting:
            return _compiled_op(x)(x, w)
        return ska_functional(x, w)  # export, ONNX and jit.trace see plain ops
    if x.device.type == "cpu":
        fn = _BACKENDS.get("cpu")  # e.g. benchmarks routing the CPU to the reference (ska_backend)
        return _ska_cpu(x, w, k) if fn is None else fn(x, w)
    fn = backend_for(x.device.type)
    if fn is not None:
        return fn(x, w)
    return _ska_cpu(x, w, k)


class SKA(torch.nn.Module):
    """Module wrapper of :func:`ska` (no parameters), so that it appears in the model tree.

    Scriptable: under ``torch.jit.script`` its forward is the dispatcher operator
    ``torch.ops.lsnet.ska`` (differentiable, every device); otherwise it calls :func:`ska`.
    """

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return torch.ops.lsnet.ska(x, w)
        return ska(x, w)
