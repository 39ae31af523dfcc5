"""Reference implementations in extended precision (NumPy longdouble), written independently
of xpsoftmax, straight from the definitions, for the value tests."""

from __future__ import annotations

import numpy as np

LD = np.longdouble


def _axes(x: np.ndarray, axis: object) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % max(x.ndim, 1) for a in items)) if x.ndim else ()


def softmax(x: np.ndarray, axis: object = -1, temperature: float = 1.0, where=None) -> np.ndarray:
    x = np.asarray(x, dtype=LD)
    axes = _axes(x, axis)
    if where is None:
        where = np.ones(x.shape, dtype=bool)
    where = np.broadcast_to(where, x.shape)
    out = np.zeros(x.shape, dtype=LD)
    for idx in _slices(x.shape, axes):
        xs, ws = x[idx], where[idx]
        out[idx] = _softmax_slice(xs, ws, temperature)
    return out.astype(np.float64)


def _softmax_slice(xs: np.ndarray, ws: np.ndarray, t: float) -> np.ndarray:
    res = np.zeros(xs.shape, dtype=LD)
    part = xs[ws]
    if part.size == 0 or np.all(part == -np.inf):
        return res
    if np.any(np.isnan(part)) or np.any(part == np.inf):
        return np.full(xs.shape, np.nan, dtype=LD)
    if t == 0:
        hit = ws & (xs == part.max())
        res[hit] = LD(1) / hit.sum()
        return res
    if np.isinf(t):
        hit = ws & np.isfinite(xs)
        res[hit] = LD(1) / hit.sum()
        return res
    z = (xs - part.max()) / LD(t)
    e = np.where(ws, np.exp(z), LD(0))
    return e / e.sum()


def log_softmax(x, axis=-1, temperature=1.0, where=None):
    x = np.asarray(x, dtype=LD)
    axes = _axes(x, axis)
    w = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
    out = np.zeros(x.shape, dtype=LD)
    with np.errstate(divide="ignore", invalid="ignore"):
        for idx in _slices(x.shape, axes):
            xs, ws = x[idx], w[idx]
            part = xs[ws]
            if temperature == 0 or np.isinf(temperature) or part.size == 0:
                out[idx] = np.log(_softmax_slice(xs, ws, temperature))
            elif np.any(np.isnan(part)) or np.any(part == np.inf):
                out[idx] = np.nan
            elif np.all(part == -np.inf):
                out[idx] = -np.inf
            else:
                z = (xs - part.max()) / LD(temperature)
                lse = np.log(np.sum(np.exp(z[ws])))
                out[idx] = np.where(ws, z - lse, -np.inf)
    return out.astype(np.float64)


def logsumexp(x, axis=None, keepdims=False, b=None):
    """log(sum(b * exp(x))) in extended precision; NaN for a negative sum."""
    x = np.asarray(x, dtype=LD)
    axes = _axes(x, axis)
    if x.size == 0:  # an empty sum is 0, its log -inf (and no slice at all: an empty result)
        kept = [1 if i in axes else n for i, n in enumerate(x.shape)]
        shape = kept if keepdims else [n for i, n in enumerate(x.shape) if i not in axes]
        return np.full(shape, -np.inf)
    if b is None:
        b = np.ones(x.shape, dtype=LD)
    b = np.broadcast_to(np.asarray(b, dtype=LD), x.shape)
    part = b != 0
    xm = np.where(part, x, -np.inf)
    m = np.max(xm, axis=axes, keepdims=True) if axes and x.size else xm
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(all="ignore"):
        s = np.sum(np.where(part, b * np.exp(xm - m), 0), axis=axes, keepdims=True)
        out = np.log(s) + m
    if not keepdims and axes:
        out = np.squeeze(out, axis=axes)
    return out.astype(np.float64)


def _slices(shape: tuple[int, ...], axes: tuple[int, ...]):
    """Index tuples selecting each slice along ``axes``."""
    rest = [i for i in range(len(shape)) if i not in axes]
    for pos in np.ndindex(*[shape[i] for i in rest]):
        idx: list[object] = [slice(None)] * len(shape)
        for i, p in zip(rest, pos):
            idx[i] = p
        yield tuple(idx)
