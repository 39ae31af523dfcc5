"""The array libraries and devices the conformance kit runs on: one adapter each.

A :class:`Backend` makes an array of its library from NumPy data (:meth:`Backend.asarray`),
brings one back to the host (:meth:`Backend.to_numpy`), waits for queued work
(:meth:`Backend.sync`), and says which dtypes it has and whether it is lazy. Entries whose
library is not installed, or whose device is absent, report why (:meth:`Backend.probe`);
:meth:`Backend.pytest_params` turns them into pytest parameters that skip with that reason.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


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
        return self.library == "dask"

    def usable(self) -> bool:
        """Whether the library is installed and the device present."""
        return self.probe() is None

    def param(self) -> Any:
        """This backend as a ``pytest.param`` (id ``"torch:cpu"``...) that skips when unusable,
        marked ``gpu`` on a GPU device."""
        import pytest

        reason = self.probe()
        marks = [pytest.mark.gpu] if self.device in ("cuda", "gpu") else []
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

    def sync(self, x: Any) -> Any:
        """Wait until ``x`` is computed (GPU queues, JAX dispatch, a Dask graph); returns the
        computed array (for Dask, the NumPy result), for timing and for reading it."""
        if self.library == "torch" and self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        elif self.library == "jax":
            x.block_until_ready()
        elif self.library == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()
        elif self.library == "dask":
            return x.compute()
        return x

    # -- conversion -------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        import array_api_compat

        return array_api_compat.array_namespace(self.asarray(np.zeros(1)))

    def dtype(self, name: str) -> Any:
        if self.library == "torch":
            import torch

            return getattr(torch, name)
        if self.library == "jax":
            import jax.numpy as jnp

            return getattr(jnp, name)
        if self.library == "array_api_strict":
            import array_api_strict

            return getattr(array_api_strict, name)
        if self.library == "cupy":
            import cupy

            return getattr(cupy, name)
        return np.dtype(name)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """NumPy data -> this backend's array (``dtype`` by name; None keeps NumPy's)."""
        a = np.asarray(a)
        if self.library == "numpy":
            return a.astype(dtype) if dtype else a.copy()
        if self.library == "torch":
            import torch

            t = torch.as_tensor(a.copy(), device=self.device)
            return t.to(self.dtype(dtype)) if dtype else t
        if self.library == "jax":
            import jax
            import jax.numpy as jnp

            dev = jax.devices(self.device)[0]
            out = jax.device_put(jnp.asarray(a), dev)
            return out.astype(self.dtype(dtype)) if dtype else out
        if self.library == "array_api_strict":
            import array_api_strict as s

            out = s.asarray(a)
            return s.astype(out, self.dtype(dtype)) if dtype else out
        if self.library == "dask":
            import dask.array as da

            a = a.astype(dtype) if dtype else a
            chunks = tuple(max(1, (n + 1) // 2) for n in a.shape)  # several chunks per axis
            return da.from_array(a, chunks=chunks)
        if self.library == "cupy":
            import cupy

            return cupy.asarray(a.astype(dtype) if dtype else a)
        raise AssertionError(self.library)

    def to_numpy(self, x: Any) -> np.ndarray:
        """This backend's array -> NumPy float64 (or the integer/bool dtype it holds)."""
        if self.library == "torch":
            import torch

            x = x.detach().cpu()
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.to(torch.float64)
            return x.numpy()
        if self.library == "jax":
            import jax.numpy as jnp

            if x.dtype in (jnp.bfloat16,):
                x = x.astype(jnp.float32)
            return np.asarray(x)
        if self.library == "array_api_strict":
            return np.from_dlpack(x)
        if self.library == "dask":
            return np.asarray(x.compute())
        if self.library == "cupy":
            return x.get()
        return np.asarray(x)

    def numpy_float(self, x: Any) -> np.ndarray:
        out = self.to_numpy(x)
        return out.astype(np.float64) if out.dtype.kind == "f" else out


def _torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"


def _jax_gpu() -> str | None:
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "no GPU for JAX"
    return None


def _cupy() -> str | None:
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return f"CuPy has no device: {exc}"
    return None


_ALL = [
    ("numpy", "numpy", "cpu", ("float16", "float32", "float64"), False, None),
    ("array_api_strict", "array_api_strict", "cpu", ("float32", "float64"), False, None),
    ("torch:cpu", "torch", "cpu", ("float16", "bfloat16", "float32", "float64"), True, None),
    (
        "torch:cuda",
        "torch",
        "cuda",
        ("float16", "bfloat16", "float32", "float64"),
        True,
        _torch_cuda,
    ),
    ("jax:cpu", "jax", "cpu", ("float16", "bfloat16", "float32", "float64"), True, None),
    ("jax:gpu", "jax", "gpu", ("float16", "bfloat16", "float32", "float64"), True, _jax_gpu),
    ("dask", "dask", "cpu", ("float16", "float32", "float64"), False, None),
    ("cupy", "cupy", "cuda", ("float16", "float32", "float64"), False, _cupy),
]


def _make(entry: tuple[Any, ...]) -> Backend:
    id_, lib, dev, dtypes, autodiff, probe = entry
    module = "dask" if lib == "dask" else lib

    def reason() -> str | None:
        if not _installed(module):
            return f"{module} is not installed"
        return probe() if probe is not None else None

    return Backend(id_, lib, dev, dtypes, autodiff, reason)


#: Every backend the suite knows; use the ``backend`` fixture to get the usable ones.
BACKENDS = [_make(e) for e in _ALL]
BY_ID = {b.id: b for b in BACKENDS}
