"""``lsnet robustness``: corruption errors (mCE, relative mCE) and ImageNet-A/-R/-Sketch top-1 of
one or more checkpoints or timm models (the LSNet paper's Table 4), offline on a generated
corruption set by default."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``robustness`` sub-command."""
    p = sub.add_parser(
        "robustness", help="corruption robustness (mCE) and ImageNet-A/-R/-Sketch accuracy of models",
        description="Evaluate checkpoints or timm models on ImageNet-C (mCE against AlexNet, relative mCE "
                    "against a baseline), ImageNet-A, -R and -Sketch, as in the LSNet paper's Table 4. Without "
                    "any --imagenet-* folder, the 15 corruptions x 5 severities of a validation split "
                    "(--data, digits by default) are generated (pip install 'lsnet[studies]'), cached, and "
                    "evaluated the same way.")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="a checkpoint to evaluate (repeat to compare)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="timm model: the architecture of each --checkpoint in order, or, without --checkpoint, "
                        "a model with random weights (repeat to compare)")
    p.add_argument("--data", default="digits",
                   help="validation split to corrupt offline: 'digits' or an ImageFolder root with val/")
    p.add_argument("--imagenet-c", metavar="ROOT", help="ImageNet-C: ROOT/<corruption>/<severity>/<wnid>/*.JPEG")
    p.add_argument("--imagenet-val", metavar="ROOT",
                   help="clean ImageNet validation images (ROOT/<wnid>/...) for the relative mCE on ImageNet-C")
    p.add_argument("--imagenet-a", metavar="ROOT", help="ImageNet-A: ROOT/<wnid>/*.jpg (200 classes)")
    p.add_argument("--imagenet-r", metavar="ROOT", help="ImageNet-R: ROOT/<wnid>/*.jpg (200 classes)")
    p.add_argument("--imagenet-sketch", metavar="ROOT", help="ImageNet-Sketch: ROOT/<wnid>/*.JPEG (1000 classes)")
    p.add_argument("--baseline", default="1",
                   help="the model the relative mCE is measured against: its position (1 = first) or label")
    p.add_argument("--corruptions", default=None,
                   help="comma-separated subset of the 15 corruptions (the mCE is then over that subset)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities (default 1,2,3,4,5)")
    p.add_argument("--max-images", type=int, default=None,
                   help="offline: corrupt at most this many validation images (spread over the split)")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="offline: where the corrupted images go (default ~/.cache/lsnet/corrupted/<data-params>)")
    p.add_argument("--regenerate", action="store_true", help="offline: corrupt again even if the cache is complete")
    p.add_argument("--seed", type=int, default=0, help="digits split and corruption noise seed (default 0)")
    p.add_argument("--img-size", type=int, default=None,
                   help="evaluation size (offline: the size the images are corrupted at); default: the first "
                        "model's")
    p.add_argument("--no-fuse", action="store_true", help="evaluate LSNet models unfused")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="also draw error against severity per corruption (PNG)")
    p.set_defaults(func=run)


def _int_list(text: str, option: str) -> List[int]:
    from ..errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _baseline_index(spec: str, labels: List[str]) -> int:
    from ..errors import ConfigError

    if spec in labels:
        return labels.index(spec)
    if spec.isdigit() and 1 <= int(spec) <= len(labels):
        return int(spec) - 1
    raise ConfigError(f"--baseline {spec!r} is neither a position (1-{len(labels)}) nor a model label "
                      f"({', '.join(labels)})")


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _class_map(model, class_names: List[str], where: str) -> Dict[str, int]:
    """Folder name -> label for ``model`` on a set whose classes are ``class_names``."""
    from ..errors import ConfigError

    if model.class_names is not None and list(model.class_names) != list(class_names):
        raise ConfigError(f"{model.label} was trained on classes {model.class_names[:6]}..., {where} has "
                          f"{class_names[:6]}... ({len(class_names)})")
    if model.num_classes != len(class_names):
        raise ConfigError(f"{model.label} has {model.num_classes} classes, {where} has {len(class_names)}")
    return {name: i for i, name in enumerate(class_names)}


def _finite(obj):
    """``obj`` with non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the tables, write JSON and plot."""
    from ..engine.distributed import DistInfo, resolve_device
    from ..engine.inference import check_options, check_output_file
    from ..engine.report import progress_bar
    from ..errors import ConfigError
    from ..studies import robustness as rb
    from ..studies._models import load_study_models

    check_options(img_size=args.img_size, batch_size=args.batch_size)
    check_output_file(args.json, "--json")
    check_output_file(args.plot, "--plot")
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, got {args.max_images}")
    corruptions = rb.CORRUPTIONS if args.corruptions is None else \
        tuple(c.strip() for c in args.corruptions.split(",") if c.strip())
    unknown = [c for c in corruptions if c not in rb.CORRUPTIONS]
    if unknown or not corruptions:
        raise ConfigError(f"--corruptions: unknown {', '.join(unknown) or '(none given)'} "
                          f"(choose from {', '.join(rb.CORRUPTIONS)})")
    severities = tuple(_int_list(args.severities, "--severities"))
    if any(s not in rb.SEVERITIES for s in severities):
        raise ConfigError(f"--severities must be in 1-5, got {args.severities}")
    variants = {"a": args.imagenet_a, "r": args.imagenet_r, "sketch": args.imagenet_sketch}
    offline = not args.imagenet_c and not any(variants.values())
    if args.imagenet_c:
        rb.check_imagenet_c_root(args.imagenet_c, corruptions, severities)  # before any model is loaded
    for which, root in variants.items():
        if root and not Path(root).is_dir():
            raise ConfigError(f"--imagenet-{which} {root}: folder does not exist")

    class_names: List[str] = []
    if offline:
        from ..data import build_eval_dataset

        _, class_names, _ = build_eval_dataset(args.data, transform=None, seed=args.seed)
    models = load_study_models(args.checkpoint, args.model, num_classes=len(class_names) if offline else 1000,
                               img_size=args.img_size, fuse=not args.no_fuse, default_model=None)
    labels = [m.label for m in models]
    base = _baseline_index(args.baseline, labels)
    device = resolve_device(args.device, DistInfo())
    kw = {"batch_size": args.batch_size, "workers": args.workers, "device": device}

    results: Dict[str, rb.ImageNetCResult] = {}
    source = ""
    report: Dict = {"models": [], "baseline": labels[base], "corruptions": list(corruptions),
                    "severities": list(severities)}
    if offline:
        first = models[0]
        size = args.img_size or first.img_size
        cache = Path(args.cache) if args.cache else rb.corrupted_cache_dir(
            args.data, size, first.crop_pct, first.interpolation, args.seed, args.max_images)
        root, class_names = rb.generate_corrupted(args.data, cache, img_size=size, crop_pct=first.crop_pct,
                                                  interpolation=first.interpolation, seed=args.seed,
                                                  max_images=args.max_images, corruptions=corruptions,
                                                  severities=severities, regenerate=args.regenerate)
        n_images = json.loads((root / "manifest.json").read_text())["images"]
        source = (f"{args.data} validation ({n_images} images) corrupted at {size}px, "
                  f"{len(corruptions)} corruptions x {len(severities)} severities (cache {root})")
        report.update(data=args.data, img_size=size, cache=str(root), images=n_images)
        for m in models:
            mapping = _class_map(m, class_names, args.data)
            bar = progress_bar(n_images * (1 + len(corruptions) * len(severities)), m.label)
            results[m.label] = rb.evaluate_imagenet_c(
                m.model.to(device), root, rb.imagenet_c_transform(size, m.mean, m.std), mapping,
                corruptions=corruptions, severities=severities, clean_root=root / "clean", progress=bar, **kw)
            bar.close()
    elif args.imagenet_c:
        wnids = rb.imagenet_wnids()
        mapping = {w: i for i, w in enumerate(wnids)}
        source = f"ImageNet-C at {args.imagenet_c}"
        report.update(imagenet_c=str(args.imagenet_c))
        for m in models:
            if m.num_classes != 1000:
                raise ConfigError(f"{m.label} has {m.num_classes} classes; ImageNet-C needs a 1000-class model")
            transform = rb.imagenet_c_transform(m.img_size, m.mean, m.std)
            bar = progress_bar(1, m.label, enabled=False)
            res = rb.evaluate_imagenet_c(m.model.to(device), args.imagenet_c, transform, mapping,
                                         corruptions=corruptions, severities=severities, progress=bar, **kw)
            if args.imagenet_val:
                clean = rb._class_folder_samples(Path(args.imagenet_val), mapping)
                res.clean_error, _ = rb.evaluate_folder(
                    m.model, clean, rb.resize_crop_transform(m.img_size, m.mean, m.std, m.crop_pct, m.interpolation),
                    root=str(args.imagenet_val), **kw)
            results[m.label] = res

    variant_errors: Dict[str, Dict[str, float]] = {}
    for which, root in variants.items():
        if not root:
            continue
        for m in models:
            if m.num_classes != 1000:
                raise ConfigError(f"{m.label} has {m.num_classes} classes; ImageNet-{which} needs a 1000-class model")
            err, n = rb.evaluate_imagenet_variant(m.model.to(device), root, which,
                                                  rb.resize_crop_transform(m.img_size, m.mean, m.std), **kw)
            variant_errors.setdefault(which, {})[m.label] = err
            report.setdefault("counts", {})[which] = n

    # ----- tables -----
    for m in models:
        entry = {"label": m.label, "arch": m.arch, "checkpoint": m.checkpoint, "img_size": m.img_size,
                 "fused": (not args.no_fuse)}
        if m.label in results:
            res = results[m.label]
            ce, mce = rb.mean_corruption_error(res.errors)
            bres = results[labels[base]]
            ce_base, mce_base = rb.mean_corruption_error(res.errors, bres.corruption_errors())
            entry.update(clean_error=res.clean_error, errors=res.errors, corruption_errors=res.corruption_errors(),
                         ce=ce, mce=mce, ce_vs_baseline=ce_base, mce_vs_baseline=mce_base)
            if res.clean_error is not None and bres.clean_error is not None:
                rel, rmce = rb.relative_mean_corruption_error(res.errors, res.clean_error, bres.errors,
                                                              bres.clean_error)
                left = [c for c, v in rel.items() if not math.isfinite(v)]
                entry.update(relative_ce=rel, relative_mce=rmce, relative_left_out=left)
        for which, errs in variant_errors.items():
            entry[f"imagenet_{which}_top1"] = 100.0 * (1.0 - errs[m.label])
        report["models"].append(entry)

    if results:
        print(f"robustness: {len(models)} model(s) on {source}")
        print("top-1 error (%) averaged over severities; AlexNet-normalised CE in the mCE row")
        print("| corruption | " + " | ".join(labels) + " |")
        print("|---|" + "---:|" * len(labels))
        entries = report["models"]
        if any(e.get("clean_error") is not None for e in entries):
            print("| clean | " + " | ".join(_fmt(100 * e["clean_error"] if e.get("clean_error") is not None
                                                    else None) for e in entries) + " |")
        for c in corruptions:
            print(f"| {c} | " + " | ".join(_fmt(100 * e["corruption_errors"][c]) for e in entries) + " |")
        mean_err = [100 * sum(e["corruption_errors"].values()) / len(corruptions) for e in entries]
        print("| mean corrupted | " + " | ".join(_fmt(v) for v in mean_err) + " |")
        print("| mCE (AlexNet = 100) | " + " | ".join(_fmt(e["mce"], 1) for e in entries) + " |")
        print(f"| mCE vs {labels[base]} | " + " | ".join(_fmt(e["mce_vs_baseline"], 1) for e in entries) + " |")
        if all("relative_mce" in e for e in entries):
            print(f"| relative mCE vs {labels[base]} | "
                  + " | ".join(_fmt(e["relative_mce"], 1) for e in entries) + " |")
            left = sorted({c for e in entries for c in e["relative_left_out"]})
            if left:
                print(f"relative mCE leaves out {', '.join(left)}: {labels[base]} loses nothing there "
                      "(its corrupted error is not above its clean error)")
        elif args.imagenet_c and not args.imagenet_val:
            print("relative mCE: give --imagenet-val (clean ImageNet validation images) for the clean errors")
        if offline:
            print("the AlexNet-normalised mCE uses AlexNet's ImageNet-C errors: comparable between the models "
                  "here, not with ImageNet-C numbers")
    if variant_errors:
        if results:
            print()
        print("| dataset (top-1 %) | " + " | ".join(labels) + " |")
        print("|---|" + "---:|" * len(labels))
        names = {"a": "ImageNet-A (200 classes)", "r": "ImageNet-R (200 classes)", "sketch": "ImageNet-Sketch"}
        for which, errs in variant_errors.items():
            print(f"| {names[which]} | " + " | ".join(_fmt(100 * (1 - errs[lab])) for lab in labels) + " |")

    if args.json:
        Path(args.json).write_text(json.dumps(_finite(report), indent=2))
    if args.plot:
        if not results:
            raise ConfigError("--plot draws corruption errors: give --imagenet-c or use the offline default")
        rb.plot_corruption_errors(results, args.plot, title=source.split(" (cache ")[0], severities=severities)
        logger.info("wrote %s", args.plot)
    return 0
