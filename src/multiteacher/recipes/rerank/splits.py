"""Train / validation / test splits of the rerank recipe, from the config and the committed validation list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multiteacher.config import quote, read_utf8
from multiteacher.data.ir import IRData, first_stage_candidates, load_ir, trec_dl_dir
from multiteacher.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[4]


def read_val_list(path: str) -> list[tuple[str, str]]:
    """The committed validation list: `set qid` per line (`#` comments).

    Args:
        path: the list file (relative paths are also looked up from the repository root).

    Returns:
        `(set spec, qid)` pairs, set specs normalised to `trec-dl/<set>`.

    Example:
        >>> read_val_list("recipes/rerank-val-queries.txt")[0]  # doctest: +SKIP
        ('trec-dl/dl21', '1040198')
    """
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        p = REPO / path
    if not p.is_file():
        raise ConfigError(f"data.val_queries = {quote(path)}: file not found (lines 'trec-dl/dl21 <qid>')")
    out = []
    for i, line in enumerate(read_utf8(p, DataError).splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{p}:{i}: expected 'set qid', got {quote(line)}")
        out.append((norm_set(parts[0]), parts[1]))
    return out


def norm_set(name: str) -> str:
    """`dl19` -> `trec-dl/dl19`; other specs (paths, `irds:` ids, `trec-dl/...`) unchanged.

    Args:
        name: a set spec.

    Returns:
        The normalised spec.

    Example:
        >>> norm_set("dl21")
        'trec-dl/dl21'
    """
    if "/" in name or ":" in name or Path(name).is_absolute():  # paths, `irds:` ids, `pool:` sets
        return name
    return f"trec-dl/{name}"


def top_k(d: IRData, k: int) -> IRData:
    """The set with each query's candidates cut to the first-stage top `k` (ties by doc id).

    Args:
        d: the set.
        k: candidates to keep per query.

    Returns:
        `d` itself when nothing is cut, else a copy.

    Example:
        >>> top_k(dl19, 20).pairs()[:2]  # doctest: +SKIP
    """
    if len(d.first_stage) > 1:  # a union: each run's top k, then their union in RRF order
        cut = first_stage_candidates(d.runs, d.first_stage, k)
        cands = {q: cut.get(q, {}) for q in d.candidates}
    else:
        cands = {q: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, c in d.candidates.items()}
        if all(len(cands[q]) == len(d.candidates[q]) for q in cands):
            return d
    keep = {x for c in cands.values() for x in c}
    return IRData(
        d.name, d.queries, {x: t for x, t in d.passages.items() if x in keep}, cands, d.qrels, d.runs,
        first_stage=d.first_stage,
    )


def first_stage_names(value: str | list[str]) -> tuple[str, ...]:
    """A `data.first_stage` value as run names: `"bm25"` -> `("bm25",)`, a list -> its union's names.

    Args:
        value: one run name or a list of them.

    Returns:
        The names, in order.

    Example:
        >>> first_stage_names(["bm25", "splade-pp-ed"])
        ('bm25', 'splade-pp-ed')
    """
    return (value,) if isinstance(value, str) else tuple(value)


def first_stage_label(value: str | list[str] | tuple[str, ...]) -> str:
    """The name rows and tables use for a first stage: the run's name, or `a+b` for a union.

    Args:
        value: one run name or several.

    Returns:
        The label (also the "first stage" baseline row's system name).

    Example:
        >>> first_stage_label(["bm25", "splade-pp-ed"])
        'bm25+splade-pp-ed'
    """
    return "+".join(first_stage_names(value) if not isinstance(value, tuple) else value)


def base_spec(key: str) -> str:
    """The set spec of a split key: test sets re-ranked from another first stage are keyed `<spec>@<label>`.

    Args:
        key: a split key, e.g. `trec-dl/dl19@splade-pp-ed`.

    Returns:
        The spec, e.g. `trec-dl/dl19`.

    Example:
        >>> base_spec("trec-dl/dl19@splade-pp-ed")
        'trec-dl/dl19'
    """
    return key.split("@", 1)[0]


def _load(spec: str, data_dir: Path, names: tuple[str, ...], k: int) -> IRData:
    # the default first stage loads exactly as before (a BEIR folder may have one run of another name)
    fs = None if names == ("bm25",) else names
    return top_k(load_ir(norm_set(spec), data_dir, first_stage=fs), k)


def set_dir(spec: str, data_dir: Path) -> Path | None:
    """The folder of a set spec (where its run and score files are), or None (e.g. `irds:` sets).

    Args:
        spec: a normalised set spec.
        data_dir: the data directory.

    Returns:
        The folder, or None.

    Example:
        >>> set_dir("trec-dl/dl19", Path("../shared/data"))  # doctest: +SKIP
        PosixPath('../shared/data/trec-dl/dl19')
    """
    if spec.startswith("trec-dl/"):
        return trec_dl_dir(data_dir, spec)
    p = Path(spec)
    return p if p.is_dir() else (data_dir / spec if (data_dir / spec).is_dir() else None)


def load_test_set(
    spec: str, data_dir: Path, k: int, max_queries: int | None, first_stage: str | list[str] = "bm25"
) -> IRData:
    """One test set, cut to top-`k` candidates and (for tiny runs) its first `max_queries` queries.

    Args:
        spec: the set spec.
        data_dir: the data directory.
        k: candidates per query (per run, for a union).
        max_queries: cap on queries, or None.
        first_stage: the run (or runs: their union) whose candidates are re-ranked.

    Returns:
        The set.

    Example:
        >>> load_test_set("trec-dl/dl19", data_dir, 100, None)  # doctest: +SKIP
    """
    d = _load(spec, data_dir, first_stage_names(first_stage), k)
    return d.subset(d.qids[:max_queries]) if max_queries else d


def test_first_stages(cfg: Any) -> list[tuple[str, ...]]:
    """The first stages test sets are re-ranked from: `data.test_first_stage`, default `[data.first_stage]`.

    Args:
        cfg: the recipe config.

    Returns:
        One tuple of run names per first stage (several names: their union), without repeats.

    Example:
        >>> test_first_stages(cfg)  # doctest: +SKIP
        [('bm25',), ('splade-pp-ed',)]
    """
    value = cfg.data.test_first_stage
    if value is None:
        return [first_stage_names(cfg.data.first_stage)]
    items = [value] if isinstance(value, str) else value
    out: list[tuple[str, ...]] = []
    for item in items:
        names = first_stage_names(item)
        if names not in out:
            out.append(names)
    return out


def _query_files(patterns: list[str], data_dir: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        root, rel = (Path(p.anchor), str(p.relative_to(p.anchor))) if p.is_absolute() else (data_dir, pattern)
        found = sorted(root.glob(rel)) if any(c in pattern for c in "*?[") else [root / rel]
        found = [f for f in found if f.is_file()]
        if not found:
            raise ConfigError(f"data.extra_queries.path: {quote(pattern)} matches no file under {root} "
                              "(give query files `qid<TAB>text`, e.g. msmarco-queries/*.tsv)")
        files += found
    return files


def extra_query_sets(
    cfg: Any, data_dir: Path, train_sets: list[IRData], held_out: list[str]
) -> dict[str, IRData]:
    """The `data.extra_queries` sets: unjudged queries re-ranking BM25's top-k over the training sets' pooled passages.

    The pool is every passage of each training set's corpus file (its folder's `corpus.jsonl`), else the
    set's loaded candidates; the BM25 index (`multiteacher.data.pool.BM25Index`) is built once. Query texts
    equal to a validation or test query (after normalisation) are never used.

    Args:
        cfg: the recipe config.
        data_dir: the data directory.
        train_sets: the loaded training sets (their passages form the pool).
        held_out: validation and test query texts.

    Returns:
        `{"pool:<name>": IRData}` in config order.

    Example:
        >>> extra_query_sets(cfg, data_dir, [dl21, dl22], held_out)["pool:msmarco"].qrels is None  # doctest: +SKIP
        True
    """
    from multiteacher.data.ir import read_corpus_jsonl
    from multiteacher.data.pool import BM25Index, passage_queries, pool_passages, pooled_set, read_query_files

    corpora = []
    for d in train_sets:
        folder = set_dir(norm_set(d.name), data_dir) if d.name else None
        corpus = folder / "corpus.jsonl" if folder is not None else None
        corpora.append(IRData(d.name, {}, read_corpus_jsonl(corpus), {}) if corpus and corpus.is_file() else d)
    passages = pool_passages(corpora)
    index = BM25Index(passages)
    k = cfg.data.pool_top_k or cfg.data.top_k
    out: dict[str, IRData] = {}
    for i, extra in enumerate(cfg.data.extra_queries):
        seed = extra.seed  # not the run's seed: every seed trains on the same queries (one teacher cache)
        sources = None
        if extra.source == "file":
            queries = read_query_files(_query_files(extra.path, data_dir), exclude_texts=held_out,
                                       prefix=f"{extra.name or 'q'}:", max_queries=extra.max_queries, seed=seed)
        else:
            n = extra.max_queries or len(passages)
            queries, sources = passage_queries(passages, n, seed=seed, min_words=extra.min_words,
                                               max_words=extra.max_words, exclude_texts=held_out,
                                               prefix=f"{extra.name or 'p'}:")
        if not queries:
            raise ConfigError(f"data.extra_queries[{i}]: no queries (all held out or empty files)")
        out[extra.key] = pooled_set(extra.key, queries, index, passages, k, sources)
    return out


def load_sets(cfg: Any, data_dir: Path) -> dict[str, Any]:
    """Train / validation / test splits as {set name: IRData} (validation from the committed list).

    Training and validation sets are re-ranked from `data.first_stage`; each test set from each of
    `test_first_stages(cfg)`, keyed `<spec>` for `data.first_stage` and `<spec>@<label>` for another.

    Args:
        cfg: the recipe config (`data:` section).
        data_dir: the data directory.

    Returns:
        `{"train": {...}, "val": {...}, "test": {...}, "all": {...}}`; `all` holds, per set, every
        query any split uses (teachers score it once).

    Example:
        >>> sets = load_sets(cfg, Path("../shared/data"))  # doctest: +SKIP
        >>> sorted(sets)  # doctest: +SKIP
        ['all', 'test', 'train', 'val']
    """
    val_list = read_val_list(cfg.data.val_queries)
    train, val, test, loaded = {}, {}, {}, {}
    main_fs = first_stage_names(cfg.data.first_stage)
    for spec in cfg.data.train:
        d = loaded[spec] = _load(spec, data_dir, main_fs, cfg.data.top_k)
        vq = [q for s, q in val_list if s == norm_set(spec) and q in d.candidates]
        missing = [q for s, q in val_list if s == norm_set(spec) and q not in d.candidates]
        if missing:
            raise DataError(f"{cfg.data.val_queries}: query {missing[0]!r} is not in {spec}")
        if cfg.data.max_val_queries:
            vq = vq[: cfg.data.max_val_queries]
        tq = [q for q in d.qids if q not in set(vq)]
        if cfg.data.train_queries == "labelled":
            tq = [q for q in tq if d.qrels and q in d.qrels]
        if cfg.data.max_train_queries:
            tq = tq[: cfg.data.max_train_queries]
        if tq or cfg.data.train_queries == "all":
            train[spec] = d.subset(tq)  # under `labelled`, a set without qrels (dl22) adds no query
        if vq:
            if not d.qrels or any(q not in d.qrels for q in vq):
                raise DataError(f"{cfg.data.val_queries}: validation queries of {spec} must have qrels")
            val[spec] = d.subset(vq)
    if not train:
        raise ConfigError(
            f"data.train: no training query has qrels under data.train_queries=labelled ({cfg.data.train})"
        )
    if not val:
        raise ConfigError(f"{cfg.data.val_queries} names no query of the training sets {cfg.data.train}")
    for spec in cfg.data.test:
        for fs in test_first_stages(cfg):
            key = spec if fs == main_fs else f"{spec}@{first_stage_label(fs)}"
            d = loaded[key] = loaded.get(key) or _load(spec, data_dir, fs, cfg.data.top_k)
            if cfg.data.max_test_queries:
                d = d.subset(d.qids[: cfg.data.max_test_queries])
            test[key] = d
    full: dict[str, IRData] = {}
    for split in (train, val, test):
        for spec, d in split.items():
            qids = set(d.qids) | (set(full[spec].qids) if spec in full else set())
            src = loaded[spec]
            full[spec] = src if qids == set(src.qids) else src.subset(sorted(qids))
    if cfg.data.extra_queries:
        held_out = [t for split in (val, test) for d in split.values() for t in d.queries.values()]
        for key, d in extra_query_sets(cfg, data_dir, [loaded[s] for s in cfg.data.train], held_out).items():
            train[key] = loaded[key] = full[key] = d
    overlap = {(base_spec(s), q) for s in test for q in test[s].qids} & {(s, q) for s in train for q in train[s].qids}
    if overlap:
        raise ConfigError(f"data: test queries are also training queries ({sorted(overlap)[0]}) — fix data.train/test")
    return {"train": train, "val": val, "test": test, "all": full}
