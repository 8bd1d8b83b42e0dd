"""Detection, instance and semantic segmentation on the engine (``lsnet detect|segment train``):
the paper's schedules as presets, on the synthetic shapes set or on COCO / ADE20K-layout data."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.distributed import DistInfo, all_reduce_sum
from ..engine.report import metric_label
from ..engine.loop import (
    Run,
    Task,
    UpdateSchedule,
    fit,
    train_loader,
)
from ..errors import ConfigError
from .config import DenseConfig
from .data import build_dense_data, eval_loader

__all__ = [
    "DenseTask",
    "build_dense_model",
    "evaluate_dense",
    "lr_factor",
    "segmentation_loss",
    "train_dense",
]

logger = logging.getLogger(__name__)


def build_dense_model(cfg: DenseConfig, num_classes: int) -> nn.Module:
    """The configured model (``num_classes`` object classes, or segmentation classes)."""
    from . import models as M

    common = dict(backbone_checkpoint=cfg.backbone_checkpoint, norm_eval=cfg.norm_eval,
                  frozen_stages=cfg.frozen_stages, frozen_norm=cfg.frozen_norm, fpn_channels=cfg.fpn_channels)
    # torchvision picks a random shorter side from min_size in training and uses the last one
    # in evaluation: the training scales, then the evaluation size
    sizes = tuple(s for s in cfg.train_scales if s != cfg.min_size) + (cfg.min_size,)
    if cfg.arch == "retinanet":
        return M.retinanet_lsnet(cfg.backbone, num_classes, min_size=sizes, max_size=cfg.max_size,
                                 head_norm=cfg.head_norm, box_loss=cfg.box_loss, **common)
    if cfg.arch == "maskrcnn":
        return M.maskrcnn_lsnet(cfg.backbone, num_classes, min_size=sizes, max_size=cfg.max_size,
                                rpn_pre_nms_top_n_train=cfg.rpn_train_proposals,
                                rpn_post_nms_top_n_train=cfg.rpn_train_proposals,
                                box_batch_size_per_image=cfg.roi_batch_size,
                                sampling_ratio=cfg.roi_sampling_ratio, **common)
    return M.semantic_fpn_lsnet(cfg.backbone, num_classes, channels=min(128, cfg.fpn_channels),
                                test_size=cfg.base_size, **common)


@torch.no_grad()
def evaluate_dense(model: nn.Module, dataset, cfg: DenseConfig, device: torch.device,
                   info: DistInfo = DistInfo()) -> dict[str, Any]:
    """COCO AP (bbox, and segm for Mask R-CNN; also per class) or mIoU / pixel accuracy
    (also per-class IoU) on ``dataset``.

    Leaves the random number generators as it found them, so evaluating (or not) does not
    change the course of training."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _evaluate(model, dataset, cfg, device, info)


def _evaluate(model: nn.Module, dataset, cfg: DenseConfig, device: torch.device, info: DistInfo) -> dict[str, Any]:
    model.eval()
    loader = eval_loader(dataset, cfg, info)
    if cfg.task == "detect":
        from .metrics import coco_evaluate

        preds: dict[int, dict[str, torch.Tensor]] = {}
        for images, targets in loader:
            outputs = model([im.to(device) for im in images])
            for out, tgt in zip(outputs, targets):
                preds[int(tgt["image_id"])] = {k: v.cpu() for k, v in out.items()}
        if info.enabled:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, preds)
            preds = {k: v for part in gathered for k, v in part.items()}
        iou_types = ("bbox", "segm") if cfg.arch == "maskrcnn" else ("bbox",)
        res = coco_evaluate(dataset.coco, preds, iou_types, dataset.label_to_cat_id, img_ids=list(dataset.ids),
                            per_class=True)
        flat: dict[str, Any] = {}
        for kind, stats in res.items():
            for name, value in stats.items():
                flat[f"{kind}_{name}"] = value if isinstance(value, dict) else float(value)
        return flat
    from .metrics import SegmentationMetric

    metric = SegmentationMetric(dataset.num_classes)
    for image, label in loader:
        logits = model(image.to(device, memory_format=_memory_format(cfg)))
        metric.update(logits.argmax(1).cpu(), label)
    conf = all_reduce_sum(metric.confusion.double(), info)
    metric.confusion = conf.to(metric.confusion.dtype)
    res = metric.compute()
    return {"mIoU": float(res["mIoU"]), "pixel_acc": float(res["pixel_acc"]),
            "per_class_iou": [float(v) for v in res["per_class_iou"]]}


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Pixel cross-entropy (label 255 ignored), plus for ``ce+dice`` one minus the soft Dice
    coefficient averaged over all classes (the +1 smoothing lets a class that is neither
    labelled nor predicted in the batch score 1, i.e. add nothing)."""
    loss = F.cross_entropy(logits, labels, ignore_index=255)
    if kind == "ce":
        return loss
    if kind != "ce+dice":
        raise ConfigError(f"unknown segmentation loss {kind!r}; choose ce or ce+dice")
    valid = labels != 255
    probs = logits.float().softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(labels.masked_fill(~valid, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return loss + (1 - dice).mean()


def _memory_format(cfg: DenseConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def lr_factor(cfg: DenseConfig, it: int, total: int, iters_per_epoch: int) -> float:
    """The learning-rate multiplier at update ``it``: linear warm-up from 0.001, then steps at
    (fractional) epochs for detection, poly decay to zero for segmentation."""
    warm = 1.0 if it >= cfg.warmup_iters or cfg.warmup_iters == 0 else 0.001 + (1 - 0.001) * it / cfg.warmup_iters
    if cfg.task == "detect":
        epoch = it / max(iters_per_epoch, 1)  # fractional, so a step may fall inside an epoch
        decay = 0.1 ** sum(epoch >= s for s in cfg.lr_steps)
    else:
        decay = (1 - min(it, total) / total) ** cfg.poly_power
    return warm * decay


class DenseTask(Task):
    """What dense prediction adds to the engine: its datasets and models, the models' own
    losses (detection) or pixel cross-entropy (segmentation), COCO AP or mIoU."""

    x_key = "iteration"

    def __init__(self, cfg: DenseConfig):
        super().__init__(cfg)
        self.cfg: DenseConfig = cfg
        self.kind = cfg.task
        self.best_key = {"retinanet": "bbox_AP50", "maskrcnn": "segm_AP50"}.get(cfg.arch, "mIoU")
        self.metric_title = metric_label(f"val_{self.best_key}")  # e.g. "validation box AP50"

    def setup(self, run: Run) -> None:
        cfg = self.cfg
        if cfg.backbone_checkpoint and not __import__("pathlib").Path(cfg.backbone_checkpoint).is_file():
            raise FileNotFoundError(f"--backbone-checkpoint file not found: {cfg.backbone_checkpoint}")
        self.train_dataset, self.val_dataset, self.class_names = build_dense_data(cfg, run.info)

    def build_model(self, run: Run) -> nn.Module:
        return build_dense_model(self.cfg, len(self.class_names))

    def build_loader(self, run: Run):
        from .datasets import collate_detection

        return train_loader(self.train_dataset, self.cfg.batch_size, self.cfg, run.info,
                            collate_fn=collate_detection if self.cfg.task == "detect" else None)

    def build_optimizer(self, run: Run, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def schedule(self, updates_per_epoch: int) -> tuple[int, int | None]:
        cfg = self.cfg
        if cfg.task == "detect":
            return cfg.epochs, cfg.epochs * updates_per_epoch
        return -(-cfg.iters // updates_per_epoch), cfg.iters  # the last epoch may be cut short

    def build_scheduler(self, run: Run, optimizer, updates_per_epoch: int):
        _, total = self.schedule(updates_per_epoch)
        return UpdateSchedule(optimizer, lambda it: lr_factor(self.cfg, it, total, updates_per_epoch))

    def eval_every(self, updates_per_epoch: int) -> int:
        if self.cfg.task == "detect":
            return self.cfg.eval_every
        return max(1, round(self.cfg.eval_interval / updates_per_epoch))

    def loss(self, run: Run, model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        device = run.device
        if self.cfg.task == "detect":
            images, targets = batch
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            return sum(model(images, targets).values()), len(images)
        images, labels = batch
        images = images.to(device, memory_format=_memory_format(self.cfg))
        return segmentation_loss(model(images), labels.to(device), self.cfg.seg_loss), images.shape[0]

    def evaluate(self, run: Run, model: nn.Module) -> dict[str, Any]:
        return evaluate_dense(model, self.val_dataset, self.cfg, run.device, run.info)

    def format_metrics(self, metrics: dict[str, Any], prefix: str = "val") -> str:
        shown = {k: v for k, v in metrics.items() if isinstance(v, float)
                 and any(s in k for s in ("AP50", "AP_", "mIoU", "pixel"))}
        return "  ".join(f"{prefix} {k} {v:.3f}" for k, v in shown.items())

    def describe(self, run: Run, model: nn.Module) -> str:
        cfg, info = self.cfg, run.info
        return (f"training {cfg.arch} with {cfg.backbone} on {cfg.data}: {len(self.train_dataset)} train / "
                f"{len(self.val_dataset)} val images, {len(self.class_names)} classes, batch "
                f"{cfg.batch_size}x{info.world_size}, lr {cfg.lr:.1e}, preset {cfg.preset}, {run.device}")

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"arch": self.cfg.arch, "backbone": self.cfg.backbone}


def train_dense(cfg: DenseConfig) -> dict[str, Any]:
    """Train a dense model as configured (see :func:`lsnet.engine.fit` for the summary)."""
    return fit(DenseTask(cfg))
