"""Rerank recipe with `fit.length_grouped`: per-group token lengths and a run that uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multiteacher.config import load_config
from multiteacher.data.ir import IRData
from multiteacher.recipes.rerank import group_lengths, make_collate
from multiteacher.recipes.rerank.model import build_wordpiece
from multiteacher.recipes.rerank.sampling import Group
from multiteacher.runs import execute_run
from tests.conftest import REPO, require_data

WORDS = ["the", "of", "and", "river", "bank", "money", "loan", "water", "flow", "city", "bridge", "tower", "history",
         "museum", "open", "hours", "price"]


def tiny_set() -> IRData:
    g = torch.Generator().manual_seed(0)

    def text(n: int) -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g))

    queries = {f"q{i}": text(2 + i) for i in range(4)}
    passages = {f"d{i}": text(int(torch.randint(1, 60, (1,), generator=g))) for i in range(20)}
    cands = {q: {f"d{j}": float(20 - j) for j in range(20)} for q in queries}
    return IRData("tiny", queries, passages, cands)


@pytest.mark.parametrize("max_length", [16, 128])
def test_group_lengths_are_the_collated_widths(max_length: int) -> None:
    d = tiny_set()
    tok = build_wordpiece([*d.queries.values(), *d.passages.values()], 300)
    lookup = {q: d for q in d.queries}
    groups = [Group(q, (f"d{i}", f"d{(i * 7 + 3) % 20}"), (1.0, 0.0)) for q in d.queries for i in range(0, 20, 3)]
    groups.append(Group("q1", ("d1", "d2", "d3", "d4"), (4.0, 3.0, 2.0, 1.0)))  # a list group
    lens = group_lengths(tok, groups, lookup, max_length, chunk=5)
    collate = make_collate(tok, max_length, lookup)
    assert lens == [collate([g])["input_ids"].shape[1] for g in groups]
    assert max(lens) <= max_length
    assert len(set(lens)) > 1 if max_length == 128 else set(lens) == {16}  # truncated: all as long


@pytest.mark.data
def test_tiny_recipe_trains_with_length_grouped_batches(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "qrels.txt")
    sets = ["fit.max_steps=4", "fit.val_every=4", "eval.baselines=false", "eval.test=false", "export=false"]
    res = {}
    for grouped in (False, True):
        cfg = load_config(REPO / "recipes" / "rerank-trecdl-tiny.yaml", [*sets, f"fit.length_grouped={grouped}"])
        assert cfg.fit.length_grouped is grouped
        res[grouped] = execute_run(cfg, tmp_path / str(grouped), data_dir, tmp_path / "cache")["metrics"]
    assert res[True]["train/steps"] == 4.0
    assert torch.isfinite(torch.tensor(res[True]["train/probe_loss_after"]))
    # other batches, so (slightly) other weights
    assert res[True]["train/probe_loss_after"] != res[False]["train/probe_loss_after"]
