"""Claiming, locking and checking run directories.

Why: two processes must never share (or delete) one run directory, and `--resume` must continue
exactly the run that was started — the same config and the same data. A run claims its directory
with an exclusive lock (`fcntl.flock` on `<run>/.lock`) held for the life of the run; the lock dies
with the process, so a SIGKILLed run can be resumed at once. `data_fingerprint` is what `run.json`
stores about the data a run reads, and `config_differences` names what a resume would change.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiteacher.errors import ConfigError, DataError
from multiteacher.io import TMP_MARK

__all__ = ["LOCK_NAME", "RunDirLock", "config_differences", "data_fingerprint", "disk_error", "fingerprint_path",
           "is_disk_error"]

LOCK_NAME = ".lock"
MAX_FINGERPRINT_FILES = 200_000
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def disk_error(err: OSError, what: str, fix: str) -> DataError:
    """One-line DataError for an OSError while writing (full disk, read-only or unwritable folder).

    Args:
        err: the OSError.
        what: what was being done (`"writing runs/x"`).
        fix: how to fix it.

    Returns:
        The error to raise.

    Example:
        >>> str(disk_error(OSError(28, "No space left on device"), "writing runs/x", "free space"))
        'writing runs/x: No space left on device — free space'
    """
    reason = err.strerror or str(err)
    return DataError(f"{what}: {reason} — {fix}")


def is_disk_error(err: OSError) -> bool:
    """Whether an OSError is the file system refusing a write (full, read-only, no permission).

    Args:
        err: the error.

    Returns:
        True for ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EIO, EFBIG.

    Example:
        >>> is_disk_error(OSError(28, "No space left on device"))
        True
    """
    return err.errno in _DISK_ERRNOS


@dataclass
class RunDirLock:
    """An exclusive claim on a run directory, held until `release` (or the process dies).

    `acquire(new=True)` creates the directory (and missing parents) and refuses one that is not
    empty; `acquire(new=False)` locks an existing run directory for a resume. Either refuses a
    directory another live process holds, in one line. `remove_if_failed` deletes only what this
    process made, and only when nothing worth keeping (a checkpoint) was written.

    Args:
        run_dir: the run directory.

    Example:
        >>> import tempfile, pathlib
        >>> lock = RunDirLock(pathlib.Path(tempfile.mkdtemp()) / "run")
        >>> lock.acquire(new=True); lock.created
        True
        >>> lock.release()
    """

    run_dir: Path
    created: bool = False
    was_empty: bool = False
    _made_parents: list[Path] = field(default_factory=list, repr=False)
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, new: bool) -> None:
        """Claim the directory (new run) or lock it (resume).

        Args:
            new: create/claim a new run directory; False: lock an existing one.

        Returns:
            None.

        Raises:
            ConfigError: the path is a file, the directory is in use or (new) not empty, or it cannot be made.

        Example:
            >>> # RunDirLock(Path("runs/demo")).acquire(new=True)
        """
        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise ConfigError(f"run directory {d} is an existing file, not a directory — choose another --run-dir")
        if new:
            self._make()
        lock_made = False
        try:
            try:
                fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                lock_made = True
            except FileExistsError:
                fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConfigError(f"run directory {d} was removed by another process while this one started — "
                              "run again") from None
        except OSError as e:
            raise disk_error(e, f"cannot write in run directory {d}", "choose a writable --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = _read_pid(d / LOCK_NAME)
            raise ConfigError(f"run directory {d} is in use by another running process{holder} — wait for it to "
                              "finish, or choose another --run-dir") from None
        self._fd = fd
        if not new:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        others = [p for p in d.iterdir() if p.name != LOCK_NAME and TMP_MARK not in p.name]
        if others:
            if lock_made and not self.created:
                with contextlib.suppress(OSError):
                    (d / LOCK_NAME).unlink()  # leave a directory that is not ours as it was
            self.release()
            raise ConfigError(f"run directory {d} already exists and is not empty — pass --resume {d} to "
                              "continue it, or choose another --run-dir")
        for p in d.iterdir():  # temp files of a process killed while writing its first file: it never started
            if TMP_MARK in p.name:
                with contextlib.suppress(OSError):
                    p.unlink() if not p.is_dir() else shutil.rmtree(p)
        self.was_empty = True

    def _make(self) -> None:
        d = self.run_dir
        missing = []
        p = d.parent
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            for m in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(m)
                    self._made_parents.append(m)
            try:
                os.mkdir(d)  # the atomic claim: exactly one process creates it
                self.created = True
            except FileExistsError:
                if not d.is_dir():
                    raise ConfigError(f"run directory {d} is an existing file, not a directory — choose another "
                                      "--run-dir") from None
        except NotADirectoryError:
            raise ConfigError(f"cannot create run directory {d}: a parent is a file — choose another "
                              "--run-dir") from None
        except OSError as e:
            self._remove_parents()
            raise disk_error(e, f"cannot create run directory {d}", "choose a writable --run-dir") from None

    def _remove_parents(self) -> None:
        for m in reversed(self._made_parents):
            with contextlib.suppress(OSError):
                os.rmdir(m)  # only if still empty: never anything another process put there
        self._made_parents = []

    def release(self) -> None:
        """Release the lock (the lock file stays; it is only a lock).

        Returns:
            None.

        Example:
            >>> # lock.release()
        """
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def worth_keeping(self) -> bool:
        """Whether the run wrote something a resume would reuse (any file under `checkpoints/`).

        Returns:
            True when a checkpoint exists.

        Example:
            >>> # lock.worth_keeping()
        """
        ck = self.run_dir / "checkpoints"
        return ck.is_dir() and any(p.is_file() for p in ck.rglob("*"))

    def remove_if_failed(self) -> bool:
        """After a failure: remove what this process made, unless a checkpoint is worth keeping; release.

        A directory this process created goes entirely; one that existed empty is emptied. Call it
        while the lock is held, so no other process can have written there.

        Returns:
            Whether anything was removed.

        Example:
            >>> # lock.remove_if_failed()
        """
        removed = False
        if self.held and (self.created or self.was_empty) and not self.worth_keeping():
            if self.created:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self._remove_parents()
            else:
                for p in self.run_dir.iterdir():
                    if p.name != LOCK_NAME:
                        with contextlib.suppress(OSError):
                            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                with contextlib.suppress(OSError):
                    (self.run_dir / LOCK_NAME).unlink()
            removed = True
        self.release()
        return removed


def _read_pid(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().split()[0])
        return f" (pid {pid})"
    return ""


# ---------------------------------------------------------------------------------- fingerprints

def fingerprint_path(path: Path) -> str:
    """Short hash of a file's or a folder tree's entries: relative names, sizes and modification times.

    Cheap (one `stat` per file, no reading) yet it changes when a file is replaced, edited,
    added or removed. At most `MAX_FINGERPRINT_FILES` files are listed.

    Args:
        path: a file or a folder.

    Returns:
        16 hex digits.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a.txt").write_text("x")
        1
        >>> len(fingerprint_path(d))
        16
    """
    h = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]
    n = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            n += 1
            if n >= MAX_FINGERPRINT_FILES:
                return h.hexdigest()[:16]
    return h.hexdigest()[:16]


def _string_leaves(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict):
        return [leaf for k, v in d.items() for leaf in _string_leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(d, list):
        return [leaf for i, v in enumerate(d) for leaf in _string_leaves(v, f"{prefix}[{i}]")]
    return [(prefix, d)] if isinstance(d, str) and d else []


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def data_fingerprint(cfg_dict: dict[str, Any], data_dir: Path, avoid: tuple[Path, ...] = (),
                     recipe: Any = None, cfg: Any = None) -> dict[str, str]:
    """What a run stores about its data: a fingerprint per data path its config names, plus the recipe's own.

    Every string in the config (except `recipe` and `name`) that names an existing file or folder
    under `data_dir` (or an absolute path) is fingerprinted with `fingerprint_path`. A recipe module
    may add its own with `data_fingerprint(cfg, data_dir) -> str` (for data its config does not
    name by path, e.g. a task that always reads `fsdd/recordings`).

    Args:
        cfg_dict: the resolved config as a dict.
        data_dir: the data directory.
        avoid: folders never fingerprinted (the run and cache directories).
        recipe: the recipe module (its optional `data_fingerprint` is called).
        cfg: the validated config passed to the recipe's `data_fingerprint`.

    Returns:
        `{config field or "recipe": fingerprint}`; `{}` when the config names no data.

    Example:
        >>> data_fingerprint({"recipe": "x", "name": "n", "lr": "0.1"}, Path("/nonexistent"))
        {}
    """
    out: dict[str, str] = {}
    data_dir = Path(data_dir).resolve()
    avoid = tuple(Path(a).resolve() for a in avoid)
    for key, value in _string_leaves({k: v for k, v in cfg_dict.items() if k not in ("recipe", "name")}):
        if len(value) > 4096 or "\0" in value:
            continue
        try:
            p = (Path(value) if Path(value).is_absolute() else data_dir / value).resolve()
            if p == data_dir or not p.exists() or any(_overlaps(p, a) for a in avoid):
                continue
            out[key] = fingerprint_path(p)
        except (OSError, ValueError):
            continue
    hook = getattr(recipe, "data_fingerprint", None)
    if callable(hook):
        out["recipe"] = str(hook(cfg, data_dir))
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted fields whose values differ between two config dicts, each as `'field': old in the run, new now`.

    Args:
        old: the run's config.
        new: the config now.
        prefix: dotted prefix (recursion).

    Returns:
        One short description per differing field (values shortened to 60 characters).

    Example:
        >>> config_differences({"fit": {"lr": 0.001}}, {"fit": {"lr": 0.01}})
        ["config field 'fit.lr' differs: 0.001 in the run, 0.01 now"]
    """
    out: list[str] = []
    for k in sorted(set(old) | set(new), key=str):
        name = f"{prefix}.{k}" if prefix else str(k)
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name)
        elif a != b:
            out.append(f"config field '{name}' differs: {_short(a)} in the run, {_short(b)} now")
    return out


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."
