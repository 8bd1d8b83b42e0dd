"""Oriented-detection configuration: the paper's schedule (``1x``) and a small preset for the
synthetic aerial set on a CPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..engine.config import RunConfig
from ..errors import ConfigError
from .models import OrientedRCNNSettings

__all__ = ["RotatedConfig", "ROTATED_PRESETS", "SMALL_FINETUNE", "resolve_rotated_config", "shipped_backbone"]

logger = logging.getLogger(__name__)


@dataclass
class RotatedConfig(RunConfig):
    """An Oriented R-CNN run on DOTA-format data (``root/train`` and ``root/val``, each with
    ``images/`` and ``labelTxt/``), split into patches before training."""

    backbone: str = "lsknet_t"
    backbone_checkpoint: Optional[str] = None
    data: str = "aerial"  # 'aerial' (the synthetic set, generated under aerial_dir when missing) or a DOTA root
    aerial_dir: str = "data/aerial"
    split_dir: Optional[str] = None  # where the patches go (default: <data>-split<patch_size>-<gap>)
    output: str = "output/rotated"
    preset: str = "1x"
    patch_size: int = 1024
    gap: int = 200
    epochs: int = 12
    lr: float = 2e-4
    weight_decay: float = 0.05
    lr_steps: Tuple[float, ...] = (8, 11)  # epochs (may be fractional) at which the rate drops 10x
    warmup_iters: int = 500  # linear warm-up from a third of the rate (mmdetection's schedule_1x)
    warmup_ratio: float = 1.0 / 3
    batch_size: int = 2
    flip_ratio: float = 0.25  # each of horizontal, vertical and diagonal flips
    rotate_ratio: float = 0.5  # random rotation (multiples of 90 degrees for round classes)
    drop_path_rate: float = 0.1  # the backbone's (the release's detection configs: 0.1)
    norm_eval: bool = False
    frozen_stages: int = -1
    frozen_norm: str = "eval"
    # the detector (OrientedRCNNSettings); the release's values by default
    fpn_channels: int = 256
    anchor_scales: Tuple[float, ...] = (8.0,)
    rpn_pre_nms: int = 2000
    rpn_post_nms: int = 2000
    rpn_batch: int = 256
    roi_batch: int = 512
    fc_channels: int = 1024
    score_threshold: float = 0.05
    nms_iou: float = 0.1
    max_per_image: int = 2000
    merge_nms_iou: float = 0.1  # rotated NMS per class when patch detections are merged back
    eval_every: int = 1
    workers: int = 2
    seed: int = 0

    def settings(self) -> OrientedRCNNSettings:
        """The detector's hyper-parameters this configuration sets."""
        names = set(OrientedRCNNSettings.names())
        return OrientedRCNNSettings(**{k: v for k, v in self.to_dict().items() if k in names and k != "seed"})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option that cannot be used."""
        super().validate()
        if self.patch_size < 32:
            raise ConfigError(f"--patch-size must be at least 32, got {self.patch_size}")
        if not 0 <= self.gap < self.patch_size:
            raise ConfigError(f"--gap must lie in [0, --patch-size), got {self.gap}")
        if any(s < 0 for s in self.lr_steps):
            raise ConfigError(f"--lr-steps must be epochs >= 0, got {','.join(f'{s:g}' for s in self.lr_steps)}")
        for name in ("flip_ratio", "rotate_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(self, name)}")
        if 3 * self.flip_ratio > 1:
            raise ConfigError(f"--flip-ratio is per flip direction (three of them): at most 1/3, got {self.flip_ratio}")
        for name in ("batch_size", "epochs", "eval_every", "fpn_channels", "rpn_pre_nms", "rpn_post_nms",
                     "rpn_batch", "roi_batch", "fc_channels", "max_per_image"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not -1 <= self.frozen_stages <= 4:
            raise ConfigError(f"--frozen-stages must be between -1 and 4, got {self.frozen_stages}")


ROTATED_PRESETS: Dict[str, Dict[str, Any]] = {
    # the paper's: Oriented R-CNN, AdamW 2e-4, weight decay 0.05, 12 epochs, steps at 8 and 11,
    # 1024x1024 patches (gap 200), flips and random rotation
    "1x": dict(epochs=12, lr=2e-4, weight_decay=0.05, lr_steps=(8, 11), warmup_iters=500, batch_size=2,
               patch_size=1024, gap=200),
    # the synthetic aerial set on a CPU: small patches, a narrower detector, fewer proposals and
    # RoIs, a higher rate; the trials behind each value are in BENCHMARKS.md
    "small": dict(epochs=6, lr=1e-3, weight_decay=0.05, lr_steps=(5,), warmup_iters=100, batch_size=4,
                  patch_size=512, gap=128, fpn_channels=96, fc_channels=256, rpn_pre_nms=1000, rpn_post_nms=500,
                  roi_batch=256, anchor_scales=(4.0,), max_per_image=500, workers=0, channels_last=False),
}


#: Backbones the repository ships pre-trained on the synthetic set's object crops (``lsnet rotated
#: make-aerial --crops``, then ``lsnet train``; README), looked for under ``weights/``.
SHIPPED_BACKBONES = {"lsknet_t": "lsknet_t_aerial.safetensors"}

# Changes to the small preset when the backbone starts from a checkpoint: the backbone stays
# frozen (its BatchNorm layers follow the scenes' statistics: the crops it learnt from are not
# scenes), which makes a step 2.8x cheaper on the CPU (benchmarks/rotated_step.py), so more
# epochs fit; the trials behind the values are in BENCHMARKS.md.
SMALL_FINETUNE: Dict[str, Any] = dict(frozen_stages=4, frozen_norm="batch", epochs=7, lr_steps=(6,), eval_every=3)


def shipped_backbone(backbone: str) -> Optional[str]:
    """The repository's pre-trained file for ``backbone`` (``weights/<file>`` under the current
    folder or the source checkout), or None."""
    name = SHIPPED_BACKBONES.get(backbone)
    if name is None:
        return None
    for folder in (Path("weights"), Path(__file__).resolve().parents[3] / "weights"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def resolve_rotated_config(overrides: Dict[str, Any]) -> RotatedConfig:
    """Defaults <- preset ('small' for the synthetic set, else '1x') <- explicit overrides; with
    ``resume`` among the overrides, the resumed run's configuration <- the overrides.

    On the synthetic set with the small preset, the backbone starts from the repository's
    pre-trained file when there is one and no ``backbone_checkpoint`` is given ("none": from
    scratch)."""
    if overrides.get("resume"):
        from ..engine.loop import resume_overrides

        cfg = RotatedConfig.from_dict(resume_overrides(overrides, "rotated"))
        cfg.validate()
        return cfg
    data = overrides.get("data") or "aerial"
    preset = overrides.get("preset") or ("small" if data == "aerial" else "1x")
    if preset not in ROTATED_PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose {', '.join(ROTATED_PRESETS)}")
    checkpoint = overrides.get("backbone_checkpoint")
    if checkpoint is None and data == "aerial" and preset == "small":
        checkpoint = shipped_backbone(overrides.get("backbone") or RotatedConfig.backbone)
        if checkpoint:
            logger.info(f"backbone: the shipped pre-trained {checkpoint} (--backbone-checkpoint none: from scratch)")
    if checkpoint in ("none", ""):
        checkpoint = None
    finetune = SMALL_FINETUNE if checkpoint and preset == "small" else {}
    values = {**ROTATED_PRESETS[preset], **finetune, **{k: v for k, v in overrides.items() if v is not None}}
    values.update(preset=preset, data=data, backbone_checkpoint=checkpoint)
    cfg = RotatedConfig(**values)
    cfg.validate()
    return cfg
