"""Images stored inside container files (insightface RecordIO records, ``.bin`` verification sets, ...).

An item whose ``img_path`` is ``"<container file>::<member>"`` names a member of a container; the
opener registered for the container's file suffix (``IMAGE_CONTAINER_REGISTRY``, e.g. ``.rec``) is a
class whose instances take the container path and return a member's encoded bytes from
``read(member)``. Opened containers are cached per process (data-loader workers open their own).
"""
from __future__ import annotations

import functools
import os

from omnireid.utils.errors import MissingFileError
from omnireid.utils.registry import Registry

IMAGE_CONTAINER_REGISTRY = Registry("image container")
SEPARATOR = "::"


def member_path(container: str, member: object) -> str:
    """The ``img_path`` of ``member`` inside ``container``."""
    return f"{container}{SEPARATOR}{member}"


def split_member_path(path: str) -> tuple[str, str] | None:
    """``(container, member)`` when ``path`` names a container member, else None."""
    if SEPARATOR not in path:
        return None
    container, member = path.rsplit(SEPARATOR, 1)
    return container, member


@functools.lru_cache(maxsize=16)
def _open(container: str, pid: int):
    suffix = os.path.splitext(container)[1].lower()
    try:
        opener = IMAGE_CONTAINER_REGISTRY.get(suffix)
    except KeyError as exc:
        raise MissingFileError(f"{container}: no reader for '{suffix}' containers ({exc.args[0]})") from None
    return opener(container)


def read_member(path: str) -> bytes:
    """The encoded bytes of a ``<container>::<member>`` path (the container is opened once per process)."""
    parts = split_member_path(path)
    if parts is None:
        raise ValueError(f"{path!r} does not name a container member ('<file>{SEPARATOR}<member>')")
    container, member = parts
    return _open(container, os.getpid()).read(member)
