"""Run configs as data: a config dataclass <-> a JSON-ready dict, and type checks.

Both run configs (`emlib.pretrain.PretrainConfig`, `emlib.finetune.FinetuneConfig`)
are dataclasses that hold values only: `validate()` checks the values, and the
run checks the files they name when it starts (so a finished run folder loads
on a machine without its data). They are saved as config.json in every run
folder and inside every checkpoint.

Renamed fields. A field that was renamed keeps being read under its old name,
by this one rule (`upgrade`), wherever a config dict comes from a file:
config.json, `--config FILE.json`, a checkpoint, a model card.

    generator -> model   PretrainConfig's registry network, the name FinetuneConfig
                         uses (config.json, checkpoints and model cards written before
                         the rename, e.g. the real-data sweep's results/)
"""
import dataclasses
import json
import math
import numbers
import types
import typing
from pathlib import Path

import numpy as np

RENAMED_FIELDS = {"generator": "model"}  # old name -> name; see the module docstring


def upgrade(data: dict) -> dict:
    """A copy of a config dict (or model card) read from a file, with renamed fields
    under their current names (RENAMED_FIELDS). A dict holding both names raises
    ValueError; a nested "config" dict (a model card's) is upgraded too."""
    data = dict(data)
    for old, new in RENAMED_FIELDS.items():
        if old in data:
            if new in data and data[new] != data[old]:
                raise ValueError(f"config holds both {old!r} ({data[old]!r}) and its new name {new!r} ({data[new]!r})")
            data[new] = data.pop(old)
    if isinstance(data.get("config"), dict):
        data["config"] = upgrade(data["config"])
    return data


def config_to_dict(config) -> dict:
    """A config dataclass as a JSON-ready dict (tuples become lists, paths strings)."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[field.name] = value
    return out


def config_from_dict(cls, data: dict):
    """Build config dataclass `cls` from a dict (renamed fields upgraded, lists as the
    tuples of tuple fields); unknown keys raise ValueError naming them."""
    data = upgrade(data)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def read_config_file(path) -> dict:
    """The fields in a `--config` JSON file (renamed fields under their current names,
    `upgrade`); ValueError naming the file (and the line) when it is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of fields, got a {type(data).__name__}")
    return upgrade(data)


def fields_from_args(cls, args) -> dict:
    """The fields of config dataclass `cls` that parsed command-line arguments name: the
    `--config FILE.json` file's, then the flags (which win); an unknown field in the file
    raises ValueError naming the file."""
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {}
    if getattr(args, "config", None):
        fields = read_config_file(args.config)
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"--config {args.config}: unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return {**fields, **{k: v for k, v in vars(args).items() if k in names}}


_KIND_NAMES = {type(None): "None", bool: "true or false", int: "an integer", float: "a number", str: "a string",
               tuple: "a list", list: "a list", dict: "a dict"}


def check_config_types(config) -> None:
    """Raise ValueError naming the first field of config dataclass `config` whose value
    has the wrong type (e.g. epochs='abc' from `papermill -p epochs abc`) or is a
    NaN / inf number. Types come from the annotations (`int | None`, `float`, ...);
    a tuple field whose default holds numbers must hold numbers."""
    for field in dataclasses.fields(config):
        kinds = _annotation_kinds(field.type)
        if kinds is None:
            continue  # an annotation this check does not know
        value = getattr(config, field.name)
        if not any(_is_kind(value, kind) for kind in kinds):
            wanted = " or ".join(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds)
            raise ValueError(f"{field.name} must be {wanted}, got {value!r}")
        if isinstance(value, (tuple, list)):
            default = field.default if field.default is not dataclasses.MISSING else None
            if isinstance(default, tuple) and default and all(_is_kind(d, float) for d in default):
                if not all(_is_kind(v, float) for v in value):
                    raise ValueError(f"{field.name} must be a list of numbers, got {value!r}")
        for number in (value if isinstance(value, (tuple, list)) else (value,)):
            if _is_kind(number, float) and not math.isfinite(number):
                raise ValueError(f"{field.name} must be finite, got {value!r}")


def _annotation_kinds(annotation):
    """The plain types an annotation allows (`int | None` -> [int, NoneType]); None if unknown."""
    if isinstance(annotation, str):
        return None
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = []
    for arg in typing.get_args(annotation) if union else (annotation,):
        kind = typing.get_origin(arg) or arg
        if kind not in _KIND_NAMES:
            return None
        kinds.append(kind)
    return kinds


def _is_kind(value, kind) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if kind is tuple:
        return isinstance(value, (tuple, list))
    return isinstance(value, kind)
