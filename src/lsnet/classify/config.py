"""Classification training configuration: the paper's ImageNet recipe (Table 10) as defaults,
and presets.

The recipe is assembled from timm's parts (RandAugment, random erasing, mixup/cutmix,
AdamW, cosine schedule with warm-up, adaptive gradient clipping, model EMA, repeated
augmentation); this module only holds the numbers and resolves them for one run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..engine.config import RunConfig
from ..errors import ConfigError

__all__ = ["TrainConfig", "PRESETS", "MODEL_DEFAULTS", "resolve_config", "total_lr", "model_kwarg",
           "parse_model_kwargs"]


@dataclass
class TrainConfig(RunConfig):
    """Everything a classification run depends on. Defaults are the paper's Table 10 recipe."""

    model: str = "lsnet_t"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # more arguments of timm.create_model
    data: str = "digits"
    output: str = "output/train"
    preset: str = "imagenet"
    num_classes: Optional[int] = None  # taken from the data when None
    pretrained: Optional[str] = None  # initial weights (a file), classifier dropped if it does not fit
    # schedule
    epochs: int = 300
    batch_size: int = 256  # per process; the paper's total is 2048 (8 GPUs x 256)
    lr: Optional[float] = None  # absolute; None -> lr_base * total batch / 512
    lr_base: float = 1e-3
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    sched: str = "cosine"
    opt: str = "adamw"
    weight_decay: float = 0.025
    clip_grad: Optional[float] = 0.02
    clip_mode: str = "agc"  # adaptive gradient clipping
    # data and augmentation
    img_size: int = 224
    crop_pct: float = 0.875  # evaluation: resize 256, centre crop 224
    interpolation: str = "bicubic"
    aa: Optional[str] = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    hflip: float = 0.5
    scale: Tuple[float, float] = (0.08, 1.0)
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    repeated_aug: bool = True
    drop_path: float = 0.0
    # model EMA
    model_ema: bool = True
    model_ema_decay: float = 0.99996
    # distillation
    distillation: str = "none"  # none | hard | soft
    teacher: str = "regnety_160"
    teacher_checkpoint: Optional[str] = None
    distillation_alpha: float = 0.5
    distillation_tau: float = 1.0
    eval_every: int = 1

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option that cannot be used."""
        super().validate()
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.img_size >= 16, f"--img-size must be at least 16, got {self.img_size}"),
            (0 < self.crop_pct <= 1, f"--crop-pct must lie in (0, 1], got {self.crop_pct}"),
            (self.distillation in ("none", "hard", "soft"), "--distillation must be none, hard or soft"),
            (0 <= self.distillation_alpha <= 1, "--distillation-alpha must lie in [0, 1]"),
            (self.eval_every >= 1, f"--eval-every must be at least 1, got {self.eval_every}"),
            (isinstance(self.model_kwargs, dict) and all(isinstance(k, str) for k in self.model_kwargs),
             f"--model-kwargs must map names to values, got {self.model_kwargs!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# A preset overrides the recipe's defaults; flags given on the command line override both.
PRESETS: Dict[str, Dict[str, Any]] = {
    "imagenet": {},
    # small datasets (e.g. the built-in digits): no repeated augmentation, lighter mixup,
    # short schedule, no EMA over so few steps, no horizontal flip (mirrored digits differ)
    "small": dict(epochs=15, batch_size=128, lr_base=8e-3, warmup_epochs=1, weight_decay=0.05, min_lr=1e-5,
                  img_size=64, crop_pct=1.0, aa="rand-m6-mstd0.5-inc1", color_jitter=0.0, reprob=0.0, hflip=0.0,
                  scale=(0.7, 1.0), mixup=0.0, cutmix=0.0, smoothing=0.1, repeated_aug=False, model_ema=False,
                  clip_grad=0.02, channels_last=True),
}


#: Values that depend on the model (its name's prefix), under the preset's. Table 10: weight
#: decay 0.025 for LSNet-T and -S, 0.05 for -B.
MODEL_DEFAULTS: Dict[str, Dict[str, Any]] = {"lsnet_b": {"weight_decay": 0.05}}


def _model_defaults(model: str) -> Dict[str, Any]:
    return {k: v for prefix, values in MODEL_DEFAULTS.items() if model.startswith(prefix) for k, v in values.items()}


def resolve_config(overrides: Dict[str, Any]) -> TrainConfig:
    """Recipe defaults <- model-specific values <- preset <- explicit overrides.

    ``overrides`` holds only what the user set; a preset defaults to ``small`` for the
    built-in ``digits`` data and ``imagenet`` otherwise.
    """
    if overrides.get("resume"):
        from ..engine.loop import resume_overrides

        cfg = TrainConfig.from_dict(resume_overrides(overrides, "classify"))
        cfg.validate()
        return cfg
    model = overrides.get("model", TrainConfig.model)
    data = overrides.get("data", TrainConfig.data)
    preset = overrides.get("preset") or ("small" if data == "digits" else "imagenet")
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: Dict[str, Any] = {}
    values.update(_model_defaults(model))
    values.update(PRESETS[preset])
    values.update(overrides)
    values["preset"] = preset
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def total_lr(cfg: TrainConfig, world_size: int) -> float:
    """The learning rate for this run: ``--lr``, or lr_base x total batch / 512 (4e-3 at 2048)."""
    if cfg.lr is not None:
        return cfg.lr
    return cfg.lr_base * cfg.batch_size * world_size / 512


# ----- --model-kwargs ----------------------------------------------------------------------

#: Arguments of timm.create_model that ``lsnet train`` sets from its own flags.
RESERVED_MODEL_KWARGS = {"num_classes": "--num-classes", "drop_path_rate": "--drop-path", "pretrained": "--pretrained"}


def model_kwarg(text: str) -> Tuple[str, Any]:
    """One ``key=value`` of ``--model-kwargs``: the value as a Python literal (``3``, ``False``,
    ``(64, 128)``, ``'x'``), or else as the plain string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value with a Python name as key, got {text!r}")
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key, value.strip()


def parse_model_kwargs(items: List[str]) -> Dict[str, Any]:
    """``['large_kernel=3', 'use_se=False']`` -> ``{'large_kernel': 3, 'use_se': False}``.

    Raises :class:`ConfigError` for an item that is not ``key=value``, a key given twice, or a
    key that ``lsnet train`` sets from another flag (``num_classes``: ``--num-classes``, ...).
    """
    out: Dict[str, Any] = {}
    for item in items:
        try:
            key, value = item if isinstance(item, tuple) else model_kwarg(item)
        except argparse.ArgumentTypeError as err:
            raise ConfigError(f"--model-kwargs: {err}") from None
        if key in out:
            raise ConfigError(f"--model-kwargs: {key} is given twice")
        if key in RESERVED_MODEL_KWARGS:
            raise ConfigError(f"--model-kwargs: set {key} with {RESERVED_MODEL_KWARGS[key]}, not here")
        out[key] = value
    return out
