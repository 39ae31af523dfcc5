"""The array libraries and devices the conformance kit runs on: one adapter each.

A :class:`Backend` makes an array of its library from NumPy data or nested lists
(:meth:`Backend.asarray`), brings one back to the host (:meth:`Backend.to_numpy`), waits for
queued work (:meth:`Backend.sync`), and says which dtypes it has and whether it is lazy. For
timing it also gives a plain-copy baseline (:meth:`Backend.copier`), the library's compiler
where it has one (:meth:`Backend.jit`) and its autodiff (:meth:`Backend.value_and_grad`).
Entries whose library is not installed, or whose device is absent, report why
(:meth:`Backend.probe`); :meth:`Backend.pytest_params` turns them into pytest parameters that
skip with that reason.

:data:`BACKENDS` holds one entry per library and device of ``xpsoftmax._libraries.LIBRARIES``
(the one list of libraries); what differs between libraries is in one small adapter class per
library below. The kit's tests, ``python -m xpsoftmax`` (its self-check and ``bench``) and the
asv suite all use these adapters. The asv suite loads this file from the checkout by path, so
it imports nothing of xpsoftmax but :mod:`xpsoftmax._libraries`, relatively.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import _libraries

__all__ = ["BACKENDS", "BY_ID", "Backend", "usable_backends"]


# --- one adapter per library -----------------------------------------------------------------
class _Adapter:
    """What the kit does with the arrays of one library, on any of its devices.

    The defaults suit a library of host arrays with NumPy's conversions; a subclass per library
    overrides what differs. An unknown library gets this class: it reads arrays back with
    ``np.asarray`` but cannot make them.
    """

    #: The floating dtypes the kit checks.
    dtypes: tuple[str, ...] = ("float32", "float64")
    autodiff = False
    lazy = False
    #: The ways of splitting arrays into chunks that the kit's grid runs through (the first
    #: is the default); () for libraries without chunks.
    layouts: tuple[str, ...] = ()
    #: The integer dtype of class labels it holds in its default configuration.
    index_dtype = "int64"
    #: The module whose attributes are its dtypes (None: NumPy's dtypes).
    dtype_module: str | None = None

    def device_reason(self, device: str) -> str | None:
        """Why ``device`` (not the host) is absent here; None when present."""
        return f"no {device} device known to the kit"

    def dtype(self, name: str) -> Any:
        if self.dtype_module is None:
            return np.dtype(name)
        return getattr(importlib.import_module(self.dtype_module), name)

    def has_dtype(self, name: str) -> bool:
        """Whether arrays of ``name`` can be made in the library's present configuration."""
        return True

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        raise NotImplementedError("the conformance kit has no adapter for this library")

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, x: Any, device: str) -> Any:
        """Wait for ``x`` (an array or a tuple of arrays); return what can be read."""
        return x

    def copier(self, x: Any, device: str) -> Callable[[], Any]:
        # No preallocated copy in the array API: a fresh copy, which also allocates.
        import array_api_compat

        xp = array_api_compat.array_namespace(x)
        return lambda: self.sync(xp.asarray(x, copy=True), device)

    def jit(self, f: Callable[..., Any]) -> Callable[..., Any]:
        return f

    def nbytes(self, x: Any) -> int:
        return int(getattr(x, "nbytes", 0))

    def value_and_grad(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        raise TypeError("this library has no autodiff")

    def requires_grad(self, x: Any) -> Any:
        return x


class _NumPy(_Adapter):
    dtypes = ("float16", "float32", "float64")

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        return a.astype(dtype) if dtype else a.copy()

    def copier(self, x: Any, device: str) -> Callable[[], Any]:
        buf = np.empty_like(x)

        def copy() -> Any:
            np.copyto(buf, x)
            return buf

        return copy


class _Strict(_Adapter):
    dtype_module = "array_api_strict"

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        import array_api_strict as s

        out = s.asarray(a)
        return s.astype(out, self.dtype(dtype)) if dtype else out

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.from_dlpack(x)

    def nbytes(self, x: Any) -> int:
        return int(np.from_dlpack(x).nbytes)  # a view: its arrays have no nbytes


class _Dask(_Adapter):
    dtypes = ("float16", "float32", "float64")
    lazy = True
    #: "halves": every axis in two chunks (a chunked class axis); "rows": arrays of two or
    #: more axes keep their last axis whole (logits chunked by rows, the usual case).
    layouts = ("halves", "rows")
    _state = threading.local()
    #: How the kit reads results: in the calling thread, the graph as built (its arrays are
    #: small: Dask's thread pool and graph optimisation cost more than the arithmetic).
    #: ``sync`` (timing) computes as users do.
    _compute: ClassVar[dict[str, Any]] = {"scheduler": "sync", "optimize_graph": False}

    @contextlib.contextmanager
    def layout(self, name: str) -> Iterator[None]:
        before = getattr(self._state, "layout", self.layouts[0])
        self._state.layout = name
        try:
            yield
        finally:
            self._state.layout = before

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        import dask.array as da

        a = a.astype(dtype) if dtype else a
        chunks = [max(1, (n + 1) // 2) for n in a.shape]  # several chunks per axis
        if a.ndim >= 2 and getattr(self._state, "layout", "halves") == "rows":
            chunks[-1] = max(1, a.shape[-1])
        return da.from_array(a, chunks=tuple(chunks))

    def to_numpy(self, x: Any) -> np.ndarray:
        import dask

        return np.asarray(dask.compute(x, **self._compute)[0])  # a result of sync too

    def sync(self, x: Any, device: str) -> Any:
        import dask

        # dask.compute passes computed (NumPy) values through: syncing twice is harmless.
        if isinstance(x, (tuple, list)):
            return tuple(dask.compute(*x))  # one pass over the shared graph
        return dask.compute(x)[0]


class _Torch(_Adapter):
    dtypes = ("float16", "bfloat16", "float32", "float64")
    autodiff = True
    dtype_module = "torch"

    def device_reason(self, device: str) -> str | None:
        import torch

        if device == "cuda":
            return None if torch.cuda.is_available() else "no CUDA device"
        return super().device_reason(device)

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        import torch

        # A copy: torch.as_tensor would share the caller's NumPy memory.
        t = torch.as_tensor(a.copy(), device=device)
        return t.to(self.dtype(dtype)) if dtype else t

    def to_numpy(self, x: Any) -> np.ndarray:
        import torch

        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.to(torch.float64)
        return x.numpy()

    def sync(self, x: Any, device: str) -> Any:
        if device == "cuda":
            import torch

            torch.cuda.synchronize()  # the whole queue: every array of a tuple at once
        return x

    def copier(self, x: Any, device: str) -> Callable[[], Any]:
        import torch

        buf = torch.empty_like(x)
        return lambda: self.sync(buf.copy_(x), device)

    def nbytes(self, x: Any) -> int:
        return int(x.element_size() * x.numel())

    def value_and_grad(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        import torch

        def loss_and_grad(x: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            value = loss(x, *args, **kwargs)
            return value, torch.autograd.grad(value, x)[0]

        return loss_and_grad

    def requires_grad(self, x: Any) -> Any:
        return x.detach().requires_grad_(True)


class _Jax(_Adapter):
    dtypes = ("float16", "bfloat16", "float32", "float64")
    autodiff = True
    dtype_module = "jax.numpy"
    # int64 needs JAX's 64-bit mode, which is off by default.
    index_dtype = "int32"

    def device_reason(self, device: str) -> str | None:
        import jax

        try:
            jax.devices(device)
        except RuntimeError:
            return f"no {device.upper()} for JAX"
        return None

    def has_dtype(self, name: str) -> bool:
        import jax

        return name not in ("float64", "int64") or bool(jax.config.read("jax_enable_x64"))

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        import jax
        import jax.numpy as jnp

        out = jax.device_put(jnp.asarray(a), jax.devices(device)[0])
        return out.astype(self.dtype(dtype)) if dtype else out

    def to_numpy(self, x: Any) -> np.ndarray:
        import jax.numpy as jnp

        if x.dtype in (jnp.bfloat16,):
            x = x.astype(jnp.float32)
        return np.asarray(x)

    def sync(self, x: Any, device: str) -> Any:
        import jax

        return jax.block_until_ready(x)  # arrays, or tuples of them

    def copier(self, x: Any, device: str) -> Callable[[], Any]:
        import jax

        copy = jax.jit(lambda a: a.copy())
        return lambda: self.sync(copy(x), device)

    def jit(self, f: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        return jax.jit(f)

    def value_and_grad(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        return jax.value_and_grad(loss)


class _CuPy(_Adapter):
    dtypes = ("float16", "float32", "float64")
    dtype_module = "cupy"

    def device_reason(self, device: str) -> str | None:
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, no device
            return f"CuPy has no device: {exc}"
        return None

    def asarray(self, a: np.ndarray, dtype: str | None, device: str) -> Any:
        import cupy

        return cupy.asarray(a.astype(dtype) if dtype else a)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def sync(self, x: Any, device: str) -> Any:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
        return x

    def copier(self, x: Any, device: str) -> Callable[[], Any]:
        import cupy

        buf = cupy.empty_like(x)

        def copy() -> Any:
            cupy.copyto(buf, x)
            return self.sync(buf, device)

        return copy


#: The adapter of each library of ``xpsoftmax._libraries.LIBRARIES``, by name.
_ADAPTERS: dict[str, _Adapter] = {
    "numpy": _NumPy(),
    "torch": _Torch(),
    "jax": _Jax(),
    "cupy": _CuPy(),
    "dask": _Dask(),
    "array_api_strict": _Strict(),
}


def _adapter(library: str) -> _Adapter:
    return _ADAPTERS.get(library) or _Adapter()


# --- the public adapter ----------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One array library on one device."""

    id: str
    library: str
    device: str
    dtypes: tuple[str, ...]
    autodiff: bool = False
    #: Reason to skip, computed lazily: None when usable.
    probe: Callable[[], str | None] = field(default=lambda: None, repr=False)

    @property
    def lazy(self) -> bool:
        """Whether arrays of this backend hold a graph that runs only when computed (Dask)."""
        return _adapter(self.library).lazy

    @property
    def layouts(self) -> tuple[str, ...]:
        """The chunk layouts the kit's grid runs through (Dask: ``"halves"``, every axis in
        two chunks, and ``"rows"``, the last axis of 2-D and larger arrays whole); () for
        libraries without chunks."""
        return _adapter(self.library).layouts

    @contextlib.contextmanager
    def layout(self, name: str) -> Iterator[None]:
        """Context manager: :meth:`asarray` in this thread splits arrays as ``name`` (one of
        :attr:`layouts`) says."""
        adapter = _adapter(self.library)
        if name not in adapter.layouts:
            raise ValueError(f"layout must be one of {adapter.layouts} for {self.id}, got {name!r}")
        with adapter.layout(name):  # type: ignore[attr-defined]
            yield

    @property
    def index_dtype(self) -> str:
        """The integer dtype for class labels that the library holds without configuration:
        ``"int32"`` for JAX (int64 needs its 64-bit mode), ``"int64"`` elsewhere."""
        return _adapter(self.library).index_dtype

    def usable(self) -> bool:
        """Whether the library is installed and the device present."""
        return self.probe() is None

    def fast_paths(self, op: str) -> list[Any]:
        """The registered fast paths of ``op`` that can serve this backend by default: its
        library, its device, runnable here (a CUDA-only Triton entry does not count on a CPU)
        and not opt-in (those serve only inside ``use(name)``)."""
        import xpsoftmax

        return [
            e
            for e in xpsoftmax.fast_paths(op, self.library)
            if self.device in e.devices and e.unavailable() is None and not e.opt_in
        ]

    def available_dtypes(self) -> tuple[str, ...]:
        """The ``dtypes`` this backend can make arrays of now (imports the library).

        JAX has float64 only in its 64-bit mode (``jax_enable_x64``; the kit's fixtures turn
        it on); elsewhere this is ``dtypes``.

        Examples
        --------
        >>> from xpsoftmax.testing import BY_ID
        >>> BY_ID["numpy"].available_dtypes()
        ('float16', 'float32', 'float64')
        """
        adapter = _adapter(self.library)
        return tuple(d for d in self.dtypes if adapter.has_dtype(d))

    @property
    def gpu(self) -> bool:
        """Whether the device is a GPU (its tests carry the ``gpu`` mark)."""
        return self.device in ("cuda", "gpu")

    def marks(self) -> list[Any]:
        """The pytest marks of this backend's tests: ``gpu`` on a GPU device."""
        import pytest

        return [pytest.mark.gpu] if self.gpu else []

    def param(self) -> Any:
        """This backend as a ``pytest.param`` (id ``"torch:cpu"``...) that skips when unusable,
        marked ``gpu`` on a GPU device."""
        import pytest

        reason = self.probe()
        marks = self.marks()
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"{self.id}: {reason}"))
        return pytest.param(self, id=self.id, marks=marks)

    @staticmethod
    def pytest_params(*, autodiff: bool = False, library: str | None = None) -> list[Any]:
        """Every backend as a pytest parameter (see :meth:`param`), optionally only those with
        autodiff or of one library.

        Examples
        --------
        >>> from xpsoftmax.testing import Backend
        >>> [p.id for p in Backend.pytest_params(library="numpy")]
        ['numpy']
        """
        return [
            b.param()
            for b in BACKENDS
            if (b.autodiff or not autodiff) and (library is None or b.library == library)
        ]

    # -- running ------------------------------------------------------------------------------
    def sync(self, x: Any) -> Any:
        """Wait until ``x`` is computed (GPU queues, JAX dispatch, a Dask graph); returns the
        computed array (for Dask, the NumPy result), for timing and for reading it.

        ``x`` may also be a tuple of arrays (a loss and its gradient): all of them are waited
        for (for Dask, computed in one pass, as a tuple).
        """
        return _adapter(self.library).sync(x, self.device)

    def copier(self, x: Any) -> Callable[[], Any]:
        """A zero-argument callable that copies ``x`` into a buffer allocated here, once, waits
        for the copy and returns it: the baseline of a memory-bound operation (it reads and
        writes :meth:`nbytes` of ``x`` each). Dask and array-api-strict, which cannot copy into
        an existing array, allocate a fresh copy each time.

        Examples
        --------
        >>> import numpy as np
        >>> from xpsoftmax.testing import BY_ID
        >>> copy = BY_ID["numpy"].copier(np.ones(3))
        >>> copy()
        array([1., 1., 1.])
        """
        return _adapter(self.library).copier(x, self.device)

    def jit(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """``f`` compiled where the library compiles array functions (``jax.jit``); ``f``
        itself elsewhere."""
        return _adapter(self.library).jit(f)

    def nbytes(self, x: Any) -> int:
        """Bytes held by an array of this backend, or by all arrays of a tuple or list."""
        if isinstance(x, (tuple, list)):
            return sum(self.nbytes(a) for a in x)
        return _adapter(self.library).nbytes(x)

    def value_and_grad(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        """``loss(x, *args)`` (a scalar) as a function returning the loss and its gradient
        with respect to ``x``, by the library's autodiff (torch autograd, on an ``x`` from
        :meth:`requires_grad`; ``jax.value_and_grad``).

        Raises
        ------
        TypeError
            For a library without autodiff (``autodiff`` is False).
        """
        return _adapter(self.library).value_and_grad(loss)

    def requires_grad(self, x: Any) -> Any:
        """``x`` as an input that :meth:`value_and_grad` can differentiate with respect to:
        for torch a detached leaf that requires grad; ``x`` itself elsewhere."""
        return _adapter(self.library).requires_grad(x)

    # -- conversion ---------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        """The array-API namespace of this backend's arrays (array-api-compat's)."""
        import array_api_compat

        return array_api_compat.array_namespace(self.asarray(np.zeros(1)))

    def dtype(self, name: str) -> Any:
        """The library's dtype object called ``name`` (``"float32"``...)."""
        return _adapter(self.library).dtype(name)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """NumPy data or nested lists -> a new array of this backend, on its device
        (``dtype`` by name; None keeps NumPy's)."""
        return _adapter(self.library).asarray(np.asarray(a), dtype, self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """This backend's array -> NumPy float64 (or the integer/bool dtype it holds)."""
        seen = getattr(_converted, "arrays", None)
        if seen is None:
            return _adapter(self.library).to_numpy(x)
        hit = seen.get(id(x))
        if hit is None or hit[0] is not x:
            hit = seen[id(x)] = (x, _adapter(self.library).to_numpy(x))
        return hit[1]

    def numpy_float(self, x: Any) -> np.ndarray:
        """:meth:`to_numpy`, with floating results in float64."""
        out = self.to_numpy(x)
        return out.astype(np.float64) if out.dtype.kind == "f" else out


_converted = threading.local()


@contextlib.contextmanager
def converting_once() -> Iterator[None]:
    """Within, :meth:`Backend.to_numpy` converts each array once and hands out that copy
    again (read it, do not write it): the kit reads one input or result several times (its
    magnitude, the comparison with the generic path, the reference), and for a lazy library
    each read would run the array's graph again. Per thread; the arrays are held until the
    block ends."""
    before = getattr(_converted, "arrays", None)
    _converted.arrays = {}
    try:
        yield
    finally:
        _converted.arrays = before


def _backend(lib: _libraries.Library, device: str) -> Backend:
    """The adapter of ``lib`` on ``device``: id ``"torch:cuda"``, or the library's name alone
    when it has one device."""
    adapter = _adapter(lib.name)
    id_ = lib.name if len(lib.devices) == 1 else f"{lib.name}:{device}"

    def reason() -> str | None:
        if not lib.installed():
            return f"{lib.module} is not installed"
        return None if device == "cpu" else adapter.device_reason(device)

    return Backend(id_, lib.name, device, adapter.dtypes, adapter.autodiff, reason)


#: Every backend the suite knows; use the ``backend`` fixture to get the usable ones.
BACKENDS = [_backend(lib, device) for lib in _libraries.LIBRARIES for device in lib.devices]
BY_ID = {b.id: b for b in BACKENDS}


def usable_backends(libraries: Iterable[str]) -> tuple[list[Backend], dict[str, str]]:
    """The backends of ``libraries`` that are usable here, and why each library with none is
    not (imports the libraries).

    Parameters
    ----------
    libraries : iterable of str
        Library names (``"numpy"``, ``"torch"``...).

    Returns
    -------
    backends : list of Backend
        The usable ones, library by library in the order given, devices in the order of
        ``BACKENDS``.
    reasons : dict
        For each library without a usable backend, why: not installed, its import failing
        (a broken install is reported here, not raised), or no device.

    Examples
    --------
    >>> from xpsoftmax.testing.backends import usable_backends
    >>> found, reasons = usable_backends(["numpy", "not_a_library"])
    >>> [b.id for b in found], reasons
    (['numpy'], {'not_a_library': 'unknown library'})
    """
    found: list[Backend] = []
    reasons: dict[str, str] = {}
    for name in libraries:
        try:
            usable, reason = _usable_of(name)
        except Exception as exc:  # a broken install must not stop the others
            usable, reason = [], f"{type(exc).__name__}: {exc}"
        found += usable
        if not usable:
            reasons[name] = reason or "no device"
    return found, reasons


def _usable_of(name: str) -> tuple[list[Backend], str | None]:
    """The usable backends of one library and the first reason one is not (may raise)."""
    lib = _libraries.by_name(name)
    if lib is None:
        return [], "unknown library"
    if not lib.installed():
        return [], f"{lib.module} is not installed"
    importlib.import_module(lib.module)  # a library that fails to import says how here
    backends = [b for b in BACKENDS if b.library == name]
    reasons = [b.probe() for b in backends]
    usable = [b for b, r in zip(backends, reasons) if r is None]
    return usable, next((r for r in reasons if r is not None), None)
