"""Config loading: YAML + defaults chains + --set overrides, one-line errors, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiteacher.config import apply_overrides, config_hash, config_yaml, deep_merge, load_config, load_yaml
from multiteacher.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "example-tiny.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_chain_and_overrides() -> None:
    cfg = load_config(TINY, ["teacher_fit.lr=0.01", "seed=3", "kd.temperature=2"])
    assert cfg.name == "example-tiny"
    assert cfg.teacher_fit.lr == 0.01 and cfg.teacher_fit.max_steps == 200  # tiny overrides base
    assert cfg.teacher.hidden == 256  # inherited from example.yaml
    assert cfg.seed == 3 and cfg.kd.temperature == 2.0


def test_unknown_key_names_key_file_and_closest(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.yaml", f"defaults: {TINY}\nteacher_fit: {{lrr: 0.1}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "teacher_fit.lrr" in msg and str(p) in msg and "'lr'" in msg
    assert "\n" not in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'teacher'"):
        load_config(TINY, ["teachr.hidden=3"])


def test_wrong_type_and_negative(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student_fit.max_steps"):
        load_config(TINY, ["student_fit.max_steps=-5"])
    with pytest.raises(ConfigError, match="data.n_train"):
        load_config(TINY, ["data.n_train=many"])


@pytest.mark.parametrize("text,match", [
    ("recipe: nope\nname: x\n", "valid recipes"),
    ("name: x\n", "missing field 'recipe'"),
    ("recipe: example\n", "missing required field 'name'"),
    ("- a\n- b\n", "must be a mapping"),
    ("recipe: [unclosed\n", "not valid YAML"),
])
def test_bad_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, "c.yaml", text))


def test_missing_file_and_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path, "a.yaml", "defaults: b.yaml\n")
    write(tmp_path, "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_yaml(tmp_path / "a.yaml")


def test_override_syntax() -> None:
    out = apply_overrides({}, ["a.b.c=[1, 2]", "x=true", "s=hello"])
    assert out == {"a": {"b": {"c": [1, 2]}}, "x": True, "s": "hello"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["novalue"])


def test_deep_merge_does_not_mutate() -> None:
    base = {"a": {"b": 1, "c": 2}}
    out = deep_merge(base, {"a": {"b": 5}})
    assert out == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_hash_is_stable_and_roundtrips(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    p = write(tmp_path, "resolved.yaml", config_yaml(cfg))
    again = load_config(p)
    assert config_hash(again) == config_hash(cfg)
    other = load_config(TINY, ["seed=9"])
    assert config_hash(other) != config_hash(cfg)
    assert config_hash(other, exclude_seed=True) == config_hash(cfg, exclude_seed=True)
