"""A resumable sweep: objectives × seeds under one fixed budget, then tables and paired tests.

    python -m multiteacher.recipes.rerank.sweep recipes/rerank-trecdl.yaml --out runs/sweep-fold-a \\
        --objectives bce hinge infonce marginmse ranknet adrmse --seeds 0 1 2 [--set fit.max_steps=150]

Each (objective, seed) is one ordinary run in `<out>/<objective>-s<seed>/`: a finished run (with
`results.json`) is skipped, a started one is resumed from its checkpoint, so the sweep survives being
killed and continues across sessions. `--summarize-only` just rebuilds the summary.

The summary (`summary.json`, `summary.md`) holds, per test set: mean ± std over seeds of each
measure for every objective, the teachers and the untrained student; the CPU/GPU wall time per run;
and paired randomisation tests on per-query values (averaged over seeds), Holm-corrected within each
family: every objective vs every other, every objective vs the fused teacher, vs the best single
teacher (chosen on validation), and vs the untrained student.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from multiteacher.errors import ConfigError, UserError
from multiteacher.io import atomic_write_json, atomic_write_text
from multiteacher.recipes.rerank.objectives import OBJECTIVE_NAMES, PAPER_OBJECTIVES
from multiteacher.recipes.rerank.splits import first_stage_label
from multiteacher.report import mean_std

OBJECTIVES = PAPER_OBJECTIVES  # the sweep's default: the paper's six objectives, from the one registry


def run_sweep(
    config: str,
    out: Path,
    objectives: list[str],
    seeds: list[int],
    overrides: list[str],
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> list[Path]:
    """Run (or resume, or skip) every (objective, seed); returns the run directories.

    Args:
        config: the recipe YAML.
        out: the sweep folder (`<out>/<objective>-s<seed>/`).
        objectives: objective names.
        seeds: seeds.
        overrides: `--set` overrides for every run.
        data_dir: data directory (default: resolved).
        cache_dir: cache directory (default: resolved).

    Returns:
        The run directories.

    Example:
        >>> run_sweep("recipes/rerank-trecdl.yaml", Path("runs/a"), ["marginmse"], [0], [])  # doctest: +SKIP
    """
    from multiteacher.config import load_config
    from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir
    from multiteacher.runs import execute_run

    dirs = []
    for obj, seed in itertools.product(objectives, seeds):
        run_dir = out / f"{obj}-s{seed}"
        dirs.append(run_dir)
        if (run_dir / "results.json").exists():
            print(f"[sweep] {run_dir.name}: done, skipped", flush=True)
            continue
        cfg = load_config(
            config, [*overrides, f"objective={obj}", f"seed={seed}", f"name={Path(config).stem}-{obj}-s{seed}"]
        )
        resume = (run_dir / "config.yaml").exists()
        print(f"[sweep] {run_dir.name}: {'resuming' if resume else 'starting'}", flush=True)
        execute_run(cfg, run_dir, resolve_data_dir(data_dir), resolve_cache_dir(cache_dir), resume=resume)
    return dirs


def _avg_per_query(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = set(dicts[0]).intersection(*dicts[1:])
    return {q: sum(d[q] for d in dicts) / len(dicts) for q in keys}


def summarize(run_dirs: list[Path], out: Path, measure: str = "nDCG@10", n_resamples: int = 10_000) -> dict[str, Any]:
    """Tables and paired tests from finished runs' `results.json` and `per_query.json`.

    Args:
        run_dirs: the runs to summarise (unfinished ones are left out).
        out: where `summary.json` and `summary.md` go.
        measure: the measure of the paired tests.
        n_resamples: randomisation-test resamples.

    Returns:
        The summary (also written to `out`).

    Example:
        >>> summarize(sorted(Path("runs/a").glob("*-s*")), Path("runs/a"))  # doctest: +SKIP
    """
    from multiteacher.stats import holm, paired_randomization_test

    done = [d for d in run_dirs if (d / "results.json").exists() and (d / "per_query.json").exists()]
    if not done:
        raise UserError(f"{out}: no finished runs to summarise yet")
    systems: dict[str, dict[str, dict[str, list]]] = {}  # set -> system -> measure -> [per-seed mean]
    perq: dict[str, dict[str, list[dict[str, float]]]] = {}  # set -> system -> [per-seed per-query (measure)]
    val_means: dict[str, list[float]] = {}
    first_stages: dict[str, str] = {}  # test set key -> the first stage it re-ranked
    times: dict[str, list[float]] = {}
    origin: dict[str, Path] = {}  # objective -> the sweep directory its runs come from
    for d in done:
        res = json.loads((d / "results.json").read_text())
        pq = json.loads((d / "per_query.json").read_text())
        obj = res["config"]["objective"]
        if origin.setdefault(obj, d.parent) != d.parent:  # seeds of two sweeps must not average together
            raise ConfigError(f"objective {obj!r} comes from both {origin[obj]} and {d.parent} — "
                              "pass the runs of one sweep per objective")
        times.setdefault(obj, []).append(float(res.get("wall_time_s", 0.0)))
        main_fs = first_stage_label(res["config"].get("data", {}).get("first_stage", "bm25"))
        for spec in pq["student"].get("test", {}):
            first_stages[spec] = spec.split("@", 1)[1] if "@" in spec else main_fs
        for spec, r in pq["student"].get("test", {}).items():
            _add(systems, perq, spec, f"student:{obj}", r, measure)
        for spec, r in pq.get("untrained", {}).get("test", {}).items():
            _add(systems, perq, spec, "student:untrained", r, measure)
        for key, r in pq.get("baselines", {}).items():
            split, spec, name = key.split("|")
            if split == "test":
                _add(systems, perq, spec, name, r, measure)
            elif split == "val" and name.startswith("teacher:") and name not in ("teacher:fused", "teacher:listwise"):
                val_means.setdefault(name, []).append(r["mean"][measure])
    best_single = max(val_means, key=lambda n: sum(val_means[n]) / len(val_means[n])) if val_means else None
    summary: dict[str, Any] = {
        "measure": measure,
        "runs": [str(d) for d in done],
        "best_single_teacher_on_val": best_single,
        "wall_time_s": {k: mean_std(v) for k, v in times.items()},
        "sets": {},
    }
    for spec, by_sys in systems.items():
        table = {s: {m: mean_std(v) for m, v in ms.items()} for s, ms in by_sys.items()}
        avg = {s: _avg_per_query(v) for s, v in perq[spec].items()}
        students = sorted(s for s in avg if s.startswith("student:") and s != "student:untrained")
        families: dict[str, dict[str, tuple[str, str]]] = {"objective_vs_objective": {}}
        for a, b in itertools.combinations(students, 2):
            families["objective_vs_objective"][f"{a} vs {b}"] = (a, b)
        fs = first_stages.get(spec, "bm25")
        refs = ("teacher:fused", best_single, "student:untrained", "teacher:listwise", "bm25")
        for ref in refs + ((fs,) if fs not in refs else ()):  # the first stage re-ranked is a reference
            if ref and ref in avg:
                families[f"vs {ref}"] = {f"{s} vs {ref}": (s, ref) for s in students}
        tests: dict[str, Any] = {}
        for fam, pairs in families.items():
            raw = {
                k: paired_randomization_test(avg[a], avg[b], n_resamples=n_resamples, seed=0)
                for k, (a, b) in pairs.items()
            }
            adj = holm({k: r.p_value for k, r in raw.items()}) if raw else {}
            tests[fam] = {k: {"diff": r.statistic, "p": r.p_value, "p_holm": adj[k], "n": r.n} for k, r in raw.items()}
        summary["sets"][spec] = {"table": table, "tests": tests, "first_stage": fs}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    return summary


def _add(systems: dict, perq: dict, spec: str, name: str, r: dict, measure: str) -> None:
    s = systems.setdefault(spec, {}).setdefault(name, {})
    for m, v in r["mean"].items():
        s.setdefault(m, []).append(v)
    perq.setdefault(spec, {}).setdefault(name, []).append(r["per_query"][measure])


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of a summary (generated, never typed by hand).

    Args:
        summary: what `summarize` returns.

    Returns:
        Markdown text.

    Example:
        >>> print(summary_markdown(summarize(dirs, out)))  # doctest: +SKIP
    """
    lines = []
    for spec, s in summary["sets"].items():
        measures = sorted({m for row in s["table"].values() for m in row})
        lines += [
            f"### Test set {spec.split('@')[0]}, first stage {s.get('first_stage', 'bm25')} "
            "(mean ± std over seeds; n = runs)",
            "",
            "| system | " + " | ".join(measures) + " | n |",
            "|---|" + "---|" * (len(measures) + 1),
        ]
        order = sorted(s["table"], key=lambda k: (not k.startswith("student:"), k))
        for name in order:
            row = s["table"][name]
            n = max(v[2] for v in row.values())
            cells = [f"{row[m][0]:.3f} ± {row[m][1]:.3f}" if m in row else "" for m in measures]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {n} |")
        lines += [
            "",
            f"Paired randomisation tests on per-query {summary['measure']} (seed-averaged), "
            "Holm-corrected within each family:",
            "",
            "| comparison | Δ | p | p (Holm) |",
            "|---|---|---|---|",
        ]
        for tests in s["tests"].values():
            for k, t in tests.items():
                star = " *" if t["p_holm"] < 0.05 else ""
                lines.append(f"| {k} | {t['diff']:+.3f} | {t['p']:.4f} | {t['p_holm']:.4f}{star} |")
        lines.append("")
    if summary.get("best_single_teacher_on_val"):
        lines.append(f"Best single teacher on validation: `{summary['best_single_teacher_on_val']}`.")
    lines += [
        "",
        "Wall time per run (s, mean ± std, n): "
        + ", ".join(f"{k} {v[0]:.0f} ± {v[1]:.0f} ({v[2]})" for k, v in sorted(summary["wall_time_s"].items())),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The sweep's command line (see the module docstring).

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status (2 with one line on stderr for a user error).

    Example:
        >>> main(["recipes/rerank-trecdl.yaml", "--out", "runs/a", "--summarize-only"])  # doctest: +SKIP
    """
    p = argparse.ArgumentParser(prog="python -m multiteacher.recipes.rerank.sweep", description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--objectives", nargs="+", default=OBJECTIVES, choices=OBJECTIVE_NAMES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument(
        "--runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="with --summarize-only: summarise these run directories (e.g. supervised runs of one sweep and "
        "distillation runs of another, on the same training queries) instead of --out's objectives x seeds",
    )
    p.add_argument("--resamples", type=int, default=10_000)
    a = p.parse_args(argv)
    out = Path(a.out)
    try:
        if a.runs and not a.summarize_only:
            raise ConfigError("--runs: only with --summarize-only (it names finished runs to compare)")
        if a.summarize_only:
            dirs = a.runs or [out / f"{o}-s{s}" for o, s in itertools.product(a.objectives, a.seeds)]
        else:
            dirs = run_sweep(a.config, out, a.objectives, a.seeds, a.overrides, a.data_dir, a.cache_dir)
        s = summarize(dirs, out, n_resamples=a.resamples)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_markdown(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
