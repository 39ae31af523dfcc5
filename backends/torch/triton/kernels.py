"""The Triton kernels: one program per row of a row-major ``(rows, n)`` view.

Every kernel reads its row in the input dtype and computes in float32. A row of at most
``BLOCK`` entries is read once and kept on chip (``ONE_PASS``); a longer one is read in
``BLOCK``-wide chunks with an online maximum, then read again to write the result.

The row statistics follow the generic implementation (``xpsoftmax._generic``):

* the shift is the row maximum, 0 for an all -inf row (which then stays -inf, not NaN);
* ``z = (x - shift) * inv_t`` (the shift before the scaling: no finite input overflows; a
  multiplication by ``1 / t``, since a division per entry would make the kernels compute-bound
  on a Hopper GPU);
* for the logarithms (log_softmax, logsumexp, cross-entropy) the sum of ``exp(z)`` is kept
  as ``K + R``: ``K`` counts the entries at the maximum (each contributes exactly 1) and ``R``
  sums the others, so that ``log(sum) = log1p(K - 1 + R)`` keeps its relative accuracy near 0
  (``logsumexp([0, -40])`` is 4.2e-18, not 0); softmax of a row on chip needs the plain sum;
* a NaN entry makes ``R`` NaN, so NaN reaches the whole row; a +inf maximum makes
  softmax/log_softmax NaN and logsumexp +inf.

In the online pass the running maximum is the row's so far (one reduction per chunk); each
lane keeps its own ``K`` and ``R`` at that maximum, rescaled (one exponential) only in a chunk
that raises it. 16-bit rows make these kernels nearly compute-bound on a Hopper GPU (about 16
operations per entry at the copy's speed), so the special rows are settled once per row in a
scalar rather than per entry.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _online_stats(x_ptr, n, inv_t, BLOCK: tl.constexpr):
    """``(shift, K, R)`` of a row read in chunks (see the module docstring)."""
    m = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)  # a float32 scalar
    k = tl.zeros([BLOCK], tl.float32)
    r = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
        new = tl.maximum(m, tl.max(x, axis=0))
        if new > m:
            # The ones counted at the old maximum join the rest, rescaled; exp(-inf) = 0
            # also drops what an all -inf start counted.
            r = (r + k) * tl.exp((m - new) * inv_t)
            k = tl.zeros([BLOCK], tl.float32)
            m = new
        e, top = _terms(x, m, inv_t)
        r += tl.where(top, 0.0, e)
        k += tl.where(top, 1.0, 0.0)
    return _row_stats(m, k, r)


@triton.jit
def _terms(x, big, inv_t):
    """``(exp(z), x == big)`` for ``z = (x - shift) * inv_t``: an entry at the maximum adds
    exactly 1 to ``K``, any other its ``exp(z)`` to ``R`` (a NaN entry: NaN)."""
    shift = tl.where(big == float("-inf"), 0.0, big)
    return tl.exp((x - shift) * inv_t), x == big


@triton.jit
def _row_stats(big, k, r):
    """``(shift, K, R)`` from the per-lane counts and rests at the row's maximum ``big``: an
    all -inf row (whose -inf entries all matched the maximum) has ``K = R = 0``."""
    shift = tl.where(big == float("-inf"), 0.0, big)
    count = tl.where(big == float("-inf"), 0.0, tl.sum(k, axis=0))
    return shift, count, tl.sum(r, axis=0)


@triton.jit
def _block_stats(x, inv_t):
    """``(shift, K, R, z)`` of a row held on chip (padding is -inf)."""
    big = tl.max(x, axis=0)
    e, top = _terms(x, big, inv_t)
    shift, count, rest = _row_stats(big, tl.where(top, 1.0, 0.0), tl.where(top, 0.0, e))
    return shift, count, rest, (x - shift) * inv_t


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
    inv_t,
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
        if LOG:
            shift, count, rest, z = _block_stats(x, inv_t)
            y = z - _log_offset(shift, count, rest)
        else:
            # softmax needs the plain sum (as the generic path takes it), and one division.
            big = tl.max(x, axis=0)
            shift = tl.where(big == float("-inf"), 0.0, big)
            e = tl.exp((x - shift) * inv_t)
            y = e * _softmax_scale(shift, tl.sum(e, axis=0))
        tl.store(y_ptr + cols, y.to(Y.dtype.element_ty), mask=cols < n)
    else:
        shift, count, rest = _online_stats(x_ptr, n, inv_t, BLOCK)
        if LOG:
            offset = _log_offset(shift, count, rest)
        else:
            scale = _softmax_scale(shift, count + rest)
        for start in range(0, n, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
            z = (x - shift) * inv_t
            if LOG:
                y = z - offset
            else:
                y = tl.exp(z) * scale
            tl.store(y_ptr + cols, y.to(Y.dtype.element_ty), mask=cols < n)


# The special rows are settled once per row, in the scalar that every entry then takes (an
# operation per entry less: the kernels are near compute-bound on 16-bit input).
@triton.jit
def _log_offset(shift, count, rest):
    """``y = z - offset`` is log_softmax: -inf on an all -inf row (``-inf - inf``), NaN on a
    row with a +inf entry."""
    offset = tl.where(count + rest == 0.0, float("inf"), _log_total(count, rest))
    return tl.where(shift == float("inf"), float("nan"), offset)


@triton.jit
def _softmax_scale(shift, total):
    """``y = exp(z) * scale`` is softmax: 0 on an all -inf row (whose ``exp(z)`` are 0), NaN
    on a row with a +inf entry."""
    scale = tl.where(total == 0.0, 0.0, 1.0 / total)
    return tl.where(shift == float("inf"), float("nan"), scale)


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
def logsumexp_backward_kernel(X, OUT, G, g_stride, DX, n, row_stride, BLOCK: tl.constexpr):
    """``DX[row] = G[row * g_stride] * exp(X[row] - OUT[row])``, the gradient of
    :func:`logsumexp_kernel`'s ``OUT``; zero on an all -inf row (``OUT`` -inf: no event)."""
    row = tl.program_id(0).to(tl.int64)
    lse = tl.load(OUT + row)
    live = lse != float("-inf")
    g = tl.load(G + row * g_stride).to(tl.float32)
    x_ptr = X + row * row_stride
    dx_ptr = DX + row * row_stride
    for start in range(0, n, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        p = tl.where(live, tl.exp(x - tl.where(live, lse, 0.0)), 0.0)
        tl.store(dx_ptr + cols, (p * g).to(DX.dtype.element_ty), mask=mask)


@triton.jit
def normalize_backward_kernel(
    DY,
    Y,
    DX,
    n,
    inv_t,
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
        dx = _backward_value(dy, y, tl.sum(total, axis=0), tl.sum(mass, axis=0), inv_t, LOG)
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
            dx = _backward_value(dy, y, total_row, mass_row, inv_t, LOG)
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
def _backward_value(dy, y, total, mass, inv_t, LOG: tl.constexpr):
    if LOG:
        return tl.where(mass != 0.0, (dy - tl.exp(y) * total) * inv_t, 0.0)
    else:
        return y * (dy - total) * inv_t


# --- cross-entropy with class-index targets -----------------------------------------------------
@triton.jit
def _target_terms(TARGET, W, index, n, ignore_index, HAS_W: tl.constexpr, HAS_IGNORE: tl.constexpr):
    """``(target, valid, ignored, t_safe, w_t)`` of the entries at ``index`` (a scalar or a
    block): an index in ``[0, n)`` that is not ``ignore_index`` is valid; ``w_t`` is its class
    weight (the weight of class 0 for an invalid index, whose loss is NaN or 0 anyway)."""
    target = tl.load(TARGET + index).to(tl.int64)
    in_range = (target >= 0) & (target < n)
    if HAS_IGNORE:
        ignored = target == ignore_index
        valid = in_range & (target != ignore_index)
    else:
        ignored = target != target  # False: no index is ignored
        valid = in_range
    t_safe = tl.where(valid, target, 0)
    w_t = tl.where(valid, 1.0, 1.0)  # 1, shaped like the index
    if HAS_W:
        w_t = tl.load(W + t_safe).to(tl.float32)
    return target, valid, ignored, t_safe, w_t


@triton.jit
def ce_mean_kernel(
    TARGET,
    W,
    rows,
    n,
    ignore_index,
    DEN,
    FACTOR,
    HAS_W: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program: the mean's denominator ``DEN`` (the weights of the entries not ignored)
    and ``FACTOR``, d mean / d entry's loss (``1 / DEN``, 0 when ``DEN`` is 0: the generic
    ``mean_over``). It reads the targets only, so the forward kernel can write the gradient
    of the mean while it reads the logits."""
    den = tl.zeros([BLOCK], tl.float32)
    for start in range(0, rows, BLOCK):
        i = start + tl.arange(0, BLOCK)
        inside = i < rows
        _, _, ignored, _, w_t = _target_terms(
            TARGET, W, tl.where(inside, i, 0), n, ignore_index, HAS_W, HAS_IGNORE
        )
        den += tl.where(inside & ~ignored, w_t, 0.0)
    total = tl.sum(den, axis=0)
    tl.store(DEN, total)
    tl.store(FACTOR, tl.where(total == 0.0, 0.0, 1.0 / tl.where(total == 0.0, 1.0, total)))


@triton.jit
def ce_forward_kernel(
    X,
    TARGET,
    W,
    PER,
    STATS,
    DX,
    FACTOR,
    rows,
    n,
    inv_t,
    ignore_index,
    W_TOTAL,
    eps,
    z_loss,
    x_row_stride,
    HAS_W: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    SMOOTH: tl.constexpr,
    Z_LOSS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    HAS_FACTOR: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
):
    """One entry (row) of cross-entropy with a class-index target: the formula of
    ``xpsoftmax._generic._index_terms`` on the row's statistics, and with ``WRITE_GRAD`` its
    gradient in the same read of a row held on chip (a row read in chunks is read once more).

    ``PER``: ``w_t * ((1 - eps) * (lse - z_t) + eps / C * (W lse - <w, z>))`` plus the z-loss
    ``z_loss * w_t * lse_abs**2``, +inf on an all -inf row, 0 where ignored, NaN for an index
    out of range. ``STATS`` (5, rows), row by row, for :func:`ce_grad_kernel`: the row's
    maximum (-inf on rows without a gradient), ``log(sum(exp z))``, and the gradient's
    coefficients of ``p``, of the target's one-hot and of the class weights (0 on rows without
    a gradient: ignored, out of range, all -inf), for ``z = (x - shift) * inv_t``. ``DX``:
    the gradient of the entry's loss times ``FACTOR[0]`` (the mean's, when ``HAS_FACTOR``)."""
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + row * x_row_stride
    target, valid, ignored, t_safe, w_t = _target_terms(
        TARGET, W, row, n, ignore_index, HAS_W, HAS_IGNORE
    )
    if ONE_PASS:
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32)
        shift, count, rest, z = _block_stats(x, inv_t)
        wz = 0.0
        if SMOOTH:
            wz = tl.sum(tl.where(mask, _class_weight(W, cols, mask, HAS_W) * z, 0.0), axis=0)
    else:
        shift, count, rest = _online_stats(x_ptr, n, inv_t, BLOCK)
        wz = 0.0
        if SMOOTH:  # a second pass: sum(w * z) needs the final shift
            acc = tl.zeros([BLOCK], tl.float32)
            for start in range(0, n, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n
                x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                w = _class_weight(W, cols, mask, HAS_W)
                acc += tl.where(mask, w * ((x - shift) * inv_t), 0.0)
            wz = tl.sum(acc, axis=0)
    empty = count + rest == 0.0
    # A +inf maximum: NaN (inf - inf in the generic path's z), not a finite log.
    lse = tl.where(shift == float("inf"), float("nan"), _log_total(count, rest))
    z_t = (tl.load(x_ptr + t_safe).to(tl.float32) - shift) * inv_t
    per = tl.where(empty, float("inf"), lse - z_t) * ((1.0 - eps) * w_t)
    coef = w_t * (1.0 - eps)
    if SMOOTH:
        if HAS_W:
            w_total = tl.load(W_TOTAL).to(tl.float32)
        else:
            w_total = n * 1.0
        per += (eps / n) * tl.where(empty, float("inf"), w_total * lse - wz)
        coef += eps * w_total / n
    if Z_LOSS:
        lse_abs = shift * inv_t + lse
        per += tl.where(empty, float("inf"), (z_loss * w_t) * (lse_abs * lse_abs))
        coef += 2.0 * z_loss * w_t * lse_abs
    per = tl.where(valid, per, tl.where(ignored, 0.0, float("nan")))
    keep = valid & (count + rest != 0.0)
    # Rows without a gradient (ignored, out of range, all -inf): all three coefficients 0 and
    # p = 0, so that NaN logits of an ignored row give 0, not NaN.
    cl = tl.where(keep, coef, 0.0)
    ct = tl.where(keep, -w_t * (1.0 - eps), 0.0)
    cw = tl.where(keep, -eps / n, 0.0)
    tl.store(PER + row, per)
    stats = STATS + row  # one pointer step of ``rows`` per statistic: no int32 overflow
    tl.store(stats, tl.where(keep, shift, float("-inf")))
    stats += rows
    tl.store(stats, lse)
    stats += rows
    tl.store(stats, cl)
    stats += rows
    tl.store(stats, ct)
    stats += rows
    tl.store(stats, cw)
    if WRITE_GRAD:
        g = inv_t
        if HAS_FACTOR:
            g *= tl.load(FACTOR)
        cl *= g
        ct *= g
        cw *= g
        dx_ptr = DX + row * x_row_stride
        if ONE_PASS:
            dx = _gradient(z, lse, keep, cols, mask, target, cl, ct, cw, W, HAS_W, SMOOTH)
            tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=mask)
        else:
            _write_gradient(x_ptr, dx_ptr, n, shift, inv_t, lse, keep, target, cl, ct, cw, W,
                            HAS_W, SMOOTH, BLOCK)  # fmt: skip


@triton.jit
def _gradient(z, lse, keep, cols, mask, target, cl, ct, cw, W, HAS_W: tl.constexpr,
              SMOOTH: tl.constexpr):  # fmt: skip
    """``cl * p + ct * onehot(target) + cw * w`` over ``cols`` (the coefficients already
    carry the incoming gradient and ``1 / t``); p = 0 on a row without a gradient."""
    p = tl.where(keep, tl.exp(z - lse), 0.0)
    dx = cl * p + tl.where(cols == target, ct, 0.0)
    if SMOOTH:
        dx += cw * _class_weight(W, cols, mask, HAS_W)
    return dx


@triton.jit
def _write_gradient(x_ptr, dx_ptr, n, shift, inv_t, lse, keep, target, cl, ct, cw, W,
                    HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """:func:`_gradient` of a row read in chunks."""
    for start in range(0, n, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        z = (x - shift) * inv_t
        dx = _gradient(z, lse, keep, cols, mask, target, cl, ct, cw, W, HAS_W, SMOOTH)
        tl.store(dx_ptr + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def ce_reduce_kernel(PER, rows, DEN, LOSS, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """One program: ``LOSS`` = the sum of ``PER`` (``MEAN=False``) or its mean over ``DEN[0]``
    (from :func:`ce_mean_kernel`), 0 when that is 0 (the generic ``mean_over``)."""
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, rows, BLOCK):
        i = start + tl.arange(0, BLOCK)
        total += tl.load(PER + i, mask=i < rows, other=0.0)
    loss = tl.sum(total, axis=0)
    if MEAN:
        d = tl.load(DEN)
        loss = tl.where(d == 0.0, 0.0, loss / tl.where(d == 0.0, 1.0, d))
    tl.store(LOSS, loss)


@triton.jit
def _class_weight(W, cols, mask, HAS_W: tl.constexpr):
    if HAS_W:
        return tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.where(mask, 1.0, 0.0)


@triton.jit
def ce_grad_kernel(
    X,
    TARGET,
    W,
    STATS,
    rows,
    G,
    g_stride,
    FACTOR,
    DX,
    n,
    inv_t,
    x_row_stride,
    HAS_W: tl.constexpr,
    SMOOTH: tl.constexpr,
    HAS_G: tl.constexpr,
    HAS_FACTOR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``DX = g * (cl * p + ct * onehot(target) + cw * w) / t`` per row, for ``p = softmax(x /
    t)`` and ``g = G[row * g_stride] * FACTOR[0]`` (the incoming gradient of the entry's loss
    or of the reduced loss, and the mean's factor; 1 where ``HAS_G`` / ``HAS_FACTOR`` is
    False), from :func:`ce_forward_kernel`'s ``STATS``: the gradient recomputed (for a second
    backward pass, or when the forward wrote none)."""
    row = tl.program_id(0).to(tl.int64)
    g = inv_t
    if HAS_G:
        g *= tl.load(G + row * g_stride).to(tl.float32)
    if HAS_FACTOR:
        g *= tl.load(FACTOR)
    stats = STATS + row  # the forward's order, a pointer step of ``rows`` each
    big = tl.load(stats)
    stats += rows
    lse = tl.load(stats)
    stats += rows
    cl = tl.load(stats) * g
    stats += rows
    ct = tl.load(stats) * g
    stats += rows
    cw = tl.load(stats) * g
    target = tl.load(TARGET + row).to(tl.int64)
    keep = big != float("-inf")
    shift = tl.where(keep, big, 0.0)
    _write_gradient(X + row * x_row_stride, DX + row * x_row_stride, n, shift, inv_t, lse, keep,
                    target, cl, ct, cw, W, HAS_W, SMOOTH, BLOCK)  # fmt: skip


@triton.jit
def ce_scale_kernel(DX, G, g_stride, rows, n, row_stride, BLOCK: tl.constexpr):
    """``DX[row] *= G[row * g_stride]`` in place (DX is the forward's own gradient buffer,
    never an input), skipped on the device where that is 1 (a loss's ``backward()``): no host
    synchronisation, and no traffic in the common case. Program ``p`` of ``P`` takes rows
    ``p, p + P, ...``: one program per row for a gradient per row, fewer for one shared by
    all rows (``g_stride`` 0), whose programs mostly find 1 and return."""
    # An int64 start makes the loop's index int64 (``row * row_stride`` must not overflow).
    for row in range(tl.program_id(0).to(tl.int64), rows, tl.num_programs(0)):
        g = tl.load(G + row * g_stride).to(tl.float32)
        if g != 1.0:
            dx_ptr = DX + row * row_stride
            for start in range(0, n, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n
                dx = tl.load(dx_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(dx_ptr + cols, (dx * g).to(DX.dtype.element_ty), mask=mask)
