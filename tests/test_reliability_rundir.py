"""Run directories under concurrency, resumes that check what they resume, eval of unfinished runs, and
run-dir paths the file system refuses (issue 15, defects 1, 3, 4 and the run-dir bad inputs)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher.cli import main
from multiteacher.config import RecipeConfig
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.errors import ConfigError
from multiteacher.io import leftover_temp_files
from multiteacher.rundir import LOCK_NAME, RunDirLock, config_differences, data_fingerprint
from multiteacher.runs import RunContext, comparable_results, default_run_dir

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "example-tiny.yaml")


def cli(*args: str, cwd: Path = REPO, kill: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTITEACHER_KILL")}
    env["OMP_NUM_THREADS"] = "1"
    if kill:
        env["MULTITEACHER_KILL_AT"] = kill
    return subprocess.Popen([sys.executable, "-m", "multiteacher.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def finish(p: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = p.communicate(timeout=600)
    return p.returncode, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished example-tiny run (made once; tests copy it)."""
    root = tmp_path_factory.mktemp("finished")
    rc, err = finish(cli("run", TINY, "--run-dir", str(root / "run"), "--data-dir", str(root / "data"),
                         "--cache-dir", str(root / "cache")))
    assert rc == 0, err[-3000:]
    return root / "run"


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------- defect 1: concurrency

@pytest.mark.slow
def test_three_processes_race_into_one_run_dir(tmp_path: Path, finished: Path) -> None:
    """Exactly one of three racing runs runs; the others exit 2 with one line; nothing is lost."""
    run = tmp_path / "race" / "run"
    procs = [cli("run", TINY, "--run-dir", str(run)) for _ in range(3)]
    outcomes = [finish(p) for p in procs]
    codes = sorted(rc for rc, _ in outcomes)
    assert codes == [0, 2, 2], [(rc, err[-2000:]) for rc, err in outcomes]
    for rc, err in outcomes:
        if rc == 2:
            line = one_error_line(err)
            assert "in use by another running process" in line or "already exists and is not empty" in line, line
    res = json.loads((run / "results.json").read_text())
    assert res["sessions"] == 1 and leftover_temp_files(run) == []
    assert comparable_results(res)["metrics"] == json.loads((finished / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_parallel_seeds_with_the_default_run_dir(tmp_path: Path) -> None:
    """The issue's repro: `for s in 0 1 2; do multiteacher run C --set seed=$s & done` — all three finish."""
    procs = {s: cli("run", TINY, "--set", f"seed={s}", cwd=tmp_path) for s in (0, 1, 2)}
    for p in procs.values():
        rc, err = finish(p)
        assert rc == 0, err[-3000:]
    for s in (0, 1, 2):
        res = json.loads((tmp_path / "runs" / f"example-tiny-s{s}" / "results.json").read_text())
        assert res["seed"] == s and res["sessions"] == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"example-tiny-s{s}" for s in (0, 1, 2)]


def test_default_run_dir_names_the_seed_only_when_set() -> None:
    cfg = RecipeConfig(recipe="example", name="demo", seed=0)
    assert default_run_dir(cfg) == Path("runs/demo")
    assert default_run_dir(cfg, ["fit.lr=1"]) == Path("runs/demo")
    assert default_run_dir(cfg.model_copy(update={"seed": 7}), ["seed=7"]) == Path("runs/demo-s7")
    assert default_run_dir(cfg, [" seed =0"]) == Path("runs/demo-s0")


def test_a_live_run_dir_is_refused_and_a_dead_holder_releases_it(tmp_path: Path, finished: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(finished, tmp_path / "run")
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    holder = RunDirLock(run)
    holder.acquire(new=False)  # as a live run would
    try:
        for argv in (["run", "--resume", str(run)], ["run", TINY, "--run-dir", str(run)]):
            assert main(argv) == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"run directory {run} is in use by another running process" in line, line
        with pytest.raises(ConfigError, match="in use by another running process"):
            RunContext.create(run, resume=True)
    finally:
        holder.release()
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before
    # a holder that is SIGKILLed leaves no lock behind: the run resumes at once
    code = ("import os, signal, sys; from pathlib import Path; from multiteacher.rundir import RunDirLock; "
            "RunDirLock(Path(sys.argv[1])).acquire(new=False); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code, str(run)], timeout=120).returncode == -9
    assert main(["run", "--resume", str(run)]) == 0
    assert json.loads((run / "run.json").read_text())["sessions"] == 2


def test_a_failed_new_run_never_removes_what_it_did_not_make(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A run refused as 'not empty' leaves the directory and its files exactly as they were."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    assert main(["run", TINY, "--run-dir", str(d)]) == 2
    assert "already exists and is not empty" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"] and (d / "notes.txt").read_text() == "keep me"
    # an existing empty directory whose run fails (before any checkpoint) is emptied again, not removed
    e = tmp_path / "empty"
    e.mkdir()
    assert main(["run", TINY, "--run-dir", str(e), "--set", "teacher_fit.monitor=val/nope"]) == 2
    assert "fit.monitor='val/nope'" in one_error_line(capsys.readouterr().err)
    assert e.is_dir() and list(e.iterdir()) == []


# ------------------------------------------------------------------------ defect 3: resume checks

@pytest.mark.parametrize("extra,pattern", [
    (["--set", "teacher_fit.lr=0.01"], r"config field 'teacher_fit\.lr' differs: 0\.003 in the run, 0\.01 now"),
    (["--data-dir", "{tmp}/other-data"], r"data dir differs: .*/data in the run, .*/other-data now"),
    (["--cache-dir", "{tmp}/other-cache"], r"cache dir differs: .*/cache in the run, .*/other-cache now"),
])
def test_resume_refuses_a_changed_config_or_directory(tmp_path: Path, finished: Path, extra: list[str],
                                                      pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    run = copy_run(finished, tmp_path / "run")
    info = (run / "run.json").read_bytes()
    extra = [a.format(tmp=tmp_path) for a in extra]
    assert main(["run", "--resume", str(run), *extra]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.search(pattern, line) and "--allow-changed" in line, line
    assert (run / "run.json").read_bytes() == info
    # with the flag the resume goes on, and run.json records what was accepted
    assert main(["run", "--resume", str(run), *extra, "--allow-changed"]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["sessions"] == 2 and len(meta["changes"]) == 1 and meta["changes"][0]["session"] == 2
    assert re.search(pattern, meta["changes"][0]["differences"][0])
    # ... and the next plain resume continues the changed run without complaint
    assert main(["run", "--resume", str(run)]) == 0


def test_resume_catches_a_hand_edited_config_yaml(tmp_path: Path, finished: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(finished, tmp_path / "run")
    text = (run / "config.yaml").read_text()
    assert text.count("  alpha: 0.9\n") == 1
    (run / "config.yaml").write_text(text.replace("  alpha: 0.9\n", "  alpha: 0.5\n"))
    assert main(["run", "--resume", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "config field 'kd.alpha' differs: 0.9 in the run, 0.5 now" in line, line


def test_resume_without_dirs_uses_the_runs_own(tmp_path: Path, finished: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(finished, tmp_path / "run")
    monkeypatch.setenv("MULTITEACHER_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MULTITEACHER_CACHE", str(tmp_path / "elsewhere-cache"))
    assert main(["run", "--resume", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["data_dir"] == str(finished.parent / "data") and meta["cache_dir"] == str(finished.parent / "cache")
    assert meta.get("changes", []) == []


class _DataConfig(RecipeConfig):
    recipe: str = "script"
    files: str = "mydata/part"


def test_resume_refuses_changed_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mydata" / "part").mkdir(parents=True)
    (data / "mydata" / "part" / "a.txt").write_text("1")
    cfg = _DataConfig(name="d")
    run = tmp_path / "run"
    RunContext.create(run, config=cfg, data_dir=data, cache_dir=tmp_path / "c").finish({"x": 1.0})
    assert "files" in json.loads((run / "run.json").read_text())["data_fingerprint"]
    RunContext.create(run, config=cfg, resume=True).finish({"x": 1.0})  # unchanged data: fine
    (data / "mydata" / "part" / "b.txt").write_text("new file")
    with pytest.raises(ConfigError, match=r"data named by 'files' changed since the run started"):
        RunContext.create(run, config=cfg, resume=True)
    ctx = RunContext.create(run, config=cfg, resume=True, allow_changed=True)
    ctx.finish({"x": 1.0})
    assert json.loads((run / "run.json").read_text())["changes"][0]["differences"] == [
        "data named by 'files' changed since the run started (files added, removed or modified)"]


def test_data_fingerprint_follows_files_and_the_recipe_hook(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    f = tmp_path / "set" / "x.bin"
    f.write_bytes(b"12345")
    cfg = {"recipe": "r", "name": "set", "data": {"train": ["set"], "other": "not-a-path"}}
    fp = data_fingerprint(cfg, tmp_path)
    assert set(fp) == {"data.train[0]"}  # `name` is never a data path, a missing path is not data
    os.utime(f, ns=(1, 1))
    assert data_fingerprint(cfg, tmp_path) != fp
    fp2 = data_fingerprint(cfg, tmp_path)
    f.write_bytes(b"123456")  # another size
    os.utime(f, ns=(1, 1))
    assert data_fingerprint(cfg, tmp_path) != fp2
    # the run and cache directories are never data, even when the config names them
    assert data_fingerprint(cfg, tmp_path, avoid=(tmp_path / "set",)) == {}

    class Recipe:
        @staticmethod
        def data_fingerprint(cfg: object, data_dir: Path) -> str:
            return f"speakers-in-{data_dir.name}"

    assert data_fingerprint({}, tmp_path, recipe=Recipe)["recipe"] == f"speakers-in-{tmp_path.name}"


def test_config_differences_names_each_field() -> None:
    assert config_differences({"a": 1, "fit": {"lr": 0.001, "x": [1]}}, {"a": 1, "fit": {"lr": 0.01, "x": [2]}}) == [
        "config field 'fit.lr' differs: 0.001 in the run, 0.01 now",
        "config field 'fit.x' differs: [1] in the run, [2] now"]
    assert config_differences({"a": 1}, {"b": 2}) == ["config field 'a' differs: 1 in the run, <absent> now",
                                                      "config field 'b' differs: <absent> in the run, 2 now"]


def test_allow_changed_needs_resume(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", TINY, "--allow-changed"]) == 2
    assert "--allow-changed only goes with --resume" in one_error_line(capsys.readouterr().err)


def _fit_once(ctx: RunContext, cfg: FitConfig, fail_at: int | None = None) -> object:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    model = nn.Linear(3, 1)

    def step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], state: object) -> torch.Tensor:
        if fail_at is not None and state.step == fail_at:  # type: ignore[attr-defined]
            raise RuntimeError("stop here")
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    return fit(ctx, "m", model, data, step, cfg)


def test_fit_refuses_a_stored_fit_made_with_another_fitconfig(tmp_path: Path) -> None:
    ctx = RunContext.create(tmp_path / "run", data_dir=tmp_path, cache_dir=tmp_path / "c")
    cfg = FitConfig(max_steps=10, batch_size=8, val_every=5, log_every=5)
    first = _fit_once(ctx, cfg)
    assert _fit_once(ctx, cfg) == first  # the same settings: the stored result
    assert _fit_once(ctx, cfg.model_copy(update={"num_workers": 0})) == first
    with pytest.raises(ConfigError) as e:
        _fit_once(ctx, cfg.model_copy(update={"lr": 0.01}))
    msg = str(e.value)
    assert msg.startswith("fit 'm': the finished fit in ") and "'lr': 0.001 there, 0.01 now" in msg, msg
    # a partial fit (killed after its checkpoint at step 5) is checked as well
    ctx2 = RunContext.create(tmp_path / "run2", data_dir=tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(RuntimeError, match="stop here"):
        _fit_once(ctx2, cfg, fail_at=7)
    assert (tmp_path / "run2" / "checkpoints" / "m" / "last.pt").exists()
    with pytest.raises(ConfigError, match=r"the partial fit in .* \('max_steps': 10 there, 20 now\)"):
        _fit_once(ctx2, cfg.model_copy(update={"max_steps": 20}))
    ctx2.allow_changed = True  # what `--resume --allow-changed` gives a run
    assert _fit_once(ctx2, cfg.model_copy(update={"max_steps": 20})).steps == 20  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- defect 4: eval of unfinished runs

@pytest.mark.slow
@pytest.mark.parametrize("kill,expect", [
    ("fit/step@470", ["fit 'student_kd' stopped at step 50 of 200", "finished fits: student_ce, teacher"]),
    ("fit/step@3", ["no finished fit under checkpoints/"]),  # killed before the students (or any checkpoint) started
])
def test_eval_refuses_an_unfinished_run_and_says_what_is_unfinished(tmp_path: Path, kill: str, expect: list[str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    rc, err = finish(cli("run", TINY, "--run-dir", str(run), kill=kill))
    assert rc == -9, err[-2000:]
    assert main(["eval", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the run has not finished (no results.json" in line and f"--resume {run}" in line, line
    assert all(e in line for e in expect), line
    assert not (run / "eval").exists()


def test_eval_of_a_finished_run_still_works(tmp_path: Path, finished: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    assert main(["eval", str(run)]) == 0
    assert len(list((run / "eval").glob("eval-*.json"))) == 1


def test_eval_refuses_an_invalid_results_json(tmp_path: Path, finished: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(finished, tmp_path / "run")
    (run / "results.json").write_text("{\"name\": 1")
    assert main(["eval", str(run)]) == 2
    assert "results.json: not valid JSON" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ run-dir bad inputs

def test_run_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("precious")
    for argv in (["run", TINY, "--run-dir", str(f)], ["run", TINY, "--run-dir", str(f / "sub")],
                 ["run", "--resume", str(f)]):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "file" in line and str(f) in line, line
    assert f.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_unwritable_run_dir_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only parent (simulated: tests may run as root, who ignores mode bits)."""
    real_mkdir = os.mkdir
    ro = tmp_path / "ro"
    ro.mkdir()

    def mkdir(path: object, *a: object, **k: object) -> None:
        if Path(str(path)).parent == ro or Path(str(path)) == ro / "deep":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_mkdir(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", mkdir)
    for target in (ro / "run", ro / "deep" / "er" / "run"):
        assert main(["run", TINY, "--run-dir", str(target)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot create run directory {target}: Permission denied" in line, line
    assert list(ro.iterdir()) == []


def _full_disk_at(monkeypatch: pytest.MonkeyPatch, module: str, name: str, after: int = 0) -> None:
    import importlib

    mod = importlib.import_module(module)
    real = getattr(mod, name)
    calls = {"n": 0}

    def failing(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(mod, name, failing)


@pytest.mark.parametrize("module,name,after,kept", [
    ("multiteacher.runs", "atomic_write_text", 0, False),  # config.yaml
    ("multiteacher.runs", "atomic_write_json", 0, False),  # run.json
    ("multiteacher.engine.checkpoint", "save_atomic", 0, False),  # the first checkpoint
    ("multiteacher.engine.checkpoint", "save_atomic", 3, True),  # after the teacher's first checkpoints
])
def test_full_disk_is_one_line_and_leaves_nothing_half_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], finished: Path,
                                                            module: str, name: str, after: int, kept: bool) -> None:
    run = tmp_path / "new" / "run"
    with monkeypatch.context() as m:
        _full_disk_at(m, module, name, after)
        assert main(["run", TINY, "--run-dir", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line, line
    if not kept:
        assert "run it again" in line and not (tmp_path / "new").exists()
        return
    assert f"resume with `multiteacher run --resume {run}`" in line and leftover_temp_files(run) == []
    assert (run / LOCK_NAME).exists() and not (run / "results.json").exists()
    assert main(["run", "--resume", str(run)]) == 0  # space freed: it resumes to the uninterrupted results
    res = json.loads((run / "results.json").read_text())
    assert res["metrics"] == json.loads((finished / "results.json").read_text())["metrics"]
