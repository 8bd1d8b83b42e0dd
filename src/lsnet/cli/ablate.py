"""``lsnet ablate``: the LSNet paper's ablation variants (Tables 5, 7, 8, 9).

``lsnet ablate`` prints each variant's parameters and GMACs at 224 beside the paper's FLOPs
column; ``lsnet ablate train --variants base,kl3,no_lkp ...`` trains the chosen variants one
after the other with ``lsnet train``'s recipe and options and tabulates their accuracy.
"""

from __future__ import annotations

import argparse
import json

from .train import add_train_arguments, show_train_defaults, train_overrides

VARIANTS_HELP = ("comma-separated variants: LSNet-T ablations (base, no_lkp, kl3, kl5, kl9, no_ska, ks1, ks5, cg1, "
                 "cg4, cg16, cg32, no_dw, no_se, no_lsconv), groups (table5, table7, table8, table9, lsnet, all) "
                 "or timm model names (e.g. resnet50_lsconv)")


def add_parser(sub) -> None:
    """Register the ``ablate`` sub-command and its ``train`` sub-command."""
    p = sub.add_parser("ablate", help="the paper's ablation variants: cost table, or train a set of them",
                       description="Without a sub-command: parameters and multiply-accumulates of the LSNet paper's "
                                   "ablation variants (torch.utils.flop_counter's FLOPs / 2 plus SKA's K*K per output "
                                   "element) beside the paper's FLOPs column. 'lsnet ablate train' trains variants.")
    p.add_argument("--variants", help=VARIANTS_HELP + " (default: all)")
    p.add_argument("--base", default="lsnet_t",
                   help="LSNet the LSNet ablations apply to (default lsnet_t, the paper's; the paper's figures are "
                        "shown for it only)")
    p.add_argument("--img-size", type=int, default=224, help="input side for counting (default 224)")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON to FILE")
    p.set_defaults(func=run_table)
    sub2 = p.add_subparsers(dest="ablate_command", metavar="{train}")
    t = sub2.add_parser("train", help="train a set of variants and tabulate their accuracy",
                        description="Train each variant with lsnet train's recipe (the options below are lsnet "
                                    "train's and apply to every variant), each in OUTPUT/<variant>, then write "
                                    "OUTPUT/ablation.md and OUTPUT/ablation.json.")
    t.add_argument("--variants", required=True, help=VARIANTS_HELP)
    t.add_argument("--base", default="lsnet_t", help="LSNet the LSNet ablations apply to (default lsnet_t)")
    add_train_arguments(t)
    t.set_defaults(func=run_train)
    show_train_defaults(t, skip=("model", "model_kwargs", "output"))
    t._option_string_actions["--output"].help = "folder of the variants' runs (default: output/ablation)"


def run_table(args: argparse.Namespace) -> int:
    """Count and print the cost table."""
    from ..errors import ConfigError
    from ..models.lsnet import MIN_INPUT_SIZE
    from ..studies.ablation import cost_table, format_cost_table

    if args.img_size < MIN_INPUT_SIZE:
        raise ConfigError(f"--img-size must be at least {MIN_INPUT_SIZE}, got {args.img_size}")
    rows = cost_table(args.variants, args.img_size, base=args.base)
    print(format_cost_table(rows, args.img_size))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_dict() for r in rows], f, indent=2)
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train the variants and print their accuracy table."""
    from ..errors import ConfigError
    from ..studies.ablation import format_accuracy_table, resolve_variants, train_variants

    if getattr(args, "model", None):
        raise ConfigError("lsnet ablate train takes --variants (and --base), not --model")
    if getattr(args, "resume", None):
        raise ConfigError("lsnet ablate train cannot --resume; resume one variant with lsnet train --resume")
    if getattr(args, "pretrained_hub", None):
        raise ConfigError("lsnet ablate train cannot start variants from published weights (--pretrained); "
                          "give a file with --initial-checkpoint")
    overrides = {k: v for k, v in train_overrides(args).items() if k != "model"}
    output = overrides.pop("output", None) or "output/ablation"
    keys = resolve_variants(args.variants)
    results = train_variants(keys, overrides, output, base=args.base)
    print(format_accuracy_table(results))
    print(f"tables: {output}/ablation.md and {output}/ablation.json")
    return 130 if results and results[-1].interrupted else 0
