"""Atomic file writes: write to a temp file in the same directory, fsync, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never
a half-written file. Temp files are named `.<name>.tmp-<pid>-<rand>` and removed on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; on clean exit fsync and rename it onto `path`.

    Args:
        path: the destination (parents created).
        mode: `open` mode of the temp file (`wb`, `w`).

    Returns:
        A context manager yielding the open temp file; on an exception the temp file is removed.

    Example:
        >>> with atomic_open("out.bin") as f:  # doctest: +SKIP
        ...     f.write(b'data')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    f = open(tmp, mode)  # noqa: SIM115 - closed below
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write bytes to `path`.

    Args:
        path: the destination.
        data: the bytes.

    Returns:
        None.

    Example:
        >>> atomic_write_bytes("x.bin", b"abc")  # doctest: +SKIP
    """
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write text (UTF-8) to `path`.

    Args:
        path: the destination.
        text: the text.

    Returns:
        None.

    Example:
        >>> atomic_write_text("notes.md", "# hi")  # doctest: +SKIP
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write `obj` as pretty, key-sorted JSON (numpy/torch scalars via `json_default`).

    Args:
        path: the destination.
        obj: a JSON-able object.

    Returns:
        None.

    Example:
        >>> atomic_write_json("results.json", {"acc": 0.9})  # doctest: +SKIP
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically `torch.save` an object.

    Args:
        path: the destination.
        obj: anything `torch.save` takes.

    Returns:
        None.

    Example:
        >>> atomic_torch_save("ckpt.pt", {"model": model.state_dict()})  # doctest: +SKIP
    """
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_savefig(fig: Any, path: str | os.PathLike[str], dpi: int = 90) -> Path:
    """Render a matplotlib figure to PNG in memory, write it atomically, and close the figure.

    Args:
        fig: the figure.
        path: the PNG destination.
        dpi: resolution.

    Returns:
        `path` as a Path.

    Example:
        >>> atomic_savefig(fig, "plots/loss.png")  # doctest: +SKIP
    """
    import io as _io

    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` hook: numpy/torch scalars via `.item()`, paths as strings.

    Why: results, stages and metrics hold values straight from tensors and arrays; this turns them
    into plain JSON numbers instead of failing.

    Args:
        o: the object `json` could not serialise.

    Returns:
        A JSON-able equivalent.

    Raises:
        TypeError: for anything else (as `json` expects).

    Example:
        >>> import json, numpy as np
        >>> json.dumps({"acc": np.float32(0.5)}, default=json_default)
        '{"acc": 0.5}'
    """
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        64 hex digits.

    Example:
        >>> sha256_file("data/qrels.txt")  # doctest: +SKIP
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def leftover_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Temp files left by interrupted atomic writes under `root` (should be none after a run).

    Args:
        root: the folder searched recursively.

    Returns:
        Their paths.

    Example:
        >>> leftover_temp_files("runs/demo")  # doctest: +SKIP
        []
    """
    return [p for p in Path(root).rglob(f"*{TMP_MARK}*") if p.is_file()]


def clean_temp_files(root: str | os.PathLike[str]) -> int:
    """Remove temp files left by a killed process (called when a run resumes).

    Args:
        root: the folder cleaned recursively.

    Returns:
        How many files were removed.

    Example:
        >>> clean_temp_files("runs/demo")  # doctest: +SKIP
        0
    """
    files = leftover_temp_files(root)
    for p in files:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(files)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a `metrics.jsonl` file; a torn last line (a run killed mid-write) is skipped.

    Why here: both the run context (which truncates the log on resume) and the report (which plots
    it) read this file; keeping the reader in `io` avoids an import cycle between them.

    Args:
        path: the `metrics.jsonl` file (missing means no records).

    Returns:
        One dict per complete line, in file order.

    Example:
        >>> read_metrics("runs/example-tiny/metrics.jsonl")[0]["fit"]  # doctest: +SKIP
        'teacher'
    """
    path = Path(path)
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
