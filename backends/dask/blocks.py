"""Dask fast paths where every slice lies in one chunk: one task per chunk.

When each axis an operation reduces is held in one chunk (logits chunked by rows, the usual
case), every slice is computed where it lies: a chunk is one task, which runs the NumPy
implementation the registry picks for it (NumPy's fast paths where they apply, on the task's
own thread: Dask runs the chunks in parallel). The further arrays (``where``, ``b``, an array
temperature, targets, class weights) travel chunk by chunk beside it, chunked like it.

The cross-entropy's tasks return each entry's loss and, for the gradient, ``d sum / d logits``
in the computation dtype; the reduction (a tree sum of the losses, and of the mean's
denominator) and the mean's factor on the gradient follow, since they need every chunk. Each
chunk of logits is read by one task per ``compute``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import dask.array as da
import numpy as np

from xpsoftmax import _api, _generic
from xpsoftmax._checks import (
    CrossEntropySettings,
    Temperature,
    compute_dtype,
    index_dtype,
    namespace,
    target_masks,
)
from xpsoftmax._registry import (
    Call,
    CrossEntropyOptions,
    LogsumexpOptions,
    NormalizationOptions,
    register,
)
from xpsoftmax._threads import in_caller_thread

#: NumPy's floating dtypes (NumPy has no bfloat16).
FLOATS = ("float16", "float32", "float64")


def whole_slices(call: Call) -> bool:
    """Each reduced axis in one chunk, and every size known and nonzero (the generic path
    answers empty inputs without arithmetic)."""
    return call.whole_slices and all(n > 0 for n in call.shape)


def _run_numpy(
    op: str,
    generic: Any,
    x: np.ndarray,
    axes: tuple[int, ...],
    options: Any,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``op`` on a NumPy block along ``axes`` through the registry (its fast path or
    ``generic``, given ``x`` and then ``args``), on the calling thread."""
    xp = namespace(x=x)
    plan = _api._plan(_api._call(op, xp, x, axes, options), generic, xp, x, *args, **kwargs)
    with in_caller_thread():
        return plan.run()


def _like_x(a: Any, x: Any, shape: tuple[int, ...]) -> Any:
    """``a`` broadcast to ``shape`` (``x``'s, or its kept shape) with ``x``'s chunks, so that
    no rechunking splits a slice across chunks."""
    chunks = tuple(c if n == x.shape[i] else (n,) for i, (c, n) in enumerate(zip(x.chunks, shape)))
    a = da.asarray(a)
    lead = len(shape) - a.ndim
    own = tuple(chunks[lead + i] if n == shape[lead + i] else (n,) for i, n in enumerate(a.shape))
    return da.broadcast_to(a.rechunk(own), shape, chunks=chunks)


def _kept(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


# --- softmax, log_softmax ---------------------------------------------------------------------


def _normalize_block(
    x: np.ndarray,
    *extra: np.ndarray,
    op: str,
    axes: tuple[int, ...],
    kind: str,
    value: Any,
    where: bool,
) -> np.ndarray:
    rest = list(extra)
    mask = rest.pop(0) if where else None
    t = Temperature(kind, rest.pop(0) if kind == "array" else value)
    options = NormalizationOptions(kind, where)
    return _run_numpy(op, getattr(_generic, op), x, axes, options, axes, temperature=t, where=mask)


def _normalize(op: str, x: Any, axes: tuple[int, ...], t: Temperature, where: Any) -> Any:
    extra = []
    if where is not None:
        extra.append(_like_x(where, x, x.shape))
    if t.kind == "array":
        extra.append(_like_x(t.value, x, _kept(x.shape, axes)))
    value = None if t.kind == "array" else t.value
    block = functools.partial(
        _normalize_block, op=op, axes=axes, kind=t.kind, value=value, where=where is not None
    )
    return da.map_blocks(block, x, *extra, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))


_NORMALIZATION = "any where and temperature; reduced axes each in one chunk"


@register(
    "softmax",
    "dask",
    "dask.blocks",
    priority=50,
    supports=whole_slices,
    dtypes=FLOATS,
    description=_NORMALIZATION,
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize("softmax", x, axes, temperature, where)


@register(
    "log_softmax",
    "dask",
    "dask.blocks",
    priority=50,
    supports=whole_slices,
    dtypes=FLOATS,
    description=_NORMALIZATION,
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize("log_softmax", x, axes, temperature, where)


# --- logsumexp ------------------------------------------------------------------------------


def _logsumexp_block(
    x: np.ndarray, *extra: np.ndarray, axes: tuple[int, ...], keepdims: bool, b: bool, where: bool
) -> np.ndarray:
    rest = list(extra)
    weights = rest.pop(0) if b else None
    mask = rest.pop(0) if where else None
    options = LogsumexpOptions(keepdims, b, False, where)
    return _run_numpy(
        "logsumexp",
        _generic.logsumexp,
        x,
        axes,
        options,
        axes,
        keepdims=keepdims,
        b=weights,
        return_sign=False,
        where=mask,
    )


@register(
    "logsumexp",
    "dask",
    "dask.blocks",
    priority=50,
    supports=lambda c: whole_slices(c) and c.axes != () and not c.opt("return_sign"),
    dtypes=FLOATS,
    description="any b and where, return_sign=False; reduced axes each in one chunk",
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
    extra = [_like_x(a, x, x.shape) for a in (b, where) if a is not None]
    block = functools.partial(
        _logsumexp_block, axes=axes, keepdims=keepdims, b=b is not None, where=where is not None
    )
    out = compute_dtype(np, x.dtype)
    meta = np.empty((0,) * (x.ndim - (0 if keepdims else len(axes))), out)
    if keepdims:
        chunks = tuple((1,) if i in axes else c for i, c in enumerate(x.chunks))
        return da.map_blocks(block, x, *extra, chunks=chunks, dtype=out, meta=meta)
    return da.map_blocks(block, x, *extra, drop_axis=axes, dtype=out, meta=meta)


# --- cross-entropy ----------------------------------------------------------------------------


def _index_denominator(
    target: np.ndarray, *weight: np.ndarray, s: CrossEntropySettings, n: int, cdt: Any
) -> np.ndarray:
    """A chunk's share of the mean's denominator: the class weights (1 without weights) of
    its entries that are not ignored, as the generic ``_index_terms`` counts them."""
    w = weight[0] if weight else None
    ignored, valid = target_masks(np, target, n, s.ignore_index)
    t_safe = np.where(valid, target.astype(index_dtype(np, target), copy=False), 0)
    w_t = np.ones(target.shape, cdt) if w is None else w[t_safe].astype(cdt)
    total = np.sum(np.where(ignored, 0.0, w_t), dtype=cdt)
    return np.reshape(total, (1,) * target.ndim)


def mean_denominator(target: Any, s: CrossEntropySettings, n: int, cdt: Any) -> Any:
    """The denominator of the mean of class-index losses, from the targets alone (a 0-d
    array): known before any chunk of logits is read, so that each chunk's task can finish
    its gradient (the mean's factor included) and let it go."""
    w = [] if s.weight is None else [s.weight.rechunk(-1)]
    target = target if target.ndim else target[None]  # one row: map_blocks needs an axis
    block = functools.partial(
        _index_denominator, s=dataclasses.replace(s, weight=None), n=n, cdt=cdt
    )
    one = tuple((1,) * len(c) for c in target.chunks)
    shares = da.map_blocks(
        block, target, *w, chunks=one, dtype=cdt, meta=np.empty((0,) * target.ndim, cdt)
    )
    return shares.sum()


def _ce_block(
    x: np.ndarray,
    target: np.ndarray,
    *rest: np.ndarray,
    settings: CrossEntropySettings,
    index: bool,
    grad: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One chunk of rows (classes on the last axis): the entries' losses and, with ``grad``,
    the gradient of the reduced loss (``rest`` ends with the mean's factor, a 0-d array)."""
    w = rest[0] if len(rest) == 1 + grad else None
    s = dataclasses.replace(settings, weight=w, reduction="none")
    cdt = compute_dtype(np, x.dtype)
    xc = x.astype(cdt, copy=False)  # the gradient in the computation dtype: scaled below
    op = "cross_entropy_with_grad" if grad else "cross_entropy"
    options = CrossEntropyOptions(
        "index" if index else "probs",
        w is not None,
        "none",
        s.label_smoothing != 0,
        s.z_loss != 0,
        s.temperature.kind,
    )
    out = _run_numpy(op, getattr(_generic, op), xc, (xc.ndim - 1,), options, target, xc.ndim - 1, s)
    if not grad:
        return out
    per, g = out
    return per, (g * rest[-1]).astype(x.dtype, copy=False)


def _cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, s: CrossEntropySettings, grad: bool
) -> Any:
    index = not np.issubdtype(target.dtype, np.floating)
    cdt = compute_dtype(np, logits.dtype)
    n = logits.shape[axis]
    if s.reduction != "mean":
        denominator: Any = 0.0
        factor: Any = np.asarray(1.0, cdt)
    else:
        if index:
            denominator = mean_denominator(target, s, n, cdt)
        else:  # probabilities: the mean over the entries, counted statically
            denominator = float(np.prod(logits.shape) / n)
        factor = _generic.mean_over(xp, 1.0, xp.asarray(denominator, dtype=cdt))
    args = [logits, target] + ([s.weight.rechunk(-1)] if s.weight is not None else [])
    ins = ["(c)", "()" if index else "(c)"] + (["(c)"] if s.weight is not None else [])
    axes = [(axis,), () if index else (axis,)] + ([(0,)] if s.weight is not None else [])
    outs, dtypes = ["()"], [cdt]
    out_axes: list[tuple[int, ...]] = [()]
    if grad:
        args.append(factor)
        ins.append("()")
        axes.append(())
        outs.append("(c)")
        out_axes.append((axis,))
        dtypes.append(logits.dtype)
    block = functools.partial(
        _ce_block, settings=dataclasses.replace(s, weight=None), index=index, grad=grad
    )
    results = da.apply_gufunc(
        block,
        ",".join(ins) + "->" + ",".join(outs),
        *args,
        axes=axes + out_axes,
        output_dtypes=dtypes,
        allow_rechunk=False,
    )
    per, g = results if grad else (results, None)
    loss, _ = _generic.reduce_loss(xp, per, s.reduction, denominator)
    return (loss, g) if grad else loss


def _ce_supports(call: Call) -> bool:
    return whole_slices(call) and call.opt("temperature") != "array"


_CE = "scalar temperature; the class axis in one chunk"


@register(
    "cross_entropy",
    "dask",
    "dask.blocks",
    priority=50,
    supports=_ce_supports,
    dtypes=FLOATS,
    description=_CE,
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    return _cross_entropy(xp, logits, target, axis, options, grad=False)


@register(
    "cross_entropy_with_grad",
    "dask",
    "dask.blocks",
    priority=50,
    supports=_ce_supports,
    dtypes=FLOATS,
    description=_CE,
)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    return _cross_entropy(xp, logits, target, axis, options, grad=True)
