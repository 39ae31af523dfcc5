"""Dask: the traits the core reads, and the homes of its graph code.

``quiet``
    Rewrites the graph a call built so that its tasks run without NumPy's floating-point
    warnings, whenever and wherever they are computed.
``blocks``
    Where each reduced axis is one chunk: one task per chunk, running the NumPy
    implementation the registry picks for it.
``online``
    Where a reduced axis is in several chunks: the row statistics in one ``da.reduction``
    with an online (max, sum) combine, then one task per chunk for the output.

The registry imports the modules of :data:`FAST_PATH_MODULES` when the first Dask array
arrives; the calls neither serves take the generic implementation.
"""

from __future__ import annotations

import math
from typing import Any

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES: tuple[str, ...] = ("blocks", "online")


def values_visible(x: Any) -> bool:
    return False  # a graph: its values exist only once computed


def shape(x: Any) -> tuple[int, ...]:
    """The shape, with -1 for the sizes not known until computed (NaN in Dask)."""
    return tuple(-1 if math.isnan(n) else int(n) for n in x.shape)


def pieces(x: Any, axes: tuple[int, ...]) -> tuple[int, ...]:
    """How many chunks split each of ``axes`` (0 where the chunk sizes are unknown)."""
    return tuple(
        len(x.chunks[a]) if all(not math.isnan(c) for c in x.chunks[a]) else 0 for a in axes
    )


def finish(result: Any, inputs: Any) -> Any:
    """The result of a call, with its tasks made quiet (see :mod:`.quiet`)."""
    from xpsoftmax.backends.dask.quiet import quiet

    return quiet(result, inputs)


def class_ids(n: int, like: Any, axis: int, dtype: Any) -> Any:
    """The class ids ``0..n-1`` chunked like ``like`` along ``axis``, so that the generic
    one-hots keep the chunks of the logits (one chunk of ``n`` would make whole rows); None
    where those chunk sizes are not known."""
    import dask.array as da

    chunks = like.chunks[axis]
    if any(math.isnan(c) for c in chunks):
        return None
    return da.arange(n, chunks=chunks, dtype=dtype)
