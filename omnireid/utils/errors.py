"""The one family of user-facing errors.

A :class:`UserError` means "the input is wrong" (a config key or value, a file, a dataset, a
checkpoint), never "omnireid has a bug". It is raised where the fault is detected, and its message
names the file / key / value at fault and, when there is a choice, the allowed values. The CLI
prints it as one line (``omnireid <command>: error: <message>``) with exit code 2; anything else
is a bug and keeps its traceback.

The subclasses also derive from the built-in exception the code raised before (``ValueError``,
``FileNotFoundError``, ``RuntimeError``, ...), so ``except ValueError`` in user code keeps working.

PyTorch's ``DataLoader`` re-raises a worker's exception as ``type(exc)(formatted_traceback)``;
:class:`UserError` recognises that text and keeps only the original message, so a corrupt image
read by worker 3 reads exactly like one read in the main process.
"""
from __future__ import annotations

import re
from typing import Iterator

_WORKER_HEADER = re.compile(r"^Caught (?P<name>[A-Za-z_][\w.]*) in DataLoader worker process \d+\.\n"
                            r"Original Traceback \(most recent call last\):\n")


def _original_message(text: str, cls: type[BaseException]) -> str | None:
    """The message of the exception of type ``cls`` whose worker traceback is ``text``; None if not one."""
    match = _WORKER_HEADER.match(text)
    if match is None or match.group("name") != cls.__name__:
        return None
    # The formatted traceback ends with "<module>.<qualname>: <message>" (possibly several lines).
    names = [f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__]
    best = -1
    for name in names:
        at = text.rfind("\n" + name + ": ")
        if at > best:
            best, length = at, len(name) + 3
    if best < 0:
        return None
    return text[best + length:].rstrip("\n")


class UserError(Exception):
    """Bad input, reported to the user as one line naming the file, key or value at fault."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            original = _original_message(args[0], type(self))
            if original is not None:
                args = (original,)
        super().__init__(*args)


class ConfigError(UserError, ValueError):
    """A configuration file, key or value is invalid; the message names it and the allowed values."""


class UnknownNameError(ConfigError, KeyError):
    """A name (dataset, backbone, sampler, ...) is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return Exception.__str__(self)


class DatasetError(UserError, ValueError):
    """The data is unusable (empty split, unreadable image, identities that cannot be sampled, ...)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named in the config or on the command line does not exist."""


class MissingDependencyError(UserError, ImportError):
    """An optional package the requested feature needs is not installed; the message says how to install it."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unsafe to load, truncated or does not fit the model."""


class OutputError(UserError, OSError):
    """An output file or folder cannot be written (read-only folder, disk full, ...)."""


class TrainingDivergedError(UserError, FloatingPointError):
    """Training stopped because the loss became non-finite; the message says at which iteration."""


def user_error_classes() -> Iterator[type[UserError]]:
    """Every subclass of :class:`UserError` defined so far (imported modules only)."""
    stack: list[type[UserError]] = [UserError]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())


def as_user_error(exc: BaseException) -> UserError | None:
    """``exc`` as a :class:`UserError`, or None when it is not one (a bug).

    Also recognises a user error a loader worker raised that PyTorch could not rebuild in its own type
    (it then raises ``RuntimeError("Caught <Name> in DataLoader worker process N ...")``).
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, RuntimeError) and exc.args and isinstance(exc.args[0], str):
        match = _WORKER_HEADER.match(exc.args[0])
        if match is not None:
            for cls in user_error_classes():
                if cls.__name__ == match.group("name"):
                    message = _original_message(exc.args[0], cls)
                    if message is not None:
                        error = UserError(message)
                        error.__cause__ = exc
                        return error
    return None


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined with ``"; "`` (with a space after a line ending in ``:``)."""
    out = ""
    for line in (part.strip() for part in str(message).splitlines()):
        if line:
            out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out
