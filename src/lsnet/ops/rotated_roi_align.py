"""RoIAlignRotated in pure PyTorch, with mmcv's semantics (``mmcv.ops.RoIAlignRotated``).

For every roi ``(batch_index, cx, cy, w, h, angle)`` (image coordinates, scaled to the
feature map by ``spatial_scale``), the rotated rectangle is cut into ``out_h x out_w`` bins,
each bin is sampled on a regular ``grid_h x grid_w`` grid of points, every point is read by
bilinear interpolation and the bin's value is the mean of its points. In detail, as mmcv's
(and Detectron2's) kernel does:

* ``aligned=True`` shifts the centre by -0.5 (pixel centres at integer coordinates, as in
  ``torchvision.ops.roi_align(aligned=True)``); ``aligned=False`` does not shift and makes
  ``w`` and ``h`` at least 1 feature pixel.
* The grid is ``sampling_ratio`` points per bin side when it is > 0, otherwise
  ``ceil(h / out_h)`` by ``ceil(w / out_w)`` for each roi (adaptive).
* A point at local offset (xx, yy) from the centre (box axes, y down) is placed at
  ``x = xx cos(t) + yy sin(t) + cx``, ``y = -xx sin(t) + yy cos(t) + cy`` with ``t = angle``,
  or ``t = -angle`` when ``clockwise=True``. **For mmrotate's le90 boxes (angle turns
  x towards y, clockwise on screen; see** :mod:`lsnet.ops.rotated_boxes` **) pass
  ``clockwise=True``**, as mmrotate's configs do: then the sampled rectangle is exactly the
  box's, with the bin rows along its ``w`` side. The default ``clockwise=False`` is mmcv's
  default and Detectron2's counter-clockwise convention.
* Bilinear interpolation: a point with y < -1 or y > H (or x < -1, x > W) reads 0;
  otherwise coordinates are clamped into [0, H-1] x [0, W-1] and the four neighbours are
  weighted as usual.

Gradients flow into the features (the sampling is a differentiable gather); the rois are
treated as constants, as in mmcv, whose op has no roi gradient.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RotatedRoIAlign", "roi_align_rotated"]

# sample points x channels read at once: bounds the temporary per chunk of rois
_CHUNK_ELEMS = 1 << 23


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    out = tuple(int(s) for s in size)
    if len(out) != 2:
        raise ValueError(f"roi_align_rotated: output_size must be an int or (h, w), got {size!r}")
    return out


def roi_align_rotated(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
                      sampling_ratio: int = 0, aligned: bool = True, clockwise: bool = False) -> torch.Tensor:
    """Pool rotated rois from ``features`` (B, C, H, W) into (K, C, out_h, out_w).

    ``rois`` is (K, 6): ``(batch_index, cx, cy, w, h, angle)`` in input-image coordinates
    (multiplied by ``spatial_scale`` to reach the feature map), angle in radians. See the
    module docstring for the exact sampling; pass ``clockwise=True`` for le90 boxes.
    """
    if features.dim() != 4:
        raise ValueError(f"roi_align_rotated: features must be (B, C, H, W); got shape {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"roi_align_rotated: rois must be (K, 6) [batch_index, cx, cy, w, h, angle]; "
                         f"got shape {tuple(rois.shape)}")
    out_h, out_w = _pair(output_size)
    b, c, height, width = features.shape
    k = rois.shape[0]
    out = features.new_zeros(k, c, out_h, out_w)
    if k == 0 or c == 0:
        return out
    # float64 rois keep sample positions exact whatever the feature dtype
    r = rois.detach().to(device=features.device, dtype=torch.float64)
    batch = r[:, 0].long()
    if ((batch < 0) | (batch >= b)).any():
        raise ValueError(f"roi_align_rotated: batch indices must lie in [0, {b}); got "
                         f"{batch.min().item()}..{batch.max().item()}")
    offset = 0.5 if aligned else 0.0
    cx = r[:, 1] * spatial_scale - offset
    cy = r[:, 2] * spatial_scale - offset
    rw = r[:, 3] * spatial_scale
    rh = r[:, 4] * spatial_scale
    theta = -r[:, 5] if clockwise else r[:, 5]
    if not aligned:
        rw = rw.clamp(min=1.0)
        rh = rh.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(batch, sampling_ratio)
        grid_w = torch.full_like(batch, sampling_ratio)
    else:
        grid_h = torch.ceil(rh / out_h).long()
        grid_w = torch.ceil(rw / out_w).long()

    # rois with the same grid share one batched computation
    pairs = torch.stack([grid_h, grid_w], 1)
    for gh, gw in torch.unique(pairs, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # an empty roi with an adaptive grid: mmcv returns 0
        same_grid = (grid_h == gh) & (grid_w == gw)
        for image in torch.unique(batch[same_grid]).tolist():
            idx = (same_grid & (batch == image)).nonzero().squeeze(1)
            per_roi = out_h * gh * out_w * gw * c
            step = max(1, _CHUNK_ELEMS // per_roi)
            for s in range(0, idx.numel(), step):
                sel = idx[s:s + step]
                pooled = _pool(features[image], cx[sel], cy[sel], rw[sel], rh[sel], theta[sel], out_h, out_w, gh, gw)
                out[sel] = pooled.to(out.dtype)  # autocast runs grid_sample in float32 (as torchvision's roi_align)
    return out


def _pool(feature, cx, cy, rw, rh, theta, out_h, out_w, gh, gw):
    """(n, C, out_h, out_w) for n rois of one image (``feature``: (C, H, W)) sharing the
    sampling grid gh x gw."""
    n = cx.shape[0]
    c, height, width = feature.shape
    dev = feature.device
    bin_h = (rh / out_h)[:, None]
    bin_w = (rw / out_w)[:, None]
    # local offsets from the roi centre of every sample row / column, (n, out_h * gh)
    fy = (torch.arange(out_h, device=dev, dtype=torch.float64)[:, None]
          + (torch.arange(gh, device=dev, dtype=torch.float64)[None, :] + 0.5) / gh).reshape(-1)
    fx = (torch.arange(out_w, device=dev, dtype=torch.float64)[:, None]
          + (torch.arange(gw, device=dev, dtype=torch.float64)[None, :] + 0.5) / gw).reshape(-1)
    yy = -(rh / 2)[:, None] + fy[None, :] * bin_h
    xx = -(rw / 2)[:, None] + fx[None, :] * bin_w
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    yy, xx = yy[:, :, None], xx[:, None, :]  # (n, out_h*gh, 1) and (n, 1, out_w*gw)
    y = yy * cos - xx * sin + cy[:, None, None]
    x = yy * sin + xx * cos + cx[:, None, None]
    # mmcv's border rule: a point beyond one pixel outside reads 0; the others are clamped into
    # the map, which is what grid_sample's border padding does with align_corners=True (pixel
    # centres at -1 and +1). grid_sample is used because its CPU and CUDA kernels (and their
    # backward) are far faster than gathering the four neighbours by hand.
    keep = ~((y < -1.0) | (y > height) | (x < -1.0) | (x > width))
    y = y.clamp(min=0, max=height - 1)
    x = x.clamp(min=0, max=width - 1)
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
    # sample positions in float32 at least: in bfloat16 they would be off by up to a pixel on
    # large maps (grid_sample runs in float32 under autocast anyway)
    dtype = feature.dtype if feature.dtype in (torch.float32, torch.float64) else torch.float32
    grid = grid.reshape(1, n * out_h * gh, out_w * gw, 2).to(dtype)
    vals = torch.nn.functional.grid_sample(feature[None].to(dtype), grid, mode="bilinear", padding_mode="border",
                                           align_corners=True)[0]
    vals = vals * keep.reshape(1, n * out_h * gh, out_w * gw).to(dtype)
    vals = vals.reshape(c, n, out_h, gh, out_w, gw).sum(dim=(3, 5)) / (gh * gw)
    return vals.permute(1, 0, 2, 3)


class RotatedRoIAlign(nn.Module):
    """Module form of :func:`roi_align_rotated` (mmcv's ``RoIAlignRotated``); ``aligned`` is
    True as in mmcv's default. Use ``clockwise=True`` for le90 boxes."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int = 0, clockwise: bool = False,
                 aligned: bool = True):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.clockwise = bool(clockwise)
        self.aligned = bool(aligned)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align_rotated(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                                 self.aligned, self.clockwise)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, clockwise={self.clockwise}")

