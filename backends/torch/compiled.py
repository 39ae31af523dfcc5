"""The compiled CPU kernels (numba, ``xpsoftmax.backends.numpy.compiled``) for torch CPU
tensors of float32, float16 and bfloat16: softmax, log_softmax, logsumexp and cross-entropy
with class indices, read and written through zero-copy NumPy views (16-bit tensors as their
uint16 bits, computed in float32 and rounded once, to nearest even as torch rounds), with
a backward for autograd (:mod:`xpsoftmax.backends.torch.kernels`).

A kernel runs on an eager CPU tensor: with autograd through its ``autograd.Function``,
without it directly. Where its values cannot be read or something else differentiates or
traces through the call (``torch.compile``, a ``torch.func`` transform, forward-mode AD's
dual tensors, a weight that requires grad), the entry hands the call to the path that
serves it without the kernel, so its predicates are those of both (``torch.native``'s, and
the generic implementation for ``cross_entropy_with_grad``, which has no native entry).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad

from xpsoftmax import _generic, _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.torch import kernels, native, values_visible

_NORMALIZATION = "compiled (numba) on eager tensors; one trailing axis, scalar T > 0"
_LOGSUMEXP = "compiled (numba) on eager tensors; trailing axes, b/where/sign None"
_CE = "compiled (numba) on eager tensors; class indices on the last axis"


def available() -> str | None:
    """numpy.compiled's check, asked at the first call the entry could serve."""
    return kernels.compiled().available()


def _eager(x: torch.Tensor) -> bool:
    """Whether the kernel can serve ``x``: an eager CPU tensor, no transform or trace, and no
    forward-mode AD (a dual tensor's tangent would be lost: the Functions have no jvp)."""
    return values_visible(x) and forward_ad._current_level < 0


def _differentiated(x: torch.Tensor) -> bool:
    return bool(x.requires_grad) and torch.is_grad_enabled()


# The kernels' predicates (those of numpy.compiled, on the core's rules: non-empty trailing
# row-major slices), with the fallback's where one serves the calls the kernel cannot.
def _normalization_ok(call: Call) -> bool:
    return call.length > 0 and _rows.normalization_ok(call) and native._normalization_ok(call)


def _logsumexp_ok(call: Call) -> bool:
    # torch.native's own predicate is _rows.logsumexp_ok's (axes, no b/where/sign) and this.
    return call.length > 0 and _rows.logsumexp_ok(call) and native._short_rows(call)


def _ce_with_grad_ok(call: Call) -> bool:
    return call.length > 0 and _rows.class_index_ok(call)


def _ce_ok(call: Call) -> bool:
    return _ce_with_grad_ok(call) and native._ce_ok(call)


def _register(op: str, supports: Any, description: str) -> Any:
    return register(
        op,
        "torch",
        "torch.compiled",
        priority=60,
        supports=supports,
        devices=("cpu",),
        dtypes=("float16", "bfloat16", "float32"),
        available=available,
        description=description,
    )


@_register("softmax", _normalization_ok, _NORMALIZATION)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    inv = _rows.kernel_inverse(temperature)
    if inv is None or not _eager(x):
        return native.softmax(xp, x, axes, temperature=temperature, where=where)
    if _differentiated(x):
        return kernels.differentiable_normalize(x, axes[0], inv, False)
    return kernels.normalize(x, axes, inv, False)


@_register("log_softmax", _normalization_ok, _NORMALIZATION)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    inv = _rows.kernel_inverse(temperature)
    if inv is None or not _eager(x):
        return native.log_softmax(xp, x, axes, temperature=temperature, where=where)
    if _differentiated(x):
        return kernels.differentiable_normalize(x, axes[0], inv, True)
    return kernels.normalize(x, axes, inv, True)


@_register("logsumexp", _logsumexp_ok, _LOGSUMEXP)
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
    if not _eager(x):
        return native.logsumexp(
            xp, x, axes, keepdims=keepdims, b=b, return_sign=return_sign, where=where
        )
    if _differentiated(x):
        return kernels.LogSumExp.apply(x, axes, keepdims)
    return kernels.logsumexp(x, axes, keepdims)


def _kernel_inverse(logits: Any, options: CrossEntropySettings) -> float | None:
    """1/T for the kernel where it can serve the call (None: the fallback serves it)."""
    inv = _rows.kernel_inverse(options.temperature)
    weight = options.weight
    if inv is None or not _eager(logits) or (weight is not None and _differentiated(weight)):
        return None
    return inv


@_register("cross_entropy", _ce_ok, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    inv = _kernel_inverse(logits, options)
    if inv is None:
        return native.cross_entropy(xp, logits, target, axis, options)
    if _differentiated(logits):
        return kernels.CrossEntropy.apply(logits, target, options, inv)
    return kernels.cross_entropy(logits, target, options, inv, with_grad=False)[0]


@_register("cross_entropy_with_grad", _ce_with_grad_ok, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    inv = _kernel_inverse(logits, options)
    # A loss that differentiates (logits that require grad) needs the generic graph.
    if inv is None or _differentiated(logits):
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, options)
    return kernels.cross_entropy(logits, target, options, inv, with_grad=True)
