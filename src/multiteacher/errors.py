"""User-facing errors: one clear line, exit code 2, no traceback.

Raise `UserError` for bad configs, bad data and bad teachers. The message must name what is
wrong, where (file / field / line) and how to fix it. The CLI prints it and exits with 2.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (config, data, paths). Printed as one line by the CLI.

    Args:
        message: what is wrong, where (file / field / line) and how to fix it; newlines are folded.

    Example:
        >>> str(UserError("data.yaml: field 'x'   is bad")), UserError("x").exit_code
        ("data.yaml: field 'x' is bad", 2)
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # force a single line


class ConfigError(UserError):
    """Invalid configuration (unknown key, wrong type, bad value, unknown recipe).

    Example:
        >>> ConfigError("c.yaml: unknown key 'fit.lrr' — did you mean 'lr'?").exit_code
        2
    """


class DataError(UserError):
    """Missing, malformed or inconsistent data (including a results.json that breaks the schema).

    Example:
        >>> isinstance(DataError("runs/x/results.json: missing field(s) 'name'"), UserError)
        True
    """
