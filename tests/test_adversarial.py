"""What the peers' own test suites and adversarial use found (issue 9), one class of test each.

Each test names the defect class it guards:

* target gradients: d loss / d target is ``-log_softmax`` wherever the logit is finite, the
  target's exact zeros included (torch autograd, finite differences, ``jax.grad``/``jax.jvp``);
* extreme temperatures: a temperature is judged in the computation dtype (below its smallest
  normal number: the hard max; overflowing: the uniform limit), and every path shifts before it
  scales, on every backend;
* long rows: float32 rows longer than 2**24 keep their accuracy (torch's native kernels do not);
* accuracy near 0: ``logsumexp([0, -40])`` is 4.248e-18 (SciPy gh-18295), and the normaliser
  of log_softmax and cross-entropy likewise;
* class indices judged on their integer value in their own dtype (uint64 >= 2**63, uint8
  against -100, an ``ignore_index`` the dtype cannot hold);
* odd layouts: big-endian NumPy input, Dask arrays of unknown chunk sizes;
* messages: option values too large for a float, the hints for PyTorch's layout and for float
  labels, an unknown ``--library``;
* compatibility: ``b`` broadcasting with ``x`` both ways (SciPy, JAX), JAX taking NumPy arrays
  for its secondary arguments.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import xpsoftmax as xs
from xpsoftmax.testing.cases import assert_close

INF = math.inf


def _lse64(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float64 reference logsumexp, accurate near 0 (log1p of the entries below the max)."""
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    top = np.argmax(x, axis=axis)
    np.put_along_axis(e, np.expand_dims(top, axis), 0.0, axis=axis)
    return np.squeeze(m, axis) + np.log1p(np.sum(e, axis=axis))


# --- gradients with respect to a probability target ----------------------------------------


def _probability_targets() -> list[np.ndarray]:
    onehot = np.eye(4)[[2, 0, 3]]
    sparse = np.array([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0], [0.25, 0.0, 0.75, 0.0]])
    return [onehot, sparse]


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"reduction": "sum"}], ids=str)
def test_torch_target_gradient_matches_torch_and_finite_differences(generic: bool, kw) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4))
    for y in _probability_targets():
        ours = torch.tensor(y, requires_grad=True)
        theirs = torch.tensor(y, requires_grad=True)
        x = torch.tensor(logits)
        with xs.force_generic() if generic else _null():
            xs.cross_entropy(x, ours, **kw).backward()
        F.cross_entropy(x, theirs, **kw).backward()
        assert ours.grad is not None and bool(torch.all(ours.grad[torch.tensor(y) == 0] != 0))
        assert_close(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-12, what=f"{y}")

        def loss(t: np.ndarray) -> float:
            return float(xs.cross_entropy(torch.tensor(logits), torch.tensor(t), **kw))

        fd = np.zeros_like(y)
        h = 1e-6
        for i in np.ndindex(y.shape):
            up, down = y.copy(), y.copy()
            up[i] += h
            down[i] -= h
            fd[i] = (loss(up) - loss(down)) / (2 * h)
        assert_close(ours.grad.numpy(), fd, rtol=1e-6, atol=1e-6, what="finite differences")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_jax_target_gradient_and_jvp() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)))
    for y in _probability_targets():
        yj = jnp.asarray(y)
        g = jax.grad(lambda t: xs.cross_entropy(logits, t))(yj)
        expected = -np.asarray(jax.nn.log_softmax(logits)) / 3
        assert_close(np.asarray(g), expected, rtol=1e-12, atol=1e-12, what="jax.grad wrt target")
        direction = jnp.asarray((y == 0).astype(np.float64))  # only the exact zeros move
        _, tangent = jax.jvp(lambda t: xs.cross_entropy(logits, t), (yj,), (direction,))
        assert float(tangent) == pytest.approx(float(np.sum(expected * (y == 0))), rel=1e-12)
        assert float(tangent) != 0.0


def test_zero_target_on_neginf_logit_still_contributes_nothing() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[0.0, -INF, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    loss = xs.cross_entropy(x, y)
    loss.backward()
    assert math.isfinite(float(loss))
    assert bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(y.grad).all())
    assert float(x.grad[0, 1]) == 0.0


# --- extreme temperatures ---------------------------------------------------------------------

EXTREME = [
    # (input, temperature, dtype, expected softmax)
    ([1.0, 2.0], 1e-300, "float32", [0.0, 1.0]),  # rounds to 0 in float32: the hard max
    ([1.0, 2.0], 1e-39, "float32", [0.0, 1.0]),  # a float32 subnormal: the hard max
    ([1.0, 2.0, 2.0], 1e-320, "float64", [0.0, 0.5, 0.5]),  # a float64 subnormal
    ([1.0, 2.0, -INF], 1e39, "float32", [0.5, 0.5, 0.0]),  # overflows float32: uniform
    ([1.0, 2.0, -INF], 1e38, "float32", [0.5, 0.5, 0.0]),  # finite, near-uniform
    ([3e36, 4e36], 0.01, "float32", [0.0, 1.0]),  # x / T overflows unless shifted first
    ([1e300, 1.1e300], 1e-10, "float64", [0.0, 1.0]),
]


@pytest.mark.parametrize(("x", "t", "dtype", "expected"), EXTREME, ids=str)
@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
def test_extreme_temperatures(backend, x, t, dtype, expected, generic: bool) -> None:
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.id} has no {dtype}")
    arr = backend.asarray(np.asarray(x), dtype)
    with xs.force_generic() if generic else _null():
        p = backend.numpy_float(xs.softmax(arr, temperature=t))
        logp = backend.numpy_float(xs.log_softmax(arr, temperature=t))
        per_slice = backend.asarray(np.asarray([t]), dtype)
        p_arr = backend.numpy_float(xs.softmax(arr, temperature=per_slice))
    assert_close(p, np.asarray(expected), rtol=1e-6, atol=1e-6, what=f"softmax T={t}")
    assert not np.isnan(logp).any(), f"log_softmax T={t}: {logp}"
    if t != 1e39 or dtype != "float32":  # the array holds 1e39 as inf in float32 too
        assert_close(p_arr, np.asarray(expected), rtol=1e-6, atol=1e-6, what=f"array T={t}")


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
def test_cross_entropy_with_grad_subnormal_temperature_is_finite(backend, generic: bool) -> None:
    x = backend.asarray(np.array([[1.0, 2.0, 0.5], [0.0, 3.0, 3.0]]), "float64")
    t = backend.asarray(np.array([1, 2]))
    with xs.force_generic() if generic else _null():
        for temperature in (1e-320, 1e-300):
            loss, grad = xs.cross_entropy_with_grad(x, t, temperature=temperature)
            g = backend.numpy_float(grad)
            assert not np.isnan(g).any(), f"T={temperature}: NaN gradient {g}"
            assert not np.isnan(backend.numpy_float(loss))


# --- long rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy"])
def test_long_float32_rows_keep_their_accuracy(op: str) -> None:
    torch = pytest.importorskip("torch")
    n = 3 * 2**23  # a float32 sequential sum of ones stops at 2**24
    x = torch.zeros(n + 1)
    x[-1] = 1.0
    assert xs.which(op, x, torch.tensor(n)) if op == "cross_entropy" else True
    lse = math.log(n + math.e)
    if op == "softmax":
        p = xs.softmax(x)
        assert float(p.double().sum()) == pytest.approx(1.0, rel=1e-5)
        assert float(p[-1]) == pytest.approx(math.e / (n + math.e), rel=1e-5)
    elif op == "log_softmax":
        assert float(xs.log_softmax(x)[-1]) == pytest.approx(1.0 - lse, rel=1e-6)
    elif op == "logsumexp":
        assert float(xs.logsumexp(x)) == pytest.approx(lse, rel=1e-6)
    else:
        loss = xs.cross_entropy(x[None, :], torch.tensor([n]))
        assert float(loss) == pytest.approx(lse - 1.0, rel=1e-6)


def test_long_rows_leave_the_native_kernels() -> None:
    torch = pytest.importorskip("torch")
    long_row = torch.empty(2**24 + 1)
    short_row = torch.empty(2**24)
    assert xs.which("softmax", long_row) == "generic"
    # torch.compiled (numba installed) hands calls with autograd to torch.native: both stop
    # where torch.native does.
    assert xs.which("softmax", short_row) in ("torch.compiled", "torch.native")
    assert xs.which("softmax", long_row.double()) == "torch.native"  # float64 sums are fine
    assert xs.which("logsumexp", long_row) == "generic"


# --- accuracy near 0 ---------------------------------------------------------------------------

NEAR_ZERO = [np.array([0.0, -40.0]), np.array([[0.0, -40.0, -50.0], [-1e-3, -45.0, -1e-3]])]


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
def test_logsumexp_relative_accuracy_near_zero(backend, generic: bool) -> None:
    for x in NEAR_ZERO:
        expected = _lse64(x)
        with xs.force_generic() if generic else _null():
            got = backend.numpy_float(xs.logsumexp(backend.asarray(x, "float64"), axis=-1))
            logp = backend.numpy_float(xs.log_softmax(backend.asarray(x, "float64")))
        assert_close(got, expected, rtol=1e-12, atol=0, what=f"logsumexp {x}")
        if backend.library != "torch" or generic:  # torch's native log_softmax: absolute only
            assert_close(logp, x - expected[..., None], rtol=1e-12, atol=0, what="log_softmax")


def test_logsumexp_near_zero_with_b_and_sign() -> None:
    x = np.array([0.0, -40.0])
    lse, sign = xs.logsumexp(x, b=np.array([1.0, 1.0]), return_sign=True)
    assert float(lse) == pytest.approx(4.248354255291589e-18, rel=1e-12, abs=0)
    assert float(sign) == 1.0
    lse, sign = xs.logsumexp(x, b=np.array([-1.0, -1.0]), return_sign=True)
    assert float(lse) == pytest.approx(4.248354255291589e-18, rel=1e-12, abs=0)
    assert float(sign) == -1.0
    assert math.isnan(float(xs.logsumexp(x, b=np.array([-1.0, -1.0]))))


def test_cross_entropy_of_a_confident_right_answer_is_not_zero() -> None:
    x = np.array([[0.0, -40.0]])
    assert float(xs.cross_entropy(x, np.array([0]))) == pytest.approx(4.248e-18, rel=1e-3, abs=0)
    with xs.force_generic():
        assert float(xs.cross_entropy(x, np.array([0]))) == pytest.approx(
            4.248e-18, rel=1e-3, abs=0
        )


# --- class indices judged on their integer value ----------------------------------------------


def test_uint64_indices_beyond_int64_raise() -> None:
    x = np.zeros((2, 3))
    for value in (2**64 - 100, 2**63):
        t = np.array([0, value], dtype=np.uint64)
        with pytest.raises(ValueError, match="outside"):
            xs.cross_entropy(x, t)
        with xs.force_generic(), pytest.raises(ValueError, match="outside"):
            xs.cross_entropy(x, t)


def test_uint64_indices_beyond_int64_are_nan_where_unchecked() -> None:
    """Where the values cannot be checked (here: the generic path given the plan directly),
    an index >= 2**63 gives NaN, never the ignored row that int64 wrapping would make."""
    from xpsoftmax import _generic
    from xpsoftmax._checks import ONE, CrossEntropySettings

    t = np.array([0, 2**64 - 100], dtype=np.uint64)
    options = CrossEntropySettings(None, -100, "none", 0.0, ONE, 0.0)
    per = _generic.cross_entropy(np, np.zeros((2, 3)), t, 1, options)
    assert math.isnan(float(per[1])) and float(per[0]) == pytest.approx(math.log(3))


def test_unsigned_and_small_targets_on_every_backend(backend) -> None:
    x = backend.asarray(np.zeros((0, 3)), "float32")
    for dt in ("uint8", "int8", "int16", "uint16"):
        t = backend.asarray(np.zeros(0, dtype=dt))
        assert float(backend.numpy_float(xs.cross_entropy(x, t))) == 0.0
    x = backend.asarray(np.zeros((2, 3)), "float32")
    t = backend.asarray(np.array([1, 2], dtype=np.uint8))
    loss = backend.numpy_float(xs.cross_entropy(x, t, ignore_index=2**70))
    assert float(loss) == pytest.approx(math.log(3), rel=1e-6)


def test_ignore_index_the_target_dtype_cannot_hold_matches_nothing() -> None:
    x = np.zeros((2, 3))
    t = np.array([1, 2], dtype=np.int8)
    assert float(xs.cross_entropy(x, t, ignore_index=-(2**40))) == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="outside"):
        xs.cross_entropy(x, np.array([1, -100], dtype=np.int8), ignore_index=2**40)


# --- odd layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy_with_grad"])
@pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2"])
def test_big_endian_numpy_input(op: str, dtype: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7)).astype(dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    fn = getattr(xs, op)
    args = (np.arange(5) % 7,) if op.startswith("cross") else ()
    kw = {} if op.startswith("cross") else {"axis": -1}
    got, expected = fn(x, *args, **kw), fn(native, *args, **kw)
    for g, e in zip(
        got if isinstance(got, tuple) else (got,),
        expected if isinstance(expected, tuple) else (expected,),
    ):
        assert np.array_equal(np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64))


def test_dask_unknown_chunk_sizes() -> None:
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(4)
    x_np = rng.normal(size=(6, 4))
    x = da.from_array(x_np, chunks=(3, 4))
    keep = da.from_array(np.array([True, False, True, True, False, True]), chunks=3)
    xu = x[keep]  # rows of unknown count: shape (nan, 4)
    assert math.isnan(xu.shape[0])
    t = da.from_array(np.array([0, 1, 2, 3, 0, 1]), chunks=3)[keep]
    probs = da.from_array(np.full((6, 4), 0.25), chunks=(3, 4))[keep]
    rows = np.array([True, False, True, True, False, True])
    ref = x_np[rows]
    assert_close(xs.softmax(xu).compute(), xs.softmax(ref), rtol=1e-12, atol=1e-15, what="sm")
    assert_close(
        xs.cross_entropy(xu, t).compute(),
        xs.cross_entropy(ref, np.array([0, 2, 3, 1])),
        rtol=1e-12, atol=0, what="ce index",
    )  # fmt: skip
    assert_close(
        xs.cross_entropy(xu, probs).compute(),
        xs.cross_entropy(ref, np.full((4, 4), 0.25)),
        rtol=1e-12, atol=0, what="ce probs mean over an unknown count",
    )  # fmt: skip
    assert_close(
        xs.logsumexp(xu, axis=1, b=probs).compute(),
        xs.logsumexp(ref, axis=1, b=np.full((4, 4), 0.25)),
        rtol=1e-12, atol=0, what="logsumexp b",
    )  # fmt: skip
    with pytest.raises(ValueError, match="target of class indices"):
        xs.cross_entropy(xu, da.zeros((3, 2), dtype=int, chunks=3))


# --- messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"label_smoothing": 10**400}, "label_smoothing must be in"),
        ({"z_loss": 10**400}, "z_loss must be finite"),
        ({"z_loss": -(10**400)}, "z_loss must be finite"),
        ({"temperature": -(10**400)}, "temperature must be >= 0"),
    ],
    ids=str,
)
def test_options_too_large_for_a_float_are_value_errors(kw, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        xs.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), **kw)
    assert len(str(info.value)) < 200  # the value is shortened, not printed in full


def test_huge_temperature_is_the_uniform_limit(backend) -> None:
    x = backend.asarray(np.array([1.0, 5.0, -INF]), "float32")
    p = backend.numpy_float(xs.softmax(x, temperature=10**400))
    assert_close(p, np.array([0.5, 0.5, 0.0]), rtol=0, atol=0, what="T=10**400")


def test_ignore_index_beyond_int64_on_torch_and_jax() -> None:
    torch = pytest.importorskip("torch")
    x = torch.zeros(2, 3)
    assert float(xs.cross_entropy(x, torch.tensor([0, 1]), ignore_index=2**70)) == pytest.approx(
        math.log(3), rel=1e-6
    )
    jnp = pytest.importorskip("jax.numpy")
    t = jnp.asarray(np.array([0, 1], dtype=np.int32))
    loss = xs.cross_entropy(jnp.zeros((2, 3)), t, ignore_index=-(2**40))
    assert float(loss) == pytest.approx(math.log(3), rel=1e-6)


def test_target_shape_hints() -> None:
    torch = pytest.importorskip("torch")
    logits = torch.zeros(2, 5, 3, 4)
    with pytest.raises(ValueError, match=r"pass axis=1"):
        xs.cross_entropy(logits, torch.zeros(2, 3, 4, dtype=torch.long))
    xs.cross_entropy(logits, torch.zeros(2, 3, 4, dtype=torch.long), axis=1)  # the fix works
    with pytest.raises(ValueError, match=r"indices need an integer dtype"):
        xs.cross_entropy(torch.zeros(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]))


def test_cli_names_an_unknown_library() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xpsoftmax", "--library", "foo"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "unknown library 'foo'" in out.stderr


# --- compatibility with the peers ------------------------------------------------------------


def test_b_broadcasts_with_x_both_ways(backend) -> None:
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 1, 2, 1))
    b = rng.uniform(0.5, 2.0, size=(3, 1, 5))
    for axis in (None, 1, (0, 3), -1):
        got = xs.logsumexp(
            backend.asarray(a, "float64"), axis=axis, b=backend.asarray(b, "float64")
        )
        expected = special.logsumexp(a, axis=axis, b=b)
        assert tuple(got.shape) == np.shape(expected), axis
        assert_close(backend.numpy_float(got), expected, rtol=1e-12, atol=1e-12, what=str(axis))


def test_jax_takes_numpy_secondary_arguments() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    logits = jnp.asarray(np.random.default_rng(6).normal(size=(4, 3)))
    t = np.array([0, 1, 2, -100])
    w = np.array([1.0, 2.0, 0.5])
    expected = xs.cross_entropy(np.asarray(logits), t, weight=w)
    assert float(xs.cross_entropy(logits, t, weight=w)) == pytest.approx(float(expected))
    g = jax.grad(lambda x: xs.cross_entropy(x, t, weight=w))(logits)
    assert np.isfinite(np.asarray(g)).all()
    mask = np.array([[True, False, True]] * 4)
    out = xs.softmax(logits, where=mask, temperature=np.full((4, 1), 0.5))
    assert float(out[0, 1]) == 0.0
    out = xs.logsumexp(logits, axis=1, b=np.ones(3))
    assert isinstance(out, jax.Array)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array library"):
        xs.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="one array library"):
        xs.cross_entropy(torch.zeros(2, 3), np.array([0, 1]))


def test_torch_weight_that_requires_grad() -> None:
    """``F.cross_entropy`` cannot differentiate with respect to its weight: the fast path
    hands such calls to the generic formula, whose gradient matches finite differences."""
    torch = pytest.importorskip("torch")
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 1, -100])
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64))
    loss = xs.cross_entropy(x, t, weight=w)
    loss.backward()
    assert w.grad is not None
    assert torch.autograd.gradcheck(lambda w: xs.cross_entropy(x, t, weight=w), (w,))
    expected = torch.nn.functional.cross_entropy(x, t, weight=w.detach())
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
