"""B6 memory (teacher-cache fill part): peak RSS of filling the teacher cache at 1x and 4x data size
(goal: flat — shards are streamed to disk) vs the obvious in-memory fill (collect every output, then
save one array). NGC pseudo-label generation is not measured here.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b6_memory

Each (implementation, size) runs in its own subprocess. The teacher is a 3->1 channel conv producing a
dense 1x64x64 float32 map per sample (16 KiB, an NGC-style edge); inputs are generated per batch
from the sample positions, so the data set itself is never resident. 1x = 2,048 samples (32 MiB of
outputs), 4x = 8,192 (128 MiB); batch 64, shard size 256 rows (4 MiB). Reported: peak RSS
(`VmHWM`, reset to the current RSS just before the fill via /proc/self/clear_refs, so a transient
peak while importing torch does not hide it) minus the RSS before the fill, in MiB. Not `ru_maxrss`:
in a child started by fork + exec it includes the parent's RSS (see `bench.common.peak_rss_mib`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from bench.common import ROOT, Row, Skip, run_single

BASE_N, BATCH, SHARD = 2048, 64, 256

CHILD_TEMPLATE = r"""
import json, sys, tempfile, numpy as np, torch
from bench.common import current_rss_mib, peak_rss_mib, reset_peak_rss
impl, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
torch.manual_seed(0)
conv = torch.nn.Conv2d(3, 1, 3, padding=1).eval().requires_grad_(False)
base = torch.randn(3, 64, 64)

def batch_of(idx):  # data as a function of positions: inputs are never all in memory
    return torch.sin(torch.from_numpy(idx).float()[:, None, None, None] * 0.01 + base)

def predict(xb):
    with torch.inference_mode():
        return conv(xb)

from multiteacher.teachers.cache import TeacherCache
cache = TeacherCache(root, "b6-conv", f"b6-{n}", list(range(n)), shard_size=%(shard)d)
predict(batch_of(np.arange(%(batch)d)))  # warm up allocator and kernels before the baseline
process_peak = peak_rss_mib()
reset = reset_peak_rss()
before = current_rss_mib() if reset else process_peak
if impl == "ours":
    cache.fill(predict, batch_of, batch_size=%(batch)d, progress=False)
else:  # naive: every output in memory, then one array written
    outs = [predict(batch_of(np.arange(b, min(b + %(batch)d, n)))).numpy() for b in range(0, n, %(batch)d)]
    arr = np.concatenate(outs)
    np.save(f"{root}/all.npy", arr)
after = peak_rss_mib()
import resource
print(json.dumps({"before": before, "after": after, "delta": after - before, "peak_reset": reset,
                  "process_peak_before": process_peak,
                  "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
CHILD = CHILD_TEMPLATE.replace("%(shard)d", str(SHARD)).replace("%(batch)d", str(BATCH))


def child(impl: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="b6-") as root:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT.parent)}
        env.pop("MULTITEACHER_KILL_AT", None)
        out = subprocess.run([sys.executable, "-c", CHILD, impl, str(n), root], env=env, cwd=ROOT.parent,
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise RuntimeError(f"B6 child {impl} n={n} failed: {out.stderr.strip().splitlines()[-1:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[Row]:
    try:
        from multiteacher.teachers.cache import TeacherCache
    except ImportError as e:
        raise Skip(f"multiteacher.teachers.cache not available ({e})") from None
    if not hasattr(TeacherCache, "fill"):
        raise Skip("TeacherCache has no fill API")
    res: dict[tuple[str, int], dict[str, float]] = {}
    for scale in (1, 4):  # alternate implementations at each size
        for impl in ("ours", "naive"):
            res[impl, scale] = child(impl, BASE_N * scale)
    rows = []
    mib = BASE_N * 64 * 64 * 4 / 2**20
    for scale in (1, 4):
        o, p = res["ours", scale]["delta"], res["naive", scale]["delta"]
        rows.append(Row("B6", f"cache fill {scale}x ({BASE_N * scale} samples, {mib * scale:.0f} MiB outputs)",
                        "peak RSS over baseline MiB", round(o, 1), round(p, 1), round(o / max(p, 1e-9), 3),
                        ours_cfg=f"TeacherCache.fill, shard {SHARD} rows, batch {BATCH}",
                        peer_cfg="naive: list of batch outputs, np.concatenate, np.save",
                        extra={"ours": res["ours", scale], "naive": res["naive", scale]}))
    g_o = res["ours", 4]["delta"] / max(res["ours", 1]["delta"], 1e-9)
    g_p = res["naive", 4]["delta"] / max(res["naive", 1]["delta"], 1e-9)
    rows.append(Row("B6", "cache fill growth 4x/1x (ratio = ours' growth)", "RSS delta 4x / 1x",
                    round(g_o, 3), round(g_p, 3), round(g_o, 3), goal="<= 1.25 (flat)", met=g_o <= 1.25,
                    ours_cfg="TeacherCache.fill", peer_cfg="naive in-memory fill"))
    return rows


def main() -> None:
    run_single("B6", run)


if __name__ == "__main__":
    main()
