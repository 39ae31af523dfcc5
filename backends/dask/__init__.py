"""Dask: the traits the core reads, and the homes of its graph code.

``quiet``
    Rewrites the graph a call built so that its tasks run without NumPy's floating-point
    warnings, whenever and wherever they are computed.
``graphs`` (not yet written)
    Home of the Dask fast paths: ``map_blocks`` over the NumPy kernels and online reductions
    over a chunked class axis (the scale-out issue).

Dask calls are served by the generic implementation today; the registry imports the modules
of :data:`FAST_PATH_MODULES` (none yet) when the first Dask array arrives.
"""

from __future__ import annotations

import math
from typing import Any

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES: tuple[str, ...] = ()


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
