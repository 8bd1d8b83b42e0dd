"""``lsnet train``: train a classifier with the paper's recipe (or a preset) on ImageFolder data or digits.

The options take timm's ``train.py`` names where it has one (``--pretrained`` is a switch,
``--initial-checkpoint FILE`` a file, ``--amp`` a switch with ``--amp-dtype``); the older
spellings ``--pretrained FILE`` and ``--amp DTYPE`` still work and warn. ``--help`` shows each
option's default as every preset resolves it, from :mod:`lsnet.classify.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, List, Sequence

from ..classify.config import MODEL_DEFAULTS, PRESETS, TrainConfig, model_kwarg, parse_model_kwargs, resolve_config
from ..errors import ConfigError
from .args import Column, add_amp_arguments, amp_overrides, fetch_pretrained, note_deprecated, show_preset_defaults


def add_parser(sub) -> None:
    """Register the ``train`` sub-command."""
    p = sub.add_parser("train", help="train a model (paper recipe; torchrun for several processes)",
                       description="Train with the LSNet paper's ImageNet recipe (Table 10) built from timm's parts. "
                                   "Flags override the preset ('small' for digits, 'imagenet' otherwise); with "
                                   "--resume they override the resumed run's configuration. Defaults shown per "
                                   "preset; the learning rate for one process.")
    add_train_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    show_train_defaults(p)
    p.set_defaults(func=run)


def _optional_float(text: str) -> float:
    return 0.0 if text.lower() in ("none", "off") else float(text)


class _Pretrained(argparse.Action):
    """``--pretrained``: timm's switch (the model's published weights). ``--pretrained FILE``: the
    older spelling of ``--initial-checkpoint FILE``, still accepted."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            setattr(namespace, self.dest, True)
        else:
            namespace.pretrained = values
            note_deprecated(namespace, "--pretrained FILE", "--initial-checkpoint FILE")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``lsnet train`` (timm's train.py names where one exists). All default to None so
    that only what the user sets overrides the preset."""
    p.add_argument("--model", help="timm model name")
    p.add_argument("--model-kwargs", nargs="+", type=model_kwarg, metavar="KEY=VALUE",
                   help="more arguments of timm.create_model, values as Python literals "
                        "(e.g. large_kernel=3 use_se=False)")
    p.add_argument("--data", help="ImageFolder root with train/ and val/, or 'digits'")
    p.add_argument("--output", help="run directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="'small' (the default for digits) or 'imagenet' (the "
                                                             "default for other data)")
    p.add_argument("--num-classes", type=int, help="default: the data's")
    p.add_argument("--pretrained", nargs="?", action=_Pretrained, dest="pretrained_hub", metavar="FILE",
                   help="start from the model's published weights (timm's pretrained=True, fetched from the "
                        "Hugging Face hub once; a classifier of another size is replaced). With FILE: the older "
                        "spelling of --initial-checkpoint FILE")
    p.add_argument("--initial-checkpoint", "--pretrained-path", dest="pretrained", metavar="FILE",
                   help="start from these weights (release .pth, lsnet train's, .safetensors); a classifier of "
                        "another size is replaced")
    p.add_argument("--epochs", type=int, help="length of the schedule")
    p.add_argument("-b", "--batch-size", type=int, help="images per step and process")
    p.add_argument("--lr", type=float, help="peak learning rate; unset: lr-base x total batch / 512")
    p.add_argument("--lr-base", type=float, help="learning rate per 512 images of total batch")
    p.add_argument("--min-lr", type=float, help="floor of the schedule")
    p.add_argument("--warmup-lr", type=float, help="rate the warm-up starts from")
    p.add_argument("--warmup-epochs", type=int, help="epochs of linear warm-up")
    p.add_argument("--sched", choices=["cosine", "step", "plateau", "poly", "tanh", "multistep"],
                   help="timm learning-rate schedule")
    p.add_argument("--opt", help="timm optimizer name")
    p.add_argument("--weight-decay", type=float, help="optimizer weight decay")
    p.add_argument("--clip-grad", type=_optional_float, help="gradient clipping threshold, or 'none'")
    p.add_argument("--clip-mode", choices=["agc", "norm", "value"], help="how --clip-grad clips")
    p.add_argument("--img-size", type=int, help="training and evaluation image side")
    p.add_argument("--crop-pct", type=float, help="evaluation: centre crop of the resized image")
    p.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest"], help="resizing filter")
    p.add_argument("--aa", help="RandAugment policy, or 'none'")
    p.add_argument("--color-jitter", type=float, help="colour jitter strength")
    p.add_argument("--reprob", type=float, help="random erasing probability")
    p.add_argument("--hflip", type=float, help="horizontal flip probability")
    p.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, help="cutmix alpha (0: off)")
    p.add_argument("--smoothing", type=float, help="label smoothing")
    p.add_argument("--repeated-aug", action=argparse.BooleanOptionalAction, default=None,
                   help="repeated augmentation (each image several times per epoch, across processes)")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate")
    p.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=None,
                   help="keep an exponential moving average of the weights")
    p.add_argument("--model-ema-decay", type=float, help="decay of that average")
    p.add_argument("--distillation", dest="distillation", choices=["none", "hard", "soft"],
                   help="knowledge distillation from --teacher")
    p.add_argument("--teacher", help="timm model name of the teacher")
    p.add_argument("--teacher-checkpoint", help="teacher weights file")
    p.add_argument("--distillation-alpha", type=float, help="weight of the distillation loss")
    p.add_argument("--distillation-tau", type=float, help="temperature of soft distillation")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    add_amp_arguments(p)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("-j", "--workers", type=int, help="data-loading processes; auto follows the device and the host's cores")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="PyTorch's deterministic algorithms where it has them (slower)")
    p.add_argument("--resume", help="checkpoint to continue from (e.g. OUTPUT/last.pth)")
    p.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="end this invocation after EPOCHS more epochs (the schedule still spans --epochs); "
                        "continue later with --resume")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start a new run in an --output folder that holds another run (its files are replaced)")
    p.add_argument("--log-interval", type=int, help="on a GPU: steps between reads of the loss (each waits for the GPU)")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also log to TensorBoard")


def preset_columns() -> List[Column]:
    """Each preset's resolved configuration (the learning rate for one process), and where a
    model changes it under a preset (:data:`MODEL_DEFAULTS`), that change."""
    from ..classify.config import total_lr

    columns: List[Column] = []
    for name in sorted(PRESETS, key=lambda n: (n != "small", n)):
        cfg = resolve_config({"preset": name})
        columns.append((name, dict(cfg.to_dict(), lr=total_lr(cfg, 1)), None))
        for prefix in MODEL_DEFAULTS:
            varied = resolve_config({"preset": name, "model": prefix})
            values = dict(varied.to_dict(), lr=total_lr(varied, 1))
            values.pop("model")
            columns.append((f"{prefix}* under {name}", values, name))
    return columns


def show_train_defaults(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """Append each option's default per preset to its help."""
    show_preset_defaults(p, preset_columns(), skip=("preset", *skip), fields={"amp_on": "amp"},
                         none={"amp": "off", "workers": "auto", "clip_grad": "none"})


def train_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """What the user set on the command line, as configuration fields (unset options are left
    to the preset)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "model_kwargs" in overrides:
        overrides["model_kwargs"] = parse_model_kwargs(overrides["model_kwargs"])
    if isinstance(overrides.get("aa"), str) and overrides["aa"].lower() == "none":
        overrides["aa"] = None
    overrides.update(amp_overrides(args))
    return overrides


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve the configuration from parsed ``lsnet train`` flags; ``--pretrained`` fetches the
    model's published weights (once; then from the cache) and starts from that file."""
    cfg = resolve_config(train_overrides(args))
    if getattr(args, "pretrained_hub", None):
        if args.resume:
            raise ConfigError("--pretrained starts a new run; --resume continues from its checkpoint's weights")
        if args.pretrained:
            raise ConfigError("--pretrained and --initial-checkpoint both give the starting weights; use one")
        cfg.pretrained = fetch_pretrained(cfg.model)
    return cfg


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
