"""Peak resident memory of a block of code (Linux), measured the same way for every block.

``/proc/self/clear_refs`` (value ``5``) resets the kernel's high-water mark ``VmHWM`` to the current
RSS, so the peak of one step can be read even after earlier, larger steps of the same process.
Before that, the freed memory the C allocator still holds is returned to the system (glibc's
``malloc_trim``): otherwise a step reusing an earlier step's freed pages would show no growth.
"""
from __future__ import annotations

import ctypes
import gc
from typing import Any

_STATUS = "/proc/self/status"


def _status_kib(key: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may then be understated, never overstated
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory() as pm: ...``; then ``pm.peak_mb`` = the highest RSS reached inside the block
    minus the RSS at its start (MiB), or None where the platform cannot say (not Linux)."""

    def __init__(self) -> None:
        self.start_kib: int | None = None
        self.peak_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        _release_free_memory()
        self.supported = _reset_peak()
        self.start_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _status_kib("VmHWM")
        if self.supported and peak is not None and self.start_kib is not None:
            self.peak_mb = max(0, peak - self.start_kib) / 1024
