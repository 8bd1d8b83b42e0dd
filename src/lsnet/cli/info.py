"""``lsnet info``: parameters, fused parameters and MACs of the LSNet variants."""

from __future__ import annotations

import argparse
import json
from typing import List

import timm

from ..deploy.profile import ModelProfile, profile_model
from ..errors import ConfigError
from ..models import MODEL_NAMES
from ..models.lsnet import MIN_INPUT_SIZE


def add_parser(sub) -> None:
    """Register the ``info`` sub-command."""
    p = sub.add_parser("info", help="parameters and GMACs of LSNet variants",
                       description="Print parameters, fused parameters and multiply-accumulates "
                                   "(torch.utils.flop_counter plus SKA's K*K per output element).")
    p.add_argument("--models", default=",".join(MODEL_NAMES),
                   help="comma-separated variants (default: all): " + ", ".join(MODEL_NAMES))
    p.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="PX",
                   help="input resolution: one side, or height and width (default 224)")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON to FILE")
    p.set_defaults(func=run)


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
    if len(args.img_size) not in (1, 2):
        raise ConfigError("--img-size takes one side or a height and a width")
    size = (args.img_size[0],) * 2 if len(args.img_size) == 1 else tuple(args.img_size)
    if min(size) < MIN_INPUT_SIZE:
        raise ConfigError(f"--img-size must be at least {MIN_INPUT_SIZE}, got {size[0]}x{size[1]}")
    rows = [profile_model(n, timm.create_model(n), size) for n in names]
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(vars(r), gmacs=r.gmacs) for r in rows], f, indent=2)
    return 0
