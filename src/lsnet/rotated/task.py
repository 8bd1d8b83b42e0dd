"""Oriented object detection on the engine (``lsnet rotated train``): DOTA-format data split into
patches, Oriented R-CNN, and the validation images scored whole (patch detections merged back)
as mmrotate scores DOTA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..engine.distributed import DistInfo
from ..engine.loop import Run, Task, UpdateSchedule, fit, train_loader
from ..data.folder import DataError
from .config import RotatedConfig
from .models import OrientedRCNN, oriented_rcnn

__all__ = ["RotatedTask", "train_rotated", "prepare_data", "predict_patches", "evaluate_rotated",
           "build_rotated_model", "Detections"]

logger = logging.getLogger(__name__)

#: Per image: (boxes (N, 5), scores (N,), labels (N,)).
Detections = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def data_root(cfg: RotatedConfig) -> Path:
    """The DOTA root the configuration names; the synthetic set is generated there when missing."""
    if cfg.data != "aerial":
        return Path(cfg.data)
    from .aerial import is_generated, make_aerial

    root = Path(cfg.aerial_dir)
    if not is_generated(root):  # its aerial.json is written last: a set cut short is made again
        logger.info(f"generating the synthetic aerial set in {root} (seeded, once)")
        make_aerial(root, seed=0)
        stale = split_root(cfg, root)
        if stale.is_dir():  # patches of an earlier set
            import shutil

            shutil.rmtree(stale)
    return root


def split_root(cfg: RotatedConfig, root: Path) -> Path:
    """Where the patches of ``root`` go: ``--split-dir`` or ``<root>-split<patch>-<gap>``."""
    return Path(cfg.split_dir) if cfg.split_dir else root.parent / f"{root.name}-split{cfg.patch_size}-{cfg.gap}"


def prepare_split(cfg: RotatedConfig, root: Path, split: str) -> Path:
    """The patches of ``root/split`` (made once; a finished split leaves a ``.done`` marker)."""
    from .split import split_dota

    src = root / split
    if not (src / "images").is_dir():
        raise DataError(f"{src}: no images/ folder (a DOTA-format split holds images/ and labelTxt/)")
    dst = split_root(cfg, root) / split
    if not (dst / ".done").is_file():
        logger.info(f"splitting {src} into {cfg.patch_size}px patches (gap {cfg.gap}) in {dst}")
        split_dota(src, dst, patch_size=cfg.patch_size, gap=cfg.gap)
        (dst / ".done").write_text("")
    return dst


def read_classes(root: Path) -> Tuple[str, ...]:
    """The class names of a DOTA root: its ``classes.txt`` (or the one beside ``train/``), else
    DOTA-v1.0's fifteen."""
    from .dota import DOTA_V1_CLASSES, find_classes_file, read_classes_file

    found = find_classes_file(root / "train") or find_classes_file(root)
    return read_classes_file(found) if found else tuple(DOTA_V1_CLASSES)


def prepare_data(cfg: RotatedConfig, splits: Tuple[str, ...] = ("train", "val")):
    """(train patches or None, val patches, val ground truth of the whole images, class names).

    Training uses the patches that hold at least one object (mmrotate's ``filter_empty_gt``);
    every label file is read and checked here, before training starts."""
    from torch.utils.data import Subset

    from .dota import DotaDataset, dota_train_transform

    root = data_root(cfg)
    classes = read_classes(root)
    # every label file of the whole images is read and checked before anything is written
    whole = {split: DotaDataset(root / split, classes=classes) for split in ("train", "val") if split in splits}
    train = None
    if "train" in splits:
        transform = dota_train_transform(classes, flip_ratio=(cfg.flip_ratio,) * 3, rotate_ratio=cfg.rotate_ratio)
        patches = DotaDataset(prepare_split(cfg, root, "train"), classes=classes, transform=transform)
        keep = [i for i in range(len(patches)) if len(patches.annotation(i)["boxes"])]
        if not keep:
            raise DataError(f"{patches.root}: no patch holds an object; nothing to train on")
        train = Subset(patches, keep)
    val = DotaDataset(prepare_split(cfg, root, "val"), classes=classes)
    whole_val = whole["val"]
    return train, val, whole_val.annotations(), list(classes)


def build_rotated_model(cfg: RotatedConfig, num_classes: int) -> OrientedRCNN:
    """The configured Oriented R-CNN."""
    return oriented_rcnn(cfg.backbone, num_classes, cfg.settings(), backbone_checkpoint=cfg.backbone_checkpoint,
                         norm_eval=cfg.norm_eval, frozen_stages=cfg.frozen_stages, frozen_norm=cfg.frozen_norm,
                         drop_path_rate=cfg.drop_path_rate)


@torch.no_grad()
def predict_patches(model: nn.Module, dataset, device: torch.device, batch_size: int = 2, workers: int = 0,
                    info: DistInfo = DistInfo(), progress: bool = False) -> Dict[str, Detections]:
    """The model's detections on every patch of ``dataset`` (this process's share under
    torchrun, gathered on every process), by patch name."""
    from torch.utils.data import DataLoader, Subset

    from .dota import collate

    model.eval()
    indices = list(range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers, collate_fn=collate)
    from ..engine.report import progress_bar

    bar = progress_bar(len(loader), "detecting on the patches", enabled=progress and info.is_main)
    results: Dict[str, Detections] = {}
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for out, target in zip(outputs, targets):
            results[target["name"]] = (out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu())
        bar.update()
    bar.close()
    if info.enabled:
        gathered: List[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
    return results


def evaluate_rotated(model: nn.Module, dataset, annotations: Dict[str, Dict[str, torch.Tensor]],
                     classes: List[str], device: torch.device, merge_nms_iou: float = 0.1, batch_size: int = 2,
                     info: DistInfo = DistInfo(), progress: bool = False
                     ) -> Tuple[Dict[str, Any], Dict[str, Detections]]:
    """DOTA mAP at IoU 0.5 of the whole validation images (patch detections merged back with
    rotated NMS per class) and the merged detections. Leaves the random generators as it found
    them, so evaluating (or not) does not change the course of training."""
    from .evaluation import evaluate_dota
    from .split import merge_patch_detections

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        patches = predict_patches(model, dataset, device, batch_size=batch_size, info=info, progress=progress)
    merged = merge_patch_detections(patches, iou_threshold=merge_nms_iou)
    for name in annotations:  # images without any detection still count their objects
        merged.setdefault(name, (torch.zeros((0, 5)), torch.zeros(0), torch.zeros(0, dtype=torch.long)))
    result = evaluate_dota(merged, annotations, num_classes=len(classes))
    metrics: Dict[str, Any] = {"mAP50": float(result["mAP"])}
    metrics["per_class_AP50"] = {name: float(ap) for name, ap in zip(classes, result["ap"])}
    return metrics, merged


def lr_factor(cfg: RotatedConfig, it: int, iters_per_epoch: int) -> float:
    """mmdetection's schedule_1x: linear warm-up from ``warmup_ratio`` over ``warmup_iters``
    updates, then 10x drops at the (fractional) epochs of ``lr_steps``."""
    warm = 1.0
    if it < cfg.warmup_iters:
        warm = cfg.warmup_ratio + (1 - cfg.warmup_ratio) * it / cfg.warmup_iters
    epoch = it / max(iters_per_epoch, 1)
    return warm * 0.1 ** sum(epoch >= s for s in cfg.lr_steps)


class RotatedTask(Task):
    """What oriented detection adds to the engine: DOTA patches, Oriented R-CNN's own losses,
    and DOTA mAP50 of the merged validation images."""

    kind = "rotated"
    best_key = "mAP50"
    x_key = "epoch"
    metric_title = "validation mAP50"

    def __init__(self, cfg: RotatedConfig):
        super().__init__(cfg)
        self.cfg: RotatedConfig = cfg

    def setup(self, run: Run) -> None:
        cfg = self.cfg
        if cfg.backbone_checkpoint and not Path(cfg.backbone_checkpoint).is_file():
            raise FileNotFoundError(f"--backbone-checkpoint file not found: {cfg.backbone_checkpoint}")
        info = run.info
        if info.enabled and info.rank != 0:  # rank 0 generates and splits the data first
            torch.distributed.barrier()
        self.train_dataset, self.val_dataset, self.annotations, classes = prepare_data(cfg)
        if info.enabled and info.rank == 0:
            torch.distributed.barrier()
        self.class_names = list(classes)

    def build_model(self, run: Run) -> nn.Module:
        return build_rotated_model(self.cfg, len(self.class_names))

    def build_loader(self, run: Run):
        from .dota import collate

        return train_loader(self.train_dataset, self.cfg.batch_size, self.cfg, run.info, collate_fn=collate)

    def build_optimizer(self, run: Run, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def schedule(self, updates_per_epoch: int) -> Tuple[int, Optional[int]]:
        return self.cfg.epochs, self.cfg.epochs * updates_per_epoch

    def build_scheduler(self, run: Run, optimizer, updates_per_epoch: int):
        return UpdateSchedule(optimizer, lambda it: lr_factor(self.cfg, it, updates_per_epoch))

    def eval_every(self, updates_per_epoch: int) -> int:
        return self.cfg.eval_every

    def loss(self, run: Run, model: nn.Module, batch) -> Tuple[torch.Tensor, int]:
        images, targets = batch
        device = run.device
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        return sum(model(images, targets).values()), len(images)

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        metrics, _ = evaluate_rotated(model, self.val_dataset, self.annotations, self.class_names, run.device,
                                      self.cfg.merge_nms_iou, self.cfg.batch_size, run.info)
        return metrics

    def format_metrics(self, metrics: Dict[str, Any], prefix: str = "val") -> str:
        return f"{prefix} mAP50 {metrics['mAP50']:.4f}"

    def describe(self, run: Run, model: nn.Module) -> str:
        cfg, info = self.cfg, run.info
        return (f"training Oriented R-CNN with {cfg.backbone} on {cfg.data}: {len(self.train_dataset)} train "
                f"patches / {len(self.annotations)} val images ({len(self.val_dataset)} patches of "
                f"{cfg.patch_size}px), {len(self.class_names)} classes, batch {cfg.batch_size}x{info.world_size}, "
                f"lr {cfg.lr:.1e}, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, preset {cfg.preset}, {run.device}")

    def checkpoint_extras(self) -> Dict[str, Any]:
        return {"arch": "oriented_rcnn", "backbone": self.cfg.backbone}


def train_rotated(cfg: RotatedConfig) -> Dict[str, Any]:
    """Train Oriented R-CNN as configured (see :func:`lsnet.engine.fit` for the summary)."""
    return fit(RotatedTask(cfg))
