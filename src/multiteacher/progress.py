"""Progress bars that also work in log files.

A bar drawn with carriage returns is fine on a terminal, but a run under ``nohup``, SLURM or CI writes
to a file: tqdm's default (``disable=None``) then shows nothing at all for a 70-minute fit. Here every
long loop gets one bar: on a terminal (or in a notebook) the usual tqdm bar; otherwise one plain line per
``MULTITEACHER_PROGRESS_INTERVAL`` seconds (default 30) plus the final line, so a log says where a run
is; work that ends within one interval logs nothing. ``MULTITEACHER_PROGRESS=0`` turns every bar off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import autonotebook as _autonotebook
from tqdm.std import tqdm as _std_tqdm

from multiteacher.errors import UserError

__all__ = ["progress"]

_DEFAULT_INTERVAL_S = 30.0


class _LineWriter:
    """A stream for tqdm that turns its carriage-return redraws into whole lines (for log files).

    Silent for the first `quiet_s` seconds: work shorter than one interval logs nothing, so a quick
    loop that ends in an error leaves that error as the only line on stderr."""

    def __init__(self, stream: TextIO, quiet_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.quiet_until = clock() + quiet_s
        self.last_count = ""

    def write(self, text: str) -> int:
        if self.clock() < self.quiet_until:
            return len(text)
        line = text.replace("\r", "").strip()
        head, _, rest = line.partition("|")  # "desc:  40%" | "####  " | " 4/10 [00:05<00:07, ...]"
        count = head + "|" + rest.rpartition("|")[2].split(" [", 1)[0]  # no bar (its width varies), no timing
        if line and count != self.last_count:  # close() redraws the last count: once is enough
            self.stream.write(line + "\n")
            self.last_count = count
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _interval_s() -> float:
    raw = os.environ.get("MULTITEACHER_PROGRESS_INTERVAL", "").strip()
    try:
        value = float(raw) if raw else _DEFAULT_INTERVAL_S
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise UserError(f"MULTITEACHER_PROGRESS_INTERVAL={raw!r}: give the seconds between progress lines "
                        "as a number >= 0 (or unset it for 30)")
    return value


def progress(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> _std_tqdm:
    """A tqdm bar on a terminal or notebook, timed plain lines in a log file.

    Args:
        iterable: what to iterate over (as for ``tqdm``); None for a bar updated by hand.
        enabled: False for no output at all (e.g. ranks other than 0, or ``progress=False``).
        **kwargs: passed to tqdm (``total``, ``desc``, ``unit``, ``initial``, ...).

    Returns:
        The tqdm object (iterate it, or call ``update`` / ``set_postfix`` / ``close``).

    Example:
        >>> for _ in progress(range(3), desc="label", enabled=False):
        ...     pass
    """
    if not enabled or os.environ.get("MULTITEACHER_PROGRESS", "1").strip().lower() in ("0", "false", "off", "no"):
        return _std_tqdm(iterable, disable=True, **kwargs)
    if _autonotebook.tqdm is not _std_tqdm:  # inside a Jupyter kernel: its widget bar
        return _autonotebook.tqdm(iterable, **kwargs)
    stream = kwargs.pop("file", None) or sys.stderr
    if _is_tty(stream):
        return _std_tqdm(iterable, file=stream, **kwargs)
    kwargs["leave"] = True  # the final count is the line a log most needs
    interval = _interval_s()
    # maxinterval >= mininterval: tqdm's monitor thread otherwise forces a redraw every maxinterval (10 s)
    return _std_tqdm(iterable, file=_LineWriter(stream, interval), mininterval=interval,
                     maxinterval=max(interval, 1.0), ascii=True, ncols=100, **kwargs)
