"""Check any implementation of an xpsoftmax operation against the contract.

:func:`check_implementation` runs the edge-case catalogue (:mod:`xpsoftmax.testing.cases`)
times the operation's options (temperatures at the edges of float32 and float64, masks, ``b``
and ``return_sign``, every cross-entropy option) through a callable with the signature of the
xpsoftmax function, and compares every result with xpsoftmax's generic array-API
implementation and, where one exists, with the extended-precision reference
(:mod:`xpsoftmax.testing.reference`): NaN and infinity positions exactly, finite values within
a few units of rounding of the result dtype, scaled by ``max |x / T|``. Every mismatch is
reported (which case, which options, expected against got), not only the first.

xpsoftmax's own tests run every registered fast path through it; run your kernel through it
the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import cases, reference
from .backends import Backend, converting_once
from .cases import EPS, assert_close

__all__ = [
    "CE_OPTIONS",
    "EXTREME_TEMPERATURES",
    "calls",
    "check_implementation",
    "fast_path_params",
]

INF = math.inf

#: Units of rounding allowed against the generic path and the reference, per result dtype.
ULPS = 16

#: Fewest calls of the grid an implementation must accept to count as checked.
MIN_CALLS = 8


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


#: The cross-entropy options the linear cross-entropy is checked with: each option, and the
#: temperatures at the edges, once (a number temperature only: it takes no per-entry arrays).
LINEAR_OPTIONS: list[dict[str, Any]] = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": True, "reduction": "none"},
    {"label_smoothing": 0.2, "weight": True, "reduction": "sum"},
    {"temperature": 0.5},
    {"temperature": 0.0},
    {"temperature": INF},
    {"ignore_index": 1},
    {"temperature": 1e-39, "label_smoothing": 0.1, "weight": True},
    {"temperature": 1e38, "z_loss": 1e-2},
    {"z_loss": 1e-2, "weight": True, "label_smoothing": 0.1, "temperature": 2.0},
]


def _linear_calls(
    b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    # Dask builds and runs a graph per call (a tenth of a second for the gradients): it takes
    # every fourth option, the cases whole; the other libraries take the whole grid.
    options = LINEAR_OPTIONS[::4] if b.library == "dask" else LINEAR_OPTIONS
    for case in cases.linear_catalogue(rng):
        h, w = b.asarray(case.h, dtype), b.asarray(case.w, dtype)
        vocab = case.w.shape[0]
        for kind in ("index", "probs"):
            for opts in options:
                for with_bias in (True, False):
                    if with_bias is False and (opts or kind == "probs"):
                        continue  # without a bias: the plain options only
                    kw: dict[str, Any] = dict(opts, axis=case.axis, chunk_size=case.chunk_size)
                    index = case.index
                    if "ignore_index" in opts:
                        if kind == "probs" or vocab < 2:
                            continue
                        index = np.where(index == cases.IGNORE, opts["ignore_index"], index)
                    if opts.get("weight"):
                        kw["weight"] = b.asarray(rng.uniform(0.2, 2.0, vocab), dtype)
                    if with_bias:
                        kw["bias"] = b.asarray(case.bias, dtype)
                    target = b.asarray(index) if kind == "index" else b.asarray(case.probs, dtype)
                    yield f"{case.name} {kind} {opts} bias={with_bias}", (h, w, target), kw


def calls(
    op: str, b: Backend, dtype: str, rng: np.random.Generator
) -> Iterator[tuple[str, tuple, dict]]:
    """Every call of the grid for ``op`` on backend ``b`` in ``dtype``, as
    ``(label, args, kwargs)``, with fresh random inputs drawn from ``rng``; for a library of
    chunked arrays (Dask), the whole grid in each of its chunk layouts (``b.layouts``), but
    for the linear cross-entropy (one generic path whatever the chunks)."""
    if op in ("softmax", "log_softmax"):
        grid = _normalization_calls
    elif op == "logsumexp":
        grid = _logsumexp_calls
    elif op.startswith("linear_"):
        grid = _linear_calls
    else:
        grid = _cross_entropy_calls
    if not b.layouts or grid is _linear_calls:  # the linear head: Dask's generic chunks alone
        return grid(b, dtype, rng)
    return (
        (f"{label} [{layout}]", args, kw)
        for layout in b.layouts
        for label, args, kw in _in_layout(b, layout, grid(b, dtype, rng))
        if layout == b.layouts[0] or _chunked_otherwise(b, b.layouts[0], (*args, *kw.values()))
    )


def _chunked_otherwise(b: Backend, first: str, arrays: tuple) -> bool:
    """Whether some array is chunked otherwise than the ``first`` layout chunks it: a call
    whose arrays are all alike (Dask's 0-d and 1-d arrays, a class axis of one) would repeat
    one already run."""
    for a in arrays:
        chunks = getattr(a, "chunks", None)
        if chunks is None or not hasattr(a, "shape"):
            continue
        with b.layout(first):
            if b.asarray(np.zeros(a.shape, dtype=np.float32)).chunks != chunks:
                return True
    return False


def _in_layout(b: Backend, layout: str, grid: Iterator[Any]) -> Iterator[Any]:
    """The items of ``grid``, each made with ``b``'s arrays split as ``layout`` says."""
    while True:
        with b.layout(layout):
            item = next(grid, None)
        if item is None:
            return
        yield item


def _plan(op: str, args: tuple, kw: dict) -> Any:
    """The checked call with the generic implementation (forced), and its metadata."""
    import xpsoftmax
    from xpsoftmax import _api

    with xpsoftmax.force_generic():
        return _api._checked_call(op, *args, **kw)


def _serves_generically(fn: Callable[..., Any], op: str, args: tuple, kw: dict) -> bool:
    """Whether ``fn`` is xpsoftmax's own public ``op`` and the registry serves this call with
    the generic implementation: the public function runs exactly the plan the kit has just
    run (``_checked_call(...).run()``), so its result is that one, and the kit does not
    compute it twice (on Dask and eager JAX most calls of the grid are generic). Its values
    are still checked against the reference."""
    import xpsoftmax
    from xpsoftmax import _api

    if fn is not getattr(xpsoftmax, op, None):
        return False
    return bool(_api._checked_call(op, *args, **kw).name == "generic")


def through_entry(entry: Any) -> Any:
    """A function that calls the fast path ``entry`` (a ``FastPath``) directly, with the
    public function's arguments (checked as the public call checks them), whichever entry
    the registry would choose: for :func:`check_implementation` with ``accepts=entry.accepts``.
    """

    def fast(*args: Any, **kw: Any) -> Any:
        plan = _plan(entry.op, args, kw)
        return dataclasses.replace(plan, impl=entry.impl, name=entry.name).run()

    fast.__name__ = entry.name
    return fast


def _tolerance(dtype: Any) -> tuple[float, float]:
    name = cases.dtype_name(dtype)
    eps = EPS.get(name, EPS["float64"])
    return ULPS * eps, ULPS * eps


def _magnitude(b: Backend, args: tuple, kw: dict) -> float:
    """max |x / T| over the finite inputs: rounding x / T (or x - max) costs that many units
    of rounding on any path, so differences between paths scale with it. For the linear
    cross-entropy, x is the logits (computed here), times the hidden size: each logit is a
    sum of that many rounded products."""
    x = b.numpy_float(args[0])
    if len(args) == 3 and args[0].ndim >= 1 and getattr(args[1], "ndim", 0) == 2:
        x = _linear_logits(b, args, kw)
        x = x * max(1, args[1].shape[1])
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


def _linear_logits(b: Backend, args: tuple, kw: dict) -> np.ndarray:
    """The logits ``h @ W.T + bias`` in float64, with the class axis last."""
    axis = kw.get("axis", -1)
    h = np.moveaxis(b.numpy_float(args[0]), axis, -1)
    with np.errstate(all="ignore"):
        z = h @ b.numpy_float(args[1]).T
        bias = kw.get("bias")
        return z if bias is None else z + b.numpy_float(bias)


def _first(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) else result


def _compare(b: Backend, fast: Any, generic: Any, what: str, magnitude: float) -> None:
    fast_t = fast if isinstance(fast, tuple) else (fast,)
    gen_t = generic if isinstance(generic, tuple) else (generic,)
    assert len(fast_t) == len(gen_t), f"{what}: {len(fast_t)} results, generic gives {len(gen_t)}"
    for i, (f, g) in enumerate(zip(fast_t, gen_t)):
        if f is None or g is None:  # db without a bias
            assert f is None and g is None, f"{what} [result {i}]: {f!r}, generic gives {g!r}"
            continue
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


def _reference(op: str, b: Backend, args: tuple, kw: dict) -> Any | None:
    """The extended-precision reference for the call, or None where it has none."""
    from xpsoftmax._checks import classify_temperature

    if op.startswith("linear_"):
        return _linear_reference(op, b, args, kw)
    t = kw.get("temperature", 1.0)
    if not isinstance(t, (int, float)):
        return None  # arrays: compared with the generic path only
    # The contract's rule: the temperature as the computation dtype holds it; the limits
    # (0, subnormal, overflowing) are compared with the generic path only.
    dtype = cases.compute_dtype(cases.dtype_name(args[0].dtype))
    kind = classify_temperature(float(t), dtype)
    if kind.kind in ("zero", "inf"):
        return None
    t = kind.value
    x = b.numpy_float(args[0])
    where = kw.get("where")
    where_np = None if where is None else b.to_numpy(where)
    if op in ("softmax", "log_softmax"):
        fn = reference.softmax if op == "softmax" else reference.log_softmax
        return fn(x, kw.get("axis", -1), temperature=float(t), where=where_np)
    if op == "logsumexp" and where is None and not kw.get("return_sign"):
        bw = kw.get("b")
        return reference.logsumexp(
            x,
            kw.get("axis"),
            keepdims=bool(kw.get("keepdims")),
            b=None if bw is None else b.numpy_float(bw),
        )
    return None


def _linear_reference(op: str, b: Backend, args: tuple, kw: dict) -> Any | None:
    """What the linear cross-entropy stands for: the cross-entropy of the full logits, in
    float64 with NumPy (and ``(G W, G^T h, sum G)`` from its gradient ``G``), where the
    logits are finite in the computation dtype (beyond it the paths overflow alike)."""
    import xpsoftmax
    from xpsoftmax._checks import classify_temperature

    dtype = cases.compute_dtype(cases.dtype_name(args[0].dtype))
    kind = classify_temperature(float(kw.get("temperature", 1.0)), dtype)
    if kind.kind in ("zero", "inf"):
        return None  # the limits as the computation dtype judges them: vs the generic path
    axis = kw.get("axis", -1)
    z = np.moveaxis(_linear_logits(b, args, kw), -1, axis)
    finite = z[~np.isnan(z) & (np.abs(z) != INF)]
    if finite.size and np.abs(finite).max() > np.finfo(dtype).max / 1e3:
        return None
    options = {k: v for k, v in kw.items() if k not in ("bias", "chunk_size")}
    options["temperature"] = kind.value
    if "weight" in options:
        options["weight"] = b.numpy_float(options["weight"])
    target = b.to_numpy(args[2])
    if np.issubdtype(target.dtype, np.floating):
        target = target.astype(np.float64)
    if op == "linear_cross_entropy":
        return xpsoftmax.cross_entropy(z, target, **options)
    loss, g = xpsoftmax.cross_entropy_with_grad(z, target, **options)
    g_last = np.moveaxis(g, axis, -1)
    h = np.moveaxis(b.numpy_float(args[0]), axis, -1)
    rows = math.prod(h.shape[:-1])  # explicit: reshape(-1, 0) is ambiguous
    g_rows, h_rows = g_last.reshape(rows, g_last.shape[-1]), h.reshape(rows, h.shape[-1])
    with np.errstate(all="ignore"):
        dh = np.moveaxis((g_rows @ b.numpy_float(args[1])).reshape(h.shape), -1, axis)
        dw = g_rows.T @ h_rows
    db = g_rows.sum(axis=0) if "bias" in kw else None
    return loss, dh, dw, db


def _rounded(ref: np.ndarray, dtype: Any) -> np.ndarray:
    """The reference rounded to the result's dtype: a value beyond its range is an infinity
    there (``log_softmax`` at ``T = 1e-39`` in float32)."""
    name = cases.dtype_name(dtype)
    target = np.float32 if name == "bfloat16" else np.dtype(name)
    with np.errstate(over="ignore"):
        return ref.astype(target).astype(np.float64)


def check_implementation(
    op: str,
    fn: Callable[..., Any],
    backend: Backend,
    dtype: str = "float64",
    *,
    rng: np.random.Generator | None = None,
    accepts: Callable[[Any], bool] | None = None,
    against_reference: bool = True,
    min_calls: int = MIN_CALLS,
) -> int:
    """Run the grid of ``op`` through ``fn`` and compare every result with the generic
    implementation and the extended-precision reference.

    Parameters
    ----------
    op : str
        ``"softmax"``, ``"log_softmax"``, ``"logsumexp"``, ``"cross_entropy"`` or
        ``"cross_entropy_with_grad"``: ``fn`` takes that function's arguments.
    fn : callable
        The implementation under test, e.g. your own kernel behind that signature.
    backend : Backend
        The array library and device to run on (one of ``xpsoftmax.testing.BACKENDS``).
    dtype : str, default "float64"
        The input dtype.
    rng : numpy.random.Generator, optional
        Source of the random inputs (a fixed seed by default).
    accepts : callable, optional
        Given the checked call's metadata (:class:`xpsoftmax.Call`), whether ``fn`` serves it;
        calls it does not serve are left out (a fast path's ``accepts``).
    against_reference : bool, default True
        Also compare with the extended-precision reference where it covers the call.
    min_calls : int
        Fewest calls ``fn`` must have served, so that a narrow ``accepts`` cannot pass
        untested.

    Returns
    -------
    int
        The number of calls checked.

    Raises
    ------
    AssertionError
        Listing every mismatch: the case, the options, the expected and the actual values.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> from xpsoftmax.testing import BY_ID, check_implementation
    >>> check_implementation("softmax", xpsoftmax.softmax, BY_ID["numpy"]) > 100
    True
    >>> def naive(x, axis=-1, *, temperature=1.0, where=None):
    ...     e = np.exp(x / temperature)
    ...     return e / e.sum(axis=axis, keepdims=True)
    >>> try:
    ...     check_implementation("softmax", naive, BY_ID["numpy"])
    ... except AssertionError as report:
    ...     print(str(report).splitlines()[0])
    naive vs the contract: ... failing case(s):
    """
    rng = np.random.default_rng(0) if rng is None else rng
    name = getattr(fn, "__name__", repr(fn))
    failures = cases.Failures()
    checked = 0
    for label, args, kw, plan in _accepted_calls(op, backend, dtype, rng, accepts):
        checked += 1
        what = f"{name}: {op}({label}) {dtype} on {backend.id}"
        with failures.check(what), np.errstate(all="ignore"), converting_once():
            generic = plan.run()
            got = generic if _serves_generically(fn, op, args, kw) else fn(*args, **kw)
            magnitude = _magnitude(backend, args, kw)
            _compare(backend, got, generic, f"{what} vs generic", magnitude)
            ref = _reference(op, backend, args, kw) if against_reference else None
            if ref is not None:
                # One reference result (the first of cross_entropy_with_grad's), or one per
                # result (the linear cross-entropy's gradients).
                pairs = zip(got, ref) if isinstance(ref, tuple) else [(_first(got), ref)]
                for i, (got_i, ref_i) in enumerate(pairs):
                    if ref_i is None:
                        continue
                    rtol, atol = _tolerance(got_i.dtype)
                    scale = 1.0 + magnitude
                    assert_close(
                        backend.numpy_float(got_i),
                        _rounded(np.asarray(ref_i), got_i.dtype),
                        rtol=rtol * scale,
                        atol=atol * scale,
                        what=f"{what} [result {i}] vs the float64 reference",
                    )
    failures.raise_if_any(f"{name} vs the contract: ")
    _require_calls(name, op, checked, min_calls)
    return checked


def _accepted_calls(
    op: str,
    backend: Backend,
    dtype: str,
    rng: np.random.Generator,
    accepts: Callable[[Any], bool] | None,
) -> Iterator[tuple[str, tuple, dict, Any]]:
    """The calls of the grid that ``accepts`` takes, as ``(label, args, kwargs, plan)`` (the
    plan runs the generic implementation)."""
    for label, args, kw in calls(op, backend, dtype, rng):
        try:
            plan = _plan(op, args, kw)
        except ValueError:
            continue  # e.g. a temperature shape that does not fit a 0-d input
        if accepts is None or accepts(plan.call):
            yield label, args, kw, plan


def _require_calls(name: str, op: str, checked: int, min_calls: int) -> None:
    """So that a narrow ``accepts`` cannot pass untested."""
    if checked < min_calls:
        raise AssertionError(
            f"{name} ({op}) served only {checked} calls of the grid (fewer than {min_calls}): "
            "it is not really checked"
        )


def fast_path_params() -> list[Any]:
    """Every registered fast path on every backend of its library and device, in each dtype
    both have, as ``pytest.param(entry, backend, dtype)`` (marked ``gpu`` on a GPU)."""
    import pytest

    import xpsoftmax

    from .backends import BACKENDS

    params = []
    for entry in xpsoftmax.fast_paths():
        for b in BACKENDS:
            if b.library != entry.library or b.device not in entry.devices:
                continue
            marks = b.marks()
            for dtype in entry.dtypes:
                if dtype in b.dtypes:
                    name = f"{entry.op}-{entry.name}-{b.id}-{dtype}"
                    params.append(pytest.param(entry, b, dtype, id=name, marks=marks))
    return params
