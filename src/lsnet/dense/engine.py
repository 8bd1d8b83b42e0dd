"""Training and evaluation of the dense models: the paper's schedules as presets, on the
synthetic shapes set or on COCO / ADE20K-layout data, with the classification engine's
checkpointing, progress bars, metrics and curves, and torchrun for several processes."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, resolve_device
from ..engine.report import MetricsLog, progress_bar
from ..engine.train import TrainingError, rng_state, seed_everything, set_rng_state
from ..models.checkpoint import atomic_write

__all__ = ["DenseConfig", "DENSE_PRESETS", "resolve_dense_config", "train_dense", "evaluate_dense", "build_dense_model",
           "build_dense_data"]

ARCHS = {"detect": ("retinanet", "maskrcnn"), "segment": ("semantic_fpn",)}


@dataclass
class DenseConfig:
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
    seed: int = 0
    device: str = "auto"
    resume: Optional[str] = None
    stop_after: Optional[int] = None  # end this invocation after that many epochs (the schedule is unchanged)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DenseConfig":
        """Rebuild from :meth:`to_dict` output (JSON lists become tuples; unknown keys are dropped)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
        return cls(**clean)


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

# Per-model changes to the small detection preset. Mask R-CNN's RoIAlign backward runs on one
# thread on CPU and dominated its step: fewer RoIs and sampling points buy a third epoch within
# its 20 minutes (1139 s measured), and the rate drops 10x for the last twelfth of the run.
SMALL_DETECT_ARCH: Dict[str, Dict[str, Any]] = {
    "maskrcnn": dict(epochs=3, lr_steps=(2.75,), roi_batch_size=64, roi_sampling_ratio=1),
    # RetinaNet's steps are cheaper: four epochs take about its 15 minutes (933 s measured). Its
    # release head has no normalisation; from scratch, torchvision v2's GroupNorm head with a GIoU
    # box loss learns about twice as fast (bbox AP50 0.119 against 0.063 after one epoch). A
    # higher rate leads early but not for long (2e-3: 0.146 after one epoch, 0.188 after two;
    # 1e-3: 0.119, 0.183), so the preset keeps 1e-3, the rate of its measured 4-epoch run.
    "retinanet": dict(epochs=4, lr=1e-3, lr_steps=(3.5,), head_norm="gn", box_loss="giou"),
}


# Changes to the small presets, per model, when the backbone starts from a classification
# checkpoint (e.g. pre-trained on `lsnet dense make-shape-crops`). The segmentation rate of 4e-3
# suits a backbone from scratch but undoes a pre-trained one (mIoU 0.196 / 0.289 after 500 /
# 1000 iterations, no better than from scratch); at 1e-3 the 1600-iteration preset gave 0.446 /
# 0.600 / 0.686 after 500 / 1000 / 1600 but took 943 s, so the fine-tuning schedule is 1200
# iterations (poly decay to zero), within the 15 minutes. RetinaNet fine-tuned whole for three
# epochs (drop at 2.5) reached bbox AP50 0.708 in 684 s on a quiet host but 999 s on a busy one;
# with the whole backbone frozen its step is 1.93x cheaper (benchmarks/dense_step.py), and with
# the frozen BatchNorm layers still normalising with batch statistics (frozen_norm="batch": the
# crops it was pre-trained on are not scenes; keeping their statistics gave AP50 0.006) the
# same schedule learns faster: 0.342 / 0.587 / 0.742 after 1 / 2 / 3 epochs against 0.262 /
# 0.531 / 0.708, in 550 s from a fresh clone. Mask R-CNN from the
# repository's weights/lsnet_t_shapes.safetensors gave mask AP50 0.669 / 0.875 / 0.928 after
# 1 / 2 / 3 epochs, its training loop taking 1149 s of the 1200: two epochs (drop at 1.75) suffice.
SMALL_FINETUNE: Dict[str, Dict[str, Any]] = {"semantic_fpn": dict(lr=1e-3, iters=1200),
                                             "retinanet": dict(epochs=3, lr_steps=(2.5,), frozen_stages=4,
                                                               frozen_norm="batch"),
                                             "maskrcnn": dict(epochs=2, lr_steps=(1.75,))}


def resolve_dense_config(task: str, overrides: Dict[str, Any]) -> DenseConfig:
    """Defaults <- preset ('small' for shapes, else the paper's) <- explicit overrides."""
    data = overrides.get("data", "shapes")
    preset = overrides.get("preset") or ("small" if data == "shapes" else ("1x" if task == "detect" else "40k"))
    key = f"small-{task}" if preset == "small" else preset
    if key not in DENSE_PRESETS:
        raise ValueError(f"unknown --preset {preset!r}; choose small, 1x (detection) or 40k (segmentation)")
    arch = overrides.get("arch") or ARCHS[task][0]
    if arch not in ARCHS[task]:
        raise ValueError(f"--arch {arch!r} is not a {task} model; choose one of {', '.join(ARCHS[task])}")
    arch_preset = SMALL_DETECT_ARCH.get(arch, {}) if key == "small-detect" else {}
    finetune = SMALL_FINETUNE.get(arch, {}) if preset == "small" and overrides.get("backbone_checkpoint") else {}
    values = {**DENSE_PRESETS[key], **arch_preset, **finetune, **{k: v for k, v in overrides.items() if v is not None}}
    values.update(task=task, arch=arch, preset=preset)
    cfg = DenseConfig(**values)
    if any(s < 0 for s in cfg.lr_steps):
        raise ValueError(f"--lr-steps must be epochs >= 0, got {','.join(f'{s:g}' for s in cfg.lr_steps)}")
    if not -1 <= cfg.frozen_stages <= 4:
        raise ValueError(f"--frozen-stages must be between -1 and 4, got {cfg.frozen_stages}")
    for name in ("eval_every", "eval_interval", "roi_batch_size", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    return cfg


# ----- data and models -----------------------------------------------------------------------

def _shapes_root(cfg: DenseConfig, info: DistInfo) -> Path:
    from .shapes import is_generated, make_shapes

    root = Path(cfg.shapes_dir)
    if not is_generated(root):  # a set of any size made by `lsnet dense make-shapes` is kept
        if info.is_main:
            print(f"generating the synthetic shapes dataset in {root} (once; about a minute per 1000 images) ...")
            make_shapes(root)
        barrier(info)
    return root


def build_dense_data(cfg: DenseConfig, info: DistInfo = DistInfo()):
    """(train dataset, val dataset, class names) for the configured task and data."""
    from . import datasets as D

    if cfg.task == "detect":
        # resizing (multi-scale in training) happens inside torchvision's model transform, which
        # also maps predictions back to the original image size; the dataset only flips
        train_tf = D.DetectionTransform(True, scales=None)
        val_tf = D.DetectionTransform(False, scales=None)
        masks = cfg.arch == "maskrcnn"
        if cfg.data == "shapes":
            root = _shapes_root(cfg, info)
            train = D.shapes_coco(root, "train", transforms=train_tf, with_masks=masks)
            val = D.shapes_coco(root, "val", transforms=val_tf, with_masks=masks)
        else:
            root = Path(cfg.data)
            train = D.CocoDetection(root / "train" / "images", root / "annotations" / "instances_train.json",
                                    transforms=train_tf, with_masks=masks)
            val = D.CocoDetection(root / "val" / "images", root / "annotations" / "instances_val.json",
                                  transforms=val_tf, with_masks=masks)
        return train, val, list(train.class_names)
    train_tf = D.SegmentationTransform(True, crop_size=cfg.crop_size, scale_range=cfg.scale_range,
                                       base_size=cfg.base_size, cat_max_ratio=cfg.cat_max_ratio)
    val_tf = D.SegmentationTransform(False, crop_size=cfg.crop_size)
    if cfg.data == "shapes":
        root = _shapes_root(cfg, info)
        train = D.shapes_ade(root, "train", transforms=train_tf)
        val = D.shapes_ade(root, "val", transforms=val_tf)
    else:
        train = D.ADE20KSegmentation(cfg.data, "training", transforms=train_tf)
        val = D.ADE20KSegmentation(cfg.data, "validation", transforms=val_tf)
    if info.is_main:
        train.validate_labels()  # a label outside the class range stops here, naming the file
        val.validate_labels()
    return train, val, list(train.class_names)


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


def _loader(dataset, cfg: DenseConfig, info: DistInfo, train: bool):
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from .datasets import collate_detection

    collate = collate_detection if cfg.task == "detect" else None
    if train:
        sampler = DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=cfg.seed) \
            if info.enabled else None
        gen = torch.Generator().manual_seed(cfg.seed)
        return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=cfg.workers, collate_fn=collate, drop_last=True, generator=gen,
                          persistent_workers=cfg.workers > 0)
    subset = Subset(dataset, list(range(info.rank, len(dataset), info.world_size))) if info.enabled else dataset
    return DataLoader(subset, batch_size=1 if cfg.task == "detect" else 1, shuffle=False, num_workers=cfg.workers,
                      collate_fn=collate)


# ----- evaluation -------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_dense(model: nn.Module, dataset, cfg: DenseConfig, device: torch.device,
                   info: DistInfo = DistInfo()) -> Dict[str, Any]:
    """COCO AP (bbox, and segm for Mask R-CNN; also per class) or mIoU / pixel accuracy
    (also per-class IoU) on ``dataset``.

    Leaves the random number generators as it found them, so evaluating (or not) does not
    change the course of training."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _evaluate(model, dataset, cfg, device, info)


def _evaluate(model: nn.Module, dataset, cfg: DenseConfig, device: torch.device, info: DistInfo) -> Dict[str, Any]:
    model.eval()
    loader = _loader(dataset, cfg, info, train=False)
    if cfg.task == "detect":
        from .metrics import coco_evaluate

        preds: Dict[int, Dict[str, torch.Tensor]] = {}
        for images, targets in loader:
            outputs = model([im.to(device) for im in images])
            for out, tgt in zip(outputs, targets):
                preds[int(tgt["image_id"])] = {k: v.cpu() for k, v in out.items()}
        if info.enabled:
            gathered: List[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, preds)
            preds = {k: v for part in gathered for k, v in part.items()}
        iou_types = ("bbox", "segm") if cfg.arch == "maskrcnn" else ("bbox",)
        res = coco_evaluate(dataset.coco, preds, iou_types, dataset.label_to_cat_id, img_ids=list(dataset.ids),
                            per_class=True)
        flat: Dict[str, Any] = {}
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


# ----- training -------------------------------------------------------------------------------

def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Pixel cross-entropy (label 255 ignored), plus for ``ce+dice`` one minus the soft Dice
    coefficient averaged over all classes (the +1 smoothing lets a class that is neither
    labelled nor predicted in the batch score 1, i.e. add nothing)."""
    loss = F.cross_entropy(logits, labels, ignore_index=255)
    if kind == "ce":
        return loss
    if kind != "ce+dice":
        raise ValueError(f"unknown segmentation loss {kind!r}; choose ce or ce+dice")
    valid = labels != 255
    probs = logits.float().softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(labels.masked_fill(~valid, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return loss + (1 - dice).mean()


def _memory_format(cfg: DenseConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _lr_factor(cfg: DenseConfig, it: int, total: int, iters_per_epoch: int) -> float:
    warm = 1.0 if it >= cfg.warmup_iters or cfg.warmup_iters == 0 else 0.001 + (1 - 0.001) * it / cfg.warmup_iters
    if cfg.task == "detect":
        epoch = it / max(iters_per_epoch, 1)  # fractional, so a step may fall inside an epoch
        decay = 0.1 ** sum(epoch >= s for s in cfg.lr_steps)
    else:
        decay = (1 - min(it, total) / total) ** cfg.poly_power
    return warm * decay


def read_dense_checkpoint(path) -> Dict[str, Any]:
    """A checkpoint written by :func:`train_dense`, read safely; a clear error for anything else."""
    from ..models.checkpoint import read_checkpoint_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    ck = read_checkpoint_file(path)
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck or "task" not in ck["config"]:
        raise ValueError(f"{path} is not a checkpoint written by lsnet detect/segment train")
    return ck


def _epoch_loader(loader, epoch: int, seed: int):
    """Make the shuffle of ``epoch`` depend only on (seed, epoch), so a resumed run sees the
    same batches as an uninterrupted one."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    elif loader.generator is not None:
        loader.generator.manual_seed(seed * 100003 + epoch)
    return loader


def train_dense(cfg: DenseConfig, log=print) -> Dict[str, Any]:
    """Train as configured; returns the best validation metric and the checkpoint paths.

    Evaluation and checkpoints happen at epoch ends (every ``eval_every`` epochs for
    detection, about every ``eval_interval`` iterations for segmentation) and at the end.
    """
    info = init_distributed(cfg.device)
    try:
        device = resolve_device(cfg.device, info)
        seed_everything(cfg.seed + info.rank)
        # wrong files stop before any data work and before the output folder is made
        ck = read_dense_checkpoint(cfg.resume) if cfg.resume else None
        if cfg.backbone_checkpoint and not Path(cfg.backbone_checkpoint).is_file():
            raise FileNotFoundError(f"--backbone-checkpoint file not found: {cfg.backbone_checkpoint}")
        out = Path(cfg.output)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        train_set, val_set, class_names = build_dense_data(cfg, info)
        model = build_dense_model(cfg, len(class_names)).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        loader = _loader(train_set, cfg, info, train=True)
        per_epoch = len(loader)
        if per_epoch == 0:
            raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(train_set)} training images")
        total = cfg.epochs * per_epoch if cfg.task == "detect" else cfg.iters
        eval_epochs = cfg.eval_every if cfg.task == "detect" else max(1, round(cfg.eval_interval / per_epoch))
        key = "bbox_AP50" if cfg.arch == "retinanet" else ("segm_AP50" if cfg.arch == "maskrcnn" else "mIoU")
        it, start_epoch, best = 0, 0, {key: -1.0}
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            it, start_epoch, best = ck["iteration"], ck["epoch"] + 1, ck.get("best", best)
            set_rng_state(ck["rng"])
        net: nn.Module = nn.parallel.DistributedDataParallel(model) if info.enabled else model
        metrics = MetricsLog(out, enabled=info.is_main, x_key="iteration",
                             metric_keys=(f"val_{key}",), metric_title=f"validation {key}")
        if info.is_main:
            log(f"training {cfg.arch} with {cfg.backbone} on {cfg.data}: {len(train_set)} train / {len(val_set)} val "
                f"images, {len(class_names)} classes, {total} iterations, batch {cfg.batch_size}x{info.world_size}, "
                f"lr {cfg.lr:.1e}, preset {cfg.preset}, {device}")
        epoch, epochs_run, t_start = start_epoch, 0, time.time()
        loss_sum, n, t0 = 0.0, 0, time.time()
        while it < total:
            net.train()
            batches = _epoch_loader(loader, epoch, cfg.seed)
            bar = progress_bar(min(per_epoch, total - it), f"epoch {epoch + 1}", enabled=info.is_main)
            for batch in batches:
                if it >= total:
                    break
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * _lr_factor(cfg, it, total, per_epoch)
                if cfg.task == "detect":
                    images, targets = batch
                    images = [im.to(device) for im in images]
                    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
                    loss = sum(net(images, targets).values())
                else:
                    images, labels = batch
                    images = images.to(device, memory_format=_memory_format(cfg))
                    loss = segmentation_loss(net(images), labels.to(device), cfg.seg_loss)
                if not math.isfinite(loss.item()):
                    raise TrainingError(f"the loss became {loss.item()} at iteration {it}; the last good checkpoint "
                                        f"is {out / 'last.pth'}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                opt.step()
                it += 1
                loss_sum += loss.item()
                n += 1
                bar.update(1, loss=f"{loss_sum / n:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            bar.close()
            epochs_run += 1
            stopping = cfg.stop_after is not None and epochs_run >= cfg.stop_after
            if (epoch + 1) % eval_epochs and it < total and not stopping:
                epoch += 1
                continue
            res = evaluate_dense(model, val_set, cfg, device, info)
            improved = res[key] > best[key]
            if improved:
                best = {key: res[key], "epoch": epoch, "iteration": it}
            record = {"epoch": epoch, "iteration": it, "train_loss": loss_sum / max(n, 1),
                      "lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0,
                      "elapsed_s": time.time() - t_start,
                      **{f"val_{k}": v for k, v in res.items() if isinstance(v, float)}}
            loss_sum, n, t0 = 0.0, 0, time.time()
            if info.is_main:
                payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "iteration": it,
                           "best": best, "rng": rng_state(), "config": cfg.to_dict(), "class_names": class_names}
                atomic_write(out / "last.pth", lambda tmp: torch.save(payload, tmp))
                if improved:
                    atomic_write(out / "best.pth", lambda tmp: torch.save(payload, tmp))
                metrics.append(record)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k.startswith("val_")
                                  and any(s in k for s in ("AP50", "AP_", "mIoU", "pixel")))
                log(f"epoch {epoch + 1} (iteration {it}/{total}): loss {record['train_loss']:.4f}  {shown}  "
                    f"{record['time_s']:.0f}s" + ("  *best*" if improved else ""))
            epoch += 1
            if stopping and it < total:
                if info.is_main:
                    log(f"stopping after {epochs_run} epoch(s) as asked (--stop-after); continue with "
                        f"--resume {out / 'last.pth'}")
                break
        barrier(info)
        metrics.close()
        return {"best": best, "key": key, "last": str(out / "last.pth"), "best_path": str(out / "best.pth"),
                "iteration": it}
    finally:
        cleanup(info)
