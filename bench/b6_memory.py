"""B6 memory: peak RSS of filling the teacher cache and of NGC pseudo-label generation at 1x and 4x
data size (goal: flat — streamed to disk, memory-mapped) vs the obvious in-memory versions.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b6_memory

Each (implementation, size) runs in its own subprocess. The teacher is a 3->1 channel conv producing a
dense 1x64x64 float32 map per sample (16 KiB, an NGC-style edge); inputs are generated per batch
from the sample positions, so the data set itself is never resident. 1x = 2,048 samples (32 MiB of
outputs), 4x = 8,192 (128 MiB); batch 64, shard size 256 rows (4 MiB). Reported: peak RSS
(`VmHWM`, reset to the current RSS just before the fill via /proc/self/clear_refs, so a transient
peak while importing torch does not hide it) minus the RSS before the fill, in MiB. Not `ru_maxrss`:
in a child started by fork + exec it includes the parent's RSS (see `bench.common.peak_rss_mib`).

NGC pseudo-labels: the recipe's own `pipeline.build_pseudo` (consensus of every path's prediction at
every output node — median for continuous nodes, a vote for categorical ones —, agreement mask,
ground truth kept on labelled frames, pseudo-labels / masks / test consensus written as .npy in the
cache, plus its pseudo-label diagnostics on the unlabelled frames). Data: synthetic frames-first
arrays (`FrameArrays`, 64 px: rgb, depth, normals, 4-class semantic; 8 frames per "scene", 10% of
scenes labelled as in `pipeline.prepare`), 1x = 512 training frames (~460 unlabelled), 4x = 2,048;
64 test frames at both sizes. Paths: generation 0 of the recipe's graph (3 direct + 6 two-hop
edges, 3 paths into each node), real `edge_job` jobs (U-Net width 4, depth 2, 1 training step: in
effect random weights) run inline in an untimed preparation subprocess that writes the predictions;
then `ours` and `naive` each run in their own subprocess on those same files. Naive peer: load every
path's predictions for all frames into RAM, stack, one `consensus_chunk` over everything, np.save,
diagnostics on in-memory arrays. Peak RSS counts file-backed pages of memory maps too (VmHWM).

Before the streaming fix (build_pseudo kept every mask chunk in a list, held the ground-truth memory
map over the whole pass and computed its diagnostics on `pseudo[unlabelled]` / `gt[unlabelled]` in
memory) it grew like the peer: ours 381 -> 1,404 MiB (4x/1x = 3.69), naive 838 -> 2,937 MiB (3.51).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, Row, Skip, pick, run_single

BASE_N, BATCH, SHARD = pick(2048, 512), 64, 256

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



# ----------------------------------------------------------------------------- NGC pseudo-labels

NGC_BASE_N, NGC_TEST, NGC_RES, NGC_VIEWS, NGC_CLASSES = pick(512, 128), 64, 64, 8, 4


def ngc_config() -> Any:
    from multiteacher.recipes.ngc.config import Config, NodeConfig

    nodes = {"rgb": NodeConfig(kind="input", channels=3, loss="none"),
             "depth": NodeConfig(kind="continuous", channels=1, loss="l1", metric="depth", scale=4.0),
             "normals": NodeConfig(kind="continuous", channels=3, loss="cosine", metric="normals"),
             "semantic": NodeConfig(kind="categorical", channels=NGC_CLASSES, loss="ce", metric="semantic")}
    return Config(name="b6-ngc", nodes=nodes, labelled_fraction=0.1,
                  edge={"max_steps": 1, "batch_size": 4, "width": 4, "depth": 2, "predict_batch": 64},
                  consensus={"mask": True, "mask_quantile": 0.7}, executor={"backend": "inline", "workers": 1})


def _synth_split(d: Path, n: int, seed: int) -> None:
    """Random frames-first arrays written chunk by chunk (never all in memory)."""
    from multiteacher.recipes.ngc.edges import write_npy

    rng = np.random.default_rng(seed)
    r = NGC_RES

    def frames(make: Callable[[int], np.ndarray]) -> Iterator[np.ndarray]:
        for s in range(0, n, 64):
            yield make(min(64, n - s))

    def normals(b: int) -> np.ndarray:
        v = rng.normal(size=(b, r, r, 3)).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    write_npy(d / "rgb.npy", (n, r, r, 3), np.uint8, frames(lambda b: rng.integers(0, 256, (b, r, r, 3), np.uint8)))
    write_npy(d / "depth.npy", (n, r, r), np.float32, frames(lambda b: rng.uniform(0.5, 4.0, (b, r, r))))
    write_npy(d / "normals.npy", (n, r, r, 3), np.float32, frames(normals))
    write_npy(d / "semantic.npy", (n, r, r), np.uint8, frames(lambda b: rng.integers(0, NGC_CLASSES, (b, r, r))))


def ngc_ctx(root: Path, n: int) -> Any:
    """The recipe's `Ctx` over synthetic arrays under `root` (split as in `pipeline.prepare`)."""
    from multiteacher.recipes.ngc import pipeline as P
    from multiteacher.recipes.ngc.graph import build_edges

    cfg = ngc_config()
    arrs = {}
    for split, size in (("train", n), ("test", NGC_TEST)):
        d = root / split
        arrs[split] = P.FrameArrays(d, np.arange(size) // NGC_VIEWS, np.load(d / "rgb.npy", mmap_mode="r"))
    scenes = np.unique(arrs["train"].scene)
    rng = np.random.default_rng([cfg.seed, 7])
    lab_scenes = rng.permutation(scenes)[:max(1, round(cfg.labelled_fraction * len(scenes)))]
    is_lab = np.isin(arrs["train"].scene, lab_scenes)
    return P.Ctx(cfg, arrs["train"], arrs["test"], np.flatnonzero(is_lab), np.flatnonzero(~is_lab),
                 build_edges(cfg), root / "work", root / "ckpt")


def ngc_prepare(root: Path, n: int) -> None:
    """Data and generation-0 path predictions (real edge jobs, inline)."""
    from multiteacher.recipes.ngc import pipeline as P

    _synth_split(root / "train", n, 1)
    _synth_split(root / "test", NGC_TEST, 2)
    c = ngc_ctx(root, n)
    P.run(c, P.generation_jobs(c, 0))


def ngc_naive(c: Any, tag: str, out: Path) -> dict[str, Any]:
    """The obvious version: every path's predictions for all frames stacked in RAM, one consensus."""
    import torch

    from multiteacher.recipes.ngc import pipeline as P
    from multiteacher.recipes.ngc.graph import output_nodes

    diag = {}
    unl = c.unlabelled
    for node, src in P.sources_of(c, tag).items():
        dtype = np.uint8 if c.cfg.nodes[node].kind == "categorical" else np.float32
        gt = np.load(c.gt_ref(node, "train")["path"])
        for split in ("train", "test"):
            x = torch.stack([torch.from_numpy(np.load(c.pred_path(t, e, split))).float() for t, e in src], 1)
            v, keep, _ = P.consensus_chunk(c, node, x)
            del x
            v, keep = v.numpy().astype(dtype), keep.numpy()
            if split == "train":
                v[c.labelled] = gt[c.labelled]
                keep[c.labelled] = True
                np.save(out / f"{node}.mask.npy", keep.astype(np.uint8))
                diag[node] = {"pseudo": P.node_metrics(c, node, v[unl], gt[unl], layout="label"),
                              "pseudo_kept": P.node_metrics(c, node, v[unl], gt[unl], layout="label", mask=keep[unl]),
                              "coverage": float(keep[unl].mean())}
            np.save(out / f"{node}.{split}.npy", v)
    assert set(diag) == set(output_nodes(c.cfg))
    return diag


def ngc_child(impl: str, n: int, root: Path) -> dict[str, Any]:
    """Peak RSS of one pseudo-label generation (`ours`: pipeline.build_pseudo; `naive`)."""
    import torch

    from bench.common import current_rss_mib, peak_rss_mib, reset_peak_rss
    from multiteacher.recipes.ngc import pipeline as P

    torch.set_num_threads(1)
    c = ngc_ctx(root, n)
    for node, src in P.sources_of(c, "gen0").items():  # warm up kernels and the allocator on 2 frames
        x = torch.stack([torch.from_numpy(np.array(np.load(c.pred_path(t, e, "train"), mmap_mode="r")[:2])).float()
                         for t, e in src], 1)
        v, keep, _ = P.consensus_chunk(c, node, x)
        P.node_metrics(c, node, v.numpy(), np.load(c.gt_ref(node, "train")["path"], mmap_mode="r")[:2], "label",
                       keep.numpy())
    del x, v, keep
    process_peak = peak_rss_mib()
    reset = reset_peak_rss()
    before = current_rss_mib() if reset else process_peak
    if impl == "ours":
        diag = P.build_pseudo(c, "gen0", P.sources_of(c, "gen0"))
    else:
        out = root / "naive"
        out.mkdir(exist_ok=True)
        diag = ngc_naive(c, "gen0", out)
    after = peak_rss_mib()
    return {"before": before, "after": after, "delta": after - before, "peak_reset": reset,
            "process_peak_before": process_peak, "unlabelled": len(c.unlabelled), "chunk": P.CHUNK,
            "coverage": {k: round(v["coverage"], 4) for k, v in diag.items()}}


def _py(args: list[str], timeout: int = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT.parent)}
    env.pop("MULTITEACHER_KILL_AT", None)
    out = subprocess.run([sys.executable, "-m", "bench.b6_memory", *args], env=env, cwd=ROOT.parent,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"B6 child {args} failed: {out.stderr.strip().splitlines()[-3:]}")
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def memory_rows(res: dict[tuple[str, int], dict[str, Any]], what: str, size: Any, ours_cfg: str, peer_cfg: str,
                ours_short: str, peer_short: str) -> list[Row]:
    """Rows for one memory benchmark: peak RSS over baseline at 1x and 4x, then the 4x/1x growth (goal flat)."""
    rows = []
    for scale in (1, 4):
        o, p = res["ours", scale]["delta"], res["naive", scale]["delta"]
        rows.append(Row("B6", f"{what} {scale}x ({size(scale)})", "peak RSS over baseline MiB", round(o, 1),
                        round(p, 1), round(o / max(p, 1e-9), 3), ours_cfg=ours_cfg, peer_cfg=peer_cfg,
                        extra={"ours": res["ours", scale], "naive": res["naive", scale]}))
    g_o = res["ours", 4]["delta"] / max(res["ours", 1]["delta"], 1e-9)
    g_p = res["naive", 4]["delta"] / max(res["naive", 1]["delta"], 1e-9)
    rows.append(Row("B6", f"{what} growth 4x/1x (ratio = ours' growth)", "RSS delta 4x / 1x", round(g_o, 3),
                    round(g_p, 3), round(g_o, 3), goal="<= 1.25 (flat)", met=g_o <= 1.25,
                    ours_cfg=ours_short, peer_cfg=peer_short))
    return rows


def run_ngc() -> list[Row]:
    res: dict[tuple[str, int], dict[str, Any]] = {}
    for scale in (1, 4):
        n = NGC_BASE_N * scale
        with tempfile.TemporaryDirectory(prefix="b6-ngc-") as root:
            _py(["--ngc-prepare", str(n), root])
            for impl in ("ours", "naive"):
                res[impl, scale] = json.loads(_py(["--ngc-child", impl, str(n), root]))
    chunk = res["ours", 1]["chunk"]
    return memory_rows(res, "NGC pseudo-labels",
                       lambda k: f"{NGC_BASE_N * k} train frames, {res['ours', k]['unlabelled']} unlabelled",
                       ours_cfg=f"pipeline.build_pseudo, 3 nodes x 3 paths, 64 px, chunks of {chunk} frames",
                       peer_cfg="naive: all paths' predictions for all frames stacked in RAM, one consensus, np.save",
                       ours_short="pipeline.build_pseudo", peer_short="naive in-memory consensus")


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
    mib = BASE_N * 64 * 64 * 4 / 2**20
    rows = memory_rows(res, "cache fill", lambda k: f"{BASE_N * k} samples, {mib * k:.0f} MiB outputs",
                       ours_cfg=f"TeacherCache.fill, shard {SHARD} rows, batch {BATCH}",
                       peer_cfg="naive: list of batch outputs, np.concatenate, np.save",
                       ours_short="TeacherCache.fill", peer_short="naive in-memory fill")
    try:
        from multiteacher.recipes.ngc import pipeline  # noqa: F401
    except ImportError:  # the cache-fill rows still stand
        return rows
    return rows + run_ngc()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ngc-prepare":
        ngc_prepare(Path(sys.argv[3]), int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--ngc-child":
        print(json.dumps(ngc_child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))
    else:
        run_single("B6", run)


if __name__ == "__main__":
    main()
