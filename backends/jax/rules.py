"""JAX fast paths: the contract's formulas in ``jax.numpy`` with the shift held out of
differentiation, and hand-written derivative rules:

* softmax, log_softmax and logsumexp are ``jax.custom_jvp`` functions whose tangent is the
  closed form (``p * (dx - <p, dx>)`` and so on), so that forward and reverse mode, ``vmap``
  and ``jit`` all see one cheap, NaN-free rule, zero on empty events;
* cross-entropy with class indices is a ``jax.custom_jvp`` whose rule computes the loss and
  the gradient ``p - y`` in one pass; the tangent ``<p - y, dx>`` is linear in ``dx``, so
  reverse mode only scales that gradient (and forward mode, ``jax.jvp``, works too).

``jax.nn.softmax`` itself gives NaN on rows that are all -inf and in their gradients, so it
is not used.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from xpsoftmax import _generic
from xpsoftmax._checks import (
    CrossEntropySettings,
    Temperature,
    compute_dtype,
    index_dtype,
    target_masks,
)
from xpsoftmax._generic import BIG_T
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.jax import take_along_axis

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_DEVICES = ("cpu", "gpu", "tpu")


def _compute(x: Any) -> Any:
    return x.astype(compute_dtype(jnp, x.dtype))


def _plain(call: Call) -> bool:
    return call.opt("temperature") in ("one", "positive")


def _normalization_ok(call: Call) -> bool:
    return call.axes != () and not call.opt("where") and _plain(call)


def _parts(x: Any, axes: tuple[int, ...], inv_t: float) -> tuple[Any, Any, Any]:
    """``z = (x - max) * (1 / T)``, ``e = exp(z)``, ``s = sum(e)``."""
    z = _times(x - _top(x, axes), inv_t)
    e = jnp.exp(z)
    return z, e, jnp.sum(e, axis=axes, keepdims=True)


def _top(x: Any, axes: tuple[int, ...]) -> Any:
    """The normalisations' shift, the maximum (keepdims). An all -inf row is shifted by the
    lowest finite number, so that it stays -inf (not NaN): one ``maximum`` on the reduced
    array, which XLA fuses into the elementwise loop at no cost, where a compare and select
    measurably slows it down."""
    m = jax.lax.stop_gradient(jnp.max(x, axis=axes, keepdims=True))
    return jnp.maximum(m, jnp.finfo(x.dtype).min)


def _log_sum(x: Any, shift: Any, axes: tuple[int, ...], inv_t: float) -> tuple[Any, Any]:
    """``(log(s), s)`` for ``s = sum(exp(z))``, ``z = (x - shift) * (1 / T) <= 0`` and 0 at
    each maximum, accurate near 0 (keepdims): 0 where ``s = 0``.

    Where one maximum leaves the rest of the sum below 0.5, ``log(s) = log1p(rest)``, with
    ``rest = sum(exp(z) - [z == 0])``: ``logsumexp([0, -40])`` is 4.2e-18, not
    ``log(1.0) = 0`` (as ``_generic._log_total``); elsewhere ``log(s)`` is as accurate.

    Each sum is a single reduction that XLA's CPU backend fuses whole with its elementwise
    input: the indicator ``[z == 0]`` is arithmetic, ``max(1 + d * big, 0)`` for
    ``d = x - shift`` (1 at 0, 0 at -1/big and below; in between ``exp(z)`` rounds to 1, so
    ``s >= 2`` takes ``log(s)`` there), and the rest's ``d`` is spelled
    ``x + (-shift)`` so that the two reductions share no full-size intermediate. A compare
    in the loop, or an intermediate shared by two reductions (which XLA then writes to
    memory), made logsumexp 3-6x slower than ``jax.nn.logsumexp`` on CPU (jax 0.10).
    """
    s = jnp.sum(jnp.exp(_times(x - shift, inv_t)), axis=axes, keepdims=True)
    d = x + (-shift)
    # From d, not z: under jit XLA folds (d / T) * big into d * inf, NaN at the maxima.
    top = jnp.maximum(1.0 + d * jnp.finfo(d.dtype).max, 0.0)
    rest = jnp.sum(jnp.exp(_times(d, inv_t)) - top, axis=axes, keepdims=True)
    return jnp.where(s >= 1.5, jnp.log(s), jnp.log1p(rest)), s


def _guard(s: Any) -> Any:
    """``s`` made safe to divide by and take the log of: the maximum contributes exp(0) = 1, so
    ``s >= 1`` (unchanged by adding the smallest normal number) except on an empty event,
    where ``s = 0`` becomes tiny and ``e / s = 0``, ``-inf - log s = -inf``."""
    return s + jnp.finfo(s.dtype).tiny


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _softmax(x: Any, axes: tuple[int, ...], inv_t: float) -> Any:
    _, e, s = _parts(x, axes, inv_t)
    return e / _guard(s)


@_softmax.defjvp
def _softmax_jvp(axes: tuple[int, ...], inv_t: float, primals: Any, tangents: Any) -> Any:
    (x,), (dx,) = primals, tangents
    p = _softmax(x, axes, inv_t)
    dz = _times(dx, inv_t)
    return p, p * (dz - jnp.sum(p * dz, axis=axes, keepdims=True))


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _log_softmax(x: Any, axes: tuple[int, ...], inv_t: float) -> Any:
    shift = _top(x, axes)
    return _times(x - shift, inv_t) - _log_sum(x, shift, axes, inv_t)[0]


@_log_softmax.defjvp
def _log_softmax_jvp(axes: tuple[int, ...], inv_t: float, primals: Any, tangents: Any) -> Any:
    (x,), (dx,) = primals, tangents
    _, e, s = _parts(x, axes, inv_t)
    dz = _times(dx, inv_t)
    tangent = dz - jnp.sum((e / _guard(s)) * dz, axis=axes, keepdims=True)
    out = _log_softmax(x, axes, inv_t)
    return out, jnp.where(s == 0, 0.0, tangent)  # zero on empty events


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _logsumexp(x: Any, axes: tuple[int, ...]) -> Any:
    return _lse_parts(x, axes)[0]


def _lse_parts(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    m = jax.lax.stop_gradient(jnp.max(x, axis=axes, keepdims=True))
    shift = jnp.where(jnp.isfinite(m), m, 0.0)  # +inf: shift by 0 so the sum is +inf
    log_s, s = _log_sum(x, shift, axes, 1.0)
    zero = s == 0
    p = jnp.exp(x - shift) / jnp.where(zero, 1.0, s)
    return jnp.where(zero, -jnp.inf, log_s) + shift, p


@_logsumexp.defjvp
def _logsumexp_jvp(axes: tuple[int, ...], primals: Any, tangents: Any) -> Any:
    (x,), (dx,) = primals, tangents
    out, p = _lse_parts(x, axes)
    return out, jnp.sum(p * dx, axis=axes, keepdims=True)


def _times(d: Any, inv_t: float) -> Any:
    """``d * (1 / T)``. A reciprocal below float32's smallest normal number would be flushed
    to 0 by XLA on CPU (``-inf * 0 = NaN``): then in two exact steps, as in
    ``_generic._divide``."""
    if inv_t == 1.0:
        return d
    if inv_t >= 1 / BIG_T:
        return d * inv_t
    # Held: XLA would fold the two factors into one subnormal constant, flushed to 0.
    return jax.lax.optimization_barrier(d * (1 / BIG_T)) * (inv_t * BIG_T)


def _inv(t: Temperature) -> float:
    """1 / T: finite, as a positive temperature is at least the smallest normal number (the
    shift comes first, so ``(x - max) * (1 / T)`` cannot make a NaN either)."""
    return 1.0 / t.value if t.kind == "positive" else 1.0


def _empty(x: Any, axes: tuple[int, ...]) -> bool:
    return any(x.shape[a] == 0 for a in axes)


@register(
    "softmax",
    "jax",
    "jax.custom_jvp",
    priority=50,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    if _empty(x, axes):
        return jnp.zeros_like(x)
    return _softmax(_compute(x), axes, _inv(temperature)).astype(x.dtype)


@register(
    "log_softmax",
    "jax",
    "jax.custom_jvp",
    priority=50,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    if _empty(x, axes):
        return jnp.zeros_like(x)
    return _log_softmax(_compute(x), axes, _inv(temperature)).astype(x.dtype)


@register(
    "logsumexp",
    "jax",
    "jax.custom_jvp",
    priority=50,
    supports=lambda c: c.axes != () and not (c.opt("b") or c.opt("return_sign") or c.opt("where")),
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="b=None, where=None, return_sign=False",
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
    xc = _compute(x)
    if _empty(x, axes):
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        out = jnp.full(shape, -jnp.inf, dtype=xc.dtype)
    else:
        out = _logsumexp(xc, axes)
    return out if keepdims else jnp.squeeze(out, axis=axes)


def _ce_ok(call: Call) -> bool:
    return call.opt("target") == "index" and not call.opt("weight") and _plain(call)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _fused_ce(logits: Any, target: Any, axis: int, o: CrossEntropySettings) -> Any:
    # Not differentiated: the loss alone, no gradient to compute.
    if o.label_smoothing == 0:
        return _lean_loss(logits, target, axis, o)
    return _generic.cross_entropy(jnp, logits, target, axis, o)


def _lean_loss(logits: Any, target: Any, axis: int, o: CrossEntropySettings) -> Any:
    """``logsumexp - logit[target]`` from two fused reductions over the logits and a gather of
    the raw logits: no logits-sized intermediate for XLA to write (the generic formula, which
    also serves label smoothing, gathers from the shifted logits)."""
    x = _compute(logits)
    inv_t = _inv(o.temperature)
    n_classes = x.shape[axis]
    m = jnp.maximum(jnp.max(x, axis=axis, keepdims=True), jnp.finfo(x.dtype).min)
    # Accurate near 0 (a confident right answer); 0 on an all -inf row.
    lse_rel = jnp.squeeze(_log_sum(x, m, (axis,), inv_t)[0], axis=axis)
    m = jnp.squeeze(m, axis=axis)
    ignored, valid = target_masks(jnp, target, n_classes, o.ignore_index)
    t = target.astype(index_dtype(jnp, target))
    picked = take_along_axis(x, jnp.expand_dims(jnp.where(valid, t, 0), axis), axis)
    z_t = _times(jnp.squeeze(picked, axis=axis) - m, inv_t)
    per = lse_rel - z_t  # +inf on an all -inf row, as z_t = -inf there
    if o.z_loss:
        lse = _times(m, inv_t) + lse_rel
        per = per + o.z_loss * lse * lse
    per = jnp.where(valid, per, jnp.where(ignored, 0.0, jnp.nan))
    if o.reduction == "none":
        return per
    total = jnp.sum(per)
    if o.reduction == "sum":
        return total
    return _generic.mean_over(jnp, total, jnp.sum(~ignored).astype(per.dtype))


def _ce_forward(logits: Any, target: Any, axis: int, o: CrossEntropySettings) -> Any:
    return _generic.cross_entropy_with_grad(jnp, logits, target, axis, o)


@_fused_ce.defjvp
def _fused_ce_jvp(axis: int, o: CrossEntropySettings, primals: Any, tangents: Any) -> Any:
    # The forward pass computes the gradient G = d loss / d logits with the loss; the tangent
    # is <G, dx> (per entry for reduction="none"), linear in dx, so reverse mode transposes it
    # into G * cotangent with no second softmax, and forward mode works as well.
    logits, target = primals
    dx, _ = tangents
    loss, grad = _ce_forward(logits, target, axis, o)
    prod = grad.astype(loss.dtype) * dx.astype(loss.dtype)
    tangent = jnp.sum(prod, axis=axis) if loss.ndim else jnp.sum(prod)
    return loss, tangent.astype(loss.dtype)


@register(
    "cross_entropy",
    "jax",
    "jax.fused_jvp",
    priority=50,
    supports=_ce_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="class indices, weight=None, scalar temperature > 0",
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    return _fused_ce(logits, target, axis, options)  # weight is None: the record hashes
