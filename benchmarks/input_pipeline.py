"""Is training input-bound? The classification loader alone against the model's training step.

    python benchmarks/input_pipeline.py [--data digits] [--model lsnet_t] [--device auto]
        [--workers 0,2,auto] [--batches 40] [--steps 20] [--json FILE]

Builds the training loader exactly as ``lsnet train`` does (same preset, transforms and
sampler) and times it alone, without a model, for each ``--workers`` value (``auto``: what the
engine picks for this device and host). Then times the model's training step (forward,
backward, AdamW update; synchronised on a GPU) on one batch held on the device. A loader
slower than the step means the GPU (or CPU) waits for data; ``lsnet train`` warns about it
during the run too. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lsnet  # noqa: F401  registers the models
from lsnet.classify.config import resolve_config
from lsnet.classify.task import ClassificationTask
from lsnet.engine.distributed import DistInfo, resolve_device
from lsnet.engine.loop import Run, default_workers, host_cores


def loader_rate(task: ClassificationTask, run: Run, batches: int, warmup: int = 2) -> float:
    """Images per second the training loader delivers on its own (after ``warmup`` batches)."""
    loader = task.build_loader(run)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(min(batches, len(loader) - warmup)):
        images, _targets = next(it)
        n += images.shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader  # stop persistent workers before the next setting starts its own
    return rate


def step_rate(task: ClassificationTask, run: Run, steps: int) -> float:
    """Images per second of the model's training step on a batch already on the device."""
    model = task.build_model(run).to(run.device)
    if run.cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, targets = next(iter(task.build_loader(run)))
    images, targets = images.to(run.device), targets.to(run.device)
    if run.cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()

    def step():
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return images.shape[0] / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="lsnet_t")
    p.add_argument("--preset", default=None, help="training preset (default: as lsnet train picks for --data)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", default="0,2,auto", help="comma-separated loader settings to time")
    p.add_argument("--batches", type=int, default=40, help="batches timed per loader setting")
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    overrides = {"data": args.data, "model": args.model, "device": args.device}
    if args.preset:
        overrides["preset"] = args.preset
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    cfg = resolve_config(overrides)
    info = DistInfo()
    device = resolve_device(cfg.device, info)
    auto = default_workers(device, info)
    settings = [auto if w.strip() == "auto" else int(w) for w in args.workers.split(",")]
    cfg.workers = settings[0]
    with tempfile.TemporaryDirectory() as tmp:
        task = ClassificationTask(cfg)
        run = Run(cfg=cfg, info=info, device=device, out=Path(tmp))
        task.setup(run)
        model_rate = step_rate(task, run, args.steps)
        rows = []
        for workers in dict.fromkeys(settings):  # each setting once, in order
            cfg.workers = workers
            rows.append({"workers": workers, "loader_images_per_s": loader_rate(task, run, args.batches)})
    print(f"{cfg.model} on {cfg.data} ({cfg.preset} preset, batch {cfg.batch_size}, {cfg.img_size} px), "
          f"{device}, {host_cores()} CPU cores, auto workers = {auto}")
    print(f"training step alone: {model_rate:.0f} img/s\n")
    print("| workers | loader alone (img/s) | loader / step | bound by |")
    print("|---:|---:|---:|---|")
    for row in rows:
        ratio = row["loader_images_per_s"] / model_rate
        print(f"| {row['workers']} | {row['loader_images_per_s']:.0f} | {ratio:.2f} | "
              f"{'the loader' if ratio < 1 else 'the model'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": cfg.model, "data": cfg.data, "device": str(device),
                                               "cores": host_cores(), "auto_workers": auto,
                                               "step_images_per_s": model_rate, "loaders": rows}, indent=2))


if __name__ == "__main__":
    main()
