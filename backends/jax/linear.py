"""JAX fast path of the linear cross-entropy: the chunked computation of ``xpsoftmax._linear``
with a ``jax.custom_vjp`` rule, so that reverse-mode autodiff keeps no logits.

For a reduced loss (mean, sum) the forward pass computes ``dh``, ``dW``, ``db`` with the loss
(its one pass over the logits) and keeps them as the residuals; the backward pass scales them
by the cotangent. For ``reduction="none"`` the cotangent weighs each row: the residuals are
the inputs and the backward pass computes the gradients then. The chunks run in a
``lax.scan`` (the rows that do not fill a last chunk after it), so that XLA keeps one chunk's
buffers alive at a time: a Python loop, which ``jit`` unrolls, let XLA schedule every chunk's
logits at once (3.8x the logits' memory, measured). Eager calls take that loop (see
:func:`_parts`). Reverse mode only (``custom_vjp``): ``jax.jvp`` through it raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from xpsoftmax import _linear
from xpsoftmax._checks import CrossEntropySettings
from xpsoftmax._registry import Call, Chunks, register

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _scan_chunks(
    xp: Any,
    chunk: Callable[[Any, Any, Any], Any],
    h2: Any,
    t2: Any,
    c2: Any,
    step: int,
) -> _linear.RowChunk:
    """:func:`xpsoftmax._linear.each_chunk` as a ``lax.scan`` over the full chunks, the
    remaining rows after it."""
    n, hidden = h2.shape
    full = n // step * step
    if full < 2 * step:  # one chunk (or none) to scan: the plain loop
        return _linear.each_chunk(xp, chunk, h2, t2, c2, step)

    def split(a: Any) -> Any:
        return a[:full].reshape(full // step, step, *a.shape[1:])

    def body(carry: Any, xs: Any) -> tuple[Any, Any]:
        c = chunk(*xs)
        if c.dh is None:
            return carry, (c.per, None)
        dw, db = carry
        return (dw + c.dw, None if db is None else db + c.db), (c.per, c.dh)

    # The first chunk outside the scan: its dW and db start the sums (shapes and dtypes as
    # the chunks make them).
    first = chunk(h2[:step], t2[:step], None if c2 is None else c2[:step])
    carry: Any = None if first.dh is None else (first.dw, first.db)
    hs, ts, cs = (None if a is None else split(a)[1:] for a in (h2, t2, c2))
    carry, (pers, dhs) = jax.lax.scan(body, carry, (hs, ts, cs))
    per = jnp.concatenate([first.per, pers.reshape(-1)])
    if dhs is None:
        every = _linear.RowChunk(per)
    else:
        dh: Any = jnp.concatenate([first.dh, dhs.reshape(-1, hidden)])
        every = _linear.RowChunk(per, dh, *carry)
    if full == n:
        return every
    tail = chunk(h2[full:], t2[full:], None if c2 is None else c2[full:])
    per = jnp.concatenate([every.per, tail.per])
    if every.dh is None:
        return _linear.RowChunk(per)
    db = None if tail.db is None else every.db + tail.db
    return _linear.RowChunk(per, jnp.concatenate([dh, tail.dh]), every.dw + tail.dw, db)


def _traced(h: Any, w: Any, b: Any, target: Any, o: CrossEntropySettings) -> bool:
    """Whether any array of the call is a tracer (jit, grad, vmap...)."""
    arrays = (h, w, b, target, o.weight, o.temperature.value)
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def _parts(
    h: Any, w: Any, b: Any, target: Any, axis: int, o: CrossEntropySettings, *args: Any, **kw: Any
) -> _linear.Parts:
    """``_linear.parts`` with the chunks in a ``lax.scan`` where the call is traced. An eager
    call takes the plain loop: its operations run one by one, one chunk's logits alive at a
    time, while a scan would compile a program on every call (its body closes over the
    call's arrays: about a second per call on a 2-core CPU, the kit's grid 140-180 s per
    dtype). The two sum the chunks in the same order."""
    loop = _scan_chunks if _traced(h, w, b, target, o) else _linear.each_chunk
    return _linear.parts(jnp, h, w, b, target, axis, o, *args, loop=loop, **kw)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _lce(
    h: Any, w: Any, b: Any, target: Any, axis: int, o: CrossEntropySettings, chunks: Chunks
) -> Any:
    return _parts(h, w, b, target, axis, o, chunks, grads=False).loss


def _lce_fwd(
    h: Any, w: Any, b: Any, target: Any, axis: int, o: CrossEntropySettings, chunks: Chunks
) -> tuple[Any, Any]:
    if o.reduction == "none":
        loss = _parts(h, w, b, target, axis, o, chunks, grads=False).loss
        return loss, (h, w, b, target)
    p = _parts(h, w, b, target, axis, o, chunks, grads=True)
    return p.loss, (p.dh, p.dw, p.db, target)


def _lce_bwd(
    axis: int, o: CrossEntropySettings, chunks: Chunks, res: Any, g: Any
) -> tuple[Any, ...]:
    if o.reduction == "none":
        h, w, b, target = res
        p = _parts(h, w, b, target, axis, o, chunks, grads=True, cotangent=g)
        dh, dw, db = p.dh, p.dw, p.db
    else:
        dh, dw, db, target = res
        dh, dw = dh * g.astype(dh.dtype), dw * g.astype(dw.dtype)
        db = None if db is None else db * g.astype(db.dtype)
    # Integer class indices have no cotangent (float0, as JAX requires of integer inputs).
    zero_t = jnp.zeros(target.shape, dtype=jax.dtypes.float0)
    return dh, dw, db, zero_t


_lce.defvjp(_lce_fwd, _lce_bwd)


def _ok(call: Call) -> bool:
    # Class weights and probability targets could be differentiated too, which this rule does
    # not cover: those calls take autodiff through the generic chunks.
    return call.opt("target") == "index" and not call.opt("weight")


@register(
    "linear_cross_entropy",
    "jax",
    "jax.linear_vjp",
    priority=50,
    supports=_ok,
    devices=("cpu", "gpu", "tpu"),
    dtypes=_FLOATS,
    description="class indices, weight=None; a custom_vjp over chunks (no logits kept)",
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
    return _lce(h, linear_weight, bias, target, axis, replace(options, weight=None), chunk_size)


@register(
    "linear_cross_entropy_with_grad",
    "jax",
    "jax.linear_scan",
    priority=50,
    supports=lambda call: True,
    devices=("cpu", "gpu", "tpu"),
    dtypes=_FLOATS,
    description="every option; the chunks in a lax.scan (one chunk of logits alive)",
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
    p = _parts(h, linear_weight, bias, target, axis, options, chunk_size, grads=True)
    return p.loss, p.dh, p.dw, p.db
