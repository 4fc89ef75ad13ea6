"""Model zoo in plain torch (no torchvision/timm). Every model takes [0, 1] pixels and normalises inside.

>>> build_model("small_cnn", num_classes=10, in_channels=1)(torch.rand(2, 1, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 - the doctest above uses it
from torch import nn

from damp.models.resnet import preact_resnet18, resnet8, resnet18, resnet50
from damp.models.small import MLP, PixelStandardize, SmallCNN
from damp.models.user import Normalized, build_user_model, is_factory_path
from damp.models.vit import vit_b16, vit_s16

# Built-in models whose first-stage width model.width sets (0: their default).
WIDTH_MODELS = ("small_cnn", "resnet8")
MODELS = ("small_cnn", "mlp", "resnet8", "resnet18", "preact_resnet18", "resnet50", "vit_s16", "vit_b16")


def build_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0,
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                **kwargs: Any) -> nn.Module:
    """Build a model by name; ``dropout`` > 0 gives the Dropout baseline's architecture.

    ``mean``/``std`` (per channel) are the input normalisation applied inside the model.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Invalid dropout: {dropout!r} (must be in [0, 1))")
    mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    std = tuple(std) if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values, got {len(mean)} and {len(std)}")
    common = {"dropout": dropout, "mean": mean, "std": std}
    if name == "small_cnn":
        return SmallCNN(in_channels, num_classes, **common, **kwargs)
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes, dropout=dropout, mean=mean[0], std=std[0],
                   **kwargs)
    if name in ("resnet8", "resnet18", "preact_resnet18", "resnet50"):
        builder = {"resnet8": resnet8, "resnet18": resnet18, "preact_resnet18": preact_resnet18,
                   "resnet50": resnet50}[name]
        return builder(num_classes, in_channels=in_channels, **common, **kwargs)
    if name in ("vit_s16", "vit_b16"):
        builder = vit_s16 if name == "vit_s16" else vit_b16
        return builder(num_classes, image_size=image_size, in_channels=in_channels, **common, **kwargs)
    raise ValueError(f"Unknown model: {name!r} (choose from {', '.join(MODELS)})")


def model_for(cfg: Any, bundle: Any) -> nn.Module:
    """The model of a run config ``cfg`` for the data in ``bundle`` (classes, channels, size, normalisation).

    A ``module:factory`` model is built by its factory and, with ``model.normalize``, wrapped in the
    dataset's mean/std (:class:`damp.models.user.Normalized`).
    """
    if is_factory_path(cfg.model.name):
        model = build_user_model(cfg.model.name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                                 kwargs=cfg.model.kwargs)
        return Normalized(model, tuple(bundle.mean), tuple(bundle.std)) if cfg.model.normalize else model
    extra = {"width": cfg.model.width} if cfg.model.name in WIDTH_MODELS and cfg.model.width else {}
    return build_model(cfg.model.name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                       image_size=bundle.image_size, dropout=cfg.model.dropout, mean=bundle.mean, std=bundle.std,
                       **extra)


__all__ = ["MLP", "MODELS", "Normalized", "PixelStandardize", "SmallCNN", "build_model", "model_for"]
