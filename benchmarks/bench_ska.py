"""SKA on the CPU: the default path against the unfold-based reference, interleaved runs.

    python benchmarks/bench_ska.py [--batch 1 16] [--repeats 15] [--threads N]

Shapes are those of LSNet-T's LS convolutions at 224x224 (stage 2: 128 channels at 14x14,
stage 3: 256 channels at 7x7, Cw = C/8, K = 3). Prints medians (min-max) in ms and the
ratio reference / default (above 1: the default is faster).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from lsnet.ops import ska, ska_reference

SHAPES = {"stage2 128x14x14": (128, 14, 14), "stage3 256x7x7": (256, 7, 7)}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print("| batch | shape | pass | reference ms | default ms | reference / default |")
    print("|---:|---|---|---:|---:|---:|")
    for batch, (label, (c, h, w)) in itertools.product(args.batch, SHAPES.items()):
        x = torch.randn(batch, c, h, w, requires_grad=True)
        k = torch.randn(batch, c // 8, 9, h, w, requires_grad=True)
        gy = torch.randn(batch, c, h, w)
        for mode in ("forward", "forward+backward"):
            def run(fn):
                if mode == "forward":
                    with torch.no_grad():
                        fn(x, k)
                else:
                    torch.autograd.grad(fn(x, k), (x, k), gy)
            times = {"reference": [], "default": []}
            for _ in range(3):  # warm-up
                run(ska_reference), run(ska)
            for _ in range(args.repeats):  # interleaved, so that drift hits both alike
                times["reference"].append(timed(lambda: run(ska_reference)))
                times["default"].append(timed(lambda: run(ska)))
            med = {n: statistics.median(t) for n, t in times.items()}
            cell = lambda n: f"{med[n]:.2f} ({min(times[n]):.2f}-{max(times[n]):.2f})"
            print(f"| {batch} | {label} | {mode} | {cell('reference')} | {cell('default')} | "
                  f"{med['reference'] / med['default']:.2f}x |")


if __name__ == "__main__":
    main()
