"""Calibrate the AV-digits weakening: val/test accuracy of image-only, audio-only and fusion nets.

    python -m multiteacher.recipes.mst.calibrate --energy 0.3 --snr 0 --folds george lucas --epochs 15

Plain supervised training (Adam, CE) with the engine's `fit` (one validation per epoch, best
epoch by validation accuracy); prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from multiteacher.data import avdigits
from multiteacher.data.registry import resolve_data_dir
from multiteacher.engine.context import LocalContext
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.metrics.classify import accuracy
from multiteacher.recipes.mst.evaluation import BatchT, SplitDataset, predict
from multiteacher.recipes.mst.models import build


def supervised_accuracy(kind: str, fold: avdigits.Fold, epochs: int, seed: int, lr: float = 1e-3,
                        device: str = "cpu") -> dict[str, float]:
    """Validation accuracy of the best epoch of a `kind` net trained with CE, and its test accuracy."""
    torch.manual_seed(seed)
    model = build(kind)
    spe = max(1, len(fold.train) // 64)
    cfg = FitConfig(batch_size=64, optimizer="adam", lr=lr, max_steps=epochs * spe, val_every=spe,
                    monitor="val/acc", mode="max", log_every=spe)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = LocalContext(seed=seed, run_dir=Path(tmp), device=device)  # type: ignore[arg-type]
        dev = ctx.fabric.device

        def step(m: torch.nn.Module, batch: BatchT) -> torch.Tensor:
            return F.cross_entropy(m(batch), batch["label"])

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return {f"{name}/acc": accuracy(predict(m, split, dev, 256), split.label)
                    for name, split in (("val", fold.val), ("test", fold.test))}

        best = fit(ctx, kind, model, SplitDataset(fold.train), step, cfg, evaluate).best_metrics
    return {"val": round(best["val/acc"], 4), "test": round(best["test/acc"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--energy", type=float, nargs="+", default=[0.3])
    ap.add_argument("--snr", type=float, nargs="+", default=[0.0])
    ap.add_argument("--folds", nargs="+", default=["george"])
    ap.add_argument("--kinds", nargs="+", default=["image", "audio", "fusion"])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-mode", default="speaker")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    data_dir = resolve_data_dir()
    for e in args.energy:
        for s in args.snr:
            for fold_name in args.folds:
                t = time.time()
                fold = avdigits.make_fold(data_dir, fold_name, args.seed, image_energy=e, audio_snr_db=s,
                                          val_mode=args.val_mode)
                row = {"energy": e, "snr_db": s, "fold": fold_name, "pcs": fold.info["pca_components"],
                       "val_speaker": fold.info["val_speaker"], "device": args.device}
                for k in args.kinds:
                    row[k] = supervised_accuracy(k, fold, args.epochs, args.seed, device=args.device)
                row["seconds"] = round(time.time() - t, 1)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
