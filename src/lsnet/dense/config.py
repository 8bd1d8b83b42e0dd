"""Dense-prediction configuration: the paper's schedules (mmdetection 1x, mmsegmentation
Semantic FPN 40k) and the small presets for the synthetic shapes set on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..engine.config import RunConfig
from ..errors import ConfigError

__all__ = ["DenseConfig", "DENSE_PRESETS", "ARCHS", "resolve_dense_config"]

ARCHS = {"detect": ("retinanet", "maskrcnn"), "segment": ("semantic_fpn",)}


@dataclass
class DenseConfig(RunConfig):
    """A dense-prediction run. Detection counts epochs, segmentation iterations."""

    task: str = "detect"  # detect | segment
    arch: str = "retinanet"  # retinanet | maskrcnn | semantic_fpn
    backbone: str = "lsnet_t"
    backbone_checkpoint: Optional[str] = None
    data: str = "shapes"  # 'shapes' (generated under shapes_dir when missing) or a dataset root
    shapes_dir: str = "data/shapes"
    output: str = "output/dense"
    preset: str = "small"
    epochs: int = 12  # detection
    iters: int = 40000  # segmentation
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iters: int = 500
    lr_steps: Tuple[float, ...] = (8, 11)  # detection: epochs (may be fractional) at which the lr drops 10x
    poly_power: float = 0.9  # segmentation
    batch_size: int = 2
    min_size: int = 800  # detection: shorter side at evaluation
    max_size: int = 1333
    train_scales: Tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    crop_size: int = 512  # segmentation
    scale_range: Tuple[float, float] = (0.5, 2.0)  # segmentation: random rescale before cropping
    cat_max_ratio: float = 1.0  # segmentation: re-draw crops dominated by one class (mmseg's ADE20K: 0.75)
    base_size: Optional[int] = None  # segmentation: shorter side the rescale is relative to, and the
    #                                 one inference resizes to (None: the image's own size)
    fpn_channels: int = 256  # width of the FPN neck and the detection heads (the release: 256)
    rpn_train_proposals: int = 2000  # Mask R-CNN: proposals kept per image in training (before and after NMS)
    roi_batch_size: int = 512  # Mask R-CNN: RoIs sampled per image for the box and mask heads
    roi_sampling_ratio: int = 2  # Mask R-CNN: RoIAlign sampling points per bin side (torchvision's default)
    head_norm: str = "none"  # RetinaNet: "gn" adds GroupNorm to the head convs (torchvision's v2 head)
    box_loss: str = "l1"  # RetinaNet: l1 (the release) | smooth_l1 | giou
    norm_eval: bool = True
    frozen_stages: int = -1
    frozen_norm: str = "eval"  # frozen stages' BatchNorm: eval (statistics kept, the release) | batch
    clip_grad: Optional[float] = None
    seg_loss: str = "ce"  # segmentation: ce | ce+dice (adds a soft Dice term averaged over classes)
    channels_last: bool = True  # NHWC convolutions: faster training steps on CPU (benchmarks/dense_step.py)
    eval_every: int = 1  # detection: epochs between evaluations
    eval_interval: int = 4000  # segmentation: iterations between evaluations
    workers: int = 2

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option that cannot be used."""
        super().validate()
        if any(s < 0 for s in self.lr_steps):
            raise ConfigError(f"--lr-steps must be epochs >= 0, got {','.join(f'{s:g}' for s in self.lr_steps)}")
        if not -1 <= self.frozen_stages <= 4:
            raise ConfigError(f"--frozen-stages must be between -1 and 4, got {self.frozen_stages}")
        for name in ("eval_every", "eval_interval", "roi_batch_size", "batch_size", "epochs", "iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


DENSE_PRESETS: Dict[str, Dict[str, Any]] = {
    # the paper's schedules (mmdetection 1x; mmsegmentation Semantic FPN 40k)
    "1x": dict(epochs=12, lr=1e-4, weight_decay=0.05, lr_steps=(8, 11), warmup_iters=500, batch_size=2),
    "40k": dict(iters=40000, lr=2e-4, weight_decay=1e-4, poly_power=0.9, crop_size=512, batch_size=4,
                warmup_iters=0, eval_interval=4000, base_size=512, scale_range=(0.5, 2.0), cat_max_ratio=0.75),
    # the synthetic shapes set on a CPU: small images, short schedules, a higher learning rate
    # (no pretrained backbone offline: BatchNorm must learn its statistics, so norm_eval is off)
    "small-detect": dict(epochs=2, lr=1e-3, weight_decay=0.05, lr_steps=(2,), warmup_iters=100, batch_size=8,
                         min_size=192, max_size=320, train_scales=(160, 176, 192, 208, 224), workers=0,
                         norm_eval=False, fpn_channels=64, clip_grad=10.0, rpn_train_proposals=500,
                         roi_batch_size=128),
    "small-segment": dict(iters=1600, lr=4e-3, weight_decay=1e-4, poly_power=0.9, crop_size=192, batch_size=8,
                          base_size=192, scale_range=(0.75, 1.25), fpn_channels=64, warmup_iters=25,
                          eval_interval=400, workers=0, norm_eval=False),
}

# Per-model changes to the small detection preset, each chosen by measured trials (BENCHMARKS.md,
# "Dense prediction"): Mask R-CNN trades RoIs and sampling points (its RoIAlign backward is
# single-threaded on CPU) for a third epoch; RetinaNet from scratch learns faster with
# torchvision's v2 GroupNorm head and a GIoU loss.
SMALL_DETECT_ARCH: Dict[str, Dict[str, Any]] = {
    "maskrcnn": dict(epochs=3, lr_steps=(2.75,), roi_batch_size=64, roi_sampling_ratio=1),
    "retinanet": dict(epochs=4, lr=1e-3, lr_steps=(3.5,), head_norm="gn", box_loss="giou"),
}


# Changes to the small presets when the backbone starts from a classification checkpoint (the
# shipped weights/lsnet_t_shapes.safetensors): a lower rate that keeps what was pre-trained, and
# schedules that fit the time targets; RetinaNet freezes the whole backbone but lets its
# BatchNorm layers follow the scenes' statistics (the crops it learnt from are not scenes).
# The trials behind each value are in BENCHMARKS.md.
SMALL_FINETUNE: Dict[str, Dict[str, Any]] = {"semantic_fpn": dict(lr=1e-3, iters=1200),
                                             "retinanet": dict(epochs=3, lr_steps=(2.5,), frozen_stages=4,
                                                               frozen_norm="batch"),
                                             "maskrcnn": dict(epochs=2, lr_steps=(1.75,))}


def resolve_dense_config(task: str, overrides: Dict[str, Any]) -> DenseConfig:
    """Defaults <- preset ('small' for shapes, else the paper's) <- explicit overrides; with
    ``resume`` among the overrides, the resumed run's configuration <- the overrides."""
    if overrides.get("resume"):
        from ..engine.loop import resume_overrides

        cfg = DenseConfig.from_dict(resume_overrides(overrides, task))
        cfg.validate()
        return cfg
    data = overrides.get("data", "shapes")
    preset = overrides.get("preset") or ("small" if data == "shapes" else ("1x" if task == "detect" else "40k"))
    key = f"small-{task}" if preset == "small" else preset
    if key not in DENSE_PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose small, 1x (detection) or 40k (segmentation)")
    arch = overrides.get("arch") or ARCHS[task][0]
    if arch not in ARCHS[task]:
        raise ConfigError(f"--arch {arch!r} is not a {task} model; choose one of {', '.join(ARCHS[task])}")
    arch_preset = SMALL_DETECT_ARCH.get(arch, {}) if key == "small-detect" else {}
    finetune = SMALL_FINETUNE.get(arch, {}) if preset == "small" and overrides.get("backbone_checkpoint") else {}
    values = {**DENSE_PRESETS[key], **arch_preset, **finetune, **{k: v for k, v in overrides.items() if v is not None}}
    values.update(task=task, arch=arch, preset=preset)
    cfg = DenseConfig(**values)
    cfg.validate()
    return cfg


