"""Training methods as gradient estimators: ``loss = method.backward(model, x, y, loss_fn)``.

>>> method = build("damp", std=0.1, num_perturbations=2, seed=0)
>>> method
DAMP(std=0.1, num_perturbations=2, seed=0)
"""

from __future__ import annotations

import inspect
from typing import Any

from damp.methods.base import Method
from damp.methods.noise import DAAP, DAMP, WeightNoise
from damp.methods.perturb import perturbed_parameters
from damp.methods.rwp import RWP, MixedRWP
from damp.methods.sam import ASAM, SAM
from damp.methods.sgd import SGD

METHODS: dict[str, type[Method]] = {"sgd": SGD, "damp": DAMP, "daap": DAAP, "sam": SAM, "asam": ASAM, "rwp": RWP,
                                    "mrwp": MixedRWP}
# The Dropout baseline is SGD on a model with dropout (paper §4): a run-level name, not a method.
ALIASES = {"dropout": "sgd"}
NAMES = tuple(METHODS) + tuple(ALIASES)


def canonical_name(name: str) -> str:
    """The method a run-level name trains with ("dropout" -> "sgd")."""
    return ALIASES.get(name, name)


# Execution options, not hyperparameters: they change how a step runs, not what it computes
# (batchnorm="ghost" does change it, and is documented as the one explicit exception).
OPTIONS = ("executor", "batchnorm")


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters :func:`build` accepts for method ``name`` (without the execution options)."""
    cls = _lookup(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params") + OPTIONS]


def required_hyperparameters(name: str) -> list[str]:
    """The hyperparameters of method ``name`` that have no default."""
    params = inspect.signature(_lookup(name).__init__).parameters
    return [k for k in hyperparameter_names(name) if params[k].default is inspect.Parameter.empty]


def _lookup(name: str) -> type[Method]:
    key = str(name).lower()
    if key in ALIASES:
        raise ValueError(f"{name!r} is a run-level name, not a method: it trains with {ALIASES[key]!r} on a model "
                         "with model.dropout > 0 (build that method and add dropout to the model)")
    if key not in METHODS:
        raise ValueError(f"Unknown method: {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[key]


def build(name: str, **hparams: Any) -> Method:
    """Build a method by name ("sgd", "damp", "daap", "sam", "asam", "rwp", "mrwp").

    Raises:
        ValueError: naming the method or the hyperparameter that is unknown or invalid.
    """
    cls = _lookup(name)
    allowed = hyperparameter_names(name) + [o for o in OPTIONS if o in inspect.signature(cls.__init__).parameters]
    for key in hparams:
        if key not in allowed:
            raise ValueError(f"Invalid hyperparameter for {name}: {key!r} (accepted: {', '.join(allowed)})")
    required = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.default is inspect.Parameter.empty and p.name in allowed]
    missing = [k for k in required if k not in hparams]
    if missing:
        raise ValueError(f"Missing hyperparameter for {name}: {', '.join(missing)}")
    return cls(**hparams)


__all__ = ["ALIASES", "ASAM", "build", "canonical_name", "DAAP", "DAMP", "hyperparameter_names", "Method",
           "METHODS", "MixedRWP", "NAMES", "OPTIONS", "perturbed_parameters", "required_hyperparameters", "RWP",
           "SAM", "SGD", "WeightNoise"]
