"""The student: any HF `AutoModelForSequenceClassification(num_labels=1)` cross-encoder.

Loads by hub name or local path (a bi-encoder checkpoint such as all-MiniLM-L6-v2 gets a fresh
regression head), or builds a tiny random model offline (`random:` section: BERT, RoBERTa, ELECTRA,
DeBERTa-v2, ModernBERT) with a WordPiece tokenizer trained on the recipe's own texts. Keeps only the
first N encoder layers when asked (speed). Batches use dynamic padding; inference sorts pairs by
token count so that each batch pads little, and on CPU run through ONNX Runtime (see
`multiteacher.models.pair_scoring`). Export writes `save_pretrained` + tokenizer with an identity
activation, so `sentence_transformers.CrossEncoder(path).predict` returns the same raw scores as
`AutoModelForSequenceClassification`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from multiteacher.config import StrictModel
from multiteacher.errors import ConfigError
from multiteacher.models.pair_scoring import (
    clip_texts,
    score_pairs,  # noqa: F401 — re-exported: the recipe's scoring
)

ARCHS = ("bert", "roberta", "electra", "deberta-v2", "modernbert")
IDENTITY = "torch.nn.modules.linear.Identity"


class RandomModelConfig(StrictModel):
    """A tiny randomly initialised encoder (tests, the tiny recipe): no download, no hub.

    Example:
        >>> RandomModelConfig(hidden=32, layers=2).arch
        'bert'
    """

    arch: Literal["bert", "roberta", "electra", "deberta-v2", "modernbert"] = Field(
        "bert", description="Encoder architecture (HF config class) of the random model."
    )
    hidden: int = Field(32, ge=8, le=4096, description="Hidden width.")
    layers: int = Field(2, ge=1, le=64, description="Encoder layers.")
    heads: int = Field(2, ge=1, le=64, description="Attention heads (must divide `hidden`).")
    intermediate: int = Field(64, ge=8, le=16384, description="Feed-forward width.")
    vocab_size: int = Field(2000, ge=200, le=500_000,
                            description="WordPiece vocabulary size, built from the run's texts.")


class ModelConfig(StrictModel):
    """Which student to train and how it reads (query, passage) pairs.

    Example:
        >>> ModelConfig(keep_layers=3, max_length=128).name
        'models/all-MiniLM-L6-v2'
    """

    name: str = Field(
        "models/all-MiniLM-L6-v2", description="Hub name or local folder of the student encoder (see `make models`)."
    )
    random: RandomModelConfig | None = Field(
        None, description="Set to build a tiny random model instead of loading `name` (tests, tiny recipes)."
    )
    keep_layers: int | None = Field(None, ge=1, description="Keep only the first N encoder layers (CPU speed).")
    max_length: int = Field(256, ge=16, le=8192, description="Tokens per (query, passage) pair, truncation "
                                                              "longest-first (encoders take at most 8192).")
    eval_batch_size: int = Field(
        16, ge=1, le=65536,
        description="Pairs per batch when re-ranking; small batches pad less (on CPU 8-16 is fastest)."
    )
    eval_backend: Literal["auto", "torch", "onnx", "int8"] = Field(
        "auto", description="Re-ranking backend; `auto`: on CPU, ONNX Runtime or PyTorch, whichever this machine "
        "measured faster for the architecture (once, cached in the cache directory); `int8`: opt-in dynamic int8 "
        "quantisation of the linear layers on CPU (faster, scores change: see bench B3)."
    )
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="Override the encoder's hidden dropout if set.")


# ------------------------------------------------------------------------------- tokenizer / config


def build_wordpiece(texts: Iterable[str], vocab_size: int = 2000) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary is built from `texts`, deterministically.

    Vocabulary: special tokens, every character (and its `##` continuation), then the most frequent
    lower-cased words (ties by spelling) up to `vocab_size`. (The `tokenizers` trainer is not used
    because its ties depend on per-process hash seeds, which would break resuming a run.)

    Args:
        texts: the texts the vocabulary is built from.
        vocab_size: the vocabulary size at most.

    Returns:
        A `BertTokenizerFast`.

    Example:
        >>> tok = build_wordpiece(["alpha beta", "beta gamma"], vocab_size=200)  # doctest: +SKIP
        >>> tok.tokenize("beta")  # doctest: +SKIP
        ['beta']
    """
    import re
    from collections import Counter

    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    for t in texts:
        for w in re.findall(r"\w+|[^\w\s]", t.lower()):
            words[w] += 1
            chars.update(w)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ch = sorted(chars, key=lambda c: (-chars[c], c))[: max(0, (vocab_size - len(specials)) // 3)]
    vocab = specials + ch + ["##" + c for c in ch]
    seen = set(vocab)
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    wp = BertWordPieceTokenizer(vocab={t: i for i, t in enumerate(vocab)}, lowercase=True)
    return BertTokenizerFast(tokenizer_object=wp._tokenizer, model_max_length=512)


def tiny_config(rc: RandomModelConfig, tok: Any, max_positions: int = 512) -> Any:
    """A transformers config for a tiny random encoder of architecture `rc.arch` (num_labels=1).

    Args:
        rc: the random-model settings.
        tok: its tokenizer (vocabulary size, special token ids).
        max_positions: position embeddings.

    Returns:
        A `PretrainedConfig`.

    Example:
        >>> tiny_config(RandomModelConfig(), tok)  # doctest: +SKIP
    """
    from transformers import AutoConfig

    vocab_size, pad_id = len(tok), tok.pad_token_id

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=rc.hidden,
        num_hidden_layers=rc.layers,
        num_attention_heads=rc.heads,
        intermediate_size=rc.intermediate,
        num_labels=1,
        pad_token_id=pad_id,
    )
    if rc.arch == "modernbert":
        common.update(max_position_embeddings=max_positions, global_attn_every_n_layers=1, local_attention=16)
        cls, sep = tok.cls_token_id, tok.sep_token_id
        common.update(bos_token_id=cls, cls_token_id=cls, eos_token_id=sep, sep_token_id=sep)
        return AutoConfig.for_model("modernbert", **common)
    if rc.arch == "electra":
        common.update(embedding_size=rc.hidden)
    if rc.arch == "roberta":
        max_positions += 2  # RoBERTa offsets positions by padding_idx + 1
    common.update(max_position_embeddings=max_positions)
    if rc.arch == "deberta-v2":
        common.update(relative_attention=True, position_buckets=32, max_relative_positions=-1)
        common["pos_att_type"] = ["p2c", "c2p"]
    return AutoConfig.for_model(rc.arch, **common)


# ------------------------------------------------------------------------------------------ layers


def encoder_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The encoder's layer list and its attribute name (the ModuleList as long as num_hidden_layers).

    Args:
        model: a sequence-classification model.

    Returns:
        `(layers, dotted attribute path)`.

    Example:
        >>> encoder_layers(model)[1]  # doctest: +SKIP
        'bert.encoder.layer'
    """
    n = getattr(model.config, "num_hidden_layers", None)
    best: tuple[torch.nn.Module, str] | None = None
    for parent in model.modules():
        for attr, child in parent.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n and best is None:
                best = (parent, attr)
    if best is None:
        raise ConfigError(f"model.keep_layers: cannot find the encoder layer list of {type(model).__name__}")
    return best


def keep_first_layers(model: torch.nn.Module, n: int) -> torch.nn.Module:
    """Drop every encoder layer after the first `n` (in place); the config follows.

    Args:
        model: a sequence-classification model.
        n: layers to keep.

    Returns:
        The same model.

    Example:
        >>> keep_first_layers(model, 3).config.num_hidden_layers  # doctest: +SKIP
        3
    """
    parent, attr = encoder_layers(model)
    layers = getattr(parent, attr)
    if n > len(layers):
        raise ConfigError(f"model.keep_layers = {n} but the model has only {len(layers)} layers")
    setattr(parent, attr, torch.nn.ModuleList(list(layers)[:n]))
    model.config.num_hidden_layers = n
    lt = getattr(model.config, "layer_types", None)
    if isinstance(lt, list) and len(lt) > n:
        model.config.layer_types = lt[:n]
    return model


# ------------------------------------------------------------------------------------------ loading


def load_student(cfg: ModelConfig, texts: Iterable[str] | None = None, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) for the config; `texts` trains the tokenizer of a random model.

    Args:
        cfg: the model config.
        texts: texts for a random model's vocabulary (ignored for pretrained models).
        seed: seed of a random model's weights and of the fresh regression head.

    Returns:
        `(AutoModelForSequenceClassification with one label, tokenizer)`.

    Example:
        >>> model, tok = load_student(ModelConfig(random=RandomModelConfig()), ["alpha beta"])  # doctest: +SKIP
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if cfg.random is not None:
        tok = build_wordpiece(texts or ["empty"], cfg.random.vocab_size)
        tok.model_max_length = cfg.max_length
        conf = tiny_config(cfg.random, tok, max_positions=max(cfg.max_length, 64))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_config(conf)
    else:
        path = Path(cfg.name).expanduser()
        ref = str(path) if path.exists() else cfg.name
        try:
            tok = AutoTokenizer.from_pretrained(ref)
            with torch.random.fork_rng():
                torch.manual_seed(seed)  # the fresh head is seeded
                model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=1)
        except OSError as e:
            raise ConfigError(
                f"model.name = {cfg.name!r}: cannot load it ({str(e).splitlines()[0][:120]}) — "
                "give a local folder (run `make models` for ./models/all-MiniLM-L6-v2) or a hub name"
            ) from None
    model.float()  # train in fp32 master weights even from a half-precision checkpoint
    if cfg.keep_layers is not None:
        keep_first_layers(model, cfg.keep_layers)
    if cfg.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
    tok.model_max_length = cfg.max_length
    model.config.sentence_transformers = {"activation_fn": IDENTITY}
    return model, tok


# ------------------------------------------------------------------------------------------ batches


def encode(tok: Any, queries: Sequence[str], passages: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize (query, passage) pairs with dynamic padding (longest in the batch), passage truncated.

    Args:
        tok: the tokenizer.
        queries: query texts.
        passages: passage texts (one per query).
        max_length: tokens per pair.

    Returns:
        The tokenizer's tensors (`input_ids`, `attention_mask`, ...).

    Example:
        >>> encode(tok, ["q"], ["p"], 32)["input_ids"].shape  # doctest: +SKIP
    """
    return tok(
        clip_texts(queries, max_length, "query"),
        clip_texts(passages, max_length),
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )


#: On CPU a batch of at least this many pairs runs as two forwards of length-sorted halves (see `forward_scores`).
SPLIT_MIN_PAIRS = 16


def forward_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per pair (the single logit).

    On CPU, a right-padded batch of `SPLIT_MIN_PAIRS` pairs or more is scored as two forwards: its
    pairs sorted by token count and halved, each half cut to its own longest pair. A CPU forward costs
    in proportion to the padded tokens (and attention to their square), and the halves pad less than
    the whole — never more than any split into two equal halves, e.g. sentence-transformers' MarginMSE
    forward of the B positives and one of the B negatives (B2 in `bench/`: one forward of all 32
    pairs padded 6% more tokens than the peer on random batches). The scores are the same up to float
    rounding; the order is the input's. GPUs, short batches and left-padded batches take one forward.

    Args:
        model: the cross-encoder.
        batch: tokenised pairs (padded to the longest).

    Returns:
        `(P,)` scores.

    Example:
        >>> forward_scores(model, encode(tok, ["q"], ["p"], 32))  # doctest: +SKIP
    """
    mask = batch.get("attention_mask")
    if (mask is None or mask.device.type != "cpu" or mask.dim() != 2 or mask.shape[0] < SPLIT_MIN_PAIRS
            or not bool(mask[:, 0].all())):  # left padding: rows cannot be cut at their length
        return model(**batch).logits.squeeze(-1)
    lens = mask.sum(1)
    order = torch.argsort(lens, descending=True, stable=True)
    parts = []
    for idx in order.tensor_split(2):
        width = int(lens[idx[0]])  # the half's longest pair (sorted: its first)
        parts.append(model(**{k: v[idx, :width] if v.dim() == 2 else v[idx] for k, v in batch.items()}
                           ).logits.squeeze(-1))
    return torch.cat(parts)[torch.argsort(order)]


def export(model: Any, tok: Any, out_dir: str | Path) -> Path:
    """`save_pretrained` model + tokenizer; CrossEncoder(out_dir) gives raw (identity) scores.

    Args:
        model: the student.
        tok: its tokenizer.
        out_dir: the folder (replaced atomically).

    Returns:
        The folder.

    Example:
        >>> export(model, tok, "runs/rerank/model")  # doctest: +SKIP
    """
    import os
    import shutil

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.sentence_transformers = {"activation_fn": IDENTITY}
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
