"""The CuPy kernels as fast paths: softmax, log_softmax, logsumexp and cross-entropy with
class indices (with and without the gradient) over the trailing axes of a C-contiguous array.

CuPy has no autograd: ``cross_entropy_with_grad`` is the training call, one kernel that
writes the loss per entry and the gradient. This module imports neither cupy nor the
kernels: an entry loads :mod:`.kernels` at its first call, after :func:`available` passed.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from xpsoftmax import _generic, _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature, reduced_shape
from xpsoftmax._registry import register

_INSTALLED = importlib.util.find_spec("cupy") is not None
_DTYPES = ("float16", "float32", "float64")
_ROWS = "trailing axes of a C-contiguous array"
_CE = "class indices along the last axis of a C-contiguous array, scalar temperature > 0"
_CE_OK = _rows.class_index_ok


def available() -> str | None:
    """None when the kernels can run: CuPy installed and a CUDA device present."""
    if not _INSTALLED:
        return "cupy is not installed"
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no CUDA device ({exc})"
    return None if count else "no CUDA device"


def _entry(op: str, supports: Any, description: str) -> Any:
    return register(
        op,
        "cupy",
        "cupy.kernels",
        priority=100,
        supports=supports,
        devices=("cuda",),
        dtypes=_DTYPES,
        available=available,
        description=description,
    )


def _kernels() -> Any:
    """The launchers (imported at the first call; the tests put a NumPy mirror here)."""
    from xpsoftmax.backends.cupy import kernels

    return kernels


def _normalize(x: Any, axes: tuple[int, ...], temperature: Temperature, log: bool) -> Any:
    if x.size == 0:
        return x.copy()
    return (
        _kernels()
        .normalize(_rows.as_rows(x, axes), _rows.scalar_temperature(temperature), log)
        .reshape(x.shape)
    )


@_entry("softmax", _rows.normalization_ok, _ROWS + ", where=None, scalar temperature > 0")
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize(x, axes, temperature, log=False)


@_entry("log_softmax", _rows.normalization_ok, _ROWS + ", where=None, scalar temperature > 0")
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize(x, axes, temperature, log=True)


@_entry(
    "logsumexp",
    _rows.logsumexp_ok,
    _ROWS + ", b=None, where=None, return_sign=False",
)
def logsumexp(
    xp: Any,
    x: Any,
    axes: tuple[int, ...],
    *,
    keepdims: bool,
    b: Any,
    return_sign: bool,
    where: Any,
) -> Any:
    kernels = _kernels()
    shape = reduced_shape(x.shape, axes, keepdims)
    if math.prod([x.shape[a] for a in axes]) == 0:  # an empty sum: -inf
        return xp.full(shape, -math.inf, dtype=kernels.accumulator(x.dtype))
    return kernels.logsumexp(_rows.as_rows(x, axes)).reshape(shape)


def _served(logits: Any, target: Any) -> bool:
    """What the kernels take: some entries, and class indices that int64 holds exactly."""
    kind, size = target.dtype.kind, target.dtype.itemsize
    return logits.size > 0 and (kind == "i" or (kind == "u" and size < 8))


def _cross_entropy(
    xp: Any, logits: Any, target: Any, o: CrossEntropySettings, with_grad: bool
) -> tuple[Any, Any]:
    """``(loss, grad or None)`` through the kernel; the reduction in CuPy operations."""
    kernels = _kernels()
    n = logits.shape[-1]
    x, flat = logits.reshape(-1, n), xp.astype(target.reshape(-1), xp.int64)
    acc = kernels.accumulator(logits.dtype)
    has_ignore = -(2**63) <= o.ignore_index < 2**63
    factor = xp.ones(1, dtype=acc) if with_grad else None  # read with the gradient only
    if o.reduction == "mean":
        # The kernel's rule for the denominator: each entry not ignored adds its class weight
        # (class 0's for an index out of range, whose loss is NaN anyway).
        keep = xp.ones(flat.shape, dtype=xp.bool) if not has_ignore else flat != o.ignore_index
        if o.weight is None:
            den = xp.sum(xp.astype(keep, acc))
        else:
            valid = (flat >= 0) & (flat < n) & keep
            w_t = xp.take(xp.astype(o.weight, acc), xp.where(valid, flat, 0))
            den = xp.sum(xp.where(keep, w_t, xp.zeros_like(w_t)))
        if with_grad:
            factor = xp.reshape(_generic.mean_over(xp, 1.0, den), (1,))
    t = _rows.scalar_temperature(o.temperature)
    per, grad = kernels.cross_entropy(
        x, flat, o.weight, o.ignore_index if has_ignore else 0, has_ignore, t,
        o.label_smoothing, o.z_loss, factor, with_grad,
    )  # fmt: skip
    if o.reduction == "none":
        loss = per.reshape(target.shape)
    elif o.reduction == "sum":
        loss = xp.sum(per)
    else:
        loss = _generic.mean_over(xp, xp.sum(per), den)
    return loss, None if grad is None else grad.reshape(logits.shape)


@_entry("cross_entropy", _CE_OK, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if not _served(logits, target):
        return _generic.cross_entropy(xp, logits, target, axis, options)
    return _cross_entropy(xp, logits, target, options, with_grad=False)[0]


@_entry("cross_entropy_with_grad", _CE_OK, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if not _served(logits, target):
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, options)
    return _cross_entropy(xp, logits, target, options, with_grad=True)
