"""The DOTA format for oriented object detection: reading, checking, augmenting.

Layout of one split (``root``)::

    root/images/P0001.png ...          any of .png .jpg .jpeg .tif .tiff .bmp
    root/labelTxt/P0001.txt ...        one label file per image, same stem

Label files (DOTA v1.0): optional header lines ``imagesource:...`` and ``gsd:...``, then one
object per line::

    x1 y1 x2 y2 x3 y3 x4 y4 class-name difficult

``difficult`` is optional (default 0). DOTA uses 0 and 1; patches written by
:func:`lsnet.rotated.split.split_dota` use 2 for objects cut by the patch border, as
mmrotate's ``img_split`` does. Any non-zero value counts as difficult (as in the DOTA
devkit's evaluation); :func:`read_dota_labels` also returns the raw values.

Conventions of this package
---------------------------
* Labels are 0-based indices into the class list (mmrotate's convention; a detector's
  background, if it has one, is ``num_classes``).
* Boxes are ``(cx, cy, w, h, angle)`` in pixels, angle in radians, mmrotate's ``le90``
  convention (``w >= h``, angle in ``[-pi/2, pi/2)``, y down, positive angles clockwise on
  screen), computed from the label polygons with
  :func:`lsnet.ops.rotated_boxes.poly_to_obb` (mmrotate's ``poly2obb_le90``).
* Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``: polygon coordinates are continuous
  image coordinates, so a horizontal flip maps ``x`` to ``W - x``.

Class list of a :class:`DotaDataset`: the ``classes`` argument if given, else the file
``root/classes.txt`` (one name per line), else ``root/../classes.txt`` (where
:func:`lsnet.rotated.aerial.make_aerial` writes it, next to ``train/`` and ``val/``), else
:data:`DOTA_V1_CLASSES`.

Every problem a user must fix raises :class:`lsnet.data.DataError` naming the file (and
the line, for label files), at construction: all label files are read and checked before
training starts.

Training augmentation, as mmrotate's Oriented R-CNN / LSKNet DOTA configs
(:func:`dota_train_transform`): ``RRandomFlip(flip_ratio=[0.25, 0.25, 0.25],
direction=['horizontal', 'vertical', 'diagonal'])`` (:class:`RandomRotatedFlip`) and
``PolyRandomRotate(rotate_ratio=0.5, angles_range=180, auto_bound=False, rect_classes=[9,
11])`` (:class:`RandomPolyRotate`; classes 9 and 11 of DOTA v1.0 are storage-tank and
roundabout). Their randomness comes from torch's global generator, so the training
engine's seeding (and DataLoader worker seeding) makes them reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.folder import DataError, load_image
from ..errors import ConfigError

__all__ = [
    "DOTA_IMAGE_EXTENSIONS",
    "DOTA_RECT_CLASSES",
    "DOTA_V1_CLASSES",
    "DotaDataset",
    "RandomPolyRotate",
    "RandomRotatedFlip",
    "RotatedCompose",
    "collate",
    "dota_pairs",
    "dota_train_transform",
    "find_classes_file",
    "read_classes_file",
    "read_dota_labels",
    "write_dota_labels",
]

logger = logging.getLogger(__name__)

#: The 15 categories of DOTA v1.0 in the standard order (label i is ``DOTA_V1_CLASSES[i]``).
DOTA_V1_CLASSES = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle", "ship",
    "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout", "harbor",
    "swimming-pool", "helicopter",
)

#: Classes rotated only by multiples of 90 degrees in training (mmrotate's ``rect_classes=[9, 11]``
#: for DOTA v1.0): their boxes are drawn axis-aligned, so an arbitrary rotation would tilt them.
DOTA_RECT_CLASSES = ("storage-tank", "roundabout")

#: Image file extensions looked for in ``images/`` (lower case; matched case-insensitively).
DOTA_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_HEADER_PREFIXES = ("imagesource:", "gsd:")


# =========================================================================== label files


def read_dota_labels(path, classes: Sequence[str]) -> dict:
    """Read one DOTA label file.

    Returns ``{"polys": float32 (N, 8), "labels": int64 (N,) (0-based into classes),
    "difficult": bool (N,), "difficulty": int64 (N,) (the raw flags)}`` as numpy arrays.
    Header lines (``imagesource:``, ``gsd:``) and blank lines are skipped. A malformed line
    (a wrong number of fields, a non-numeric or non-finite coordinate, an unknown class, a
    non-integer difficult flag) raises :class:`DataError` naming the file and line.
    """
    path = Path(path)
    index = {name: i for i, name in enumerate(classes)}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: label file does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the label file ({type(err).__name__}: {err})") from err
    polys, labels, flags = [], [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.lower().startswith(_HEADER_PREFIXES):
            continue
        fields = stripped.split()
        where = f"{path}, line {lineno}"
        numeric = 0
        for f in fields:
            if not _is_float(f):
                break
            numeric += 1
        expected = "expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]'"
        if numeric == len(fields):
            raise DataError(f"{where}: {expected}, got {numeric} numbers and no class name: {stripped[:120]!r}")
        if len(fields) - numeric <= 2 and numeric != 8:  # coordinates, a name, maybe a flag
            raise DataError(f"{where}: {expected}, got {numeric} coordinates instead of 8 ({len(fields)} fields): "
                            f"{stripped[:120]!r}")
        if numeric < 8:
            raise DataError(f"{where}: coordinate {numeric + 1} is not a number: {fields[numeric]!r}")
        if len(fields) > 10:
            raise DataError(f"{where}: {expected}, got {len(fields)} fields: {stripped[:120]!r}")
        coords = [float(f) for f in fields[:8]]
        for k, v in enumerate(coords):
            if not math.isfinite(v):
                raise DataError(f"{where}: coordinate {k + 1} is not finite: {fields[k]!r}")
        name = fields[8]
        if name not in index:
            hint = " (the label looks numeric: is a coordinate missing or extra?)" if _is_float(name) else ""
            shown = ", ".join(classes) if len(classes) <= 20 else f"{len(classes)} classes"
            raise DataError(f"{where}: unknown class {name!r}{hint}; known: {shown}")
        flag = 0
        if len(fields) == 10:
            try:
                flag = int(fields[9])
            except ValueError:
                raise DataError(f"{where}: the difficult flag must be an integer (0, 1 or 2), "
                                f"got {fields[9]!r}") from None
            if flag < 0:
                raise DataError(f"{where}: the difficult flag must be >= 0, got {flag}")
        polys.append(coords)
        labels.append(index[name])
        flags.append(flag)
    difficulty = np.asarray(flags, dtype=np.int64).reshape(-1)
    return {
        "polys": np.asarray(polys, dtype=np.float32).reshape(-1, 8),
        "labels": np.asarray(labels, dtype=np.int64).reshape(-1),
        "difficult": difficulty != 0,
        "difficulty": difficulty,
    }


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_coordinate(v: float) -> str:
    """Shortest text that reads back as the same float32 (no exponent)."""
    return np.format_float_positional(np.float32(v), trim="-")


def write_dota_labels(path, polys, labels, classes: Sequence[str], difficulty=None, header: Sequence[str] = ()) -> None:
    """Write one DOTA label file: ``header`` lines (e.g. ``"gsd:0.5"``) then
    ``x1 y1 ... y4 class difficult`` per object (``difficulty`` int flags, default 0)."""
    polys = np.asarray(polys, dtype=np.float32).reshape(-1, 8)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    flags = np.zeros(len(labels), np.int64) if difficulty is None else np.asarray(difficulty).astype(np.int64)
    lines = list(header)
    for poly, label, flag in zip(polys, labels, flags):
        lines.append(" ".join(format_coordinate(v) for v in poly) + f" {classes[int(label)]} {int(flag)}")
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_classes_file(path) -> tuple[str, ...]:
    """Class names of a ``classes.txt`` (one per line; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the class list ({type(err).__name__}: {err})") from err
    names = []
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if len(name.split()) != 1:
            raise DataError(f"{path}, line {lineno}: a class name cannot contain spaces: {name!r}")
        if name in names:
            raise DataError(f"{path}, line {lineno}: class {name!r} is listed twice")
        names.append(name)
    if not names:
        raise DataError(f"{path} lists no classes")
    return tuple(names)


def find_classes_file(root) -> Path | None:
    """``root/classes.txt`` or ``root/../classes.txt``, whichever exists first (else None)."""
    root = Path(root)
    for candidate in (root / "classes.txt", root.parent / "classes.txt"):
        if candidate.is_file():
            return candidate
    return None


def dota_pairs(root, require_labels: bool = True) -> list[tuple[str, Path, Path | None]]:
    """``(stem, image path, label path)`` of every image of a DOTA split, sorted by stem.

    Raises :class:`DataError` naming the path for a missing ``images/`` or ``labelTxt/``
    folder, an empty split, two images with one stem, an image without a label file or a
    label file without an image. With ``require_labels=False`` a split without
    ``labelTxt/`` is accepted (label paths are then None), e.g. DOTA's test set.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: DOTA folder does not exist (expected {root}/images and {root}/labelTxt)")
    image_dir, label_dir = root / "images", root / "labelTxt"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: folder does not exist (a DOTA split holds images/ and labelTxt/)")
    images: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in DOTA_IMAGE_EXTENSIONS:
            if p.stem in images:
                raise DataError(f"{image_dir}: two images share the name {p.stem!r}: {images[p.stem].name} and "
                                f"{p.name}")
            images[p.stem] = p
    if not images:
        raise DataError(f"{image_dir}: no images (looked for {', '.join(DOTA_IMAGE_EXTENSIONS)})")
    if not label_dir.is_dir():
        if require_labels:
            raise DataError(f"{label_dir}: folder does not exist (a DOTA split holds images/ and labelTxt/)")
        return [(stem, images[stem], None) for stem in sorted(images)]
    labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.is_file() and p.suffix.lower() == ".txt"}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DataError(f"{labels[orphans[0]]}: label file without an image in {image_dir}{more}")
    missing = sorted(set(images) - set(labels))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{images[missing[0]]}: image without a label file {label_dir / (missing[0] + '.txt')}"
                        f"{more}")
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


# =========================================================================== dataset


class DotaDataset(torch.utils.data.Dataset):
    """One DOTA-format split (``root/images``, ``root/labelTxt``) for oriented detection.

    Items are ``(image, target)``: ``image`` float ``[3, H, W]`` in 0..1 and ``target`` a dict
    with ``boxes`` float32 ``(N, 5)`` (le90 ``cx, cy, w, h, angle``), ``labels`` int64 ``(N,)``
    (0-based), ``difficult`` bool ``(N,)``, ``polys`` float32 ``(N, 8)`` (the label
    polygons), ``name`` (the image's stem, e.g. ``"P0001"`` or a patch name) and
    ``image_size`` ``(H, W)`` of the image as read. ``transform(image, target)`` runs last
    and returns the pair.

    All label files are read at construction (errors name file and line). Objects whose
    box has a side under ``min_side`` pixels (default 2, as mmrotate's ``poly2obb_np``
    drops them) are left out and counted in :attr:`skipped_objects`. Difficult objects are
    kept (mmrotate trains on them; evaluation ignores them).

    Attributes: ``classes`` (tuple of names), ``num_classes``, ``names`` (stems in order),
    ``classes_source`` (the file or ``"argument"`` / ``"DOTA v1.0"``).
    """

    def __init__(self, root, classes: Sequence[str] | None = None, transform: Callable | None = None,
                 min_side: float = 2.0):
        from ..ops.rotated_boxes import poly_to_obb

        self.root = Path(root)
        self.transform = transform
        if classes is not None:
            classes = tuple(str(c) for c in classes)
            if not classes or len(set(classes)) != len(classes):
                raise ConfigError(f"classes must be a non-empty list of distinct names, got {classes!r}")
            self.classes_source = "argument"
        else:
            found = find_classes_file(self.root)
            if found is not None:
                classes = read_classes_file(found)
                self.classes_source = str(found)
            else:
                classes = DOTA_V1_CLASSES
                self.classes_source = "DOTA v1.0"
        self.classes = tuple(classes)
        self.num_classes = len(self.classes)
        pairs = dota_pairs(self.root)
        self.names = [stem for stem, _, _ in pairs]
        self._images = [img for _, img, _ in pairs]
        self._anns: list[dict] = []
        self.skipped_objects = 0
        for stem, _, label_path in pairs:
            ann = read_dota_labels(label_path, self.classes)
            polys = torch.from_numpy(ann["polys"])
            boxes = poly_to_obb(polys.double()).float() if len(polys) else torch.zeros(0, 5)
            keep = (boxes[:, 2] >= min_side) & (boxes[:, 3] >= min_side)
            self.skipped_objects += int((~keep).sum())
            self._anns.append({
                "boxes": boxes[keep].contiguous(),
                "labels": torch.from_numpy(ann["labels"])[keep],
                "difficult": torch.from_numpy(ann["difficult"])[keep],
                "polys": polys[keep].contiguous(),
            })
        if self.skipped_objects:
            logger.warning("%s: %d object(s) with a side under %g pixels left out", self.root, self.skipped_objects,
                           min_side)

    def __len__(self) -> int:
        return len(self.names)

    def annotation(self, index: int) -> dict:
        """The target of item ``index`` before any transform (no image is read)."""
        ann = self._anns[index]
        return {k: v.clone() for k, v in ann.items()} | {"name": self.names[index]}

    def annotations(self) -> dict:
        """``{name: target}`` of every image, untransformed: what :func:`lsnet.rotated.evaluation.evaluate_dota`
        takes as ground truth."""
        return {self.names[i]: self.annotation(i) for i in range(len(self))}

    def __getitem__(self, index: int):
        image = load_image(self._images[index])
        arr = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        target = self.annotation(index)
        target["image_size"] = (int(tensor.shape[1]), int(tensor.shape[2]))
        if self.transform is not None:
            tensor, target = self.transform(tensor, target)
        return tensor, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, classes={self.num_classes}, "
                f"transform={self.transform!r})")


def collate(batch):
    """DataLoader ``collate_fn`` for detection: ``(list of images, list of targets)``
    (images differ in size, so they are not stacked)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# =========================================================================== augmentation

_OBJECT_KEYS = ("boxes", "labels", "difficult", "polys")


def _select(target: dict, keep: torch.Tensor) -> dict:
    out = dict(target)
    for k in _OBJECT_KEYS:
        if k in out:
            out[k] = out[k][keep]
    return out


class RandomRotatedFlip:
    """Random horizontal / vertical / diagonal flip of an image and its oriented boxes
    (mmrotate's ``RRandomFlip``).

    ``flip_ratio`` gives each direction's probability (no flip with ``1 - sum``); the default
    is the DOTA configs' ``[0.25, 0.25, 0.25]``. 'diagonal' flips both axes (a half turn).
    Boxes: ``cx -> W - cx`` (mmrotate writes ``W - cx - 1``, which is off by one pixel for
    continuous coordinates; this follows the image exactly), angle ``a -> -a`` wrapped to
    le90 for one-axis flips, unchanged for 'diagonal'. Polygons are mirrored point by point.
    """

    DIRECTIONS = ("horizontal", "vertical", "diagonal")

    def __init__(self, flip_ratio: Sequence[float] = (0.25, 0.25, 0.25),
                 directions: Sequence[str] = ("horizontal", "vertical", "diagonal")):
        self.flip_ratio = tuple(float(p) for p in flip_ratio)
        self.directions = tuple(directions)
        if len(self.flip_ratio) != len(self.directions):
            raise ConfigError(f"flip_ratio {self.flip_ratio} and directions {self.directions} differ in length")
        if any(d not in self.DIRECTIONS for d in self.directions):
            raise ConfigError(f"flip directions must be among {self.DIRECTIONS}, got {self.directions}")
        if any(p < 0 for p in self.flip_ratio) or sum(self.flip_ratio) > 1 + 1e-9:
            raise ConfigError(f"flip_ratio must be non-negative and sum to at most 1, got {self.flip_ratio}")

    def __call__(self, image: torch.Tensor, target: dict):
        u = float(torch.rand(()))
        acc = 0.0
        for p, direction in zip(self.flip_ratio, self.directions):
            acc += p
            if u < acc:
                return self.flip(image, target, direction)
        return image, target

    @staticmethod
    def flip(image: torch.Tensor, target: dict, direction: str):
        """Flip ``image`` [C, H, W] and the target's boxes/polygons in ``direction``."""
        from ..ops.rotated_boxes import norm_angle

        h, w = image.shape[-2:]
        fx, fy = direction in ("horizontal", "diagonal"), direction in ("vertical", "diagonal")
        dims = [d for d, f in ((-1, fx), (-2, fy)) if f]
        image = image.flip(dims)
        target = dict(target)
        if "boxes" in target:
            b = target["boxes"].clone()
            if fx:
                b[:, 0] = w - b[:, 0]
            if fy:
                b[:, 1] = h - b[:, 1]
            if fx != fy:
                b[:, 4] = norm_angle(-b[:, 4], "le90")
            target["boxes"] = b
        if "polys" in target:
            p = target["polys"].clone()
            if fx:
                p[:, 0::2] = w - p[:, 0::2]
            if fy:
                p[:, 1::2] = h - p[:, 1::2]
            target["polys"] = p
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flip_ratio={self.flip_ratio}, directions={self.directions})"


class RandomPolyRotate:
    """Random rotation of an image and its oriented boxes about the image centre
    (mmrotate's ``PolyRandomRotate`` with ``auto_bound=False``: the image keeps its size).

    With probability ``rotate_ratio`` the angle is uniform in ``(-angles_range,
    angles_range)`` degrees, except when the image holds an object of one of
    ``rect_classes`` (label indices): then it is one of 90, 180, -90, -180. A positive
    angle turns the picture counter-clockwise on screen (OpenCV's ``getRotationMatrix2D``).
    The image is resampled bilinearly (``grid_sample``, zeros outside); boxes are rotated
    through their corners and re-fitted with ``poly_to_obb`` (le90), polygons rotated.

    As in mmrotate, whether or not it rotates, objects whose box centre is outside the
    image or whose box has a side of ``min_size`` pixels or less are dropped (boxes are not
    clipped). Where mmrotate would then skip an image left with no objects, this transform
    returns the image unrotated instead (its objects then filtered the same way).
    """

    DISCRETE_ANGLES = (90.0, 180.0, -90.0, -180.0)

    def __init__(self, rotate_ratio: float = 0.5, angles_range: float = 180.0,
                 rect_classes: Sequence[int] = (), min_size: float = 5.0):
        if not 0.0 <= rotate_ratio <= 1.0:
            raise ConfigError(f"rotate_ratio must be in [0, 1], got {rotate_ratio}")
        self.rotate_ratio = float(rotate_ratio)
        self.angles_range = float(angles_range)
        self.rect_classes = tuple(int(c) for c in rect_classes)
        self.min_size = float(min_size)

    def __call__(self, image: torch.Tensor, target: dict):
        if float(torch.rand(())) >= self.rotate_ratio:
            return image, self._filter(target, *image.shape[-2:])
        angle = self.angles_range * (2.0 * float(torch.rand(())) - 1.0)
        labels = target.get("labels")
        if (self.rect_classes and labels is not None and len(labels)
                and any(int(c) in self.rect_classes for c in labels.unique().tolist())):
            angle = self.DISCRETE_ANGLES[int(torch.randint(len(self.DISCRETE_ANGLES), ()))]
        rotated_image, rotated = self.rotate(image, target, angle)
        had = len(target["boxes"]) if "boxes" in target else 0
        rotated = self._filter(rotated, *image.shape[-2:])
        if had and len(rotated["boxes"]) == 0:
            return image, self._filter(target, *image.shape[-2:])
        return rotated_image, rotated

    def _filter(self, target: dict, h: int, w: int) -> dict:
        if "boxes" not in target:
            return target
        b = target["boxes"]
        keep = ((b[:, 0] > 0) & (b[:, 0] < w) & (b[:, 1] > 0) & (b[:, 1] < h)
                & (b[:, 2] > self.min_size) & (b[:, 3] > self.min_size))
        return target if bool(keep.all()) else _select(target, keep)

    @staticmethod
    def rotate(image: torch.Tensor, target: dict, angle: float):
        """Rotate ``image`` [C, H, W] and the target by ``angle`` degrees (counter-clockwise
        on screen) about the image centre, keeping the image size; nothing is filtered."""
        from ..ops.rotated_boxes import obb_to_poly, poly_to_obb

        h, w = image.shape[-2:]
        cx, cy = w / 2.0, h / 2.0
        rad = math.radians(angle)
        c, s = math.cos(rad), math.sin(rad)
        # forward map (OpenCV's rotation matrix): x' = c (x-cx) + s (y-cy) + cx, y' = -s (x-cx) + c (y-cy) + cy

        def forward(xy: torch.Tensor) -> torch.Tensor:
            x, y = xy[..., 0::2] - cx, xy[..., 1::2] - cy
            out = torch.empty_like(xy)
            out[..., 0::2] = c * x + s * y + cx
            out[..., 1::2] = -s * x + c * y + cy
            return out

        # each output pixel centre samples the input at the inverse map of its position
        dtype = image.dtype if image.is_floating_point() else torch.float32
        ys = torch.arange(h, dtype=torch.float64) + 0.5 - cy
        xs = torch.arange(w, dtype=torch.float64) + 0.5 - cx
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        src_x = c * gx - s * gy + cx
        src_y = s * gx + c * gy + cy
        grid = torch.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], dim=-1).to(dtype)
        out = F.grid_sample(image[None].to(dtype), grid[None], mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0]
        target = dict(target)
        if "boxes" in target and len(target["boxes"]):
            corners = obb_to_poly(target["boxes"].double())
            target["boxes"] = poly_to_obb(forward(corners)).to(target["boxes"].dtype)
        if "polys" in target and len(target["polys"]):
            target["polys"] = forward(target["polys"].double()).to(target["polys"].dtype)
        return out.to(image.dtype), target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rotate_ratio={self.rotate_ratio}, angles_range={self.angles_range}, "
                f"rect_classes={self.rect_classes}, min_size={self.min_size})")


class RotatedCompose:
    """Apply joint ``(image, target)`` transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


def dota_train_transform(classes: Sequence[str] = DOTA_V1_CLASSES, *, flip_ratio=(0.25, 0.25, 0.25),
                         rotate_ratio: float = 0.5, angles_range: float = 180.0,
                         rect_classes: Sequence[str] = DOTA_RECT_CLASSES) -> RotatedCompose:
    """The training augmentation of mmrotate's DOTA configs: flips, then a random rotation;
    ``rect_classes`` are names, resolved against ``classes`` (names not in it are ignored)."""
    rect = [i for i, name in enumerate(classes) if name in set(rect_classes)]
    return RotatedCompose([RandomRotatedFlip(flip_ratio), RandomPolyRotate(rotate_ratio, angles_range, rect)])
