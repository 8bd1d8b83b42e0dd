"""The training loop behind ``lsnet train``: the paper's recipe from timm's parts, on CPU or
GPU, one process or several (torchrun), with atomic checkpoints, exact resume, signal
handling, metrics and curves."""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.checkpoint import atomic_write, load_checkpoint
from .config import TrainConfig, total_lr
from .distributed import DistInfo, barrier, cleanup, init_distributed, resolve_device
from .evaluate import autocast_context, evaluate, split_for_rank
from .report import MetricsLog, progress_bar

__all__ = ["train", "TrainingError", "DistillationLoss", "build_model", "load_training_checkpoint"]


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, unusable resume file)."""


# ----- pieces ----------------------------------------------------------------------------------

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """All RNG states, in types ``torch.load(weights_only=True)`` can read back."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_to_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Create the timm model of ``cfg`` (LSNet models get the training resolution)."""
    import timm

    import lsnet  # noqa: F401  registers the LSNet models

    if cfg.model not in timm.list_models():
        raise ValueError(f"unknown --model {cfg.model!r} (not a timm model name)")
    kwargs: Dict[str, Any] = dict(num_classes=num_classes)
    if cfg.drop_path:
        kwargs["drop_path_rate"] = cfg.drop_path
    if cfg.model.startswith("lsnet"):
        kwargs["img_size"] = cfg.img_size
    model = timm.create_model(cfg.model, **kwargs)
    if cfg.pretrained:
        load_checkpoint(model, cfg.pretrained, drop_head=True)
    return model


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves and exits."""

    def __init__(self):
        self.signal: Optional[int] = None

    @contextmanager
    def installed(self):
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`train` (weights only, no code)."""
    from ..models.checkpoint import CheckpointError, read_checkpoint_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"--resume: checkpoint file not found: {path}")
    try:
        ck = read_checkpoint_file(Path(path))
    except CheckpointError as err:
        raise TrainingError(f"--resume: {err}") from err
    missing = [k for k in ("model", "optimizer", "epoch", "config") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise TrainingError(f"--resume: {path} lacks {', '.join(missing)}; is it a checkpoint written by lsnet train?")
    return ck


# ----- the loop --------------------------------------------------------------------------------

def train(cfg: TrainConfig, log=print) -> Dict[str, Any]:
    """Run training as configured; returns the final summary (best top-1, paths)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, dispatch_clip_grad

    from ..data import build_datasets, build_transforms

    info = init_distributed(cfg.device)
    try:
        device = resolve_device(cfg.device, info)
        resume = load_training_checkpoint(cfg.resume) if cfg.resume else None
        if resume is not None:
            saved = TrainConfig.from_dict(resume["config"])
            # what defines the run comes from the checkpoint; where and how long may change
            keep = {"epochs", "output", "resume", "stop_after", "device", "workers", "log_interval", "tensorboard"}
            cfg = TrainConfig.from_dict({**saved.to_dict(), **{k: getattr(cfg, k) for k in keep}})
        seed_everything(cfg.seed + info.rank)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        out = Path(cfg.output)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

        # data
        train_tf = build_transforms(True, cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                                    auto_augment=cfg.aa, color_jitter=cfg.color_jitter, re_prob=cfg.reprob,
                                    hflip=cfg.hflip, scale=tuple(cfg.scale))
        eval_tf = build_transforms(False, cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
        splits = build_datasets(cfg.data, img_size=cfg.img_size, train_transform=train_tf, eval_transform=eval_tf,
                                seed=cfg.seed)
        num_classes = cfg.num_classes or len(splits.class_names)
        if resume is not None and resume.get("class_names") and resume["class_names"] != splits.class_names:
            raise TrainingError(f"--resume: the checkpoint's classes differ from those of {cfg.data}")
        train_loader, val_loader, train_sampler = _loaders(cfg, splits, info)

        # model, loss, optimizer, schedule
        model = build_model(cfg, num_classes).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(cfg.distillation != "none")
        lr = total_lr(cfg, info.world_size)
        opt_kwargs = {"fused": True} if cfg.opt in ("adam", "adamw") else {}  # one kernel, not a loop over tensors
        optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, **opt_kwargs)
        updates_per_epoch = len(train_loader)
        scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr,
                                           warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
                                           step_on_epochs=False, updates_per_epoch=updates_per_epoch)
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "float16" else None
        ema = ModelEmaV3(model, decay=cfg.model_ema_decay, stochastic_rounding=False) if cfg.model_ema else None

        mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                          switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing, num_classes=num_classes)
            base_loss: nn.Module = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            base_loss = LabelSmoothingCrossEntropy(cfg.smoothing)
        else:
            base_loss = nn.CrossEntropyLoss()
        criterion = base_loss
        if cfg.distillation != "none":
            criterion = DistillationLoss(base_loss, _teacher(cfg, num_classes, device), cfg.distillation,
                                         cfg.distillation_alpha, cfg.distillation_tau)

        start_epoch, num_updates, best = 0, 0, {"top1": -1.0, "epoch": -1}
        if resume is not None:
            _unwrap(model).load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scaler is not None and resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            if ema is not None and resume.get("model_ema"):
                ema.module.load_state_dict(resume["model_ema"])
            start_epoch, num_updates = resume["epoch"] + 1, resume["num_updates"]
            # the schedule is a function of (epoch, update) for the current --epochs, as in timm
            scheduler.step(start_epoch)
            scheduler.step_update(num_updates=num_updates)
            best = resume.get("best", best)
            if resume.get("rng"):
                set_rng_state(resume["rng"][info.rank] if isinstance(resume["rng"], list) else resume["rng"])
            if info.is_main:
                log(f"resumed from {cfg.resume} at epoch {start_epoch} (of {cfg.epochs})")

        train_model: nn.Module = model
        if info.enabled:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)

        metrics = MetricsLog(out, enabled=info.is_main, tensorboard=cfg.tensorboard)
        if info.is_main:
            n_params = sum(p.numel() for p in model.parameters())
            log(f"training {cfg.model} ({n_params / 1e6:.2f} M parameters) on {splits.name}: "
                f"{len(splits.train)} train / {len(splits.val)} val images, {num_classes} classes, "
                f"{info.world_size} process(es) on {device}, batch {cfg.batch_size}x{info.world_size}, lr {lr:.2e}, "
                f"{cfg.epochs} epochs, preset {cfg.preset}")

        stop = _StopFlag()
        epoch = start_epoch - 1
        with stop.installed():
            end_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
            for epoch in range(start_epoch, end_epoch):
                if hasattr(train_sampler, "set_epoch"):
                    train_sampler.set_epoch(epoch)
                _reset_skipped(splits.train)
                t0 = time.time()
                stats = _train_one_epoch(cfg, epoch, train_model, model, ema, train_loader, optimizer, scheduler,
                                         scaler, criterion, mixup, device, info, num_updates, stop,
                                         dispatch_clip_grad, out, log)
                num_updates = stats["num_updates"]
                if stats.get("interrupted"):
                    _save(out / "last.pth", cfg, model, ema, optimizer, scheduler, scaler, epoch - 1, num_updates,
                          best, splits, info, interrupted=True)
                    if info.is_main:
                        log(f"stopped by signal {stop.signal} during epoch {epoch}: wrote {out / 'last.pth'}; "
                            f"continue with --resume {out / 'last.pth'} (the interrupted epoch starts over)")
                    return {"interrupted": True, "last": str(out / "last.pth"), "best_top1": best["top1"]}
                scheduler.step(epoch + 1)
                val = evaluate(model, val_loader, device, info, cfg.amp, cfg.channels_last)
                val_ema = evaluate(ema.module, val_loader, device, info, cfg.amp, cfg.channels_last) if ema else None
                top1 = max(val["top1"], val_ema["top1"] if val_ema else -1.0)
                improved = top1 > best["top1"]
                if improved:
                    best = {"top1": top1, "epoch": epoch, "ema": bool(val_ema and val_ema["top1"] > val["top1"])}
                skipped = _skipped(splits.train)
                record = {"epoch": epoch, "train_loss": stats["loss"], "lr": stats["lr"],
                          "images_per_s": stats["images_per_s"], "epoch_time_s": time.time() - t0,
                          "val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
                          "skipped_images": len(skipped)}
                if val_ema:
                    record.update(ema_top1=val_ema["top1"], ema_top5=val_ema["top5"], ema_loss=val_ema["loss"])
                _save(out / "last.pth", cfg, model, ema, optimizer, scheduler, scaler, epoch, num_updates, best,
                      splits, info)
                if improved and info.is_main:
                    _copy_atomic(out / "last.pth", out / "best.pth")
                metrics.append(record)
                if info.is_main:
                    line = (f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['loss']:.4f}  val top-1 {val['top1']:.2f}%"
                            f"  top-5 {val['top5']:.2f}%")
                    if val_ema:
                        line += f"  EMA top-1 {val_ema['top1']:.2f}%"
                    line += f"  lr {stats['lr']:.2e}  {stats['images_per_s']:.0f} img/s  {time.time() - t0:.1f}s"
                    if skipped:
                        line += f"  ({len(skipped)} unreadable image(s) skipped, e.g. {skipped[0]})"
                    log(line + ("  *best*" if improved else ""))
        if info.is_main:
            _write_samples(splits, out)
        barrier(info)
        metrics.close()
        return {"best_top1": best["top1"], "best_epoch": best["epoch"], "last": str(out / "last.pth"),
                "best": str(out / "best.pth"), "epochs": epoch + 1}
    finally:
        cleanup(info)


def _loaders(cfg: TrainConfig, splits, info: DistInfo):
    from timm.data.distributed_sampler import RepeatAugSampler
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    if cfg.repeated_aug:
        sampler = RepeatAugSampler(splits.train, num_replicas=info.world_size, rank=info.rank, shuffle=True)
    elif info.enabled:
        sampler = DistributedSampler(splits.train, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    else:
        sampler = _EpochSampler(len(splits.train), cfg.seed)
    per_batch = cfg.batch_size
    n_train = len(sampler) if hasattr(sampler, "__len__") else len(splits.train)
    if n_train < per_batch:
        raise ValueError(f"--batch-size {per_batch} is larger than the {n_train} training images per process")
    train_loader = DataLoader(splits.train, batch_size=per_batch, sampler=sampler, num_workers=cfg.workers,
                              drop_last=True, pin_memory=torch.cuda.is_available(),
                              persistent_workers=cfg.workers > 0)
    val_set = Subset(splits.val, split_for_rank(len(splits.val), info)) if info.enabled else splits.val
    val_loader = DataLoader(val_set, batch_size=max(per_batch, 64), shuffle=False, num_workers=cfg.workers,
                            pin_memory=torch.cuda.is_available())
    return train_loader, val_loader, sampler


class _EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so that a resumed run sees the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _teacher(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    import timm

    if cfg.teacher not in timm.list_models():
        raise ValueError(f"unknown --teacher {cfg.teacher!r} (not a timm model name)")
    teacher = timm.create_model(cfg.teacher, num_classes=num_classes)
    if cfg.teacher_checkpoint:
        load_checkpoint(teacher, cfg.teacher_checkpoint)
    else:
        print(f"warning: --teacher {cfg.teacher} has no --teacher-checkpoint: distilling from random weights",
              file=sys.stderr)
    return teacher.to(device).eval().requires_grad_(False)


def _train_one_epoch(cfg, epoch, train_model, model, ema, loader, optimizer, scheduler, scaler, criterion, mixup,
                     device, info, num_updates, stop, clip_fn, out, log) -> Dict[str, Any]:
    train_model.train()
    total_loss, seen, t_start = 0.0, 0, time.time()
    bar = progress_bar(len(loader), f"epoch {epoch + 1}/{cfg.epochs}", enabled=info.is_main)
    for step, (images, targets) in enumerate(loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with autocast_context(device, cfg.amp):
            outputs = train_model(images)
            if cfg.distillation != "none":
                loss = criterion(images, outputs, targets)
            else:
                if isinstance(outputs, (tuple, list)):
                    outputs = (outputs[0] + outputs[1]) / 2
                loss = criterion(outputs, targets)
        if not math.isfinite(loss.item()):
            bar.close()
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: training "
                                f"stopped; the last good checkpoint is {out / 'last.pth'} (try a lower --lr or "
                                f"--clip-grad)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                clip_fn(model.parameters(), cfg.clip_grad, mode=cfg.clip_mode)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.clip_grad:
                clip_fn(model.parameters(), cfg.clip_grad, mode=cfg.clip_mode)
            optimizer.step()
        num_updates += 1
        scheduler.step_update(num_updates=num_updates)
        if ema is not None:
            ema.update(model, step=num_updates)
        total_loss += loss.item() * images.shape[0]
        seen += images.shape[0]
        rate = seen * info.world_size / max(time.time() - t_start, 1e-9)
        lr = optimizer.param_groups[0]["lr"]
        bar.update(1, loss=f"{total_loss / seen:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
        if stop.signal is not None:
            bar.close()
            return {"interrupted": True, "num_updates": num_updates}
    bar.close()
    loss_sum = torch.tensor([total_loss, float(seen)], dtype=torch.float64)
    if info.enabled:
        torch.distributed.all_reduce(loss_sum)
    return {"loss": (loss_sum[0] / loss_sum[1].clamp_min(1)).item(), "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen * info.world_size / max(time.time() - t_start, 1e-9), "num_updates": num_updates}


def _save(path: Path, cfg, model, ema, optimizer, scheduler, scaler, epoch, num_updates, best, splits, info,
          interrupted: bool = False) -> None:
    """Write a training checkpoint atomically (rank 0 writes; every rank's RNG state is kept)."""
    states: List[Dict[str, Any]] = [rng_state()]
    if info.enabled:
        gathered: List[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    if not info.is_main:
        return
    payload = {
        "model": _unwrap(model).state_dict(),
        "model_ema": ema.module.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "num_updates": num_updates,
        "best": best,
        "rng": states if info.enabled else states[0],
        "class_names": list(splits.class_names),
        "arch": cfg.model,
        "config": cfg.to_dict(),
        "interrupted": interrupted,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _copy_atomic(src: Path, dst: Path) -> None:
    import shutil

    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _reset_skipped(dataset) -> None:
    if hasattr(dataset, "reset_skipped"):
        dataset.reset_skipped()


def _skipped(dataset) -> List[str]:
    return list(dataset.skipped_files()) if hasattr(dataset, "skipped_files") else []


def _write_samples(splits, out: Path, count: int = 8) -> None:
    """Save a few held-out validation images as PNG files, for ``lsnet predict`` to try."""
    if not hasattr(splits.val, "image"):
        return
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    step = max(len(splits.val) // count, 1)
    for i in range(0, min(len(splits.val), step * count), step):
        label = splits.class_names[splits.val.targets[i]]
        splits.val.image(i).save(folder / f"val{i:04d}_label{label}.png")
