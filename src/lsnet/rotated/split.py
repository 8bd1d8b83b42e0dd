"""Splitting large DOTA images into overlapping patches, and merging patch detections back.

:func:`split_dota` does what mmrotate's ``tools/data/dota/split/img_split.py`` (BboxToolkit's
splitter) does with one size and gap:

* windows of ``size = int(patch_size / rate)`` pixels, ``gap = int(gap / rate)`` overlap,
  so ``step = size - gap`` (824 for the default 1024 / 200); along each axis
  ``ceil((L - size) / step + 1)`` windows (one when ``L <= size``), at ``0, step, 2 step,
  ...``, the last one moved back to end at the image border ``L - size`` when it would
  stick out (only when there are several);
* a window is kept when the image covers more than ``img_rate_thr`` (0.6) of it (the ones
  with the largest cover are kept when none passes);
* an object goes to a window when the part of its polygon inside the window is at least
  ``iof_thr`` (0.7) of the polygon's area (intersection over foreground, with the polygon
  clipped exactly to the window); its polygon is **not** clipped, only translated (its
  corners may lie outside the patch), and its difficult flag becomes 2 when it is cut by
  the window (iof < 1), as mmrotate writes it. (The DOTA devkit's ``ImgSplit`` instead
  writes the clipped polygon, and every object with any part inside, flag 2 below the
  threshold.) :class:`lsnet.rotated.dota.DotaDataset` reads 2 as difficult; mmrotate's
  ``DOTADataset`` trains on difficult objects by default, so a trainer should keep them;
* patches smaller than the window (at the image border) are padded with ``padding_value``
  (0) at the right and bottom to the full window size; they are **not** resized (``rate``
  only changes the window size, as in mmrotate; the training pipeline resizes);
* names are ``{stem}__{window size}__{x}___{y}`` (e.g. ``P0001__1024__0___824``), the
  window's size and its top-left corner in the original image; this is mmrotate's format
  (the devkit's puts the rate where mmrotate puts the size: ``P0001__1__0___824``).

:func:`merge_patch_detections` parses those names, moves the boxes by the window offset
and runs a rotated NMS per class (IoU 0.1, as mmrotate's ``DOTADataset.merge_det``).

Proposed split for the small CPU preset on the synthetic aerial set: ``patch_size=512,
gap=128`` (see :mod:`lsnet.rotated.aerial`).
"""

from __future__ import annotations

import math
import re
import shutil
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folder import DataError, load_image
from ..data.writing import worker_pool
from ..engine.report import progress_bar
from ..errors import ConfigError
from .dota import (
    DOTA_V1_CLASSES,
    dota_pairs,
    find_classes_file,
    read_classes_file,
    read_dota_labels,
    write_dota_labels,
)

__all__ = ["PATCH_NAME", "clip_polygon", "merge_patch_detections", "parse_patch_name", "polygon_area",
           "sliding_windows", "split_dota", "window_iof"]

#: Patch names: ``{stem}__{size}__{x}___{y}``.
PATCH_NAME = re.compile(r"(?P<stem>.+)__(?P<size>\d+)__(?P<x>\d+)___(?P<y>\d+)")


def sliding_windows(width: int, height: int, sizes, gaps, img_rate_thr: float = 0.6) -> np.ndarray:
    """Windows ``(K, 4)`` int64 ``(x0, y0, x1, y1)`` covering a ``width`` x ``height`` image,
    for each ``(size, gap)`` pair (see the module docstring for the rules)."""
    windows = []
    for size, gap in zip(sizes, gaps):
        size, gap = int(size), int(gap)
        if size <= gap or gap < 0:
            raise ConfigError(f"the patch size must exceed the gap (and the gap be >= 0), got size {size}, gap {gap}")
        step = size - gap
        starts = []
        for length in (width, height):
            n = 1 if length <= size else math.ceil((length - size) / step + 1)
            s = [step * i for i in range(n)]
            if len(s) > 1 and s[-1] + size > length:
                s[-1] = length - size
            starts.append(s)
        for x in starts[0]:
            for y in starts[1]:
                windows.append((x, y, x + size, y + size))
    win = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    inside = win.copy()
    inside[:, 0::2] = np.clip(inside[:, 0::2], 0, width)
    inside[:, 1::2] = np.clip(inside[:, 1::2], 0, height)
    rates = ((inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
             / ((win[:, 2] - win[:, 0]) * (win[:, 3] - win[:, 1])))
    if not (rates > img_rate_thr).any():
        rates[np.abs(rates - rates.max()) < 0.01] = 1.0
    return win[rates > img_rate_thr]


def polygon_area(points: np.ndarray) -> float:
    """Area of a simple polygon ``(K, 2)`` (shoelace formula, either orientation)."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The part ``(K, 2)`` of polygon ``points`` inside the rectangle ``[x0, x1] x [y0, y1]``
    (Sutherland-Hodgman: clipped against the four edges in turn)."""
    pts = [tuple(p) for p in np.asarray(points, dtype=np.float64)]
    # (axis, bound, keep >= bound?)
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not pts:
            break

        def inside(p, axis=axis, bound=bound, keep_above=keep_above):
            return p[axis] >= bound if keep_above else p[axis] <= bound

        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(_cross_point(prev, cur, axis, bound))
                out.append(cur)
            elif inside(prev):
                out.append(_cross_point(prev, cur, axis, bound))
        pts = out
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _cross_point(a, b, axis: int, bound: float):
    t = (bound - a[axis]) / (b[axis] - a[axis])
    p = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
    p[axis] = bound
    return tuple(p)


def window_iof(polys: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """``(N, K)``: the fraction of each polygon ``(N, 8)``'s area inside each window
    ``(K, 4)``; 0 for polygons of zero area."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 8)
    out = np.zeros((len(polys), len(windows)), dtype=np.float64)
    if not len(polys) or not len(windows):
        return out
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    lo_x, hi_x, lo_y, hi_y = xs.min(1), xs.max(1), ys.min(1), ys.max(1)
    for k, (wx0, wy0, wx1, wy1) in enumerate(windows.tolist()):
        touching = (hi_x > wx0) & (lo_x < wx1) & (hi_y > wy0) & (lo_y < wy1)
        for i in np.nonzero(touching)[0]:
            pts = polys[i].reshape(4, 2)
            area = polygon_area(pts)
            if area <= 0:
                continue
            if lo_x[i] >= wx0 and hi_x[i] <= wx1 and lo_y[i] >= wy0 and hi_y[i] <= wy1:
                out[i, k] = 1.0
            else:
                out[i, k] = min(polygon_area(clip_polygon(pts, wx0, wy0, wx1, wy1)) / area, 1.0)
    return out


def parse_patch_name(name: str) -> tuple[str, int, int, int]:
    """``(stem, size, x, y)`` of a patch name ``{stem}__{size}__{x}___{y}``; :class:`DataError` otherwise."""
    m = PATCH_NAME.fullmatch(str(name))
    if m is None:
        raise DataError(f"{name!r} is not a patch name of the form '<image>__<size>__<x>___<y>' "
                        "(as split_dota writes them)")
    return m["stem"], int(m["size"]), int(m["x"]), int(m["y"])


def _split_one(job) -> tuple[int, int]:
    (stem, image_path, label_path, classes, sizes, gaps, img_rate_thr, iof_thr, padding_value, out_images,
     out_labels, ext) = job
    image = np.asarray(load_image(image_path), dtype=np.uint8)
    h, w = image.shape[:2]
    windows = sliding_windows(w, h, sizes, gaps, img_rate_thr)
    ann = read_dota_labels(label_path, classes) if label_path is not None else None
    iofs = window_iof(ann["polys"], windows) if ann is not None else None
    n_objects = 0
    for k, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        name = f"{stem}__{x1 - x0}__{x0}___{y0}"
        patch = image[y0:y1, x0:x1]
        if patch.shape[0] < y1 - y0 or patch.shape[1] < x1 - x0:
            padded = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
            padded[...] = padding_value
            padded[:patch.shape[0], :patch.shape[1]] = patch
            patch = padded
        # zlib level 1: noisy aerial images barely compress further, and level 6 is ~10x slower
        options = {"compress_level": 1} if ext.lower() == ".png" else {}
        Image.fromarray(np.ascontiguousarray(patch)).save(out_images / f"{name}{ext}", **options)
        if ann is None:
            continue
        sel = np.nonzero(iofs[:, k] >= iof_thr)[0]
        polys = ann["polys"][sel].astype(np.float64)
        polys[:, 0::2] -= x0
        polys[:, 1::2] -= y0
        flags = np.where(iofs[sel, k] < 1.0, 2, ann["difficulty"][sel])
        write_dota_labels(out_labels / f"{name}.txt", polys, ann["labels"][sel], classes, flags)
        n_objects += len(sel)
    return len(windows), n_objects


def split_dota(src_root, dst_root, patch_size: int = 1024, gap: int = 200, rates=(1.0,), *,
               classes=None, iof_thr: float = 0.7, img_rate_thr: float = 0.6, padding_value: int = 0,
               ext: str = ".png", workers: int = 0, progress: bool = True) -> dict:
    """Split the DOTA folder ``src_root`` (``images/``, ``labelTxt/``) into patches written
    as a DOTA folder ``dst_root`` (see the module docstring for the rules and names).

    Without ``src_root/labelTxt`` (a test set) only images are written. The class list is
    ``classes``, else ``src_root``'s ``classes.txt`` (or its parent's), else DOTA v1.0; a
    ``classes.txt`` found is copied to ``dst_root``. ``workers`` processes (0: one per
    CPU); the output does not depend on it. Patches are written over files of the same
    name; other files in ``dst_root`` are left alone. Returns ``{"num_images",
    "num_patches", "num_objects", "dst_root"}`` (objects counted over all patches).
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if patch_size < 1 or not rates or any(r <= 0 for r in rates):
        raise ConfigError(f"patch_size must be >= 1 and rates positive, got {patch_size} and {rates}")
    if not 0.0 <= iof_thr <= 1.0:
        raise ConfigError(f"iof_thr must be in [0, 1], got {iof_thr}")
    if ext.lower() not in (".png", ".bmp", ".tif", ".tiff"):
        raise ConfigError(f"ext must be a lossless format (.png, .bmp, .tif), got {ext!r}")
    if dst_root.exists() and not dst_root.is_dir():
        raise ConfigError(f"{dst_root} is a file, not a folder")
    if src_root.resolve() == dst_root.resolve():
        raise ConfigError(f"the patches cannot be written into their source folder {src_root}")
    classes_file = find_classes_file(src_root)
    if classes is None:
        classes = read_classes_file(classes_file) if classes_file is not None else DOTA_V1_CLASSES
    classes = tuple(classes)
    pairs = dota_pairs(src_root, require_labels=False)
    for _, _, label_path in pairs:  # every label file is checked before anything is written
        if label_path is not None:
            read_dota_labels(label_path, classes)
    sizes = [int(patch_size / r) for r in rates]
    gaps = [int(gap / r) for r in rates]
    out_images, out_labels = dst_root / "images", dst_root / "labelTxt"
    out_images.mkdir(parents=True, exist_ok=True)
    has_labels = pairs[0][2] is not None
    if has_labels:
        out_labels.mkdir(parents=True, exist_ok=True)
    if classes_file is not None:
        shutil.copyfile(classes_file, dst_root / "classes.txt")
    jobs = [(stem, img, lbl, classes, sizes, gaps, img_rate_thr, iof_thr, padding_value, out_images, out_labels, ext)
            for stem, img, lbl in pairs]
    n_patches = n_objects = 0
    bar = progress_bar(len(jobs), f"splitting {src_root.name or src_root}", enabled=progress)
    with worker_pool(workers, len(jobs)) as pool:
        results = pool.imap(_split_one, jobs) if pool else map(_split_one, jobs)
        for patches, objects in results:
            n_patches += patches
            n_objects += objects
            bar.update(1)
    bar.close()
    return {"num_images": len(jobs), "num_patches": n_patches, "num_objects": n_objects, "dst_root": str(dst_root)}


def _tensor(x, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def merge_patch_detections(results: Mapping, iou_threshold: float = 0.1) -> dict:
    """Merge per-patch detections into per-image ones.

    ``results``: ``{patch name: (boxes (N, 5), scores (N,), labels (N,))}`` (tensors or
    arrays, or dicts with those keys) in patch coordinates. Boxes are moved by the patch's
    offset (from its name), gathered per original image and filtered with a per-class
    rotated NMS (``batched_nms_rotated``, IoU ``iou_threshold``). Returns ``{image name:
    (boxes float32 (M, 5), scores float32 (M,), labels int64 (M,))}`` by decreasing score.
    """
    from ..ops.rotated_boxes import batched_nms_rotated

    gathered = defaultdict(list)
    for name, det in results.items():
        stem, _, x, y = parse_patch_name(name)
        if isinstance(det, Mapping):
            boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        else:
            boxes, scores, labels = det
        boxes = _tensor(boxes, torch.float64).reshape(-1, 5).clone()
        scores = _tensor(scores, torch.float64).reshape(-1)
        labels = _tensor(labels, torch.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ConfigError(f"results[{name!r}]: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
        boxes[:, 0] += x
        boxes[:, 1] += y
        gathered[stem].append((boxes, scores, labels))
    merged = {}
    for stem in sorted(gathered):
        boxes = torch.cat([b for b, _, _ in gathered[stem]])
        scores = torch.cat([s for _, s, _ in gathered[stem]])
        labels = torch.cat([lb for _, _, lb in gathered[stem]])
        if len(boxes):
            keep = batched_nms_rotated(boxes, scores, labels, iou_threshold)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        merged[stem] = (boxes.float(), scores.float(), labels)
    return merged
