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

Because DataLoader workers are separate processes, an in-memory counter would
be invisible to the main process. Each failure is therefore appended as one
JSON line to a log file in the dataset's ``skip_log_dir``, one file per
(dataset, process) pair, written with a single ``O_APPEND`` write so concurrent
workers never interleave. :meth:`ImageFolderDataset.skipped_files` reads all of
this dataset's log files (from any process) and de-duplicates;
:meth:`~ImageFolderDataset.reset_skipped` deletes them. When no directory is
given the dataset creates a private temporary one, removed when the dataset
that created it is garbage-collected in the process that created it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import uuid
import weakref
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "IMG_EXTENSIONS",
    "ImageFolderDataset",
    "is_image_file",
    "list_images",
    "load_image",
    "scan_image_folder",
]

#: File extensions treated as images (compared case-insensitively), as in torchvision/timm.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# What PIL raises for files it cannot identify or decode: UnidentifiedImageError and
# "image file is truncated" are OSErrors; broken headers surface as SyntaxError,
# ValueError, EOFError, struct.error or zlib.error depending on the plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)


class DataError(ValueError):
    """A data problem the user must fix; the message names the path or dataset and the fault."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A path given by the user does not exist (also catchable as ``FileNotFoundError``)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMG_EXTENSIONS)


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as RGB; raises PIL's/OS errors unchanged."""
    with open(path, "rb") as f:
        img = Image.open(f)
        # convert() forces the full decode while the file is open, so truncation
        # errors surface here rather than later inside a transform.
        return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load one image file as an RGB PIL image for prediction.

    Raises :class:`DataFileNotFoundError` if ``path`` does not exist and
    :class:`DataError` if it is a directory or not an image PIL can decode.
    """
    p = Path(path)
    if not p.exists():
        raise DataFileNotFoundError(f"{p}: file does not exist")
    if p.is_dir():
        raise DataError(f"{p} is a directory, not an image file")
    try:
        return _open_rgb(p)
    except _DECODE_ERRORS as err:
        raise DataError(f"{p} is not an image that PIL can read ({type(err).__name__}: {err})") from err


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand ``paths`` into image files: folders recursively (sorted), files kept as given.

    Raises :class:`DataFileNotFoundError` for a path that does not exist and
    :class:`DataError` for a folder that contains no image files.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataFileNotFoundError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                raise DataError(f"{p}: folder contains no image files (extensions {', '.join(IMG_EXTENSIONS)})")
            out.extend(found)
        else:
            # An explicitly named file is kept even without an image extension:
            # the user asked for it, and load_image reports it if it is not an image.
            out.append(p)
    return out


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the sub-directories of ``split_dir`` (ImageFolder's class order)."""
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir())


def _images_in(class_dir: Path) -> list[str]:
    """Image files under ``class_dir``, recursively, in ImageFolder's (sorted walk) order."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames.sort()  # os.walk visits sub-directories in this list's order
        files.extend(os.path.join(dirpath, name) for name in sorted(filenames) if is_image_file(name))
    return files


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
        for label, name in enumerate(class_names):
            class_dir = root / split / name
            files = _images_in(class_dir)
            if not files:
                empty.append(str(class_dir))
            split_samples.extend((f, label) for f in files)
        if empty:
            noun = "folder has" if len(empty) == 1 else "folders have"
            raise DataError(f"{_summarise(empty)}: class {noun} no image files "
                            f"(extensions {', '.join(IMG_EXTENSIONS)}, any case)")
        samples[split] = split_samples
    return class_names, samples


class ImageFolderDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` pairs from a list of ``(path, label)`` samples.

    Unreadable files are skipped (see the module docstring): the next readable
    sample is returned instead and the file is recorded in ``skip_log_dir``.

    Attributes: ``samples`` (list of ``(path, label)``), ``targets`` (list of
    int labels), ``classes`` (class names), ``root``.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], *,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 root: str | os.PathLike | None = None,
                 skip_log_dir: str | os.PathLike | None = None):
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


def _remove_owned_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)
