"""The Pallas kernels (Triton backend) and their derivative rules.

One program per row of a row-major ``(rows, n)`` view, as the Triton kernels for torch
(``xpsoftmax.backends.torch.triton.kernels``, whose module docstring gives the rules): a row
of at most :data:`CHUNK` entries is read once and kept on chip; a longer one is read in chunks
with the row's running maximum and per-lane ``K`` (entries at the maximum) and ``R`` (the
others' ``exp(z)``), then read again to write the result. The temperature divides
by ``1 / t`` in two exact steps when that is subnormal (:func:`scaled`): XLA on CPU, which
runs the kernels under ``interpret=True``, flushes subnormals to zero, and turns a division
by a constant into a multiplication by its reciprocal.

The derivative rules are ``jax.custom_jvp`` tangents computed from the kernels' outputs with
``jax.numpy`` (XLA fuses them): softmax ``p * (dz - <p, dz>)``, log_softmax
``dz - <exp(y), dz>`` (zero on an all -inf row), logsumexp ``<exp(x - lse), dx>``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from xpsoftmax._generic import BIG_T
from xpsoftmax.backends.jax.pallas import interpreting

#: Rows of at most this many entries are read once; longer ones in chunks of this size.
CHUNK = 4096
NINF = -math.inf


def scaled(d: Any, t: float) -> Any:
    """``d / t`` as ``d * (1 / t)``, in two exact steps where ``1 / t`` is subnormal; the
    first held from XLA's constant folding when interpreted (``rules._times``; Triton on the
    GPU neither folds nor flushes, and has no lowering for the barrier)."""
    if t == 1.0:
        return d
    if 1.0 / t >= 1 / BIG_T:
        return d * (1.0 / t)
    first = d * (1 / BIG_T)
    if interpreting():
        first = jax.lax.optimization_barrier(first)
    return first * (BIG_T / t)


def _block(n: int) -> int:
    return min(pl.next_power_of_2(max(n, 1)), CHUNK)


def _index(i: Any) -> Any:
    """An index as the ref wants it: int32 (JAX's 64-bit mode makes Python ints int64)."""
    return jnp.asarray(i, jnp.int32)


def _load(x_ref: Any, row: Any, start: Any, block: int, n: int) -> Any:
    row, start = _index(row), _index(start)
    cols = start + jnp.arange(block, dtype=jnp.int32)
    x = plt.load(x_ref.at[row, pl.ds(start, block)], mask=cols < n, other=NINF)
    return x.astype(jnp.float32)


def _stats(x_ref: Any, row: Any, n: int, block: int, t: float) -> tuple[Any, Any, Any]:
    """``(shift, K, R)`` of the row, read in chunks."""

    def step(i: Any, carry: Any) -> Any:
        m, k, r = carry
        x = _load(x_ref, row, i * block, block, n)
        new = jnp.maximum(m, jnp.max(x))
        grow = new > m
        # The ones counted at the old maximum join the rest, rescaled (exp(-inf) = 0 also drops
        # what an all -inf start counted).
        r = jnp.where(grow, (r + k) * jnp.exp(scaled(m - new, t)), r)
        k = jnp.where(grow, 0.0, k)
        m = jnp.where(grow, new, m)
        shift = jnp.where(m == NINF, 0.0, m)
        top = x == m
        r = r + jnp.where(top, 0.0, jnp.exp(scaled(x - shift, t)))
        return m, k + top.astype(jnp.float32), r  # not where(top, 1.0, 0.0): float64 in 64-bit mode

    zeros = jnp.zeros(block, jnp.float32)
    m, k, r = jax.lax.fori_loop(0, pl.cdiv(n, block), step, (jnp.float32(NINF), zeros, zeros))
    shift = jnp.where(m == NINF, 0.0, m)
    return shift, jnp.where(m == NINF, 0.0, jnp.sum(k)), jnp.sum(r)


def _block_stats(x: Any, t: float) -> tuple[Any, Any, Any]:
    big = jnp.max(x)
    shift = jnp.where(big == NINF, 0.0, big)
    top = x == big
    count = jnp.where(big == NINF, 0.0, jnp.sum(top.astype(jnp.float32)))
    return shift, count, jnp.sum(jnp.where(top, 0.0, jnp.exp(scaled(x - shift, t))))


def _log_total(count: Any, rest: Any) -> Any:
    """``log(K + R)``, accurate near 0 (``log1p``); 0 for an empty row."""
    return jnp.log1p(jnp.where(count > 0, count - 1.0, 0.0) + rest)


def _finish(z: Any, shift: Any, count: Any, rest: Any, log: bool) -> Any:
    """softmax / log_softmax of the row's ``z``; the special rows settled in one scalar: an
    all -inf row gives 0 / -inf, a +inf maximum NaN."""
    empty = count + rest == 0.0
    inf_max = shift == math.inf
    if log:
        offset = jnp.where(empty, math.inf, _log_total(count, rest))
        return z - jnp.where(inf_max, math.nan, offset)
    scale = jnp.where(empty, 0.0, 1.0 / jnp.where(empty, 1.0, count + rest))
    return jnp.exp(z) * jnp.where(inf_max, math.nan, scale)


def _normalize_kernel(x_ref: Any, y_ref: Any, *, n: int, t: float, log: bool) -> None:
    row = pl.program_id(0)
    block = _block(n)
    if n <= CHUNK:
        x = _load(x_ref, row, 0, block, n)
        shift, count, rest = _block_stats(x, t)
        y = _finish(scaled(x - shift, t), shift, count, rest, log)
        mask = jnp.arange(block, dtype=jnp.int32) < n
        plt.store(y_ref.at[_index(row), pl.ds(_index(0), block)], y.astype(y_ref.dtype), mask=mask)
        return
    shift, count, rest = _stats(x_ref, row, n, block, t)

    def write(i: Any, _: Any) -> Any:
        start = _index(i * block)
        x = _load(x_ref, row, start, block, n)
        y = _finish(scaled(x - shift, t), shift, count, rest, log)
        mask = start + jnp.arange(block, dtype=jnp.int32) < n
        plt.store(y_ref.at[_index(row), pl.ds(start, block)], y.astype(y_ref.dtype), mask=mask)
        return 0

    jax.lax.fori_loop(0, pl.cdiv(n, block), write, 0)


def _logsumexp_kernel(x_ref: Any, out_ref: Any, *, n: int) -> None:
    row = pl.program_id(0)
    block = _block(n)
    if n <= CHUNK:
        shift, count, rest = _block_stats(_load(x_ref, row, 0, block, n), 1.0)
    else:
        shift, count, rest = _stats(x_ref, row, n, block, 1.0)
    out = jnp.where(count + rest == 0.0, NINF, shift + _log_total(count, rest))
    out_ref[row] = out.astype(out_ref.dtype)


def _warps(n: int) -> int:
    return min(32, max(4, _block(n) // 512))


def _call(kernel: Any, x: Any, out: Any) -> Any:
    rows, n = x.shape
    return pl.pallas_call(
        kernel,
        out_shape=out,
        grid=(rows,),
        interpret=interpreting(),
        compiler_params=plt.CompilerParams(num_warps=_warps(n), num_stages=1),
    )(x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def normalize(x: Any, t: float, log: bool) -> Any:
    """softmax (``log=False``) or log_softmax of each row of ``x`` (rows, n), rows > 0,
    divided by ``t``."""
    kernel = functools.partial(_normalize_kernel, n=x.shape[1], t=t, log=log)
    return _call(kernel, x, jax.ShapeDtypeStruct(x.shape, x.dtype))


@normalize.defjvp
def _normalize_jvp(t: float, log: bool, primals: Any, tangents: Any) -> Any:
    (x,), (dx,) = primals, tangents
    y = normalize(x, t, log)
    dz = scaled(dx.astype(jnp.float32), t)
    yf = y.astype(jnp.float32)
    if log:
        p = jnp.exp(yf)
        mass = jnp.sum(p, axis=-1, keepdims=True)
        tangent = jnp.where(mass == 0, 0.0, dz - jnp.sum(p * dz, axis=-1, keepdims=True))
    else:
        tangent = yf * (dz - jnp.sum(yf * dz, axis=-1, keepdims=True))
    return y, tangent.astype(y.dtype)


@jax.custom_jvp
def logsumexp(x: Any) -> Any:
    """logsumexp of each row of ``x`` (rows, n), rows > 0, in float32."""
    kernel = functools.partial(_logsumexp_kernel, n=x.shape[1])
    return _call(kernel, x, jax.ShapeDtypeStruct((x.shape[0],), jnp.float32))


@logsumexp.defjvp
def _logsumexp_jvp(primals: Any, tangents: Any) -> Any:
    (x,), (dx,) = primals, tangents
    out = logsumexp(x)
    live = (out != NINF)[:, None]
    p = jnp.where(live, jnp.exp(x.astype(jnp.float32) - jnp.where(live, out[:, None], 0.0)), 0.0)
    return out, jnp.sum(p * dx.astype(jnp.float32), axis=-1)


# --- cross-entropy with class indices (no class weights) --------------------------------------
def _ce_kernel(
    x_ref: Any,
    t_ref: Any,
    f_ref: Any,
    per_ref: Any,
    *grad_ref: Any,
    n: int,
    t: float,
    eps: float,
    z_loss: float,
) -> None:
    """Row ``row``'s loss (the generic ``_index_terms`` on its statistics) and, with a
    ``grad_ref``, its gradient times ``f_ref[0]`` (the mean's factor, or 1). ``t_ref`` holds
    codes: the class index where valid, -2 where ignored, -1 out of range."""
    row = pl.program_id(0)
    block = _block(n)
    target = t_ref[row]
    ignored = target == -2
    valid = target >= 0
    t_safe = jnp.where(valid, target, 0)
    if n <= CHUNK:
        x = _load(x_ref, row, 0, block, n)
        shift, count, rest = _block_stats(x, t)
    else:
        shift, count, rest = _stats(x_ref, row, n, block, t)

    def z_sum(i: Any, acc: Any) -> Any:  # sum(z) over the row, for label smoothing
        start = _index(i * block)
        x = _load(x_ref, row, start, block, n)
        inside = start + jnp.arange(block, dtype=jnp.int32) < n
        return acc + jnp.sum(jnp.where(inside, scaled(x - shift, t), 0.0))

    empty = count + rest == 0.0
    lse = jnp.where(shift == math.inf, math.nan, _log_total(count, rest))
    picked = plt.load(x_ref.at[_index(row), pl.ds(_index(t_safe), 1)]).astype(jnp.float32)
    z_t = scaled(picked[0] - shift, t)
    loss = jnp.where(empty, math.inf, lse - z_t) * (1.0 - eps)
    coef = jnp.float32(1.0 - eps)
    if eps:
        wz = jax.lax.fori_loop(0, pl.cdiv(n, block), z_sum, jnp.float32(0))
        loss = loss + (eps / n) * jnp.where(empty, math.inf, n * lse - wz)
        coef = coef + eps
    if z_loss:
        lse_abs = scaled(shift, t) + lse
        loss = loss + jnp.where(empty, math.inf, z_loss * lse_abs * lse_abs)
        coef = coef + 2.0 * z_loss * lse_abs
    # A typed NaN: Pallas' Triton lowering gives a weak-typed constant of a select the
    # predicate's type (bool), and NaN has no integer value (tests/test_pallas.py lowers
    # every kernel for CUDA on the CPU to catch such things).
    undefined = jnp.where(ignored, 0.0, jnp.float32(math.nan))
    per_ref[row] = jnp.where(valid, loss, undefined).astype(per_ref.dtype)
    if not grad_ref:
        return
    keep = valid & ~empty
    g = scaled(f_ref[0], t)
    cl = jnp.where(keep, coef * g, 0.0)
    ct = jnp.where(keep, -(1.0 - eps) * g, 0.0)
    cw = jnp.where(keep, -eps / n * g, 0.0)

    def write(i: Any, _: Any) -> Any:
        start = _index(i * block)
        cols = start + jnp.arange(block, dtype=jnp.int32)
        x = _load(x_ref, row, start, block, n)
        p = jnp.where(keep, jnp.exp(scaled(x - shift, t) - lse), 0.0)
        d = cl * p + jnp.where(cols == target, ct, 0.0) + (cw if eps else 0.0)
        plt.store(grad_ref[0].at[_index(row), pl.ds(start, block)],
                  d.astype(grad_ref[0].dtype), mask=cols < n)  # fmt: skip
        return 0

    jax.lax.fori_loop(0, pl.cdiv(n, block), write, 0)


def cross_entropy_rows(
    x: Any, codes: Any, factor: Any, *, t: float, eps: float, z_loss: float, with_grad: bool
) -> Any:
    """``per`` (float32, one per row of ``x`` (rows, n), rows > 0) or ``(per, grad)``: the
    gradient of the entries' losses times ``factor`` (a (1,) float32 array). ``codes``
    (int32): each row's class index, -2 where ignored, -1 out of range (judged in the
    target's own dtype by the caller)."""
    rows, n = x.shape
    kernel = functools.partial(_ce_kernel, n=n, t=t, eps=eps, z_loss=z_loss)
    out = [jax.ShapeDtypeStruct((rows,), jnp.float32)]
    if with_grad:
        out.append(jax.ShapeDtypeStruct(x.shape, x.dtype))
    found = pl.pallas_call(
        kernel,
        out_shape=tuple(out),
        grid=(rows,),
        interpret=interpreting(),
        compiler_params=plt.CompilerParams(num_warps=_warps(n), num_stages=1),
    )(x, codes, factor)
    return found if with_grad else found[0]
