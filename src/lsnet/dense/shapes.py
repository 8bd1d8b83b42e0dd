"""A synthetic, download-free scene dataset for detection and segmentation ("shapes").

:func:`make_shapes` renders small scenes of filled shapes on textured
backgrounds and writes the same scenes twice: once in COCO instance format (for
RetinaNet / Mask R-CNN) and once in ADE20K semantic-segmentation layout (for the
Semantic FPN). Everything depends only on ``seed``: each image draws from its own
``numpy.random.Generator`` seeded with ``(seed, split, index)``, so the same seed
gives byte-identical files, and the first ``n`` images of a split do not depend
on how many images are requested.

Classes
-------
The shape kinds, in COCO category order (``category_id`` = index + 1)::

    1 circle    2 square (rotated)    3 triangle    4 ellipse    5 star

Label conventions of the ADE20K copy (values stored in the label PNGs, mode "L")::

    0      ignore: visible pixels of shapes too occluded to be annotated as instances
    1      background (the textured backdrop is a class of its own)
    2..6   circle, square, triangle, ellipse, star   (= COCO category_id + 1)

``root/ade/classes.json`` lists ``["background", "circle", ..., "star"]``: name
``i`` belongs to label value ``i + 1``, i.e. to class ``i`` after the usual
ADE20K ``reduce_zero_label`` step (0 -> 255 ignore, v -> v - 1).

Scenes
------
Each image has 1..``max_objects`` shapes of random kind, colour (from a palette
shared by all kinds, so colour says nothing about the class), size, rotation and
position, with a shading gradient and pixel noise. Later shapes occlude earlier
ones; COCO masks, boxes and areas describe the *visible* part only, and an object
whose visible part is under 20 % of its in-frame area, or under
:data:`MIN_VISIBLE_PIXELS` pixels, is dropped from the COCO annotations (its
visible pixels become "ignore" in the ADE labels). Backgrounds mix smooth
colour noise, random stripes and pixel noise. Heights and widths vary per image
and are never equal and never multiples of 64.

Layout written under ``root``::

    coco/train/images/000001.png ...        coco/annotations/instances_train.json
    coco/val/images/000001.png ...          coco/annotations/instances_val.json
    ade/images/training/shapes_train_00000001.jpg ...
    ade/annotations/training/shapes_train_00000001.png ...
    ade/images/validation/...               ade/annotations/validation/...
    ade/classes.json

:func:`make_shape_crops` writes single-shape images for classification pre-training
(``train/<kind>/0000000.png ...``, ``val/<kind>/...``), readable by ``lsnet train``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.writing import output_folder, worker_pool, write_text_atomic
from ..engine.report import progress_bar
from ..errors import ConfigError

__all__ = [
    "ADE_CLASSES",
    "BACKGROUND_LABEL",
    "IGNORE_LABEL",
    "MIN_VISIBLE_FRACTION",
    "MIN_VISIBLE_PIXELS",
    "SHAPE_CLASSES",
    "generation_params",
    "is_generated",
    "make_shape_crops",
    "make_shapes",
    "render_scene",
    "render_shape_crop",
]

#: Shape kinds in COCO category order (category_id = index + 1).
SHAPE_CLASSES = ("circle", "square", "triangle", "ellipse", "star")

#: Semantic classes of the ADE20K copy; name ``i`` has label value ``i + 1`` in the PNGs.
ADE_CLASSES = ("background",) + SHAPE_CLASSES

#: Label PNG value meaning "ignore" (ADE20K's "other"; becomes 255 with reduce_zero_label).
IGNORE_LABEL = 0

#: Label PNG value of the textured background.
BACKGROUND_LABEL = 1

#: An object is annotated only if at least this fraction of its in-frame area is visible ...
MIN_VISIBLE_FRACTION = 0.2

#: ... and at least this many pixels are visible.
MIN_VISIBLE_PIXELS = 12

# Shape colours (RGB). Shared by every kind so that colour carries no class information.
_PALETTE = np.array(
    [
        [220, 40, 40], [40, 170, 60], [40, 80, 210], [230, 200, 40], [200, 60, 200],
        [40, 200, 210], [240, 130, 30], [245, 245, 245], [30, 30, 30], [130, 90, 50],
    ],
    dtype=np.float64,
)

_SPLITS = (("train", "training", 0), ("val", "validation", 1))


# --------------------------------------------------------------------------- geometry


def _polygon_inside(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for arrays of points (works for the non-convex star)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(verts)
    for k in range(n):
        x1, y1 = verts[k]
        x2, y2 = verts[(k + 1) % n]
        if y1 == y2:  # a horizontal edge never crosses a horizontal ray
            continue
        crosses = (y1 > py) != (y2 > py)
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def _shape_mask(kind: str, h: int, w: int, cx: float, cy: float, r: float, theta: float,
                aspect: float) -> np.ndarray:
    """Boolean ``(h, w)`` mask of one shape, sampled at pixel centres."""
    mask = np.zeros((h, w), dtype=bool)
    # Only the shape's bounding square can be inside; testing just that window keeps rendering cheap.
    x0, x1 = max(int(np.floor(cx - r)) - 1, 0), min(int(np.ceil(cx + r)) + 2, w)
    y0, y1 = max(int(np.floor(cy - r)) - 1, 0), min(int(np.ceil(cy + r)) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return mask
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5, ys + 0.5
    dx, dy = px - cx, py - cy
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c  # coordinates in the shape's rotated frame
    if kind == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif kind == "square":
        half = r * 0.8  # a square of half-side 0.8 r has about the area of a circle of radius r
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif kind == "ellipse":
        inside = (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1.0
    elif kind == "triangle":
        ang = theta + np.array([0.0, 2.0, 4.0]) * np.pi / 3.0
        verts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)
        inside = _polygon_inside(px, py, verts)
    elif kind == "star":
        ang = theta + np.arange(10) * np.pi / 5.0
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        verts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        inside = _polygon_inside(px, py, verts)
    else:  # pragma: no cover - internal misuse
        raise ConfigError(f"unknown shape kind {kind!r}")
    mask[y0:y1, x0:x1] = inside
    return mask


# --------------------------------------------------------------------------- textures


def _upsample_bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a coarse ``(gh, gw, C)`` grid to ``(h, w, C)`` in pure numpy.

    Done by hand (not with PIL) so the pixels depend only on numpy arithmetic.
    """
    gh, gw = grid.shape[:2]
    yy = np.linspace(0.0, gh - 1.0, h)
    xx = np.linspace(0.0, gw - 1.0, w)
    y0 = np.clip(np.floor(yy).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xx).astype(int), 0, gw - 2)
    fy = (yy - y0)[:, None, None]
    fx = (xx - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float ``(h, w, 3)`` texture: smooth colour noise, optional stripes, pixel noise."""
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    base = rng.uniform(30, 225, size=3)
    grid = base + rng.uniform(-70, 70, size=(gh, gw, 3))
    img = _upsample_bilinear(grid, h, w)
    if rng.random() < 0.6:
        period = rng.uniform(8, 40)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:h, 0:w]
        wave = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
        img = img + wave[..., None] * rng.uniform(10, 45, size=3)
    img = img + rng.normal(0, 6, size=(h, w, 3))
    return img


def _shape_fill(rng: np.random.Generator, mask_box: tuple[int, int, int, int]) -> np.ndarray:
    """Float colour for the pixels of ``mask_box`` (y0, y1, x0, x1): a palette colour with a gradient."""
    y0, y1, x0, x1 = mask_box
    colour = _PALETTE[int(rng.integers(len(_PALETTE)))] + rng.uniform(-20, 20, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0, 40)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    span = max(y1 - y0, x1 - x0, 1)
    grad = ((xs - x0) * np.cos(angle) + (ys - y0) * np.sin(angle)) / span  # roughly -1..1 across the shape
    fill = colour + grad[..., None] * strength
    return fill + rng.normal(0, 4, size=fill.shape)


def _paint(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> None:
    """Fill the pixels of ``mask`` in ``img`` with a shaded palette colour (in place)."""
    ys, xs = np.nonzero(mask)
    # Draw the fill even when the mask is empty so the random stream does not depend on it.
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1) if len(ys) else (0, 1, 0, 1)
    fill = _shape_fill(rng, box)
    if len(ys):
        img[ys, xs] = fill[ys - box[0], xs - box[2]]


# --------------------------------------------------------------------------- scenes


def _image_size(rng: np.random.Generator, size_range) -> tuple[int, int]:
    (hmin, hmax), (wmin, wmax) = size_range
    h = int(rng.integers(hmin, hmax + 1))
    w = int(rng.integers(wmin, wmax + 1))
    # Nudge away from square and from multiples of 64 so models meet awkward, non-square inputs.
    if h % 64 == 0:
        h += 1
    if w % 64 == 0:
        w += 1
    if w == h:
        w += 1 if (w + 1) % 64 else 2
    return h, w


def render_scene(rng: np.random.Generator, h: int, w: int, max_objects: int = 4):
    """Render one scene.

    Returns ``(image uint8 (h, w, 3), label uint8 (h, w), objects)`` where ``objects``
    is a list of ``(category_id, visible bool mask)`` for the annotated (sufficiently
    visible) shapes, in drawing order. ``label`` follows the ADE conventions of this
    module (0 ignore, 1 background, category_id + 1 for shapes).
    """
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, dtype=np.int32)  # index of the shape that owns each pixel (-1: background)
    kinds: list[int] = []
    full_area: list[int] = []
    n = int(rng.integers(1, max_objects + 1))
    short = min(h, w)
    for i in range(n):
        k = int(rng.integers(len(SHAPE_CLASSES)))
        r = float(rng.uniform(0.08, 0.28) * short)
        # Keep the centre at least half a radius inside the frame so shapes are mostly in view.
        cx = float(rng.uniform(0.5 * r, w - 0.5 * r))
        cy = float(rng.uniform(0.5 * r, h - 0.5 * r))
        theta = float(rng.uniform(0, 2 * np.pi))
        aspect = float(rng.uniform(0.45, 0.7))  # ellipses stay clearly non-circular
        mask = _shape_mask(SHAPE_CLASSES[k], h, w, cx, cy, r, theta, aspect)
        _paint(img, rng, mask)
        owner[mask] = i
        kinds.append(k)
        full_area.append(int(mask.sum()))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    label = np.full((h, w), BACKGROUND_LABEL, dtype=np.uint8)
    objects = []
    for i, k in enumerate(kinds):
        visible = owner == i
        area = int(visible.sum())
        if area == 0:
            continue
        if area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * full_area[i]:
            # Too little left to be a fair instance; the ambiguous fragment is ignored for segmentation too.
            label[visible] = IGNORE_LABEL
            continue
        label[visible] = k + 2
        objects.append((k + 1, visible))
    return img, label, objects


def _coco_annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        # Tight box of the visible pixels: pixel (x, y) covers [x, x+1) x [y, y+1).
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
    }


def _clear_generated(folder: Path, pattern: str) -> None:
    """Remove files this generator wrote earlier, so a smaller re-run leaves no stale images.

    Only names matching ``pattern`` (a full-match regex) are touched; anything else is left alone.
    """
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and re.fullmatch(pattern, p.name):
                p.unlink()


def make_shapes(root, *, num_train: int = 2000, num_val: int = 100, seed: int = 0,
                size_range=((160, 240), (200, 320)), max_objects: int = 4, workers: int = 0,
                progress: bool = True) -> dict:
    """Write the synthetic shapes dataset under ``root`` in COCO and ADE20K layouts.

    ``workers`` processes render the images (0: one per CPU); the files do not depend on it.

    ``size_range`` is ``((min_h, max_h), (min_w, max_w))``. Returns a summary dict:
    ``root``, ``seed``, ``class_names`` (COCO categories), ``seg_class_names``
    (ADE classes after reduce_zero_label), ``ade_classes_file``, and ``splits``
    mapping ``"train"``/``"val"`` to counts and paths.
    """
    if max_objects < 1:
        raise ConfigError(f"max_objects must be >= 1, got {max_objects}")
    (hmin, hmax), (wmin, wmax) = size_range
    if min(hmin, wmin) < 16 or hmin > hmax or wmin > wmax:
        raise ConfigError(f"size_range must be ((min_h, max_h), (min_w, max_w)) with sides >= 16, got {size_range}")
    root = output_folder(root)
    coco_ann_dir = root / "coco" / "annotations"
    coco_ann_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]
    summary: dict = {
        "root": str(root),
        "seed": seed,
        "class_names": list(SHAPE_CLASSES),
        "seg_class_names": list(ADE_CLASSES),
        "ade_classes_file": str(root / "ade" / "classes.json"),
        "splits": {},
    }
    counts = {"train": num_train, "val": num_val}
    for coco_split, ade_split, split_index in _SPLITS:
        n_images = counts[coco_split]
        img_dir = root / "coco" / coco_split / "images"
        ade_img_dir = root / "ade" / "images" / ade_split
        ade_lbl_dir = root / "ade" / "annotations" / ade_split
        for d in (img_dir, ade_img_dir, ade_lbl_dir):
            d.mkdir(parents=True, exist_ok=True)
        _clear_generated(img_dir, r"\d{6}\.png")
        _clear_generated(ade_img_dir, rf"shapes_{coco_split}_\d{{8}}\.jpg")
        _clear_generated(ade_lbl_dir, rf"shapes_{coco_split}_\d{{8}}\.png")
        images, annotations = [], []
        jobs = [(seed, split_index, idx, size_range, max_objects, coco_split, img_dir, ade_img_dir, ade_lbl_dir)
                for idx in range(n_images)]
        with worker_pool(workers, n_images, auto_min_jobs=64) as pool:
            rendered = pool.imap(_render_and_write, jobs, chunksize=8) if pool else map(_render_and_write, jobs)
            bar = progress_bar(n_images, f"shapes {coco_split}", enabled=progress)
            for image, objects in rendered:
                bar.update(1)
                images.append(image)
                for category_id, mask in objects:
                    annotations.append(_coco_annotation(len(annotations) + 1, image["id"], category_id, mask))
            bar.close()
        ann_file = coco_ann_dir / f"instances_{coco_split}.json"
        data = {
            "info": {"description": f"lsnet synthetic shapes ({coco_split}, seed {seed})", "version": "1"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        write_text_atomic(ann_file, json.dumps(data, separators=(",", ":")) + "\n")
        summary["splits"][coco_split] = {
            "num_images": n_images,
            "num_annotations": len(annotations),
            "coco_images": str(img_dir),
            "coco_annotations": str(ann_file),
            "ade_images": str(ade_img_dir),
            "ade_annotations": str(ade_lbl_dir),
        }
    write_text_atomic(root / "ade" / "classes.json", json.dumps(list(ADE_CLASSES), indent=1) + "\n")
    # written last: its presence says the set is complete, its content which set it is
    params = generation_params(num_train, num_val, seed, size_range, max_objects)
    write_text_atomic(root / "shapes.json", json.dumps(params, indent=1) + "\n")
    return summary


def render_shape_crop(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, int]:
    """One ``(size, size, 3)`` uint8 image of a single shape near the centre on a textured
    background, and its class index into :data:`SHAPE_CLASSES`.

    Kinds, colours, shading, rotation and backgrounds come from the same distributions as
    :func:`render_scene`; the radius is 20-45 % of the side, the centre within 15 % of the middle.
    """
    img = _background(rng, size, size)
    k = int(rng.integers(len(SHAPE_CLASSES)))
    r = float(rng.uniform(0.2, 0.45) * size)
    cx = float(rng.uniform(0.35, 0.65) * size)
    cy = float(rng.uniform(0.35, 0.65) * size)
    theta = float(rng.uniform(0, 2 * np.pi))
    aspect = float(rng.uniform(0.45, 0.7))
    _paint(img, rng, _shape_mask(SHAPE_CLASSES[k], size, size, cx, cy, r, theta, aspect))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), k


def make_shape_crops(root, *, num_train: int = 60000, num_val: int = 2000, seed: int = 0, size: int = 64,
                     workers: int = 0, progress: bool = True) -> dict:
    """Write single-shape images as an ImageFolder classification set (``root/{train,val}/<kind>/``).

    It is the offline stand-in for ImageNet pre-training: ``lsnet train --data root`` teaches
    an LSNet backbone the shape kinds on cheap 64-pixel images before the dense models are
    trained on full scenes with ``--backbone-checkpoint``. The random streams are disjoint
    from :func:`make_shapes`' (same seed, different stream keys), so no scene is repeated.
    Returns ``{"root", "size", "splits": {split: {kind: count}}}``.
    """
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, got {size}")
    if min(num_train, num_val) < 1:
        raise ConfigError(f"num_train and num_val must be at least 1, got {num_train} and {num_val}")
    root = output_folder(root)
    summary: dict = {"root": str(root), "size": size, "splits": {}}
    for split, split_index, n in (("train", 2, num_train), ("val", 3, num_val)):
        for kind in SHAPE_CLASSES:
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            _clear_generated(root / split / kind, r"\d{7}\.png")
        jobs = [(seed, split_index, idx, size, root / split) for idx in range(n)]
        counts = dict.fromkeys(SHAPE_CLASSES, 0)
        with worker_pool(workers, n, auto_min_jobs=64) as pool:
            done = pool.imap(_render_crop_and_write, jobs, chunksize=64) if pool else map(_render_crop_and_write, jobs)
            bar = progress_bar(n, f"shape crops {split}", enabled=progress)
            for kind in done:
                counts[kind] += 1
                bar.update(1)
            bar.close()
        summary["splits"][split] = counts
    return summary


def _render_crop_and_write(job) -> str:
    seed, split_index, idx, size, folder = job
    img, k = render_shape_crop(np.random.default_rng([seed, split_index, idx]), size)
    Image.fromarray(img).save(folder / SHAPE_CLASSES[k] / f"{idx:07d}.png")
    return SHAPE_CLASSES[k]


def generation_params(num_train: int = 2000, num_val: int = 100, seed: int = 0,
                      size_range=((160, 240), (200, 320)), max_objects: int = 4) -> dict:
    """What identifies a generated set (stored as ``root/shapes.json``)."""
    return {"version": 1, "num_train": num_train, "num_val": num_val, "seed": seed,
            "size_range": [list(r) for r in size_range], "max_objects": max_objects}


def is_generated(root, **params) -> bool:
    """Whether ``root`` holds a complete set of this generator version, made with these
    :func:`make_shapes` parameters (any parameters when none are given)."""
    try:
        found = json.loads((Path(root) / "shapes.json").read_text())
    except (OSError, ValueError):
        return False
    if not params:
        return isinstance(found, dict) and found.get("version") == generation_params()["version"]
    return found == generation_params(**params)


def _render_and_write(job):
    """Render image ``idx`` of a split and write its three files; returns the COCO image entry
    and the annotated objects (ids are assigned by the caller, in image order)."""
    seed, split_index, idx, size_range, max_objects, coco_split, img_dir, ade_img_dir, ade_lbl_dir = job
    # One generator per image: reproducible, and independent of how many images come before.
    rng = np.random.default_rng([seed, split_index, idx])
    h, w = _image_size(rng, size_range)
    img, label, objects = render_scene(rng, h, w, max_objects)
    image_id = idx + 1
    file_name = f"{image_id:06d}.png"
    Image.fromarray(img).save(img_dir / file_name)
    stem = f"shapes_{coco_split}_{image_id:08d}"
    Image.fromarray(img).save(ade_img_dir / f"{stem}.jpg", quality=95)
    Image.fromarray(label).save(ade_lbl_dir / f"{stem}.png")
    return {"id": image_id, "file_name": file_name, "height": h, "width": w}, objects


