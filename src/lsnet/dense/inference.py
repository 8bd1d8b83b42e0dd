"""A detection or segmentation checkpoint ready for evaluation and prediction, read once
and checked: a damaged or crafted file stops with one :class:`CheckpointError` naming it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Union

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..engine.inference import open_task_checkpoint, rebuild_task_model
from ..models.checkpoint import CheckpointError

__all__ = ["DenseInference", "load_dense_for_inference"]


@dataclass
class DenseInference:
    """A dense model in eval mode with the configuration and class names it was trained with."""

    model: nn.Module
    config: Any  # lsnet.dense.engine.DenseConfig
    class_names: List[str]
    checkpoint: str


def load_dense_for_inference(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                             task: Optional[str] = None) -> DenseInference:
    """Read a checkpoint of ``lsnet detect|segment train`` once, rebuild its model (without
    fetching backbone weights: the checkpoint holds them all) and load its weights.

    ``task`` ("detect" / "segment"), when given, must be the checkpoint's. Raises
    :class:`CheckpointError` naming the file for anything that is not such a checkpoint or
    whose metadata does not fit its weights.
    """
    from .config import DenseConfig
    from .task import build_dense_model

    ck = open_task_checkpoint(path, "lsnet detect/segment train")
    if "task" not in ck.config:
        raise CheckpointError(f"{ck.path} is not a checkpoint written by lsnet detect/segment train")
    if task is not None and ck.config["task"] != task:
        writers = {"classify": "lsnet train", "detect": "lsnet detect train", "segment": "lsnet segment train"}
        raise ConfigError(f"{ck.path} was written by {writers.get(ck.config['task'], ck.config['task'])}, not by "
                          f"{writers.get(task, task)}")
    cfg, model = rebuild_task_model(ck, lambda c: DenseConfig.from_dict({**c, "backbone_checkpoint": None}),
                                    build_dense_model, lambda cfg: f"a {cfg.arch}")
    return DenseInference(model=model.to(device).eval(), config=cfg, class_names=ck.class_names,
                          checkpoint=str(ck.path))
