"""Which implementation serves each (operation, library, device)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from . import _registry

#: Libraries array-api-compat recognises that the listing looks for.
LIBRARIES = ("numpy", "torch", "jax", "cupy", "dask", "array_api_strict")


@dataclass(frozen=True)
class Implementation:
    """One row of :func:`implementations`."""

    op: str
    library: str
    device: str
    implementation: str
    dtypes: tuple[str, ...]
    conditions: str


def installed_libraries() -> list[str]:
    """The array libraries of :data:`LIBRARIES` that can be imported here (not imported)."""
    return [lib for lib in LIBRARIES if importlib.util.find_spec(lib) is not None]


def _devices(library: str) -> tuple[str, ...]:
    return {"torch": ("cpu", "cuda"), "jax": ("cpu", "gpu"), "cupy": ("cuda",)}.get(
        library, ("cpu",)
    )


def implementations(library: str | None = None) -> list[Implementation]:
    """Which implementation serves each (operation, library, device).

    Fast paths serve the calls their ``supports`` predicate accepts (the ``conditions``
    column); every other call runs the generic array-API implementation. Only installed
    libraries are listed; their backend modules are imported to read their registrations.

    Examples
    --------
    >>> import xpsoftmax
    >>> rows = xpsoftmax.implementations("numpy")
    >>> sorted({(r.op, r.implementation) for r in rows if r.implementation != "generic"})[0]
    ('cross_entropy', 'numpy.fused')
    """
    libraries = [library] if library is not None else installed_libraries()
    rows = []
    forced = _registry.generic_forced()
    for lib in libraries:
        entries = [] if forced else _registry.fast_paths(library=lib)
        for op in _registry.OPS:
            for device in _devices(lib):
                found = [e for e in entries if e.op == op and device in e.devices]
                for e in found:
                    rows.append(Implementation(op, lib, device, e.name, e.dtypes, e.description))
                rows.append(
                    Implementation(
                        op,
                        lib,
                        device,
                        "generic",
                        ("all real",),
                        "otherwise" if found else "always",
                    )
                )
    return rows
