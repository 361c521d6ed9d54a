"""NGC figures: metrics vs generation per node, and example frames (RGB, ground truth, direct
edge, consensus, agreement mask) on unlabelled training frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multiteacher.io import atomic_savefig
from multiteacher.recipes.ngc import pipeline as P
from multiteacher.recipes.ngc.graph import direct_id, output_nodes


def plot_generations(cfg: Any, rows: list[dict[str, Any]], out: Path) -> Path:
    """One panel per node: primary test metric vs generation for the direct edge, the consensus,
    the pseudo-labels, self-training, and the seed ensemble (a horizontal line).

    Args:
        cfg: the NGC config.
        rows: the run's result rows.
        out: the PNG to write.

    Returns:
        The path written.

    Example:
        >>> # plot_generations(cfg, results["rows"], run_dir / "plots" / "ngc_generations.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = output_nodes(cfg)
    fig, axes = plt.subplots(1, len(nodes), figsize=(3.6 * len(nodes), 3.2), squeeze=False)
    for ax, node in zip(axes[0], nodes):
        key = P.PRIMARY.get(cfg.nodes[node].metric, (None,))[0]
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["node"] != node or key not in r:
                continue
            name = "direct" if r["predictor"] == direct_id(cfg, node) else r["predictor"]
            if name in ("direct", "consensus", "pseudo_label", "self_training", "seed_ensemble"):
                series.setdefault(name, []).append((int(r["generation"]), float(r[key])))
        if "self_training" in series and "direct" in series:
            series["self_training"] = [p for p in series["direct"] if p[0] == 0] + series["self_training"]
        for name, pts in sorted(series.items()):
            pts = sorted(pts)
            if name == "seed_ensemble":
                ax.axhline(pts[0][1], ls=":", color="grey", label=name)
            else:
                label = "pseudo_label (unlabelled train frames)" if name == "pseudo_label" else name
                ax.plot(*zip(*pts), marker="o", label=label, ls="--" if name == "pseudo_label" else "-")
        ax.set(title=f"{node} (test frames)", xlabel="generation", ylabel=key)
        ax.set_xticks(range(cfg.generations + 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_savefig(fig, out)


def plot_examples(c: P.Ctx, out_dir: Path, frames: int) -> list[Path]:
    """Per node: rows = unlabelled frames; columns = RGB, ground truth, generation-0 direct edge,
    generation-0 consensus (the pseudo-label), agreement mask.

    Args:
        c: the run's NGC context.
        out_dir: folder of the PNGs.
        frames: unlabelled frames to show (0: none).

    Returns:
        The paths written (``ngc_example_<node>.png``).

    Example:
        >>> # plot_examples(c, run_dir / "plots", frames=3)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frames == 0 or len(c.unlabelled) == 0:
        return []
    idx = c.unlabelled[np.linspace(0, len(c.unlabelled) - 1, min(frames, len(c.unlabelled))).astype(int)]
    paths = []
    for node in output_nodes(c.cfg):
        kind = c.cfg.nodes[node].kind
        gt = np.load(c.gt_ref(node, "train")["path"], mmap_mode="r")
        pred = np.load(c.pred_path("gen0", direct_id(c.cfg, node), "train"), mmap_mode="r")
        cons = np.load(c.pseudo_path("gen0", node, "train"), mmap_mode="r")
        mask = np.load(c.pseudo_path("gen0", node, "mask"), mmap_mode="r")

        lo, hi = (float(np.nanmin(gt[idx])), float(np.nanmax(gt[idx]))) if kind != "categorical" else (0, 9)

        def show(a: np.ndarray, layout: str, kind: str = kind, lo: float = lo, hi: float = hi
                 ) -> tuple[np.ndarray, dict[str, Any]]:
            a = np.asarray(a, dtype=np.float32)
            if layout == "pred":
                a = a.argmax(0) if kind == "categorical" else np.moveaxis(a, 0, -1).squeeze(-1) if a.shape[0] == 1 \
                    else np.moveaxis(a, 0, -1)
            if kind == "categorical":
                return a, {"cmap": "tab10", "vmin": 0, "vmax": 9, "interpolation": "nearest"}
            if a.ndim == 3:  # normals
                return np.clip((a + 1) / 2, 0, 1), {}
            return a, {"cmap": "viridis", "vmin": lo, "vmax": hi}  # one scale per row: comparable

        fig, axes = plt.subplots(len(idx), 5, figsize=(10, 2.1 * len(idx)), squeeze=False)
        for r, i in enumerate(idx):
            panels = [(np.asarray(c.train.rgb[i]), {}), show(gt[i], "label"), show(pred[i], "pred"),
                      show(cons[i], "label"), (np.asarray(mask[i]), {"cmap": "gray", "vmin": 0, "vmax": 1})]
            mask_title = "agreement mask" if c.cfg.consensus.mask else "agreement mask (off: all kept)"
            for ax, (img, kw), title in zip(axes[r], panels, ["rgb", "ground truth", "direct (gen 0)",
                                                              "consensus (gen 0)", mask_title]):
                ax.imshow(img, **kw)
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(title, fontsize=8)
        fig.suptitle(f"{node}: unlabelled training frames")
        fig.tight_layout()
        paths.append(atomic_savefig(fig, out_dir / f"ngc_example_{node}.png"))
    return paths


def write_plots(c: P.Ctx, rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """All NGC figures: metrics vs generation, and example frames.

    Args:
        c: the run's NGC context.
        rows: the run's result rows.
        out_dir: folder of the PNGs.

    Returns:
        The paths written.

    Example:
        >>> # write_plots(c, rows, ctx.run_dir / "plots")
    """
    return [plot_generations(c.cfg, rows, out_dir / "ngc_generations.png"),
            *plot_examples(c, out_dir, c.cfg.example_frames)]
