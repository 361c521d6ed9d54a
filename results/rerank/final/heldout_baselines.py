"""nDCG@10 / RR(rel=2)@10 / AP(rel=2) on the held-out folder: the first stages and the student's eval runs.

    python results/rerank/final/heldout_baselines.py /tmp/heldout-data runs/final/seed0 \
        > results/rerank/final/heldout-baselines.txt

(after make_heldout_folder.py and `multiteacher eval`, see README.md). Measured with ir_measures, the
same library the recipe uses, on the files themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ir_measures
from ir_measures import AP, RR, nDCG

MEASURES = [AP(rel=2), RR(rel=2) @ 10, nDCG @ 10]


def main(data: Path, run_dir: Path) -> None:
    folder = data / "trec-dl" / "heldout"
    qrels = list(ir_measures.read_trec_qrels(str(folder / "qrels.txt")))
    files = {name: folder / f"{name}.run" for name in ("bm25", "splade-pp-ed")}
    for name in ("trec-dl_heldout", "trec-dl_heldout@splade-pp-ed"):
        files[f"student {name}"] = run_dir / "eval" / f"{name}.run"
    for name, path in files.items():
        agg = ir_measures.calc_aggregate(MEASURES, qrels, list(ir_measures.read_trec_run(str(path))))
        print(name, {str(k): round(v, 4) for k, v in sorted(agg.items(), key=lambda kv: str(kv[0]))})


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
