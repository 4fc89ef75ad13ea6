"""Every config key, its type and its default: one frozen dataclass per section, and the key choices."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields

from damp import methods
from damp.corruptions import SEVERITIES
from damp.data.build import AUGMENTS, DATASETS
from damp.methods.subbatch import BATCHNORM_MODES, EXECUTORS
from damp.models import MODELS
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
    # auto (fused on CUDA; on CPU fused below 64 input channels, split above and for convolutions on
    # channels-last input, checked on the first batch for a model without BatchNorm), fused, split, loop
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


# MethodConfig fields handed to the method as hyperparameters, when set.
METHOD_HYPERPARAMETERS = tuple(f.name for f in fields(MethodConfig)
                               if f.name not in ("name", "num_perturbations", *methods.OPTIONS))


def suggest(key: str, options: list[str], prefix: str = "") -> str:
    """" (did you mean 'trainer.epochs'?)" for the closest option, with its section ``prefix``, else the options."""
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else f" (known: {', '.join(options)})"

