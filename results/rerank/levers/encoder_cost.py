"""Encoding cost of the two local bi-encoders as live labellers: mpnet's time over MiniLM's on the same passages.

Run from the repository root (after `make models`), one torch thread as the levers runs use:

    OMP_NUM_THREADS=1 .venv/bin/python results/rerank/levers/encoder_cost.py [N_PASSAGES]

Prints each model's seconds for the first N (default 192) dl19 passages at max length 256, and the ratio.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer


def main(n: int = 192) -> dict[str, float]:
    torch.set_num_threads(1)
    corpus = Path(os.environ.get("MULTITEACHER_DATA", "../shared/data")) / "trec-dl" / "dl19" / "corpus.jsonl"
    with corpus.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(n), f)]
    seconds = {}
    for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2"):
        model = SentenceTransformer(f"models/{name}", device="cpu")
        model.max_seq_length = 256
        model.encode(texts[:16], batch_size=32)  # warm-up
        start = time.perf_counter()
        model.encode(texts, batch_size=32)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s for {len(texts)} passages")
    print(f"mpnet / MiniLM: {seconds['all-mpnet-base-v2'] / seconds['all-MiniLM-L6-v2']:.2f}x")
    return seconds


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 192)
