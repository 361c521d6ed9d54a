"""Config guards of issue 15: finite floats and bounded ints on every StrictModel, strict YAML, merging overrides."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from multiteacher.config import MAX_CONFIG_INT, StrictModel, apply_overrides, load_config, load_yaml, quote
from multiteacher.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


class Inner(StrictModel):
    rates: list[float] = Field([1.0], description="floats in a list")
    weights: dict[str, float] = Field({}, description="floats in a mapping")


class Section(StrictModel):
    lr: float = Field(0.1, description="a float")
    maybe: float | None = Field(None, description="an optional float")
    clip: float = Field(math.inf, allow_inf_nan=True, description="opts in to inf")
    steps: int = Field(1, description="an int")
    sizes: list[int] = Field([1], description="ints in a list")
    big: int = Field(0, json_schema_extra={"unbounded": True}, description="opts out of the int bound")
    inner: Inner = Field(Inner(), description="a nested section")


@pytest.mark.parametrize("kw,loc", [
    ({"lr": math.inf}, ("lr",)), ({"lr": -math.inf}, ("lr",)), ({"lr": math.nan}, ("lr",)),
    ({"maybe": math.inf}, ("maybe",)), ({"inner": {"rates": [1.0, math.nan]}}, ("inner", "rates", 1)),
    ({"inner": {"weights": {"a": math.inf}}}, ("inner", "weights", "a")),
])
def test_non_finite_floats_refused_everywhere(kw: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as info:
        Section(**kw)
    assert info.value.errors()[0]["loc"] == loc and "finite" in info.value.errors()[0]["msg"]


def test_a_field_may_opt_in_to_inf_and_out_of_the_int_bound() -> None:
    s = Section(clip=math.inf, big=10**15)
    assert s.clip == math.inf and s.big == 10**15


@pytest.mark.parametrize("kw,loc", [({"steps": MAX_CONFIG_INT + 1}, ("steps",)),
                                    ({"steps": -(MAX_CONFIG_INT + 1)}, ("steps",)),
                                    ({"sizes": [1, 10**12]}, ("sizes",))])
def test_ints_beyond_the_bound_refused(kw: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as info:
        Section(**kw)
    assert info.value.errors()[0]["loc"] == loc and "out of range" in info.value.errors()[0]["msg"]
    assert Section(steps=MAX_CONFIG_INT).steps == 2**31 - 1  # the bound itself is fine


def test_assignment_is_guarded_too() -> None:
    s = Section()
    with pytest.raises(ValidationError):
        s.lr = math.inf


def test_seed_range() -> None:
    path = REPO / "recipes" / "example-tiny.yaml"
    assert load_config(path, ["seed=4294967295"]).seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"field 'seed' = 4294967296"):
        load_config(path, ["seed=4294967296"])


def test_quote_golden() -> None:
    assert quote("abc") == "'abc'"
    assert quote("x" * 100, limit=10) == "'xxxxxxxxx... (102 chars)"


def test_duplicate_keys_name_key_and_lines(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("recipe: example\nfit:\n  lr: 1\n  wd: 2\n  lr: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 5: key 'lr' appears twice in one mapping \(first at line 3"):
        load_yaml(p)
    p.write_text("a: {x: 1}\nb: {x: 1}\n")  # the same key in two mappings is fine
    assert load_yaml(p) == {"a": {"x": 1}, "b": {"x": 1}}


def test_duplicate_key_in_a_set_value_refused() -> None:
    # a value that is itself YAML with a duplicate key is not silently collapsed
    assert apply_overrides({}, ["a={x: 1, x: 2}"]) == {"a": "{x: 1, x: 2}"}


@pytest.mark.parametrize("value", ["[a.yaml]", "{f: a.yaml}", "3", "''", ""])
def test_defaults_must_be_one_path(tmp_path: Path, value: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(f"defaults: {value}\nname: x\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: 'defaults' = .*: must be one file path"):
        load_yaml(p)


def test_non_utf8_config(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"recipe: example\nname: ok\nseed: \xc3\x28\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 3: not UTF-8 text \(byte 0xc3 at offset 31\)"):
        load_yaml(p)


def test_override_merges_into_the_default_section() -> None:
    path = REPO / "recipes" / "ngc-scenes-tiny.yaml"
    base = load_config(path)
    cfg = load_config(path, ["nodes.depth.scale=2.0"])
    assert list(cfg.nodes) == list(base.nodes)  # no node lost
    assert cfg.nodes["depth"].scale == 2.0
    assert cfg.nodes["depth"].model_copy(update={"scale": base.nodes["depth"].scale}) == base.nodes["depth"]
    assert cfg.nodes["normals"] == base.nodes["normals"]
    # a section the file spells out is merged into as before; a new dict key is a new entry
    assert load_config(path, ["edge.lr=0.5"]).edge.max_steps == base.edge.max_steps
    with pytest.raises(ConfigError, match=r"missing required field 'nodes\.extra\.kind'"):
        load_config(path, ["nodes.extra.scale=2.0"])


def test_bounded_messages() -> None:
    path = REPO / "recipes" / "example-tiny.yaml"
    for bad in ("name=" + "é " * 3000, "q" * 3000 + "=1", "teacher_fit.lr=" + "x" * 3000):
        with pytest.raises(ConfigError) as info:
            load_config(path, [bad])
        assert len(str(info.value)) < 300, str(info.value)


def test_override_into_a_list_item() -> None:
    path = REPO / "recipes" / "rerank-trecdl-tiny.yaml"
    base = load_config(path)
    cfg = load_config(path, ["teachers.members.0.weight=2.5", "data.train.0=trec-dl/dl22"])
    assert cfg.teachers.members[0].weight == 2.5 and cfg.teachers.members[0].name == base.teachers.members[0].name
    assert cfg.data.train == ["trec-dl/dl22"]
    for bad in ("teachers.members.1.weight=2", "teachers.members.first.weight=2"):
        with pytest.raises(ConfigError, match=r"'teachers\.members' is a list of 1 item\(s\), so use an index 0\.\.0"):
            load_config(path, [bad])
