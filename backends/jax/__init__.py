"""JAX: the traits the core reads, and the homes of the fast paths.

``rules``
    The contract's formulas in ``jax.numpy`` with hand-written derivative rules
    (``custom_jvp``), on every platform.
``linear``
    The linear cross-entropy by chunks of rows, with a ``custom_vjp`` rule that keeps no
    logits for the backward pass.
``pallas/``
    Home of the Pallas kernels for GPU (the GPU issue; none yet), with their availability
    check ``pallas.available``.
``sharding``
    The vocabulary-parallel functions of :mod:`xpsoftmax.parallel` for ``jax.shard_map``
    (imported by that module, not a home of registry entries). Globally sharded arrays take
    the ordinary paths; :func:`take_along_axis` below keeps their gathers local.

The registry imports the modules of :data:`FAST_PATH_MODULES` one by one when the first JAX
array arrives; one that fails to import is listed as unavailable and leaves the others
working.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES = ("rules", "linear", "pallas.entries")


def _underlying(x: Any) -> Any:
    """The array under the tracers of eager transformations (grad, vmap and jvp outside
    ``jax.jit`` wrap a concrete array: ``primal``, ``val``), or the innermost tracer."""
    while isinstance(x, jax.core.Tracer):
        inner = getattr(x, "primal", getattr(x, "val", None))
        if not isinstance(inner, (jax.Array, jax.core.Tracer)):
            return x
        x = inner
    return x


def device_kind(x: Any) -> str:
    """The platform of ``x``'s device. A traced array under ``jax.jit`` has none: JAX's default
    backend then (the fast paths that serve a single platform decide again when the program
    is lowered, see ``pallas.entries.on_cuda``)."""
    x = _underlying(x)
    if isinstance(x, jax.core.Tracer):
        return jax.default_backend()
    try:
        return str(next(iter(x.devices())).platform)
    except Exception:  # pragma: no cover - exotic array types
        return jax.default_backend()


def values_visible(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer) and device_kind(x) == "cpu"


def pieces(x: Any, axes: tuple[int, ...]) -> tuple[int, ...]:
    """How many shards split each of ``axes`` (1: each device holds whole slices). A tracer
    does not say: 1."""
    sharding = getattr(x, "sharding", None)
    if isinstance(x, jax.core.Tracer) or sharding is None:
        return (1,) * len(axes)
    try:
        local = sharding.shard_shape(tuple(x.shape))
    except Exception:  # pragma: no cover - shardings without a shard shape
        return (1,) * len(axes)
    return tuple(math.ceil(x.shape[a] / max(1, local[a])) for a in axes)


def secondary_array(value: Any) -> Any:
    """NumPy arrays given for ``target``, ``weight``, ``where``, ``b`` or ``temperature`` next
    to JAX logits are converted, as every JAX function converts them."""
    if isinstance(value, (np.ndarray, np.generic)):
        return jnp.asarray(value)
    return value


def hold(x: Any) -> Any:
    """A value XLA may not fold constants across (``_generic._divide``'s extreme
    temperatures)."""
    return jax.lax.optimization_barrier(x)


def eager() -> Any:
    """Range checks of concrete class indices run eagerly, even inside a jit trace."""
    return jax.ensure_compile_time_eval()


def _explicitly_sharded(x: Any, axis: int) -> bool:
    """Whether ``axis`` of ``x`` is split over an Explicit mesh axis (read from its type, at
    trace time too)."""
    try:
        spec = jax.typeof(x).sharding.spec
    except Exception:  # no sharding in the type (older JAX, plain arrays)
        return False
    return axis < len(spec) and spec[axis] is not None


def take_along_axis(x: Any, index: Any, axis: int) -> Any:
    """``jnp.take_along_axis``; where ``axis`` is sharded over an Explicit mesh axis, whose
    gather JAX refuses (``ShardingTypeError``: the output sharding is ambiguous), the entry
    selected by comparison with the class ids and summed along the axis: each shard picks
    from its own classes and one all-reduce of a per-row vector combines them."""
    if not _explicitly_sharded(x, axis):
        return jnp.take_along_axis(x, index, axis=axis)
    ids = jax.lax.broadcasted_iota(index.dtype, (x.shape[axis],), 0)
    ids = jnp.reshape(ids, tuple(-1 if a == axis else 1 for a in range(x.ndim)))
    return jnp.sum(jnp.where(ids == index, x, 0.0), axis=axis, keepdims=True)
