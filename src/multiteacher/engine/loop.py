"""The fit loop: Fabric training with periodic validation, atomic checkpoints and exact resume.

`fit` trains `model` for `cfg.max_steps` optimizer steps. Every `cfg.val_every` steps (and at the
end) it calls `evaluate(model)`, keeps the best weights by `cfg.monitor`, and writes
`<ckpt_dir>/last.pt` (model, optimizer, scheduler, step, position in the epoch, every RNG
state, best-so-far) and `best.pt` atomically; `ckpt_dir` is `<run>/checkpoints/<name>` unless given.
A killed run calls `fit` again with the same arguments: it restores `last.pt` and continues
mid-epoch with the same data order, so it ends with the same weights and metrics as an
uninterrupted run (bit-exact on CPU). A finished fit leaves `done.json`; calling `fit` again then
only loads the best weights and returns the stored result.

Data order comes from a resumable batch sampler (`engine/sampling.py`): by default a seeded
permutation per epoch; under DDP each rank takes a strided slice of every global batch, so 1
process with batch B and N processes with B/N see the same samples per step. `cfg.batch_size` is
the global batch. With `cfg.length_grouped` (and per-sample `lengths`), batches hold samples of
similar length. A caller may pass its own sampler (e.g. `MixtureBatchSampler`, as NGC edges do).

The pieces: `FitConfig` (settings), `FitState` (where training is), `FitResult` (what comes back),
`engine/checkpoint.py` (the files), `_StepRunner` (one optimisation step), `_Fit` (restore, epochs,
validation and best tracking, checkpoints, finish) and `fit` (the composition). Outside a run
(executor workers) pass an `engine.context.LocalContext`.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from multiteacher.config import StrictModel
from multiteacher.engine.checkpoint import FitCheckpoints
from multiteacher.engine.sampling import (
    EpochBatchSampler,
    LengthGroupedBatchSampler,
    MixtureBatchSampler,
    make_sampler,
)
from multiteacher.engine.setup import set_rng_state
from multiteacher.errors import ConfigError
from multiteacher.killpoints import killpoint
from multiteacher.progress import progress

if TYPE_CHECKING:
    from multiteacher.engine.context import FitContext

__all__ = [
    "EpochBatchSampler",
    "FitConfig",
    "FitResult",
    "FitState",
    "LengthGroupedBatchSampler",
    "MixtureBatchSampler",
    "build_optimizer",
    "check_same_fit",
    "fit",
    "fit_config_record",
    "lr_factor",
]

class FitConfig(StrictModel):
    """Optimisation and bookkeeping settings of one `fit` call.

    Example:
        >>> FitConfig(max_steps=100, lr=3e-4, scheduler="cosine").optimizer
        'adamw'
    """

    max_steps: int = Field(200, gt=0, description="optimizer steps to train for")
    batch_size: int = Field(32, gt=0, description="global batch size (split across DDP processes)")
    eval_batch_size: int | None = Field(None, gt=0, description="batch size of evaluation (default: batch_size)")
    optimizer: Literal["adamw", "adam", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    scheduler: Literal["constant", "cosine", "linear", "step"] = Field(
        "constant", description="learning-rate schedule after warm-up")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from lr/warmup_steps to lr")
    step_size: int = Field(100, gt=0, description="scheduler=step: steps between decays")
    gamma: float = Field(0.5, gt=0, description="scheduler=step: decay factor")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="scheduler=cosine: floor of the decay, as a share of lr")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this (none: no clipping)")
    val_every: int = Field(100, gt=0, description="steps between validations (and checkpoints)")
    ckpt_every: int | None = Field(
        None, ge=0, description="steps between resume points (default: val_every; 0: only at validations)")
    monitor: str = Field("val/loss", description="validation metric that picks the best weights")
    mode: Literal["min", "max"] = Field("min", description="whether a lower or higher monitor value is better")
    early_stop_patience: int | None = Field(
        None, gt=0, description="stop after this many validations without improvement (none: never)")
    log_every: int = Field(10, gt=0, description="steps between training-loss records in metrics.jsonl")
    shuffle: bool = Field(True, description="permute the training samples every epoch")
    drop_last: bool = Field(True, description="drop the last, short batch of an epoch")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    length_grouped: bool = Field(
        False, description="batches of similar sample length (needs per-sample lengths; less padding)")
    length_group_batches: int = Field(50, ge=1, description="length_grouped: batches per length-sorted pool")


@dataclass
class FitState:
    """Where training is: passed to `step_fn` so losses can follow schedules, and stored in `last.pt`.

    Args:
        step: optimizer steps done.
        epoch: current epoch.
        batch_in_epoch: batches of the current epoch done.
        best_value: best monitored value so far.
        best_step: step of `best_value` (-1: none).
        bad_evals: validations since the last improvement.
        history: one record per validation.
        extra: JSON/torch-serialisable values a `step_fn` keeps across steps (resumed with the rest).

    Example:
        >>> s = FitState(); s.extra.setdefault("losses", []).append(0.5); s.step
        0
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int = -1
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What a fit returns (and stores in done.json).

    Args:
        name: the fit's name.
        steps: optimizer steps done.
        best_step: step of the best validation (-1 without validation).
        best_metrics: validation metrics at `best_step`.
        last_metrics: metrics of the last validation.
        history: one record per validation.
        train_seconds: wall time of this session's training.
        extra: the final `FitState.extra` (what the step function kept).

    Example:
        >>> FitResult("m", 10, -1, {}, {}, [], 0.1).steps
        10
    """

    name: str
    steps: int
    best_step: int
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    history: list[dict[str, Any]]
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _count_params(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 2


def build_optimizer(params: Any, cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, over `params`.

    Args:
        params: parameters (or parameter groups) to train.
        cfg: the fit's config (optimizer, lr, weight_decay, momentum).

    Returns:
        A torch optimizer.

    Example:
        >>> type(build_optimizer(torch.nn.Linear(2, 1).parameters(), FitConfig(optimizer="sgd"))).__name__
        'SGD'
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    params = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    # Fused kernels (one pass over each parameter instead of ~10 tensor ops): what transformers'
    # Trainer uses by default. On CPU torch's default is the per-tensor loop, ~4x slower for a 22M-param
    # cross-encoder (0.10 vs 0.02 s a step, `python -m bench.profile_b2 --before`). Fused needs floating-point
    # parameters on one supported device; anything else keeps torch's default.
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=_fusable(params))
    except (RuntimeError, ValueError, TypeError):
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _fusable(params: list[Any]) -> bool:
    """True when every parameter (or every group's) is a floating-point tensor on the CPU or a CUDA device."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(tensors) and all(isinstance(p, torch.Tensor) and p.is_floating_point()
                                 and p.device.type in ("cpu", "cuda") for p in tensors)


def lr_factor(step: int, cfg: FitConfig) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then constant / cosine / linear / step decay.

    Cosine decays from 1 to `cfg.min_lr_ratio` over the steps after warm-up.

    Args:
        step: optimizer steps done.
        cfg: the fit's config.

    Returns:
        The factor the peak learning rate is multiplied by.

    Example:
        >>> lr_factor(50, FitConfig(max_steps=100, scheduler="cosine"))
        0.5
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.scheduler == "constant":
        return 1.0
    if cfg.scheduler == "step":
        return cfg.gamma ** (step // cfg.step_size)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.scheduler == "cosine":
        if cfg.min_lr_ratio:  # angle as (pi * t) / span, the form NGC edges always used
            t = min(span, step - cfg.warmup_steps)
            return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t / span))
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return 1.0 - progress


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


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


class _StepRunner:
    """One optimisation step: forward through `step_fn`, finiteness check, backward, clip, optimizer
    and scheduler step. Through Fabric in general; straight to torch where Fabric would only pass through."""

    def __init__(self, fabric: Any, name: str, raw_model: torch.nn.Module, wrapped: Any, optimizer: Any,
                 scheduler: Any, step_fn: Callable[..., Any], cfg: FitConfig) -> None:
        self.fabric, self.name, self.cfg, self.scheduler = fabric, name, cfg, scheduler
        self.wrapped, self.optimizer, self.step_fn = wrapped, optimizer, step_fn
        self.pass_state = _count_params(step_fn) >= 3
        passthrough = _fabric_is_passthrough(fabric)
        self.model = raw_model if passthrough else wrapped
        self.opt_step = optimizer.optimizer.step if passthrough else optimizer.step
        self.zero_grad = optimizer.optimizer.zero_grad if passthrough else optimizer.zero_grad
        self.backward = (lambda t: t.backward()) if passthrough else fabric.backward
        self.move_batch = not (passthrough and fabric.device.type == "cpu")  # DataLoader batches are on the CPU
        self.constant_lr = cfg.scheduler == "constant"

    def __call__(self, batch: Any, state: FitState) -> tuple[float, dict[str, Any]]:
        """Run one step on `batch`; return the loss value and the step function's logs."""
        if self.move_batch:
            batch = self.fabric.to_device(batch)
        out = self.step_fn(self.model, batch, state) if self.pass_state else self.step_fn(self.model, batch)
        logs = out if isinstance(out, dict) else {"loss": out}
        loss = logs["loss"]
        loss_value = loss.item()  # one host sync, as `bool(torch.isfinite(loss))` was, without the extra op
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"fit '{self.name}': loss is {loss_value} at step {state.step}")
        self.zero_grad(set_to_none=True)
        self.backward(loss)
        if self.cfg.grad_clip:
            self.fabric.clip_gradients(self.wrapped, self.optimizer, max_norm=self.cfg.grad_clip)
        self.opt_step()
        if not (self.constant_lr and state.step >= self.cfg.warmup_steps):  # constant: nothing to update
            self.scheduler.step()
        return loss_value, logs


class _Fit:
    """One fit in progress: its optimizer, sampler, state and files; each method does one job."""

    def __init__(self, ctx: FitContext, name: str, model: torch.nn.Module, train_data: Dataset[Any],
                 cfg: FitConfig, ckpt: FitCheckpoints, evaluate: Callable[[torch.nn.Module], dict[str, float]] | None,
                 collate_fn: Callable[[list[Any]], Any] | None, params: Any, lengths: Sequence[int] | None,
                 sampler: EpochBatchSampler | None) -> None:
        self.ctx, self.fabric, self.name, self.raw_model = ctx, ctx.fabric, name, model
        self.train_data, self.cfg, self.ckpt, self.evaluate_fn = train_data, cfg, ckpt, evaluate
        self.collate_fn = collate_fn
        self.optimizer = build_optimizer(params if params is not None else model.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.sampler = sampler if sampler is not None else make_sampler(
            name, train_data, cfg, ctx.seed, self.fabric.global_rank, self.fabric.world_size, lengths)
        if self.sampler.batches_per_epoch() == 0:
            raise ConfigError(f"fit '{name}': {len(train_data)} training samples < fit.batch_size="  # type: ignore[arg-type]
                              f"{cfg.batch_size} — lower fit.batch_size or set fit.drop_last=false")
        self.state = FitState()
        self.stop = False

    def restore(self) -> None:
        """Continue from `last.pt` if a killed session left one: weights, optimizer, schedule, state, RNG."""
        ck = self.ckpt.load_last()
        if ck is None:
            return
        self.raw_model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.state = FitState(**ck["state"])
        set_rng_state(ck["rng"])
        self.ctx.truncate_log(fit=self.name, after_step=self.state.step)

    def batches(self) -> Iterator[Any]:
        """The batches of the current epoch from the resume position on."""
        self.sampler.set_position(self.state.epoch, self.state.batch_in_epoch)
        # A private generator: creating a DataLoader iterator draws a seed from it, and that draw
        # must not shift the global RNG stream (a resumed run creates an extra iterator).
        gen = torch.Generator().manual_seed(self.ctx.seed * 7919 + self.state.epoch)
        return iter(DataLoader(self.train_data, batch_sampler=self.sampler, collate_fn=self.collate_fn,
                               num_workers=self.cfg.num_workers, generator=gen))

    def advance(self, loss_value: float, logs: dict[str, Any], pbar: Any) -> None:
        """Count the step (and the epoch), and log the training values every `log_every` steps."""
        s = self.state
        s.step += 1
        s.batch_in_epoch += 1
        pbar.update(1)
        if s.batch_in_epoch >= self.sampler.batches_per_epoch():
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        if s.step % self.cfg.log_every == 0:
            vals = {f"train/{k}": loss_value if k == "loss" else
                    float(v.detach().mean()) if torch.is_tensor(v) else float(v) for k, v in logs.items()}
            vals["train/lr"] = self.scheduler.get_last_lr()[0]
            if not pbar.disable:
                pbar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)  # shown at the next redraw
            self.ctx.log(vals, step=s.step, sync=False, fit=self.name)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the unwrapped model in eval mode ({} without `evaluate`)."""
        if self.evaluate_fn is None:
            return {}
        was_training = self.raw_model.training
        self.raw_model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate_fn(self.raw_model).items()}
        self.raw_model.train(was_training)
        if self.cfg.monitor not in metrics:
            raise ConfigError(f"fit '{self.name}': fit.monitor={self.cfg.monitor!r} is not among the validation "
                              f"metrics {sorted(metrics)} — set fit.monitor to one of them")
        return metrics

    def track(self, metrics: dict[str, float]) -> bool:
        """Record a validation, update best-so-far and early stopping; True when it improved."""
        if not metrics:
            return False
        s, cfg = self.state, self.cfg
        value = metrics[cfg.monitor]
        improved = _improved(value, s.best_value, cfg.mode)
        if improved:
            s.best_value, s.best_step, s.bad_evals = value, s.step, 0
        else:
            s.bad_evals += 1
        s.history.append({"step": s.step, **metrics})
        self.ctx.log(metrics, step=s.step, fit=self.name)
        if cfg.early_stop_patience and s.bad_evals >= cfg.early_stop_patience:
            self.stop = True
        return improved

    def save(self, last: bool = True, best: bool = False) -> None:
        """Write the resume point (`last`) and/or the best weights (`best`), after syncing the log."""
        self.ctx.sync_log()
        resume = ({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                   "state": asdict(self.state)} if last else None)
        self.ckpt.save(self.raw_model, resume, best)
        self.fabric.barrier()

    def after_step(self) -> bool:
        """Validate / checkpoint as the schedule says; True when training ends here."""
        s, cfg = self.state, self.cfg
        is_last = s.step >= cfg.max_steps
        ckpt_every = cfg.val_every if cfg.ckpt_every is None else cfg.ckpt_every
        if s.step % cfg.val_every == 0 or is_last:
            improved = self.track(self.evaluate())
            # the last step needs no resumable checkpoint: done.json follows at once (a kill
            # in between resumes from the previous one, exactly)
            self.save(last=not is_last, best=improved)
        elif ckpt_every and s.step % ckpt_every == 0:
            self.save(last=True)
        return is_last or self.stop

    def train(self, step: _StepRunner) -> None:
        """Epochs of optimisation steps until `max_steps` (or early stopping)."""
        self.stop = False
        pbar = progress(total=self.cfg.max_steps, initial=self.state.step, desc=f"fit {self.name}", unit="step",
                         enabled=self.fabric.global_rank == 0, leave=False)
        done = False
        while self.state.step < self.cfg.max_steps and not done:
            for batch in self.batches():
                loss_value, logs = step(batch, self.state)
                self.advance(loss_value, logs, pbar)
                killpoint("fit/step")
                done = self.after_step()
                if done:
                    break
        pbar.close()

    def finish(self, started: float) -> FitResult:
        """Leave the best weights in the model, store the result (`done.json`) and the final RNG state."""
        s = self.state
        last_metrics = s.history[-1] if s.history else {}
        if self.ckpt.load_best_into(self.raw_model):
            best_metrics = next((h for h in s.history if h["step"] == s.best_step), last_metrics)
        else:
            self.ckpt.save(self.raw_model, None, best=True)
            best_metrics = last_metrics
        result = FitResult(name=self.name, steps=s.step, best_step=s.best_step,
                           best_metrics={k: v for k, v in best_metrics.items() if k != "step"},
                           last_metrics={k: v for k, v in last_metrics.items() if k != "step"},
                           history=s.history, train_seconds=round(time.perf_counter() - started, 3),
                           extra=s.extra)
        self.ckpt.finish(asdict(result))
        self.fabric.barrier()
        killpoint("fit/done")
        return result


def fit_config_record(cfg: FitConfig) -> dict[str, Any]:
    """The FitConfig as `last.pt` / `done.json` store it: every field that can change the result.

    `num_workers` is left out (it changes only how fast batches are loaded).

    Args:
        cfg: the fit's settings.

    Returns:
        A JSON-able dict.

    Example:
        >>> "num_workers" in fit_config_record(FitConfig()), fit_config_record(FitConfig())["lr"]
        (False, 0.001)
    """
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k != "num_workers"}


def check_same_fit(ctx: Any, name: str, ckpt: FitCheckpoints) -> None:
    """Refuse to reuse or continue a fit stored with another FitConfig, in one line naming the field.

    Why: calling `fit` again on a finished (or killed) fit returns (or continues) what is stored;
    with different settings that would silently mix two trainings. A context with
    `allow_changed=True` (`--resume --allow-changed`) continues anyway.

    Args:
        ctx: the run (its `allow_changed`, when it has one).
        name: the fit's name.
        ckpt: the fit's files, with the current `fit_config`.

    Returns:
        None.

    Raises:
        ConfigError: the stored FitConfig differs.

    Example:
        >>> # check_same_fit(ctx, "student", FitCheckpoints(root, fit_config=fit_config_record(cfg)))
    """
    if ckpt.fit_config is None:
        return
    stored = ckpt.stored_fit_config()
    if stored is None or stored == ckpt.fit_config:
        return
    if getattr(ctx, "allow_changed", False):
        ckpt.accept_fit_config(stored)  # accepted once: later plain resumes take the new settings as the fit's
        return
    diff = [f"'{k}': {stored.get(k, '<absent>')!r:.60} there, {ckpt.fit_config.get(k, '<absent>')!r:.60} now"
            for k in sorted(set(stored) | set(ckpt.fit_config), key=str) if stored.get(k) != ckpt.fit_config.get(k)]
    state = "finished" if ckpt.finished else "partial"
    more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
    raise ConfigError(f"fit '{name}': the {state} fit in {ckpt.root} was made with another FitConfig "
                      f"({diff[0]}{more}) — use the same settings, another run directory / ckpt_dir, or remove "
                      f"{ckpt.root} to train again")


def fit(
    ctx: FitContext,
    name: str,
    model: torch.nn.Module,
    train_data: Dataset[Any],
    step_fn: Callable[..., Any],
    cfg: FitConfig,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    params: Any = None,
    lengths: Sequence[int] | None = None,
    *,
    ckpt_dir: str | Path | None = None,
    sampler: EpochBatchSampler | None = None,
) -> FitResult:
    """Train `model` with `step_fn(model, batch[, state]) -> loss | {"loss": loss, ...}`, resumably.

    `evaluate(model)` returns validation metrics containing `cfg.monitor`; it runs on every rank
    on the unwrapped model in eval mode. The model ends holding its best weights (or the last ones
    without `evaluate`). Calling `fit` again after a kill continues exactly where it stopped; after
    it finished, it loads the best weights and returns the stored result.

    Args:
        ctx: a `RunContext`, or an `engine.context.LocalContext` outside a run (executor jobs).
        name: the fit's name (log tag; checkpoint folder `<run>/checkpoints/<name>` by default).
        model: the module to train.
        train_data: a map-style dataset (one with `__getitems__` gets whole batches of indices).
        step_fn: `(model, batch)` or `(model, batch, state)` -> loss tensor or dict with "loss".
        cfg: optimisation and bookkeeping settings.
        evaluate: validation metrics of a model (none: no validation, the last weights are kept).
        collate_fn: builds a batch from the dataset's items.
        params: the parameters the optimizer trains (default: all of `model`'s).
        lengths: per-sample lengths, for `cfg.length_grouped`.
        ckpt_dir: where the fit's files go (e.g. a job folder in the cache), instead of the run's.
        sampler: a resumable batch sampler to use instead of the one `cfg` describes (then
            `cfg.shuffle`, `cfg.drop_last`, `cfg.length_grouped` and `lengths` are unused, and the
            sampler splits batches across DDP ranks itself, e.g. `MixtureBatchSampler(rank=, world=)`).

    Returns:
        A `FitResult` (also stored in `done.json`).

    Example:
        >>> # ctx = LocalContext(seed=0, run_dir=Path("/tmp/r"))
        >>> # res = fit(ctx, "m", model, TensorDataset(x, y), lambda m, b: F.mse_loss(m(b[0]), b[1]),
        >>> #           FitConfig(max_steps=100, batch_size=16))
    """
    root = Path(ckpt_dir) if ckpt_dir is not None else ctx.run_dir / "checkpoints" / name
    ckpt = FitCheckpoints(root, is_main=ctx.fabric.global_rank == 0, fit_config=fit_config_record(cfg))
    check_same_fit(ctx, name, ckpt)
    if ckpt.finished:  # finished in an earlier session: reuse, and continue the RNG stream
        return FitResult(**ckpt.load_finished(model))
    run = _Fit(ctx, name, model, train_data, cfg, ckpt, evaluate, collate_fn, params, lengths, sampler)
    run.restore()
    wrapped, optimizer = ctx.fabric.setup(model, run.optimizer)
    run.optimizer = optimizer  # checkpoints store the optimizer state through Fabric's wrapper
    step = _StepRunner(ctx.fabric, name, model, wrapped, optimizer, run.scheduler, step_fn, cfg)
    started = time.perf_counter()
    wrapped.train()
    run.train(step)
    return run.finish(started)
