"""What the fast paths written as row kernels (Triton for torch, CuPy, Pallas for JAX) take,
and how they see an array: the slices along the trailing axes of row-major data, viewed as
``(rows, n)``. The predicates read only a call's metadata (``Call``)."""

from __future__ import annotations

import math
from typing import Any

from ._checks import Temperature
from ._registry import Call

_SCALAR = ("one", "positive")


def trailing(call: Call, longest: int | None = None) -> bool:
    """Reduced axes that are the trailing ones of a row-major array, slices of at most
    ``longest`` entries."""
    k = len(call.axes)
    return (
        k > 0
        and call.axes == tuple(range(call.ndim - k, call.ndim))
        and call.contiguous
        and (longest is None or 0 <= call.length <= longest)
    )


def normalization_ok(call: Call, longest: int | None = None) -> bool:
    """softmax / log_softmax: trailing axes, no ``where``, a scalar temperature > 0."""
    return trailing(call, longest) and not call.opt("where") and call.opt("temperature") in _SCALAR


def logsumexp_ok(call: Call, longest: int | None = None) -> bool:
    """logsumexp: trailing axes, no ``b``, ``where`` or ``return_sign``."""
    return trailing(call, longest) and not (
        call.opt("b") or call.opt("return_sign") or call.opt("where")
    )


def class_index_ok(call: Call, longest: int | None = None) -> bool:
    """cross-entropy: class indices along the last axis, a scalar temperature > 0."""
    return (
        call.opt("target") == "index"
        and call.axes == (call.ndim - 1,)
        and trailing(call, longest)
        and call.opt("temperature") in _SCALAR
    )


def as_rows(x: Any, axes: tuple[int, ...]) -> Any:
    """``x`` as ``(rows, n)``, the slices along ``axes`` (trailing, row-major) as rows."""
    return x.reshape(-1, math.prod([x.shape[a] for a in axes]))


def kernel_inverse(temperature: Temperature) -> float | None:
    """``1 / T`` as a float32 kernel's factor, or None where it would not be a normal
    float32 (the paths without such a kernel divide in two steps there)."""
    inv = 1.0 / scalar_temperature(temperature)
    return inv if 1.1754943508222875e-38 <= inv < 3.0e38 else None


def scalar_temperature(temperature: Temperature) -> float:
    """The temperature of a ``"one"`` or ``"positive"`` kind, as a float."""
    return 1.0 if temperature.kind == "one" else float(temperature.value)
