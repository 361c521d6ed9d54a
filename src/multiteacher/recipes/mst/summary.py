"""Tables for MST runs: mean ± std over folds, paired tests against vanilla KD, routing usage.

    python -m multiteacher.recipes.mst.summary RUN_DIR_OR_RESULTS_JSON ... [--out table.md] [--plots DIR]

Reads each run's results.json, or — for a run that has not finished — the rows of its finished
stages (stages/*.json), so partial runs can be inspected too.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from multiteacher.errors import DataError
from multiteacher.recipes.mst.plots import ORDER, plot_rows
from multiteacher.report import mean_std
from multiteacher.stats import holm, paired_randomization_test, paired_t_test

EXTRA = ["teacher_mm", "teacher_cross", "mst_s1_mm_teacher", "mst_s1_cross_teacher"]


def load_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of results.json files / run directories (falling back to finished stages)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        res = p / "results.json" if p.is_dir() else p
        if res.is_file() and res.suffix == ".json":
            data = json.loads(res.read_text())
            rows += [{**r, "seed": data.get("seed", 0)} for r in data["rows"]]
        elif p.is_dir() and (p / "stages").is_dir():
            seed = _seed_of(p)
            for f in sorted((p / "stages").glob("*.json")):
                rows += [{**r, "seed": seed} for r in json.loads(f.read_text())["result"]["rows"]]
        else:
            raise DataError(f"{p}: neither a results.json nor a run directory with stages/")
    # one row per (direction, method, fold, seed): shared teachers may appear in several runs
    seen: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for r in rows:
        seen[(r["direction"], r["method"], r["fold"], r["seed"])] = r
    return list(seen.values())


def _seed_of(run_dir: Path) -> int:
    import yaml

    cfg = run_dir / "config.yaml"
    return int((yaml.safe_load(cfg.read_text()) or {}).get("seed", 0)) if cfg.exists() else 0


def _fold_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average numeric fields over seeds within (direction, method, fold)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["direction"], r["method"], r["fold"])].append(r)
    out = []
    for (d, m, f), rs in groups.items():
        keys = set.intersection(*(set(r) for r in rs))
        row: dict[str, Any] = {"direction": d, "method": m, "fold": f, "n_seeds": len(rs)}
        for k in keys:
            if isinstance(rs[0][k], float | int) and k != "seed":
                row[k] = sum(float(r[k]) for r in rs) / len(rs)
        out.append(row)
    return out


def _ms(vals: list[float]) -> str:
    mu, sd, _ = mean_std(vals)
    return f"{mu:.3f} ± {sd:.3f}"


def table(rows: list[dict[str, Any]], reference: str = "kd_mm") -> str:
    """Markdown: per direction, methods with acc and weighted F1 (mean ± std over folds; with several
    seeds, each fold's value is first averaged over the seeds that ran that method), the mean
    paired difference in accuracy vs `reference`, paired t-test and sign-flip p-values (Holm
    over the methods of a direction), and the folds counted."""
    by: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in _fold_means(rows):  # several seeds: each fold's value is the mean over seeds
        by[r["direction"]][r["method"]][r["fold"]] = r
    out = []
    for d in sorted(by):
        ref = by[d].get(reference, {})
        methods = [m for m in ORDER + EXTRA if m in by[d]] + sorted(set(by[d]) - set(ORDER) - set(EXTRA))
        tests: dict[str, tuple[float, float, float, int]] = {}
        for m in methods:
            common = sorted(set(ref) & set(by[d][m]))
            if m == reference or m in EXTRA or len(common) < 2:
                continue
            a = [by[d][m][f]["acc"] for f in common]
            b = [ref[f]["acc"] for f in common]
            tests[m] = (sum(x - y for x, y in zip(a, b)) / len(a), paired_t_test(a, b).p_value,
                        paired_randomization_test(a, b).p_value, len(common))
        adj = holm({m: t[1] for m, t in tests.items()}) if tests else {}
        second, label = ("f1", "weighted F1") if all("f1" in r for m in by[d].values() for r in m.values()) \
            else ("miou", "mIoU")
        first = "acc" if second == "f1" else "pixel acc"
        out += [f"### {d} (student: {d.split('->')[1]})", "",
                f"| method | {first} | {label} | Δacc vs {reference} | p (t) | p (t, Holm) | p (sign-flip) | folds |",
                "|---|---|---|---|---|---|---|---|"]
        for m in methods:
            accs = [r["acc"] for r in by[d][m].values()]
            f1s = [r[second] for r in by[d][m].values()]
            if m in tests:
                diff, pt, pr, n = tests[m]
                extra = f"{diff:+.3f} | {pt:.3f} | {adj[m]:.3f} | {pr:.3f} | {n}"
            else:
                extra = f"— | — | — | — | {len(accs)}"
            out.append(f"| {m} | {_ms(accs)} | {_ms(f1s)} | {extra} |")
        usage: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for m in ("mst", "mst_soft", "mst_nomask"):
            for r in by[d].get(m, {}).values():
                for k, v in r.items():
                    if k.startswith("route/"):
                        usage[m][k.removeprefix("route/")].append(v)
        if usage:
            out += ["", "Routing usage on the test set (share of instances whose top-1 teacher it is):", ""]
            for m, u in usage.items():
                out.append(f"- {m}: " + ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in sorted(u.items())))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plots", type=Path)
    args = ap.parse_args(argv)
    rows = load_rows(args.runs)
    text = table(rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.plots:
        plot_rows(_fold_means(rows), args.plots)


if __name__ == "__main__":
    main()
