"""What the processor does natively, for choices that are only faster on some hardware."""
from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles).

    Without it (e.g. AVX2-only AMD EPYC), oneDNN emulates bf16 and autocast is slower than fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
