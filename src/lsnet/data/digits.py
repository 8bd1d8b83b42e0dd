"""The bundled scikit-learn digits dataset as a small, download-free image benchmark.

``sklearn.datasets.load_digits()`` ships 1,797 grayscale 8x8 images of the
digits 0-9 with values 0..16. They are scaled to 8-bit (0..255) and upscaled
once, with bicubic interpolation, to :data:`DIGITS_IMAGE_SIZE` pixels a side so
the usual timm transforms see an ordinary small image. The train/validation
split is stratified and depends only on ``seed`` (scikit-learn's
``train_test_split`` with ``random_state``), never on torch's global RNG.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .folder import DataError

__all__ = ["DIGITS_CLASS_NAMES", "DIGITS_IMAGE_SIZE", "DigitsDataset", "build_digits_splits", "load_digits_images"]

#: Class names of the digits dataset; label ``i`` is the digit ``i``.
DIGITS_CLASS_NAMES = [str(i) for i in range(10)]

#: Side length, in pixels, of the stored (upscaled) digit images.
DIGITS_IMAGE_SIZE = 64


def load_digits_images(size: int = DIGITS_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``(uint8 images of shape (N, size, size), int64 labels (N,))``."""
    from sklearn.datasets import load_digits  # imported lazily: only the digits path needs it

    bunch = load_digits()
    raw = np.asarray(bunch.images, dtype=np.float64)  # (N, 8, 8), values 0..16
    small = np.clip(np.rint(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.empty((len(small), size, size), dtype=np.uint8)
    for i, im in enumerate(small):
        images[i] = np.asarray(Image.fromarray(im, mode="L").resize((size, size), Image.Resampling.BICUBIC))
    return images, np.asarray(bunch.target, dtype=np.int64)


class DigitsDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` pairs over a subset of the digits.

    Images are kept as one uint8 array (cheap to pickle into DataLoader
    workers) and turned into grayscale ``"L"`` PIL images on access; the
    transform is expected to convert them to RGB (``build_transforms`` does).

    Attributes: ``targets`` (list of int labels), ``indices`` (positions in
    ``load_digits()``), ``classes`` (:data:`DIGITS_CLASS_NAMES`).
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], indices: Sequence[int], *,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None):
        if len(images) != len(targets) or len(images) != len(indices):
            raise ValueError("images, targets and indices must have the same length")
        self._images = np.ascontiguousarray(images, dtype=np.uint8)
        self.targets = [int(t) for t in targets]
        self.indices = [int(i) for i in indices]
        self.classes = list(DIGITS_CLASS_NAMES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        """The untransformed grayscale PIL image of item ``index``."""
        return Image.fromarray(self._images[index], mode="L")

    def __getitem__(self, index: int):
        img = self.image(index)
        return (self.transform(img) if self.transform is not None else img), self.targets[index]

    # The digits are in memory and always readable; these mirror ImageFolderDataset's
    # bookkeeping so the engine can treat both kinds of dataset alike.
    def skipped_files(self) -> list[str]:
        """Always empty: the bundled digits cannot be unreadable."""
        return []

    def skipped_count(self) -> int:
        """Always 0."""
        return 0

    def reset_skipped(self) -> None:
        """Nothing to reset."""

    def sample_images(self, count: int) -> list[tuple[int, Image.Image]]:
        """Up to ``count`` ``(index, untransformed image)`` pairs spread evenly over the dataset."""
        step = max(len(self) // max(count, 1), 1)
        return [(i, self.image(i)) for i in range(0, len(self), step)][:count]


def build_digits_splits(*, train_transform=None, eval_transform=None, seed: int = 0,
                        val_fraction: float = 0.2) -> tuple[DigitsDataset, DigitsDataset]:
    """Seeded, stratified ``(train, val)`` datasets over the digits (about 1,437 / 360 by default)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"digits: val_fraction must be strictly between 0 and 1, got {val_fraction}")
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_images()
    all_idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(all_idx, test_size=val_fraction, stratify=labels,
                                          random_state=seed, shuffle=True)
    # Canonical (ascending) order inside each split: samplers do the shuffling.
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    train = DigitsDataset(images[train_idx], labels[train_idx], train_idx, transform=train_transform)
    val = DigitsDataset(images[val_idx], labels[val_idx], val_idx, transform=eval_transform)
    return train, val
