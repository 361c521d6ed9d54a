"""Fast scoring of (query, passage) pairs with any HF sequence-classification model (one logit).

Why: re-ranking BM25 top-100 lists is the rerank recipe's evaluation, its validation, and a teacher's
whole job, and on a CPU it dominates wall time. Two things make it fast without changing a score:

- every pair is tokenised once, without padding, then batches are formed from pairs sorted by their
  *token* count, so each batch is padded only to its own longest pair (a char-length proxy or random
  order pads far more);
- on CPU the model is exported once per call to an ONNX graph and run by ONNX Runtime, whose fused
  attention / GELU / LayerNorm kernels beat eager PyTorch on small batches (B3 in `bench/`: ratio
  against `sentence_transformers.CrossEncoder.predict`). Scores agree with PyTorch to ~1e-6 in fp32
  (tested to 1e-4).

`backend="auto"` takes ONNX Runtime on CPU when `onnxruntime` and `onnx` are installed (extra
`multiteacher[onnx]`), the model is fp32 and the export works, else PyTorch; GPUs always use PyTorch.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from multiteacher.errors import ConfigError

Backend = Literal["auto", "torch", "onnx"]


#: Characters kept per token of `max_length` before tokenising: natural text has far fewer characters per
#: token (MS MARCO: about 4-5), so the clipped text still fills `max_length` tokens and scores do not change.
CHARS_PER_TOKEN = 16

_warned: set[str] = set()


def clip_texts(texts: Sequence[str], max_length: int, what: str = "passage") -> list[str]:
    """Cut texts to `max_length * CHARS_PER_TOKEN` characters before tokenising; warn once per process.

    Why: a fast tokenizer reads the whole text before it truncates to `max_length` tokens, so one
    megabyte-long passage costs as much as thousands of normal ones (a 264 kB passage tokenises 220x
    slower than a 1.3 kB one). Cutting the characters first keeps every token the model would have
    seen (natural text has far fewer than `CHARS_PER_TOKEN` characters per token) and bounds the cost.

    Args:
        texts: passages (or queries).
        max_length: the tokenizer limit in tokens.
        what: what to call the texts in the warning.

    Returns:
        The texts, long ones cut (others unchanged, same objects).

    Example:
        >>> [len(t) for t in clip_texts(["a" * 10, "b" * 5000], max_length=16)]
        [10, 256]
    """
    limit = max_length * CHARS_PER_TOKEN
    long = [i for i, t in enumerate(texts) if len(t) > limit]
    if not long:
        return list(texts)
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"{len(long)} {what}(s) longer than {limit} characters (e.g. one of {len(texts[long[0]])}) "
                      f"cut before tokenising; the model sees their first {max_length} tokens as usual "
                      "(warned once)", stacklevel=2)
    return [t[:limit] if len(t) > limit else t for t in texts]


def tokenize_pairs(tok: Any, queries: Sequence[str], passages: Sequence[str], max_length: int) -> dict[str, list]:
    """Token ids (and type ids / masks the model takes) of every pair, unpadded, passage truncated.

    Overlong texts are cut first (`clip_texts`), so their cost stays bounded.
    """
    enc = tok(clip_texts(queries, max_length, "query"), clip_texts(passages, max_length),
              truncation="longest_first", max_length=max_length, padding=False)
    return {k: enc[k] for k in tok.model_input_names if k in enc}


def token_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar token count (longest first, stable)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(enc: dict[str, list], idx: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """int64 arrays for the pairs `idx`, right-padded to their longest member."""
    lens = [len(enc["input_ids"][i]) for i in idx]
    width = max(lens)
    out: dict[str, np.ndarray] = {}
    for key, rows in enc.items():
        fill = pad_id if key == "input_ids" else 0
        arr = np.full((len(idx), width), fill, dtype=np.int64)
        for r, (i, n) in enumerate(zip(idx, lens)):
            arr[r, :n] = rows[i]
        out[key] = arr
    if "attention_mask" not in out:
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, n in enumerate(lens):
            mask[r, :n] = 1
        out["attention_mask"] = mask
    return out


class _LogitOnly(torch.nn.Module):
    """Positional-argument wrapper returning only the logit column (what the ONNX graph outputs)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits[:, 0]


def export_onnx(model: torch.nn.Module, sample: dict[str, np.ndarray], path: str | Path) -> Path:
    """Export `model` (eval mode, CPU, fp32) to ONNX with dynamic batch and sequence axes."""
    path = Path(path)
    names = list(sample)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"score": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LogitOnly(model, names), args, str(path), input_names=names, output_names=["score"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations and `threads` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _use_onnx(backend: Backend, device: torch.device) -> bool:
    """ONNX Runtime for CPU scoring when asked ('onnx') or available ('auto'); GPUs use PyTorch."""
    if backend == "torch" or device.type != "cpu":
        return False
    available = onnx_available()
    if backend == "onnx" and not available:
        raise ConfigError("backend = 'onnx' needs onnxruntime and onnx — `pip install multiteacher[onnx]`")
    return available


@torch.no_grad()
def score_pairs(
    model: Any,
    tok: Any,
    queries: Sequence[str],
    passages: Sequence[str],
    max_length: int,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    backend: Backend = "auto",
    progress: bool = False,
) -> list[float]:
    """One raw logit per (query, passage) pair, in input order; the model is left as it was."""
    from tqdm import tqdm

    if not queries:
        return []
    device = torch.device(device) if device is not None else next(model.parameters()).device
    enc = tokenize_pairs(tok, queries, passages, max_length)
    batches = token_sorted_batches([len(x) for x in enc["input_ids"]], batch_size)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = np.zeros(len(queries), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        run = None
        if _use_onnx(backend, device):
            # trace on the longest and the shortest pair, so the graph sees a padded batch
            sample = np.array([batches[0][0], batches[-1][-1]])
            run = _onnx_runner(model, pad_batch(enc, sample, pad_id), strict=backend == "onnx")
        for idx in tqdm(batches, desc="score", disable=None if progress else True, leave=False):
            arrays = pad_batch(enc, idx, pad_id)
            if run is not None:
                out[idx] = run(arrays)
            else:
                feed = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
                out[idx] = model(**feed).logits[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out.tolist()


def _onnx_runner(model: Any, sample: dict[str, np.ndarray], strict: bool) -> Any:
    """A callable arrays -> scores backed by a fresh export of `model`, or None (PyTorch) if the model
    is not fp32 or the export fails, unless `strict`."""
    if next(model.parameters()).dtype != torch.float32:  # exporting would need a cast of the caller's model
        if strict:
            raise ConfigError("backend = 'onnx' scores fp32 models only; use backend 'torch' (or 'auto')")
        return None
    with tempfile.TemporaryDirectory(prefix="mt-onnx-") as tmp:
        try:
            sess = onnx_session(export_onnx(model, sample, Path(tmp) / "model.onnx"))
        except Exception as e:  # an architecture the exporter cannot trace: fall back to PyTorch
            if strict:
                raise ConfigError(f"ONNX export of {type(model).__name__} failed ({e}); use backend 'torch'") from None
            warnings.warn(f"ONNX export failed ({type(e).__name__}); scoring with PyTorch", stacklevel=3)
            return None
    names = [i.name for i in sess.get_inputs()]
    return lambda arrays: sess.run(None, {n: arrays[n] for n in names})[0]
