"""MST figures from result rows: accuracy per method (mean ± std over folds) and routing usage."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from multiteacher.io import atomic_savefig

ORDER = ["no_kd", "kd_mm", "kd_cross", "aver", "fitnet", "dkd", "mst_s1", "mst_nomask", "mst_random",
         "mst_soft", "mst"]


def plot_rows(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """`mst_accuracy.png` (bars per method and direction) and `mst_routing.png` (MST usage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    usage: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["direction"]][r["method"]].append(r["acc"])
        if r["method"] == "mst":
            for k, v in r.items():
                if k.startswith("route/"):
                    usage[r["direction"]][k.removeprefix("route/")].append(v)
    paths = []
    directions = sorted(acc)
    if directions:
        fig, axes = plt.subplots(1, len(directions), figsize=(6 * len(directions), 3.8), squeeze=False)
        for ax, d in zip(axes[0], directions):
            methods = [m for m in ORDER if m in acc[d]]
            means = [sum(acc[d][m]) / len(acc[d][m]) for m in methods]
            stds = [math.sqrt(sum((v - mu) ** 2 for v in acc[d][m]) / max(1, len(acc[d][m]) - 1))
                    for m, mu in zip(methods, means)]
            colors = ["tab:red" if m == "mst" else "tab:orange" if m.startswith("mst") else "tab:blue"
                      for m in methods]
            ax.bar(range(len(methods)), means, yerr=stds, color=colors, capsize=3)
            ax.axhline(0.1, color="grey", ls=":", lw=1)
            ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
            ax.set(title=f"{d} (student: {d.split('->')[-1]}): test acc, mean ± std over folds", ylim=(0, 1))
        fig.tight_layout()
        paths.append(atomic_savefig(fig, out_dir / "mst_accuracy.png"))
    if usage:
        fig, axes = plt.subplots(1, len(usage), figsize=(5 * len(usage), 3.5), squeeze=False)
        for ax, d in zip(axes[0], sorted(usage)):
            names = sorted(usage[d])
            ax.bar(range(len(names)), [sum(usage[d][n]) / len(usage[d][n]) for n in names])
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set(title=f"{d}: MST routing usage (test, top-1)", ylim=(0, 1))
        fig.tight_layout()
        paths.append(atomic_savefig(fig, out_dir / "mst_routing.png"))
    return paths
