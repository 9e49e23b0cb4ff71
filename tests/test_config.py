"""The Config base: strict keys and types, YAML round trip, validation messages."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mmar.config import Config, ConfigError, check


@dataclass
class Inner(Config):
    width: int = 8
    kind: Literal["a", "b"] = "a"

    def validate(self) -> None:
        super().validate()
        check(self.width > 0, "Inner.width", f"must be > 0, e.g. width: 8, got {self.width}")


@dataclass
class Outer(Config):
    lr: float = 1.0e-3
    sizes: tuple[int, int] = (1, 2)
    name: str | None = None
    inner: Inner = field(default_factory=Inner)


def test_round_trip_dict_and_yaml(tmp_path):
    cfg = Outer.from_dict({"lr": 2, "sizes": [3, 4], "inner": {"width": 16, "kind": "b"}})
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float)
    assert cfg.sizes == (3, 4) and cfg.inner == Inner(width=16, kind="b")
    cfg.to_yaml(tmp_path / "c.yaml")
    assert Outer.from_yaml(tmp_path / "c.yaml") == cfg


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-4\n")  # YAML 1.1 reads this as a string
    assert Outer.from_yaml(tmp_path / "c.yaml").lr == pytest.approx(1e-4)


def test_unknown_key_raises_naming_it():
    with pytest.raises(ConfigError, match=r"Outer.inner: unknown field\(s\) \['depth'\]"):
        Outer.from_dict({"inner": {"depth": 3}})


@pytest.mark.parametrize(
    "data, match",
    [
        ({"lr": "fast"}, r"Outer.lr: expected a number, got 'fast'"),
        ({"lr": True}, r"Outer.lr: expected a number"),
        ({"sizes": [1]}, r"Outer.sizes: expected 2 items"),
        ({"inner": {"width": 2.5}}, r"Outer.inner.width: expected an integer"),
        ({"inner": {"kind": "c"}}, r"Outer.inner.kind: expected one of \['a', 'b'\]"),
        ({"inner": 3}, r"Outer.inner: expected a mapping"),
    ],
)
def test_ill_typed_field_raises(data, match):
    with pytest.raises(ConfigError, match=match):
        Outer.from_dict(data)


def test_validate_runs_on_load_and_replace():
    with pytest.raises(ConfigError, match=r"Inner.width: must be > 0, e.g. width: 8"):
        Outer.from_dict({"inner": {"width": 0}})
    with pytest.raises(ConfigError, match=r"Inner.width"):
        Inner().replace(width=-1)


def test_missing_yaml_file_raises(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        Outer.from_yaml(tmp_path / "nope.yaml")
