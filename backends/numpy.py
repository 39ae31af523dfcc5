"""NumPy fast paths: the same arithmetic as the generic implementation, written with ``out=``
so that the output buffer is the only full-size array (log_softmax and logsumexp need one
scratch buffer more)."""

from __future__ import annotations

from typing import Any

import numpy as np

from xpsoftmax import _generic
from xpsoftmax._checks import Temperature
from xpsoftmax._registry import Call, register

_FLOATS = ("float16", "float32", "float64")


def device_kind(x: Any) -> str:
    return "cpu"


def values_visible(x: Any) -> bool:
    return True


def _compute(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _plain_temperature(call: Call) -> bool:
    return call.opt("temperature") in ("one", "positive")


def _normalization_ok(call: Call) -> bool:
    return call.axes != () and not call.opt("where") and _plain_temperature(call)


def _shifted(x: np.ndarray, axes: tuple[int, ...], t: Temperature, cdt: np.dtype) -> np.ndarray:
    """A new buffer holding ``(x - max) / T``; an empty event is shifted by 0."""
    m = np.max(x, axis=axes, keepdims=True).astype(cdt, copy=False)
    m[m == -np.inf] = 0
    out = np.subtract(x, m, dtype=cdt)
    if t.kind == "positive":
        np.divide(out, t.value, out=out)
    return out


def _empty(x: np.ndarray, axes: tuple[int, ...]) -> bool:
    return any(x.shape[a] == 0 for a in axes)


@register(
    "softmax",
    "numpy",
    "numpy.inplace",
    supports=_normalization_ok,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    if _empty(x, axes):
        return np.zeros(x.shape, dtype=x.dtype)
    out = _shifted(x, axes, temperature, _compute(x.dtype))
    np.exp(out, out=out)
    s = np.sum(out, axis=axes, keepdims=True)
    s[s == 0] = 1
    np.divide(out, s, out=out)
    return out.astype(x.dtype, copy=False)


@register(
    "log_softmax",
    "numpy",
    "numpy.inplace",
    supports=_normalization_ok,
    dtypes=_FLOATS,
    description="where=None, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    if _empty(x, axes):
        return np.zeros(x.shape, dtype=x.dtype)
    out = _shifted(x, axes, temperature, _compute(x.dtype))
    s = np.sum(np.exp(out), axis=axes, keepdims=True)
    s[s == 0] = 1  # an empty event is -inf already: -inf - log 1
    np.subtract(out, np.log(s), out=out)
    return out.astype(x.dtype, copy=False)


@register(
    "logsumexp",
    "numpy",
    "numpy.inplace",
    supports=lambda c: c.axes != () and not (c.opt("b") or c.opt("return_sign") or c.opt("where")),
    dtypes=_FLOATS,
    description="b=None, where=None, return_sign=False",
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
    cdt = _compute(x.dtype)
    if _empty(x, axes):
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        out = np.full(shape, -np.inf, dtype=cdt)
        return out if keepdims else np.squeeze(out, axis=axes)
    m = np.max(x, axis=axes, keepdims=True).astype(cdt, copy=False)
    m[~np.isfinite(m)] = 0
    buf = np.subtract(x, m, dtype=cdt)
    np.exp(buf, out=buf)
    s = np.sum(buf, axis=axes, keepdims=True)
    del buf
    out = np.log(s)
    out += m
    return out if keepdims else np.squeeze(out, axis=axes)


def _ce_ok(call: Call) -> bool:
    return (
        call.opt("target") == "index" and call.axes == (call.ndim - 1,) and _plain_temperature(call)
    )


def _fused_cross_entropy(
    x: np.ndarray,
    target: np.ndarray,
    *,
    weight: Any,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    temperature: Temperature,
    z_loss: float,
    with_grad: bool,
) -> tuple[Any, Any]:
    """Index targets along the last axis: one buffer that holds the logits' exponentials and
    then, in place, the gradient."""
    cdt = _compute(x.dtype)
    n_classes = x.shape[-1]
    a = x.reshape(-1, n_classes)
    n = a.shape[0]
    eps = label_smoothing
    t = target.reshape(-1).astype(np.intp, copy=False)
    ignored = t == ignore_index
    valid = ~ignored & (t >= 0) & (t < n_classes)
    t_safe = np.where(valid, t, 0)
    rows = np.arange(n)
    w_t = np.ones(n, dtype=cdt) if weight is None else weight[t_safe]

    m = np.max(a, axis=1, keepdims=True).astype(cdt, copy=False)
    m[m == -np.inf] = 0
    buf = np.subtract(a, m, dtype=cdt)
    if temperature.kind == "positive":
        np.divide(buf, temperature.value, out=buf)
    z_t = buf[rows, t_safe]
    if eps:
        sum_wz = buf.sum(axis=1) if weight is None else (buf * weight).sum(axis=1)
    np.exp(buf, out=buf)
    s = buf.sum(axis=1, keepdims=True)
    empty = s[:, 0] == 0
    lse_rel = np.log(np.where(empty, 1.0, s[:, 0]))
    shift = m[:, 0]
    per = np.where(empty, np.inf, lse_rel - z_t) * (w_t * (1.0 - eps))
    if eps:
        w_total = float(n_classes) if weight is None else weight.sum()
        per += (eps / n_classes) * np.where(empty, np.inf, w_total * lse_rel - sum_wz)
    lse_abs = None
    if z_loss:
        scaled = shift / temperature.value if temperature.kind == "positive" else shift
        lse_abs = scaled + lse_rel
        per = per + np.where(empty, np.inf, (z_loss * w_t) * lse_abs * lse_abs)
    per = np.where(valid, per, np.where(ignored, 0.0, np.nan)).astype(cdt, copy=False)

    if reduction == "none":
        loss, scale = per.reshape(target.shape), 1.0
    elif reduction == "sum":
        loss, scale = np.sum(per, dtype=cdt), 1.0
    else:
        den = np.sum(np.where(ignored, 0.0, w_t), dtype=cdt)
        loss = cdt.type(0.0) if den == 0 else np.sum(per, dtype=cdt) / den
        scale = 0.0 if den == 0 else 1.0 / den
    loss = np.asarray(loss, dtype=cdt)
    if not with_grad:
        return loss, None

    inv_t = 1.0 / temperature.value if temperature.kind == "positive" else 1.0
    k = scale * inv_t
    coef = w_t * (1.0 - eps)
    if eps:
        coef = coef + eps * w_total / n_classes
    if lse_abs is not None:
        coef = coef + 2.0 * z_loss * w_t * lse_abs
    keep = valid & ~empty
    # buf holds e; grad = k * (coef * e / s - y_term)
    row_factor = np.where(keep, coef * k / s[:, 0], 0.0)
    np.multiply(buf, row_factor[:, None], out=buf)
    hit = rows[keep]
    buf[hit, t_safe[keep]] -= (k * (1.0 - eps) * w_t)[keep]
    if eps:
        smooth = np.where(keep, k * eps / n_classes, 0.0)[:, None]
        if weight is None:
            buf -= smooth
        else:
            buf -= smooth * weight
    return loss, buf.reshape(x.shape).astype(x.dtype, copy=False)


@register(
    "cross_entropy",
    "numpy",
    "numpy.fused",
    supports=_ce_ok,
    dtypes=_FLOATS,
    description="class indices on the last axis, scalar temperature > 0",
)
def cross_entropy(xp: Any, logits: Any, target: Any, axis: int, **options: Any) -> Any:
    if logits.size == 0:  # nothing to fuse
        return _generic.cross_entropy(xp, logits, target, axis, **options)
    return _fused_cross_entropy(logits, target, with_grad=False, **options)[0]


@register(
    "cross_entropy_with_grad",
    "numpy",
    "numpy.fused",
    supports=_ce_ok,
    dtypes=_FLOATS,
    description="class indices on the last axis, scalar temperature > 0",
)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, **options: Any
) -> tuple[Any, Any]:
    if logits.size == 0:
        return _generic.cross_entropy_with_grad(xp, logits, target, axis, **options)
    return _fused_cross_entropy(logits, target, with_grad=True, **options)
