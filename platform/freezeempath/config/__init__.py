"""Typed configuration: the schema (frozen dataclasses), the named presets and YAML loading.

Import names from here; the submodules are :mod:`~freezeempath.config.schema` (dataclasses only),
:mod:`~freezeempath.config.presets` (``tiny``, ``demo``, ``paper``) and :mod:`~freezeempath.config.load`
(``from_dict``, overrides, ``load_config``, ``save_config``).
"""

from freezeempath.config.load import apply_overrides, from_dict, load_config, save_config, to_dict
from freezeempath.config.schema import (
    AdapterConfig,
    CodecConfig,
    Config,
    ConfigError,
    DataConfig,
    EmotionConfig,
    EncoderConfig,
    GenerationConfig,
    LLMConfig,
    ModelConfig,
    SpeechDecoderConfig,
    TargetsConfig,
    TrainConfig,
)

__all__ = [
    "AdapterConfig",
    "CodecConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EmotionConfig",
    "EncoderConfig",
    "GenerationConfig",
    "LLMConfig",
    "ModelConfig",
    "SpeechDecoderConfig",
    "TargetsConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
