"""Rotated (oriented) boxes in pure PyTorch: conversions, exact IoU, NMS and box coders.

Convention (mmrotate's ``le90``; all functions here use it):

* A box is ``(cx, cy, w, h, angle)`` in image coordinates (x to the right, **y down**),
  ``angle`` in radians in ``[-pi/2, pi/2)``.
* A positive angle turns the x axis towards the y axis, which on screen (y down) is
  **clockwise**. The corners are ``center + R(angle) @ (+-w/2, +-h/2)`` with
  ``R = [[cos, -sin], [sin, cos]]``, so ``w`` is the side along the direction
  ``(cos(angle), sin(angle))`` and ``h`` the side across it.
* mmrotate's le90 boxes also have ``w >= h``: ``poly2obb_le90``, the edge-swapping decoder
  and mmrotate 1.x's ``regularize_boxes('le90')`` (``width_longer=True``) all make the longer
  side ``w``. :func:`norm_angle_le90` does the same. Functions that take boxes accept any
  ``(cx, cy, w, h, angle)`` (any angle, ``w < h``): they only use the rectangle it describes.

Shapes are batched (``[..., 5]`` boxes, ``[..., 8]`` polygons) where it makes sense; the
IoU and NMS functions take (N, 5) boxes. Nothing here needs a compiled extension, so it
runs on CPU and GPU alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "DeltaXYWHAOBBoxCoder",
    "MidpointOffsetCoder",
    "batched_nms_rotated",
    "box_area_rotated",
    "box_iou_rotated",
    "hbox_to_obb",
    "nms_rotated",
    "norm_angle",
    "norm_angle_le90",
    "obb_to_hbox",
    "obb_to_poly",
    "poly_to_obb",
]

_HALF_PI = math.pi / 2


def _check_last(t: torch.Tensor, n: int, fn: str, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(t).__name__}")
    if t.dim() == 0 or t.shape[-1] != n:
        raise ValueError(f"{fn}: {name} must have a last dimension of {n}; got shape {tuple(t.shape)}")


def _check_2d(t: torch.Tensor, n: int, fn: str, name: str) -> None:
    _check_last(t, n, fn, name)
    if t.dim() != 2:
        raise ValueError(f"{fn}: {name} must be 2-D (N, {n}); got shape {tuple(t.shape)}")


def norm_angle(angle: torch.Tensor, angle_range: str = "le90") -> torch.Tensor:
    """Wrap angles (radians) into ``[-pi/2, pi/2)`` ('le90'), ``[-pi/4, 3pi/4)`` ('le135')
    or leave them as they are ('oc'), as mmrotate's ``norm_angle`` does."""
    if angle_range == "oc":
        return angle
    if angle_range == "le90":
        start = -_HALF_PI
    elif angle_range == "le135":
        start = -math.pi / 4
    else:
        raise ConfigError(f"angle_range must be 'le90', 'le135' or 'oc', not {angle_range!r}")
    out = torch.remainder(angle - start, math.pi) + start
    # remainder of a tiny negative number rounds up to exactly pi: fold that back to the start
    return torch.where(out >= start + math.pi, out - math.pi, out)


def norm_angle_le90(boxes: torch.Tensor) -> torch.Tensor:
    """Regularise any ``(cx, cy, w, h, angle)`` boxes ``[..., 5]`` to le90: ``w >= h`` and
    angle in ``[-pi/2, pi/2)``, describing the same rectangle.

    When ``h > w`` the sides are swapped and the angle turned by pi/2; then the angle is
    wrapped modulo pi (a rectangle is unchanged by a half turn). Squares keep their angle
    (mmrotate 1.x swaps when ``w <= h``, which turns a square by pi/2 on every call; the
    rectangle is the same either way, but this version is idempotent).
    """
    _check_last(boxes, 5, "norm_angle_le90", "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    swap = h > w
    w2 = torch.where(swap, h, w)
    h2 = torch.where(swap, w, h)
    a2 = norm_angle(torch.where(swap, a + _HALF_PI, a), "le90")
    return torch.stack([cx, cy, w2, h2, a2], dim=-1)


def obb_to_poly(boxes: torch.Tensor) -> torch.Tensor:
    """Corners ``[..., 8]`` = (x1, y1, ..., x4, y4) of boxes ``[..., 5]``.

    The corners are the box's local points (-w/2, -h/2), (w/2, -h/2), (w/2, h/2),
    (-w/2, h/2), rotated by ``angle`` and moved to the centre (mmrotate's order): with y
    down that is top-left, top-right, bottom-right, bottom-left of the unrotated box, a
    clockwise walk on screen.
    """
    _check_last(boxes, 5, "obb_to_poly", "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    # the half-axes: along the box's w side and along its h side
    ux, uy = cos * w / 2, sin * w / 2
    vx, vy = -sin * h / 2, cos * h / 2
    corners = [
        (cx - ux - vx, cy - uy - vy),
        (cx + ux - vx, cy + uy - vy),
        (cx + ux + vx, cy + uy + vy),
        (cx - ux + vx, cy - uy + vy),
    ]
    return torch.stack([c for xy in corners for c in xy], dim=-1)


def poly_to_obb(polys: torch.Tensor) -> torch.Tensor:
    """le90 boxes ``[..., 5]`` of quadrilaterals ``[..., 8]``, as mmrotate's ``poly2obb_le90``.

    The polygon is read as a rectangle: the centre is the midpoint of the diagonal p1-p3,
    the sides are the edges p1-p2 and p2-p3; the longer one is ``w`` and gives the angle
    (the direction p1->p2, or p1->p4 when p2-p3 is the longer or equal one), wrapped into
    ``[-pi/2, pi/2)`` (a direction and its opposite describe the same rectangle). For a
    quadrilateral that is not a rectangle this is mmrotate's approximation, not a fit.
    """
    _check_last(polys, 8, "poly_to_obb", "polys")
    x1, y1, x2, y2, x3, y3, x4, y4 = polys.unbind(-1)
    edge1 = torch.hypot(x2 - x1, y2 - y1)
    edge2 = torch.hypot(x3 - x2, y3 - y2)
    angle1 = torch.atan2(y2 - y1, x2 - x1)
    angle2 = torch.atan2(y4 - y1, x4 - x1)
    first = edge1 > edge2
    angle = norm_angle(torch.where(first, angle1, angle2), "le90")
    w = torch.maximum(edge1, edge2)
    h = torch.minimum(edge1, edge2)
    return torch.stack([(x1 + x3) / 2, (y1 + y3) / 2, w, h, angle], dim=-1)


def hbox_to_obb(hboxes: torch.Tensor) -> torch.Tensor:
    """Axis-aligned boxes ``[..., 4]`` (x1, y1, x2, y2) as rotated boxes with angle 0.

    The result keeps ``w`` along x even when it is the shorter side (the same rectangle;
    apply :func:`norm_angle_le90` for ``w >= h``)."""
    _check_last(hboxes, 4, "hbox_to_obb", "hboxes")
    x1, y1, x2, y2 = hboxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, torch.zeros_like(x1)], dim=-1)


def obb_to_hbox(boxes: torch.Tensor) -> torch.Tensor:
    """The smallest axis-aligned box ``[..., 4]`` (x1, y1, x2, y2) enclosing each rotated box."""
    _check_last(boxes, 5, "obb_to_hbox", "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a).abs(), torch.sin(a).abs()
    dx = (w * cos + h * sin) / 2
    dy = (w * sin + h * cos) / 2
    return torch.stack([cx - dx, cy - dy, cx + dx, cy + dy], dim=-1)


def box_area_rotated(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``[...]`` of boxes ``[..., 5]`` (``w * h``)."""
    _check_last(boxes, 5, "box_area_rotated", "boxes")
    return boxes[..., 2] * boxes[..., 3]


# ----------------------------------------------------------------------------------------
# Exact intersection of rotated rectangles
# ----------------------------------------------------------------------------------------

# Pairs of boxes handled at once by the polygon code; each pair holds about 3 KB of
# float64 temporaries. On the CPU small chunks stay in cache (4096 pairs ran 1.5-2x faster
# per pair than 32768 on the project's machine); on a GPU large ones amortise the ~100
# kernel launches per chunk.
_PAIR_CHUNK_CPU = 1 << 12
_PAIR_CHUNK_GPU = 1 << 18


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _local_corners(boxes: torch.Tensor, origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner x and y (P, 4) of (P, 5) boxes, relative to ``origin`` (P, 2)."""
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    # local signs of the corners in obb_to_poly's order
    su = boxes.new_tensor([-1.0, 1.0, 1.0, -1.0])
    sv = boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])
    hw, hh = (w / 2)[:, None], (h / 2)[:, None]
    x = (cx - origin[:, 0])[:, None] + su * hw * cos[:, None] - sv * hh * sin[:, None]
    y = (cy - origin[:, 1])[:, None] + su * hw * sin[:, None] + sv * hh * cos[:, None]
    return x, y


def _inside(px, py, boxes, origin, tol):
    """Whether points (P, K) lie in the boxes (P, 5) (relative to ``origin``), borders
    included up to ``tol`` (P, 1): project onto the box's own axes."""
    cx, cy, w, h, a = boxes.unbind(-1)
    dx = px - (cx - origin[:, 0])[:, None]
    dy = py - (cy - origin[:, 1])[:, None]
    cos, sin = torch.cos(a)[:, None], torch.sin(a)[:, None]
    along = dx * cos + dy * sin
    across = -dx * sin + dy * cos
    return (along.abs() <= (w / 2)[:, None] + tol) & (across.abs() <= (h / 2)[:, None] + tol)


def _intersection_area(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Exact area (P,) of the intersection of paired float64 rectangles (P, 5).

    The intersection of two convex polygons is the convex polygon whose vertices are the
    corners of each rectangle inside the other plus the crossings of their edges. All 24
    candidates (4 + 4 corners, 16 edge pairs) are computed at once with a validity mask;
    the valid ones are sorted by angle around their mean (a point inside the convex
    polygon) and the shoelace formula gives the area. Invalid slots are replaced by the
    first sorted vertex, which adds zero-area terms. Duplicated vertices (touching or
    identical boxes) also add nothing. Coordinates are taken relative to the first box's
    centre so that large image coordinates do not cost precision.
    """
    origin = b1[:, :2]
    x1, y1 = _local_corners(b1, origin)
    x2, y2 = _local_corners(b2, origin)
    scale = torch.maximum(b1[:, 2:4].abs().amax(-1), b2[:, 2:4].abs().amax(-1))
    scale = scale + (b2[:, :2] - origin).abs().amax(-1)
    tol = (1e-9 * (1.0 + scale))[:, None]
    in1 = _inside(x1, y1, b2, origin, tol)  # corners of box 1 inside box 2
    in2 = _inside(x2, y2, b1, origin, tol)

    # edge i of box 1: p + t r (t in [0, 1]); edge j of box 2: q + u s (u in [0, 1])
    rx, ry = x1.roll(-1, 1) - x1, y1.roll(-1, 1) - y1
    sx, sy = x2.roll(-1, 1) - x2, y2.roll(-1, 1) - y2
    qpx = x2[:, None, :] - x1[:, :, None]  # (P, 4 edges of 1, 4 edges of 2)
    qpy = y2[:, None, :] - y1[:, :, None]
    rx_, ry_ = rx[:, :, None], ry[:, :, None]
    sx_, sy_ = sx[:, None, :], sy[:, None, :]
    denom = _cross(rx_, ry_, sx_, sy_)
    # parallel (or zero-length) edges never cross at one point; their shared stretch, if
    # any, is bounded by corners that the inside tests already catch
    crossing = denom.abs() > 1e-12 * (rx_.abs() + ry_.abs()) * (sx_.abs() + sy_.abs())
    safe = torch.where(crossing, denom, torch.ones_like(denom))
    t = _cross(qpx, qpy, sx_, sy_) / safe
    u = _cross(qpx, qpy, rx_, ry_) / safe
    eps = 1e-12
    crossing = crossing & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    ix = x1[:, :, None] + t * rx_
    iy = y1[:, :, None] + t * ry_

    n = b1.shape[0]
    px = torch.cat([x1, x2, ix.reshape(n, 16)], dim=1)  # (P, 24)
    py = torch.cat([y1, y2, iy.reshape(n, 16)], dim=1)
    valid = torch.cat([in1, in2, crossing.reshape(n, 16)], dim=1)
    count = valid.sum(1)
    vf = valid.to(px.dtype)
    mx = (px * vf).sum(1, keepdim=True) / count.clamp(min=1)[:, None]
    my = (py * vf).sum(1, keepdim=True) / count.clamp(min=1)[:, None]
    ang = torch.atan2(py - my, px - mx)
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))  # invalid ones sort last
    order = ang.argsort(dim=1)
    px = px.gather(1, order) - mx
    py = py.gather(1, order) - my
    valid = valid.gather(1, order)
    px = torch.where(valid, px, px[:, :1])
    py = torch.where(valid, py, py[:, :1])
    area = _cross(px, py, px.roll(-1, 1), py.roll(-1, 1)).sum(1).abs() / 2
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _pair_iou(b1: torch.Tensor, b2: torch.Tensor, mode: str) -> torch.Tensor:
    """IoU (or IoF) of paired float64 boxes (P, 5), in chunks of pairs."""
    out = b1.new_zeros(b1.shape[0])
    chunk = _PAIR_CHUNK_CPU if b1.device.type == "cpu" else _PAIR_CHUNK_GPU
    for s in range(0, b1.shape[0], chunk):
        p, q = b1[s:s + chunk], b2[s:s + chunk]
        area1 = p[:, 2] * p[:, 3]
        area2 = q[:, 2] * q[:, 3]
        inter = torch.minimum(_intersection_area(p, q), torch.minimum(area1, area2))
        denom = area1 if mode == "iof" else area1 + area2 - inter
        ok = denom > 0
        out[s:s + chunk] = torch.where(ok, inter / torch.where(ok, denom, torch.ones_like(denom)),
                                             torch.zeros_like(inter))
    return out


def _may_overlap(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """(N, M) mask of pairs whose circumscribed circles meet and whose areas are positive:
    every other pair has IoU 0 and skips the polygon code."""
    r1 = torch.hypot(b1[:, 2], b1[:, 3])[:, None] / 2
    r2 = torch.hypot(b2[:, 2], b2[:, 3])[None, :] / 2
    d2 = (b1[:, None, 0] - b2[None, :, 0]) ** 2 + (b1[:, None, 1] - b2[None, :, 1]) ** 2
    pos = (b1[:, 2] * b1[:, 3] > 0)[:, None] & (b2[:, 2] * b2[:, 3] > 0)[None, :]
    return (d2 <= (r1 + r2) ** 2 * (1 + 1e-9)) & pos


# pairs of the (N, M) candidate mask built at once (whole rows): bounds the mask's float64
# temporaries and the gathered candidate boxes of one block
_ROW_CHUNK_ELEMS = 1 << 18


def _candidate_blocks(b1: torch.Tensor, b2: torch.Tensor, upper: bool = False,
                      groups: torch.Tensor | None = None):
    """Yield, row block by row block, the indices (i, j) of the pairs that may overlap;
    ``upper`` keeps only j > i (b1 is b2), ``groups`` only pairs of the same group. The
    caller computes each block's IoUs before the next, so memory stays bounded."""
    m = b2.shape[0]
    rows = max(1, _ROW_CHUNK_ELEMS // max(m, 1))
    cols = torch.arange(m, device=b1.device)
    for s in range(0, b1.shape[0], rows):
        mask = _may_overlap(b1[s:s + rows], b2)
        if upper:
            mask &= cols[None, :] > torch.arange(s, s + mask.shape[0], device=b1.device)[:, None]
        if groups is not None:
            mask &= groups[s:s + rows, None] == groups[None, :]
        i, j = mask.nonzero(as_tuple=True)
        if i.numel():
            yield i + s, j


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor, aligned: bool = False,
                    mode: str = "iou") -> torch.Tensor:
    """Exact IoU of rotated rectangles: (N, M) for all pairs, or (N,) when ``aligned``
    (then ``boxes1[i]`` pairs with ``boxes2[i]`` and N must equal M).

    Boxes are (N, 5) / (M, 5) ``(cx, cy, w, h, angle)``; any angle and any ``w``/``h``
    order describe a rectangle, so le90 is not required. The intersection is computed
    exactly (convex polygon clipping, see :func:`_intersection_area`) in float64 whatever
    the input dtype; the result has the input's floating dtype. Boxes with zero area have
    IoU 0 with everything (no NaN), as have pairs whose circumscribed circles do not
    meet (skipped before the polygon code, which is what makes sparse scenes fast).
    ``mode='iof'`` divides by the area of ``boxes1`` instead of the union (mmcv's option).
    Not differentiable: it is meant for matching and NMS, and runs under ``no_grad``.
    """
    _check_2d(boxes1, 5, "box_iou_rotated", "boxes1")
    _check_2d(boxes2, 5, "box_iou_rotated", "boxes2")
    if mode not in ("iou", "iof"):
        raise ConfigError(f"box_iou_rotated: mode must be 'iou' or 'iof', not {mode!r}")
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    if not out_dtype.is_floating_point:
        out_dtype = torch.get_default_dtype()
    with torch.no_grad():
        b1, b2 = boxes1.to(torch.float64), boxes2.to(torch.float64)
        if aligned:
            if b1.shape[0] != b2.shape[0]:
                raise ValueError(f"box_iou_rotated: aligned=True needs as many boxes1 as boxes2; "
                                 f"got {b1.shape[0]} and {b2.shape[0]}")
            return _pair_iou(b1, b2, mode).to(out_dtype)
        out = b1.new_zeros(b1.shape[0], b2.shape[0])
        for i, j in _candidate_blocks(b1, b2):
            out[i, j] = _pair_iou(b1[i], b2[j], mode)
        return out.to(out_dtype)


# ----------------------------------------------------------------------------------------
# NMS
# ----------------------------------------------------------------------------------------

def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                groups: torch.Tensor | None) -> torch.Tensor:
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    with torch.no_grad():
        # stable: among equal scores the lower index comes first
        order = torch.sort(scores.detach(), descending=True, stable=True).indices
        b = boxes.detach().to(torch.float64)[order]
        g = groups[order] if groups is not None else None
        # only pairs (a, c) with a before c in score order can suppress; IoU only for
        # pairs that may overlap, so the work follows the overlaps, not N^2
        src, dst = [], []
        for a, c in _candidate_blocks(b, b, upper=True, groups=g):
            hit = _pair_iou(b[a], b[c], "iou") > iou_threshold
            src.append(a[hit].cpu().numpy())
            dst.append(c[hit].cpu().numpy())
        src = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
        dst = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    # edges come out of _candidate_blocks sorted by source row; greedy over those sources
    alive = np.ones(n, dtype=bool)
    if src.size:
        starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
        ends = np.r_[starts[1:], src.size]
        for s, e in zip(starts.tolist(), ends.tolist()):
            if alive[src[s]]:
                alive[dst[s:e]] = False
    keep = torch.from_numpy(np.flatnonzero(alive)).to(device)
    return order[keep]


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of rotated boxes (N, 5) with scores (N,), as ``torchvision.ops.nms``:
    take the highest-scoring box, drop every remaining box whose IoU with it is greater
    than ``iou_threshold``, repeat. Returns the kept indices (int64) by decreasing score
    (equal scores: lower index first).

    The IoU is :func:`box_iou_rotated`'s exact one, computed once for the pairs that can
    overlap; the greedy pass then runs on the CPU over the suppressing pairs only.
    """
    _check_2d(boxes, 5, "nms_rotated", "boxes")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"nms_rotated: scores must be (N,) for boxes (N, 5); got {tuple(scores.shape)} "
                         f"and {tuple(boxes.shape)}")
    return _greedy_nms(boxes, scores, float(iou_threshold), None)


def batched_nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                        iou_threshold: float) -> torch.Tensor:
    """NMS within each category ``idxs`` (N,) (boxes of different categories never
    suppress each other); kept indices by decreasing score.

    Instead of torchvision's coordinate offset (which changes the coordinates, and so the
    last bits of the IoU), pairs of different categories are masked out of the candidate
    pairs: the result is exactly that of :func:`nms_rotated` run per category and merged
    by score.
    """
    _check_2d(boxes, 5, "batched_nms_rotated", "boxes")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0] or idxs.shape != scores.shape:
        raise ValueError(f"batched_nms_rotated: scores and idxs must be (N,) for boxes (N, 5); got "
                         f"{tuple(scores.shape)}, {tuple(idxs.shape)} and {tuple(boxes.shape)}")
    return _greedy_nms(boxes, scores, float(iou_threshold), idxs.to(boxes.device))


# ----------------------------------------------------------------------------------------
# Box coders
# ----------------------------------------------------------------------------------------

class MidpointOffsetCoder:
    """Oriented R-CNN's midpoint-offset coder (Xie et al., ICCV 2021; mmrotate's
    ``MidpointOffsetCoder``): horizontal proposals (x1, y1, x2, y2) against rotated targets.

    A target box is described by its horizontal enclosing box (centre gx, gy, size gw, gh)
    and two offsets: ``da = (ga - gx) / gw`` with ``ga`` the x of the box's top vertex (the
    one with the smallest y), and ``db = (gb - gy) / gh`` with ``gb`` the y of its rightmost
    vertex. Where two vertices are equally high (or equally far right) within 0.1 pixel,
    the one with the larger x (larger y) counts, as in mmrotate; an axis-aligned box thus
    has da = db = 0.5. Deltas are ``(dx, dy, dw, dh, da, db)`` with the usual
    ``dx = (gx - px) / pw``, ``dw = log(gw / pw)``, then ``(delta - means) / stds``.

    Decoding rebuilds the parallelogram with vertices (ga, y1), (x2, gb), (2gx - ga, y2),
    (x1, 2gy - gb), stretches its half-diagonals to the longest one (a parallelogram with
    equal diagonals is a rectangle) and reads it with :func:`poly_to_obb`, giving le90 boxes.
    """

    def __init__(self, target_means: Sequence[float] = (0.0,) * 6,
                 target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5), angle_range: str = "le90"):
        if angle_range != "le90":
            raise ConfigError(f"MidpointOffsetCoder: only angle_range='le90' is implemented, not {angle_range!r}")
        if len(target_means) != 6 or len(target_stds) != 6:
            raise ConfigError("MidpointOffsetCoder: target_means and target_stds need 6 values each")
        self.means = tuple(float(v) for v in target_means)
        self.stds = tuple(float(v) for v in target_stds)
        self.angle_range = angle_range

    def encode(self, proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Deltas ``[..., 6]`` that take horizontal ``proposals [..., 4]`` to ``gt [..., 5]``."""
        _check_last(proposals, 4, "MidpointOffsetCoder.encode", "proposals")
        _check_last(gt, 5, "MidpointOffsetCoder.encode", "gt")
        px = (proposals[..., 0] + proposals[..., 2]) / 2
        py = (proposals[..., 1] + proposals[..., 3]) / 2
        pw = proposals[..., 2] - proposals[..., 0]
        ph = proposals[..., 3] - proposals[..., 1]
        hb = obb_to_hbox(gt)
        poly = obb_to_poly(gt)
        xs, ys = poly[..., 0::2], poly[..., 1::2]
        gx = (hb[..., 0] + hb[..., 2]) / 2
        gy = (hb[..., 1] + hb[..., 3]) / 2
        gw = hb[..., 2] - hb[..., 0]
        gh = hb[..., 3] - hb[..., 1]
        neg = torch.full_like(xs, -math.inf)
        top = (ys - ys.amin(-1, keepdim=True)).abs() <= 0.1
        ga = torch.where(top, xs, neg).amax(-1)
        right = (xs - xs.amax(-1, keepdim=True)).abs() <= 0.1
        gb = torch.where(right, ys, neg).amax(-1)
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph),
                              (ga - gx) / gw, (gb - gy) / gh], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, proposals: torch.Tensor, deltas: torch.Tensor, max_shape=None,
               wh_ratio_clip: float = 16 / 1000) -> torch.Tensor:
        """le90 boxes ``[..., 5]`` from horizontal ``proposals [..., 4]`` and ``deltas [..., 6]``.

        ``dw`` and ``dh`` are clipped to ``|log(wh_ratio_clip)|`` and ``da``, ``db`` to
        [-0.5, 0.5]. ``max_shape`` is accepted for mmdet's interface and ignored, as in
        mmrotate: clipping a rotated box to the image would change its shape.
        """
        del max_shape
        _check_last(proposals, 4, "MidpointOffsetCoder.decode", "proposals")
        _check_last(deltas, 6, "MidpointOffsetCoder.decode", "deltas")
        d = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dx, dy, dw, dh, da, db = d.unbind(-1)
        max_ratio = abs(math.log(wh_ratio_clip))
        dw = dw.clamp(-max_ratio, max_ratio)
        dh = dh.clamp(-max_ratio, max_ratio)
        da = da.clamp(-0.5, 0.5)
        db = db.clamp(-0.5, 0.5)
        px = (proposals[..., 0] + proposals[..., 2]) / 2
        py = (proposals[..., 1] + proposals[..., 3]) / 2
        pw = proposals[..., 2] - proposals[..., 0]
        ph = proposals[..., 3] - proposals[..., 1]
        gw, gh = pw * dw.exp(), ph * dh.exp()
        gx, gy = px + pw * dx, py + ph * dy
        # vertices relative to the centre: top, right, bottom, left (the last two mirrored)
        vx = torch.stack([da * gw, gw / 2, -da * gw, -gw / 2], dim=-1)
        vy = torch.stack([-gh / 2, db * gh, gh / 2, -db * gh], dim=-1)
        length = torch.hypot(vx, vy)
        longest = length.amax(-1, keepdim=True)
        stretch = torch.where(length > 0, longest / torch.where(length > 0, length, torch.ones_like(length)),
                              torch.ones_like(length))
        vx = vx * stretch + gx[..., None]
        vy = vy * stretch + gy[..., None]
        return poly_to_obb(torch.stack([vx, vy], dim=-1).flatten(-2))


class DeltaXYWHAOBBoxCoder:
    """mmrotate's ``DeltaXYWHAOBBoxCoder``: rotated proposals ``(px, py, pw, ph, pa)`` against
    rotated targets, deltas ``(dx, dy, dw, dh, da)``, then ``(delta - means) / stds``.

    * ``proj_xy``: the centre offset is measured in the proposal's own frame,
      ``dx = ((gx - px) cos(pa) + (gy - py) sin(pa)) / pw`` and
      ``dy = (-(gx - px) sin(pa) + (gy - py) cos(pa)) / ph``; else ``dx = (gx - px) / pw``.
    * ``edge_swap``: the target is read either as given or with its sides swapped and
      angle turned by pi/2, whichever gives the smaller ``|norm_angle(ga - pa)|``; decoding
      then makes the longer side ``w`` (turning the angle by pi/2 where it swaps).
    * ``da = norm_angle(ga - pa)`` in ``angle_range``, divided by ``norm_factor * pi``
      when ``norm_factor`` is set; ``dw = log(gw / pw)``.

    Decoding clips ``dw``, ``dh`` to ``|log(wh_ratio_clip)|`` and, with ``max_shape``
    (H, W, ...), the centre to ``[0, W-1] x [0, H-1]``.
    """

    def __init__(self, target_means: Sequence[float] = (0.0,) * 5,
                 target_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2, 0.1), angle_range: str = "le90",
                 norm_factor: float | None = None, edge_swap: bool = True, proj_xy: bool = True):
        norm_angle(torch.zeros(1), angle_range)  # validates the name
        if len(target_means) != 5 or len(target_stds) != 5:
            raise ConfigError("DeltaXYWHAOBBoxCoder: target_means and target_stds need 5 values each")
        self.means = tuple(float(v) for v in target_means)
        self.stds = tuple(float(v) for v in target_stds)
        self.angle_range = angle_range
        self.norm_factor = norm_factor
        self.edge_swap = bool(edge_swap)
        self.proj_xy = bool(proj_xy)

    def encode(self, proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Deltas ``[..., 5]`` that take rotated ``proposals [..., 5]`` to ``gt [..., 5]``."""
        _check_last(proposals, 5, "DeltaXYWHAOBBoxCoder.encode", "proposals")
        _check_last(gt, 5, "DeltaXYWHAOBBoxCoder.encode", "gt")
        px, py, pw, ph, pa = proposals.unbind(-1)
        gx, gy, gw, gh, ga = gt.unbind(-1)
        if self.proj_xy:
            cos, sin = torch.cos(pa), torch.sin(pa)
            dx = (cos * (gx - px) + sin * (gy - py)) / pw
            dy = (-sin * (gx - px) + cos * (gy - py)) / ph
        else:
            dx = (gx - px) / pw
            dy = (gy - py) / ph
        if self.edge_swap:
            da1 = norm_angle(ga - pa, self.angle_range)
            da2 = norm_angle(ga - pa + _HALF_PI, self.angle_range)
            first = da1.abs() < da2.abs()
            da = torch.where(first, da1, da2)
            gw, gh = torch.where(first, gw, gh), torch.where(first, gh, gw)
        else:
            da = norm_angle(ga - pa, self.angle_range)
        if self.norm_factor:
            da = da / (self.norm_factor * math.pi)
        deltas = torch.stack([dx, dy, torch.log(gw / pw), torch.log(gh / ph), da], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, rois: torch.Tensor, deltas: torch.Tensor, max_shape=None,
               wh_ratio_clip: float = 16 / 1000) -> torch.Tensor:
        """Boxes ``[..., 5]`` (le90 with the default flags) from ``rois [..., 5]`` and
        ``deltas [..., 5]``."""
        _check_last(rois, 5, "DeltaXYWHAOBBoxCoder.decode", "rois")
        _check_last(deltas, 5, "DeltaXYWHAOBBoxCoder.decode", "deltas")
        d = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dx, dy, dw, dh, da = d.unbind(-1)
        if self.norm_factor:
            da = da * (self.norm_factor * math.pi)
        px, py, pw, ph, pa = rois.unbind(-1)
        max_ratio = abs(math.log(wh_ratio_clip))
        gw = pw * dw.clamp(-max_ratio, max_ratio).exp()
        gh = ph * dh.clamp(-max_ratio, max_ratio).exp()
        if self.proj_xy:
            cos, sin = torch.cos(pa), torch.sin(pa)
            gx = px + dx * pw * cos - dy * ph * sin
            gy = py + dx * pw * sin + dy * ph * cos
        else:
            gx = px + dx * pw
            gy = py + dy * ph
        ga = norm_angle(pa + da, self.angle_range)
        if max_shape is not None:
            gx = gx.clamp(0, max_shape[1] - 1)
            gy = gy.clamp(0, max_shape[0] - 1)
        if self.edge_swap:
            keep = gw > gh
            gw, gh, ga = (torch.where(keep, gw, gh), torch.where(keep, gh, gw),
                          norm_angle(torch.where(keep, ga, ga + _HALF_PI), self.angle_range))
        return torch.stack([gx, gy, gw, gh, ga], dim=-1)
