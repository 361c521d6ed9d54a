"""The rerank recipe's config: data splits, teachers, objective, sampling, loss options, fit, evaluation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.engine.loop import FitConfig
from multiteacher.recipes.rerank.model import ModelConfig
from multiteacher.recipes.rerank.objectives import OBJECTIVES, Objective, resolve_objective
from multiteacher.recipes.rerank.sampling import SamplingConfig
from multiteacher.recipes.rerank.teachers import TeachersConfig

DEFAULT_MEASURES = ["nDCG@10", "RR(rel=2)@10", "AP(rel=2)"]


class ExtraQueries(StrictModel):
    """A source of extra training queries nobody judged, labelled by the teachers (candidates: BM25 top-k
    over the passages of every training set, pooled into one index — `multiteacher.data.pool`).

    Example:
        >>> ExtraQueries(source="passages", max_queries=1000).key
        'pool:passages'
    """

    source: Literal["file", "passages"] = Field(
        ..., description="`file`: real queries from `qid<TAB>text` files (`path`); `passages`: queries made from "
        "the pooled passages (a random span of one sentence, ICT-style; the source passage is always a candidate).",
    )
    name: str | None = Field(
        None, description="Name of the set these queries form (`pool:<name>` in logs); default: the source.",
    )
    path: list[str] = Field(
        default_factory=list,
        description="file: query files or glob patterns, relative to the data directory (e.g. "
        "`msmarco-queries/*.tsv`) or absolute.",
    )
    max_queries: int | None = Field(None, ge=1, description="Keep a seeded sample of this many queries (None: all).")
    groups_per_query: int = Field(
        8, ge=1, description="Training groups drawn per extra query (TREC queries use sampling.groups_per_query).",
    )
    seed: int = Field(
        0, description="Seed of the query sample / passage draws (fixed across run seeds, so runs share the "
        "teacher cache; a smaller `max_queries` with the same seed gives a subset of a larger one).",
    )
    min_words: int = Field(4, ge=1, le=64, description="passages: shortest query span, in words.")
    max_words: int = Field(12, ge=1, le=64, description="passages: longest query span, in words.")

    @property
    def key(self) -> str:
        """The training-set key of these queries: `pool:<name or source>`."""
        return f"pool:{self.name or self.source}"

    @model_validator(mode="after")
    def _check(self) -> ExtraQueries:
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs 'path' (e.g. [msmarco-queries/*.tsv])")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) > max_words ({self.max_words})")
        return self


class DataConfig(StrictModel):
    """Which sets train and test, and the committed validation queries.

    Example:
        >>> DataConfig(train=["trec-dl/dl19", "trec-dl/dl22"], test=["trec-dl/dl21"]).top_k
        100
    """

    train: list[str] = Field(
        default_factory=lambda: ["trec-dl/dl21", "trec-dl/dl22"],
        description="Training sets (`trec-dl/<set>`, a BEIR folder, or `irds:<id>`); validation queries come "
        "from them.",
    )
    test: list[str] = Field(
        default_factory=lambda: ["trec-dl/dl19"], description="Test sets, scored once with the frozen config."
    )
    val_queries: str = Field(
        "recipes/rerank-val-queries.txt",
        description="Committed validation list, lines `set qid`; those in the training sets validate.",
    )
    train_queries: Literal["all", "labelled"] = Field(
        "all", description="`labelled`: train only on queries with qrels (a fair comparison with qrels objectives)."
    )
    top_k: int = Field(100, ge=2, description="Candidates per query (first-stage order); per run for a union.")
    first_stage: str | list[str] = Field(
        "bm25",
        description="The run whose top-k candidates are re-ranked in training, validation and (by default) "
        "test: a run file's name in each set's folder (`bm25`, `splade-pp-ed`, ...), or a list of them: the "
        "union of each run's top-k per query, ordered by reciprocal-rank fusion (k=60) for the first-stage "
        "baseline row. Rows carry it as `first_stage`.",
    )
    test_first_stage: str | list[str | list[str]] | None = Field(
        None,
        description="First stages the test sets are re-ranked from, each scored separately (a run name, or a "
        "list of names for a union), e.g. `[bm25, splade-pp-ed]` re-ranks each test set from both; default: "
        "`data.first_stage`. Test sets from another first stage are keyed `<set>@<first stage>` in metrics.",
    )
    extra_queries: list[ExtraQueries] = Field(
        default_factory=list,
        description="Extra unjudged training queries (real query files, or queries made from passages), each "
        "re-ranking BM25's top-k over the pooled passages of the training sets and labelled by the teachers "
        "that can score any query (live encoders; the pooled BM25 as `bm25`); run teachers marked `optional` "
        "are absent there.",
    )
    pool_top_k: int | None = Field(
        None, ge=2, description="BM25 candidates per extra query (default: data.top_k).",
    )
    max_train_queries: int | None = Field(
        None, ge=1, description="Cap on training queries per set, after removing validation (tiny runs)."
    )
    max_val_queries: int | None = Field(None, ge=1, description="Cap on validation queries per set (tiny runs).")
    max_test_queries: int | None = Field(None, ge=1, description="Cap on test queries per set (tiny runs).")


    @model_validator(mode="after")
    def _unique_pools(self) -> DataConfig:
        keys = [e.key for e in self.extra_queries]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"extra_queries: two sources form {dup[0]!r} — give each its own `name`")
        return self

    @field_validator("first_stage", "test_first_stage")
    @classmethod
    def _names(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else (v or [])
        flat = [x for item in items for x in ([item] if isinstance(item, str) else item)]
        if isinstance(v, list) and (not v or any(isinstance(item, list) and not item for item in v)):
            raise ValueError("give at least one run name (e.g. bm25)")
        if any(not x or "/" in x or x.endswith(".run") for x in flat):
            raise ValueError("run names are file stems in the set's folder, e.g. `bm25` or `splade-pp-ed`")
        return v


class LossConfig(StrictModel):
    """Loss options (sentence-transformers' defaults); each objective reads its own (`ObjectiveSpec.options`).

    Example:
        >>> LossConfig(infonce_temperature=0.05).hinge_margin
        1.0
    """

    hinge_margin: float = Field(1.0, gt=0, description="hinge: the margin.")
    infonce_temperature: float = Field(1.0, gt=0, description="infonce: softmax temperature.")
    ranknet_sigma: float = Field(1.0, gt=0, description="ranknet: the logistic's slope sigma.")
    adrmse_alpha: float = Field(1.0, gt=0, description="adrmse: ApproxRank's sigmoid slope alpha.")
    listnet_temperature: float = Field(1.0, gt=0, description="listnet: softmax temperature.")


class EvalConfig(StrictModel):
    """Measures and what to score besides the student.

    Example:
        >>> EvalConfig().measures
        ['nDCG@10', 'RR(rel=2)@10', 'AP(rel=2)']
    """

    measures: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MEASURES), description="ir-measures measures, e.g. `nDCG@10`."
    )
    baselines: bool = Field(
        True, description="Also score BM25, each teacher, the fused teacher and the untrained student."
    )
    test: bool = Field(True, description="Score the test sets (only with a frozen config).")
    interpolate: list[float] = Field(
        default_factory=list,
        description="Weights a tried on the validation queries for a * z(student) + (1 - a) * z(first stage) "
        "(per-query z-scores, `consensus.fuse_scores`); the best is applied to every test set and reported as "
        "`student+first_stage` rows next to the pure student; empty: off.",
    )

    @field_validator("interpolate")
    @classmethod
    def _weights(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 1.0 for a in v):
            raise ValueError("interpolation weights are in [0, 1] (1 = the student alone)")
        return v


def _default_fit() -> FitConfig:
    return FitConfig(
        max_steps=300,
        batch_size=8,
        lr=3e-5,
        weight_decay=0.01,
        warmup_steps=30,
        scheduler="linear",
        val_every=50,
        monitor="val/nDCG@10",
        mode="max",
        grad_clip=1.0,
        log_every=10,
    )


class Config(RecipeConfig):
    """The rerank recipe: distil teachers into a cross-encoder student and re-rank first-stage candidates.

    Example:
        >>> from multiteacher.config import load_config
        >>> cfg = load_config("recipes/rerank-trecdl-tiny.yaml")  # doctest: +SKIP
        >>> cfg.objective  # doctest: +SKIP
        'marginmse'
    """

    recipe: Literal["rerank"] = Field("rerank", description="Recipe name.")
    objective: Objective = Field(  # type: ignore[valid-type]
        "marginmse",
        description="Training objective: " + "; ".join(f"`{n}`: {s.summary}" for n, s in OBJECTIVES.items())
        + " (the engine loss names, e.g. `margin_mse`, are accepted too).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The student cross-encoder.")
    teachers: TeachersConfig = Field(default_factory=TeachersConfig, description="Teachers and how they are fused.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How training groups are drawn.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss options.")
    fit: FitConfig = Field(default_factory=_default_fit, description="The engine fit loop's settings.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training, validation and test sets.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Measures and baselines.")
    export: bool = Field(True, description="Save the student under model/ (loadable by sentence_transformers).")

    #: A sweep over objectives shares its baseline rows (first stage, teachers, the untrained student), which
    #: do not depend on the objective; student rows carry the objective themselves, so pooling is safe. The
    #: evaluation batch size changes speed, not scores (padding is masked).
    report_pooled: ClassVar[tuple[str, ...]] = ("objective", "model.eval_batch_size")

    @field_validator("objective", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return resolve_objective(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.fit.monitor.startswith("val/") and self.fit.monitor[4:] not in self.eval.measures:
            raise ValueError(f"fit.monitor {self.fit.monitor!r} must be 'val/<one of eval.measures>'")
        return self
