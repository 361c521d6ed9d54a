"""IR metrics: a thin wrapper over ir-measures for plain dicts.

``run`` is ``{qid: {docid: score}}`` (higher = better), ``qrels`` is ``{qid: {docid: relevance}}``.
Default measures follow the TREC Deep Learning passage convention: graded nDCG@10, and the binary
measures at relevance >= 2 (``trec_eval -l 2``): ``RR(rel=2)@10``, ``AP(rel=2)``, ``R(rel=2)@100``.
Any ir-measures name works (``"AP"``, ``"R@100"``, ``"P(rel=2)@10"``, ...). Values come straight
from ir-measures (pytrec_eval provider): queries in the qrels that are missing from the run score 0,
run queries without qrels are ignored, score ties are broken as trec_eval does (by docid).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ir_measures

from multiteacher.errors import ConfigError, DataError

__all__ = ["DEFAULT_MEASURES", "evaluate", "parse_measures", "per_query"]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)", "R(rel=2)@100")


def parse_measures(measures: Iterable[str]) -> dict[str, object]:
    """Parse ir-measures names: ``{name: measure}``; an unknown or malformed name raises ``ConfigError``.

    Args:
        measures: names in ir-measures syntax (``"nDCG@10"``, ``"RR(rel=2)@10"``), or one name.

    Returns:
        ``{name: ir_measures measure object}``.

    Example:
        >>> list(parse_measures(["nDCG@10", "AP(rel=2)"]))
        ['nDCG@10', 'AP(rel=2)']
    """
    if isinstance(measures, str):
        measures = [measures]
    out: dict[str, object] = {}
    for name in measures:
        try:
            out[name] = ir_measures.parse_measure(name)
        except Exception:
            raise ConfigError(
                f"unknown IR measure {name!r}; use ir-measures syntax such as 'nDCG@10', 'RR(rel=2)@10', 'AP'"
            ) from None
    return out


def _clean_run(run: Mapping) -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise DataError(f"run must be a dict {{qid: {{docid: score}}}}, got {type(run).__name__}")
    out: dict[str, dict[str, float]] = {}
    for q, docs in run.items():
        if not isinstance(docs, Mapping):
            raise DataError(f"run[{q!r}] must be a dict {{docid: score}}, got {type(docs).__name__}")
        try:
            out[str(q)] = {str(d): float(s) for d, s in docs.items()}
        except (TypeError, ValueError):
            raise DataError(f"run[{q!r}] has a non-numeric score; scores must be numbers") from None
    return out


def _clean_qrels(qrels: Mapping) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping):
        raise DataError(f"qrels must be a dict {{qid: {{docid: relevance}}}}, got {type(qrels).__name__}")
    out: dict[str, dict[str, int]] = {}
    for q, docs in qrels.items():
        if not isinstance(docs, Mapping):
            raise DataError(f"qrels[{q!r}] must be a dict {{docid: relevance}}, got {type(docs).__name__}")
        try:
            out[str(q)] = {str(d): int(r) for d, r in docs.items()}
        except (TypeError, ValueError):
            raise DataError(f"qrels[{q!r}] has a non-integer relevance label") from None
    return out


def per_query(run: Mapping, qrels: Mapping, measures: Iterable[str] = DEFAULT_MEASURES) -> dict[str, dict[str, float]]:
    """Per-query values ``{measure_name: {qid: value}}`` for every qid in ``qrels``.

    Args:
        run: ``{qid: {docid: score}}``, higher is better.
        qrels: ``{qid: {docid: relevance}}``.
        measures: ir-measures names.

    Returns:
        ``{measure: {qid: value}}``; judged queries missing from the run score 0.

    Example:
        >>> per_query({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["RR"])
        {'RR': {'q': 0.5}}
    """
    ms = parse_measures(measures)
    name_of = {m: n for n, m in ms.items()}
    out: dict[str, dict[str, float]] = {n: {} for n in ms}
    for metric in ir_measures.iter_calc(list(ms.values()), _clean_qrels(qrels), _clean_run(run)):
        out[name_of[metric.measure]][metric.query_id] = float(metric.value)
    return out


def evaluate(run: Mapping, qrels: Mapping, measures: Iterable[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean over queries ``{measure_name: value}`` (``ir_measures.calc_aggregate``).

    Args:
        run: ``{qid: {docid: score}}``, higher is better.
        qrels: ``{qid: {docid: relevance}}``.
        measures: ir-measures names.

    Returns:
        ``{measure: mean value}``.

    Example:
        >>> evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": 1}}, ["nDCG@10", "RR"])
        {'nDCG@10': 1.0, 'RR': 1.0}
    """
    ms = parse_measures(measures)
    agg = ir_measures.calc_aggregate(list(ms.values()), _clean_qrels(qrels), _clean_run(run))
    return {n: float(agg.get(m, float("nan"))) for n, m in ms.items()}
