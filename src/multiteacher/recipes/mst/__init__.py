"""MST-Distill recipe: cross-modal distillation from a routed mixture of specialised teachers.

On AV-digits (MNIST images paired with FSDD spoken digits, both weakened), with leave-one-speaker-out
folds and both directions (image student, audio student). For every (fold, student modality) it
runs the requested methods, each as one resumable stage (`ctx.stage`), every training through the
engine's `fit`:

- ``mst``: the three MST-Distill stages (`cotrain.py`: co-train the teachers and the student;
  `specialise.py`: MaskNets make engine `MaskedTeacher`s; `routed.py`: the student distils through
  an engine `Router` from the teachers served by a `TeacherPool`); ablations ``mst_s1`` (the co-trained
  student after stage 1), ``mst_nomask`` (router over the two unmasked teachers), ``mst_random``
  (uniformly random teacher per instance), ``mst_soft`` (router-weighted teacher mixture);
- baselines with the same number of student epochs as MST's student (stage 1 + stage 3):
  ``no_kd``, ``kd_mm`` (KD from the multimodal teacher), ``kd_cross`` (from the cross-modal
  teacher), ``aver`` (average of the two teachers' distributions), ``fitnet`` (fc1 hint from the
  multimodal teacher, plus CE), ``dkd`` (decoupled KD from the multimodal teacher);
- ``teachers``: test accuracy of the independently trained teachers the baselines use.

Rows: ``{"method", "direction" ("audio->image" = image student), "fold", "acc", "f1", ...}``;
MST rows add per-teacher routing usage (share of instances whose top-1 teacher it is under the
final router) on the test set (``route/<teacher>``) and the training set (``route_train/``; random
routing: uniform), MaskNet statistics on validation data (``mask_mean/``, ``mask_std/``,
``mask_min/``) and the stage-2 validation KL.

``task: scenes-seg`` runs the same stages for RGB-D semantic segmentation on rendered pybullet
scenes (RGB student, depth and RGB-D teachers, 2-d MaskNets, per-pixel KD; rows carry pixel
``acc`` and ``miou``), see `seg.py` and recipes/mst-scenes-seg.yaml.

Summaries over runs: ``python -m multiteacher.recipes.mst.summary RUN_DIR ...`` (mean ± std over
folds, paired t / sign-flip tests vs ``kd_mm`` with Holm correction, routing usage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.data import avdigits
from multiteacher.engine.loop import FitConfig
from multiteacher.errors import ConfigError
from multiteacher.recipes.mst import seg
from multiteacher.recipes.mst.evaluation import result_row
from multiteacher.recipes.mst.job import Job
from multiteacher.recipes.mst.plan import Plan
from multiteacher.recipes.mst.plots import plot_rows
from multiteacher.recipes.mst.seg import SegSection
from multiteacher.rundir import fingerprint_path
from multiteacher.runs import RunContext
from multiteacher.stats import paired_t_test
from multiteacher.teachers.base import fingerprint_obj

METHODS = ("no_kd", "kd_mm", "kd_cross", "aver", "fitnet", "dkd",
           "mst", "mst_s1", "mst_nomask", "mst_random", "mst_soft", "teachers")
Method = Literal["no_kd", "kd_mm", "kd_cross", "aver", "fitnet", "dkd",
                 "mst", "mst_s1", "mst_nomask", "mst_random", "mst_soft", "teachers"]


class DataSection(StrictModel):
    """AV-digits folds and weakening (defaults calibrated, see avdigits.DEFAULTS_NOTE)."""

    folds: list[str] | None = Field(
        None, min_length=1,
        description="Test speakers, one leave-one-speaker-out fold each (None: every speaker found in the "
        "data directory's fsdd/recordings). Checked against the recordings found when the run starts.")
    image_energy: float = Field(avdigits.DEFAULT_IMAGE_ENERGY, gt=0, le=1,
                                description="Share of pixel variance the PCA-weakened images keep.")
    audio_snr_db: float = Field(avdigits.DEFAULT_AUDIO_SNR_DB,
                                description="Signal-to-noise ratio (dB) of the white noise added to the audio.")
    val_mode: Literal["speaker", "random"] = Field(
        "speaker", description="Validation set: the next speaker (an unseen voice) or a random stratified share.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Validation share with `val_mode: random`.")
    limit_per_digit: int | None = Field(None, gt=0,
                                        description="At most this many recordings per (speaker, digit); tiny runs.")


class NetSection(StrictModel):
    """Width of the small CNNs (conv channels: width, 2·width, 4·width) and embedding size."""

    width: int = Field(16, gt=0, description="Channels of the first conv block (then 2x and 4x).")
    embed: int = Field(64, gt=0, description="Width of the fc1 embedding.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the classification head.")


class MSTSection(StrictModel):
    """MST-Distill settings; defaults follow the official code except the epoch counts."""

    epochs_s1: int = Field(10, gt=0, description="Stage 1 epochs: co-training of the teachers and the student.")
    epochs_s2: int = Field(10, gt=0, description="Stage 2 epochs: MaskNet training.")
    epochs_s3: int = Field(20, gt=0, description="Stage 3 epochs: routed distillation into the student.")
    temperature: float = Field(4.0, gt=0, description="KD temperature of all stages.")
    mm_layers: list[str] = Field(default_factory=lambda: ["net.concat", "net.fc1"], min_length=1,
                                 description="Module paths of the multimodal teacher that get a MaskNet.")
    cross_layers: list[str] = Field(default_factory=lambda: ["net.conv3", "net.fc1"], min_length=1,
                                    description="Module paths of the cross-modal teacher that get a MaskNet.")
    mask_heads: int = Field(3, gt=0, description="Attention heads of each MaskNet.")
    mask_hidden: int | None = Field(None, gt=0,
                                    description="MaskNet token width (None: the official C // (2 heads) * heads).")
    top_k: int = Field(1, gt=0, description="Teachers each instance distils from (router top-k).")
    balance: Literal["official", "kl", "cv"] = Field(
        "official", description="Router load-balance loss: official = KL(U || mean p) / K, kl = KL(mean p || U), "
        "cv = squared coefficient of variation.")
    w_task: float = Field(1.0, ge=0, description="Stage 3 weight of the label CE.")
    w_kl: float = Field(1.0, ge=0, description="Stage 3 initial weight of the KD term.")
    w_lb: float = Field(1.0, ge=0, description="Stage 3 initial weight of the load-balance term.")
    lb_decay: float = Field(0.9, gt=0, description="Factor on w_lb after epochs 0, lb_every, 2·lb_every, ...")
    lb_every: int = Field(10, gt=0, description="Epoch period of the w_lb decay.")
    kl_decay: float = Field(0.5, gt=0, description="Factor on w_kl after epochs 0, kl_every, 2·kl_every, ...")
    kl_every: int = Field(30, gt=0, description="Epoch period of the w_kl decay.")
    cumulative_masks: bool = Field(
        False, description="Official stage-3 quirk: a teacher also carries the masks of the earlier teachers "
        "of the same network.")
    stage1_detach: bool = Field(
        False, description="Stage 1 KD detaches the target network (default: gradient into both, as official).")


class BaselineSection(StrictModel):
    """Baseline losses: CE + weight · distillation term."""

    teacher_epochs: int | None = Field(
        None, gt=0, description="Epochs of the baselines' independently trained teachers (None: s1 + s3).")
    kd_weight: float = Field(1.0, ge=0, description="Weight of the KD term of kd_mm, kd_cross and aver.")
    fitnet_weight: float = Field(1.0, ge=0, description="Weight of the FitNet hint loss.")
    dkd_alpha: float = Field(1.0, ge=0, description="DKD weight of the target-class term (TCKD).")
    dkd_beta: float = Field(8.0, ge=0, description="DKD weight of the non-target-class term (NCKD).")
    dkd_warmup_epochs: int = Field(5, ge=0, description="Epochs of the linear warm-up of the DKD term.")


class Config(RecipeConfig):
    """The MST-Distill recipe: MST and its baselines on AV-digits or on scene segmentation."""

    recipe: Literal["mst"] = Field("mst", description="Recipe name.")
    task: Literal["avdigits", "scenes-seg"] = Field(
        "avdigits", description="avdigits: AV-digits classification; scenes-seg: RGB-D segmentation on scenes.")
    data: DataSection = Field(DataSection(), description="AV-digits data and folds (task avdigits).")
    seg: SegSection = Field(SegSection(), description="Scenes and segmentation networks (task scenes-seg).")
    net: NetSection = Field(NetSection(), description="The AV-digits CNNs.")
    directions: list[Literal["image", "audio"]] = Field(
        default_factory=lambda: ["image", "audio"], min_length=1,
        description="Student modalities (image: audio->image; audio: image->audio).")
    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1,
                                  description=f"Methods to run, of {', '.join(METHODS)}.")
    mst: MSTSection = Field(MSTSection(), description="MST-Distill stages.")
    baselines: BaselineSection = Field(BaselineSection(), description="Baselines and their teachers.")
    fit: FitConfig = Field(FitConfig(batch_size=64, optimizer="adam", lr=1e-3, max_steps=1, log_every=25),
                           description="Optimiser and batch size of every training (steps are set per stage).")

    @model_validator(mode="after")
    def _check(self) -> Config:
        # which speakers exist is a fact of the data (checked at run start); here only the file-name form
        bad = [f for f in self.data.folds or [] if not avdigits.SPEAKER_RE.fullmatch(f)]
        if bad:
            raise ValueError(f"data.folds: {bad[0][:40]!r} cannot be an FSDD speaker (file names "
                             "{digit}_{speaker}_{take}.wav: letters only); use a speaker's name, e.g. lucas")
        if self.task == "scenes-seg" and set(self.methods) - seg.SEG_METHODS:
            raise ValueError(f"methods {sorted(set(self.methods) - seg.SEG_METHODS)} do not apply to "
                             f"task scenes-seg; use {sorted(seg.SEG_METHODS)}")
        return self


def make_plan(cfg: Config, fold: avdigits.Fold, student: str) -> Plan:
    """The job of one (fold, student modality) in plain values."""
    m, b = cfg.mst, cfg.baselines
    return Plan(
        student=student, fold=fold, fit=cfg.fit, width=cfg.net.width, embed=cfg.net.embed,
        dropout=cfg.net.dropout, seed=cfg.seed, temperature=m.temperature, epochs_s1=m.epochs_s1,
        epochs_s2=m.epochs_s2, epochs_s3=m.epochs_s3,
        teacher_epochs=b.teacher_epochs or (m.epochs_s1 + m.epochs_s3), mm_layers=m.mm_layers,
        cross_layers=m.cross_layers, mask_heads=m.mask_heads, mask_hidden=m.mask_hidden, top_k=m.top_k,
        balance=m.balance, w_task=m.w_task, w_kl=m.w_kl, w_lb=m.w_lb, lb_decay=m.lb_decay,
        lb_every=m.lb_every, kl_decay=m.kl_decay, kl_every=m.kl_every, cumulative_masks=m.cumulative_masks,
        stage1_detach=m.stage1_detach, kd_weight=b.kd_weight, fitnet_weight=b.fitnet_weight,
        dkd_alpha=b.dkd_alpha, dkd_beta=b.dkd_beta, dkd_warmup_epochs=b.dkd_warmup_epochs,
    )


def make_seg_plan(cfg: Config, fold: avdigits.Fold) -> Plan:
    """The segmentation job: RGB student, depth cross-modal teacher, RGB-D multimodal teacher."""
    plan = make_plan(cfg, fold, "rgb")
    sec = cfg.seg
    plan.mm_layers, plan.cross_layers = sec.mm_layers, sec.cross_layers
    plan.mm_kind, plan.cross_kind, plan.builder = "rgbd", "depth", seg.builder(sec)
    plan.dense, plan.num_classes, plan.eval_bs = True, len(seg.SCENE_CLASSES), sec.eval_batch_size
    return plan


def iter_plans(cfg: Config, ctx: RunContext):
    """Every job of the config: (fold, student modality) for AV-digits, one for scene segmentation."""
    if cfg.task == "scenes-seg":
        fold = seg.load_fold(cfg.seg, ctx)
        ctx.log(fold.info, fold=fold.test_speaker)
        yield make_seg_plan(cfg, fold)
        return
    for speaker in avdigits.resolve_folds(ctx.data_dir, cfg.data.folds):
        fold = load_fold(cfg, ctx, speaker)
        ctx.log({k: v for k, v in fold.info.items() if isinstance(v, int | float)}, fold=speaker)
        for student in cfg.directions:
            yield make_plan(cfg, fold, student)


def load_fold(cfg: Config, ctx: RunContext, speaker: str) -> avdigits.Fold:
    d = cfg.data
    return avdigits.make_fold(ctx.data_dir, speaker, cfg.seed, d.image_energy, d.audio_snr_db, d.val_fraction,
                              d.limit_per_digit, d.val_mode)


def run_job(cfg: Config, ctx: RunContext, plan: Plan) -> list[dict[str, Any]]:
    """All requested methods on one (fold, student modality); each method is one stage."""
    return Job(ctx, plan).run(list(cfg.methods))


def summarise(rows: list[dict[str, Any]], reference: str = "kd_mm") -> dict[str, float]:
    """Mean test scores per (direction, method) over folds, and paired t-tests against `reference`.

    Args:
        rows: results rows (method, direction, fold, acc, f1 / miou).
        reference: the method the others are compared with (paired over common folds, >= 2).

    Returns:
        ``{"<direction>/<method>/<acc|f1|miou>", ".../acc_minus_<ref>", ".../p_vs_<ref>", "chance_acc"}``.

    Example:
        >>> summarise([{"direction": "a->i", "method": "mst", "fold": "x", "acc": 0.5, "f1": 0.4}])["a->i/mst/acc"]
        0.5
    """
    metrics: dict[str, float] = {}
    by: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for r in rows:
        by.setdefault((r["direction"], r["method"]), {})[r["fold"]] = r
    for (direction, method), per_fold in by.items():
        for key in ("acc", "f1", "miou"):
            vals = [r[key] for r in per_fold.values() if key in r]
            if vals:
                metrics[f"{direction}/{method}/{key}"] = sum(vals) / len(vals)
        ref = by.get((direction, reference))
        if ref and method != reference:
            common = sorted(set(ref) & set(per_fold))
            if len(common) >= 2:
                res = paired_t_test([per_fold[f]["acc"] for f in common], [ref[f]["acc"] for f in common])
                diff = sum(per_fold[f]["acc"] - ref[f]["acc"] for f in common) / len(common)
                metrics[f"{direction}/{method}/acc_minus_{reference}"] = float(diff)
                metrics[f"{direction}/{method}/p_vs_{reference}"] = res.p_value
    metrics["chance_acc"] = 0.1
    return metrics


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Run the recipe: every fold x direction x method (or the scene-segmentation job).

    Args:
        cfg: the validated config.
        ctx: the run.

    Returns:
        ``{"metrics": fold means and paired tests, "rows": one row per (method, direction, fold)}``.

    Example:
        >>> res = run(load_config("recipes/mst-avdigits-tiny.yaml"), ctx)  # doctest: +SKIP
    """
    rows: list[dict[str, Any]] = []
    for plan in iter_plans(cfg, ctx):
        rows += run_job(cfg, ctx, plan)
    if ctx.is_main:
        plot_rows(rows, ctx.run_dir / "plots")
    return {"metrics": summarise(rows), "rows": rows}


def evaluate(cfg: Config, ctx: RunContext) -> dict[str, float]:
    """Test metrics of a finished run's saved students on `ctx.data_dir` (same layout, e.g. new recordings).

    Args:
        cfg: the run's config.
        ctx: the run (its checkpoints) and the data to evaluate on.

    Returns:
        ``{"<direction>/<method>/<fold>/<metric>": value}``; ConfigError if no student was saved.

    Example:
        >>> evaluate(cfg, ctx)["audio->image/mst/george/acc"]  # doctest: +SKIP
        0.675
    """
    dev = torch.device("cpu")
    out: dict[str, float] = {}
    for plan in iter_plans(cfg, ctx):
        for method in cfg.methods:
            if method in ("teachers", "mst_s1"):
                continue
            path = ctx.run_dir / "checkpoints" / f"{plan.key}-{method}" / "best.pt"
            if not path.exists():
                raise ConfigError(f"{ctx.run_dir}: method {method!r} ({plan.key}) has no saved student at {path} — "
                                  "the run did not train it; evaluate only the methods it ran (--set methods=[...])")
            state = torch.load(path, map_location="cpu", weights_only=False)["model"]
            if any(k.startswith("student.") for k in state):
                state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
            model = plan.new(plan.student, "student")
            model.load_state_dict(state)
            row = result_row(plan, method, model, dev)
            for k in ("acc", "f1", "miou"):
                if k in row:
                    out[f"{row['direction']}/{method}/{row['fold']}/{k}"] = row[k]
    if not out:
        raise ConfigError(f"{ctx.run_dir}: no saved students under checkpoints/ — run the recipe first")
    return out


def data_fingerprint(cfg: Config, data_dir: Path) -> str:
    """What `--resume` compares about the data: the AV-digits files' names, sizes and mtimes.

    The config names no data path (the task always reads ``mnist/`` and ``fsdd/recordings/``), so
    the engine's generic fingerprint of config paths would see nothing; scenes are rendered, not read.

    Args:
        cfg: the run's config.
        data_dir: the data directory.

    Returns:
        A short hash ("" for the scenes task, which reads no files).

    Example:
        >>> data_fingerprint(cfg, Path("../shared/data"))  # doctest: +SKIP
        '3f1c9a0e5d2b7c41'
    """
    if cfg.task != "avdigits":
        return ""
    return fingerprint_obj([fingerprint_path(Path(data_dir) / "mnist"),
                            fingerprint_path(Path(data_dir) / "fsdd" / "recordings")])
