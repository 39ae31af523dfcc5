"""NumPy: the traits the core reads, and the homes of the fast paths.

``blocks``
    Cache-sized blocks of rows computed in place with NumPy's ufuncs on the thread pool
    (every operation).
``linear``
    The linear cross-entropy with one reused chunk buffer, computed in place.
``compiled``
    Compiled kernels (numba, an optional extra) for float32 softmax, log_softmax and
    logsumexp rows: one read of a row for its maximum, one more for everything else.

The registry imports the modules of :data:`FAST_PATH_MODULES` one by one when the first
NumPy array arrives; one that fails to import (a missing optional dependency) is listed as
unavailable and leaves the others working.
"""

from __future__ import annotations

from typing import Any

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES = ("blocks", "linear", "compiled")


def device_kind(x: Any) -> str:
    return "cpu"


def values_visible(x: Any) -> bool:
    return True


def contiguous(x: Any) -> bool:
    return bool(x.flags.c_contiguous)
