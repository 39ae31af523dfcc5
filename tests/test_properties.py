"""Property tests (hypothesis): laws that hold for every input, checked on generated arrays.

Each property runs on NumPy (fast path and forced generic path) and on the other CPU
libraries that are installed. Inputs are float64 with entries drawn from a wide range,
including -inf (but not +inf or NaN, whose slices are NaN by definition).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import xpsoftmax  # noqa: E402
from xpsoftmax.testing.backends import BY_ID  # noqa: E402

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: (backend id, force generic)
TARGETS = [
    ("numpy", False),
    ("numpy", True),
    ("torch:cpu", False),
    ("jax:cpu", False),
    ("array_api_strict", True),
]


@pytest.fixture(params=TARGETS, ids=[f"{b}-{'generic' if g else 'auto'}" for b, g in TARGETS])
def target(request: pytest.FixtureRequest):
    bid, generic = request.param
    b = BY_ID[bid]
    reason = b.probe()
    if reason is not None:
        pytest.skip(reason)
    return b, generic


def _ctx(generic: bool):
    return xpsoftmax.force_generic() if generic else contextlib.nullcontext()


# No subnormals: XLA on CPU flushes them to 0 (logsumexp([1e-308]) is 0 there), a platform
# property the contract does not promise against.
finite = st.floats(
    min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
with_neginf = st.one_of(finite, st.just(-math.inf))
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)


def arrays(elements=with_neginf):
    return hnp.arrays(np.float64, shapes, elements=elements)


@st.composite
def array_and_axis(draw, elements=with_neginf):
    x = draw(arrays(elements))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


@SETTINGS
@given(data=array_and_axis())
def test_softmax_is_a_distribution(target, data):
    """Entries in [0, 1]; each slice sums to 1, or to 0 when it is all -inf (an empty event)."""
    b, generic = target
    x, axis = data
    with _ctx(generic):
        p = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis))
    assert np.all((p >= 0) & (p <= 1))
    s = p.sum(axis=axis)
    empty = np.all(x == -math.inf, axis=axis)
    np.testing.assert_allclose(s, np.where(empty, 0.0, 1.0), atol=1e-12)


@SETTINGS
@given(data=array_and_axis(finite), shift=st.floats(-1e4, 1e4))
def test_shift_invariance(target, data, shift):
    """softmax(x + c) == softmax(x) and log_softmax likewise, for any constant c."""
    b, generic = target
    x, axis = data
    with _ctx(generic):
        p = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis))
        q = b.numpy_float(xpsoftmax.softmax(b.asarray(x + shift), axis=axis))
    # x + c rounds each entry by up to |x + c| * eps: that is the only difference allowed.
    tol = 8 * np.finfo(np.float64).eps * (np.abs(x).max() + abs(shift) + 1)
    np.testing.assert_allclose(q, p, rtol=tol, atol=tol)


@SETTINGS
@given(data=array_and_axis(finite))
def test_order_is_kept(target, data):
    """Monotone: a larger logit never gets a smaller probability (within its slice)."""
    b, generic = target
    x, axis = data
    with _ctx(generic):
        p = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis))
    xm, pm = np.moveaxis(x, axis, -1), np.moveaxis(p, axis, -1)
    bigger = xm[..., :, None] > xm[..., None, :]
    assert not np.any(bigger & (pm[..., :, None] < pm[..., None, :] - 1e-15))


@SETTINGS
@given(data=array_and_axis(finite), t=st.floats(0.05, 20.0))
def test_temperature_is_division(target, data, t):
    b, generic = target
    x, axis = data
    with _ctx(generic):
        p = b.numpy_float(xpsoftmax.log_softmax(b.asarray(x), axis=axis, temperature=t))
        q = b.numpy_float(xpsoftmax.log_softmax(b.asarray(x / t), axis=axis))
    tol = 16 * np.finfo(np.float64).eps * (np.abs(x).max() / t + 1)
    np.testing.assert_allclose(p, q, rtol=tol, atol=tol)


@SETTINGS
@given(data=array_and_axis(finite))
def test_temperature_limits(target, data):
    """T = 0: the mass is split evenly over the maximal entries; T = inf: uniform."""
    b, generic = target
    x, axis = data
    with _ctx(generic):
        hard = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis, temperature=0.0))
        flat = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis, temperature=math.inf))
    top = x == x.max(axis=axis, keepdims=True)
    np.testing.assert_allclose(hard, top / top.sum(axis=axis, keepdims=True), rtol=1e-15)
    np.testing.assert_allclose(flat, np.full(x.shape, 1.0 / x.shape[axis]), rtol=1e-15)


@SETTINGS
@given(data=array_and_axis())
def test_logsumexp_bounds(target, data):
    """max <= logsumexp <= max + log(n); -inf for an all -inf slice."""
    b, generic = target
    x, axis = data
    with _ctx(generic):
        lse = b.numpy_float(xpsoftmax.logsumexp(b.asarray(x), axis=axis))
    m = x.max(axis=axis)
    slack = 1e-12 * (np.abs(np.where(np.isfinite(m), m, 0)) + 1)
    assert np.all((lse >= m - slack) | (m == -math.inf))
    assert np.all(lse <= m + math.log(x.shape[axis]) + slack)
    assert np.all((lse == -math.inf) == (m == -math.inf))


@SETTINGS
@given(data=array_and_axis(finite))
def test_log_softmax_is_log_of_softmax(target, data):
    b, generic = target
    x, axis = data
    with _ctx(generic):
        logp = b.numpy_float(xpsoftmax.log_softmax(b.asarray(x), axis=axis))
        p = b.numpy_float(xpsoftmax.softmax(b.asarray(x), axis=axis))
    ok = p > 1e-300
    np.testing.assert_allclose(np.exp(logp[ok]), p[ok], rtol=1e-12)
    lse = b.numpy_float(xpsoftmax.logsumexp(b.asarray(x), axis=axis, keepdims=True))
    tol = 8 * np.finfo(np.float64).eps * (np.abs(x).max() + 1)
    np.testing.assert_allclose(logp, x - lse, rtol=tol, atol=tol)


@st.composite
def logits_and_targets(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.integers(1, 6))
    x = draw(hnp.arrays(np.float64, (n, c), elements=finite))
    t = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return x, t


@SETTINGS
@given(data=logits_and_targets(), reduction=st.sampled_from(["sum", "mean"]))
def test_cross_entropy_gradient_is_p_minus_y(target, data, reduction):
    """d loss / d logits = (softmax(x) - onehot(t)) (divided by n for the mean), and the loss
    is logsumexp - x[t]."""
    b, generic = target
    x, t = data
    n, c = x.shape
    with _ctx(generic):
        loss, grad = xpsoftmax.cross_entropy_with_grad(
            b.asarray(x), b.asarray(t), reduction=reduction
        )
        p = b.numpy_float(xpsoftmax.softmax(b.asarray(x)))
        lse = b.numpy_float(xpsoftmax.logsumexp(b.asarray(x), axis=-1))
    scale = 1.0 if reduction == "sum" else 1.0 / n
    onehot = np.eye(c)[t]
    tol = 16 * np.finfo(np.float64).eps * (np.abs(x).max() + 1)
    np.testing.assert_allclose(b.numpy_float(grad), scale * (p - onehot), rtol=tol, atol=tol)
    per = lse - x[np.arange(n), t]
    np.testing.assert_allclose(b.numpy_float(loss), scale * per.sum(), rtol=tol * c, atol=tol * c)
    assert np.all(per >= 0)
