"""The array libraries xpsoftmax knows: the one list every other part reads.

The registry, the implementation listing, the conformance kit's adapters
(:mod:`xpsoftmax.testing.backends`), ``python -m xpsoftmax`` and the benchmarks all take their
library names, devices and modules from :data:`LIBRARIES`. Nothing here imports an array
library. A library array-api-compat recognises that is absent here still works, through the
generic implementation alone.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["LIBRARIES", "Library", "by_name", "installed"]


@dataclass(frozen=True)
class Library:
    """One array library.

    Attributes
    ----------
    name : str
        The short name the registry, ``Call.library`` and the reports use (the first part of
        the namespace's module name).
    module : str
        The module whose presence means the library is installed.
    distribution : str
        The package-index name (for versions in reports).
    devices : tuple of str
        The device kinds it may have, host first (``Call.device`` values).
    backend : str or None
        The package of its fast paths and traits, imported when its first array arrives.
    numpy_based : bool
        Whether it computes with NumPy's ufuncs on the host (their floating-point warnings are
        silenced during a call).
    load_early : bool
        Whether its backend is loaded when xpsoftmax is imported after the library (else at
        its first array): torch.compile's tracer cannot import modules or take locks, so a
        first call inside a compiled function would fail (``fullgraph=True``) or break the
        graph.
    """

    name: str
    module: str
    distribution: str
    devices: tuple[str, ...] = ("cpu",)
    backend: str | None = None
    numpy_based: bool = False
    load_early: bool = False

    def installed(self) -> bool:
        """Whether the library can be imported here (without importing it)."""
        return importlib.util.find_spec(self.module) is not None


LIBRARIES: tuple[Library, ...] = (
    Library("numpy", "numpy", "numpy", backend="xpsoftmax.backends.numpy", numpy_based=True),
    Library(
        "torch",
        "torch",
        "torch",
        ("cpu", "cuda"),
        backend="xpsoftmax.backends.torch",
        load_early=True,
    ),
    Library("jax", "jax", "jax", ("cpu", "gpu", "tpu"), backend="xpsoftmax.backends.jax"),
    Library("cupy", "cupy", "cupy", ("cuda",), backend="xpsoftmax.backends.cupy"),
    Library("dask", "dask", "dask", backend="xpsoftmax.backends.dask", numpy_based=True),
    Library("array_api_strict", "array_api_strict", "array-api-strict", numpy_based=True),
)

_BY_NAME = {lib.name: lib for lib in LIBRARIES}


def by_name(name: str) -> Library | None:
    """The :class:`Library` called ``name``, or None for a library xpsoftmax does not know."""
    return _BY_NAME.get(name)


def installed() -> list[Library]:
    """The libraries of :data:`LIBRARIES` that can be imported here (none is imported)."""
    return [lib for lib in LIBRARIES if lib.installed()]
