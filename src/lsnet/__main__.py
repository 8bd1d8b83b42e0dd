"""``python -m lsnet`` runs the command line."""

from lsnet.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
