"""xpsoftmax: softmax, log_softmax, logsumexp and cross-entropy for every array library.

Written once against the Python array API standard, with a fast path per library that gives
the same answers. Importing this package imports no array library.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from . import parallel
from ._api import (
    cross_entropy,
    cross_entropy_with_grad,
    linear_cross_entropy,
    linear_cross_entropy_with_grad,
    log_softmax,
    logsumexp,
    softmax,
    which,
)
from ._checks import load_early_backends as _load_early_backends
from ._listing import implementations
from ._registry import Call, FastPath, fast_paths, force_generic, generic_forced, use
from ._threads import get_num_threads, num_threads, set_num_threads

_load_early_backends()

try:
    # The installed version, read from the package metadata (the one version literal lives in
    # pyproject.toml); ``"0+unknown"`` when the source tree is imported without being installed.
    __version__: str = _metadata.version("xpsoftmax")
except _metadata.PackageNotFoundError:  # pragma: no cover - a bare source checkout
    __version__ = "0+unknown"

__all__ = [
    "Call",
    "FastPath",
    "__version__",
    "cross_entropy",
    "cross_entropy_with_grad",
    "fast_paths",
    "force_generic",
    "generic_forced",
    "get_num_threads",
    "implementations",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "log_softmax",
    "logsumexp",
    "num_threads",
    "parallel",
    "set_num_threads",
    "softmax",
    "use",
    "which",
]
