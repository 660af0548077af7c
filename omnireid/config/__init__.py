"""Configuration: defaults with FastReID key names, YAML with ``_BASE_``, strict overrides, extensions.

Importing the package registers the FastReID V1.0 key-name translator (``config.fastreid``), so every
config load understands those names.
"""
from .config import CfgNode, ConfigError, load_yaml_with_base, parse_value, register_key_translator
from .defaults import get_cfg, register_config, registered_configs
from .setup import setup_cfg
from . import fastreid  # noqa: F401,E402  (registers the FastReID V1.0 key-name translator)

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base", "parse_value", "register_config",
           "register_key_translator", "registered_configs", "setup_cfg"]
