"""Bring your own multi-representation data: a Dronescapes-style directory of ``.npz`` frames.

Layout: one folder per representation, one ``.npz`` per frame, the same file name (= frame id)
across folders; each file holds one array (any key; ``arr_0`` from ``np.savez``)::

    root/
      rgb/      00000.npz  00001.npz ...   (H, W, 3) uint8 or float
      depth/    00000.npz  00001.npz ...   (H, W) or (H, W, 1) float
      semantic/ 00000.npz  ...             (H, W) integer class ids
      normals/  00000.npz  ...             (H, W, 3)

A representation may cover only some frames (labels often exist for a subset). `NpzDir` lists
what is there and reads single frames; `NpzDir.export` joins chosen representations and frames
into one frames-first ``.npy`` per representation in a cache folder (atomic, memory-mapped on
return) — the layout the NGC recipe's edges read. The data directory is only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from multiteacher.errors import DataError
from multiteacher.io import atomic_open, atomic_write_json


class NpzDir:
    """A directory of representations (sub-folders) holding one ``.npz`` per frame."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"npz dir {self.root} does not exist — point it at a folder with one sub-folder "
                            "per representation (rgb/, depth/, ...) of <frame>.npz files")
        self._frames: dict[str, list[str]] = {}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            frames = sorted(f.stem for f in d.glob("*.npz"))
            if frames:
                self._frames[d.name] = frames
        if not self._frames:
            raise DataError(f"npz dir {self.root}: no sub-folder holds .npz files — expected e.g. "
                            f"{self.root}/rgb/00000.npz")

    @property
    def representations(self) -> list[str]:
        return list(self._frames)

    def frames(self, representation: str | None = None) -> list[str]:
        """Frame ids of one representation, or those every representation has (None)."""
        if representation is None:
            common = set.intersection(*(set(v) for v in self._frames.values()))
            return sorted(common)
        self._check_rep(representation)
        return list(self._frames[representation])

    def _check_rep(self, rep: str) -> None:
        if rep not in self._frames:
            raise DataError(f"npz dir {self.root}: no representation {rep!r}; found {', '.join(self._frames)}")

    def read(self, representation: str, frame: str) -> np.ndarray:
        """One frame of one representation (the file's single array)."""
        self._check_rep(representation)
        path = self.root / representation / f"{frame}.npz"
        if not path.exists():
            raise DataError(f"{path} is missing — representation {representation!r} has no frame {frame!r}")
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if len(keys) != 1:
                    raise DataError(f"{path} holds {len(keys)} arrays {keys}; save exactly one per file")
                return z[keys[0]]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path} is not a readable .npz ({e}) — re-save it with numpy.savez") from None

    def export(
        self,
        cache_dir: str | os.PathLike[str],
        representations: Sequence[str] | None = None,
        frames: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Join frames into one memory-mapped ``(N, ...)`` array per representation (cached).

        Default: all representations over the frames they all share. Shapes must agree across
        frames; a trailing channel of size 1 is dropped (``(H, W, 1)`` -> ``(H, W)``).
        """
        reps = list(representations or self.representations)
        for r in reps:
            self._check_rep(r)
        if frames is None:
            frames = sorted(set.intersection(*(set(self._frames[r]) for r in reps)))
        frames = list(frames)
        if not frames:
            raise DataError(f"npz dir {self.root}: representations {reps} share no frame — check the file names")
        key = hashlib.sha256(json.dumps([str(self.root.resolve()), reps, frames, self._stamp(reps, frames)]).encode())
        out_dir = Path(cache_dir) / "npzdir" / key.hexdigest()[:16]
        if not (out_dir / "meta.json").exists():
            for r in tqdm(reps, desc="npz dir", disable=None if progress is None else not progress):
                first = _squeeze(self.read(r, frames[0]))
                with atomic_open(out_dir / f"{r}.npy", "wb") as f:
                    np.lib.format.write_array_header_1_0(f, {
                        "descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
                        "shape": (len(frames), *first.shape)})
                    for fr in frames:
                        a = _squeeze(self.read(r, fr))
                        if a.shape != first.shape:
                            raise DataError(f"{self.root / r / fr}.npz has shape {a.shape}, but {frames[0]} has "
                                            f"{first.shape}; every frame of {r!r} must have the same shape")
                        f.write(np.ascontiguousarray(a, dtype=first.dtype).tobytes())
            atomic_write_json(out_dir / "meta.json", {"root": str(self.root), "representations": reps,
                                                      "frames": frames})
        return {r: np.load(out_dir / f"{r}.npy", mmap_mode="r") for r in reps}

    def _stamp(self, reps: Sequence[str], frames: Sequence[str]) -> str:
        """Sizes and modification times of the files: a changed dataset never reuses a stale export."""
        h = hashlib.sha256()
        for r in reps:
            for fr in frames:
                st = (self.root / r / f"{fr}.npz").stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
