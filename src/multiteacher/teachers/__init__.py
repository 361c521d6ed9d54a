"""Teachers: protocol and adapters (`base`), pools (`pool`) and the on-disk output cache (`cache`).

A pool stacks its teachers' outputs as ``(B, K, ...)`` — batch first, teachers second — the layout
of every consensus op, `Router` and `multi_teacher_kd`.

Names are imported lazily so that `multiteacher.teachers.cache` works without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Teacher": "base",
    "ModuleTeacher": "base",
    "PrecomputedTeacher": "base",
    "fingerprint_obj": "base",
    "fingerprint_array": "base",
    "fingerprint_state_dict": "base",
    "fingerprint_module": "base",
    "fingerprint_files": "base",
    "fingerprint_callable": "base",
    "file_digest": "base",
    "data_fingerprint": "base",
    "freeze_teacher": "base",
    "MaskedTeacher": "masked",
    "BiEncoderTeacher": "text",
    "CrossEncoderTeacher": "text",
    "RunTeacher": "text",
    "cached_run": "text",
    "pair_id": "text",
    "TeacherPool": "pool",
    "StackedCache": "pool",
    "TeacherCache": "cache",
    "CachedArray": "cache",
    "cached_outputs": "cache",
    "teacher_outputs": "cache",
    "ids_fingerprint": "cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
