"""Every registered fast path gives the generic implementation's answers, and dispatch reaches it.

The cases are enumerated from the registry (``xpsoftmax.fast_paths()``): one test per
(fast path, backend, dtype), so a newly registered fast path is covered without touching this
file. Each test builds a grid of calls (the edge-case catalogue times the operation's options),
keeps those the entry's ``supports`` predicate accepts, runs the entry's implementation and the
generic one on the same checked arguments, and compares them: NaN and infinity positions
exactly, finite values within a few units of rounding of the result dtype. A fast path that
accepts fewer than ``MIN_CALLS`` calls of the grid fails: it would be tested on too little.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax import _api, _registry

import cases
from backends import BACKENDS, Backend
from cases import EPS, assert_close

INF = math.inf

#: Fewest calls of the grid a fast path must accept to count as tested.
MIN_CALLS = 8

#: Units of rounding allowed between a fast path and the generic path, per result dtype.
ULPS = 16


def _entries() -> list[Any]:
    params = []
    for entry in xpsoftmax.fast_paths():
        for b in BACKENDS:
            if b.library != entry.library or b.device not in entry.devices:
                continue
            marks = [pytest.mark.gpu] if b.device in ("cuda", "gpu") else []
            for dtype in entry.dtypes:
                if dtype in b.dtypes:
                    params.append(
                        pytest.param(
                            entry,
                            b,
                            dtype,
                            id=f"{entry.op}-{entry.name}-{b.id}-{dtype}",
                            marks=marks,
                        )
                    )
    return params


ENTRIES = _entries()


def _usable(backend: Backend) -> None:
    reason = backend.probe()
    if reason is not None:
        pytest.skip(f"{backend.id}: {reason}")


# --- the grid of calls ----------------------------------------------------------------------


#: Temperatures at the edges of float32 and float64: rounding to 0 or subnormal (the hard
#: max), overflowing (the uniform limit), and huge but finite (x / T overflows unless the
#: shift comes first; 1 / T is subnormal in float32).
EXTREME_TEMPERATURES = (1e-39, 1e-300, 1e-320, 1e38, 1e39)


def _extreme_array(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Per-slice temperatures drawn from the extremes and a few ordinary values."""
    choices = np.array([*EXTREME_TEMPERATURES, 0.5, 0.0, INF])
    return rng.choice(choices, size=shape)


def _temperatures(rng: np.random.Generator, x: np.ndarray, axes: tuple[int, ...]) -> list[Any]:
    shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    return [
        1.0,
        0.5,
        3.0,
        0.0,
        INF,
        *EXTREME_TEMPERATURES,
        rng.uniform(0.3, 2.0, size=shape),
        _extreme_array(rng, shape),
    ]


def _normalization_calls(
    b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    for case in cases.catalogue(rng):
        x = b.asarray(case.x, dtype)
        for t in _temperatures(rng, case.x, case.axes):
            kw: dict[str, Any] = {"axis": case.axis}
            kw["temperature"] = b.asarray(t, dtype) if isinstance(t, np.ndarray) else t
            if case.where is not None:
                kw["where"] = b.asarray(case.where)
            label = f"{case.name} T={'array' if isinstance(t, np.ndarray) else t}"
            yield label, (x,), kw


def _logsumexp_calls(
    b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    for case in cases.catalogue(rng):
        x = b.asarray(case.x, dtype)
        signed = rng.normal(size=case.x.shape)
        signed[rng.random(case.x.shape) < 0.3] = 0.0
        for b_kind, b_np in (
            ("none", None),
            ("positive", rng.uniform(0.1, 2.0, case.x.shape)),
            ("signed", signed),
        ):
            for keepdims in (False, True):
                for return_sign in (False, True):
                    kw: dict[str, Any] = {
                        "axis": case.axis,
                        "keepdims": keepdims,
                        "return_sign": return_sign,
                    }
                    if b_np is not None:
                        kw["b"] = b.asarray(b_np, dtype)
                    if case.where is not None:
                        kw["where"] = b.asarray(case.where)
                    yield f"{case.name} b={b_kind} keepdims={keepdims} sign={return_sign}", (x,), kw


CE_OPTIONS: list[dict[str, Any]] = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": True},
    {"weight": True, "reduction": "none"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "weight": True, "reduction": "sum"},
    {"temperature": 0.5},
    {"temperature": 0.0},
    {"temperature": INF},
    {"temperature": "array"},
    {"z_loss": 1e-2},
    {"z_loss": 1e-2, "weight": True, "label_smoothing": 0.1, "temperature": 2.0},
    {"z_loss": 1e-2, "temperature": 0.3},  # a shift / T that 16 bits cannot hold
    {"ignore_index": 1},
    *({"temperature": t} for t in EXTREME_TEMPERATURES),
    {"temperature": 1e-39, "label_smoothing": 0.1, "weight": True},
    {"temperature": 1e38, "z_loss": 1e-2},
    {"temperature": "extreme"},
]


def _cross_entropy_calls(
    b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    for case in cases.ce_catalogue(rng):
        x = b.asarray(case.logits, dtype)
        n_classes = case.logits.shape[case.axis]
        for kind in ("index", "probs"):
            for opts in CE_OPTIONS:
                kw: dict[str, Any] = dict(opts, axis=case.axis)
                index = case.index
                if "ignore_index" in opts:
                    if kind == "probs" or n_classes < 2:
                        continue
                    index = np.where(index == cases.IGNORE, opts["ignore_index"], index)
                if opts.get("weight"):
                    kw["weight"] = b.asarray(rng.uniform(0.2, 2.0, n_classes), dtype)
                if isinstance(opts.get("temperature"), str):
                    shape = tuple(
                        1 if i == case.axis % case.logits.ndim else n
                        for i, n in enumerate(case.logits.shape)
                    )
                    values = (
                        _extreme_array(rng, shape)
                        if opts["temperature"] == "extreme"
                        else rng.uniform(0.3, 2.0, shape)
                    )
                    kw["temperature"] = b.asarray(values, dtype)
                target = b.asarray(index) if kind == "index" else b.asarray(case.probs, dtype)
                yield f"{case.name} {kind} {opts}", (x, target), kw


def _calls(
    op: str, b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    if op in ("softmax", "log_softmax"):
        return _normalization_calls(b, dtype, rng)
    if op == "logsumexp":
        return _logsumexp_calls(b, dtype, rng)
    return _cross_entropy_calls(b, dtype, rng)


def _plan(op: str, args: tuple, kw: dict) -> Any:
    """The checked call with the generic implementation (forced), and its metadata."""
    with xpsoftmax.force_generic():
        return _api._plan(op, *args, **kw)


def _tolerance(dtype: Any) -> tuple[float, float]:
    name = cases.dtype_name(dtype)
    eps = EPS.get(name, EPS["float64"])
    return ULPS * eps, ULPS * eps


def _magnitude(b: Backend, args: tuple, kw: dict) -> float:
    """max |x / T| over the finite inputs: rounding x / T (or x - max) costs that many units
    of rounding on any path, so differences between paths scale with it."""
    x = b.numpy_float(args[0])
    finite = x[np.isfinite(x)]
    big = float(np.abs(finite).max(initial=0.0))
    t = kw.get("temperature", 1.0)
    t_all = b.numpy_float(t) if not isinstance(t, (int, float)) else np.asarray([float(t)])
    ordinary = t_all[(t_all > 0) & (t_all < INF)]
    t_min = float(np.min(ordinary)) if ordinary.size else 0.0
    with np.errstate(over="ignore"):
        scaled = big / t_min if t_min > 0 else big
    # The hard max of a temperature that is 0 in the computation dtype is exact.
    return scaled if math.isfinite(scaled) else big


def _compare(b: Backend, fast: Any, generic: Any, what: str, magnitude: float) -> None:
    fast_t = fast if isinstance(fast, tuple) else (fast,)
    gen_t = generic if isinstance(generic, tuple) else (generic,)
    assert len(fast_t) == len(gen_t), f"{what}: {len(fast_t)} results, generic gives {len(gen_t)}"
    for i, (f, g) in enumerate(zip(fast_t, gen_t)):
        assert cases.dtype_name(f.dtype) == cases.dtype_name(g.dtype), (
            f"{what} [result {i}]: dtype {f.dtype}, generic gives {g.dtype}"
        )
        assert tuple(f.shape) == tuple(g.shape), (
            f"{what} [result {i}]: shape {tuple(f.shape)} != {tuple(g.shape)}"
        )
        gn = b.numpy_float(g)
        rtol, atol = _tolerance(f.dtype)
        rtol, atol = rtol * (1.0 + magnitude), atol * (1.0 + magnitude)
        assert_close(b.numpy_float(f), gn, rtol=rtol, atol=atol, what=f"{what} [result {i}]")


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return cases.rng_for(request)


def test_registry_is_not_empty() -> None:
    """The suite below is generated from the registry: it must find the installed backends'."""
    libraries = {e.library for e in xpsoftmax.fast_paths()}
    for lib in ("numpy", "torch", "jax"):
        if _registry._importable(lib):
            assert lib in libraries, f"{lib} is installed but registered no fast path"
    assert ENTRIES


@pytest.mark.parametrize(("entry", "backend", "dtype"), ENTRIES)
def test_fast_path_equals_generic(
    entry: Any, backend: Backend, dtype: str, rng: np.random.Generator
) -> None:
    _usable(backend)
    failures = cases.Failures()
    accepted = 0
    seen = 0
    for label, args, kw in _calls(entry.op, backend, dtype, rng):
        try:
            plan = _plan(entry.op, args, kw)
        except ValueError:
            continue  # e.g. a temperature shape that does not fit a 0-d input
        seen += 1
        if not entry.accepts(plan.call):
            continue
        accepted += 1
        what = f"{entry.name} vs generic: {entry.op}({label}) {dtype} on {backend.id}"
        with failures.check(what):
            generic = plan.run()
            fast = dataclasses.replace(plan, impl=entry.impl, name=entry.name).run()
            _compare(backend, fast, generic, what, _magnitude(backend, args, kw))
    failures.raise_if_any()
    assert accepted >= MIN_CALLS, (
        f"{entry.name} ({entry.op}) accepted only {accepted} of {seen} calls of the grid: "
        "widen the grid in tests/test_fast_paths.py so that it is really tested"
    )


def _first_accepted(
    entry: Any, backend: Backend, dtype: str, rng: np.random.Generator
) -> tuple[str, tuple, dict]:
    for label, args, kw in _calls(entry.op, backend, dtype, rng):
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
    label, args, kw = _first_accepted(entry, backend, dtype, rng)
    call = _plan(entry.op, args, kw).call
    expected = next(e for e in _registry._REGISTRY[(entry.op, entry.library)] if e.accepts(call))
    calls: list[str] = []

    def spy(e: Any) -> Any:
        def impl(*a: Any, **k: Any) -> Any:
            calls.append(e.name)
            return e.impl(*a, **k)

        return dataclasses.replace(e, impl=impl)

    key = (entry.op, entry.library)
    monkeypatch.setitem(_registry._REGISTRY, key, [spy(e) for e in _registry._REGISTRY[key]])
    monkeypatch.delenv(_registry.ENV_FORCE_GENERIC, raising=False)
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
    for e in xpsoftmax.fast_paths():
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
