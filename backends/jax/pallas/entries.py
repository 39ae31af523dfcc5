"""The Pallas kernels as fast paths for JAX: softmax, log_softmax and logsumexp over trailing
axes, in float16, bfloat16 and float32, on a GPU (or anywhere, interpreted:
``XPSOFTMAX_PALLAS_INTERPRET=1``). Priority 40, below ``jax.custom_jvp``: opt-in with
``xpsoftmax.use("jax.pallas")`` until measured on a GPU."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from xpsoftmax._checks import Temperature, reduced_shape
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.jax.pallas import available, interpreting

_DESCRIPTION = "trailing axes, where=None, scalar temperature > 0; opt-in"


#: The GPU, and every device when the kernels are interpreted (decided at import, as the
#: registry's device lists are).
_DEVICES = ("gpu", "cpu", "tpu") if interpreting() else ("gpu",)


def _rows(call: Call) -> bool:
    k = len(call.axes)
    return (
        k > 0
        and call.axes == tuple(range(call.ndim - k, call.ndim))
        and 0 < call.length <= LONG_ROW
    )


#: The longest slice served (as the Triton kernels: each lane sums at most 256 chunks).
LONG_ROW = 2**20


def _entry(op: str, supports: Any) -> Any:
    return register(
        op,
        "jax",
        "jax.pallas",
        priority=40,
        supports=supports,
        devices=_DEVICES,
        dtypes=("float16", "bfloat16", "float32"),
        available=available,
        description=_DESCRIPTION,
    )


def _normalization_ok(call: Call) -> bool:
    return _rows(call) and not call.opt("where") and call.opt("temperature") in ("one", "positive")


def _t(temperature: Temperature) -> float:
    return 1.0 if temperature.kind == "one" else float(temperature.value)


def _view(x: Any, axes: tuple[int, ...]) -> Any:
    return x.reshape(-1, math.prod([x.shape[a] for a in axes]))


def _normalize(x: Any, axes: tuple[int, ...], temperature: Temperature, log: bool) -> Any:
    if x.size == 0:
        return jnp.zeros_like(x)
    from xpsoftmax.backends.jax.pallas import kernels

    return kernels.normalize(_view(x, axes), _t(temperature), log).reshape(x.shape)


@_entry("softmax", _normalization_ok)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize(x, axes, temperature, log=False)


@_entry("log_softmax", _normalization_ok)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize(x, axes, temperature, log=True)


@_entry(
    "logsumexp", lambda c: _rows(c) and not (c.opt("b") or c.opt("return_sign") or c.opt("where"))
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
    if x.size == 0:
        return jnp.full(shape, -math.inf, dtype=jnp.float32)
    from xpsoftmax.backends.jax.pallas import kernels

    return kernels.logsumexp(_view(x, axes)).reshape(shape)
