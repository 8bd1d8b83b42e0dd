"""Training and evaluation: the paper's recipe (Table 10) from timm's parts."""

from .config import PRESETS, TrainConfig, resolve_config
from .evaluate import evaluate
from .train import DistillationLoss, TrainingError, train

__all__ = ["TrainConfig", "PRESETS", "resolve_config", "train", "evaluate", "TrainingError", "DistillationLoss"]
