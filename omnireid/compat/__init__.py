"""Bring FastReID models over: config translation, checkpoint key mapping, one-step conversion.

The config translation lives in the config layer (``omnireid.config.fastreid``, so every config load
understands FastReID V1.0 key names); ``fastreid_checkpoint`` builds models and writes converted files.
"""
from .fastreid_checkpoint import (
    STATE_DICT_RULES,
    Conversion,
    convert_fastreid,
    fastreid_model_state,
    load_fastreid_checkpoint,
    rename_fastreid_keys,
)
from omnireid.config.fastreid import (
    FASTREID_DEFAULTS,
    KEY_RULES,
    FastReIDConfig,
    detect_generation,
    translate_fastreid_config,
)

__all__ = [
    "FASTREID_DEFAULTS", "KEY_RULES", "STATE_DICT_RULES", "Conversion", "FastReIDConfig", "convert_fastreid",
    "detect_generation", "fastreid_model_state", "load_fastreid_checkpoint", "rename_fastreid_keys",
    "translate_fastreid_config",
]
