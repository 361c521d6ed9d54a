"""One table for issue 17's students: both folds, both candidate sets, every reference in one row.

Reads committed files only — the combiner table (`results/rerank/combiners/combiners.json`: best single teacher
and best combiner chosen on validation) and the listwise tables (`results/rerank/students/listwise/fold-{a,b}/
levers.json`: MarginMSE and DistillRankNet over seeds, their references and paired tests) — and writes
`summary.md` next to this file. Usage, from the repository root:

    .venv/bin/python results/rerank/students/summary.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RERANK = HERE.parent
FOLDS = {"A": ("listwise/fold-a", "dl19"), "B": ("listwise/fold-b", "dl21")}
NAMES = {"bm25": "BM25", "splade-pp-ed": "SPLADE++", "median_rank": "median rank", "router": "router",
         "router+floor": "router+floor"}
MARGIN, LISTWISE = "MarginMSE, +10k MS MARCO", "DistillRankNet, +10k MS MARCO"


def _levers_script() -> Any:
    """results/rerank/levers/make_table.py as a module: its number formats, so both tables read alike."""
    spec = importlib.util.spec_from_file_location("levers_make_table", RERANK / "levers" / "make_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_LEVERS = _levers_script()


def _fmt(xs: list[float]) -> str:
    return f"{_LEVERS._mean_std(xs)} ({len(xs)})"


def _test(table: dict[str, Any], label: str, vs: str) -> str:
    t = next(x for x in table["tests"] if (x["label"], x["vs"], x["measure"]) == (label, vs, "nDCG@10"))
    return f"{t['delta']:+.3f} ({_LEVERS._p(t['p_holm'])})"


def rows() -> list[str]:
    """Markdown rows, one per fold and candidate set."""
    comb = json.loads((RERANK / "combiners" / "combiners.json").read_text(encoding="utf-8"))
    out = []
    for fold, (sub, test_set) in FOLDS.items():
        tables = json.loads((HERE / sub / "levers.json").read_text(encoding="utf-8"))
        for table in tables:
            fs = table["first_stage"]
            c = comb["folds"][fold]["candidate_sets"][fs]
            single, best = c["best_single_on_val"], c["best_combiner_on_val"]
            by = {r["label"]: r for r in table["rows"]}
            mm, mm_mix = by[MARGIN], by[MARGIN + " + first stage"]
            lw, lw_mix = by[LISTWISE], by[LISTWISE + " + first stage"]
            refs = table["refs"]
            out.append(
                f"| {fold}: {test_set} | {NAMES.get(fs, fs)} top-100 | {refs[fs]['nDCG@10']:.3f} | "
                f"{refs['teacher:minilm']['nDCG@10']:.3f} | {refs['teacher:fused']['nDCG@10']:.3f} | "
                f"{NAMES.get(single, single)} "
                f"{c['rows'][single]['test']['nDCG@10']:.3f} | {NAMES.get(best, best)} "
                f"{c['rows'][best]['test']['nDCG@10']:.3f} | {refs['student:untrained']['nDCG@10']:.3f} | "
                f"**{_fmt(mm['test/nDCG@10'])}** | {_fmt(mm_mix['test/nDCG@10'])} | {_fmt(lw['test/nDCG@10'])} | "
                f"{_fmt(lw_mix['test/nDCG@10'])} | {_test(table, MARGIN, fs)} | "
                f"{_test(table, MARGIN, 'teacher:minilm')} | "
                f"{_test(table, MARGIN + ' + first stage', fs)} | {_test(table, LISTWISE, MARGIN)} |")
    return out


def main() -> None:
    head = [
        "# Issue 17's students in one table",
        "",
        "Made by `python results/rerank/students/summary.py` from `results/rerank/combiners/combiners.json`",
        "and `results/rerank/students/listwise/fold-{a,b}/levers.json`. nDCG@10 on the fold's test set;",
        "students: mean ± std (seeds) of the checkpoint validation picked; `+ first stage`: mixed with the first",
        "stage's scores (weight on validation). Best single teacher / best combiner: chosen on validation in the",
        "combiner table (no training), on the same candidates. Δ (p): paired randomisation test of the",
        "seed-averaged per-query values, p Holm-corrected over the four student rows of the listwise table",
        "(per reference).",
        "",
        "| fold: test | candidates | first stage | MiniLM | fused teacher (the labels) | "
        "best single teacher (val) | best combiner (val) | "
        "untrained | MarginMSE | MarginMSE + first stage | DistillRankNet | DistillRankNet + first stage | "
        "MarginMSE Δ vs first stage | MarginMSE Δ vs MiniLM | mix Δ vs first stage | DistillRankNet Δ vs MarginMSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    text = "\n".join(head + rows()) + "\n"
    from multiteacher.io import atomic_write_text

    atomic_write_text(HERE / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
