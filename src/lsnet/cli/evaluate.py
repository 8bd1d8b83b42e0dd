"""``lsnet eval``: top-1, top-5 and loss of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path



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
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else 224")
    p.add_argument("--crop-pct", type=float, default=None, help="default: the checkpoint's, else 0.875")
    p.add_argument("--interpolation", default="bicubic")
    p.add_argument("--device", default="auto")
    p.add_argument("-j", "--workers", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, evaluate, print a table."""
    from torch.utils.data import DataLoader

    from ..data import build_datasets, build_transforms
    from ..engine.distributed import DistInfo, resolve_device
    from ..engine.evaluate import evaluate
    from .predict import load_for_inference

    model, meta = load_for_inference(args.model, args.checkpoint, use_ema=args.ema)
    img_size = args.img_size or meta.get("img_size") or 224
    crop_pct = args.crop_pct or meta.get("crop_pct") or 0.875
    tf = build_transforms(False, img_size, crop_pct=crop_pct, interpolation=args.interpolation)
    splits = build_datasets(args.data, img_size=img_size, train_transform=tf, eval_transform=tf,
                            seed=meta.get("seed", 0))
    if meta.get("class_names") and list(meta["class_names"]) != list(splits.class_names):
        raise ValueError(f"the checkpoint was trained on classes {meta['class_names'][:5]}..., "
                         f"{args.data} has {splits.class_names[:5]}...")
    head = meta["num_classes"]
    if head != len(splits.class_names):
        raise ValueError(f"the checkpoint has {head} classes, {args.data} has {len(splits.class_names)}")
    device = resolve_device(args.device, DistInfo())
    loader = DataLoader(splits.val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    res = evaluate(model.to(device), loader, device)
    which = "EMA" if args.ema else "model"
    print(f"{meta['arch']} ({which} weights of {args.checkpoint}) on {splits.name} validation, "
          f"{res['count']} images, {img_size}px")
    print("| metric | value |\n|---|---:|")
    print(f"| top-1 (%) | {res['top1']:.2f} |\n| top-5 (%) | {res['top5']:.2f} |\n| loss | {res['loss']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(args.checkpoint), "model": meta["arch"],
                                               "data": str(args.data), "ema": args.ema, **res}, indent=2))
    return 0
