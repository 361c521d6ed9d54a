"""`multiteacher rerank`: re-rank a run the model never saw with an exported student; bad inputs are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multiteacher.cli import main
from multiteacher.recipes.rerank.model import ModelConfig, RandomModelConfig, export, load_student
from tests.conftest import REPO, require_data

pytestmark = pytest.mark.data
QIDS_N, K, MAX_LEN = 3, 20, 96


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A tiny random BERT cross-encoder exported like the recipe does, and dl19 files cut to 3 queries."""
    dl19 = require_data(data_dir, "trec-dl", "dl19", "tasb.run").parent
    tmp = tmp_path_factory.mktemp("rerank-cli")
    lines = (dl19 / "tasb.run").read_text().splitlines()
    qids = sorted({ln.split()[0] for ln in lines})[:QIDS_N]
    run = [ln for ln in lines if ln.split()[0] in qids and int(ln.split()[3]) <= K]
    assert len(run) == QIDS_N * K
    (tmp / "tasb3.run").write_text("\n".join(run) + "\n")
    queries = dict(ln.split("\t", 1) for ln in (dl19 / "queries.tsv").read_text().splitlines() if ln.strip())
    (tmp / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    docs = {ln.split()[2] for ln in run}
    passages = {}
    for ln in (dl19 / "corpus.jsonl").read_text().splitlines():
        obj = json.loads(ln)
        if obj["_id"] in docs:
            title = (obj.get("title") or "").strip()
            passages[obj["_id"]] = f"{title}. {obj['text']}" if title else obj["text"]
    assert set(passages) == docs
    cfg = ModelConfig(random=RandomModelConfig(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=1000),
                      max_length=MAX_LEN)
    model, tok = load_student(cfg, [*queries.values(), *passages.values()], seed=3)
    export(model, tok, tmp / "model")
    (tmp / "passages.json").write_text(json.dumps(passages))
    return {"tmp": tmp, "dl19": dl19, "model": tmp / "model", "run": tmp / "tasb3.run", "queries": tmp / "queries.tsv",
            "corpus": dl19 / "corpus.jsonl"}


def _read(path: Path, tag: str | None = "multiteacher") -> dict[str, list[tuple[int, str, float]]]:
    out: dict[str, list[tuple[int, str, float]]] = {}
    for ln in path.read_text().splitlines():
        q, q0, d, rank, score, t = ln.split()
        assert q0 == "Q0" and (tag is None or t == tag)
        out.setdefault(q, []).append((int(rank), d, float(score)))
    return out


def _reference(files: dict[str, Path], pairs: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Each pair scored alone (no padding, no ONNX) with the exported model in plain PyTorch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(files["model"]).eval()
    tok = AutoTokenizer.from_pretrained(files["model"])
    queries = dict(ln.split("\t", 1) for ln in files["queries"].read_text().splitlines())
    passages = json.loads((files["tmp"] / "passages.json").read_text())
    out = {}
    with torch.no_grad():
        for q, d in pairs:
            enc = tok(queries[q], passages[d], truncation="longest_first", max_length=MAX_LEN, return_tensors="pt")
            out[(q, d)] = float(model(**enc).logits[0, 0])
    return out


def _cli(files: dict[str, Path], out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "multiteacher.cli", "rerank", str(files["model"]), "--queries", str(files["queries"]),
           "--corpus", str(files["corpus"]), "--run", str(files["run"]), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)


def test_rerank_unseen_run_matches_pytorch(files: dict[str, Path]) -> None:
    out = files["tmp"] / "out" / "reranked.run"
    p = _cli(files, out, "--top-k", str(K), "--batch-size", "7")
    assert p.returncode == 0, p.stderr
    got = _read(out)
    first = _read(files["run"], None)
    assert sorted(got) == sorted(first)
    ref = _reference(files, [(q, d) for q, rows in got.items() for _, d, _ in rows])
    for q, rows in got.items():
        assert {d for _, d, _ in rows} == {d for _, d, _ in first[q]}
        assert [r for r, _, _ in rows] == list(range(1, K + 1))
        scores = [s for _, _, s in rows]
        assert scores == sorted(scores, reverse=True)  # the order follows the model's scores
        for _, d, s in rows:
            assert s == pytest.approx(ref[(q, d)], abs=1e-4)
    assert [d for _, d, _ in got[sorted(got)[0]]] != [d for _, d, _ in first[sorted(got)[0]]]


def test_rerank_top_k_jsonl_queries_tsv_corpus(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    tmp = files["tmp"]
    queries = dict(ln.split("\t", 1) for ln in files["queries"].read_text().splitlines())
    (tmp / "q.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    passages = json.loads((tmp / "passages.json").read_text())
    (tmp / "c.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in passages.items()))
    out = tmp / "top5.run"
    rc = main(["rerank", str(files["model"]), "--queries", str(tmp / "q.jsonl"), "--corpus", str(tmp / "c.tsv"),
               "--run", str(files["run"]), "--out", str(out), "--top-k", "5"])
    assert rc == 0, capsys.readouterr().err
    got, first = _read(out), _read(files["run"], None)
    ref = _reference(files, [(q, d) for q, rows in got.items() for _, d, _ in rows])
    for q, rows in got.items():  # only the first stage's top 5 are re-ranked and written
        assert {d for _, d, _ in rows} == {d for r, d, _ in first[q] if r <= 5}
        for _, d, s in rows:
            assert s == pytest.approx(ref[(q, d)], abs=1e-4)


def _bad(files: dict[str, Path], capsys: pytest.CaptureFixture, *extra: str, **change: str) -> str:
    args = {"model": str(files["model"]), "queries": str(files["queries"]), "corpus": str(files["corpus"]),
            "run": str(files["run"]), "top_k": "20"}
    args.update(change)
    out = files["tmp"] / "kept.run"
    out.write_text("old\n")
    rc = main(["rerank", args["model"], "--queries", args["queries"], "--corpus", args["corpus"], "--run",
               args["run"], "--out", str(out), "--top-k", args["top_k"], *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert out.read_text() == "old\n"  # nothing half-written, the old file untouched
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".kept.run")]
    return err[0]


def test_rerank_bad_inputs(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    tmp = files["tmp"]
    assert "nope.tsv" in _bad(files, capsys, queries=str(tmp / "nope.tsv"))
    (tmp / "latin1.run").write_bytes(files["run"].read_bytes()[:200] + "caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in _bad(files, capsys, run=str(tmp / "latin1.run"))
    (tmp / "empty.run").write_text("")
    assert "no lines" in _bad(files, capsys, run=str(tmp / "empty.run"))
    (tmp / "ghostq.run").write_text("999999999 Q0 8412684 1 1.0 x\n")
    msg = _bad(files, capsys, run=str(tmp / "ghostq.run"))
    assert "'999999999'" in msg and "queries file" in msg
    qid = files["run"].read_text().split()[0]
    (tmp / "ghostd.run").write_text(f"{qid} Q0 no-such-passage 1 1.0 x\n")
    msg = _bad(files, capsys, run=str(tmp / "ghostd.run"))
    assert "'no-such-passage'" in msg and "corpus" in msg
    (tmp / "latin1.tsv").write_bytes("1\tcaf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in _bad(files, capsys, queries=str(tmp / "latin1.tsv"))
    # MODEL folders that are not cross-encoders
    assert "no such folder" in _bad(files, capsys, model=str(tmp / "no-model"))
    (tmp / "empty-model").mkdir(exist_ok=True)
    assert "no config.json" in _bad(files, capsys, model=str(tmp / "empty-model"))
    from transformers import BertConfig

    BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               architectures=["BertModel"]).save_pretrained(tmp / "biencoder")
    assert "not a cross-encoder" in _bad(files, capsys, model=str(tmp / "biencoder"))
    BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               architectures=["BertForSequenceClassification"], num_labels=1).save_pretrained(tmp / "no-weights")
    assert "cannot load" in _bad(files, capsys, model=str(tmp / "no-weights"))
    assert "--top-k" in _bad(files, capsys, top_k="-1")
    assert "--device bogus" in _bad(files, capsys, "--device", "bogus")
