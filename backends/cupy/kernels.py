"""The launchers of the CuPy kernels (:mod:`.source`), on row-major ``(rows, n)`` arrays.

The module of compiled kernels is built once per process, at the first launch (NVRTC through
``cupy.RawModule``; CuPy caches the binary on disk), under a lock: safe from many threads.
"""

from __future__ import annotations

import threading
from typing import Any

import cupy as cp

from xpsoftmax.backends.cupy import source

_LOCK = threading.Lock()
_MODULE: list[Any] = []


def _kernel(name: str, dtype: Any) -> Any:
    if not _MODULE:
        with _LOCK:
            if not _MODULE:
                _MODULE.append(cp.RawModule(code=source.source(), options=("--std=c++14",)))
    suffix = source.DTYPES[cp.dtype(dtype).name][0]
    return _MODULE[0].get_function(f"{name}_{suffix}")


def accumulator(dtype: Any) -> Any:
    """The kernels' arithmetic (and logsumexp's and the losses') dtype: float64 for float64,
    else float32."""
    return cp.float64 if cp.dtype(dtype) == cp.float64 else cp.float32


#: What a pointer argument that is None becomes: a null pointer (the kernel takes the
#: argument's 8 bytes as they are).
_NULL = cp.uint64(0)


def _launch(name: str, x: Any, *args: Any) -> None:
    rows = x.shape[0]
    if rows:
        args = tuple(_NULL if a is None else a for a in args)
        _kernel(name, x.dtype)((rows,), (source.THREADS,), (x, *args))


def normalize(x: Any, t: float, log: bool) -> Any:
    """softmax (``log=False``) or log_softmax of each row of ``x`` divided by ``t``."""
    y = cp.empty_like(x)
    acc = accumulator(x.dtype)
    _launch("normalize", x, y, cp.int64(x.shape[1]), acc(t), cp.int32(log))
    return y


def logsumexp(x: Any) -> Any:
    """logsumexp of each row of ``x``, in :func:`accumulator`'s dtype."""
    out = cp.empty(x.shape[0], dtype=accumulator(x.dtype))
    _launch("logsumexp", x, out, cp.int64(x.shape[1]))
    return out


def cross_entropy(
    x: Any,
    target: Any,
    weight: Any,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
    factor: Any,
    with_grad: bool,
) -> tuple[Any, Any]:
    """``(per, grad or None)``: each row's loss for its class index in ``target`` (int64),
    and with ``with_grad`` the gradient of the losses times ``factor`` (a 1-element array of
    the accumulator's dtype: the mean's factor, or 1; unread, may be None, without it)."""
    rows, n = x.shape
    acc = accumulator(x.dtype)
    per = cp.empty(rows, dtype=acc)
    grad = cp.empty_like(x) if with_grad else None
    w = None if weight is None else cp.ascontiguousarray(weight, dtype=acc)
    w_total = None if w is None or eps == 0 else w.sum()  # on the device: no host read
    _launch(
        "cross_entropy", x, target, w, per, grad, factor, cp.int64(n), acc(t),
        cp.int64(ignore_index), cp.int32(has_ignore), w_total, acc(eps), acc(z_loss),
    )  # fmt: skip
    return per, grad
