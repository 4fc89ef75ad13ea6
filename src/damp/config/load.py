"""Reading a config: YAML presets (with ``extends:``), ``--set key=value`` overrides, typed and checked."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from damp import methods
from damp.checkpoint import write_text
from damp.config.checks import validate
from damp.config.schema import CHOICES, METHOD_HYPERPARAMETERS, ConfigError, RunConfig, suggest
from damp.models.user import is_factory_path


def _factory_path(path: str, value: Any) -> bool:
    """model.name may also be package.module:factory (checked by :func:`validate`)."""
    return path == "model.name" and is_factory_path(value)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (str, int, float, bool, X | None, tuple[...])."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(hint)
        inner = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise ConfigError(f"{key}: expected 2 values, got {value!r}")
        return tuple(_coerce(key, v, inner) for v in value)
    if hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "5e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # inf / nan would only surface as a diverged or NaN run
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {path!r}{suggest(key, list(known), prefix)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(hint, value, f"{path}.")
        else:
            kwargs[key] = _coerce(path, value, hint)
            if path in CHOICES and kwargs[key] not in CHOICES[path] and not _factory_path(path, kwargs[key]):
                raise ConfigError(f"{path}: {kwargs[key]!r} is not one of {', '.join(CHOICES[path])}"
                                  f"{suggest(str(kwargs[key]), list(CHOICES[path]))}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.epochs=3"`` -> (["trainer", "epochs"], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
    return key.strip().split("."), value


def merge_override(values: dict, path: list[str], value: Any) -> None:
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a section")
    node[path[-1]] = value


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML preset as a dict of sections, with ``extends: OTHER.yaml`` (relative to the file) merged in.

    A preset that extends another holds only what it changes: its sections are merged key by key
    over the other's (a nested mapping is merged too; any other value replaces).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = values.pop("extends", None)
    if parent is None:
        return values
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in _seen or parent_path == path.resolve():
        raise ConfigError(f"{path}: extends {parent} in a cycle")
    return _deep_merge(read_preset(parent_path, (*_seen, path.resolve())), values)


def _deep_merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and \
            isinstance(merged.get(key), dict) and value else value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML preset (optional; see :func:`read_preset`), apply ``key=value`` overrides, validate."""
    values: dict = read_preset(path) if path is not None else {}
    for text in overrides:
        merge_override(values, *parse_override(text))
    cfg = _build(RunConfig, values)
    validate(cfg)
    return cfg


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a validated config from :func:`to_dict` output (e.g. a checkpoint)."""
    cfg = _build(RunConfig, values)
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), for YAML/JSON and checkpoints."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def flat_keys(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {"section.key": value}; an empty mapping stays one value.

    >>> flat_keys({"method": {"name": "damp", "std": 0.2}, "seed": 0})
    {'method.name': 'damp', 'method.std': 0.2, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def method_arguments(cfg: RunConfig) -> tuple[str, dict]:
    """(method name, keyword arguments for :func:`damp.methods.build`) of a run config."""
    m = cfg.method
    name = methods.canonical_name(m.name)
    if name == "sgd":
        return name, {}
    accepted = methods.hyperparameter_names(name)
    kwargs = {k: getattr(m, k) for k in METHOD_HYPERPARAMETERS if getattr(m, k) is not None and k in accepted}
    kwargs.update(num_perturbations=m.num_perturbations, executor=m.executor, batchnorm=m.batchnorm)
    if "seed" in accepted:
        kwargs["seed"] = cfg.seed
    return name, kwargs

