"""Training step (forward + backward + AdamW) of LSNet-T: default SKA path vs the unfold reference.

    python benchmarks/bench_train_step.py [--batch 32] [--img-size 224] [--rounds 5] [--channels-last] [--compile]

All variants share one model and one batch; rounds alternate between them. Prints the
median (min-max) seconds per step and the ratios reference / variant. ``--compile`` adds
a third variant: the default path under ``torch.compile`` (SKA stays one opaque operator
with its hand-written backward; inductor fuses the elementwise work around it).
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
    parser.add_argument("--compile", action="store_true", help="also time the default path under torch.compile")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=1000)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, 1000, (args.batch,))
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    compiled = torch.compile(model) if args.compile else None

    def step(net=model):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    variants = {"reference": (lambda: ska_backend("cpu", ska_reference), model),
                "default": (lambda: ska_backend("cpu", None), model)}
    if compiled is not None:
        variants["default, compiled"] = (lambda: ska_backend("cpu", None), compiled)
    times = {k: [] for k in variants}
    for name, (ctx, net) in variants.items():  # warm-up (and compilation)
        with ctx():
            step(net)
            step(net)
    for _ in range(args.rounds):
        for name, (ctx, net) in variants.items():
            with ctx():
                start = time.perf_counter()
                step(net)
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}, batch {args.batch}, {args.img_size}x{args.img_size}, float32, "
          f"{'channels-last' if args.channels_last else 'NCHW'}, {torch.get_num_threads()} threads")
    print("| SKA | s/step median (min-max) |\n|---|---:|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.3f} ({min(v):.3f}-{max(v):.3f}) |")
    for k in list(times)[1:]:
        print(f"reference / {k}: {med['reference'] / med[k]:.2f}x")


if __name__ == "__main__":
    main()
