"""Teachers: the `Teacher` protocol, fingerprints, and adapters for modules and precomputed outputs.

A teacher has a `name`, a `fingerprint` (a hex digest of its weights + config + code version, so
that a changed teacher never reuses a stale cache) and `predict(batch)`, which runs in eval mode
under `torch.inference_mode()`. Adapters are plain objects, not `nn.Module`s: assigning one to a
student attribute does not register it as a submodule, so teachers never end up in student
checkpoints or optimisers.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

import multiteacher
from multiteacher.errors import DataError, UserError
from multiteacher.io import sha256_file


@runtime_checkable
class Teacher(Protocol):
    """What recipes, pools and caches need from a teacher: a name, a fingerprint and `predict`.

    Any object with these three members is a teacher (structural typing; `isinstance` works at
    runtime). The engine's adapters are :class:`ModuleTeacher` (a frozen network),
    :class:`PrecomputedTeacher` (outputs computed elsewhere) and
    `multiteacher.teachers.masked.MaskedTeacher` (a network specialised by mask nets).

    Attributes:
        name: unique within a `TeacherPool`; names the teacher in reports and caches.

    Returns:
        (a protocol) ``fingerprint`` is a hex digest that changes whenever the outputs could;
        ``predict(batch)`` returns the outputs for one batch, batch axis first.

    Example:
        >>> class Zeros:
        ...     name, fingerprint = "zeros", "0" * 64
        ...     def predict(self, batch):
        ...         return torch.zeros(len(batch), 3)
        >>> isinstance(Zeros(), Teacher)
        True
    """

    name: str

    @property
    def fingerprint(self) -> str:
        """Hex digest that changes whenever the teacher's outputs could change."""
        ...

    def predict(self, batch: Any) -> Any:
        """Outputs for one batch (eval mode, no autograd)."""
        ...


# ----------------------------------------------------------------------------- fingerprints


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray | torch.Tensor):
        return {"__array__": fingerprint_array(o)}
    if isinstance(o, set | frozenset):
        return sorted(o, key=repr)
    return repr(o)


def fingerprint_obj(obj: Any) -> str:
    """SHA-256 of a JSON-able object (keys sorted), e.g. a config dict.

    Paths, numpy scalars, sets and arrays (by content) are converted; anything else by ``repr``.

    Args:
        obj: the object.

    Returns:
        A 64-character hex digest.

    Example:
        >>> fingerprint_obj({"a": 1, "b": 2}) == fingerprint_obj({"b": 2, "a": 1})
        True
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _update_tensor(h: Any, t: torch.Tensor | np.ndarray) -> None:
    if isinstance(t, np.ndarray):
        a = np.ascontiguousarray(t)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8).data)
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def fingerprint_array(a: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes.

    Args:
        a: a tensor (any device) or numpy array.

    Returns:
        A 64-character hex digest.

    Example:
        >>> fingerprint_array(torch.zeros(2)) == fingerprint_array(torch.zeros(3))
        False
    """
    h = hashlib.sha256()
    _update_tensor(h, a)
    return h.hexdigest()


def fingerprint_state_dict(state: Mapping[str, Any]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (order-independent).

    Args:
        state: ``{name: tensor | array | JSON-able}``, e.g. ``module.state_dict()``.

    Returns:
        A 64-character hex digest.

    Example:
        >>> fingerprint_state_dict(nn.Linear(2, 2).state_dict()) != fingerprint_state_dict(nn.Linear(2, 2).state_dict())
        True
    """
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + b"\0")
        v = state[k]
        if isinstance(v, torch.Tensor | np.ndarray):
            _update_tensor(h, v)
        else:
            h.update(fingerprint_obj(v).encode())
    return h.hexdigest()


def fingerprint_module(module: nn.Module, config: Any = None, code_version: str | None = None) -> str:
    """Fingerprint of a module: class, weights and buffers, `config`, and the code version.

    Args:
        module: the network.
        config: anything else that changes its outputs (preprocessing, output selection, ...).
        code_version: default: the package version.

    Returns:
        A 64-character hex digest.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> fingerprint_module(net, {"T": 1}) == fingerprint_module(net, {"T": 2})
        False
    """
    parts = {
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "state": fingerprint_state_dict(module.state_dict()),
        "config": fingerprint_obj(config),
        "code": code_version if code_version is not None else multiteacher.__version__,
    }
    return fingerprint_obj(parts)


def fingerprint_files(paths: Iterable[str | os.PathLike[str]], base: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 over files' names (relative to `base`, else the file name) and contents.

    Args:
        paths: the files (order does not matter).
        base: directory the names are taken relative to (None: the file names).

    Returns:
        A 64-character hex digest; DataError naming a path that is not a file.

    Example:
        >>> fingerprint_files(["data/run.trec"])  # doctest: +SKIP
        '3f1c...'
    """
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        if not p.is_file():
            raise DataError(f"cannot fingerprint {p}: not a file — check the path")
        rel = p.relative_to(base).as_posix() if base is not None else p.name
        h.update(f"{rel}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


# (path, inode, size, mtime_ns) -> SHA-256 of files this process has already hashed in full
_file_digests: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's full content, hashed once per process and memoised by path, inode, size, mtime.

    Why: a teacher's weights must be fingerprinted by their whole content (a tensor rewritten at
    the same file size changes the outputs), and re-reading a 440 MB checkpoint for every cache
    lookup would cost about a second each; a changed file gets a new mtime (or inode), so the memo
    never serves a stale digest for a file rewritten in the ordinary way (a file modified in the
    last 2 s is hashed again at every call, as git treats "racily clean" files). Measured: the 92 MB
    all-MiniLM-L6-v2 folder hashes in 0.07 s (page cache warm, 2-core CPU); a memo hit is one `stat`.

    Args:
        path: the file.

    Returns:
        64 hex digits.

    Example:
        >>> file_digest(__file__) == file_digest(__file__)
        True
    """
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _file_digests.get(key)
    if digest is None:
        digest = sha256_file(path)
        # a file modified less than 2 s ago could be modified again within the file system's timestamp
        # granularity, keeping its mtime: such "racy" digests are not memoised (as git does)
        if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            _file_digests[key] = digest
    return digest


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


class _Unfingerprintable(Exception):
    """A value inside a callable that the cache cannot fingerprint (what, and where)."""


def _fp_value(v: Any, seen: set[int], where: str) -> Any:
    """A JSON-able, content-based stand-in for a value a callable closes over (or defaults to)."""
    if isinstance(v, _PLAIN) or v is Ellipsis or v is NotImplemented or isinstance(v, range | slice):
        return [type(v).__name__, repr(v)]
    if isinstance(v, enum.Enum):
        return ["enum", f"{type(v).__module__}.{type(v).__qualname__}", _fp_value(v.value, seen, where)]
    if isinstance(v, torch.Tensor | np.ndarray):
        return ["array", fingerprint_array(v)]
    if isinstance(v, np.generic):
        return [type(v).__name__, repr(v.item())]
    if isinstance(v, torch.dtype | torch.device | np.dtype | Path):
        return [type(v).__name__, str(v)]
    if isinstance(v, list | tuple | set | frozenset):
        items = [_fp_value(x, seen, where) for x in v]
        return [type(v).__name__, sorted(items, key=repr) if isinstance(v, set | frozenset) else items]
    if isinstance(v, Mapping):
        return ["mapping", sorted([[repr(k), _fp_value(x, seen, where)] for k, x in v.items()], key=repr)]
    if isinstance(v, nn.Module):
        return ["module", f"{type(v).__module__}.{type(v).__qualname__}", fingerprint_state_dict(v.state_dict()),
                _fp_value(type(v).forward, seen, where)]
    if isinstance(v, type):
        return ["class", f"{v.__module__}.{v.__qualname__}"]
    if isinstance(v, type(os)):  # a module: by name (its functions are fingerprinted where they are called)
        return ["pymodule", v.__name__]
    fp = getattr(v, "fingerprint", None)
    if isinstance(fp, str):  # a Teacher (or anything else that fingerprints itself)
        return ["fingerprinted", fp]
    if hasattr(v, "model_dump") and hasattr(type(v), "model_fields"):  # a pydantic model, e.g. a config
        return ["pydantic", f"{type(v).__module__}.{type(v).__qualname__}", _fp_value(v.model_dump(), seen, where)]
    if dataclasses.is_dataclass(v):
        fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
        return ["dataclass", f"{type(v).__module__}.{type(v).__qualname__}", _fp_value(fields, seen, where)]
    if callable(v):
        return ["callable", _fp_callable(v, seen, where)]
    raise _Unfingerprintable(f"it refers to a {type(v).__name__}")


def _fp_code(code: Any, seen: set[int], where: str) -> list[Any]:
    """Bytecode, constants (nested code recursively), names and variable names of a code object."""
    consts = [_fp_code(c, seen, where) if hasattr(c, "co_code") else _fp_value(c, seen, where)
              for c in code.co_consts]
    return [code.co_code.hex(), consts, list(code.co_names), list(code.co_varnames), code.co_argcount,
            code.co_kwonlyargcount, code.co_flags]


def _fp_callable(fn: Any, seen: set[int], where: str) -> str:
    import functools
    import types

    if id(fn) in seen:  # recursion (a function that refers to itself)
        return "recursive"
    seen = seen | {id(fn)}
    if isinstance(fn, functools.partial):
        parts: Any = ["partial", _fp_callable(fn.func, seen, where), _fp_value(fn.args, seen, where),
                      _fp_value(fn.keywords, seen, where)]
    elif isinstance(fn, types.MethodType):
        parts = ["method", _fp_callable(fn.__func__, seen, where), _fp_value(fn.__self__, seen, where)]
    elif isinstance(fn, types.FunctionType):
        code = fn.__code__
        cells = [c.cell_contents if _cell_filled(c) else None for c in (fn.__closure__ or ())]
        # globals that hold plain data (a module-level constant) join by value; functions, classes and
        # modules by name (their own code is not followed: see `fingerprint_callable`)
        glob = {n: _fp_value(fn.__globals__[n], seen, where) for n in code.co_names
                if isinstance(fn.__globals__.get(n, None), _PLAIN) and n in fn.__globals__}
        parts = ["function", fn.__module__, fn.__qualname__, _fp_code(code, seen, where),
                 dict(zip(code.co_freevars, [_fp_value(c, seen, where) for c in cells])),
                 _fp_value(fn.__defaults__ or (), seen, where), _fp_value(fn.__kwdefaults__ or {}, seen, where), glob]
    elif isinstance(fn, nn.Module):
        parts = _fp_value(fn, seen, where)
    elif isinstance(fn, types.BuiltinFunctionType | types.BuiltinMethodType) or not callable(fn):
        raise _Unfingerprintable(f"it is the built-in {getattr(fn, '__qualname__', fn)!r}, whose code cannot be read")
    elif isinstance(inspect.getattr_static(type(fn), "__call__", None), types.FunctionType):
        # an instance with a Python __call__
        state = getattr(fn, "__dict__", None)
        if state is None:
            raise _Unfingerprintable(f"it is a {type(fn).__name__} without readable state")
        parts = ["instance", f"{type(fn).__module__}.{type(fn).__qualname__}",
                 _fp_callable(type(fn).__call__, seen, where), _fp_value(state, seen, where)]
    else:
        raise _Unfingerprintable(f"it is a {type(fn).__name__}, whose code cannot be read")
    return fingerprint_obj(parts)


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError for an empty cell
    except ValueError:
        return False
    return True


def fingerprint_callable(fn: Callable[..., Any], what: str = "callable", version: str | None = None) -> str:
    """Fingerprint of a callable by its code: bytecode, constants, names, closure values and defaults.

    Why: a teacher's `forward` or output selector changes its outputs as much as its weights do;
    a qualified name (``<lambda>``) cannot tell two lambdas apart, so the cache would serve one
    lambda's outputs to the other. Nested code (a lambda inside a function) is hashed recursively;
    closure values and defaults by content (numbers, strings, arrays, tensors, modules' weights,
    teachers' fingerprints, configs — pydantic models, dataclasses — and other functions,
    recursively); module-level constants the code reads by value. Not followed: the code of other
    functions it calls by global name (e.g. a helper in your module, or a library) — pass
    `version` and change it when such code changes.

    Args:
        fn: a function, lambda, `functools.partial`, bound method, `nn.Module` or callable object.
        what: how error messages name it (e.g. ``"ModuleTeacher 't': forward"``).
        version: an explicit version string: used instead of the code when the callable cannot be
            fingerprinted (a built-in / C function, a closure over an open file, a lock, ...).

    Returns:
        A 64-character hex digest; a one-line UserError for a callable that cannot be fingerprinted
        when no `version` is given.

    Example:
        >>> fingerprint_callable(lambda x: x * 2) != fingerprint_callable(lambda x: x * 3)
        True
    """
    try:
        parts: Any = ["code", _fp_callable(fn, set(), what)]
    except (_Unfingerprintable, RecursionError) as e:
        if version is None:
            reason = str(e) if isinstance(e, _Unfingerprintable) else "it is nested too deeply"
            raise UserError(f"{what}: the teacher cache cannot fingerprint it ({reason}) — pass an explicit "
                            "version='...' (change it whenever the callable changes) or use a Python function"
                            ) from None
        parts = None
    return fingerprint_obj([parts, version])


def data_fingerprint(
    ids: Sequence[Any] | None = None,
    files: Iterable[str | os.PathLike[str]] = (),
    config: Any = None,
) -> str:
    """Fingerprint of a dataset: its sample ids, the files it reads, and the config that derives it.

    Use the config for generated or transformed data (scene seeds, resolution, SNR, PCA share),
    the files for data read from disk, and the ids for the selection/order of samples. With the
    teacher's fingerprint it keys the teacher-output cache.

    Args:
        ids: the sample ids (int or str), in order.
        files: the files the data is read from.
        config: the settings that derive the data.

    Returns:
        A 64-character hex digest.

    Example:
        >>> data_fingerprint(ids=[0, 1, 2], config={"snr": 10}) == data_fingerprint(ids=[0, 1], config={"snr": 10})
        False
    """
    parts = {
        "ids": None if ids is None else fingerprint_obj([_plain_id(i) for i in ids]),
        "files": fingerprint_files(files) if files else None,
        "config": fingerprint_obj(config),
    }
    return fingerprint_obj(parts)


def _plain_id(i: Any) -> int | str:
    if isinstance(i, np.generic | torch.Tensor):
        i = i.item()
    if isinstance(i, bool) or not isinstance(i, int | str):
        raise UserError(f"sample id {i!r} has type {type(i).__name__}; sample ids must be int or str")
    return i


# ----------------------------------------------------------------------------- adapters


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Move tensors in a (nested) batch to `device`.

    Args:
        batch: a tensor, or mappings / lists / tuples of them (other leaves are kept).
        device: target device (None: unchanged).

    Returns:
        The batch with the same structure, tensors on `device`.

    Example:
        >>> to_device({"x": torch.ones(1), "ids": ["a"]}, "cpu")["ids"]
        ['a']
    """
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def freeze_teacher(module: nn.Module) -> nn.Module:
    """Freeze a module for use as a teacher: eval mode and no parameter gradients, in place.

    Eval mode fixes dropout and batch-norm statistics, so the teacher's outputs do not depend on
    the batch or the RNG; frozen parameters get no gradients and no optimiser state. Keep the
    frozen module out of the student (e.g. wrap it in :class:`ModuleTeacher`, which is not an
    ``nn.Module``) so that it does not land in student checkpoints.

    Args:
        module: the trained network.

    Returns:
        The same module, frozen (for chaining).

    Example:
        >>> net = freeze_teacher(nn.Linear(3, 2))
        >>> net.training, any(p.requires_grad for p in net.parameters())
        (False, False)
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ModuleTeacher:
    """A frozen `nn.Module` as a teacher.

    The module is frozen (:func:`freeze_teacher`: eval mode, no gradients) and `predict` runs under
    `torch.inference_mode()`. This object is not an ``nn.Module``, so a teacher stored on a student
    stays out of its checkpoints and optimiser. The fingerprint covers class, weights, buffers
    (with their dtypes), `config`, the code version, and `forward` / `output` by their code
    (`fingerprint_callable`): two teachers that differ only in how they are called never share
    cached outputs. It is recomputed when any weight is modified in place.

    Args:
        module: the trained network.
        name: the teacher's name (default: the module's class name).
        config: anything that changes the outputs and is not in the weights (joins the fingerprint).
        forward: ``forward(module, batch)`` adapts the batch to the module (default: ``module(batch)``).
        output: picks the output from the module's return value: a key, an index or a callable.
        device: moves the module there, and each batch before the forward pass.
        code_version: joins the fingerprint (default: the package version).
        version: an explicit version of `forward` / `output`, joining the fingerprint; required when
            one of them cannot be fingerprinted by its code (a built-in function, a closure over an
            open file, ...): change it whenever they change.

    Returns:
        A `Teacher`; ``teacher.predict(batch)`` (or ``teacher(batch)``) gives the outputs; a
        one-line UserError for a `forward` / `output` the cache cannot fingerprint without `version`.

    Example:
        >>> teacher = ModuleTeacher(nn.Linear(4, 3), "linear")
        >>> teacher.predict(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        module: nn.Module,
        name: str | None = None,
        *,
        config: Any = None,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        output: str | int | Callable[[Any], Any] | None = None,
        device: torch.device | str | None = None,
        code_version: str | None = None,
        version: str | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise UserError(f"ModuleTeacher needs an nn.Module, got {type(module).__name__}")
        self.module = freeze_teacher(module)
        if device is not None:
            self.module.to(device)
        self.name = name or type(module).__name__
        self.config = config
        self.device = device
        self.code_version = code_version
        self.version = version
        self._forward = forward
        self._output = output
        self._fp: tuple[tuple[int, ...] | None, str] | None = None
        self._calls_fp()  # refuse a callable the cache cannot fingerprint now, not at the first cache use

    def _calls_fp(self) -> dict[str, Any]:
        """Fingerprint parts of `forward`, `output` and `version` (only those set: plain teachers keep
        the fingerprint they always had)."""
        parts: dict[str, Any] = {}
        what = f"ModuleTeacher {self.name!r}"
        if self._forward is not None:
            parts["forward"] = fingerprint_callable(self._forward, f"{what}: forward", self.version)
        if self._output is not None:
            parts["output"] = (fingerprint_callable(self._output, f"{what}: output", self.version)
                               if callable(self._output) else _fp_value(self._output, set(), f"{what}: output"))
        if self.version is not None:
            parts["version"] = self.version
        return parts

    def _versions(self) -> tuple[int, ...] | None:
        """In-place version counters of all weights (None if untracked: then never memoised)."""
        try:
            return tuple(t._version for t in self.module.state_dict(keep_vars=True).values())
        except RuntimeError:  # inference tensors have no version counter
            return None

    @property
    def fingerprint(self) -> str:
        """Hex digest of class, weights, buffers, name, config, code version, and `forward` / `output` by code.

        The weights' part is memoised per in-place version of the weights; the callables' part is
        recomputed each time (a closure's values may have changed).
        """
        versions = self._versions()
        calls = self._calls_fp()
        if self._fp is None or versions is None or self._fp[0] != versions:
            config = {"name": self.name, "config": self.config}
            self._fp = (versions, fingerprint_module(self.module, config, self.code_version))
        if not calls:
            return self._fp[1]
        return fingerprint_obj({"module": self._fp[1], **calls})

    def _pick(self, out: Any) -> Any:
        sel = self._output
        if sel is None:
            return out
        if callable(sel):
            return sel(out)
        return out[sel]

    def predict(self, batch: Any) -> Any:
        """Teacher outputs for `batch` (eval mode, inference mode, on the teacher's device).

        Args:
            batch: what the module (or `forward`) takes.

        Returns:
            The selected output (inference tensors: no autograd history).
        """
        if self.module.training:
            self.module.eval()
        with torch.inference_mode():
            batch = to_device(batch, self.device)
            out = self._forward(self.module, batch) if self._forward else self.module(batch)
            return self._pick(out)

    __call__ = predict

    def features(self, batch: Any, paths: Sequence[str]) -> dict[str, torch.Tensor]:
        """Outputs of the submodules named by `paths` (e.g. `"encoder.layer.3"`), via forward hooks.

        Args:
            batch: what `predict` takes.
            paths: dotted module paths, as in ``module.named_modules()``.

        Returns:
            ``{path: output}`` of one inference pass; UserError naming a missing path.
        """
        modules = dict(self.module.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise UserError(
                f"teacher {self.name!r} has no submodule {missing[0]!r}; "
                f"choose from {', '.join(list(modules)[1:12])}, ..."
            )
        feats: dict[str, torch.Tensor] = {}
        hooks = [modules[p].register_forward_hook(lambda _m, _i, o, p=p: feats.__setitem__(p, o)) for p in paths]
        try:
            self.predict(batch)
        finally:
            for h in hooks:
                h.remove()
        return feats

    def __repr__(self) -> str:
        return f"ModuleTeacher(name={self.name!r}, module={type(self.module).__name__})"


class PrecomputedTeacher:
    """Outputs computed elsewhere (a file or an array), looked up by sample id.

    For teachers that are too expensive to run during training, or not runnable here (an API's
    scores, another framework's logits). `predict(batch)` takes a sequence of sample ids, or a
    mapping with an ``"ids"`` or ``"id"`` entry, and returns the matching rows as a tensor.

    Args:
        name: the teacher's name.
        outputs: ``(N, ...)`` array or tensor, one row per sample.
        ids: the sample id of each row (None: sample id ``i`` is row ``i``).
        fingerprint: a known fingerprint (default: computed from name, outputs and ids).
        source: where the outputs came from, for error messages.

    Returns:
        A `Teacher`; DataError on a length mismatch or duplicate ids.

    Example:
        >>> t = PrecomputedTeacher("llm", np.array([[0.1], [0.7], [0.4]]), ids=["q1", "q2", "q3"])
        >>> t.predict({"ids": ["q3", "q1"]}).tolist()
        [[0.4], [0.1]]
    """

    def __init__(
        self,
        name: str,
        outputs: np.ndarray | torch.Tensor,
        ids: Sequence[Any] | None = None,
        *,
        fingerprint: str | None = None,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.outputs = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else outputs
        self.source = source or "array"
        self.ids = None if ids is None else [_plain_id(i) for i in ids]
        if self.ids is not None:
            if len(self.ids) != len(self.outputs):
                raise DataError(
                    f"teacher {name!r} ({self.source}): {len(self.outputs)} output rows but "
                    f"{len(self.ids)} ids — give one id per row"
                )
            self._index = {i: r for r, i in enumerate(self.ids)}
            if len(self._index) != len(self.ids):
                raise DataError(f"teacher {name!r} ({self.source}): duplicate sample ids")
        self._fp = fingerprint

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        ids: Sequence[Any] | None = None,
        name: str | None = None,
        key: str = "outputs",
    ) -> PrecomputedTeacher:
        """Load `.npy` (memory-mapped), `.pt`/`.pth` (a tensor or a dict with `key`) or `.safetensors`.

        Args:
            path: the file.
            ids: the sample id of each row (None: row numbers).
            name: the teacher's name (default: the file stem).
            key: the entry of a dict-like file that holds the outputs.

        Returns:
            A PrecomputedTeacher fingerprinted by the file's SHA-256; DataError if missing or unsupported.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"precomputed teacher outputs not found: {path} — compute them first or fix the path")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr: Any = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            arr = obj[key] if isinstance(obj, Mapping) else obj
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            arr = load_file(str(path))[key]
        else:
            raise DataError(f"unsupported teacher output file {path}: use .npy, .pt or .safetensors")
        fp = fingerprint_obj(
            {
                "name": name or path.stem,
                "file": sha256_file(path),
                "key": key,
                "ids": None if ids is None else [_plain_id(i) for i in ids],
            }
        )
        return cls(name or path.stem, arr, ids, fingerprint=fp, source=str(path))

    @property
    def fingerprint(self) -> str:
        """Hex digest of name, outputs and ids (or the one given / derived from the file)."""
        if self._fp is None:
            self._fp = fingerprint_obj(
                {"name": self.name, "outputs": fingerprint_array(np.asarray(self.outputs)), "ids": self.ids}
            )
        return self._fp

    def rows(self, ids: Sequence[Any]) -> np.ndarray:
        """Row numbers of `ids`.

        Args:
            ids: sample ids.

        Returns:
            ``(len(ids),)`` int64 row numbers; DataError naming the first unknown id.
        """
        if self.ids is None:
            rows = np.asarray([_plain_id(i) for i in ids], dtype=np.int64)
            bad = rows[(rows < 0) | (rows >= len(self.outputs))]
            if len(bad):
                raise DataError(f"teacher {self.name!r} ({self.source}) has no output for sample id {bad[0]}")
            return rows
        try:
            return np.asarray([self._index[_plain_id(i)] for i in ids], dtype=np.int64)
        except KeyError as e:
            raise DataError(
                f"teacher {self.name!r} ({self.source}) has no output for sample id {e.args[0]!r}"
            ) from None

    def predict(self, batch: Any) -> torch.Tensor:
        """The stored rows of the batch's sample ids.

        Args:
            batch: a sequence / tensor of sample ids, or a mapping with ``"ids"`` (or ``"id"``).

        Returns:
            A CPU tensor ``(len(ids), ...)``.
        """
        if isinstance(batch, Mapping):
            key = "ids" if "ids" in batch else "id"
            if key not in batch:
                raise UserError(f"PrecomputedTeacher {self.name!r} needs the batch to carry sample ids ('ids')")
            batch = batch[key]
        if isinstance(batch, torch.Tensor | np.ndarray):
            batch = batch.tolist()
        return torch.from_numpy(np.ascontiguousarray(self.outputs[self.rows(batch)]))

    __call__ = predict

    def __repr__(self) -> str:
        return f"PrecomputedTeacher(name={self.name!r}, source={self.source!r}, rows={len(self.outputs)})"
