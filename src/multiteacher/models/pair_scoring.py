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

`backend="auto"` chooses by measurement on CPU when `onnxruntime` and `onnx` are installed (extra
`multiteacher[onnx]`) and the model is fp32: the first time a model architecture is scored on a machine,
a short calibration times both backends on a few of the real batches (`choose_backend`) and the faster
one is remembered in a small JSON file in the cache directory (`backend-choice.json`, keyed by CPU
model, thread count, architecture and batch size), so later calls pay nothing. Why measure instead of
a rule: ONNX Runtime was 1.7x faster than eager PyTorch on this project's AMD EPYC and 0.88x on an
Intel Xeon of the same cloud kind (B3 in `bench/`). GPUs always use PyTorch; a failed export falls back
to PyTorch.

The same machinery serves the live teachers (`teachers.text`): `PairRunner` scores token-sorted
batches of (query, passage) pairs (one logit each) or of single texts (mean-pooled, L2-normalised
embeddings, as a sentence-transformers bi-encoder computes them).
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from multiteacher.errors import ConfigError

Backend = Literal["auto", "torch", "onnx", "int8"]


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


def tokenize_pairs(tok: Any, queries: Sequence[str], passages: Sequence[str] | None,
                   max_length: int) -> dict[str, list]:
    """Token ids (and type ids / masks the model takes) of every pair, unpadded, passage truncated.

    Overlong texts are cut first (`clip_texts`), so their cost stays bounded. With `passages=None`
    the `queries` are single texts (a bi-encoder's inputs), each truncated to `max_length`.
    """
    if passages is None:
        enc = tok(clip_texts(queries, max_length, "text"), truncation=True, max_length=max_length, padding=False)
    else:
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


Output = Literal["logit", "embedding"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unmasked token vectors, L2-normalised (sentence-transformers' mean `Pooling` +
    `normalize_embeddings=True`)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class _Head(torch.nn.Module):
    """Positional-argument wrapper returning what the ONNX graph outputs: the logit column of a
    sequence-classification model, or the normalised mean-pooled embedding of an encoder."""

    def __init__(self, model: torch.nn.Module, names: list[str], output: Output = "logit") -> None:
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = dict(zip(self.names, inputs))
        if self.output == "embedding":
            return mean_pool(self.model(**feed).last_hidden_state, feed["attention_mask"])
        return self.model(**feed).logits[:, 0]


def export_onnx(model: torch.nn.Module, sample: dict[str, np.ndarray], path: str | Path,
                output: Output = "logit") -> Path:
    """Export `model` (eval mode, CPU, fp32) to ONNX with dynamic batch and sequence axes.

    Args:
        model: a sequence-classification model (`output="logit"`) or an encoder (`"embedding"`).
        sample: a padded batch to trace with (its keys are the graph's inputs, in order).
        path: the `.onnx` file to write.
        output: what the graph returns per row: the first logit, or the mean-pooled L2-normalised embedding.

    Returns:
        `path`.
    """
    path = Path(path)
    names = list(sample)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"score": {0: "batch"}}
    was_training = model.training
    head = _Head(model, names, output).eval()  # a fresh wrapper is in training mode: export would restore that
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(head, args, str(path), input_names=names, output_names=["score"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        model.train(was_training)  # the caller's model keeps its mode (a teacher stays in eval mode)
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
    """Whether ONNX Runtime may score: asked for ('onnx') or a candidate ('auto') on CPU; GPUs use PyTorch."""
    if backend == "torch" or device.type != "cpu":
        return False
    available = onnx_available()
    if backend == "onnx" and not available:
        raise ConfigError("backend = 'onnx' needs onnxruntime and onnx — `pip install multiteacher[onnx]`")
    return available


# ------------------------------------------------------------------------------ backend by measurement

BACKEND_CACHE_FILE = "backend-choice.json"
#: `auto` takes ONNX Runtime only when it is this much faster (share of PyTorch's time) on the calibration
#: batches: `score_pairs` exports the model in every call (~1.3 s for MiniLM-L6 here, 5-10 % of scoring a
#: few hundred pairs), and on 2026-12-06 ONNX Runtime and PyTorch were within 3 % of each other on this
#: project's AMD EPYC (B3), where a tie would have made `auto` slower than PyTorch alone.
ONNX_MARGIN = 0.1


def backend_cache_path() -> Path:
    """Where measured backend choices are kept: `backend-choice.json` in the cache directory
    (`$MULTITEACHER_CACHE`, else the user cache dir)."""
    from multiteacher.data.registry import resolve_cache_dir

    return resolve_cache_dir() / BACKEND_CACHE_FILE


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`; `platform.processor()` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def architecture_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a model's class and parameter names, shapes and dtypes — not its weights.

    Speed depends on the architecture only, so a student keeps one calibration while it trains.
    """
    h = hashlib.sha256(type(model).__name__.encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}\n".encode())
    return h.hexdigest()[:16]


def calibration_key(model: torch.nn.Module, output: str, batch_size: int) -> str:
    """The key of a backend choice: CPU model, torch threads, architecture, output kind, batch size."""
    return (f"{cpu_model()}|threads={torch.get_num_threads()}|{type(model).__name__}:"
            f"{architecture_fingerprint(model)}|{output}|batch={batch_size}")


def _read_choices(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_choice(key: str, path: Path | None = None) -> str | None:
    """The backend stored for `key`, or None when this machine has not measured it yet."""
    hit = _read_choices(path or backend_cache_path()).get(key)
    return hit.get("backend") if isinstance(hit, dict) else None


def choose_backend(
    key: str,
    candidates: dict[str, Callable[[], Any]],
    *,
    path: Path | None = None,
    rounds: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    prefer: str | None = None,
    margin: float = 0.0,
) -> str:
    """The fastest of `candidates` for `key`: the stored choice, else measured now and stored.

    Each candidate runs once untimed, then `rounds` times in rotating order; the one with the lowest
    median time wins — except that `prefer` (when given) is kept unless another candidate is faster by
    more than `margin` (a share of its time): a near tie is not worth a backend that costs extra
    elsewhere (an ONNX export per call). The choice (with the medians) is added to the JSON file at `path` (default
    `backend_cache_path()`) by an atomic replace, so concurrent processes never see a torn file; a
    cache directory that cannot be written only means measuring again next time.

    Args:
        key: what the choice is valid for (`calibration_key`).
        candidates: backend name -> a callable doing the same work with that backend.
        path: the JSON file of choices.
        rounds: timed runs per candidate.
        clock: the timer (tests pass a fake one).
        prefer: the candidate kept on a near tie.
        margin: how much faster (share of `prefer`'s median time) another candidate must be.

    Returns:
        The chosen backend name.

    Example:
        >>> choose_backend("k", {"torch": lambda: None}, path=Path("/nonexistent/choices.json"))
        'torch'
    """
    path = path or backend_cache_path()
    hit = cached_choice(key, path)
    if hit in candidates:
        return hit  # type: ignore[return-value]
    names = list(candidates)
    for n in names:  # warm-up: first calls allocate (ONNX Runtime arenas, torch caches)
        candidates[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = clock()
            candidates[n]()
            times[n].append(clock() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    best = min(names, key=lambda n: med[n])
    if prefer in med and best != prefer and med[best] > (1.0 - margin) * med[prefer]:
        best = prefer
    if len(names) > 1:
        from multiteacher.io import atomic_write_json

        choices = _read_choices(path)  # re-read: another process may have added its own meanwhile
        choices[key] = {"backend": best, "median_s": {n: round(v, 6) for n, v in med.items()},
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, choices)
        except OSError:
            pass
    return best


# ------------------------------------------------------------------------------ scoring


class PairRunner:
    """Scores texts with a fixed model: token-sorted, dynamically padded batches through ONNX Runtime
    or PyTorch (chosen on the first call; see the module docstring).

    Args:
        model: a sequence-classification model (`output="logit"`: one score per pair) or an encoder
            (`"embedding"`: one normalised mean-pooled vector per text).
        tok: its tokenizer.
        max_length: tokens per input.
        batch_size: inputs per forward pass (small batches pad less; on CPU 8-16 is fastest).
        backend: `"auto"` (measured), `"torch"`, `"onnx"`, or `"int8"` (opt-in: `quantize_int8`, CPU,
            faster but the scores change).
        output: what is computed per input.
        device: where PyTorch runs (default: the model's device); ONNX Runtime runs on the CPU only.

    The backend (and the ONNX export) is fixed at the first call: the model must not change afterwards
    (`score_pairs` makes a new runner per call for a model in training).

    Example:
        >>> run = PairRunner(model, tok, 256, batch_size=8)  # doctest: +SKIP
        >>> run(["what is a flea"], ["Fleas are insects."]).shape  # doctest: +SKIP
        (1,)
    """

    def __init__(self, model: Any, tok: Any, max_length: int, batch_size: int = 16, backend: Backend = "auto",
                 output: Output = "logit", device: torch.device | str | None = None) -> None:
        self.model, self.tok, self.max_length, self.batch_size = model, tok, int(max_length), int(batch_size)
        self.backend, self.output = backend, output
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.chosen: str | None = None  # "onnx" or "torch" once the first call has chosen
        self._run: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None

    def _forward(self, model: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
        if self.output == "embedding":
            return mean_pool(model(**feed).last_hidden_state, feed["attention_mask"]).cpu().numpy()
        return model(**feed).logits[:, 0].float().cpu().numpy()

    def _torch(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self._forward(self.model, arrays)

    def _choose(self, enc: dict[str, list], batches: list[np.ndarray]) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        if self.backend == "int8":
            self.chosen = "int8"
            q = quantize_int8(self.model, self.device)
            return lambda arrays: self._forward(q, arrays)
        if not _use_onnx(self.backend, self.device):
            self.chosen = "torch"
            return self._torch
        key = calibration_key(self.model, self.output, self.batch_size)
        stored = cached_choice(key) if self.backend == "auto" else None
        if stored == "torch":
            self.chosen = "torch"
            return self._torch
        # trace on the longest and the shortest input, so the graph sees a padded batch
        sample = pad_batch(enc, np.array([batches[0][0], batches[-1][-1]]), self.pad_id)
        onnx_run = _onnx_runner(self.model, sample, strict=self.backend == "onnx", output=self.output)
        if onnx_run is None:
            self.chosen = "torch"
            return self._torch
        if self.backend == "auto" and stored != "onnx":
            mid = len(batches) // 2
            cal = [pad_batch(enc, b, self.pad_id) for b in batches[mid : mid + 2]]
            best = choose_backend(key, {"onnx": lambda: [onnx_run(a) for a in cal],
                                        "torch": lambda: [self._torch(a) for a in cal]},
                                  prefer="torch", margin=ONNX_MARGIN)
            if best == "torch":
                self.chosen = "torch"
                return self._torch
        self.chosen = "onnx"
        return onnx_run

    @torch.no_grad()
    def __call__(self, queries: Sequence[str], passages: Sequence[str] | None = None,
                 progress: bool = False) -> np.ndarray:
        """Scores `(N,)` of N (query, passage) pairs, or embeddings `(N, H)` of N texts (`passages=None`),
        float32, in input order (`progress`: a progress bar over the batches)."""
        from multiteacher.progress import progress as progress_bar

        if not queries:
            return np.zeros((0,), dtype=np.float32)
        enc = tokenize_pairs(self.tok, queries, passages, self.max_length)
        batches = token_sorted_batches([len(x) for x in enc["input_ids"]], self.batch_size)
        if self._run is None:
            self._run = self._choose(enc, batches)
        out: np.ndarray | None = None
        for idx in progress_bar(batches, desc="score", enabled=progress, leave=False):
            got = self._run(pad_batch(enc, idx, self.pad_id))
            if out is None:
                out = np.zeros((len(queries), *got.shape[1:]), dtype=np.float32)
            out[idx] = got
        assert out is not None
        return out


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
    """One raw logit per (query, passage) pair, in input order; the model is left as it was.

    A fresh `PairRunner` per call (the model may have changed since the last one: its ONNX export is
    redone, inside the call); `auto` reuses this machine's stored backend choice for the architecture.
    """
    if not queries:
        return []
    was_training = model.training
    model.eval()
    try:
        return PairRunner(model, tok, max_length, batch_size, backend, "logit", device)(queries, passages,
                                                                                 progress).tolist()
    finally:
        model.train(was_training)


def quantize_int8(model: torch.nn.Module, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A copy of `model` with every `nn.Linear` dynamically quantised to int8 (weights int8, activations
    quantised per batch), for CPU scoring — opt-in (`backend="int8"`): scores change (B3 in `bench/` states
    by how much), so it is never chosen by `auto`.

    Args:
        model: an fp32 model (left unchanged).
        device: must be the CPU (PyTorch's dynamic quantisation has CPU kernels only).

    Returns:
        The quantised copy, in eval mode.
    """
    import copy

    if torch.device(device).type != "cpu":
        raise ConfigError("backend = 'int8' runs on the CPU only; use backend 'torch' on a GPU")
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear},
                                                  dtype=torch.qint8)


def _onnx_runner(model: Any, sample: dict[str, np.ndarray], strict: bool, output: Output = "logit") -> Any:
    """A callable arrays -> outputs backed by a fresh export of `model`, or None (PyTorch) if the model
    is not fp32 or the export fails, unless `strict`."""
    if next(model.parameters()).dtype != torch.float32:  # exporting would need a cast of the caller's model
        if strict:
            raise ConfigError("backend = 'onnx' scores fp32 models only; use backend 'torch' (or 'auto')")
        return None
    with tempfile.TemporaryDirectory(prefix="mt-onnx-") as tmp:
        try:
            sess = onnx_session(export_onnx(model, sample, Path(tmp) / "model.onnx", output))
        except Exception as e:  # an architecture the exporter cannot trace: fall back to PyTorch
            if strict:
                raise ConfigError(f"ONNX export of {type(model).__name__} failed ({e}); use backend 'torch'") from None
            warnings.warn(f"ONNX export failed ({type(e).__name__}); scoring with PyTorch", stacklevel=3)
            return None
    names = [i.name for i in sess.get_inputs()]
    return lambda arrays: sess.run(None, {n: arrays[n] for n in names})[0]
