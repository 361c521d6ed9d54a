"""Rendered multi-representation scenes (pybullet DIRECT mode, TinyRenderer).

Each scene is a room (floor + four walls) with a random clutter of pybullet_data objects and
primitives, varied in type, scale, colour and texture, lit by a random light and seen by a camera
that orbits the clutter at a random radius and height. Per frame:

- ``rgb``       (H, W, 3) uint8
- ``depth``     (H, W) float32, metric z-depth in metres (camera frame)
- ``normals``   (H, W, 3) float32, unit surface normals in the camera frame (x right, y down,
                z forward), computed from depth, oriented towards the camera
- ``semantic``  (H, W) uint8, class index into `SCENE_CLASSES` (walls = background, floor, objects)
- ``height``    (H, W) float32, height above the floor in metres (free from the simulator)
- ``pose``      (4, 4) float32, camera-to-world transform (OpenCV camera axes)

Scenes are deterministic by (seed, split, scene index) — independent of the number of workers.
Worker processes (each with its own pybullet connection) render shards of scenes, written as
compressed ``.npz`` files into the cache directory; the shards are then joined into one ``.npy``
per representation that `render_scenes` returns memory-mapped. A finished cache is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from multiteacher.config import StrictModel
from multiteacher.data.registry import DatasetInfo, register_dataset
from multiteacher.errors import ConfigError, DataError
from multiteacher.io import atomic_open, atomic_write_json
from multiteacher.progress import progress as progress_bar

GENERATOR_VERSION = 1
SCENE_CLASSES: tuple[str, ...] = (
    "background",  # walls
    "floor",
    "box",
    "ball",
    "cylinder",
    "duck",
    "teddy",
    "robot",
    "table",
)
REPRESENTATIONS: tuple[str, ...] = ("rgb", "depth", "normals", "semantic", "height")
SPLITS = {"train": 0, "test": 1, "val": 2}
NEAR, FAR = 0.1, 20.0
_TEXTURES = ("checker_blue.png", "checker_grid.jpg", "tex256.png", "uvmap.png", "cube.png", "duckCM.png")


class ScenesConfig(StrictModel):
    """What to render. Everything here except `workers` changes the rendered frames."""

    resolution: int = Field(64, ge=16, le=512, description="Side of the square rendered frames in pixels.")
    train_scenes: int = Field(150, ge=1, description="Number of training scenes (each seen `views_per_scene` times).")
    test_scenes: int = Field(30, ge=1, description="Number of test scenes, from scene seeds never used in training.")
    val_scenes: int = Field(0, ge=0, description="Number of validation scenes (0: none).")
    views_per_scene: int = Field(10, ge=1, description="Camera views per scene, spread around an orbit of the clutter.")
    objects_min: int = Field(5, ge=0, le=64, description="Fewest objects in a scene (the count is drawn uniformly).")
    objects_max: int = Field(11, ge=0, le=64, description="Most objects in a scene (inclusive; must be ≥ objects_min).")
    fov: float = Field(60.0, gt=10, lt=150, description="Vertical field of view of the camera in degrees.")
    shadows: bool = Field(True, description="Allow shadows (each scene then casts them with probability 0.7).")
    seed: int = Field(0, description="Generator seed: scenes are deterministic by (seed, split, scene index).")
    scenes_per_shard: int = Field(8, ge=1, description="Scenes per rendered cache shard (one worker task each).")
    workers: int = Field(2, ge=0, description="render processes; 0 renders in this process")

    def scenes(self, split: str) -> int:
        return {"train": self.train_scenes, "test": self.test_scenes, "val": self.val_scenes}[split]

    def fingerprint(self, split: str) -> str:
        """Stable id of what `split` renders (independent of worker count)."""
        d = self.model_dump(exclude={"workers", "train_scenes", "test_scenes", "val_scenes"})
        d.update(split=split, scenes=self.scenes(split), version=GENERATOR_VERSION)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SceneArrays:
    """All frames of one split, one (memory-mapped) array per representation, frames first."""

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    semantic: np.ndarray
    height: np.ndarray
    pose: np.ndarray
    scene: np.ndarray  # (N,) scene index within the split, for scene-level splits
    intrinsics: np.ndarray  # (3, 3) pinhole K shared by all frames
    classes: tuple[str, ...] = SCENE_CLASSES
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, name)


def intrinsics(resolution: int, fov: float) -> np.ndarray:
    """Pinhole K for a square image with vertical field of view `fov` degrees."""
    f = (resolution / 2) / math.tan(math.radians(fov) / 2)
    c = resolution / 2
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float32)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame 3-D points (H, W, 3) of a z-depth map (pixel centres at +0.5)."""
    h, w = depth.shape
    u = (np.arange(w, dtype=np.float32) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(h, dtype=np.float32) + 0.5 - K[1, 2]) / K[1, 1]
    return np.stack([u[None, :] * depth, v[:, None] * depth, depth], axis=-1).astype(np.float32)


def normals_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit camera-frame normals from z-depth: cross product of the point-cloud gradients."""
    p = backproject(depth, K)
    du = np.gradient(p, axis=1)
    dv = np.gradient(p, axis=0)
    n = np.cross(du, dv)
    n /= np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-8)
    flip = (n * p).sum(-1, keepdims=True) > 0  # face the camera
    return np.where(flip, -n, n).astype(np.float32)


def look_at_pose(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes: x right, y down, z forward)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    down = np.cross(fwd, right)
    pose = np.eye(4, dtype=np.float32)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, eye
    return pose


@contextlib.contextmanager
def quiet_stdout(fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    """Silence C-level prints on fds 1 and 2 (pybullet's build-time banner goes to stderr in
    some builds, stdout in others; b3 warnings). Python exceptions still propagate."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            with contextlib.suppress(OSError):  # fd not open (unusual embedding): skip it
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        yield
    finally:
        _flush_c_stdout()  # the C buffer may still hold the banner when stdout is not a TTY
        for fd, old in saved:
            os.dup2(old, fd)
            os.close(old)
        os.close(devnull)


def _flush_c_stdout() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


# ----------------------------------------------------------------------------------------------
# Rendering (runs inside worker processes; one pybullet connection per process)

_CLIENT: int | None = None


def _connect() -> tuple[Any, int]:
    global _CLIENT
    with quiet_stdout():
        import pybullet as pb
        import pybullet_data

        if _CLIENT is None:
            _CLIENT = pb.connect(pb.DIRECT)
            pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=_CLIENT)
    return pb, _CLIENT


def scene_seed(seed: int, split: str, index: int) -> int:
    """Seed of scene `index` of `split`; train and test seeds never coincide."""
    return int(np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(1)[0])


def _colour(rng: np.random.Generator) -> list[float]:
    return [*rng.uniform(0.05, 1.0, 3).tolist(), 1.0]


def _aabb(pb: Any, uid: int, cid: int) -> tuple[np.ndarray, np.ndarray]:
    los, his = [], []
    for link in range(-1, pb.getNumJoints(uid, physicsClientId=cid)):
        lo, hi = pb.getAABB(uid, link, physicsClientId=cid)
        los.append(lo)
        his.append(hi)
    return np.min(los, 0), np.max(his, 0)


def _texture(pb: Any, cid: int, rng: np.random.Generator, cache: dict[str, int]) -> int:
    name = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    if name not in cache:
        cache[name] = pb.loadTexture(name, physicsClientId=cid)
    return cache[name]


def _paint(pb: Any, uid: int, cid: int, rng: np.random.Generator, tex: dict[str, int], p_tex: float) -> None:
    colour = _colour(rng)
    tid = _texture(pb, cid, rng, tex) if rng.random() < p_tex else None
    for link in range(-1, pb.getNumJoints(uid, physicsClientId=cid)):
        kw: dict[str, Any] = {"rgbaColor": colour}
        if tid is not None:
            kw["textureUniqueId"] = tid
        pb.changeVisualShape(uid, link, physicsClientId=cid, **kw)


def _add_object(pb: Any, cid: int, rng: np.random.Generator, cls: str, xy: np.ndarray, tex: dict) -> int:
    yaw = rng.uniform(0, 2 * math.pi)
    orn = pb.getQuaternionFromEuler([0, 0, yaw])
    pos = [float(xy[0]), float(xy[1]), 1.0]
    if cls in ("box", "ball", "cylinder") and rng.random() < 0.75:
        if cls == "box":
            shape: dict[str, Any] = {"shapeType": pb.GEOM_BOX,
                                     "halfExtents": rng.uniform(0.08, 0.35, 3).tolist()}
        elif cls == "ball":
            shape = {"shapeType": pb.GEOM_SPHERE, "radius": float(rng.uniform(0.08, 0.35))}
        else:
            shape = {"shapeType": pb.GEOM_CYLINDER if rng.random() < 0.6 else pb.GEOM_CAPSULE,
                     "radius": float(rng.uniform(0.06, 0.22)), "length": float(rng.uniform(0.15, 0.8))}
        vis = pb.createVisualShape(physicsClientId=cid, **shape)
        col_kw = {("height" if k == "length" else k): v for k, v in shape.items()}
        col = pb.createCollisionShape(physicsClientId=cid, **col_kw)  # gives the AABB used below
        uid = pb.createMultiBody(0, col, vis, pos, orn, physicsClientId=cid)
    else:
        urdf, lo, hi = {
            "box": ("cube.urdf", 0.2, 0.6),
            "ball": ("soccerball.urdf", 0.2, 0.6),
            "cylinder": ("jenga/jenga.urdf", 2.5, 6.0),
            "duck": ("duck_vhacd.urdf", 3.0, 8.0),
            "teddy": ("teddy_vhacd.urdf", 3.0, 8.0),
            "robot": ("r2d2.urdf", 0.5, 1.2),
            "table": ("table/table.urdf", 0.45, 0.9),
        }[cls]
        if cls == "table":  # its origin is at the feet; the collision box is only the top
            pos[2] = 0.0
        uid = pb.loadURDF(urdf, pos, orn, globalScaling=float(rng.uniform(lo, hi)), useFixedBase=True,
                          physicsClientId=cid)
    _paint(pb, uid, cid, rng, tex, p_tex=0.35)
    if cls == "table":
        return uid
    lo_, _ = _aabb(pb, uid, cid)
    p, o = pb.getBasePositionAndOrientation(uid, physicsClientId=cid)
    pb.resetBasePositionAndOrientation(uid, [p[0], p[1], p[2] - lo_[2]], o, physicsClientId=cid)
    return uid


def render_scene(cfg: ScenesConfig, split: str, index: int) -> dict[str, np.ndarray]:
    """Render all views of one scene (deterministic in (cfg, split, index))."""
    pb, cid = _connect()
    rng = np.random.default_rng(scene_seed(cfg.seed, split, index))
    res = cfg.resolution
    K = intrinsics(res, cfg.fov)
    with quiet_stdout():
        pb.resetSimulation(physicsClientId=cid)
        tex: dict[str, int] = {}
        cls_of: dict[int, int] = {}
        floor = pb.loadURDF("plane.urdf", physicsClientId=cid)
        cls_of[floor] = SCENE_CLASSES.index("floor")
        kw: dict[str, Any] = {"rgbaColor": _colour(rng) if rng.random() < 0.7 else [1, 1, 1, 1]}
        if rng.random() < 0.6:
            kw["textureUniqueId"] = _texture(pb, cid, rng, tex)
        pb.changeVisualShape(floor, -1, physicsClientId=cid, **kw)
        half = rng.uniform(3.5, 5.5, 2)
        for axis in (0, 1):
            for sign in (-1, 1):
                ext = [half[0], half[1], 4.0]
                ext[axis] = 0.05
                pos = [0.0, 0.0, 4.0]
                pos[axis] = sign * half[axis]
                vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=ext, rgbaColor=_colour(rng),
                                           physicsClientId=cid)
                wall = pb.createMultiBody(0, -1, vis, pos, physicsClientId=cid)
                if rng.random() < 0.3:
                    pb.changeVisualShape(wall, -1, textureUniqueId=_texture(pb, cid, rng, tex),
                                         physicsClientId=cid)
                cls_of[wall] = 0
        n_obj = int(rng.integers(cfg.objects_min, cfg.objects_max + 1))
        weights = np.array([1.4, 1.2, 1.2, 1.0, 1.0, 0.8, 0.6])
        objects = SCENE_CLASSES[2:]
        spread = rng.uniform(0.8, 1.6)
        for _ in range(n_obj):
            cls = objects[int(rng.choice(len(objects), p=weights / weights.sum()))]
            r, a = spread * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            uid = _add_object(pb, cid, rng, cls, np.array([r * math.cos(a), r * math.sin(a)]), tex)
            cls_of[uid] = SCENE_CLASSES.index(cls)
        lut = np.zeros(max(cls_of) + 2, dtype=np.uint8)
        for uid, c in cls_of.items():
            lut[uid] = c
        proj = pb.computeProjectionMatrixFOV(cfg.fov, 1.0, NEAR, FAR, physicsClientId=cid)
        yaw0 = rng.uniform(0, 2 * math.pi)
        out: dict[str, list[np.ndarray]] = {k: [] for k in (*REPRESENTATIONS, "pose")}
        light_dir = [*rng.normal(0, 1, 2).tolist(), float(rng.uniform(0.5, 2.0))]
        light = {
            "lightDirection": light_dir,
            "lightColor": rng.uniform(0.7, 1.0, 3).tolist(),
            "lightAmbientCoeff": float(rng.uniform(0.25, 0.7)),
            "lightDiffuseCoeff": float(rng.uniform(0.3, 0.8)),
            "lightSpecularCoeff": float(rng.uniform(0.0, 0.4)),
            "shadow": int(cfg.shadows and rng.random() < 0.7),
        }
        rmax = float(min(half) - 0.4)
        for v in range(cfg.views_per_scene):
            yaw = yaw0 + 2 * math.pi * v / cfg.views_per_scene + rng.uniform(-0.3, 0.3)
            radius = float(rng.uniform(min(1.2, rmax), min(2.8, rmax)))
            eye = np.array([radius * math.cos(yaw), radius * math.sin(yaw), rng.uniform(0.35, 2.6)])
            target = np.array([*rng.uniform(-0.4, 0.4, 2), rng.uniform(0.0, 0.3)])
            view = pb.computeViewMatrix(eye.tolist(), target.tolist(), [0, 0, 1], physicsClientId=cid)
            _, _, rgb, zbuf, seg = pb.getCameraImage(res, res, view, proj, renderer=pb.ER_TINY_RENDERER,
                                                     physicsClientId=cid, **light)
            rgb = np.asarray(rgb, dtype=np.uint8).reshape(res, res, 4)[..., :3]
            zbuf = np.asarray(zbuf, dtype=np.float64).reshape(res, res)
            depth = (FAR * NEAR / (FAR - (FAR - NEAR) * zbuf)).astype(np.float32)
            seg = np.asarray(seg, dtype=np.int64).reshape(res, res)
            pose = look_at_pose(eye, target)
            pts = backproject(depth, K) @ pose[:3, :3].T + pose[:3, 3]
            out["rgb"].append(rgb)
            out["depth"].append(depth)
            out["normals"].append(normals_from_depth(depth, K))
            out["semantic"].append(np.where(seg >= 0, lut[seg.clip(0, len(lut) - 1)], 0).astype(np.uint8))
            out["height"].append(pts[..., 2].clip(0, None).astype(np.float32))
            out["pose"].append(pose)
    return {k: np.stack(v) for k, v in out.items()}


def _render_shard(args: tuple[ScenesConfig, str, int, int, str]) -> str:
    cfg, split, start, stop, path = args
    if Path(path).exists():
        return path
    parts = [render_scene(cfg, split, i) for i in range(start, stop)]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    arrays["scene"] = np.repeat(np.arange(start, stop, dtype=np.int32), cfg.views_per_scene)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _connect()


# ----------------------------------------------------------------------------------------------
# Public API


def scenes_dir(cfg: ScenesConfig, cache_dir: str | os.PathLike[str], split: str) -> Path:
    """Cache folder of one split's rendered frames."""
    return Path(cache_dir) / "scenes" / f"{split}-{cfg.resolution}px-{cfg.fingerprint(split)}"


def render_scenes(
    cfg: ScenesConfig,
    cache_dir: str | os.PathLike[str],
    split: Literal["train", "test", "val"] = "train",
    progress: bool | None = None,
) -> SceneArrays:
    """Render (or reuse) all frames of `split` into the cache; return them memory-mapped."""
    if split not in SPLITS:
        raise ConfigError(f"scenes: split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if cfg.objects_max < cfg.objects_min:
        raise ConfigError("scenes: objects_max < objects_min; set objects_max ≥ objects_min")
    root = scenes_dir(cfg, cache_dir, split)
    if not (root / "meta.json").exists():
        _build(cfg, split, root, progress)
    return load_scenes(root)


def load_scenes(root: str | os.PathLike[str]) -> SceneArrays:
    """Open a rendered split (memory-mapped arrays)."""
    root = Path(root)
    try:
        meta = json.loads((root / "meta.json").read_bytes().decode("utf-8"))
        arrays = {k: np.load(root / f"{k}.npy", mmap_mode="r") for k in (*REPRESENTATIONS, "pose", "scene")}
        intrinsics, classes = np.asarray(meta["intrinsics"], dtype=np.float32), tuple(meta["classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"rendered scenes in {root} are damaged ({type(e).__name__}: {str(e)[:80]}) — delete that "
                        "folder and they are rendered again") from None
    return SceneArrays(
        **arrays,
        intrinsics=intrinsics,
        classes=classes,
        path=root,
        extra=meta,
    )


def _build(cfg: ScenesConfig, split: str, root: Path, progress: bool | None) -> None:
    n = cfg.scenes(split)
    if n == 0:
        raise ConfigError(f"scenes: split {split!r} has 0 scenes; set {split}_scenes ≥ 1")
    step = cfg.scenes_per_shard
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (cfg, split, s, min(s + step, n), str(shard_dir / f"shard-{s // step:05d}.npz"))
        for s in range(0, n, step)
    ]
    todo = [j for j in jobs if not Path(j[-1]).exists()]
    bar = progress_bar(total=len(jobs), initial=len(jobs) - len(todo), desc=f"render scenes [{split}]",
                       unit="shard", enabled=progress is None or bool(progress))
    workers = min(cfg.workers, len(todo))
    if workers <= 0:
        for j in todo:
            _render_shard(j)
            bar.update()
    else:
        # fork when this process holds no pybullet connection (fast, no __main__ guard needed)
        method = "fork" if _CLIENT is None and "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, initializer=_worker_init) as pool:
            for _ in pool.imap_unordered(_render_shard, todo):
                bar.update()
    bar.close()
    # join the shards into one .npy per array (streamed, so 128 px splits need little memory)
    first = np.load(jobs[0][-1])
    keys = list(first.keys())
    total = n * cfg.views_per_scene
    for k in keys:
        shape = (total, *first[k].shape[1:])
        with atomic_open(root / f"{k}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(first[k].dtype), "fortran_order": False,
                    "shape": shape})
            for j in jobs:
                with np.load(j[-1]) as z:
                    f.write(np.ascontiguousarray(z[k]).tobytes())
    atomic_write_json(root / "meta.json", {
        "config": cfg.model_dump(), "split": split, "frames": total, "classes": list(SCENE_CLASSES),
        "intrinsics": intrinsics(cfg.resolution, cfg.fov).tolist(), "version": GENERATOR_VERSION,
    })


def _check(data_dir: Path) -> str:
    return "generated on the fly with pybullet (no files needed); rendered frames go to the cache dir"


register_dataset(DatasetInfo(
    name="scenes",
    description="pybullet rooms with cluttered objects: rgb, depth, normals, semantic (9 classes), height, pose",
    check=_check,
    needs_files=False,
))
