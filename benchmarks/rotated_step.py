"""Time Oriented R-CNN training steps and inference on the CPU, side by side: memory layout
(NCHW vs channels-last) and a trainable vs frozen backbone, on patches of the synthetic aerial set.

    python benchmarks/rotated_step.py [--patch-size 512] [--batch-size 4] [--steps 3] [--threads 2]

Prints a markdown table of median seconds per step (forward + backward + AdamW update) and per
inference batch. The patches come from ``lsnet rotated make-aerial`` (generated and split on
first use under data/aerial, as ``lsnet rotated train`` does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lsknet_t")
    parser.add_argument("--patch-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lsnet.rotated.config import resolve_rotated_config
    from lsnet.rotated.task import build_rotated_model, prepare_data

    rows = []
    for layout in ("nchw", "channels_last"):
        for frozen in (-1, 4):
            cfg = resolve_rotated_config(dict(preset="small", backbone=args.backbone, patch_size=args.patch_size,
                                              frozen_stages=frozen, frozen_norm="batch",
                                              channels_last=layout == "channels_last"))
            train, val, _, classes = prepare_data(cfg)
            torch.manual_seed(0)
            model = build_rotated_model(cfg, len(classes)).train()
            fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            items = [train[i] for i in range(args.batch_size)]
            images = [im for im, _ in items]  # the detector batches them (weights set the layout)
            targets = [t for _, t in items]
            times = []
            for step in range(args.steps + 1):
                start = time.perf_counter()
                loss = sum(model(images, targets).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step:
                    times.append(time.perf_counter() - start)
            model.eval()
            infer = []
            with torch.no_grad():
                for step in range(args.steps + 1):
                    start = time.perf_counter()
                    model(images)
                    if step:
                        infer.append(time.perf_counter() - start)
            rows.append((layout, "frozen" if frozen == 4 else "trained", statistics.median(times),
                         statistics.median(infer)))
            print(f"{layout} backbone {rows[-1][1]}: step {rows[-1][2]:.2f} s, inference {rows[-1][3]:.2f} s",
                  flush=True)
    print(f"\n{args.backbone}, {args.batch_size} patches of {args.patch_size}px, {args.threads} threads, "
          f"small preset, median of {args.steps}")
    print("| layout | backbone | train step (s) | inference (s) |\n|---|---|---:|---:|")
    for layout, frozen, step, infer in rows:
        print(f"| {layout} | {frozen} | {step:.2f} | {infer:.2f} |")


if __name__ == "__main__":
    main()
