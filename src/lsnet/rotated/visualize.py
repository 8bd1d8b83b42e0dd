"""Drawing oriented detections: rotated box outlines with "class 0.93" labels, a colour per class.

Labels are 0-based (``classes[i]`` names label ``i``); class ``i`` is drawn in
``lsnet.data.drawing.palette(...)[i]``, so a class keeps its colour from image to image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_rotated_detections"]


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def draw_rotated_detections(image, boxes, labels, scores=None, classes: Sequence[str] | None = None,
                            score_threshold: float = 0.3, width: int = 2, show_labels: bool = True) -> Image.Image:
    """A copy of ``image`` (PIL image, ``[3, H, W]`` tensor in 0..1 or uint8, or ``HWC``
    array) with the rotated ``boxes`` (N, 5) ``(cx, cy, w, h, angle)`` outlined.

    ``labels`` (N,) are 0-based into ``classes`` (``class_<i>`` when no names are given);
    with ``scores`` only boxes scoring at least ``score_threshold`` are drawn, and the label
    text reads "name 0.93" (ground truth: pass ``scores=None``). The text sits at the box's
    top-most corner. Returns a new RGB PIL image.
    """
    from ..data.drawing import palette, to_rgb_array
    from ..ops.rotated_boxes import obb_to_poly

    canvas = Image.fromarray(to_rgb_array(image))
    boxes_t = torch.as_tensor(_numpy(boxes), dtype=torch.float64).reshape(-1, 5)
    labels_np = _numpy(labels).astype(np.int64).reshape(-1)
    scores_np = None if scores is None else _numpy(scores).astype(np.float64).reshape(-1)
    if len(labels_np) != len(boxes_t) or (scores_np is not None and len(scores_np) != len(boxes_t)):
        raise ValueError(f"{len(boxes_t)} boxes, {len(labels_np)} labels and "
                         f"{'no' if scores_np is None else len(scores_np)} scores")
    if not len(boxes_t):
        return canvas
    keep = np.ones(len(boxes_t), dtype=bool) if scores_np is None else scores_np >= score_threshold
    n_colours = max(len(classes) if classes is not None else 0, int(labels_np.max()) + 1, 1)
    colours = palette(n_colours)
    polys = obb_to_poly(boxes_t).numpy().reshape(-1, 4, 2)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    # low scores first, so the confident boxes end up on top
    order = np.argsort(scores_np, kind="stable") if scores_np is not None else np.arange(len(boxes_t))
    for i in order:
        if not keep[i]:
            continue
        label = int(labels_np[i])
        colour = colours[label] if label >= 0 else (255, 255, 255)
        pts = [(float(x), float(y)) for x, y in polys[i]]
        draw.line(pts + [pts[0]], fill=colour, width=width)
        if not show_labels:
            continue
        name = classes[label] if classes is not None and 0 <= label < len(classes) else f"class_{label}"
        text = name if scores_np is None else f"{name} {scores_np[i]:.2f}"
        top = min(pts, key=lambda p: (p[1], p[0]))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tx = min(max(top[0], 0), max(canvas.width - (x1 - x0) - 2, 0))
        ty = max(top[1] - (y1 - y0) - 3, 0)
        draw.rectangle((tx, ty, tx + (x1 - x0) + 2, ty + (y1 - y0) + 2), fill=colour)
        lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((tx + 1 - x0, ty + 1 - y0), text, fill=(0, 0, 0) if lum > 140 else (255, 255, 255), font=font)
    return canvas
