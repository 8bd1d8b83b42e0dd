"""``lsnet eval``: top-1, top-5 and loss of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``eval`` sub-command."""
    p = sub.add_parser("eval", help="evaluate a checkpoint (top-1, top-5, loss)",
                       description="Evaluate a checkpoint (the release's, or one written by lsnet train) on the "
                                   "validation split of an ImageFolder root or the built-in digits.")
    p.add_argument("--model", default=None, help="timm model name (default: the checkpoint's, else lsnet_t)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="digits", help="ImageFolder root with val/, or 'digits'")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else the model's (224)")
    p.add_argument("--crop-pct", type=float, default=None, help="default: the checkpoint's, else the model's (0.875)")
    p.add_argument("--interpolation", default=None, help="default: the checkpoint's, else the model's")
    p.add_argument("--device", default="auto")
    p.add_argument("-j", "--workers", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=run)


def _short(names, limit: int = 6) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def run(args: argparse.Namespace) -> int:
    """Load, evaluate, print a table; unreadable images are left out and counted."""
    from torch.utils.data import DataLoader

    from ..data import ReadableBatches, build_eval_dataset, collate_readable
    from ..engine.distributed import DistInfo, resolve_device
    from ..classify.evaluate import evaluate
    from ..engine.inference import check_options, check_output_file, load_for_inference
    from ..errors import ConfigError

    check_options(img_size=args.img_size, crop_pct=args.crop_pct, interpolation=args.interpolation,
                  batch_size=args.batch_size)
    check_output_file(args.json, "--json")  # before the work, not after it
    im = load_for_inference(args.checkpoint, args.model, use_ema=args.ema, img_size=args.img_size,
                            crop_pct=args.crop_pct, interpolation=args.interpolation)
    val, class_names, name = build_eval_dataset(args.data, transform=im.transform(), seed=im.seed)
    if im.info.get("class_names") and list(im.class_names) != list(class_names):
        raise ConfigError(f"{args.checkpoint} was trained on classes {_short(im.class_names)}, "
                          f"{args.data} has {_short(class_names)}")
    if im.num_classes != len(class_names):
        raise ConfigError(f"{args.checkpoint} has {im.num_classes} classes, {args.data} has {len(class_names)}")
    device = resolve_device(args.device, DistInfo())
    loader = DataLoader(val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        collate_fn=collate_readable)
    val.reset_skipped()
    res = evaluate(im.model.to(device), ReadableBatches(loader), device)
    skipped = val.skipped_files()
    res["skipped_images"] = len(skipped)
    if skipped:
        logger.warning("%d unreadable image(s) left out of the metrics, e.g. %s", len(skipped), skipped[0])
    which = "EMA" if args.ema else "model"
    left_out = f" ({len(skipped)} unreadable, skipped)" if skipped else ""
    print(f"{im.arch} ({which} weights of {args.checkpoint}) on {name} validation, "
          f"{res['count']} images{left_out}, {im.preprocessing.img_size}px")
    print("| metric | value |\n|---|---:|")
    print(f"| top-1 (%) | {res['top1']:.2f} |\n| top-5 (%) | {res['top5']:.2f} |\n| loss | {res['loss']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(args.checkpoint), "model": im.arch,
                                               "data": str(args.data), "ema": args.ema,
                                               "preprocessing": im.preprocessing.to_dict(), **res}, indent=2))
    return 0
