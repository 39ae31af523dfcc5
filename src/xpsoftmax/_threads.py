"""The thread count of the CPU fast paths that split their work into blocks of rows.

NumPy ufuncs release the GIL, so a small pool of Python threads runs blocks of rows in
parallel. Blocks are cut from the data's shape alone, never from the thread count, and each
row is computed by one thread with the same operations, so results are the same bits for one
thread and for many.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["ENV_NUM_THREADS", "get_num_threads", "num_threads", "run_blocks", "set_num_threads"]

#: Environment variable setting the thread count for a whole run (a positive integer).
ENV_NUM_THREADS = "XPSOFTMAX_NUM_THREADS"

_lock = threading.Lock()
_setting: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _machine_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _check(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def get_num_threads() -> int:
    """The number of threads the CPU fast paths use.

    In order: the value given to :func:`set_num_threads`, the environment variable
    ``XPSOFTMAX_NUM_THREADS``, the number of cores this process may run on.

    Examples
    --------
    >>> import xpsoftmax
    >>> xpsoftmax.get_num_threads() >= 1
    True
    """
    if _setting is not None:
        return _setting
    env = os.environ.get(ENV_NUM_THREADS, "").strip()
    if env:
        try:
            return _check(int(env), ENV_NUM_THREADS)
        except ValueError:
            raise ValueError(f"{ENV_NUM_THREADS} must be a positive integer, got {env!r}") from None
    return _machine_threads()


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


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="xpsoftmax")
            _pool_size = size
        return _pool


def run_blocks(fn: Callable[[int, int], None], bounds: Iterable[tuple[int, int]]) -> None:
    """Call ``fn(start, stop)`` for every block, on :func:`get_num_threads` threads.

    Thread ``i`` runs blocks ``i, i + threads, ...``; a block that raises ends its thread's
    share, and the first exception is raised once every thread has stopped.
    """
    blocks = list(bounds)
    if len(blocks) == 1:  # small input: no thread hand-off
        fn(*blocks[0])
        return
    threads = min(get_num_threads(), len(blocks))
    if threads <= 1:
        for start, stop in blocks:
            fn(start, stop)
        return
    # One future per thread, each taking every threads-th block (even shares when blocks
    # differ in size); the calling thread does the first share itself.
    shares = [blocks[i::threads] for i in range(threads)]

    def work(share: list[tuple[int, int]]) -> None:
        for start, stop in share:
            fn(start, stop)

    pool = _executor(threads)
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
