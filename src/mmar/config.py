"""Typed, validated configuration dataclasses.

Every component of mmar has its own ``@dataclass`` config that subclasses :class:`Config`.
A config is built from a dict (or a YAML file), refused with a message naming the field when a
key is unknown or a value has the wrong type, validated (``validate``) before any work starts,
and saved as JSON inside every checkpoint (with the version of mmar that wrote it: a file from a
newer mmar that this one cannot read says so).

Files are read by :func:`read_yaml` / :func:`read_json`, whose errors name the file and the line:
a syntax error, text that is not UTF-8 and a missing file are ``ConfigError`` like a bad field.

Written by hand rather than with pydantic/omegaconf: it is ~150 lines, keeps the dependency
list short, and gives errors in the form we want ("which field, what was expected, an example").
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mmar import __version__

C = TypeVar("C", bound="Config")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# the key of a saved config's JSON that records the mmar version which wrote it
VERSION_KEY = "mmar_version"


class ConfigError(ValueError):
    """A config key is unknown, a value has the wrong type, or a value is out of range; or a
    config file is missing or not valid YAML / JSON."""


def _read_text(path: Path) -> str:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); is it the right file? Save it "
            "as UTF-8"
        ) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, in one line: "line 3, column 5: expected ',' or '}', but got ':'"."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        m = e.problem_mark
        text = f"line {m.line + 1}, column {m.column + 1}: {e.problem}"
        if e.context and e.context_mark is not None:
            c = e.context_mark
            text += f" ({e.context} at line {c.line + 1}, column {c.column + 1})"
        return text
    if isinstance(e, yaml.reader.ReaderError):
        return f"character {e.position}: {e.reason}, e.g. a binary file"
    return " ".join(str(e).split())


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of ``path`` (``safe_load``; an empty file is ``{}``); ConfigError naming
    the file, the line and the column of a syntax error."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{path}: not valid YAML at {_yaml_problem(e)}; check the indentation and that every "
            "bracket and quote is closed, e.g. backbone: {hidden_size: 32}"
        ) from None
    return {} if data is None else data


def read_json(path: str | Path) -> Any:
    """The parsed JSON of ``path``; ConfigError naming the file, the line and the column of a
    syntax error (a truncated or hand-edited file)."""
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); a truncated "
            "or hand-edited file? Copy it again or re-save it"
        ) from None


def _newer_than_this(version: Any) -> bool:
    """Whether ``version`` (as a saved config records it) is a newer mmar than this one."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(version)) > Version(__version__)
    except InvalidVersion:
        return False


class DataError(ValueError):
    """The data a config points at cannot be used as it is: a malformed line of a data file, a
    training set smaller than the batch, no readable item, or more unreadable items than
    ``DataConfig.max_unreadable_share`` allows. The message names the file (and line) and what
    to do; ``mmar`` prints it as one line and exits with status 2."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless.

    Accepted conversions: int -> float, list -> tuple, dict -> nested Config.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:  # try the next member of the union
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return tp.from_dict(value, _where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, which reads "1e-3" (no dot) as a string.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan / .inf: no field means them, all would train
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


@dataclasses.dataclass
class Config:
    """Base class: strict ``from_dict``/``to_dict``/YAML round trip plus ``validate``."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], _where: str | None = None) -> C:
        where = _where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {unknown}; known fields are {sorted(fields)}"
            )
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        obj = cls(**kwargs)
        obj.validate()
        return obj

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        data = read_yaml(path)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        """Read what :meth:`to_json` wrote. A file that a newer mmar wrote and this one cannot
        read (a field added since, say) is refused saying so."""
        data = read_json(path)
        written = data.pop(VERSION_KEY, None) if isinstance(data, dict) else None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            if _newer_than_this(written):
                raise ConfigError(
                    f"{path} was written by mmar {written}, this is mmar {__version__}: upgrade "
                    f"mmar to {written} or newer to read it ({e})"
                ) from None
            raise ConfigError(f"{path}: {e}") from None

    def to_json(self, path: str | Path) -> None:
        """Write the config as JSON, with the version of mmar that wrote it (``VERSION_KEY``)."""
        Path(path).write_text(self.json_text())

    def json_text(self) -> str:
        """What :meth:`to_json` writes (a model card quotes it)."""
        return json.dumps({VERSION_KEY: __version__, **self.to_dict()}, indent=2) + "\n"

    def to_dict(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Config):
                return v.to_dict()
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        return {f.name: conv(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self, path: str | Path) -> None:
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed (configs are never mutated in place)."""
        obj = dataclasses.replace(self, **changes)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Check value ranges; subclasses extend this and call ``super().validate()``.

        Nested configs are validated too, and every float is finite (also in a config built by
        its constructor or ``replace``, which skip ``from_dict``'s type checks). Raise
        :class:`ConfigError` naming the field.
        """
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v.validate()
            elif isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(
                    f"{type(self).__name__}.{f.name}: expected a finite number, got {v!r}"
                )


def check(cond: bool, where: str, msg: str) -> None:
    """Raise ``ConfigError(f"{where}: {msg}")`` unless ``cond``; for use in ``validate``."""
    if not cond:
        raise ConfigError(f"{where}: {msg}")


SEED_LIMIT = 2**32  # seeds are in [0, 2**32): numpy's limit; derived seeds stay within int64


def check_seed(cfg: Config, name: str = "seed") -> None:
    """``check(0 <= seed < 2**32)`` for the field ``name``: a negative seed fails in numpy and a
    huge one overflows torch's int64 seeds, both at the first step instead of here."""
    v = getattr(cfg, name)
    check(
        0 <= v < SEED_LIMIT,
        f"{type(cfg).__name__}.{name}",
        f"must be in [0, 2**32), got {v}; e.g. {name}: 0",
    )


def check_at_least_one(cfg: Config, examples: dict[str, int]) -> None:
    """``check(field >= 1)`` for each integer field named in ``examples`` (field -> a good value
    for the message), e.g. ``check_at_least_one(self, {"steps": 1000, "batch_size": 32})``."""
    for name, example in examples.items():
        v = getattr(cfg, name)
        check(
            v >= 1, f"{type(cfg).__name__}.{name}", f"must be >= 1, got {v}; e.g. {name}: {example}"
        )
