"""The Triton kernels: one program per row of a row-major ``(rows, n)`` view.

Every kernel reads its row in the input dtype and computes in float32. A row of at most
``BLOCK`` entries is read once and kept on chip (``ONE_PASS``); a longer one is read in
``BLOCK``-wide chunks with an online maximum, then read again to write the result.

The row statistics follow the generic implementation (``xpsoftmax._generic``):

* the shift is the row maximum, 0 for an all -inf row (which then stays -inf, not NaN);
* ``z = (x - shift) / t`` (the shift before the division: no finite input overflows);
* the sum of ``exp(z)`` is kept as ``K + R``: ``K`` counts the entries at the maximum (each
  contributes exactly 1) and ``R`` sums the others, so that ``log(sum) = log1p(K - 1 + R)``
  keeps its relative accuracy near 0 (``logsumexp([0, -40])`` is 4.2e-18, not 0);
* a NaN entry makes ``R`` NaN, so NaN reaches the whole row; a +inf maximum makes
  softmax/log_softmax NaN (the launcher's ``INF_IS_NAN``) and logsumexp +inf.

In the online pass each lane keeps its own ``(m, k, r)``; the lanes are merged at the end. An
update needs one exponential: of ``(smaller - larger) / t`` of the lane's maximum and the new
entry, which rescales ``r`` when the entry is the new maximum and is the entry's term otherwise.
"""

from __future__ import annotations

import triton
import triton.language as tl

NEG_INF = float("-inf")


@triton.jit
def _merge_lanes(m, k, r, t):
    """The row's ``(shift, K, R)`` from the lanes' ``(m, k, r)``."""
    big = tl.max(m, axis=0)
    shift = tl.where(big == float("-inf"), 0.0, big)
    top = (m == big) & (m != float("-inf"))
    # A lane below the maximum: its k ones and its r are rescaled to the row's maximum.
    scale = tl.exp(tl.where(m == float("-inf"), float("-inf"), (m - shift) / t))
    count = tl.sum(tl.where(top, k, 0.0), axis=0)
    rest = tl.sum(tl.where(top, r, (k + r) * scale), axis=0)
    return shift, count, rest


@triton.jit
def _online_stats(x_ptr, n, t, BLOCK: tl.constexpr):
    """``(shift, K, R)`` of a row read in chunks (see the module docstring)."""
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    k = tl.zeros([BLOCK], tl.float32)
    r = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
        gt = x > m
        eq = (x == m) & (x != float("-inf"))
        low = tl.where(gt, m, x)
        high = tl.where(gt, x, m)
        # low == -inf: a term (or a scale) of 0. A NaN entry is neither gt nor eq: NaN term.
        e = tl.exp(tl.where(low == float("-inf"), float("-inf"), (low - high) / t))
        r = tl.where(gt, (r + k) * e, tl.where(eq, r, r + e))
        k = tl.where(gt, 1.0, tl.where(eq, k + 1.0, k))
        m = tl.where(gt, x, m)
    return _merge_lanes(m, k, r, t)


@triton.jit
def _block_stats(x, t):
    """``(shift, K, R, z)`` of a row held on chip (padding is -inf)."""
    big = tl.max(x, axis=0)
    shift = tl.where(big == float("-inf"), 0.0, big)
    z = (x - shift) / t
    top = (x == big) & (x != float("-inf"))
    count = tl.sum(tl.where(top, 1.0, 0.0), axis=0)
    rest = tl.sum(tl.where(top, 0.0, tl.exp(z)), axis=0)
    return shift, count, rest, z


@triton.jit
def _log_total(count, rest):
    """``log(K + R)``, accurate near 0; 0 for an empty row (K = R = 0)."""
    return _log1p(tl.where(count > 0, count - 1.0, 0.0) + rest)


@triton.jit
def _log1p(a):
    """log(1 + a) accurate for small ``a`` (libdevice's log1p is not in the interpreter):
    ``log(u) * a / (u - 1)`` with ``u = 1 + a`` rounded (Goldberg's formula)."""
    u = 1.0 + a
    return tl.where(u == 1.0, a, tl.log(u) * (a / (u - 1.0)))


@triton.jit
def normalize_kernel(
    X,
    Y,
    n,
    t,
    x_row_stride,
    y_row_stride,
    LOG: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
):
    """softmax (``LOG=False``) or log_softmax of each row of ``X`` into ``Y``."""
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + row * x_row_stride
    y_ptr = Y + row * y_row_stride
    if ONE_PASS:
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
        shift, count, rest, z = _block_stats(x, t)
        _write_normalized(y_ptr, cols, n, z, shift, count, rest, LOG)
    else:
        shift, count, rest = _online_stats(x_ptr, n, t, BLOCK)
        for start in range(0, n, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
            _write_normalized(y_ptr, cols, n, (x - shift) / t, shift, count, rest, LOG)


@triton.jit
def _write_normalized(y_ptr, cols, n, z, shift, count, rest, LOG: tl.constexpr):
    empty = count + rest == 0.0  # all -inf: zeros / -inf, not NaN
    nan = shift == float("inf")  # a +inf entry makes its whole row NaN
    if LOG:
        y = tl.where(empty, float("-inf"), z - _log_total(count, rest))
    else:
        y = tl.where(empty, 0.0, tl.exp(z) / (count + rest))
    y = tl.where(nan, float("nan"), y)
    tl.store(y_ptr + cols, y.to(y_ptr.dtype.element_ty), mask=cols < n)


@triton.jit
def logsumexp_kernel(X, OUT, n, x_row_stride, BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    """``OUT[row] = logsumexp(X[row])`` in float32 (or float64's float64: see the launcher)."""
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + row * x_row_stride
    if ONE_PASS:
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
        shift, count, rest, _ = _block_stats(x, 1.0)
    else:
        shift, count, rest = _online_stats(x_ptr, n, 1.0, BLOCK)
    # An empty row: -inf. A +inf maximum: +inf (its shift) + a finite log.
    out = tl.where(count + rest == 0.0, float("-inf"), shift + _log_total(count, rest))
    tl.store(OUT + row, out.to(OUT.dtype.element_ty))


@triton.jit
def normalize_backward_kernel(
    DY,
    Y,
    DX,
    n,
    t,
    row_stride,
    LOG: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
):
    """The gradient of softmax / log_softmax with respect to the logits, from the output.

    softmax: ``y * (dy - sum(dy * y)) / t``; log_softmax: ``(dy - exp(y) * sum(dy)) / t``,
    zero on an all -inf row (whose output is all -inf: ``sum(exp(y)) == 0``). ``DY``, ``Y``
    and ``DX`` share one row-major layout."""
    row = tl.program_id(0).to(tl.int64)
    dy_ptr = DY + row * row_stride
    y_ptr = Y + row * row_stride
    dx_ptr = DX + row * row_stride
    if ONE_PASS:
        cols = tl.arange(0, BLOCK)
        dy, y = _load_pair(dy_ptr, y_ptr, cols, n, LOG)
        total, mass = _backward_terms(dy, y, LOG)
        dx = _backward_value(dy, y, tl.sum(total, axis=0), tl.sum(mass, axis=0), t, LOG)
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=cols < n)
    else:
        total = tl.zeros([BLOCK], tl.float32)
        mass = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            dy, y = _load_pair(dy_ptr, y_ptr, cols, n, LOG)
            more_total, more_mass = _backward_terms(dy, y, LOG)
            total += more_total
            mass += more_mass
        total_row = tl.sum(total, axis=0)
        mass_row = tl.sum(mass, axis=0)
        for start in range(0, n, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            dy, y = _load_pair(dy_ptr, y_ptr, cols, n, LOG)
            dx = _backward_value(dy, y, total_row, mass_row, t, LOG)
            tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=cols < n)


@triton.jit
def _load_pair(dy_ptr, y_ptr, cols, n, LOG: tl.constexpr):
    """``(dy, y)`` in float32; padding takes no part (dy = 0; y = -inf for log_softmax)."""
    mask = cols < n
    dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if LOG:
        y = tl.where(mask, y, float("-inf"))
    return dy, y


@triton.jit
def _backward_terms(dy, y, LOG: tl.constexpr):
    """The per-entry terms of the row sums: ``(dy, exp(y))`` for log_softmax, ``(dy * y, 0)``
    for softmax."""
    if LOG:
        return dy, tl.exp(y)
    else:
        return dy * y, tl.zeros_like(y)


@triton.jit
def _backward_value(dy, y, total, mass, t, LOG: tl.constexpr):
    if LOG:
        return tl.where(mass != 0.0, (dy - tl.exp(y) * total) / t, 0.0)
    else:
        return y * (dy - total) / t
