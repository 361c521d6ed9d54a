"""Fit loop: training, checkpoints, exact resume after a kill, samplers, schedules, stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher import killpoints
from multiteacher.config import RecipeConfig
from multiteacher.engine.loop import EpochBatchSampler, FitConfig, fit, lr_factor
from multiteacher.engine.setup import seed_everything
from multiteacher.errors import ConfigError
from multiteacher.io import leftover_temp_files
from multiteacher.runs import RunContext, read_metrics


class Killed(Exception):
    """Stands in for SIGKILL in-process (the subprocess tests use the real signal)."""


def make_ctx(run_dir: Path, seed: int = 0) -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(run_dir=run_dir, data_dir=run_dir, cache_dir=run_dir,
                      config=RecipeConfig(recipe="example", name="t", seed=seed))


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    loss = nn.functional.cross_entropy(m(x), y)
    return {"loss": loss, "extra": loss.detach() * 2}


def evaluate(m: nn.Module) -> dict[str, float]:
    x, y = data().tensors
    logits = m(x)
    return {"val/acc": float((logits.argmax(1) == y).float().mean()),
            "val/loss": float(nn.functional.cross_entropy(logits, y))}


CFG = FitConfig(max_steps=37, batch_size=16, lr=0.01, val_every=10, log_every=5, monitor="val/acc", mode="max",
                scheduler="cosine", warmup_steps=3)


def run_fit(run_dir: Path) -> tuple[nn.Module, object]:
    seed_everything(0)
    ctx = make_ctx(run_dir)
    m = model()
    res = fit(ctx, "m", m, data(), step, CFG, evaluate)
    return m, res


def test_fit_trains_and_records(tmp_path: Path) -> None:
    m, res = run_fit(tmp_path / "a")
    assert res.steps == 37 and res.best_metrics["val/acc"] > 0.8
    assert [h["step"] for h in res.history] == [10, 20, 30, 37]
    ck = tmp_path / "a" / "checkpoints" / "m"
    assert (ck / "best.pt").exists() and (ck / "done.json").exists() and not (ck / "last.pt").exists()
    recs = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert any("train/extra" in r for r in recs) and any("val/acc" in r for r in recs)
    # a second call reuses the finished fit and loads the best weights
    m2 = model()
    res2 = fit(make_ctx(tmp_path / "a"), "m", m2, data(), step, CFG, evaluate)
    assert res2.best_step == res.best_step
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


@pytest.mark.parametrize("point", ["fit/step@13", "fit/step@30", "fit/checkpoint_write@2", "fit/best_write@1",
                                   "fit/rng_write@1"])
def test_resume_after_kill_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    ref, ref_res = run_fit(tmp_path / "ref")

    def die() -> None:
        raise Killed

    monkeypatch.setattr(killpoints, "_die", die)
    monkeypatch.setenv("MULTITEACHER_KILL_AT", point)
    killpoints.reset()
    with pytest.raises(Killed):
        run_fit(tmp_path / "k")
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    from multiteacher.io import clean_temp_files

    clean_temp_files(tmp_path / "k")  # what execute_run does on --resume
    torch.manual_seed(12345)  # a resumed process starts with a different RNG state
    got, res = run_fit(tmp_path / "k")
    assert res.history == ref_res.history, (res.history, ref_res.history)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    assert res.history == ref_res.history and res.best_step == ref_res.best_step
    assert leftover_temp_files(tmp_path / "k") == []
    killpoints.reset()


def test_resumed_log_has_no_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(killpoints, "_die", lambda: (_ for _ in ()).throw(Killed()))
    monkeypatch.setenv("MULTITEACHER_KILL_AT", "fit/step@25")
    killpoints.reset()
    with pytest.raises(Killed):
        run_fit(tmp_path / "k")
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    run_fit(tmp_path / "k")
    steps = [(r["step"], tuple(sorted(r))) for r in read_metrics(tmp_path / "k" / "metrics.jsonl")]
    assert len(steps) == len(set(steps))
    killpoints.reset()


def test_sampler_ddp_split_and_resume() -> None:
    one = list(EpochBatchSampler(50, 8, seed=3))
    r0 = list(EpochBatchSampler(50, 8, seed=3, rank=0, world=2))
    r1 = list(EpochBatchSampler(50, 8, seed=3, rank=1, world=2))
    assert len(one) == 6 and all(sorted(a + b) == sorted(c) for a, b, c in zip(r0, r1, one))
    s = EpochBatchSampler(50, 8, seed=3)
    s.set_position(0, 4)
    assert list(s) == one[4:]
    s.set_position(1, 0)
    assert list(s) != one
    assert len(EpochBatchSampler(50, 8, seed=3, drop_last=False)) == 7
    with pytest.raises(ConfigError, match="divisible"):
        EpochBatchSampler(50, 7, seed=0, world=2)
    assert list(EpochBatchSampler(5, 2, seed=0, shuffle=False, drop_last=False)) == [[0, 1], [2, 3], [4]]


def test_lr_schedules() -> None:
    c = FitConfig(max_steps=110, warmup_steps=10, scheduler="cosine")
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(10, c) == pytest.approx(1.0)
    assert lr_factor(60, c) == pytest.approx(0.5) and lr_factor(110, c) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(60, c.model_copy(update={"scheduler": "linear"})) == pytest.approx(0.5)
    assert lr_factor(250, FitConfig(scheduler="step", step_size=100, gamma=0.5)) == pytest.approx(0.25)
    assert lr_factor(5, FitConfig()) == 1.0


def test_optimizers_and_clip(tmp_path: Path) -> None:
    for opt in ("sgd", "adam"):
        cfg = CFG.model_copy(update={"optimizer": opt, "grad_clip": 1.0, "max_steps": 5, "val_every": 5})
        res = fit(make_ctx(tmp_path / opt), "m", model(), data(), step, cfg, evaluate)
        assert res.steps == 5


def test_fit_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fit.monitor"):
        fit(make_ctx(tmp_path / "a"), "m", model(), data(), step, CFG.model_copy(update={"monitor": "val/nope"}),
            evaluate)
    with pytest.raises(ConfigError, match="batch_size"):
        fit(make_ctx(tmp_path / "b"), "m", model(), data(), step, CFG.model_copy(update={"batch_size": 500}), evaluate)


def test_early_stop_and_no_eval(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"max_steps": 200, "val_every": 2, "early_stop_patience": 2, "lr": 1e-9})
    res = fit(make_ctx(tmp_path / "e"), "m", model(), data(), step, cfg, evaluate)
    assert res.steps < 200
    res = fit(make_ctx(tmp_path / "n"), "m", model(), data(), lambda m, b, s: step(m, b)["loss"],
              CFG.model_copy(update={"max_steps": 4}))
    assert res.steps == 4 and res.best_metrics == {}


def test_nonfinite_loss_raises(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError):
        fit(make_ctx(tmp_path / "x"), "m", model(), data(), lambda m, b: m(b[0]).sum() * float("nan"), CFG)


def test_stage_runs_once(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    calls: list[int] = []

    def work() -> dict[str, int]:
        calls.append(1)
        torch.rand(3)
        return {"v": 7}

    torch.manual_seed(0)
    assert ctx.stage("gen/0", work) == {"v": 7}
    after = torch.rand(1)
    torch.manual_seed(99)
    assert ctx.stage("gen/0", work) == {"v": 7} and len(calls) == 1
    assert torch.equal(torch.rand(1), after)  # RNG continues as if the stage had run
    assert json.loads((tmp_path / "stages" / "gen__0.json").read_text())["result"] == {"v": 7}


def test_fabric_path_bf16_mixed(tmp_path: Path) -> None:
    """The non-passthrough path (Fabric precision plugin) trains and resumes too."""
    from multiteacher.config import FabricConfig
    from multiteacher.engine.setup import make_fabric

    fabric = make_fabric(FabricConfig(precision="bf16-mixed"), launch=False)
    ctx = make_ctx(tmp_path)
    ctx.fabric = fabric
    res = fit(ctx, "m", model(), data(), step, CFG, evaluate)
    assert res.steps == 37 and res.best_metrics["val/acc"] > 0.7


def test_results_record_the_runs_own_cpu_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cpu_time_s` is the main process's CPU time between the context's start and `finish` (clock faked)."""
    import time as real_time
    import types

    import multiteacher.runs as runs_mod

    ticks = iter([100.0, 103.5])
    fake = types.SimpleNamespace(**{k: getattr(real_time, k) for k in ("perf_counter", "strftime", "gmtime",
                                                                        "time", "monotonic", "sleep")})
    fake.process_time = lambda: next(ticks)
    monkeypatch.setattr(runs_mod, "time", fake)
    ctx = make_ctx(tmp_path / "r")
    res = ctx.finish(metrics={"acc": 1.0})
    assert res.cpu_time_s == 3.5
    assert json.loads((tmp_path / "r" / "results.json").read_text())["cpu_time_s"] == 3.5
    assert "CPU 3.5 s" in (tmp_path / "r" / "report.md").read_text()
