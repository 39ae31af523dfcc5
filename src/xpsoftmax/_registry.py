"""The fast-path registry: the implementations each (operation, array library) may use.

A library's backend package (``xpsoftmax.backends.<library>``, named in
``xpsoftmax._libraries.LIBRARIES``) is imported the first time an array of that library
reaches a public function, then each of its modules of fast paths, which register their
entries. An entry carries a priority, an availability check (run once, lazily) and a
``supports(call)`` predicate that reads only the call's metadata (:class:`Call`), never array
values, so that selection costs no device synchronisation and works under tracing, and so that
the conformance kit can enumerate every entry and compare it with the generic implementation.
Entries can be picked by name for a block (:func:`use`) or a run (``XPSOFTMAX_IMPLEMENTATION``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _libraries

__all__ = [
    "OPS",
    "Call",
    "CrossEntropyOptions",
    "FastPath",
    "LinearCrossEntropyOptions",
    "LogsumexpOptions",
    "NormalizationOptions",
    "fast_paths",
    "force_generic",
    "generic_forced",
    "load_backend",
    "register",
    "select",
    "use",
]

#: The operations a fast path can serve.
OPS = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
)

#: Set to 1 (or true/yes) to force the generic implementation for a whole run.
ENV_FORCE_GENERIC = "XPSOFTMAX_FORCE_GENERIC"

#: Comma-separated implementation names to use for a whole run (see :func:`use`).
ENV_IMPLEMENTATION = "XPSOFTMAX_IMPLEMENTATION"


# --- What a fast path may look at ------------------------------------------------------------
# One typed record of options per kind of operation: what the checked call says about its
# options, as metadata (kinds and flags, never the values of arrays).


@dataclass(frozen=True, slots=True)
class NormalizationOptions:
    """softmax and log_softmax: ``temperature`` is the kind of temperature (``"one"``,
    ``"positive"``, ``"zero"``, ``"inf"``, ``"array"``); ``where`` whether a mask is given."""

    temperature: str = "one"
    where: bool = False


@dataclass(frozen=True, slots=True)
class LogsumexpOptions:
    """logsumexp: whether ``b`` and ``where`` are given, and the flags as passed."""

    keepdims: bool = False
    b: bool = False
    return_sign: bool = False
    where: bool = False


@dataclass(frozen=True, slots=True)
class CrossEntropyOptions:
    """cross_entropy and cross_entropy_with_grad: the target kind (``"index"`` or
    ``"probs"``), whether class weights are given, the reduction, whether label smoothing and
    the z-loss are nonzero, and the kind of temperature."""

    target: str = "index"
    weight: bool = False
    reduction: str = "mean"
    label_smoothing: bool = False
    z_loss: bool = False
    temperature: str = "one"


class Chunks(NamedTuple):
    """The chunks of logits asked for: rows and classes per chunk (None: the default)."""

    rows: int | None = None
    classes: int | None = None


_DEFAULT_CHUNKS = Chunks()  # the defaults


@dataclass(frozen=True, slots=True)
class LinearCrossEntropyOptions:
    """linear_cross_entropy and linear_cross_entropy_with_grad: those of the cross-entropy on
    the logits it stands for, whether a bias is given, and the chunks asked for
    (``_checks.Chunks``: rows and classes per chunk, None for the defaults)."""

    target: str = "index"
    weight: bool = False
    reduction: str = "mean"
    label_smoothing: bool = False
    z_loss: bool = False
    temperature: str = "one"
    bias: bool = False
    chunk_size: Chunks = _DEFAULT_CHUNKS


Options = NormalizationOptions | LogsumexpOptions | CrossEntropyOptions | LinearCrossEntropyOptions


@dataclass(frozen=True, slots=True)
class Call:
    """What a fast path may look at: metadata of one call, never array values.

    Attributes
    ----------
    op : str
        One of :data:`OPS`. For the linear cross-entropy, the input is ``h`` (its dtype,
        shape and layout) and ``axes`` is its hidden axis.
    library : str
        A name of ``xpsoftmax._libraries.LIBRARIES`` (or another library's short name).
    device : str
        The device kind: ``"cpu"``, ``"cuda"``, ``"gpu"``, ``"tpu"``...
    dtype : str
        The input's dtype name after promotion (``"float32"``, ``"bfloat16"``...).
    ndim : int
        The input's number of dimensions.
    axes : tuple of int
        The normalised (non-negative, sorted) axes the operation runs along.
    options : NormalizationOptions, LogsumexpOptions, CrossEntropyOptions or
        LinearCrossEntropyOptions
        The operation's options as metadata.
    shape : tuple of int
        The input's shape (after broadcasting with ``b``); -1 for a size not known yet (Dask).
    contiguous : bool
        Whether the input is row-major contiguous (libraries without strides: True).
    pieces : tuple of int
        How many chunks (Dask) or shards (JAX) split each of ``axes``: 1 for whole slices in one
        piece, 0 where it is not known.
    """

    op: str
    library: str
    device: str
    dtype: str
    ndim: int
    axes: tuple[int, ...]
    options: Options = NormalizationOptions()
    shape: tuple[int, ...] = ()
    contiguous: bool = True
    pieces: tuple[int, ...] = ()

    @property
    def length(self) -> int:
        """The number of entries each slice spans (the product of the sizes along ``axes``),
        -1 when a size is unknown. Kernels that lose accuracy on long rows read it."""
        n = 1
        for a in self.axes:
            if self.shape[a] < 0:
                return -1
            n *= self.shape[a]
        return n

    @property
    def whole_slices(self) -> bool:
        """Whether every slice lies in one chunk or shard (known)."""
        return all(p == 1 for p in self.pieces)

    def opt(self, name: str, default: Any = None) -> Any:
        """The option ``name`` of :attr:`options` (``default`` where this kind has none)."""
        return getattr(self.options, name, default)


@dataclass(frozen=True)
class FastPath:
    """One registered fast path.

    ``impl`` takes the same normalised arguments as the generic implementation of ``op``
    (see ``xpsoftmax._generic``) and must give the same answers for every call that
    ``supports`` accepts. Among the entries of one (op, library) that accept a call, the one
    of highest ``priority`` serves it (registration order breaks ties). ``available`` says,
    once, whether the entry can run on this machine at all (an optional dependency, a
    device): None when it can, else the reason. An ``opt_in`` entry serves only calls made
    inside ``use(name)`` (or with its name in ``XPSOFTMAX_IMPLEMENTATION``), whatever its
    priority: a kernel not yet measured where it runs.
    """

    op: str
    library: str
    name: str
    impl: Callable[..., Any]
    supports: Callable[[Call], bool]
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32", "float64")
    description: str = ""
    priority: int = 0
    available: Callable[[], str | None] | None = None
    opt_in: bool = False

    def accepts(self, call: Call) -> bool:
        """Whether this entry serves ``call``: its device, its dtype and its predicate."""
        return call.device in self.devices and call.dtype in self.dtypes and self.supports(call)

    def unavailable(self) -> str | None:
        """Why this entry cannot run here (checked once, then remembered), or None."""
        if self.available is None:
            return None
        key = (self.op, self.library, self.name)
        if key not in _UNAVAILABLE:
            reason: str | None
            try:
                reason = self.available()
            except Exception as exc:  # a broken optional dependency: not available
                reason = f"{type(exc).__name__}: {exc}"
            _UNAVAILABLE[key] = reason
        return _UNAVAILABLE[key]


_REGISTRY: dict[tuple[str, str], list[FastPath]] = {}
_UNAVAILABLE: dict[tuple[str, str, str], str | None] = {}
#: (library, module) -> why the module of fast paths could not be imported.
_BROKEN_MODULES: dict[tuple[str, str], str] = {}
_LOADED: set[str] = set()
_LOCK = threading.RLock()
_state = threading.local()


def register(
    op: str,
    library: str,
    name: str,
    *,
    supports: Callable[[Call], bool],
    priority: int,
    devices: tuple[str, ...] = ("cpu",),
    dtypes: tuple[str, ...] = ("float32", "float64"),
    available: Callable[[], str | None] | None = None,
    description: str = "",
    opt_in: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``impl`` as a fast path of ``op`` for ``library``.

    ``priority`` orders the entries of one (op, library): the highest that accepts a call
    serves it. The conventions: 100 for kernels written for one device (Triton, Pallas,
    CUDA, compiled CPU code), 50 for compositions of the library's own operations; an entry
    that must win over another for some calls takes a higher number and a narrower
    ``supports``. ``available`` is called once, at the first call the entry could serve,
    and returns None or the reason it cannot run here (import optional dependencies inside
    it, not at module level). ``opt_in=True`` keeps the entry out of the choice unless a
    ``use(...)`` names it (see :class:`FastPath`).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")

    def decorate(impl: Callable[..., Any]) -> Callable[..., Any]:
        entry = FastPath(
            op, library, name, impl, supports, devices, dtypes, description, priority, available,
            opt_in,
        )  # fmt: skip
        with _LOCK:
            entries = [e for e in _REGISTRY.get((op, library), []) if e.name != name] + [entry]
            # sorted() is stable: registration order breaks ties. A new list, so that a
            # thread iterating the old one meanwhile is not disturbed.
            _REGISTRY[(op, library)] = sorted(entries, key=lambda e: -e.priority)
        return impl

    return decorate


def load_backend(library: str) -> None:
    """Import the backend package of ``library`` once, then each of its modules of fast paths
    (which register them). A module that fails to import is recorded (see
    :func:`broken_modules`) and leaves the library's other fast paths working."""
    if library in _LOADED:
        return
    with _LOCK:
        if library in _LOADED:
            return
        lib = _libraries.by_name(library)
        if lib is not None and lib.backend is not None:
            package = importlib.import_module(lib.backend)
            for module in getattr(package, "FAST_PATH_MODULES", ()):
                try:
                    importlib.import_module(f"{lib.backend}.{module}")
                except ImportError as exc:
                    _BROKEN_MODULES[(library, module)] = f"{type(exc).__name__}: {exc}"
        _LOADED.add(library)


def broken_modules() -> dict[tuple[str, str], str]:
    """(library, module) -> why that module of fast paths could not be imported."""
    return dict(_BROKEN_MODULES)


def fast_paths(op: str | None = None, library: str | None = None) -> list[FastPath]:
    """Every registered fast path, optionally filtered, highest priority first. Loads the
    backends of the installed libraries (only those importable)."""
    for lib in _libraries.LIBRARIES:
        if (library is None or lib.name == library) and lib.installed():
            load_backend(lib.name)
    return [
        entry
        for (entry_op, entry_lib), entries in _REGISTRY.items()
        for entry in entries
        if (op is None or entry_op == op) and (library is None or entry_lib == library)
    ]


def _env_lookup(variable: str) -> Callable[[], Any]:
    """A cheap reader of a raw environment variable: ``os.environ.get`` encodes and decodes
    on every call, which is a sizeable part of the overhead of a small call. Reads the
    mapping behind ``os.environ`` (kept in step with it by CPython) where it is there."""
    data = getattr(os.environ, "_data", None)
    encode = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and encode is not None:
        key = encode(variable)
        return lambda: data.get(key)
    return lambda: os.environ.get(variable)  # pragma: no cover


_raw_force = _env_lookup(ENV_FORCE_GENERIC)
_raw_pick = _env_lookup(ENV_IMPLEMENTATION)
_TRUE = frozenset({"1", "true", "yes", "on"})
_PARSED: dict[Any, frozenset[str]] = {}


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def generic_forced() -> bool:
    """True when the generic implementation is forced (context manager or environment)."""
    return _forced(_picked())


def _forced(picked: frozenset[str]) -> bool:
    if "generic" in picked:
        return True
    raw = _raw_force()
    return bool(raw) and _text(raw).strip().lower() in _TRUE


def _picked() -> frozenset[str]:
    """The implementation names picked for this thread (innermost :func:`use`) or, outside
    any, by :data:`ENV_IMPLEMENTATION`."""
    stack = getattr(_state, "picked", None)
    if stack:
        return stack[-1]
    raw = _raw_pick()
    if not raw:
        return frozenset()
    names = _PARSED.get(raw)
    if names is None:
        names = _PARSED[raw] = _check_names(
            [n.strip() for n in _text(raw).split(",") if n.strip()], ENV_IMPLEMENTATION
        )
    return names


#: Sets of names found valid: ``use(...)`` around every call of a loop checked its names each
#: time (~6 us: the registry listed per name). Valid stays valid: register() only adds or
#: replaces entries by name, and a set is kept only when every library it names was installed
#: (one that was not is checked again: it may be installed since). Failures are not kept. A
#: test that swaps the registry or the libraries for fakes resets this too.
_CHECKED: set[frozenset[str]] = set()


def _check_names(names: list[str], source: str) -> frozenset[str]:
    """The names, each checked: ``"generic"`` or a fast path of an installed library."""
    checked = frozenset(names)
    if checked in _CHECKED:
        return checked
    complete = True
    for name in names:
        if name == "generic":
            continue
        library = name.split(".", 1)[0]
        lib = _libraries.by_name(library)
        if lib is None:
            known = ", ".join(x.name for x in _libraries.LIBRARIES)
            raise ValueError(
                f"{source}: {name!r} names no implementation: implementation names are "
                f"'generic' or '<library>.<name>' for a library of {known}"
            )
        if not lib.installed():
            complete = False
            continue  # a run configured for several machines: nothing to pick here
        registered = {e.name for e in fast_paths(library=library)}
        if name not in registered:
            raise ValueError(
                f"{source}: {name!r} is not an implementation of {library}; "
                f"its implementations: {[*sorted(registered), 'generic']}"
            )
    if complete:
        _CHECKED.add(checked)
    return checked


@contextlib.contextmanager
def use(*names: str) -> Iterator[None]:
    """Context manager: inside it, calls use the implementations named.

    For an (operation, library) that has an implementation of one of the names, only such
    implementations serve its calls, and a call they do not support takes the generic
    implementation; other operations and libraries choose as usual. ``use("generic")`` is
    :func:`force_generic`. The setting is per thread and the innermost ``use`` wins; for a
    whole run set ``XPSOFTMAX_IMPLEMENTATION`` (comma-separated names). :func:`which` says
    what serves a call, :func:`implementations` lists the names.

    Parameters
    ----------
    *names : str
        ``"generic"`` or fast path names such as ``"numpy.inplace"`` or ``"torch.native"``.

    Raises
    ------
    ValueError
        For a name that is not ``"generic"`` and no fast path of an installed library.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> x = np.ones((2, 3))
    >>> with xpsoftmax.use("generic"):
    ...     xpsoftmax.which("softmax", x)
    'generic'
    >>> with xpsoftmax.use("numpy.inplace"):
    ...     xpsoftmax.which("softmax", x)
    'numpy.inplace'
    """
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"use() takes implementation names (str), got {name!r}")
    picked = _check_names(list(names), "use()")
    stack = getattr(_state, "picked", None)
    if stack is None:
        stack = _state.picked = []
    stack.append(picked)
    try:
        yield
    finally:
        stack.pop()


def force_generic() -> contextlib.AbstractContextManager[None]:
    """Context manager: inside it, every call uses the generic array-API implementation.

    The same as ``use("generic")``. The setting is per thread. For a whole run set the
    environment variable ``XPSOFTMAX_FORCE_GENERIC=1``.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> with xpsoftmax.force_generic():
    ...     xpsoftmax.which("softmax", x)
    'generic'
    """
    return use("generic")


def select(call: Call) -> FastPath | None:
    """The fast path serving ``call``, or None for the generic implementation."""
    picked = _picked()
    if _forced(picked):
        return None
    load_backend(call.library)
    entries = _REGISTRY.get((call.op, call.library), ())
    if picked and any(e.name in picked for e in entries):
        entries = [e for e in entries if e.name in picked]
    for entry in entries:
        if entry.opt_in and not (picked and entry.name in picked):
            continue
        if entry.accepts(call) and entry.unavailable() is None:
            return entry
    return None
