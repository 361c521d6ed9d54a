"""User-facing errors: one clear line, exit code 2, no traceback.

Raise `UserError` for bad configs, bad data and bad teachers. The message must name what is
wrong, where (file / field / line) and how to fix it. The CLI prints it and exits with 2.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (config, data, paths). Printed as one line by the CLI."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # force a single line


class ConfigError(UserError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


class DataError(UserError):
    """Missing, malformed or inconsistent data."""
