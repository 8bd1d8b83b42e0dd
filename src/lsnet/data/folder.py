"""Image-folder datasets (ImageNet layout), image loading for prediction, and data errors.

Layout expected by :func:`scan_image_folder`::

    root/train/<class>/**/*.jpg
    root/val/<class>/**/*.jpg

Class indices follow ``torchvision.datasets.ImageFolder``: every sub-directory of
a split is a class, classes are sorted by name, and files are collected
recursively in sorted order. The layout is validated up front and every problem
the user must fix raises :class:`DataError` naming the offending path.

Unreadable images
-----------------
A corrupt or truncated file must not stop a long training run, so
:class:`ImageFolderDataset` catches decoding failures in ``__getitem__``,
records the file and returns the next readable sample instead (wrapping around),
keeping batches full. Items stay plain ``(tensor, label)`` pairs.

A validation set must not do that: a substitute would be scored twice and skew the
metrics. A dataset built with ``substitute=False`` returns ``None`` for an unreadable
file (recorded the same way); :func:`collate_readable` drops those items from the
batch, and returns ``None`` for a batch that had nothing readable.

Because DataLoader workers are separate processes, an in-memory counter would
be invisible to the main process. Each failure is therefore appended as one
JSON line to a log file in the dataset's ``skip_log_dir``, one file per
(dataset, process) pair, written with a single ``O_APPEND`` write so concurrent
workers never interleave. :meth:`ImageFolderDataset.skipped_files` reads all of
this dataset's log files (from any process) and de-duplicates;
:meth:`~ImageFolderDataset.reset_skipped` deletes them. When no directory is
given the dataset creates a private temporary one, removed when the dataset
that created it is garbage-collected in the process that created it.

Links
-----
Folders are scanned following symbolic links (datasets are often assembled from
links), but each real folder is entered once and each real file listed once, so a
link loop (``a/self -> .``) or a link back up the tree neither multiplies images nor
gives them the label of another class; what was passed over is logged.

Image modes
-----------
:func:`load_image` returns 8-bit RGB for every mode PIL reads. 16-bit greyscale
(``I;16``) is scaled from 0..65535, 32-bit integer images (``I``) from 0..255 or
0..65535, whichever holds their values (else from their own range), float images
(``F``) from 0..1 when their values fit (else from their own range); PIL's own
conversion clips them, which gives an almost white picture.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import uuid
import weakref
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import UserError

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "IMG_EXTENSIONS",
    "ImageFolderDataset",
    "ReadableBatches",
    "ReadableImages",
    "collate_readable",
    "is_image_file",
    "list_images",
    "load_image",
    "output_names",
    "scan_image_folder",
    "to_rgb",
]

logger = logging.getLogger(__name__)

#: File extensions treated as images (compared case-insensitively), as in torchvision/timm.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# What PIL raises for files it cannot identify or decode: UnidentifiedImageError and
# "image file is truncated" are OSErrors; broken headers surface as SyntaxError,
# ValueError, EOFError, struct.error or zlib.error depending on the plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)


class DataError(UserError, ValueError):
    """A data problem the user must fix; the message names the path or dataset and the fault."""

    def __str__(self) -> str:
        text = super().__str__()
        # A DataLoader worker re-raises it as DataError("Caught DataError in DataLoader worker
        # process N.\nOriginal Traceback ...\nlsnet...DataError: <message>"): keep the one line.
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            last = text.rstrip().splitlines()[-1]
            return last.split(": ", 1)[1] if ": " in last else last
        return text


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A path given by the user does not exist (also catchable as ``FileNotFoundError``)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMG_EXTENSIONS)


# Modes whose values PIL's convert("RGB") clips to 0..255 instead of scaling.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_uint8(arr: np.ndarray, full_scale: float) -> np.ndarray:
    """Scale ``arr`` from ``0..full_scale`` to 0..255, or from its own range when it does not fit."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0 or hi > full_scale:  # no known range: stretch this image's own
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    else:
        arr = arr / full_scale
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB; 16-bit, 32-bit integer and float images are scaled, not clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            full = 65535.0
        elif img.mode == "I":
            # 8-bit data stored as 32-bit stays as it is; 16-bit PNGs open as "I" in older Pillow
            full = 255.0 if arr.size and 0 <= arr.min() and arr.max() <= 255 else 65535.0
        else:  # "F": the usual float convention is 0..1
            full = 1.0
        return Image.fromarray(_to_uint8(arr, full), mode="L").convert("RGB")
    return img.convert("RGB")


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as RGB; raises PIL's/OS errors unchanged."""
    with open(path, "rb") as f:
        img = Image.open(f)
        # load() forces the full decode while the file is open, so truncation
        # errors surface here rather than later inside a transform.
        img.load()
        return to_rgb(img)


def load_image(path: str | os.PathLike, context: str = "") -> Image.Image:
    """Load one image file as an 8-bit RGB PIL image (the one loader of every task).

    Raises :class:`DataFileNotFoundError` if ``path`` does not exist and
    :class:`DataError` if it is a directory or not an image PIL can decode;
    ``context`` (e.g. `` (listed in ann.json)``) is appended to the message.
    """
    p = Path(path)
    if not p.exists():
        raise DataFileNotFoundError(f"{p}: file does not exist{context}")
    if p.is_dir():
        raise DataError(f"{p} is a directory, not an image file{context}")
    try:
        return _open_rgb(p)
    except _DECODE_ERRORS as err:
        raise DataError(f"{p} is not an image that PIL can read{context} ({type(err).__name__}: {err})") from err


class ReadableImages:
    """Iterate ``(path, RGB image)`` over ``paths``, logging and counting (``failures``) the
    files that cannot be read instead of stopping: the image loop of every ``predict``."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = list(paths)
        self.failures = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        for path in self.paths:
            try:
                image = load_image(path)
            except DataError as err:
                logger.warning("%s: skipped: %s", path, err)
                self.failures += 1
                continue
            yield path, image


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand ``paths`` into image files: folders recursively (sorted), files kept as given.

    Folders are walked following links, each real folder and file once (see the module
    docstring). Raises :class:`DataFileNotFoundError` for a path that does not exist and
    :class:`DataError` for a folder that contains no image files.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataFileNotFoundError(f"{p}: no such file or directory")
        if p.is_dir():
            walk = _ImageWalk()
            found = walk.files(p)
            walk.report(p)
            if not found:
                raise DataError(f"{p}: folder contains no image files (extensions {', '.join(IMG_EXTENSIONS)})")
            out.extend(Path(f) for f in found)
        else:
            # An explicitly named file is kept even without an image extension:
            # the user asked for it, and load_image reports it if it is not an image.
            out.append(p)
    return out


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct file-name stem per input, for writing one output per image.

    The stem of the file where it is unique among ``paths``; otherwise the parent
    folder's name joined to it (``a/x.jpg``, ``b/x.jpg`` -> ``a_x``, ``b_x``); a counter
    where even that collides. Compared case-insensitively (some file systems are).
    """
    paths = [Path(p) for p in paths]
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem.lower()] = counts.get(p.stem.lower(), 0) + 1
    names = [p.stem if counts[p.stem.lower()] == 1 else f"{p.parent.name or 'root'}_{p.stem}" for p in paths]
    used: set[str] = set()
    out = []
    for name in names:
        unique, n = name, 1
        while unique.lower() in used:
            n += 1
            unique = f"{name}_{n}"
        used.add(unique.lower())
        out.append(unique)
    return out


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the sub-directories of ``split_dir`` (ImageFolder's class order)."""
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir())


class _ImageWalk:
    """Recursive, sorted listing of image files that follows links but enters each real
    folder once and lists each real file once; keeps what it passed over."""

    def __init__(self, seen_dirs: Iterable[str | os.PathLike] = ()):
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()
        self.skipped_dirs: list[str] = []
        self.skipped_files: list[str] = []
        for d in seen_dirs:
            self._mark(d)

    def _mark(self, path) -> bool:
        """Record folder ``path``; False when it was seen before (a loop or a second link to it)."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def files(self, top: str | os.PathLike, entered: bool = False) -> list[str]:
        """Image files under ``top`` in ImageFolder's order (a folder's files, then its sub-folders')."""
        if not entered:
            self._mark(top)
        try:
            dev = os.stat(top).st_dev
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # an unreadable folder is passed over, as os.walk does
            return []
        out: list[str] = []
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(e.path)
            elif is_image_file(e.name):
                try:
                    # a plain file's inode comes with the listing (no stat per image: ImageNet has 1.3 M)
                    st = os.stat(e.path) if e.is_symlink() else None
                except OSError:  # a broken link: listed, and reported as unreadable when read
                    out.append(e.path)
                    continue
                key = (st.st_dev, st.st_ino) if st is not None else (dev, e.inode())
                if key in self.seen_files:
                    self.skipped_files.append(e.path)
                    continue
                self.seen_files.add(key)
                out.append(e.path)
        for d in subdirs:
            if self._mark(d):
                out.extend(self.files(d, entered=True))
            else:
                self.skipped_dirs.append(d)
        return out

    def report(self, where: str | os.PathLike) -> None:
        """Log what was passed over, if anything."""
        if self.skipped_dirs or self.skipped_files:
            logger.warning(
                "%s: each real folder and file is read once: passed over %d link(s) to folders already scanned%s "
                "and %d more path(s) of files already listed%s", where, len(self.skipped_dirs),
                f" (e.g. {self.skipped_dirs[0]})" if self.skipped_dirs else "", len(self.skipped_files),
                f" (e.g. {self.skipped_files[0]})" if self.skipped_files else "")


def _summarise(items: Sequence[str], limit: int = 10) -> str:
    """``a, b, c`` or ``a, b, ... (N more)`` for error messages."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more)"


def scan_image_folder(root: str | os.PathLike, splits: Sequence[str] = ("train", "val")
                      ) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Validate an ImageNet-layout folder and list its samples.

    Returns ``(class_names, {split: [(path, label), ...]})``. Raises
    :class:`DataError` (naming the path) when the root is missing or not a
    directory, a split is missing or has no class folders, a class folder holds
    no image files, or the splits' class lists differ.
    """
    root = Path(root)
    if not root.exists():
        raise DataFileNotFoundError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: dataset path is not a directory (expected a folder with train/ and val/)")

    classes_per_split: dict[str, list[str]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            what = "is not a directory" if split_dir.exists() else "is missing"
            raise DataError(f"{split_dir}: '{split}' split folder {what} "
                            f"(expected {root}/{split}/<class>/<image files>)")
        classes = _class_folders(split_dir)
        if not classes:
            raise DataError(f"{split_dir}: no class folders found (expected {split_dir}/<class>/<image files>)")
        classes_per_split[split] = classes

    first, *rest = splits
    for other in rest:
        a, b = classes_per_split[first], classes_per_split[other]
        if a != b:
            only_a = sorted(set(a) - set(b))
            only_b = sorted(set(b) - set(a))
            raise DataError(
                f"{root}: class folders differ between {first}/ and {other}/: "
                f"only in {first}: [{_summarise(only_a)}]; only in {other}: [{_summarise(only_b)}]")

    class_names = classes_per_split[first]
    samples: dict[str, list[tuple[str, int]]] = {}
    for split in splits:
        split_samples: list[tuple[str, int]] = []
        empty: list[str] = []
        # The split folder and every class folder count as seen before any is walked, so a
        # link from one class to another (or back up the tree) is not followed into it.
        walk = _ImageWalk([root / split, *(root / split / name for name in class_names)])
        for label, name in enumerate(class_names):
            class_dir = root / split / name
            files = walk.files(class_dir, entered=True)
            if not files:
                empty.append(str(class_dir))
            split_samples.extend((f, label) for f in files)
        if empty:
            noun = "folder has" if len(empty) == 1 else "folders have"
            raise DataError(f"{_summarise(empty)}: class {noun} no image files "
                            f"(extensions {', '.join(IMG_EXTENSIONS)}, any case)")
        walk.report(root / split)
        samples[split] = split_samples
    return class_names, samples


class ImageFolderDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` pairs from a list of ``(path, label)`` samples.

    Unreadable files are recorded in ``skip_log_dir`` (see the module docstring) and
    skipped: with ``substitute`` (training) the next readable sample is returned
    instead; without it (validation) the item is ``None``, which
    :func:`collate_readable` drops, so no image is scored twice.

    Attributes: ``samples`` (list of ``(path, label)``), ``targets`` (list of
    int labels), ``classes`` (class names), ``root``.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], *,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 root: str | os.PathLike | None = None,
                 skip_log_dir: str | os.PathLike | None = None,
                 substitute: bool = True):
        self.substitute = substitute
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = [y for _, y in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self.root = None if root is None else str(root)
        # The token keeps two datasets sharing one log directory apart; it travels
        # with the dataset when it is pickled into worker processes.
        self._log_token = uuid.uuid4().hex
        self._finalizer = None
        if skip_log_dir is None:
            skip_log_dir = tempfile.mkdtemp(prefix="lsnet-skipped-")
            # Delete only from the creating process: a forked worker that drops its
            # copy must not remove the directory the main process still reads.
            self._finalizer = weakref.finalize(self, _remove_owned_dir, skip_log_dir, os.getpid())
        else:
            Path(skip_log_dir).mkdir(parents=True, exist_ok=True)
        self.skip_log_dir = str(skip_log_dir)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_finalizer"] = None  # finalizers belong to the creating process only
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of size {n}")
        index %= n
        if not self.substitute:
            path, label = self.samples[index]
            try:
                img = _open_rgb(path)
            except _DECODE_ERRORS as err:
                self._record_skip(path, err)
                return None
            return (self.transform(img) if self.transform is not None else img), label
        for step in range(n):
            path, label = self.samples[(index + step) % n]
            try:
                img = _open_rgb(path)
            except _DECODE_ERRORS as err:
                self._record_skip(path, err)
                continue
            return (self.transform(img) if self.transform is not None else img), label
        raise DataError(f"{self.root or 'dataset'}: none of its {n} image files could be read")

    def image(self, index: int) -> Image.Image:
        """The untransformed RGB image of item ``index``; :class:`DataError` if unreadable."""
        return load_image(self.samples[index][0])

    def sample_images(self, count: int) -> list[tuple[int, Image.Image]]:
        """Up to ``count`` readable ``(index, untransformed RGB image)`` pairs spread evenly
        over the dataset (e.g. to save examples); unreadable files are passed over."""
        n = len(self.samples)
        step = max(n // max(count, 1), 1)
        out: list[tuple[int, Image.Image]] = []
        for start in range(0, n, step):
            for i in range(start, min(start + step, n)):  # the first readable one of each stretch
                try:
                    out.append((i, _open_rgb(self.samples[i][0])))
                    break
                except _DECODE_ERRORS:
                    continue
            if len(out) >= count:
                break
        return out

    # -- unreadable-file bookkeeping ---------------------------------------------------------

    def _log_path(self) -> Path:
        return Path(self.skip_log_dir) / f"skipped-{self._log_token}-{os.getpid()}.jsonl"

    def _record_skip(self, path: str, err: BaseException) -> None:
        line = (json.dumps({"path": path, "error": f"{type(err).__name__}: {err}"}) + "\n").encode()
        # One write() on an O_APPEND descriptor: a reader never sees half a record
        # from a concurrent worker, and every failure is logged (not only the first
        # per process) so reset_skipped() also works with persistent workers.
        fd = os.open(self._log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _log_files(self) -> list[Path]:
        d = Path(self.skip_log_dir)
        return sorted(d.glob(f"skipped-{self._log_token}-*.jsonl")) if d.is_dir() else []

    def skipped_files(self) -> list[str]:
        """Paths that failed to load since the last reset, in any process; de-duplicated, sorted."""
        seen: set[str] = set()
        for log in self._log_files():
            try:
                text = log.read_text()
            except FileNotFoundError:  # removed by a concurrent reset
                continue
            for line in text.splitlines(keepends=True):
                if not line.endswith("\n"):  # a record still being written
                    continue
                try:
                    seen.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):  # a damaged log line must not stop training
                    continue
        return sorted(seen)

    def skipped_count(self) -> int:
        """Number of distinct unreadable files seen since the last reset."""
        return len(self.skipped_files())

    def reset_skipped(self) -> None:
        """Forget the unreadable files recorded so far (e.g. at the start of an epoch)."""
        for log in self._log_files():
            log.unlink(missing_ok=True)


def collate_readable(batch):
    """DataLoader ``collate_fn`` that drops the ``None`` items of unreadable files (see
    :class:`ImageFolderDataset` with ``substitute=False``) and collates the rest as PyTorch
    does; ``None`` when nothing in the batch was readable (skip such batches)."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


class ReadableBatches:
    """Iterate a DataLoader built with :func:`collate_readable`, passing over the batches in
    which nothing was readable (``len`` is the loader's, an upper bound)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (batch for batch in self.loader if batch is not None)


def _remove_owned_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)
