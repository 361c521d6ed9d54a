"""Where B2's gap on identical batches goes: our rerank training path vs `CrossEncoderTrainer` + `MarginMSELoss`.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.profile_b2 [STEPS] [--before]   # default 4 steps, grouped batches

`--before` profiles our side as it was before issue 16's fixes (torch's default per-tensor AdamW loop
instead of the fused one; one forward of all 2B pairs instead of two length-sorted halves), to show
what each fix removed.

Both sides train STEPS steps on the very same length-grouped batches (`bench.b2_cross_encoder_train.setup`).
Prints, per side, the process CPU time of the run and the CPU time spent in each phase of a step —
tokenisation/collation, forward (the model's `forward` calls), backward, gradient clipping, the
optimizer step, checkpoint/file writes and the rest — from cProfile's cumulative times of the
functions that implement each phase (both sides call the same transformers model, so forward and
backward are directly comparable), then the 20 functions whose own time differs most between the two.
Not a benchmark (cProfile adds its own cost to Python-heavy code): a diagnostic of the per-step path,
what the README's B2 finding was read from.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

# phase -> substrings of "file:function" whose cumulative time makes it (first match of each row counts)
PHASES: dict[str, tuple[str, ...]] = {
    "tokenise+collate": ("tokenization_utils_base.py:__call__", "data_collator.py:__call__"),
    "forward": ("modeling_bert.py:forward",),
    "backward": ("torch/_tensor.py:backward", "accelerator.py:backward"),
    "grad clip": ("clip_grad.py:clip_grad_norm_",),
    "optimizer step": ("optimizer.py:wrapper", "adamw.py:step", "adam.py:step"),
    "checkpoint/files": ("checkpoint.py:save", "checkpoint.py:finish", "serialization.py:save"),
}


def profile(fn: Callable[[], Any]) -> tuple[float, dict[str, tuple[int, float, float]]]:
    """(process CPU seconds, {"file:function": (calls, own time, cumulative time)}) of one call of `fn`."""
    pr = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    pr.enable()
    fn()
    pr.disable()
    cpu = time.process_time() - c0
    stats = pstats.Stats(pr).stats  # type: ignore[attr-defined]
    out: dict[str, tuple[int, float, float]] = {}
    for k, v in stats.items():
        path = k[0].replace("\\", "/")
        short = "/".join(path.split("/")[-2:]) if "torch/" in path else path.split("/")[-1]
        key = f"{short}:{k[2]}"
        c, own, cum = out.get(key, (0, 0.0, 0.0))
        out[key] = (c + v[1], own + v[2], max(cum, v[3]))
    return cpu, out


def phases(stats: dict[str, tuple[int, float, float]]) -> dict[str, float]:
    """CPU seconds per phase: the largest cumulative time among the phase's entry functions (they nest:
    accelerate's `backward` calls `Tensor.backward`, the optimizer's `wrapper` calls `AdamW.step`)."""
    return {ph: max((cum for k, (_, _, cum) in stats.items() if any(k.endswith(x) for x in keys)), default=0.0)
            for ph, keys in PHASES.items()}


def undo_fixes() -> None:
    """Our side as before issue 16: AdamW's per-tensor loop (not fused), one forward of all pairs."""
    from multiteacher.engine import loop
    from multiteacher.recipes.rerank import model

    def unfused(params: Any, cfg: Any) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    loop.build_optimizer = unfused  # type: ignore[assignment]
    model.SPLIT_MIN_PAIRS = 1 << 30


def main(steps: int = 4, before: bool = False) -> None:
    from bench.b2_cross_encoder_train import setup

    if before:
        undo_fixes()
    torch.set_num_threads(1)
    b = setup()
    batches = b.grp_batches[:steps]
    # Warm-up: a full run of each side (untimed). The first run over new batch shapes costs far more
    # (fresh memory pages, allocator growth: 19 s vs 13 s for the same 4 batches here), so a 1-step
    # warm-up would charge that to whichever side runs first. Then ABBA order, stats summed.
    b.ours(b.grouped_cfg, steps)
    b.peer(batches, steps)
    runs = [("ours", b.ours(b.grouped_cfg, steps, runner=profile)), ("peer", b.peer(batches, steps, runner=profile)),
            ("peer", b.peer(batches, steps, runner=profile)), ("ours", b.ours(b.grouped_cfg, steps, runner=profile))]
    res: dict[str, tuple[float, dict[str, tuple[int, float, float]]]] = {}
    for side, (cpu, st) in runs:
        c0, s0 = res.get(side, (0.0, {}))
        merged = dict(s0)
        for k, (n, own, cum) in st.items():
            a = merged.get(k, (0, 0.0, 0.0))
            merged[k] = (a[0] + n, a[1] + own, a[2] + cum)
        res[side] = (c0 + cpu, merged)
    steps *= 2  # two profiled runs per side
    print(f"{steps} steps per side on the same length-grouped batches (cProfile on, 1 thread, order ours, peer, "
          "peer, ours); CPU seconds per step:")
    print(f"{'phase':20s} {'ours':>8s} {'peer':>8s} {'ours-peer':>10s}")
    ph = {side: phases(st) for side, (_, st) in res.items()}
    for name in PHASES:
        o, p = ph["ours"][name] / steps, ph["peer"][name] / steps
        print(f"{name:20s} {o:8.3f} {p:8.3f} {o - p:+10.3f}")
    o_all, p_all = res["ours"][0] / steps, res["peer"][0] / steps
    o_rest, p_rest = o_all - sum(ph["ours"].values()) / steps, p_all - sum(ph["peer"].values()) / steps
    print(f"{'rest':20s} {o_rest:8.3f} {p_rest:8.3f} {o_rest - p_rest:+10.3f}")
    print(f"{'total':20s} {o_all:8.3f} {p_all:8.3f} {o_all - p_all:+10.3f}   (ratio peer/ours {p_all / o_all:.3f})")
    mine, peer = res["ours"][1], res["peer"][1]
    grown = sorted(((mine.get(k, (0, 0.0, 0.0))[1] - peer.get(k, (0, 0.0, 0.0))[1], k) for k in set(peer) | set(mine)),
                   key=lambda x: -abs(x[0]))
    print("\nown CPU time, ours - peer, largest differences (ms over the run):")
    for delta, k in grown[:20]:
        print(f"{1e3 * delta:+9.1f} ms  {k[:72]:72s} calls {peer.get(k, (0,))[0]:6d} -> {mine.get(k, (0,))[0]:6d}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--before"]
    main(int(args[0]) if args else 4, before="--before" in sys.argv[1:])
