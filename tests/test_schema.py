"""results.json / run.json schema: validated on write and read; a run made through the Python API
(no CLI, no recipe) is reportable; a broken file gives one line naming the file and the fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher.cli import main
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.errors import DataError
from multiteacher.io import read_metrics
from multiteacher.report import load_results, write_run_report
from multiteacher.runs import RunContext
from multiteacher.schema import RunInfo, RunResults, read_results, read_run_info

REPO = Path(__file__).resolve().parents[1]


def test_every_committed_result_follows_the_schema() -> None:
    files = sorted((REPO / "results").rglob("results.json"))
    assert len(files) >= 10
    for f in files:
        res = read_results(f)
        raw = json.loads(f.read_text())
        # nothing is lost or coerced: the validated model dumps back to the file's content
        assert {k: v for k, v in res.model_dump().items() if k in raw} == raw, f
    for f in sorted((REPO / "results").rglob("run.json")):
        assert read_run_info(f.parent).sessions >= 1


def _script_run(run_dir: Path) -> tuple[RunContext, RunResults]:
    """A user's script: own model and data, the engine's fit loop, no recipe and no CLI."""
    ctx = RunContext.create(run_dir, seed=3, data_dir=run_dir.parent, cache_dir=run_dir.parent / "cache")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2)

    def step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"val/acc": float((m(x).argmax(1) == y).float().mean())}

    fit(ctx, "clf", model, TensorDataset(x, y), step, FitConfig(max_steps=40, batch_size=32, lr=0.1, val_every=20,
                                                               monitor="val/acc", mode="max"), evaluate)
    acc = evaluate(model)["val/acc"]
    return ctx, ctx.finish(metrics={"acc": acc}, rows=[{"model": "linear", "acc": acc}])


def test_python_api_run_is_reportable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "my script"
    ctx, res = _script_run(run_dir)
    assert ctx.seed == 3 and res.name == "my_script" and res.recipe == "script" and res.sessions == 1
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert RunResults.model_validate(on_disk) == res
    info = read_run_info(run_dir)
    assert info.model_dump(include={"recipe", "name", "config_hash", "sessions"}) == RunInfo(
        recipe="script", name="my_script", config_hash=res.config_hash, sessions=1).model_dump(
        include={"recipe", "name", "config_hash", "sessions"})
    # run.json also remembers what a resume must match: the config, the data and cache directories
    assert info.config == res.config and info.data_dir == str(tmp_path) and info.cache_dir == str(tmp_path / "cache")
    # metrics.jsonl holds the fit's validations; the last one is the value the script reported
    vals = [r["val/acc"] for r in read_metrics(run_dir / "metrics.jsonl") if "val/acc" in r]
    assert len(vals) == 2 and max(vals) == pytest.approx(res.metrics["acc"])
    report = write_run_report(run_dir).read_text()
    assert report.startswith("# Run `my_script` (script)") and f"| acc | {res.metrics['acc']:.4f} |" in report
    assert (run_dir / "plots" / "clf.png").exists()
    assert main(["report", str(run_dir)]) == 0
    assert f"| linear | {res.metrics['acc']:.3f} |" in capsys.readouterr().out


def test_create_refuses_a_used_directory_unless_resume(tmp_path: Path) -> None:
    from multiteacher.errors import ConfigError

    run_dir = tmp_path / "r"
    _script_run(run_dir)
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        RunContext.create(run_dir)
    ctx = RunContext.create(run_dir, resume=True)
    assert read_run_info(run_dir).sessions == 2 and ctx.resumed


@pytest.mark.parametrize("drop,set_,fields", [
    (["name", "config_hash"], {}, ["missing field(s) 'name', 'config_hash'"]),
    ([], {"seed": "abc", "rows": {"not": "a list"}}, ["invalid field(s) 'seed'", "'rows'"]),
    (["metrics"], {"sessions": 0}, ["missing field(s) 'metrics'", "invalid field(s) 'sessions'"]),
])
def test_broken_results_name_file_and_fields_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         drop: list[str], set_: dict, fields: list[str]) -> None:
    good = {"recipe": "script", "name": "x", "seed": 0, "config_hash": "h", "metrics": {"acc": 1.0}, "rows": []}
    bad = {k: v for k, v in good.items() if k not in drop} | set_
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(bad))
    for call in (lambda: load_results([run_dir]), lambda: write_run_report(run_dir)):
        with pytest.raises(DataError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{run_dir / 'results.json'}: ") and "\n" not in msg
        assert all(f in msg for f in fields), msg
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(f in err for f in fields)
    assert not (run_dir / "report.md").exists()


def test_extra_keys_are_kept(tmp_path: Path) -> None:
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"recipe": "r", "name": "x", "seed": 0, "config_hash": "h", "metrics": {},
                             "rows": [{"kind": "a", "v": 1.0}], "my_recipe_section": {"k": [1, 2]}}))
    res = load_results([f])[0]
    assert res["my_recipe_section"] == {"k": [1, 2]} and res["rows"] == [{"kind": "a", "v": 1.0}]
    assert res["sessions"] == 1 and res["commit"] == "unknown" and res["wall_time_s"] is None


def test_broken_run_json_is_named_on_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    _script_run(run_dir)
    (run_dir / "run.json").write_text(json.dumps({"recipe": "script", "name": "r", "sessions": "many"}))
    with pytest.raises(DataError, match=r"run\.json: missing field\(s\) 'config_hash'; invalid field\(s\) 'sessions'"):
        RunContext.create(run_dir, resume=True)
