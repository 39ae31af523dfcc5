"""CuPy: the traits the core reads, and the home of its kernels.

``kernels`` (not yet written)
    Home of the CUDA ``RawKernel`` sources and their launchers (the GPU issue).

CuPy calls are served by the generic implementation today.
"""

from __future__ import annotations

from typing import Any

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES: tuple[str, ...] = ()


def device_kind(x: Any) -> str:
    return "cuda"


def values_visible(x: Any) -> bool:
    return False  # device memory: reading it waits for the GPU


def contiguous(x: Any) -> bool:
    return bool(x.flags.c_contiguous)
