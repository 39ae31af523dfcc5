"""The Triton fast paths of torch on CUDA: softmax, log_softmax (forward and backward),
logsumexp (one pass: online maximum and sum) and cross-entropy with class indices (forward
and gradient), registered above ``native``.

This module imports neither triton nor the kernels: an entry loads :mod:`.ops` at its first
call, after its ``available`` check (:func:`xpsoftmax.backends.torch.triton.available`) has
passed. With ``TRITON_INTERPRET=1`` (set before triton is imported) the entries also serve CPU
tensors, through Triton's interpreter: that is how CI proves them without a GPU.

Accepted calls: the reduced axes are the trailing ones of a contiguous tensor (so that the
slices are the rows of a row-major view), 16-bit or float32 input (float64 stays ``native``:
the kernels compute in float32), at most :data:`LONG_ROW` entries per slice, no ``where``, a
scalar temperature that is 1 or positive and finite; logsumexp without ``b`` or
``return_sign``; cross-entropy with class-index targets along the last axis (any weight,
ignore_index, reduction, label smoothing and z-loss).

Inside a ``torch.func`` transform the entries hand the call to the generic path: a custom
operator's autograd rule does not support the transforms, and a kernel cannot be vmapped.

Cross-entropy: one kernel computes each entry's loss (the generic path's formula,
``xpsoftmax._generic._index_terms``, on the row's statistics) and the gradient's per-row
coefficients, reading a row held on chip once (a longer row, or label smoothing, reads it
again); the reduction (the mean's rule included) is done by the kernels too. Eager with
autograd, and in ``cross_entropy_with_grad``, that kernel also writes the gradient: one
logits-sized buffer, returned by ``cross_entropy_with_grad``, kept until backward by
autograd, which scales it by the incoming gradient on the device (skipped where that is 1).
Forward only, no gradient is written; under ``torch.compile`` (whose operators may not mutate
a saved buffer) a second kernel computes it from per-row statistics (one more read of the
logits). See :mod:`.ops`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from xpsoftmax import _generic, _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature, reduced_shape
from xpsoftmax._registry import register
from xpsoftmax.backends.torch import tied
from xpsoftmax.backends.torch import transformed as _transformed
from xpsoftmax.backends.torch.triton import available, interpreting

_DTYPES = ("float16", "bfloat16", "float32")
_DEVICES = ("cuda", "cpu") if interpreting() else ("cuda",)

#: The longest slice served. Each of the kernels' lanes sums ``n / CHUNK`` entries in float32
#: one after another: up to this length that is at most 256, whose rounding stays within the
#: contract's few units; longer rows take ``native`` or the generic path.
LONG_ROW = 2**20


def _entry(op: str, supports: Any, description: str) -> Any:
    """The registration of this module's entry for ``op``: every one shares its name, its
    priority (a kernel written for the device), devices, dtypes and availability check."""
    return register(
        op,
        "torch",
        "torch.triton",
        priority=100,
        supports=supports,
        devices=_DEVICES,
        dtypes=_DTYPES,
        available=available,
        description=description,
    )


_ROWS = "trailing axes of a contiguous tensor"
_CE = "class indices along the last axis of a contiguous tensor, scalar temperature > 0"
_CE_OK = functools.partial(_rows.class_index_ok, longest=LONG_ROW)


def _normalize(
    xp: Any, x: torch.Tensor, axes: tuple[int, ...], temperature: Temperature, log: bool
) -> Any:
    if _transformed(x):
        generic = _generic.log_softmax if log else _generic.softmax
        return generic(xp, x, axes, temperature=temperature, where=None)
    if x.numel() == 0:  # no kernel to launch; the result still joins x's graph
        return tied(torch.zeros_like(x), x)
    from xpsoftmax.backends.torch.triton import ops

    return ops.normalize(
        _rows.as_rows(x, axes), _rows.scalar_temperature(temperature), log
    ).reshape(x.shape)


@_entry(
    "softmax",
    lambda c: _rows.normalization_ok(c, LONG_ROW),
    _ROWS + ", where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize(xp, x, axes, temperature, log=False)


@_entry(
    "log_softmax",
    lambda c: _rows.normalization_ok(c, LONG_ROW),
    _ROWS + ", where=None, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize(xp, x, axes, temperature, log=True)


@_entry(
    "logsumexp",
    lambda c: _rows.logsumexp_ok(c, LONG_ROW),
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
    shape = reduced_shape(x.shape, axes, keepdims)
    if _transformed(x):
        return _generic.logsumexp(
            xp, x, axes, keepdims=keepdims, b=b, return_sign=return_sign, where=where
        )
    if math.prod([x.shape[a] for a in axes]) == 0:  # an empty sum: -inf
        return tied(torch.full(shape, -math.inf, dtype=torch.float32, device=x.device), x)
    from xpsoftmax.backends.torch.triton import ops

    return ops.logsumexp_rows(_rows.as_rows(x, axes)).reshape(shape)


# --- cross-entropy -----------------------------------------------------------------------------

_INT64 = (-(2**63), 2**63 - 1)


def _arguments(logits: Any, target: Any, o: CrossEntropySettings) -> tuple[Any, ...]:
    """The kernels' arguments up to the reduction: ``(x, target, weight, ignore_index,
    has_ignore, t, eps, z_loss)`` with ``x`` (rows, C) and ``target`` (rows,) flat."""
    # An ignore_index no int64 holds matches no index (the targets are int64 at most).
    has_ignore = _INT64[0] <= o.ignore_index <= _INT64[1]
    return (
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), o.weight,
        o.ignore_index if has_ignore else 0, has_ignore, _rows.scalar_temperature(o.temperature),
        o.label_smoothing, o.z_loss,
    )  # fmt: skip


def _weight_trains(o: CrossEntropySettings) -> bool:
    """A weight that requires a gradient: the kernels give none for it; the generic path does."""
    return o.weight is not None and o.weight.requires_grad


def _reduction(o: CrossEntropySettings) -> int:
    from xpsoftmax.backends.torch.triton import ops

    return {"none": ops.NONE, "sum": ops.SUM, "mean": ops.MEAN}[o.reduction]


@_entry("cross_entropy", _CE_OK, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if logits.numel() == 0 or _weight_trains(options) or _transformed(logits):
        return _generic.cross_entropy(xp, logits, target, axis, options)
    from xpsoftmax.backends.torch.triton import ops

    # The reduction (and the mean's rule, 0 over nothing) in the kernels.
    args = _arguments(logits, target, options)
    loss = ops.cross_entropy(*args, reduction=_reduction(options))
    return loss.reshape(target.shape) if options.reduction == "none" else loss


@_entry("cross_entropy_with_grad", _CE_OK, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if logits.numel() == 0 or _weight_trains(options) or _transformed(logits):
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, options)
    from xpsoftmax.backends.torch.triton import ops

    with torch.no_grad():
        loss, grad = ops.cross_entropy_with_grad(
            *_arguments(logits, target, options), reduction=_reduction(options)
        )
    if options.reduction == "none":
        loss = loss.reshape(target.shape)
    return loss, grad.reshape(logits.shape)
