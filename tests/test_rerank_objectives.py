"""Rerank objectives declared once: config choices, label sources, group sizes, losses and options."""

from __future__ import annotations

import typing

import pytest
import torch

from multiteacher.config import load_config
from multiteacher.errors import ConfigError
from multiteacher.losses import ranking as R
from multiteacher.recipes.rerank import Config
from multiteacher.recipes.rerank.config import LossConfig
from multiteacher.recipes.rerank.objectives import OBJECTIVES, PAPER_OBJECTIVES, get_objective, resolve_objective
from multiteacher.recipes.rerank.sampling import SamplingConfig, group_size, label_source
from multiteacher.recipes.rerank.sweep import OBJECTIVES as SWEEP_OBJECTIVES
from tests.conftest import REPO

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"


def test_config_choices_are_generated_from_the_registry() -> None:
    choices = typing.get_args(Config.model_fields["objective"].annotation)
    assert choices == ("bce", "hinge", "infonce", "marginmse", "ranknet", "adrmse", "listnet") == tuple(OBJECTIVES)
    assert PAPER_OBJECTIVES == SWEEP_OBJECTIVES == ["bce", "hinge", "infonce", "marginmse", "ranknet", "adrmse"]
    with pytest.raises(ConfigError, match="field 'objective'"):
        load_config(TINY, ["objective=lambdarank"])


def test_every_loss_option_is_a_loss_config_field() -> None:
    used = {f for s in OBJECTIVES.values() for f in s.options.values()}
    assert used == set(LossConfig.model_fields)  # no orphan option on either side


def test_committed_run_configs_still_load() -> None:
    """`multiteacher report results/rerank/...` and resuming old runs read these configs."""
    files = sorted((REPO / "results" / "rerank").rglob("config.yaml"))
    assert files, "no committed rerank run configs found"
    seen = set()
    for f in files:
        cfg = load_config(f)
        seen.add(cfg.objective)
    assert seen == set(PAPER_OBJECTIVES)


@pytest.mark.parametrize(("alias", "name"), [("margin_mse", "marginmse"), ("MarginMSE", "marginmse"),
                                              ("distill_ranknet", "ranknet"), ("info_nce", "infonce"),
                                              ("pointwise_bce", "bce"), ("adr_mse", "adrmse"), ("hinge", "hinge")])
def test_loss_names_are_accepted_as_objective_aliases(alias: str, name: str) -> None:
    assert resolve_objective(alias) == name
    assert load_config(TINY, [f"objective={alias}"]).objective == name


def test_label_sources_and_group_sizes() -> None:
    assert {n: label_source(n) for n in OBJECTIVES} == {
        "bce": "qrels", "hinge": "qrels", "infonce": "qrels", "marginmse": "teacher_scores",
        "ranknet": "teacher_ranking", "adrmse": "teacher_ranking", "listnet": "teacher_ranking",
    }
    cfg = SamplingConfig(bce_negatives=3, infonce_negatives=5, list_size=6)
    assert [group_size(n, cfg) for n in OBJECTIVES] == [4, 2, 6, 2, 6, 6, 6]
    with pytest.raises(ConfigError, match="objective 'lambdarank' is unknown"):
        get_objective("lambdarank")


def test_objective_losses_compute_the_engine_functions_with_their_options() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    lc = LossConfig(hinge_margin=0.7, infonce_temperature=0.3, ranknet_sigma=2.0, adrmse_alpha=0.5,
                    listnet_temperature=1.5)
    labels = torch.tensor([[1.0, 0.0]] * 4)
    expect = {
        "bce": R.pointwise_bce(s, labels),
        "hinge": R.hinge(s, margin=0.7),
        "infonce": R.info_nce(s, temperature=0.3),
        "marginmse": R.margin_mse(s, t),
        "ranknet": R.distill_ranknet(s, t, sigma=2.0),
        "adrmse": R.adr_mse(s, t, alpha=0.5),
        "listnet": R.listnet(s, t, temperature=1.5),
    }
    for name, ref in expect.items():
        got = OBJECTIVES[name].make_loss(lc)(s, labels if name == "bce" else t)
        torch.testing.assert_close(got, ref)
