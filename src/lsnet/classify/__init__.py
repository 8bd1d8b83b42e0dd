"""Image classification (``lsnet train|eval|predict``): the paper's ImageNet recipe on the engine."""

from .config import PRESETS, TrainConfig, resolve_config
from .evaluate import evaluate
from .task import ClassificationTask, DistillationLoss, build_model, train

__all__ = ["TrainConfig", "PRESETS", "resolve_config", "train", "evaluate", "ClassificationTask",
           "DistillationLoss", "build_model"]
