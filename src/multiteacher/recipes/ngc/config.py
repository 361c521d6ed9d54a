"""NGC recipe config: nodes, graph options, edge training budget, consensus, controls, executor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.data.scenes import ScenesConfig


class NodeConfig(StrictModel):
    """One scene representation. `input` nodes feed edges only (the RGB image)."""

    kind: Literal["input", "continuous", "categorical"]
    source: str | None = Field(None, description="array name in the data (default: the node's name)")
    channels: int = Field(..., ge=1, description="channels, or classes for categorical nodes")
    loss: Literal["l1", "l2", "cosine", "ce", "none"] = "l1"
    metric: Literal["depth", "normals", "semantic", "height", "none"] = "none"
    scale: float = Field(1.0, gt=0, description="continuous values are divided by this inside the nets")


class GraphConfig(StrictModel):
    """Which edges exist besides the direct ones (rgb -> X for every output node X)."""

    two_hop: bool = True  # X -> Y trained on the direct edge's *prediction* of X
    hyperedges: bool = False  # (rgb, X) -> Y: sees the image and the prediction of X
    two_hop_input: Literal["prediction", "consensus"] = Field(
        "prediction", description="in generations >= 1: feed X's edge prediction or X's consensus")
    exclude: list[str] = Field(default_factory=list, description="edge ids to leave out, e.g. 'rgb>semantic>depth'")


class EdgeFitConfig(StrictModel):
    """Budget and optimiser of every edge (same in every generation: equal compute)."""

    steps: int = Field(400, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    width: int = Field(16, ge=1)
    depth: int = Field(3, ge=1)
    labelled_share: float = Field(0.5, ge=0, le=1, description="labelled frames per batch in generations >= 1")
    fine_tune: bool = Field(False, description="start generation g from the edge's generation g-1 weights")
    predict_batch: int = Field(128, ge=1)
    checkpoint_every: int = Field(100, ge=0, description="steps between mid-edge resume points (0: none)")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where edge nets train (auto: cuda if there)")


class ConsensusConfig(StrictModel):
    """How the paths' predictions at a node become a pseudo-label."""

    method: Literal["median", "mean", "trimmed_mean"] = "median"
    trim: float = Field(0.2, ge=0, lt=0.5)
    categorical: Literal["mean", "majority"] = "mean"
    mask: bool = False
    mask_quantile: float | None = Field(0.7, gt=0, le=1, description="keep this share of pixels per frame")
    mask_threshold: float | None = Field(None, gt=0, description="or: keep pixels with dispersion <= this")
    mask_balanced: bool = Field(False, description="apply the quantile per consensus class (strong consensus)")

    @model_validator(mode="after")
    def _one_rule(self) -> ConsensusConfig:
        if self.mask and self.mask_threshold is None and self.mask_quantile is None:
            raise ValueError("consensus.mask needs mask_quantile or mask_threshold")
        return self


class ControlsConfig(StrictModel):
    """Controls at equal compute: self-training and a seed ensemble of direct edges."""

    self_training: bool = True
    seed_ensemble: bool = True


class ExecutorConfig(StrictModel):
    backend: Literal["inline", "process", "ray"] = "process"
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)


def default_nodes() -> dict[str, NodeConfig]:
    return {
        "rgb": NodeConfig(kind="input", channels=3, loss="none"),
        "depth": NodeConfig(kind="continuous", channels=1, loss="l1", metric="depth", scale=4.0),
        "normals": NodeConfig(kind="continuous", channels=3, loss="cosine", metric="normals"),
        "semantic": NodeConfig(kind="categorical", channels=9, loss="ce", metric="semantic"),
        "height": NodeConfig(kind="continuous", channels=1, loss="l1", metric="height", scale=1.0),
    }


class NpzSource(StrictModel):
    """Bring your own data: a Dronescapes-style folder (one sub-folder per representation, one
    .npz per frame; see multiteacher.data.npzdir). Consecutive frames are grouped into pseudo
    "scenes" so that labelled, unlabelled and test frames come from different stretches."""

    root: str = Field(..., description="folder; relative paths are under the data directory")
    group: int = Field(10, ge=1, description="consecutive frames per group (the unit of the splits)")
    test_every: int = Field(5, ge=2, description="every n-th group is a test group")


class Config(RecipeConfig):
    """Neural Graph Consensus on rendered scenes."""

    recipe: Literal["ngc"] = "ngc"
    data: ScenesConfig = ScenesConfig()
    npz: NpzSource | None = Field(None, description="use an npz folder instead of rendered scenes")
    labelled_fraction: float = Field(0.1, gt=0, lt=1, description="share of training *scenes* that are labelled")
    input_node: str = "rgb"
    nodes: dict[str, NodeConfig] = Field(default_factory=default_nodes)
    graph: GraphConfig = GraphConfig()
    edge: EdgeFitConfig = EdgeFitConfig()
    generations: int = Field(2, ge=0)
    consensus: ConsensusConfig = ConsensusConfig()
    controls: ControlsConfig = ControlsConfig()
    executor: ExecutorConfig = ExecutorConfig()
    example_frames: int = Field(3, ge=0, description="frames in the example figure")

    @model_validator(mode="after")
    def _check_nodes(self) -> Config:
        if self.input_node not in self.nodes or self.nodes[self.input_node].kind != "input":
            raise ValueError(f"input_node {self.input_node!r} must be a node of kind 'input'")
        for name, n in self.nodes.items():
            if n.kind == "categorical" and n.loss != "ce":
                raise ValueError(f"nodes.{name}: categorical nodes use loss 'ce'")
            if n.kind == "continuous" and n.loss == "ce":
                raise ValueError(f"nodes.{name}: continuous nodes use l1, l2 or cosine")
        if not [n for n in self.nodes.values() if n.kind != "input"]:
            raise ValueError("nodes: declare at least one output node (continuous or categorical)")
        return self
