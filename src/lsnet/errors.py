"""The errors a user can fix (a bad option, path, dataset or checkpoint).

The command line prints a :class:`UserError` as one line and exits with status 2; any other
exception is a bug and keeps its traceback (exit status 1).
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError"]


class UserError(Exception):
    """Base of every error whose message tells the user what to fix."""


class ConfigError(UserError, ValueError):
    """An option or configuration value that cannot be used; the message names the option."""
