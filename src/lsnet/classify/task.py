"""Image classification on the engine: the paper's recipe from timm's parts (``lsnet train``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..engine.distributed import DistInfo, all_reduce_sum
from ..engine.inference import preprocessing_record
from ..engine.loop import Run, Task, fit, split_for_rank, train_loader
from ..errors import ConfigError
from ..models.checkpoint import load_checkpoint
from .config import TrainConfig, total_lr
from .evaluate import evaluate

__all__ = ["ClassificationTask", "train", "DistillationLoss", "build_model"]

logger = logging.getLogger(__name__)


class DistillationLoss(nn.Module):
    """DeiT-style distillation: ``(1 - alpha) * base(cls, y) + alpha * distill(dist, teacher)``.

    ``hard``: cross-entropy against the teacher's arg-max; ``soft``: KL divergence between
    temperature-``tau`` distributions, scaled by tau^2. Models with one head use it for both terms.
    """

    def __init__(self, base: nn.Module, teacher: nn.Module, kind: str, alpha: float, tau: float):
        super().__init__()
        self.base, self.teacher, self.kind, self.alpha, self.tau = base, teacher, kind, alpha, tau

    def forward(self, inputs: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        cls, dist = outputs if isinstance(outputs, (tuple, list)) else (outputs, outputs)
        base = self.base(cls, targets)
        with torch.no_grad():
            teacher = self.teacher(inputs)
        if self.kind == "soft":
            t = self.tau
            distill = F.kl_div(F.log_softmax(dist / t, dim=1), F.log_softmax(teacher / t, dim=1),
                               reduction="sum", log_target=True) * (t * t) / dist.numel()
        else:
            distill = F.cross_entropy(dist, teacher.argmax(dim=1))
        return base * (1 - self.alpha) + distill * self.alpha


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Create the timm model of ``cfg`` (LSNet models get the training resolution)."""
    import timm

    import lsnet  # noqa: F401  registers the project's models

    if cfg.model not in timm.list_models():
        raise ConfigError(f"unknown --model {cfg.model!r} (not a timm model name)")
    kwargs: Dict[str, Any] = dict(num_classes=num_classes)
    if cfg.drop_path:
        kwargs["drop_path_rate"] = cfg.drop_path
    if cfg.model.startswith("lsnet"):
        kwargs["img_size"] = cfg.img_size
    extra = dict(cfg.model_kwargs or {})
    try:
        model = timm.create_model(cfg.model, **{**kwargs, **extra})  # e.g. img_size=64 for a ViT
    except (TypeError, ValueError) as err:
        if not extra:
            raise
        # an argument the model does not take (TypeError names it) or a value it refuses
        given = " ".join(f"{k}={v!r}" for k, v in extra.items())
        raise ConfigError(f"--model {cfg.model} with --model-kwargs {given}: {err}") from None
    if cfg.pretrained:
        load_checkpoint(model, cfg.pretrained, drop_head=True)
    return model


def _teacher(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    import timm

    if cfg.teacher not in timm.list_models():
        raise ConfigError(f"unknown --teacher {cfg.teacher!r} (not a timm model name)")
    teacher = timm.create_model(cfg.teacher, num_classes=num_classes)
    if cfg.teacher_checkpoint:
        load_checkpoint(teacher, cfg.teacher_checkpoint)
    else:
        logger.warning(f"--teacher {cfg.teacher} has no --teacher-checkpoint: distilling from random weights")
    return teacher.to(device).eval().requires_grad_(False)


class ClassificationTask(Task):
    """What classification adds to the engine: ImageFolder / digits data with timm's transforms,
    mixup / cutmix, label smoothing, distillation, top-1 / top-5 evaluation."""

    kind = "classify"
    best_key = "top1"
    metric_title = "validation top-1 (%)"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.cfg: TrainConfig = cfg

    def setup(self, run: Run) -> None:
        from ..data import build_datasets, build_transforms

        cfg = self.cfg
        train_tf = build_transforms(True, cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                                    auto_augment=cfg.aa, color_jitter=cfg.color_jitter, re_prob=cfg.reprob,
                                    hflip=cfg.hflip, scale=tuple(cfg.scale))
        eval_tf = build_transforms(False, cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
        self.splits = build_datasets(cfg.data, img_size=cfg.img_size, train_transform=train_tf,
                                     eval_transform=eval_tf, seed=cfg.seed)
        self.train_dataset = self.splits.train
        self.class_names = list(self.splits.class_names)
        self.num_classes = cfg.num_classes or len(self.class_names)
        self.val_loader = _val_loader(self.splits.val, cfg, run.info)

    def build_model(self, run: Run) -> nn.Module:
        cfg = self.cfg
        model = build_model(cfg, self.num_classes)
        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(cfg.distillation != "none")
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
                               num_classes=self.num_classes)
            base: nn.Module = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            from timm.loss import LabelSmoothingCrossEntropy

            base = LabelSmoothingCrossEntropy(cfg.smoothing)
        else:
            base = nn.CrossEntropyLoss()
        self.criterion = base
        if cfg.distillation != "none":
            self.criterion = DistillationLoss(base, _teacher(cfg, self.num_classes, run.device), cfg.distillation,
                                              cfg.distillation_alpha, cfg.distillation_tau)
        return model

    def build_loader(self, run: Run):
        return train_loader(self.splits.train, self.cfg.batch_size, self.cfg, run.info,
                            repeated_aug=self.cfg.repeated_aug)

    def build_optimizer(self, run: Run, model: nn.Module) -> torch.optim.Optimizer:
        from timm.optim import create_optimizer_v2

        cfg = self.cfg
        self.lr = total_lr(cfg, run.info.world_size)
        opt_kwargs = {"fused": True} if cfg.opt in ("adam", "adamw") else {}  # one kernel, not a loop over tensors
        return create_optimizer_v2(model, opt=cfg.opt, lr=self.lr, weight_decay=cfg.weight_decay, **opt_kwargs)

    def build_scheduler(self, run: Run, optimizer, updates_per_epoch: int):
        from timm.scheduler import create_scheduler_v2

        cfg = self.cfg
        scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr,
                                           warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
                                           step_on_epochs=False, updates_per_epoch=updates_per_epoch)
        return scheduler

    def schedule(self, updates_per_epoch: int) -> Tuple[int, None]:
        return self.cfg.epochs, None

    def eval_every(self, updates_per_epoch: int) -> int:
        return self.cfg.eval_every

    def loss(self, run: Run, model: nn.Module, batch) -> Tuple[torch.Tensor, int]:
        images, targets = (t.to(run.device, non_blocking=True) for t in batch)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        outputs = model(images)
        if self.cfg.distillation != "none":
            return self.criterion(images, outputs, targets), images.shape[0]
        if isinstance(outputs, (tuple, list)):
            outputs = (outputs[0] + outputs[1]) / 2
        return self.criterion(outputs, targets), images.shape[0]

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        from ..data import ReadableBatches

        val = self.splits.val
        if hasattr(val, "reset_skipped"):
            val.reset_skipped()
        res = evaluate(model, ReadableBatches(self.val_loader), run.device, run.info, self.cfg.amp,
                       self.cfg.channels_last)
        skipped = val.skipped_files() if hasattr(val, "skipped_files") else []
        # each process counts the files of its own share
        count = int(all_reduce_sum(torch.tensor([len(skipped)], dtype=torch.float64), run.info).item())
        if count and run.info.is_main:  # left out of the metrics, never replaced by other images
            logger.warning(f"{count} unreadable validation image(s) left out of the metrics"
                           + (f", e.g. {skipped[0]}" if skipped else ""))
        return {**res, "skipped_images": count}

    def format_metrics(self, metrics: Dict[str, Any], prefix: str = "val") -> str:
        return f"{prefix} top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%"

    def describe(self, run: Run, model: nn.Module) -> str:
        cfg, info = self.cfg, run.info
        n_params = sum(p.numel() for p in model.parameters())
        return (f"training {cfg.model} ({n_params / 1e6:.2f} M parameters with a {self.num_classes}-class head) on "
                f"{self.splits.name}: "
                f"{len(self.splits.train)} train / {len(self.splits.val)} val images, {self.num_classes} classes, "
                f"{info.world_size} process(es) on {run.device}, batch {cfg.batch_size}x{info.world_size}, "
                f"lr {self.lr:.2e}, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, preset {cfg.preset}")

    def checkpoint_extras(self) -> Dict[str, Any]:
        cfg = self.cfg
        # build_transforms normalises with timm's ImageNet defaults
        return {"arch": cfg.model,
                "preprocessing": preprocessing_record(cfg.img_size, cfg.crop_pct, cfg.interpolation,
                                                      IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)}

    def finish(self, run: Run) -> None:
        _write_samples(self.splits, run.out)


def _val_loader(dataset, cfg: TrainConfig, info: DistInfo):
    from torch.utils.data import DataLoader, Subset

    from ..data import collate_readable

    val_set = Subset(dataset, split_for_rank(len(dataset), info)) if info.enabled else dataset
    return DataLoader(val_set, batch_size=max(cfg.batch_size, 64), shuffle=False, num_workers=cfg.workers or 0,
                      pin_memory=torch.cuda.is_available(), collate_fn=collate_readable)


def _write_samples(splits, out: Path, count: int = 8) -> None:
    """Save a few readable held-out validation images as PNG files, for ``lsnet predict`` to try."""
    if not hasattr(splits.val, "sample_images"):
        return
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in splits.val.sample_images(count):
        image.save(folder / f"val{i:04d}_label{splits.class_names[splits.val.targets[i]]}.png")


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train a classifier as configured (see :func:`lsnet.engine.fit` for the summary returned)."""
    return fit(ClassificationTask(cfg))
