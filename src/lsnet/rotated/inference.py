"""An oriented-detection checkpoint ready for evaluation and prediction, and detection on
whole (large) images: cut into the patches the model was trained on, merged back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..engine.inference import open_task_checkpoint, rebuild_task_model

__all__ = ["RotatedInference", "load_rotated_for_inference", "detect_image"]


@dataclass
class RotatedInference:
    """An Oriented R-CNN in eval mode with the configuration and class names it was trained with."""

    model: nn.Module
    config: Any  # lsnet.rotated.config.RotatedConfig
    class_names: List[str]
    checkpoint: str


def load_rotated_for_inference(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"
                               ) -> RotatedInference:
    """Read a checkpoint of ``lsnet rotated train`` once, rebuild its model (the checkpoint holds
    every weight, so no backbone file is read) and load its weights; one
    :class:`CheckpointError` naming the file for anything else."""
    from .config import RotatedConfig
    from .task import build_rotated_model

    ck = open_task_checkpoint(path, "lsnet rotated train")
    if ck.kind != "rotated":
        raise ConfigError(f"{ck.path} was written by another task ({ck.kind}), not by lsnet rotated train")
    cfg, model = rebuild_task_model(ck, lambda c: RotatedConfig.from_dict({**c, "backbone_checkpoint": None}),
                                    build_rotated_model, lambda cfg: f"an Oriented R-CNN ({cfg.backbone})")
    return RotatedInference(model=model.to(device).eval(), config=cfg, class_names=ck.class_names,
                            checkpoint=str(ck.path))


@torch.no_grad()
def detect_image(model: nn.Module, image: torch.Tensor, patch_size: int, gap: int, merge_nms_iou: float = 0.1,
                 batch_size: int = 2):
    """Detections (boxes (N, 5), scores, labels) on a whole (3, H, W) image in [0, 1]: the image
    is cut into ``patch_size`` windows overlapping by ``gap`` (as the training data was), each
    window detected, and the detections moved back and merged with rotated NMS per class."""
    from .split import merge_patch_detections, sliding_windows

    model.eval()
    height, width = (int(v) for v in image.shape[-2:])
    windows = sliding_windows(width, height, [patch_size], [gap]).tolist()
    results = {}
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        # border windows are padded with black to the full size, as split_dota writes them
        crops = [F.pad(image[:, y0:y1, x0:x1], (0, max(0, x1 - width), 0, max(0, y1 - height)))
                 for x0, y0, x1, y1 in chunk]
        for (x0, y0, _, _), out in zip(chunk, model(crops)):
            results[f"image__{patch_size}__{x0}___{y0}"] = (out["boxes"].cpu(), out["scores"].cpu(),
                                                            out["labels"].cpu())
    merged = merge_patch_detections(results, iou_threshold=merge_nms_iou)
    if "image" in merged:
        return merged["image"]
    return torch.zeros((0, 5)), torch.zeros(0), torch.zeros(0, dtype=torch.long)
