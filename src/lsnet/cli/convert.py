"""``lsnet convert``: a training checkpoint to a weights-only ``.safetensors`` file."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register the ``convert`` sub-command."""
    p = sub.add_parser("convert", help="a checkpoint to weights-only .safetensors (optionally float16)",
                       description="Keep a checkpoint's weights (model or EMA) without optimizer state, in "
                                   "safetensors, with its architecture, class names and preprocessing (image "
                                   "size, crop, interpolation, mean, std) as metadata. "
                                   "Such files load everywhere a checkpoint does (--checkpoint, "
                                   "--backbone-checkpoint, lsnet.load_checkpoint).")
    p.add_argument("checkpoint", help="input: release .pth, one written by lsnet train, or .safetensors")
    p.add_argument("output", help="output .safetensors file")
    p.add_argument("--ema", action="store_true", help="keep the EMA weights instead of the model's")
    p.add_argument("--half", action="store_true",
                   help="store weight matrices and kernels as float16 (half the size; biases and BatchNorm "
                        "statistics stay float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert and print a one-line summary."""
    from ..engine.inference import check_output_file
    from ..models.checkpoint import convert_checkpoint

    check_output_file(args.output, "output", create_parent=True)
    res = convert_checkpoint(args.checkpoint, args.output, use_ema=args.ema, half=args.half)
    line = f"wrote {res['path']} ({res['tensors']} tensors, {res['bytes'] / 2**20:.1f} MiB"
    if args.half:
        line += (f"; {res['float16_tensors']} as float16, largest rounding error "
                 f"{res['max_rel_rounding_error']:.1e} of a tensor's largest value")
    known = ", ".join(f"{k}={res[k]}" for k in ("arch", "img_size") if k in res)
    if res.get("class_names"):
        known += (", " if known else "") + f"{len(res['class_names'])} class names"
    print(line + ")" + (f"; metadata: {known}" if known else ""))
    return 0
