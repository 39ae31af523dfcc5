"""Values of softmax, log_softmax and logsumexp (and a simple cross-entropy check) on every
backend and dtype, against the extended-precision references of ``xpsoftmax.testing.reference``.

Tolerances by dtype: float64 ~1e-12 relative, float32 ~1e-5; 16-bit inputs are compared with
the reference *of the input rounded to that dtype*: softmax and log_softmax (which return the
16-bit dtype) within about one unit of the 16-bit rounding, logsumexp and cross-entropy (which
return float32, computed in float32) within float32's tolerance. NaN and infinity positions
must match exactly everywhere.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest

import xpsoftmax
from xpsoftmax.testing import cases
from xpsoftmax.testing import reference as R
from xpsoftmax.testing.cases import EPS, SIXTEEN_BIT, assert_close, compute_dtype, dtype_name

INF = math.inf
NAN = math.nan
LD = np.longdouble

DTYPES = ("float64", "float32", "float16", "bfloat16")
NORMS = ("softmax", "log_softmax")
OPS = ("softmax", "log_softmax", "logsumexp")

#: Relative tolerance of results computed in (and returned in) each dtype.
RTOL = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 2 * EPS["float16"],
    "bfloat16": 2 * EPS["bfloat16"],
}
#: Absolute tolerance for probabilities (underflow, 16-bit subnormals).
TINY = {"float64": 1e-300, "float32": 1e-37, "float16": 1e-7, "bfloat16": 1e-37}
#: Absolute tolerance for log-probabilities near 0.
LOG_ATOL = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-6, "bfloat16": 1e-6}


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return cases.rng_for(request)


@pytest.fixture(params=DTYPES)
def dtype(request: pytest.FixtureRequest, backend) -> str:
    if request.param not in backend.dtypes:
        pytest.skip(f"{backend.id} has no {request.param}")
    return request.param


def _library_of(out: object) -> str:
    ns = array_api_compat.array_namespace(out)
    c = array_api_compat
    for name, test in (
        ("numpy", c.is_numpy_namespace),
        ("torch", c.is_torch_namespace),
        ("jax", c.is_jax_namespace),
        ("cupy", c.is_cupy_namespace),
        ("dask", c.is_dask_namespace),
        ("array_api_strict", c.is_array_api_strict_namespace),
    ):
        if test(ns):
            return name
    return "?"


def check_result(backend, out, x, dtype: str, shape: tuple[int, ...], what: str = "") -> None:
    """Same library and device as ``x``, never a NumPy scalar; dtype and shape as given."""
    if backend.library == "numpy":
        assert isinstance(out, np.ndarray), (
            f"{what}: NumPy input gave {type(out).__name__}, not an ndarray"
        )
    else:
        assert not isinstance(out, (np.ndarray, np.generic)), (
            f"{what}: {backend.library} input gave a NumPy {type(out).__name__}"
        )
        assert _library_of(out) == backend.library, (
            f"{what}: {backend.library} input gave a {_library_of(out)} array ({type(out).__name__})"
        )
    assert dtype_name(out.dtype) == dtype, (
        f"{what}: dtype {dtype_name(out.dtype)}, expected {dtype}"
    )
    assert tuple(out.shape) == tuple(shape), f"{what}: shape {tuple(out.shape)}, expected {shape}"
    dev_out, dev_x = array_api_compat.device(out), array_api_compat.device(x)
    assert dev_out == dev_x, f"{what}: result on {dev_out}, input on {dev_x}"


def rounded(backend, a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` (through the backend), as float64 NumPy data."""
    return backend.numpy_float(backend.asarray(np.asarray(a, dtype=np.float64), dtype))


def same_input(backend, xb, x_before: np.ndarray, what: str) -> None:
    after = backend.numpy_float(xb)
    assert np.array_equal(after, x_before, equal_nan=True), f"{what}: the input was modified"


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def ref_norm(
    op: str, x: np.ndarray, axis: object, temperature: float = 1.0, where=None
) -> np.ndarray:
    fn = R.softmax if op == "softmax" else R.log_softmax
    with np.errstate(all="ignore"):
        return fn(x, axis, temperature, where)


def ref_logsumexp(
    x: np.ndarray, axis: object, keepdims: bool = False, b=None, where=None
) -> np.ndarray:
    """reference.logsumexp plus empty inputs and ``where`` (as ``b = 0`` where False)."""
    axes = cases.normalize_axes(axis, x.ndim)
    if x.size == 0:
        return np.full(reduced_shape(x.shape, axes, keepdims), -INF)
    if where is not None:
        w = np.broadcast_to(where, x.shape).astype(np.float64)
        b = w if b is None else np.broadcast_to(b, x.shape) * w
    with np.errstate(all="ignore"):
        out = R.logsumexp(x, axis, keepdims, b)
    return np.asarray(out, dtype=np.float64).reshape(reduced_shape(x.shape, axes, keepdims))


def ref_logsumexp_sign(x: np.ndarray, axis: object, b: np.ndarray, keepdims: bool = False):
    """``(log|sum b exp x|, sign)`` in extended precision; entries with b == 0 take no part."""
    x = np.asarray(x, dtype=LD)
    axes = cases.normalize_axes(axis, x.ndim)
    b = np.broadcast_to(np.asarray(b, dtype=LD), x.shape)
    part = b != 0
    xm = np.where(part, x, -INF)
    with np.errstate(all="ignore"):
        m = np.max(xm, axis=axes, keepdims=True) if axes else xm
        m = np.where(np.isfinite(m), m, 0)
        s = np.sum(np.where(part, b * np.exp(xm - m), 0), axis=axes, keepdims=True)
        lse = np.where(s == 0, -INF, np.log(np.abs(s)) + m)
    sign = np.sign(s)
    shape = reduced_shape(x.shape, axes, keepdims)
    return lse.astype(np.float64).reshape(shape), sign.astype(np.float64).reshape(shape)


def slice_scale(x: np.ndarray, axes: tuple[int, ...], keepdims: bool, where=None) -> np.ndarray:
    """The largest finite |x| of each slice that takes part (0 for none), in the reduced shape."""
    part = np.isfinite(x)
    if where is not None:
        part = part & np.broadcast_to(where, x.shape)
    a = np.where(part, np.abs(np.where(np.isfinite(x), x, 0.0)), 0.0)
    if x.size == 0:
        return np.zeros(reduced_shape(x.shape, axes, keepdims))
    out = np.max(a, axis=axes, keepdims=True) if axes else a
    return out.reshape(reduced_shape(x.shape, axes, keepdims))


def backend_where(backend, where):
    return None if where is None else backend.asarray(np.asarray(where, dtype=bool))


def norm_tolerances(op: str, dtype: str) -> tuple[float, float]:
    return RTOL[dtype], (TINY[dtype] if op == "softmax" else LOG_ATOL[dtype])


def check_normalization(
    backend,
    dtype,
    op,
    x,
    axis,
    *,
    temperature=1.0,
    where=None,
    expected=None,
    pass_axis=True,
    what="",
):
    """Run ``op`` on ``x`` (float64 NumPy data) in ``dtype`` and compare with the reference of
    the input rounded to ``dtype``."""
    xb = backend.asarray(x, dtype)
    xr = backend.numpy_float(xb)
    kwargs = {}
    if pass_axis:
        kwargs["axis"] = axis
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):
        kwargs["temperature"] = temperature
    if where is not None:
        kwargs["where"] = backend_where(backend, where)
    out = getattr(xpsoftmax, op)(xb, **kwargs)
    what = f"{op}({what or 'x'}, dtype={dtype}, axis={axis!r}, temperature={temperature!r}, where={where is not None}) on {backend.id}"
    same_input(backend, xb, xr, what)
    if expected is None:
        expected = ref_norm(op, xr, axis, temperature, where)
    if dtype in SIXTEEN_BIT:
        expected = rounded(backend, expected, dtype)
    rtol, atol = norm_tolerances(op, dtype)
    assert_close(backend.numpy_float(out), expected, rtol=rtol, atol=atol, what=what)
    check_result(backend, out, xb, dtype, tuple(x.shape), what)
    return out


def check_logsumexp(
    backend, dtype, x, axis, *, keepdims=False, where=None, pass_axis=True, what=""
):
    xb = backend.asarray(x, dtype)
    xr = backend.numpy_float(xb)
    kwargs = {}
    if pass_axis:
        kwargs["axis"] = axis
    if keepdims:
        kwargs["keepdims"] = True
    if where is not None:
        kwargs["where"] = backend_where(backend, where)
    out = xpsoftmax.logsumexp(xb, **kwargs)
    axes = cases.normalize_axes(axis, x.ndim)
    cd = compute_dtype(dtype)
    what = f"logsumexp({what or 'x'}, dtype={dtype}, axis={axis!r}, keepdims={keepdims}, where={where is not None}) on {backend.id}"
    same_input(backend, xb, xr, what)
    expected = ref_logsumexp(xr, axis, keepdims, where=where)
    scale = slice_scale(xr, axes, keepdims, where)
    assert_close(
        backend.numpy_float(out), expected, rtol=RTOL[cd], atol=RTOL[cd] * (1 + scale), what=what
    )
    check_result(backend, out, xb, cd, reduced_shape(x.shape, axes, keepdims), what)


# --- the catalogue and random inputs ----------------------------------------------------------


@pytest.mark.parametrize("name", cases.NAMES)
@pytest.mark.parametrize("op", OPS)
def test_catalogue(backend, dtype, op, name, rng):
    case = cases.make(name, rng)
    if op == "logsumexp":
        # axis=None is the default: exercise it by leaving the argument out.
        for keepdims in (False, True):
            check_logsumexp(
                backend,
                dtype,
                case.x,
                case.axis,
                keepdims=keepdims,
                where=case.where,
                pass_axis=case.axis is not None,
                what=name,
            )
    else:
        # axis=-1 is the default of the normalisations.
        check_normalization(
            backend,
            dtype,
            op,
            case.x,
            case.axis,
            where=case.where,
            pass_axis=case.axis != -1,
            what=name,
        )


@pytest.mark.parametrize("op", OPS)
def test_random_inputs(backend, dtype, op, rng):
    failures = cases.Failures()
    for case in cases.random_cases(rng, n=4):
        keepdims = bool(rng.integers(2))
        with failures.check(repr(case)):
            if op == "logsumexp":
                check_logsumexp(
                    backend, dtype, case.x, case.axis, keepdims=keepdims, what=case.name
                )
            else:
                check_normalization(backend, dtype, op, case.x, case.axis, what=case.name)
    failures.raise_if_any()


@pytest.mark.parametrize("op", NORMS)
def test_softmax_properties(backend, op, rng):
    """Independent of the reference: rows sum to 1 / exp(log_softmax) sums to 1, and a shift
    of the input changes nothing."""
    x = rng.standard_normal((4, 6)) * 10
    out = backend.numpy_float(getattr(xpsoftmax, op)(backend.asarray(x, "float64")))
    shifted = backend.numpy_float(getattr(xpsoftmax, op)(backend.asarray(x + 1234.5, "float64")))
    p = out if op == "softmax" else np.exp(out)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(shifted, out, rtol=1e-9, atol=1e-9)
    lse = backend.numpy_float(xpsoftmax.logsumexp(backend.asarray(x, "float64"), axis=-1))
    logp = backend.numpy_float(xpsoftmax.log_softmax(backend.asarray(x, "float64")))
    np.testing.assert_allclose(logp, x - lse[:, None], rtol=1e-12, atol=1e-12)


# --- Python input and the contract example --------------------------------------------------


def test_contract_example_list_input():
    out = xpsoftmax.softmax([1000.0, 1001.0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, [0.2689414213699951, 0.7310585786300049], rtol=1e-14)
    np.testing.assert_array_equal(out.round(4), [0.2689, 0.7311])


def test_python_inputs():
    out = xpsoftmax.log_softmax((0.0, 0.0))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [-math.log(2)] * 2, rtol=1e-15)
    lse = xpsoftmax.logsumexp([[1000.0, 1000.0], [-INF, -INF]], axis=1)
    assert isinstance(lse, np.ndarray) and lse.shape == (2,)
    np.testing.assert_allclose(lse[0], 1000.0 + math.log(2), rtol=1e-15)
    assert lse[1] == -INF
    scalar = xpsoftmax.logsumexp(3.0)
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar.dtype == np.float64
    assert float(scalar) == 3.0
    for fn, value in ((xpsoftmax.softmax, 1.0), (xpsoftmax.log_softmax, 0.0)):
        r = fn(2.5)
        assert isinstance(r, np.ndarray) and r.shape == (), (
            f"{fn.__name__}(2.5) gave {type(r).__name__}"
        )
        assert float(r) == value
    ints = xpsoftmax.softmax([1, 2, 3])
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, R.softmax(np.array([1.0, 2.0, 3.0])), rtol=1e-14)


@pytest.mark.parametrize("op", OPS)
def test_numpy_zero_d_gives_ndarray(op):
    """A 0-d NumPy input (and a full reduction) gives a 0-d ndarray, never a NumPy scalar."""
    for x in (np.array(2.5), np.array(-INF), np.ones((2, 3))):
        for kwargs in ({}, {"axis": None}):
            if op != "logsumexp" and x.ndim and not kwargs:
                continue
            out = getattr(xpsoftmax, op)(x, **kwargs)
            assert isinstance(out, np.ndarray), (
                f"{op}(np.{x!r}, **{kwargs}) returned {type(out).__name__}, not an ndarray"
            )


# --- temperature ----------------------------------------------------------------------------

TEMPERATURE_CASES = (
    "random_2d",
    "ties",
    "partly_neginf",
    "all_neginf_row",
    "nan",
    "posinf",
    "huge_1e4",
    "huge_neg_1e30",
    "masked",
    "masked_nonfinite",
    "random_non_last_axis",
    "tuple_axes",
    "empty_3x0",
    "zero_d",
)


@pytest.mark.parametrize("temperature", [0, 0.5, 2, INF], ids=["T0", "T0.5", "T2", "Tinf"])
@pytest.mark.parametrize("op", NORMS)
def test_temperature_scalar(backend, dtype, op, temperature, rng):
    failures = cases.Failures()
    for name in TEMPERATURE_CASES:
        case = cases.make(name, rng)
        with failures.check(name):
            check_normalization(
                backend,
                dtype,
                op,
                case.x,
                case.axis,
                temperature=temperature,
                where=case.where,
                what=name,
            )
    failures.raise_if_any()


def test_temperature_zero_is_hard_max(backend):
    x = backend.asarray(np.array([[1.0, 3.0, 3.0], [2.0, -INF, 0.0]]), "float64")
    p = backend.numpy_float(xpsoftmax.softmax(x, temperature=0))
    np.testing.assert_array_equal(p, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    u = backend.numpy_float(xpsoftmax.softmax(x, temperature=INF))
    np.testing.assert_allclose(u, [[1 / 3] * 3, [0.5, 0.0, 0.5]], rtol=1e-15)


def _ref_norm_tarray(op, x, axis, t_keep, where=None):
    """Per-slice reference with a temperature array (keepdims shape); a negative or NaN
    temperature gives a NaN slice."""
    axes = cases.normalize_axes(axis, x.ndim)
    rshape = reduced_shape(x.shape, axes, True)
    t = np.broadcast_to(np.asarray(t_keep, dtype=np.float64), rshape)
    w = None if where is None else np.broadcast_to(where, x.shape)
    out = np.empty(x.shape)
    rest = [i for i in range(x.ndim) if i not in axes]
    for pos in np.ndindex(*[x.shape[i] for i in rest]):
        idx: list[object] = [slice(None)] * x.ndim
        tidx = [0] * x.ndim
        for i, p in zip(rest, pos):
            idx[i] = p
            tidx[i] = p
        ti = float(t[tuple(tidx)])
        sl = tuple(idx)
        if math.isnan(ti) or ti < 0:
            out[sl] = NAN
        else:
            out[sl] = ref_norm(op, x[sl], None, ti, None if w is None else w[sl])
    return out


@pytest.mark.parametrize("op", NORMS)
def test_temperature_array(backend, dtype, op, rng):
    x = rng.standard_normal((8, 4)) * 3
    x[0] = [1.0, 3.0, 3.0, -2.0]
    x[2] = [1.0, -INF, 2.0, 5.0]
    x[5] = -INF
    x[7] = -INF
    t = np.array([[0.0], [0.5], [INF], [-1.0], [2.0], [0.0], [NAN], [INF]])
    tdt = compute_dtype(dtype)
    tb = backend.asarray(t, tdt)
    check_normalization(
        backend,
        dtype,
        op,
        x,
        -1,
        temperature=tb,
        expected=_ref_norm_tarray(op, rounded(backend, x, dtype), -1, t),
        what="per-row temperatures",
    )
    # where with a temperature array: limits over the entries that take part.
    w = rng.random((8, 4)) < 0.7
    w[1] = False
    w[0] = [True, True, False, True]
    check_normalization(
        backend,
        dtype,
        op,
        x,
        -1,
        temperature=tb,
        where=w,
        expected=_ref_norm_tarray(op, rounded(backend, x, dtype), -1, t, w),
        what="per-row temperatures, masked",
    )
    # Non-last axis, tuple axes, and a 0-d temperature array.
    y = rng.standard_normal((4, 3)) * 3
    t0 = np.array([[0.0, 2.0, INF]])
    check_normalization(
        backend,
        dtype,
        op,
        y,
        0,
        temperature=backend.asarray(t0, tdt),
        expected=_ref_norm_tarray(op, rounded(backend, y, dtype), 0, t0),
        what="per-column temperatures",
    )
    z = rng.standard_normal((2, 3, 4)) * 3
    t3 = np.array([0.5, 0.0, INF]).reshape(1, 3, 1)
    check_normalization(
        backend,
        dtype,
        op,
        z,
        (0, 2),
        temperature=backend.asarray(t3, tdt),
        expected=_ref_norm_tarray(op, rounded(backend, z, dtype), (0, 2), t3),
        what="tuple axes, per-slice temperatures",
    )
    tz = np.array(0.5)
    check_normalization(
        backend,
        dtype,
        op,
        z,
        -1,
        temperature=backend.asarray(tz, tdt),
        expected=_ref_norm_tarray(op, rounded(backend, z, dtype), -1, tz),
        what="0-d temperature array",
    )


@pytest.mark.parametrize("bad", [-1.0, NAN, -INF])
def test_temperature_scalar_invalid(backend, bad):
    x = backend.asarray(np.ones((2, 3)), "float64")
    for op in NORMS:
        with pytest.raises(ValueError, match="temperature"):
            getattr(xpsoftmax, op)(x, temperature=bad)


# --- logsumexp: b, return_sign, where, keepdims ---------------------------------------------


def _b_dtype(dtype: str) -> str:
    return compute_dtype(dtype)


def _lse_call(backend, dtype, x, axis, b=None, where=None, keepdims=False, return_sign=False):
    xb = backend.asarray(x, dtype)
    kwargs = {"axis": axis, "keepdims": keepdims, "return_sign": return_sign}
    if b is not None:
        kwargs["b"] = backend.asarray(b, _b_dtype(dtype))
    if where is not None:
        kwargs["where"] = backend_where(backend, where)
    return xb, xpsoftmax.logsumexp(xb, **kwargs)


def _lse_tol(backend, dtype, xr, axis, keepdims, part=None):
    cd = compute_dtype(dtype)
    axes = cases.normalize_axes(axis, xr.ndim)
    return cd, RTOL[cd], RTOL[cd] * (1 + slice_scale(xr, axes, keepdims, part))


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)])
def test_logsumexp_b_positive(backend, dtype, axis, keepdims, rng):
    x = rng.standard_normal((3, 4)) * 3
    b = rng.uniform(0.1, 3.0, (3, 4))
    b[0, 1] = 0.0
    for bb in (b, b[1]):  # full shape and broadcast (4,)
        xb, out = _lse_call(backend, dtype, x, axis, b=bb, keepdims=keepdims)
        xr = rounded(backend, x, dtype)
        br = rounded(backend, np.broadcast_to(bb, x.shape), _b_dtype(dtype))
        cd, rtol, atol = _lse_tol(backend, dtype, xr, axis, keepdims)
        what = f"logsumexp(x, b, axis={axis}, keepdims={keepdims}) {dtype} on {backend.id}"
        shape = reduced_shape(x.shape, cases.normalize_axes(axis, 2), keepdims)
        check_result(backend, out, xb, cd, shape, what)
        assert_close(
            backend.numpy_float(out),
            ref_logsumexp(xr, axis, keepdims, b=br),
            rtol=rtol,
            atol=atol,
            what=what,
        )


@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_return_sign(backend, dtype, keepdims, rng):
    x = rng.standard_normal((5, 4)) * 2
    b = rng.uniform(0.5, 2.0, (5, 4))
    b[1] = -b[1]  # negative sum
    b[2] = 0.0  # zero sum (no entry takes part)
    x[3, :2] = 0.5
    b[3] = [1.0, -1.0, 0.0, 0.0]  # exact cancellation: zero sum
    b[4, :2] *= -1  # mixed signs
    xr = rounded(backend, x, dtype)
    br = rounded(backend, b, _b_dtype(dtype))
    cd, rtol, atol = _lse_tol(backend, dtype, xr, -1, keepdims)
    exp_lse, exp_sign = ref_logsumexp_sign(xr, -1, br, keepdims)
    shape = (5, 1) if keepdims else (5,)

    xb, res = _lse_call(backend, dtype, x, -1, b=b, keepdims=keepdims, return_sign=True)
    what = f"logsumexp(x, b, return_sign=True, keepdims={keepdims}) {dtype} on {backend.id}"
    assert isinstance(res, tuple) and len(res) == 2, f"{what}: got {type(res).__name__}"
    lse, sign = res
    check_result(backend, lse, xb, cd, shape, what + " [lse]")
    check_result(backend, sign, xb, cd, shape, what + " [sign]")
    assert_close(backend.numpy_float(lse), exp_lse, rtol=rtol, atol=atol, what=what + " [lse]")
    assert_close(backend.numpy_float(sign), exp_sign, rtol=0, atol=0, what=what + " [sign]")
    assert list(exp_sign.reshape(-1)[:4]) == [1.0, -1.0, 0.0, 0.0]  # the cases are what they claim

    # Without return_sign, a negative sum is NaN and a zero sum is -inf.
    xb, out = _lse_call(backend, dtype, x, -1, b=b, keepdims=keepdims)
    plain = np.where(exp_sign < 0, NAN, exp_lse)
    assert_close(
        backend.numpy_float(out),
        plain,
        rtol=rtol,
        atol=atol,
        what=f"logsumexp(x, b) with negative sums {dtype} on {backend.id}",
    )


def test_logsumexp_b_zero_excludes_nonfinite(backend, dtype):
    """Entries with b == 0 take no part, even where x is +inf, -inf or NaN."""
    x = np.array(
        [[1.0, INF, 2.0], [NAN, 0.0, 1.0], [-INF, INF, NAN], [INF, NAN, 3.0], [INF, 1.0, 2.0]]
    )
    b = np.array(
        [[1.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    )
    xr = rounded(backend, x, dtype)
    br = rounded(backend, b, _b_dtype(dtype))
    cd, rtol, atol = _lse_tol(backend, dtype, xr, -1, False, br != 0)
    expected = ref_logsumexp(xr, -1, b=br)
    # Sanity of the expectation itself: finite, finite, -inf (only -inf takes part), -inf, +inf.
    assert np.isfinite(expected[:2]).all() and expected[2] == -INF and expected[3] == -INF
    assert expected[4] == INF
    xb, out = _lse_call(backend, dtype, x, -1, b=b)
    what = f"logsumexp(x with inf/NaN, b == 0 there) {dtype} on {backend.id}"
    check_result(backend, out, xb, cd, (5,), what)
    assert_close(backend.numpy_float(out), expected, rtol=rtol, atol=atol, what=what)
    xb, (lse, sign) = _lse_call(backend, dtype, x, -1, b=b, return_sign=True)
    assert_close(
        backend.numpy_float(lse), expected, rtol=rtol, atol=atol, what=what + " [return_sign]"
    )
    assert_close(
        backend.numpy_float(sign), [1.0, 1.0, 0.0, 0.0, 1.0], rtol=0, atol=0, what=what + " [sign]"
    )


def test_logsumexp_b_and_where(backend, dtype, rng):
    x = rng.standard_normal((3, 4)) * 2
    x[0, 0] = NAN  # masked out
    b = rng.uniform(0.5, 2.0, (3, 4))
    w = np.array(
        [[False, True, True, True], [False, False, False, False], [True, False, True, True]]
    )
    xr = rounded(backend, x, dtype)
    br = rounded(backend, b, _b_dtype(dtype))
    cd, rtol, atol = _lse_tol(backend, dtype, xr, -1, False, w)
    xb, out = _lse_call(backend, dtype, x, -1, b=b, where=w)
    what = f"logsumexp(x, b, where) {dtype} on {backend.id}"
    check_result(backend, out, xb, cd, (3,), what)
    expected = ref_logsumexp(xr, -1, b=br, where=w)
    assert expected[1] == -INF and np.isfinite(expected[[0, 2]]).all()
    assert_close(backend.numpy_float(out), expected, rtol=rtol, atol=atol, what=what)


def test_logsumexp_keepdims_shapes(backend):
    x = backend.asarray(np.zeros((2, 3, 4)), "float64")
    for axis, keep, plain in (
        (None, (1, 1, 1), ()),
        (1, (2, 1, 4), (2, 4)),
        ((0, 2), (1, 3, 1), (3,)),
        (-1, (2, 3, 1), (2, 3)),
    ):
        k = xpsoftmax.logsumexp(x, axis=axis, keepdims=True)
        p = xpsoftmax.logsumexp(x, axis=axis)
        assert tuple(k.shape) == keep and tuple(p.shape) == plain, (axis, k.shape, p.shape)
        n = 24 // math.prod(plain) if plain else 24
        np.testing.assert_allclose(backend.numpy_float(k).reshape(-1), math.log(n), rtol=1e-15)


# --- integer and boolean input ----------------------------------------------------------------


def _default_float(backend) -> str:
    if backend.library == "torch":
        import torch

        return dtype_name(torch.get_default_dtype())
    if backend.library == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


@pytest.mark.parametrize("src", ["int64", "int32", "bool"])
@pytest.mark.parametrize("op", OPS)
def test_integer_and_bool_promotion(backend, op, src, rng):
    if src == "bool":
        x = rng.random((3, 4)) < 0.5
    else:
        x = rng.integers(-5, 6, size=(3, 4))
    xb = backend.asarray(x, src)
    assert dtype_name(xb.dtype) == src
    fdt = _default_float(backend)
    xf = x.astype(np.float64)
    what = f"{op}({src} input) on {backend.id}"
    if op == "logsumexp":
        out = xpsoftmax.logsumexp(xb, axis=1)
        check_result(backend, out, xb, fdt, (3,), what)
        expected = ref_logsumexp(xf, 1)
    else:
        out = getattr(xpsoftmax, op)(xb)
        check_result(backend, out, xb, fdt, (3, 4), what)
        expected = ref_norm(op, xf, -1)
    assert_close(backend.numpy_float(out), expected, rtol=RTOL[fdt], atol=RTOL[fdt], what=what)


# --- cross-entropy: a simple value check ----------------------------------------------------


def ref_cross_entropy(
    x,
    target,
    axis,
    index,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    temperature=1.0,
    z_loss=0.0,
):
    """Loss and d loss / d logits in extended precision, from the definitions (PyTorch's
    semantics; a zero mean denominator gives 0; z-loss as in the contract)."""
    xl = np.moveaxis(np.asarray(x, dtype=LD), axis, -1) / LD(temperature)
    n_classes = xl.shape[-1]
    w = np.ones(n_classes, dtype=LD) if weight is None else np.asarray(weight, dtype=LD)
    eps = LD(label_smoothing)
    batch = xl.shape[:-1]
    per = np.zeros(batch, dtype=LD)
    grad = np.zeros(xl.shape, dtype=LD)
    den = LD(0)
    y_all = None if index else np.moveaxis(np.asarray(target, dtype=LD), axis, -1)
    with np.errstate(all="ignore"):
        for pos in np.ndindex(*batch):
            z = xl[pos]
            m = z.max()
            empty = m == -INF
            if empty:
                logp = np.full(n_classes, -INF, dtype=LD)
                p = np.zeros(n_classes, dtype=LD)
                lse = LD(-INF)
            else:
                e = np.exp(z - m)
                s = e.sum()
                lse = m + np.log(s)
                logp = z - lse
                p = e / s
            if index:
                t = int(np.asarray(target)[pos])
                if t == ignore_index:
                    continue
                wt = w[t]
                den += wt
                if empty:
                    per[pos] = INF
                    continue
                loss = (1 - eps) * wt * (-logp[t])
                if eps:
                    loss += eps / n_classes * np.sum(np.where(w == 0, 0, w * -logp))
                if z_loss:
                    loss += LD(z_loss) * wt * lse * lse
                per[pos] = loss
                coef = (1 - eps) * wt + eps / n_classes * w.sum() + 2 * LD(z_loss) * wt * lse
                y = eps / n_classes * w
                y[t] += (1 - eps) * wt
                grad[pos] = coef * p - y
            else:
                y = y_all[pos]
                wy = w * (y * (1 - eps) + eps / n_classes)
                loss = np.sum(np.where(wy == 0, 0, wy * -logp))
                we = np.sum(w * y)
                if z_loss and we != 0:
                    loss += LD(z_loss) * we * (INF if empty else lse * lse)
                per[pos] = loss
                if not empty:
                    grad[pos] = (wy.sum() + 2 * LD(z_loss) * we * lse) * p - wy
        if not index:
            den = LD(math.prod(batch))
        if reduction == "none":
            loss_out, scale = per, LD(1)
        elif reduction == "sum":
            loss_out, scale = per.sum(), LD(1)
        else:
            loss_out = LD(0) if den == 0 else per.sum() / den
            scale = LD(0) if den == 0 else 1 / den
    grad = np.moveaxis(grad * scale / LD(temperature), -1, axis)
    return np.asarray(loss_out, dtype=np.float64), grad.astype(np.float64)


CE_OPTIONS = {
    "mean": {},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "weight": {"weight": True},
    "weight_none": {"weight": True, "reduction": "none"},
    "smoothing": {"label_smoothing": 0.1},
    "smoothing_weight_sum": {"label_smoothing": 0.2, "weight": True, "reduction": "sum"},
    "z_loss_none": {"z_loss": 1e-3, "reduction": "none"},
    "temperature": {"temperature": 2.0},
}


@pytest.mark.parametrize("target_kind", ["index", "probs"])
@pytest.mark.parametrize("option", list(CE_OPTIONS))
def test_cross_entropy_values(backend, dtype, target_kind, option, rng):
    opts = dict(CE_OPTIONS[option])
    cd = compute_dtype(dtype)
    failures = cases.Failures()
    index = target_kind == "index"
    t_ = float(opts.get("temperature", 1.0))
    for case in cases.ce_catalogue(rng):
        n_classes = case.logits.shape[case.axis]
        kw = dict(opts)
        weight = None
        if kw.pop("weight", False):
            weight = rng.uniform(0.5, 2.0, n_classes)
            weight[-1] = 0.0  # a zero weight takes its entries out of the mean
            kw["weight"] = backend.asarray(weight, cd)
        target = case.index if index else case.probs
        lb = backend.asarray(case.logits, dtype)
        tb = backend.asarray(target, None) if index else backend.asarray(target, dtype)
        xr = backend.numpy_float(lb)
        tr = target if index else backend.numpy_float(tb)
        ref_kw = {k: v for k, v in opts.items() if k != "weight"}
        exp_loss, exp_grad = ref_cross_entropy(xr, tr, case.axis, index, weight=weight, **ref_kw)
        exp_loss = rounded(backend, exp_loss, cd)  # overflow of the computation dtype is inf
        fin = np.isfinite(xr)
        scale = 1 + (np.max(np.abs(xr[fin])) if fin.any() else 0.0) / t_
        atol = RTOL[cd] * scale ** (2 if opts.get("z_loss") else 1)
        gmax = float(np.max(np.abs(exp_grad), initial=0.0))
        if dtype in SIXTEEN_BIT:
            exp_grad = rounded(backend, exp_grad, dtype)
        what = f"cross_entropy({case!r}, {target_kind}, {option}) {dtype} on {backend.id}"

        with failures.check(what + " [cross_entropy]"):
            loss = xpsoftmax.cross_entropy(lb, tb, axis=case.axis, **kw)
            assert_close(backend.numpy_float(loss), exp_loss, rtol=RTOL[cd], atol=atol, what=what)
            check_result(backend, loss, lb, cd, exp_loss.shape, what)
        with failures.check(what + " [cross_entropy_with_grad]"):
            loss2, grad = xpsoftmax.cross_entropy_with_grad(lb, tb, axis=case.axis, **kw)
            assert_close(
                backend.numpy_float(loss2),
                exp_loss,
                rtol=RTOL[cd],
                atol=atol,
                what=what + " [with_grad loss]",
            )
            assert_close(
                backend.numpy_float(grad),
                exp_grad,
                rtol=RTOL[dtype],
                atol=RTOL[cd] * scale * max(gmax, 1e-30) + TINY[dtype],
                what=what + " [grad]",
            )
            check_result(backend, loss2, lb, cd, exp_loss.shape, what + " [with_grad loss]")
            check_result(backend, grad, lb, dtype, case.logits.shape, what + " [grad]")
    failures.raise_if_any()


def test_cross_entropy_contract_examples(backend):
    logits = backend.asarray(
        np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-INF, -INF, -INF]]), "float64"
    )
    t = backend.asarray(np.array([0, 2, 1]))
    per = backend.numpy_float(xpsoftmax.cross_entropy(logits, t, reduction="none"))
    np.testing.assert_allclose(per[:2], [math.log(1 + 2 * math.exp(-2)), math.log(3)], rtol=1e-14)
    assert per[2] == INF  # an all -inf row has loss +inf for an index target
    ignored = backend.asarray(np.array([-100, -100, -100]))
    assert float(backend.numpy_float(xpsoftmax.cross_entropy(logits, ignored))) == 0.0
