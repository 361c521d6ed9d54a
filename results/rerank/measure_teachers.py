"""Re-measure the teachers' own rankings with ir-measures, into results/rerank/teachers.{json,md}.

Run files come from the shared trec-dl data (BM25 and, for dl19, the RankGPT-3.5 / RankVicuna-7B
orderings); the MiniLM bi-encoder's scores come from the GPU sweep's committed per-query files (it
was scored there, on the test set of each fold).
Usage: MULTITEACHER_DATA=../shared/data python results/rerank/measure_teachers.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from multiteacher.data.ir import load_ir
from multiteacher.io import atomic_write_json, atomic_write_text
from multiteacher.recipes.rerank import measure

HERE = Path(__file__).parent
MEASURES = ["nDCG@10", "RR(rel=2)@10", "AP(rel=2)"]
SWEEP_RUN = {"dl19": HERE / "sweep-gpu/fold-a/bce-s0", "dl21": HERE / "sweep-gpu/fold-b/bce-s0"}


def main() -> None:
    data_dir = Path(os.environ.get("MULTITEACHER_DATA", "../shared/data"))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("dl19", "dl21"):
        d = load_ir(f"trec-dl/{name}", data_dir)
        runs = {"bm25": d.candidates, **d.runs}
        table[name] = {r: measure(run, d.qrels, MEASURES)["mean"] for r, run in sorted(runs.items())}
        pq = json.loads((SWEEP_RUN[name] / "per_query.json").read_text())["baselines"]
        table[name]["minilm-biencoder (sweep)"] = pq[f"test|trec-dl/{name}|teacher:minilm"]["mean"]
    atomic_write_json(HERE / "teachers.json", table)
    lines = ["| set | teacher | " + " | ".join(MEASURES) + " |", "|---|---|" + "---|" * len(MEASURES)]
    for name, rows in table.items():
        lines += [f"| {name} | {r} | " + " | ".join(f"{v[m]:.4f}" for m in MEASURES) + " |" for r, v in rows.items()]
    atomic_write_text(HERE / "teachers.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
