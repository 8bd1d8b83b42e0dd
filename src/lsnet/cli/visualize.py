"""``lsnet visualize erf|weights|features``: effective receptive fields of timm models, and SKA's
dynamic kernels and the LKP / SKA feature maps of an LSNet (the paper's Figs. 4-6)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import List, Tuple

from .args import DeprecatedAlias

logger = logging.getLogger(__name__)


def _common(p, default_output: str, images_default: int) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (default: --data samples)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="weights to load (release .pth, ours, .safetensors)")
    p.add_argument("--data", default="digits",
                   help="where sample images come from without IMAGE: 'digits', 'shapes' or an ImageFolder root")
    p.add_argument("--num-images", type=int, default=images_default, help=f"images used (default {images_default})")
    p.add_argument("--img-size", type=int, default=224, dest="input_size", metavar="PX",
                   help="images are resized to this square (default 224)")
    p.add_argument("--input-size", type=int, dest="input_size", action=DeprecatedAlias, replacement="--img-size")
    p.add_argument("--seed", type=int, default=0, help="digits split / shapes stream seed (default 0)")
    p.add_argument("--output", default=default_output, help=f"PNG to write (default {default_output})")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")


def add_parser(sub) -> None:
    """Register the ``visualize`` sub-command and its three views."""
    p = sub.add_parser("visualize", help="effective receptive fields, SKA weights, LKP/SKA feature maps",
                       description="Visualise what LSNet (or any timm model) looks at.")
    views = p.add_subparsers(dest="view", metavar="VIEW", required=True)
    erf = views.add_parser("erf", help="effective receptive field (RepLKNet's method) and its area ratios",
                           description="Effective receptive field of a stage's output: the gradient of its centre "
                                       "point with respect to the input, averaged over images, as a log-scaled heat "
                                       "map, with RepLKNet's high-contribution area ratios at 20/30/50/99%%.")
    _common(erf, "erf.png", 50)
    erf.add_argument("--model", action="append", default=[], metavar="NAME",
                     help="timm model (repeat to compare); with --checkpoint, the architecture of each in order")
    erf.add_argument("--stage", type=int, default=-1, help="stage whose output is used (default -1, the last)")
    erf.add_argument("--gradient", choices=("relu", "abs"), default="relu",
                     help="keep the positive part of the input gradient (RepLKNet) or its magnitude")
    erf.set_defaults(func=run_erf)
    for name, helptext, default_out, n in (
            ("weights", "SKA's dynamic K x K kernels at chosen pixels (Fig. 5)", "ska_weights.png", 1),
            ("features", "input, LKP and SKA feature maps of an LS convolution (Fig. 6)", "ls_features.png", 4)):
        v = views.add_parser(name, help=helptext, description=helptext)
        _common(v, default_out, n)
        v.add_argument("--model", default=None, help="LSNet model (default: the checkpoint's, else lsnet_t)")
        v.add_argument("--layer", default=None,
                       help="LS convolution: position among the model's LS convolutions (0, 1, ..., -1 = last, the "
                            "default) or qualified name (e.g. blocks3.1.mixer)")
        if name == "weights":
            v.add_argument("--pixel", action="append", default=[], metavar="Y,X",
                           help="input pixel whose kernels are shown (repeat; default: the centre and two others)")
            v.add_argument("--max-groups", type=int, default=16, help="channel groups drawn per pixel (default 16)")
        v.set_defaults(func=run_weights if name == "weights" else run_features)


def _check(args) -> None:
    from ..engine.inference import check_output_file
    from ..errors import ConfigError

    if args.num_images < 1:
        raise ConfigError(f"--num-images must be at least 1, got {args.num_images}")
    if args.input_size < 1:
        raise ConfigError(f"--img-size must be at least 1, got {args.input_size}")
    check_output_file(args.output, "--output", create_parent=True)
    check_output_file(args.json, "--json")


def _fmt_area(v) -> str:
    return "n/a" if v is None else f"{v[1]:.4f} ({v[0]}px)"


def run_erf(args: argparse.Namespace) -> int:
    """Contribution maps, ratio table, heat maps."""
    from ..engine.report import progress_bar
    from ..studies import visualize as vz
    from ..studies._models import load_study_models, sample_images

    _check(args)
    models = load_study_models(args.checkpoint, args.model, img_size=None, fuse=False, default_model="lsnet_t")
    samples = sample_images(args.data, args.images, args.num_images, args.seed)
    maps, table, used = {}, [], {}
    for m in models:
        stage = vz.StageOutput(m.model, args.stage)
        tensors = (vz.image_tensor(img, args.input_size, m.mean, m.std) for _, img in samples)
        bar = progress_bar(len(samples), f"erf {m.label}")
        try:
            erf, n = vz.effective_receptive_field(stage, tensors, args.gradient, progress=bar)
        except ValueError as err:
            from ..errors import ConfigError

            raise ConfigError(f"{m.label}: {err}") from err
        finally:
            bar.close()
        maps[m.label] = erf
        used[m.label] = n
        ratios = vz.high_contribution_ratios(erf)
        table.append({"model": m.label, "arch": m.arch, "checkpoint": m.checkpoint, "stage": stage.stage,
                      "stride": stage.reduction, "images": n,
                      "ratios": {str(t): (None if v is None else {"side": v[0], "area_ratio": v[1]})
                                 for t, v in ratios.items()}})
    print(f"effective receptive field at {args.input_size}x{args.input_size}, {len(samples)} image(s) "
          f"({'given' if args.images else args.data}), gradient {args.gradient}")
    print("high-contribution area ratio (side of the centred square) at each threshold")
    print("| model | stage (stride) | images | 20% | 30% | 50% | 99% |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in table:
        cells = [_fmt_area(None if v is None else (v["side"], v["area_ratio"])) for v in row["ratios"].values()]
        print(f"| {row['model']} | {row['stage']} ({row['stride']}) | {row['images']} | " + " | ".join(cells) + " |")
    vz.plot_erf(maps, args.output)
    print(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({"input_size": args.input_size, "gradient": args.gradient,
                                               "models": table}, indent=2))
    return 0


def _one_model(args):
    from ..studies._models import load_study_models

    return load_study_models(args.checkpoint, [args.model] if args.model else [], fuse=False,
                             default_model="lsnet_t")


def _pixels(specs: List[str], size: int) -> List[Tuple[int, int]]:
    from ..errors import ConfigError

    if not specs:
        return [(size // 2, size // 2), (size // 4, size // 4), (3 * size // 4, 3 * size // 4)]
    out = []
    for spec in specs:
        try:
            y, x = (int(v) for v in spec.split(","))
        except ValueError:
            raise ConfigError(f"--pixel takes Y,X (two integers), got {spec!r}") from None
        if not (0 <= y < size and 0 <= x < size):
            raise ConfigError(f"--pixel {spec}: outside the {size}x{size} input")
        out.append((y, x))
    return out


def run_weights(args: argparse.Namespace) -> int:
    """SKA kernels at the chosen pixels of the first image."""
    from ..errors import ConfigError
    from ..studies import visualize as vz
    from ..studies._models import sample_images

    _check(args)
    if len(args.checkpoint) > 1:
        raise ConfigError("visualize weights shows one model: give one --checkpoint")
    if args.max_groups < 1:
        raise ConfigError(f"--max-groups must be at least 1, got {args.max_groups}")
    pixels = _pixels(args.pixel, args.input_size)
    m = _one_model(args)[0]
    name, conv = vz.select_ls_conv(m.model, args.layer)
    image_name, img = sample_images(args.data, args.images, 1, args.seed)[0]
    x = vz.image_tensor(img, args.input_size, m.mean, m.std)
    got = vz.capture_ls_conv(m.model, conv, x)
    w = got["weights"]
    title = (f"{m.label}: SKA kernels of {name} ({w.shape[1]} channel groups, {int(w.shape[2] ** 0.5)}x"
             f"{int(w.shape[2] ** 0.5)}, map {w.shape[3]}x{w.shape[4]}) on {image_name}")
    kernels = vz.plot_ska_weights(x, w, pixels, args.output, mean=m.mean, std=m.std, title=title,
                                  max_groups=args.max_groups)
    print(title)
    for k in kernels:
        print(f"pixel {tuple(k['pixel'])} -> feature {tuple(k['feature_pixel'])}: group-0 kernel "
              + "; ".join(" ".join(f"{v:+.3f}" for v in row) for row in k["kernels"][0]))
    print(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": m.label, "layer": name, "image": image_name,
                                               "input_size": args.input_size, "pixels": kernels}, indent=2))
    return 0


def run_features(args: argparse.Namespace) -> int:
    """Input, LKP and SKA channel-mean maps of an LS convolution for a few images."""
    from ..errors import ConfigError
    from ..studies import visualize as vz
    from ..studies._models import sample_images

    _check(args)
    if len(args.checkpoint) > 1:
        raise ConfigError("visualize features shows one model: give one --checkpoint")
    m = _one_model(args)[0]
    name, conv = vz.select_ls_conv(m.model, args.layer)
    rows, stats = [], []
    for image_name, img in sample_images(args.data, args.images, args.num_images, args.seed):
        x = vz.image_tensor(img, args.input_size, m.mean, m.std)
        got = vz.capture_ls_conv(m.model, conv, x)
        rows.append((image_name, x, got))
        stats.append({"image": image_name, "map": list(got["ska"].shape[-2:]),
                      **{k: {"mean": float(got[k].mean()), "std": float(got[k].std())}
                         for k in ("input", "lkp", "ska") if k in got}})
    title = f"{m.label}: {name} at {args.input_size}px (channel means, each scaled to its range)"
    vz.plot_ls_features(rows, args.output, mean=m.mean, std=m.std, title=title)
    print(title)
    print("| image | map | input mean | LKP mean | SKA mean |\n|---|---|---:|---:|---:|")
    for s in stats:
        print(f"| {s['image']} | {s['map'][0]}x{s['map'][1]} | {s['input']['mean']:.4f} | "
              f"{s.get('lkp', {}).get('mean', float('nan')):.4f} | {s['ska']['mean']:.4f} |")
    print(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": m.label, "layer": name, "images": stats}, indent=2))
    return 0
