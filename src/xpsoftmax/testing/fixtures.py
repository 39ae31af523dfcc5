"""pytest fixtures of the conformance kit: ``backend`` (every array library and device,
skipping those not here) and ``ad_backend`` (those with autodiff). Importing this module puts
JAX in 64-bit mode (the float64 cases need it), so import it before any JAX array exists:
a ``conftest.py`` does it with ``from xpsoftmax.testing.fixtures import *``."""

from __future__ import annotations

import pytest

from xpsoftmax.testing.backends import BACKENDS, Backend

__all__ = ["ad_backend", "backend"]

try:  # float64 cases need JAX's x64 mode; set it before any JAX array exists
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover
    pass


def _param(b: Backend) -> object:
    return pytest.param(b, id=b.id, marks=b.marks())


def _usable(b: Backend) -> Backend:
    reason = b.probe()
    if reason is not None:
        pytest.skip(f"{b.id}: {reason}")
    return b


@pytest.fixture(params=[_param(b) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every array library and device of the suite (skips those not here)."""
    return _usable(request.param)


@pytest.fixture(params=[_param(b) for b in BACKENDS if b.autodiff])
def ad_backend(request: pytest.FixtureRequest) -> Backend:
    """The backends with autodiff (torch, jax)."""
    return _usable(request.param)
