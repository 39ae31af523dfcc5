"""The CuPy kernels' arithmetic in NumPy, step for step: what the tests check on machines
without a GPU (the CUDA source itself is compiled there with NVRTC).

Each function takes and returns NumPy arrays, like :mod:`.kernels` takes and returns CuPy
ones: a thread's walk over the entries ``i, i + THREADS, ...`` of its row (all rows and
threads at once), the same update and merge in the accumulator's dtype, the same tree over
the block. It is not bit-identical to the device (CUDA's ``exp`` and NumPy's differ in the
last unit), but it runs the same algorithm through every edge case, and it flushes float32
subnormal quotients to zero as the device does (CuPy compiles with ``-ftz=true``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xpsoftmax.backends.cupy.source import THREADS


def accumulator(dtype: Any) -> Any:
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _div(a: Any, t: Any) -> Any:
    """``a / t`` as the device computes it: float32 subnormal results flushed to zero."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        q = np.asarray(a / t)
    if q.dtype == np.float32:
        q = np.where(np.abs(q) < np.finfo(np.float32).tiny, np.float32(0) * q, q)
    return q


def _update(m: Any, k: Any, r: Any, x: Any, t: Any) -> tuple[Any, Any, Any]:
    ninf = -np.inf
    gt = x > m
    eq = (x == m) & (x != ninf)
    low = np.where(gt, m, x)
    high = np.where(gt, x, m)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(low == ninf, 0, np.exp(_div(low - high, t)))
        r = np.where(gt, (r + k) * e, np.where(eq, r, r + e))
    k = np.where(gt, 1, np.where(eq, k + 1, k))
    return np.where(gt, x, m), k.astype(m.dtype), r.astype(m.dtype)


def _merge(a: tuple[Any, ...], b: tuple[Any, ...], t: Any) -> tuple[Any, Any, Any]:
    big = np.maximum(a[0], b[0])
    k = np.zeros_like(big)
    r = np.zeros_like(big)
    for m, sk, sr in (a, b):
        top = (m == big) & (big != -np.inf)
        with np.errstate(invalid="ignore", over="ignore"):
            scale = np.where(m == -np.inf, 0, np.exp(_div(m - big, t))).astype(big.dtype)
            k = k + np.where(top, sk, 0).astype(big.dtype)
            r = r + np.where(top, sr, (sk + sr) * scale).astype(big.dtype)
    return big, k, r


def _row_stats(x: Any, t: Any) -> tuple[Any, Any, Any]:
    """``(m, K, R)`` per row of ``x`` (rows, n) in the accumulator's dtype."""
    rows, n = x.shape
    m = np.full((rows, THREADS), -np.inf, dtype=x.dtype)
    k = np.zeros_like(m)
    r = np.zeros_like(m)
    for start in range(0, n, THREADS):
        cols = start + np.arange(THREADS)
        inside = cols < n
        entry = x[:, np.minimum(cols, n - 1)]
        new = _update(m, k, r, entry, t)
        m, k, r = (np.where(inside, a, b) for a, b in zip(new, (m, k, r)))
    half = THREADS // 2
    while half:
        m, k, r = _merge(
            (m[:, :half], k[:, :half], r[:, :half]),
            (m[:, half : 2 * half], k[:, half : 2 * half], r[:, half : 2 * half]),
            t,
        )
        half //= 2
    return m[:, 0], k[:, 0], r[:, 0]


def _log_total(k: Any, r: Any) -> Any:
    with np.errstate(invalid="ignore"):
        return np.log1p(np.where(k > 0, k - 1, 0) + r)


def _shift(m: Any) -> Any:
    return np.where(m == -np.inf, 0, m).astype(m.dtype)


def normalize(x: Any, t: float, log: bool) -> Any:
    acc = accumulator(x.dtype)
    a = x.astype(acc)
    t_ = acc(t)
    m, k, r = _row_stats(a, t_)
    shift = _shift(m)[:, None]
    empty = (k + r == 0)[:, None]
    inf_max = (m == np.inf)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = _div(a - shift, t_)
        if log:
            offset = np.where(inf_max, np.nan, np.where(empty, np.inf, _log_total(k, r)[:, None]))
            y = z - offset.astype(acc)
        else:
            scale = np.where(inf_max, np.nan, np.where(empty, 0, 1 / (k + r)[:, None]))
            y = np.exp(z) * scale.astype(acc)
    return y.astype(x.dtype)


def logsumexp(x: Any) -> Any:
    acc = accumulator(x.dtype)
    m, k, r = _row_stats(x.astype(acc), acc(1))
    with np.errstate(invalid="ignore"):
        return np.where(k + r == 0, -np.inf, _shift(m) + _log_total(k, r)).astype(acc)


def cross_entropy(
    x: Any,
    target: Any,
    weight: Any,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
    factor: Any,
    with_grad: bool,
) -> tuple[Any, Any]:
    acc = accumulator(x.dtype)
    a = x.astype(acc)
    rows, n = a.shape
    t_, eps_, z_loss_ = acc(t), acc(eps), acc(z_loss)
    w = None if weight is None else np.asarray(weight, dtype=acc)
    ignored = (target == ignore_index) if has_ignore else np.zeros(rows, dtype=bool)
    valid = (target >= 0) & (target < n) & ~ignored
    t_safe = np.where(valid, target, 0)
    w_t = np.ones(rows, dtype=acc) if w is None else w[t_safe]
    m, k, r = _row_stats(a, t_)
    shift = _shift(m)
    empty = k + r == 0
    with np.errstate(invalid="ignore", over="ignore"):
        z = _div(a - shift[:, None], t_)
        lse = np.where(m == np.inf, np.nan, _log_total(k, r)).astype(acc)
        z_t = z[np.arange(rows), t_safe]
        loss = np.where(empty, np.inf, lse - z_t) * ((1 - eps_) * w_t)
        coef = w_t * (1 - eps_)
        if eps:
            wz = (z * (np.ones(n, dtype=acc) if w is None else w)).sum(axis=1, dtype=acc)
            total_w = acc(n) if w is None else w.sum(dtype=acc)
            loss = loss + (eps_ / n) * np.where(empty, np.inf, total_w * lse - wz)
            coef = coef + eps_ * total_w / n
        if z_loss:
            lse_abs = _div(shift, t_) + lse
            loss = loss + np.where(empty, np.inf, (z_loss_ * w_t) * (lse_abs * lse_abs))
            coef = coef + 2 * z_loss_ * w_t * lse_abs
    per = np.where(valid, loss, np.where(ignored, 0, np.nan)).astype(acc)
    if not with_grad:
        return per, None
    keep = (valid & ~empty)[:, None]
    g = _div(np.asarray(factor, dtype=acc)[0], t_)
    cl = np.where(keep, (coef * g)[:, None], 0)
    ct = np.where(keep, (-w_t * (1 - eps_) * g)[:, None], 0)
    cw = np.where(keep, -eps_ / n * g, 0)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.where(keep, np.exp(z - lse[:, None]), 0)
        d = cl * p + np.where(np.arange(n) == t_safe[:, None], ct, 0) * valid[:, None]
        if eps:
            d = d + cw * (1 if w is None else w)
    return per, d.astype(x.dtype)
