"""MST-Distill parts: MaskNets, masked teachers via hooks, balance loss, loss-weight schedule, config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from multiteacher.config import build_config, load_config
from multiteacher.errors import ConfigError
from multiteacher.losses.kd import kd_kl, mutual_kd
from multiteacher.recipes import mst
from multiteacher.recipes.mst.cotrain import Trio
from multiteacher.recipes.mst.evaluation import scores
from multiteacher.recipes.mst.masknets import MaskNet1d, MaskNet2d, default_hidden, masknet_for
from multiteacher.recipes.mst.models import build
from multiteacher.recipes.mst.routed import BALANCE, loss_weights
from multiteacher.recipes.mst.specialise import masked_teachers
from tests.conftest import REPO


def test_masknet_shapes_and_range() -> None:
    torch.manual_seed(0)
    assert default_hidden(128, 3) == 63 and default_hidden(64, 3) == 30
    m1 = MaskNet1d(12, heads=3)
    out = m1(torch.randn(5, 12))
    assert out.shape == (5, 12) and bool(((out > 0) & (out < 1)).all())
    m2 = MaskNet2d(8, heads=2)
    assert m2(torch.randn(3, 8, 7, 7)).shape == (3, 8)
    assert isinstance(masknet_for(torch.randn(2, 8, 4, 4)), MaskNet2d)
    assert isinstance(masknet_for(torch.randn(2, 8, 1, 1)), MaskNet1d)
    assert isinstance(masknet_for(torch.randn(2, 8)), MaskNet1d)


def test_models_forward_and_hook_paths() -> None:
    batch = {"image": torch.randn(4, 1, 28, 28), "audio": torch.randn(4, 1, 64, 64)}
    for kind in ("image", "audio", "fusion"):
        assert build(kind)(batch).shape == (4, 10)
    names = dict(build("fusion").named_modules())
    assert {"net.concat", "net.fc1", "net.image.conv3", "net.audio.fc1"} <= set(names)


def _trio() -> Trio:
    torch.manual_seed(0)
    return Trio(build("fusion", width=4, embed=8), build("audio", width=4, embed=8),
                       build("image", width=4, embed=8)).eval()


class _Const(nn.Module):
    """A stand-in MaskNet: a constant per-channel mask."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.full(h.shape[:2], self.value)


def test_masked_teachers_apply_their_own_mask_only() -> None:
    trio = _trio()
    batch = {"image": torch.randn(3, 1, 28, 28), "audio": torch.randn(3, 1, 64, 64)}
    plan = SimpleNamespace(mm_layers=["net.fc1", "net.concat"], cross_layers=["net.fc1"])
    masks = nn.ModuleList([_Const(1.0), _Const(0.0), _Const(0.5)])
    with torch.no_grad():
        plain = trio.mm(batch)
        outs = [t.predict(batch) for t in masked_teachers(trio, plan, masks)]
        cum = [t.predict(batch) for t in masked_teachers(trio, plan, masks, cumulative=True)]
        cross_plain = trio.cross(batch)
    assert [t.name for t in masked_teachers(trio, plan, masks)] == ["mm@fc1", "mm@concat", "cross@fc1"]
    torch.testing.assert_close(outs[0], plain)  # an all-ones mask changes nothing
    assert not torch.allclose(outs[1], plain)
    # a zero mask on the concatenated embeddings: the output is what fc1 and head make of zeros
    zeros = trio.mm.net.head(trio.mm.net.fc1(torch.zeros(3, 16)))
    torch.testing.assert_close(outs[1], zeros)
    assert not torch.allclose(outs[2], cross_plain)  # the 0.5 mask on cross fc1 acts
    # cumulative (official stage-3 quirk): the second mm teacher still has the first one's mask,
    # and the cross teacher carries only its own
    torch.testing.assert_close(cum[1], outs[1])
    torch.testing.assert_close(cum[2], outs[2])
    plain_teachers = masked_teachers(trio, plan, None)
    assert [t.name for t in plain_teachers] == ["mm", "cross"]
    torch.testing.assert_close(plain_teachers[0].predict(batch), plain)
    assert all(len(m._forward_hooks) == 0 for m in trio.modules())


def test_official_balance_loss_matches_kldivloss() -> None:
    torch.manual_seed(0)
    probs = torch.randn(16, 4).softmax(-1)
    pbar = probs.mean(0)
    ref = nn.KLDivLoss(reduction="batchmean")(pbar.log(), torch.full((4,), 0.25))
    torch.testing.assert_close(BALANCE["official"](probs), ref)
    assert float(BALANCE["official"](torch.full((8, 4), 0.25))) == pytest.approx(0.0, abs=1e-7)
    assert float(BALANCE["kl"](probs)) >= 0 and float(BALANCE["cv"](probs)) >= 0


def test_loss_weight_schedule_follows_official_decay() -> None:
    cfg = build_config({"recipe": "mst", "name": "x"}, recipe_module=mst)
    from multiteacher.data.avdigits import Fold

    plan = mst.make_plan(cfg, Fold("george", None, None, None, {}), "image")  # type: ignore[arg-type]
    # official: after epoch e, w_lb *= 0.9 if e % 10 == 0; w_kl *= 0.5 if e % 30 == 0
    w_kl, w_lb = 1.0, 1.0
    for e in range(65):
        assert loss_weights(plan, e) == pytest.approx((w_kl, w_lb))
        w_lb *= 0.9 if e % 10 == 0 else 1
        w_kl *= 0.5 if e % 30 == 0 else 1


def test_recipe_yamls_validate_and_reject_bad_keys() -> None:
    full = load_config(REPO / "recipes" / "mst-avdigits.yaml")
    tiny = load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml")
    assert full.recipe == tiny.recipe == "mst" and len(full.data.folds) == 5 and tiny.data.folds == ["george"]
    with pytest.raises(ConfigError, match=r"mst\.epoch_s1"):
        load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml", ["mst.epoch_s1=3"])
    # speakers are checked against the data when the run starts (tests/test_mst_speakers.py); the config
    # only refuses what cannot be a speaker's name in an FSDD file name
    with pytest.raises(ConfigError, match="cannot be an FSDD speaker"):
        load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml", ["data.folds=[bob/1]"])
    with pytest.raises(ConfigError, match="methods"):
        load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml", ["methods=[mts]"])


def test_summary_table_paired_tests(tmp_path) -> None:
    import json

    from multiteacher.recipes.mst.summary import load_rows, table

    rows = []
    for i, fold in enumerate(["a", "b", "c"]):
        for method, acc in (("kd_mm", 0.5 + 0.01 * i), ("mst", 0.6 + 0.02 * i), ("no_kd", 0.4)):
            rows.append({"method": method, "direction": "audio->image", "fold": fold, "acc": acc, "f1": acc,
                         **({"route/x": 0.7, "route/y": 0.3} if method == "mst" else {})})
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    text = table(load_rows([tmp_path / "results.json"]))
    line = next(ln for ln in text.splitlines() if ln.startswith("| mst |"))
    assert "0.620 ± 0.020" in line and "+0.110" in line and line.endswith("| 3 |")
    assert "mst: x 0.70, y 0.30" in text
    mm = scores(torch.randn(2, 9, 4, 4), torch.randint(0, 9, (2, 4, 4)))
    assert set(mm) == {"acc", "miou", "loss"}


def test_stage1_mutual_kd_matches_kd_kl_and_keeps_both_gradients() -> None:
    torch.manual_seed(0)
    for shape in ((5, 10), (2, 9, 4, 4)):  # classification, and dense: averaged over pixels
        s, t = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
        val = mutual_kd(s, t, 4.0)
        torch.testing.assert_close(val, kd_kl(s, t, 4.0))
        val.backward()
        assert s.grad is not None and t.grad is not None and t.grad.abs().sum() > 0


def test_calibrate_trains_with_the_engine_fit() -> None:
    """The calibration script's supervised baseline learns a trivially separable task through `fit`."""
    from multiteacher.data.avdigits import Fold, Split
    from multiteacher.recipes.mst.calibrate import supervised_accuracy

    def split(n: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 10, (n,), generator=g)
        image = torch.randn(n, 1, 28, 28, generator=g) * 0.1
        image[torch.arange(n), 0, y, y] += 5.0  # the label is written on the diagonal
        return Split(image, torch.zeros(n, 1, 64, 64), y, [str(i) for i in range(n)])

    fold = Fold("x", split(256, 0), split(64, 1), split(64, 2), {})
    res = supervised_accuracy("image", fold, epochs=6, seed=0, lr=3e-3)
    assert set(res) == {"val", "test"} and res["val"] > 0.5 and res["test"] > 0.5
