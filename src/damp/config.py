"""Run configuration: frozen dataclasses per concern, YAML presets and ``--set key=value`` overrides.

Every error names the offending key (with a close-match suggestion for typos) and is a
``ConfigError`` (a ``ValueError``), which the CLI prints as one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from damp import corruptions, methods
from damp.corruptions import SEVERITIES
from damp.checkpoint import write_text
from damp.data.build import AUGMENTS, DATASETS
from damp.methods.subbatch import BATCHNORM_MODES, EXECUTORS, check_modes
from damp.models import MODELS
from damp.models.user import import_factory, is_factory_path
from damp.optim import OPTIMIZERS, SCHEDULES
from damp.runtime import AUTOCAST_DTYPES


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits, fashion_mnist, cifar10, cifar100, tiny_imagenet, imagenet
    root: str | None = None  # dataset folder (imagenet: holds train/ and val/)
    batch_size: int = 128  # global batch across all processes
    eval_batch_size: int = 500
    augment: str = "auto"  # auto, none, crop, crop_flip, inception, inception_randaugment
    crop_padding: int = 4
    mixup: float = 0.0  # fixed MixUp coefficient (the ViT "advanced" recipe uses 0.8); 0 = off
    train_corruption: str | None = None  # paper Algorithm 2: corrupt half of every batch
    train_corruption_severity: int = 0  # 1-5, or 0 for a random severity per image batch
    num_workers: int = 4  # folder datasets only
    image_size: int = 224  # folder datasets only
    max_train_images: int = 0  # use only the first N training images (0 = all); for smoke runs
    max_test_images: int = 0  # evaluate on the first N test images (0 = all); on-the-fly corruptions only
    skip_bad_images: bool = False  # folder datasets: drop undecodable images (counted) instead of failing
    frost_dir: str | None = None
    augmix: bool = False  # AugMix every training batch (Hendrycks et al. 2020; damp.data.augmix), any method
    augmix_width: int = 3  # chains per image
    augmix_depth: int = -1  # operations per chain (-1: 1-3 at random)
    augmix_severity: float = 3.0  # operation strength (1-10)
    augmix_jsd: bool = False  # (clean, aug1, aug2) per image with the Jensen-Shannon consistency loss (3x the batch)
    holdout: float = 0.0  # fraction of the training set held out for tuning (paper: 0.1); 0 = none
    holdout_seed: int = 0  # the split's seed, fixed across runs so every run tunes on the same images


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"  # a built-in model, or package.module:factory (any torch model)
    dropout: float = 0.0  # built-in models (a factory takes its own dropout through kwargs)
    width: int = 0  # small_cnn and resnet8 first-stage width (0 = default)
    kwargs: dict = field(default_factory=dict)  # module:factory models: factory(num_classes, in_channels, **kwargs)
    normalize: bool = False  # module:factory models: feed (x - mean) / std of the dataset instead of [0, 1] pixels


@dataclass(frozen=True)
class MethodConfig:
    name: str = "sgd"  # sgd, dropout (= sgd; set model.dropout), damp, daap, sam, asam, rwp, mrwp
    std: float | None = None
    rho: float | None = None
    eta: float | None = None
    mix: float | None = None  # mrwp: the weight of the perturbed loss (0.5 by default)
    num_perturbations: int = 1  # M, counted over all processes as in the paper
    # damp/daap/sam/asam: auto (fused on CUDA; on CPU split with BatchNorm, loop without), fused, split, loop
    executor: str = "auto"
    batchnorm: str = "whole"  # whole (the official synced BatchNorm) or ghost (per sub-batch; runs the loop)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd (Nesterov momentum, coupled L2) or adamw (decoupled)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_kernels_only: bool = False  # ImageNet/ViT recipes decay conv/linear kernels only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_norm: float = 0.0  # global-norm clipping (ViT: 1.0); 0 = off
    schedule: str = "step"  # step (paper ResNet), warmup_cosine, constant
    lr_ratio: float = 0.01  # step: final lr / lr
    decay_start: float = 0.5  # step: fraction of training where the linear decay starts
    decay_end: float = 0.9  # step: ... and ends
    warmup_epochs: float = 0.0  # warmup_cosine
    warmup_steps: int = 0  # warmup_cosine: overrides warmup_epochs when > 0
    warmup_start_factor: float = 0.0
    final_factor: float = 0.0  # warmup_cosine: final lr / lr


@dataclass(frozen=True)
class EvalConfig:
    corruptions: str = "none"  # none, all, common, extra, or comma-separated names
    severities: tuple[int, ...] = SEVERITIES
    fgsm: tuple[float, ...] = ()  # epsilons in [0, 1] pixel units
    c_dir: str | None = None  # released -C files instead of on-the-fly corruptions
    seed: int = 0
    every_epochs: int = 0  # validate every N epochs during training (hold-out split, else test set); 0 = off
    train_metrics: bool = False  # also error/NLL/ECE on the un-augmented training images (resident datasets)
    holdout_corruptions: str = "none"  # corruptions (as eval.corruptions) on the hold-out split: tuning numbers


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimizer steps (0 = epochs * steps per epoch)
    device: str = "auto"  # auto, cpu, cuda
    precision: str = "fp32"  # fp32, bf16, fp16 (autocast), fp64 (float64 weights: reference checks)
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int = 500  # steps
    checkpoint_minutes: float = 10.0  # also a checkpoint at least this often, by the clock (0 = off)
    log_every: int = 50  # steps
    metrics_format: str = "jsonl"  # jsonl or csv
    tensorboard: bool = False
    progress: bool = True


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0


CHOICES = {
    "data.name": DATASETS,
    "data.augment": AUGMENTS,
    "method.name": methods.NAMES,
    "model.name": MODELS,
    "method.executor": EXECUTORS,
    "method.batchnorm": BATCHNORM_MODES,
    "optim.name": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.precision": tuple(AUTOCAST_DTYPES),
    "trainer.metrics_format": ("jsonl", "csv"),
}


def _factory_path(path: str, value: Any) -> bool:
    """model.name may also be package.module:factory (checked by :func:`validate`)."""
    return path == "model.name" and is_factory_path(value)


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(options)})"


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
            raise ConfigError(f"unknown config key {path!r}{_suggest(key, list(known))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(hint, value, f"{path}.")
        else:
            kwargs[key] = _coerce(path, value, hint)
            if path in CHOICES and kwargs[key] not in CHOICES[path] and not _factory_path(path, kwargs[key]):
                raise ConfigError(f"{path}: {kwargs[key]!r} is not one of {', '.join(CHOICES[path])}"
                                  f"{_suggest(str(kwargs[key]), list(CHOICES[path]))}")
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


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# MethodConfig fields handed to the method as hyperparameters, when set.
METHOD_HYPERPARAMETERS = tuple(f.name for f in fields(MethodConfig)
                               if f.name not in ("name", "num_perturbations", *methods.OPTIONS))


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


def validate(cfg: RunConfig) -> None:
    """Range checks and cross-key rules that a type alone cannot express."""
    _validate_ranges(cfg)
    _validate_data(cfg.data, cfg.eval)
    _validate_model(cfg.model)
    _validate_method(cfg.method, cfg.data.batch_size)
    _validate_optim_and_eval(cfg.optim, cfg.eval)


def _validate_ranges(cfg: RunConfig) -> None:
    d, m, o, t = cfg.data, cfg.method, cfg.optim, cfg.trainer
    for key, value in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size),
                       ("trainer.epochs", t.epochs), ("trainer.checkpoint_every", t.checkpoint_every),
                       ("trainer.log_every", t.log_every), ("data.image_size", d.image_size),
                       ("optim.lr", o.lr), ("method.num_perturbations", m.num_perturbations)):
        _positive(key, value)
    for key, value in (("trainer.max_steps", t.max_steps), ("data.num_workers", d.num_workers),
                       ("data.crop_padding", d.crop_padding), ("optim.weight_decay", o.weight_decay),
                       ("optim.clip_norm", o.clip_norm), ("optim.momentum", o.momentum),
                       ("data.max_train_images", d.max_train_images),
                       ("data.max_test_images", d.max_test_images), ("optim.warmup_epochs", o.warmup_epochs),
                       ("optim.warmup_steps", o.warmup_steps), ("seed", cfg.seed),
                       ("trainer.checkpoint_minutes", t.checkpoint_minutes)):
        _positive(key, value, allow_zero=True)
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {cfg.model.dropout!r}")


def _validate_data(d: DataConfig, e: EvalConfig) -> None:
    if d.max_test_images and e.c_dir is not None:
        raise ConfigError("data.max_test_images: the released -C files (eval.c_dir) hold the whole test set; "
                          "set it to 0")
    if not 0 <= d.holdout < 1:
        raise ConfigError(f"data.holdout: must be in [0, 1), got {d.holdout!r}")
    if resolve_corruptions(e.holdout_corruptions) and d.holdout == 0:
        raise ConfigError("eval.holdout_corruptions: needs a hold-out split (data.holdout > 0)")
    if e.every_epochs < 0:
        raise ConfigError(f"eval.every_epochs: must be >= 0, got {e.every_epochs!r}")
    if d.augmix_jsd and not d.augmix:
        raise ConfigError("data.augmix_jsd: needs data.augmix=true")
    if d.augmix and (d.mixup or d.train_corruption):
        raise ConfigError("data.augmix: not combined with data.mixup or data.train_corruption (one augmentation "
                          "recipe at a time)")
    if d.augmix and (d.augmix_width < 1 or not (d.augmix_depth == -1 or d.augmix_depth >= 1)
                     or not 0 < d.augmix_severity <= 10):
        raise ConfigError(f"data.augmix_width >= 1, data.augmix_depth -1 or >= 1, data.augmix_severity in (0, 10]; "
                          f"got {d.augmix_width}, {d.augmix_depth}, {d.augmix_severity}")
    if not 0 <= d.mixup < 1:
        raise ConfigError(f"data.mixup: must be in [0, 1), got {d.mixup!r}")
    if d.train_corruption is not None and d.train_corruption not in corruptions.CORRUPTIONS:
        raise ConfigError(f"data.train_corruption: unknown corruption {d.train_corruption!r}"
                          f"{_suggest(d.train_corruption, corruptions.names())}")
    if not (d.train_corruption_severity == 0 or d.train_corruption_severity in SEVERITIES):
        raise ConfigError(f"data.train_corruption_severity: must be 0 (random) or {SEVERITIES[0]}-{SEVERITIES[-1]}, "
                          f"got {d.train_corruption_severity}")


def _validate_method(m: MethodConfig, batch_size: int) -> None:
    if batch_size % m.num_perturbations:
        raise ConfigError(f"data.batch_size: {batch_size} is not divisible by method.num_perturbations="
                          f"{m.num_perturbations}")
    name = methods.canonical_name(m.name)  # which method takes which hyperparameter: the methods say
    for key in METHOD_HYPERPARAMETERS:
        value = getattr(m, key)
        if key in methods.required_hyperparameters(name) and value is None:
            raise ConfigError(f"method.{key}: required for method {m.name!r}")
        if value is not None and key not in methods.hyperparameter_names(name):
            raise ConfigError(f"method.{key}: not a hyperparameter of {m.name!r}")
        if value is not None and not value >= 0:
            raise ConfigError(f"method.{key}: must be >= 0, got {value!r}")
    try:
        check_modes(m.executor, m.batchnorm)
    except ValueError as err:
        raise ConfigError(f"method.batchnorm: {err}") from None
    if methods.canonical_name(m.name) == "sgd" and m.num_perturbations != 1:
        raise ConfigError(f"method.num_perturbations: {m.name} takes no sub-batches (got {m.num_perturbations})")


def _validate_optim_and_eval(o: OptimConfig, e: EvalConfig) -> None:
    if not 0 < o.lr_ratio <= 1:
        raise ConfigError(f"optim.lr_ratio: must be in (0, 1], got {o.lr_ratio!r}")
    if not 0 <= o.decay_start < o.decay_end <= 1:
        raise ConfigError("optim.decay_start/decay_end: need 0 <= decay_start < decay_end <= 1")
    if any(not (isinstance(s, int) and s in SEVERITIES) for s in e.severities) or not e.severities:
        raise ConfigError(f"eval.severities: must be integers {SEVERITIES[0]}-{SEVERITIES[-1]}, "
                          f"got {list(e.severities)}")
    if any(not 0 <= eps <= 1 for eps in e.fgsm):
        raise ConfigError(f"eval.fgsm: epsilons are in [0, 1] pixel units, got {list(e.fgsm)}")
    resolve_corruptions(e.corruptions)


def _validate_model(model: ModelConfig) -> None:
    """A module:factory model must import; built-in-only keys are refused for it, and the reverse."""
    if not is_factory_path(model.name):
        for key, value in (("kwargs", model.kwargs), ("normalize", model.normalize)):
            if value:
                raise ConfigError(f"model.{key}: only for module:factory models (built-in {model.name!r} "
                                  "normalises inside)")
        return
    for key, value in (("dropout", model.dropout), ("width", model.width)):
        if value:
            raise ConfigError(f"model.{key}: not used by module:factory models; pass it in model.kwargs")
    try:
        import_factory(model.name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_corruptions(spec: str) -> list[str]:
    """The corruption list of an ``eval.corruptions`` value."""
    if spec in ("none", ""):
        return []
    if spec in ("all", "common") or spec in corruptions.GROUPS:
        return corruptions.names(spec)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in corruptions.CORRUPTIONS:
            raise ConfigError(f"eval.corruptions: unknown corruption {name!r}{_suggest(name, corruptions.names())}")
    return names
