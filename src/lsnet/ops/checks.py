"""Shape checks shared by every SKA implementation."""

from __future__ import annotations

import math

import torch

__all__ = ["check_ska_shapes"]


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
