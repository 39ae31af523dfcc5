"""Dask fast paths over a chunked class axis: the row statistics in one pass.

A large vocabulary is chunked along the classes too. Each chunk's statistics are those of
:mod:`xpsoftmax._linear_classes` for a block of classes: its maximum ``m``, the ``base`` its
sums are taken relative to, the number ``K`` of entries at the base (scaled difference 0) and
the sum ``R`` of the other exponentials. ``da.reduction`` combines them in a tree, rescaling to
the larger base (:func:`~xpsoftmax._linear_classes.rescale`): one read of the input for the
logsumexp, where the generic path reads it for the maximum and again for the sum. The base
follows each function's rule: softmax's rows shift by their maximum (a +inf or NaN maximum
makes the row NaN, an all -inf row shifts by 0); logsumexp's by the maximum where it is
finite (so that a +inf entry gives +inf).

softmax keeps each chunk's exponentials (relative to the chunk's own base) from that one
read and rescales them once the rows' base and sum are known; log_softmax maps each chunk
with the row statistics beside it. The mean's denominator of the cross-entropy comes from the
targets alone (``blocks.mean_denominator``), so every chunk finishes its gradient in its own
task. The cross-entropy (class indices) reads each chunk of logits once more, with the chunk's class ids
(``arange`` chunked like the classes, never a full row) beside it: the target's scaled logit
and the weighted sum of the scaled logits, summed over the chunks, and the chunk's gradient
in the same task.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import _concatenate2
from dask.utils import deepmap

from xpsoftmax import _generic
from xpsoftmax._checks import (
    ONE,
    CrossEntropySettings,
    Temperature,
    compute_dtype,
    index_dtype,
    target_masks,
)
from xpsoftmax._generic import INF, NAN, _inverse_temperature, _scale, _scaled_shift, index_loss
from xpsoftmax._linear_classes import rescale
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.dask.blocks import FLOATS, mean_denominator

_SCALAR_T = ("one", "positive", "zero", "inf")


def chunked_classes(call: Call) -> bool:
    """A reduced axis in several chunks of known sizes, every size known and nonzero."""
    return (
        call.axes != ()
        and all(p >= 1 for p in call.pieces)
        and any(p > 1 for p in call.pieces)
        and all(n > 0 for n in call.shape)
    )


# --- the row statistics ----------------------------------------------------------------------


def _base(m: np.ndarray, finite_only: bool) -> np.ndarray:
    if finite_only:  # logsumexp: a +inf entry makes the sum +inf, not inf - inf
        return np.where(np.isfinite(m), m, 0.0).astype(m.dtype, copy=False)
    return np.where(m == -INF, 0.0, m).astype(m.dtype, copy=False)


def _chunk(
    x: np.ndarray,
    axis: tuple[int, ...],
    keepdims: bool,
    t: Temperature,
    finite_only: bool,
    computing_meta: bool = False,
) -> Any:
    if computing_meta:  # Dask learning the output type: as its own reductions do
        return x
    return _exp_statistics(x, axis, t, finite_only)[1]


def _exp_statistics(
    x: np.ndarray, axis: tuple[int, ...], t: Temperature, finite_only: bool, split: bool = True
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A chunk's exponentials relative to its base, and its statistics (keepdims). Without
    ``split`` the maxima are not counted apart (``K = 0``, ``R`` the whole sum): enough for
    the sum ``s`` (softmax), not for an accurate logsumexp near 0."""
    xc = x.astype(compute_dtype(np, x.dtype), copy=False)
    m = np.max(xc, axis=axis, keepdims=True)
    base = _base(m, finite_only)
    z = _scale(np, xc - base, t)
    e = np.exp(z)
    if not split:
        rest = np.sum(e, axis=axis, keepdims=True, dtype=xc.dtype)
        return e, {"m": m, "base": base, "k": np.zeros_like(rest), "r": rest}
    top = z == 0
    k = np.sum(top, axis=axis, keepdims=True, dtype=xc.dtype)
    rest = np.sum(np.where(top, 0.0, e), axis=axis, keepdims=True, dtype=xc.dtype)
    return e, {"m": m, "base": base, "k": k, "r": rest}


def _combine(
    parts: Any,
    axis: tuple[int, ...],
    keepdims: bool,
    t: Temperature,
    finite_only: bool,
    computing_meta: bool = False,
) -> dict[str, np.ndarray]:
    parts = parts if isinstance(parts, list) else [parts]

    def joined(name: str) -> np.ndarray:
        return _concatenate2(deepmap(lambda p: p[name], parts), axes=list(axis))

    m = np.max(joined("m"), axis=axis, keepdims=True)
    base = _base(m, finite_only)
    k, rest = rescale(np, joined("base"), joined("k"), joined("r"), base, t)
    return {
        "m": m,
        "base": base,
        "k": np.sum(k, axis=axis, keepdims=True),
        "r": np.sum(rest, axis=axis, keepdims=True),
    }


def _statistics_dtype(cdt: Any) -> np.dtype:
    return np.dtype([("base", cdt), ("s", cdt), ("lse", cdt)])


def _row_statistics(
    parts: Any,
    axis: tuple[int, ...],
    keepdims: bool,
    t: Temperature,
    computing_meta: bool = False,
) -> np.ndarray:
    """The rows' base, ``s = K + R`` and the logsumexp of the scaled logits relative to the
    base, accurate near 0, in one structured array (keepdims)."""
    c = _combine(parts, axis, True, t, finite_only=False)
    k, rest = c["k"], c["r"]
    out = np.empty(k.shape, _statistics_dtype(k.dtype))
    out["base"], out["s"] = c["base"], k + rest
    out["lse"] = np.log1p(rest + np.where(k > 0, k - 1.0, 0.0))
    return out


def statistics(x: Any, axes: tuple[int, ...], t: Temperature) -> Any:
    """The row statistics of softmax's rule (keepdims), by one tree reduction."""
    cdt = compute_dtype(np, x.dtype)
    dtype = _statistics_dtype(cdt)
    return da.reduction(
        x,
        functools.partial(_chunk, t=t, finite_only=False),
        functools.partial(_row_statistics, t=t),
        combine=functools.partial(_combine, t=t, finite_only=False),
        axis=axes,
        keepdims=True,
        dtype=dtype,
        concatenate=False,
        meta=np.empty((0,) * x.ndim, dtype),
    )


# --- logsumexp ------------------------------------------------------------------------------


def _logsumexp_aggregate(
    parts: Any, axis: tuple[int, ...], keepdims: bool, computing_meta: bool = False
) -> np.ndarray:
    c = _combine(parts, axis, True, ONE, finite_only=True)
    k, rest = c["k"], c["r"]
    total = np.log1p(rest + np.where(k > 0, k - 1.0, 0.0))
    lse = np.where(k + rest == 0, -INF, total) + c["base"]
    return lse if keepdims else np.squeeze(lse, axis=axis)


@register(
    "logsumexp",
    "dask",
    "dask.online",
    priority=50,
    supports=lambda c: (
        chunked_classes(c) and not (c.opt("b") or c.opt("return_sign") or c.opt("where"))
    ),
    dtypes=FLOATS,
    description="b=None, where=None, return_sign=False; a reduced axis in several chunks",
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
    cdt = compute_dtype(np, x.dtype)
    return da.reduction(
        x,
        functools.partial(_chunk, t=ONE, finite_only=True),
        _logsumexp_aggregate,
        combine=functools.partial(_combine, t=ONE, finite_only=True),
        axis=axes,
        keepdims=keepdims,
        dtype=cdt,
        concatenate=False,
        meta=np.empty((0,) * (x.ndim if keepdims else x.ndim - len(axes)), cdt),
    )


# --- softmax, log_softmax ---------------------------------------------------------------------


def _log_softmax_block(x: np.ndarray, st: np.ndarray, t: Temperature) -> np.ndarray:
    z = _scale(np, x.astype(compute_dtype(np, x.dtype), copy=False) - st["base"], t)
    return np.where(st["s"] == 0, -INF, z - st["lse"]).astype(x.dtype, copy=False)


_CHUNK_FIELDS = ("m", "base", "k", "r")


def _exp_chunk(
    x: np.ndarray, axes: tuple[int, ...], t: Temperature
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's exponentials relative to its own base, and its statistics (one structured
    entry per row, keepdims)."""
    e, c = _exp_statistics(x, axes, t, finite_only=False, split=False)
    st = np.empty(c["m"].shape, np.dtype([(f, c["m"].dtype) for f in _CHUNK_FIELDS]))
    for f in _CHUNK_FIELDS:
        st[f] = c[f]
    return e, st


def _fields(
    st: np.ndarray, axis: tuple[int, ...], keepdims: bool, computing_meta: bool = False
) -> Any:
    if computing_meta:  # Dask learning the output type: the row statistics'
        return np.empty((0,) * st.ndim, _statistics_dtype(st.dtype["m"]))
    return {f: st[f] for f in _CHUNK_FIELDS}


def _rescaled(
    e: np.ndarray, own: np.ndarray, row: np.ndarray, t: Temperature, dtype: Any
) -> np.ndarray:
    """A chunk's exponentials moved to the row's base, over the row's sum: the softmax."""
    factor = np.exp(_scale(np, own["base"] - row["base"], t))
    # One pass over the chunk: a factor per row (an empty row has e = 0: zeros).
    return (e * (factor / np.where(row["s"] == 0, 1.0, row["s"]))).astype(dtype, copy=False)


def _softmax(x: Any, axes: tuple[int, ...], t: Temperature) -> Any:
    """One exponential per entry: each chunk's, kept, then rescaled once the rows' base and
    sum are known (computing them apart and the exponentials again took 1.5x the time)."""
    cdt = compute_dtype(np, x.dtype)
    tmp = da.map_blocks(
        functools.partial(_exp_chunk, axes=axes, t=t),
        x,
        dtype=object,
        meta=np.empty((0,) * x.ndim, object),
    )
    e = da.map_blocks(operator.getitem, tmp, 0, dtype=cdt, meta=np.empty((0,) * x.ndim, cdt))
    one = tuple((1,) * len(c) if i in axes else c for i, c in enumerate(x.chunks))
    fields = np.dtype([(f, cdt) for f in _CHUNK_FIELDS])
    own = da.map_blocks(
        operator.getitem, tmp, 1, chunks=one, dtype=fields, meta=np.empty((0,) * x.ndim, fields)
    )
    row_dtype = _statistics_dtype(cdt)
    row = da.reduction(
        own,
        _fields,
        functools.partial(_row_statistics, t=t),
        combine=functools.partial(_combine, t=t, finite_only=False),
        axis=axes,
        keepdims=True,
        dtype=row_dtype,
        concatenate=False,
        meta=np.empty((0,) * x.ndim, row_dtype),
    )
    block = functools.partial(_rescaled, t=t, dtype=x.dtype)
    return da.map_blocks(block, e, own, row, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))


def _log_softmax(x: Any, axes: tuple[int, ...], t: Temperature) -> Any:
    st = statistics(x, axes, t)
    block = functools.partial(_log_softmax_block, t=t)
    return da.map_blocks(block, x, st, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))


def _normalization_ok(call: Call) -> bool:
    return chunked_classes(call) and call.opt("temperature") in _SCALAR_T and not call.opt("where")


_NORMALIZATION = "where=None, scalar temperature; a reduced axis in several chunks"


@register(
    "softmax",
    "dask",
    "dask.online",
    priority=50,
    supports=_normalization_ok,
    dtypes=FLOATS,
    description=_NORMALIZATION,
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _softmax(x, axes, temperature)


@register(
    "log_softmax",
    "dask",
    "dask.online",
    priority=50,
    supports=_normalization_ok,
    dtypes=FLOATS,
    description=_NORMALIZATION,
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _log_softmax(x, axes, temperature)


# --- cross-entropy with class indices ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rows:
    """What a chunk of rows knows of its targets: masks, the safe index and its weight."""

    ignored: np.ndarray
    valid: np.ndarray
    t_safe: np.ndarray
    w_t: np.ndarray


def _targets(
    target: np.ndarray, weight: np.ndarray | None, n: int, s: CrossEntropySettings, cdt: Any
) -> _Rows:
    ignored, valid = target_masks(np, target, n, s.ignore_index)
    t_safe = np.where(valid, target.astype(index_dtype(np, target), copy=False), 0)
    w_t = np.ones(target.shape, cdt) if weight is None else weight[t_safe].astype(cdt)
    return _Rows(ignored, valid, t_safe, w_t)


def _lse_abs(st: np.ndarray, t: Temperature, z_loss: float) -> np.ndarray | None:
    if not z_loss:
        return None
    return (_scaled_shift(np, st["base"], t) + st["lse"])[..., 0]


def _class_block(
    x: np.ndarray,
    target: np.ndarray,
    ids: np.ndarray,
    st: np.ndarray,
    factor: np.ndarray,
    *weight: np.ndarray,
    s: CrossEntropySettings,
    n: int,
    grad: bool,
) -> tuple[np.ndarray, ...]:
    """One chunk of rows and classes: the target's scaled logit and ``<w, z>`` over the
    chunk's classes (keepdims), and with ``grad`` the chunk's share of the gradient of the
    reduced loss (``factor``: the mean's, a 0-d array), in the logits' dtype."""
    cdt = compute_dtype(np, x.dtype)
    w = weight[0] if weight else None
    w_k = None if w is None else w[ids].astype(cdt)
    z = _scale(np, x.astype(cdt, copy=False) - st["base"], s.temperature)
    r = _targets(target, w, n, s, cdt)
    onehot = ids == r.t_safe[..., None]
    z_t = np.sum(np.where(onehot, z, 0.0), axis=-1, keepdims=True)
    eps = s.label_smoothing
    wz = np.sum(z if w_k is None else w_k * z, axis=-1, keepdims=True) if eps else z_t * 0
    if not grad:
        return z_t, wz
    w_total = float(n) if w is None else np.sum(w, dtype=cdt)
    lse = st["lse"][..., 0]
    empty = st["s"][..., 0] == 0
    _, coef = index_loss(
        np,
        lse,
        _lse_abs(st, s.temperature, s.z_loss),
        empty,
        0.0,
        0.0,
        r.w_t,
        w_total,
        n,
        eps,
        s.z_loss,
    )
    p = np.exp(z) / np.where(st["s"] == 0, 1.0, st["s"])
    y_term = np.where(onehot, (r.w_t * (1.0 - eps))[..., None], 0.0)
    if eps:
        y_term = y_term + (eps / n) * (1.0 if w_k is None else w_k)
    keep = (r.valid & ~empty)[..., None]
    g = np.where(keep, coef[..., None] * p - y_term, 0.0)
    g = g * (_inverse_temperature(np, s.temperature) * factor)
    return z_t, wz, g.astype(x.dtype, copy=False)


def _row_losses(
    st: np.ndarray,
    z_t: np.ndarray,
    wz: np.ndarray,
    target: np.ndarray,
    *weight: np.ndarray,
    s: CrossEntropySettings,
    n: int,
) -> np.ndarray:
    """Each entry's loss (``target`` as a column)."""
    cdt = st["lse"].dtype
    w = weight[0] if weight else None
    r = _targets(target[..., 0], w, n, s, cdt)
    w_total = float(n) if w is None else np.sum(w, dtype=cdt)
    per, _ = index_loss(
        np,
        st["lse"][..., 0],
        _lse_abs(st, s.temperature, s.z_loss),
        st["s"][..., 0] == 0,
        z_t[..., 0],
        wz[..., 0],
        r.w_t,
        w_total,
        n,
        s.label_smoothing,
        s.z_loss,
    )
    return np.where(r.valid, per, np.where(r.ignored, 0.0, NAN)).astype(cdt, copy=False)


def _cross_entropy(xp: Any, logits: Any, target: Any, s: CrossEntropySettings, grad: bool) -> Any:
    nd = logits.ndim
    n = logits.shape[-1]
    cdt = compute_dtype(np, logits.dtype)
    t = s.temperature
    st = statistics(logits, (nd - 1,), t)
    ids = da.arange(n, chunks=logits.chunks[-1], dtype=index_dtype(np, target))
    ind = tuple(range(nd))
    weights: list[Any] = []
    if s.weight is not None:
        weights = [s.weight.rechunk(-1), (nd,)]  # whole, under an index of its own
    bare = dataclasses.replace(s, weight=None)
    if s.reduction == "mean":  # from the targets alone, before any chunk of logits
        denominator: Any = mean_denominator(target, s, n, cdt)
        factor = _generic.mean_over(xp, 1.0, denominator)
    else:
        denominator, factor = 0.0, np.asarray(1.0, cdt)
    tmp = da.blockwise(
        functools.partial(_class_block, s=bare, n=n, grad=grad),
        ind,
        logits,
        ind,
        target,
        ind[:-1],
        ids,
        (nd - 1,),
        st,
        ind,
        factor,
        (),
        *weights,
        concatenate=True,
        meta=np.empty((0,) * nd, object),
    )
    one = (*logits.chunks[:-1], (1,) * len(logits.chunks[-1]))
    meta = np.empty((0,) * nd, cdt)
    z_t, wz = (
        da.map_blocks(operator.getitem, tmp, i, chunks=one, dtype=cdt, meta=meta).sum(
            axis=-1, keepdims=True
        )
        for i in (0, 1)
    )
    w_args = [] if s.weight is None else [s.weight.rechunk(-1)]
    # The targets as a column beside the statistics (map_blocks aligns trailing axes).
    per = da.map_blocks(
        functools.partial(_row_losses, s=bare, n=n),
        st,
        z_t,
        wz,
        target[..., None],
        *w_args,
        drop_axis=nd - 1,
        dtype=cdt,
        meta=np.empty((0,) * (nd - 1), cdt),
    )
    loss, _ = _generic.reduce_loss(xp, per, s.reduction, denominator)
    if not grad:
        return loss
    dtype = logits.dtype
    g = da.map_blocks(
        operator.getitem, tmp, 2, chunks=logits.chunks, dtype=dtype, meta=np.empty((0,) * nd, dtype)
    )
    return loss, g


def _ce_ok(call: Call) -> bool:
    return (
        chunked_classes(call)
        and call.opt("target") == "index"
        and call.axes == (call.ndim - 1,)
        and call.opt("temperature") in _SCALAR_T
    )


_CE = "class indices on the last axis, scalar temperature; the class axis in several chunks"


@register(
    "cross_entropy",
    "dask",
    "dask.online",
    priority=50,
    supports=_ce_ok,
    dtypes=FLOATS,
    description=_CE,
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    return _cross_entropy(xp, logits, target, options, grad=False)


@register(
    "cross_entropy_with_grad",
    "dask",
    "dask.online",
    priority=50,
    supports=_ce_ok,
    dtypes=FLOATS,
    description=_CE,
)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    return _cross_entropy(xp, logits, target, options, grad=True)
