"""Every registered fast path gives the generic implementation's answers, and dispatch reaches it.

The cases are enumerated from the registry (``xpsoftmax.fast_paths()``): one test per
(fast path, backend, dtype), so a newly registered fast path is covered without touching this
file. That each entry gives the generic implementation's answers is checked by the installed
conformance suite (``xpsoftmax/tests/test_conformance.py``, which runs the public kit's
:func:`xpsoftmax.testing.check_implementation` on every entry); here: that dispatch reaches
each entry, ``force_generic`` and the environment variable, and the listing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax import _libraries, _registry
from xpsoftmax.testing import cases
from xpsoftmax.testing.backends import Backend
from xpsoftmax.testing.conformance import _plan, calls, fast_path_params

INF = math.inf

ENTRIES = fast_path_params()


def _usable(backend: Backend) -> None:
    reason = backend.probe()
    if reason is not None:
        pytest.skip(f"{backend.id}: {reason}")


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return cases.rng_for(request)


def test_registry_is_not_empty() -> None:
    """The suite below is generated from the registry: it must find the installed backends'."""
    libraries = {e.library for e in xpsoftmax.fast_paths()}
    for lib in _libraries.LIBRARIES:
        if lib.installed() and lib.name in ("numpy", "torch", "jax"):
            assert lib.name in libraries, f"{lib.name} is installed but registered no fast path"
    assert ENTRIES


def _first_accepted(
    entry: Any, backend: Backend, dtype: str, rng: np.random.Generator
) -> tuple[str, tuple, dict]:
    for label, args, kw in calls(entry.op, backend, dtype, rng):
        try:
            plan = _plan(entry.op, args, kw)
        except ValueError:
            continue
        if entry.accepts(plan.call):
            return label, args, kw
    raise AssertionError(f"no call of the grid is accepted by {entry.name}")


@pytest.mark.parametrize(("entry", "backend", "dtype"), ENTRIES)
def test_dispatch_reaches_fast_path(
    entry: Any,
    backend: Backend,
    dtype: str,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The public function runs the entry for a call it accepts (unless an entry registered
    before it for the same op and library accepts the call first), and ``which`` says so."""
    _usable(backend)
    if entry.unavailable() is not None:
        pytest.skip(f"{entry.name} cannot run here: {entry.unavailable()}")
    label, args, kw = _first_accepted(entry, backend, dtype, rng)
    call = _plan(entry.op, args, kw).call
    # The first entry that accepts the call and can run, opt-in ones left out; an opt-in
    # entry is reached by naming it.
    expected = entry
    if not entry.opt_in:
        expected = next(
            e
            for e in _registry._REGISTRY[(entry.op, entry.library)]
            if e.accepts(call) and e.unavailable() is None and not e.opt_in
        )
    picked = xpsoftmax.use(entry.name) if entry.opt_in else contextlib.nullcontext()
    calls: list[str] = []

    def spy(e: Any) -> Any:
        def impl(*a: Any, **k: Any) -> Any:
            calls.append(e.name)
            return e.impl(*a, **k)

        return dataclasses.replace(e, impl=impl)

    key = (entry.op, entry.library)
    monkeypatch.setitem(_registry._REGISTRY, key, [spy(e) for e in _registry._REGISTRY[key]])
    monkeypatch.delenv(_registry.ENV_FORCE_GENERIC, raising=False)
    with picked:
        assert xpsoftmax.which(entry.op, *args, **kw) == expected.name
        getattr(xpsoftmax, entry.op)(*args, **kw)
    assert calls == [expected.name], (
        f"{entry.op}({label}) ran {calls}, expected [{expected.name!r}]"
    )

    calls.clear()
    with xpsoftmax.force_generic():
        assert xpsoftmax.which(entry.op, *args, **kw) == "generic"
        getattr(xpsoftmax, entry.op)(*args, **kw)
    assert calls == [], "force_generic() still ran a fast path"

    monkeypatch.setenv(_registry.ENV_FORCE_GENERIC, "1")
    assert xpsoftmax.which(entry.op, *args, **kw) == "generic"
    getattr(xpsoftmax, entry.op)(*args, **kw)
    assert calls == [], f"{_registry.ENV_FORCE_GENERIC}=1 still ran a fast path"


def test_implementations_lists_every_fast_path() -> None:
    rows = xpsoftmax.implementations()
    listed = {(r.op, r.library, r.device, r.implementation) for r in rows}
    installed = {lib.name for lib in _libraries.installed()}
    for e in xpsoftmax.fast_paths():
        if e.library not in installed:  # registered (CuPy's, on a machine without CuPy)
            continue  # but listed only for installed libraries
        for device in e.devices:
            if device in ("cpu", "cuda", "gpu"):
                assert (e.op, e.library, device, e.name) in listed, e
    # every (op, library, device) has a generic fallback row
    keys = {(r.op, r.library, r.device) for r in rows}
    for key in keys:
        assert (*key, "generic") in listed


def test_force_generic_nests_and_restores() -> None:
    x = np.ones((2, 3))
    assert xpsoftmax.which("softmax", x) != "generic"
    with xpsoftmax.force_generic():
        with xpsoftmax.force_generic():
            assert xpsoftmax.generic_forced()
        assert xpsoftmax.which("softmax", x) == "generic"
    assert not xpsoftmax.generic_forced()
    assert xpsoftmax.which("softmax", x) != "generic"


def test_force_generic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.ones((2, 3))
    for value, forced in (("1", True), ("true", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(_registry.ENV_FORCE_GENERIC, value)
        assert xpsoftmax.generic_forced() is forced
        assert (xpsoftmax.which("softmax", x) == "generic") is forced
        if forced:
            assert {r.implementation for r in xpsoftmax.implementations("numpy")} == {"generic"}
