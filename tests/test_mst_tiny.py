"""End-to-end tiny MST-Distill run on the shared AV-digits data: behaviour, not only completion."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiteacher.config import load_config
from multiteacher.recipes import mst
from multiteacher.runs import RunContext, comparable_results, execute_run
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tiny_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cfg = load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml")
    run_dir = tmp_path_factory.mktemp("mst") / "run"
    # the cache dir the tests resume and evaluate with: a resume refuses another cache dir (issue 15, defect 3)
    return run_dir, execute_run(cfg, run_dir, data_dir, run_dir.parent)


@pytest.mark.slow
@pytest.mark.data
def test_tiny_mst_behaviour(tiny_run: tuple[Path, dict]) -> None:
    _, res = tiny_run
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"mst", "no_kd", "kd_mm"}
    m = rows["mst"]
    assert m["direction"] == "audio->image" and m["fold"] == "george"
    # the router spreads instances over at least two of the 2L = 4 masked teachers
    usage = {k: v for k, v in m.items() if k.startswith("route/")}
    assert len(usage) == 4 and sum(usage.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(v > 0.02 for v in usage.values()) >= 2
    # the MaskNets learned masks that are not all ones (they really specialise the teachers)
    mins = [v for k, v in m.items() if k.startswith("mask_min/")]
    means = [v for k, v in m.items() if k.startswith("mask_mean/")]
    assert len(mins) == 4 and min(mins) < 0.9 and min(means) < 0.95
    # every student beats chance (10 classes) clearly
    for r in rows.values():
        assert r["acc"] > 0.3, r


@pytest.mark.slow
@pytest.mark.data
def test_tiny_mst_resume_and_eval(tiny_run: tuple[Path, dict], data_dir: Path) -> None:
    run_dir, res = tiny_run
    cfg = load_config(run_dir / "config.yaml")
    again = execute_run(cfg, run_dir, data_dir, run_dir.parent, resume=True)  # all stages stored
    assert comparable_results(again) == comparable_results(res)
    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, cache_dir=run_dir.parent, config=cfg)
    metrics = mst.evaluate(cfg, ctx)
    for r in res["rows"]:
        assert metrics[f"audio->image/{r['method']}/george/acc"] == pytest.approx(r["acc"])


@pytest.mark.slow
@pytest.mark.data
def test_eval_of_a_method_the_run_did_not_train_is_refused(tiny_run: tuple[Path, dict], data_dir: Path) -> None:
    """`eval --set methods=[...]` naming a method the run never trained is an error, not a silent skip."""
    from multiteacher.errors import ConfigError

    run_dir, _ = tiny_run
    cfg = load_config(run_dir / "config.yaml", overrides=["methods=[mst,dkd]"])
    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, cache_dir=run_dir.parent, config=cfg)
    with pytest.raises(ConfigError, match=r"method 'dkd' \(george-image\) has no saved student"):
        mst.evaluate(cfg, ctx)


def test_mst_data_fingerprint_follows_the_recordings(tmp_path: Path) -> None:
    """MST reads files its config never names, so the recipe fingerprints them itself (for --resume)."""
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    (tmp_path / "mnist").mkdir()
    (rec / "0_theo_0.wav").write_bytes(b"RIFF")
    cfg = mst.Config(name="fp")
    before = mst.data_fingerprint(cfg, tmp_path)
    assert mst.data_fingerprint(cfg, tmp_path) == before
    (rec / "1_theo_0.wav").write_bytes(b"RIFF")
    assert mst.data_fingerprint(cfg, tmp_path) != before
    assert mst.data_fingerprint(cfg.model_copy(update={"task": "scenes-seg"}), tmp_path) == ""
