"""Training one edge: the executor job. Files in, files out — never pickled models.

A job gets a JSON-able spec: where its input arrays and target array live, which frames are
labelled / pseudo-labelled, the budget and a seed. It trains a small U-Net with a plain, seeded
PyTorch loop (it runs inside a worker process with pinned threads), then writes its predictions for
every training and test frame (float16 for continuous nodes, probabilities x 255 as uint8 for
categorical nodes) and finally its checkpoint — all atomically. A job whose checkpoint and
predictions exist is skipped, so a killed generation resumes edge by edge; within an edge, a
``<ckpt>.partial`` written every ``fit.checkpoint_every`` steps (weights, optimiser, schedule and
both RNG states) lets a killed job continue mid-edge and end with the same weights, bit for bit on CPU.

Array layouts: ``label`` arrays are frames-first and channels-last, as the data gives them
(``(N, H, W)`` or ``(N, H, W, C)``; categorical as class indices, 255 = ignore; continuous NaN =
ignore); ``pred`` arrays are edge outputs ``(N, C, H, W)`` in physical units.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from multiteacher.io import atomic_open, atomic_torch_save
from multiteacher.killpoints import killpoint
from multiteacher.models.unet import UNet

IGNORE = 255


def write_npys(targets: Sequence[tuple[str | os.PathLike[str], tuple[int, ...], Any]],
               chunks: Iterable[Sequence[np.ndarray]]) -> None:
    """Write several .npy files ``(path, shape, dtype)`` at once from chunks of frames (one array per
    file in each chunk), streamed: no whole array ever sits in memory. Each file is atomic; they are
    renamed into place in the order given, and none is when a chunk is missing or an error occurs."""
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
    """Atomically write a .npy from frame chunks (streamed: the whole array never sits in memory)."""
    write_npys([(path, shape, dtype)], ((c,) for c in chunks))


def load(ref: dict[str, Any]) -> np.ndarray:
    """Open an array reference ``{"path", "layout"}`` memory-mapped."""
    return np.load(ref["path"], mmap_mode="r")


def encode(a: np.ndarray, node: dict[str, Any], layout: str) -> torch.Tensor:
    """Net input for a batch of one node: ``(B, C, H, W)`` float32 (images in [0,1], continuous
    values / scale, categorical as one-hot (labels) or probabilities (predictions))."""
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
    """Training target in net units, and a (B, H, W) validity mask."""
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
    """Masked per-pixel loss (mean over valid pixels)."""
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
    """Edge output -> stored prediction (float16 physical units, or uint8 probabilities)."""
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
    return all(Path(spec[k]).exists() for k in ("ckpt", "pred_train", "pred_test"))


def train_edge(spec: dict[str, Any]) -> dict[str, Any]:
    """Executor job: train one edge and write its predictions and checkpoint (see module doc)."""
    if done(spec):
        return {"id": spec["id"], "skipped": True}
    t0 = time.perf_counter()
    fit, nodes = spec["fit"], spec["nodes"]
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = spec["inputs"]
    x_train = [load(i["train"]) for i in inputs]
    tgt_node = nodes[spec["target"]["node"]]
    y_train = load(spec["target"])
    m_train = np.load(spec["target"]["mask"], mmap_mode="r") if spec["target"].get("mask") else None
    in_ch = sum(nodes[i["node"]]["channels"] for i in inputs)
    want = fit.get("device", "cpu")
    dev = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    model = UNet(in_ch, tgt_node["channels"], width=fit["width"], depth=fit["depth"])
    if spec.get("init"):
        model.load_state_dict(torch.load(spec["init"], map_location="cpu", weights_only=True)["model"])
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=fit["lr"], weight_decay=fit["weight_decay"])
    steps, bsz = int(fit["steps"]), int(fit["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * s / steps))))
    lab = np.asarray(spec["labelled"], dtype=np.int64)
    unl = np.asarray(spec.get("unlabelled") or [], dtype=np.int64)
    # gen 0 / no pseudo-labels: whole batches of labelled frames; else the configured share
    n_lab = bsz if len(unl) == 0 else (round(fit["labelled_share"] * bsz) if len(lab) else 0)
    every = int(fit.get("checkpoint_every", 0))
    partial = Path(f"{spec['ckpt']}.partial")
    start, losses = 0, []
    if every and partial.exists():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start, losses = int(state["step"]), list(state["losses"])
    model.train()
    for step in range(start, steps):
        idx = np.concatenate([rng.choice(lab, n_lab), rng.choice(unl, bsz - n_lab) if bsz > n_lab else []])
        idx = idx.astype(np.int64)
        arrays = [*x_train, y_train] + ([m_train] if m_train is not None else [])
        got = _batch(arrays, idx)
        x = torch.cat([encode(a, nodes[i["node"]], i["train"]["layout"]) for a, i in zip(got, inputs)], 1)
        y, valid = target_and_valid(got[len(inputs)], tgt_node, got[-1] if m_train is not None else None)
        loss = loss_fn(model(x.to(dev)), y.to(dev), valid.to(dev), tgt_node)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if every and (step + 1) % every == 0 and step + 1 < steps:
            atomic_torch_save(partial, {"model": model.state_dict(), "opt": opt.state_dict(),
                                        "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                                        "torch_rng": torch.get_rng_state(), "step": step + 1, "losses": losses})
        killpoint("ngc/edge_step")
    killpoint("ngc/edge_trained")
    model.eval()
    for split in ("train", "test"):
        xs = [load(i[split]) for i in inputs]
        n = xs[0].shape[0]
        h, w = xs[0].shape[-2:] if inputs[0][split]["layout"] == "pred" else xs[0].shape[1:3]
        dtype = np.uint8 if tgt_node["kind"] == "categorical" else np.float16

        def chunks(xs: list[np.ndarray] = xs, n: int = n, split: str = split) -> Iterable[np.ndarray]:
            with torch.no_grad():
                for s in range(0, n, fit["predict_batch"]):
                    sl = slice(s, min(s + fit["predict_batch"], n))
                    x = torch.cat([encode(a[sl], nodes[i["node"]], i[split]["layout"]) for a, i in zip(xs, inputs)], 1)
                    yield to_physical(model(x.to(dev)).cpu(), tgt_node)

        write_npy(spec[f"pred_{split}"], (n, tgt_node["channels"], h, w), dtype, chunks())
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(spec["ckpt"], {"model": weights, "id": spec["id"], "in_ch": in_ch,
                                     "out_ch": tgt_node["channels"], "fit": fit})
    partial.unlink(missing_ok=True)
    tail = losses[-max(1, steps // 10):]
    return {"id": spec["id"], "skipped": False, "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(tail))}
