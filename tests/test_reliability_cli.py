"""CLI smoke tests for bad input in real processes: exit code 2, one `error:` line, no traceback,
nothing half-written (a new run directory is removed; a resumed one gains no results or temp files).
The in-process corpus of malformed inputs is tests/test_reliability_bad_inputs.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from multiteacher.io import leftover_temp_files
from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def cli(*args: str, cache: Path, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MULTITEACHER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    for k in ("MULTITEACHER_KILL_AT", "MULTITEACHER_KILL_RANDOM"):
        env.pop(k, None)
    if kill:
        env["MULTITEACHER_KILL_AT"] = kill
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def assert_user_error(r: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Exit 2, exactly one `error: ...` line (the last) matching `pattern`, and no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and r.stderr.rstrip("\n").splitlines()[-1] == errors[0], r.stderr[-3000:]
    assert re.search(pattern, errors[0]), errors[0]


def mirror(src: Path, dst: Path, skip: set[str] = frozenset()) -> Path:
    """`dst` with a symlink to every entry of `src` except the names in `skip` (a cheap data copy)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name not in skip:
            (dst / p.name).symlink_to(p)
    return dst


def test_unknown_key_exit_2(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = cli("run", str(RECIPES / "ngc-scenes-tiny.yaml"), "--run-dir", str(run), "--set", "edge.widht=4",
            cache=tmp_path / "cache")
    assert_user_error(r, r"unknown key 'edge\.widht' — did you mean 'width'")
    assert not run.exists()


@pytest.mark.data
def test_truncated_wav_exit_2_and_no_run_dir(tmp_path: Path, data_dir: Path) -> None:
    recs = require_data(data_dir, "fsdd", "recordings")
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(require_data(data_dir, "mnist"), target_is_directory=True)
    bad = "7_jackson_3.wav"
    mirror(recs, data / "fsdd" / "recordings", skip={bad})
    (data / "fsdd" / "recordings" / bad).write_bytes((recs / bad).read_bytes()[:1000])
    run = tmp_path / "run"
    r = cli("run", str(RECIPES / "mst-avdigits-tiny.yaml"), "--run-dir", str(run), "--data-dir", str(data),
            cache=tmp_path / "cache")
    assert_user_error(r, rf"{bad}: truncated wav \(header says \d+ samples, file holds 478\)")
    assert not run.exists() and leftover_temp_files(tmp_path / "cache") == []


def _trec_dl_with_bad_run(data_dir: Path, root: Path) -> Path:
    """A data dir like the shared one, but dl21's bm25.run has a 5-column line 3."""
    trec = require_data(data_dir, "trec-dl")
    mirror(trec, root / "trec-dl", skip={"dl21"})
    dl21 = mirror(trec / "dl21", root / "trec-dl" / "dl21", skip={"bm25.run"})
    lines = (trec / "dl21" / "bm25.run").read_text().splitlines(keepends=True)
    lines[2] = " ".join(lines[2].split()[:5]) + "\n"
    (dl21 / "bm25.run").write_text("".join(lines))
    return root


@pytest.mark.data
def test_bad_run_file_on_resume_leaves_the_run_intact(tmp_path: Path, data_dir: Path) -> None:
    """A killed run resumed against broken data: exit 2, and the run directory gains nothing."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    cfg = str(RECIPES / "rerank-trecdl-tiny.yaml")
    r = cli("run", cfg, "--run-dir", str(run), "--data-dir", str(data_dir), cache=cache, kill="stage/baselines")
    assert r.returncode == -9, r.stderr[-3000:]
    before = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "run.json")
    bad = _trec_dl_with_bad_run(data_dir, tmp_path / "bad-data")
    info = (run / "run.json").read_bytes()
    # another data dir than the run's is refused as such (issue 15) ...
    r = cli("run", "--resume", str(run), "--data-dir", str(bad), cache=cache)
    assert_user_error(r, r"data dir differs: .* in the run, .*bad-data now .*--allow-changed")
    assert (run / "run.json").read_bytes() == info
    # ... and, when allowed, the broken file in it is named
    r = cli("run", "--resume", str(run), "--data-dir", str(bad), "--allow-changed", cache=cache)
    assert_user_error(r, r"bad-data/trec-dl/dl21/bm25\.run:3: expected 6 fields 'qid Q0 docid rank score tag', got 5")
    assert sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "run.json") == before
    assert not (run / "results.json").exists() and leftover_temp_files(run) == []
    # and a new run against the same broken data leaves no run directory at all
    r = cli("run", cfg, "--run-dir", str(tmp_path / "new"), "--data-dir", str(bad), cache=cache)
    assert_user_error(r, r"dl21/bm25\.run:3: expected 6 fields")
    assert not (tmp_path / "new").exists()
