"""B1 engine overhead: our `fit` loop vs a bare hand-written PyTorch loop (goal: throughput >= 0.97).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b1_engine_overhead

Both sides train the same student from the same initial weights on the same in-memory data with
cross-entropy and AdamW (lr 1e-3, weight decay 0.01 = its default), batch 64, for N optimizer
steps, one torch thread. The bare loop is the canonical one:
`DataLoader(shuffle=True, drop_last=True, generator=seeded)`,
`zero_grad(set_to_none=True)`, `backward`, `step`. Ours is `multiteacher.engine.loop.fit` with a
fresh run directory per run (a new `RunContext`, as a recipe gets), validation and periodic
checkpoints off (`val_every`/`ckpt_every` > N; it still writes its final last/best/done files) and
the default train log every 10 steps — plus rows with a periodic checkpoint every 100 steps, and
without the train log (each `metrics.jsonl` record is fsynced). Timed: the `fit(...)` call
and the whole bare loop; model and optimizer construction stay outside on the bare side, inside
`fit` on ours.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import Row, Skip, Timing, alternate, pick, ratio_row, run_single, timed

BATCH = 64
REPEATS = pick(5, 1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )


def dataset(kind: str, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 256, generator=g) if kind == "mlp" else torch.randn(n, 3, 32, 32, generator=g)
    return TensorDataset(x, torch.randint(0, 10, (n,), generator=g))


def ce_step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(m(x), y)


def bare(make: Callable[[], nn.Module], init: dict, data: TensorDataset, steps: int) -> Timing:
    model = make()
    model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as fit builds it (issue 16: fused on CPU)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))

    def loop() -> None:
        model.train()
        done = 0
        while done < steps:
            for x, y in loader:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    return

    return timed(loop)


def ours(make: Callable[[], nn.Module], init: dict, data: TensorDataset, steps: int, ckpt_every: int | None,
         log_every: int = 10) -> Timing:
    from multiteacher.config import RecipeConfig
    from multiteacher.engine.loop import FitConfig, fit
    from multiteacher.runs import RunContext

    model = make()
    model.load_state_dict(init)
    big = steps + 1
    cfg = FitConfig(max_steps=steps, batch_size=BATCH, lr=1e-3, weight_decay=0.01, optimizer="adamw",
                    val_every=big, ckpt_every=ckpt_every or big, log_every=log_every)
    run_dir = Path(tempfile.mkdtemp(prefix="b1-"))
    try:
        ctx = RunContext(run_dir=run_dir, data_dir=run_dir, cache_dir=run_dir,
                         config=RecipeConfig(recipe="example", name="b1", seed=0))
        return timed(lambda: fit(ctx, "m", model, data, ce_step, cfg))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def case(label: str, make: Callable[[], nn.Module], kind: str, n: int, steps: int, with_ckpt: bool,
         repeats: int = REPEATS) -> list[Row]:
    torch.manual_seed(0)
    init = make().state_dict()
    data = dataset(kind, n)
    fns = {"peer": lambda: bare(make, init, data, steps),
           "ours": lambda: ours(make, init, data, steps, None)}
    if with_ckpt:
        fns["ours_ckpt"] = lambda: ours(make, init, data, steps, 100)
        fns["ours_nolog"] = lambda: ours(make, init, data, steps, None, log_every=10**9)
    t = alternate(fns, repeats=repeats)
    ms = 1000 * sorted(c for _, c in t["peer"])[len(t["peer"]) // 2] / steps  # CPU ms per bare step
    peer_cfg = (f"bare loop, DataLoader(shuffle, seeded), fused AdamW, batch {BATCH}, {steps} steps, 1 thread "
                f"({ms:.1f} ms CPU/step)")
    rows = [ratio_row("B1", f"{label}, no val/ckpt, train log every 10", t["ours"], t["peer"], work=steps,
                      unit="steps/s", goal_min=0.97, peer_cfg=peer_cfg,
                      ours_cfg=f"fit(), val_every/ckpt_every > {steps}, fresh run dir")]
    if with_ckpt:
        rows.append(ratio_row("B1", f"{label}, ckpt every 100", t["ours_ckpt"], t["peer"],
                              work=steps, unit="steps/s", peer_cfg=peer_cfg,
                              ours_cfg="fit(), checkpoint (last.pt, fsync) every 100 steps"))
        rows.append(ratio_row("B1", f"{label}, no val/ckpt/train log", t["ours_nolog"], t["peer"],
                              work=steps, unit="steps/s", peer_cfg=peer_cfg,
                              ours_cfg="fit(), as the first row but log_every > N: no metrics.jsonl record"
                                       " (RunContext.log opens, writes and fsyncs per record)"))
    return rows


def run() -> list[Row]:
    try:
        import multiteacher.engine.loop  # noqa: F401
    except ImportError as e:
        raise Skip(f"multiteacher.engine.loop not importable ({e})") from None
    return [*case("MLP 256-256-256-10", mlp, "mlp", 4096, pick(300, 100), with_ckpt=True),
            *case("CNN 3x32x32", cnn, "cnn", 2048, pick(60, 10), with_ckpt=False, repeats=pick(9, 1))]


def main() -> None:
    run_single("B1", run)


if __name__ == "__main__":
    main()
