"""``lsnet predict``: top-5 classes with probabilities for image files or folders."""

from __future__ import annotations

import argparse
import logging

import torch

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``predict`` sub-command."""
    p = sub.add_parser("predict", help="classify images (top-5 with probabilities)",
                       description="Classify image files (or every image in the given folders).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--model", default=None, help="timm model name (default: the checkpoint's, else lsnet_t)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else the model's")
    p.add_argument("--crop-pct", type=float, default=None, help="default: the checkpoint's, else the model's")
    p.add_argument("--interpolation", default=None, help="default: the checkpoint's, else the model's")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every image and print its top-k; 1 when some image could not be read."""
    from ..data import ReadableImages, list_images
    from ..engine.inference import check_options, load_for_inference

    check_options(img_size=args.img_size, crop_pct=args.crop_pct, interpolation=args.interpolation, topk=args.topk)
    paths = list_images(args.images)
    im = load_for_inference(args.checkpoint, args.model, use_ema=args.ema, img_size=args.img_size,
                            crop_pct=args.crop_pct, interpolation=args.interpolation)
    tf = im.transform()
    names = im.class_names
    k = min(args.topk, len(names))
    images = ReadableImages(paths)
    for path, image in images:
        with torch.no_grad():
            logits = im.model(tf(image).unsqueeze(0))
        if isinstance(logits, (tuple, list)):  # distillation heads outside eval mode
            logits = (logits[0] + logits[1]) / 2
        top = logits.softmax(dim=1)[0].topk(k)
        print(f"{path}:")
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {100 * p:6.2f}%  {names[i]}")
    if images.failures:
        logger.warning("%d of %d image(s) could not be read", images.failures, len(paths))
    return 1 if images.failures else 0
