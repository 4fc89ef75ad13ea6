"""What a valid run config is: the range checks and cross-key rules that a type alone cannot express."""

from __future__ import annotations

from damp import corruptions, methods
from damp.config.schema import (METHOD_HYPERPARAMETERS, ConfigError, DataConfig, EvalConfig, MethodConfig,
                                ModelConfig, OptimConfig, RunConfig, suggest)
from damp.corruptions import SEVERITIES
from damp.methods.subbatch import check_modes
from damp.models.user import import_factory, is_factory_path


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
                          f"{suggest(d.train_corruption, corruptions.names())}")
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
    if m.mix is not None and m.mix > 1:  # m-RWP's weight of the perturbed loss (Li et al.'s alpha)
        raise ConfigError(f"method.mix: must be in [0, 1], got {m.mix!r}")
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


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def resolve_corruptions(spec: str) -> list[str]:
    """The corruption list of an ``eval.corruptions`` value."""
    if spec in ("none", ""):
        return []
    if spec in ("all", "common") or spec in corruptions.GROUPS:
        return corruptions.names(spec)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in corruptions.CORRUPTIONS:
            raise ConfigError(f"eval.corruptions: unknown corruption {name!r}{suggest(name, corruptions.names())}")
    return names

