"""Which implementation serves each (operation, library, device)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import _libraries, _registry

#: Names of the libraries the listing looks for (those of :data:`_libraries.LIBRARIES`).
LIBRARIES = tuple(lib.name for lib in _libraries.LIBRARIES)


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
    return [lib.name for lib in _libraries.installed()]


def _devices(library: str) -> tuple[str, ...]:
    """The device kinds of ``library``; the host alone for a library xpsoftmax does not know."""
    lib = _libraries.by_name(library)
    return lib.devices if lib is not None else ("cpu",)


class ImplementationTable(list[Implementation]):
    """The rows of :func:`implementations`: a list that prints as an aligned text table.

    It is an ordinary list of :class:`Implementation` rows (index it, iterate it, compare it
    with a list); only its ``repr`` and ``str`` differ: a header, a rule, then one line per row
    with the columns op, library, device, implementation, dtypes and conditions.
    """

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "op",
        "library",
        "device",
        "implementation",
        "dtypes",
        "conditions",
    )

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (r.op, r.library, r.device, r.implementation, ", ".join(r.dtypes), r.conditions)
            for r in self
        ]

    def __repr__(self) -> str:
        rows = self._cells()
        widths = [max(len(r[i]) for r in [self.COLUMNS, *rows]) for i in range(len(self.COLUMNS))]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        rule = tuple("-" * w for w in widths)
        return "\n".join([line(self.COLUMNS), line(rule), *(line(r) for r in rows)])

    __str__ = __repr__


def implementations(library: str | None = None) -> ImplementationTable:
    """Which implementation serves each (operation, library, device).

    Fast paths serve the calls their ``supports`` predicate accepts (the ``conditions``
    column), highest priority first; every other call runs the generic array-API
    implementation. A fast path that cannot run on this machine (its availability check
    failed: no GPU, an optional dependency missing) says why in ``conditions``; a module of
    fast paths that failed to import is listed by ``xpsoftmax._registry.broken_modules()``. Only installed
    libraries are listed; their backend modules are imported to read their registrations.

    Parameters
    ----------
    library : str, optional
        List only this array library (``"numpy"``, ``"torch"``, ...); by default every
        installed one.

    Returns
    -------
    list of Implementation
        One row per (operation, library, device, implementation), fast paths first and the
        generic fallback last. The list prints as an aligned table at the prompt.

    Examples
    --------
    >>> import xpsoftmax
    >>> rows = xpsoftmax.implementations("numpy")
    >>> sorted({r.implementation for r in rows if r.op == "cross_entropy"})
    ['generic', 'numpy.compiled', 'numpy.fused']
    >>> rows[0].op, rows[0].library, rows[0].device
    ('softmax', 'numpy', 'cpu')
    >>> rows  # doctest: +ELLIPSIS
    op  library  device  implementation  dtypes  conditions
    --...
    softmax  numpy  cpu  numpy.inplace  float16, float32, float64  where=None, ...
    softmax  numpy  cpu  generic  all real  otherwise
    ...
    """
    libraries = [library] if library is not None else installed_libraries()
    rows = ImplementationTable()
    forced = _registry.generic_forced()
    for lib in libraries:
        entries = [] if forced else _registry.fast_paths(library=lib)
        for op in _registry.OPS:
            for device in _devices(lib):
                found = [e for e in entries if e.op == op and device in e.devices]
                for e in found:
                    why = e.unavailable()
                    conditions = e.description if why is None else f"unavailable here: {why}"
                    rows.append(Implementation(op, lib, device, e.name, e.dtypes, conditions))
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
