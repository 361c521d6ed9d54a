"""NGC building blocks: graph, config checks, consensus + agreement mask, edge encodings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.config import load_config
from multiteacher.errors import ConfigError
from multiteacher.recipes.ngc import edges as E
from multiteacher.recipes.ngc import pipeline as P
from multiteacher.recipes.ngc.config import Config, NodeConfig
from multiteacher.recipes.ngc.graph import build_edges, paths_to

REPO = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> Config:
    return Config(name="t", **kw)


def test_graph_edges_and_paths() -> None:
    cfg = _cfg()
    edges = build_edges(cfg)
    assert len(edges) == 4 + 4 * 3  # direct + two-hop
    assert [e.id for e in edges[:4]] == ["rgb>depth", "rgb>normals", "rgb>semantic", "rgb>height"]
    into = paths_to(edges, "depth")
    assert into[0].id == "rgb>depth" and {e.id for e in into[1:]} == {
        "rgb>normals>depth", "rgb>semantic>depth", "rgb>height>depth"}
    hyper = build_edges(_cfg(graph={"hyperedges": True, "exclude": ["rgb>semantic>depth"]}))
    assert len(hyper) == 4 + 12 + 12 - 1
    e = next(e for e in hyper if e.id == "rgb+height>depth")
    assert e.inputs == ("rgb", "height") and e.kind == "hyper" and e.via == "height"
    with pytest.raises(ConfigError, match="unknown edges"):
        build_edges(_cfg(graph={"exclude": ["rgb>nope"]}))


def test_config_validation_and_yaml() -> None:
    with pytest.raises(ValueError, match="categorical"):
        _cfg(nodes={"rgb": NodeConfig(kind="input", channels=3), "s": NodeConfig(kind="categorical", channels=4)})
    with pytest.raises(ValueError, match="output node"):
        _cfg(nodes={"rgb": NodeConfig(kind="input", channels=3)})
    full = load_config(REPO / "recipes" / "ngc-scenes.yaml")
    tiny = load_config(REPO / "recipes" / "ngc-scenes-tiny.yaml")
    assert full.recipe == tiny.recipe == "ngc" and full.generations == 2 and not full.consensus.mask
    assert tiny.consensus.mask and tiny.data.resolution == 32
    with pytest.raises(ConfigError, match="edge"):
        load_config(REPO / "recipes" / "ngc-scenes-tiny.yaml", ["edge.stepz=3"])


class _C:  # the parts of pipeline.Ctx that consensus_chunk reads
    def __init__(self, **cons) -> None:
        self.cfg = _cfg(consensus=cons)


def test_consensus_median_and_mask() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 1, 8, 8)  # (B, K paths, C, H, W)
    v, keep, disp = P.consensus_chunk(_C(), "depth", x * 4.0)
    np.testing.assert_allclose(v.numpy(), np.median(x.numpy() * 4.0, axis=1)[:, 0], rtol=1e-6)
    assert keep.all() and v.shape == (2, 8, 8)
    _, keep, _ = P.consensus_chunk(_C(mask=True, mask_quantile=0.5), "depth", x)
    assert 0.45 < keep.float().mean() < 0.55
    np.testing.assert_allclose(disp.numpy(), x.std(1, unbiased=False)[:, 0].numpy(), rtol=1e-5)
    n = torch.nn.functional.normalize(torch.randn(2, 3, 3, 4, 4), dim=2)
    v, _, _ = P.consensus_chunk(_C(), "normals", n)
    assert v.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(v.numpy(), axis=-1), 1.0, atol=1e-5)


def test_categorical_vote_and_balanced_mask() -> None:
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 3, 9, 6, 6) * 3, 2) * 255
    v, keep, _ = P.consensus_chunk(_C(mask=True, mask_quantile=0.6, mask_balanced=True), "semantic", p)
    assert v.dtype == torch.int64 and v.shape == (2, 6, 6)
    assert torch.equal(v, p.mean(1).argmax(1))
    for b in range(2):  # each consensus class keeps some of its pixels
        for k in v[b].unique():
            assert keep[b][v[b] == k].any()
    assert 0 < keep.float().mean() < 1


def test_encodings_and_targets() -> None:
    sem = {"kind": "categorical", "channels": 4, "scale": 1.0, "loss": "ce"}
    lab = np.array([[[0, 3], [255, 1]]], dtype=np.uint8)
    oh = E.encode(lab, sem, "label")
    assert oh.shape == (1, 4, 2, 2) and oh[0, :, 1, 0].sum() == 0 and oh[0, 3, 0, 1] == 1
    y, valid = E.target_and_valid(lab, sem, None)
    assert valid.tolist() == [[[True, True], [False, True]]]
    dep = {"kind": "continuous", "channels": 1, "scale": 2.0, "loss": "l1"}
    d = np.array([[[2.0, np.nan], [4.0, 6.0]]], dtype=np.float32)
    y, valid = E.target_and_valid(d, dep, np.array([[[1, 1], [0, 1]]], np.uint8))
    assert valid.tolist() == [[[True, False], [False, True]]] and y[0, 0, 1, 1] == 3.0
    out = torch.zeros(1, 1, 2, 2)
    assert E.loss_fn(out, y, valid, dep).item() == pytest.approx((1.0 + 3.0) / 2)
    rgb = {"kind": "input", "channels": 3, "scale": 1.0, "loss": "none"}
    assert E.encode(np.full((1, 2, 2, 3), 255, np.uint8), rgb, "label").max() == 1.0


def test_write_npy_checks_frame_count(tmp_path: Path) -> None:
    E.write_npy(tmp_path / "a.npy", (3, 2), np.float32, [np.ones((2, 2)), np.ones((1, 2))])
    assert np.load(tmp_path / "a.npy").shape == (3, 2)
    with pytest.raises(RuntimeError, match="expected 4"):
        E.write_npy(tmp_path / "b.npy", (4, 2), np.float32, [np.ones((2, 2))])
    assert not (tmp_path / "b.npy").exists()
