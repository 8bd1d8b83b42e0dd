"""Drawing and JSON export of dense predictions, for the ``predict`` commands.

* :func:`draw_detections` paints torchvision-style detections (``boxes``,
  ``scores``, ``labels`` and optionally ``masks``) onto an image: blended
  instance masks, box outlines and "name 0.93" labels in a per-class colour.
* :func:`draw_segmentation` blends a colour per class over an image from a
  label map (or logits) and can append a legend of the classes present.
* :func:`detections_to_json` / :func:`segmentation_to_json` give plain,
  ``json.dump``-able summaries of the same predictions.
* :func:`save_png` / :func:`save_json` write outputs atomically, so an
  interrupted run never leaves a truncated file behind.

Conventions follow :mod:`lsnet.dense.datasets`: detection labels are 1-based
(``class_names[i]`` names label ``i + 1``; 0 is background), semantic labels are
0-based (``class_names[c]`` names class ``c``) with 255 meaning "ignore". Class
``i`` of ``class_names`` is always drawn in ``palette(...)[i]``, so a class keeps
its colour from image to image and between the two tasks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.drawing import palette, to_rgb_array
from ..models.checkpoint import atomic_write
from .datasets import SEG_IGNORE_INDEX

__all__ = ["detections_to_json", "draw_detections", "draw_segmentation", "palette", "save_json", "save_png",
           "segmentation_to_json"]

# ----------------------------------------------------------------------------- helpers


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _class_name(class_names: Sequence[str], index: int) -> str:
    # Out-of-range labels (e.g. a checkpoint with more classes than the names file) still get a readable name.
    if 0 <= index < len(class_names):
        return str(class_names[index])
    return f"class_{index}"


def _font(image_size: tuple[int, int]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Scale text with the image so labels stay legible on large inputs; Pillow's bundled
    # default font needs no font files. Older Pillow / no FreeType: fixed-size bitmap font.
    size = max(10, round(min(image_size) / 40))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, AttributeError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    # Size from the origin (not the ink's top-left) so text drawn at an offset fits in it.
    _, _, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return math.ceil(x1), math.ceil(y1)


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    # Black on light backgrounds, white on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _label_rect(box_xy: tuple[int, int], text_wh: tuple[int, int], image_wh: tuple[int, int],
                pad: int = 2) -> tuple[int, int, int, int]:
    """Inclusive ``(x0, y0, x1, y1)`` of a label's background for a box whose top-left is ``box_xy``.

    Placed just above the box when there is room, else just inside its top edge, and
    shifted left/up as needed so it lies inside the image (as far as the image is large enough).
    """
    bx, by = box_xy
    tw, th = text_wh
    w, h = image_wh
    lw, lh = tw + 2 * pad, th + 2 * pad
    x0 = min(max(bx, 0), max(w - lw, 0))
    y0 = by - lh if by - lh >= 0 else max(by, 0)
    y0 = min(y0, max(h - lh, 0))
    return x0, y0, min(x0 + lw, w) - 1, min(y0 + lh, h) - 1


def _resize_nearest(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    # Nearest neighbour keeps label ids (and thresholded mask values) exact.
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()[None, None]
    t = torch.nn.functional.interpolate(t, size=size_hw, mode="nearest")
    return t[0, 0].numpy().astype(arr.dtype)


def _blend(arr: np.ndarray, region: np.ndarray, colour: Sequence[int], alpha: float) -> None:
    """In place: ``arr[region] = (1 - alpha) * arr[region] + alpha * colour``."""
    if not region.any():
        return
    px = arr[region].astype(np.float32)
    px = (1.0 - alpha) * px + alpha * np.asarray(colour, dtype=np.float32)
    arr[region] = np.clip(np.round(px), 0, 255).astype(np.uint8)


def _instance_masks(prediction: Mapping[str, Any]) -> np.ndarray | None:
    if prediction.get("masks") is None:
        return None
    masks = _to_numpy(prediction["masks"])
    if masks.ndim == 4:  # torchvision's [N, 1, H, W]
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, 1, H, W] or [N, H, W], got {masks.shape}")
    return masks


def _detection_arrays(prediction: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _to_numpy(prediction.get("boxes", np.zeros((0, 4)))).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(prediction.get("scores", np.zeros((0,)))).astype(np.float64).reshape(-1)
    labels = _to_numpy(prediction.get("labels", np.zeros((0,)))).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes/scores/labels disagree in length: {len(boxes)}, {len(scores)}, {len(labels)}")
    return boxes, scores, labels


# ----------------------------------------------------------------------------- detection


def draw_detections(image: Any, prediction: Mapping[str, Any], class_names: Sequence[str], *,
                    score_threshold: float = 0.5, mask_threshold: float = 0.5,
                    alpha: float = 0.45) -> Image.Image:
    """Draw detections (boxes, labels, optional masks) with score >= ``score_threshold`` on a copy of ``image``.

    ``image`` is a PIL image or a float tensor ``[3, H, W]`` in 0..1. ``prediction`` is a
    torchvision detection dict; label ``l`` is named ``class_names[l - 1]`` and drawn in
    ``palette(...)[l - 1]``. Masks (``[N, 1, H, W]`` probabilities) are blended with weight
    ``alpha`` where above ``mask_threshold``; boxes get a 2-3 px outline and a
    "name 0.93" tag at their top-left, kept inside the image. Label 0 is never drawn.
    """
    arr = to_rgb_array(image)
    h, w = arr.shape[:2]
    boxes, scores, labels = _detection_arrays(prediction)
    masks = _instance_masks(prediction)
    keep = np.nonzero((scores >= score_threshold) & (labels > 0))[0]
    # Lowest score first, so the most confident detections end up on top.
    keep = keep[np.argsort(scores[keep], kind="stable")]
    n_colours = max([len(class_names), *(int(labels[i]) for i in keep)]) if len(keep) else len(class_names)
    colours = palette(n_colours)

    if masks is not None:
        for i in keep:
            m = masks[i] > mask_threshold
            if m.shape != (h, w):
                m = _resize_nearest(m.astype(np.uint8), (h, w)).astype(bool)
            _blend(arr, m, colours[int(labels[i]) - 1], alpha)

    out = Image.fromarray(arr)
    if len(keep) == 0:
        return out
    draw = ImageDraw.Draw(out)
    font = _font((w, h))
    # 2 px on small images, 3 px from ~600 px up: visible without hiding small objects.
    width = 3 if min(h, w) >= 600 else 2
    for i in keep:
        colour = colours[int(labels[i]) - 1]
        x1, y1, x2, y2 = boxes[i]
        # Boxes are continuous pixel edges; the last covered pixel is at x2 - 1.
        x0i = int(np.clip(math.floor(x1), 0, w - 1))
        y0i = int(np.clip(math.floor(y1), 0, h - 1))
        x1i = int(np.clip(math.ceil(x2) - 1, x0i, w - 1))
        y1i = int(np.clip(math.ceil(y2) - 1, y0i, h - 1))
        draw.rectangle((x0i, y0i, x1i, y1i), outline=colour, width=width)
        text = f"{_class_name(class_names, int(labels[i]) - 1)} {scores[i]:.2f}"
        tw, th = _text_size(draw, text, font)
        rect = _label_rect((x0i, y0i), (tw, th), (w, h))
        draw.rectangle(rect, fill=colour)
        draw.text((rect[0] + 2, rect[1] + 2), text, fill=_text_colour(colour), font=font)
    return out


def detections_to_json(prediction: Mapping[str, Any], class_names: Sequence[str], *,
                       score_threshold: float = 0.0, image_path: str | os.PathLike | None = None) -> dict:
    """JSON-ready summary of detections with score >= ``score_threshold``, sorted by score (descending).

    Returns ``{"image": path or None, "detections": [{"label", "class", "score",
    "box_xyxy" (2 decimals), "mask_area" (pixels above 0.5, only with masks)}]}``.
    """
    boxes, scores, labels = _detection_arrays(prediction)
    masks = _instance_masks(prediction)
    keep = np.nonzero((scores >= score_threshold) & (labels > 0))[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    detections = []
    for i in keep:
        det: dict[str, Any] = {
            "label": int(labels[i]),
            "class": _class_name(class_names, int(labels[i]) - 1),
            "score": round(float(scores[i]), 4),
            "box_xyxy": [round(float(v), 2) for v in boxes[i]],
        }
        if masks is not None:
            det["mask_area"] = int((masks[i] > 0.5).sum())
        detections.append(det)
    return {"image": None if image_path is None else str(image_path), "detections": detections}


# ----------------------------------------------------------------------------- semantic segmentation


def _label_map_array(label_map: Any) -> np.ndarray:
    lm = _to_numpy(label_map)
    if lm.ndim == 4 and lm.shape[0] == 1:  # a batch of one
        lm = lm[0]
    if lm.ndim == 3:
        if np.issubdtype(lm.dtype, np.floating):
            lm = lm.argmax(axis=0)  # logits / probabilities [C, H, W]
        elif lm.shape[0] == 1:
            lm = lm[0]
    if lm.ndim != 2:
        raise ValueError(f"label_map must be [H, W] labels or [C, H, W] logits, got {lm.shape}")
    return lm.astype(np.int64)


def _legend(items: Sequence[tuple[str, tuple[int, int, int]]], height: int, font) -> Image.Image:
    """A white strip listing ``items`` as swatch + name, in as many columns as ``height`` requires."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [_text_size(probe, name, font) for name, _ in items]
    line_h = max(th for _, th in sizes) if sizes else 10
    pad = max(2, line_h // 4)
    swatch = line_h
    row_h = line_h + pad
    rows = max(1, (height - pad) // row_h)
    cols = math.ceil(len(items) / rows)
    rows = math.ceil(len(items) / cols)
    col_ws = []
    for c in range(cols):
        chunk = sizes[c * rows:(c + 1) * rows]
        col_ws.append(swatch + pad + max(tw for tw, _ in chunk) + 2 * pad)
    strip = Image.new("RGB", (pad + sum(col_ws), max(height, pad + rows * row_h)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    x = pad
    for c in range(cols):
        for r, (name, colour) in enumerate(items[c * rows:(c + 1) * rows]):
            y = pad + r * row_h
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=(0, 0, 0))
            draw.text((x + swatch + pad, y), name, fill=(0, 0, 0), font=font)
        x += col_ws[c]
    return strip


def draw_segmentation(image: Any, label_map: Any, class_names: Sequence[str], *, alpha: float = 0.5,
                      legend: bool = True, ignore_index: int = SEG_IGNORE_INDEX) -> Image.Image:
    """Blend ``palette(...)[c]`` over the pixels of class ``c``; ``ignore_index`` pixels stay as they are.

    ``label_map`` is an int ``[H, W]`` map (0-based classes) or ``[C, H, W]`` logits (argmax
    taken); it is resized (nearest) to the image if sizes differ. With ``legend`` a strip
    with a swatch and name per present class (most pixels first) is added on the right.
    """
    arr = to_rgb_array(image)
    h, w = arr.shape[:2]
    lm = _label_map_array(label_map)
    if lm.shape != (h, w):
        lm = _resize_nearest(lm, (h, w))
    valid = (lm != ignore_index) & (lm >= 0)
    present, counts = np.unique(lm[valid], return_counts=True)
    colours = palette(max(len(class_names), int(present.max()) + 1 if len(present) else 0))
    for c in present:
        _blend(arr, valid & (lm == c), colours[int(c)], alpha)
    out = Image.fromarray(arr)
    if not legend or len(present) == 0:
        return out
    order = np.argsort(-counts, kind="stable")
    items = [(_class_name(class_names, int(present[k])), colours[int(present[k])]) for k in order]
    strip = _legend(items, h, _font((w, h)))
    canvas = Image.new("RGB", (w + strip.width, max(h, strip.height)), (255, 255, 255))
    canvas.paste(out, (0, 0))
    canvas.paste(strip, (w, 0))
    return canvas


def segmentation_to_json(label_map: Any, class_names: Sequence[str],
                         image_path: str | os.PathLike | None = None, *,
                         ignore_index: int = SEG_IGNORE_INDEX) -> dict:
    """Per-class pixel counts of a label map (or logits), for the classes present.

    Returns ``{"image", "height", "width", "ignored_pixels", "classes": [{"label", "class",
    "pixels", "fraction"}]}`` with classes by pixel count (descending); ``fraction`` is
    relative to the non-ignored pixels, so the fractions sum to 1.
    """
    lm = _label_map_array(label_map)
    valid = (lm != ignore_index) & (lm >= 0)
    present, counts = np.unique(lm[valid], return_counts=True)
    total = int(valid.sum())
    order = np.argsort(-counts, kind="stable")
    classes = [{"label": int(present[k]), "class": _class_name(class_names, int(present[k])),
                "pixels": int(counts[k]), "fraction": round(float(counts[k]) / total, 6)} for k in order]
    return {"image": None if image_path is None else str(image_path), "height": int(lm.shape[0]),
            "width": int(lm.shape[1]), "ignored_pixels": int(lm.size - total), "classes": classes}


# ----------------------------------------------------------------------------- output


def save_png(img: Any, path: str | os.PathLike) -> Path:
    """Write ``img`` (PIL image, or anything :func:`draw_detections` accepts) as PNG, atomically; returns the path."""
    if not isinstance(img, Image.Image):
        img = Image.fromarray(to_rgb_array(img))
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)


def save_json(obj: Any, path: str | os.PathLike, *, indent: int = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON, atomically; returns the path."""
    data = (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return Path(path)
