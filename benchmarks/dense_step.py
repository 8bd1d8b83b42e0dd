"""Training-step time of the dense models' small presets, default (NCHW) against channels-last
memory layout, measured side by side (interleaved rounds, medians).

    python benchmarks/dense_step.py [--models semantic_fpn,retinanet,maskrcnn] [--rounds 5]
    python benchmarks/dense_step.py --models semantic_fpn --against frozen_stages=0 \
        --against frozen_stages=0,norm_eval=true

With ``--against``, each model's preset (in channels-last layout) is timed side by side with
the same preset changed by the given DenseConfig fields, one column per ``--against``.

One step = forward, loss, backward and AdamW update on one batch of the shapes set with the
preset's batch size and image size (data loading excluded). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from lsnet.dense.datasets import collate_detection
from lsnet.dense.config import DenseConfig, resolve_dense_config
from lsnet.dense.data import build_dense_data
from lsnet.dense.task import build_dense_model, segmentation_loss

TASKS = {"semantic_fpn": "segment", "retinanet": "detect", "maskrcnn": "detect"}


def make_step(name: str, channels_last: bool, overrides=None):
    """A closure running one training step of ``name`` in the chosen layout."""
    task = TASKS[name]
    cfg = resolve_dense_config(task, {"arch": name, "channels_last": channels_last, **(overrides or {})})
    train, _, classes = build_dense_data(cfg)
    torch.manual_seed(0)
    model = build_dense_model(cfg, len(classes)).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    items = [train[i] for i in range(cfg.batch_size)]
    if task == "segment":
        images = torch.stack([im for im, _ in items]).contiguous(memory_format=fmt)
        labels = torch.stack([lb for _, lb in items])

        def loss_fn():
            return segmentation_loss(model(images), labels, cfg.seg_loss)
    else:
        images, targets = collate_detection(items)

        def loss_fn():
            return sum(model(list(images), list(targets)).values())

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, cfg


def parse_overrides(text: str) -> dict:
    """'frozen_stages=0,norm_eval=true' -> {'frozen_stages': 0, 'norm_eval': True}."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
        out[key.strip().replace("-", "_")] = _literal(value)
    return out


def _literal(value: str):
    """true/false, an int, a float, else the string itself."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def time_interleaved(name: str, steps, rounds: int):
    """Median seconds per step of each closure in ``steps``, timed round by round in turn."""
    times = [[] for _ in steps]
    for step in steps:
        step()  # warm-up: first-call allocations and oneDNN primitive creation
    for r in range(rounds):
        print(f"  {name}: round {r + 1}/{rounds}", end="\r", flush=True)
        for step, ts in zip(steps, times):
            torch.manual_seed(r)  # detection draws a training scale per step: the same for every variant
            start = time.perf_counter()
            step()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def compare_overrides(names, variants, rounds: int) -> None:
    """Print one row per model: preset step time and, per variant, its time and speed-up."""
    labels = ["preset"] + [",".join(f"{k}={v}" for k, v in ov.items()) for ov in variants]
    print("| model | batch | " + " | ".join(f"{lab} s/step" for lab in labels) + " | speed-ups |")
    print("|---|---:|" + "---:|" * (len(labels) + 1))
    for name in names:
        made = [make_step(name, True, ov) for ov in [{}] + variants]
        med = time_interleaved(name, [step for step, _ in made], rounds)
        cfg = made[0][1]
        ups = ", ".join(f"{med[0] / m:.2f}x" for m in med[1:])
        print(f"| {name} | {cfg.batch_size} | " + " | ".join(f"{m:.3f}" for m in med) + f" | {ups} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="semantic_fpn,retinanet,maskrcnn")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per layout")
    parser.add_argument("--against", action="append", type=parse_overrides, default=[],
                        metavar="KEY=VALUE[,...]", help="DenseConfig fields to change (repeatable)")
    args = parser.parse_args()
    known = {f.name for f in dataclasses.fields(DenseConfig)}
    for ov in args.against:
        if set(ov) - known:
            parser.error(f"--against: unknown DenseConfig field(s) {', '.join(sorted(set(ov) - known))}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    if args.against:
        compare_overrides(args.models.split(","), args.against, args.rounds)
        return 0
    print("| model | batch | NCHW s/step | channels-last s/step | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        made = [make_step(name, cl) for cl in (False, True)]
        nchw, nhwc = time_interleaved(name, [step for step, _ in made], args.rounds)
        cfg = made[0][1]
        print(f"| {name} | {cfg.batch_size} | {nchw:.3f} | {nhwc:.3f} | {nchw / nhwc:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
