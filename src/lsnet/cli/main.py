"""Entry point of the ``lsnet`` console script: one sub-command per module of ``lsnet.cli``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import bench, convert, dense, evaluate, export, info, predict, train


class CLIError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with its sub-commands."""
    parser = argparse.ArgumentParser(prog="lsnet", description="LSNet: See Large, Focus Small (CVPR 2025).")
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(sub)
    evaluate.add_parser(sub)
    predict.add_parser(sub)
    info.add_parser(sub)
    bench.add_parser(sub)
    export.add_parser(sub)
    convert.add_parser(sub)
    dense.add_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from lsnet import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"lsnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
