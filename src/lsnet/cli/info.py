"""``lsnet info``: parameters, fused parameters and MACs of the LSNet variants."""

from __future__ import annotations

import argparse
import json
from typing import List, Tuple

import timm

from ..deploy.profile import ModelProfile, profile_model
from ..errors import ConfigError
from ..models import MODEL_NAMES
from ..models.lsnet import MIN_INPUT_SIZE
from .args import note_deprecated

#: What the counts include, said under the table: ``lsnet train``'s banner counts its own head.
HEAD_NOTE = ("Parameters are counted with the 1000-class ImageNet classifier; a model trained for another number of "
             "classes differs by its head (lsnet train's banner counts that model's own)")


class _ImgSize(argparse.Action):
    """``--img-size PX`` as everywhere; the older ``--img-size H W`` (now ``--input-size 3 H W``)
    still works and warns."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            parser.error(f"argument --img-size: expected one value, got {len(values)}")
        if len(values) == 2:
            note_deprecated(namespace, "--img-size H W", "--input-size 3 H W")
        setattr(namespace, self.dest, tuple(values) if len(values) == 2 else (values[0], values[0]))


class _Formatter(argparse.HelpFormatter):
    """Shows ``--img-size PX`` (one value) though the option still takes the older two."""

    def _format_args(self, action, default_metavar):
        if isinstance(action, _ImgSize):
            return action.metavar
        return super()._format_args(action, default_metavar)


def add_parser(sub) -> None:
    """Register the ``info`` sub-command."""
    p = sub.add_parser("info", help="parameters and GMACs of LSNet variants", formatter_class=_Formatter,
                       description="Print parameters, fused parameters and multiply-accumulates "
                                   "(torch.utils.flop_counter plus SKA's K*K per output element). " + HEAD_NOTE + ".")
    p.add_argument("--models", default=",".join(MODEL_NAMES),
                   help="comma-separated variants (default: all): " + ", ".join(MODEL_NAMES))
    p.add_argument("--img-size", type=int, nargs="+", action=_ImgSize, metavar="PX",
                   help="input side, square (default: 224)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input channels, height and width, as timm's --input-size (e.g. 3 224 320)")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON to FILE")
    p.set_defaults(func=run)


def input_size(args: argparse.Namespace) -> Tuple[int, int]:
    """(height, width) from --img-size or --input-size (224 x 224 by default)."""
    if args.img_size and args.input_size:
        raise ConfigError("give --img-size or --input-size, not both")
    if args.input_size:
        channels, height, width = args.input_size
        if channels != 3:
            raise ConfigError(f"--input-size: the models take 3 channels, got {channels}")
        return height, width
    return tuple(args.img_size) if args.img_size else (224, 224)


def format_table(rows: List[ModelProfile]) -> str:
    """A markdown table of the profiles."""
    lines = ["| model | input | params | fused params | GMACs | SKA MMACs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.img_size[0]}x{r.img_size[1]} | {r.params:,} | {r.fused_params:,} "
                     f"| {r.gmacs:.3f} | {r.ska_macs / 1e6:.3f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Profile each requested variant and print the table."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in timm.list_models("*")]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; LSNet variants are {', '.join(MODEL_NAMES)}")
    size = input_size(args)
    if min(size) < MIN_INPUT_SIZE:
        option = "--input-size" if args.input_size else "--img-size"
        raise ConfigError(f"{option} must be at least {MIN_INPUT_SIZE}, got {size[0]}x{size[1]}")
    rows = [profile_model(n, timm.create_model(n), size) for n in names]
    print(format_table(rows))
    print(f"\n{HEAD_NOTE}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(vars(r), gmacs=r.gmacs) for r in rows], f, indent=2)
    return 0
