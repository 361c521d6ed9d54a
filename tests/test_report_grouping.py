"""`multiteacher report` never averages what should not be averaged (issue 15, defect 6).

Runs with different configs are split (and the differing fields named) unless they differ only in
what repeats vary on purpose (seed, name, folds, where they ran, a recipe's declared pooled fields);
a mix of recipes, an unknown --where / --columns field and a path with no run are one-line errors.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from multiteacher.cli import main
from multiteacher.errors import DataError
from multiteacher.report import config_split_fields, parse_where, report_markdown


def write(tmp: Path, name: str, config: dict[str, Any], rows: list[dict[str, Any]], recipe: str = "t",
          seed: int = 0) -> Path:
    d = tmp / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "recipe": recipe, "name": name, "seed": seed, "config_hash": "h", "commit": "c",
        "config": {"name": name, "seed": seed, **config}, "metrics": {}, "rows": rows}))
    return d


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_runs_with_different_lr_are_not_averaged(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"r{i}", {"fit": {"lr": lr}}, [{"m": "kd", "acc": acc}], seed=s)
             for i, (lr, s, acc) in enumerate([(0.1, 0, 0.5), (0.1, 1, 0.7), (0.2, 0, 0.9)])]
    md = report_markdown(paths)
    lines = md.splitlines()
    assert lines[0] == "| fit.lr | m | acc |"
    # hand-computed: lr 0.1 -> mean(0.5, 0.7) = 0.6, sample std sqrt(0.02) = 0.141; lr 0.2 -> 0.9 alone
    assert "| 0.1 | kd | 0.600 ± 0.141 (n=2) |" in lines and "| 0.2 | kd | 0.900 (n=1) |" in lines
    assert "configs differ in: fit.lr" in md


def test_seed_name_folds_and_device_are_pooled(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"r{i}", {"data": {"folds": [f]}, "fabric": {"accelerator": acc}},
                   [{"m": "kd", "fold": f, "acc": v}], seed=i)
             for i, (f, acc, v) in enumerate([("a", "cpu", 0.2), ("b", "cuda", 0.4), ("c", "cpu", 0.6)])]
    md = report_markdown(paths)
    assert md.splitlines()[0] == "| m | acc |" and "| kd | 0.400 ± 0.200 |" in md
    assert "configs differ" not in md


def test_rows_the_labels_already_separate_are_not_split(tmp_path: Path) -> None:
    # the runs differ in 'directions', but their rows carry the direction: no row meets another run's row
    a = write(tmp_path, "a", {"directions": ["audio"]}, [{"direction": "image->audio", "acc": 0.3}])
    b = write(tmp_path, "b", {"directions": ["image"]}, [{"direction": "audio->image", "acc": 0.8}])
    md = report_markdown([a, b])
    assert md.splitlines()[0] == "| direction | acc |" and "configs differ" not in md


def test_a_field_only_newer_runs_record_is_not_compared() -> None:
    runs = [{"config": {"lr": 0.1}, "rows": [{"m": "kd", "acc": 1.0}]},
            {"config": {"lr": 0.1, "new_knob": 5}, "rows": [{"m": "kd", "acc": 0.0}]}]
    assert config_split_fields(runs) == []
    runs[0]["config"]["lr"] = 0.3
    assert config_split_fields(runs) == ["lr"]


def test_recipe_declared_pooled_fields() -> None:
    runs = [{"config": {"objective": o, "lr": 0.1}, "rows": [{"system": "bm25", "ndcg": 0.5}]}
            for o in ("bce", "infonce")]
    assert config_split_fields(runs) == ["objective"]
    assert config_split_fields(runs, pooled=("objective",)) == []


def test_list_valued_config_field_is_a_label_not_a_number(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"train": ["x", "y"], "k": 3}, [{"m": "kd", "acc": 0.5}])
    b = write(tmp_path, "b", {"train": ["x"], "k": 4}, [{"m": "kd", "acc": 0.7}])
    md = report_markdown([a, b])
    assert md.splitlines()[0] == "| k | train | m | acc |"
    assert '| 3 | ["x", "y"] | kd | 0.500 |' in md and '| 4 | ["x"] | kd | 0.700 |' in md


def test_mixed_recipes_refused(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {}, [{"m": "kd", "acc": 0.5}], recipe="mst")
    b = write(tmp_path, "b", {}, [{"m": "kd", "acc": 0.7}], recipe="ngc")
    with pytest.raises(DataError, match=r"different recipes \(mst: 1 run\(s\), ngc: 1 run\(s\)\)"):
        report_markdown([a, b])
    code, out, err = cli("report", str(a), str(b))
    assert code == 2 and out == "" and err.count("\n") == 1 and "different recipes" in err


@pytest.mark.parametrize("args,pattern", [
    (["--where", "kindd=direct"], r"--where 'kindd': no row of these runs has that field — did you mean 'kind'\?"),
    (["--where", "kind=drect"], r"--where kind='drect': no row has that value — did you mean 'direct'\?"),
    (["--columns", "rmsee"], r"--columns 'rmsee': no row of these runs has that field — did you mean 'rmse'\?"),
    (["--columns", "kind"], r"--columns 'kind': no row"),  # not a numeric column
])
def test_unknown_where_or_columns_field_is_exit_2(tmp_path: Path, args: list[str], pattern: str) -> None:
    import re

    a = write(tmp_path, "a", {}, [{"kind": "direct", "rmse": 1.0}, {"kind": "two_hop", "rmse": 2.0}])
    code, out, err = cli("report", str(a), *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and len(err) <= 300
    assert re.search(pattern, err), err
    with pytest.raises(DataError):
        report_markdown([a], where=parse_where([a for a in args if "=" in a]) or None,
                        columns=[c for c in args if "=" not in c and not c.startswith("--")] or None)


def test_no_run_here(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path, why in ((tmp_path / "empty", "no results.json, run.json or config.yaml in it"),
                      (tmp_path / "missing", "no such file or directory")):
        code, _out, err = cli("report", str(path))
        assert code == 2 and err == f"error: no run here: {path} ({why}) — pass run directories or results.json files\n"
    # a run directory that has not finished still says so
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("recipe: example\n")
    code, _, err = cli("report", str(tmp_path / "unfinished"))
    assert code == 2 and "has not finished" in err


README_COMMANDS = [
    ["results/mst/seed0/*", "results/mst/seed1/*", "--columns", "acc", "f1"],
    ["results/rerank/sweep-gpu/fold-a/*-s*", "results/rerank/sweep-gpu/fold-b/*-s*", "--where", "split=test"],
]


@pytest.mark.parametrize("argv", README_COMMANDS, ids=["mst-folds-seeds", "rerank-objective-sweep"])
def test_committed_results_still_pool_folds_seeds_and_objectives(argv: list[str]) -> None:
    repo = Path(__file__).resolve().parents[1]
    paths = [p for pat in argv if not pat.startswith("--") and "*" in pat for p in sorted(repo.glob(pat))]
    if not paths:
        pytest.skip("committed results not present")
    md = report_markdown(paths)
    assert "configs differ" not in md
