"""Job executor: inline / process pool (spawn, pinned threads) / Ray; order, failures, deps."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest

from multiteacher.engine.executor import THREAD_ENV_VARS, Job, JobResult, execute, run_jobs
from multiteacher.errors import UserError

HAS_RAY = importlib.util.find_spec("ray") is not None


# Job functions live at module level so that spawned workers import them by reference.
def square_info(x: int, sleep: float = 0.0) -> dict:
    import torch

    time.sleep(sleep)
    return {
        "y": x * x,
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "pid": os.getpid(),
    }


def write_text(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


def read_upper(deps: dict) -> str:
    (path,) = deps.values()
    return Path(path).read_text().upper()


def fail(msg: str) -> None:
    raise ValueError(msg)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def ident(x: int, sleep: float = 0.0) -> int:
    time.sleep(sleep)
    return x


def test_process_pool_two_workers_one_thread_in_order() -> None:
    jobs = [Job(f"j{i}", square_info, {"x": i, "sleep": 0.3}) for i in range(4)]
    res = run_jobs(jobs, backend="process", workers=2, threads_per_worker=1, progress=False)
    assert [r.id for r in res] == ["j0", "j1", "j2", "j3"] and all(r.ok for r in res)
    assert [r.value["y"] for r in res] == [0, 1, 4, 9]
    assert {r.value["threads"] for r in res} == {1} and {r.value["omp"] for r in res} == {"1"}
    pids = {r.value["pid"] for r in res}
    assert len(pids) <= 2 and os.getpid() not in pids


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_execute_repins_an_already_loaded_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for var in THREAD_ENV_VARS:  # pin_threads sets them; monkeypatch restores them afterwards
        monkeypatch.setenv(var, os.environ.get(var, "2"))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ok, value, *_ = execute(torch_threads, {}, threads=1)
        assert ok and value == 1 and os.environ["MKL_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(old)


def test_process_failures_deps_and_files(tmp_path: Path) -> None:
    f = str(tmp_path / "a.txt")
    jobs = [
        Job("read", read_upper, deps=["write"], deps_arg="deps"),  # listed before its dependency
        Job("write", write_text, {"path": f, "text": "edge ckpt"}),
        Job("bad", fail, {"msg": "boom at edge 3"}),
        Job("after_bad", ident, {"x": 1}, deps=["bad"]),
        Job("after_after_bad", ident, {"x": 2}, deps=["after_bad", "write"]),
        Job("fine", ident, {"x": 3}),
    ]
    res = {r.id: r for r in run_jobs(jobs, backend="process", workers=2, progress=False)}
    assert res["read"].value == "EDGE CKPT" and res["fine"].value == 3
    bad = res["bad"]
    assert bad.status == "failed" and bad.error == "ValueError: boom at edge 3"
    assert "Traceback" in bad.traceback and "fail" in bad.traceback
    assert res["after_bad"].status == "skipped" and "'bad'" in res["after_bad"].error
    assert res["after_after_bad"].status == "skipped"
    with pytest.raises(RuntimeError, match="boom"):
        bad.unwrap()


def test_dead_worker_fails_only_its_job() -> None:
    jobs = [Job("a", ident, {"x": 2, "sleep": 0.5}), Job("killed", die), Job("b", ident, {"x": 5})]
    res = run_jobs(jobs, backend="process", workers=2, progress=False)
    assert [r.status for r in res] == ["ok", "failed", "ok"]
    assert "worker process died" in res[1].error and res[0].value == 2 and res[2].value == 5


def test_inline_backend_and_any_callable(tmp_path: Path) -> None:
    seen: list[int] = []
    jobs = [
        Job("one", lambda: seen.append(1) or 1),
        Job("two", fail, {"msg": "x"}),
        Job("three", ident, {"x": 3}, deps=["one"]),
    ]
    res = run_jobs(jobs, progress=False)
    assert [r.status for r in res] == ["ok", "failed", "ok"] and isinstance(res[0], JobResult)
    assert res[2].value == 3 and seen == [1]


def test_string_reference() -> None:
    res = run_jobs([Job("s", "posixpath:basename", {"p": "x/y"})], backend="inline", progress=False)
    assert res[0].value == "y"


def test_invalid_plans() -> None:
    with pytest.raises(UserError, match="cycle"):
        run_jobs([Job("a", ident, deps=["b"]), Job("b", ident, deps=["a"])], progress=False)
    with pytest.raises(UserError, match="unknown job 'zz'"):
        run_jobs([Job("a", ident, deps=["zz"])], progress=False)
    with pytest.raises(UserError, match="duplicate job id"):
        run_jobs([Job("a", ident), Job("a", ident)], progress=False)
    with pytest.raises(UserError, match="not a module-level function"):
        run_jobs([Job("a", lambda: 1)], backend="process", progress=False)
    with pytest.raises(UserError, match="unknown executor backend"):
        run_jobs([Job("a", ident)], backend="dask", progress=False)  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_RAY, reason="ray is installed")
def test_ray_missing_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"multiteacher\[ray\]"):
        run_jobs([Job("a", ident, {"x": 1})], backend="ray", progress=False)


@pytest.mark.skipif(not HAS_RAY, reason="ray not installed (optional extra multiteacher[ray])")
def test_ray_local_instance() -> None:
    import ray

    try:
        jobs = [Job(f"j{i}", square_info, {"x": i}) for i in range(3)] + [Job("bad", fail, {"msg": "no"})]
        jobs.append(Job("dep", ident, {"x": 7}, deps=["j0"]))
        res = run_jobs(jobs, backend="ray", workers=2, threads_per_worker=1, progress=False)
        assert [r.value["y"] for r in res[:3]] == [0, 1, 4] and {r.value["threads"] for r in res[:3]} == {1}
        assert res[3].status == "failed" and "no" in res[3].error and res[4].value == 7
    finally:
        ray.shutdown()
