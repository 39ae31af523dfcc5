"""The blocked, threaded CPU fast paths: many blocks, any thread count, the same bits.

The NumPy fast paths cut trailing-axis work into blocks of rows and run them on a thread pool.
Here the block size is made tiny so that small inputs span many blocks, with edge-case rows
(all -inf, NaN, +inf, huge) landing in different blocks; the results must equal the generic
path and be bit-identical for 1, 2 and 3 threads. The pool itself must serve any number of
calling threads at once and a child made by ``fork``, and a bad thread setting must fail at once.
The count follows the ecosystem's conventions too: ``OMP_NUM_THREADS`` when
``XPSOFTMAX_NUM_THREADS`` is unset (a bad value ignored), and threadpoolctl lists and limits
the pool.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax import _threads
from xpsoftmax.testing.cases import assert_close

nb = pytest.importorskip("xpsoftmax.backends.numpy.blocks")

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
    with xpsoftmax.use("numpy.inplace"):  # float32 rows: the compiled kernel's (own tests)
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
    with xpsoftmax.force_generic():
        want_loss, want_grad = xpsoftmax.cross_entropy_with_grad(x, t, **kw)
    results = []
    # The ufunc path's blocks (numpy.compiled's own: tests/test_compiled.py).
    with xpsoftmax.use("numpy.fused"):
        assert xpsoftmax.which("cross_entropy_with_grad", x, t, **kw) == "numpy.fused"
        for n in (1, 2, 3):
            with xpsoftmax.num_threads(n):
                results.append(xpsoftmax.cross_entropy_with_grad(x, t, **kw))
                loss_only = xpsoftmax.cross_entropy(x, t, **kw)
                np.testing.assert_array_equal(loss_only, results[-1][0])
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
    monkeypatch.delenv(_threads.ENV_OMP_NUM_THREADS, raising=False)
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


FORKED_CHILD = """
import multiprocessing, sys
import numpy as np
import xpsoftmax
from xpsoftmax.backends.numpy import blocks as nb

xpsoftmax.set_num_threads(2)  # several threads on any machine
cols = 1024
x = np.random.default_rng(0).normal(size=(8 * nb.BLOCK_BYTES // (cols * 8), cols))  # 8 blocks
want = xpsoftmax.softmax(x)  # the parent's pool has threads now


def child():
    sys.exit(0 if np.array_equal(xpsoftmax.softmax(x), want) else 3)


p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join(30)
if p.is_alive():
    p.kill()
    sys.exit("the forked child hung in its first multi-block call")
sys.exit(p.exitcode)
"""


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="fork is POSIX-only")
def test_forked_child_runs_multi_block_calls() -> None:
    # In a subprocess, with timeouts: a child that hangs must not hang the suite.
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr


#: Shapes with different block counts (8, 19, 32 and 10 blocks of 256 KiB), and both dtypes.
RACE_SHAPES = [((64, 8192), "float32"), ((300, 2000), "float64"), ((2048, 1024), "float32")]
RACE_SHAPES += [((300, 2000), "float32")]


def _race_calls() -> list[tuple[Callable[..., Any], tuple[np.ndarray, ...]]]:
    rng = np.random.default_rng(5)
    calls: list[tuple[Callable[..., Any], tuple[np.ndarray, ...]]] = []
    for shape, dtype in RACE_SHAPES:
        x = (rng.normal(size=shape) * 4).astype(dtype)
        t = rng.integers(0, shape[1], size=shape[0])
        calls += [
            (xpsoftmax.softmax, (x,)),
            (xpsoftmax.log_softmax, (x,)),
            (partial(xpsoftmax.logsumexp, axis=-1), (x,)),
            (xpsoftmax.cross_entropy_with_grad, (x, t)),
        ]
    return calls


def _tuple(r: Any) -> tuple[Any, ...]:
    return r if isinstance(r, tuple) else (r,)


def test_calls_from_many_threads_at_once_give_the_single_thread_bits() -> None:
    calls = _race_calls()
    with xpsoftmax.num_threads(1):
        want = [fn(*args) for fn, args in calls]
    callers, rounds = 8, 12
    errors: list[BaseException] = []
    start = threading.Barrier(callers)

    def caller(k: int) -> None:
        start.wait()
        try:
            for i in range(rounds):
                # Process-wide, so every call may see another size than the one before it.
                xpsoftmax.set_num_threads(2 + (k + i) % 4)
                j = (3 * k + 5 * i) % len(calls)
                fn, args = calls[j]
                got = fn(*args)
                for g, w in zip(_tuple(got), _tuple(want[j])):
                    np.testing.assert_array_equal(g, w, strict=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        xpsoftmax.set_num_threads(None)
    assert not errors, f"{len(errors)} of {callers} callers failed, first: {errors[0]!r}"


@pytest.mark.parametrize("bad", ["abc", "0", "-2", "2.5", " 3x "])
def test_bad_env_thread_count_raises_before_any_work(bad, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_threads.ENV_NUM_THREADS, bad)
    ran: list[int] = []
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        _threads.run_blocks(lambda start, stop: ran.append(start), [(0, 1)])  # one block
    assert ran == []
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        xpsoftmax.softmax(np.zeros((2, 3)))  # a small input too
    for check in (_threads.check_num_threads, xpsoftmax.get_num_threads):
        with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS) as info:
            check()
        assert repr(bad.strip()) in str(info.value)


def test_env_thread_count_changes_are_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_threads.ENV_NUM_THREADS, raising=False)
    monkeypatch.delenv(_threads.ENV_OMP_NUM_THREADS, raising=False)  # CI often sets it
    default = _threads.check_num_threads()
    assert default == _threads._machine_threads()
    # Each value is parsed once and cached; going back to a value seen before must work too.
    for raw, want in [("3", 3), ("5", 5), (" 2 ", 2), ("3", 3), ("", default), ("4", 4)]:
        monkeypatch.setenv(_threads.ENV_NUM_THREADS, raw)
        assert _threads.check_num_threads() == want
        assert xpsoftmax.get_num_threads() == want
    monkeypatch.setenv(_threads.ENV_NUM_THREADS, "abc")
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        _threads.check_num_threads()
    monkeypatch.setenv(_threads.ENV_NUM_THREADS, "4")  # a bad value does not stick
    assert _threads.check_num_threads() == 4
    monkeypatch.delenv(_threads.ENV_NUM_THREADS)
    assert _threads.check_num_threads() == default
    with xpsoftmax.num_threads(2):  # the function wins over the environment
        monkeypatch.setenv(_threads.ENV_NUM_THREADS, "abc")
        assert _threads.check_num_threads() == 2


# --- OMP_NUM_THREADS -------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Neither thread-count variable set, and no set_num_threads value, to begin with."""
    monkeypatch.delenv(_threads.ENV_NUM_THREADS, raising=False)
    monkeypatch.delenv(_threads.ENV_OMP_NUM_THREADS, raising=False)
    monkeypatch.setattr(_threads, "_setting", None)
    return monkeypatch


def _count() -> int:
    n = _threads.check_num_threads()
    assert xpsoftmax.get_num_threads() == n
    return n


def test_omp_num_threads_is_honoured_when_ours_is_unset(env: pytest.MonkeyPatch) -> None:
    cores = _threads._machine_threads()
    assert _count() == cores
    # Changes are picked up, values seen before included; an empty variable counts as unset.
    for raw, want in [("3", 3), ("5", 5), (" 7 ", 7), ("3", 3), ("", cores), ("2", 2)]:
        env.setenv(_threads.ENV_OMP_NUM_THREADS, raw)
        assert _count() == want, raw
    env.setenv(_threads.ENV_NUM_THREADS, "")  # ours blank: unset too
    assert _count() == 2
    env.delenv(_threads.ENV_OMP_NUM_THREADS)
    assert _count() == cores


def test_ours_wins_over_omp_and_the_function_over_both(env: pytest.MonkeyPatch) -> None:
    env.setenv(_threads.ENV_OMP_NUM_THREADS, "2")
    env.setenv(_threads.ENV_NUM_THREADS, "3")
    assert _count() == 3
    with xpsoftmax.num_threads(5):
        assert _count() == 5
    env.delenv(_threads.ENV_NUM_THREADS)
    assert _count() == 2
    # A bad XPSOFTMAX_NUM_THREADS is still an error, whatever OMP_NUM_THREADS says.
    env.setenv(_threads.ENV_NUM_THREADS, "abc")
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        _threads.check_num_threads()


@pytest.mark.parametrize(("raw", "want"), [("4,2", 4), (" 4 , 2 ", 4), ("3,", 3), ("1,8", 1)])
def test_omp_list_gives_its_first_entry(env: pytest.MonkeyPatch, raw: str, want: int) -> None:
    env.setenv(_threads.ENV_OMP_NUM_THREADS, raw)
    assert _count() == want


@pytest.mark.parametrize(
    "bad", ["abc", "0", "-1", "+2", "2.5", "1e3", "4_0", ",2", "x,2", "0,4", "²", " , "]
)
def test_bad_omp_value_is_ignored(env: pytest.MonkeyPatch, bad: str) -> None:
    env.setenv(_threads.ENV_OMP_NUM_THREADS, bad)
    assert _count() == _threads._machine_threads()
    x = np.random.default_rng(0).normal(size=(4, 5))
    with xpsoftmax.num_threads(1):
        want = xpsoftmax.softmax(x)
    np.testing.assert_array_equal(xpsoftmax.softmax(x), want)  # no error, same bits
    env.setenv(_threads.ENV_NUM_THREADS, "2")  # ours still decides over it
    assert _count() == 2


# --- threadpoolctl ---------------------------------------------------------------------------


def _threadpoolctl() -> Any:
    return pytest.importorskip("threadpoolctl", minversion="3.5")


def _ours(info: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = [e for e in info if e["internal_api"] == "xpsoftmax"]
    return entry


def test_threadpoolctl_lists_the_pool(env: pytest.MonkeyPatch) -> None:
    tpc = _threadpoolctl()
    entry = _ours(tpc.threadpool_info())
    assert entry["user_api"] == "xpsoftmax"
    assert entry["num_threads"] == xpsoftmax.get_num_threads()
    assert entry["version"] == xpsoftmax.__version__
    env.setenv(_threads.ENV_OMP_NUM_THREADS, "3")
    with xpsoftmax.num_threads(2):
        assert _ours(tpc.threadpool_info())["num_threads"] == 2
    assert _ours(tpc.threadpool_info())["num_threads"] == 3
    # The info stays plain data: JSON (`python -m threadpoolctl`) and pickle (joblib).
    entry = _ours(tpc.threadpool_info())
    assert json.loads(json.dumps(entry)) == entry
    assert pickle.loads(pickle.dumps(entry)) == entry


def test_threadpoolctl_limits_the_pool_and_restores_the_setting(env: pytest.MonkeyPatch) -> None:
    tpc = _threadpoolctl()
    with tpc.threadpool_limits(1):
        assert _count() == 1
        with tpc.threadpool_limits(limits=2, user_api="xpsoftmax"):
            assert _count() == 2
        assert _count() == 1
    # The default (None) is restored, not the count it gave: the environment still decides.
    assert _threads._setting is None
    env.setenv(_threads.ENV_NUM_THREADS, "3")
    assert _count() == 3
    xpsoftmax.set_num_threads(5)
    with tpc.threadpool_limits(limits={"xpsoftmax": 2}):
        assert _count() == 2
    assert _threads._setting == 5
    with tpc.threadpool_limits(limits=1, user_api="blas"):  # other libraries' limits only
        assert _count() == 5
    xpsoftmax.set_num_threads(None)
    # The controller object's API, and a debugging_info listing (it sets and restores).
    controller = tpc.ThreadpoolController().select(internal_api="xpsoftmax")
    with controller.limit(limits={"xpsoftmax": np.int64(2)}):  # NumPy integers too
        assert _count() == 2
    assert _threads._setting is None
    entry = _ours(tpc.threadpool_info(debugging_info=True))
    assert entry["thread_limit_scope"] == "process"
    assert _threads._setting is None


def test_threadpoolctl_limit_rejects_a_bad_count(env: pytest.MonkeyPatch) -> None:
    tpc = _threadpoolctl()
    with pytest.raises(ValueError, match="positive integer"):
        tpc.threadpool_limits(limits=0, user_api="xpsoftmax")
    assert _threads._setting is None


def test_bad_env_does_not_break_threadpoolctl(env: pytest.MonkeyPatch) -> None:
    # threadpoolctl reads every library's count, even for a BLAS-only limit (scikit-learn does
    # that): a bad XPSOFTMAX_NUM_THREADS fails xpsoftmax's calls, not those.
    tpc = _threadpoolctl()
    env.setenv(_threads.ENV_OMP_NUM_THREADS, "2")
    env.setenv(_threads.ENV_NUM_THREADS, "abc")
    assert _ours(tpc.threadpool_info())["num_threads"] == 2
    with tpc.threadpool_limits(limits=1, user_api="blas"):
        pass
    with pytest.raises(ValueError, match=_threads.ENV_NUM_THREADS):
        xpsoftmax.softmax(np.zeros((2, 3)))
    with tpc.threadpool_limits(1):  # a limit is a setting: it overrides the variable
        assert _count() == 1
    assert _threads._setting is None


def test_results_are_the_same_bits_under_threadpoolctl_limits(small_blocks: int) -> None:
    tpc = _threadpoolctl()
    x = _logits(np.random.default_rng(9), (6, 5, 37), "float32")
    t = np.random.default_rng(9).integers(0, 37, size=30)
    flat = x.reshape(30, 37)
    flat[11, 5] = 0.0
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (xpsoftmax.softmax, (x,)),
        (xpsoftmax.log_softmax, (x,)),
        (partial(xpsoftmax.logsumexp, axis=-1), (x,)),
        (xpsoftmax.cross_entropy_with_grad, (flat, t)),
    ]
    with xpsoftmax.num_threads(3):
        want = [fn(*args) for fn, args in calls]
    for limits in ({"limits": 1}, {"limits": 2, "user_api": "xpsoftmax"}):
        with tpc.threadpool_limits(**limits):
            got = [fn(*args) for fn, args in calls]
        for g, w in zip(got, want):
            for a, b in zip(_tuple(g), _tuple(w)):
                np.testing.assert_array_equal(a, b, strict=True)


def test_threadpoolctl_limit_is_what_the_pool_uses() -> None:
    tpc = _threadpoolctl()
    used: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def fn(start: int, stop: int) -> None:
        used.add(threading.get_ident())
        if start < 2:  # with 2 threads, blocks 0 and 1 run at once
            barrier.wait()

    with tpc.threadpool_limits(limits=2, user_api="xpsoftmax"):
        _threads.run_blocks(fn, [(i, i + 1) for i in range(6)])
    assert len(used) == 2
    used.clear()
    with tpc.threadpool_limits(1):
        _threads.run_blocks(lambda start, stop: used.add(threading.get_ident()), [(0, 1)] * 6)
    assert used == {threading.get_ident()}  # all on the calling thread


OPTIONAL_THREADPOOLCTL = """
import sys
sys.modules["threadpoolctl"] = None  # as if not installed
import numpy as np
import xpsoftmax
from xpsoftmax import _threads
assert not _threads._THREADPOOLCTL
with xpsoftmax.num_threads(2):
    xpsoftmax.softmax(np.zeros((3, 4)))
"""

LATE_THREADPOOLCTL = """
import xpsoftmax  # before threadpoolctl is imported by anything
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
assert any(e["internal_api"] == "xpsoftmax" for e in threadpool_info())
with threadpool_limits(1):
    assert xpsoftmax.get_num_threads() == 1
"""


@pytest.mark.parametrize(
    "code", [OPTIONAL_THREADPOOLCTL, LATE_THREADPOOLCTL], ids=["missing", "late"]
)
def test_threadpoolctl_is_optional_and_import_order_free(code: str) -> None:
    if code is LATE_THREADPOOLCTL:
        _threadpoolctl()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
