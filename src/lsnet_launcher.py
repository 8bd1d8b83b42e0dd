"""The ``lsnet`` console script's first stop.

``lsnet --version`` and ``lsnet --help`` are answered here, without importing PyTorch or timm:
the ``lsnet`` package registers its models with timm when imported, which takes seconds, and a
console script for ``lsnet.cli.main`` would import it first. Every other command line (one
that names a sub-command) goes to :func:`lsnet.cli.main.main` unchanged.

The top-level parser is built here (:func:`base_parser`) and shared with ``lsnet.cli.main``;
the sub-commands' one-line descriptions are listed in :data:`COMMANDS`, which
``tests/test_cli.py`` keeps equal to what the sub-commands register.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

__all__ = ["COMMANDS", "DESCRIPTION", "base_parser", "summary_parser", "version", "main"]

DESCRIPTION = "LSNet: See Large, Focus Small (CVPR 2025)."

#: (name, one-line help) of each sub-command, in the order ``lsnet --help`` lists them.
COMMANDS = (
    ("train", "train a model (paper recipe; torchrun for several processes)"),
    ("eval", "evaluate a checkpoint (top-1, top-5, loss)"),
    ("predict", "classify images (top-5 with probabilities)"),
    ("info", "parameters and GMACs of LSNet variants"),
    ("bench", "measure inference speed (markdown table, JSON, plot)"),
    ("export", "export a fused model (ONNX, TorchScript, torch.export)"),
    ("convert", "a checkpoint to weights-only .safetensors (optionally float16)"),
    ("dense", "dense-prediction utilities (make-shapes, make-shape-crops)"),
    ("detect", "object detection / instance segmentation with an LSNet backbone"),
    ("segment", "semantic segmentation with an LSNet backbone"),
    ("ablate", "the paper's ablation variants: cost table, or train a set of them"),
    ("rotated", "oriented object detection on DOTA-format data (Oriented R-CNN)"),
    ("robustness", "corruption robustness (mCE) and ImageNet-A/-R/-Sketch accuracy of models"),
    ("visualize", "effective receptive fields, SKA weights, LKP/SKA feature maps"),
)


def base_parser() -> argparse.ArgumentParser:
    """The top-level parser with its global options, before any sub-command is added."""
    parser = argparse.ArgumentParser(prog="lsnet", description=DESCRIPTION)
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: debugging)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")
    return parser


def summary_parser() -> argparse.ArgumentParser:
    """:func:`base_parser` with the sub-commands' names and one-line help, without their options:
    its help is the full parser's, at a fraction of the cost."""
    parser = base_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS:
        sub.add_parser(name, help=text)
    return parser


def version() -> str:
    """The installed distribution's version (the package's own when running from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("lsnet")
    except PackageNotFoundError:  # source tree on sys.path without an install
        from lsnet import __version__

        return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Answer a command line of global options only (``--version``, ``--help``, ``-v``, ``-q``, or
    nothing) here; hand anything that names a sub-command to :func:`lsnet.cli.main.main`."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if all(a.startswith("-") and a != "--" for a in args):
        parsed = summary_parser().parse_args(args)  # -h prints the help and exits; unknown options exit 2
        if parsed.version:
            print(version())
            return 0
        summary_parser().print_help()
        return 2
    from lsnet.cli.main import main as run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
