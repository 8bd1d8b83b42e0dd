"""Image transforms for training and evaluation, built by timm.

All augmentation comes from :func:`timm.data.create_transform`; this module only
chooses its arguments and puts a colour-mode conversion in front, because timm's
pipelines (RandAugment, ``Normalize`` with three means) expect RGB while the
bundled digits are grayscale and folder images may be palette, RGBA or CMYK.

Note that timm applies colour jitter only when no ``auto_augment`` policy is
given (RandAugment already perturbs colour); ``color_jitter`` is passed through
unchanged so that behaviour is timm's, as in the reference training recipe.

Pillow compatibility: timm's "PosterizeIncreasing" op asks for 0 bits when the
sampled magnitude reaches its maximum (e.g. m9 with mstd0.5 clipped at 10, a
few percent of calls). Pillow >= 13 rejects ``ImageOps.posterize(img, 0)`` with
a ValueError, which would kill a training run at random. Older Pillow (and the
TensorFlow reference) returned an all-black image for 0 bits, so the posterize
ops of timm's augmentation policies are pointed at :func:`posterize_compat`,
which does exactly that and otherwise defers to timm.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data import auto_augment as timm_aa
from torchvision import transforms as T

from ..errors import ConfigError

__all__ = ["ToRGB", "build_transforms", "posterize_compat"]


def posterize_compat(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, except that keeping 0 bits gives a black image instead of Pillow's ValueError."""
    if bits_to_keep <= 0:
        # Keeping no bits masks every channel value to 0: what Pillow < 13 and TF produced.
        return Image.new(img.mode, img.size)
    return timm_aa.posterize(img, bits_to_keep, **kwargs)


def _patch_posterize(tf) -> None:
    """Point the posterize ops of any timm augmentation policy inside ``tf`` at :func:`posterize_compat`."""
    for step in getattr(tf, "transforms", [tf]):
        if hasattr(step, "transforms"):
            _patch_posterize(step)
            continue
        ops = list(getattr(step, "ops", None) or [])  # RandAugment, AugMixAugment
        for sub_policy in getattr(step, "policy", None) or []:  # AutoAugment: list of sub-policies
            ops.extend(sub_policy)
        for op in ops:
            if isinstance(op, timm_aa.AugmentOp) and op.aug_fn is timm_aa.posterize:
                op.aug_fn = posterize_compat


class ToRGB:
    """Convert any PIL image mode (L, P, RGBA, CMYK, ...) to RGB; RGB passes through.

    A class rather than a lambda so the composed transform can be pickled into
    DataLoader worker processes started with ``spawn``/``forkserver``.
    """

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transforms(
    is_training: bool,
    img_size: int,
    *,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    auto_augment: str | None = None,
    color_jitter: float = 0.4,
    re_prob: float = 0.0,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.08, 1.0),
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    grayscale_to_rgb: bool = True,
) -> Callable[[Image.Image], torch.Tensor]:
    """Return a PIL-image -> normalised CHW float tensor transform.

    Training: RandomResizedCrop(``img_size``, ``scale``) + horizontal flip with
    probability ``hflip`` + ``auto_augment`` (a timm RandAugment string such as
    ``"rand-m9-mstd0.5-inc1"``) or colour jitter + random erasing (``re_prob``).
    Evaluation: resize the short side to ``img_size / crop_pct``, centre-crop
    ``img_size``. With ``grayscale_to_rgb`` every image is converted to RGB first.
    """
    if img_size <= 0:
        raise ConfigError(f"img_size must be positive, got {img_size}")
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if is_training:
        tf = create_transform(
            img_size,
            is_training=True,
            scale=tuple(scale),
            hflip=hflip,
            color_jitter=color_jitter,
            auto_augment=auto_augment or None,  # "" would otherwise reach timm's parser
            interpolation=interpolation,
            mean=mean,
            std=std,
            re_prob=re_prob,
        )
        _patch_posterize(tf)
    else:
        tf = create_transform(
            img_size,
            is_training=False,
            crop_pct=crop_pct,
            interpolation=interpolation,
            mean=mean,
            std=std,
        )
    if grayscale_to_rgb:
        tf = T.Compose([ToRGB(), tf])
    return tf
