"""Training step (forward + backward + AdamW) of LSNet-T: default SKA path vs the unfold reference.

    python benchmarks/bench_train_step.py [--batch 32] [--img-size 224] [--rounds 5] [--channels-last]

Both variants share one model and one batch; rounds alternate between them. Prints the
median (min-max) seconds per step and the ratio reference / default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import lsnet  # noqa: F401
from lsnet.ops import ska_backend, ska_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lsnet_t")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=1000)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, 1000, (args.batch,))
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    variants = {"reference": lambda: ska_backend("cpu", ska_reference), "default": lambda: ska_backend("cpu", None)}
    times = {k: [] for k in variants}
    for name, ctx in variants.items():  # warm-up
        with ctx():
            step()
    for _ in range(args.rounds):
        for name, ctx in variants.items():
            with ctx():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}, batch {args.batch}, {args.img_size}x{args.img_size}, float32, "
          f"{'channels-last' if args.channels_last else 'NCHW'}, {torch.get_num_threads()} threads")
    print("| SKA | s/step median (min-max) |\n|---|---:|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.3f} ({min(v):.3f}-{max(v):.3f}) |")
    print(f"reference / default: {med['reference'] / med['default']:.2f}x")


if __name__ == "__main__":
    main()
