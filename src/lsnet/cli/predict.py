"""``lsnet predict``: top-5 classes with probabilities for image files or folders."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn


def add_parser(sub) -> None:
    """Register the ``predict`` sub-command."""
    p = sub.add_parser("predict", help="classify images (top-5 with probabilities)",
                       description="Classify image files (or every image in the given folders).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--model", default=None, help="timm model name (default: the checkpoint's, else lsnet_t)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--crop-pct", type=float, default=None)
    p.add_argument("--topk", type=int, default=5)
    p.set_defaults(func=run)


def load_for_inference(arch: Optional[str], path: str, use_ema: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model in eval mode with the checkpoint's weights, and what the checkpoint says about itself:
    arch, num_classes, class_names, img_size, crop_pct, seed."""
    import timm

    import lsnet
    from ..models.checkpoint import checkpoint_info, load_state_dict_file

    state = load_state_dict_file(path, use_ema=use_ema)
    meta: Dict[str, Any] = {"seed": 0, **checkpoint_info(path)}  # ours carry configuration and class names
    arch = arch or meta.get("arch") or "lsnet_t"
    if meta.get("arch") and arch != meta["arch"]:
        raise ValueError(f"--model {arch} but {path} was trained as {meta['arch']}")
    head = state.get("head.l.weight", state.get("module.head.l.weight"))
    num_classes = head.shape[0] if head is not None else (len(meta["class_names"]) if meta.get("class_names") else 1000)
    kwargs: Dict[str, Any] = {"num_classes": num_classes}
    if arch.startswith("lsnet") and meta.get("img_size"):
        kwargs["img_size"] = meta["img_size"]
    if arch not in timm.list_models():
        raise ValueError(f"unknown --model {arch!r}")
    model = timm.create_model(arch, **kwargs)
    lsnet.load_checkpoint(model, path, use_ema=use_ema)
    meta.update(arch=arch, num_classes=num_classes)
    if not meta.get("class_names"):
        meta["class_names"] = _imagenet_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    return model.eval(), meta


def _imagenet_names():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]


def run(args: argparse.Namespace) -> int:
    """Classify every image and print its top-k."""
    from ..data import DataError, build_transforms, list_images, load_image

    model, meta = load_for_inference(args.model, args.checkpoint, use_ema=args.ema)
    img_size = args.img_size or meta.get("img_size") or 224
    tf = build_transforms(False, img_size, crop_pct=args.crop_pct or meta.get("crop_pct") or 0.875)
    names = meta["class_names"]
    k = min(args.topk, len(names))
    failures = 0
    for path in list_images(args.images):
        try:
            image = load_image(path)
        except DataError as err:
            print(f"{path}: skipped: {err}", file=sys.stderr)
            failures += 1
            continue
        with torch.no_grad():
            probs = model(tf(image).unsqueeze(0)).softmax(dim=1)[0]
        top = probs.topk(k)
        print(f"{path}:")
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {names[i]:>24s}  {100 * p:6.2f}%")
    return 1 if failures else 0
