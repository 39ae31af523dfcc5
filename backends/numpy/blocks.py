"""NumPy fast paths: cache-sized blocks of rows, computed in place on a small thread pool.

Along trailing axes the input is viewed as ``(rows, n)`` and cut into blocks of whole rows
of about :data:`BLOCK_BYTES`. Each block is read from memory once (by its maximum), then
shifted, exponentiated, summed and normalised while it sits in the core's cache, and written
once: the output is the only full-size array, and the scratch is one block per thread.
NumPy's ufuncs release the GIL, so the blocks run in parallel on
:func:`xpsoftmax.get_num_threads` threads. Blocks are cut from the shape alone, so results are
the same bits for any thread count.

Other axes (a leading or middle axis, several non-trailing axes) use whole-array passes with
``out=`` buffers: correct, but they read the data from memory several times.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xpsoftmax import _generic
from xpsoftmax._checks import CrossEntropySettings, Temperature, compute_dtype, target_masks
from xpsoftmax._registry import Call, register
from xpsoftmax._threads import check_num_threads
from xpsoftmax._threads import run_blocks as _run_blocks

_FLOATS = ("float16", "float32", "float64")

#: Bytes of one block of rows (in the computation dtype): it and the per-thread scratch must
#: stay in a core's L2 cache (1 MiB per core on the reference machine, 256 KiB at least).
BLOCK_BYTES = 256 * 1024

_local = threading.local()


def run_blocks(block: Callable[[int, int], None], bounds: list[tuple[int, int]]) -> None:
    """:func:`xpsoftmax._threads.run_blocks` with NumPy's floating-point warnings off in the
    worker threads too: ``np.errstate`` is per thread (a context variable that pool threads do
    not inherit), and the contract defines every value those warnings are about."""

    def quiet(start: int, stop: int) -> None:
        with np.errstate(all="ignore"):
            block(start, stop)

    _run_blocks(quiet, bounds)


def _compute(dtype: np.dtype) -> np.dtype:
    return np.dtype(compute_dtype(np, dtype))


def _plain_temperature(call: Call) -> bool:
    return call.opt("temperature") in ("one", "positive")


def _normalization_ok(call: Call) -> bool:
    return call.axes != () and not call.opt("where") and _plain_temperature(call)


def _trailing(x: np.ndarray, axes: tuple[int, ...]) -> bool:
    return axes == tuple(range(x.ndim - len(axes), x.ndim))


def _rows(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``x`` as ``(rows, n)`` with the trailing ``axes`` flattened (a view when contiguous)."""
    n = math.prod(x.shape[a] for a in axes)
    return x.reshape(-1, n)


def _blocks(n_rows: int, n: int, itemsize: int) -> list[tuple[int, int]]:
    per = max(1, BLOCK_BYTES // max(1, n * itemsize))
    return [(i, min(i + per, n_rows)) for i in range(0, n_rows, per)]


def _scratch(rows: int, n: int, dtype: np.dtype, slot: int = 0) -> np.ndarray:
    """A per-thread buffer of ``rows x n``, reused across blocks and calls so that blocks do
    not pay for fresh pages; distinct ``slot`` numbers give distinct buffers."""
    need = rows * n
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get((dtype, slot))
    if buf is None or buf.size < need:
        buf = buffers[(dtype, slot)] = np.empty(max(need, 1), dtype=dtype)
    return buf[:need].reshape(rows, n)


_LIMITS: dict[np.dtype, tuple[Any, Any]] = {}


def _limits(dtype: np.dtype) -> tuple[Any, Any]:
    """The lowest and highest finite numbers of ``dtype`` (cached: ``np.finfo`` costs more
    than a small block's arithmetic)."""
    limits = _LIMITS.get(dtype)
    if limits is None:
        info = np.finfo(dtype)
        limits = _LIMITS[dtype] = (dtype.type(info.min), dtype.type(info.max))
    return limits


def _shift(x: np.ndarray, axes: tuple[int, ...] = (1,), *, finite: bool = False) -> np.ndarray:
    """The slices' maxima (keepdims), clipped to the finite range: an all -inf slice shifts by
    the lowest finite number and stays -inf (not NaN); with ``finite``, a +inf maximum shifts
    by the largest (logsumexp: +inf stays +inf). NaN passes through. Raw ufunc calls rather
    than ``np.max`` and masked assignment: their overhead dominates small inputs."""
    m = np.maximum.reduce(x, axis=axes, keepdims=True)
    low, high = _limits(m.dtype)
    np.maximum(m, low, out=m)
    if finite:
        np.minimum(m, high, out=m)
    return m


def _top(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, index of each row's first maximum)`` of a ``(rows, n)`` block: the entry that
    contributes exactly ``exp(0) = 1`` to the row's sum, left out of it so that the log of the
    sum is ``log1p(rest)``, accurate near 0 (``logsumexp([0, -40])`` is 4.2e-18, not 0)."""
    return np.arange(x.shape[0]), np.argmax(x, axis=1)


def _clip_low(m: np.ndarray) -> np.ndarray:
    """As in :func:`_shift`, for a maximum read off by index (keepdims column)."""
    return np.maximum(m, _limits(m.dtype)[0], out=m)


def native(a: Any) -> Any:
    """``a`` in native byte order (big-endian input arrives from files and network formats;
    NumPy's ufunc loops with ``out=`` and ``dtype=`` reject a non-native dtype)."""
    if isinstance(a, np.ndarray) and not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def _scale(buf: np.ndarray, t: Temperature) -> None:
    if t.kind == "positive":
        np.divide(buf, t.value, out=buf)


# --- softmax, log_softmax -------------------------------------------------------------------


def _normalize_rows(x2: np.ndarray, out2: np.ndarray, t: Temperature, log: bool) -> None:
    cdt = _compute(x2.dtype)
    n = x2.shape[1]
    same = cdt == x2.dtype

    def block(start: int, stop: int) -> None:
        xb = x2[start:stop]
        if log:
            rows, top = _top(xb)
            m = _clip_low(xb[rows, top][:, None].astype(cdt))
        else:
            m = _shift(xb)
        # In the output itself when it has the computation dtype; else in float32 scratch.
        d = out2[start:stop] if same else _scratch(stop - start, n, cdt)
        np.subtract(xb, m, out=d, dtype=cdt)
        _scale(d, t)
        if log:
            e = _scratch(stop - start, n, cdt, slot=1)
            np.exp(d, out=e)
            # The maximum contributes exp(0) = 1: leave it out and take log1p of the rest.
            # An empty event (all -inf) has rest = 0 and stays -inf: -inf - log1p(0); a NaN
            # (from NaN or +inf) stays in and makes the row NaN.
            head = e[rows, top]
            e[rows, top] = np.where(head == 1, 0, head)
            rest = np.add.reduce(e, axis=1, keepdims=True)
            np.subtract(d, np.log1p(rest), out=out2[start:stop], casting="same_kind")
        else:
            np.exp(d, out=d)
            s = np.add.reduce(d, axis=1, keepdims=True)
            np.maximum(s, 1, out=s)  # as above: an empty event is all zeros already
            np.divide(d, s, out=out2[start:stop], casting="same_kind")

    run_blocks(block, _blocks(x2.shape[0], n, cdt.itemsize))


def _normalize_whole(x: np.ndarray, axes: tuple[int, ...], t: Temperature, log: bool) -> Any:
    out = np.subtract(x, _shift(x, axes), dtype=_compute(x.dtype))
    _scale(out, t)
    if log:
        np.subtract(out, _generic._log_total(np, out, np.exp(out), axes), out=out)
    else:
        np.exp(out, out=out)
        s = np.sum(out, axis=axes, keepdims=True)
        np.maximum(s, 1, out=s)
        np.divide(out, s, out=out)
    return out.astype(x.dtype, copy=False)


def _normalize(x: np.ndarray, axes: tuple[int, ...], t: Temperature, log: bool) -> Any:
    if x.size == 0:
        return np.zeros(x.shape, dtype=x.dtype)
    if not _trailing(x, axes):
        return _normalize_whole(x, axes, t, log)
    out = np.empty(x.shape, dtype=x.dtype)
    _normalize_rows(_rows(x, axes), _rows(out, axes), t, log)
    return out


@register(
    "softmax",
    "numpy",
    "numpy.inplace",
    priority=50,
    supports=_normalization_ok,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0; blocked and threaded on trailing axes",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    check_num_threads()  # a bad XPSOFTMAX_NUM_THREADS fails before any work
    return _normalize(native(x), axes, temperature, log=False)


@register(
    "log_softmax",
    "numpy",
    "numpy.inplace",
    priority=50,
    supports=_normalization_ok,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0; blocked and threaded on trailing axes",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    check_num_threads()
    return _normalize(native(x), axes, temperature, log=True)


# --- logsumexp ------------------------------------------------------------------------------


def _logsumexp_rows(x2: np.ndarray) -> np.ndarray:
    cdt = _compute(x2.dtype)
    n = x2.shape[1]
    out = np.empty(x2.shape[0], dtype=cdt)

    def block(start: int, stop: int) -> None:
        xb = x2[start:stop]
        rows, top = _top(xb)
        m = xb[rows, top].astype(cdt)
        # As in _shift: all -inf rows shift by the lowest finite number, +inf by the highest.
        np.clip(m, *_limits(cdt), out=m)
        e = _scratch(stop - start, n, cdt)
        np.subtract(xb, m[:, None], out=e, dtype=cdt)
        np.exp(e, out=e)
        head = e[rows, top]  # exp(0) = 1, except on empty (0), NaN and +inf rows
        e[rows, top] = 0
        # log(head + rest) as log1p((head - 1) + rest): exact for head = 1, accurate near 0.
        lse = np.log1p(np.add.reduce(e, axis=1) + (head - 1))
        np.add(lse, m, out=out[start:stop])

    run_blocks(block, _blocks(x2.shape[0], n, cdt.itemsize))
    return out


@register(
    "logsumexp",
    "numpy",
    "numpy.inplace",
    priority=50,
    supports=lambda c: c.axes != () and not (c.opt("b") or c.opt("return_sign") or c.opt("where")),
    dtypes=_FLOATS,
    description="b=None, where=None, return_sign=False; blocked and threaded on trailing axes",
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
    check_num_threads()
    x = native(x)
    cdt = _compute(x.dtype)
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    if x.size == 0:
        out = np.full(kept, -np.inf, dtype=cdt)
    elif _trailing(x, axes):
        out = _logsumexp_rows(_rows(x, axes)).reshape(kept)
    else:
        m = _shift(x, axes, finite=True)
        buf = np.subtract(x, m, dtype=cdt)
        out = _generic._log_total(np, buf, np.exp(buf), axes)
        out[np.all(np.isneginf(buf), axis=axes, keepdims=True)] = -np.inf  # empty events
        out += m
    return out if keepdims else np.squeeze(out, axis=axes)


# --- cross-entropy --------------------------------------------------------------------------


def _ce_ok(call: Call) -> bool:
    return (
        call.opt("target") == "index" and call.axes == (call.ndim - 1,) and _plain_temperature(call)
    )


@dataclass(frozen=True)
class _Targets:
    """Everything about the rows that comes from the targets alone, known before any block
    runs, so that each block can finish its gradient (the mean's factor included) in cache."""

    t_safe: np.ndarray  # the class index, 0 where not valid
    valid: np.ndarray
    ignored: np.ndarray
    w_t: np.ndarray  # the target class's weight per row
    w_total: float  # the sum of the class weights (C without weights)
    denominator: Any  # of the mean (None for the other reductions)
    scale: Any  # d reduced loss / d per-row loss


def _targets(
    target: np.ndarray, weight: Any, n_classes: int, ignore_index: int, reduction: str, cdt: Any
) -> _Targets:
    flat = target.reshape(-1)
    ignored, valid = target_masks(np, flat, n_classes, ignore_index)
    t_safe = np.where(valid, flat.astype(np.intp, copy=False), 0)
    w_t = np.ones(flat.shape[0], dtype=cdt) if weight is None else weight[t_safe]
    w_total = float(n_classes) if weight is None else float(np.sum(weight, dtype=cdt))
    den = np.sum(np.where(ignored, 0.0, w_t), dtype=cdt) if reduction == "mean" else None
    scale = cdt.type(1.0) if den is None else _generic.mean_over(np, 1.0, den)
    return _Targets(t_safe, valid, ignored, w_t, w_total, den, scale)


def _fused_cross_entropy(
    x: np.ndarray, target: np.ndarray, o: CrossEntropySettings, with_grad: bool
) -> tuple[Any, Any]:
    """Index targets along the last axis, in blocks of rows: each block's logits are read
    once; the loss comes from ``logsumexp - logit[target]`` and the gradient ``p - y`` is
    finished in cache and written once (the only full-size array). The formulas are those of
    ``_generic._index_terms`` and ``_generic._gradient``, row block by row block."""
    cdt = _compute(x.dtype)
    n_classes = x.shape[-1]
    a = x.reshape(-1, n_classes)
    weight, z_loss, eps = o.weight, o.z_loss, o.label_smoothing
    tg = _targets(target, weight, n_classes, o.ignore_index, o.reduction, cdt)
    per = np.empty(a.shape[0], dtype=cdt)
    grad = np.empty(a.shape, dtype=x.dtype) if with_grad else None
    same = cdt == x.dtype
    inv_t = 1.0 / o.temperature.value if o.temperature.kind == "positive" else 1.0

    def block(start: int, stop: int) -> None:
        ab, rows = a[start:stop], slice(start, stop)
        buf = grad[rows] if (grad is not None and same) else _scratch(stop - start, n_classes, cdt)
        # The scaled, shifted logits, then their exponentials, in buf.
        lse_rel, z_t, sum_wz, m, e_sum, empty = _block_exp(
            ab, buf, tg.t_safe[rows], weight, eps, o.temperature
        )
        wb = tg.w_t[rows]
        pb = np.where(empty, np.inf, lse_rel - z_t) * (wb * (1.0 - eps))
        if eps:
            pb += (eps / n_classes) * np.where(empty, np.inf, tg.w_total * lse_rel - sum_wz)
        lse_abs = None
        if z_loss:
            lse_abs = m[:, 0].astype(cdt) * inv_t + lse_rel  # m / T in 16 bits loses it
            pb += np.where(empty, np.inf, (z_loss * wb) * lse_abs * lse_abs)
        per[rows] = np.where(tg.valid[rows], pb, np.where(tg.ignored[rows], 0.0, np.nan))
        if grad is None:
            return
        _block_gradient(buf, rows, tg, weight, e_sum, empty, lse_abs, eps, z_loss, inv_t)
        if not same:
            grad[rows] = buf

    run_blocks(block, _blocks(a.shape[0], n_classes, cdt.itemsize))
    return _reduced(per, tg, o.reduction, target.shape, cdt), (
        None if grad is None else grad.reshape(x.shape)
    )


def _block_exp(
    ab: np.ndarray, buf: np.ndarray, tb: np.ndarray, weight: Any, eps: float, t: Temperature
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Fills ``buf`` with ``exp(z)`` for ``z = (x - max) / T`` of the block ``ab``; returns
    ``(log sum exp(z), z[target], <w, z> (label smoothing only), max, sum exp(z), empty)``."""
    rows, top = _top(ab)
    m = _clip_low(ab[rows, top][:, None].astype(buf.dtype))
    np.subtract(ab, m, out=buf, dtype=buf.dtype)
    _scale(buf, t)
    z_t = buf[rows, tb]
    sum_wz = None
    if eps:
        sum_wz = buf.sum(axis=1) if weight is None else buf @ weight
    np.exp(buf, out=buf)
    # The maximum contributes exp(0) = 1: log1p of the rest, accurate near 0 (a confident
    # right answer has a loss of 4e-18, not 0). Put back for the gradient.
    head = buf[rows, top]
    buf[rows, top] = np.where(head == 1, 0, head)
    rest = buf.sum(axis=1)
    buf[rows, top] = head
    s = rest + np.where(head == 1, 1, 0)
    return np.log1p(rest), z_t, sum_wz, m, s, s == 0


def _block_gradient(
    buf: np.ndarray,
    rows: slice,
    tg: _Targets,
    weight: Any,
    s: np.ndarray,
    empty: np.ndarray,
    lse_abs: Any,
    eps: float,
    z_loss: float,
    inv_t: float,
) -> None:
    """Turns ``buf = exp(z)`` into the block's gradient ``k * (coef * e / s - y)`` in place."""
    n_classes = buf.shape[1]
    wb, tb = tg.w_t[rows], tg.t_safe[rows]
    k = tg.scale * inv_t
    coef = wb * (1.0 - eps)
    if eps:
        coef = coef + eps * tg.w_total / n_classes
    if lse_abs is not None:
        coef = coef + 2.0 * z_loss * wb * lse_abs
    keep = tg.valid[rows] & ~empty
    row_factor = np.where(keep, coef * k / np.where(empty, 1.0, s), 0.0).astype(buf.dtype)
    np.multiply(buf, row_factor[:, None], out=buf)
    if not keep.all():
        buf[~keep] = 0.0  # 0, not 0 * NaN: an ignored row of NaN logits takes no gradient
    hit = np.arange(buf.shape[0])[keep]
    buf[hit, tb[keep]] -= (k * (1.0 - eps) * wb)[keep]
    if eps:
        smooth = np.where(keep, k * eps / n_classes, 0.0).astype(buf.dtype)[:, None]
        buf -= smooth if weight is None else smooth * weight


def _reduced(per: np.ndarray, tg: _Targets, reduction: str, shape: Any, cdt: Any) -> Any:
    if reduction == "none":
        return per.reshape(shape)
    total = np.sum(per, dtype=cdt)
    if reduction == "sum":
        return np.asarray(total, dtype=cdt)
    return np.asarray(_generic.mean_over(np, total, tg.denominator), dtype=cdt)


@register(
    "cross_entropy",
    "numpy",
    "numpy.fused",
    priority=50,
    supports=_ce_ok,
    dtypes=_FLOATS,
    description="class indices on the last axis, scalar temperature > 0; blocked and threaded",
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    check_num_threads()
    if logits.size == 0:  # nothing to fuse
        return _generic.cross_entropy(xp, logits, target, axis, options)
    return _fused_cross_entropy(native(logits), target, options, with_grad=False)[0]


@register(
    "cross_entropy_with_grad",
    "numpy",
    "numpy.fused",
    priority=50,
    supports=_ce_ok,
    dtypes=_FLOATS,
    description="class indices on the last axis, scalar temperature > 0; blocked and threaded",
)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    check_num_threads()
    if logits.size == 0:
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, options)
    return _fused_cross_entropy(native(logits), target, options, with_grad=True)
