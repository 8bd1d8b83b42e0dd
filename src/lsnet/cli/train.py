"""``lsnet train``: train a classifier with the paper's recipe (or a preset) on ImageFolder data or digits."""

from __future__ import annotations

import argparse

from ..classify.config import add_train_arguments, config_from_args


def add_parser(sub) -> None:
    """Register the ``train`` sub-command."""
    p = sub.add_parser("train", help="train a model (paper recipe; torchrun for several processes)",
                       description="Train with the LSNet paper's ImageNet recipe (Table 10) built from timm's parts. "
                                   "Flags override the preset ('small' for digits, 'imagenet' otherwise); with "
                                   "--resume they override the resumed run's configuration.")
    add_train_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and train."""
    import json

    from ..classify.task import train

    cfg = config_from_args(args)
    if args.print_config:
        import os

        from ..classify.config import total_lr

        values = cfg.to_dict()
        # the rate this run would use (--lr, else lr-base x total batch / 512)
        values["lr"] = total_lr(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        print(json.dumps(values, indent=2))
        return 0
    summary = train(cfg)
    if summary["interrupted"]:
        return 130
    best = summary["best"]
    print(f"done: best validation top-1 {best['top1']:.2f}% (epoch {best['epoch'] + 1}); "
          f"checkpoints {summary['best_path']} and {summary['last']}")
    return 0
