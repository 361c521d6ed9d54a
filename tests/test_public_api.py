"""The public API: `import multiteacher as mt` lists, resolves and documents every public name."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest

import multiteacher as mt

SECTIONS = ("Args:", "Returns:", "Example:")


def _public_names() -> list[str]:
    return [n for n in mt.__all__ if n != "__version__"]


def _takes_args(obj: Any) -> bool:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in sig.parameters.values())


def _returns(obj: Any) -> bool:
    if inspect.isclass(obj):
        return False  # constructors: the class is what they return
    try:
        ann = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return True
    return ann not in (None, "None", inspect.Signature.empty) or ann is inspect.Signature.empty


def _is_config_model(obj: Any) -> bool:
    from pydantic import BaseModel

    return inspect.isclass(obj) and issubclass(obj, BaseModel)


def docstring_problems(name: str, obj: Any) -> list[str]:
    """What the docstring of public name `name` lacks (empty list: complete)."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and obj.__init__ is not object.__init__ and obj.__init__.__doc__:
        doc += "\n" + inspect.getdoc(obj.__init__)
    if not doc.strip():
        return ["no docstring"]
    missing = []
    # Pydantic models document their fields with Field(description=...), not an Args section.
    # Protocols are implemented, not constructed: their members are documented instead.
    needs_args = _takes_args(obj) and not _is_config_model(obj) and not getattr(obj, "_is_protocol", False)
    if needs_args and "Args:" not in doc and "Attributes:" not in doc:
        missing.append("Args:")
    if _returns(obj) and "Returns:" not in doc and "Yields:" not in doc:
        missing.append("Returns:")
    if "Example:" not in doc and "Examples:" not in doc:
        missing.append("Example:")
    return [f"missing {m}" for m in missing]


def test_import_is_light_and_lists_the_api() -> None:
    code = "import sys, multiteacher as mt; print(len(mt.__all__), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == len(mt.__all__) and out[1] == "False", "import multiteacher must not import torch"
    for concept in ("Teacher", "ModuleTeacher", "PrecomputedTeacher", "TeacherPool", "TeacherCache", "median",
                    "Router", "multi_teacher_kd", "margin_mse", "fit", "FitConfig", "RunContext", "load_config",
                    "run", "write_run_report"):
        assert concept in mt.__all__
    assert set(mt.__all__) <= set(dir(mt))


def test_every_public_name_resolves() -> None:
    unresolved = {}
    for name in _public_names():
        try:
            getattr(mt, name)
        except AttributeError as e:
            unresolved[name] = str(e)
    assert not unresolved, "public names that do not resolve:\n" + "\n".join(f"  {k}: {v}" for k, v in
                                                                               unresolved.items())


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mt.nope  # type: ignore[attr-defined]


def test_docstring_checker_can_fail() -> None:
    def bare(x: int) -> int:
        """Only a summary."""
        return x

    def full(x: int) -> int:
        """Double.

        Args:
            x: a number.

        Returns:
            twice x.

        Example:
            >>> full(2)
            4
        """
        return 2 * x

    assert docstring_problems("bare", bare) == ["missing Args:", "missing Returns:", "missing Example:"]
    assert docstring_problems("full", full) == []


def test_every_public_name_has_a_complete_docstring() -> None:
    """Lists every offender (name, where it lives, what is missing) so the remaining work is visible."""
    offenders = []
    for name in _public_names():
        try:
            obj = getattr(mt, name)
        except AttributeError:
            offenders.append(f"  {name}: does not resolve")
            continue
        problems = docstring_problems(name, obj)
        if problems:
            where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', name)}"
            offenders.append(f"  {name} ({where}): {', '.join(problems)}")
    print("\n".join(offenders))
    assert not offenders, f"{len(offenders)} public names with incomplete docstrings:\n" + "\n".join(offenders)


def test_examples_in_public_docstrings_run() -> None:
    """Every doctest in the modules behind `mt.__all__` passes (examples marked `# doctest: +SKIP` aside)."""
    import doctest
    import importlib

    import numpy as np
    import torch

    modules = sorted({getattr(mt, n).__module__ for n in _public_names() if hasattr(mt, n)} | {"multiteacher"})
    failed = []
    for name in modules:
        mod = importlib.import_module(name)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in doctest.DocTestFinder().find(mod, name, globs={**vars(mod), "mt": mt, "torch": torch, "np": np}):
            if runner.run(test, out=lambda _s: None).failed:
                failed.append(test.name)
    assert not failed, "doctests that fail (run `python -m doctest -v` on their module):\n  " + "\n  ".join(failed)
