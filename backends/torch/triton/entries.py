"""The Triton fast paths of torch on CUDA: softmax, log_softmax (forward and backward) and
logsumexp (one pass: online maximum and sum), registered above ``native``.

This module imports neither triton nor the kernels: an entry loads :mod:`.ops` at its first
call, after its ``available`` check (:func:`xpsoftmax.backends.torch.triton.available`) has
passed. With ``TRITON_INTERPRET=1`` (set before triton is imported) the entries also serve CPU
tensors, through Triton's interpreter: that is how CI proves them without a GPU.

Accepted calls: the reduced axes are the trailing ones of a contiguous tensor (so that the
slices are the rows of a row-major view), 16-bit or float32 input (float64 stays ``native``:
the kernels compute in float32), at most :data:`LONG_ROW` entries per slice, no ``where``, a
scalar temperature that is 1 or positive and finite; logsumexp without ``b`` or
``return_sign``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from xpsoftmax._checks import Temperature
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.torch.triton import available, interpreting

_DTYPES = ("float16", "bfloat16", "float32")
_DEVICES = ("cuda", "cpu") if interpreting() else ("cuda",)

#: The longest slice served. Each of the kernels' lanes sums ``n / CHUNK`` entries in float32
#: one after another: up to this length that is at most 256, whose rounding stays within the
#: contract's few units; longer rows take ``native`` or the generic path.
LONG_ROW = 2**20


def _rows(call: Call) -> bool:
    k = len(call.axes)
    return (
        k > 0
        and call.axes == tuple(range(call.ndim - k, call.ndim))
        and call.contiguous
        and 0 <= call.length <= LONG_ROW
    )


def _normalization_ok(call: Call) -> bool:
    return _rows(call) and not call.opt("where") and call.opt("temperature") in ("one", "positive")


def _view(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``x`` as ``(rows, n)``, the slices along ``axes`` (trailing, contiguous) as rows."""
    return x.reshape(-1, math.prod([x.shape[a] for a in axes]))


def _t(temperature: Temperature) -> float:
    return 1.0 if temperature.kind == "one" else float(temperature.value)


def _normalize(x: torch.Tensor, axes: tuple[int, ...], temperature: Temperature, log: bool) -> Any:
    if x.numel() == 0:
        return torch.zeros_like(x)
    from xpsoftmax.backends.torch.triton import ops

    return ops.normalize(_view(x, axes), _t(temperature), log).reshape(x.shape)


@register(
    "softmax",
    "torch",
    "torch.triton",
    priority=100,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_DTYPES,
    available=available,
    description="trailing axes of a contiguous tensor, where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize(x, axes, temperature, log=False)


@register(
    "log_softmax",
    "torch",
    "torch.triton",
    priority=100,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_DTYPES,
    available=available,
    description="trailing axes of a contiguous tensor, where=None, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize(x, axes, temperature, log=True)


@register(
    "logsumexp",
    "torch",
    "torch.triton",
    priority=100,
    supports=lambda c: _rows(c) and not (c.opt("b") or c.opt("return_sign") or c.opt("where")),
    devices=_DEVICES,
    dtypes=_DTYPES,
    available=available,
    description="trailing axes of a contiguous tensor, b=None, where=None, return_sign=False",
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
    kept = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    shape = kept if keepdims else tuple(s for a, s in enumerate(x.shape) if a not in axes)
    if math.prod([x.shape[a] for a in axes]) == 0:  # an empty sum: -inf
        return torch.full(shape, -math.inf, dtype=torch.float32, device=x.device)
    from xpsoftmax.backends.torch.triton import ops

    return ops.logsumexp_rows(_view(x, axes)).reshape(shape)
