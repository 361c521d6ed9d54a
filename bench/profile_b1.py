"""Where B1's overhead goes: cProfile of `fit()` vs the bare loop (MLP case), per function, largest extra first.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.profile_b1 [STEPS]

Prints the median CPU time of each side over 3 runs (and the difference per step), then the 25
functions whose own time grew most from the bare loop to `fit()`. Not a benchmark: a diagnostic for
the per-step path (what the README's B1 finding was read from).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
from collections.abc import Callable

import torch

from bench.b1_engine_overhead import bare, dataset, mlp, ours


def profile(fn: Callable[[], object]) -> dict[str, tuple[int, float]]:
    """function -> (calls, own time) of one call of `fn`."""
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    stats = pstats.Stats(pr).stats  # type: ignore[attr-defined]
    return {f"{k[0].split('/')[-1]}:{k[2]}": (v[1], v[2]) for k, v in stats.items()}


def main(steps: int = 1200) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    init, data = mlp().state_dict(), dataset("mlp", 4096)
    b = statistics.median(bare(mlp, init, data, steps)[1] for _ in range(3))
    o = statistics.median(ours(mlp, init, data, steps, None)[1] for _ in range(3))
    print(f"{steps} steps: bare {b:.3f} s CPU, fit {o:.3f} s CPU, +{1e6 * (o - b) / steps:.1f} us/step, "
          f"ratio {b / o:.3f}")
    peer, mine = profile(lambda: bare(mlp, init, data, steps)), profile(lambda: ours(mlp, init, data, steps, None))
    grown = sorted(((mine.get(k, (0, 0.0))[1] - peer.get(k, (0, 0.0))[1], k) for k in set(peer) | set(mine)),
                   reverse=True)
    for delta, k in grown[:25]:
        print(f"{1e3 * delta:+8.2f} ms  {k[:70]:70s} calls {peer.get(k, (0, 0))[0]:6d} -> {mine.get(k, (0, 0))[0]:6d}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1200)
