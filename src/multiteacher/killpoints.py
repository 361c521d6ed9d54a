"""Named kill points for reliability tests.

Code calls `killpoint("fit/step")` at places where a crash must be survivable. When the
environment variable `MULTITEACHER_KILL_AT` names that point (`name` or `name@N` for the N-th
hit, 1-based), the process SIGKILLs itself there — no cleanup, no flush — exactly like an OOM
kill or a pre-empted node. `MULTITEACHER_KILL_RANDOM=p:seed` kills at any kill point with
probability p (used by `make reliability`). Several points: comma-separated. The variables are
read at the process's first kill point (the fast path of every training step); in-process tests that
set them call `reset()`.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter

ENV_AT = "MULTITEACHER_KILL_AT"
ENV_RANDOM = "MULTITEACHER_KILL_RANDOM"

_hits: Counter[str] = Counter()
_rng: random.Random | None = None
_enabled: bool | None = None  # whether a kill is configured; read from the environment once (see reset)


def _targets() -> dict[str, int]:
    spec = os.environ.get(ENV_AT, "")
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition("@")
        out[name] = int(n) if n else 1
    return out


def killpoint(name: str) -> None:
    """SIGKILL this process if `name` is the configured kill point (no-op otherwise)."""
    global _rng, _enabled
    if _enabled is None:
        _enabled = ENV_AT in os.environ or ENV_RANDOM in os.environ
    if not _enabled:
        return  # the fast path of every training step: hits count only while a kill is configured
    _hits[name] += 1
    targets = _targets()
    if name in targets and _hits[name] == targets[name]:
        _die()
    rnd = os.environ.get(ENV_RANDOM)
    if rnd:
        p, _, seed = rnd.partition(":")
        if _rng is None:
            _rng = random.Random(int(seed or 0) * 1_000_003 + os.getpid())
        if _rng.random() < float(p):
            _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget hit counts and re-read the environment (tests that set the variables in-process)."""
    global _enabled
    _hits.clear()
    _enabled = None
