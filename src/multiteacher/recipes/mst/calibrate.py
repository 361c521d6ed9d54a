"""Calibrate the AV-digits weakening: val/test accuracy of image-only, audio-only and fusion nets.

    python -m multiteacher.recipes.mst.calibrate --energy 0.3 --snr 0 --folds george lucas --epochs 15

Plain supervised training (Adam, CE), best epoch by val accuracy; prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from multiteacher.data import avdigits
from multiteacher.data.registry import resolve_data_dir
from multiteacher.recipes.mst.models import build

DEVICE = torch.device("cpu")


def _batches(split: avdigits.Split, bs: int, gen: torch.Generator | None = None):
    order = torch.randperm(len(split), generator=gen) if gen is not None else torch.arange(len(split))
    for i in range(0, len(split), bs):
        j = order[i:i + bs]
        yield {"image": split.image[j].to(DEVICE), "audio": split.audio[j].to(DEVICE),
               "label": split.label[j].to(DEVICE)}


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: avdigits.Split) -> float:
    model.eval()
    correct = sum(int((model(b).argmax(1) == b["label"]).sum()) for b in _batches(split, 256))
    return correct / len(split)


def train_eval(kind: str, fold: avdigits.Fold, epochs: int, seed: int, lr: float = 1e-3) -> dict:
    torch.manual_seed(seed)
    model = build(kind).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, 0.0)
    for _ in range(epochs):
        model.train()
        for b in _batches(fold.train, 64, gen):
            loss = F.cross_entropy(model(b), b["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        va = accuracy(model, fold.val)
        if va > best[0]:
            best = (va, accuracy(model, fold.test))
    return {"val": round(best[0], 4), "test": round(best[1], 4)}


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
    global DEVICE
    DEVICE = torch.device(args.device)
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
                    row[k] = train_eval(k, fold, args.epochs, args.seed)
                row["seconds"] = round(time.time() - t, 1)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
