"""Issue 15, defect 7: FSDD speakers (the MST folds) come from the data found, not from a fixed list.

The full public FSDD has a sixth speaker, `theo`, that this project's copy lacks. A data directory
holding theo's recordings must accept `data.folds=[theo]`; a speaker with no recordings is one
clear line naming it and the speakers found.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from multiteacher.config import load_config
from multiteacher.data import avdigits
from multiteacher.errors import ConfigError, DataError
from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
TAKES = 3  # recordings per (speaker, digit) in the temporary data dir


@pytest.fixture(scope="module")
def theo_dir(tmp_path_factory, data_dir: Path) -> Path:
    """A data dir: MNIST symlinked; a few recordings of four speakers, and copies of lucas's renamed to theo."""
    shared = data_dir
    require_data(shared, "fsdd", "recordings")
    require_data(shared, "mnist")
    root = tmp_path_factory.mktemp("fsdd6")
    (root / "mnist").symlink_to(shared / "mnist", target_is_directory=True)
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    src = shared / "fsdd" / "recordings"
    for d in range(10):
        for t in range(TAKES):
            for sp in ("george", "jackson", "nicolas"):
                (rec / f"{d}_{sp}_{t}.wav").symlink_to(src / f"{d}_{sp}_{t}.wav")
            shutil.copyfile(src / f"{d}_lucas_{t}.wav", rec / f"{d}_theo_{t}.wav")
    return root


def test_fold_speakers_come_from_the_data(theo_dir: Path) -> None:
    assert avdigits.speakers(theo_dir) == ["george", "jackson", "nicolas", "theo"]
    assert avdigits.resolve_folds(theo_dir, None) == ["george", "jackson", "nicolas", "theo"]
    assert avdigits.resolve_folds(theo_dir, ["theo", "george"]) == ["theo", "george"]
    # the summary of `multiteacher data check` names what was found
    assert "4 speakers (george, jackson, nicolas, theo)" in avdigits.check(theo_dir)


def test_missing_fold_speaker_is_one_line_naming_it_and_the_found(theo_dir: Path, data_dir: Path) -> None:
    with pytest.raises(DataError) as e:
        avdigits.resolve_folds(theo_dir, ["theo", "lucas"])
    msg = str(e.value)
    assert "\n" not in msg and "'lucas'" in msg and "theo" not in msg.split("speakers found:")[0]
    assert msg.split("speakers found: ")[1].startswith("george, jackson, nicolas, theo")
    # the project's own copy has no theo: the same line, the other way round
    with pytest.raises(DataError, match=r"'theo'.*speakers found: george, jackson, lucas, nicolas, yweweler"):
        avdigits.resolve_folds(data_dir, ["theo"])


def test_config_accepts_any_speaker_name_and_refuses_impossible_ones() -> None:
    cfg = load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml", ["data.folds=[theo]"])
    assert cfg.data.folds == ["theo"]
    with pytest.raises(ConfigError, match="cannot be an FSDD speaker"):
        load_config(REPO / "recipes" / "mst-avdigits-tiny.yaml", ["data.folds=[theo_1]"])


def test_theo_fold_is_built_from_theos_recordings(theo_dir: Path) -> None:
    fold = avdigits.make_fold(theo_dir, "theo", seed=0, limit_per_digit=TAKES)
    # cyclic order of the speakers found: after theo comes george
    assert fold.info["val_speaker"] == "george"
    assert {i.split("|")[0].split("_")[1] for i in fold.test.ids} == {"theo"}
    assert len(fold.test) == 10 * TAKES and len(fold.val) == 10 * TAKES and len(fold.train) == 2 * 10 * TAKES
    assert sorted(fold.test.label.tolist()) == sorted(d for d in range(10) for _ in range(TAKES))


def test_tiny_run_on_theo(theo_dir: Path, tmp_path: Path) -> None:
    import multiteacher as mt

    res = mt.run(REPO / "recipes" / "mst-avdigits-tiny.yaml", run_dir=tmp_path / "run", data_dir=theo_dir,
                 cache_dir=tmp_path / "cache",
                 overrides=["data.folds=[theo]", f"data.limit_per_digit={TAKES}", "methods=[no_kd]",
                            "mst.epochs_s1=1", "mst.epochs_s3=1"])
    assert [(r["fold"], r["method"]) for r in res.rows] == [("theo", "no_kd")]
    with pytest.raises(DataError, match="'lucas'.*speakers found: george, jackson, nicolas, theo"):
        mt.run(REPO / "recipes" / "mst-avdigits-tiny.yaml", run_dir=tmp_path / "run2", data_dir=theo_dir,
               cache_dir=tmp_path / "cache", overrides=["data.folds=[lucas]", "methods=[no_kd]"])
    assert not (tmp_path / "run2").exists()
