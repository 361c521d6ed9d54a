"""Neural Graph Consensus (Leordeanu et al., AAAI 2021) on rendered multi-representation scenes.

Nodes are scene representations (rgb input; depth, normals, semantic, height outputs); edges are
small U-Nets. Generation 0 trains every edge on the labelled frames (~10% of training scenes):
direct edges rgb -> X, then two-hop edges X -> Y on the direct edge's *prediction* of X (and
optionally hyperedges (rgb, X) -> Y). Each edge's output is one path's prediction at its target.
In generation g >= 1, the consensus of generation g-1's paths (median by default; categorical nodes
vote over probabilities; optional agreement mask) on the unlabelled frames becomes the
pseudo-label, ground truth is kept on labelled frames, and every edge is retrained with a fixed
labelled share per batch. Edges run as executor jobs that exchange files; one run stage per
generation, so a killed run resumes between generations (and edge by edge within one).

Controls: self-training (each direct edge retrained on its own predictions, same seeds and budget)
and a seed ensemble (median / vote of K direct edges, K = number of paths into the node).

Rows: one per (node, generation, predictor): predictor is an edge id (``rgb>depth``,
``rgb>normals>depth``, ...), ``consensus`` (all paths, test frames), ``pseudo_label`` (consensus on
the unlabelled training frames against their held-back ground truth, with ``coverage`` = share of
pixels the agreement mask keeps; it is what generation g+1 trains on), ``direct_unlabelled``
(the direct edge on those same frames), ``self_training`` and ``seed_ensemble``.

Time arithmetic of ``recipes/ngc-scenes.yaml`` (one seed): 1,500 training frames (150 labelled,
1,350 unlabelled) + 300 test frames at 64 px; 16 edges (4 direct + 12 two-hop) x 3 generations = 48
edge trainings, plus 8 self-training and 12 seed-ensemble edges = 68 x 400 steps x 16 frames = 435k
training frames; at the ~160 frames/s of two pinned workers on an idle 2-core CPU (DESIGN.md) that
is ~45 min, plus ~2 min of predictions (68 x 1,800 frames) and consensus, so ~50 min per seed.
"""

from __future__ import annotations

from typing import Any

from multiteacher.recipes.ngc import pipeline as P
from multiteacher.recipes.ngc.config import Config
from multiteacher.recipes.ngc.graph import direct_id, output_nodes, paths_to

__all__ = ["Config", "run"]


def _rows(node: str, gen: int, predictor: str, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"node": node, "generation": str(gen), "predictor": predictor, **extra, **metrics}


def _run_logged(c: P.Ctx, ctx: Any, jobs: list) -> dict[str, Any]:
    """Run edge jobs; log each edge's seconds and final training loss to metrics.jsonl."""
    info = P.run(c, jobs)
    for jid, v in info.items():
        if not v.get("skipped"):
            ctx.log({"seconds": v["seconds"], "final_loss": v["final_loss"]}, event="ngc_edge", edge=jid)
    return info


def _generation(c: P.Ctx, ctx: Any, g: int) -> dict[str, Any]:
    tag = f"gen{g}"
    info = _run_logged(c, ctx, P.generation_jobs(c, g))
    diag = P.build_pseudo(c, tag, P.sources_of(c, tag))
    rows = []
    for node in output_nodes(c.cfg):
        edges = paths_to(c.edges, node)
        single = P.evaluate_edges(c, tag, [e.id for e in edges], node)
        for e in edges:
            rows.append(_rows(node, g, e.id, single[e.id], kind=e.kind))
        rows.append(_rows(node, g, "consensus", P.evaluate_consensus(c, tag, node), kind="consensus"))
        rows.append(_rows(node, g, "pseudo_label", diag[node]["pseudo"], kind="diagnostic",
                          coverage=diag[node]["coverage"]))
        if c.cfg.consensus.mask:  # the error on the pixels the mask keeps
            rows.append(_rows(node, g, "pseudo_label_kept", diag[node]["pseudo_kept"], kind="diagnostic"))
        gt = c.gt_ref(node, "train")["path"]
        pred = c.pred_path(tag, direct_id(c.cfg, node), "train")
        rows.append(_rows(node, g, "direct_unlabelled", P.node_metrics(c, node, pred, gt, idx=c.unlabelled),
                          kind="diagnostic"))
    seconds = sum(v.get("seconds", 0.0) for v in info.values())
    return {"rows": rows, "edge_seconds": seconds}


def _self_training(c: P.Ctx, ctx: Any) -> dict[str, Any]:
    rows = []
    direct = {n: [("gen0", direct_id(c.cfg, n))] for n in output_nodes(c.cfg)}
    P.build_pseudo(c, "self0", direct)
    for g in range(1, c.cfg.generations + 1):
        tag = f"self{g}"
        _run_logged(c, ctx, P.direct_jobs(c, tag, pseudo_tag=f"self{g - 1}", seed_tag=f"gen{g}"))
        P.build_pseudo(c, tag, {n: [(tag, direct_id(c.cfg, n))] for n in output_nodes(c.cfg)})
        for node in output_nodes(c.cfg):
            m = P.evaluate_edges(c, tag, [direct_id(c.cfg, node)], node)[direct_id(c.cfg, node)]
            rows.append(_rows(node, g, "self_training", m, kind="control"))
    return {"rows": rows}


def _seed_ensemble(c: P.Ctx, ctx: Any) -> dict[str, Any]:
    k_max = max(len(paths_to(c.edges, n)) for n in output_nodes(c.cfg))
    jobs = [j for k in range(1, k_max) for j in P.direct_jobs(c, f"ens{k}", None)]
    if jobs:
        _run_logged(c, ctx, jobs)
    members = {n: [("gen0", direct_id(c.cfg, n))] + [(f"ens{k}", direct_id(c.cfg, n))
                                                      for k in range(1, len(paths_to(c.edges, n)))]
               for n in output_nodes(c.cfg)}
    P.build_pseudo(c, "ens", members)
    rows = [_rows(n, 0, "seed_ensemble", P.evaluate_consensus(c, "ens", n), kind="control", members=str(len(m)))
            for n, m in members.items()]
    return {"rows": rows}


def summary(cfg: Config, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Headline numbers: the primary metric of each node's direct edge and consensus per
    generation, the controls, pseudo-label error and mask coverage.

    Args:
        cfg: the NGC config.
        rows: the run's result rows.

    Returns:
        ``"<node>/g<generation>/<predictor>/<metric>"`` (and ``.../mask_coverage``) -> value.

    Example:
        >>> rows = [{"node": "depth", "generation": "0", "predictor": "rgb>depth", "abs_rel": 0.2}]
        >>> summary(Config(name="x"), rows)
        {'depth/g0/direct/abs_rel': 0.2}
    """
    out: dict[str, float] = {}
    for r in rows:
        metric = cfg.nodes[r["node"]].metric
        key = P.PRIMARY.get(metric, (None,))[0]
        if key is None or key not in r:
            continue
        pred = r["predictor"]
        if pred == direct_id(cfg, r["node"]):
            pred = "direct"
        if pred in ("direct", "consensus", "pseudo_label", "self_training", "seed_ensemble"):
            out[f"{r['node']}/g{r['generation']}/{pred}/{key}"] = float(r[key])
        if pred == "pseudo_label":
            out[f"{r['node']}/g{r['generation']}/mask_coverage"] = float(r["coverage"])
    return out


def run(cfg: Config, ctx: Any) -> dict[str, Any]:
    """Run NGC: generation 0..G (one stage each), then the controls; rows + summary metrics.

    Args:
        cfg: the NGC config.
        ctx: the run's `RunContext` (directories, logging, stages).

    Returns:
        ``{"metrics": summary(...), "rows": [...]}`` for results.json.

    Example:
        >>> # multiteacher run recipes/ngc-scenes-tiny.yaml   (or run(cfg, RunContext(...)))
    """
    c = P.prepare(cfg, ctx.cache_dir, ctx.run_dir, ctx.data_dir)
    ctx.log({"labelled_frames": len(c.labelled), "unlabelled_frames": len(c.unlabelled),
             "test_frames": len(c.test), "edges": len(c.edges)}, event="ngc_data")
    rows: list[dict[str, Any]] = []
    for g in range(cfg.generations + 1):
        res = ctx.stage(f"ngc_gen{g}", lambda g=g: _generation(c, ctx, g))
        rows += res["rows"]
        ctx.log({"edge_seconds": res["edge_seconds"]}, event="ngc_generation", generation=g)
    if cfg.controls.self_training and cfg.generations:
        rows += ctx.stage("ngc_self_training", lambda: _self_training(c, ctx))["rows"]
    if cfg.controls.seed_ensemble:
        rows += ctx.stage("ngc_seed_ensemble", lambda: _seed_ensemble(c, ctx))["rows"]
    try:
        from multiteacher.recipes.ngc.plots import write_plots

        write_plots(c, rows, ctx.run_dir / "plots")
    except ImportError:  # pragma: no cover - plots are optional
        pass
    return {"metrics": summary(cfg, rows), "rows": rows}
