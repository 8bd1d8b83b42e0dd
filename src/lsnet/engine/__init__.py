"""The one training engine every task plugs into (:class:`Task`, :func:`fit`), and its parts:
the base configuration, processes and devices, progress and metrics."""

from .config import RunConfig
from .loop import Run, Task, TrainingError, UpdateSchedule, fit, train_loader

__all__ = ["RunConfig", "Run", "Task", "fit", "TrainingError", "UpdateSchedule", "train_loader"]
