"""The configuration every training run shares; each task's configuration extends it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ConfigError

__all__ = ["RunConfig"]


@dataclass
class RunConfig:
    """How a run executes and where it writes, whatever the task."""

    output: str = "output/run"
    overwrite: bool = False  # start a new run in a folder that holds another one
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    workers: Optional[int] = None  # data-loading processes; None: chosen from the device and the host's cores
    amp: Optional[str] = None  # None | bfloat16 | float16 (float16 uses a gradient scaler)
    channels_last: bool = False
    compile: bool = False
    clip_grad: Optional[float] = None
    clip_mode: str = "norm"  # norm | value | agc (timm's dispatch_clip_grad)
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    resume: Optional[str] = None
    stop_after: Optional[int] = None  # end this invocation after that many epochs (the schedule is unchanged)
    log_interval: int = 20
    tensorboard: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """Plain, JSON-serialisable dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        """Inverse of :meth:`to_dict`: JSON lists become tuples, unknown keys are dropped (a
        checkpoint of an older version may carry options that no longer exist)."""
        names = {f.name for f in dataclasses.fields(cls)}
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
        return cls(**clean)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option that cannot be used."""
        checks = [
            (self.amp in (None, "bfloat16", "float16"), f"--amp must be bfloat16 or float16, got {self.amp!r}"),
            (self.clip_mode in ("agc", "norm", "value"), f"--clip-mode must be agc, norm or value, got "
                                                         f"{self.clip_mode!r}"),
            (self.clip_grad is None or self.clip_grad >= 0, f"--clip-grad must be >= 0, got {self.clip_grad}"),
            (self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.stop_after is None or self.stop_after >= 1, f"--stop-after must be at least 1, got "
                                                              f"{self.stop_after}"),
            (0 < self.model_ema_decay < 1, f"--model-ema-decay must lie in (0, 1), got {self.model_ema_decay}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
