"""Check the gradients of any implementation of an xpsoftmax operation.

:func:`check_gradients` runs the grid of :func:`check_implementation` (the edge-case
catalogue times the operation's options) through the library's autodiff: for every call,
the gradient of ``sum(w * fn(x, ...))`` with respect to ``x`` (the logits), for fresh random
weights ``w``, against the same gradient of xpsoftmax's generic implementation (whose own
gradients are checked against finite differences in float64). NaN and infinity positions
must be the same, finite values within a few units of rounding of the dtype, scaled by
``max |x / T|``, as for the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import cases
from .backends import Backend, converting_once
from .conformance import (
    MIN_CALLS,
    _accepted_calls,
    _compare,
    _first,
    _magnitude,
    _require_calls,
)

__all__ = ["DIFFERENTIABLE", "check_gradients"]

#: The operations whose gradient is checked (``cross_entropy_with_grad`` returns its own,
#: checked by :func:`check_implementation`).
DIFFERENTIABLE = ("softmax", "log_softmax", "logsumexp", "cross_entropy")


def _gradient(b: Backend, fn: Callable[..., Any], args: tuple, kw: dict, w: Any) -> Any:
    """d sum(w * fn(x, *args[1:], **kw)) / dx at ``x = args[0]``, by ``b``'s autodiff (of
    the first result where ``fn`` returns two: logsumexp's sign)."""
    import array_api_compat

    def loss(x: Any) -> Any:
        out = _first(fn(x, *args[1:], **kw))
        return array_api_compat.array_namespace(out).sum(out * w)

    return b.value_and_grad(loss)(b.requires_grad(args[0]))[1]


def _noting_dispatch(fn: Callable[..., Any], op: str, served: list[str]) -> Callable[..., Any]:
    """``fn``, noting in ``served`` which implementation the registry gives each call where
    ``fn`` is xpsoftmax's own public ``op``: under the autodiff's own arrays (JAX's tracers,
    torch's tensors that require grad), as the public function itself chooses. Where that is
    the generic path, ``fn``'s gradient is the generic one and is not computed twice."""
    import xpsoftmax
    from xpsoftmax import _api

    if fn is not getattr(xpsoftmax, op, None):
        return fn

    def noted(*args: Any, **kw: Any) -> Any:
        served.append(_api._checked_call(op, *args, **kw).name)
        return fn(*args, **kw)

    return noted


def check_gradients(
    op: str,
    fn: Callable[..., Any],
    backend: Backend,
    dtype: str = "float64",
    *,
    rng: np.random.Generator | None = None,
    accepts: Callable[[Any], bool] | None = None,
    min_calls: int = MIN_CALLS,
) -> int:
    """Run the grid of ``op`` through ``fn`` under ``backend``'s autodiff and compare every
    gradient with respect to the first argument with the generic implementation's.

    Parameters
    ----------
    op : str
        One of ``"softmax"``, ``"log_softmax"``, ``"logsumexp"``, ``"cross_entropy"``: ``fn`` takes that function's arguments.
    fn : callable
        The implementation under test.
    backend : Backend
        An array library with autodiff (``backend.autodiff``: torch, JAX) and a device.
    dtype : str, default "float64"
        The input dtype.
    rng : numpy.random.Generator, optional
        Source of the random inputs and weights (a fixed seed by default).
    accepts : callable, optional
        Given the checked call's metadata (:class:`xpsoftmax.Call`), whether ``fn`` serves it.
    min_calls : int
        Fewest calls ``fn`` must have served.

    Returns
    -------
    int
        The number of calls checked.

    Raises
    ------
    ValueError
        For another ``op``, or a ``backend`` without autodiff.
    AssertionError
        Listing every mismatch: the case, the options, the expected and the actual gradient.

    Examples
    --------
    >>> import torch
    >>> import xpsoftmax
    >>> from xpsoftmax.testing import BY_ID, check_gradients
    >>> check_gradients("log_softmax", xpsoftmax.log_softmax, BY_ID["torch:cpu"], "float32") > 50
    True
    >>> class Naive(torch.autograd.Function):  # the gradient of softmax, for log_softmax
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         y = torch.log_softmax(x, -1)
    ...         ctx.save_for_backward(y)
    ...         return y
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         (y,) = ctx.saved_tensors
    ...         return torch.exp(y) * (g - (g * torch.exp(y)).sum(-1, keepdim=True))
    >>> def naive_log_softmax(x, axis=-1, *, temperature=1.0, where=None):
    ...     return Naive.apply(x)
    >>> last_axis_only = lambda call: (
    ...     call.axes == (call.ndim - 1,)
    ...     and call.opt("temperature") == "one"
    ...     and not call.opt("where")
    ... )
    >>> try:
    ...     check_gradients("log_softmax", naive_log_softmax, BY_ID["torch:cpu"], "float32",
    ...                     accepts=last_axis_only)
    ... except AssertionError as report:
    ...     print(str(report).splitlines()[0])
    naive_log_softmax gradients vs the generic ones: ... failing case(s):
    """
    if op not in DIFFERENTIABLE:
        raise ValueError(f"op must be one of {DIFFERENTIABLE}, got {op!r}")
    if not backend.autodiff:
        raise ValueError(f"backend must have autodiff (torch or JAX), got {backend.id!r}")
    import xpsoftmax

    rng = np.random.default_rng(0) if rng is None else rng
    name = getattr(fn, "__name__", repr(fn))
    failures = cases.Failures()
    checked = 0
    for label, args, kw, plan in _accepted_calls(op, backend, dtype, rng, accepts):
        checked += 1
        what = f"{name}: d {op}({label}) {dtype} on {backend.id}"
        with failures.check(what), np.errstate(all="ignore"), converting_once():
            out = _first(plan.run())
            w_np = rng.uniform(-1.0, 1.0, size=tuple(out.shape))
            w = backend.asarray(w_np, cases.dtype_name(out.dtype))
            served: list[str] = []
            got = _gradient(backend, _noting_dispatch(fn, op, served), args, kw, w)
            if served == ["generic"]:
                expected = got  # the same computation: the generic path under the same autodiff
            else:
                with xpsoftmax.force_generic():
                    expected = _gradient(backend, getattr(xpsoftmax, op), args, kw, w)
            _compare(backend, got, expected, f"{what} vs generic", _magnitude(backend, args, kw))
    failures.raise_if_any(f"{name} gradients vs the generic ones: ")
    _require_calls(name, op, checked, min_calls)
    return checked
