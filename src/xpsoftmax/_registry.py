"""The fast-path registry: one entry per (operation, array library) implementation.

A backend module (``xpsoftmax.backends.<library>``) is imported the first time an array of its
library reaches a public function; importing it registers its fast paths. Each entry carries a
``supports(call)`` predicate that reads only the call's metadata (:class:`Call`), never array
values, so that selection costs no device synchronisation and works under tracing, and so that
the test suite can enumerate every entry and compare it with the generic implementation.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OPS",
    "Call",
    "FastPath",
    "fast_paths",
    "force_generic",
    "generic_forced",
    "load_backend",
    "register",
    "select",
]

#: The operations a fast path can serve.
OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")

#: Library name -> module holding its fast paths and traits. Libraries absent here use only
#: the generic implementation.
BACKEND_MODULES = {
    "numpy": "xpsoftmax.backends.numpy",
    "torch": "xpsoftmax.backends.torch",
    "jax": "xpsoftmax.backends.jax",
}

#: Set to 1 (or true/yes) to force the generic implementation for a whole run.
ENV_FORCE_GENERIC = "XPSOFTMAX_FORCE_GENERIC"


@dataclass(frozen=True, slots=True)
class Call:
    """What a fast path may look at: metadata of one call, never array values.

    Attributes
    ----------
    op : str
        One of :data:`OPS`.
    library : str
        ``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``, ``"dask"``, ``"array_api_strict"``...
    device : str
        The device kind: ``"cpu"``, ``"cuda"``, ``"gpu"``, ``"tpu"``...
    dtype : str
        The input's dtype name after promotion (``"float32"``, ``"bfloat16"``...).
    ndim : int
        The input's number of dimensions.
    axes : tuple of int
        The normalised (non-negative, sorted) axes the operation runs along.
    options : mapping
        Operation-specific metadata, e.g. ``temperature`` (``"one"``, ``"scalar"``,
        ``"array"``), ``where`` (bool), ``b`` (bool), ``return_sign`` (bool), ``target``
        (``"index"`` or ``"probs"``), ``weight`` (bool), ``reduction``, ``label_smoothing``
        (bool, nonzero), ``z_loss`` (bool, nonzero).
    length : int
        The number of entries each slice spans (the product of the sizes along ``axes``),
        -1 when a size is unknown (Dask). Kernels that lose accuracy on long rows read it.
    """

    op: str
    library: str
    device: str
    dtype: str
    ndim: int
    axes: tuple[int, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    length: int = 1

    def opt(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


@dataclass(frozen=True)
class FastPath:
    """One registered fast path.

    ``impl`` takes the same normalised arguments as the generic implementation of ``op``
    (see ``xpsoftmax._generic``) and must give the same answers for every call that
    ``supports`` accepts.
    """

    op: str
    library: str
    name: str
    impl: Callable[..., Any]
    supports: Callable[[Call], bool]
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32", "float64")
    description: str = ""

    def accepts(self, call: Call) -> bool:
        """Whether this entry serves ``call``: its device, its dtype and its predicate."""
        return call.device in self.devices and call.dtype in self.dtypes and self.supports(call)


_REGISTRY: dict[tuple[str, str], list[FastPath]] = {}
_LOADED: set[str] = set()
_LOCK = threading.Lock()
_state = threading.local()


def register(
    op: str,
    library: str,
    name: str,
    *,
    supports: Callable[[Call], bool],
    devices: tuple[str, ...] = ("cpu",),
    dtypes: tuple[str, ...] = ("float32", "float64"),
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``impl`` as a fast path of ``op`` for ``library``.

    Entries of one (op, library) are tried in registration order; the first whose
    ``supports`` accepts the call serves it.
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")

    def decorate(impl: Callable[..., Any]) -> Callable[..., Any]:
        entry = FastPath(op, library, name, impl, supports, devices, dtypes, description)
        entries = _REGISTRY.setdefault((op, library), [])
        entries[:] = [e for e in entries if e.name != name] + [entry]
        return impl

    return decorate


def load_backend(library: str) -> None:
    """Import the backend module of ``library`` once (which registers its fast paths)."""
    if library in _LOADED:
        return
    with _LOCK:
        if library in _LOADED:
            return
        module = BACKEND_MODULES.get(library)
        if module is not None:
            importlib.import_module(module)
        _LOADED.add(library)


def fast_paths(op: str | None = None, library: str | None = None) -> list[FastPath]:
    """Every registered fast path, optionally filtered. Loads the backends of installed
    libraries named in ``BACKEND_MODULES`` (only those already importable)."""
    libraries = [library] if library is not None else list(BACKEND_MODULES)
    for lib in libraries:
        if _importable(lib):
            load_backend(lib)
    return [
        entry
        for (entry_op, entry_lib), entries in _REGISTRY.items()
        for entry in entries
        if (op is None or entry_op == op) and (library is None or entry_lib == library)
    ]


def _importable(library: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(library) is not None


def _env_lookup() -> Callable[[], Any]:
    """A cheap reader of the raw environment variable: ``os.environ.get`` encodes and decodes
    on every call, which is a sizeable part of the overhead of a small call. Reads the
    mapping behind ``os.environ`` (kept in step with it by CPython) where it is there."""
    data = getattr(os.environ, "_data", None)
    encode = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and encode is not None:
        key = encode(ENV_FORCE_GENERIC)
        return lambda: data.get(key)
    return lambda: os.environ.get(ENV_FORCE_GENERIC)  # pragma: no cover


_raw_env = _env_lookup()
_TRUE = frozenset({"1", "true", "yes", "on"})


def generic_forced() -> bool:
    """True when the generic implementation is forced (context manager or environment)."""
    if getattr(_state, "force_generic", 0) > 0:
        return True
    raw = _raw_env()
    if not raw:
        return False
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    return value.strip().lower() in _TRUE


@contextlib.contextmanager
def force_generic() -> Iterator[None]:
    """Context manager: inside it, every call uses the generic array-API implementation.

    The setting is per thread. For a whole run set the environment variable
    ``XPSOFTMAX_FORCE_GENERIC=1``.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> with xpsoftmax.force_generic():
    ...     xpsoftmax.which("softmax", x)
    'generic'
    """
    _state.force_generic = getattr(_state, "force_generic", 0) + 1
    try:
        yield
    finally:
        _state.force_generic -= 1


def select(call: Call) -> FastPath | None:
    """The fast path serving ``call``, or None for the generic implementation."""
    if generic_forced():
        return None
    load_backend(call.library)
    for entry in _REGISTRY.get((call.op, call.library), ()):
        if entry.accepts(call):
            return entry
    return None
