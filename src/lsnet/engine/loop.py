"""The one training engine: every task (classification, detection, segmentation, oriented
detection) plugs a :class:`Task` into :func:`fit`.

The task supplies what differs (its data, model, optimizer, schedule, loss and evaluation,
and the metric that picks ``best``); the engine owns the rest: devices and DDP under
torchrun, autocast and the gradient scaler, the optimizer and scheduler steps, gradient
clipping, the model EMA, the seeded sampler, checkpointing (atomic ``last.pth`` / ``best.pth``,
exact resume, SIGINT/SIGTERM, a NaN stop), progress bars, ``metrics.jsonl``, ``curves.png``
and TensorBoard.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError
from ..models.checkpoint import CheckpointError, atomic_write, read_checkpoint_file
from .config import RunConfig
from .distributed import DistInfo, barrier, cleanup, init_distributed, resolve_device
from .report import MetricsLog, progress_bar

__all__ = ["Task", "Run", "fit", "TrainingError", "autocast_context", "seed_everything", "rng_state",
           "set_rng_state", "read_training_checkpoint", "check_output_dir", "train_loader", "UpdateSchedule",
           "split_for_rank", "unwrap_model", "resume_overrides", "default_workers", "InputMonitor"]

logger = logging.getLogger(__name__)

#: Files that mark a folder as holding a run.
RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl", "config.json")


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a diverged loss, an unusable resume file, an unwritable output)."""


# ----- small shared pieces -----------------------------------------------------------------------

def autocast_context(device: torch.device, amp: Optional[str]):
    """``torch.autocast`` for ``amp`` ('bfloat16' / 'float16'), or nothing."""
    import contextlib

    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, amp))


def split_for_rank(n: int, info: DistInfo) -> list:
    """Indices of the samples this process evaluates: every world_size-th, no padding, so that
    summed counts are exact."""
    return list(range(info.rank, n, info.world_size))


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile`` and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class UpdateSchedule:
    """A learning-rate schedule given as ``factor(num_updates)`` times each group's base rate,
    with the step interface of timm's schedulers (``step(epoch)``, ``step_update(n)``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]):
        self.optimizer, self.factor = optimizer, factor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_update(0)

    def step(self, epoch: int) -> None:
        """Epoch ends change nothing: the rate is a function of the update count."""

    def step_update(self, num_updates: int) -> None:
        """Set the rate for the next update."""
        f = self.factor(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def state_dict(self) -> Dict[str, Any]:
        """Nothing to save: the rate follows from the update count."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


def host_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(device: torch.device, info: DistInfo, cores: Optional[int] = None) -> int:
    """Data-loading processes when ``--workers`` is not given.

    On a GPU the model consumes batches far faster than one process decodes and augments them,
    so every core of this process's share of the host but one (kept for the training loop
    itself) loads data, up to 16. On the CPU the loader competes with the model for the same
    cores: small hosts (at most 4 cores) load in the main process, larger ones give a quarter of
    their cores to loading.
    """
    cores = host_cores() if cores is None else cores
    per_process = max(1, cores // max(1, info.local_world_size))
    if device.type == "cuda":
        return max(1, min(16, per_process - 1))
    return 0 if per_process <= 4 else min(8, per_process // 4)


def train_loader(dataset, batch_size: int, cfg: RunConfig, info: DistInfo, collate_fn=None,
                 repeated_aug: bool = False) -> torch.utils.data.DataLoader:
    """The training loader of every task, full batches only, shuffled so that each epoch's
    order depends only on (seed, epoch) and a resumed run sees the batches an uninterrupted one
    would: the loader's own generator, re-seeded by :func:`seed_epoch` (one process), timm's
    repeated-augmentation sampler when asked, or DistributedSampler (torchrun)."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler, generator = None, None
    if repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler = RepeatAugSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True)
    elif info.enabled:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    else:
        generator = torch.Generator().manual_seed(cfg.seed)
    per_process = len(sampler) if sampler is not None else len(dataset)
    if per_process < batch_size:
        raise UserError(f"--batch-size {batch_size} is larger than the {per_process} training images per process")
    workers = cfg.workers or 0
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=sampler is None, generator=generator,
                      num_workers=workers, drop_last=True, collate_fn=collate_fn,
                      # pinned pages let the host-to-GPU copy run asynchronously (non_blocking=True);
                      # deeper prefetching rides out slow batches while the GPU works
                      pin_memory=cuda, persistent_workers=workers > 0,
                      prefetch_factor=(4 if cuda else 2) if workers > 0 else None)


def seed_epoch(loader: torch.utils.data.DataLoader, epoch: int, seed: int) -> None:
    """Make the shuffle of ``epoch`` a function of (seed, epoch) only."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    elif loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)


# ----- checkpoints and the run folder ---------------------------------------------------------

def read_training_checkpoint(path: str, task_kind: Optional[str] = None) -> Dict[str, Any]:
    """A checkpoint written by :func:`fit`, read without running code; a one-line error naming
    the file for anything else (or for a checkpoint of another task)."""
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"--resume: checkpoint file not found: {path}")
    try:
        ck = read_checkpoint_file(p)
    except CheckpointError as err:
        raise TrainingError(f"--resume: {err}") from err
    missing = [k for k in ("model", "optimizer", "epoch", "config") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise TrainingError(f"--resume: {path} lacks {', '.join(missing)}; it is not a training checkpoint "
                            f"written by lsnet")
    kind = ck.get("task") or ck["config"].get("task") or "classify"
    if task_kind is not None and kind != task_kind:
        raise TrainingError(f"--resume: {path} is a {kind} checkpoint, not a {task_kind} one")
    return ck


def check_output_dir(out: Path, resume: Optional[str], overwrite: bool) -> None:
    """Refuse an output that is a file, is not writable, or holds another run (unless resuming
    that run, or ``--overwrite``). Writes nothing."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--output {out} is a file, not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise TrainingError(f"--output {out}: {probe} is not writable")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if not held or overwrite:
        return
    if resume and Path(resume).resolve().parent == out.resolve():
        return
    raise TrainingError(f"--output {out} holds another run ({', '.join(held)}): continue it with --resume "
                        f"{out / 'last.pth'}, start over with --overwrite, or choose another --output")


def _clear_run(out: Path) -> None:
    for name in RUN_FILES + ("curves.png",):
        (out / name).unlink(missing_ok=True)


def _write(path: Path, write: Callable[[Path], None]) -> None:
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as err:  # PyTorch reports a full disk as a RuntimeError
        raise TrainingError(f"could not write {path}: {err} (disk full or read-only?)") from err


# ----- the task interface --------------------------------------------------------------------

@dataclass
class Run:
    """What a task sees of the run: configuration, process, device, output folder."""

    cfg: RunConfig
    info: DistInfo
    device: torch.device
    out: Path
    resume: Optional[Dict[str, Any]] = None  # the checkpoint being resumed, if any
    state: Dict[str, Any] = field(default_factory=dict)  # between the engine's steps (e.g. "improved")


class Task:
    """The part of training that differs between tasks. Subclasses set ``kind``, ``best_key``
    and implement the methods that raise ``NotImplementedError``."""

    kind = "task"
    best_key = "metric"  # the evaluation metric that picks best.pth (higher is better)
    x_key = "epoch"  # the x axis of metrics.jsonl and curves.png: epoch or iteration
    metric_title = "validation metric"
    class_names: List[str] = []
    train_dataset = None  # may offer skipped_files() / reset_skipped() for unreadable images

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    # set-up, before anything is written
    def setup(self, run: Run) -> None:
        """Build and check the data (``train_dataset``, ``class_names``)."""
        raise NotImplementedError

    def build_model(self, run: Run) -> nn.Module:
        """The model to train (on the CPU; the engine moves it)."""
        raise NotImplementedError

    def build_loader(self, run: Run) -> torch.utils.data.DataLoader:
        """The training loader (usually :func:`train_loader`)."""
        raise NotImplementedError

    def build_optimizer(self, run: Run, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer."""
        raise NotImplementedError

    def build_scheduler(self, run: Run, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
        """An object with timm's scheduler interface (``step``, ``step_update``, ``state_dict``)."""
        raise NotImplementedError

    def schedule(self, updates_per_epoch: int) -> Tuple[int, Optional[int]]:
        """(epochs, the total number of updates or None when every epoch runs whole)."""
        raise NotImplementedError

    def check_resume(self, run: Run, checkpoint: Dict[str, Any]) -> None:
        """Stop when the checkpoint does not fit this run (e.g. other classes)."""
        saved = checkpoint.get("class_names")
        if saved and list(saved) != list(self.class_names):
            raise TrainingError(f"--resume: the checkpoint's classes ({', '.join(map(str, saved[:8]))}...) differ "
                                f"from those of the data ({', '.join(map(str, self.class_names[:8]))}...)")

    # the step and the evaluation
    def loss(self, run: Run, model: nn.Module, batch) -> Tuple[torch.Tensor, int]:
        """(the loss of one batch, the number of samples in it); runs under autocast."""
        raise NotImplementedError

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        """Validation metrics (floats, plus anything JSON can hold); ``best_key`` among them."""
        raise NotImplementedError

    def eval_every(self, updates_per_epoch: int) -> int:
        """Epochs between evaluations (the last epoch and a stop always evaluate)."""
        return 1

    def format_metrics(self, metrics: Dict[str, Any], prefix: str = "val") -> str:
        """The metrics for the epoch line."""
        return "  ".join(f"{prefix} {k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))

    def describe(self, run: Run, model: nn.Module) -> str:
        """The banner logged before training."""
        return f"training {self.kind}"

    def checkpoint_extras(self) -> Dict[str, Any]:
        """Entries stored with every checkpoint besides the engine's (architecture, preprocessing)."""
        return {}

    def finish(self, run: Run) -> None:
        """Called on the main process after the last epoch (e.g. to write sample images)."""


# ----- the loop ---------------------------------------------------------------------------------

class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves and returns."""

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


@dataclass
class _State:
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    ema: Any
    params: List[torch.Tensor]
    epoch: int = 0
    num_updates: int = 0
    best: Dict[str, Any] = field(default_factory=dict)


def fit(task: Task) -> Dict[str, Any]:
    """Train ``task`` as its configuration says; returns a summary: ``best`` (metric, value,
    epoch), ``best_value``, ``last`` and ``best_path``, ``epochs`` run, ``num_updates``,
    ``interrupted``."""
    cfg = task.cfg
    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        return _fit(task, cfg, info)
    finally:
        cleanup(info)


def _fit(task: Task, cfg: RunConfig, info: DistInfo) -> Dict[str, Any]:
    device = resolve_device(cfg.device, info)
    if cfg.workers is None:
        cfg.workers = default_workers(device, info)  # resolved before config.json records it
    ck = read_training_checkpoint(cfg.resume, task.kind) if cfg.resume else None
    out = Path(cfg.output)
    check_output_dir(out, cfg.resume, cfg.overwrite)
    seed_everything(cfg.seed + info.rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    run = Run(cfg=cfg, info=info, device=device, out=out, resume=ck)

    # everything is built and checked before the first file is written
    task.setup(run)
    if ck is not None:
        task.check_resume(run, ck)
    model = task.build_model(run).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = task.build_loader(run)
    monitor = InputMonitor(loader.num_workers, max(1, host_cores() // max(1, info.local_world_size)))
    per_epoch = len(loader)
    optimizer = task.build_optimizer(run, model)
    scheduler = task.build_scheduler(run, optimizer, per_epoch)
    epochs, max_updates = task.schedule(per_epoch)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "float16" else None
    ema = None
    if cfg.model_ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.model_ema_decay, stochastic_rounding=False)
    state = _State(model=model, train_model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema,
                   params=[p for p in model.parameters() if p.requires_grad],
                   best={"metric": task.best_key, task.best_key: -math.inf, "epoch": -1})
    if ck is not None:
        _restore(state, ck, info)
        if info.is_main:
            logger.info(f"resumed from {cfg.resume} at epoch {state.epoch + 1} of {epochs}")

    if info.is_main:
        if cfg.overwrite:
            _clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(
            {"task": task.kind, **cfg.to_dict()}, indent=2)))
    if info.enabled:
        state.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        state.train_model = torch.compile(state.train_model)

    metrics = MetricsLog(out, enabled=info.is_main, tensorboard=cfg.tensorboard, x_key=task.x_key,
                         metric_keys=(f"val_{task.best_key}", f"ema_{task.best_key}"),
                         metric_title=task.metric_title)
    if info.is_main:
        logger.info(task.describe(run, model))
    stop = _StopFlag()
    end_epoch = epochs if cfg.stop_after is None else min(epochs, state.epoch + cfg.stop_after)
    since = {"loss": 0.0, "seen": 0, "t0": time.time(), "t_start": time.time()}
    first_epoch = state.epoch
    with stop.installed():
        while state.epoch < end_epoch and (max_updates is None or state.num_updates < max_updates):
            epoch = state.epoch
            seed_epoch(loader, epoch, cfg.seed)
            if hasattr(task.train_dataset, "reset_skipped"):
                task.train_dataset.reset_skipped()
            updates_at_start = state.num_updates
            t_epoch = time.time()
            interrupted = _train_one_epoch(task, run, state, loader, epochs, max_updates, since, stop, monitor)
            if interrupted:
                # the interrupted epoch starts over on resume, from the schedule's position at its start
                state.num_updates = updates_at_start
                _save(out / "last.pth", task, run, state, epoch - 1, interrupted=True)
                if info.is_main:
                    logger.warning(f"stopped by signal {stop.signal} during epoch {epoch + 1}: wrote "
                                   f"{out / 'last.pth'}; continue with --resume {out / 'last.pth'} (epoch "
                                   f"{epoch + 1} starts over)")
                metrics.close()
                return _summary(state, out, epoch - first_epoch, interrupted=True)
            state.scheduler.step(epoch + 1)
            state.epoch = epoch + 1
            finished = state.epoch >= end_epoch or (max_updates is not None and state.num_updates >= max_updates)
            if state.epoch % task.eval_every(per_epoch) == 0 or finished:
                _evaluate_and_log(task, run, state, metrics, since, t_epoch, epochs, max_updates)
            else:
                _log_training_epoch(task, run, state, since, t_epoch, epochs, per_epoch)
            _save(out / "last.pth", task, run, state, epoch)
    if info.is_main:
        if state.epoch < epochs and (max_updates is None or state.num_updates < max_updates):
            logger.info(f"stopping after {state.epoch - first_epoch} epoch(s) as asked (--stop-after); continue "
                        f"with --resume {out / 'last.pth'}")
        else:
            task.finish(run)
    barrier(info)
    metrics.close()
    return _summary(state, out, state.epoch - first_epoch)


def _restore(state: _State, ck: Dict[str, Any], info: DistInfo) -> None:
    unwrap_model(state.model).load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    if state.scaler is not None and ck.get("scaler"):
        state.scaler.load_state_dict(ck["scaler"])
    if state.ema is not None and ck.get("model_ema"):
        state.ema.module.load_state_dict(ck["model_ema"])
    state.epoch = ck["epoch"] + 1
    state.num_updates = ck.get("num_updates", ck.get("iteration", 0))
    # the schedule is a function of (epoch, update), as in timm
    state.scheduler.step(state.epoch)
    state.scheduler.step_update(num_updates=state.num_updates)
    state.best = {"metric": state.best["metric"], **ck.get("best", state.best)}
    rng = ck.get("rng")
    if rng:
        set_rng_state(rng[info.rank] if isinstance(rng, list) else rng)


class InputMonitor:
    """How long the training loop waits for the data loader, and a warning when it is the bottleneck.

    The loop's time splits into waiting for the next batch and everything else (moving the
    batch, forward, backward, the update; the loss is read back at least every
    ``log_interval`` steps, so on a GPU its work is inside that time too). When waiting takes
    more than ``threshold`` of an epoch, the model could have consumed batches faster than the
    loader produced them: :meth:`end_epoch` returns a one-time warning with both rates and the
    loader's settings. The first ``skip`` batches of each epoch (workers starting) are ignored.
    """

    def __init__(self, workers: int, cores: int, threshold: float = 0.25, skip: int = 2, min_steps: int = 8):
        self.workers, self.cores, self.threshold, self.skip, self.min_steps = workers, cores, threshold, skip, min_steps
        self.warned = False
        self.start_epoch()

    def start_epoch(self) -> None:
        """Forget the previous epoch's timings."""
        self.wait = self.busy = 0.0
        self.images = self.steps = 0

    def record(self, wait: float, busy: float, images: int) -> None:
        """One step: ``wait`` seconds for its batch, ``busy`` seconds for the rest."""
        self.steps += 1
        if self.steps > self.skip:
            self.wait += wait
            self.busy += busy
            self.images += images

    @property
    def wait_fraction(self) -> float:
        total = self.wait + self.busy
        return self.wait / total if total > 0 else 0.0

    def end_epoch(self) -> Optional[str]:
        """The warning to print, once per run, when this epoch was input-bound; else None."""
        if self.warned or self.steps - self.skip < self.min_steps or self.wait_fraction <= self.threshold:
            return None
        self.warned = True
        loader_rate = self.images / (self.wait + self.busy)
        model_rate = self.images / max(self.busy, 1e-9)
        hint = (f"raise --workers (now {self.workers}; this process has {self.cores} CPU cores)"
                if self.workers < self.cores else "the loader already uses every core: lighten the augmentation "
                                                  "or store smaller images")
        return (f"the input pipeline is the bottleneck: {self.wait_fraction:.0%} of the epoch waiting for data; the "
                f"model could take {model_rate:.0f} img/s but the loader delivered {loader_rate:.0f} img/s; {hint}")


def _train_one_epoch(task: Task, run: Run, state: _State, loader, epochs: int, max_updates: Optional[int],
                     since: Dict[str, Any], stop: _StopFlag, monitor: Optional[InputMonitor] = None) -> bool:
    """One pass over the loader (or up to ``max_updates``); True when a signal stopped it."""
    from timm.utils import dispatch_clip_grad

    cfg, info = run.cfg, run.info
    state.train_model.train()
    steps = len(loader) if max_updates is None else min(len(loader), max_updates - state.num_updates)
    bar = progress_bar(steps, f"epoch {state.epoch + 1}/{epochs}", enabled=info.is_main)
    # reading the loss back waits for the GPU: do it every log_interval steps there, every step elsewhere
    sync_every = max(1, cfg.log_interval) if run.device.type == "cuda" else 1
    pending: List[Tuple[torch.Tensor, int, int]] = []  # (loss, images, step) not yet read back
    seen, t0 = 0, time.time()
    batches = iter(loader)
    if monitor is not None:
        monitor.start_epoch()
    try:
        for step in range(steps):
            t_wait = time.perf_counter()
            batch = next(batches)
            t_busy = time.perf_counter()
            with autocast_context(run.device, cfg.amp):
                loss, n = task.loss(run, state.train_model, batch)
            pending.append((loss.detach(), n, step))
            if len(pending) >= sync_every or step == steps - 1:
                values = torch.stack([p[0].float() for p in pending]).tolist()
                for value, (_, m, at) in zip(values, pending):
                    if not math.isfinite(value):
                        raise TrainingError(f"the loss became {value} at epoch {state.epoch + 1}, step {at + 1}: "
                                            f"training stopped; the last good checkpoint is {run.out / 'last.pth'} "
                                            f"(try a lower --lr or --clip-grad)")
                    since["loss"] += value * m
                    since["seen"] += m
                pending.clear()
            state.optimizer.zero_grad(set_to_none=True)
            if state.scaler is not None:
                state.scaler.scale(loss).backward()
                if cfg.clip_grad:
                    state.scaler.unscale_(state.optimizer)
                    dispatch_clip_grad(state.params, cfg.clip_grad, mode=cfg.clip_mode)
                state.scaler.step(state.optimizer)
                state.scaler.update()
            else:
                loss.backward()
                if cfg.clip_grad:
                    dispatch_clip_grad(state.params, cfg.clip_grad, mode=cfg.clip_mode)
                state.optimizer.step()
            state.num_updates += 1
            state.scheduler.step_update(num_updates=state.num_updates)
            if state.ema is not None:
                state.ema.update(state.model, step=state.num_updates)
            seen += n
            if monitor is not None:
                monitor.record(t_busy - t_wait, time.perf_counter() - t_busy, n * info.world_size)
            rate = seen * info.world_size / max(time.time() - t0, 1e-9)
            bar.update(1, loss=f"{since['loss'] / max(since['seen'], 1):.4f}",
                       lr=f"{state.optimizer.param_groups[0]['lr']:.2e}", img_s=f"{rate:.{1 if rate < 10 else 0}f}")
            if stop.signal is not None:
                return True
    finally:
        bar.close()
    since["images_per_s"] = seen * info.world_size / max(time.time() - t0, 1e-9)
    if monitor is not None and info.is_main:
        warning = monitor.end_epoch()
        if warning:
            logger.warning(warning)
    return False


def _log_training_epoch(task: Task, run: Run, state: _State, since: Dict[str, Any], t_epoch: float, epochs: int,
                        per_epoch: int) -> None:
    """The console line of an epoch that is not evaluated: the training loss so far (since the
    last evaluation, averaged over every process), the rate, the time, and when the next
    evaluation comes. metrics.jsonl keeps one record per evaluation."""
    sums = torch.tensor([since["loss"], float(since["seen"])], dtype=torch.float64)
    if run.info.enabled:
        torch.distributed.all_reduce(sums)
    if run.info.is_main:
        every = task.eval_every(per_epoch)
        next_eval = min(-(-state.epoch // every) * every, epochs)
        rate = since.get("images_per_s", 0.0)
        logger.info(f"epoch {state.epoch}/{epochs}: loss {(sums[0] / sums[1].clamp_min(1)).item():.4f}  "
                    f"lr {state.optimizer.param_groups[0]['lr']:.2e}  {rate:.{1 if rate < 10 else 0}f} img/s  "
                    f"{time.time() - t_epoch:.1f}s  (next evaluation after epoch {next_eval})")


def _evaluate_and_log(task: Task, run: Run, state: _State, metrics: MetricsLog, since: Dict[str, Any],
                      t_epoch: float, epochs: int, max_updates: Optional[int]) -> None:
    info, key = run.info, task.best_key
    sums = torch.tensor([since["loss"], float(since["seen"])], dtype=torch.float64)
    if info.enabled:
        torch.distributed.all_reduce(sums)
    train_loss = (sums[0] / sums[1].clamp_min(1)).item()
    val = task.evaluate(run, state.model)
    val_ema = task.evaluate(run, state.ema.module) if state.ema is not None else None
    value = max(val[key], val_ema[key] if val_ema else -math.inf)
    improved = value > state.best[key]
    if improved:
        state.best = {"metric": key, key: value, "epoch": state.epoch - 1, "iteration": state.num_updates,
                      "ema": bool(val_ema and val_ema[key] > val[key])}
    skipped = list(task.train_dataset.skipped_files()) if hasattr(task.train_dataset, "skipped_files") else []
    now = time.time()
    # epochs count from 1, as the console's "epoch 3/15" (checkpoints keep the 0-based index, as timm's)
    record = {"epoch": state.epoch, "iteration": state.num_updates, "train_loss": train_loss,
              "lr": state.optimizer.param_groups[0]["lr"], "images_per_s": since.get("images_per_s", 0.0),
              "epoch_time_s": now - t_epoch, "time_s": now - since["t0"], "elapsed_s": now - since["t_start"],
              "skipped_images": len(skipped),
              **{f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))}}
    if val_ema:
        record.update({f"ema_{k}": v for k, v in val_ema.items() if isinstance(v, (int, float))})
    since.update(loss=0.0, seen=0, t0=now)
    if info.is_main:
        metrics.append(record)
        where = f"epoch {state.epoch}/{epochs}"
        if max_updates is not None:
            where += f" (iteration {state.num_updates}/{max_updates})"
        line = f"{where}: loss {train_loss:.4f}  {task.format_metrics(val)}"
        if val_ema:
            line += f"  {task.format_metrics(val_ema, prefix='EMA')}"
        rate = record["images_per_s"]
        line += f"  lr {record['lr']:.2e}  {rate:.{1 if rate < 10 else 0}f} img/s  {record['epoch_time_s']:.1f}s"
        if skipped:
            line += f"  ({len(skipped)} unreadable image(s) skipped, e.g. {skipped[0]})"
        logger.info(line + ("  *best*" if improved else ""))
    run.state["improved"] = improved


def _save(path: Path, task: Task, run: Run, state: _State, epoch: int, interrupted: bool = False) -> None:
    """Write last.pth atomically (rank 0 writes; every rank's RNG state is kept), and best.pth
    when the evaluation just before improved."""
    info = run.info
    states: List[Any] = [rng_state()]
    if info.enabled:
        gathered: List[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    improved = run.state.pop("improved", False)
    if not info.is_main:
        return
    payload = {
        "model": unwrap_model(state.model).state_dict(),
        "model_ema": state.ema.module.state_dict() if state.ema is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": epoch,
        "num_updates": state.num_updates,
        "iteration": state.num_updates,
        "best": state.best,
        "rng": states if info.enabled else states[0],
        "task": task.kind,
        "class_names": list(task.class_names),
        "config": {"task": task.kind, **run.cfg.to_dict()},
        "interrupted": interrupted,
        **task.checkpoint_extras(),
    }
    _write(path, lambda tmp: torch.save(payload, tmp))
    if improved and not interrupted:
        _write(path.parent / "best.pth", lambda tmp: shutil.copyfile(path, tmp))


def _summary(state: _State, out: Path, epochs_run: int, interrupted: bool = False) -> Dict[str, Any]:
    key = state.best.get("metric")
    return {"best": state.best, "best_key": key, "best_value": state.best.get(key), "last": str(out / "last.pth"),
            "best_path": str(out / "best.pth"), "epochs": state.epoch, "epochs_run": epochs_run,
            "num_updates": state.num_updates, "interrupted": interrupted}


def resume_overrides(overrides: Dict[str, Any], task_kind: str) -> Dict[str, Any]:
    """For ``--resume``: the resumed run's saved configuration with ``overrides`` (only what the
    user set) on top; the output folder defaults to the checkpoint's. Other task configurations
    build from this instead of their preset, so a resume continues the run it resumes."""
    ck = read_training_checkpoint(overrides["resume"], task_kind)
    saved = dict(ck["config"])  # its "task" is dropped by configurations that have no such field
    for once in ("stop_after", "overwrite"):  # they applied to the invocation that wrote the checkpoint
        saved.pop(once, None)
    changed = {k: (saved.get(k), v) for k, v in overrides.items() if k != "resume" and saved.get(k) != v}
    for k, (old, new) in changed.items():
        if k != "output":
            logger.info(f"--resume: {k} changed from {old!r} to {new!r}")
    values = {**saved, **overrides}
    if "output" not in overrides:
        values["output"] = str(Path(overrides["resume"]).parent)
    return values
