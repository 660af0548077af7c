"""Hierarchical configuration: YAML files with ``_BASE_`` inheritance and ``KEY VALUE`` overrides.

Every key must exist in the defaults; values are type-checked against them. An unknown key is an
error naming the key and the closest existing one, because a silently ignored typo is a wasted run.
"""
from __future__ import annotations

import ast
import copy
import difflib
import logging
import os
from typing import Any, Callable, Iterable

import yaml

from omnireid.utils.errors import ConfigError

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"
_SCALAR_TYPES = (bool, int, float, str, type(None))


class CfgNode(dict):
    """A dict with attribute access, recursive freezing and strict, typed merging."""

    def __init__(self, init: dict | None = None) -> None:
        super().__init__()
        for key, value in (init or {}).items():
            self[key] = CfgNode(value) if isinstance(value, dict) and not isinstance(value, CfgNode) else value
        object.__setattr__(self, "_frozen", False)

    # attribute access --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"config is frozen; cannot set {name!r} (call cfg.defrost() first)")
        if isinstance(value, dict) and not isinstance(value, CfgNode):
            value = CfgNode(value)
        self[name] = value

    def __deepcopy__(self, memo: dict) -> "CfgNode":
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def clone(self) -> "CfgNode":
        return copy.deepcopy(self)

    def freeze(self) -> "CfgNode":
        self._set_frozen(True)
        return self

    def defrost(self) -> "CfgNode":
        self._set_frozen(False)
        return self

    def is_frozen(self) -> bool:
        return self._frozen

    def _set_frozen(self, frozen: bool) -> None:
        object.__setattr__(self, "_frozen", frozen)
        for value in self.values():
            if isinstance(value, CfgNode):
                value._set_frozen(frozen)

    # conversion ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, CfgNode) else _plain(v) for k, v in self.items()}

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def flat_keys(self, prefix: str = "") -> list[str]:
        keys = []
        for key, value in self.items():
            full = f"{prefix}{key}"
            keys.extend(value.flat_keys(full + ".") if isinstance(value, CfgNode) else [full])
        return keys

    # merging -------------------------------------------------------------------------------
    def merge_from_file(self, path: str | os.PathLike) -> "CfgNode":
        """Merge a YAML file (and, first, the chain of ``_BASE_`` files it names)."""
        self._check_mutable()
        data = load_yaml_with_base(str(path))
        self.merge_from_dict(data, source=str(path))
        return self

    def merge_from_dict(self, data: dict, source: str = "<dict>") -> "CfgNode":
        self._check_mutable()
        for key, value in data.items():
            _merge_value(self, key, value, prefix="", source=source)
        return self

    def merge_from_list(self, opts: Iterable[str]) -> "CfgNode":
        """Merge ``["KEY.A", "value", "KEY.B", "value", ...]`` (command-line overrides)."""
        self._check_mutable()
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd count: {opts}")
        for full_key, raw in zip(opts[0::2], opts[1::2]):
            node, leaf = self, full_key.split(".")
            for depth, part in enumerate(leaf[:-1]):
                if part in node and not isinstance(node[part], CfgNode):
                    raise ConfigError(f"<command line>: {'.'.join(leaf[:depth + 1])} is a value, not a section; "
                                      f"cannot set {full_key}")
                if not isinstance(node.get(part), CfgNode):
                    _unknown_key(node, part, ".".join(leaf[:depth]), "<command line>")
                node = node[part]
            _merge_value(node, leaf[-1], parse_value(raw), prefix=".".join(leaf[:-1]),
                         source="<command line>")
        return self

    def _check_mutable(self) -> None:
        if self._frozen:
            raise AttributeError("config is frozen; call cfg.defrost() before merging")


def _plain(value: Any) -> Any:
    return list(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def parse_value(raw: Any) -> Any:
    """Parse a command-line value the way YAML would read it (``10``, ``[1, 2]``, ``True``, ``foo``)."""
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a Python literal: a word
        pass
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    return raw


# Legacy (FastReID V1.0) keys: translated into current ones with a note. Registered by modules that
# know the translation (see omnireid.config.compat).
KeyTranslator = Callable[[CfgNode, str, Any, str], bool]
_TRANSLATORS: list[KeyTranslator] = []


def register_key_translator(fn: KeyTranslator) -> KeyTranslator:
    """Register ``fn(node, full_key, value, source) -> handled`` for keys missing from the defaults."""
    _TRANSLATORS.append(fn)
    return fn


def _merge_value(node: CfgNode, key: str, value: Any, prefix: str, source: str) -> None:
    full_key = f"{prefix}.{key}" if prefix else key
    if key not in node and "." in str(key):
        raise ConfigError(f"{source}: key {full_key!r}: a config file nests sections (INPUT:\n  PADDING: ...) "
                          "rather than writing dotted names")
    if key not in node:
        root_key = full_key
        for translate in _TRANSLATORS:
            if translate(node, root_key, value, source):
                return
        _unknown_key(node, key, prefix, source)
    current = node[key]
    if isinstance(current, CfgNode):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {full_key} is a section; expected a mapping, got {value!r}")
        for sub_key, sub_value in value.items():
            _merge_value(current, sub_key, sub_value, full_key, source)
        return
    node[key] = coerce(current, value, full_key, source)


def _unknown_key(node: CfgNode, key: Any, prefix: str, source: str) -> None:
    full_key = f"{prefix}.{key}" if prefix else str(key)
    close = difflib.get_close_matches(str(key), list(node.keys()), n=1, cutoff=0.5)
    hint = f" Did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    raise ConfigError(f"{source}: unknown config key {full_key!r}.{hint}")


def coerce(default: Any, value: Any, full_key: str, source: str) -> Any:
    """Check ``value`` against the type of ``default``; return it in the default's type."""
    if default is None:  # an untyped key (default None) takes any value
        return value
    if value is None:
        raise ConfigError(f"{source}: {full_key} needs a {type(default).__name__} value, got an empty value (None); "
                          f"its default is {default!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {full_key} expects a bool (True/False), got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {full_key} expects an int, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{source}: {full_key}: {value} is too large for a number") from None
        raise ConfigError(f"{source}: {full_key} expects a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # tri-state keys ("auto" / True / False), e.g. MODEL.CHANNELS_LAST
            return str(value).lower()
        raise ConfigError(f"{source}: {full_key} expects a string, got {value!r}")
    if isinstance(default, (list, tuple)):
        if isinstance(value, str) and value.strip()[:1] in ("(", "["):
            value = parse_value(value)  # FastReID writes lists as strings: '("CrossEntropyLoss",)'
        if isinstance(value, str):
            value = [value]  # `DATASETS.NAMES Market1501` means a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {full_key} expects a list, got {value!r}")
        if default and all(isinstance(d, _SCALAR_TYPES) for d in default):
            proto = default[0]
            value = [coerce(proto, v, f"{full_key}[{i}]", source) for i, v in enumerate(value)]
        return list(value)
    return value


def load_yaml_with_base(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """Load ``path``; if it has ``_BASE_`` (relative to the file), load that first and overlay this."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"{path}: circular _BASE_ chain: {' -> '.join(_seen + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY} must name one config file (a path relative to this file), got {base!r}")
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    merged = load_yaml_with_base(base_path, _seen + (path,))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value
