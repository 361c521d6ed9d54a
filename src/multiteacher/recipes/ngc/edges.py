"""One edge: the executor job. Files in, files out — never pickled models.

A job gets a JSON-able spec: where its input arrays and target array live, which frames are
labelled / pseudo-labelled, the budget (`EdgeFitConfig`) and a seed. It trains a small U-Net with
the engine's fit loop (`multiteacher.engine.loop.fit` with a `LocalContext`, so it runs inside a
worker process with pinned threads): batches draw a fixed labelled share with replacement
(`MixtureBatchSampler`, seeded by the job's seed). Then it writes its predictions for every
training and test frame (float16 for continuous nodes, probabilities x 255 as uint8 for categorical
nodes) and finally its checkpoint — all atomically. Every work file (predictions here, pseudo-labels
and masks in `pipeline`) gets a checksum sidecar ``<file>.json`` (SHA-256 hashed while writing, size,
shape, dtype; written after the file), and is verified before use (`verify_npy`). A job whose
checkpoint exists and whose predictions verify is skipped, so a killed generation resumes edge by
edge; predictions that are missing or damaged are written again from the checkpoint. Within an
edge, the fit's resume point (``<ckpt>.fit/last.pt``, every ``edge.ckpt_every`` steps: weights,
optimiser, schedule, sampler position and RNG states) lets a killed job continue mid-edge and end
with the same weights, bit for bit on CPU. Kill points: ``fit/step`` (each step),
``fit/checkpoint_write``, ``fit/done``, ``ngc/edge_trained`` (after the fit, before predictions).

Array layouts: ``label`` arrays are frames-first and channels-last, as the data gives them
(``(N, H, W)`` or ``(N, H, W, C)``; categorical as class indices, 255 = ignore; continuous NaN =
ignore); ``pred`` arrays are edge outputs ``(N, C, H, W)`` in physical units.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from multiteacher.engine.context import LocalContext
from multiteacher.engine.loop import FitState, fit
from multiteacher.engine.sampling import MixtureBatchSampler
from multiteacher.errors import DataError
from multiteacher.io import atomic_open, atomic_torch_save, atomic_write_json, sha256_file
from multiteacher.killpoints import killpoint
from multiteacher.models.unet import UNet
from multiteacher.recipes.ngc.config import EdgeFitConfig

IGNORE = 255

__all__ = ["IGNORE", "EdgeFrames", "done", "edge_job", "encode", "load", "loss_fn", "sidecar", "target_and_valid",
           "to_physical", "verify_npy", "write_npy", "write_npys"]

# (path, inode, size, mtime_ns) of work files whose checksum this process has verified
_verified: set[tuple[str, int, int, int]] = set()


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The checksum sidecar of a work file: ``<file>.json`` next to it.

    Args:
        path: the work file.

    Returns:
        The sidecar's path.

    Example:
        >>> sidecar("gen0/pseudo/depth.train.npy").name
        'depth.train.npy.json'
    """
    p = Path(path)
    return p.with_name(p.name + ".json")


def verify_npy(path: str | os.PathLike[str]) -> bool:
    """Whether a work file is whole: its sidecar exists and its size and SHA-256 match.

    Why: predictions, pseudo-labels and masks live in the cache directory, where anything may
    overwrite or delete them between sessions; a resumed run must never train on a damaged file.
    One full read per file and process (memoised by path, inode, size and mtime; files modified in
    the last 2 s are read again, their mtime could repeat); hashing runs at about 1 GB/s here.

    Args:
        path: the .npy work file.

    Returns:
        True when the file matches its sidecar; False when either is missing or they disagree.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
        >>> write_npy(p, (2,), np.uint8, [np.array([1, 2])]); verify_npy(p)
        True
    """
    p = Path(path)
    try:
        info = json.loads(sidecar(p).read_text())
        st = p.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or st.st_size != info.get("bytes"):
        return False
    stamp = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if stamp in _verified:
        return True
    if sha256_file(p) != info.get("sha256"):
        return False
    if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
        _verified.add(stamp)
    return True


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, f: Any) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: Any) -> int:
        self.h.update(b)
        self.n += len(memoryview(b).cast("B"))
        return self.f.write(b)


def write_npys(targets: Sequence[tuple[str | os.PathLike[str], tuple[int, ...], Any]],
               chunks: Iterable[Sequence[np.ndarray]]) -> None:
    """Write several .npy files at once from chunks of frames, streamed and atomically.

    No whole array ever sits in memory. Each file is atomic; they are renamed into place in the
    order given, and none is when a chunk is missing or an error occurs. Each file's SHA-256 is
    computed while it is written; once all files are in place, each gets its checksum sidecar
    (`sidecar`: bytes, SHA-256, shape, dtype), written atomically after the file — a file without
    a valid sidecar is never trusted (`verify_npy`).

    Args:
        targets: ``(path, shape, dtype)`` per file; ``shape[0]`` is the number of frames.
        chunks: per chunk, one array of frames per file (the same number of frames in each).

    Returns:
        None.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_npys([(d / "a.npy", (2, 1), np.float32)], [(np.zeros((1, 1)),), (np.ones((1, 1)),)])
        >>> np.load(d / "a.npy").ravel().tolist()
        [0.0, 1.0]
    """
    dtypes = [np.dtype(d) for _, _, d in targets]
    written = 0
    for path, _, _ in targets:  # the old sidecar goes first: the new file is unverified until its own lands
        sidecar(path).unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:  # entered in reverse: exits (renames) in the order given
        files = [_HashingWriter(stack.enter_context(atomic_open(path, "wb"))) for path, _, _ in reversed(targets)][::-1]
        for f, (_, shape, _), dtype in zip(files, targets, dtypes):
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
        for group in chunks:
            if len(group) != len(targets):
                raise ValueError(f"write_npys: a chunk has {len(group)} arrays for {len(targets)} files")
            n = {int(c.shape[0]) for c in group}
            if len(n) != 1:
                raise ValueError(f"write_npys: arrays of one chunk differ in frames {sorted(n)}")
            for f, c, dtype in zip(files, group, dtypes):
                f.write(np.ascontiguousarray(c, dtype=dtype).tobytes())
            written += n.pop()
        for path, shape, _ in targets:  # inside the atomic block: a short file is never renamed into place
            if written != shape[0]:
                raise RuntimeError(f"write_npy {path}: got {written} frames, expected {shape[0]}")
    for f, (path, shape, _), dtype in zip(files, targets, dtypes):
        atomic_write_json(sidecar(path), {"file": Path(path).name, "bytes": f.n, "sha256": f.h.hexdigest(),
                                          "shape": list(shape), "dtype": dtype.str})


def write_npy(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any, chunks: Iterable[np.ndarray]) -> None:
    """Atomically write one .npy from frame chunks (streamed: the whole array never sits in memory).

    Args:
        path: destination.
        shape: the whole array's shape (frames first).
        dtype: stored dtype.
        chunks: arrays of consecutive frames.

    Returns:
        None.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "b.npy"
        >>> write_npy(p, (3,), np.uint8, [np.array([1, 2]), np.array([3])]); np.load(p).tolist()
        [1, 2, 3]
    """
    write_npys([(path, shape, dtype)], ((c,) for c in chunks))


def load(ref: dict[str, Any]) -> np.ndarray:
    """Open an array reference ``{"path", "layout"}`` memory-mapped.

    Args:
        ref: a dict with the ``path`` of a .npy.

    Returns:
        The read-only memory-mapped array.

    Example:
        >>> # x = load({"path": "rgb.npy", "layout": "label"})
    """
    return np.load(ref["path"], mmap_mode="r")


def encode(a: np.ndarray, node: dict[str, Any], layout: str) -> torch.Tensor:
    """Net input for a batch of one node: ``(B, C, H, W)`` float32.

    Images in [0, 1]; continuous values divided by the node's scale; categorical as one-hot
    (labels; ignored pixels all zero) or probabilities (predictions).

    Args:
        a: frames of the node, in ``label`` or ``pred`` layout.
        node: the node's config (`NodeConfig.model_dump()`).
        layout: "label" (frames-first, channels-last data) or "pred" (edge outputs).

    Returns:
        A float32 tensor ``(B, C, H, W)``.

    Example:
        >>> node = {"kind": "continuous", "channels": 1, "scale": 2.0}
        >>> encode(np.full((1, 2, 2), 4.0, np.float32), node, "label").shape
        torch.Size([1, 1, 2, 2])
    """
    kind, ch = node["kind"], node["channels"]
    if layout == "pred":
        t = torch.from_numpy(np.array(a)).float()
        if kind == "categorical":
            return t / 255.0
        return t / node["scale"]
    t = torch.from_numpy(np.array(a))
    if kind == "input":
        t = t.float()
        t = t / 255.0 if a.dtype == np.uint8 else t
        return t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
    if kind == "categorical":
        lab = t.long()
        return F.one_hot(lab.clamp(0, ch - 1), ch).permute(0, 3, 1, 2).float() * (lab != IGNORE)[:, None]
    t = torch.nan_to_num(t.float()) / node["scale"]
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]


def target_and_valid(a: np.ndarray, node: dict[str, Any], mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training target in net units, and a ``(B, H, W)`` validity mask.

    Args:
        a: target frames in label layout.
        node: the target node's config.
        mask: optional ``(B, H, W)`` keep mask (pseudo-labels' agreement mask).

    Returns:
        ``(target, valid)``: class indices ``(B, H, W)`` or values ``(B, C, H, W)``, and a bool mask.

    Example:
        >>> node = {"kind": "categorical", "channels": 3}
        >>> y, v = target_and_valid(np.array([[[0, 255]]], np.uint8), node, None); v.tolist()
        [[[True, False]]]
    """
    t = torch.from_numpy(np.array(a))
    if node["kind"] == "categorical":
        lab = t.long()
        valid = lab != IGNORE
    else:
        t = t.float()
        t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
        valid = torch.isfinite(t).all(1)
        lab = torch.nan_to_num(t) / node["scale"]
    if mask is not None:
        valid &= torch.from_numpy(np.array(mask)).bool()
    return lab, valid


def loss_fn(out: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, node: dict[str, Any]) -> torch.Tensor:
    """Masked per-pixel loss of the node (`ce`, `cosine`, `l1` or `l2`), the mean over valid pixels.

    Args:
        out: net output ``(B, C, H, W)``.
        y: target from `target_and_valid`.
        valid: ``(B, H, W)`` bool mask.
        node: the target node's config (its ``loss``).

    Returns:
        A scalar tensor.

    Example:
        >>> out, y = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
        >>> float(loss_fn(out, y, torch.tensor([[[True, False]]]), {"loss": "l1"}))
        1.0
    """
    v = valid.float()
    denom = v.sum().clamp(min=1.0)
    kind = node["loss"]
    if kind == "ce":
        ce = F.cross_entropy(out, y.clamp(0, out.shape[1] - 1), reduction="none")
        return (ce * v).sum() / denom
    if kind == "cosine":
        cos = F.cosine_similarity(out, y, dim=1, eps=1e-6)
        return ((1 - cos) * v).sum() / denom
    err = (out - y).abs() if kind == "l1" else (out - y) ** 2
    return (err.mean(1) * v).sum() / denom


def to_physical(out: torch.Tensor, node: dict[str, Any]) -> np.ndarray:
    """Edge output -> stored prediction (float16 physical units, or uint8 probabilities x 255).

    Args:
        out: net output ``(B, C, H, W)`` on the CPU.
        node: the target node's config.

    Returns:
        A NumPy array ``(B, C, H, W)``.

    Example:
        >>> to_physical(torch.ones(1, 1, 1, 1), {"kind": "continuous", "loss": "l1", "scale": 4.0}).item()
        4.0
    """
    if node["kind"] == "categorical":
        return (out.softmax(1) * 255).round().to(torch.uint8).numpy()
    if node["loss"] == "cosine":
        out = F.normalize(out, dim=1, eps=1e-6)
        return out.to(torch.float16).numpy()
    return (out * node["scale"]).to(torch.float16).numpy()


def _batch(arrays: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(idx)  # sorted reads from memmaps, then back to the sampled order
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return [np.asarray(a[idx[order]])[inv] for a in arrays]


def done(spec: dict[str, Any]) -> bool:
    """Whether the edge job of `spec` has finished: its checkpoint exists and both predictions verify.

    Args:
        spec: the job's spec.

    Returns:
        True when the checkpoint exists and both prediction files match their sidecars (`verify_npy`).

    Example:
        >>> done({"ckpt": "/nonexistent", "pred_train": "/x", "pred_test": "/y"})
        False
    """
    return Path(spec["ckpt"]).exists() and all(verify_npy(spec[k]) for k in ("pred_train", "pred_test"))


def work_inputs(spec: dict[str, Any]) -> list[str]:
    """The work files (other edges' predictions, pseudo-labels, masks) an edge job reads.

    Ground truth (the data's own arrays) is not a work file; a work file lies under ``spec["work"]``.

    Args:
        spec: the job's spec.

    Returns:
        Their paths.

    Example:
        >>> work_inputs({"work": "/w", "inputs": [], "target": {"path": "/w/gen0/pseudo/d.train.npy"}})
        ['/w/gen0/pseudo/d.train.npy']
    """
    work = spec.get("work")
    if not work:
        return []
    refs = [i[s]["path"] for i in spec["inputs"] for s in ("train", "test")] + [spec["target"]["path"]]
    refs += [spec["target"]["mask"]] if spec["target"].get("mask") else []
    return [p for p in refs if Path(p).is_relative_to(work)]


def _check_inputs(spec: dict[str, Any]) -> None:
    """DataError naming the first work file the job reads that is missing or fails its checksum."""
    for p in work_inputs(spec):
        if not verify_npy(p):
            raise DataError(f"edge {spec['id']}: input {p} is missing or damaged (checksum) — it changed while the "
                            "run was going; resume the run to recompute it")


class EdgeFrames(Dataset):
    """The training frames of one edge as a fit-loop dataset: memory-mapped inputs, target and mask.

    `__getitems__` reads a whole batch of frame indices at once (sorted reads from the memory
    maps), and `collate` turns it into ``(x, target, valid)`` net tensors.

    Args:
        spec: the edge job's spec (inputs, target, nodes).

    Example:
        >>> # ds = EdgeFrames(spec); x, y, valid = ds.collate(ds.__getitems__([0, 3, 3]))
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.inputs, self.nodes = spec["inputs"], spec["nodes"]
        self.target = self.nodes[spec["target"]["node"]]
        mask = spec["target"].get("mask")
        self.has_mask = bool(mask)
        self.arrays = [load(i["train"]) for i in self.inputs] + [load(spec["target"])]
        if mask:
            self.arrays.append(np.load(mask, mmap_mode="r"))

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitems__(self, idx: list[int]) -> list[np.ndarray]:
        return _batch(self.arrays, np.asarray(idx, dtype=np.int64))

    def __getitem__(self, i: int) -> list[np.ndarray]:
        return self.__getitems__([i])

    def collate(self, got: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Arrays of one batch -> ``(x, target, valid)`` net tensors.

        Args:
            got: the arrays `__getitems__` returned.

        Returns:
            The net input ``(B, C_in, H, W)``, the target and the validity mask.

        Example:
            >>> # x, y, valid = ds.collate(ds.__getitems__([0, 1]))
        """
        n_in = len(self.inputs)
        x = torch.cat([encode(a, self.nodes[i["node"]], i["train"]["layout"]) for a, i in zip(got, self.inputs)], 1)
        y, valid = target_and_valid(got[n_in], self.target, got[-1] if self.has_mask else None)
        return x, y, valid


def _predict(model: torch.nn.Module, spec: dict[str, Any], device: torch.device, predict_batch: int) -> None:
    """Write the edge's predictions on every training and test frame (streamed, atomic)."""
    inputs, nodes = spec["inputs"], spec["nodes"]
    tgt_node = nodes[spec["target"]["node"]]
    model.to(device).eval()
    for split in ("train", "test"):
        xs = [load(i[split]) for i in inputs]
        n = xs[0].shape[0]
        h, w = xs[0].shape[-2:] if inputs[0][split]["layout"] == "pred" else xs[0].shape[1:3]
        dtype = np.uint8 if tgt_node["kind"] == "categorical" else np.float16

        def chunks(xs: list[np.ndarray] = xs, n: int = n, split: str = split) -> Iterable[np.ndarray]:
            with torch.no_grad():
                for s in range(0, n, predict_batch):
                    sl = slice(s, min(s + predict_batch, n))
                    x = torch.cat([encode(a[sl], nodes[i["node"]], i[split]["layout"]) for a, i in zip(xs, inputs)], 1)
                    yield to_physical(model(x.to(device)).cpu(), tgt_node)

        write_npy(spec[f"pred_{split}"], (n, tgt_node["channels"], h, w), dtype, chunks())


def edge_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Executor job: train one edge with the engine's fit loop, write its predictions and checkpoint.

    Args:
        spec: JSON-able job spec (see the module doc and `pipeline._spec`); ``spec["fit"]`` is an
            `EdgeFitConfig` dump.

    Returns:
        ``{"id", "skipped"}``, plus ``"seconds"`` and ``"final_loss"`` (mean training loss of the
        last tenth of the steps) when it trained.

    Example:
        >>> # run_jobs([Job(spec["id"], edge_job, {"spec": spec})], backend="process", workers=2)
    """
    if done(spec):
        return {"id": spec["id"], "skipped": True}
    _check_inputs(spec)
    t0 = time.perf_counter()
    cfg = EdgeFitConfig(**spec["fit"])
    nodes, tgt_node = spec["nodes"], spec["nodes"][spec["target"]["node"]]
    ckpt = Path(spec["ckpt"])
    fit_dir = Path(f"{ckpt}.fit")
    ctx = LocalContext(seed=int(spec["seed"]), run_dir=ckpt.parent, device=cfg.device)
    torch.manual_seed(ctx.seed)
    in_ch = sum(nodes[i["node"]]["channels"] for i in spec["inputs"])
    model = UNet(in_ch, tgt_node["channels"], width=cfg.width, depth=cfg.depth)
    if ckpt.exists():  # trained, but a prediction file is missing or damaged: write them again from the weights
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
        _predict(model, spec, ctx.fabric.device, cfg.predict_batch)
        return {"id": spec["id"], "skipped": True, "repredicted": True}
    if spec.get("init"):
        model.load_state_dict(torch.load(spec["init"], map_location="cpu", weights_only=True)["model"])
    frames = EdgeFrames(spec)
    lab = spec["labelled"]
    unl = spec.get("unlabelled") or []
    bsz = cfg.batch_size
    # gen 0 / no pseudo-labels: whole batches of labelled frames; else the configured share
    n_lab = bsz if len(unl) == 0 else (round(cfg.labelled_share * bsz) if len(lab) else 0)
    sampler = MixtureBatchSampler([lab, unl], [n_lab, bsz - n_lab], cfg.max_steps, ctx.seed)

    def step(net: torch.nn.Module, batch: tuple[torch.Tensor, ...], state: FitState) -> torch.Tensor:
        x, y, valid = batch
        loss = loss_fn(net(x), y, valid, tgt_node)
        state.extra.setdefault("losses", []).append(loss.item())
        return loss

    res = fit(ctx, spec["id"], model, frames, step, cfg.fit_config(), collate_fn=frames.collate,
              ckpt_dir=fit_dir, sampler=sampler)
    killpoint("ngc/edge_trained")
    _predict(model, spec, ctx.fabric.device, cfg.predict_batch)
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(ckpt, {"model": weights, "id": spec["id"], "in_ch": in_ch,
                             "out_ch": tgt_node["channels"], "fit": spec["fit"]})
    shutil.rmtree(fit_dir, ignore_errors=True)  # its best.pt duplicates the checkpoint
    losses = res.extra.get("losses", [])
    tail = losses[-max(1, cfg.max_steps // 10):]
    return {"id": spec["id"], "skipped": False, "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(tail))}
