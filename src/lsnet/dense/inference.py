"""A detection or segmentation checkpoint ready for evaluation and prediction, read once
and checked: a damaged or crafted file stops with one :class:`CheckpointError` naming it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Union

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models.checkpoint import CheckpointError, open_checkpoint

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

    ck = open_checkpoint(path)
    content = ck.content
    config = content.get("config") if isinstance(content, dict) else None
    if not isinstance(config, dict) or "task" not in config or not isinstance(content.get("model"), dict):
        raise CheckpointError(f"{ck.path} is not a checkpoint written by lsnet detect/segment train")
    names = content.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{ck.path}: its metadata 'class_names' is not a list of class names (a damaged file, "
                              "or not written by lsnet)")
    if task is not None and config["task"] != task:
        writers = {"classify": "lsnet train", "detect": "lsnet detect train", "segment": "lsnet segment train"}
        raise ConfigError(f"{ck.path} was written by {writers.get(config['task'], config['task'])}, not by "
                          f"{writers.get(task, task)}")
    try:
        cfg = DenseConfig.from_dict({**config, "backbone_checkpoint": None})
        model = build_dense_model(cfg, len(names))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{ck.path}: its configuration cannot be used ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from err
    try:
        model.load_state_dict(content["model"])
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(f"{ck.path}: its weights do not fit a {cfg.arch} with the {len(names)} classes its "
                              f"metadata names ({detail})") from err
    return DenseInference(model=model.to(device).eval(), config=cfg, class_names=list(names),
                          checkpoint=str(ck.path))
