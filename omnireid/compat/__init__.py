"""Bring FastReID models over: config translation, checkpoint key mapping, one-step conversion.

``fastreid_config`` depends on ``omnireid.config`` only (importing it registers the config-load hook
for FastReID V1.0 key names); ``fastreid_checkpoint`` builds models and writes converted files.
"""
from .fastreid_checkpoint import (
    STATE_DICT_RULES,
    Conversion,
    convert_fastreid,
    fastreid_model_state,
    load_fastreid_checkpoint,
    match_to_model,
    rename_fastreid_keys,
)
from .fastreid_config import (
    FASTREID_DEFAULTS,
    KEY_RULES,
    FastReIDConfig,
    detect_generation,
    translate_fastreid_config,
)

__all__ = [
    "FASTREID_DEFAULTS", "KEY_RULES", "STATE_DICT_RULES", "Conversion", "FastReIDConfig", "convert_fastreid",
    "detect_generation", "fastreid_model_state", "load_fastreid_checkpoint", "match_to_model",
    "rename_fastreid_keys", "translate_fastreid_config",
]
