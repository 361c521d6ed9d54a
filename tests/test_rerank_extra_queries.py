"""Extra unjudged training queries in the rerank recipe (`data.extra_queries`): pooled BM25 candidates,
no held-out text, no test-set passage, teachers that are absent where they have no scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from multiteacher.config import load_config
from multiteacher.data.ir import read_corpus_jsonl
from multiteacher.recipes.rerank.config import ExtraQueries
from multiteacher.recipes.rerank.splits import load_sets
from multiteacher.recipes.rerank.teachers import TeachersConfig, TeacherSpec, fused_run, has_teacher
from tests.conftest import REPO, require_data

pytestmark = pytest.mark.data

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"


def _queries_file(tmp_path: Path, extra_lines: list[str]) -> Path:
    f = tmp_path / "queries" / "mine.tsv"
    f.parent.mkdir()
    body = ["900001\twhat is the capital of france", "900002\thow do vaccines work", "900003\tbest way to cook rice"]
    f.write_text("\n".join(body + extra_lines) + "\n", encoding="utf-8")
    return f


def test_extra_query_sets(data_dir: Path, tmp_path: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "corpus.jsonl")
    cfg = load_config(TINY, overrides=[])
    sets0 = load_sets(cfg, data_dir)
    val_text = next(iter(next(iter(sets0["val"].values())).queries.values()))
    test_text = next(iter(sets0["test"]["trec-dl/dl19"].queries.values()))
    qfile = _queries_file(tmp_path, [f"900004\t{val_text.upper()}", f"900005\t{test_text}"])
    extra = [
        {"source": "file", "name": "mine", "path": [str(qfile)]},
        {"source": "passages", "max_queries": 12, "min_words": 3, "max_words": 6},
    ]
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "extra_queries": [ExtraQueries(**e) for e in extra],
        "pool_top_k": 15,
    })})
    sets = load_sets(cfg, data_dir)
    mine, made = sets["train"]["pool:mine"], sets["train"]["pool:passages"]
    assert sorted(mine.queries) == ["mine:900001", "mine:900002", "mine:900003"]  # held-out texts removed
    assert sets["all"]["pool:mine"] is mine and mine.qrels is None
    pool = read_corpus_jsonl(data_dir / "trec-dl" / "dl21" / "corpus.jsonl")  # the only training set
    for d in (mine, made):
        assert all(len(c) <= 15 for c in d.candidates.values())
        assert {x for c in d.candidates.values() for x in c} <= set(pool)  # never a dl19 (test) passage
    assert len(made.queries) == 12
    for qid, text in made.queries.items():  # passage-made: the source passage is a candidate and holds the span
        src = qid.split(":", 1)[1]
        assert src in made.candidates[qid] and text in " ".join(pool[src].split())
    # teachers: a run the pooled set lacks is absent only when optional; the pooled BM25 serves `bm25`
    splade = TeacherSpec(name="splade", kind="run", file="splade-pp-ed.run", optional=True)
    assert not has_teacher(splade, mine, None) and has_teacher(splade, sets["train"]["trec-dl/dl21"],
                                                             data_dir / "trec-dl" / "dl21")
    assert has_teacher(TeacherSpec(name="bm25", kind="run", file="bm25.run"), mine, None)


def test_fused_run_skips_absent_members() -> None:
    cfg = TeachersConfig(members=[
        TeacherSpec(name="a", kind="run", file="a.run"),
        TeacherSpec(name="b", kind="run", file="b.run", optional=True, weight=3.0),
    ], fusion="zscore")
    run_a = {"q": {"x": 3.0, "y": 1.0, "z": 2.0}}
    # b absent: the fused run is a's z-scores (a alone), whatever b's weight
    fused = fused_run(cfg, {"a": run_a})
    mean, std = 2.0, (2 / 3) ** 0.5
    assert fused["q"] == pytest.approx({d: (s - mean) / std for d, s in run_a["q"].items()}, rel=1e-6)
    # every present member at weight 0 (tuned where more teachers were present): equal weights instead of nothing
    assert fused_run(cfg, {"a": run_a}, {"a": 0.0, "b": 1.0})["q"] == pytest.approx(fused["q"])


def test_tiny_run_with_extra_queries(data_dir: Path, tmp_path: Path) -> None:
    require_data(data_dir, "msmarco-queries")
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "multiteacher.cli", "run", str(TINY), "--run-dir", str(run_dir),
        "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"),
        "--set", "data.extra_queries=[{source: file, name: msmarco, path: [msmarco-queries/*.tsv], max_queries: 40, "
        "groups_per_query: 3}, {source: passages, max_queries: 25, groups_per_query: 2}]",
        "data.pool_top_k=10", "fit.max_steps=4", "fit.val_every=4",
        "teachers.members=[{name: bm25, kind: run, file: bm25.run}, "
        "{name: splade, kind: run, file: splade-pp-ed.run, optional: true}]",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    merged = {k: v for rec in logs for k, v in rec.items()}
    # 6 dl21 queries x 20 groups + 40 MS MARCO queries x 3 + 25 passage queries x 2 (every query has >= 2
    # candidates here, so each gives its full number of groups)
    assert merged["train/groups"] == 6 * 20 + 40 * 3 + 25 * 2
    assert merged["train/queries"] == 6 + 40 + 25
    assert merged["teachers/pool:msmarco/present"] == 1.0 and merged["teachers/trec-dl/dl21/present"] == 2.0
    # without `optional`, the missing run is one clear error naming the teacher, the set and the fix
    bad = [*cmd[:-1], "teachers.members=[{name: splade, kind: run, file: splade-pp-ed.run}]"]
    bad[bad.index(str(run_dir))] = str(tmp_path / "bad")
    proc = subprocess.run(bad, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "teacher 'splade'" in proc.stderr and "pool:msmarco" in proc.stderr and "optional: true" in proc.stderr
