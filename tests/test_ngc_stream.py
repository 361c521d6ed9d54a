"""NGC pseudo-labels are streamed: chunked and unchunked generation write identical files, equal to an
in-memory consensus over all frames at once, and the chunk-by-chunk diagnostics equal the
whole-array metrics of metrics/dense.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.metrics import dense
from multiteacher.recipes.ngc import edges as E
from multiteacher.recipes.ngc import pipeline as P
from multiteacher.recipes.ngc.config import Config, NodeConfig
from multiteacher.recipes.ngc.graph import build_edges, output_nodes

N, TEST, R, CLASSES = 23, 5, 8, 4


def _ctx(root: Path, **consensus) -> P.Ctx:
    nodes = {"rgb": NodeConfig(kind="input", channels=3, loss="none"),
             "depth": NodeConfig(kind="continuous", channels=1, metric="depth", scale=4.0),
             "normals": NodeConfig(kind="continuous", channels=3, loss="cosine", metric="normals"),
             "semantic": NodeConfig(kind="categorical", channels=CLASSES, loss="ce", metric="semantic"),
             "height": NodeConfig(kind="continuous", channels=1, metric="height")}
    cfg = Config(name="s", nodes=nodes, consensus=consensus)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", N), ("test", TEST)):
        d = root / split
        d.mkdir(parents=True)
        nrm = rng.normal(size=(n, R, R, 3)).astype(np.float32)
        gt = {"rgb": rng.integers(0, 256, (n, R, R, 3), np.uint8),
              "depth": rng.uniform(0.5, 4, (n, R, R)).astype(np.float32),
              "normals": nrm / np.linalg.norm(nrm, axis=-1, keepdims=True),
              "semantic": rng.integers(0, CLASSES, (n, R, R)).astype(np.uint8),
              "height": rng.uniform(0, 2, (n, R, R)).astype(np.float32)}
        gt["depth"][0, 0, :3] = np.nan  # invalid pixels stay invalid
        gt["semantic"][1, 0, :2] = E.IGNORE
        for k, a in gt.items():
            np.save(d / f"{k}.npy", a)
        arrays[split] = P.FrameArrays(d, np.arange(n) // 3, np.load(d / "rgb.npy", mmap_mode="r"))
    is_lab = np.isin(arrays["train"].scene, [1, 4])
    c = P.Ctx(cfg, arrays["train"], arrays["test"], np.flatnonzero(is_lab), np.flatnonzero(~is_lab),
              build_edges(cfg), root / "work", root / "ckpt")
    for node, src in P.sources_of(c, "gen0").items():  # random path predictions in the stored layouts
        nc = cfg.nodes[node]
        for _, eid in src:
            for split, n in (("train", N), ("test", TEST)):
                x = rng.normal(size=(n, nc.channels, R, R))
                if nc.kind == "categorical":
                    a = (torch.softmax(torch.from_numpy(x * 3), 1) * 255).round().to(torch.uint8).numpy()
                else:
                    a = (x * 0.3 + 1.5).astype(np.float16)
                E.write_npy(c.pred_path("gen0", eid, split), a.shape, a.dtype, [a])  # with its checksum sidecar
    return c


def _files(c: P.Ctx, tag: str) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((c.work / tag / "pseudo").glob("*.npy"))}


@pytest.mark.parametrize("consensus", [{"mask": True, "mask_quantile": 0.6},
                                       {"mask": True, "mask_quantile": 0.6, "mask_balanced": True,
                                        "method": "trimmed_mean"},
                                       {"mask": False, "method": "mean", "categorical": "majority"}])
def test_chunked_pseudo_labels_identical_to_unchunked_and_in_memory(tmp_path: Path, consensus: dict) -> None:
    c = _ctx(tmp_path, **consensus)
    src = P.sources_of(c, "gen0")
    whole = P.build_pseudo(c, "gen0", src, chunk=10_000)  # one chunk: unchunked
    ref = _files(c, "gen0")
    for chunk in (1, 4, None):
        diag = P.build_pseudo(c, "gen0", src, chunk=chunk)
        got = _files(c, "gen0")
        assert got.keys() == ref.keys() and len(ref) == 3 * len(output_nodes(c.cfg))
        for k, a in ref.items():
            assert got[k].dtype == a.dtype and got[k].shape == a.shape and got[k].tobytes() == a.tobytes(), (chunk, k)
        assert diag.keys() == whole.keys()
        for node, d in diag.items():
            assert d["coverage"] == whole[node]["coverage"]
            for what in ("pseudo", "pseudo_kept"):
                assert d[what] == pytest.approx(whole[node][what], rel=1e-12, nan_ok=True), (chunk, node, what)
    # the same as an in-memory consensus over all frames at once
    lab = c.labelled
    for node in output_nodes(c.cfg):
        gt = np.load(c.gt_ref(node, "train")["path"])
        x = torch.from_numpy(np.stack([np.load(c.pred_path(t, e, "train")) for t, e in src[node]], 1)).float()
        v, keep, _ = P.consensus_chunk(c, node, x)
        v, keep = v.numpy().copy(), keep.numpy().copy()
        v[lab], keep[lab] = gt[lab], True
        np.testing.assert_array_equal(ref[f"{node}.train.npy"], v.astype(ref[f"{node}.train.npy"].dtype))
        np.testing.assert_array_equal(ref[f"{node}.mask.npy"], keep.astype(np.uint8))
        unl = c.unlabelled
        assert whole[node]["coverage"] == float(keep[unl].mean())


def test_streamed_metrics_equal_whole_array_metrics(tmp_path: Path) -> None:
    c = _ctx(tmp_path, mask=True, mask_quantile=0.5)
    P.build_pseudo(c, "gen0", P.sources_of(c, "gen0"))
    unl = c.unlabelled
    for node in output_nodes(c.cfg):
        nc = c.cfg.nodes[node]
        gt_path, pred_path = c.gt_ref(node, "train")["path"], c.pred_path("gen0", f"rgb>{node}", "train")
        mask = np.load(c.pseudo_path("gen0", node, "mask"))[unl]
        m = torch.from_numpy(mask).bool()
        p = P._as_pred_tensor(np.load(pred_path)[unl], nc.kind, "pred")
        g = P._as_pred_tensor(np.load(gt_path)[unl], nc.kind, "label")
        if nc.metric == "depth":
            want = {"abs_rel": dense.abs_rel(p[:, 0], g[:, 0], m), "rmse": dense.rmse(p[:, 0], g[:, 0], m)}
        elif nc.metric == "normals":
            want = {"mean_deg": dense.normal_metrics(p, g, m)["mean_deg"]}
        elif nc.metric == "semantic":
            want = dense.semantic_metrics(p, torch.where(m, g, torch.full_like(g, E.IGNORE)), nc.channels, E.IGNORE)
        else:
            want = {"rmse": dense.rmse(p[:, 0], g[:, 0], m, min_depth=-1.0),
                    "mae": float((p[:, 0].double() - g[:, 0].double()).abs()[m].mean())}  # float64, as RMSE
        for chunk in (1, 5, None):
            got = P.node_metrics(c, node, pred_path, gt_path, mask=c.pseudo_path("gen0", node, "mask"), idx=unl,
                                 chunk=chunk)
            assert got == pytest.approx(want, rel=1e-12), (node, chunk)
            # in-memory arrays give the same as paths
            arrays = P.node_metrics(c, node, np.load(pred_path)[unl], np.load(gt_path)[unl], mask=mask, chunk=chunk)
            assert arrays == pytest.approx(want, rel=1e-12)
        if nc.metric == "semantic":  # integer counts: exact
            assert got == want
        empty = P.node_metrics(c, node, pred_path, gt_path, idx=np.zeros(0, np.int64))
        assert all(np.isnan(v) for v in empty.values())


def test_write_npys_all_or_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    E.write_npys([(a, (3, 2), np.float32), (b, (3,), np.uint8)],
                 [(np.ones((2, 2)), np.ones(2)), (np.zeros((1, 2)), np.zeros(1))])
    assert np.load(a).tolist() == [[1, 1], [1, 1], [0, 0]] and np.load(b).dtype == np.uint8
    for chunks, err in (([(np.ones((2, 2)), np.ones(2))], RuntimeError),
                        ([(np.ones((2, 2)), np.ones(1))], ValueError),
                        ([(np.ones((3, 2)),)], ValueError)):
        with pytest.raises(err):
            E.write_npys([(tmp_path / "c.npy", (3, 2), np.float32), (tmp_path / "d.npy", (3,), np.uint8)], chunks)
        # a, b and their checksum sidecars; nothing of c, d
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.json", "b.npy", "b.npy.json"]
