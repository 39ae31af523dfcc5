"""The compiled CPU kernels (numba, ``xpsoftmax.backends.numpy.compiled``) for torch CPU
tensors of float32, float16 and bfloat16: softmax, log_softmax, logsumexp and cross-entropy
with class indices, read and written through zero-copy NumPy views (16-bit tensors as their
uint16 bits, computed in float32 and rounded once, to nearest even as torch rounds).

A kernel runs only where nothing differentiates or traces through the call
(``native._eager_values``: an eager CPU tensor without autograd, no ``torch.func`` transform,
not under ``torch.compile``); elsewhere the entry hands the call to the path that serves it
without the kernel, so its predicates are those of both (``torch.native``'s, and the
generic implementation for ``cross_entropy_with_grad``, which has no native entry). The
kernels' gradients are not autograd's: a training step's backward goes through
``torch.native`` as before, and ``cross_entropy_with_grad`` (which returns the gradient
itself) takes the kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from xpsoftmax import _generic, _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.torch import index_target, native

_NORMALIZATION = "compiled (numba) where eager without autograd; one trailing axis, scalar T > 0"
_LOGSUMEXP = "compiled (numba) where eager without autograd; trailing axes, b/where/sign None"
_CE = "compiled (numba) where eager without autograd; class indices on the last axis"


_KINDS = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _view(x: torch.Tensor) -> tuple[np.ndarray, str]:
    """``(the tensor's memory as a NumPy array, its kind)``, no copy (``detach``:
    ``numpy()`` refuses a tensor that requires grad even where no graph is recorded);
    16-bit tensors as their uint16 bits, as the kernels read them."""
    x = x.detach()
    if x.dtype == torch.float32:
        return x.numpy(), "float32"
    return x.view(torch.int16).numpy().view(np.uint16), _KINDS[x.dtype]


def _tensor(a: np.ndarray, kind: str = "float32") -> torch.Tensor:
    """The inverse of :func:`_view` for a result of ``kind``."""
    if kind == "float32":
        return torch.from_numpy(np.asarray(a))
    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float16
    return torch.from_numpy(a.view(np.int16)).view(dtype)


def _kernels() -> Any:
    """The NumPy backend's kernel module, imported at the first call that runs a kernel (not
    when the torch backend loads: no other backend is imported before its arrays arrive)."""
    from xpsoftmax.backends.numpy import compiled

    return compiled


def available() -> str | None:
    """numpy.compiled's check, asked at the first call the entry could serve."""
    return _kernels().available()


# The kernels' predicates (those of numpy.compiled, on the core's rules: non-empty trailing
# row-major slices), with the fallback's where one serves the calls with autograd.
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
    if inv is None or not native._eager_values(x):
        return native.softmax(xp, x, axes, temperature=temperature, where=where)
    raw, kind = _view(x)
    return _tensor(_kernels().normalize_rows(raw, axes, inv, False, kind), kind)


@_register("log_softmax", _normalization_ok, _NORMALIZATION)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    inv = _rows.kernel_inverse(temperature)
    if inv is None or not native._eager_values(x):
        return native.log_softmax(xp, x, axes, temperature=temperature, where=where)
    raw, kind = _view(x)
    return _tensor(_kernels().normalize_rows(raw, axes, inv, True, kind), kind)


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
    if not native._eager_values(x):
        return native.logsumexp(
            xp, x, axes, keepdims=keepdims, b=b, return_sign=return_sign, where=where
        )
    return _tensor(_kernels().logsumexp_rows(*_view(x), axes, keepdims))


def _eager_ce(logits: Any, options: CrossEntropySettings) -> bool:
    weight = options.weight
    return (
        _rows.kernel_inverse(options.temperature) is not None
        and native._eager_values(logits)
        and (weight is None or not weight.requires_grad)
    )


def _numpy_ce(
    logits: Any, target: Any, options: CrossEntropySettings, with_grad: bool
) -> tuple[Any, Any]:
    weight = None if options.weight is None else _view(options.weight.to(torch.float32))[0]
    o = dataclasses.replace(options, weight=weight)
    t = index_target(target).detach().numpy()
    inv = _rows.kernel_inverse(options.temperature)
    raw, kind = _view(logits)
    loss, grad = _kernels().cross_entropy_rows(raw, kind, t, o, inv, with_grad)
    return _tensor(loss), (None if grad is None else _tensor(grad, kind))


@_register("cross_entropy", _ce_ok, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if not _eager_ce(logits, options):
        return native.cross_entropy(xp, logits, target, axis, options)
    return _numpy_ce(logits, target, options, with_grad=False)[0]


@_register("cross_entropy_with_grad", _ce_with_grad_ok, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    if not _eager_ce(logits, options):
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, options)
    return _numpy_ce(logits, target, options, with_grad=True)
