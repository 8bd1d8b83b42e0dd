"""SKA on the CPU: the default path against the unfold-based reference, interleaved runs.

    python benchmarks/bench_ska.py [--batch 1 16] [--repeats 15] [--threads N] [--compile]

Shapes are those of LSNet-T's LS convolutions at 224x224 (stage 2: 128 channels at 14x14,
stage 3: 256 channels at 7x7, Cw = C/8, K = 3). Prints medians (min-max) in ms and the
ratio reference / default (above 1: the default is faster).

``--fused`` instead compares, for inference, the LS convolution's tail ``bn(SKA(x, w)) + x``
unfused (eval-mode BatchNorm) with the fused CPU forms of ``lsnet.ops.ska_affine_residual``:
the affine and residual applied after the sum (``epilogue``, what the operator runs) and the sum
started from ``shift + x`` over products with a prescaled x (``prescaled``).

``--compile`` instead compares, for the forward pass, the eager default with two compiled
forms: ``torch.compile(ska_functional)`` (inductor generates its own loop from the traced
standard ops) and ``torch.compile(ska)`` (what models get: one opaque operator running the
eager kernels).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from lsnet.ops import bn_scale_shift, ska, ska_functional, ska_reference
from lsnet.ops.ska_fused import _cpu_epilogue, _cpu_prescaled

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
    parser.add_argument("--compile", action="store_true", help="compare compiled forms (forward) instead")
    parser.add_argument("--fused", action="store_true", help="compare the fused SKA + BatchNorm + residual forms")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fused:
        compare_fused(args)
        return
    if args.compile:
        compare_compiled(args)
        return
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


def compare_compiled(args) -> None:
    """Forward times: eager default vs inductor's loop vs the compiled opaque operator."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward, no grad")
    print("| batch | shape | eager default ms | compiled ska_functional ms | compiled ska ms |")
    print("|---:|---|---:|---:|---:|")
    for batch, (label, (c, h, w)) in itertools.product(args.batch, SHAPES.items()):
        x = torch.randn(batch, c, h, w)
        k = torch.randn(batch, c // 8, 9, h, w)
        torch._dynamo.reset()
        fns = {"eager": ska, "functional": torch.compile(ska_functional, dynamic=False),
               "ska": torch.compile(ska, dynamic=False)}
        times = {n: [] for n in fns}
        with torch.no_grad():
            for fn in fns.values():  # warm-up and compilation
                for _ in range(3):
                    fn(x, k)
            for _ in range(args.repeats):
                for n, fn in fns.items():
                    times[n].append(timed(lambda: fn(x, k)))
        cell = lambda n: f"{statistics.median(times[n]):.2f} ({min(times[n]):.2f}-{max(times[n]):.2f})"
        print(f"| {batch} | {label} | {cell('eager')} | {cell('functional')} | {cell('ska')} |")


def compare_fused(args) -> None:
    """Inference times of the LS convolution's tail: unfused vs the two fused CPU forms, interleaved."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, no grad")
    print("| batch | shape | unfused ms | epilogue ms | prescaled ms | unfused / epilogue | unfused / prescaled |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch, (label, (c, h, w)) in itertools.product(args.batch, SHAPES.items()):
        x = torch.randn(batch, c, h, w)
        k = torch.randn(batch, c // 8, 9, h, w)
        bn = torch.nn.BatchNorm2d(c).eval()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        scale, shift = bn_scale_shift(bn)
        fns = {"unfused": lambda: bn(ska(x, k)) + x, "epilogue": lambda: _cpu_epilogue(x, k, 3, scale, shift),
               "prescaled": lambda: _cpu_prescaled(x, k, 3, scale, shift)}
        times = {n: [] for n in fns}
        with torch.no_grad():
            want = fns["unfused"]()
            for n, fn in fns.items():
                assert torch.allclose(fn(), want, rtol=1e-4, atol=1e-4), n
                for _ in range(3):
                    fn()
            for _ in range(args.repeats):
                for n, fn in fns.items():
                    times[n].append(timed(fn))
        med = {n: statistics.median(t) for n, t in times.items()}
        cell = lambda n: f"{med[n]:.3f} ({min(times[n]):.3f}-{max(times[n]):.3f})"
        print(f"| {batch} | {label} | {cell('unfused')} | {cell('epilogue')} | {cell('prescaled')} | "
              f"{med['unfused'] / med['epilogue']:.2f}x | {med['unfused'] / med['prescaled']:.2f}x |")


if __name__ == "__main__":
    main()
