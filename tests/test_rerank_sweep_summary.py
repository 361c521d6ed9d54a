"""The sweep summary from committed run files: means over seeds, paired tests, and --runs across sweeps."""

from __future__ import annotations

import json
from pathlib import Path

from multiteacher.recipes.rerank.sweep import main
from tests.conftest import REPO

SWEEP = REPO / "results" / "rerank" / "sweep-gpu"


def _runs(fold: str, *objectives: str) -> list[str]:
    return [str(SWEEP / fold / f"{o}-s{s}") for o in objectives for s in (0, 1, 2)]


def test_summary_of_runs_from_two_sweeps(tmp_path: Path, capsys) -> None:
    runs = _runs("fold-a", "bce", "infonce") + _runs("fold-a-labelled", "marginmse")
    argv = ["recipes/rerank-trecdl.yaml", "--summarize-only", "--out", str(tmp_path), "--resamples", "200"]
    assert main([*argv, "--runs", *runs]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    table = s["sets"]["trec-dl/dl19"]["table"]
    assert {k for k in table if k.startswith("student:")} == {
        "student:bce", "student:infonce", "student:marginmse", "student:untrained"
    }
    per_run = [json.loads((Path(r) / "results.json").read_text()) for r in runs[-3:]]
    ndcg = [r["metrics"]["test/trec-dl/dl19/nDCG@10"] for r in per_run]
    mean, _, n = table["student:marginmse"]["nDCG@10"]
    assert n == 3 and abs(mean - sum(ndcg) / 3) < 1e-9  # the labelled sweep's MarginMSE, not fold A's
    assert "student:bce vs student:marginmse" in s["sets"]["trec-dl/dl19"]["tests"]["objective_vs_objective"]
    capsys.readouterr()
    mixed = _runs("fold-a", "marginmse") + _runs("fold-a-labelled", "marginmse")
    assert main([*argv, "--runs", *mixed]) == 2
    assert "objective 'marginmse' comes from both" in capsys.readouterr().err
