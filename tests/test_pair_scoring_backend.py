"""Backend by measurement (`eval_backend: auto`), the teachers' scoring path, halved training forwards
and the fused optimizer: stored choices are reused, a slower backend is never picked, outputs agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multiteacher.models import pair_scoring
from multiteacher.models.pair_scoring import PairRunner, calibration_key, choose_backend, onnx_available
from multiteacher.recipes.rerank.model import ModelConfig, RandomModelConfig, encode, forward_scores, load_student

TEXTS = ["how long is the life cycle of a flea", "the life cycle of a flea can last twenty days to a year",
         "cost of interior concrete flooring per square foot", "concrete floors cost two to six dollars",
         "definition of declaratory judgment in civil law", "flea"] * 3
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed")


class FakeClock:
    """A timer that only moves when a candidate says how long it 'took'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tiny() -> tuple[torch.nn.Module, object]:
    model, tok = load_student(ModelConfig(random=RandomModelConfig(layers=2, vocab_size=300), max_length=48),
                              TEXTS, seed=0)
    return model.eval(), tok


@pytest.mark.parametrize(("onnx_s", "torch_s", "expected"), [(3.0, 1.0, "torch"), (1.0, 3.0, "onnx")])
def test_choose_backend_picks_the_faster_and_stores_it(tmp_path: Path, onnx_s: float, torch_s: float,
                                                       expected: str) -> None:
    clock, calls = FakeClock(), {"onnx": 0, "torch": 0}

    def cand(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def run() -> None:
            calls[name] += 1
            clock.now += seconds
        return run

    path = tmp_path / "choices.json"
    got = choose_backend("cpu|k", {"onnx": cand("onnx", onnx_s), "torch": cand("torch", torch_s)}, path=path,
                         rounds=3, clock=clock)
    assert got == expected
    assert calls == {"onnx": 4, "torch": 4}  # one warm-up + 3 timed each
    stored = json.loads(path.read_text())["cpu|k"]
    assert stored["backend"] == expected and stored["median_s"] == {"onnx": onnx_s, "torch": torch_s}


def test_choose_backend_uses_the_stored_choice_without_measuring(tmp_path: Path) -> None:
    path = tmp_path / "choices.json"
    path.write_text(json.dumps({"other": {"backend": "torch"}, "k": {"backend": "onnx"}}))

    def boom() -> None:
        raise AssertionError("measured although a choice is stored")

    assert choose_backend("k", {"onnx": boom, "torch": boom}, path=path) == "onnx"
    # a key with no stored choice is measured and added; the other entries stay
    assert choose_backend("new", {"torch": lambda: None, "onnx": lambda: None}, path=path) in ("torch", "onnx")
    assert set(json.loads(path.read_text())) == {"other", "k", "new"}


@needs_onnx
@pytest.mark.parametrize("slow", ["onnx", "torch"])
def test_auto_never_picks_a_forced_slower_backend_and_reuses_the_choice(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path, slow: str) -> None:
    monkeypatch.setenv("MULTITEACHER_CACHE", str(tmp_path))  # no choice stored yet
    model, tok = _tiny()
    clock = FakeClock()
    real_runner, real_torch = pair_scoring._onnx_runner, PairRunner._torch

    def slow_onnx(*a, **k):  # type: ignore[no-untyped-def]
        run = real_runner(*a, **k)

        def timed_run(arrays):  # type: ignore[no-untyped-def]
            clock.now += 5.0 if slow == "onnx" else 1.0
            return run(arrays)
        return timed_run

    def slow_torch(self, arrays):  # type: ignore[no-untyped-def]
        clock.now += 5.0 if slow == "torch" else 1.0
        return real_torch(self, arrays)

    monkeypatch.setattr(pair_scoring, "_onnx_runner", slow_onnx)
    monkeypatch.setattr(PairRunner, "_torch", slow_torch)
    real_choose = pair_scoring.choose_backend
    monkeypatch.setattr(pair_scoring, "choose_backend", lambda key, cands, **kw: real_choose(key, cands, clock=clock))
    qs, ps = TEXTS[0::2], TEXTS[1::2]
    first = PairRunner(model, tok, 48, batch_size=2, backend="auto")
    scores = first(qs, ps)
    fast = "torch" if slow == "onnx" else "onnx"
    assert first.chosen == fast
    stored = json.loads(pair_scoring.backend_cache_path().read_text())[calibration_key(model, "logit", 2)]
    assert stored["backend"] == fast
    # the next runner reads the stored choice: no measuring (and with torch stored, no ONNX export at all)
    monkeypatch.setattr(pair_scoring, "choose_backend", lambda *a, **k: pytest.fail("measured again"))
    if fast == "torch":
        monkeypatch.setattr(pair_scoring, "_onnx_runner", lambda *a, **k: pytest.fail("exported although torch"))
    again = PairRunner(model, tok, 48, batch_size=2, backend="auto")
    assert again(qs, ps).tolist() == pytest.approx(scores.tolist(), abs=1e-5)
    assert again.chosen == fast
    # and the scores are the model's own, whichever backend ran
    alone = [forward_scores(model, encode(tok, [q], [p], 48)).item() for q, p in zip(qs, ps)]
    assert scores.tolist() == pytest.approx(alone, abs=1e-4)


def test_calibration_key_names_cpu_threads_and_architecture_not_weights() -> None:
    model, _ = _tiny()
    key = calibration_key(model, "logit", 8)
    assert key.startswith(pair_scoring.cpu_model() + f"|threads={torch.get_num_threads()}|")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a training step changes weights, not speed
    assert calibration_key(model, "logit", 8) == key
    other, _ = load_student(ModelConfig(random=RandomModelConfig(layers=3, vocab_size=300), max_length=48),
                            TEXTS, seed=0)
    assert calibration_key(other, "logit", 8) != key
    assert calibration_key(model, "logit", 16) != key


@needs_onnx
def test_embedding_runner_onnx_equals_torch_and_mean_pooling() -> None:
    from transformers import BertConfig, BertModel

    _, tok = _tiny()
    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).eval()
    texts = TEXTS[:7]
    a = PairRunner(enc, tok, 32, batch_size=3, backend="onnx", output="embedding")(texts)
    b = PairRunner(enc, tok, 32, batch_size=3, backend="torch", output="embedding")(texts)
    assert a.shape == (7, 16) and abs(a - b).max() < 1e-5
    # by hand: one text alone, mean of its token vectors, normalised
    x = tok([texts[1]], return_tensors="pt", truncation=True, max_length=32)
    with torch.no_grad():
        v = enc(**x).last_hidden_state[0].mean(0)
    assert b[1].tolist() == pytest.approx((v / v.norm()).tolist(), abs=1e-5)


def test_forward_scores_in_halves_equals_one_forward_with_gradients() -> None:
    model, tok = _tiny()
    qs = [TEXTS[i % 6] for i in range(20)]
    ps = [" ".join(TEXTS[(i * 5) % 6].split()[: 2 + i % 9]) for i in range(20)]
    batch = encode(tok, qs, ps, 48)
    assert batch["input_ids"].shape[0] >= 16  # halves are taken
    whole = model(**batch).logits.squeeze(-1)
    halves = forward_scores(model, batch)
    assert halves.tolist() == pytest.approx(whole.tolist(), abs=1e-5)
    g1 = torch.autograd.grad(whole.square().sum(), model.classifier.weight)[0]
    g2 = torch.autograd.grad(forward_scores(model, batch).square().sum(), model.classifier.weight)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


def test_build_optimizer_is_fused_on_cpu_and_steps_like_the_loop_version() -> None:
    from multiteacher.engine.loop import FitConfig, build_optimizer

    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    b.load_state_dict(a.state_dict())
    cfg = FitConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(a.parameters(), cfg)
    loop = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    x = torch.randn(16, 8)
    for _ in range(5):
        for m, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and not torch.equal(a.weight, torch.zeros(3, 8))
    groups = build_optimizer([{"params": a.parameters(), "lr": 1e-3}], cfg)  # generators inside groups survive
    assert len(groups.param_groups[0]["params"]) == 2


def test_int8_is_opt_in_close_to_fp32_and_never_chosen_by_auto(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTITEACHER_CACHE", str(tmp_path))
    model, tok = _tiny()
    qs, ps = TEXTS[0::2], TEXTS[1::2]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q8 = PairRunner(model, tok, 48, batch_size=4, backend="int8")
    got = q8(qs, ps)
    ref = PairRunner(model, tok, 48, batch_size=4, backend="torch")(qs, ps)
    assert q8.chosen == "int8"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not quantised
    assert abs(got - ref).max() > 1e-7  # quantised: not the fp32 scores ...
    assert abs(got - ref).max() < 0.01  # ... but close to them (the tiny model's logits are ~1e-2)
    auto = PairRunner(model, tok, 48, batch_size=4, backend="auto")
    auto(qs, ps)
    assert auto.chosen in ("torch", "onnx")


def test_teachers_score_the_same_on_both_backends_and_embed_each_query_once(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from multiteacher.teachers.text import BiEncoderTeacher, CrossEncoderTeacher

    model, tok = _tiny()
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp_path / "bi")
    tok.save_pretrained(tmp_path / "bi")
    pairs = [(TEXTS[i % 3], TEXTS[3 + i % 3]) for i in range(7)]
    backends = ["torch", "onnx"] if onnx_available() else ["torch"]
    ce = [CrossEncoderTeacher("ce", str(tmp_path / "ce"), max_length=48, backend=b).predict(pairs) for b in backends]
    assert ce[-1].tolist() == pytest.approx(ce[0].tolist(), abs=1e-5)
    # as the exported model scores each pair alone
    alone = [forward_scores(model, encode(tok, [q], [p], 48)).item() for q, p in pairs]
    assert ce[0].tolist() == pytest.approx(alone, abs=1e-5)
    fps = {CrossEncoderTeacher("ce", str(tmp_path / "ce"), max_length=48, backend=b, batch_size=bs).fingerprint
           for b in backends for bs in (2, 8)}
    assert len(fps) == 1  # backend and batch size do not change the cache key
    bi = BiEncoderTeacher("bi", str(tmp_path / "bi"), max_length=32, backend="torch")
    embedded: list[str] = []
    real_embed = bi.embed

    def counting(texts):  # type: ignore[no-untyped-def]
        embedded.extend(texts)
        return real_embed(texts)

    bi.embed = counting  # type: ignore[method-assign]
    first, second = bi.predict(pairs[:4]), bi.predict(pairs[4:])
    # each distinct text (3 queries, 3 passages) embedded once over both batches, never once per pair
    assert sorted(embedded) == sorted({t for pair in pairs for t in pair})
    e = {t: v for t, v in zip(embedded, real_embed(embedded))}
    want = [float((e[q] * e[p]).sum()) for q, p in pairs]
    assert torch.cat([first, second]).tolist() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(("onnx_s", "expected"), [(0.95, "torch"), (0.85, "onnx"), (1.2, "torch")])
def test_a_near_tie_keeps_the_preferred_backend(tmp_path: Path, onnx_s: float, expected: str) -> None:
    clock = FakeClock()

    def cand(seconds: float):  # type: ignore[no-untyped-def]
        def run() -> None:
            clock.now += seconds
        return run

    got = choose_backend("k", {"onnx": cand(onnx_s), "torch": cand(1.0)}, path=tmp_path / "c.json", clock=clock,
                         prefer="torch", margin=pair_scoring.ONNX_MARGIN)
    assert got == expected  # ONNX must be > 10 % faster to be worth its per-call export
