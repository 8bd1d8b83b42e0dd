"""What the sub-commands share in their arguments: comma-separated lists of numbers, and the
options of :class:`lsnet.engine.RunConfig` that every task's ``train`` takes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["add_run_arguments", "check_predict_output", "float_list", "int_list"]


def _numbers(text: str, kind, name: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {name}, e.g. 8,11; got {text!r}") from None


def int_list(text: str) -> Tuple[int, ...]:
    """``"1,16"`` -> ``(1, 16)``."""
    return _numbers(text, int, "integers")


def float_list(text: str) -> Tuple[float, ...]:
    """``"8,11"`` -> ``(8.0, 11.0)``; fractions allowed."""
    return _numbers(text, float, "numbers")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How a run executes (the engine's options): resume, overwrite, stop early, device, data
    workers, seed, gradient clipping, memory layout. Unset options keep the preset's value."""
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue from a last.pth, with its run's configuration and folder (options given override "
                        "them)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start a new run in an --output folder that holds another run")
    p.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="end this invocation after that many epochs (the schedule still spans the whole run)")
    p.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    p.add_argument("-j", "--workers", type=int, help="data-loading processes")
    p.add_argument("--seed", type=int, help="random seed (initialisation, sampling, augmentation)")
    p.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout (default: the preset's)")


def check_predict_output(output: str, score_threshold: Optional[float] = None) -> Path:
    """The ``--output`` folder of a predict command (not an existing file), after checking
    ``--score-threshold`` (when the command has one) lies in [0, 1]; before any work."""
    from ..errors import ConfigError

    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; give a folder")
    return out
