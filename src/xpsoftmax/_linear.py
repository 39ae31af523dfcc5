"""The language-model head without its logits: ``cross_entropy(h @ W.T + b, target)`` by chunks.

For rows ``h_i`` (hidden size H), a layer ``W`` of shape (V, H) as ``torch.nn.Linear`` holds it
and a bias ``b`` (V,), the logits are ``z_i = W h_i + b`` and

.. math::

    \\mathrm{loss}_i = \\mathrm{CE}(z_i, t_i), \\quad
    G_i = \\partial \\mathrm{loss} / \\partial z_i, \\quad
    dh_i = G_i W, \\quad dW = \\sum_i G_i^T h_i, \\quad db = \\sum_i G_i

where CE is :func:`xpsoftmax.cross_entropy` with every option, and ``G`` is the gradient that
:func:`xpsoftmax.cross_entropy_with_grad` gives (the reduction's factor included). The rows are
taken a chunk at a time: a chunk's logits, losses and ``G`` exist only while it is worked on,
``dh`` takes the chunk's rows, and ``dW`` and ``db`` accumulate. The memory beyond the inputs
and the gradients is one chunk of logits and the cross-entropy's temporaries on it, whatever
the number of rows.

The mean's denominator (the target classes' weights of the entries not ignored, or the number
of entries) depends on the targets alone, so it is known before the first chunk: every chunk's
``G`` takes its final factor at once. 16-bit inputs are multiplied in float32 (as the
cross-entropy computes), so the logits are those of float32 accumulation; the loss is float32.

Where a row of logits alone is large (more than 2**18 classes by default, 1 MiB of float32),
the classes are split too: :mod:`xpsoftmax._linear_classes` works through a chunk of rows a
chunk of classes at a time, in two passes.

Every implementation of ``linear_cross_entropy`` takes ``(xp, h, linear_weight, bias, target,
axis, settings, chunks)`` (``chunks`` a :class:`~xpsoftmax._registry.Chunks`); the fast paths
build their autodiff rules on :func:`parts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ._checks import (
    CrossEntropySettings,
    compute_dtype,
    index_dtype,
    known,
    result_dtype,
    target_masks,
)
from ._generic import _class_weights, _cross_entropy, _device, mean_over
from ._linear_classes import RowChunk, row_chunk
from ._registry import Chunks

__all__ = [
    "Parts",
    "chunk_shape",
    "default_chunk_rows",
    "each_chunk",
    "linear_cross_entropy",
    "parts",
]

Array = Any

#: The default chunk holds at most this share (1/32) of all the float32 logits...
_SHARE = 32
#: ...and at most this many bytes of them...
_CHUNK_BYTES = 64 * 2**20
#: ...but at least this many rows: each chunk reads all of W three times (the logits, dh and
#: dW), so fewer rows spend the time moving W rather than multiplying.
_MIN_ROWS = 256
#: Rows of more classes than this (1 MiB of float32 logits) are split into chunks of classes...
_ROW_CLASSES = 2**18
#: ...of this many classes each.
_CLASS_CHUNK = 2**16


def default_chunk_rows(rows: int, vocab: int) -> int:
    """Rows per chunk when ``chunk_size`` is None: at most 1/32 of the logits and 64 MiB of
    float32 logits, but at least 256 rows (or all of them, if fewer)."""
    by_share = -(-rows // _SHARE)
    by_bytes = _CHUNK_BYTES // (4 * max(vocab, 1))
    return max(1, min(rows, max(_MIN_ROWS, min(by_share, by_bytes))))


def default_chunk_classes(vocab: int) -> int:
    """Classes per chunk when not given: all of them, up to 2**18; 2**16 beyond."""
    return vocab if vocab <= _ROW_CLASSES else _CLASS_CHUNK


def chunk_shape(rows: int, vocab: int, chunks: Chunks) -> tuple[int, int]:
    """The rows and classes per chunk of logits: those asked for, or the defaults (the rows'
    default sized by the chunk's classes)."""
    classes = min(chunks.classes or default_chunk_classes(vocab), vocab)
    return chunks.rows or default_chunk_rows(rows, classes), classes


@dataclass(frozen=True)
class Parts:
    """The loss and, when asked for, its gradients (None otherwise; ``db`` None without a
    bias)."""

    loss: Array
    dh: Array | None = None
    dw: Array | None = None
    db: Array | None = None


def _to_rows(xp: Any, a: Array, axis: int) -> tuple[Array, tuple[int, ...]]:
    """``a`` with ``axis`` moved last and the other axes flattened into rows, and the shape of
    those other axes."""
    if axis != a.ndim - 1:
        order = (*(i for i in range(a.ndim) if i != axis), axis)
        a = xp.permute_dims(a, order)
    lead = tuple(a.shape[:-1])
    rows = math.prod(lead) if all(known(n) for n in lead) else -1
    return xp.reshape(a, (rows, a.shape[-1])), lead


def _from_rows(xp: Any, a: Array, lead: tuple[int, ...], axis: int) -> Array:
    """The inverse of :func:`_to_rows`."""
    a = xp.reshape(a, (*lead, a.shape[-1]))
    if axis == a.ndim - 1:
        return a
    order = list(range(a.ndim - 1))
    order.insert(axis, a.ndim - 1)
    return xp.permute_dims(a, tuple(order))


def _chunks(rows: int, step: int) -> list[tuple[int | None, int | None]]:
    """The ``(start, stop)`` of each chunk; one chunk of everything where the number of rows
    is not known yet (Dask)."""
    if rows < 0:
        return [(None, None)]
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def _denominator(
    xp: Any, target: Array, index_target: bool, vocab: int, o: CrossEntropySettings, cdt: Any
) -> Array | float:
    """The mean's denominator over every entry, as the cross-entropy's terms define it."""
    if not index_target:
        if known(target.shape[0]):
            return float(target.shape[0])
        return xp.sum(xp.ones_like(xp.sum(target, axis=1)))
    ignored, valid = target_masks(xp, target, vocab, o.ignore_index)
    t_safe = xp.where(valid, xp.astype(target, index_dtype(xp, target), copy=False), 0)
    w_t = _class_weights(xp, o.weight, t_safe) * xp.ones_like(target, dtype=cdt)
    return xp.sum(xp.where(ignored, 0.0, w_t))


def parts(
    xp: Any,
    h: Array,
    linear_weight: Array,
    bias: Array | None,
    target: Array,
    axis: int,
    o: CrossEntropySettings,
    chunks: Chunks,
    *,
    grads: bool,
    cotangent: Array | None = None,
    loop: Callable[..., RowChunk] | None = None,
) -> Parts:
    """The loss of ``cross_entropy(h @ W.T + bias, target, axis=axis)`` with the options ``o``,
    by ``chunks``; with ``grads``, also ``dh``, ``dW`` and ``db``: those of the loss (of the sum
    of the entries' losses for ``reduction="none"``), or, given ``cotangent`` (the entries'
    shape, ``reduction="none"`` only), those of ``sum(cotangent * loss)``: what reverse-mode
    autodiff asks of this function. ``loop`` runs the chunks (default :func:`each_chunk`; JAX
    runs them in a ``lax.scan``)."""
    cdt = compute_dtype(xp, h.dtype)
    index_target = not xp.isdtype(target.dtype, "real floating")
    h2, lead = _to_rows(xp, h, axis)
    t2 = xp.reshape(target, (h2.shape[0],)) if index_target else _to_rows(xp, target, axis)[0]
    c2 = None if cotangent is None else xp.reshape(cotangent, (h2.shape[0],))
    vocab, rows = linear_weight.shape[0], h2.shape[0]
    w = xp.astype(linear_weight, cdt, copy=False)
    b = None if bias is None else xp.astype(bias, cdt, copy=False)
    factor: Any = 1.0
    if o.reduction == "mean":
        den = _denominator(xp, t2, index_target, vocab, o, cdt)
        if isinstance(den, float):
            den = xp.asarray(den, dtype=cdt, device=_device(h2))
        factor = mean_over(xp, 1.0, den)
    per_entry = replace(o, reduction="none")
    step, classes = chunk_shape(rows, vocab, chunks)

    def chunk(hc: Array, tc: Array, cc: Array | None) -> RowChunk:
        hc = xp.astype(hc, cdt, copy=False)
        row_factor = factor if cc is None else xp.astype(cc[:, None], cdt, copy=False)
        args = (xp, hc, w, b, tc, per_entry)
        if classes < vocab:
            return row_chunk(*args, classes, row_factor, grads=grads)
        return _row_chunk(*args, row_factor, grads=grads)

    if rows == 0:  # no chunk; a loss of 0 still on h's graph (a zero gradient under autodiff)
        on_graph = xp.sum(xp.astype(h2, cdt, copy=False))
        every = RowChunk(xp.zeros((0,), dtype=cdt, device=_device(h2)) + on_graph)
    else:
        every = (loop or each_chunk)(xp, chunk, h2, t2, c2, step)
    if o.reduction == "none":
        loss = xp.reshape(every.per, lead)
    elif o.reduction == "sum":
        loss = xp.sum(every.per)
    else:
        loss = mean_over(xp, xp.sum(every.per), den)
    loss = xp.astype(loss, result_dtype(xp, h.dtype, reduction=True), copy=False)
    if not grads:
        return Parts(loss)
    return Parts(loss, *_gradients(xp, h, linear_weight, bias, h2, lead, axis, every))


def each_chunk(
    xp: Any,
    chunk: Callable[[Array, Array, Array | None], RowChunk],
    h2: Array,
    t2: Array,
    c2: Array | None,
    step: int,
) -> RowChunk:
    """The chunks of ``step`` rows one after the other (a Python loop): every row's loss and
    ``dh`` concatenated, ``dW`` and ``db`` summed. ``chunk(h, target, cotangent)`` computes
    one."""
    pers, dhs = [], []
    dw = db = None
    for start, stop in _chunks(h2.shape[0], step):
        cc = None if c2 is None else c2[start:stop]
        c = chunk(h2[start:stop, ...], t2[start:stop, ...], cc)
        pers.append(c.per)
        if c.dh is None:
            continue
        dhs.append(c.dh)
        dw = c.dw if dw is None else dw + c.dw
        if c.db is not None:
            db = c.db if db is None else db + c.db
    dh = None if not dhs else dhs[0] if len(dhs) == 1 else xp.concat(dhs)
    return RowChunk(pers[0] if len(pers) == 1 else xp.concat(pers), dh, dw, db)


def _row_chunk(
    xp: Any,
    hc: Array,
    w: Array,
    b: Array | None,
    target: Array,
    o: CrossEntropySettings,
    row_factor: Any,
    *,
    grads: bool,
) -> RowChunk:
    """A chunk of rows with all its classes at once: the cross-entropy of its logits, and the
    gradients of ``sum(row_factor * per)``."""
    z = hc @ xp.matrix_transpose(w)
    if b is not None:
        z = z + b
    per, g = _cross_entropy(xp, z, target, 1, o, with_grad=grads)
    if g is None:
        return RowChunk(per)
    g = g * row_factor
    return RowChunk(
        per, g @ w, xp.matrix_transpose(g) @ hc, None if b is None else xp.sum(g, axis=0)
    )


def _gradients(
    xp: Any,
    h: Array,
    linear_weight: Array,
    bias: Array | None,
    h2: Array,
    lead: tuple[int, ...],
    axis: int,
    every: RowChunk,
) -> tuple[Array, Array, Array | None]:
    """The accumulated gradients in the inputs' shapes and dtypes (zeros where no row was)."""
    dev = _device(h2)
    if every.dh is not None:
        dh = _from_rows(xp, every.dh, lead, axis)
    else:
        dh = xp.zeros(h.shape, dtype=h.dtype, device=dev)
    dw = every.dw
    if dw is None:
        dw = xp.zeros(linear_weight.shape, dtype=linear_weight.dtype, device=dev)
    db = every.db
    if bias is not None and db is None:
        db = xp.zeros(bias.shape, dtype=bias.dtype, device=dev)
    dh = xp.astype(dh, h.dtype, copy=False)
    dw = xp.astype(dw, linear_weight.dtype, copy=False)
    db = None if bias is None else xp.astype(db, bias.dtype, copy=False)
    return dh, dw, db


def linear_cross_entropy(
    xp: Any,
    h: Array,
    linear_weight: Array,
    bias: Array | None,
    target: Array,
    axis: int,
    options: CrossEntropySettings,
    chunks: Chunks,
) -> Array:
    """Generic linear cross-entropy; see :func:`xpsoftmax.linear_cross_entropy`."""
    return parts(xp, h, linear_weight, bias, target, axis, options, chunks, grads=False).loss


def linear_cross_entropy_with_grad(
    xp: Any,
    h: Array,
    linear_weight: Array,
    bias: Array | None,
    target: Array,
    axis: int,
    options: CrossEntropySettings,
    chunks: Chunks,
) -> tuple[Array, Array, Array, Array | None]:
    """Generic linear cross-entropy and its gradients; see
    :func:`xpsoftmax.linear_cross_entropy_with_grad`."""
    p = parts(xp, h, linear_weight, bias, target, axis, options, chunks, grads=True)
    return p.loss, p.dh, p.dw, p.db
