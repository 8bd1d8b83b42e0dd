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
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every image, ``--batch-size`` at a time on ``--device``, and print each one's
    top-k in the order given; 1 when some image could not be read (it is skipped)."""
    from ..data import ReadableImages, list_images
    from ..engine.distributed import DistInfo, resolve_device
    from ..engine.inference import check_options, load_for_inference

    check_options(img_size=args.img_size, crop_pct=args.crop_pct, interpolation=args.interpolation, topk=args.topk,
                  batch_size=args.batch_size)
    device = resolve_device(args.device, DistInfo())
    paths = list_images(args.images)
    im = load_for_inference(args.checkpoint, args.model, use_ema=args.ema, img_size=args.img_size,
                            crop_pct=args.crop_pct, interpolation=args.interpolation)
    model = im.model.to(device)
    tf = im.transform()
    names = im.class_names
    k = min(args.topk, len(names))

    def classify(batch):
        with torch.inference_mode():
            logits = model(torch.stack([x for _, x in batch]).to(device))
        if isinstance(logits, (tuple, list)):  # distillation heads outside eval mode
            logits = (logits[0] + logits[1]) / 2
        top = logits.float().softmax(dim=1).topk(k)
        for (path, _), probs, indices in zip(batch, top.values.tolist(), top.indices.tolist()):
            print(f"{path}:")
            for p, i in zip(probs, indices):
                print(f"  {100 * p:6.2f}%  {names[i]}")

    images = ReadableImages(paths)  # unreadable files are logged, counted and left out of the batches
    batch = []
    for path, image in images:
        batch.append((path, tf(image)))
        if len(batch) == args.batch_size:
            classify(batch)
            batch = []
    if batch:
        classify(batch)
    if images.failures:
        logger.warning("%d of %d image(s) could not be read", images.failures, len(paths))
    return 1 if images.failures else 0
