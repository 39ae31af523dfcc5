"""The blocked, threaded CPU fast paths: many blocks, any thread count, the same bits.

The NumPy fast paths cut trailing-axis work into blocks of rows and run them on a thread pool.
Here the block size is made tiny so that small inputs span many blocks, with edge-case rows
(all -inf, NaN, +inf, huge) landing in different blocks; the results must equal the generic
path and be bit-identical for 1, 2 and 3 threads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax import _threads

from cases import assert_close

nb = pytest.importorskip("xpsoftmax.backends.numpy")

INF = math.inf


@pytest.fixture(params=[64, 4096], ids=["block64B", "block4KiB"])
def small_blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(nb, "BLOCK_BYTES", request.param)
    return request.param


def _logits(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    x = rng.normal(size=shape) * 4
    flat = x.reshape(-1, shape[-1])
    flat[3] = -INF
    flat[7, ::2] = -INF
    flat[11, 5] = np.nan
    flat[13, 2] = INF
    flat[17] += 1e4
    return x.astype(dtype)


CALLS = [
    ("softmax", {}),
    ("softmax", {"temperature": 0.7}),
    ("log_softmax", {}),
    ("log_softmax", {"axis": (1, 2)}),
    ("logsumexp", {"axis": -1}),
    ("logsumexp", {"axis": (1, 2), "keepdims": True}),
]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize(("op", "kw"), CALLS, ids=[f"{op}-{kw}" for op, kw in CALLS])
def test_many_blocks_equal_generic_and_do_not_depend_on_threads(small_blocks, op, kw, dtype):
    rng = np.random.default_rng(7)
    x = _logits(rng, (6, 5, 37), dtype)
    fn = getattr(xpsoftmax, op)
    assert xpsoftmax.which(op, x, **kw) == "numpy.inplace"
    with xpsoftmax.force_generic():
        want = fn(x, **kw)
    results = []
    for n in (1, 2, 3):
        with xpsoftmax.num_threads(n):
            results.append(fn(x, **kw))
    for r in results[1:]:
        assert r.dtype == results[0].dtype
        np.testing.assert_array_equal(r, results[0])  # same bits (NaN positions included)
    eps = np.finfo(results[0].dtype).eps
    assert_close(results[0], want, rtol=8 * eps, atol=8 * eps * 1e4, what=f"{op}{kw}")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reduction": "none", "label_smoothing": 0.1},
        {"reduction": "sum", "z_loss": 1e-3, "temperature": 2.0},
        {"weight": "w", "label_smoothing": 0.2},
    ],
    ids=["mean", "none-ls", "sum-z-T", "weight-ls"],
)
def test_fused_cross_entropy_many_blocks(small_blocks, dtype, options):
    rng = np.random.default_rng(11)
    x = _logits(rng, (40, 9), dtype)
    x[11, 5] = 0.0  # NaN logits would make their rows NaN; tested elsewhere
    x[13, 2] = 1.0
    t = rng.integers(0, 9, size=40)
    t[[2, 19, 33]] = -100
    kw = dict(options)
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, 9).astype(dtype)
    assert xpsoftmax.which("cross_entropy_with_grad", x, t, **kw) == "numpy.fused"
    with xpsoftmax.force_generic():
        want_loss, want_grad = xpsoftmax.cross_entropy_with_grad(x, t, **kw)
    results = []
    for n in (1, 2, 3):
        with xpsoftmax.num_threads(n):
            results.append(xpsoftmax.cross_entropy_with_grad(x, t, **kw))
            np.testing.assert_array_equal(xpsoftmax.cross_entropy(x, t, **kw), results[-1][0])
    for loss, grad in results[1:]:
        np.testing.assert_array_equal(loss, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    loss, grad = results[0]
    assert grad.dtype == x.dtype and loss.dtype == want_loss.dtype
    eps = np.finfo(np.float32 if dtype == "float16" else dtype).eps
    assert_close(loss, want_loss, rtol=64 * eps, atol=64 * eps, what="loss")
    geps = np.finfo(dtype).eps
    assert_close(grad, want_grad, rtol=8 * geps, atol=8 * geps, what="grad")


def test_non_contiguous_input(small_blocks):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 40))[:, ::2]
    with xpsoftmax.force_generic():
        want = xpsoftmax.softmax(x)
    np.testing.assert_allclose(xpsoftmax.softmax(x), want, rtol=1e-14)


def test_thread_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_threads.ENV_NUM_THREADS, raising=False)
    default = xpsoftmax.get_num_threads()
    assert default >= 1
    monkeypatch.setenv(_threads.ENV_NUM_THREADS, "3")
    assert xpsoftmax.get_num_threads() == 3
    xpsoftmax.set_num_threads(2)
    try:
        assert xpsoftmax.get_num_threads() == 2  # the function wins over the environment
        with xpsoftmax.num_threads(1):
            assert xpsoftmax.get_num_threads() == 1
        assert xpsoftmax.get_num_threads() == 2
    finally:
        xpsoftmax.set_num_threads(None)
    assert xpsoftmax.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts(bad, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        xpsoftmax.set_num_threads(bad)
    monkeypatch.setenv(_threads.ENV_NUM_THREADS, str(bad))
    if str(bad).isdigit() and int(bad) > 0:
        return
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        xpsoftmax.get_num_threads()


def test_run_blocks_raises_the_first_error_after_the_other_threads_stop() -> None:
    done = []

    def fn(start: int, stop: int) -> None:
        if start == 2:
            raise RuntimeError("block 2 failed")
        done.append(start)

    with xpsoftmax.num_threads(3), pytest.raises(RuntimeError, match="block 2"):
        _threads.run_blocks(fn, [(i, i + 1) for i in range(8)])
    # Shares are every 3rd block: the failing share (2, 5) stops, the other two run to the end.
    assert sorted(done) == [0, 1, 3, 4, 6, 7]
