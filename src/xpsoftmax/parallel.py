"""Vocabulary-parallel functions for code that runs per device: inside ``jax.shard_map``, each
device holds a slice of the classes and gets the answer for the whole rows.

A language model whose vocabulary is sharded over devices (``W`` split on its vocab axis) has
on each device the logits of its own classes only. ``xpsoftmax.cross_entropy`` applied there
would see a row of local classes (a loss over those, or NaN); these functions combine the
devices' row statistics with two all-reduces of per-row vectors instead, and their gradients
need no collective. The classes are split in equal slices in the order of the mesh axis
(device ``i`` of ``axis_name`` holds classes ``[i * C_local, (i + 1) * C_local)``), as
``shard_map`` splits an array sharded on its class axis.

Every option of :func:`xpsoftmax.cross_entropy` is taken, with these conventions: class
indices are global (0 to ``C - 1``) and the same on every device; probability targets and
class weights are sliced like the logits (each device passes its own classes'); the
temperature is a number. The result is the same on every device along ``axis_name``; a
reduction is over the rows this device holds (average over a data-parallel axis yourself, as
with any per-device loss). Gradients flow to the logits (targets and class weights are
constants here).

PyTorch has no counterpart here: a process group's collectives run eagerly outside autograd
(``torch.distributed.nn`` has differentiable ones, but a training step that shards the
vocabulary uses a framework's tensor parallelism, which brings its own vocab-parallel loss).
"""

from __future__ import annotations

from typing import Any

from . import _checks

__all__ = ["cross_entropy", "logsumexp"]


def _jax_only(x: Any, name: str) -> None:
    if _checks.library_name(_checks.namespace(**{name: x})) != "jax":
        raise TypeError(
            f"xpsoftmax.parallel works on JAX arrays inside jax.shard_map; {name} is a "
            f"{type(x).__module__}.{type(x).__name__}"
        )


def _axis_name(axis_name: Any) -> Any:
    if axis_name is None or not isinstance(axis_name, str | tuple):
        raise TypeError(
            f"axis_name must name the mesh axis the classes are split over, got {axis_name!r}"
        )
    return axis_name


def logsumexp(x: Any, /, axis_name: Any, *, axis: int = -1, keepdims: bool = False) -> Any:
    """:func:`xpsoftmax.logsumexp` over a class axis split over the devices of ``axis_name``.

    Parameters
    ----------
    x : jax.Array
        This device's slice of the classes (inside ``jax.shard_map``).
    axis_name : str or tuple of str
        The mesh axis the classes are split over.
    axis : int, default -1
        The class axis.
    keepdims : bool, default False
        Keep the class axis (of size 1).

    Returns
    -------
    jax.Array
        The logsumexp of the whole rows, the same on every device of ``axis_name``.

    Examples
    --------
    >>> import jax, numpy as np, xpsoftmax
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> mesh = jax.make_mesh((jax.device_count(),), ("v",))
    >>> f = jax.shard_map(
    ...     lambda x: xpsoftmax.parallel.logsumexp(x, "v"),
    ...     mesh=mesh, in_specs=P(None, "v"), out_specs=P(),
    ... )
    >>> x = np.log(np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32))
    >>> np.asarray(f(jax.device_put(x, NamedSharding(mesh, P(None, "v"))))).round(4)
    array([2.3026], dtype=float32)
    """
    x = _checks.as_primary_array(x, "x")
    _jax_only(x, "x")
    (ax,) = _checks.normalize_axes(axis, x.ndim)
    if not isinstance(keepdims, bool):
        raise TypeError(f"keepdims must be a bool, got {keepdims!r}")
    from .backends.jax import sharding

    return sharding.logsumexp(x, ax, keepdims, _axis_name(axis_name))


def cross_entropy(
    logits: Any,
    target: Any,
    /,
    axis_name: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
) -> Any:
    """:func:`xpsoftmax.cross_entropy` over a class axis split over the devices of
    ``axis_name``.

    Parameters
    ----------
    logits : jax.Array
        This device's slice of the classes (inside ``jax.shard_map``).
    target : jax.Array
        Global class indices, shaped like ``logits`` without ``axis`` (the same on every
        device), or this device's slice of the class probabilities (shaped like ``logits``).
    axis_name : str or tuple of str
        The mesh axis the classes are split over.
    axis, ignore_index, reduction, label_smoothing, z_loss
        As in :func:`xpsoftmax.cross_entropy`.
    weight : jax.Array, optional
        This device's classes' weights, shape ``(C_local,)``.
    temperature : float, default 1.0
        As in :func:`xpsoftmax.cross_entropy`; a number only.

    Returns
    -------
    jax.Array
        The loss of the whole rows, the same on every device of ``axis_name``.

    Examples
    --------
    >>> import jax, numpy as np, xpsoftmax
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> mesh = jax.make_mesh((jax.device_count(),), ("v",))
    >>> f = jax.shard_map(
    ...     lambda z, t: xpsoftmax.parallel.cross_entropy(z, t, "v"),
    ...     mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P(),
    ... )
    >>> z = jax.device_put(np.zeros((2, 4), np.float32), NamedSharding(mesh, P(None, "v")))
    >>> t = jax.device_put(np.array([0, 3]), NamedSharding(mesh, P()))
    >>> round(float(f(z, t)), 4)  # log(4)
    1.3863
    """
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise TypeError(
            f"temperature of parallel.cross_entropy must be a number, got {temperature!r}"
        )
    args = _checks.check_cross_entropy(
        logits,
        target,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
    )
    _jax_only(args.logits, "logits")
    from .backends.jax import sharding

    return sharding.cross_entropy(
        args.logits, args.target, args.axis, args.settings, _axis_name(axis_name)
    )
