"""``lsnet dense make-shapes``, ``lsnet detect train|eval|predict`` and ``lsnet segment train|eval|predict``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import torch

from .args import Column, add_run_arguments, amp_overrides, check_predict_output, pretrained_backbone, float_list, \
    int_list, show_preset_defaults


def add_parsers(sub) -> None:
    """Register ``dense``, ``detect`` and ``segment``."""
    dense = sub.add_parser("dense", help="dense-prediction utilities (make-shapes, make-shape-crops)")
    dsub = dense.add_subparsers(dest="dense_command", metavar="COMMAND", required=True)
    mk = dsub.add_parser("make-shapes", help="generate the synthetic shapes dataset (COCO + ADE20K layouts)")
    mk.add_argument("root", help="folder to write")
    mk.add_argument("--num-train", type=int, default=2000, help="training scenes (default 2000)")
    mk.add_argument("--num-val", type=int, default=100, help="validation scenes (default 100)")
    mk.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    mk.add_argument("-j", "--workers", type=int, default=0, help="rendering processes (0: one per CPU)")
    mk.set_defaults(func=run_make_shapes)
    mc = dsub.add_parser("make-shape-crops", help="generate single-shape images (ImageFolder) to pre-train a "
                                                  "backbone with lsnet train")
    mc.add_argument("root", help="folder to write (train/ and val/ with one folder per shape kind)")
    mc.add_argument("--num-train", type=int, default=60000, help="training images (default 60000)")
    mc.add_argument("--num-val", type=int, default=2000, help="validation images (default 2000)")
    mc.add_argument("--size", type=int, default=64, help="image side in pixels")
    mc.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    mc.add_argument("-j", "--workers", type=int, default=0, help="rendering processes (0: one per CPU)")
    mc.set_defaults(func=run_make_shape_crops)
    for task, archs in (("detect", ["retinanet", "maskrcnn"]), ("segment", ["semantic_fpn"])):
        what = "object detection / instance segmentation" if task == "detect" else "semantic segmentation"
        p = sub.add_parser(task, help=f"{what} with an LSNet backbone")
        tsub = p.add_subparsers(dest=f"{task}_command", metavar="COMMAND", required=True)
        paper = "1x" if task == "detect" else "40k"
        tr = tsub.add_parser("train", help=f"train (presets: small for shapes, {paper} as in the paper)",
                             description=f"Train a {what} model. The preset sets the schedule and sizes ('small' for "
                                         f"the shapes set, '{paper}' otherwise); the options override it. Defaults "
                                         f"are shown per preset; 'from a checkpoint': the small preset's changes when "
                                         f"the backbone starts from --backbone-checkpoint or --pretrained.")
        _common(tr, archs)
        add_run_arguments(tr)
        tr.add_argument("--preset", choices=["small", paper],
                        help=f"'small' (the default for the shapes set) or '{paper}' (the default for other data)")
        tr.add_argument("--backbone-checkpoint", "--initial-checkpoint", dest="backbone_checkpoint", metavar="FILE",
                        help="start the backbone from these classification weights: the release's, lsnet train's or "
                             ".safetensors (for the shapes set the repository ships "
                             "weights/lsnet_t_shapes.safetensors); the small preset then fine-tunes")
        tr.add_argument("--pretrained", action="store_true", default=None,
                        help="start the backbone from its published ImageNet weights (timm's pretrained=True, "
                             "fetched from the Hugging Face hub once)")
        tr.add_argument("--output", help="folder for checkpoints, metrics.jsonl and curves")
        tr.add_argument("--epochs" if task == "detect" else "--iters", type=int, help="length of the schedule")
        tr.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
        tr.add_argument("--weight-decay", type=float, help="AdamW weight decay")
        tr.add_argument("-b", "--batch-size", type=int, help="images per step and process")
        tr.add_argument("--warmup-iters", type=int, help="iterations of linear lr warm-up")
        tr.add_argument("--frozen-stages", type=int, metavar="N",
                        help="freeze the stem and the first N stages (0: the stem only; -1: nothing)")
        tr.add_argument("--frozen-norm", choices=["eval", "batch"],
                        help="BatchNorm in the frozen stages: eval keeps the pre-trained statistics (the release), "
                             "batch normalises with each batch's and updates them (weights stay fixed)")
        tr.add_argument("--norm-eval", action=argparse.BooleanOptionalAction, default=None,
                        help="keep every BatchNorm's statistics frozen")
        tr.add_argument("--fpn-channels", type=int, help="width of the FPN neck and heads (the release: 256)")
        if task == "detect":
            tr.add_argument("--train-scales", type=int_list,
                            help="comma-separated shorter sides for multi-scale training")
            tr.add_argument("--min-size", type=int, help="shorter side at evaluation")
            tr.add_argument("--max-size", type=int, help="longer side limit (training and evaluation)")
            tr.add_argument("--lr-steps", type=float_list, metavar="EPOCHS",
                            help="comma-separated epochs (fractions allowed) at which the lr drops 10x, e.g. 8,11")
            tr.add_argument("--eval-every", type=int, metavar="EPOCHS", help="epochs between evaluations")
            tr.add_argument("--roi-batch-size", type=int, metavar="N", help="Mask R-CNN: RoIs sampled per image")
            tr.add_argument("--head-norm", choices=["none", "gn"],
                            help="RetinaNet: GroupNorm in the head convs (gn, torchvision's v2 head) or none (release)")
            tr.add_argument("--box-loss", choices=["l1", "smooth_l1", "giou"],
                            help="RetinaNet: box regression loss (l1 is the release's)")
        else:
            tr.add_argument("--crop-size", type=int, help="side of the square training crops")
            tr.add_argument("--eval-interval", type=int, metavar="ITERS", help="iterations between evaluations")
            tr.add_argument("--scale-range", type=float_list, help="random rescale range before cropping, e.g. 0.5,2.0")
            tr.add_argument("--base-size", type=int,
                            help="shorter side the rescale is relative to and inference resizes to")
            tr.add_argument("--cat-max-ratio", type=float, metavar="R",
                            help="re-draw a crop (up to 10 times) while one class covers R or more of it")
            tr.add_argument("--seg-loss", choices=["ce", "ce+dice"], help="training loss")
        tr.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
        tr.set_defaults(func=run_train, task=task)
        show_preset_defaults(tr, preset_columns(task), skip=("preset", "task"), fields={"amp_on": "amp"},
                             none={"workers": "auto", "amp": "off"})
        ev = tsub.add_parser("eval", help="evaluate a checkpoint on the validation split")
        ev.add_argument("--checkpoint", required=True, help="a best.pth or last.pth of train")
        ev.add_argument("--data", default=None, help="default: the checkpoint's")
        ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
        ev.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        ev.set_defaults(func=run_eval, task=task)
        pr = tsub.add_parser("predict", help="draw predictions on images (PNG) and write them as JSON")
        pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
        pr.add_argument("--checkpoint", required=True, help="a best.pth or last.pth of train")
        pr.add_argument("--output", default="predictions", help="folder for the drawn PNGs and one JSON per image")
        if task == "detect":  # segment predict has no scores to threshold
            pr.add_argument("--score-threshold", type=float, default=0.5,
                            help="draw and keep boxes scoring at least this (default 0.5)")
        pr.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        pr.set_defaults(func=run_predict, task=task)


def _common(p, archs) -> None:
    p.add_argument("--arch", choices=archs, help="the detector or segmenter")
    p.add_argument("--backbone", "--model", dest="backbone", choices=BACKBONES, default=None, metavar="NAME",
                   help="the backbone: " + ", ".join(BACKBONES))
    p.add_argument("--data", help="'shapes' (generated when missing) or a dataset root")
    p.add_argument("--shapes-dir", help="where the shapes dataset lives")


BACKBONES = ["lsnet_t", "lsnet_s", "lsnet_b", "lsknet_t", "lsknet_s"]


def preset_columns(task: str) -> List[Column]:
    """The configuration each preset resolves to, per model where the small preset differs (Mask
    R-CNN's), and the small preset's changes for a backbone that starts from a checkpoint."""
    from ..dense.config import ARCHS, resolve_dense_config

    def values(arch: str, preset: str, checkpoint: bool = False) -> Dict[str, Any]:
        over = {"preset": preset, "arch": arch, "output": f"output/{task}",  # run_train's output
                **({"backbone_checkpoint": "FILE"} if checkpoint else {})}
        out = resolve_dense_config(task, over).to_dict()
        if checkpoint:
            out.pop("backbone_checkpoint")
        return out

    first, *others = ARCHS[task]
    small = f"small {first}" if others else "small"
    columns: List[Column] = [(small, values(first, "small"), None)]
    columns.append((f"{small} from a checkpoint", values(first, "small", True), small))
    for arch in others:
        columns.append((f"small {arch}", {k: v for k, v in values(arch, "small").items() if k != "arch"}, small))
        varied = {k: v for k, v in values(arch, "small", True).items() if k != "arch"}
        columns.append((f"small {arch} from a checkpoint", varied, f"small {arch}"))
    paper = "1x" if task == "detect" else "40k"
    columns.append((paper, values(first, paper), None))
    return columns


def run_make_shapes(args: argparse.Namespace) -> int:
    """Write the synthetic dataset."""
    from ..dense.shapes import make_shapes

    summary = make_shapes(args.root, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                          workers=args.workers)
    for split, info in summary["splits"].items():
        print(f"{split}: {info['num_images']} images, {info['num_annotations']} objects")
    print(f"classes: {', '.join(summary['class_names'])}; written to {args.root}")
    return 0


def run_make_shape_crops(args: argparse.Namespace) -> int:
    """Write the single-shape classification set."""
    from ..dense.shapes import make_shape_crops

    summary = make_shape_crops(args.root, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                               size=args.size, workers=args.workers)
    for split, counts in summary["splits"].items():
        print(f"{split}: {sum(counts.values())} images (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    print(f"written to {args.root}; pre-train with: lsnet train --data {args.root} ...")
    return 0


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    from ..dense.config import DenseConfig

    names = {f.name for f in __import__("dataclasses").fields(DenseConfig)}
    over = {k: v for k, v in vars(args).items() if k in names and v is not None and k != "task"}
    return {**over, **amp_overrides(args)}


def run_train(args: argparse.Namespace) -> int:
    """Resolve the configuration and train (or print it)."""
    from ..dense.config import DenseConfig, resolve_dense_config
    from ..dense.task import train_dense

    over = _overrides(args)
    if not over.get("resume"):  # a resumed run keeps its folder
        over.setdefault("output", f"output/{args.task}")
    if args.pretrained:
        pretrained_backbone(over, DenseConfig.backbone)
    cfg = resolve_dense_config(args.task, over)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    res = train_dense(cfg)
    if res["interrupted"]:
        return 130
    print(f"done: best {res['best_key']} {res['best_value']:.3f}; checkpoints {res['best_path']} and {res['last']}")
    return 0


def _load(path: str, device: torch.device, task: str | None = None):
    from ..dense.inference import load_dense_for_inference

    loaded = load_dense_for_inference(path, device, task=task)
    return loaded.model, loaded.config, loaded.class_names


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint and print the metrics (the dataset's classes must be the checkpoint's)."""
    from ..dense.data import build_dense_data
    from ..engine.inference import check_same_classes
    from ..dense.task import evaluate_dense
    from ..engine.distributed import DistInfo, resolve_device
    from ..engine.inference import check_output_file

    check_output_file(args.json, "--json")  # before the work, not after it
    device = resolve_device(args.device, DistInfo())
    model, cfg, names = _load(args.checkpoint, device, args.task)
    if args.data:
        cfg.data = args.data
    _, val, _ = build_dense_data(cfg, splits=("val",))
    check_same_classes(names, val.class_names, args.checkpoint, cfg.data)
    res = evaluate_dense(model, val, cfg, device)
    print(f"{cfg.arch} ({cfg.backbone}) on {cfg.data} validation, {len(val)} images")
    print("| metric | value |\n|---|---:|")
    for k, v in res.items():
        if isinstance(v, float):
            print(f"| {k} | {v:.4f} |")
    for kind in ("bbox", "segm"):
        for name, values in res.get(f"{kind}_per_class", {}).items():
            print(f"| {kind} AP / AP50 {name} | {values['AP']:.4f} / {values['AP50']:.4f} |")
    if "per_class_iou" in res:
        for name, iou in zip(names, res["per_class_iou"]):
            print(f"| IoU {name} | {iou:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Draw predictions (boxes, masks or label maps) and write PNG + JSON per image; inputs
    of the same file name get distinct outputs (the folder's name, else a counter, added)."""
    import logging

    import torchvision.transforms.functional as TF

    from ..data import ReadableImages, list_images, output_names
    from ..dense import visualize as V
    from ..engine.distributed import DistInfo, resolve_device

    log = logging.getLogger(__name__)
    out = check_predict_output(args.output, args.score_threshold if args.task == "detect" else None)
    paths = list_images(args.images)
    device = resolve_device(args.device, DistInfo())
    model, cfg, names = _load(args.checkpoint, device, args.task)
    stems = dict(zip(paths, output_names(paths)))
    images = ReadableImages(paths)
    for path, image in images:
        stem = stems[path]
        x = TF.to_tensor(image).to(device)
        with torch.no_grad():
            if cfg.task == "detect":
                pred = {k: v.cpu() for k, v in model([x])[0].items()}
                drawn = V.draw_detections(image, pred, names, score_threshold=args.score_threshold)
                data = V.detections_to_json(pred, names, score_threshold=args.score_threshold, image_path=str(path))
                summary = f"{len(data['detections'])} detection(s)"
            else:
                label_map = model(x[None])[0].argmax(0).cpu()
                drawn = V.draw_segmentation(image, label_map, names)
                data = V.segmentation_to_json(label_map, names, image_path=str(path))
                summary = "label map"
        png = V.save_png(drawn, out / f"{stem}_pred.png")
        V.save_json(data, out / f"{stem}_pred.json")
        print(f"{path}: {summary} -> {png}")
    if images.failures:
        log.warning("%d of %d image(s) could not be read", images.failures, len(paths))
    return 1 if images.failures else 0
