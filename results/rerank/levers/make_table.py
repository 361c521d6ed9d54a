"""The levers table of issue 17: which lever moves the rerank student, and by how much.

Reads finished runs of the rerank recipe (each a run directory with results.json, metrics.jsonl and
per_query.json), groups them by lever label (runs of one label = seeds), and writes next to this file

- levers.md / levers.json: per lever, the validation nDCG@10 at the best step and the test measures of the
  checkpoint that validation picked (mean ± std over seeds), the reference systems of the same run (the
  first stage, the MiniLM bi-encoder, the fused teacher, the untrained student), and paired randomisation
  tests (10,000 sign flips, per query, seeds averaged per query first) of each lever's student against the
  first stage and against the MiniLM bi-encoder on the same candidates, Holm-corrected over the levers;
- curves.png: validation nDCG@10 against training steps for every run, with the first stage and the teachers
  on the validation queries as horizontal lines (so convergence is seen, not assumed).

Usage (from the repository root):

    .venv/bin/python results/rerank/levers/make_table.py 'TREC only=runs/levers/trec-only' \\
        '+1k MS MARCO=runs/levers/mm1k' ...

The exact commands of the committed table are in results/rerank/levers/run_levers.sh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MEASURES = ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)")


def _val_curve(run_dir: Path) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "val/nDCG@10" in rec and rec.get("fit") == "student":
            out.append((int(rec["step"]), float(rec["val/nDCG@10"])))
    return out


def _per_query(entry: dict[str, Any], measure: str) -> dict[str, float]:
    return {q: float(v) for q, v in entry["per_query"][measure].items()}


def load_run(run_dir: Path) -> dict[str, Any]:
    """One finished run: config, validation curve, and per test set (one per first stage) the student's and
    the reference systems' per-query values."""
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    pq = json.loads((run_dir / "per_query.json").read_text(encoding="utf-8"))
    cfg = res.get("config") or {}
    keys = sorted(pq["student"].get("test", {}))
    if not keys:
        raise SystemExit(f"{run_dir}: no test scores in per_query.json (eval.test was off?)")
    main_fs = cfg.get("data", {}).get("first_stage", "bm25")
    tests = {}
    for key in keys:
        refs = {}
        for bkey, entry in pq["baselines"].items():
            split, set_key, name = bkey.split("|")
            if split == "test" and set_key == key:
                refs[name] = entry
        if key in pq.get("untrained", {}).get("test", {}):
            refs["student:untrained"] = pq["untrained"]["test"][key]
        fs = key.split("@", 1)[1] if "@" in key else (main_fs if isinstance(main_fs, str) else "+".join(main_fs))
        tests[key] = {"first_stage": fs, "student": pq["student"]["test"][key], "refs": refs,
                      "interpolated": pq.get("interpolated", {}).get("test", {}).get(key)}
    val_refs = {k.split("|")[2]: v["mean"]["nDCG@10"] for k, v in pq["baselines"].items() if k.startswith("val|")}
    m = res["metrics"]
    return {
        "dir": str(run_dir),
        "seed": res.get("seed", cfg.get("seed")),
        "tests": tests,
        "val_refs": val_refs,
        "curve": _val_curve(run_dir),
        "best_step": m.get("train/best_step"),
        "alpha": m.get("eval/interpolation_alpha"),
        "train_seconds": (res.get("timings") or {}).get("train_seconds"),
    }


def _mean_std(xs: list[float]) -> str:
    from multiteacher.report import mean_std

    mean, std, n = mean_std(xs)
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def _p(p: float) -> str:
    """A p value at the resolution of 10,000 sign flips."""
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _seed_mean(entries: list[dict[str, Any]], measure: str) -> dict[str, float]:
    per = [_per_query(e, measure) for e in entries]
    qids = sorted(set.intersection(*(set(p) for p in per)))
    return {q: statistics.mean(p[q] for p in per) for q in qids}


def build(groups: dict[str, list[dict[str, Any]]], key: str, vs: str | None = None) -> dict[str, Any]:
    """Rows and tests for the levers (label -> runs) on one test set key (`<set>` or `<set>@<first stage>`);
    with `vs` (a label) also each other lever against that lever (same variant, seed-averaged per query)."""
    from multiteacher.stats import holm, paired_randomization_test

    first = next(iter(groups.values()))[0]
    fs_name = first["tests"][key]["first_stage"]
    rows, tests = [], {}
    variants = [("student", "")]
    if all(r["tests"][key]["interpolated"] for runs in groups.values() for r in runs):
        variants.append(("interpolated", " + first stage"))
    for label, all_runs in groups.items():
        for system, suffix in variants:
            runs = [{**r, **r["tests"][key]} for r in all_runs]
            entries = [r[system] for r in runs]
            name = label + suffix
            row = {"label": name, "seeds": [r["seed"] for r in runs], "dirs": [r["dir"] for r in runs]}
            row["val_best"] = [max(v for _, v in r["curve"]) if r["curve"] and not suffix else None for r in runs]
            row["best_step"] = [r["best_step"] for r in runs]
            row["alpha"] = [r["alpha"] for r in runs] if suffix else None
            row["train_seconds"] = [r["train_seconds"] for r in runs]
            for meas in MEASURES:
                row[f"test/{meas}"] = [e["mean"][meas] for e in entries]
            for ref in (fs_name, "teacher:minilm"):
                base = runs[0]["refs"].get(ref)
                if base is None:
                    continue
                for meas in MEASURES:
                    res = paired_randomization_test(_seed_mean(entries, meas), _per_query(base, meas), seed=0)
                    tests[(name, ref, meas)] = (statistics.mean(row[f"test/{meas}"]) - base["mean"][meas],
                                                res.p_value)
            if vs is not None and label != vs:
                other = [{**r, **r["tests"][key]}[system] for r in groups[vs]]
                for meas in MEASURES:
                    mine, theirs = _seed_mean(entries, meas), _seed_mean(other, meas)
                    res = paired_randomization_test(mine, theirs, seed=0)
                    delta = statistics.mean(mine[q] - theirs[q] for q in sorted(set(mine) & set(theirs)))
                    tests[(name, vs + suffix, meas)] = (delta, res.p_value)
            rows.append(row)
    holm_p: dict[tuple[str, str, str], float] = {}
    for ref in (fs_name, "teacher:minilm", *((vs, vs + " + first stage") if vs else ())):
        for meas in MEASURES:
            keys = [k for k in tests if k[1] == ref and k[2] == meas]
            if keys:
                holm_p.update(zip(keys, holm([tests[k][1] for k in keys])))
    refs = {name: e["mean"] for name, e in first["tests"][key]["refs"].items()}
    return {"first_stage": fs_name, "test_set": key.split("@", 1)[0], "rows": rows, "refs": refs,
            "val_refs": first["val_refs"], "vs": vs,
            "tests": [{"label": k[0], "vs": k[1], "measure": k[2], "delta": v[0], "p": v[1], "p_holm": holm_p[k]}
                      for k, v in tests.items()]}


def markdown(table: dict[str, Any]) -> str:
    """One levers table (one test set and first stage) as markdown."""
    fs, vs = table["first_stage"], table.get("vs")
    lines = [
        f"## Test {table['test_set']}, candidates: {fs} top-100",
        "",
        "Student rows: test measures of the checkpoint with the best validation nDCG@10 (mean ± std over seeds "
        "when several); `+ first stage`: the student's and the first stage's per-query z-scores mixed with the "
        "weight a picked on validation (`eval.interpolate`). Δ / p: paired randomisation test (10,000 sign flips, "
        f"seed 0) of the student's per-query values (averaged over seeds) against `{fs}` and against the MiniLM "
        "bi-encoder on the same candidates; "
        "p Holm-corrected over the levers, per reference and measure."
        + (f" `Δ vs {vs}`: the same test of each lever against `{vs}` (its seed-averaged per-query values, the "
           "same variant: student against student, mixed against mixed)." if vs else ""),
        "",
        "| lever | seeds | best val nDCG@10 | best step | test nDCG@10 | test RR@10 | test AP | Δ nDCG vs "
        f"{fs} (p Holm) | Δ nDCG vs MiniLM (p Holm) |" + (f" Δ nDCG vs {vs} (p Holm) |" if vs else "")
        + " train wall s (shared CPU) |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if vs else "") + "---|",
    ]
    by = {(t["label"], t["vs"], t["measure"]): t for t in table["tests"]}
    for r in table["rows"]:
        cells = []
        suffix = " + first stage" if r.get("alpha") else ""
        for ref in (fs, "teacher:minilm", *((vs + suffix,) if vs else ())):
            t = by.get((r["label"], ref, "nDCG@10"))
            cells.append("—" if t is None else f"{t['delta']:+.3f} ({_p(t['p_holm'])})")
        val = [v for v in r["val_best"] if v is not None]
        secs = [s for s in r["train_seconds"] if s]
        label = r["label"] + (f" (a = {', '.join(f'{a:g}' for a in r['alpha'])})" if r.get("alpha") else "")
        lines.append(
            f"| {label} | {len(r['seeds'])} | {_mean_std(val) if val else '—'} | "
            f"{', '.join(str(int(s)) for s in r['best_step'] if s is not None)} | {_mean_std(r['test/nDCG@10'])} | "
            f"{_mean_std(r['test/RR(rel=2)@10'])} | {_mean_std(r['test/AP(rel=2)'])} | {' | '.join(cells)} | "
            f"{round(statistics.mean(secs)) if secs else '—'} |"
        )
    lines += ["", "Reference systems (same candidates, no training; validation = the committed validation queries):",
              "", "| system | val nDCG@10 | test nDCG@10 | test RR@10 | test AP |", "|---|---|---|---|---|"]
    for name, m in table["refs"].items():
        v = table["val_refs"].get(name)
        lines.append(f"| {name} | {'—' if v is None else f'{v:.3f}'} | {m['nDCG@10']:.3f} | "
                     f"{m['RR(rel=2)@10']:.3f} | {m['AP(rel=2)']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[dict[str, Any]]], val_refs: dict[str, float], path: Path) -> None:
    """Validation nDCG@10 against steps, one line per run, references dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, runs) in enumerate(groups.items()):
        for j, r in enumerate(runs):
            xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
            ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", alpha=0.9 if j == 0 else 0.5,
                    label=label if j == 0 else None)
    for k, (name, v) in enumerate(sorted(val_refs.items())):
        if name.startswith("teacher:") or "teacher" not in name:
            ax.axhline(v, ls="--", lw=1, color=f"C{(k + 5) % 10}", label=f"{name} (no training)")
    ax.set_xlabel("training step (32 pairs each)")
    ax.set_ylabel("validation nDCG@10")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    """CLI: label=run_dir arguments (a label repeated = more seeds of one lever)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (repeat a label for more seeds)")
    ap.add_argument("--out", default=str(HERE), help="output folder (default: next to this script)")
    ap.add_argument("--title", default="Levers of the rerank student", help="heading of the markdown file")
    ap.add_argument("--vs", default=None, help="a LABEL: also test every other lever against it")
    args = ap.parse_args(argv)
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"{item!r}: give LABEL=RUN_DIR")
        groups.setdefault(label, []).append(load_run(Path(path)))
    keys = sorted(set.intersection(*(set(r["tests"]) for runs in groups.values() for r in runs)))
    if args.vs is not None and args.vs not in groups:
        raise SystemExit(f"--vs {args.vs!r}: no such label; the labels are {sorted(groups)}")
    tables = [build(groups, key, args.vs) for key in keys]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = "".join(f" --{k} '{v}'" for k, v in (("out", args.out), ("title", args.title), ("vs", args.vs))
                   if v != ap.get_default(k))
    command = "python results/rerank/levers/make_table.py" + opts + " " + " ".join(f"'{x}'" for x in args.runs)
    from multiteacher.io import atomic_write_json, atomic_write_text

    text = f"# {args.title}\n\nMade by `{command}`.\n\n" + "\n".join(markdown(t) for t in tables)
    atomic_write_json(out / "levers.json", tables)
    atomic_write_text(out / "levers.md", text)
    plot(groups, tables[0]["val_refs"], out / "curves.png")
    print((out / "levers.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
