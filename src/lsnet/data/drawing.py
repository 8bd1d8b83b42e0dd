"""Image helpers the tasks' drawing code shares (detections, masks, rotated boxes): a stable
colour per class, and any image (PIL, tensor, array) as an RGB array to draw on."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["palette", "to_rgb_array"]


# Golden-ratio conjugate: successive multiples mod 1 spread hues as evenly as possible
# for any prefix length, so the colour of class i does not depend on how many classes exist.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
# (saturation, value) cycled with the index: once many hues crowd together, neighbours in
# hue still differ in brightness/saturation, which keeps large palettes distinguishable.
_SV_CYCLE = ((0.90, 0.95), (0.60, 1.00), (1.00, 0.70))


def _colour_at(index: int, seed: int = 0) -> tuple[int, int, int]:
    # The seed shifts the starting hue by an irrational step so different seeds give different palettes.
    hue = (seed * 0.3819660112501051 + 0.05 + index * _GOLDEN) % 1.0
    sat, val = _SV_CYCLE[index % len(_SV_CYCLE)]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def palette(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``n`` deterministic, well-separated RGB colours (golden-ratio hues in HSV).

    The first ``k`` colours are the same whatever ``n`` is, and no colour repeats.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    colours: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int, int]] = set()
    step = 0
    while len(colours) < n:
        c = _colour_at(step, seed)
        step += 1
        # Rounding to 8 bits could in principle merge two hues for huge n; skip such repeats.
        if c not in seen:
            seen.add(c)
            colours.append(c)
    return colours


def to_rgb_array(image: Any) -> np.ndarray:
    """A fresh ``uint8`` ``[H, W, 3]`` copy of a PIL image, a ``[3|1, H, W]`` tensor or an ``HWC`` array."""
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must be [3, H, W] or [1, H, W], got {tuple(t.shape)}")
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        if t.is_floating_point():
            # Float tensors are the 0..1 images the models consume.
            t = (t.clamp(0.0, 1.0) * 255.0).round()
        return t.to(torch.uint8).permute(1, 2, 0).contiguous().numpy().copy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image array must be [H, W, 3], got {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(arr, 0.0, 1.0) * 255.0
        arr = np.clip(np.round(arr), 0, 255)
    return arr.astype(np.uint8, copy=True)
