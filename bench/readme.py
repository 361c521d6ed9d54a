"""Regenerate the README's benchmark table (the `<!-- results:bench -->` block) from `bench/results.json`.

    .venv/bin/python -m bench.readme [README.md]

The table is `bench.common.format_table` of every row in the file, each with the CPU (model name,
vendor family/model, vector width), core count and date it was measured on, so rows kept from older
runs say where they came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS, ROOT, Row, format_table


def load_rows(path: Path = RESULTS) -> tuple[list[Row], dict[str, str], dict[str, object]]:
    """(rows, skipped, machine of the last write) from a results file."""
    data = json.loads(path.read_text())
    rows = []
    for r in data["rows"]:
        r = dict(r)
        for k in ("spread", "cpu_spread"):
            r[k] = tuple(r[k]) if r.get(k) else None
        rows.append(Row(**r))
    return rows, data.get("skipped", {}), data["machine"]


def main(readme: Path = ROOT.parent / "README.md") -> None:
    """Replace the README's benchmark block with the table of `bench/results.json`."""
    from multiteacher.report import update_readme

    rows, skipped, machine = load_rows()
    update_readme(readme, "bench", format_table(rows, skipped, machine))
    print(f"{readme}: benchmark table of {len(rows)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "README.md")
