"""The one loss registry: names, aliases, options, and that a built loss computes its function's value."""

from __future__ import annotations

import inspect

import pytest
import torch

from multiteacher.errors import ConfigError
from multiteacher.losses import kd as K
from multiteacher.losses import ranking as R
from multiteacher.losses.registry import (
    LOSSES,
    LossSpec,
    get_loss,
    loss_names,
    make_loss,
    register_loss,
    resolve_loss_name,
)


def test_names_are_the_function_names_and_cover_every_loss() -> None:
    assert loss_names("ranking") == [
        "pointwise_bce", "pointwise_mse", "hinge", "margin_mse", "info_nce", "distill_ranknet", "adr_mse", "listnet",
    ]
    assert [n for n in loss_names("kd") if n != "mutual_kd"] == ["kd_kl", "multi_teacher_kd", "fitnet", "dkd"]
    for name, spec in LOSSES.items():
        assert spec.fn.__name__ == name  # one naming scheme: the canonical name is the function's name
    public = {n for mod in (R, K) for n, f in vars(mod).items()
              if inspect.isfunction(f) and f.__module__ == mod.__name__ and not n.startswith("_")}
    assert public - set(LOSSES) == {"ranks_from_scores", "make_ranking_loss"}  # helpers, not losses


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("marginmse", "margin_mse"), ("MarginMSE", "margin_mse"), ("margin-mse", "margin_mse"), ("infonce", "info_nce"),
     ("ranknet", "distill_ranknet"), ("adrmse", "adr_mse"), ("bce", "pointwise_bce"), ("mse", "pointwise_mse"),
     ("kd", "kd_kl"), ("DKD", "dkd")],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert resolve_loss_name(alias) == canonical


def test_unknown_and_wrong_family_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'margn_mse' \(did you mean 'margin_mse'\?\)"):
        resolve_loss_name("margn_mse")
    with pytest.raises(ConfigError, match="unknown loss 'kd_kl'.*choose one of pointwise_bce"):
        get_loss("kd_kl", "ranking")
    with pytest.raises(ConfigError, match="loss 'listnet': unknown option.*bogus; its options are temperature"):
        make_loss("listnet", bogus=1)
    with pytest.raises(ConfigError, match="already taken by 'margin_mse'"):
        register_loss(LossSpec("my_margin", R.margin_mse, R.MarginMSELoss, "ranking", "teacher_scores",
                               aliases=("MarginMSE",)))
    assert "my_margin" not in LOSSES


@pytest.mark.parametrize("name", list(LOSSES))
def test_options_match_the_module_signature(name: str) -> None:
    spec = LOSSES[name]
    if spec.module is None:  # function only: its keyword options with defaults
        params = inspect.signature(spec.fn).parameters
        ref = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    else:
        params = inspect.signature(spec.module.__init__).parameters
        var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ref = {k: p.default for k, p in params.items() if k != "self" and p.kind not in var}
        ref = {k: (None if v is inspect.Parameter.empty else v) for k, v in ref.items()}
    assert spec.options == ref


def test_built_losses_compute_their_functions() -> None:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    torch.testing.assert_close(make_loss("marginmse")(s, t), R.margin_mse(s, t))
    torch.testing.assert_close(make_loss("hinge", margin=0.3)(s, t), R.hinge(s, margin=0.3))
    torch.testing.assert_close(make_loss("infonce", temperature=0.5)(s), R.info_nce(s, temperature=0.5))
    torch.testing.assert_close(make_loss("ranknet", sigma=2.0)(s, t), R.distill_ranknet(s, t, sigma=2.0))
    logits_s, logits_t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    kd = make_loss("kd_kl", temperature=2.0)
    torch.testing.assert_close(kd(logits_s, logits_t), K.kd_kl(logits_s, logits_t, 2.0))
    y = torch.tensor([0, 2, 1, 1])
    dkd = make_loss("dkd", beta=2.0)
    torch.testing.assert_close(dkd(logits_s, logits_t, y), K.dkd(logits_s, logits_t, y, beta=2.0))
    # a hand-computed value: MarginMSE of margins (2 - 0) vs (1 - 0) is (2 - 1)^2 = 1
    assert make_loss("margin_mse")(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item() == 1.0
