"""`lsnet train` under torchrun, with the tiny test models registered."""

import sys

import tiny_models  # noqa: F401
from lsnet.cli.main import main

raise SystemExit(main(["train", *sys.argv[1:]]))
