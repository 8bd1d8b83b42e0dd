"""Fused LSNet: the fused LS-convolution operator and attention against BatchNorm folding alone.

    python benchmarks/fused_forms.py [--model lsnet_t] [--batch-sizes 1,16] [--rounds 15] [--device cpu]

Times, side by side and interleaved round by round, two inference forms of one model:
``folded`` (BatchNorms folded into their convolutions, RepVGG branches merged, but each LS
convolution still SKA -> BatchNorm -> add and the attention as trained: what ``lsnet.fuse``
did before the fused operator) and ``fused`` (today's ``lsnet.fuse``: LKP plus one
``lsnet::ska_bn_residual`` operator, the attention with its bias gathered once). Prints the
operators each dispatches per forward (``count_aten_ops``) and the median ms per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import timm
import torch

import lsnet
from lsnet.deploy.profile import count_aten_ops
from lsnet.models.fuse import fuse_modules
from lsnet.models.lsnet import Attention, LSConv


def folded_only(model: torch.nn.Module) -> torch.nn.Module:
    """``lsnet.fuse`` with the LS-convolution and attention fusions switched off."""

    def keep(self):
        fuse_modules(self)
        return self

    with mock.patch.object(LSConv, "fuse", keep), mock.patch.object(Attention, "fuse", keep, create=True):
        return lsnet.fuse(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lsnet_t")
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    model = timm.create_model(args.model).eval()
    forms = {"folded": folded_only(model).to(device), "fused": lsnet.fuse(model).to(device)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"{args.model}, {device}, float32, 224x224, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("\n| form | batch | operators per forward | ms/image median (min-max) |\n|---|---:|---:|---:|")
    rows = []
    for b in (int(v) for v in args.batch_sizes.split(",")):
        x = torch.randn(b, 3, 224, 224, device=device)
        times = {name: [] for name in forms}
        with torch.inference_mode():
            ops = {name: sum(count_aten_ops(m, x).values()) for name, m in forms.items()}
            for m in forms.values():
                for _ in range(3):
                    m(x)
            for _ in range(args.rounds):
                for name, m in forms.items():
                    sync()
                    t0 = time.perf_counter()
                    m(x)
                    sync()
                    times[name].append((time.perf_counter() - t0) * 1e3 / b)
        for name in forms:
            t = times[name]
            rows.append((name, b, statistics.median(t)))
            print(f"| {name} | {b} | {ops[name]} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")
    print()
    for b in sorted({r[1] for r in rows}):
        folded, fused = (r[2] for r in rows if r[1] == b)
        print(f"batch {b}: fused / folded time = {fused / folded:.2f}x")


if __name__ == "__main__":
    main()
