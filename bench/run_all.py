"""Run every benchmark of issue 8, write `bench/results.json` and print one table of ratios.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.run_all [--quick] [B1 B5 ...]

`--quick` (`make bench-quick`, a few minutes): every row at reduced sizes and repeats (`BENCH_QUICK=1`,
read by each module through `bench.common.pick`), written to `bench/results-quick.json`;
`bench/results.json` is left alone.

Each `bench/bN_*.py` module (see `bench/common.py` for the interface) runs in turn; a benchmark whose
module is not there yet, or whose module raises `Skip`, is listed as `skipped: <reason>`. A module
that fails is listed as failed (with its error) and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

from bench.common import ROOT, Row, Skip, format_table, machine_info, results_path, setup_threads, write_results

BENCHES = {
    "B1": "engine overhead: fit loop vs a bare PyTorch loop",
    "B2": "cross-encoder training vs sentence-transformers CrossEncoderTrainer",
    "B3": "re-ranking vs sentence-transformers CrossEncoder.predict",
    "B4": "NGC parallel edges: process executor vs threads",
    "B5": "teacher cache: cached KD epoch vs student-only and live teachers",
    "B6": "memory: teacher-cache fill (and NGC pseudo-labels) at 1x and 4x",
    "B7": "teacher scoring into the cache vs SentenceTransformer.encode / CrossEncoder.predict",
    "B8": "cross-encoder training step: achieved FLOP/s vs this machine's matmul peak",
}


def modules_for(bench: str) -> list[str]:
    return sorted(p.stem for p in ROOT.glob(f"{bench.lower()}_*.py"))


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if "--quick" in argv:
        argv.remove("--quick")
        os.environ["BENCH_QUICK"] = "1"
    setup_threads(1)
    t_all = time.perf_counter()
    args = [b.upper() for b in argv]
    wanted = args or list(BENCHES)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    failed = False
    for bench in wanted:
        mods = modules_for(bench)
        if not mods:
            skipped[bench] = f"no bench/{bench.lower()}_*.py yet ({BENCHES.get(bench, '?')})"
            print(f"{bench} skipped: {skipped[bench]}", flush=True)
            continue
        for name in mods:
            t0 = time.perf_counter()
            print(f"{bench} {name} ...", flush=True)
            try:
                got = importlib.import_module(f"bench.{name}").run()
                rows += got
                print(f"{bench} {name}: {len(got)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
            except Skip as e:
                skipped[bench if len(mods) == 1 else f"{bench} {name}"] = str(e)
                print(f"{bench} skipped: {e}", flush=True)
            except Exception as e:  # one broken benchmark must not hide the others
                failed = True
                traceback.print_exc()
                skipped[f"{bench} {name}"] = f"FAILED: {type(e).__name__}: {e}"
    info = machine_info()
    write_results(rows, skipped, info, merge=bool(args))  # a subset keeps the other benches' rows
    print()
    print(format_table(rows, skipped, info))
    print(f"\nwritten: {results_path()} ({time.perf_counter() - t_all:.0f} s in all)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
