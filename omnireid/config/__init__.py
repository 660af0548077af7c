"""Configuration: defaults with FastReID key names, YAML with ``_BASE_``, strict overrides."""
from .config import CfgNode, ConfigError, load_yaml_with_base, parse_value, register_key_translator
from .defaults import get_cfg

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base", "parse_value", "register_key_translator"]
