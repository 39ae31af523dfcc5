"""Home of the Pallas kernels for JAX on GPU (the GPU issue): none is registered yet.

What is here already is the check every Pallas entry will register as its ``available``; the
kernels will import ``jax.experimental.pallas`` inside their modules only, so that a JAX
without Pallas or without a GPU keeps the ``rules`` fast paths.
"""

from __future__ import annotations

import importlib.util


def available() -> str | None:
    """None when Pallas GPU kernels can run here, else the reason."""
    if importlib.util.find_spec("jax.experimental.pallas") is None:
        return "this JAX has no Pallas"
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "no GPU for JAX"
    return None
