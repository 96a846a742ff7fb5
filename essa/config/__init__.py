"""Typed run configuration: :class:`RunConfig` from YAML plus ``--set`` overrides."""

from essa.config.loader import apply_override, describe_fields, from_dict, load_config, to_dict, to_yaml
from essa.config.schema import (AdapterConfig, FitnessConfig, ArithmeticConfig, SFTConfig, ConfigError, EngineConfig, ModelConfig, RunConfig,
                                TaskConfig)

__all__ = ["AdapterConfig", "FitnessConfig", "SFTConfig", "ArithmeticConfig", "ConfigError", "EngineConfig", "ModelConfig", "RunConfig", "TaskConfig",
           "apply_override", "describe_fields", "from_dict", "load_config", "to_dict", "to_yaml"]
