"""NumPy fast path of the linear cross-entropy: the chunks of ``xpsoftmax._linear`` with one
chunk's logits buffer, reused for every chunk and turned into the chunk's exponentials and
then its gradient in place; ``dh`` rows written where they belong (``matmul(out=)``), ``dW``
accumulated a block of classes at a time (NumPy has no in-place matrix product-and-add, so a
``(block, H)`` product at a time instead of a ``(V, H)`` one).

It takes class indices without label smoothing or z-loss and a number temperature (one or
positive); the other options take the generic chunks. The formulas are the generic ones (the
shift by the maximum, the division by T, the logsumexp accurate near 0, the weighted mean
over the entries not ignored), as in the torch path (``xpsoftmax.backends.torch.linear``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xpsoftmax import _linear
from xpsoftmax._checks import CrossEntropySettings, compute_dtype, result_dtype, target_masks
from xpsoftmax._generic import BIG_T, mean_over
from xpsoftmax._registry import Call, Chunks, register

_FLOATS = ("float16", "float32", "float64")
#: Classes of dW per in-place add (the product's temporary: this many rows of H).
_CLASS_BLOCK = 4096


def _ok(call: Call) -> bool:
    return (
        call.opt("target") == "index"
        and not call.opt("label_smoothing")
        and not call.opt("z_loss")
        and call.opt("temperature") in ("one", "positive")
        and all(n >= 0 for n in call.shape)
    )


def parts(
    h: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    target: np.ndarray,
    axis: int,
    o: CrossEntropySettings,
    chunks: Chunks,
    *,
    grads: bool,
) -> _linear.Parts:
    """:func:`xpsoftmax._linear.parts` for the options :func:`_ok` accepts."""
    cdt = compute_dtype(np, h.dtype)
    h2, lead = _linear._to_rows(np, h, axis)
    n, hidden, vocab = h2.shape[0], h2.shape[1], w.shape[0]
    step, classes = _linear.chunk_shape(n, vocab, chunks)
    if vocab == 0 or classes < vocab:
        return _linear.parts(np, h, w, b, target, axis, o, chunks, grads=grads)
    t2 = target.reshape(n)
    wc = w.astype(cdt, copy=False)
    bc = None if b is None else b.astype(cdt, copy=False)
    ignored, valid = target_masks(np, t2, vocab, o.ignore_index)
    t_safe = np.where(valid, t2, 0).astype(np.intp)
    w_t = np.ones(n, dtype=cdt) if o.weight is None else o.weight[t_safe].astype(cdt)
    den = np.where(ignored, 0.0, w_t).sum(dtype=cdt)
    scale = mean_over(np, 1.0, den) if o.reduction == "mean" else 1.0
    t_kind, t_value = o.temperature.kind, o.temperature.value
    inv_t = 1.0 / t_value if t_kind == "positive" else 1.0
    per = np.empty(n, dtype=cdt)
    buf = np.empty((min(step, n), vocab), dtype=cdt)
    if grads:
        dh2 = np.empty((n, hidden), dtype=cdt)
        dw = np.zeros((vocab, hidden), dtype=cdt)
        db = None if b is None else np.zeros(vocab, dtype=cdt)
    for start in range(0, n, step):
        stop = min(start + step, n)
        hc = h2[start:stop].astype(cdt, copy=False)
        z = buf[: stop - start]
        np.matmul(hc, wc.T, out=z)
        if bc is not None:
            z += bc
        m = z.max(axis=1)
        z -= np.maximum(m, np.finfo(cdt).min)[:, None]  # an all -inf row stays -inf
        if t_kind == "positive":
            if t_value <= BIG_T:
                z /= t_value
            else:
                z *= 1 / BIG_T
                z /= t_value / BIG_T
        rows_ = np.arange(stop - start)
        ts = t_safe[start:stop]
        z_t = z[rows_, ts]
        # The logsumexp accurate near 0: one maximum per row (exactly 0 now) set aside, so the
        # sum of the others (ties included) is the log1p argument itself.
        top = z.argmax(axis=1)
        z[rows_, top] = -np.inf
        e = np.exp(z, out=z)
        rest = e.sum(axis=1)
        empty = m == -np.inf
        poisoned = np.isnan(m) | (m == np.inf)  # the generic shift by it makes the row NaN
        lse = np.where(poisoned, np.nan, np.log1p(rest))
        s = np.where(poisoned, np.nan, 1.0 + rest)
        e[rows_, top] = np.where(empty, 0.0, 1.0)
        nll = np.where(empty, np.inf, lse - z_t)
        v, ig = valid[start:stop], ignored[start:stop]
        per[start:stop] = np.where(v, nll * w_t[start:stop], np.where(ig, 0.0, np.nan))
        if not grads:
            continue
        keep = v & ~empty
        coef = np.where(keep, w_t[start:stop] * scale * inv_t, 0.0).astype(cdt)
        e /= np.where(empty, 1.0, s)[:, None]
        e *= coef[:, None]
        e[rows_, ts] -= coef  # coef * (p - onehot)
        e[~keep] = 0.0  # 0, not 0 * NaN, where no gradient flows
        g = e
        np.matmul(g, wc, out=dh2[start:stop])
        for v0 in range(0, vocab, _CLASS_BLOCK):
            v1 = min(v0 + _CLASS_BLOCK, vocab)
            dw[v0:v1] += g[:, v0:v1].T @ hc
        if db is not None:
            db += g.sum(axis=0)
    out_dtype = result_dtype(np, h.dtype, reduction=True)
    if o.reduction == "none":
        loss = per.reshape(lead)
    elif o.reduction == "sum":
        loss = per.sum()
    else:
        loss = mean_over(np, per.sum(), den)
    loss = np.asarray(loss).astype(out_dtype, copy=False)
    if not grads:
        return _linear.Parts(loss)
    dh = _linear._from_rows(np, dh2, lead, axis).astype(h.dtype, copy=False)
    return _linear.Parts(
        loss,
        dh,
        dw.astype(w.dtype, copy=False),
        None if db is None or b is None else db.astype(b.dtype, copy=False),
    )


_DESCRIPTION = "class indices, no smoothing or z-loss, number T; one reused chunk buffer"


@register(
    "linear_cross_entropy",
    "numpy",
    "numpy.linear",
    priority=50,
    supports=_ok,
    dtypes=_FLOATS,
    description=_DESCRIPTION,
)
def linear_cross_entropy(
    xp: Any,
    h: Any,
    linear_weight: Any,
    bias: Any,
    target: Any,
    axis: int,
    options: CrossEntropySettings,
    chunk_size: Chunks,
) -> Any:
    return parts(h, linear_weight, bias, target, axis, options, chunk_size, grads=False).loss


@register(
    "linear_cross_entropy_with_grad",
    "numpy",
    "numpy.linear",
    priority=50,
    supports=_ok,
    dtypes=_FLOATS,
    description=_DESCRIPTION,
)
def linear_cross_entropy_with_grad(
    xp: Any,
    h: Any,
    linear_weight: Any,
    bias: Any,
    target: Any,
    axis: int,
    options: CrossEntropySettings,
    chunk_size: Chunks,
) -> tuple[Any, Any, Any, Any]:
    p = parts(h, linear_weight, bias, target, axis, options, chunk_size, grads=True)
    return p.loss, p.dh, p.dw, p.db
