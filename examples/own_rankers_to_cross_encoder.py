"""Two rankers of your own, known only by their TREC run files, fused and distilled into a cross-encoder.

Your rankers here are two small lexical scorers (TF-IDF cosine and query-term coverage) over the
BM25 top-20 of TREC-DL 2019; each writes a TREC run file, as any ranker of yours would. The engine
fuses the run files per query on the teacher axis ``(B, K, N)`` (z-score, then the mean over the
rankers that scored a passage), a tiny random BERT cross-encoder learns the fused scores with
MarginMSE through `mt.fit`, and every system is measured with the engine's IR metrics (nDCG@10) on
held-out queries whose labels the student never saw.
"""

import os
import random
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

import multiteacher as mt
from multiteacher.data.ir import load_trec_dl, read_trec_run, runs_to_tensor, write_trec_run
from multiteacher.recipes.rerank.model import ModelConfig, RandomModelConfig, encode, forward_scores, load_student

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MULTITEACHER_DATA", "../shared/data"))
work = Path(tempfile.mkdtemp(prefix="own-rankers-"))
data = load_trec_dl(DATA, "dl19")
cands = {q: dict(sorted(data.candidates[q].items(), key=lambda kv: -kv[1])[:20]) for q in data.qids}
train_q, test_q = data.qids[:28], data.qids[28:]  # labels are used only to measure, on test_q

# --- your own rankers, each writing a TREC run file
tfidf = TfidfVectorizer(sublinear_tf=True).fit(data.passages.values())
words = lambda t: set(re.findall(r"\w{3,}", t.lower()))  # noqa: E731
rankers = {
    "tfidf": lambda q, d: float((tfidf.transform([q]) @ tfidf.transform([d]).T).toarray()[0, 0]),
    "coverage": lambda q, d: len(words(q) & words(d)) / (1 + len(words(q))) - 1e-4 * len(d.split()),
}
for name, score in rankers.items():
    write_trec_run(work / f"{name}.run", {q: {d: score(data.queries[q], data.passages[d]) for d in cands[q]}
                                          for q in data.qids}, tag=name)

# --- the run files as teachers on one axis, fused by the engine
runs = {name: read_trec_run(work / f"{name}.run") for name in rankers}
stack = runs_to_tensor(runs, cands)  # scores (B, K, N), valid (B, K, N)
fused, valid = mt.fuse_scores(stack.scores, stack.valid, method="zscore")
fused_run = {q: {d: float(fused[b, n]) for n, d in enumerate(stack.docids[b]) if valid[b, n]}
             for b, q in enumerate(stack.qids)}


def ndcg(run, qids=test_q):
    """nDCG@10 of `run` on `qids` (qrels limited to them: absent queries would count as 0)."""
    return mt.ir_evaluate({q: run[q] for q in qids}, {q: data.qrels[q] for q in qids}, ["nDCG@10"])["nDCG@10"]


for name, run in {"bm25 (first stage)": cands, **runs, "fused": fused_run}.items():
    print(f"{name}: nDCG@10 = {ndcg(run):.3f}")

# --- a tiny cross-encoder distilled from the fused scores with MarginMSE, trained by mt.fit
rng = random.Random(0)
groups = []  # (qid, [docids], [fused scores]): one of the fused top-3 first, then 7 other candidates
for q in train_q:
    order = sorted(fused_run[q], key=lambda d: -fused_run[q][d])
    for pos in order[:3]:
        docs = [pos, *rng.sample(order[3:], 7)]
        groups.append((q, docs, [fused_run[q][d] for d in docs]))
model, tok = load_student(ModelConfig(random=RandomModelConfig(vocab_size=2000), max_length=96),
                          texts=list(data.queries.values()) + list(data.passages.values()))


def step(model, batch):
    q = [data.queries[g[0]] for g in batch for _ in g[1]]
    p = [data.passages[d] for g in batch for d in g[1]]
    scores = forward_scores(model, encode(tok, q, p, 96)).view(len(batch), -1)
    return mt.margin_mse(scores, torch.tensor([g[2] for g in batch]))


ctx = mt.RunContext.create(work / "run", seed=0, data_dir=DATA)  # run dir, Fabric, seeding: one call
mt.fit(ctx, "student", model, groups, step, mt.FitConfig(max_steps=150, batch_size=8, lr=1e-3, val_every=150),
       collate_fn=lambda items: items)
model.eval()
with torch.no_grad():
    student = {q: dict(zip(cands[q], forward_scores(model, encode(tok, [data.queries[q]] * len(cands[q]),
                                                                     [data.passages[d] for d in cands[q]], 96))
                           .tolist())) for q in data.qids}
print(f"student (tiny cross-encoder): nDCG@10 = {ndcg(student):.3f}")
ctx.finish(metrics={"test/nDCG@10": ndcg(student), "test/fused/nDCG@10": ndcg(fused_run)})  # results.json, report.md
shuffled = [{q: {d: rng.random() for d in cands[q]} for q in data.qids} for _ in range(20)]
print(f"random order of the candidates: nDCG@10 = {np.mean([ndcg(r) for r in shuffled]):.3f}")
# On the queries it trained on, the student reproduces its teachers' ranking (it never saw their labels):
print(f"fused, training queries: nDCG@10 = {ndcg(fused_run, train_q):.3f}")
print(f"student, training queries: nDCG@10 = {ndcg(student, train_q):.3f}")
print(f"random order, training queries: nDCG@10 = {np.mean([ndcg(r, train_q) for r in shuffled]):.3f}")
pairs = [np.sign(student[q][d] - student[q][e]) == np.sign(fused_run[q][d] - fused_run[q][e])
         for q in train_q for i, d in enumerate(cands[q]) for e in list(cands[q])[i + 1:]]
print(f"pairwise agreement with the fused teacher, training queries ({len(pairs)} pairs): {np.mean(pairs):.3f}")
print(f"run files in {work}; the student's run (results.json, report.md) in {work / 'run'}")
