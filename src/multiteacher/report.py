"""Reports: results.json files -> markdown tables (mean ± std over seeds/folds) and PNG plots.

`write_run_report(run_dir)` writes one run's `report.md` and `plots/*.png` (training curves and
validation metrics from metrics.jsonl). `aggregate(results)` groups the `rows` of one or several
results files by their non-numeric fields (ignoring `seed` and `fold`) and gives mean ± std of
every numeric field; `update_readme` pastes a generated table between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` so README tables are never typed by hand.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from multiteacher.errors import DataError
from multiteacher.io import atomic_savefig, atomic_write_text, read_metrics
from multiteacher.schema import read_results

AGGREGATED_OVER = ("seed", "fold")


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Read and validate results.json files (a run directory stands for its results.json).

    Args:
        paths: run directories or results.json files.

    Returns:
        One dict per file, following `multiteacher.schema.RunResults` (defaults filled in, recipe
        keys kept).

    Raises:
        DataError: a missing or invalid file, or one that does not follow the schema (one line
            naming the file and the fields).

    Example:
        >>> [r["name"] for r in load_results([Path("results/example/s0")])]  # doctest: +SKIP
        ['example-s0']
    """
    return [read_results(p).model_dump() for p in paths]


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std with n-1, n); std 0 for a single value.

    Args:
        values: at least one number.

    Returns:
        `(mean, std, n)`.

    Example:
        >>> mean_std([1.0, 3.0])
        (2.0, 1.4142135623730951, 2)
    """
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def aggregate(results: list[dict[str, Any]], over: tuple[str, ...] = AGGREGATED_OVER) -> list[dict[str, Any]]:
    """Group rows (and top-level metrics) across results; numeric fields -> (mean, std, n).

    Rows group by their non-numeric fields except those in `over` (seeds and folds are what is
    averaged over); a result without rows stands for one row of its `metrics`.

    Args:
        results: results dicts (as `load_results` gives).
        over: fields that do not separate groups.

    Returns:
        One dict per group: its grouping fields, and `(mean, std, n)` per numeric field.

    Example:
        >>> aggregate([{"rows": [{"m": "kd", "seed": 0, "acc": 0.5}]}, {"rows": [{"m": "kd", "seed": 1, "acc": 0.7}]}])
        [{'m': 'kd', 'acc': (0.6, 0.14142135623730948, 2)}]
    """
    groups: dict[tuple[tuple[str, Any], ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    order: list[tuple[tuple[str, Any], ...]] = []
    for res in results:
        rows = res.get("rows") or [{"name": res.get("name"), **res.get("metrics", {})}]
        for row in rows:
            key = tuple((k, v) for k, v in row.items()
                        if k not in over and not _is_number(v))
            if key not in groups:
                order.append(key)
            for k, v in row.items():
                if k not in over and _is_number(v):
                    groups[key][k].append(float(v))
    table = []
    for key in order:
        entry: dict[str, Any] = dict(key)
        for k, vals in groups[key].items():
            entry[k] = mean_std(vals)
        table.append(entry)
    return table


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def format_table(table: list[dict[str, Any]], digits: int = 3) -> str:
    """Markdown table; numeric cells as `mean ± std` (n shown once, below, when constant).

    Args:
        table: groups from `aggregate`.
        digits: decimals of numeric cells.

    Returns:
        The markdown text.

    Example:
        >>> print(format_table([{"m": "kd", "acc": (0.6, 0.1, 2)}]).splitlines()[2])
        | kd | 0.600 ± 0.100 |
    """
    if not table:
        return "_no rows_\n"
    cols: list[str] = []
    for entry in table:
        cols += [k for k in entry if k not in cols]
    ns = {v[2] for e in table for v in e.values() if isinstance(v, tuple)}
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for e in table:
        cells = []
        for c in cols:
            v = e.get(c, "")
            if isinstance(v, tuple):
                mean, std, n = v
                cell = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")
                if len(ns) > 1:
                    cell += f" (n={n})"
                cells.append(cell)
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    foot = f"\nmean ± sample std over n={ns.pop()} runs/folds\n" if len(ns) == 1 and max(ns or {1}) > 1 else ""
    return "\n".join(lines) + "\n" + foot


def filter_rows(results: list[dict[str, Any]], where: dict[str, set[str]] | None) -> list[dict[str, Any]]:
    """Keep only rows whose field `k` (as a string) is one of `where[k]`, for every k.

    Args:
        results: results dicts.
        where: `{field: allowed values}` (from `parse_where`); None keeps everything.

    Returns:
        New results dicts with the filtered rows.

    Example:
        >>> filter_rows([{"rows": [{"k": "a"}, {"k": "b"}]}], {"k": {"a"}})
        [{'rows': [{'k': 'a'}]}]
    """
    if not where:
        return results
    out = []
    for res in results:
        rows = [r for r in res.get("rows", []) if all(str(r.get(k)) in vals for k, vals in where.items())]
        out.append({**res, "rows": rows})
    return out


def select_columns(table: list[dict[str, Any]], columns: list[str] | None) -> list[dict[str, Any]]:
    """Keep the grouping fields plus the named numeric columns (all when `columns` is None).

    Args:
        table: groups from `aggregate`.
        columns: numeric columns to keep.

    Returns:
        The narrowed table (groups left with no numeric column are dropped).

    Example:
        >>> select_columns([{"m": "kd", "acc": (1.0, 0.0, 1), "f1": (1.0, 0.0, 1)}], ["acc"])
        [{'m': 'kd', 'acc': (1.0, 0.0, 1)}]
    """
    if not columns:
        return table
    keep = [{k: v for k, v in e.items() if not isinstance(v, tuple) or k in columns} for e in table]
    return [e for e in keep if any(isinstance(v, tuple) for v in e.values())]


def parse_where(items: list[str] | None) -> dict[str, set[str]]:
    """Parse `--where` items: `["kind=direct,consensus", "node=depth"]` -> `{field: {values}}`.

    Args:
        items: `FIELD=V1,V2` strings.

    Returns:
        `{field: set of allowed values}`.

    Raises:
        DataError: an item without `=`.

    Example:
        >>> parse_where(["node=depth"])
        {'node': {'depth'}}
    """
    where: dict[str, set[str]] = {}
    for item in items or []:
        key, sep, vals = item.partition("=")
        if not sep:
            raise DataError(f"--where {item!r}: expected FIELD=VALUE[,VALUE...]")
        where.setdefault(key, set()).update(vals.split(","))
    return where


def lookup(res: dict[str, Any], key: str, source: str = "results.json") -> Any:
    """A dotted field of a results dict (`config.graph.hyperedges`); a missing one is a one-line error.

    Args:
        res: a results dict.
        key: the dotted field.
        source: what to call the file in the error.

    Returns:
        The field's value.

    Raises:
        DataError: the field is missing.

    Example:
        >>> lookup({"config": {"graph": {"hyperedges": True}}}, "config.graph.hyperedges")
        True
    """
    value: Any = res
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{source} of run {res.get('name')!r}: no field {key!r} — check --by")
        value = value[part]
    return value


def label_rows(results: list[dict[str, Any]], by: list[str] | None) -> list[dict[str, Any]]:
    """Put the `by` fields of each run into its rows first, so runs differing in them group apart.

    Args:
        results: results dicts.
        by: dotted results fields (`config.graph.hyperedges`); the last part names the column.

    Returns:
        New results dicts with labelled rows.

    Example:
        >>> label_rows([{"config": {"lr": 0.1}, "rows": [{"acc": 1.0}]}], ["config.lr"])[0]["rows"]
        [{'lr': '0.1', 'acc': 1.0}]
    """
    if not by:
        return results
    out = []
    for res in results:
        labels = {k.rsplit(".", 1)[-1]: str(lookup(res, k)) for k in by}
        out.append({**res, "rows": [{**labels, **row} for row in res.get("rows", [])]})
    return out


def report_markdown(paths: list[Path], digits: int = 3, where: dict[str, set[str]] | None = None,
                    columns: list[str] | None = None, by: list[str] | None = None) -> str:
    """Aggregated markdown table for several runs, with provenance (run count, seeds, commits).

    What `multiteacher report` prints: results are validated (`multiteacher.schema`), labelled by
    `by`, filtered by `where`, aggregated and narrowed to `columns`.

    Args:
        paths: run directories or results.json files.
        digits: decimals of numeric cells.
        where: row filter (from `parse_where`).
        columns: numeric columns to show.
        by: dotted results fields that also separate groups.

    Returns:
        Markdown text.

    Raises:
        DataError: a missing or invalid results.json (one line naming the file and fields).

    Example:
        >>> print(report_markdown([Path("results/example/s0")]))  # doctest: +SKIP
    """
    results = filter_rows(label_rows(load_results(paths), by), where)
    table = format_table(select_columns(aggregate(results), columns), digits)
    commits = sorted({r.get("commit", "unknown") for r in results})
    seeds = sorted({r.get("seed") for r in results})
    shown = ", ".join(c[:12] + ("+dirty" if c.endswith("+dirty") else "") for c in commits)
    return table + f"\nruns: {len(results)}; seeds: {seeds}; commits: {shown}\n"


def update_readme(readme: Path, marker: str, content: str) -> None:
    """Replace the block between `<!-- results:MARKER -->` and `<!-- /results:MARKER -->`.

    Args:
        readme: the markdown file (rewritten atomically).
        marker: the block's name.
        content: the new block content.

    Returns:
        None.

    Raises:
        DataError: the markers are not in the file.

    Example:
        >>> update_readme(Path("README.md"), "example", table)  # doctest: +SKIP
    """
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- results:{re.escape(marker)} -->\n).*?(<!-- /results:{re.escape(marker)} -->)", re.S)
    if not pattern.search(text):
        raise DataError(f"{readme}: marker <!-- results:{marker} --> ... <!-- /results:{marker} --> not found — add it")
    atomic_write_text(readme, pattern.sub(lambda m: m.group(1) + content + m.group(2), text))


def plot_metrics(run_dir: Path) -> list[Path]:
    """PNG plots of metrics.jsonl: one figure per fit with train loss and validation metrics.

    Args:
        run_dir: the run directory (plots go to `plots/`).

    Returns:
        The written PNG paths.

    Example:
        >>> [p.name for p in plot_metrics(Path("runs/demo"))]  # doctest: +SKIP
        ['teacher.png', 'student.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir / "metrics.jsonl")
    by_fit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if "fit" in r and "step" in r:
            by_fit[r["fit"]].append(r)
    out = []
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    for fit_name, recs in by_fit.items():
        train = [(r["step"], r["train/loss"]) for r in recs if "train/loss" in r]
        val_keys = sorted({k for r in recs for k in r if k.startswith("val")})
        ncols = 1 + (1 if val_keys else 0)
        fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.5), squeeze=False)
        if train:
            xs, ys = zip(*sorted(dict(train).items()))
            axes[0][0].plot(xs, ys)
        axes[0][0].set(title=f"{fit_name}: train loss", xlabel="step")
        if val_keys:
            ax = axes[0][1]
            for k in val_keys:
                pts = sorted({r["step"]: r[k] for r in recs if k in r}.items())
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=k)
            ax.set(title=f"{fit_name}: validation", xlabel="step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', fit_name)}.png"
        out.append(atomic_savefig(fig, path))
    return out


def write_run_report(run_dir: str | Path) -> Path:
    """Write `report.md` (metrics, aggregated rows, plots of metrics.jsonl) for one finished run.

    Works on any run directory whose `results.json` follows `multiteacher.schema.RunResults` —
    made by the CLI, by `multiteacher.runs.run`, or by a script through `RunContext.finish`.

    Args:
        run_dir: the run directory.

    Returns:
        The path of `report.md`.

    Raises:
        DataError: no results.json, or one that does not follow the schema (one line naming the
            file and the fields).

    Example:
        >>> write_run_report("results/example/s0").name  # doctest: +SKIP
        'report.md'
    """
    run_dir = Path(run_dir)
    res = load_results([run_dir])[0]
    plots = plot_metrics(run_dir)
    wall = f"{res['wall_time_s']:.1f} s" if res["wall_time_s"] is not None else "n/a"
    lines = [f"# Run `{res['name']}` ({res['recipe']})", "",
             f"- seed: {res['seed']}; config hash: `{res['config_hash']}`; commit: `{res['commit']}`",
             f"- wall time: {wall} (last session; sessions: {res['sessions']});"
             f" processes: {res['world_size']}", "", "## Metrics", ""]
    if res.get("metrics"):
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if _is_number(v) else f"| {k} | {v} |" for k, v in res["metrics"].items()]
    if res.get("rows"):
        lines += ["", "## Results", "", format_table(aggregate([res]))]
    extra = sorted((run_dir / "plots").glob("*.png"))
    if extra:
        lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in extra]
    del plots
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
