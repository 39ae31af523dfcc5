"""One chunk of rows of the linear cross-entropy, taken a chunk of classes at a time.

Where a row of logits alone is large (a vocabulary of millions), even a few rows of logits are
too many to hold: the classes are split too, and a chunk of rows is worked through in two
passes over its chunks of classes.

1. The row statistics. For each chunk of classes ``k``, with ``z = scale(x - m)`` the scaled
   logits shifted by the running maximum ``m`` of the raw logits, the pass keeps the number of
   maxima ``K`` (``z == 0``) and the sum ``R`` of the other exponentials, as the generic
   logsumexp does; a new maximum ``m'`` rescales what was kept by ``f = exp(scale(m - m'))``
   (``R <- R f + K f``, ``K <- 0``, unless ``scale(m - m') == 0``, when the old maxima still
   are). At the end ``s = K + R`` and ``lse = log1p(R + K - 1)``: the logsumexp accurate near 0
   (``logsumexp([0, -40]) = 4.2e-18``) and the shift of the whole row, as over full rows.
2. The loss and the gradient. Each chunk of classes again: ``p = exp(z) / s``, the target's
   logit picked in the chunk that holds it, ``<w, z>`` and ``-sum(w y log p)`` summed over the
   chunks; the chunk's gradient ``G_k = (coef p - y_term) / T`` (the entry's factor included)
   gives ``dh += G_k W_k`` and the classes' ``dW_k``, ``db_k`` at once.

The loss is then the same formulas as on full rows (:func:`xpsoftmax._generic.index_loss`,
:func:`~xpsoftmax._generic.cross_terms`, :func:`~xpsoftmax._generic.probability_z_loss`).
The price is the logits computed twice (two matrix products of each chunk instead of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._checks import CrossEntropySettings, index_dtype, target_masks
from ._generic import (
    INF,
    NAN,
    _class_weights,
    _device,
    _inverse_temperature,
    _scale,
    _scaled_shift,
    _unsqueeze,
    cross_terms,
    index_loss,
    probability_z_loss,
    smoothed_targets,
)

__all__ = ["RowChunk", "row_chunk"]

Array = Any


@dataclass(frozen=True)
class RowChunk:
    """A chunk of rows' per-entry losses and, when asked for, its share of the gradients:
    its rows of ``dh`` and its terms of ``dW`` and ``db`` (in the compute dtype)."""

    per: Array
    dh: Array | None = None
    dw: Array | None = None
    db: Array | None = None


def _logits(xp: Any, hc: Array, w: Array, b: Array | None, lo: int, hi: int) -> Array:
    z = hc @ xp.matrix_transpose(w[lo:hi, ...])
    return z if b is None else z + b[lo:hi]


def block_statistics(xp: Any, x: Array, t: Any) -> tuple[Array, Array, Array]:
    """A block of raw logits' row maximum ``m``, and, relative to it (0 on all -inf rows), the
    number of maxima ``K`` of the scaled logits and the sum ``R`` of the others' exponentials
    (all keepdims)."""
    m = xp.max(x, axis=1, keepdims=True)
    z = _scale(xp, x - xp.where(m == -INF, 0.0, m), t)
    top = z == 0
    rest = xp.sum(xp.where(top, 0.0, xp.exp(z)), axis=1, keepdims=True)
    return m, xp.sum(xp.astype(top, z.dtype), axis=1, keepdims=True), rest


def rescale(xp: Any, m: Array, k: Array, rest: Array, shift: Array, t: Any) -> tuple[Array, Array]:
    """``K`` and ``R`` kept relative to the maximum ``m``, made relative to ``shift`` (a larger
    or equal maximum): the old maxima are maxima still where their scaled difference is 0 (as
    the full row's test would find), else terms of ``R``."""
    z_old = _scale(xp, m - shift, t)
    still = z_old == 0
    f = xp.exp(z_old)
    return xp.where(still, k, 0.0), rest * f + xp.where(still, 0.0, k * f)


def finish_statistics(xp: Any, m: Array, k: Array, rest: Array) -> tuple[Array, Array, Array]:
    """The row shift (0 on all -inf rows), ``s = K + R`` and the logsumexp relative to the
    shift, accurate near 0, ``log1p(R + K - 1)``."""
    shift = xp.where(m == -INF, 0.0, m)
    return shift, k + rest, xp.log1p(rest + xp.where(k > 0, k - 1.0, 0.0))


def _statistics(
    xp: Any, hc: Array, w: Array, b: Array | None, o: CrossEntropySettings, blocks: list[Any]
) -> tuple[Array, Array, Array]:
    """The row shift, ``s`` and the accurate ``lse`` of the scaled logits relative to it (all
    keepdims), one chunk of classes at a time."""
    t = o.temperature
    m: Array = None
    k: Array = None
    rest: Array = None
    for lo, hi in blocks:
        m_c, k_c, rest_c = block_statistics(xp, _logits(xp, hc, w, b, lo, hi), t)
        if m is None:
            m, k, rest = m_c, k_c, rest_c
            continue
        m_new = xp.maximum(m, m_c)
        shift = xp.where(m_new == -INF, 0.0, m_new)
        k, rest = rescale(xp, m, k, rest, shift, t)
        k_c, rest_c = rescale(xp, m_c, k_c, rest_c, shift, t)
        m, k, rest = m_new, k + k_c, rest + rest_c
    return finish_statistics(xp, m, k, rest)


def row_chunk(
    xp: Any,
    hc: Array,
    w: Array,
    b: Array | None,
    target: Array,
    o: CrossEntropySettings,
    classes: int,
    row_factor: Any,
    *,
    grads: bool,
) -> RowChunk:
    """The per-entry cross-entropy of the logits ``hc @ w.T + b`` (rows of ``hc``; ``target``
    class indices (rows,) or probabilities (rows, V)) over chunks of ``classes`` classes, with
    every option of ``o`` (its reduction aside); with ``grads``, the gradients of
    ``sum(row_factor * per)`` (``row_factor`` a number or a column)."""
    vocab = w.shape[0]
    blocks = [(lo, min(lo + classes, vocab)) for lo in range(0, vocab, classes)]
    shift, s, lse = _statistics(xp, hc, w, b, o, blocks)
    t, eps, z_loss = o.temperature, o.label_smoothing, o.z_loss
    empty = s == 0
    lse_abs = xp.squeeze(_scaled_shift(xp, shift, t) + lse, axis=1) if z_loss else None
    index = not xp.isdtype(target.dtype, "real floating")
    if index:
        ignored, valid = target_masks(xp, target, vocab, o.ignore_index)
        t_safe = xp.where(valid, xp.astype(target, index_dtype(xp, target), copy=False), 0)
        w_t = _class_weights(xp, o.weight, t_safe) * xp.ones_like(lse[:, 0])
        w_total = float(vocab) if o.weight is None else xp.sum(o.weight)
        _, coef = index_loss(
            xp, lse[:, 0], lse_abs, empty[:, 0], 0.0, 0.0, w_t, w_total, vocab, eps, z_loss
        )
        keep = _unsqueeze(xp, valid & ~empty[:, 0], 1)
        z_t = wz = per = 0.0
    else:
        wy_all = smoothed_targets(xp, target, o.weight, eps, vocab, lse.dtype)
        coef = xp.sum(wy_all, axis=1)
        if lse_abs is not None:
            y = xp.astype(target, lse.dtype, copy=False)
            w_entry = xp.ones_like(coef) if o.weight is None else xp.sum(o.weight * y, axis=1)
            _, coef = probability_z_loss(xp, coef, coef, w_entry, lse_abs, empty[:, 0], z_loss)
        keep = ~empty
        per = 0.0
    factor = _inverse_temperature(xp, t) * row_factor
    dh = None
    dw_blocks, db_blocks = [], []
    for lo, hi in blocks:
        z = _scale(xp, _logits(xp, hc, w, b, lo, hi) - shift, t)
        w_k = None if o.weight is None else o.weight[lo:hi]
        if index:
            local = t_safe - lo
            here = (local >= 0) & (local < hi - lo)
            ids = xp.arange(hi - lo, dtype=t_safe.dtype, device=_device(z))
            onehot = ids[None, :] == xp.where(here, local, -1)[:, None]
            z_t = z_t + xp.sum(xp.where(onehot, z, 0.0), axis=1)
            if eps:
                wz = wz + xp.sum(z if w_k is None else w_k * z, axis=1)
            y_term = xp.where(onehot, (w_t * (1.0 - eps))[:, None], 0.0)
            if eps:
                y_term = y_term + (eps / vocab) * (1.0 if w_k is None else w_k)
        else:
            y_term = wy_all[:, lo:hi]
            per = per + cross_terms(xp, z, lse[:, 0], empty, y_term, 1)
        if not grads:
            continue
        p = xp.exp(z) / xp.where(empty, 1.0, s)
        g = xp.where(keep, coef[:, None] * p - y_term, 0.0) * factor
        dh = g @ w[lo:hi, ...] if dh is None else dh + g @ w[lo:hi, ...]
        dw_blocks.append(xp.matrix_transpose(g) @ hc)
        if b is not None:
            db_blocks.append(xp.sum(g, axis=0))
    if index:
        per, _ = index_loss(
            xp, lse[:, 0], lse_abs, empty[:, 0], z_t, wz, w_t, w_total, vocab, eps, z_loss
        )
        per = xp.where(valid, per, xp.where(ignored, 0.0, xp.full_like(per, NAN)))
    elif lse_abs is not None:
        per, _ = probability_z_loss(xp, per, coef, w_entry, lse_abs, empty[:, 0], z_loss)
    if not grads:
        return RowChunk(per)
    dw = xp.concat(dw_blocks, axis=0)
    db = xp.concat(db_blocks, axis=0) if b is not None else None
    return RowChunk(per, dh, dw, db)
