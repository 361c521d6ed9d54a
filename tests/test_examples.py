"""The examples under examples/ run end to end and print numbers that mean something.

Each example runs in a subprocess, as a user would run it; the test parses what it prints and
checks it against references computed here independently (the teachers re-fitted with scikit-learn,
chance levels from the label counts, the run files re-scored with ir_measures).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, tmp_path: Path, *args: str, timeout: int = 300) -> dict[str, float]:
    """Run examples/<name>, return its printed `label: value` (or `label: nDCG@10 = value`) lines."""
    env = {**os.environ, "MULTITEACHER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _keep_for_docs(name, proc.stdout)
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(.+?): (?:nDCG@10 = )?([0-9.]+)$", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def got_text(tmp_path: Path) -> str:
    """The full stdout of the last example run in `tmp_path`."""
    return (tmp_path / "stdout.txt").read_text()


def _keep_for_docs(name: str, stdout: str) -> None:
    """Leave the output where the docs build finds it (`build/example-outputs/`), so it need not rerun it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("refgen", ROOT / "docs" / "refgen.py")
    refgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refgen)
    refgen.store_example_output(EXAMPLES / name, stdout)


def _margin(p: float, n: int, z: float = 5.0) -> float:
    """z binomial standard errors of an accuracy p measured on n samples."""
    return z * math.sqrt(max(p * (1 - p), 1e-4) / n)


def test_digits_own_teachers(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    got = run_example("digits_own_teachers.py", tmp_path)
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    idx = np.arange(len(x))
    lab, rest = train_test_split(idx, train_size=300, stratify=y, random_state=0)
    _unl, test = train_test_split(rest, test_size=500, stratify=y[rest], random_state=0)
    # Independent reference: the "left half" teacher re-fitted here must score what the example printed.
    left = lambda a: a.reshape(-1, 8, 8)[:, :, :4].reshape(len(a), -1)  # noqa: E731
    ref = LogisticRegression(max_iter=2000).fit(left(x[lab]), y[lab]).score(left(x[test]), y[test])
    assert got["teacher left"] == pytest.approx(ref, abs=1e-3)
    chance = np.bincount(y[test]).max() / len(test)
    assert got["chance (majority class)"] == pytest.approx(chance, abs=1e-3)
    n = len(test)
    for student in ("student (consensus)", "student (router)"):
        # Students learn without labels; they must beat chance by far more than sampling noise, and land
        # within noise of the teachers they learn from (not below the weakest teacher by more than that).
        assert got[student] > chance + _margin(chance, n), got
        weakest = min(v for k, v in got.items() if k.startswith("teacher "))
        assert got[student] > weakest - _margin(weakest, n), got
    # A second run reuses the three teachers' cached outputs (no new cache entry) and prints the same numbers.
    entries = sorted((tmp_path / "cache" / "teacher-outputs").iterdir())
    assert len(entries) == 3
    assert run_example("digits_own_teachers.py", tmp_path) == got
    assert sorted((tmp_path / "cache" / "teacher-outputs").iterdir()) == entries


@pytest.mark.data
def test_own_rankers_to_cross_encoder(tmp_path: Path, data_dir: Path) -> None:
    data = data_dir
    require_data(data, "trec-dl", "dl19", "corpus.jsonl")
    got = run_example("own_rankers_to_cross_encoder.py", tmp_path, str(data))
    # Independent reference: BM25's own top-20 measured here with ir_measures directly.
    import ir_measures

    from multiteacher.data.ir import load_trec_dl

    d = load_trec_dl(data, "dl19")
    test_q = d.qids[28:]
    top = {q: dict(sorted(d.candidates[q].items(), key=lambda kv: -kv[1])[:20]) for q in test_q}
    qrels = [ir_measures.Qrel(q, doc, rel) for q in test_q for doc, rel in d.qrels[q].items()]
    run = [ir_measures.ScoredDoc(q, doc, s) for q in test_q for doc, s in top[q].items()]
    ref = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
    assert got["bm25 (first stage)"] == pytest.approx(ref, abs=1e-3)
    # Independent reference for the engine's fusion and metric: z-score each run file per query with numpy,
    # average the rankers that scored a passage, and measure with ir_measures directly.
    work = Path(re.search(r"run files in (\S+);", got_text(tmp_path)).group(1))
    from multiteacher.data.ir import read_trec_run

    runs = {n: read_trec_run(work / f"{n}.run") for n in ("tfidf", "coverage")}

    def ndcg_ref(run: dict) -> float:
        scored = [ir_measures.ScoredDoc(q, doc, s) for q in test_q for doc, s in run[q].items()]
        return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, scored)[ir_measures.nDCG @ 10]

    fused = {}
    for q in test_q:
        z: dict[str, list[float]] = {}
        for run in runs.values():
            v = np.array(list(run[q].values()))
            sd = v.std()
            for doc, s in run[q].items():
                z.setdefault(doc, []).append((s - v.mean()) / sd if sd > 0 else 0.0)
        fused[q] = {doc: float(np.mean(vals)) for doc, vals in z.items()}
    for name, run in {**runs, "fused": fused}.items():
        assert got[name] == pytest.approx(ndcg_ref(run), abs=1e-3), name
    rand = got["random order of the candidates"]
    for name in ("tfidf", "coverage", "fused", "student (tiny cross-encoder)"):
        assert 0.0 <= got[name] <= 1.0
    # The lexical rankers and their fusion carry signal: each above a random order of the same candidates.
    for name in ("tfidf", "coverage", "fused"):
        assert got[name] > rand, got
    # The student learned its teachers' ranking: on its training queries it orders passage pairs like the
    # fused teacher far more often than a coin would (5 binomial standard errors over the printed pair count).
    key = next(k for k in got if k.startswith("pairwise agreement"))
    n_pairs = int(re.search(r"\((\d+) pairs\)", key).group(1))
    assert got[key] > 0.5 + _margin(0.5, n_pairs), got
    # and recovers at least half of the fused teacher's nDCG@10 gain over a random order there.
    gain = got["fused, training queries"] - got["random order, training queries"]
    assert gain > 0 and got["student, training queries"] > got["random order, training queries"] + gain / 2, got
