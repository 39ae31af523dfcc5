"""CuPy: the traits the core reads, and the home of its kernels.

``source``
    The CUDA C++ source of the kernels (one thread block per row), compiled by CuPy with
    NVRTC at the first launch.
``kernels``
    Their launchers (imports cupy).
``entries``
    The registry entries (import neither cupy nor the kernels until a call).
``mirror``
    The kernels' arithmetic in NumPy, which the tests run where no GPU is.
"""

from __future__ import annotations

from typing import Any

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES: tuple[str, ...] = ("entries",)


def device_kind(x: Any) -> str:
    return "cuda"


def values_visible(x: Any) -> bool:
    return False  # device memory: reading it waits for the GPU


def contiguous(x: Any) -> bool:
    return bool(x.flags.c_contiguous)
