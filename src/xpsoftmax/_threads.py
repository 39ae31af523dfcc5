"""The thread count of the CPU fast paths that split their work into blocks of rows.

NumPy ufuncs release the GIL, so a small pool of Python threads runs blocks of rows in
parallel. Blocks are cut from the data's shape alone, never from the thread count, and each
row is computed by one thread with the same operations, so results are the same bits for one
thread and for many.

Any number of Python threads may call the fast paths at once: they share one pool that only
grows, and a child made by ``fork`` starts with no pool (the copied one has no threads).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "ENV_NUM_THREADS",
    "check_num_threads",
    "get_num_threads",
    "num_threads",
    "run_blocks",
    "set_num_threads",
]

#: Environment variable setting the thread count for a whole run (a positive integer).
ENV_NUM_THREADS = "XPSOFTMAX_NUM_THREADS"

_lock = threading.Lock()
_setting: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
#: Thread counts parsed from the raw values of ``ENV_NUM_THREADS`` seen so far (None: unset).
_parsed: dict[object, int] = {}


def _machine_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _check(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def _env_reader() -> Callable[[], object]:
    """A reader of the raw value of ``ENV_NUM_THREADS`` that costs one dict lookup.

    ``os.environ.get`` takes about 0.5 µs when the variable is unset (a KeyError inside), too
    much for every fast-path call. CPython's ``os.environ`` keeps the encoded values in a
    plain dict, ``_data``, that every assignment updates (pytest's monkeypatch included), so
    that dict is read where it exists.
    """
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if type(data) is dict and callable(encodekey):
        return functools.partial(data.get, encodekey(ENV_NUM_THREADS))
    return functools.partial(os.environ.get, ENV_NUM_THREADS)  # pragma: no cover


_read_env = _env_reader()


def _parse_env(raw: object) -> int:
    """The thread count a raw value of ``ENV_NUM_THREADS`` asks for; cached when valid."""
    # POSIX keeps the encoded bytes; None is unset.
    text = (os.fsdecode(raw) if isinstance(raw, bytes) else str(raw or "")).strip()
    if not text:
        n = _machine_threads()
    else:
        try:
            n = _check(int(text), ENV_NUM_THREADS)
        except ValueError:
            raise ValueError(
                f"{ENV_NUM_THREADS} must be a positive integer, got {text!r}"
            ) from None
    _parsed[raw] = n
    return n


def check_num_threads() -> int:
    """The number of threads the CPU fast paths use; raises at once on a bad setting.

    Called at the start of every NumPy fast path, so that a bad ``XPSOFTMAX_NUM_THREADS``
    fails before any work, whatever the input's size. Each distinct value of the variable is
    parsed once (the machine's core count is read once too), so a call costs a dict lookup.

    Returns
    -------
    int
        As :func:`get_num_threads`.

    Raises
    ------
    ValueError
        If ``XPSOFTMAX_NUM_THREADS`` is set (and no :func:`set_num_threads` value overrides
        it) but is not a positive integer.

    Examples
    --------
    >>> from xpsoftmax import _threads
    >>> _threads.check_num_threads() >= 1
    True
    """
    if _setting is not None:
        return _setting
    raw = _read_env()
    n = _parsed.get(raw)
    return _parse_env(raw) if n is None else n


def get_num_threads() -> int:
    """The number of threads the CPU fast paths use.

    In order: the value given to :func:`set_num_threads`, the environment variable
    ``XPSOFTMAX_NUM_THREADS``, the number of cores this process may run on (read once).

    Raises
    ------
    ValueError
        If the environment variable decides and is not a positive integer.

    Examples
    --------
    >>> import xpsoftmax
    >>> xpsoftmax.get_num_threads() >= 1
    True
    """
    return check_num_threads()


def set_num_threads(n: int | None) -> None:
    """Set the number of threads of the CPU fast paths; None goes back to the default.

    Results do not depend on it: the same bits for 1 thread and for N.

    Examples
    --------
    >>> import xpsoftmax
    >>> xpsoftmax.set_num_threads(1)
    >>> xpsoftmax.get_num_threads()
    1
    >>> xpsoftmax.set_num_threads(None)
    """
    global _setting
    _setting = None if n is None else _check(n, "n")


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Context manager: the CPU fast paths use ``n`` threads inside it (process-wide).

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> with xpsoftmax.num_threads(1):
    ...     p = xpsoftmax.softmax(np.zeros((2, 2)))
    """
    global _setting
    previous = _setting
    _setting = _check(n, "n")
    try:
        yield
    finally:
        _setting = previous


def _executor(workers: int) -> ThreadPoolExecutor:
    """The pool shared by all calls, with room for ``workers`` threads at least.

    It only grows: a bigger one replaces it, and the old one is dropped, never shut down,
    because a call on another thread may still wait on work it submitted there (its threads
    finish that work, then exit once the pool is garbage). Work items never submit work, so
    calls queueing on a shared pool cannot deadlock.
    """
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xpsoftmax")
            _pool_size = workers
        return _pool


def _forget_pool() -> None:
    """After ``fork``, in the child: the copied pool has none of its threads, so work submitted
    to it would never run, and the copied lock may be held by a thread that is gone too."""
    global _lock, _pool, _pool_size
    _lock = threading.Lock()
    _pool = None
    _pool_size = 0


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool)


def run_blocks(fn: Callable[[int, int], None], bounds: Iterable[tuple[int, int]]) -> None:
    """Call ``fn(start, stop)`` for every block, on :func:`get_num_threads` threads.

    Thread ``i`` runs blocks ``i, i + threads, ...``; a block that raises ends its thread's
    share, and the first exception is raised once every thread has stopped. A bad thread
    setting raises before any block runs, however many blocks there are.
    """
    blocks = list(bounds)
    threads = min(check_num_threads(), len(blocks))
    if threads <= 1:  # one block (small input) or one thread: no thread hand-off
        for start, stop in blocks:
            fn(start, stop)
        return
    # One share per thread, each taking every threads-th block (even shares when blocks
    # differ in size); the calling thread does the first share itself, the pool the others.
    shares = [blocks[i::threads] for i in range(threads)]

    def work(share: list[tuple[int, int]]) -> None:
        for start, stop in share:
            fn(start, stop)

    pool = _executor(threads - 1)
    futures = [pool.submit(work, share) for share in shares[1:]]
    error: BaseException | None = None
    try:
        work(shares[0])
    except BaseException as exc:  # re-raised after the other threads are done
        error = exc
    for f in futures:
        failure = f.exception()
        if error is None and failure is not None:
            error = failure
    if error is not None:
        raise error
