"""The data of a dense run: the configured datasets (the shapes set, generated when missing,
or COCO / ADE20K-layout folders) and the evaluation loader."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from ..engine.distributed import DistInfo, barrier
from .config import DenseConfig

__all__ = ["build_dense_data", "eval_loader", "shapes_root"]

logger = logging.getLogger(__name__)


def shapes_root(cfg: DenseConfig, info: DistInfo = DistInfo()) -> Path:
    """The shapes set's folder, generated there first when missing (by the main process)."""
    from .shapes import is_generated, make_shapes

    root = Path(cfg.shapes_dir)
    if not is_generated(root):  # a set of any size made by `lsnet dense make-shapes` is kept
        if info.is_main:
            logger.info(f"generating the synthetic shapes dataset in {root} (once; about a minute per 1000 "
                        f"images) ...")
            make_shapes(root)
        barrier(info)
    return root


def _dataset(cfg: DenseConfig, split: str, info: DistInfo):
    from . import datasets as D

    train = split == "train"
    if cfg.task == "detect":
        # resizing (multi-scale in training) happens inside torchvision's model transform, which
        # also maps predictions back to the original image size; the dataset only flips
        tf = D.DetectionTransform(train, scales=None)
        masks = cfg.arch == "maskrcnn"
        if cfg.data == "shapes":
            return D.shapes_coco(shapes_root(cfg, info), split, transforms=tf, with_masks=masks)
        root = Path(cfg.data)
        return D.CocoDetection(root / split / "images", root / "annotations" / f"instances_{split}.json",
                               transforms=tf, with_masks=masks)
    if train:
        tf = D.SegmentationTransform(True, crop_size=cfg.crop_size, scale_range=cfg.scale_range,
                                     base_size=cfg.base_size, cat_max_ratio=cfg.cat_max_ratio)
    else:
        tf = D.SegmentationTransform(False, crop_size=cfg.crop_size)
    if cfg.data == "shapes":
        dataset = D.shapes_ade(shapes_root(cfg, info), split, transforms=tf)
    else:
        dataset = D.ADE20KSegmentation(cfg.data, "training" if train else "validation", transforms=tf)
    if info.is_main:
        dataset.validate_labels()  # a label outside the class range stops here, naming the file
    return dataset


def build_dense_data(cfg: DenseConfig, info: DistInfo = DistInfo(), splits: Sequence[str] = ("train", "val")
                     ) -> Tuple[Optional[torch.utils.data.Dataset], torch.utils.data.Dataset, List[str]]:
    """(train dataset or None, val dataset, class names) for the configured task and data;
    evaluation asks for ``splits=("val",)`` and needs no training split."""
    train = _dataset(cfg, "train", info) if "train" in splits else None
    val = _dataset(cfg, "val", info)
    return train, val, list((train or val).class_names)


def eval_loader(dataset, cfg: DenseConfig, info: DistInfo = DistInfo()) -> torch.utils.data.DataLoader:
    """This process's share of ``dataset``, one image per batch."""
    from torch.utils.data import DataLoader, Subset

    from ..engine.loop import split_for_rank
    from .datasets import collate_detection

    subset = Subset(dataset, split_for_rank(len(dataset), info)) if info.enabled else dataset
    return DataLoader(subset, batch_size=1, shuffle=False, num_workers=cfg.workers or 0,
                      collate_fn=collate_detection if cfg.task == "detect" else None)
