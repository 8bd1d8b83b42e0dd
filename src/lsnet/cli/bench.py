"""``lsnet bench``: inference speed of LSNet and peer timm models, interleaved runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import timm

from ..deploy.bench import (
    RUNTIMES,
    BenchConfig,
    format_markdown,
    plot_results,
    run_benchmark,
    write_json,
)
from ..errors import ConfigError


def _ints(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _modes(text: str):
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in RUNTIMES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(RUNTIMES)}, got {text!r}")
    return modes


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N (a GPU's index, as in lsnet train), "
                                         f"got {text!r}")
    return text


def add_parser(sub) -> None:
    """Register the ``bench`` sub-command."""
    p = sub.add_parser("bench", help="measure inference speed (markdown table, JSON, plot)",
                       description="Measure warm, interleaved inference runs of timm models (random weights).")
    p.add_argument("--models", default="lsnet_t,lsnet_s,lsnet_b,efficientvit_m3",
                   help="comma-separated timm model names (default: %(default)s)")
    p.add_argument("--device", default="cpu", type=_device, help="cpu (default), cuda or cuda:N")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 16], help="comma-separated (default: 1,16)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32, or autocast to bfloat16/float16")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm and re-parameterise (lsnet.fuse)")
    p.add_argument("--compile", nargs="?", const="compiled", type=_modes, default=["eager"], metavar="MODES",
                   help="torch.compile each model. Optionally a comma-separated list of PyTorch runtimes to time "
                        "side by side among eager, compiled, frozen and cuda-graph (compiled with inductor freezing: weights "
                        "as constants, pre-packed convolutions, the deployment setting), e.g. --compile eager,frozen")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time each model captured in a CUDA graph and replayed (lsnet.deploy.CUDAGraphModel; "
                        "GPUs only): the forward without Python's launch overhead")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--onnx", action="store_true", help="also time the fused model in onnxruntime (CPU)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per configuration (default 10)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch/onnxruntime intra-op threads")
    p.add_argument("--output", default="bench", help="prefix of the .json and .png files (default: bench)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON and PNG."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    known = set(timm.list_models())
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ConfigError(f"unknown timm model(s): {', '.join(unknown)}")
    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    modes = list(args.compile) + (["cuda-graph"] if args.cuda_graph and "cuda-graph" not in args.compile else [])
    if "cuda-graph" in modes and not args.device.startswith("cuda"):
        raise ConfigError(f"--cuda-graph needs a GPU: add --device cuda (got --device {args.device})")
    cfg = BenchConfig(models=models, batch_sizes=args.batch_sizes, device=args.device, dtype=args.dtype,
                      fuse=args.fuse, modes=modes, channels_last=args.channels_last, onnx=args.onnx,
                      img_size=args.img_size, warmup=args.warmup, rounds=args.rounds, threads=args.threads)
    results = run_benchmark(cfg)
    flags = [f for f, on in (("fused", args.fuse), ("/".join(modes), modes != ["eager"]),
                             ("channels-last", args.channels_last)) if on]
    print(f"{args.device}, {args.dtype}, {args.img_size}x{args.img_size}" + (", " + ", ".join(flags) if flags else ""))
    print(format_markdown(results))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(results, cfg, out.with_suffix(".json"))
    plot_results(results, out.with_suffix(".png"), title=f"{args.device}, {args.dtype}" +
                 (", " + ", ".join(flags) if flags else ""))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0
