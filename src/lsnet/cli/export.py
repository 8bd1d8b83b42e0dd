"""``lsnet export``: a fused model to ONNX, TorchScript or a torch.export program, checked."""

from __future__ import annotations

import argparse

import timm

from ..deploy.export import FORMATS, export_model
from ..models import fuse, load_checkpoint


def add_parser(sub) -> None:
    """Register the ``export`` sub-command."""
    p = sub.add_parser("export", help="export a fused model (ONNX, TorchScript, torch.export)",
                       description="Fuse the model, export it with a dynamic batch dimension and check the "
                                   "exported file against PyTorch.")
    p.add_argument("--model", default="lsnet_t", help="timm model name (default: lsnet_t)")
    p.add_argument("--checkpoint", help="weights to load (release .pth, ours, or .safetensors)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint's head")
    p.add_argument("--format", default="onnx", choices=FORMATS)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--no-check", action="store_true", help="skip the comparison against PyTorch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, load, fuse, export and report."""
    if args.model not in timm.list_models():
        raise ValueError(f"unknown timm model {args.model!r}")
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = timm.create_model(args.model, **kwargs)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model = fuse(model)
    res = export_model(model, args.output, args.format, (args.img_size, args.img_size), check=not args.no_check)
    line = f"wrote {res.path} ({res.format}, {res.size_mb:.1f} MB, dynamic batch)"
    if res.max_rel_err is not None:
        status = "OK" if res.max_rel_err < 1e-4 else "MISMATCH"
        line += f"; max relative error against PyTorch: {res.max_rel_err:.2e} ({status})"
        print(line)
        return 0 if res.max_rel_err < 1e-4 else 1
    print(line)
    return 0
