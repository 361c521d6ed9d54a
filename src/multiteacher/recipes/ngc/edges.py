"""One edge: the executor job. Files in, files out — never pickled models.

A job gets a JSON-able spec: where its input arrays and target array live, which frames are
labelled / pseudo-labelled, the budget (`EdgeFitConfig`) and a seed. It trains a small U-Net with
the engine's fit loop (`multiteacher.engine.loop.fit` with a `LocalContext`, so it runs inside a
worker process with pinned threads): batches draw a fixed labelled share with replacement
(`MixtureBatchSampler`, seeded by the job's seed). Then it writes its predictions for every
training and test frame (float16 for continuous nodes, probabilities x 255 as uint8 for categorical
nodes) and finally its checkpoint — all atomically. A job whose checkpoint and predictions exist is
skipped, so a killed generation resumes edge by edge; within an edge, the fit's resume point
(``<ckpt>.fit/last.pt``, every ``edge.ckpt_every`` steps: weights, optimiser, schedule, sampler
position and RNG states) lets a killed job continue mid-edge and end with the same weights, bit for
bit on CPU. Kill points: ``fit/step`` (each step), ``fit/checkpoint_write``, ``fit/done``,
``ngc/edge_trained`` (after the fit, before predictions).

Array layouts: ``label`` arrays are frames-first and channels-last, as the data gives them
(``(N, H, W)`` or ``(N, H, W, C)``; categorical as class indices, 255 = ignore; continuous NaN =
ignore); ``pred`` arrays are edge outputs ``(N, C, H, W)`` in physical units.
"""

from __future__ import annotations

import contextlib
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
from multiteacher.io import atomic_open, atomic_torch_save
from multiteacher.killpoints import killpoint
from multiteacher.models.unet import UNet
from multiteacher.recipes.ngc.config import EdgeFitConfig

IGNORE = 255

__all__ = ["IGNORE", "EdgeFrames", "done", "edge_job", "encode", "load", "loss_fn", "target_and_valid",
           "to_physical", "write_npy", "write_npys"]


def write_npys(targets: Sequence[tuple[str | os.PathLike[str], tuple[int, ...], Any]],
               chunks: Iterable[Sequence[np.ndarray]]) -> None:
    """Write several .npy files at once from chunks of frames, streamed and atomically.

    No whole array ever sits in memory. Each file is atomic; they are renamed into place in the
    order given, and none is when a chunk is missing or an error occurs.

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
    with contextlib.ExitStack() as stack:  # entered in reverse: exits (renames) in the order given
        files = [stack.enter_context(atomic_open(path, "wb")) for path, _, _ in reversed(targets)][::-1]
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
    """Whether the edge job of `spec` has finished (checkpoint and both predictions exist).

    Args:
        spec: the job's spec.

    Returns:
        True when all three files exist.

    Example:
        >>> done({"ckpt": "/nonexistent", "pred_train": "/x", "pred_test": "/y"})
        False
    """
    return all(Path(spec[k]).exists() for k in ("ckpt", "pred_train", "pred_test"))


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
    t0 = time.perf_counter()
    cfg = EdgeFitConfig(**spec["fit"])
    nodes, tgt_node = spec["nodes"], spec["nodes"][spec["target"]["node"]]
    ckpt = Path(spec["ckpt"])
    fit_dir = Path(f"{ckpt}.fit")
    ctx = LocalContext(seed=int(spec["seed"]), run_dir=ckpt.parent, device=cfg.device)
    torch.manual_seed(ctx.seed)
    in_ch = sum(nodes[i["node"]]["channels"] for i in spec["inputs"])
    model = UNet(in_ch, tgt_node["channels"], width=cfg.width, depth=cfg.depth)
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
