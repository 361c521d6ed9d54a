"""B5 teacher cache: a KD epoch reading cached teacher outputs vs a student-only epoch (goal: time
<= 1.10x) and vs the same KD epoch with live teachers.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b5_teacher_cache

A small CNN student on 2,048 random 3x32x32 images, 10 classes, batch 64, AdamW, one torch thread;
two bigger CNN teachers (10 logits each). All three epochs run the same loop (seeded shuffled
DataLoader over (image, label, position)):

- student-only: cross-entropy on labels;
- cached: the teachers' logits for the batch positions from `TeacherPool.cached_outputs` (memory-
  mapped `.npy` shards of `multiteacher.teachers.cache`, filled once before timing, so read from the
  page cache), then cross-entropy + `multi_teacher_kd`;
- live: the same, with `TeacherPool.predict` running both teachers on the batch.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import Row, Skip, Timing, alternate, pick, ratio_row, run_single, timed

N, BATCH, REPEATS = pick(2048, 512), 64, pick(7, 1)


def student() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )


def teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )


def epoch(init: dict, data: TensorDataset, teachers: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
          kd: Callable[..., torch.Tensor]) -> Timing:
    """One epoch; `teachers(x, positions) -> (B, K, C)` or None for student-only."""
    model = student()
    model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))

    def loop() -> None:
        model.train()
        for x, y, pos in loader:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if teachers is not None:
                t = teachers(x, pos)
                loss = loss + kd(logits, t, temperature=4.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(loop)


def run() -> list[Row]:
    try:
        from multiteacher.losses.kd import multi_teacher_kd
        from multiteacher.teachers import ModuleTeacher, TeacherPool, data_fingerprint
    except ImportError as e:
        raise Skip(f"multiteacher.teachers cache/pool or losses.kd not available ({e})") from None

    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = TensorDataset(x, y, torch.arange(N))
    torch.manual_seed(1)
    pool = TeacherPool([ModuleTeacher(teacher(), f"t{i}") for i in range(2)])
    init = student().state_dict()
    ids = list(range(N))
    root = tempfile.mkdtemp(prefix="b5-")
    try:
        fill = timed(lambda: pool.cached_outputs(x, ids, data_fingerprint(ids=ids, config={"b5": N}), root=root,
                                                 shard_size=1024, batch_size=256, progress=False))
        cached = pool.cached_outputs(x, ids, data_fingerprint(ids=ids, config={"b5": N}), root=root,
                                     shard_size=1024, batch_size=256, progress=False)

        def from_cache(_x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            return cached.torch(pos)

        def live(xb: torch.Tensor, _pos: torch.Tensor) -> torch.Tensor:
            return pool.predict(xb)

        # sanity: cached and live outputs agree (same teachers, same samples)
        probe = torch.arange(0, N, 97)
        if not torch.allclose(from_cache(x[probe], probe), live(x[probe], probe), atol=1e-5):
            raise RuntimeError("B5: cached teacher outputs differ from live ones")
        fns: dict[str, Callable[[], Any]] = {
            "student": lambda: epoch(init, data, None, multi_teacher_kd),
            "cached": lambda: epoch(init, data, from_cache, multi_teacher_kd),
            "live": lambda: epoch(init, data, live, multi_teacher_kd),
        }
        t = alternate(fns, repeats=REPEATS)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    steps = N // BATCH
    common = f"student CNN 16/32 ch, 2 teacher CNNs 32/64/64 ch, {N} imgs 3x32x32, batch {BATCH}, AdamW, 1 thread"
    extra = {"cache_fill_s": round(fill[0], 3), "steps_per_epoch": steps}
    return [
        ratio_row("B5", "KD epoch, cached teachers vs student-only (time ratio)", t["cached"], t["student"],
                  work=N, unit="samples/s", goal_max=1.10, invert=True, extra=extra,
                  ours_cfg=f"CE + multi_teacher_kd, 2 teachers' logits from the mmap cache; {common}",
                  peer_cfg="the same loop, CE only (no teachers)"),
        ratio_row("B5", "KD epoch, cached vs live teachers (time ratio)", t["cached"], t["live"],
                  work=N, unit="samples/s", invert=True, extra=extra,
                  ours_cfg="cached teachers (as above)",
                  peer_cfg="live teachers: TeacherPool.predict per batch (inference_mode)"),
    ]


def main() -> None:
    run_single("B5", run)


if __name__ == "__main__":
    main()
