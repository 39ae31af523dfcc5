"""The contract, checked on this machine: every public function and every registered fast path,
on every array library and device installed here, through the public kit's
:func:`xpsoftmax.testing.check_implementation` (the edge-case catalogue times every option,
compared with the generic implementation and the extended-precision reference), and, on the
libraries with autodiff, their gradients through :func:`xpsoftmax.testing.check_gradients`."""

from __future__ import annotations

from typing import Any

import pytest

import xpsoftmax
from xpsoftmax import _registry
from xpsoftmax.testing import Backend, check_gradients, check_implementation
from xpsoftmax.testing.conformance import fast_path_params, through_entry
from xpsoftmax.testing.gradients import DIFFERENTIABLE

OPS = _registry.OPS  # every public operation


def _usable(backend: Backend, entry: Any = None) -> None:
    """Skip (with the reason) where the backend, or the entry's optional dependency (numba,
    triton), is not here."""
    reason = backend.probe()
    if reason is not None:
        pytest.skip(f"{backend.id}: {reason}")
    reason = None if entry is None else entry.unavailable()
    if reason is not None:
        pytest.skip(f"{entry.name}: {reason}")


def _served_generically(call: Any) -> bool:
    """Whether the registry gives this call to the generic implementation."""
    return _registry.select(call) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", OPS)
def test_function_conforms(op: str, backend: Backend, dtype: str) -> None:
    """The public function as a user calls it, on the calls the generic implementation
    serves. The calls a fast path serves are checked through that entry, on the same inputs
    (the grid's seed), by ``test_fast_path_conforms``: an entry serves only calls it accepts,
    and that test runs it on all of them, in every dtype (here they ran twice: the JAX
    function tests took ~600 s of worker time on 2 cores, ~250 s without them)."""
    checked = check_implementation(
        op, getattr(xpsoftmax, op), backend, dtype, accepts=_served_generically, min_calls=0
    )
    if checked == 0:
        pytest.skip(
            f"fast paths serve every call of {op} here: test_fast_path_conforms checks them"
        )


@pytest.mark.parametrize(("entry", "backend", "dtype"), fast_path_params())
def test_fast_path_conforms(entry: Any, backend: Backend, dtype: str) -> None:
    """Each registered fast path on the calls it accepts, run through the entry itself."""
    _usable(backend, entry)

    fast = through_entry(entry)
    check_implementation(entry.op, fast, backend, dtype, accepts=entry.accepts)


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_function_gradients(op: str, ad_backend: Backend) -> None:
    """The public function's gradients (float32), whichever implementation serves each call."""
    check_gradients(op, getattr(xpsoftmax, op), ad_backend, "float32")


@pytest.mark.parametrize(
    ("entry", "backend", "dtype"),
    [p for p in fast_path_params() if p.values[1].autodiff and p.values[0].op in DIFFERENTIABLE],
)
def test_fast_path_gradients(entry: Any, backend: Backend, dtype: str) -> None:
    """Each registered fast path's gradients on the calls it accepts, through the entry."""
    _usable(backend, entry)

    fast = through_entry(entry)
    check_gradients(entry.op, fast, backend, dtype, accepts=entry.accepts)
