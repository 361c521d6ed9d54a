"""The fit loop: Fabric training with periodic validation, atomic checkpoints and exact resume.

`fit` trains `model` for `cfg.max_steps` optimizer steps. Every `cfg.val_every` steps (and at the
end) it calls `evaluate(model)`, keeps the best weights by `cfg.monitor`, and writes
`checkpoints/<name>/last.pt` (model, optimizer, scheduler, step, position in the epoch, every RNG
state, best-so-far) and `best.pt` atomically. A killed run calls `fit` again with the same
arguments: it restores `last.pt` and continues mid-epoch with the same data order, so it ends
with the same weights and metrics as an uninterrupted run (bit-exact on CPU). A finished fit leaves
`done.json`; calling `fit` again then only loads the best weights and returns the stored result.

Data order: a seeded permutation per epoch (seed, epoch); under DDP each rank takes a strided
slice of every global batch, so 1 process with batch B and N processes with B/N see the same
samples per step. `cfg.batch_size` is the global batch. With `cfg.length_grouped` (and per-sample
`lengths`), batches hold samples of similar length: the permutation is cut into pools of
`cfg.length_group_batches` batches, each pool sorted by length and cut into batches, and the
batches of the epoch are shuffled (`LengthGroupedBatchSampler`) — far less padding for text.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from multiteacher.config import StrictModel
from multiteacher.engine.setup import rng_state, set_rng_state
from multiteacher.errors import ConfigError
from multiteacher.io import atomic_open, atomic_write_json
from multiteacher.killpoints import killpoint

if TYPE_CHECKING:
    from multiteacher.runs import RunContext


class FitConfig(StrictModel):
    """Optimisation and bookkeeping settings of one `fit` call."""

    max_steps: int = Field(200, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    scheduler: Literal["constant", "cosine", "linear", "step"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(100, gt=0)
    gamma: float = Field(0.5, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    val_every: int = Field(100, gt=0)
    ckpt_every: int | None = Field(None, gt=0)
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    early_stop_patience: int | None = Field(None, gt=0)
    log_every: int = Field(10, gt=0)
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = Field(0, ge=0)
    length_grouped: bool = False  # batches of similar sample length (needs per-sample lengths; less padding)
    length_group_batches: int = Field(50, ge=1)  # length_grouped: batches per length-sorted pool


@dataclass
class FitState:
    """Where training is: passed to `step_fn` so losses can follow schedules."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int = -1
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitResult:
    """What a fit returns (and stores in done.json)."""

    name: str
    steps: int
    best_step: int
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    history: list[dict[str, Any]]
    train_seconds: float


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch permutation, split across ranks by striding, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ConfigError(f"fit.batch_size={batch_size} must be divisible by the {world} processes")
        self.n, self.batch, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.drop_last, self.rank, self.world = drop_last, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start = epoch, start_batch

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _order(self, g: torch.Generator) -> list[int]:
        return torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))

    def epoch_batches(self) -> list[list[int]]:
        """The global batches of the current epoch, in order (a function of seed and epoch only)."""
        order = self._order(self._generator())
        return [order[b * self.batch:(b + 1) * self.batch] for b in range(self.batches_per_epoch())]

    def __iter__(self) -> Iterator[list[int]]:
        for chunk in self.epoch_batches()[self.start:]:
            yield chunk[self.rank::self.world]


class LengthGroupedBatchSampler(EpochBatchSampler):
    """`EpochBatchSampler` whose batches hold samples of similar length, so that dynamic padding
    (pad to the longest in the batch) wastes little.

    Per epoch: the same seeded permutation as `EpochBatchSampler` (with `drop_last`, its tail of
    fewer than `batch_size` samples is dropped), cut into pools of `group_batches` batches; each
    pool is sorted by length (longest first; ties keep the random order) and cut into batches; then
    the order of all the epoch's batches is shuffled with the same generator, so that long and short
    batches alternate at random. Every sample is in exactly one batch per epoch (the dropped tail
    aside); the batches are a function of (seed, epoch) only, so `set_position` resumes exactly.
    Under DDP each rank takes a strided slice of every global batch (similar lengths on all ranks).
    `shuffle=False`: no permutation and no batch shuffle (pools in index order, longest first).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world: int = 1, group_batches: int = 50) -> None:
        super().__init__(len(lengths), batch_size, seed, shuffle, drop_last, rank, world)
        if group_batches < 1:
            raise ConfigError(f"length_group_batches={group_batches} must be >= 1")
        self.lengths = [int(x) for x in lengths]
        self.group_batches = group_batches

    def epoch_batches(self) -> list[list[int]]:
        g = self._generator()
        order = self._order(g)
        if self.drop_last:
            order = order[: (self.n // self.batch) * self.batch]
        pool = self.group_batches * self.batch  # a multiple of the batch: only the last batch can be short
        batches: list[list[int]] = []
        for p in range(0, len(order), pool):
            chunk = sorted(order[p:p + pool], key=lambda i: -self.lengths[i])  # stable
            batches += [chunk[j:j + self.batch] for j in range(0, len(chunk), self.batch)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches


def _count_params(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 2


def build_optimizer(params: Any, cfg: FitConfig) -> torch.optim.Optimizer:
    """Optimizer from the config."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: FitConfig) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then constant / cosine / linear / step decay."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.scheduler == "constant":
        return 1.0
    if cfg.scheduler == "step":
        return cfg.gamma ** (step // cfg.step_size)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def _save_atomic(path: Path, obj: Any, kill_name: str) -> None:
    """Serialise to memory, then write through a temp file with a kill point mid-write."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        killpoint(kill_name)
        f.write(data[len(data) // 2:])


def _fabric_is_passthrough(fabric: Any) -> bool:
    """True when Fabric's per-step wrappers do nothing: one process, a plain single-device strategy,
    full precision (the base `Precision` plugin, whose input/output conversion, forward context and
    backward are no-ops) and no Fabric callbacks. `fit` then calls the module, `loss.backward()` and `optimizer.step()`
    directly, which saves Fabric's per-step Python work (about 0.1 ms a step, B1 in `bench/`)."""
    try:
        from lightning_fabric.plugins.precision import Precision
        from lightning_fabric.strategies import SingleDeviceStrategy
    except ImportError:  # pragma: no cover
        return False
    strategy = getattr(fabric, "strategy", None)
    return (getattr(fabric, "world_size", 0) == 1 and type(strategy) is SingleDeviceStrategy
            and type(strategy.precision) is Precision and not getattr(fabric, "_callbacks", None))


def _make_sampler(name: str, train_data: Dataset[Any], cfg: FitConfig, seed: int, rank: int, world: int,
                  lengths: Sequence[int] | None) -> EpochBatchSampler:
    n = len(train_data)  # type: ignore[arg-type]
    if not cfg.length_grouped:
        return EpochBatchSampler(n, cfg.batch_size, seed, cfg.shuffle, cfg.drop_last, rank, world)
    if lengths is None:
        raise ConfigError(f"fit '{name}': fit.length_grouped needs per-sample lengths, which this recipe does not "
                          "give — set fit.length_grouped=false")
    if len(lengths) != n:
        raise ConfigError(f"fit '{name}': {len(lengths)} sample lengths for {n} training samples")
    return LengthGroupedBatchSampler(lengths, cfg.batch_size, seed, cfg.shuffle, cfg.drop_last, rank, world,
                                     cfg.length_group_batches)


def fit(
    ctx: RunContext,
    name: str,
    model: torch.nn.Module,
    train_data: Dataset[Any],
    step_fn: Callable[..., Any],
    cfg: FitConfig,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    params: Any = None,
    lengths: Sequence[int] | None = None,
) -> FitResult:
    """Train `model` with `step_fn(model, batch[, state]) -> loss | {"loss": loss, ...}`.

    `evaluate(model)` returns validation metrics containing `cfg.monitor`; it runs on every rank
    on the unwrapped model in eval mode. `params` overrides the parameters the optimizer trains.
    `lengths` (one per training sample, e.g. tokens after truncation) is what `cfg.length_grouped`
    groups batches by. The model ends holding its best weights (or last ones without `evaluate`).
    """
    fabric = ctx.fabric
    ckpt_dir = ctx.run_dir / "checkpoints" / name
    done_path, last_path, best_path = ckpt_dir / "done.json", ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    rng_path = ckpt_dir / "final_rng.pt"
    if done_path.exists():  # finished in an earlier session: reuse, and continue the RNG stream
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
        set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
        return FitResult(**json.loads(done_path.read_text()))
    raw_model = model
    optimizer = build_optimizer(params if params is not None else model.parameters(), cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    sampler = _make_sampler(name, train_data, cfg, ctx.seed, fabric.global_rank, fabric.world_size, lengths)
    if sampler.batches_per_epoch() == 0:
        raise ConfigError(f"fit '{name}': {len(train_data)} training samples < fit.batch_size={cfg.batch_size}"  # type: ignore[arg-type]
                          " — lower fit.batch_size or set fit.drop_last=false")
    state = FitState()
    if last_path.exists():  # resume
        ck = torch.load(last_path, map_location="cpu", weights_only=False)
        raw_model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        state = FitState(**ck["state"])
        set_rng_state(ck["rng"])
        ctx.truncate_log(fit=name, after_step=state.step)
    wrapped, optimizer = fabric.setup(raw_model, optimizer)
    pass_state = _count_params(step_fn) >= 3
    # Per-step calls: through Fabric in general; straight to torch where Fabric would only pass through.
    passthrough = _fabric_is_passthrough(fabric)
    step_model = raw_model if passthrough else wrapped
    opt_step = optimizer.optimizer.step if passthrough else optimizer.step
    zero_grad = optimizer.optimizer.zero_grad if passthrough else optimizer.zero_grad
    backward = (lambda t: t.backward()) if passthrough else fabric.backward
    move_batch = not (passthrough and fabric.device.type == "cpu")  # DataLoader batches are already on the CPU
    bpe = sampler.batches_per_epoch()
    constant_lr = cfg.scheduler == "constant"
    ckpt_every = cfg.ckpt_every or cfg.val_every

    def run_eval() -> dict[str, float]:
        if evaluate is None:
            return {}
        was_training = raw_model.training
        raw_model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluate(raw_model).items()}
        raw_model.train(was_training)
        if cfg.monitor not in metrics:
            raise ConfigError(f"fit '{name}': fit.monitor={cfg.monitor!r} is not among the validation metrics "
                              f"{sorted(metrics)} — set fit.monitor to one of them")
        return metrics

    def save(last: bool = True, best: bool = False) -> None:
        ctx.sync_log()
        if fabric.global_rank == 0:
            payload = {"model": raw_model.state_dict()}
            if best:
                _save_atomic(best_path, payload, "fit/best_write")
            if last:
                _save_atomic(last_path, {**payload, "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "state": asdict(state),
                                         "rng": rng_state()}, "fit/checkpoint_write")
        fabric.barrier()

    started = time.perf_counter()
    wrapped.train()
    pbar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"fit {name}", unit="step",
                disable=None if fabric.global_rank == 0 else True, leave=False)
    stop = False
    while state.step < cfg.max_steps and not stop:
        sampler.set_position(state.epoch, state.batch_in_epoch)
        # A private generator: creating a DataLoader iterator draws a seed from it, and that draw
        # must not shift the global RNG stream (a resumed run creates an extra iterator).
        gen = torch.Generator().manual_seed(ctx.seed * 7919 + state.epoch)
        loader = DataLoader(train_data, batch_sampler=sampler, collate_fn=collate_fn,
                            num_workers=cfg.num_workers, generator=gen)
        for batch in loader:
            if move_batch:
                batch = fabric.to_device(batch)
            out = step_fn(step_model, batch, state) if pass_state else step_fn(step_model, batch)
            logs = out if isinstance(out, dict) else {"loss": out}
            loss = logs["loss"]
            loss_value = loss.item()  # one host sync, as `bool(torch.isfinite(loss))` was, without the extra op
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"fit '{name}': loss is {loss_value} at step {state.step}")
            zero_grad(set_to_none=True)
            backward(loss)
            if cfg.grad_clip:
                fabric.clip_gradients(wrapped, optimizer, max_norm=cfg.grad_clip)
            opt_step()
            if not (constant_lr and state.step >= cfg.warmup_steps):  # a constant schedule has nothing to update
                scheduler.step()
            state.step += 1
            state.batch_in_epoch += 1
            pbar.update(1)
            if state.batch_in_epoch >= bpe:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if state.step % cfg.log_every == 0:
                vals = {f"train/{k}": loss_value if k == "loss" else
                        float(v.detach().mean()) if torch.is_tensor(v) else float(v) for k, v in logs.items()}
                vals["train/lr"] = scheduler.get_last_lr()[0]
                if not pbar.disable:
                    pbar.set_postfix(loss=f"{loss_value:.4f}")
                ctx.log(vals, step=state.step, sync=False, fit=name)
            killpoint("fit/step")
            is_last = state.step >= cfg.max_steps
            if state.step % cfg.val_every == 0 or is_last:
                metrics = run_eval()
                improved = False
                if metrics:
                    value = metrics[cfg.monitor]
                    improved = _improved(value, state.best_value, cfg.mode)
                    if improved:
                        state.best_value, state.best_step, state.bad_evals = value, state.step, 0
                    else:
                        state.bad_evals += 1
                    state.history.append({"step": state.step, **metrics})
                    ctx.log(metrics, step=state.step, fit=name)
                    if cfg.early_stop_patience and state.bad_evals >= cfg.early_stop_patience:
                        stop = True
                # the last step needs no resumable checkpoint: done.json follows at once (a kill
                # in between resumes from the previous one, exactly)
                save(last=not is_last, best=improved)
            elif state.step % ckpt_every == 0:
                save(last=True)
            if is_last or stop:
                break
    pbar.close()

    last_metrics = state.history[-1] if state.history else {}
    if best_path.exists():
        raw_model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
        best_metrics = next((h for h in state.history if h["step"] == state.best_step), last_metrics)
    else:
        if fabric.global_rank == 0:
            _save_atomic(best_path, {"model": raw_model.state_dict()}, "fit/best_write")
        best_metrics = last_metrics
    result = FitResult(name=name, steps=state.step, best_step=state.best_step,
                       best_metrics={k: v for k, v in best_metrics.items() if k != "step"},
                       last_metrics={k: v for k, v in last_metrics.items() if k != "step"},
                       history=state.history, train_seconds=round(time.perf_counter() - started, 3))
    if fabric.global_rank == 0:
        _save_atomic(rng_path, rng_state(), "fit/rng_write")
        atomic_write_json(done_path, asdict(result))
        last_path.unlink(missing_ok=True)  # the optimizer state is no longer needed
    fabric.barrier()
    killpoint("fit/done")
    return result
