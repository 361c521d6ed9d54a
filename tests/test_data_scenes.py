"""Scene generator: shapes, determinism (also across worker counts), geometry, cache reuse."""

from __future__ import annotations

import numpy as np
import pytest

from multiteacher.data import scenes
from multiteacher.data.registry import DATASETS
from multiteacher.data.scenes import SCENE_CLASSES, ScenesConfig, render_scenes
from multiteacher.errors import ConfigError

CFG = ScenesConfig(resolution=32, train_scenes=3, test_scenes=2, views_per_scene=2, scenes_per_shard=2,
                   workers=0)


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> scenes.SceneArrays:
    return render_scenes(CFG, tmp_path_factory.mktemp("cache"), "train", progress=False)


def test_shapes_and_dtypes(train: scenes.SceneArrays) -> None:
    n, r = 6, 32
    assert len(train) == n
    assert train.rgb.shape == (n, r, r, 3) and train.rgb.dtype == np.uint8
    assert train.depth.shape == (n, r, r) and train.depth.dtype == np.float32
    assert train.normals.shape == (n, r, r, 3)
    assert train.semantic.shape == (n, r, r) and train.semantic.dtype == np.uint8
    assert train.height.shape == (n, r, r)
    assert train.pose.shape == (n, 4, 4)
    assert train.scene.tolist() == [0, 0, 1, 1, 2, 2]
    assert isinstance(train.rgb, np.memmap)
    assert len(SCENE_CLASSES) >= 6 and train.semantic.max() < len(SCENE_CLASSES)
    assert np.isfinite(train.depth).all() and (train.depth > 0).all()
    np.testing.assert_allclose(np.linalg.norm(train.normals, axis=-1), 1.0, atol=1e-4)
    assert {0, 1} <= set(np.unique(train.semantic).tolist())  # walls and floor are seen
    assert len(np.unique(train.semantic)) >= 3  # and some object


def test_geometry_is_consistent(train: scenes.SceneArrays) -> None:
    floor = train.semantic == 1
    # floor pixels back-projected with the pose lie at height ~0
    assert np.median(train.height[floor]) < 0.05  # depth-buffer precision at 32 px
    # floor normals (from depth) point along world up expressed in the camera frame
    up = np.einsum("nij,i->nj", train.pose[:, :3, :3], np.array([0, 0, 1.0]))
    cos = (train.normals * up[:, None, None, :]).sum(-1)
    assert np.median(cos[floor]) > 0.99
    assert train.height[train.semantic >= 2].max() > 0.05  # objects stand up from the floor


def test_deterministic_and_independent_of_workers(train: scenes.SceneArrays, tmp_path) -> None:
    other = render_scenes(CFG.model_copy(update={"workers": 2}), tmp_path, "train", progress=False)
    for k in ("rgb", "depth", "semantic", "height", "pose"):
        np.testing.assert_array_equal(np.asarray(train[k]), np.asarray(other[k]), err_msg=k)


def test_splits_differ_and_cache_is_reused(train: scenes.SceneArrays, monkeypatch) -> None:
    cache = train.path.parents[1]
    test = render_scenes(CFG, cache, "test", progress=False)
    assert len(test) == 4
    assert not np.array_equal(np.asarray(test.rgb[:2]), np.asarray(train.rgb[:2]))

    def boom(*a, **k):
        raise AssertionError("re-rendered a cached split")

    monkeypatch.setattr(scenes, "_render_shard", boom)
    again = render_scenes(CFG, cache, "train", progress=False)
    np.testing.assert_array_equal(np.asarray(again.rgb), np.asarray(train.rgb))
    # a changed rendering config never reuses the cache
    assert scenes.scenes_dir(CFG.model_copy(update={"fov": 50.0}), cache, "train") != train.path
    assert scenes.scenes_dir(CFG.model_copy(update={"workers": 3}), cache, "train") == train.path


def test_bad_config_is_one_line_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="objects_max"):
        render_scenes(CFG.model_copy(update={"objects_min": 5, "objects_max": 2}), tmp_path, "train")
    with pytest.raises(ConfigError, match="split"):
        render_scenes(CFG, tmp_path, "nope")  # type: ignore[arg-type]


def test_registered_without_files() -> None:
    assert DATASETS["scenes"].needs_files is False
