"""Listwise groups of different sizes in one batch (a query whose teacher scored fewer than `list_size`
passages): the collate pads with a mask and the step's loss equals the loss of the real pairs by hand."""

from __future__ import annotations

import math
import types

import pytest
import torch

from multiteacher.losses import ranking as R
from multiteacher.recipes.rerank import training as T
from multiteacher.recipes.rerank.sampling import Group


class ScoreIsTokenId(torch.nn.Module):
    """A stand-in cross-encoder: each pair's score is its (single) token id."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the probe reads the device from a parameter

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> types.SimpleNamespace:
        return types.SimpleNamespace(logits=input_ids[:, :1].float())


def fake_encode(tok: object, queries: list[str], passages: list[str], max_length: int) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[int(p)] for p in passages])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_mixed_group_sizes_are_masked_and_the_loss_counts_real_pairs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "encode", fake_encode)
    data = types.SimpleNamespace(queries={"q1": "a", "q2": "b"}, passages={"1": "1", "2": "2", "3": "3", "5": "5"})
    lookup = {"q1": data, "q2": data}
    groups = [Group("q1", ("1", "2", "3"), (3.0, 2.0, 1.0)),  # teacher order 1 > 2 > 3; student scores 1, 2, 3
              Group("q2", ("5", "1"), (0.0, 1.0))]             # teacher: 1 > 5; student 5 > 1
    batch = T.make_collate(None, 16, lookup)(groups)
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["targets"].tolist() == [[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]]
    assert batch["input_ids"].flatten().tolist() == [1, 2, 3, 5, 1]  # only the 5 real pairs are scored

    loss = T.step_fn(R.DistillRankNetLoss())(ScoreIsTokenId(), dict(batch))["loss"]
    # teacher-ordered pairs (i above j) and the student margins s_i - s_j: q1 (1,2) -1, (1,3) -2, (2,3) -1;
    # q2 (1,5) 1 - 5 = -4. RankNet term log(1 + exp(-(s_i - s_j))), mean over the 4 pairs.
    by_hand = sum(math.log1p(math.exp(m)) for m in (1.0, 2.0, 1.0, 4.0)) / 4
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    # the probe loss (before/after training) takes the same masked path: one chunk of 2 groups
    probe = T.probe_loss_fn(ScoreIsTokenId(), groups, T.make_collate(None, 16, lookup), R.DistillRankNetLoss())
    assert probe() == pytest.approx(by_hand, rel=1e-6)


def test_equal_group_sizes_keep_the_unmasked_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "encode", fake_encode)
    data = types.SimpleNamespace(queries={"q": "a"}, passages={"1": "1", "2": "2"})
    batch = T.make_collate(None, 16, {"q": data})([Group("q", ("1", "2"), (1.0, 0.0))] * 2)
    assert "mask" not in batch and batch["targets"].shape == (2, 2)
