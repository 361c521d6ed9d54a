"""Reports: results.json files -> markdown tables (mean ± std over seeds/folds) and PNG plots.

`write_run_report(run_dir)` writes one run's `report.md` and `plots/*.png` (training curves and
validation metrics from metrics.jsonl). `aggregate(results)` groups the `rows` of one or several
results files by their non-numeric fields (ignoring `seed` and `fold`) and gives mean ± std of
every numeric field; `update_readme` pastes a generated table between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` so README tables are never typed by hand.

`report_markdown` (what `multiteacher report` prints) never averages what should not be averaged:
runs of different recipes are refused; rows that runs with different configs would share are split
by the config fields that differ (`config_split_fields`), shown as extra columns; fields named in
`--where` / `--columns` must exist; a path that holds no run says so.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from multiteacher.errors import DataError
from multiteacher.io import atomic_savefig, atomic_write_text, read_metrics
from multiteacher.schema import read_results

AGGREGATED_OVER = ("seed", "fold")

#: Config fields that never separate report rows: what repeats of one setting vary on purpose (seed, name,
#: the fold of a cross-validation), where a run ran (not what it computes), and logging.
CONFIG_POOLED = ("seed", "name", "tracking", "fabric.accelerator", "fabric.devices", "fabric.num_nodes",
                 "fabric.strategy")
CONFIG_POOLED_LEAVES = ("fold", "folds")

#: Files that mark a directory as a run directory (finished or not).
RUN_MARKERS = ("results.json", "run.json", "config.yaml", "metrics.jsonl", "checkpoints")


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
    out = []
    for p in paths:
        _check_is_run(Path(p))
        try:
            out.append(read_results(p).model_dump())
        except UnicodeDecodeError as e:  # schema reads text; a damaged file is one line, not a traceback
            raise DataError(f"{p}: results.json is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                            f"{e.start}) — the file is damaged; re-run or restore it") from None
    return out


def _check_is_run(path: Path) -> None:
    """One line for a path that holds no run at all (an unfinished run is read_results' message)."""
    if not path.exists():
        raise DataError(f"no run here: {path} (no such file or directory) — pass run directories or results.json "
                        "files")
    if path.is_dir() and not any((path / m).exists() for m in RUN_MARKERS):
        raise DataError(f"no run here: {path} (no results.json, run.json or config.yaml in it) — pass run "
                        "directories or results.json files")


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
            close = difflib.get_close_matches(part, [str(k) for k in value] if isinstance(value, dict) else [], n=3,
                                              cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise DataError(f"{source} of run {str(res.get('name'))[:60]!r}: no field {key[:80]!r}{hint} — check --by")
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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out


def recipe_pooled_fields(recipe: str) -> tuple[str, ...]:
    """Config fields a recipe declares poolable in reports (`RecipeConfig.report_pooled`); () if unknown.

    Args:
        recipe: the `recipe` field of a results.json.

    Returns:
        Dotted config fields.

    Example:
        >>> recipe_pooled_fields("rerank")
        ('objective', 'model.eval_batch_size')
    """
    from multiteacher.errors import UserError
    from multiteacher.recipe_registry import load_recipe

    try:
        cfg_cls = load_recipe(recipe).Config
    except (UserError, ImportError):
        return ()
    return tuple(getattr(cfg_cls, "report_pooled", ()) or ())


def _pooled(key: str, extra: tuple[str, ...]) -> bool:
    if key.rsplit(".", 1)[-1] in CONFIG_POOLED_LEAVES:
        return True
    return any(key == p or key.startswith(p + ".") for p in (*CONFIG_POOLED, *extra))


def config_split_fields(results: list[dict[str, Any]], over: tuple[str, ...] = AGGREGATED_OVER,
                        pooled: tuple[str, ...] = ()) -> list[str]:
    """Config fields that differ between runs whose rows would be averaged into one table row.

    Why: averaging a row over runs with different settings (say two learning rates) gives a number
    no run produced. Seeds, names, folds, where a run ran (`CONFIG_POOLED`) and the recipe's declared
    `pooled` fields are what repeats vary on purpose; a field present in only some runs' configs (one
    added after older runs were made) is not compared. Fields the rows already separate (e.g. via
    `--by`) never show up, since their rows do not meet.

    Args:
        results: results dicts (rows already labelled and filtered).
        over: row fields that do not separate groups (as in `aggregate`).
        pooled: further dotted config fields that do not separate groups.

    Returns:
        Sorted dotted config fields (empty when no row mixes configs).

    Example:
        >>> runs = [{"config": {"lr": lr, "seed": s}, "rows": [{"m": "kd", "acc": 1.0}]}
        ...         for lr, s in ((0.1, 0), (0.1, 1), (0.2, 0))]
        >>> config_split_fields(runs)
        ['lr']
    """
    flats = [_flat(r.get("config") or {}) for r in results]
    common = set.intersection(*(set(f) for f in flats)) if flats else set()
    keys = sorted(k for k in common if not _pooled(k, pooled))
    meets: dict[tuple[tuple[str, Any], ...], set[int]] = defaultdict(set)
    for i, res in enumerate(results):
        for row in res.get("rows") or []:
            meets[tuple((k, v) for k, v in row.items() if k not in over and not _is_number(v))].add(i)
    differ: set[str] = set()
    for idx in meets.values():
        if len(idx) > 1:
            differ.update(k for k in keys if len({flats[i][k] for i in idx}) > 1)
    return sorted(differ)


def _label(encoded: str) -> str:
    """A config value as a row label: str() like `--by` labels (a number must not be averaged)."""
    value = json.loads(encoded)
    return encoded if isinstance(value, list | dict) else str(value)


def _field_error(flag: str, name: str, known: list[str]) -> DataError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    shown = ", ".join(known)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return DataError(f"{flag} {name[:60]!r}: no row of these runs has that field — {hint}fields: {shown}")


def check_fields(results: list[dict[str, Any]], where: dict[str, set[str]] | None,
                 columns: list[str] | None) -> None:
    """Refuse `--where` / `--columns` names no row has, and `--where` values no row takes.

    Why: a typo in a filter otherwise prints an empty table with exit 0, which reads as "no results".

    Args:
        results: results dicts (rows already labelled by `--by`).
        where: from `parse_where`.
        columns: numeric columns asked for.

    Returns:
        None.

    Raises:
        DataError: an unknown field or value, with the closest known names.

    Example:
        >>> check_fields([{"rows": [{"kind": "direct", "acc": 1.0}]}], {"kind": {"direct"}}, ["acc"])
    """
    rows = [row for r in results for row in (r.get("rows") or [])]
    fields = sorted({k for row in rows for k in row})
    numeric = sorted({k for row in rows for k, v in row.items() if _is_number(v)}
                     | {k for r in results if not r.get("rows") for k, v in (r.get("metrics") or {}).items()
                        if _is_number(v)})
    for key, values in (where or {}).items():
        if key not in fields:
            raise _field_error("--where", key, fields)
        seen = sorted({str(row[key]) for row in rows if key in row})
        missing = sorted(v for v in values if v not in seen)
        if missing:
            close = difflib.get_close_matches(missing[0], seen, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            shown = ", ".join(seen)
            shown = shown if len(shown) <= 160 else shown[:157] + "..."
            raise DataError(f"--where {key}={missing[0][:60]!r}: no row has that value — {hint}values: {shown}")
    for col in columns or []:
        if col not in numeric:
            raise _field_error("--columns", col, numeric)


def report_markdown(paths: list[Path], digits: int = 3, where: dict[str, set[str]] | None = None,
                    columns: list[str] | None = None, by: list[str] | None = None) -> str:
    """Aggregated markdown table for several runs, with provenance (run count, seeds, commits).

    What `multiteacher report` prints: results are validated (`multiteacher.schema`), labelled by
    `by`, filtered by `where`, aggregated and narrowed to `columns`. Runs of different recipes are
    refused; rows that runs with different configs would share are split by the differing config
    fields (`config_split_fields`), which become leading columns and are named below the table.

    Args:
        paths: run directories or results.json files.
        digits: decimals of numeric cells.
        where: row filter (from `parse_where`).
        columns: numeric columns to show.
        by: dotted results fields that also separate groups.

    Returns:
        Markdown text.

    Raises:
        DataError: no run at a path, a missing or invalid results.json, runs of several recipes, or an
            unknown `where` / `columns` field (one line each).

    Example:
        >>> print(report_markdown([Path("results/example/s0")]))  # doctest: +SKIP
    """
    results = load_results(paths)
    recipes: dict[str, int] = defaultdict(int)
    for r in results:
        recipes[str(r.get("recipe"))] += 1
    if len(recipes) > 1:
        mix = ", ".join(f"{k}: {n} run(s)" for k, n in sorted(recipes.items()))
        raise DataError(f"report: these runs come from different recipes ({mix}) — report each recipe separately")
    results = label_rows(results, by)
    check_fields(results, where, columns)
    results = filter_rows(results, where)
    split = config_split_fields(results, pooled=recipe_pooled_fields(next(iter(recipes), "")))
    if split:
        results = [{**r, "rows": [{**{k: _label(f[k]) for k in split}, **row} for row in r.get("rows") or []]}
                   for r, f in ((r, _flat(r.get("config") or {})) for r in results)]
    table = format_table(select_columns(aggregate(results), columns), digits)
    commits = sorted({r.get("commit", "unknown") for r in results})
    seeds = sorted({r.get("seed") for r in results})
    shown = ", ".join(c[:12] + ("+dirty" if c.endswith("+dirty") else "") for c in commits)
    note = ""
    if split:
        note = (f"\nconfigs differ in: {', '.join(split)} — rows are split by these fields (the first columns); "
                "pick one with --where or label with --by\n")
    return table + note + f"\nruns: {len(results)}; seeds: {seeds}; commits: {shown}\n"


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
    if res.get("cpu_time_s") is not None:
        wall += f", CPU {res['cpu_time_s']:.1f} s"
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
