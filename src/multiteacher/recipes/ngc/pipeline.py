"""NGC orchestration: data split, one generation of edges, consensus pseudo-labels, evaluation.

Work files (edge predictions, pseudo-labels, agreement masks) live memory-mapped in
``<cache>/ngc/<run>-<hash>/``; edge checkpoints in ``<run>/checkpoints/ngc/``. Every work file has
a checksum sidecar (`edges.write_npys`) and is verified before it is used (`edges.verify_npy`):
what is missing or damaged is recomputed — predictions from their edge's checkpoint (the edge job
runs again), pseudo-labels and masks by building the generation's consensus again
(`ensure_generation`) — so an overwritten or deleted work file never feeds a run silently, and a
resumed run ends with the results of an untouched one.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multiteacher import consensus as cons
from multiteacher.config import config_hash
from multiteacher.data.scenes import SceneArrays, render_scenes
from multiteacher.engine.executor import Job, run_jobs
from multiteacher.errors import ConfigError, DataError
from multiteacher.metrics import dense
from multiteacher.recipes.ngc.config import Config
from multiteacher.recipes.ngc.edges import IGNORE, edge_job, verify_npy, write_npys
from multiteacher.recipes.ngc.graph import Edge, build_edges, direct_id, output_nodes, paths_to
from multiteacher.teachers.base import PrecomputedTeacher
from multiteacher.teachers.pool import TeacherPool

#: Frames per chunk of the streamed consensus and metrics.
CHUNK = 64


@dataclass
class FrameArrays:
    """A folder of frames-first ``<name>.npy`` arrays (what edges read), SceneArrays-like.

    Args:
        path: the folder.
        scene: per-frame group ("scene") ids, the unit of the labelled / unlabelled split.
        rgb: the input frames (memory-mapped).
        classes: class names of categorical nodes, if known.

    Example:
        >>> len(FrameArrays(Path("."), np.zeros(4), np.zeros((4, 2, 2, 3))))
        4
    """

    path: Path
    scene: np.ndarray
    rgb: np.ndarray
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.scene.shape[0])


def npz_arrays(cfg: Config, data_dir: Path, cache_dir: Path) -> tuple[FrameArrays, FrameArrays]:
    """Train / test frames of a Dronescapes-style npz folder, exported to the cache.

    Args:
        cfg: the NGC config (its `npz` source and nodes).
        data_dir: base of relative `npz.root` paths.
        cache_dir: where the exported arrays go.

    Returns:
        ``(train, test)`` frame arrays; ConfigError when the folder has too few shared frames.

    Example:
        >>> # train, test = npz_arrays(cfg, data_dir, cache_dir)
    """
    from multiteacher.data.npzdir import NpzDir

    src = cfg.npz
    assert src is not None
    root = Path(src.root) if Path(src.root).is_absolute() else data_dir / src.root
    d = NpzDir(root)
    reps = sorted({n.source or k for k, n in cfg.nodes.items()})
    frames = sorted(set.intersection(*(set(d.frames(r)) for r in reps)))
    group = np.arange(len(frames)) // src.group
    is_test = group % src.test_every == src.test_every - 1
    out = []
    for sel in (~is_test, is_test):
        fr = [f for f, s in zip(frames, sel) if s]
        if not fr:
            raise ConfigError(f"npz: {root} has too few shared frames ({len(frames)}) for group={src.group}, "
                              f"test_every={src.test_every}; lower them")
        arrs = d.export(cache_dir, reps, fr, classes={n.source or k: n.channels for k, n in cfg.nodes.items()
                                                      if n.kind == "categorical"})
        path = Path(arrs[reps[0]].filename).parent
        out.append(FrameArrays(path, group[sel], arrs[cfg.nodes[cfg.input_node].source or cfg.input_node]))
    return out[0], out[1]


@dataclass
class Ctx:
    """What every step needs: config, data, frame split, graph, and where files go.

    Args:
        cfg: the NGC config.
        train: training frames.
        test: test frames.
        labelled: indices of labelled training frames.
        unlabelled: indices of unlabelled training frames.
        edges: the graph's edges.
        work: cache folder of predictions, pseudo-labels and masks.
        ckpts: folder of edge checkpoints.

    Example:
        >>> # c = prepare(cfg, cache_dir, run_dir); c.pred_path("gen0", "rgb>depth", "test")
    """

    cfg: Config
    train: SceneArrays | FrameArrays
    test: SceneArrays | FrameArrays
    labelled: np.ndarray
    unlabelled: np.ndarray
    edges: list[Edge]
    work: Path
    ckpts: Path

    def node(self, name: str) -> dict[str, Any]:
        """The node's config as a dict (what edge job specs carry).

        Args:
            name: node name.

        Returns:
            `NodeConfig.model_dump()`.

        Example:
            >>> # c.node("depth")["scale"]
        """
        return self.cfg.nodes[name].model_dump()

    def source(self, name: str) -> str:
        """The data array that holds the node.

        Args:
            name: node name.

        Returns:
            The array name (the node's `source`, or its name).

        Example:
            >>> # c.source("depth") == "depth"
        """
        return self.cfg.nodes[name].source or name

    def gt_ref(self, name: str, split: str) -> dict[str, Any]:
        """Reference to the node's ground truth on a split.

        Args:
            name: node name.
            split: "train" or "test".

        Returns:
            ``{"path", "layout": "label"}``.

        Example:
            >>> # c.gt_ref("depth", "test")["path"]
        """
        arr = self.train if split == "train" else self.test
        return {"path": str(arr.path / f"{self.source(name)}.npy"), "layout": "label"}

    def pred_path(self, tag: str, edge_id: str, split: str) -> Path:
        """Where an edge's predictions on a split live.

        Args:
            tag: generation / control tag ("gen0", "self1", "ens2", ...).
            edge_id: the edge.
            split: "train" or "test".

        Returns:
            ``<work>/<tag>/pred/<slug>.<split>.npy``.

        Example:
            >>> # c.pred_path("gen0", "rgb>depth", "test").name == "rgb-to-depth.test.npy"
        """
        slug = edge_id.replace(">", "-to-").replace("+", "-and-")
        return self.work / tag / "pred" / f"{slug}.{split}.npy"

    def pseudo_path(self, tag: str, node: str, what: str) -> Path:
        """Where a consensus file lives.

        Args:
            tag: the generation whose paths were combined.
            node: output node.
            what: "train" (pseudo-labels), "mask" (agreement mask) or "test" (consensus prediction).

        Returns:
            ``<work>/<tag>/pseudo/<node>.<what>.npy``.

        Example:
            >>> # c.pseudo_path("gen0", "depth", "mask")
        """
        return self.work / tag / "pseudo" / f"{node}.{what}.npy"


def prepare(cfg: Config, cache_dir: Path, run_dir: Path, data_dir: Path | None = None) -> Ctx:
    """Render (or reuse) the scenes — or export an npz folder — and split the training scenes
    (groups) into labelled / unlabelled.

    Args:
        cfg: the NGC config.
        cache_dir: where rendered scenes and work files go.
        run_dir: the run (edge checkpoints; part of the work folder's key).
        data_dir: base of an npz source.

    Returns:
        The run's `Ctx`; ConfigError when the data lacks a node's array or classes.

    Example:
        >>> # c = prepare(cfg, ctx.cache_dir, ctx.run_dir, ctx.data_dir)
    """
    names = {n.source or k for k, n in cfg.nodes.items()}
    if cfg.npz is not None:
        train, test = npz_arrays(cfg, Path(data_dir or "."), cache_dir)
    else:
        train = render_scenes(cfg.data, cache_dir, "train")
        test = render_scenes(cfg.data, cache_dir, "test")
    missing = sorted(n for n in names if not (train.path / f"{n}.npy").exists())
    if missing:
        found = sorted(p.stem for p in train.path.glob("*.npy") if p.stem != "scene")
        raise ConfigError(f"nodes: data has no array {missing}; arrays found: {', '.join(found) or 'none'} — "
                          "rename the node or set its `source`")
    for k, n in cfg.nodes.items():
        if n.kind == "categorical" and train.classes and n.channels < len(train.classes):
            raise ConfigError(f"nodes.{k}.channels = {n.channels} but the data has {len(train.classes)} classes")
    scenes = np.unique(train.scene)
    rng = np.random.default_rng([cfg.seed, 7])
    n_lab = max(1, round(cfg.labelled_fraction * len(scenes)))
    lab_scenes = np.sort(rng.permutation(scenes)[:n_lab])
    is_lab = np.isin(np.asarray(train.scene), lab_scenes)
    key = hashlib.sha256(f"{run_dir.resolve()}|{config_hash(cfg)}".encode()).hexdigest()[:12]
    work = cache_dir / "ngc" / f"{cfg.name}-{key}"
    return Ctx(cfg, train, test, np.flatnonzero(is_lab), np.flatnonzero(~is_lab), build_edges(cfg), work,
               run_dir / "checkpoints" / "ngc")


def edge_seed(seed: int, tag: str, edge_id: str) -> int:
    """The seed of one edge job: a hash of (run seed, generation tag, edge id).

    Args:
        seed: the run's seed.
        tag: generation tag (controls reuse the generation's tag: same seeds, same budget).
        edge_id: the edge.

    Returns:
        A non-negative 31-bit int.

    Example:
        >>> edge_seed(0, "gen0", "rgb>depth") == edge_seed(0, "gen0", "rgb>depth")
        True
    """
    return zlib.crc32(f"{seed}|{tag}|{edge_id}".encode()) & 0x7FFFFFFF


def _spec(c: Ctx, tag: str, edge_id: str, inputs: list[dict[str, Any]], target: str,
          target_ref: dict[str, Any], unlabelled: bool, init: str | None, seed_tag: str | None = None) -> dict:
    slug = edge_id.replace(">", "-to-").replace("+", "-and-")
    return {
        "id": f"{tag}/{edge_id}",
        "inputs": inputs,
        "target": {"node": target, **target_ref},
        "nodes": {k: c.node(k) for k in c.cfg.nodes},
        "labelled": c.labelled.tolist(),
        "unlabelled": c.unlabelled.tolist() if unlabelled else [],
        "fit": c.cfg.edge.model_dump(),
        "seed": edge_seed(c.cfg.seed, seed_tag or tag, edge_id),
        "init": init,
        "ckpt": str(c.ckpts / tag / f"{slug}.pt"),
        "pred_train": str(c.pred_path(tag, edge_id, "train")),
        "pred_test": str(c.pred_path(tag, edge_id, "test")),
        "work": str(c.work),
    }


def _input_ref(c: Ctx, tag: str, node: str, mode: str, prev: str | None) -> dict[str, Any]:
    """Input `node` of an edge in generation `tag`: ground truth for the input node, otherwise
    the direct edge's prediction (this generation) or the previous generation's consensus."""
    if node == c.cfg.input_node:
        return {"node": node, "train": c.gt_ref(node, "train"), "test": c.gt_ref(node, "test")}
    if mode == "consensus" and prev is not None:
        return {"node": node,
                "train": {"path": str(c.pseudo_path(prev, node, "train")), "layout": "label"},
                "test": {"path": str(c.pseudo_path(prev, node, "test")), "layout": "label"}}
    did = direct_id(c.cfg, node)
    return {"node": node,
            "train": {"path": str(c.pred_path(tag, did, "train")), "layout": "pred"},
            "test": {"path": str(c.pred_path(tag, did, "test")), "layout": "pred"}}


def generation_jobs(c: Ctx, g: int) -> list[Job]:
    """Jobs of generation `g`: all edges; g = 0 on labelled frames only, g >= 1 on labelled ∪
    pseudo-labelled frames (pseudo-labels = consensus of generation g-1).

    Args:
        c: the run's context.
        g: the generation.

    Returns:
        Executor jobs running `edges.edge_job` (two-hop edges depend on the direct ones); generation
        g-1's consensus files are verified first and recomputed if missing or damaged
        (`ensure_generation`).

    Example:
        >>> # run(c, generation_jobs(c, 0))
    """
    tag, prev = f"gen{g}", (f"gen{g - 1}" if g else None)
    mode = c.cfg.graph.two_hop_input if g else "prediction"
    if g:
        ensure_generation(c, g - 1)
    jobs = []
    for e in c.edges:
        inputs = [_input_ref(c, tag, n, mode, prev) for n in e.inputs]
        deps = [f"{tag}/{direct_id(c.cfg, n)}" for n in e.inputs
                if n != c.cfg.input_node and not (mode == "consensus" and prev)]
        if g == 0:
            target = c.gt_ref(e.target, "train")
        else:
            target = {"path": str(c.pseudo_path(prev, e.target, "train")),
                      "mask": str(c.pseudo_path(prev, e.target, "mask"))}
        init = str(c.ckpts / prev / f"{e.slug}.pt") if (g and c.cfg.edge.fine_tune) else None
        spec = _spec(c, tag, e.id, inputs, e.target, target, unlabelled=g > 0, init=init)
        jobs.append(Job(spec["id"], edge_job, {"spec": spec}, deps=deps))
    return jobs


def consensus_files(c: Ctx, tag: str) -> list[Path]:
    """The consensus work files of `tag`: per output node its pseudo-labels, mask and test consensus.

    Args:
        c: the run's context.
        tag: the consensus tag.

    Returns:
        Their paths.

    Example:
        >>> # [p.name for p in consensus_files(c, "gen0")][:2] == ["depth.train.npy", "depth.mask.npy"]
    """
    return [c.pseudo_path(tag, n, what) for n in output_nodes(c.cfg) for what in ("train", "mask", "test")]


def ensure_generation(c: Ctx, g: int) -> bool:
    """Make generation `g`'s consensus files whole: verify each; if any is missing or damaged, run the
    generation's edge jobs again (finished edges with whole predictions are skipped, missing or damaged
    predictions are written again from the edge's checkpoint) and build its consensus again.

    Why: a resumed run skips finished stages, so the files they left in the cache directory must be
    checked, not trusted; consensus and predictions are deterministic, so the recomputed files equal
    the lost ones and the run ends with the results of an untouched run.

    Args:
        c: the run's context.
        g: the generation.

    Returns:
        True when something was recomputed.

    Example:
        >>> # ensure_generation(c, 0)   # before generation 1 trains on generation 0's pseudo-labels
    """
    tag = f"gen{g}"
    if all(verify_npy(p) for p in consensus_files(c, tag)):
        return False
    run(c, generation_jobs(c, g))
    build_pseudo(c, tag, sources_of(c, tag))
    return True


def ensure_predictions(c: Ctx, sources: Iterable[tuple[str, str]]) -> None:
    """Make the predictions of (tag, edge id) pairs whole before they are read: a missing or damaged
    prediction of generation g is recomputed by running that generation's edge jobs again.

    Args:
        c: the run's context.
        sources: (tag, edge id) pairs.

    Returns:
        None; DataError for a damaged prediction of a control (``self*``, ``ens*``) — those are
        written and read within one stage, so the damage happened while the run was going.

    Example:
        >>> # ensure_predictions(c, [("gen0", "rgb>depth")])
    """
    bad = sorted({t for t, e in sources
                  if not all(verify_npy(c.pred_path(t, e, split)) for split in ("train", "test"))})
    for tag in bad:
        if not (tag.startswith("gen") and tag[3:].isdigit()):
            raise DataError(f"predictions of {tag} in {c.work / tag} are missing or damaged (checksum) — they "
                            "changed while the run was going; resume the run to recompute them")
        run(c, generation_jobs(c, int(tag[3:])))


def run(c: Ctx, jobs: list[Job]) -> dict[str, Any]:
    """Run edge jobs through the engine's executor; raise on the first failure.

    Args:
        c: the run's context (its executor config).
        jobs: edge jobs.

    Returns:
        Job id -> the job's result (`edges.edge_job`'s dict).

    Example:
        >>> # info = run(c, generation_jobs(c, 0)); info["gen0/rgb>depth"]["final_loss"]
    """
    ex = c.cfg.executor
    workers = min(ex.workers, max(1, len(jobs)))
    results = run_jobs(jobs, backend=ex.backend, workers=workers, threads_per_worker=ex.threads_per_worker)
    return {r.id: r.unwrap() for r in results}


# ----------------------------------------------------------------------------- consensus


def _rows(path: str | Path, sel: slice | np.ndarray) -> np.ndarray:
    """Frames `sel` of a .npy, copied out through a memory map that is dropped again at once, so the
    file's pages never accumulate in this process's resident memory over a pass over all frames."""
    return np.array(np.load(path, mmap_mode="r")[sel])


def _frames(path: str | Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


class _NpyRows:
    """Rows of a frames-first .npy, each read through a short-lived memory map (`_rows`): the outputs
    of a `PrecomputedTeacher` whose file pages never pile up in this process's memory."""

    def __init__(self, path: Path) -> None:
        self.path, self.n = path, _frames(path)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            return _rows(self.path, slice(int(rows[0]), int(rows[0]) + len(rows)))  # a plain slice read
        return _rows(self.path, rows)


def path_teachers(paths: list[Path], names: list[str]) -> TeacherPool:
    """The paths into a node as engine teachers: one `PrecomputedTeacher` per path (its stored
    predictions, looked up by frame index), in a `TeacherPool` whose `predict` gives ``(B, K, C, H, W)``.

    Args:
        paths: each path's prediction file (``pred`` layout, frames first).
        names: the paths' names, e.g. ``gen0/rgb>normals>depth``.

    Returns:
        A `TeacherPool` (teacher k is path k); each teacher is fingerprinted by its file's path,
        size and modification time.

    Example:
        >>> # pool = path_teachers([c.pred_path("gen0", e.id, "test") for e in edges], [e.id for e in edges])
        >>> # x = pool.predict(np.arange(0, 64)).float()   # (64, K, C, H, W), ready for consensus ops
    """
    teachers = []
    for path, name in zip(paths, names):
        st = Path(path).stat()
        teachers.append(PrecomputedTeacher(name, _NpyRows(Path(path)), source=str(path),  # type: ignore[arg-type]
                                           fingerprint=f"{path}:{st.st_size}:{st.st_mtime_ns}"))
    return TeacherPool(teachers)


def consensus_chunk(c: Ctx, node: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paths' predictions (B, K, C, H, W) -> (label-layout consensus, keep mask (B, H, W), dispersion).

    The K paths into a node are its teachers, on axis 1, combined by the engine's consensus ops.
    Categorical: vote over probabilities (labels out). Continuous: median / mean / trimmed mean;
    normals renormalised. The mask keeps pixels whose path dispersion is low (a per-frame
    quantile or an absolute threshold; optionally per consensus class).

    Args:
        c: the run's context (consensus config, nodes).
        node: the output node.
        x: the paths' stored predictions, float, ``(B, K, C, H, W)``.

    Returns:
        ``(value, keep, dispersion)``: the consensus in label layout, the bool keep mask and the
        per-pixel dispersion ``(B, H, W)``.

    Example:
        >>> # value, keep, disp = consensus_chunk(c, "depth", torch.randn(2, 3, 1, 8, 8))
    """
    cc = c.cfg.consensus
    kind = c.cfg.nodes[node].kind
    if kind == "categorical":
        v = cons.vote(x / 255.0, method=cc.categorical)
        value = v.labels
        cls_map = v.labels
    else:
        kw = {"trim": cc.trim} if cc.method == "trimmed_mean" else {}
        value = cons.combine(x, cc.method, **kw)
        if c.cfg.nodes[node].loss == "cosine":
            value = torch.nn.functional.normalize(value, dim=1, eps=1e-6)
        cls_map = None
    xs = x / (255.0 if kind == "categorical" else c.cfg.nodes[node].scale)  # thresholds in net units
    disp = cons.dispersion(xs, "std")[0].mean(1)  # (B, H, W): one decision per pixel
    if not cc.mask:
        keep = torch.ones_like(disp, dtype=torch.bool)
    elif cc.mask_balanced and cls_map is not None and cc.mask_threshold is None:
        keep = torch.zeros_like(disp, dtype=torch.bool)
        for b in range(disp.shape[0]):
            for k in cls_map[b].unique():
                sel = cls_map[b] == k
                keep[b][sel] = disp[b][sel] <= torch.quantile(disp[b][sel], cc.mask_quantile)
    else:
        rule = {"threshold": cc.mask_threshold} if cc.mask_threshold is not None else {"quantile": cc.mask_quantile}
        keep = cons.agreement_mask(xs, reduce_dims=(1,), **rule)[0][:, 0]
    if kind != "categorical":
        value = value.permute(0, 2, 3, 1) if value.shape[1] > 1 else value[:, 0]
    return value, keep, disp


def _consensus_frames(c: Ctx, node: str, pool: TeacherPool, gt_path: str, lab_set: np.ndarray | None,
                      chunk: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """Consensus of the pool's paths `chunk` frames at a time (default CHUNK), as 1-tuples (value,); on
    training frames (`lab_set` given) ground truth replaces it on labelled frames and chunks are
    (value, keep mask)."""
    chunk = chunk or CHUNK
    n = len(pool[0].outputs)  # type: ignore[attr-defined]
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        v, keep, _ = consensus_chunk(c, node, pool.predict(np.arange(sl.start, sl.stop)).float())
        v, keep = v.numpy(), keep.numpy()
        if lab_set is None:
            yield (v,)
            continue
        lab = np.flatnonzero(lab_set[sl])
        if len(lab):
            v[lab] = _rows(gt_path, lab + s)
            keep[lab] = True
        yield v, keep


def build_pseudo(c: Ctx, tag: str, sources: dict[str, list[tuple[str, str]]],
                 chunk: int | None = None) -> dict[str, Any]:
    """Consensus at every output node over `sources[node]` ((tag, edge id) pairs of predictions):
    train frames -> pseudo-labels (ground truth kept on labelled frames) + keep mask; test frames
    -> the consensus prediction.

    Streamed: `chunk` frames (default CHUNK) of every path's predictions at a time, pseudo-labels and
    masks written as they come and the diagnostics accumulated chunk by chunk, so memory stays flat in
    the number of frames; the files do not depend on `chunk`.

    Args:
        c: the run's context.
        tag: the tag the consensus files are written under.
        sources: per output node, the (tag, edge id) of every path combined.
        chunk: frames per chunk.

    Returns:
        Per node: ``{"pseudo", "pseudo_kept", "coverage"}`` — pseudo-label error on the unlabelled
        frames against their held-back ground truth (all pixels / kept pixels), and mask coverage.

    Example:
        >>> # diag = build_pseudo(c, "gen0", sources_of(c, "gen0")); diag["depth"]["coverage"]
    """
    out: dict[str, Any] = {}
    ensure_predictions(c, [s for node in output_nodes(c.cfg) for s in sources[node]])
    lab_set = np.zeros(len(c.train), dtype=bool)
    lab_set[c.labelled] = True
    for node in output_nodes(c.cfg):
        kind = c.cfg.nodes[node].kind
        dtype = np.uint8 if kind == "categorical" else np.float32
        gt_path = c.gt_ref(node, "train")["path"]
        frame = np.load(gt_path, mmap_mode="r").shape[1:]
        for split in ("train", "test"):
            paths = [c.pred_path(t, e, split) for t, e in sources[node]]
            pool = path_teachers(paths, [f"{t}/{e}" for t, e in sources[node]])
            n = _frames(paths[0])
            values = _consensus_frames(c, node, pool, gt_path, lab_set if split == "train" else None, chunk)
            files = [(c.pseudo_path(tag, node, split), (n, *frame), dtype)]
            if split == "train":
                files.append((c.pseudo_path(tag, node, "mask"), (n, *frame[:2]), np.uint8))
            write_npys(files, values)
        pseudo, mask = c.pseudo_path(tag, node, "train"), c.pseudo_path(tag, node, "mask")
        unl = c.unlabelled
        err = node_metrics(c, node, pseudo, gt_path, layout="label", idx=unl, chunk=chunk)
        err_kept = node_metrics(c, node, pseudo, gt_path, layout="label", mask=mask, idx=unl, chunk=chunk)
        step = chunk or CHUNK
        kept = sum(int(np.count_nonzero(_rows(mask, unl[s:s + step]))) for s in range(0, len(unl), step))
        size = len(unl) * int(np.prod(frame[:2]))
        out[node] = {"pseudo": err, "pseudo_kept": err_kept, "coverage": kept / size if size else float("nan")}
    return out


# ----------------------------------------------------------------------------- evaluation


def _as_pred_tensor(a: np.ndarray, kind: str, layout: str) -> torch.Tensor:
    t = torch.from_numpy(np.array(a))
    if layout == "pred":
        return t.float().argmax(1) if kind == "categorical" else t.float()
    if kind == "categorical":
        return t.long()
    t = t.float()
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]


Frames = np.ndarray | str | Path  # an array (maybe memory-mapped) or a .npy path


def _read(a: Frames, sel: slice | np.ndarray) -> np.ndarray:
    return _rows(a, sel) if isinstance(a, (str, Path)) else np.asarray(a[sel])


def node_metric(c: Ctx, node: str) -> dense.DenseMetric | None:
    """The dense-metric accumulator that evaluates `node` (None for nodes without a metric).

    Depth: `DepthMetrics` (ground truth > 1 mm); height above the floor: `DepthMetrics` with
    `min_depth=-1` (heights can be 0); normals: `NormalMetrics`; semantic: `SemanticMetrics`.

    Args:
        c: the run's context.
        node: an output node.

    Returns:
        A fresh accumulator, or None.

    Example:
        >>> # m = node_metric(c, "depth"); m.update(p[:, 0], g[:, 0], mask); m.compute()["abs_rel"]
    """
    nc = c.cfg.nodes[node]
    if nc.metric == "depth":
        return dense.DepthMetrics(min_depth=1e-3)
    if nc.metric == "height":
        return dense.DepthMetrics(min_depth=-1.0)
    if nc.metric == "normals":
        return dense.NormalMetrics()
    if nc.metric == "semantic":
        return dense.SemanticMetrics(nc.channels, ignore_index=IGNORE)
    return None


#: The metrics reported per node metric (keys of the accumulators' `compute()`).
REPORTED = {"depth": ("abs_rel", "rmse"), "height": ("rmse", "mae"), "normals": ("mean_deg",),
            "semantic": ("miou", "pixel_acc")}


def node_metrics(c: Ctx, node: str, pred: Frames, gt: Frames, layout: str = "pred",
                 mask: Frames | None = None, idx: np.ndarray | None = None,
                 chunk: int | None = None) -> dict[str, float]:
    """The node's metrics: depth abs-rel + RMSE, normals mean angle, semantic mIoU + pixel accuracy,
    height RMSE + MAE (metres above the floor), over frames `idx` of `pred` / `gt` / `mask`.

    Streamed: `chunk` frames at a time are fed to the node's `metrics.dense` accumulator
    (`node_metric`), paths read through short-lived memory maps, so memory stays flat in the number
    of frames; the values equal the whole-array metrics up to summation order (semantic ones exactly).

    Args:
        c: the run's context.
        node: an output node.
        pred: predictions (an array or a .npy path) in `layout`.
        gt: ground truth in label layout.
        layout: "pred" (edge outputs) or "label" (consensus / pseudo-labels).
        mask: optional keep mask ``(N, H, W)``.
        idx: frames to evaluate (all when None).
        chunk: frames per chunk (default CHUNK).

    Returns:
        The `REPORTED` metrics of the node ({} for nodes without a metric).

    Example:
        >>> # node_metrics(c, "depth", c.pred_path("gen0", "rgb>depth", "test"), c.gt_ref("depth", "test")["path"])
    """
    nc = c.cfg.nodes[node]
    metric = node_metric(c, node)
    if metric is None:
        return {}
    chunk = chunk or CHUNK
    n = len(idx) if idx is not None else (_frames(pred) if isinstance(pred, (str, Path)) else len(pred))
    for s in range(0, n, chunk):
        sel = idx[s:s + chunk] if idx is not None else slice(s, min(s + chunk, n))
        p = _as_pred_tensor(_read(pred, sel), nc.kind, layout)
        g = _as_pred_tensor(_read(gt, sel), nc.kind, "label")
        m = None if mask is None else torch.from_numpy(_read(mask, sel)).bool()
        if nc.metric in ("depth", "height"):  # (B, 1, H, W) -> (B, H, W), as the mask
            p, g = p[:, 0], g[:, 0]
        metric.update(p, g, m)
    values = metric.compute()
    return {k: values[k] for k in REPORTED[nc.metric]}


#: Per node metric: the headline metric and whether lower ("min") or higher ("max") is better.
PRIMARY = {"depth": ("abs_rel", "min"), "normals": ("mean_deg", "min"), "semantic": ("miou", "max"),
           "height": ("rmse", "min")}


def evaluate_edges(c: Ctx, tag: str, edge_ids: Iterable[str], node: str) -> dict[str, dict[str, float]]:
    """Test metrics of single edges' predictions at `node`.

    Args:
        c: the run's context.
        tag: generation / control tag.
        edge_ids: edges into `node`.
        node: the output node.

    Returns:
        Edge id -> the node's metrics.

    Example:
        >>> # evaluate_edges(c, "gen0", ["rgb>depth"], "depth")["rgb>depth"]["abs_rel"]
    """
    gt = c.gt_ref(node, "test")["path"]
    return {e: node_metrics(c, node, c.pred_path(tag, e, "test"), gt) for e in edge_ids}


def evaluate_consensus(c: Ctx, tag: str, node: str) -> dict[str, float]:
    """Test metrics of the consensus at `node` (written by `build_pseudo` under `tag`).

    Args:
        c: the run's context.
        tag: the consensus tag.
        node: the output node.

    Returns:
        The node's metrics.

    Example:
        >>> # evaluate_consensus(c, "gen0", "depth")["rmse"]
    """
    return node_metrics(c, node, c.pseudo_path(tag, node, "test"), c.gt_ref(node, "test")["path"], layout="label")


def sources_of(c: Ctx, tag: str) -> dict[str, list[tuple[str, str]]]:
    """Every path into every output node, as (tag, edge id): each node's teachers.

    Args:
        c: the run's context.
        tag: the generation whose edges' predictions are the paths.

    Returns:
        Node -> [(tag, edge id), ...], the direct edge first.

    Example:
        >>> # sources_of(c, "gen0")["depth"][0] == ("gen0", "rgb>depth")
    """
    return {n: [(tag, e.id) for e in paths_to(c.edges, n)] for n in output_nodes(c.cfg)}


def direct_jobs(c: Ctx, tag: str, pseudo_tag: str | None, seed_tag: str | None = None) -> list[Job]:
    """Direct edges only (controls): on ground truth (`pseudo_tag` None) or on the pseudo-labels
    of `pseudo_tag` (self-training).

    Args:
        c: the run's context.
        tag: tag of the jobs' outputs.
        pseudo_tag: consensus tag whose pseudo-labels they train on (None: ground truth only).
        seed_tag: tag the seeds are derived from (default `tag`).

    Returns:
        Executor jobs running `edges.edge_job`.

    Example:
        >>> # run(c, direct_jobs(c, "self1", pseudo_tag="self0", seed_tag="gen1"))
    """
    jobs = []
    for node in output_nodes(c.cfg):
        eid = direct_id(c.cfg, node)
        inputs = [_input_ref(c, tag, c.cfg.input_node, "prediction", None)]
        if pseudo_tag is None:
            target = c.gt_ref(node, "train")
        else:
            target = {"path": str(c.pseudo_path(pseudo_tag, node, "train")),
                      "mask": str(c.pseudo_path(pseudo_tag, node, "mask"))}
        spec = _spec(c, tag, eid, inputs, node, target, unlabelled=pseudo_tag is not None, init=None,
                     seed_tag=seed_tag)
        jobs.append(Job(spec["id"], edge_job, {"spec": spec}))
    return jobs
