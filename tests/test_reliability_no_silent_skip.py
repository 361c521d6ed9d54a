"""No silent skips: with MULTITEACHER_DATA set, a test that needs the shared data FAILS when the data
is missing (tests/conftest.py `data_dir` and `require_data`); it may skip only when the variable is
unset and ../shared/data does not exist. Checked by running a throw-away test file in a pytest
subprocess with our conftest loaded as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
from tests.conftest import require_data

def test_uses_data(data_dir):
    assert data_dir.is_dir()

def test_needs_a_file(data_dir):
    require_data(data_dir, "fsdd", "recordings")
'''


def run_probe(tmp_path: Path, data: str | None) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "MULTITEACHER_DATA"}
    if data is not None:
        env["MULTITEACHER_DATA"] = data
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-q", "-rA", "--rootdir", str(tmp_path), str(probe)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_missing_data_dir_fails_not_skips(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    r = run_probe(tmp_path, str(missing))
    assert r.returncode == 1, r.stdout[-3000:]
    assert "2 errors" in r.stdout and "skipped" not in r.stdout, r.stdout[-3000:]
    assert f"MULTITEACHER_DATA={missing} does not exist" in r.stdout


def test_incomplete_data_dir_fails_not_skips(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    r = run_probe(tmp_path, str(tmp_path / "data"))
    assert r.returncode == 1, r.stdout[-3000:]
    assert "1 failed, 1 passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-3000:]
    assert "required shared data missing" in r.stdout and "fsdd/recordings" in r.stdout


def test_data_marked_tests_use_the_fixture() -> None:
    """Every test module that declares the `data` marker takes `data_dir` (so it can fail, not skip)."""
    offenders = []
    for f in sorted((REPO / "tests").glob("test_*.py")):
        text = f.read_text()
        if "mark.data" in text and "data_dir" not in text:
            offenders.append(f.name)
    assert offenders == []
