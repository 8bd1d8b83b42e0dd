"""Entry point of the ``lsnet`` console script: one sub-command per module of ``lsnet.cli``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from lsnet_launcher import base_parser

from ..errors import UserError
from . import ablate, bench, convert, dense, evaluate, export, info, predict, robustness, rotated, train, visualize
from .args import warn_deprecated


class CLIError(UserError):
    """An error the user can fix; printed as one line, without a traceback."""


#: Errors about a path the user gave, reported in one line like a UserError.
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (the launcher's global options) with every sub-command."""
    parser = base_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(sub)
    evaluate.add_parser(sub)
    predict.add_parser(sub)
    info.add_parser(sub)
    bench.add_parser(sub)
    export.add_parser(sub)
    convert.add_parser(sub)
    dense.add_parsers(sub)
    ablate.add_parser(sub)
    rotated.add_parser(sub)
    robustness.add_parser(sub)
    visualize.add_parser(sub)
    return parser


class _CLIHandler(logging.StreamHandler):
    """Messages of the ``lsnet`` loggers on stderr: plain for information, prefixed otherwise.
    The stream is looked up at each message, so a replaced ``sys.stderr`` (tests, notebooks)
    is followed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always follows sys.stderr
        pass

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure_logging(verbose: int = 0, quiet: int = 0) -> None:
    """Send the package's log messages to stderr at the level -v / -q ask for (INFO by default)."""
    root = logging.getLogger("lsnet")
    for handler in [h for h in root.handlers if isinstance(h, _CLIHandler)]:
        root.removeHandler(handler)
    root.addHandler(_CLIHandler())
    level = logging.INFO - 10 * verbose + 10 * quiet
    root.setLevel(max(min(level, logging.ERROR), logging.DEBUG))
    root.propagate = False


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the process exit status (2 for a user error, 1 for a bug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    warn_deprecated(args)  # old option spellings still work, with a warning naming the current one
    if args.version:
        from lsnet import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, *PATH_ERRORS) as err:
        print(f"lsnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsnet {args.command}: interrupted", file=sys.stderr)
        return 130
    # anything else is a bug: Python prints its traceback and the exit status is 1


if __name__ == "__main__":
    raise SystemExit(main())
