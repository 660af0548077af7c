"""A name -> object registry, the single extension mechanism of omnireid.

Every pluggable piece (backbone, head, loss, dataset, sampler, evaluator, ...) registers itself
under a name; configs refer to it by that name. Nothing dispatches through if-chains.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, TypeVar

from omnireid.utils.errors import UnknownNameError

T = TypeVar("T")


class Registry:
    """Maps names (and optional aliases) to classes or functions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register()`` uses the object's ``__name__``."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            self._add(key, obj)
            for alias in aliases:
                if alias in self._entries or alias in self._aliases:
                    raise KeyError(f"{self.kind} alias {alias!r} is already registered")
                self._aliases[alias] = key
            return obj

        return deco

    def _add(self, key: str, obj: Any) -> None:
        if key in self._entries or key in self._aliases:
            raise KeyError(f"{self.kind} {key!r} is already registered (by {self._entries.get(key)!r})")
        self._entries[key] = obj

    def get(self, name: str) -> Any:
        key = self._aliases.get(name, name)
        if key not in self._entries:
            known = sorted(self.names(include_aliases=True))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"Unknown {self.kind} {name!r}.{hint} Registered: {', '.join(known)}")
        return self._entries[key]

    def canonical_name(self, name: str) -> str:
        self.get(name)
        return self._aliases.get(name, name)

    def names(self, include_aliases: bool = False) -> list[str]:
        out = list(self._entries)
        if include_aliases:
            out += list(self._aliases)
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
