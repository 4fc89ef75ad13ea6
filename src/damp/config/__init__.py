"""Run configuration: frozen dataclasses per concern, YAML presets and ``--set key=value`` overrides.

``schema`` names every key with its type and default, ``load`` reads presets and overrides into a
:class:`RunConfig`, and ``checks`` holds the rules a type cannot express. Every error names the
offending key (with a close-match suggestion for typos) and is a ``ConfigError`` (a ``ValueError``),
which the CLI prints as one line.
"""

from damp.config.checks import resolve_corruptions, validate
from damp.config.load import (config_from_dict, dump_config, flat_keys, load_config, merge_override,
                              method_arguments, parse_override, read_preset, to_dict)
from damp.config.schema import (CHOICES, METHOD_HYPERPARAMETERS, ConfigError, DataConfig, EvalConfig, MethodConfig,
                                ModelConfig, OptimConfig, RunConfig, TrainerConfig)

__all__ = ["CHOICES", "METHOD_HYPERPARAMETERS", "ConfigError", "DataConfig", "EvalConfig", "MethodConfig",
           "ModelConfig", "OptimConfig", "RunConfig", "TrainerConfig", "config_from_dict", "dump_config",
           "flat_keys", "load_config", "merge_override", "method_arguments", "parse_override", "read_preset",
           "resolve_corruptions", "to_dict", "validate"]
