"""Models damp does not ship: ``model.name: package.module:factory`` builds
``factory(num_classes=..., in_channels=..., **model.kwargs)``.

The model takes [0, 1] pixels, like damp's own models. ``model.normalize`` wraps it in the dataset's
per-channel mean/std (:class:`Normalized`) for a model that expects normalised inputs, so corruptions
and FGSM still act on pixels.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from damp.models.small import PixelStandardize


def is_factory_path(name: str) -> bool:
    """Whether a model name is a ``module:factory`` import path rather than a built-in model."""
    return ":" in name


def import_factory(path: str) -> Callable[..., nn.Module]:
    """``"pkg.module:factory"`` (or ``"pkg.module:Class.method"``) -> the callable; a one-line ValueError
    naming what is missing otherwise. The current directory is searched too, as ``python -m`` would."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model.name: {path!r} is not MODULE:FACTORY (e.g. mypackage.models:build)")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as err:
        if _is_prefix(err.name, module_name):
            raise ValueError(f"model.name: no module {module_name!r} (is it installed, or in the current "
                             "directory?)") from None
        raise ValueError(f"model.name: importing {module_name!r} failed: {err}") from None
    except Exception as err:  # noqa: BLE001 - the user's module: a syntax error, or anything it raises on import
        raise ValueError(f"model.name: importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"model.name: module {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ValueError(f"model.name: {path!r} is not callable")
    return target


def _is_prefix(missing: str | None, module_name: str) -> bool:
    """Whether the missing module is ``module_name`` or a package above it (not a dependency it imports)."""
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if not _is_prefix(err.name, module_name) or cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(module_name)


def build_user_model(path: str, *, num_classes: int, in_channels: int, kwargs: dict | None = None) -> nn.Module:
    """Call the factory at ``path`` with the dataset's classes and channels, plus ``kwargs``."""
    factory = import_factory(path)
    try:
        model = factory(num_classes=num_classes, in_channels=in_channels, **(kwargs or {}))
    except TypeError as err:
        raise ValueError(f"model.name: {path}(num_classes=..., in_channels=..., **model.kwargs) failed: {err}") \
            from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.name: {path} returned {type(model).__name__}, not a torch.nn.Module")
    return model


class Normalized(nn.Module):
    """``model((x - mean) / std)`` for a model that expects normalised inputs; takes [0, 1] pixels.

    The mean/std buffers are not saved, so the state dict is the wrapped model's under ``model.``.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = PixelStandardize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> the wrapped model's output."""
        return self.model(self.normalize(x))


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP / DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for key, value in state.items():
        while key.startswith(("module.", "_orig_mod.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def load_weights(model: nn.Module, path: str) -> None:
    """Load a state dict, or a checkpoint holding one under ``model`` or ``state_dict``, into ``model``.

    Raises a one-line FileNotFoundError / ValueError when the file is missing, not a checkpoint, or
    does not fit the model.
    """
    if os.path.isdir(path):
        raise FileNotFoundError(f"--weights: {path} is a directory; name the file (e.g. {path}/last.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--weights: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors have many types; the message says which
        if "weights_only" in str(err):
            raise ValueError(f"--weights: {path} pickles Python objects, so it cannot be loaded safely "
                             "(weights_only=True); save model.state_dict() instead") from None
        raise ValueError(f"--weights: {path} is not a torch checkpoint ({type(err).__name__})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights: {path} holds no state dict (a mapping of tensors, or one under "
                         "'model' or 'state_dict')")
    state = strip_prefixes(state)
    own = model.state_dict()
    if state and all(k.startswith("model.") for k in state) and not all(k.startswith("model.") for k in own):
        state = {k[len("model."):]: v for k, v in state.items()}  # a damp run with model.normalize (Normalized)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
        raise ValueError(f"--weights: {path} does not fit the model ({detail[:300]})") from None
