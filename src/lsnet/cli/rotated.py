"""``lsnet rotated make-aerial|split|train|eval|predict``: oriented object detection on
DOTA-format data with Oriented R-CNN on an LSKNet or LSNet backbone."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List

from .args import Column, add_run_arguments, amp_overrides, check_predict_output, pretrained_backbone, float_list, \
    show_preset_defaults

logger = logging.getLogger(__name__)

BACKBONES = ["lsknet_t", "lsknet_s", "lsnet_t", "lsnet_s", "lsnet_b"]


def add_parser(sub) -> None:
    """Register ``rotated`` and its sub-commands."""
    p = sub.add_parser("rotated", help="oriented object detection on DOTA-format data (Oriented R-CNN)")
    rsub = p.add_subparsers(dest="rotated_command", metavar="COMMAND", required=True)

    mk = rsub.add_parser("make-aerial", help="generate the synthetic aerial set in the DOTA format (seeded)")
    mk.add_argument("root", help="folder to write (train/, val/, classes.txt)")
    mk.add_argument("--num-train", type=int, help="training images (default: the generator's)")
    mk.add_argument("--num-val", type=int, help="validation images (default: the generator's)")
    mk.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    mk.add_argument("--crops", metavar="DIR",
                    help="also write single-object crops (ImageFolder) there, to pre-train a backbone with lsnet train")
    mk.set_defaults(func=run_make_aerial)

    sp = rsub.add_parser("split", help="cut large DOTA images into overlapping patches (the DOTA devkit's way)")
    sp.add_argument("src", help="a DOTA-format folder (images/ and labelTxt/)")
    sp.add_argument("dst", help="folder to write the patches to (same layout)")
    sp.add_argument("--patch-size", type=int, default=1024, help="patch side in pixels (default 1024)")
    sp.add_argument("--gap", type=int, default=200, help="overlap between neighbouring patches (default 200)")
    sp.set_defaults(func=run_split)

    tr = rsub.add_parser("train", help="train Oriented R-CNN (presets: small for the synthetic set, 1x as in "
                                       "the paper)",
                         description="Train Oriented R-CNN. The preset sets the schedule and sizes ('small' for the "
                                     "synthetic set, '1x' otherwise); the options override it. Defaults are shown per "
                                     "preset: on the synthetic set, small starts from the shipped pre-trained backbone "
                                     "(weights/lsknet_t_aerial.safetensors) when there is one; 'small from scratch': "
                                     "with --backbone-checkpoint none.")
    tr.add_argument("--backbone", "--model", dest="backbone", choices=BACKBONES, metavar="NAME",
                    help="the backbone: " + ", ".join(BACKBONES) + " (any timm model with features_only works from "
                                                                   "Python)")
    tr.add_argument("--backbone-checkpoint", "--initial-checkpoint", dest="backbone_checkpoint", metavar="FILE",
                    help="classification or backbone weights: the release's lsk_t_backbone.pth.tar, lsnet train's "
                         "best.pth or .safetensors (for the synthetic set the repository ships "
                         "weights/lsknet_t_aerial.safetensors, the default there); 'none': from scratch")
    tr.add_argument("--pretrained", action="store_true", default=None,
                    help="start the backbone from its published ImageNet weights (timm's pretrained=True, fetched "
                         "from the Hugging Face hub once: LSNet's; LSKNet's are release files for "
                         "--backbone-checkpoint)")
    tr.add_argument("--data", help="'aerial' (generated when missing) or a DOTA root with train/ and val/")
    tr.add_argument("--aerial-dir", help="where the synthetic set lives")
    tr.add_argument("--split-dir", help="where the patches go (default: <data>-split<patch>-<gap>)")
    tr.add_argument("--preset", choices=["small", "1x"],
                    help="'small' (the default for the synthetic set) or '1x' (the default for other data)")
    tr.add_argument("--output", help="folder for checkpoints, metrics.jsonl and curves")
    tr.add_argument("--patch-size", type=int, help="patch side")
    tr.add_argument("--gap", type=int, help="overlap of neighbouring patches")
    tr.add_argument("--epochs", type=int, help="length of the schedule")
    tr.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    tr.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    tr.add_argument("--lr-steps", type=float_list, metavar="EPOCHS",
                    help="comma-separated epochs (fractions allowed) at which the lr drops 10x, e.g. 8,11")
    tr.add_argument("--warmup-iters", type=int, help="updates of linear warm-up from a third of the rate")
    tr.add_argument("-b", "--batch-size", type=int, help="patches per step and process")
    tr.add_argument("--flip-ratio", type=float, help="probability of each flip (horizontal, vertical, diagonal)")
    tr.add_argument("--rotate-ratio", type=float, help="probability of a random rotation")
    tr.add_argument("--fpn-channels", type=int, help="width of the FPN and the RPN (the release: 256)")
    tr.add_argument("--fc-channels", type=int, help="width of the box head's two FC layers (the release: 1024)")
    tr.add_argument("--roi-batch", type=int, metavar="N", help="RoIs sampled per image (the release: 512)")
    tr.add_argument("--rpn-post-nms", type=int, metavar="N", help="proposals kept per image (the release: 2000)")
    tr.add_argument("--drop-path", "--drop-path-rate", dest="drop_path_rate", type=float, metavar="RATE",
                    help="the backbone's stochastic depth (the release: 0.1)")
    tr.add_argument("--norm-eval", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the backbone's BatchNorm statistics frozen")
    tr.add_argument("--frozen-stages", type=int, metavar="N", help="freeze the stem and the first N stages")
    tr.add_argument("--frozen-norm", choices=["eval", "batch"],
                    help="BatchNorm in the frozen stages: eval keeps the pre-trained statistics, batch normalises "
                         "with each batch's and updates them (weights stay fixed)")
    tr.add_argument("--eval-every", type=int, metavar="EPOCHS", help="epochs between evaluations")
    add_run_arguments(tr)
    tr.add_argument("--tensorboard", action="store_true", default=None, help="also log to TensorBoard")
    tr.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    tr.set_defaults(func=run_train)
    show_preset_defaults(tr, preset_columns(), skip=("preset", "backbone_checkpoint"), fields={"amp_on": "amp"},
                         none={"workers": "auto", "amp": "off"})

    ev = rsub.add_parser("eval", help="DOTA mAP50 of a checkpoint on the validation split (whole images)")
    ev.add_argument("--checkpoint", required=True, help="a best.pth or last.pth of lsnet rotated train")
    ev.add_argument("--data", help="a DOTA root with val/ (default: the checkpoint's)")
    ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    ev.add_argument("--submission", metavar="DIR",
                    help="also write the merged detections in the DOTA task-1 format (Task1_<class>.txt)")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ev.set_defaults(func=run_eval)

    pr = rsub.add_parser("predict", help="detect on whole images: PNGs with rotated boxes and DOTA task-1 files")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (PNG, JPEG, TIFF, ...)")
    pr.add_argument("--checkpoint", required=True, help="a best.pth or last.pth of lsnet rotated train")
    pr.add_argument("--output", default="predictions", help="folder for the drawn PNGs and Task1_<class>.txt files")
    pr.add_argument("--score-threshold", type=float, default=0.3,
                    help="draw boxes scoring at least this (default 0.3; the task-1 files keep every detection)")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    pr.set_defaults(func=run_predict)


def preset_columns() -> List[Column]:
    """The configuration each preset resolves to; the small preset as on the synthetic set with
    the shipped backbone, and from scratch."""
    from ..rotated.config import resolve_rotated_config

    small = resolve_rotated_config({"preset": "small", "backbone_checkpoint": "FILE"}).to_dict()
    scratch = resolve_rotated_config({"preset": "small", "backbone_checkpoint": "none"}).to_dict()
    return [("small", small, None), ("small from scratch", scratch, "small"),
            ("1x", resolve_rotated_config({"preset": "1x"}).to_dict(), None)]


def run_make_aerial(args: argparse.Namespace) -> int:
    """Write the synthetic aerial set (and optionally its classification crops)."""
    from ..rotated.aerial import make_aerial, make_aerial_crops

    kwargs = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val)) if v is not None}
    summary = make_aerial(args.root, seed=args.seed, **kwargs)
    print(_summary_line(summary, args.root))
    if args.crops:
        make_aerial_crops(args.crops, seed=args.seed)
        print(f"crops written to {args.crops}; pre-train with: lsnet train --model lsknet_t --data {args.crops} ...")
    return 0


def _summary_line(summary: Any, root: str) -> str:
    if isinstance(summary, dict) and "splits" in summary:
        parts = [f"{split}: {info.get('num_images', '?')} images, {info.get('num_objects', '?')} objects"
                 for split, info in summary["splits"].items()]
        return "; ".join(parts) + f"; written to {root}"
    return f"written to {root}"


def run_split(args: argparse.Namespace) -> int:
    """Cut a DOTA folder into patches."""
    from ..errors import ConfigError
    from ..rotated.split import split_dota

    if not 0 <= args.gap < args.patch_size:
        raise ConfigError(f"--gap must lie in [0, --patch-size), got {args.gap}")
    summary = split_dota(args.src, args.dst, patch_size=args.patch_size, gap=args.gap)
    print(f"{summary.get('num_patches', '?') if isinstance(summary, dict) else '?'} patches written to {args.dst}")
    return 0


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    from ..rotated.config import RotatedConfig

    names = {f.name for f in dataclasses.fields(RotatedConfig)}
    over = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return {**over, **amp_overrides(args)}


def run_train(args: argparse.Namespace) -> int:
    """Resolve the configuration and train (or print it)."""
    from ..rotated.config import RotatedConfig, resolve_rotated_config
    from ..rotated.task import train_rotated

    over = _overrides(args)
    if args.pretrained:
        pretrained_backbone(over, RotatedConfig.backbone)
    cfg = resolve_rotated_config(over)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    res = train_rotated(cfg)
    if res["interrupted"]:
        return 130
    print(f"done: best mAP50 {res['best_value']:.4f}; checkpoints {res['best_path']} and {res['last']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Score a checkpoint on the validation images and print the per-class table."""
    from ..engine.distributed import DistInfo, resolve_device
    from ..engine.inference import check_output_file
    from ..rotated.evaluation import write_dota_task1
    from ..rotated.inference import load_rotated_for_inference
    from ..rotated.task import evaluate_rotated, prepare_data

    check_output_file(args.json, "--json")
    device = resolve_device(args.device, DistInfo())
    loaded = load_rotated_for_inference(args.checkpoint, device)
    cfg = loaded.config
    if args.data:
        cfg.data = args.data
        cfg.split_dir = None
    _, val, annotations, classes = prepare_data(cfg, splits=("val",))
    from ..engine.inference import check_same_classes

    check_same_classes(loaded.class_names, classes, args.checkpoint, cfg.data)
    metrics, merged = evaluate_rotated(loaded.model, val, annotations, classes, device, cfg.merge_nms_iou,
                                       progress=True)
    print(f"Oriented R-CNN ({cfg.backbone}) on {cfg.data} validation: {len(annotations)} images, {len(val)} patches")
    print("| class | AP50 |\n|---|---:|")
    for name, ap in metrics["per_class_AP50"].items():
        print(f"| {name} | {ap:.4f} |")
    print(f"| **mAP50** | **{metrics['mAP50']:.4f}** |")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    if args.submission:
        write_dota_task1(merged, classes, args.submission)
        print(f"DOTA task-1 files written to {args.submission}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Detect on whole images; draw them and write the DOTA task-1 files."""
    import torchvision.transforms.functional as TF

    from ..data import ReadableImages, list_images, output_names
    from ..engine.distributed import DistInfo, resolve_device
    from ..rotated.evaluation import write_dota_task1
    from ..rotated.inference import detect_image, load_rotated_for_inference
    from ..rotated.visualize import draw_rotated_detections

    out = check_predict_output(args.output, args.score_threshold)
    paths = list_images(args.images)
    device = resolve_device(args.device, DistInfo())
    loaded = load_rotated_for_inference(args.checkpoint, device)
    cfg, names = loaded.config, loaded.class_names
    stems = dict(zip(paths, output_names(paths)))
    images = ReadableImages(paths)
    detections = {}
    out.mkdir(parents=True, exist_ok=True)
    for path, image in images:
        stem = stems[path]
        boxes, scores, labels = detect_image(loaded.model, TF.to_tensor(image).to(device), cfg.patch_size, cfg.gap,
                                             cfg.merge_nms_iou, batch_size=cfg.batch_size)
        detections[stem] = (boxes, scores, labels)
        drawn = draw_rotated_detections(image, boxes, labels, scores, classes=names,
                                        score_threshold=args.score_threshold)
        png = out / f"{stem}_pred.png"
        drawn.save(png)
        shown = int((scores >= args.score_threshold).sum())
        print(f"{path}: {len(scores)} detection(s), {shown} at or above {args.score_threshold} -> {png}")
    write_dota_task1(detections, names, out)
    print(f"DOTA task-1 files (Task1_<class>.txt) written to {out}")
    if images.failures:
        logger.warning("%d of %d image(s) could not be read", images.failures, len(paths))
    return 1 if images.failures else 0
