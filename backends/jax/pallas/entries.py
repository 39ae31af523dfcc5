"""The Pallas kernels as fast paths for JAX: softmax, log_softmax and logsumexp over trailing
axes, cross-entropy with class indices and no class weights over the last, in float16,
bfloat16 and float32, on a GPU (or anywhere, interpreted:
``XPSOFTMAX_PALLAS_INTERPRET=1``). logsumexp and cross-entropy serve by default (ahead of
``jax.custom_jvp`` / ``jax.fused_jvp``: 1.2-1.3x XLA's time forward and 1.7-3.3x for the
cross-entropy training step on an H100, through the GPU tests); softmax and log_softmax,
no faster than XLA there, are opt-in (``xpsoftmax.use("jax.pallas")``, the registry's
``opt_in``)."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from xpsoftmax import _generic, _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature, reduced_shape, target_masks
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.jax import rules
from xpsoftmax.backends.jax.pallas import available, interpreting

_DESCRIPTION = "trailing axes, where=None, scalar temperature > 0"


#: The GPU, and every device when the kernels are interpreted (decided at import, as the
#: registry's device lists are).
_DEVICES = ("gpu", "cpu", "tpu") if interpreting() else ("gpu",)


#: The longest slice served (as the Triton kernels: each lane sums at most 256 chunks).
LONG_ROW = 2**20


#: The operations whose kernels were no faster than XLA on an H100: served only when picked.
OPT_IN = ("softmax", "log_softmax")


def _entry(op: str, supports: Any, description: str = _DESCRIPTION) -> Any:
    """The registration of this module's entry for ``op``: one name, device list, dtypes and
    availability check for all; ahead of ``jax.custom_jvp`` (50) where the kernel is faster."""
    opt_in = op in OPT_IN
    return register(
        op,
        "jax",
        "jax.pallas",
        priority=40 if opt_in else 60,
        supports=supports,
        devices=_DEVICES,
        dtypes=("float16", "bfloat16", "float32"),
        available=available,
        description=description + ("; opt-in" if opt_in else ""),
        opt_in=opt_in,
    )


def on_cuda(kernel_path: Any, elsewhere: Any, *arrays: Any) -> Any:
    """``kernel_path(*arrays)`` where the program runs on a CUDA GPU, ``elsewhere(*arrays)``
    on any other platform.

    The registry picks these entries by the input's device, which a traced array does not
    have: it reads JAX's default backend, the GPU on a machine that has one, also for
    ``jax.jit`` of CPU arrays (whose Pallas calls cannot lower: "Only interpret mode is
    supported on CPU backend"). So a traced call leaves the choice to the lowering:
    ``lax.platform_dependent`` lowers only the branch of the platform compiled for (JAX >=
    0.6.1, which :func:`xpsoftmax.backends.jax.pallas.available` requires). ``elsewhere`` is
    the entry that serves below this one; its results take the kernel's dtypes, so that the
    two branches agree.
    """
    if interpreting() or not any(isinstance(a, jax.core.Tracer) for a in arrays):
        return kernel_path(*arrays)
    shapes = jax.eval_shape(kernel_path, *arrays)

    def other(*args: Any) -> Any:
        return jax.tree.map(lambda r, s: r.astype(s.dtype), elsewhere(*args), shapes)

    return jax.lax.platform_dependent(*arrays, cuda=kernel_path, default=other)


def _normalize(x: Any, axes: tuple[int, ...], temperature: Temperature, log: bool) -> Any:
    if x.size == 0:
        return jnp.zeros_like(x)
    from xpsoftmax.backends.jax.pallas import kernels

    def kernel_path(x: Any) -> Any:
        t = _rows.scalar_temperature(temperature)
        return kernels.normalize(_rows.as_rows(x, axes), t, log).reshape(x.shape)

    below = rules.log_softmax if log else rules.softmax
    return on_cuda(
        kernel_path, lambda x: below(jnp, x, axes, temperature=temperature, where=None), x
    )


@_entry("softmax", lambda c: _rows.normalization_ok(c, LONG_ROW))
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    return _normalize(x, axes, temperature, log=False)


@_entry("log_softmax", lambda c: _rows.normalization_ok(c, LONG_ROW))
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    return _normalize(x, axes, temperature, log=True)


@_entry("logsumexp", lambda c: _rows.logsumexp_ok(c, LONG_ROW))
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
    shape = reduced_shape(x.shape, axes, keepdims)
    if x.size == 0:
        return jnp.full(shape, -math.inf, dtype=jnp.float32)
    from xpsoftmax.backends.jax.pallas import kernels

    def below(x: Any) -> Any:
        return rules.logsumexp(
            jnp, x, axes, keepdims=keepdims, b=None, return_sign=False, where=None
        )

    return on_cuda(lambda x: kernels.logsumexp(_rows.as_rows(x, axes)).reshape(shape), below, x)


# --- cross-entropy with class indices, no class weights ---------------------------------------
_CE = "class indices along the last axis, weight=None, scalar temperature > 0"


def _ce_ok(call: Call) -> bool:
    return _rows.class_index_ok(call, LONG_ROW) and not call.opt("weight")


def _ce(logits: Any, target: Any, o: CrossEntropySettings, with_grad: bool) -> Any:
    """``loss`` or ``(loss, grad)`` through the kernel: the codes and the mean's factor from
    the targets first (``_checks.target_masks``: judged in the target's own dtype)."""
    from xpsoftmax.backends.jax.pallas import kernels

    n = logits.shape[-1]
    flat = target.reshape(-1)
    ignored, valid = target_masks(jnp, flat, n, o.ignore_index)
    codes = jnp.where(valid, flat, jnp.where(ignored, -2, -1)).astype(jnp.int32)
    den = jnp.sum(~ignored).astype(jnp.float32)
    factor = _generic.mean_over(jnp, 1.0, den) if o.reduction == "mean" else jnp.float32(1)
    found = kernels.cross_entropy_rows(
        _rows.as_rows(logits, (logits.ndim - 1,)), codes,
        jnp.reshape(factor, (1,)).astype(jnp.float32), t=_rows.scalar_temperature(o.temperature),
        eps=o.label_smoothing, z_loss=o.z_loss, with_grad=with_grad,
    )  # fmt: skip
    per = found[0] if with_grad else found
    if o.reduction == "none":
        loss = per.reshape(target.shape)
    elif o.reduction == "sum":
        loss = jnp.sum(per)
    else:
        loss = _generic.mean_over(jnp, jnp.sum(per), den)
    return (loss, found[1].reshape(logits.shape)) if with_grad else loss


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _fused(logits: Any, target: Any, o: CrossEntropySettings) -> Any:
    return _ce(logits, target, o, with_grad=False)


@_fused.defjvp
def _fused_jvp(o: CrossEntropySettings, primals: Any, tangents: Any) -> Any:
    # As rules._fused_ce: the kernel writes d loss / d logits with the loss; the tangent
    # <G, dx> is linear in dx, so reverse mode only scales G.
    logits, target = primals
    dx, _ = tangents
    loss, grad = _ce(logits, target, o, with_grad=True)
    prod = grad.astype(loss.dtype) * dx.astype(loss.dtype)
    tangent = jnp.sum(prod, axis=-1) if loss.ndim else jnp.sum(prod)
    return loss, tangent.astype(loss.dtype)


@_entry("cross_entropy", _ce_ok, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if logits.size == 0:
        return _generic.cross_entropy(jnp, logits, target, axis, options)
    return on_cuda(
        lambda x, t: _fused(x, t, options),
        lambda x, t: rules.cross_entropy(jnp, x, t, axis, options),
        logits, target,
    )  # fmt: skip


@_entry("cross_entropy_with_grad", _ce_ok, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    if logits.size == 0:
        return _generic.cross_entropy_with_grad(jnp, logits, target, axis, options)
    return on_cuda(
        lambda x, t: _ce(x, t, options, with_grad=True),
        lambda x, t: _generic.cross_entropy_with_grad(jnp, x, t, axis, options),
        logits, target,
    )  # fmt: skip
