"""`multiteacher` command line: run | eval | report | data | rerank.

User errors (bad config, missing data, bad teacher outputs) print one line on stderr and exit 2,
with no traceback and no half-made run directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from multiteacher.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiteacher", description="Train students from many teachers at once.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def dirs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="data directory (default: $MULTITEACHER_DATA)")
        sp.add_argument("--cache-dir", help="cache directory (default: $MULTITEACHER_CACHE)")
        sp.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set fit.lr=1e-3 seed=2")

    r = sub.add_parser("run", help="run a recipe config")
    r.add_argument("config", nargs="?", help="recipe YAML (optional with --resume)")
    r.add_argument("--run-dir", help="run directory (default: runs/<name>, or runs/<name>-s<seed> with --set seed=)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint (its config, "
                   "data and directories must be unchanged)")
    r.add_argument("--allow-changed", action="store_true",
                   help="with --resume: continue although the config, data or directories differ (recorded in "
                        "run.json)")
    dirs(r)

    e = sub.add_parser("eval", help="evaluate a finished run's student (optionally on another data dir)")
    e.add_argument("run_dir")
    dirs(e)

    rep = sub.add_parser("report", help="tables (mean ± std) from one or several runs")
    rep.add_argument("runs", nargs="+", help="run directories or results.json files")
    rep.add_argument("--out", help="also write the markdown here")
    rep.add_argument("--readme", help="paste the table into this file between results markers")
    rep.add_argument("--marker", help="marker name for --readme")
    rep.add_argument("--digits", type=int, default=3)
    rep.add_argument("--where", action="append", metavar="FIELD=V1,V2",
                     help="keep rows whose FIELD is one of the values")
    rep.add_argument("--columns", nargs="+", help="numeric columns to show (default: all)")
    rep.add_argument("--by", nargs="+", metavar="KEY",
                     help="also group by these results.json fields, dotted (e.g. config.graph.hyperedges)")

    rr = sub.add_parser(
        "rerank",
        help="re-rank a TREC run with a cross-encoder folder (an exported student or any HF cross-encoder)",
        description="Re-rank each query's top-k documents of RUN with MODEL (a Hugging Face sequence-"
        "classification folder with one label, e.g. a rerank run's model/) and write them, ordered by the "
        "model's raw score, as a TREC run to OUT (atomically; nothing is written when an input is bad).",
    )
    rr.add_argument("model", metavar="MODEL", help="cross-encoder folder (config.json, weights, tokenizer)")
    rr.add_argument("--queries", required=True, metavar="Q", help="queries: TSV 'qid<TAB>text' or BEIR .jsonl")
    rr.add_argument("--corpus", required=True, metavar="C",
                    help="passages: BEIR corpus.jsonl (_id, title, text) or TSV 'docid<TAB>text'")
    rr.add_argument("--run", required=True, metavar="RUN", help="the TREC run to re-rank (qid Q0 docid rank score tag)")
    rr.add_argument("--out", required=True, metavar="OUT", help="where the re-ranked TREC run is written")
    rr.add_argument("--top-k", type=int, default=100, metavar="K",
                    help="documents re-ranked per query, by the run's score (default 100; 0 = all); only these "
                         "are written")
    rr.add_argument("--batch-size", type=int, default=32, metavar="B", help="pairs per forward pass (default 32)")
    rr.add_argument("--max-length", type=int, metavar="L",
                    help="tokens per pair (default: the tokenizer's limit, at most 512)")
    rr.add_argument("--tag", default="multiteacher", help="the run tag column (default multiteacher)")
    rr.add_argument("--device", default="auto",
                    help="auto (a GPU when there is one, else the CPU, with ONNX Runtime when installed), cpu, cuda")

    d = sub.add_parser("data", help="list or check the named datasets")
    d.add_argument("action", choices=["list", "check"])
    d.add_argument("names", nargs="*")
    d.add_argument("--data-dir")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from multiteacher.errors import ConfigError
    from multiteacher.runs import default_run_dir, run

    resume = args.resume is not None
    if args.allow_changed and not resume:
        raise ConfigError("--allow-changed only goes with --resume RUN_DIR")
    run_dir = args.resume if resume else args.run_dir
    results = run(args.config, run_dir=run_dir, overrides=args.overrides, data_dir=args.data_dir,
                  cache_dir=args.cache_dir, resume=resume, allow_changed=args.allow_changed)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        shown = Path(run_dir) if run_dir else default_run_dir(results, args.overrides)  # type: ignore[arg-type]
        print(json.dumps(results.metrics, indent=2, sort_keys=True))
        print(f"run directory: {shown}  (report: {shown / 'report.md'})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir
    from multiteacher.errors import ConfigError, DataError
    from multiteacher.io import atomic_write_json
    from multiteacher.recipe_registry import load_recipe
    from multiteacher.rundir import disk_error, is_disk_error
    from multiteacher.runs import RunContext, load_run_config, unfinished_reason
    from multiteacher.schema import EvalRecord, read_results, read_run_info, validated

    run_dir = Path(args.run_dir).resolve()
    cfg = load_run_config(run_dir, args.overrides)
    if (run_dir / "run.json").exists():
        read_run_info(run_dir)  # a run directory that does not follow the schema is named here, in one line
    why = unfinished_reason(run_dir)
    if why is not None:
        raise DataError(f"eval {run_dir}: the run has not finished ({why}) — finish it with "
                        f"`multiteacher run --resume {run_dir}`, then evaluate")
    read_results(run_dir)  # a finished run's results.json must be valid
    recipe = load_recipe(cfg.recipe)
    if not hasattr(recipe, "evaluate"):
        raise ConfigError(f"recipe {cfg.recipe!r} has no evaluate(); nothing to evaluate in {run_dir}")
    data_dir = resolve_data_dir(args.data_dir)
    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, cache_dir=resolve_cache_dir(args.cache_dir), config=cfg)
    metrics = recipe.evaluate(cfg, ctx)
    tag = hashlib.sha256(f"{data_dir}|{sorted(args.overrides)}".encode()).hexdigest()[:8]
    out = run_dir / "eval" / f"eval-{tag}.json"
    record = {"data_dir": str(data_dir), "overrides": args.overrides, "metrics": metrics}
    try:
        atomic_write_json(out, validated(EvalRecord, record, out))
    except OSError as e:
        if not is_disk_error(e):
            raise
        raise disk_error(e, f"eval: cannot write {out}", "free space or fix permissions, then evaluate again") from None
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from multiteacher.errors import ConfigError
    from multiteacher.io import atomic_write_text
    from multiteacher.report import parse_where, report_markdown, update_readme

    md = report_markdown([Path(p) for p in args.runs], args.digits, parse_where(args.where), args.columns, args.by)
    print(md)
    if args.out:
        atomic_write_text(args.out, md)
    if args.readme:
        if not args.marker:
            raise ConfigError("report --readme needs --marker NAME (the <!-- results:NAME --> block to replace)")
        update_readme(Path(args.readme), args.marker, md)
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from multiteacher.errors import ConfigError
    from multiteacher.models.cross_encoder import rerank_files

    for flag, value, low, high in (("--top-k", args.top_k, 0, 10**6), ("--batch-size", args.batch_size, 1, 65536),
                                   ("--max-length", args.max_length, 2, 8192)):
        if value is not None and not low <= value <= high:
            raise ConfigError(f"rerank {flag} {value}: must be between {low} and {high}")
    info = rerank_files(args.model, args.queries, args.corpus, args.run, args.out, top_k=args.top_k or None,
                        batch_size=args.batch_size, max_length=args.max_length, tag=args.tag,
                        device=args.device)
    print(f"re-ranked {info['pairs']} pairs of {info['queries']} queries -> {args.out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from multiteacher.data.registry import load_all, resolve_data_dir
    from multiteacher.errors import DataError

    datasets = load_all()
    data_dir = resolve_data_dir(args.data_dir)
    if args.action == "list":
        for name, info in sorted(datasets.items()):
            print(f"{name:24s} {info.description}")
        return 0
    names = args.names or sorted(datasets)
    unknown = [n for n in names if n not in datasets]
    if unknown:
        raise DataError(f"unknown dataset(s) {unknown}; known: {', '.join(sorted(datasets))}")
    failed = 0
    for name in names:
        try:
            print(f"ok    {name:24s} {datasets[name].check(data_dir)}")
        except UserError as e:
            failed += 1
            print(f"FAIL  {name:24s} {e}")
    if failed:
        raise DataError(f"{failed} dataset(s) failed the check in {data_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `multiteacher` command: `run | eval | report | data | rerank`.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 ok, 2 a user error (printed as one line on stderr), 130 interrupted.

    Example:
        >>> main(["report", "results/example/s0", "results/example/s1"])  # doctest: +SKIP
        0
    """
    args = _parser().parse_args(argv)
    handlers: dict[str, Any] = {"run": cmd_run, "eval": cmd_eval, "report": cmd_report, "data": cmd_data,
                                "rerank": cmd_rerank}
    try:
        return int(handlers[args.cmd](args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted — resume with `multiteacher run --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
