"""Where inference time goes: torch.profiler's operator table for one timm model.

    python benchmarks/profile_model.py [--model lsnet_t] [--batch 16] [--mode eager|compiled|frozen] [--calls 10]

The model is fused (``lsnet.fuse``) and run under ``torch.inference_mode()`` at 224x224;
the table groups operators by input shape (self CPU time, share of the total, calls), and
each point-wise (1x1) convolution row also gets its achieved GFLOP/s from its shapes
(2 x MACs / time).
"""

from __future__ import annotations

import argparse

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import lsnet
from lsnet.deploy import compile_for_inference


def pointwise_gflops(key: str, shapes, self_us: float, calls: int) -> str:
    """Achieved GFLOP/s of a 1x1 convolution row, or '' for any other row. oneDNN's fused
    binary form (``_convolution_pointwise_``) lists (input, other, weight, ...)."""
    if "convolution" not in key or not self_us:
        return ""
    weight = shapes[2] if key.endswith("_convolution_pointwise_") else shapes[1] if len(shapes) > 1 else None
    if not weight or len(weight) != 4 or weight[2:] != [1, 1] or len(shapes[0]) != 4:
        return ""
    n, _, h, w = shapes[0]
    macs = n * h * w * weight[0] * weight[1]  # 1x1, stride 1: the output grid is the input's
    return f"{2 * macs * calls / (self_us * 1e-6) / 1e9:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lsnet_t")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mode", default="frozen", choices=["eager", "compiled", "frozen"])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    model = lsnet.fuse(timm.create_model(args.model).eval())
    runner = model if args.mode == "eager" else compile_for_inference(model, freeze=args.mode == "frozen")
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):  # warm-up (and compilation)
            runner(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.calls):
                runner(x)
    rows = prof.key_averages(group_by_input_shape=True)
    total = sum(r.self_cpu_time_total for r in rows)
    print(f"{args.model}, batch {args.batch}, {args.mode}, {torch.get_num_threads()} threads: "
          f"{total / args.calls / 1e3:.1f} ms of self CPU time per call (profiled)")
    print("| operator | input shapes | self ms per call | share | calls per call | 1x1 conv GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r.self_cpu_time_total)[: args.rows]:
        shapes = [s for s in r.input_shapes if s]
        gflops = pointwise_gflops(r.key, shapes, r.self_cpu_time_total, r.count)
        print(f"| {r.key} | {shapes[:3]} | {r.self_cpu_time_total / args.calls / 1e3:.2f} | "
              f"{100 * r.self_cpu_time_total / total:.1f}% | {r.count // args.calls} | {gflops} |")


if __name__ == "__main__":
    main()
