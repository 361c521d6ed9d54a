"""Run many independent jobs (e.g. training every edge of a graph): inline, process pool, or Ray.

A `Job` names a top-level function (importable by reference, so it pickles without its code) and
its keyword arguments. Jobs exchange files (checkpoints, arrays), not pickled models: a job
returns something small (a path, a metrics dict). `deps` lists job ids that must succeed first;
a dependent of a failed job is skipped. A failed job reports its error and traceback in its
`JobResult` while independent jobs keep going; a worker that dies (SIGKILL, OOM) fails only the
job it ran. Results come back in job order.

Backends:
- `inline`: in this process, one job at a time (debugging, tests, tiny runs).
- `process`: a pool of `workers` spawned processes, each pinned to `threads_per_worker` torch
  threads (two unpinned torch processes on two cores thrash: 258 s instead of 37 s).
- `ray`: Ray tasks (`pip install 'multiteacher[ray]'`); a local Ray instance is started if none is.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal

from multiteacher.errors import UserError
from multiteacher.progress import progress as progress_bar

Backend = Literal["inline", "process", "ray"]
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class Job:
    """One unit of work: `fn(**kwargs)` after every job in `deps` has succeeded.

    `fn` is a module-level function or a `"package.module:function"` string. With `deps_arg`
    set, the function also receives `{dep_id: dep_value}` under that keyword.
    """

    id: str
    fn: Callable[..., Any] | str
    kwargs: dict[str, Any] = field(default_factory=dict)
    deps: Sequence[str] = ()
    deps_arg: str | None = None


@dataclass
class JobResult:
    """Outcome of a job: `status` is "ok", "failed" or "skipped"."""

    id: str
    status: str
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def unwrap(self) -> Any:
        """The value, or RuntimeError carrying the job's error and traceback."""
        if not self.ok:
            raise RuntimeError(f"job {self.id!r} {self.status}: {self.error}\n{self.traceback or ''}")
        return self.value


# ----------------------------------------------------------------------------- worker side


def fn_ref(fn: Callable[..., Any] | str, allow_main: bool = True) -> str:
    """`"module:qualname"` for a module-level function (UserError for lambdas and closures).

    Functions of the script being run (`__main__`) work with spawned process workers, which
    re-import the script, but not with Ray (`allow_main=False`).
    """
    if isinstance(fn, str):
        if ":" not in fn:
            raise UserError(f"job function {fn!r} must look like 'package.module:function'")
        return fn
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or not qual or "<" in qual or (mod == "__main__" and not allow_main):
        raise UserError(
            f"job function {qual or fn!r} (module {mod}) is not a module-level function of an importable "
            "module; define it at module level (for Ray: in a module other than the script you run)"
        )
    return f"{mod}:{qual}"


def resolve_fn(ref: str) -> Callable[..., Any]:
    """Import the function named by `"module:qualname"`."""
    mod, _, qual = ref.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def pin_threads(threads: int) -> None:
    """Pin this process's torch/BLAS threads (worker initializer, and again before each job).

    The OMP/MKL/OpenBLAS variables make a later `import torch` start with `threads` intra-op
    threads; if torch is already imported, `torch.set_num_threads` pins it directly. Importing
    torch only when it is loaded keeps workers of torch-free jobs cheap to start.
    """
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already started
        torch.set_num_interop_threads(threads)


Outcome = tuple[bool, Any, str | None, str | None, float]


def execute(
    fn: str | Callable[..., Any],
    kwargs: dict[str, Any],
    threads: int | None = None,
    sys_path: Sequence[str] = (),
) -> Outcome:
    """Run one job: (ok, value, one-line error, traceback, seconds). Never raises for a job error.

    `sys_path`: the driver's import path, appended where missing (Ray workers do not inherit it).
    """
    sys.path.extend(p for p in sys_path if p not in sys.path)
    t0 = time.perf_counter()
    try:
        func = resolve_fn(fn) if isinstance(fn, str) else fn  # may import torch: pin after
        if threads:
            pin_threads(threads)
        value = func(**kwargs)
    except Exception as e:
        err = f"{type(e).__name__}: {' '.join(str(e).split())}"
        return False, None, err, traceback.format_exc(), time.perf_counter() - t0
    return True, value, None, None, time.perf_counter() - t0


# ----------------------------------------------------------------------------- planning


def _validate(jobs: Sequence[Job]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, j in enumerate(jobs):
        if not isinstance(j, Job):
            raise UserError(f"run_jobs expects Job objects; item {i} is a {type(j).__name__}")
        if j.id in index:
            raise UserError(f"duplicate job id {j.id!r}; job ids must be unique")
        index[j.id] = i
    for j in jobs:
        for d in j.deps:
            if d not in index:
                raise UserError(f"job {j.id!r} depends on unknown job {d!r}")
    # cycle check (Kahn)
    indeg = {j.id: len(set(j.deps)) for j in jobs}
    children: dict[str, list[str]] = {j.id: [] for j in jobs}
    for j in jobs:
        for d in set(j.deps):
            children[d].append(j.id)
    queue = [k for k, v in indeg.items() if v == 0]
    seen = 0
    while queue:
        k = queue.pop()
        seen += 1
        for c in children[k]:
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if seen != len(jobs):
        cyc = sorted(k for k, v in indeg.items() if v > 0)
        raise UserError(f"job dependencies form a cycle among {', '.join(map(repr, cyc[:6]))}")
    return index


class _Backend:
    """Submit/wait interface the scheduler drives."""

    def submit(self, job: Job, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    shared_fate = False  # True when one dead worker breaks every job in flight (process pool)

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Outcome | None]]:
        """Yield (handle, outcome) for finished handles; outcome None means the worker died."""
        raise NotImplementedError

    def reset(self) -> None:
        """Replace a broken worker pool."""

    def close(self) -> None:
        pass


class _ProcessBackend(_Backend):
    shared_fate = True

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        # workers start lazily and inherit the environment: pin BLAS/OpenMP before they import torch
        self._saved_env = {v: os.environ.get(v) for v in THREAD_ENV_VARS}
        os.environ.update({v: str(threads) for v in THREAD_ENV_VARS})
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=pin_threads,
            initargs=(self.threads,),
        )

    def submit(self, job: Job, kwargs: dict[str, Any]) -> Any:
        return self.pool.submit(execute, fn_ref(job.fn), kwargs, self.threads)

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            exc = fut.exception()
            if exc is None:
                yield fut, fut.result()
            elif isinstance(exc, BrokenProcessPool):
                yield fut, None
            else:  # e.g. the job's arguments or value could not be pickled
                yield (
                    fut,
                    (
                        False,
                        None,
                        f"{type(exc).__name__}: {exc}",
                        "".join(traceback.format_exception(exc)),
                        0.0,
                    ),
                )

    def reset(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def close(self) -> None:
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            for v, old in self._saved_env.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old


class _RayBackend(_Backend):
    def __init__(self, workers: int, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(
                "executor backend 'ray' needs Ray: pip install 'multiteacher[ray]' (or use backend 'process')"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(num_cpus=workers * threads, include_dashboard=False, ignore_reinit_error=True)
        env = {v: str(threads) for v in THREAD_ENV_VARS}
        self.remote = ray.remote(num_cpus=threads, max_retries=0, runtime_env={"env_vars": env})(execute)
        self.threads = threads

    def submit(self, job: Job, kwargs: dict[str, Any]) -> Any:
        return self.remote.remote(fn_ref(job.fn, allow_main=False), kwargs, self.threads, list(sys.path))

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        ray = self.ray
        done, _ = ray.wait(handles, num_returns=1)
        for ref in done:
            try:
                yield ref, ray.get(ref)
            except ray.exceptions.WorkerCrashedError:
                yield ref, None
            except Exception as e:
                yield (
                    ref,
                    (
                        False,
                        None,
                        f"{type(e).__name__}: {' '.join(str(e).split())[:500]}",
                        "".join(traceback.format_exception(e)),
                        0.0,
                    ),
                )


def run_jobs(
    jobs: Sequence[Job],
    backend: Backend = "inline",
    workers: int = 2,
    threads_per_worker: int = 1,
    *,
    progress: bool = True,
) -> list[JobResult]:
    """Run `jobs` respecting `deps`; return one `JobResult` per job, in the order given."""
    jobs = list(jobs)
    _validate(jobs)
    if workers < 1 or threads_per_worker < 1:
        raise UserError(f"workers ({workers}) and threads_per_worker ({threads_per_worker}) must be >= 1")
    if backend not in ("inline", "process", "ray"):
        raise UserError(f"unknown executor backend {backend!r}; choose inline, process or ray")
    if backend != "inline":
        for j in jobs:
            fn_ref(j.fn, allow_main=backend != "ray")  # fail early, in one line, on lambdas
    results: dict[str, JobResult] = {}
    bar = progress_bar(total=len(jobs), desc=f"jobs ({backend})", enabled=bool(progress))

    def finish(res: JobResult) -> None:
        results[res.id] = res
        bar.update(1)
        if not res.ok:  # skip everything downstream, transitively
            for j in jobs:
                if res.id in j.deps and j.id not in results:
                    finish(JobResult(j.id, "skipped", error=f"dependency {res.id!r} {res.status}"))

    def kwargs_for(j: Job) -> dict[str, Any]:
        kw = dict(j.kwargs)
        if j.deps_arg:
            kw[j.deps_arg] = {d: results[d].value for d in j.deps}
        return kw

    def ready() -> list[Job]:
        return [
            j
            for j in jobs
            if j.id not in results and j.id not in running_ids and all(d in results and results[d].ok for d in j.deps)
        ]

    running_ids: set[str] = set()
    try:
        if backend == "inline":
            while len(results) < len(jobs):
                j = ready()[0]
                ok, value, err, tb, secs = execute(j.fn, kwargs_for(j))
                finish(JobResult(j.id, "ok" if ok else "failed", value, err, tb, secs))
            return [results[j.id] for j in jobs]

        be: _Backend = (
            _ProcessBackend(workers, threads_per_worker)
            if backend == "process"
            else _RayBackend(workers, threads_per_worker)
        )
        # A job that was running when a worker died becomes a suspect and is rerun alone: if it
        # kills its worker again it failed; otherwise it was an innocent bystander.
        suspects: set[str] = set()
        running: dict[Any, str] = {}
        try:
            while len(results) < len(jobs):
                for j in ready():
                    if len(running) >= workers or any(r in suspects for r in running.values()):
                        break
                    if j.id in suspects and running:
                        continue
                    running[be.submit(j, kwargs_for(j))] = j.id
                    running_ids.add(j.id)
                    if j.id in suspects:
                        break
                if not running:  # pragma: no cover - guarded by _validate
                    raise RuntimeError("executor stalled: no job ready and none running")
                in_flight = len(running)
                broken = False
                for h, outcome in list(be.wait(list(running))):
                    jid = running.pop(h)
                    running_ids.discard(jid)
                    if outcome is None:
                        broken = True
                        if jid in suspects or in_flight == 1 or not be.shared_fate:
                            finish(
                                JobResult(
                                    jid,
                                    "failed",
                                    error="worker process died while running this "
                                    "job (killed, out of memory, or crashed)",
                                )
                            )
                        else:
                            suspects.add(jid)
                        continue
                    ok, value, err, tb, secs = outcome
                    finish(JobResult(jid, "ok" if ok else "failed", value, err, tb, secs))
                if broken and be.shared_fate:  # the whole pool is gone: rerun the others alone
                    for jid in running.values():
                        suspects.add(jid)
                        running_ids.discard(jid)
                    running.clear()
                    be.reset()
        finally:
            be.close()
        return [results[j.id] for j in jobs]
    finally:
        bar.close()
