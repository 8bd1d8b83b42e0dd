"""``lsnet export``: a fused model to ONNX, TorchScript or a torch.export program, checked."""

from __future__ import annotations

import argparse
import importlib.util
import logging

from ..deploy.export import FORMATS

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``export`` sub-command."""
    p = sub.add_parser("export", help="export a fused model (ONNX, TorchScript, torch.export)",
                       description="Fuse the model, export it with a dynamic batch dimension and check the "
                                   "exported file against PyTorch.")
    p.add_argument("--model", default=None, help="timm model name (default: the checkpoint's, else lsnet_t)")
    p.add_argument("--checkpoint", help="weights to load (release .pth, ours, or .safetensors)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the head (default: the checkpoint's, else 1000)")
    p.add_argument("--format", default="onnx", choices=FORMATS)
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else the model's (224)")
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--no-check", action="store_true", help="skip the comparison against PyTorch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, load, fuse, export and report."""
    import timm

    import lsnet  # noqa: F401 - registers the LSNet models with timm

    from ..deploy.export import export_model
    from ..engine.inference import check_options, check_output_file, load_for_inference, resolve_preprocessing
    from ..errors import ConfigError
    from ..models import fuse

    check_options(img_size=args.img_size)
    if args.format == "onnx":
        needed = ["onnx"] + ([] if args.no_check else ["onnxruntime"])
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"ONNX export needs {' and '.join(missing)} (not installed): pip install 'lsnet[deploy]'"
                              + (" (or --no-check to skip the onnxruntime comparison)" if missing == ["onnxruntime"]
                                 else ""))
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {args.num_classes}")
    check_output_file(args.output, "--output", create_parent=True)
    if args.checkpoint:
        im = load_for_inference(args.checkpoint, args.model, num_classes=args.num_classes, img_size=args.img_size)
        model, img_size = im.model, im.preprocessing.img_size
    else:
        arch = args.model or "lsnet_t"
        if arch not in timm.list_models():
            raise ConfigError(f"unknown model {arch!r} (not registered with timm)")
        model = timm.create_model(arch, **({} if args.num_classes is None else {"num_classes": args.num_classes}))
        logger.warning(f"no --checkpoint: exporting {arch} with randomly initialised weights")
        img_size = resolve_preprocessing(model, img_size=args.img_size).img_size
    model = fuse(model)
    res = export_model(model, args.output, args.format, (img_size, img_size), check=not args.no_check)
    line = f"wrote {res.path} ({res.format}, {res.size_mb:.1f} MB, dynamic batch, {img_size}px)"
    if res.max_rel_err is not None:
        status = "OK" if res.max_rel_err < 1e-4 else "MISMATCH"
        line += f"; max relative error against PyTorch: {res.max_rel_err:.2e} ({status})"
        print(line)
        return 0 if res.max_rel_err < 1e-4 else 1
    print(line)
    return 0
