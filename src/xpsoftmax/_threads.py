"""The thread count of the CPU fast paths that split their work into blocks of rows.

NumPy ufuncs release the GIL, so a small pool of Python threads runs blocks of rows in
parallel. Blocks are cut from the data's shape alone, never from the thread count, and each
row is computed by one thread with the same operations, so results are the same bits for one
thread and for many.

The count is, in order: the value of :func:`set_num_threads` (or of :func:`num_threads`
inside it); ``XPSOFTMAX_NUM_THREADS``; ``OMP_NUM_THREADS``; the number of cores this process
may run on. An empty variable counts as unset. ``OMP_NUM_THREADS`` is OpenMP's variable, which
the ecosystem reads as "threads per library": its first entry is taken when it lists one per
nesting level (``"4,2"`` is 4), and a value that is not a positive integer is ignored (the
cores decide) rather than raised, because it is another library's setting, which that
library's runtime reports. A bad ``XPSOFTMAX_NUM_THREADS`` is a ValueError, at the first call.

With threadpoolctl installed, the pool is one of its thread pools: ``threadpool_info()`` lists
it (``user_api`` and ``internal_api`` ``"xpsoftmax"``, ``num_threads`` the current count) and
``threadpool_limits(1)`` or ``threadpool_limits(2, user_api="xpsoftmax")`` set the count as
:func:`set_num_threads` does (process-wide), then restore the previous setting (None
included). threadpoolctl finds thread pools through the shared objects a process has loaded,
and the pool only serves the NumPy fast paths, so it is found through NumPy's core extension
module: its ``prefix`` and ``filepath`` are that module's, and it is listed (and limited) once
NumPy is imported.

Any number of Python threads may call the fast paths at once: they share one pool that only
grows, and a child made by ``fork`` starts with no pool (the copied one has no threads).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "ENV_NUM_THREADS",
    "ENV_OMP_NUM_THREADS",
    "check_num_threads",
    "get_num_threads",
    "in_caller_thread",
    "num_threads",
    "run_blocks",
    "set_num_threads",
]

#: Environment variable setting the thread count for a whole run (a positive integer).
ENV_NUM_THREADS = "XPSOFTMAX_NUM_THREADS"
#: OpenMP's thread-count variable, honoured when ``ENV_NUM_THREADS`` is unset (bad values are
#: ignored).
ENV_OMP_NUM_THREADS = "OMP_NUM_THREADS"

_lock = threading.Lock()
_setting: int | None = None
#: Per thread: whether run_blocks keeps to the calling thread (see in_caller_thread).
_here = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
#: Per raw value of ``ENV_NUM_THREADS`` seen so far (None: unset): the thread count it asks
#: for, or 0 when it is unset or blank and ``ENV_OMP_NUM_THREADS`` decides. Bad values raise
#: and are not kept.
_parsed: dict[object, int] = {}
#: Per raw value of ``ENV_OMP_NUM_THREADS`` seen so far: the thread count it gives (the cores
#: when it is unset or bad).
_parsed_omp: dict[object, int] = {}


def _machine_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _check(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def _environ() -> tuple[Callable[[object], object], Callable[[str], object]]:
    """A getter of raw environment values that costs one dict lookup, and its key encoder.

    ``os.environ.get`` takes about 0.5 µs when the variable is unset (a KeyError inside), too
    much for every fast-path call. CPython's ``os.environ`` keeps the encoded values in a
    plain dict, ``_data``, that every assignment updates (pytest's monkeypatch included), so
    that dict is read where it exists.
    """
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if type(data) is dict and callable(encodekey):
        return data.get, encodekey
    return os.environ.get, str  # type: ignore[return-value]  # pragma: no cover


_env_get, _env_key = _environ()
_read_env = functools.partial(_env_get, _env_key(ENV_NUM_THREADS))
_read_omp = functools.partial(_env_get, _env_key(ENV_OMP_NUM_THREADS))


def _text(raw: object) -> str:
    # POSIX keeps the encoded bytes; None is unset.
    return (os.fsdecode(raw) if isinstance(raw, bytes) else str(raw or "")).strip()


def _parse_env(raw: object) -> int:
    """The thread count a raw value of ``ENV_NUM_THREADS`` asks for, 0 when it is unset or
    blank (``ENV_OMP_NUM_THREADS`` decides); cached when valid, a ValueError when not."""
    text = _text(raw)
    if not text:
        n = 0
    else:
        try:
            n = _check(int(text), ENV_NUM_THREADS)
        except ValueError:
            raise ValueError(
                f"{ENV_NUM_THREADS} must be a positive integer, got {text!r}"
            ) from None
    _parsed[raw] = n
    return n


def _parse_omp(raw: object) -> int:
    """The thread count a raw value of ``ENV_OMP_NUM_THREADS`` gives; cached.

    OpenMP takes a list, one count per nesting level (``"4,2"``): the pool is one level, so
    its first entry. Anything but a positive integer there is ignored and the cores decide: it
    is OpenMP's variable, and a program must not fail here over a value meant for (and
    reported by) another library.
    """
    first = _text(raw).partition(",")[0].strip()
    n = int(first) if first.isascii() and first.isdigit() else 0
    if n < 1:
        n = _machine_threads()
    _parsed_omp[raw] = n
    return n


def _check_num_threads_factory() -> Callable[[], int]:
    # check_num_threads runs on every fast-path call, so what it reads is bound to its closure
    # (closure variables load faster than module globals): about 80 ns a call when both
    # variables are read, 55 when XPSOFTMAX_NUM_THREADS decides, rather than 100 and 65. The
    # caches are bound too: clear them, never rebind them.
    get, ours, omp = _env_get, _env_key(ENV_NUM_THREADS), _env_key(ENV_OMP_NUM_THREADS)
    ours_parsed, omp_parsed = _parsed.get, _parsed_omp.get

    def check_num_threads() -> int:
        """The number of threads the CPU fast paths use; raises at once on a bad setting.

        Called at the start of every NumPy fast path, so that a bad
        ``XPSOFTMAX_NUM_THREADS`` fails before any work, whatever the input's size. Each
        distinct value of the variables is parsed once (and the core count read once per
        value), so a call costs a dict lookup or two per variable read (``OMP_NUM_THREADS``
        is read only when ``XPSOFTMAX_NUM_THREADS`` is unset or blank).

        Returns
        -------
        int
            As :func:`get_num_threads`.

        Raises
        ------
        ValueError
            If ``XPSOFTMAX_NUM_THREADS`` is set (and no :func:`set_num_threads` value
            overrides it) but is not a positive integer. A bad ``OMP_NUM_THREADS`` is ignored.

        Examples
        --------
        >>> from xpsoftmax import _threads
        >>> _threads.check_num_threads() >= 1
        True
        """
        if _setting is not None:
            return _setting
        n = ours_parsed(get(ours))
        if n:  # XPSOFTMAX_NUM_THREADS decides
            return n
        if n is not None:  # it is unset or blank: OMP_NUM_THREADS or the cores decide
            n = omp_parsed(get(omp))
            if n:
                return n
        return _parse_environment()  # a value not seen yet

    return check_num_threads


def _parse_environment() -> int:
    """:func:`check_num_threads` for values not seen yet: parses them, and caches the valid."""
    n = _parse_env(_read_env())
    return n if n else _parse_omp(_read_omp())


check_num_threads = _check_num_threads_factory()


def get_num_threads() -> int:
    """The number of threads the CPU fast paths use.

    In order: the value given to :func:`set_num_threads` (or to :func:`num_threads`, or by
    threadpoolctl's ``threadpool_limits``, which set the same value), the environment
    variable ``XPSOFTMAX_NUM_THREADS``, OpenMP's ``OMP_NUM_THREADS``, the number of cores this
    process may run on. An empty variable counts as unset. Of an ``OMP_NUM_THREADS`` list
    (``"4,2"``, one count per nesting level) the first entry is taken; an ``OMP_NUM_THREADS``
    that is not a positive integer is ignored (the cores decide), since it is another
    library's variable.

    Raises
    ------
    ValueError
        If ``XPSOFTMAX_NUM_THREADS`` decides and is not a positive integer.

    Examples
    --------
    >>> import xpsoftmax
    >>> xpsoftmax.get_num_threads() >= 1
    True

    ``OMP_NUM_THREADS`` counts when ``XPSOFTMAX_NUM_THREADS`` is unset:

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "4,2"}):
    ...     _ = os.environ.pop("XPSOFTMAX_NUM_THREADS", None)
    ...     xpsoftmax.get_num_threads()
    4
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


@contextlib.contextmanager
def in_caller_thread() -> Iterator[None]:
    """Context manager: the fast paths called from this thread inside it run every block in
    this thread (other threads keep their setting).

    For callers that are themselves one of many parallel workers (Dask's tasks): the pool
    would add threads to theirs. Results are the same bits either way.
    """
    before = getattr(_here, "serial", False)
    _here.serial = True
    try:
        yield
    finally:
        _here.serial = before


class _Count(int):
    """A thread count read for threadpoolctl, with the :func:`set_num_threads` setting it was
    read under (None: the default).

    threadpoolctl restores a limit by passing back the count it read before setting it, so the
    controller gets this object back and restores the setting itself: the default (None) stays
    the default, which still follows later changes of the environment, rather than becoming a
    fixed number.
    """

    setting: int | None

    def __new__(cls, n: int, setting: int | None = None) -> _Count:
        self = super().__new__(cls, n)
        self.setting = setting
        return self


def _threadpoolctl_count() -> _Count:
    setting = _setting
    if setting is not None:
        return _Count(setting, setting)
    try:
        n = check_num_threads()
    except ValueError:
        # A bad XPSOFTMAX_NUM_THREADS: threadpoolctl lists every library of the process (a
        # limit on BLAS alone reads them all), so it must not fail there; the next xpsoftmax
        # call raises. The count without it is shown.
        n = _parse_omp(_read_omp())
    return _Count(n, None)


def _threadpoolctl_set(n: Any) -> None:
    if isinstance(n, _Count):  # a count read by threadpoolctl, passed back to restore it
        set_num_threads(n.setting)
        return
    try:
        n = operator.index(n)  # NumPy integers too
    except TypeError:
        pass
    set_num_threads(n)  # a ValueError unless a positive integer


def _register_with_threadpoolctl() -> bool:
    """Register the pool as a threadpoolctl controller if threadpoolctl (>= 3.2) is installed.

    threadpoolctl lists a library when one of the shared objects loaded in the process starts
    with one of its controller's ``filename_prefixes`` (and exports one of its
    ``check_symbols``). The pool is pure Python and serves only the NumPy fast paths, so it is
    matched to NumPy's core extension module, loaded in every process where the pool can run.
    That uses only threadpoolctl's documented extension point (``LibController`` and
    ``register``), no private discovery code.
    """
    try:
        import threadpoolctl
    except ImportError:
        return False
    if not hasattr(threadpoolctl, "register"):  # pragma: no cover - threadpoolctl < 3.2
        return False

    class XpsoftmaxController(threadpoolctl.LibController):
        """xpsoftmax's thread pool (the NumPy fast paths), found through NumPy."""

        user_api = "xpsoftmax"
        internal_api = "xpsoftmax"
        filename_prefixes = ("_multiarray_umath",)
        check_symbols = ("PyInit__multiarray_umath",)

        def get_num_threads(self) -> int:
            return _threadpoolctl_count()

        def set_num_threads(self, num_threads: Any) -> None:
            _threadpoolctl_set(num_threads)

        def get_version(self) -> str | None:
            return getattr(sys.modules.get(__package__ or "xpsoftmax"), "__version__", None)

    threadpoolctl.register(XpsoftmaxController)
    return True


# Registered at import, when threadpoolctl is installed, rather than at the first use of the
# pool: threadpoolctl looks for controllers only when threadpool_info() or threadpool_limits()
# runs, and nothing tells a library that threadpoolctl was imported after it, so a later
# registration would miss `with threadpool_limits(1): xpsoftmax.softmax(x)` whenever that is
# the first call. The cost: importing threadpoolctl (about 2.3 ms on top of the ~45 ms of
# `import xpsoftmax`, nothing when it is imported already; like any import of it, it sets
# KMP_DUPLICATE_LIB_OK=True unless set) and registering (microseconds); a missing threadpoolctl
# costs one failed module lookup (about 0.1 ms).
_THREADPOOLCTL = _register_with_threadpoolctl()


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
    if getattr(_here, "serial", False):
        threads = 1
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
