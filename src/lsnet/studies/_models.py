"""The models a study compares: checkpoints (``--checkpoint``) and timm models with random
weights (``--model`` alone), loaded the way ``lsnet eval`` loads them, and the images a study
looks at (the digits or shapes defaults, a folder, or image files)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image
from torch import nn

from ..errors import ConfigError

__all__ = ["StudyModel", "contains_lsnet", "load_study_models", "sample_images"]

logger = logging.getLogger(__name__)


@dataclass
class StudyModel:
    """One model of a study, in eval mode and float32 on the CPU."""

    label: str
    model: nn.Module
    arch: str
    img_size: int
    crop_pct: float
    interpolation: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_classes: int
    class_names: Optional[List[str]]  # what the checkpoint recorded; None for random weights
    checkpoint: Optional[str]


def contains_lsnet(model: nn.Module) -> bool:
    """Whether ``model`` is, or holds, an LSNet (what :func:`lsnet.fuse` folds)."""
    from ..models.lsnet import LSNet

    return any(isinstance(m, LSNet) for m in model.modules())


def _unique_labels(labels: List[str]) -> List[str]:
    out, seen = [], {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label}#{seen[label]}")
    return out


def _checkpoint_labels(paths: List[str]) -> List[str]:
    """File stems, with as many parent folders as it takes to tell them apart (``d1/best``)."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def load_study_models(checkpoints: Sequence[str], models: Sequence[str], *, num_classes: int = 1000,
                      img_size: Optional[int] = None, fuse: bool = True,
                      default_model: Optional[str] = None) -> List[StudyModel]:
    """Models named on the command line.

    ``--checkpoint`` files are loaded with :func:`~lsnet.engine.inference.load_for_inference`
    (architecture, classes and preprocessing from the file); ``--model`` names, when given as
    many times as ``--checkpoint``, are their architectures in order; with no checkpoint each
    ``--model`` is a timm model with random weights and ``num_classes`` outputs. ``fuse``
    applies :func:`lsnet.fuse` to the models it folds (those holding an LSNet).
    """
    import timm

    import lsnet

    from ..engine.inference import load_for_inference, resolve_preprocessing

    checkpoints, models = list(checkpoints or []), list(models or [])
    if not checkpoints and not models and default_model:
        models = [default_model]
    if checkpoints and models and len(models) != len(checkpoints):
        raise ConfigError(f"{len(models)} --model for {len(checkpoints)} --checkpoint: give one --model per "
                          "--checkpoint (its architecture, in order), or --model alone for random weights")
    if not checkpoints and not models:
        raise ConfigError("give at least one --checkpoint or --model")
    out: List[StudyModel] = []
    labels: List[str] = []
    if checkpoints:
        for i, path in enumerate(checkpoints):
            im = load_for_inference(path, models[i] if models else None, img_size=img_size)
            pre = im.preprocessing
            out.append(StudyModel(Path(path).stem, im.model, im.arch, pre.img_size, pre.crop_pct, pre.interpolation,
                                  pre.mean, pre.std, im.num_classes,
                                  list(im.class_names) if im.info.get("class_names") else None, str(path)))
            labels.append(path)
    else:
        for name in models:
            if name not in timm.list_models():
                raise ConfigError(f"unknown model {name!r} (not registered with timm)")
            kwargs = {"num_classes": num_classes}
            if name.startswith("lsnet") and img_size:
                kwargs["img_size"] = img_size
            model = timm.create_model(name, **kwargs).eval()
            pre = resolve_preprocessing(model, img_size=img_size)
            out.append(StudyModel(name, model, name, pre.img_size, pre.crop_pct, pre.interpolation, pre.mean,
                                  pre.std, num_classes, None, None))
            labels.append(name)
        logger.warning("no --checkpoint: %s with randomly initialised weights", ", ".join(models))
    if checkpoints:
        labels = _checkpoint_labels(labels)
    for m, label in zip(out, _unique_labels(labels)):
        m.label = label
        m.model = m.model.float().eval()
        if fuse and contains_lsnet(m.model):
            m.model = lsnet.fuse(m.model)
    return out


def sample_images(data: str = "digits", images: Sequence[str] = (), count: int = 8, seed: int = 0
                  ) -> List[Tuple[str, Image.Image]]:
    """``(name, RGB image)`` pairs: the given image files (or folders), else ``count`` images
    of ``data``: ``digits`` (validation digits, spread over the split), ``shapes`` (the
    shape-crop validation images of seed ``seed``, rendered in memory), or an ImageFolder root
    (its ``val/`` split, else the folder's images)."""
    from ..data import build_eval_dataset, list_images, load_image

    if count < 1:
        raise ConfigError(f"the number of images must be at least 1, got {count}")
    if images:
        paths = list_images(images)
        return [(Path(p).stem, load_image(p)) for p in paths[:count]]
    if data == "shapes":
        import numpy as np

        from ..dense.shapes import SHAPE_CLASSES, render_shape_crop

        out = []
        for i in range(count):  # the stream of make_shape_crops' val split (index 3)
            img, k = render_shape_crop(np.random.default_rng([seed, 3, i]), 64)
            out.append((f"shape{i}_{SHAPE_CLASSES[k]}", Image.fromarray(img)))
        return out
    if data == "digits":
        val, _, _ = build_eval_dataset("digits", transform=None, seed=seed)
        return [(f"digit{idx}", img.convert("RGB")) for idx, img in val.sample_images(count)]
    root = Path(data)
    if (root / "val").is_dir():
        val, _, _ = build_eval_dataset(str(root), transform=None)
        step = max(len(val) // count, 1)
        return [(Path(val.samples[i][0]).stem, val.image(i)) for i in range(0, len(val), step)][:count]
    paths = list_images([root])
    return [(Path(p).stem, load_image(p)) for p in paths[:count]]
