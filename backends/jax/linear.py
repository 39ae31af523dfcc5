"""JAX fast path of the linear cross-entropy: the chunked computation of ``xpsoftmax._linear``
with a ``jax.custom_vjp`` rule, so that reverse-mode autodiff keeps no logits.

For a reduced loss (mean, sum) the forward pass computes ``dh``, ``dW``, ``db`` with the loss
(its one pass over the logits) and keeps them as the residuals; the backward pass scales them
by the cotangent. For ``reduction="none"`` the cotangent weighs each row: the residuals are
the inputs and the backward pass computes the gradients then. The chunks are a Python loop
over static row ranges, which ``jit`` unrolls into one program (XLA reuses each chunk's
buffers for the next). Reverse mode only (``custom_vjp``): ``jax.jvp`` through it raises.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from xpsoftmax import _linear
from xpsoftmax._checks import CrossEntropySettings
from xpsoftmax._registry import Call, Chunks, register

_FLOATS = ("float16", "bfloat16", "float32", "float64")


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _lce(
    h: Any, w: Any, b: Any, target: Any, axis: int, o: CrossEntropySettings, chunks: Chunks
) -> Any:
    return _linear.parts(jnp, h, w, b, target, axis, o, chunks, grads=False).loss


def _lce_fwd(
    h: Any, w: Any, b: Any, target: Any, axis: int, o: CrossEntropySettings, chunks: Chunks
) -> tuple[Any, Any]:
    if o.reduction == "none":
        loss = _linear.parts(jnp, h, w, b, target, axis, o, chunks, grads=False).loss
        return loss, (h, w, b, target)
    p = _linear.parts(jnp, h, w, b, target, axis, o, chunks, grads=True)
    return p.loss, (p.dh, p.dw, p.db, target)


def _lce_bwd(
    axis: int, o: CrossEntropySettings, chunks: Chunks, res: Any, g: Any
) -> tuple[Any, ...]:
    if o.reduction == "none":
        h, w, b, target = res
        p = _linear.parts(jnp, h, w, b, target, axis, o, chunks, grads=True, cotangent=g)
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
