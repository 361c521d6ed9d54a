"""`make reliability`: SIGKILL every recipe's tiny run at random moments and check exact resume.

For each recipe whose tiny config exists: one uninterrupted reference run (which also counts how
often each kill point is hit), then `--trials` trials in three rotating modes:
  random  `MULTITEACHER_KILL_RANDOM=p:seed` at every kill point, p chosen so that about `--kills`
          kills land in a run (armed again, new seed, in every resumed session);
  point   `MULTITEACHER_KILL_AT=name@N`: a kill point drawn uniformly from those the reference hit,
          N uniformly from 1..hits;
  timer   SIGKILL from outside after a delay drawn uniformly from (0.5 s, reference wall time),
          in up to `--kills` sessions — any moment, also where no kill point is.
A killed run is resumed with `multiteacher run --resume` until it finishes. A trial passes when the final
`comparable_results` equal the reference's, and no temp file of an interrupted atomic write is
left in the run or cache directory. Prints a table of trials/passes per recipe, writes
`<out>/summary.json`, exits 1 on any failure (failed trials' directories are kept).

    python scripts/reliability.py [--trials 10] [--recipes example,ngc,mst,rerank] [--out runs/reliability]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from multiteacher.io import leftover_temp_files  # noqa: E402
from multiteacher.runs import comparable_results  # noqa: E402

CONFIGS = {
    "example": "recipes/example-tiny.yaml",
    "ngc": "recipes/ngc-scenes-tiny.yaml",
    "mst": "recipes/mst-avdigits-tiny.yaml",
    "rerank": "recipes/rerank-trecdl-tiny.yaml",
}
MAX_SESSIONS = 30
MODES = ("random", "point", "timer")
# Runs the CLI and, at exit, dumps how often each kill point was hit (killpoints._hits) as JSON.
TRACE = (
    "import atexit, json, os, sys\n"
    "import multiteacher.killpoints as k\n"
    "atexit.register(lambda: open(os.environ['RELIABILITY_TRACE'], 'w').write(json.dumps(dict(k._hits))))\n"
    "from multiteacher.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_cli(args: list[str], cache: Path, env_extra: dict[str, str] | None = None,
            trace: Path | None = None, kill_after: float | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process; `kill_after` seconds SIGKILLs it from outside if still running."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MULTITEACHER_CACHE": str(cache)}
    for k in ("MULTITEACHER_KILL_AT", "MULTITEACHER_KILL_RANDOM"):
        env.pop(k, None)
    env.update(env_extra or {})
    if trace is not None:
        env["RELIABILITY_TRACE"] = str(trace)
        cmd = [sys.executable, "-c", TRACE, *args]
    else:
        cmd = [sys.executable, "-m", "multiteacher.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=kill_after if kill_after is not None else 1800)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def read_results(run_dir: Path) -> dict[str, Any]:
    return comparable_results(json.loads((run_dir / "results.json").read_text()))


def first_diff(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON values first differ (for the failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'reference' if k in a else 'trial'}"
            if a[k] != b[k]:
                return first_diff(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_diff(x, y, f"{path}[{i}]")
    return f"{path}: reference {str(a)[:80]} != trial {str(b)[:80]}"


def trial(config: str, root: Path, ref: dict[str, Any], hits: dict[str, int], mode: str,
          rng: random.Random, kills_per_run: float, ref_seconds: float) -> dict[str, Any]:
    """One killed-and-resumed run; returns its record (`ok`, `kills`, `sessions`, `error`, ...)."""
    run, cache = root / "run", root / "cache"
    total = max(1, sum(hits.values()))
    rec: dict[str, Any] = {"mode": mode, "kills": 0, "sessions": 0, "ok": False, "error": None}
    if mode == "point":
        name = rng.choice(sorted(hits))
        rec["target"] = f"{name}@{rng.randint(1, hits[name])}"
    elif mode == "random":
        rec["p"] = min(0.5, kills_per_run / total)
        rec["seed"] = seed = rng.randrange(1 << 30)
    else:  # timer: SIGKILL from outside after a uniform delay, up to `kills_per_run` times
        rec["delays"] = [round(rng.uniform(0.5, ref_seconds), 2) for _ in range(max(1, round(kills_per_run)))]
    t0 = time.perf_counter()
    while True:
        # until config.yaml lands the run has not started (killed in start-up): the same command again
        first = rec["sessions"] == 0 or not (run / "config.yaml").exists()
        args = ["run", config, "--run-dir", str(run)] if first else ["run", "--resume", str(run)]
        env: dict[str, str] = {}
        delay = None
        if mode == "timer" and rec["sessions"] < len(rec["delays"]):
            delay = rec["delays"][rec["sessions"]]
        if rec["sessions"] < MAX_SESSIONS:
            if mode == "point" and rec["sessions"] == 0:
                env["MULTITEACHER_KILL_AT"] = rec["target"]
            elif mode == "random":
                env["MULTITEACHER_KILL_RANDOM"] = f"{rec['p']}:{seed + rec['sessions']}"
        r = run_cli(args, cache, env, kill_after=delay)
        rec["sessions"] += 1
        if r.returncode == -9:
            rec["kills"] += 1
            continue
        if r.returncode != 0:
            rec["error"] = f"session {rec['sessions']} exited {r.returncode}: " + " | ".join(
                r.stderr.strip().splitlines()[-3:])
            break
        got = read_results(run)
        leftovers = leftover_temp_files(run) + leftover_temp_files(cache)
        if got != ref:
            rec["error"] = "results differ from the reference at " + first_diff(ref, got)
        elif leftovers:
            rec["error"] = f"{len(leftovers)} temp file(s) left, e.g. {leftovers[0]}"
        else:
            rec["ok"] = True
        break
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def describe(rec: dict[str, Any]) -> str:
    if rec["mode"] == "point":
        return rec["target"]
    if rec["mode"] == "random":
        return f"p={rec['p']:.4g} seed={rec['seed']}"
    return "after " + "s, ".join(map(str, rec["delays"])) + "s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="trials per recipe (default 10)")
    ap.add_argument("--recipes", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--kills", type=float, default=2.0, help="expected kills per run in random mode (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/reliability",
                    help="working directory (default runs/reliability; passing trials' directories are removed)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    summary: dict[str, Any] = {}
    failed = False
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        if name not in CONFIGS:
            ap.error(f"unknown recipe {name!r}; choose from {', '.join(CONFIGS)}")
        config = str(REPO / CONFIGS[name])
        if not Path(config).exists():
            print(f"[{name}] {CONFIGS[name]} does not exist yet — skipped", flush=True)
            summary[name] = {"skipped": True}
            continue
        root = out / name
        shutil.rmtree(root, ignore_errors=True)
        print(f"[{name}] reference run ...", flush=True)
        t0 = time.perf_counter()
        r = run_cli(["run", config, "--run-dir", str(root / "ref" / "run")], root / "ref" / "cache",
                    trace=root / "hits.json")
        if r.returncode != 0:
            print(f"[{name}] reference run failed ({r.returncode}): {r.stderr.strip()[-2000:]}", flush=True)
            summary[name] = {"trials": 0, "passes": 0, "error": "reference run failed"}
            failed = True
            continue
        ref_seconds = time.perf_counter() - t0
        ref = read_results(root / "ref" / "run")
        hits = {k: v for k, v in json.loads((root / "hits.json").read_text()).items() if v > 0}
        print(f"[{name}] reference {ref_seconds:.0f}s; kill points hit: "
              + ", ".join(f"{k}×{v}" for k, v in sorted(hits.items())), flush=True)
        recs = []
        for t in range(args.trials):
            mode = MODES[t % len(MODES)]
            rec = trial(config, root / f"t{t:02d}", ref, hits, mode, rng, args.kills, ref_seconds)
            recs.append(rec)
            what = describe(rec)
            status = "pass" if rec["ok"] else f"FAIL: {rec['error']}"
            print(f"[{name}] trial {t:2d} {rec['mode']:6s} {what:34s} kills={rec['kills']} "
                  f"sessions={rec['sessions']} {rec['seconds']:6.1f}s  {status}", flush=True)
            if rec["ok"]:
                shutil.rmtree(root / f"t{t:02d}", ignore_errors=True)
            else:
                failed = True
        summary[name] = {"trials": len(recs), "passes": sum(r["ok"] for r in recs),
                         "by_mode": {m: sum(r["mode"] == m for r in recs) for m in MODES},
                         "killed_trials": sum(r["kills"] > 0 for r in recs),
                         "kills": sum(r["kills"] for r in recs), "sessions": sum(r["sessions"] for r in recs),
                         "hits": hits, "records": recs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(f"{'recipe':8s} {'trials':>6s} {'passes':>6s} {'killed':>6s} {'kills':>5s} {'sessions':>8s}")
    for name, s in summary.items():
        if s.get("skipped"):
            print(f"{name:8s} {'-':>6s} {'-':>6s}  (no tiny config yet)")
            continue
        print(f"{name:8s} {s['trials']:6d} {s['passes']:6d} {s.get('killed_trials', 0):6d} "
              f"{s.get('kills', 0):5d} {s.get('sessions', 0):8d}")
    print(f"\n{'FAILED' if failed else 'all trials passed'}; details: {out / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
