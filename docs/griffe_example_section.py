"""Griffe extension: read Google-style `Example:` like `Examples:` (our docstrings' one style says `Example:`).

Griffe's Google parser knows only the plural title; without this the singular one renders as an
admonition whose doctest lines are parsed as markdown. Loaded by mkdocstrings (see mkdocs.yml).
"""

from __future__ import annotations

import griffe

try:  # griffe keeps the title table private; if it moves, `Example:` renders as a titled note instead
    from griffe._internal.docstrings import google

    google._section_kind.setdefault("example", griffe.DocstringSectionKind.examples)
except (ImportError, AttributeError):  # pragma: no cover
    pass


class ExampleSection(griffe.Extension):
    """No hooks needed: importing this module registers the section title."""
