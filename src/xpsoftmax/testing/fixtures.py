"""pytest fixtures of the conformance kit: ``backend`` (every array library and device,
skipping those not here), ``ad_backend`` (those with autodiff) and, for every test,
``jax_programs_bounded`` (a long JAX run kept under Linux's limit of memory mappings, beyond
which XLA crashes the process). Importing this module puts
JAX in 64-bit mode (the float64 cases need it), so import it before any JAX array exists:
a ``conftest.py`` does it with ``from xpsoftmax.testing.fixtures import *``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from xpsoftmax.testing.backends import BACKENDS, Backend

__all__ = ["ad_backend", "backend", "jax_programs_bounded"]

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


def _mappings() -> tuple[int, int] | None:
    """The memory mappings this process holds and the most the system allows it (Linux), or
    None where /proc does not say."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            held = sum(1 for _ in maps)
        allowed = int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None
    return held, allowed


@pytest.fixture(autouse=True)
def jax_programs_bounded() -> object:
    """After each test, where this process holds more than half the memory mappings Linux
    allows it, drop JAX's compiled programs (``jax.clear_caches()``).

    Each program XLA compiles for the CPU is code of its own, several mappings each, held
    as long as JAX caches it: eager JAX compiles every operation on every new shape, so a
    process running the kit's grid on JAX reaches Linux's limit (``vm.max_map_count``,
    65530) within the hour, and the next compilation crashes it (a segmentation fault, no
    Python error). The programs are compiled again when needed."""
    yield None
    _drop_jax_programs_if_crowded()


def _drop_jax_programs_if_crowded() -> bool:
    """``jax.clear_caches()`` where JAX is loaded and this process holds more than half the
    mappings allowed; whether it did."""
    if "jax" not in sys.modules:
        return False
    counts = _mappings()
    if counts is None or counts[0] <= counts[1] // 2:
        return False
    sys.modules["jax"].clear_caches()
    return True
