"""Data layer for ``lsnet train`` / ``eval`` / ``predict``.

Two sources, chosen by :func:`build_datasets`'s ``data`` argument:

* ``"digits"``: scikit-learn's bundled 8x8 digits, upscaled to 64x64, with a
  seeded stratified train/validation split (no download); see :mod:`.digits`.
* any other string: a folder in ImageNet layout (``train/`` and ``val/`` of
  class folders), validated up front; unreadable image files are skipped and
  reported rather than crashing training (training images are replaced by
  the next readable one, validation images are left out: load validation
  sets with :func:`collate_readable`); see :mod:`.folder`.

Transforms come from timm (:func:`build_transforms`); :func:`load_image` is
the one image loader of every task; :func:`list_images` and :func:`output_names`
serve the ``predict`` commands. Problems the user must fix raise
:class:`DataError` (a ``ValueError``) whose message names the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from . import folder
from .digits import DIGITS_CLASS_NAMES, DIGITS_IMAGE_SIZE, DigitsDataset, build_digits_splits
from .folder import *  # noqa: F403  (the names listed in folder.__all__)
from .folder import ImageFolderDataset, scan_image_folder
from .transforms import ToRGB, build_transforms

__all__ = [*folder.__all__, "DIGITS_CLASS_NAMES", "DIGITS_IMAGE_SIZE", "DatasetSplits", "DigitsDataset", "ToRGB",
           "build_datasets", "build_eval_dataset", "build_transforms"]


@dataclass
class DatasetSplits:
    """Train and validation datasets with their class names; ``name`` is "digits" or the folder path."""

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    class_names: list[str]
    name: str


def build_datasets(data: str, *, img_size: int, train_transform, eval_transform, seed: int = 0,
                   val_fraction: float = 0.2, skip_log_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """Build the train/validation datasets for ``data`` ("digits" or an ImageNet-layout folder).

    ``img_size`` is accepted for symmetry with the transforms, which do all
    resizing (digits are stored at 64x64). ``seed`` and ``val_fraction`` apply
    to digits only (folders bring their own split). ``skip_log_dir`` is where
    folder datasets record unreadable files so DataLoader workers' reports reach
    the main process; by default each dataset uses its own temporary directory.
    Unreadable validation images are left out (items of ``None``), not replaced:
    load ``val`` with ``collate_fn=collate_readable`` and skip ``None`` batches.
    Raises :class:`DataError` naming the path for an invalid folder.
    """
    if img_size <= 0:
        raise ConfigError(f"img_size must be positive, got {img_size}")
    if data == "digits":
        train, val = build_digits_splits(train_transform=train_transform, eval_transform=eval_transform,
                                         seed=seed, val_fraction=val_fraction)
        return DatasetSplits(train=train, val=val, class_names=list(DIGITS_CLASS_NAMES), name="digits")

    class_names, samples = scan_image_folder(data, ("train", "val"))
    train = ImageFolderDataset(samples["train"], class_names, transform=train_transform,
                               root=os.path.join(data, "train"), skip_log_dir=skip_log_dir)
    val = ImageFolderDataset(samples["val"], class_names, transform=eval_transform,
                             root=os.path.join(data, "val"), skip_log_dir=skip_log_dir, substitute=False)
    return DatasetSplits(train=train, val=val, class_names=class_names, name=str(data))


def build_eval_dataset(data: str, *, transform, seed: int = 0, val_fraction: float = 0.2,
                       skip_log_dir: str | os.PathLike | None = None):
    """``(validation dataset, class names, name)`` of ``data`` for evaluation alone: a folder
    needs only its ``val/`` split. Unreadable images are left out (load it with
    ``collate_fn=collate_readable``); ``seed`` and ``val_fraction`` apply to digits only."""
    if data == "digits":
        _, val = build_digits_splits(eval_transform=transform, seed=seed, val_fraction=val_fraction)
        return val, list(DIGITS_CLASS_NAMES), "digits"
    class_names, samples = scan_image_folder(data, ("val",))
    val = ImageFolderDataset(samples["val"], class_names, transform=transform, root=os.path.join(data, "val"),
                             skip_log_dir=skip_log_dir, substitute=False)
    return val, class_names, str(data)
