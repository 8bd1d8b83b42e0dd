"""Argument types the sub-commands share: comma-separated lists of numbers."""

from __future__ import annotations

import argparse
from typing import Tuple

__all__ = ["float_list", "int_list"]


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
