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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from multiteacher.errors import DataError
from multiteacher.io import atomic_open, atomic_write_json
from multiteacher.progress import progress as progress_bar


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
        classes: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Join frames into one memory-mapped ``(N, ...)`` array per representation (cached).

        Default: all representations over the frames they all share. Every file is read and
        checked before the export is kept: shapes must agree across frames, every representation
        must have the same height and width (they are maps of one frame), and a representation
        named in `classes` must hold integer class ids below its class count (`IGNORE` = 255 allowed).
        A trailing channel of size 1 is dropped (``(H, W, 1)`` -> ``(H, W)``).

        Args:
            cache_dir: where the joined arrays go.
            representations: which sub-folders (default: all).
            frames: which frames (default: those every chosen representation has).
            progress: show a progress bar.
            classes: `{representation: number of classes}` for categorical maps.

        Returns:
            `{representation: memory-mapped (N, ...) array}`.

        Raises:
            DataError: a missing or unreadable file, or a shape / class id that does not fit (one line
                naming the file).

        Example:
            >>> d = NpzDir("dronescapes")  # doctest: +SKIP
            >>> arrs = d.export("cache", ["rgb", "semantic"], classes={"semantic": 8})  # doctest: +SKIP
        """
        reps = list(representations or self.representations)
        for r in reps:
            self._check_rep(r)
        if frames is None:
            frames = sorted(set.intersection(*(set(self._frames[r]) for r in reps)))
        frames = list(frames)
        if not frames:
            raise DataError(f"npz dir {self.root}: representations {reps} share no frame — check the file names")
        classes = dict(classes or {})
        parts: list[object] = [str(self.root.resolve()), reps, frames, self._stamp(reps, frames)]
        if classes:  # checked exports are cached apart (an unchecked one never stands in for a checked one)
            parts.append(sorted(classes.items()))
        key = hashlib.sha256(json.dumps(parts).encode())
        out_dir = Path(cache_dir) / "npzdir" / key.hexdigest()[:16]
        if not (out_dir / "meta.json").exists():
            firsts = {r: _squeeze(self.read(r, frames[0])) for r in reps}
            self._check_same_size(firsts, frames[0])
            for r in progress_bar(reps, desc="npz dir", enabled=progress is None or bool(progress)):
                first = firsts[r]
                with atomic_open(out_dir / f"{r}.npy", "wb") as f:
                    np.lib.format.write_array_header_1_0(f, {
                        "descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
                        "shape": (len(frames), *first.shape)})
                    for fr in frames:
                        a = _squeeze(self.read(r, fr))
                        if a.shape != first.shape:
                            raise DataError(f"{self.root / r / fr}.npz has shape {a.shape}, but {frames[0]} has "
                                            f"{first.shape}; every frame of {r!r} must have the same shape")
                        if r in classes:
                            check_class_ids(a, classes[r], self.root / r / f"{fr}.npz")
                        f.write(np.ascontiguousarray(a, dtype=first.dtype).tobytes())
            atomic_write_json(out_dir / "meta.json", {"root": str(self.root), "representations": reps,
                                                      "frames": frames})
        return {r: np.load(out_dir / f"{r}.npy", mmap_mode="r") for r in reps}

    def check(self, classes: Mapping[str, int] | None = None) -> str:
        """Read every file of every representation and check it as `export` would (nothing written).

        Args:
            classes: `{representation: number of classes}` for categorical maps.

        Returns:
            A one-line summary.

        Raises:
            DataError: the first unreadable file or mismatching shape / class id.

        Example:
            >>> NpzDir("dronescapes").check({"semantic": 8})  # doctest: +SKIP
            '4 representations (depth, normals, rgb, semantic), 120 frames read'
        """
        classes = dict(classes or {})
        firsts: dict[str, np.ndarray] = {}
        n = 0
        for r, frames in self._frames.items():
            for fr in frames:
                a = _squeeze(self.read(r, fr))
                n += 1
                first = firsts.setdefault(r, a)
                if a.shape != first.shape:
                    raise DataError(f"{self.root / r / fr}.npz has shape {a.shape}, but {frames[0]} has "
                                    f"{first.shape}; every frame of {r!r} must have the same shape")
                if r in classes:
                    check_class_ids(a, classes[r], self.root / r / f"{fr}.npz")
        self._check_same_size(firsts, "the first frames")
        return f"{len(self._frames)} representations ({', '.join(self._frames)}), {n} files read"

    def _check_same_size(self, arrays: Mapping[str, np.ndarray], frame: str) -> None:
        sizes = {r: tuple(a.shape[:2]) for r, a in arrays.items()}
        ref = next(iter(sizes))
        for r, hw in sizes.items():
            if len(hw) < 2 or hw != sizes[ref]:
                raise DataError(f"npz dir {self.root}: {r!r} maps are {hw} but {ref!r} maps are {sizes[ref]} "
                                f"(frame {frame}); every representation must have the same height and width")

    def _stamp(self, reps: Sequence[str], frames: Sequence[str]) -> str:
        """Sizes and modification times of the files: a changed dataset never reuses a stale export."""
        h = hashlib.sha256()
        for r in reps:
            for fr in frames:
                st = (self.root / r / f"{fr}.npz").stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()


#: A class id that marks an unlabelled pixel in categorical maps (as in the NGC recipe).
IGNORE = 255


def check_class_ids(a: np.ndarray, n_classes: int, path: Path | str) -> None:
    """Refuse a categorical map that is not integer class ids in `[0, n_classes)` (or `IGNORE`).

    Why: a class id at or above a node's channel count fails deep inside the loss (an index error),
    long after loading; checked at load, the error names the file.

    Args:
        a: the map.
        n_classes: the node's channels.
        path: the file, for the message.

    Returns:
        None.

    Raises:
        DataError: a non-integer map or an id out of range.

    Example:
        >>> check_class_ids(np.array([[0, 2, 255]]), 3, "x.npz")
    """
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{path}: a categorical map must hold integer class ids, got dtype {a.dtype} — save it as "
                        "uint8 / int class ids")
    bad = a[(a != IGNORE) & ((a < 0) | (a >= n_classes))]
    if bad.size:
        raise DataError(f"{path}: class id {int(bad.flat[0])} is not below the node's {n_classes} channels "
                        f"(valid: 0..{n_classes - 1}, {IGNORE} = ignore) — raise the node's channels or fix the map")


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
