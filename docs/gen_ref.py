"""Generate the reference pages at `mkdocs build` time (run by the mkdocs-gen-files plugin).

Writes, into the build only (never committed): `reference/config.md`, `reference/results.md`,
`reference/cli.md` and one page per example under `examples/` with its source and what it printed.
Examples are run unless their output in `build/example-outputs/` is fresher than the example and the
library (the example tests leave it there); `MULTITEACHER_DOCS_EXAMPLES=skip` leaves them unrun.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refgen

ROOT = refgen.ROOT
RUN_EXAMPLES = os.environ.get("MULTITEACHER_DOCS_EXAMPLES", "run") != "skip"


def write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)


write("reference/config.md", refgen.config_reference())
write("reference/results.md", refgen.results_reference())
write("reference/cli.md", refgen.cli_reference())
write("api/index.md", refgen.api_index())

data_dir = Path(os.environ.get("MULTITEACHER_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = {  # script -> (page, title, arguments, what it needs)
    "digits_own_teachers.py": ("digits-own-teachers.md", "Your own teachers on scikit-learn digits", [], None),
    "own_rankers_to_cross_encoder.py": ("own-rankers.md", "Your own rankers' run files into a cross-encoder",
                                        [str(data_dir)], data_dir / "trec-dl" / "dl19"),
}
for script_name, (page, title, args, needs) in EXAMPLES.items():
    script = ROOT / "examples" / script_name
    source = script.read_text()
    intro = ast.get_docstring(ast.parse(source)) or ""
    if needs is not None and not needs.exists():
        output = f"(not run in this build: it needs {needs}; set MULTITEACHER_DATA)"
    else:
        output = refgen.example_output(script, args, run=RUN_EXAMPLES) or "(not run in this build)"
    write(f"examples/{page}", "\n".join([
        f"# {title}", "", intro, "",
        f"Run it: `python examples/{script_name}`" + (" (reads `$MULTITEACHER_DATA`)" if args else ""), "",
        "## What it printed", "",
        "Output of the run made while these docs were built:", "", "```text", output.rstrip(), "```", "",
        "## The script", "", f"```python\n{source.rstrip()}\n```", ""]))

own = ROOT / "examples" / "own_recipe"
if own.is_dir():
    readme = own / "README.md"
    parts = [readme.read_text().rstrip(), ""] if readme.exists() else ["# Your own recipe", ""]
    for f in sorted(own.iterdir()):
        if f.suffix in (".py", ".yaml") and f.name != "__init__.py":
            lang = "python" if f.suffix == ".py" else "yaml"
            parts += [f"## `examples/own_recipe/{f.name}`", "", f"```{lang}\n{f.read_text().rstrip()}\n```", ""]
    write("examples/own-recipe.md", "\n".join(parts))
