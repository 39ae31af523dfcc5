"""Vocabulary-parallel logsumexp and cross-entropy for ``jax.shard_map``: each device holds a
slice of the classes, and the rows' statistics are combined with collectives.

Inside ``shard_map`` over a mesh axis ``axis_name``, device ``i`` holds the classes
``[i * C_local, (i + 1) * C_local)`` of every row (equal slices, in the order of
``lax.axis_index``). The row statistics are those of :mod:`xpsoftmax._linear_classes`: each
device's maximum ``m_i``, its number of maxima ``K_i`` and the sum ``R_i`` of its other
exponentials; ``M = pmax(m_i)``, each device's ``K_i, R_i`` rescaled to ``M``, then ``psum``:
two all-reduces of per-row vectors (three with the target terms), no all-gather. The
logsumexp is ``log1p(R + K - 1)`` relative to ``M``, accurate near 0 as everywhere.

The cross-entropy's terms are sums over classes (the target's logit, taken on the device
that holds it; ``<w, z>``; ``-sum(w y log p)``; the targets' weights), each a ``psum`` of the
devices' shares, and the loss is the same formula as on whole rows
(:func:`xpsoftmax._generic.index_loss`). The ``custom_vjp`` keeps the row statistics, and the
gradient of the device's slice, ``(coef p - y) / T``, needs no collective.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from xpsoftmax._checks import (
    CrossEntropySettings,
    Temperature,
    compute_dtype,
    index_dtype,
    result_dtype,
    target_masks,
)
from xpsoftmax._generic import (
    INF,
    NAN,
    _inverse_temperature,
    _scale,
    _scaled_shift,
    cross_terms,
    index_loss,
    probability_z_loss,
    reduce_loss,
    smoothed_targets,
)
from xpsoftmax._linear import _to_rows
from xpsoftmax._linear_classes import block_statistics, finish_statistics, rescale

Array = Any
_ONE = Temperature("one", 1.0)


def _statistics(x2: Array, t: Any, axis_name: Any) -> tuple[Array, Array, Array]:
    """The whole rows' shift, ``s`` and accurate ``lse`` (keepdims) from this device's slice."""
    m, k, rest = block_statistics(jnp, x2, t)
    m_all = jax.lax.pmax(m, axis_name)
    shift = jnp.where(m_all == -INF, 0.0, m_all)
    k, rest = rescale(jnp, m, k, rest, shift, t)
    k, rest = jax.lax.psum((k, rest), axis_name)
    return finish_statistics(jnp, m_all, k, rest)


def logsumexp(x: Array, axis: int, keepdims: bool, axis_name: Any) -> Array:
    """The logsumexp of the whole class axis from this device's slice: -inf for rows of
    -inf only, +inf for a row holding +inf, NaN for one holding NaN (as
    :func:`xpsoftmax.logsumexp`)."""
    x2, lead = _to_rows(jnp, x.astype(compute_dtype(jnp, x.dtype)), axis)
    out = _lse(x2, axis_name).reshape(lead).astype(result_dtype(jnp, x.dtype, reduction=True))
    return jnp.expand_dims(out, axis) if keepdims else out


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lse(x2: Array, axis_name: Any) -> Array:
    return _lse_fwd(x2, axis_name)[0]


def _lse_fwd(x2: Array, axis_name: Any) -> tuple[Array, Any]:
    shift, s, lse = _statistics(x2, _ONE, axis_name)
    out = jnp.where(s == 0, -INF, shift + lse)
    out = jnp.where(shift == INF, INF, out)[:, 0]
    return out, (x2, shift, s)


def _lse_bwd(axis_name: Any, res: Any, g: Array) -> tuple[Array]:
    x2, shift, s = res
    p = jnp.exp(x2 - shift) / jnp.where(s == 0, 1.0, s)
    return (g[:, None] * p,)


_lse.defvjp(_lse_fwd, _lse_bwd)


def cross_entropy(
    logits: Array, target: Array, axis: int, o: CrossEntropySettings, axis_name: Any
) -> Array:
    """The cross-entropy of the whole rows from this device's slice of the classes."""
    x2, lead = _to_rows(jnp, logits.astype(compute_dtype(jnp, logits.dtype)), axis)
    index = not jnp.issubdtype(target.dtype, jnp.floating)
    t2 = target.reshape(-1) if index else _to_rows(jnp, target, axis)[0]
    per = _ce(x2, t2, o.weight, replace(o, weight=None), axis_name)
    if o.reduction == "none":
        return per.reshape(lead)
    den = _denominator(t2, o, x2.shape[1], axis_name) if index else float(per.shape[0])
    loss, _ = reduce_loss(jnp, per, o.reduction, den)
    return loss.astype(result_dtype(jnp, logits.dtype, reduction=True))


def _denominator(t2: Array, o: CrossEntropySettings, local: int, axis_name: Any) -> Array:
    """The mean's denominator: the target classes' weights (held by the devices that own the
    classes) of the entries not ignored."""
    vocab = local * jax.lax.axis_size(axis_name)
    ignored, valid = target_masks(jnp, t2, vocab, o.ignore_index)
    if o.weight is None:
        return jnp.sum(jnp.where(ignored, 0.0, 1.0))
    w_t = jax.lax.psum(_owned(t2, valid, o.weight, local, axis_name), axis_name)
    return jnp.sum(jnp.where(ignored, 0.0, w_t))


def _owned(t2: Array, valid: Array, values: Array, local: int, axis_name: Any) -> Array:
    """``values[t - offset]`` on the device that holds class ``t``, 0 on the others."""
    offset = jax.lax.axis_index(axis_name) * local
    here = valid & (t2 >= offset) & (t2 < offset + local)
    safe = jnp.where(here, t2 - offset, 0).astype(index_dtype(jnp, t2))
    if values.ndim == 1:  # per-class values (the weights)
        picked = jnp.take(values, safe, mode="clip")
    else:  # per-row values (the logits)
        picked = jnp.take_along_axis(values, safe[:, None], axis=1)[:, 0]
    return jnp.where(here, picked, 0.0)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ce(x2: Array, t2: Array, weight: Any, o: CrossEntropySettings, axis_name: Any) -> Array:
    return _ce_fwd(x2, t2, weight, o, axis_name)[0]


def _ce_fwd(
    x2: Array, t2: Array, weight: Any, o: CrossEntropySettings, axis_name: Any
) -> tuple[Array, Any]:
    o = replace(o, weight=weight)
    t, eps, z_loss = o.temperature, o.label_smoothing, o.z_loss
    local = x2.shape[1]
    vocab = local * jax.lax.axis_size(axis_name)
    shift, s, lse = _statistics(x2, t, axis_name)
    empty = s[:, 0] == 0
    lse_abs = (_scaled_shift(jnp, shift, t) + lse)[:, 0] if z_loss else None
    z = _scale(jnp, x2 - shift, t)
    w_total = float(vocab) if o.weight is None else jax.lax.psum(jnp.sum(o.weight), axis_name)
    if not jnp.issubdtype(t2.dtype, jnp.floating):
        ignored, valid = target_masks(jnp, t2, vocab, o.ignore_index)
        w_t = (
            jnp.ones_like(lse[:, 0])
            if o.weight is None
            else jax.lax.psum(_owned(t2, valid, o.weight, local, axis_name), axis_name)
        )
        z_t = _owned(t2, valid, z, local, axis_name)
        z_t = jax.lax.psum(z_t, axis_name)
        wz = None  # <w, z>: the smoothing's alone
        if eps:
            wz = jax.lax.psum(jnp.sum(z if o.weight is None else o.weight * z, axis=1), axis_name)
        per, coef = index_loss(
            jnp, lse[:, 0], lse_abs, empty, z_t, wz, w_t, w_total, vocab, eps, z_loss
        )
        per = jnp.where(valid, per, jnp.where(ignored, 0.0, NAN))
        keep = valid & ~empty
    else:
        wy = smoothed_targets(jnp, t2, o.weight, eps, vocab, x2.dtype)
        per = cross_terms(jnp, z, lse[:, 0], empty[:, None], wy, 1)
        coef = jnp.sum(wy, axis=1)
        per, coef = jax.lax.psum((per, coef), axis_name)
        if lse_abs is not None:
            y = t2.astype(x2.dtype)
            w_entry = (
                jnp.ones_like(coef)
                if o.weight is None
                else jax.lax.psum(jnp.sum(o.weight * y, axis=1), axis_name)
            )
            per, coef = probability_z_loss(jnp, per, coef, w_entry, lse_abs, empty, z_loss)
        keep = ~empty
    # The residuals: the inputs and the whole rows' shift, sum, gradient factor and mask.
    return per, (x2, t2, weight, (shift, s, coef, keep))


def _ce_bwd(o: CrossEntropySettings, axis_name: Any, res: Any, g: Array) -> tuple[Any, ...]:
    x2, t2, weight, (shift, s, coef, keep) = res
    t, eps = o.temperature, o.label_smoothing
    local = x2.shape[1]
    vocab = local * jax.lax.axis_size(axis_name)
    p = jnp.exp(_scale(jnp, x2 - shift, t)) / jnp.where(s == 0, 1.0, s)
    if jnp.issubdtype(t2.dtype, jnp.floating):
        y_term = smoothed_targets(jnp, t2, weight, eps, vocab, x2.dtype)
    else:
        _, valid = target_masks(jnp, t2, vocab, o.ignore_index)
        w_t = jnp.ones(t2.shape, x2.dtype)
        if weight is not None:
            w_t = jax.lax.psum(_owned(t2, valid, weight, local, axis_name), axis_name)
        offset = jax.lax.axis_index(axis_name) * local
        ids = offset + jnp.arange(local, dtype=t2.dtype)
        y_term = jnp.where(ids[None, :] == t2[:, None], (w_t * (1.0 - eps))[:, None], 0.0)
        if eps:
            y_term = y_term + (eps / vocab) * (1.0 if weight is None else weight)
    keep = keep if keep.ndim == 2 else keep[:, None]
    grad = jnp.where(keep, coef[:, None] * p - y_term, 0.0)
    grad = grad * (_inverse_temperature(jnp, t) * g[:, None])
    zero_t = (
        jnp.zeros_like(t2)
        if jnp.issubdtype(t2.dtype, jnp.floating)
        else jnp.zeros(t2.shape, dtype=jax.dtypes.float0)
    )
    return grad.astype(x2.dtype), zero_t, None if weight is None else jnp.zeros_like(weight)


_ce.defvjp(_ce_fwd, _ce_bwd)

__all__ = ["cross_entropy", "logsumexp"]
