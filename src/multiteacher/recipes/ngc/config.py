"""NGC recipe config: nodes, graph options, edge training budget, consensus, controls, executor."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, model_validator
from pydantic.fields import FieldInfo

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.data.scenes import ScenesConfig
from multiteacher.engine.loop import FitConfig

__all__ = [
    "EDGE_FIT_FIELDS",
    "Config",
    "ConsensusConfig",
    "ControlsConfig",
    "EdgeFitConfig",
    "ExecutorConfig",
    "GraphConfig",
    "NodeConfig",
    "NpzSource",
    "default_nodes",
]


class NodeConfig(StrictModel):
    """One scene representation. `input` nodes feed edges only (the RGB image).

    Example:
        >>> NodeConfig(kind="continuous", channels=1, metric="depth", scale=4.0).loss
        'l1'
    """

    kind: Literal["input", "continuous", "categorical"] = Field(
        ..., description="input (fed to edges only), continuous values, or categorical classes")
    source: str | None = Field(None, description="array name in the data (default: the node's name)")
    channels: int = Field(..., ge=1, description="channels, or classes for categorical nodes")
    loss: Literal["l1", "l2", "cosine", "ce", "none"] = Field(
        "l1", description="per-pixel training loss of edges into it")
    metric: Literal["depth", "normals", "semantic", "height", "none"] = Field(
        "none", description="which dense metrics evaluate it (metrics/dense.py)")
    scale: float = Field(1.0, gt=0, description="continuous values are divided by this inside the nets")


class GraphConfig(StrictModel):
    """Which edges exist besides the direct ones (rgb -> X for every output node X).

    Example:
        >>> GraphConfig(hyperedges=True).two_hop
        True
    """

    two_hop: bool = Field(True, description="X -> Y edges trained on the direct edge's prediction of X")
    hyperedges: bool = Field(False, description="(rgb, X) -> Y edges: see the image and the prediction of X")
    two_hop_input: Literal["prediction", "consensus"] = Field(
        "prediction", description="in generations >= 1: feed X's edge prediction or X's consensus")
    exclude: list[str] = Field(default_factory=list, description="edge ids to leave out, e.g. 'rgb>semantic>depth'")


#: The `FitConfig` fields an edge uses (no validation set: edges train for a step budget).
EDGE_FIT_FIELDS = ("max_steps", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "scheduler",
                   "warmup_steps", "step_size", "gamma", "min_lr_ratio", "grad_clip", "ckpt_every")
_EDGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "max_steps": {"default": 400}, "batch_size": {"default": 16}, "lr": {"default": 2e-3},
    "scheduler": {"default": "cosine"}, "min_lr_ratio": {"default": 0.05},
    "ckpt_every": {"default": 100, "description": "steps between mid-edge resume points (0: none)"},
}
_EdgeFitFields: Any = create_model(  # FitConfig's fields (types, bounds, descriptions), edge defaults
    "_EdgeFitFields", __base__=StrictModel,
    **{k: (FitConfig.model_fields[k].annotation,
           FieldInfo.merge_field_infos(FitConfig.model_fields[k], **_EDGE_DEFAULTS.get(k, {})))
       for k in EDGE_FIT_FIELDS})


class EdgeFitConfig(_EdgeFitFields):  # type: ignore[misc]
    """Budget and optimiser of every edge (same in every generation: equal compute).

    The optimisation fields are the engine's `FitConfig` fields (`EDGE_FIT_FIELDS`, same names,
    bounds and descriptions; edge defaults: 400 steps of 16 frames, AdamW at 2e-3, cosine to 5%);
    the rest say how big the net is and how batches mix labelled and pseudo-labelled frames.

    Example:
        >>> EdgeFitConfig(max_steps=15).fit_config().val_every
        15
    """

    width: int = Field(16, ge=1, description="U-Net width (channels of the first level)")
    depth: int = Field(3, ge=1, description="U-Net resolution levels")
    labelled_share: float = Field(0.5, ge=0, le=1, description="labelled frames per batch in generations >= 1")
    fine_tune: bool = Field(False, description="start generation g from the edge's generation g-1 weights")
    predict_batch: int = Field(128, ge=1, description="frames per forward pass when writing predictions")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where edge nets train (auto: cuda if there)")

    def fit_config(self) -> FitConfig:
        """The `FitConfig` an edge's fit runs with: its optimisation fields, no validation.

        Returns:
            A `FitConfig` with `val_every = max_steps` (no validation set; resume points every `ckpt_every`).

        Example:
            >>> EdgeFitConfig(ckpt_every=0).fit_config().ckpt_every
            0
        """
        return FitConfig(**{k: getattr(self, k) for k in EDGE_FIT_FIELDS}, val_every=self.max_steps)


class ConsensusConfig(StrictModel):
    """How the paths' predictions at a node become a pseudo-label.

    Example:
        >>> ConsensusConfig(mask=True).mask_quantile
        0.7
    """

    method: Literal["median", "mean", "trimmed_mean"] = Field(
        "median", description="continuous nodes: consensus op over the paths (multiteacher.consensus)")
    trim: float = Field(0.2, ge=0, lt=0.5, description="trimmed_mean: share cut from each end")
    categorical: Literal["mean", "majority"] = Field(
        "mean", description="categorical nodes: average the paths' probabilities, or majority vote")
    mask: bool = Field(False, description="train only on pixels where the paths agree (agreement mask)")
    mask_quantile: float | None = Field(0.7, gt=0, le=1, description="keep this share of pixels per frame")
    mask_threshold: float | None = Field(None, gt=0, description="or: keep pixels with dispersion <= this")
    mask_balanced: bool = Field(False, description="apply the quantile per consensus class (strong consensus)")

    @model_validator(mode="after")
    def _one_rule(self) -> ConsensusConfig:
        if self.mask and self.mask_threshold is None and self.mask_quantile is None:
            raise ValueError("consensus.mask needs mask_quantile or mask_threshold")
        return self


class ControlsConfig(StrictModel):
    """Controls at equal compute: self-training and a seed ensemble of direct edges.

    Example:
        >>> ControlsConfig().seed_ensemble
        True
    """

    self_training: bool = Field(True, description="retrain each direct edge on its own predictions")
    seed_ensemble: bool = Field(True, description="consensus of K differently seeded direct edges")


class ExecutorConfig(StrictModel):
    """How edge jobs run (multiteacher.engine.executor).

    Example:
        >>> ExecutorConfig().backend
        'process'
    """

    backend: Literal["inline", "process", "ray"] = Field(
        "process", description="inline (this process), a process pool, or Ray")
    workers: int = Field(2, ge=1, description="parallel edge jobs")
    threads_per_worker: int = Field(1, ge=1, description="torch threads per worker (pinned: no thrashing)")


def default_nodes() -> dict[str, NodeConfig]:
    """The scenes' nodes: rgb input; depth, normals, semantic (9 classes) and height outputs.

    Returns:
        Node name -> `NodeConfig`.

    Example:
        >>> sorted(default_nodes())
        ['depth', 'height', 'normals', 'rgb', 'semantic']
    """
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
    "scenes" so that labelled, unlabelled and test frames come from different stretches.

    Example:
        >>> NpzSource(root="dronescapes").group
        10
    """

    root: str = Field(..., description="folder; relative paths are under the data directory")
    group: int = Field(10, ge=1, description="consecutive frames per group (the unit of the splits)")
    test_every: int = Field(5, ge=2, description="every n-th group is a test group")


class Config(RecipeConfig):
    """Neural Graph Consensus on rendered scenes.

    Example:
        >>> Config(name="ngc").generations
        2
    """

    recipe: Literal["ngc"] = Field("ngc", description="the recipe: Neural Graph Consensus")
    data: ScenesConfig = Field(ScenesConfig(), description="the rendered scenes")
    npz: NpzSource | None = Field(None, description="use an npz folder instead of rendered scenes")
    labelled_fraction: float = Field(0.1, gt=0, lt=1, description="share of training *scenes* that are labelled")
    input_node: str = Field("rgb", description="the node every path starts from (kind 'input')")
    nodes: dict[str, NodeConfig] = Field(default_factory=default_nodes, description="the graph's nodes")
    graph: GraphConfig = Field(GraphConfig(), description="which edges exist")
    edge: EdgeFitConfig = Field(EdgeFitConfig(), description="budget and optimiser of every edge")
    generations: int = Field(2, ge=0, description="pseudo-label generations after generation 0")
    consensus: ConsensusConfig = Field(ConsensusConfig(), description="how paths become pseudo-labels")
    controls: ControlsConfig = Field(ControlsConfig(), description="self-training and seed-ensemble controls")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="how edge jobs run")
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
