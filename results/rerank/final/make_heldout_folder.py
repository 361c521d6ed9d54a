"""Build a TREC-DL folder of the committed validation queries (dl19 + dl21) for `multiteacher eval`.

`recipes/rerank-final.yaml` trains on every shared TREC-DL set, so no shared set is unseen by it. Its
validation queries (recipes/rerank-val-queries.txt) are the only judged queries it never trained on
(they picked its checkpoint, nothing else). This writes them as a new folder of the shared layout —
queries.tsv, qrels.txt, corpus.jsonl and the first-stage runs by name — so that

    python results/rerank/final/make_heldout_folder.py /tmp/heldout-data
    multiteacher eval runs/final/seed0 --data-dir /tmp/heldout-data \
        --set 'data.test=[trec-dl/heldout]' 'data.test_first_stage=[bm25, splade-pp-ed]'

scores the exported student on a folder the run never read. Written files are plain copies of lines
of the shared files (never commit them: they are the shared data).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RUNS = ("bm25.run", "splade-pp-ed.run")


def main(out: Path, data: Path, val_list: Path) -> None:
    wanted: dict[str, set[str]] = {}
    for line in val_list.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            spec, qid = line.split()
            wanted.setdefault(spec, set()).add(qid)
    dest = out / "trec-dl" / "heldout"
    dest.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {f: [] for f in ("queries.tsv", "qrels.txt", *RUNS)}
    docs: dict[str, str] = {}
    for spec, qids in sorted(wanted.items()):
        src = data / spec
        for f in lines:
            for line in (src / f).read_text().splitlines():
                if line.split("\t" if f == "queries.tsv" else None)[0] in qids:
                    lines[f].append(line)
        needed = {ln.split()[2] for f in RUNS for ln in lines[f]} | {ln.split()[2] for ln in lines["qrels.txt"]}
        with open(src / "corpus.jsonl") as fh:
            for line in fh:
                doc_id = json.loads(line)["_id"]
                if doc_id in needed:
                    docs[doc_id] = line.rstrip("\n")
    for f, rows in [*lines.items(), ("corpus.jsonl", list(docs.values()))]:
        tmp = dest / f".{f}.tmp"
        tmp.write_text("\n".join(rows) + "\n")
        os.replace(tmp, dest / f)
    n = len(lines["queries.tsv"])
    print(f"{dest}: {n} queries, {len(docs)} passages, runs {', '.join(RUNS)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_heldout_folder.py OUT_DIR   (reads $MULTITEACHER_DATA, default ../shared/data)")
    main(Path(sys.argv[1]), Path(os.environ.get("MULTITEACHER_DATA", "../shared/data")),
         Path("recipes/rerank-val-queries.txt"))
