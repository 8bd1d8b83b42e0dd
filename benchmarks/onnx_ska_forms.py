"""LSNet-T in onnxruntime: SKA's exported form, and where the time goes against EfficientViT-M3.

    python benchmarks/onnx_ska_forms.py [--rounds 15] [--threads 2] [--batch-sizes 1,16]

Exports fused LSNet-T twice: as shipped (``ska_functional``: per-tap pad/slice/multiply/add
nodes) and with SKA written as an im2col by a depth-wise one-hot convolution, a ``Mul`` and a
``ReduceSum`` (an alternative considered for export; the one-hot weights are built once per
channel count outside the trace, so they are constants of the graph). Times both beside
EfficientViT-M3, interleaved round by round, then runs onnxruntime's profiler on each graph
at the largest batch and prints the share of time per operator type.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict
from unittest import mock

import numpy as np
import timm
import torch
import torch.nn.functional as F

import lsnet
from lsnet.deploy.export import export_onnx, onnx_session

_ONE_HOT: Dict[tuple, torch.Tensor] = {}


def _one_hot(channels: int, k: int) -> torch.Tensor:
    key = (channels, k)
    if key not in _ONE_HOT:
        _ONE_HOT[key] = torch.eye(k * k).view(k * k, 1, k, k).repeat(channels, 1, 1, 1)
    return _ONE_HOT[key]


def ska_im2col_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """SKA as one-hot depth-wise convolution (im2col), multiply and sum."""
    n, c, h, wd = x.shape
    cw, kk = int(w.shape[1]), int(w.shape[2])
    k = int(round(kk ** 0.5))
    cols = F.conv2d(x, _one_hot(int(c), k), padding=(k - 1) // 2, groups=int(c))
    cols = cols.view(n, int(c) // cw, cw, kk, h, wd)
    return (cols * w.unsqueeze(1)).sum(dim=3).reshape(n, c, h, wd)


def export_variants(folder: Path) -> Dict[str, Path]:
    """The three graphs: LSNet-T as shipped, LSNet-T with the im2col SKA, EfficientViT-M3."""
    model = lsnet.fuse(timm.create_model("lsnet_t")).eval()
    paths = {"lsnet_t (shipped SKA form)": export_onnx(model, folder / "lsnet_t.onnx")}
    for c in (64, 128, 256, 384):  # build the constants before tracing
        _one_hot(c, 3)
    ska_module = sys.modules["lsnet.ops.ska"]
    with mock.patch.object(ska_module, "ska_functional", ska_im2col_conv):
        paths["lsnet_t (im2col SKA form)"] = export_onnx(model, folder / "lsnet_t_im2col.onnx")
    paths["efficientvit_m3"] = export_onnx(lsnet.fuse(timm.create_model("efficientvit_m3")).eval(),
                                           folder / "efficientvit_m3.onnx")
    return paths


def profile_shares(path: Path, batch: int, threads: int, runs: int = 10) -> collections.Counter:
    """Milliseconds per batch spent in each operator type (onnxruntime's profiler)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.random.randn(batch, 3, 224, 224).astype(np.float32)
    for _ in range(runs):
        session.run(None, {"input": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return per_op


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="1,16")
    args = p.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_variants(Path(tmp))
        sessions = {name: onnx_session(path, args.threads) for name, path in paths.items()}
        print(f"onnxruntime, CPU, {args.threads} threads, float32, 224x224, fused models\n")
        print("| graph | batch | ms/image median (min-max) |\n|---|---:|---:|")
        for b in batches:
            x = np.random.randn(b, 3, 224, 224).astype(np.float32)
            times = {name: [] for name in sessions}
            for s in sessions.values():
                for _ in range(3):
                    s.run(None, {"input": x})
            for _ in range(args.rounds):
                for name, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, {"input": x})
                    times[name].append((time.perf_counter() - t0) * 1e3 / b)
            for name, t in times.items():
                print(f"| {name} | {b} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")
        b = max(batches)
        print(f"\nonnxruntime's profiler, batch {b}: ms per batch by operator type (share)\n")
        for name, path in paths.items():
            shares = profile_shares(path, b, args.threads)
            total = sum(shares.values())
            top = ", ".join(f"{op} {ms:.1f} ({ms / total:.0%})" for op, ms in shares.most_common(4))
            print(f"- {name}: total {total:.1f} ms; {top}")


if __name__ == "__main__":
    main()
