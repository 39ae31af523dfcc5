"""The generic implementation, written once against the array API standard.

Every function takes the namespace ``xp`` and arguments already checked and normalised by
``xpsoftmax._checks`` (arrays of one library, axes as a sorted tuple of non-negative ints,
``temperature`` as a :class:`~xpsoftmax._checks.Temperature`). Fast paths take the same
arguments and must give the same answers.

Two habits run through this module:

* values that would poison a gradient (``-inf - -inf``, ``0 * inf``, ``log 0``) are replaced
  by harmless ones *before* the operation and the result is selected with ``where`` after it
  (the "double where"), so that gradients are finite on empty events and masked entries;
* no Python control flow on array values: only on shapes, dtypes and Python scalars.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from ._checks import (
    TINY,
    CrossEntropySettings,
    Temperature,
    _trait,
    array_device,
    compute_dtype,
    dtype_name,
    held,
    index_dtype,
    known,
    library_name,
    reduced_shape,
    result_dtype,
    target_masks,
    tied,
)

__all__ = ["cross_entropy", "cross_entropy_with_grad", "log_softmax", "logsumexp", "softmax"]

INF = math.inf
NAN = math.nan
#: For entries with ``b == 0`` in logsumexp: exp(d) is clamped at exp(80) so that ``0 * exp(d)``
#: stays 0 in float32, while ``d lse / d b`` stays exact unless x exceeds the maximum by 80.
_B_ZERO_CLAMP = 80.0

Array = Any


# --- small helpers ------------------------------------------------------------------------


def _max(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return x if axes == () else xp.max(x, axis=axes, keepdims=True)


def _sum(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return x if axes == () else xp.sum(x, axis=axes, keepdims=True)


def _squeeze(xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
    return x if axes == () else xp.squeeze(x, axis=axes)


def _empty_axis(x: Array, axes: tuple[int, ...]) -> bool:
    """True when the answer needs no arithmetic: a reduced axis is empty (every slice is an
    empty event), or the array is (no slice at all). Dask cannot reduce empty chunks."""
    return any(n == 0 for n in x.shape)


def _shifted(xp: Any, x: Array, axes: tuple[int, ...], where: Array | None) -> tuple[Array, Array]:
    """``(x - max, max)`` with -inf at entries that take no part.

    An empty event (max = -inf) is shifted by 0 so that it stays all -inf instead of NaN; a
    +inf or NaN maximum is kept, which makes the whole slice NaN downstream, as the contract
    asks of softmax and log_softmax.
    """
    xm = x if where is None else xp.where(where, x, -INF)
    m = _max(xp, xm, axes)
    shift = xp.where(m == -INF, 0.0, m)
    return xm - shift, shift


def _hard_max(xp: Any, d: Array) -> Array:
    """The T -> 0 limit of ``d / T`` for ``d = x - max <= 0``: 0 at the maxima, -inf elsewhere.
    The maxima's 0 is ``d * 0``: a function of ``d`` with derivative 0, so that the result
    stays in autodiff's graph (a backward through a torch constant raises)."""
    return xp.where(d == 0, d * 0.0, xp.where(d < 0, -INF, xp.full_like(d, NAN)))


def _flat(xp: Any, d: Array) -> Array:
    """The T -> inf limit of ``d / T``: 0 for finite entries, -inf stays -inf, NaN stays NaN."""
    return xp.where(d == -INF, -INF, d * 0.0)


def _classes(xp: Any, t: Array) -> tuple[Array, Array, Array]:
    """An array temperature's slices by the scalar rule (``_checks.classify_temperature``):
    ``(ordinary, zero, inf)``; a negative or NaN entry is in none of them."""
    tiny = TINY.get(dtype_name(t.dtype), TINY["float32"])
    return (t >= tiny) & (t < INF), (t >= 0) & (t < tiny), t == INF


#: Above this a temperature's reciprocal is subnormal in float32, and XLA on CPU, which
#: divides by multiplying with the reciprocal and flushes subnormals to zero, would compute
#: ``x / T`` as ``x * 0`` (NaN for x = -inf). Such temperatures divide in two exact steps,
#: the first held (``_checks.held``) so that a compiler cannot fold the two constants into
#: one subnormal factor again (XLA under ``jax.jit`` did).
BIG_T = 2.0**64


def _divide(xp: Any, d: Array, t: Any) -> Array:
    """``d / t`` for ``t > 0``, exact wherever ``1 / t`` would be subnormal."""
    if isinstance(t, float):
        return d / t if t <= BIG_T else held(xp, d * (1 / BIG_T)) / (t / BIG_T)
    down = xp.where(t > BIG_T, 1 / BIG_T, xp.ones_like(t))
    return (d * down) / (t * down)


def _scale(xp: Any, d: Array, temperature: Temperature) -> Array:
    """``d / T`` with the contract's limits at T = 0 and T = inf (per slice for arrays).

    ``d`` is already shifted by the maximum (``d <= 0``), so no finite input overflows into a
    NaN here, however small T is: the shift comes before the scaling on every path."""
    kind, t = temperature.kind, temperature.value
    if kind == "one":
        return d
    if kind == "positive":
        return _divide(xp, d, t)
    if kind == "zero":
        return _hard_max(xp, d)
    if kind == "inf":
        return _flat(xp, d)
    # An array: every slice may take a different branch, so compute each safely and select.
    ordinary, zero, inf = _classes(xp, t)
    t_safe = xp.where(ordinary, t, 1.0)
    d_safe = xp.where(d == -INF, 0.0, d)
    z = xp.where(d == -INF, -INF, _divide(xp, d_safe, t_safe))
    z = xp.where(zero, _hard_max(xp, d), z)
    z = xp.where(inf, _flat(xp, d), z)
    return xp.where(ordinary | zero | inf, z, NAN)  # negative or NaN temperature: NaN slice


def _scaled_shift(xp: Any, shift: Array, temperature: Temperature) -> Array:
    """``shift / T`` with the limits: what turns a shifted logsumexp into the true one."""
    kind, t = temperature.kind, temperature.value
    if kind == "one":
        return shift
    if kind == "positive":
        return _divide(xp, shift, t)

    def at_zero() -> Array:
        return xp.where(shift == 0, 0.0, xp.where(shift > 0, INF, xp.full_like(shift, -INF)))

    if kind == "zero":
        return at_zero()
    if kind == "inf":
        return shift * 0.0
    ordinary, zero, inf = _classes(xp, t)
    out = xp.where(ordinary, _divide(xp, shift, xp.where(ordinary, t, 1.0)), shift * 0.0)
    out = xp.where(zero, at_zero(), out)
    return xp.where(ordinary | zero | inf, out, NAN)


def _inverse_temperature(xp: Any, temperature: Temperature) -> Array | float:
    """d(x / T)/dx, with 0 at the limits T = 0 and T = inf (finite: T >= the smallest
    normal number, or it counts as 0)."""
    kind, t = temperature.kind, temperature.value
    if kind == "one":
        return 1.0
    if kind == "positive":
        return 1.0 / t
    if kind in ("zero", "inf"):
        return 0.0
    ordinary, zero, inf = _classes(xp, t)
    inv = xp.where(ordinary, 1.0 / xp.where(ordinary, t, 1.0), 0.0)
    return xp.where(ordinary | zero | inf, inv, NAN)


def _log_total(xp: Any, z: Array, e: Array, axes: tuple[int, ...]) -> Array:
    """``log(sum(e))`` for ``e = exp(z)``, ``z <= 0``, accurate near 0 (keepdims).

    The maxima (``z == 0``) contribute exactly 1 each, so the sum is ``k + rest`` and its log
    is ``log1p((k - 1) + rest)``: ``logsumexp([0, -40])`` is 4.2e-18, not ``log(1.0) = 0``.
    An empty event (k = 0, rest = 0) gives ``log1p(0) = 0``, which leaves its -inf entries
    -inf. Autodiff reaches the maxima through the shift, which carries their gradient.
    """
    top = z == 0
    rest = _sum(xp, xp.where(top, 0.0, e), axes)
    k = _sum(xp, xp.astype(top, e.dtype), axes)
    # where, not maximum with a Python scalar: array-api-compat's torch maximum breaks a
    # torch.compile graph on the scalar.
    return xp.log1p(rest + xp.where(k > 0, k - 1.0, 0.0))


def _exp_sum(
    xp: Any, x: Array, axes: tuple[int, ...], temperature: Temperature, where: Array | None
) -> tuple[Array, Array, Array, Array]:
    """The shared first half of the normalisations: ``(z, e, s, shift)`` with
    ``z = (x - max) / T`` (-inf where not taking part), ``e = exp(z)``, ``s = sum(e)``."""
    d, shift = _shifted(xp, x, axes, where)
    z = _scale(xp, d, temperature)
    e = xp.exp(z)
    return z, e, _sum(xp, e, axes), shift


def _zeros(xp: Any, shape: tuple[int, ...], dtype: Any, like: Array, fill: float = 0.0) -> Array:
    return xp.full(shape, fill, dtype=dtype, device=_device(like))


def _device(x: Array) -> Any:
    """Where new arrays beside ``x`` go: its device; None (the library's choice) for a JAX
    array over several devices, whose sharding fits only arrays of its own rank."""
    d = array_device(x)
    return None if type(d).__name__.endswith("Sharding") else d


# --- the operations -----------------------------------------------------------------------


def softmax(
    xp: Any, x: Array, axes: tuple[int, ...], *, temperature: Temperature, where: Array | None
) -> Array:
    """Generic softmax; see :func:`xpsoftmax.softmax`."""
    out_dtype = result_dtype(xp, x.dtype, reduction=False)
    if _empty_axis(x, axes):
        return tied(xp, _zeros(xp, tuple(x.shape), out_dtype, x), x)
    xc = xp.astype(x, compute_dtype(xp, x.dtype), copy=False)
    _, e, s, _ = _exp_sum(xp, xc, axes, temperature, where)
    p = e / xp.where(s == 0, 1.0, s)  # an empty event gives e == 0 everywhere: zeros
    return xp.astype(p, out_dtype, copy=False)


def log_softmax(
    xp: Any, x: Array, axes: tuple[int, ...], *, temperature: Temperature, where: Array | None
) -> Array:
    """Generic log_softmax; see :func:`xpsoftmax.log_softmax`."""
    out_dtype = result_dtype(xp, x.dtype, reduction=False)
    if _empty_axis(x, axes):
        return tied(xp, _zeros(xp, tuple(x.shape), out_dtype, x), x)
    xc = xp.astype(x, compute_dtype(xp, x.dtype), copy=False)
    z, e, s, _ = _exp_sum(xp, xc, axes, temperature, where)
    out = xp.where(s == 0, -INF, z - _log_total(xp, z, e, axes))
    return xp.astype(out, out_dtype, copy=False)


def _weighted_log_total(xp: Any, d: Array, be: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """``(s, log|s|)`` for ``s = sum(be)``, ``be = b * exp(d)``, keepdims; -inf for s = 0.

    As in :func:`_log_total`: the entries at the maximum (``d == 0``) add up to ``B`` exactly,
    so ``log|s| = log|B| + log1p(rest / B)``, accurate near 0, wherever B and s have one sign.
    """
    top = d == 0
    big = _sum(xp, xp.where(top, be, 0.0), axes)
    rest = _sum(xp, xp.where(top, 0.0, be), axes)
    s = big + rest
    ratio = rest / xp.where(big == 0, 1.0, big)
    good = (big != 0) & (ratio > -1.0)
    precise = xp.log(xp.abs(xp.where(good, big, 1.0))) + xp.log1p(xp.where(good, ratio, 0.0))
    zero = s == 0
    plain = xp.where(zero, -INF, xp.log(xp.abs(xp.where(zero, 1.0, s))))
    return s, xp.where(good, precise, plain)


def logsumexp(
    xp: Any,
    x: Array,
    axes: tuple[int, ...],
    *,
    keepdims: bool,
    b: Array | None,
    return_sign: bool,
    where: Array | None,
) -> Array | tuple[Array, Array]:
    """Generic logsumexp; see :func:`xpsoftmax.logsumexp`."""
    out_dtype = result_dtype(xp, x.dtype, reduction=True)
    if _empty_axis(x, axes):
        shape = reduced_shape(tuple(x.shape), axes, keepdims)
        lse = tied(xp, _zeros(xp, shape, out_dtype, x, -INF), x)
        return (lse, _zeros(xp, shape, out_dtype, x)) if return_sign else lse
    cdt = compute_dtype(xp, x.dtype)
    xc = xp.astype(x, cdt, copy=False)
    if b is None:
        xm = xc if where is None else xp.where(where, xc, -INF)
        m = _max(xp, xm, axes)
        # +inf maximum: shift by 0 so that the sum is +inf, not inf - inf.
        shift = xp.where(xp.isfinite(m), m, 0.0)
        d = xm - shift
        e = xp.exp(d)
        s = _sum(xp, e, axes)
        log_abs = xp.where(s == 0, -INF, _log_total(xp, d, e, axes))
    else:
        # Entries with b == 0 take no part in the maximum, nor in the sum where x is not finite;
        # where x is finite they stay in the sum (times 0) so that d lse / d b is right there.
        b_zero = b == 0
        part = ~b_zero if where is None else (where & ~b_zero)
        m = _max(xp, xp.where(part, xc, -INF), axes)
        shift = xp.where(xp.isfinite(m), m, 0.0)
        in_sum = part | (b_zero & xp.isfinite(xc))
        if where is not None:
            in_sum = in_sum & where
        d = xp.where(in_sum, xc, -INF) - shift
        d = xp.where(b_zero & (d > _B_ZERO_CLAMP), _B_ZERO_CLAMP, d)
        s, log_abs = _weighted_log_total(xp, d, b * xp.exp(d), axes)
    lse = log_abs + shift
    if return_sign:
        sign = xp.sign(s)
    else:
        lse = xp.where(s < 0, NAN, lse)  # a negative sum has no real log
    if not keepdims:
        lse = _squeeze(xp, lse, axes)
    lse = xp.astype(lse, out_dtype, copy=False)
    if return_sign:
        if not keepdims:
            sign = _squeeze(xp, sign, axes)
        return lse, xp.astype(sign, out_dtype, copy=False)
    return lse


# --- cross-entropy ------------------------------------------------------------------------


def _unsqueeze(xp: Any, a: Array, axis: int) -> Array:
    """``expand_dims`` at the non-negative ``axis``; by indexing with None where a size is
    unknown (Dask's ``expand_dims`` reshapes, which needs every size)."""
    if all(known(n) for n in a.shape):
        return xp.expand_dims(a, axis=axis)
    return a[(slice(None),) * axis + (None,)]


def _gather(xp: Any, z: Array, index: Array, axis: int) -> Array:
    """``z[..., index, ...]`` along ``axis`` (index shaped like z without that axis)."""
    idx = _unsqueeze(xp, xp.astype(index, index_dtype(xp, z), copy=False), axis)
    take = _trait(library_name(xp), "take_along_axis")  # JAX: sharded classes
    if take is not None:
        return xp.squeeze(take(z, idx, axis), axis=axis)
    if hasattr(xp, "take_along_axis"):
        return xp.squeeze(xp.take_along_axis(z, idx, axis=axis), axis=axis)
    # No gather in this namespace (dask): select with a comparison instead.
    return xp.sum(xp.where(_class_ids(xp, z, axis) == idx, z, 0.0), axis=axis)


def _class_ids(xp: Any, z: Array, axis: int) -> Array:
    c = z.shape[axis]
    shape = [1] * z.ndim
    shape[axis] = c
    chunked = _trait(library_name(xp), "class_ids")  # Dask: chunked like the classes
    ids = None if chunked is None else chunked(c, z, axis, index_dtype(xp, z))
    if ids is None:
        ids = xp.arange(c, dtype=index_dtype(xp, z), device=_device(z))
    return xp.reshape(ids, tuple(shape))


def _class_weights(xp: Any, weight: Array | None, index: Array) -> Array | float:
    if weight is None:
        return 1.0
    flat = xp.reshape(xp.astype(index, index_dtype(xp, index), copy=False), (-1,))
    take = _trait(library_name(xp), "take_along_axis")  # JAX: weights sharded by class
    if take is not None:
        picked = take(weight[None, :], flat[:, None], 1)[:, 0]
    else:
        picked = xp.take(weight, flat, axis=0)
    return xp.reshape(picked, tuple(index.shape))


def _along(xp: Any, v: Array, axis: int, ndim: int) -> Array:
    """A 1-D per-class array shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return xp.reshape(v, tuple(shape))


@dataclass(frozen=True)
class _Rows:
    """What every cross-entropy formula reads of the logits along the class axis.

    ``z`` are the scaled, shifted logits and ``e = exp(z)``, ``s`` its sum (keepdims);
    ``empty`` marks the rows that are all -inf (keepdims, ``empty_sq`` without the axis);
    ``lse`` is ``log(s)`` (0 on empty rows) and ``lse_abs`` the true logsumexp of the scaled
    logits (only for the z-loss); ``w_along`` the class weights shaped along the axis.
    """

    axis: int
    n_classes: int
    z: Array
    e: Array
    s: Array
    empty: Array
    empty_sq: Array
    lse: Array
    lse_abs: Array | None
    w_along: Array | None


def _rows(
    xp: Any, x: Array, axis: int, temperature: Temperature, weight: Array | None, z_loss: float
) -> _Rows:
    z, e, s, shift = _exp_sum(xp, x, (axis,), temperature, None)
    empty = s == 0
    lse_rel = _log_total(xp, z, e, (axis,))  # 0 on an empty row
    lse_abs = (
        xp.squeeze(_scaled_shift(xp, shift, temperature) + lse_rel, axis=axis) if z_loss else None
    )
    w_along = None if weight is None else _along(xp, weight, axis, x.ndim)
    return _Rows(
        axis,
        x.shape[axis],
        z,
        e,
        s,
        empty,
        xp.squeeze(empty, axis=axis),
        xp.squeeze(lse_rel, axis=axis),
        lse_abs,
        w_along,
    )


@dataclass(frozen=True)
class _Terms:
    """One target kind's loss: the per-entry loss, the denominator of its mean, and the
    pieces of its gradient ``coef * p - y_term`` (kept where ``keep``), z-loss included;
    ``y_term`` and ``keep`` are built only when the gradient is asked for (None otherwise)."""

    per: Array
    denominator: Array | float
    coef: Array
    y_term: Array | float | None = None
    keep: Array | None = None


def _index_terms(
    xp: Any,
    r: _Rows,
    target: Array,
    weight: Array | None,
    ignore_index: int,
    eps: float,
    z_loss: float,
    with_grad: bool,
) -> _Terms:
    """Class-index targets: the loss of :func:`index_loss` from the target's logit and the
    weighted sum of the logits; the gradient's one-hot term where asked for."""
    ignored, valid = target_masks(xp, target, r.n_classes, ignore_index)
    t_safe = xp.where(valid, xp.astype(target, index_dtype(xp, target), copy=False), 0)
    w_t = _class_weights(xp, weight, t_safe) * xp.ones_like(r.lse)
    z_t = _gather(xp, r.z, t_safe, r.axis)
    wz = None
    if eps:
        wz = xp.sum(r.z if r.w_along is None else r.w_along * r.z, axis=r.axis)
    w_total = float(r.n_classes) if weight is None else xp.sum(weight)
    per, coef = index_loss(
        xp, r.lse, r.lse_abs, r.empty_sq, z_t, wz, w_t, w_total, r.n_classes, eps, z_loss
    )
    per = xp.where(valid, per, xp.where(ignored, 0.0, xp.full_like(per, NAN)))
    denominator = xp.sum(xp.where(ignored, 0.0, w_t))
    if not with_grad:
        return _Terms(per, denominator, coef)
    onehot = _class_ids(xp, r.z, r.axis) == _unsqueeze(xp, t_safe, r.axis)
    y_term = xp.where(onehot, _unsqueeze(xp, w_t * (1.0 - eps), r.axis), 0.0)
    if eps:
        y_term = y_term + (eps / r.n_classes) * (1.0 if r.w_along is None else r.w_along)
    keep = _unsqueeze(xp, valid & ~r.empty_sq, r.axis)
    return _Terms(per, denominator, coef, y_term, keep)


def index_loss(
    xp: Any,
    lse: Array,
    lse_abs: Array | None,
    empty: Array,
    z_t: Array,
    wz: Array | None,
    w_t: Array,
    w_total: Array | float,
    n_classes: int,
    eps: float,
    z_loss: float,
) -> tuple[Array, Array]:
    """One entry's loss for class index ``t`` and the factor ``coef`` of ``p`` in its gradient:
    ``w_t * ((1 - eps) * (lse - z_t) + eps / C * (W lse - <w, z>))`` plus the z-loss
    ``z_loss * w_t * lse_abs**2``, from the scaled, shifted logits' ``lse`` (``lse_abs`` the
    true one), the target's logit ``z_t``, ``wz = <w, z>`` and ``W = w_total``, the sum of the
    class weights (both needed only with ``eps``); ``+inf`` on ``empty`` (all -inf) rows. The masks of ignored and invalid targets are the
    caller's."""
    nll = xp.where(empty, INF, lse - z_t)
    per = nll * w_t if eps == 0 else nll * ((1.0 - eps) * w_t)
    coef = w_t * (1.0 - eps)
    if eps:
        smooth = xp.where(empty, INF, w_total * lse - wz)
        per = per + (eps / n_classes) * smooth
        coef = coef + eps * w_total / n_classes
    if lse_abs is not None:
        per = per + xp.where(empty, INF, (z_loss * w_t) * (lse_abs * lse_abs))
        coef = coef + (2.0 * z_loss) * w_t * lse_abs
    return per, coef


def _probability_terms(xp: Any, r: _Rows, target: Array, eps: float, z_loss: float) -> _Terms:
    """Probability targets: ``-sum(w * y_eps * log p)`` with ``0 * log 0 = 0``, plus the z-loss
    of :func:`probability_z_loss`; the mean divides by the number of entries."""
    wy = smoothed_targets(xp, target, r.w_along, eps, r.n_classes, r.z.dtype)
    per = cross_terms(xp, r.z, r.lse, r.empty, wy, r.axis)
    coef = xp.sum(wy, axis=r.axis)
    if r.lse_abs is not None:
        # The entry's class weight: that of the classes it is labelled with.
        y = xp.astype(target, r.z.dtype, copy=False)
        w_entry = xp.ones_like(r.lse) if r.w_along is None else xp.sum(r.w_along * y, axis=r.axis)
        per, coef = probability_z_loss(xp, per, coef, w_entry, r.lse_abs, r.empty_sq, z_loss)
    return _Terms(per, _count(xp, per), coef, wy, ~r.empty)


def smoothed_targets(
    xp: Any, target: Array, w_along: Array | None, eps: float, n_classes: int, dtype: Any
) -> Array:
    """``w * y_eps``: the class weights times the targets smoothed towards uniform over the
    ``n_classes`` classes of the whole row."""
    y = xp.astype(target, dtype, copy=False)
    y_smooth = y if eps == 0 else y * (1.0 - eps) + eps / n_classes
    return y_smooth if w_along is None else w_along * y_smooth


def cross_terms(xp: Any, z: Array, lse: Array, empty: Array, wy: Array, axis: int) -> Array:
    """``-sum(wy * log p)`` along ``axis`` for ``log p = z - lse`` (-inf on ``empty`` rows,
    keepdims), with ``0 * log 0 = 0``."""
    logp = xp.where(empty, -INF, z - _unsqueeze(xp, lse, axis))
    # 0 * log 0 = 0 only where the log-probability is -inf; elsewhere the term stays a
    # product, so d loss / d target = -log p is right where the target is exactly 0.
    off = (logp == -INF) & (wy == 0)
    return -xp.sum(xp.where(off, 0.0, wy * xp.where(off, 0.0, logp)), axis=axis)


def probability_z_loss(
    xp: Any,
    per: Array,
    coef: Array,
    w_entry: Array,
    lse_abs: Array,
    empty: Array,
    z_loss: float,
) -> tuple[Array, Array]:
    """The z-loss ``z_loss * w_entry * lse_abs**2`` added to probability targets' ``per`` and
    ``coef``; an all -inf (``empty``) row gives +inf unless its weight is 0."""
    lse2 = xp.where(empty, 0.0, lse_abs * lse_abs)
    dead = xp.where(w_entry == 0, 0.0, xp.full_like(lse2, INF))  # an all -inf row
    # An entry of weight 0 adds 0, even where its logsumexp overflows or is NaN.
    lse2 = xp.where(xp.isfinite(lse2) | (w_entry != 0), lse2, 0.0)
    per = per + z_loss * xp.where(empty, dead, w_entry * lse2)
    return per, coef + (2.0 * z_loss) * w_entry * lse_abs


def _gradient(
    xp: Any, r: _Rows, terms: _Terms, temperature: Temperature, scale: Any, dtype: Any
) -> Array:
    """``d loss / d logits = scale / T * (coef * p - y_term)``, zero where not ``keep`` (empty
    rows, ignored entries): the numbers autodiff gives for the loss formulas above."""
    p = r.e / xp.where(r.empty, 1.0, r.s)
    grad = _unsqueeze(xp, terms.coef, r.axis) * p - terms.y_term
    grad = xp.where(terms.keep, grad, 0.0)
    grad = grad * (_inverse_temperature(xp, temperature) * scale)
    return xp.astype(grad, dtype, copy=False)


def _cross_entropy(
    xp: Any, logits: Array, target: Array, axis: int, o: CrossEntropySettings, with_grad: bool
) -> tuple[Array, Array | None]:
    out_dtype = result_dtype(xp, logits.dtype, reduction=True)
    x = xp.astype(logits, compute_dtype(xp, logits.dtype), copy=False)
    if any(n == 0 for n in x.shape):
        return _no_classes(
            xp, x, target, axis, o.ignore_index, o.reduction, out_dtype, logits.dtype, with_grad
        )
    if not xp.isdtype(target.dtype, "real floating"):
        # An ignored entry takes no part whatever its logits hold: zeros in their place keep
        # a NaN or inf there out of autodiff's gradient (0 * NaN through the masked loss).
        ignored, _ = target_masks(xp, target, x.shape[axis], o.ignore_index)
        x = xp.where(_unsqueeze(xp, ignored, axis), 0.0, x)
    r = _rows(xp, x, axis, o.temperature, o.weight, o.z_loss)
    if xp.isdtype(target.dtype, "real floating"):
        terms = _probability_terms(xp, r, target, o.label_smoothing, o.z_loss)
    else:
        terms = _index_terms(
            xp, r, target, o.weight, o.ignore_index, o.label_smoothing, o.z_loss, with_grad
        )
    loss, scale = reduce_loss(xp, terms.per, o.reduction, terms.denominator)
    loss = xp.astype(loss, out_dtype, copy=False)
    if not with_grad:
        return loss, None
    return loss, _gradient(xp, r, terms, o.temperature, scale, logits.dtype)


def _count(xp: Any, per: Array) -> Array | float:
    """The number of entries of ``per``: counted lazily where a size is unknown (Dask)."""
    if all(known(n) for n in per.shape):
        return float(math.prod(per.shape))
    return xp.sum(xp.ones_like(per))


def mean_over(xp: Any, total: Array | float, denominator: Array) -> Array:
    """``total / denominator``, and 0 where the denominator is 0.

    The contract's rule "a mean over nothing is 0" (every entry ignored or zero-weighted, an
    empty batch), with a zero gradient rather than NaN: every implementation applies it
    through this function. ``mean_over(xp, 1.0, d)`` is the factor a mean's gradient takes.
    """
    if isinstance(denominator, numbers.Real):
        # A host number (NumPy's eager fast path): decided on the host, where three array
        # operations would cost microseconds. x - x is a zero of the denominator's type.
        return denominator - denominator if denominator == 0 else total / denominator
    zero = denominator == 0
    return xp.where(zero, 0.0, total / xp.where(zero, 1.0, denominator))


def reduce_loss(
    xp: Any, per: Array, reduction: str, denominator: Array | float
) -> tuple[Array, Any]:
    """The reduced loss and d(reduced)/d(per-entry loss)."""
    if reduction == "none":
        return per, 1.0
    if reduction == "sum":
        return xp.sum(per), 1.0
    if isinstance(denominator, float):
        den = xp.asarray(denominator, dtype=per.dtype, device=_device(per))
    else:
        den = xp.astype(denominator, per.dtype, copy=False)
    return mean_over(xp, xp.sum(per), den), mean_over(xp, 1.0, den)


def _no_classes(
    xp: Any,
    x: Array,
    target: Array,
    axis: int,
    ignore_index: int,
    reduction: str,
    out_dtype: Any,
    grad_dtype: Any,
    with_grad: bool,
) -> tuple[Array, Array | None]:
    """Zero classes (every index is out of range, NaN, unless ignored; probabilities give 0)
    or zero entries."""
    shape = tuple(s for i, s in enumerate(x.shape) if i != axis)
    # x holds no entries, so its sum is exactly 0: adding it keeps the loss on the autodiff
    # graph (a zero gradient rather than "does not require grad").
    per = _zeros(xp, shape, x.dtype, x) + xp.sum(x)
    if not xp.isdtype(target.dtype, "real floating"):
        ignored, _ = target_masks(xp, target, x.shape[axis], ignore_index)
        per = xp.where(ignored, per, NAN)
        denominator: Array | float = xp.sum(per * 0.0)
    else:
        denominator = 0.0
    loss, _ = reduce_loss(xp, per, reduction, denominator)
    grad = xp.zeros(x.shape, dtype=grad_dtype, device=_device(x)) if with_grad else None
    return xp.astype(loss, out_dtype, copy=False), grad


def cross_entropy(
    xp: Any, logits: Array, target: Array, axis: int, options: CrossEntropySettings
) -> Array:
    """Generic cross-entropy; see :func:`xpsoftmax.cross_entropy`."""
    loss, _ = _cross_entropy(xp, logits, target, axis, options, with_grad=False)
    return loss


def cross_entropy_with_grad(
    xp: Any, logits: Array, target: Array, axis: int, options: CrossEntropySettings
) -> tuple[Array, Array]:
    """Generic cross-entropy and its gradient; see :func:`xpsoftmax.cross_entropy_with_grad`."""
    loss, grad = _cross_entropy(xp, logits, target, axis, options, with_grad=True)
    assert grad is not None
    return loss, grad
