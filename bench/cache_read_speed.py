"""Read speed of a cached epoch of teacher outputs vs recomputing a small teacher (not a test).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cache_read_speed.py [--n 2048] [--batch 64]

Two small teachers on 64 px RGB frames: a 3-layer conv net with a dense 1x64x64 output (an NGC-style
depth edge, 16 KiB per sample) and a conv classifier with 10 logits (a KD teacher). For each: time
one shuffled epoch of teacher forwards, the first fill of the cache, a full checksum verification,
and one shuffled epoch read from the memory-mapped cache (warm page cache), in samples/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from torch import nn

from multiteacher.teachers import ModuleTeacher, TeacherCache, data_fingerprint


def dense_teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 1, 3, padding=1),
    )


def logits_teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def epoch_batches(n: int, batch: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i : i + batch] for i in range(0, n, batch)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.n, 3, 64, 64)
    ids = list(range(args.n))
    data_fp = data_fingerprint(ids=ids, config={"bench": "frames64", "n": args.n})
    print(f"torch threads {torch.get_num_threads()}, {args.n} samples, batch {args.batch}")
    with tempfile.TemporaryDirectory() as root:
        for label, net in (("dense 1x64x64", dense_teacher()), ("logits 10", logits_teacher())):
            teacher = ModuleTeacher(net, label)
            t0 = time.perf_counter()
            for pos in epoch_batches(args.n, args.batch, 0):
                teacher.predict(x[torch.from_numpy(pos)])
            recompute = time.perf_counter() - t0

            cache = TeacherCache(root, teacher.fingerprint, data_fp, ids, shard_size=512)
            t0 = time.perf_counter()
            cache.fill(teacher.predict, x, batch_size=args.batch, progress=False)
            fill = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert cache.verify() == []
            verify = time.perf_counter() - t0

            arr = cache.open()
            reads = []
            for seed in (1, 2, 3):  # first epoch warms the page cache; report the best
                t0 = time.perf_counter()
                for pos in epoch_batches(args.n, args.batch, seed):
                    torch.from_numpy(arr[pos])
                reads.append(time.perf_counter() - t0)
            read = min(reads)
            mib = arr.dtype.itemsize * np.prod(arr.shape) / 2**20
            print(
                f"{label:14s} cache {mib:6.1f} MiB | recompute epoch {args.n / recompute:9.0f} samples/s "
                f"({recompute:.2f} s) | first fill {args.n / fill:8.0f}/s | checksum verify {verify:.3f} s | "
                f"cached epoch {args.n / read:9.0f} samples/s ({read * 1000:.1f} ms, "
                f"first {reads[0] * 1000:.1f} ms) | speed-up x{recompute / read:.0f}"
            )


if __name__ == "__main__":
    main()
