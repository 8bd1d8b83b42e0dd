"""Datasets and transforms for dense prediction: COCO detection and ADE20K segmentation.

* :class:`CocoDetection` reads a COCO instances JSON and its image folder and
  yields ``(image, target)`` in the format torchvision's detection models
  (RetinaNet, Faster/Mask R-CNN) take: ``image`` float ``[3, H, W]`` in 0..1 and
  ``target`` a dict with ``boxes`` (x1, y1, x2, y2), ``labels`` (1..K, 0 is the
  models' background) and, optionally, ``masks``.
* :class:`ADE20KSegmentation` reads the ADE20K layout
  (``root/images/<split>/*`` + ``root/annotations/<split>/*.png``) and yields
  ``(image, mask)`` with ``mask`` int64 ``[H, W]`` (255 = ignore).
* :class:`DetectionTransform` / :class:`SegmentationTransform` are the joint
  (image, target) augmentations for training and the matching evaluation path.
* :func:`shapes_coco` / :func:`shapes_ade` open a folder written by
  :func:`lsnet.dense.shapes.make_shapes`; :func:`open_dense_split` opens one
  split of any of the layouts (evaluation needs no training split).

Every problem the user must fix raises :class:`DenseDataError` (a
:class:`lsnet.data.DataError`, hence a ``ValueError``) naming the file and the
fault. Images are read by :func:`lsnet.data.load_image`, the loader of every
task (the same messages; 16-bit and float images scaled to 8 bits). Annotations
that are left out (boxes of zero or negative size) are counted and logged. As
much as possible is checked at construction, so a bad dataset fails
before training starts rather than hours into it. Randomness in the transforms
uses torch's global generator, so DataLoader workers get distinct, seedable
streams.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.folder import DataError, load_image
from ..errors import ConfigError

__all__ = [
    "ADE20KSegmentation",
    "CocoDetection",
    "DenseDataError",
    "DetectionTransform",
    "SEG_IGNORE_INDEX",
    "SegmentationTransform",
    "collate_detection",
    "open_dense_split",
    "shapes_ade",
    "shapes_coco",
]

#: Label value that losses and :class:`~lsnet.dense.metrics.SegmentationMetric` ignore.
SEG_IGNORE_INDEX = 255

logger = logging.getLogger(__name__)

_SEG_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DenseDataError(DataError):
    """A detection/segmentation data problem; the message names the offending file and the fault."""


def _load_rgb(path: Path, context: str = "") -> torch.Tensor:
    """Image file as float ``[3, H, W]`` in 0..1; unreadable files raise :class:`DenseDataError`."""
    try:
        image = load_image(path, context)
    except DataError as err:
        raise DenseDataError(str(err)) from err
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _quiet():
    """Context manager swallowing pycocotools' progress prints."""
    return contextlib.redirect_stdout(io.StringIO())


# =========================================================================== COCO detection


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection / instance-segmentation dataset for torchvision models.

    Items are ``(image float [3, H, W] in 0..1, target)`` with ``target``:
    ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2, pixels), ``labels`` int64 ``[N]``
    (1..K: categories sorted by id), ``image_id`` (int, the COCO id), ``area``
    float32 ``[N]``, ``iscrowd`` int64 ``[N]`` and, with ``with_masks``, ``masks``
    uint8 ``[N, H, W]``. Images without annotations are kept (empty tensors).

    Crowd annotations (``iscrowd=1``) are left out of the targets, as in
    torchvision's reference training scripts, because the models have no notion of
    them; they still count in evaluation through :attr:`coco`. Annotations whose
    box has non-positive width or height are skipped and counted in
    :attr:`skipped_annotations`.

    Attributes: ``num_classes`` (K, without background), ``class_names`` (label
    ``i`` is ``class_names[i - 1]``), ``label_to_cat_id`` / ``cat_id_to_label``,
    ``coco`` (a ``pycocotools.coco.COCO`` over the same JSON, for evaluation),
    ``ids`` (image ids in dataset order).
    """

    def __init__(self, image_dir, ann_file, *, transforms: Callable | None = None, with_masks: bool = False,
                 skip_crowd: bool = True):
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.with_masks = with_masks
        self.skip_crowd = skip_crowd
        data = self._read_json()

        # Categories: contiguous labels 1..K in id order; 0 stays free for the models' background.
        cats = []
        for c in data["categories"]:
            if not isinstance(c, dict) or "id" not in c:
                raise DenseDataError(f"{self.ann_file}: category entry without an 'id': {c!r}")
            cats.append(c)
        if len({c["id"] for c in cats}) != len(cats):
            raise DenseDataError(f"{self.ann_file}: duplicate category ids")
        cats.sort(key=lambda c: c["id"])
        self.label_to_cat_id = {i + 1: c["id"] for i, c in enumerate(cats)}
        self.cat_id_to_label = {cid: lbl for lbl, cid in self.label_to_cat_id.items()}
        self.class_names = [str(c.get("name", f"class_{c['id']}")) for c in cats]
        self.num_classes = len(cats)

        # Images: all must exist now, not at iteration 10,000.
        if not data["images"]:
            raise DenseDataError(f"{self.ann_file} lists no images")
        self._images: dict[int, dict] = {}
        missing = []
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise DenseDataError(f"{self.ann_file}: image entry needs 'id' and 'file_name': {img!r}")
            if img["id"] in self._images:
                raise DenseDataError(f"{self.ann_file}: duplicate image id {img['id']}")
            self._images[img["id"]] = img
            if not (self.image_dir / img["file_name"]).is_file():
                missing.append(self.image_dir / img["file_name"])
        if missing:
            more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise DenseDataError(f"image {missing[0]} listed in {self.ann_file} does not exist{more}")
        self.ids = [img["id"] for img in data["images"]]

        # Annotations: check references now; keep per-image lists of the usable ones.
        self._anns: dict[int, list[dict]] = {i: [] for i in self.ids}
        self.skipped_annotations = 0
        skipped_example = None
        for ann in data["annotations"]:
            aid = ann.get("id") if isinstance(ann, dict) else None
            if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann or "bbox" not in ann:
                raise DenseDataError(
                    f"{self.ann_file}: annotation {aid!r} needs 'image_id', 'category_id' and 'bbox'")
            if ann["category_id"] not in self.cat_id_to_label:
                raise DenseDataError(f"{self.ann_file}: annotation {aid!r} has category_id {ann['category_id']!r}, "
                                     f"which is not among the categories {sorted(self.cat_id_to_label)}")
            if ann["image_id"] not in self._anns:
                raise DenseDataError(f"{self.ann_file}: annotation {aid!r} refers to image_id "
                                     f"{ann['image_id']!r}, which is not in 'images'")
            bbox = ann["bbox"]
            if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
                raise DenseDataError(f"{self.ann_file}: annotation {aid!r} has a malformed bbox {bbox!r} "
                                     "(expected [x, y, width, height])")
            # pycocotools' evaluation reads these two fields; fill the COCO defaults when absent.
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(bbox[2]) * float(bbox[3]))
            if bbox[2] <= 0 or bbox[3] <= 0:
                self.skipped_annotations += 1
                skipped_example = skipped_example if skipped_example is not None else aid
                continue
            if ann["iscrowd"] and skip_crowd:
                continue
            if with_masks and not ann.get("segmentation"):
                raise DenseDataError(f"{self.ann_file}: annotation {aid!r} has no 'segmentation', "
                                     "but with_masks=True needs one for every annotation")
            self._anns[ann["image_id"]].append(ann)
        if self.skipped_annotations:
            logger.warning("%s: %d annotation(s) with a box of zero or negative width or height left out of training "
                           "targets (e.g. annotation %r)", self.ann_file, self.skipped_annotations, skipped_example)

        coco = COCO()
        coco.dataset = data
        with _quiet():
            coco.createIndex()
        self.coco = coco

    def _read_json(self) -> dict:
        if not self.ann_file.is_file():
            raise DenseDataError(f"annotation file {self.ann_file} not found")
        try:
            with open(self.ann_file, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DenseDataError(f"annotation file {self.ann_file} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise DenseDataError(f"annotation file {self.ann_file} must hold a JSON object, "
                                 f"not {type(data).__name__}")
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise DenseDataError(f"annotation file {self.ann_file} lacks the key(s) {missing} "
                                 "(a COCO instances file has 'images', 'annotations' and 'categories')")
        for k in ("images", "annotations", "categories"):
            if not isinstance(data[k], list):
                raise DenseDataError(f"annotation file {self.ann_file}: '{k}' must be a list")
        return data

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the image at dataset position ``index``."""
        return self.image_dir / self._images[self.ids[index]]["file_name"]

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self._images[image_id]
        path = self.image_dir / info["file_name"]
        image = _load_rgb(path, f" (listed in {self.ann_file})")
        h, w = image.shape[-2:]
        if ("height" in info and info["height"] != h) or ("width" in info and info["width"] != w):
            raise DenseDataError(f"image {path} is {w}x{h} pixels but {self.ann_file} says "
                                 f"{info.get('width')}x{info.get('height')}")
        anns = self._anns[image_id]
        n = len(anns)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(n, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> x1y1x2y2
        # Annotations may poke outside the frame by rounding; models assume boxes inside the image.
        boxes[:, 0::2].clamp_(0, w)
        boxes[:, 1::2].clamp_(0, h)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a["iscrowd"]) for a in anns], dtype=torch.int64),
        }
        if self.with_masks:
            masks = np.zeros((n, h, w), dtype=np.uint8)
            for i, a in enumerate(anns):
                masks[i] = self._ann_to_mask(a, h, w)
            target["masks"] = torch.from_numpy(masks)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _ann_to_mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        from pycocotools import mask as mask_util

        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons
            rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_util.frPyObjects(seg, h, w)
        elif isinstance(seg, dict) and "counts" in seg:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise DenseDataError(f"{self.ann_file}: annotation {ann.get('id')!r} has an unreadable segmentation")
        if list(rle.get("size", [h, w])) != [h, w]:
            raise DenseDataError(f"{self.ann_file}: annotation {ann.get('id')!r} has a mask of size {rle['size']} "
                                 f"but its image is {h}x{w} (height x width)")
        return mask_util.decode(rle)


def _resized_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    scale = short / min(h, w)
    if max_size is not None and max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    # antialias matters when shrinking; it is a no-op cost when enlarging.
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[..., H, W]`` integer maps (values stay exact in float32 up to 2**24)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    lead = labels.shape[:-2]
    if labels.numel() == 0:  # e.g. an image without instances: interpolate rejects empty inputs
        return labels.new_zeros(*lead, *size)
    flat = labels.reshape(1, -1, *labels.shape[-2:]).float()
    # "nearest-exact" samples pixel centres, so it does not shift content by half a pixel like "nearest".
    out = F.interpolate(flat, size=size, mode="nearest-exact")
    return out.reshape(*lead, *size).to(labels.dtype)


class DetectionTransform:
    """Joint (image, target) transform for :class:`CocoDetection`.

    Training: random horizontal flip with probability ``hflip`` (boxes and masks
    follow), then resize so the shorter side is a random choice from ``scales``
    while the longer side stays <= ``max_size``. Evaluation: no flip, shorter side
    ``max(scales)``. ``scales=None`` disables resizing (torchvision's detection
    models resize internally anyway, with their own ``min_size``/``max_size``).
    Boxes are scaled by the exact size ratios, so they stay inside the image.
    """

    def __init__(self, train: bool, scales: Sequence[int] | None = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768,
                                                                      800),
                 max_size: int | None = 1333, hflip: float = 0.5):
        self.train = train
        self.scales = tuple(scales) if scales is not None else None
        if self.scales is not None and (not self.scales or min(self.scales) < 1):
            raise ConfigError(f"scales must be positive sizes, got {scales}")
        self.max_size = max_size
        self.hflip = hflip

    def __call__(self, image: torch.Tensor, target: dict):
        target = dict(target)
        if self.train and self.hflip > 0 and torch.rand(()).item() < self.hflip:
            image = image.flip(-1)
            w = image.shape[-1]
            if "boxes" in target:
                b = target["boxes"].clone()
                # Pixel columns c -> w-1-c, so the box edge x -> w - x and x1/x2 swap roles.
                b[:, 0], b[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
                target["boxes"] = b
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        if self.scales is not None:
            if self.train:
                short = self.scales[int(torch.randint(len(self.scales), ()).item())]
            else:
                short = max(self.scales)
            h, w = image.shape[-2:]
            nh, nw = _resized_hw(h, w, short, self.max_size)
            if (nh, nw) != (h, w):
                image = _resize_image(image, (nh, nw))
                sx, sy = nw / w, nh / h
                if "boxes" in target:
                    target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
                if "area" in target:
                    target["area"] = target["area"] * (sx * sy)
                if "masks" in target:
                    target["masks"] = _resize_labels(target["masks"], (nh, nw))
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(train={self.train}, scales={self.scales}, max_size={self.max_size}, "
                f"hflip={self.hflip})")


def collate_detection(batch):
    """DataLoader ``collate_fn`` for detection: ``(list of images, list of targets)``.

    Images differ in size, so they cannot be stacked; torchvision's detection
    models take lists and batch them internally.
    """
    images, targets = zip(*batch)
    return list(images), list(targets)


# =========================================================================== ADE20K segmentation


class ADE20KSegmentation(torch.utils.data.Dataset):
    """Semantic segmentation in ADE20K layout.

    ``root/images/<split>/<stem>.{jpg,png,...}`` pairs with
    ``root/annotations/<split>/<stem>.png`` (single-channel labels). Items are
    ``(image float [3, H, W] in 0..1, mask int64 [H, W])``.

    With ``reduce_zero_label`` (the ADE20K convention) the PNGs hold 0 for
    "other/ignore" and 1..``num_classes`` for the classes; 0 becomes 255 and ``v``
    becomes ``v - 1``, so the mask holds 0..num_classes-1 and 255. Without it the
    PNGs must already hold 0..num_classes-1, or 255 for ignore. Any other value
    raises :class:`DenseDataError` naming the PNG (checked per item, and for the
    whole split by :meth:`validate_labels`).

    ``class_names`` come from ``root/classes.json`` when present, else ``class_i``.
    That file lists the names of the stored values 1, 2, ... in order, so with
    ``reduce_zero_label`` its name ``i`` is class ``i``; without it, class 0 is
    called "other" and the file must list ``num_classes - 1`` names.
    """

    def __init__(self, root, split: str = "training", *, num_classes: int = 150, transforms: Callable | None = None,
                 reduce_zero_label: bool = True):
        self.root = Path(root)
        self.split = split
        if not 1 <= num_classes <= 255:
            # Labels are bytes and 255 means "ignore", so at most 255 real classes (0..254) fit.
            raise ConfigError(f"num_classes must be in 1..255, got {num_classes}")
        self.num_classes = num_classes
        self.transforms = transforms
        self.reduce_zero_label = reduce_zero_label
        if not self.root.is_dir():
            raise DenseDataError(f"dataset root {self.root} not found")
        self.image_dir = self.root / "images" / split
        self.ann_dir = self.root / "annotations" / split
        for d in (self.image_dir, self.ann_dir):
            if not d.is_dir():
                raise DenseDataError(f"split folder {d} not found (expected root/images/{split} and "
                                     f"root/annotations/{split})")
        images = self._by_stem(self.image_dir, _SEG_IMAGE_EXTENSIONS)
        labels = self._by_stem(self.ann_dir, (".png",))
        only_img = sorted(set(images) - set(labels))
        only_lbl = sorted(set(labels) - set(images))
        if only_img:
            raise DenseDataError(f"{len(only_img)} image(s) without a label PNG in {self.ann_dir}, e.g. "
                                 + ", ".join(str(images[s]) for s in only_img[:3]))
        if only_lbl:
            raise DenseDataError(f"{len(only_lbl)} label PNG(s) without an image in {self.image_dir}, e.g. "
                                 + ", ".join(str(labels[s]) for s in only_lbl[:3]))
        if not images:
            raise DenseDataError(f"split {split!r} is empty: no images in {self.image_dir}")
        self.samples = [(images[s], labels[s]) for s in sorted(images)]
        self.class_names = self._class_names()
        # Lookup table from stored value to training label; entries for invalid values are never used.
        lut = np.full(256, SEG_IGNORE_INDEX, dtype=np.int64)
        if reduce_zero_label:
            lut[1:num_classes + 1] = np.arange(num_classes)
        else:
            lut[:num_classes] = np.arange(num_classes)
        self._lut = torch.from_numpy(lut)

    @staticmethod
    def _by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.suffix.lower() not in extensions:
                continue
            if p.stem in found:
                raise DenseDataError(f"two files with stem {p.stem!r}: {found[p.stem]} and {p}")
            found[p.stem] = p
        return found

    def _class_names(self) -> list[str]:
        path = self.root / "classes.json"
        if not path.is_file():
            return [f"class_{i}" for i in range(self.num_classes)]
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DenseDataError(f"class list {path} is not valid JSON: {e}") from e
        # The file names the stored label values 1, 2, ... (value 0 is ADE20K's unnamed "other"), so
        # without reduce_zero_label the stored 0 is a class of its own and is called "other".
        expected = self.num_classes if self.reduce_zero_label else self.num_classes - 1
        if not isinstance(names, list) or len(names) != expected:
            got = len(names) if isinstance(names, list) else type(names).__name__
            raise DenseDataError(f"class list {path} must be a JSON list of {expected} names (label values "
                                 f"1..{expected}; num_classes={self.num_classes}, reduce_zero_label="
                                 f"{self.reduce_zero_label}), got {got}")
        names = [str(n) for n in names]
        return names if self.reduce_zero_label else ["other", *names]

    def __len__(self) -> int:
        return len(self.samples)

    def _invalid_values(self, values: np.ndarray) -> np.ndarray:
        """The entries of ``values`` (stored label values) that are not allowed."""
        if self.reduce_zero_label:
            return values[values > self.num_classes]
        return values[(values >= self.num_classes) & (values != SEG_IGNORE_INDEX)]

    def _read_label(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise DenseDataError(f"label PNG {path} has mode {im.mode!r}; labels must be single-channel "
                                         "(mode 'L' or 'P' with one class index per pixel)")
                # For "P" images np.asarray yields the palette indices, which are the class values.
                arr = np.asarray(im)
        except FileNotFoundError:
            raise DenseDataError(f"label PNG {path} not found") from None
        except OSError as e:
            raise DenseDataError(f"cannot read label PNG {path}: {e}") from e
        values = np.unique(arr)
        bad = self._invalid_values(values)
        if bad.size or values.min() < 0:
            value = int(bad[0]) if bad.size else int(values.min())
            allowed = (f"0..{self.num_classes}" if self.reduce_zero_label
                       else f"0..{self.num_classes - 1} or {SEG_IGNORE_INDEX}")
            raise DenseDataError(f"label PNG {path} contains value {value}, outside {allowed} "
                                 f"(num_classes={self.num_classes}, reduce_zero_label={self.reduce_zero_label})")
        return arr

    def __getitem__(self, index: int):
        img_path, lbl_path = self.samples[index]
        image = _load_rgb(img_path)
        arr = self._read_label(lbl_path)
        if tuple(arr.shape) != tuple(image.shape[-2:]):
            raise DenseDataError(f"label PNG {lbl_path} is {arr.shape[1]}x{arr.shape[0]} but image {img_path} is "
                                 f"{image.shape[-1]}x{image.shape[-2]} (width x height)")
        mask = self._lut[torch.from_numpy(arr.astype(np.int64))]
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask

    def validate_labels(self) -> dict:
        """Check every label PNG of the split (values and sizes) before training.

        Raises :class:`DenseDataError` on the first bad file. Returns ``{"files": n,
        "pixels_per_class": list of num_classes ints (after the label mapping),
        "ignored_pixels": int}``, handy for spotting absent classes.
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        lut = self._lut.numpy()
        for img_path, lbl_path in self.samples:
            arr = self._read_label(lbl_path)
            with Image.open(img_path) as im:  # opening reads only the header: cheap
                iw, ih = im.size
            if arr.shape != (ih, iw):
                raise DenseDataError(f"label PNG {lbl_path} is {arr.shape[1]}x{arr.shape[0]} but image {img_path} "
                                     f"is {iw}x{ih} (width x height)")
            mapped = lut[arr.astype(np.int64)]
            ignored += int((mapped == SEG_IGNORE_INDEX).sum())
            counts += np.bincount(mapped[mapped != SEG_IGNORE_INDEX].ravel(), minlength=self.num_classes)
        return {"files": len(self.samples), "pixels_per_class": counts.tolist(), "ignored_pixels": ignored}


class SegmentationTransform:
    """Joint (image, mask) transform for :class:`ADE20KSegmentation`.

    Training: rescale by a random factor in ``scale_range`` (relative to the
    image, or to a shorter side of ``base_size`` when given), random crop of
    ``crop_size`` (int or ``(h, w)``), padding first where the image is smaller
    (image with 0, mask with 255 so padding is ignored), then horizontal flip with
    probability ``hflip``. With ``cat_max_ratio`` below 1, up to ten crop positions are
    drawn and the first in which no single class covers that fraction of the labelled
    pixels is kept (mmsegmentation's RandomCrop rule; its ADE20K pipelines use 0.75), so
    crops of nothing but background become rare. Evaluation: identity, unless ``eval_size`` is given, in
    which case only the *image* is resized to that shorter side; the mask stays at
    full resolution so scores are computed on the original labels (upsample the
    logits to the mask size).
    """

    def __init__(self, train: bool, crop_size: int | tuple[int, int] = 512,
                 scale_range: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5, *,
                 base_size: int | None = None, eval_size: int | None = None, cat_max_ratio: float = 1.0):
        self.train = train
        if not 0 < cat_max_ratio <= 1:
            raise ConfigError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio}")
        self.cat_max_ratio = float(cat_max_ratio)
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ConfigError(f"crop_size must be a positive int or (h, w), got {crop_size}")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))
        self.hflip = hflip
        self.base_size = base_size
        self.eval_size = eval_size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor):
        if not self.train:
            if self.eval_size is not None:
                h, w = image.shape[-2:]
                image = _resize_image(image, _resized_hw(h, w, self.eval_size, None))
            return image, mask
        h, w = image.shape[-2:]
        lo, hi = self.scale_range
        factor = lo + (hi - lo) * torch.rand(()).item()
        if self.base_size is not None:
            factor *= self.base_size / min(h, w)
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        image = _resize_image(image, (nh, nw))
        mask = _resize_labels(mask, (nh, nw))
        ch, cw = self.crop_size
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            # Pad right/bottom: the padded area is ignored by the loss, so its position is irrelevant.
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=SEG_IGNORE_INDEX)
        H, W = image.shape[-2:]
        for _ in range(10 if self.cat_max_ratio < 1 else 1):
            top = int(torch.randint(H - ch + 1, ()).item())
            left = int(torch.randint(W - cw + 1, ()).item())
            if self._mixed_enough(mask[top:top + ch, left:left + cw]):
                break
        image = image[:, top:top + ch, left:left + cw]
        mask = mask[top:top + ch, left:left + cw]
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()

    def _mixed_enough(self, window: torch.Tensor) -> bool:
        """True when no class covers ``cat_max_ratio`` or more of the window's labelled pixels."""
        if self.cat_max_ratio >= 1:
            return True
        counts = torch.bincount(window[window != SEG_IGNORE_INDEX].flatten())
        counts = counts[counts > 0]
        return len(counts) > 1 and bool(counts.max() < self.cat_max_ratio * counts.sum())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(train={self.train}, crop_size={self.crop_size}, "
                f"scale_range={self.scale_range}, hflip={self.hflip}, base_size={self.base_size}, "
                f"eval_size={self.eval_size}, cat_max_ratio={self.cat_max_ratio})")


# =========================================================================== synthetic shapes

_COCO_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val"}
_ADE_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def open_dense_split(task: str, root, split: str, *, layout: str | None = None, **kw):
    """One split of a dense dataset, without touching the others.

    ``task`` "detect": :class:`CocoDetection` over ``root/<s>/images`` and
    ``root/annotations/instances_<s>.json``; "segment": :class:`ADE20KSegmentation`
    over ``root/images/<S>`` and ``root/annotations/<S>``. ``split`` is "train" or "val"
    (COCO's and ADE20K's names, ``training`` / ``validation``, are accepted too).
    ``layout="shapes"`` takes ``root`` as a folder written by ``make_shapes`` (its ``coco``
    / ``ade`` sub-folders; the segmentation classes default to the shapes'). ``kw`` go to
    the dataset (``transforms``, ``with_masks``, ``num_classes``, ...).
    """
    if task not in ("detect", "segment"):
        raise ValueError(f"task must be 'detect' or 'segment', got {task!r}")
    if layout == "shapes":
        return shapes_coco(root, split, **kw) if task == "detect" else shapes_ade(root, split, **kw)
    if layout is not None:
        raise ValueError(f"layout must be None or 'shapes', got {layout!r}")
    if task == "detect":
        if split not in _COCO_SPLITS:
            raise ValueError(f"split must be one of {sorted(_COCO_SPLITS)}, got {split!r}")
        s = _COCO_SPLITS[split]
        root = Path(root)
        return CocoDetection(root / s / "images", root / "annotations" / f"instances_{s}.json", **kw)
    if split not in _ADE_SPLITS:
        raise ValueError(f"split must be one of {sorted(_ADE_SPLITS)}, got {split!r}")
    return ADE20KSegmentation(root, _ADE_SPLITS[split], **kw)


def shapes_coco(root, split: str = "train", **kw) -> CocoDetection:
    """:class:`CocoDetection` over ``<root>/coco`` as written by ``make_shapes(root)``.

    ``split`` is ``"train"``/``"val"`` (ADE names accepted too); ``kw`` go to :class:`CocoDetection`.
    """
    if split not in _COCO_SPLITS:
        raise ValueError(f"split must be one of {sorted(_COCO_SPLITS)}, got {split!r}")
    s = _COCO_SPLITS[split]
    root = Path(root) / "coco"
    return CocoDetection(root / s / "images", root / "annotations" / f"instances_{s}.json", **kw)


def shapes_ade(root, split: str = "train", **kw) -> ADE20KSegmentation:
    """:class:`ADE20KSegmentation` over ``<root>/ade`` as written by ``make_shapes(root)``.

    ``num_classes`` defaults to the background plus the shape kinds (6); ``kw`` go to
    :class:`ADE20KSegmentation`.
    """
    from .shapes import ADE_CLASSES

    if split not in _ADE_SPLITS:
        raise ValueError(f"split must be one of {sorted(_ADE_SPLITS)}, got {split!r}")
    kw.setdefault("num_classes", len(ADE_CLASSES))
    return ADE20KSegmentation(Path(root) / "ade", _ADE_SPLITS[split], **kw)
