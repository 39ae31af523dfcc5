"""The recorded profile: what ``asv_bench/record`` measures on every commit of main.

The full suite (the other modules) takes half an hour on a 2-core machine; this profile takes
a few minutes, so that every commit can have results. It covers the shapes that matter (a
language-model row shape, an attention shape, and a tiny call that shows the per-call
overhead), float32 and bfloat16, and for every operation the fast path, the generic
implementation and the library's own function ("peer") on the CPU backends.

Everything is measured in one process, in :meth:`Profile.setup_cache`, **side by side**: each
round times the fast path, the generic implementation and the peer once each, in turn, so that
a slow moment of the machine slows all three alike. The ``track_`` benchmarks then only read
those numbers (asv runs each of them in a process of its own, which costs milliseconds with
``--launch-method forkserver``):

* ``track_ms``: the median milliseconds per call, per implementation;
* ``track_spread``: the interquartile range of the rounds over their median (run-to-run
  noise within one process);
* ``track_time_vs_peer``: the median over rounds of ``fast time / peer time``, the ratio
  taken within each round: the machine's noise cancels. Below 1 the fast path is faster than
  the library's own function (the speed-up is its inverse). Lower is better, as asv assumes,
  and it is what the regression thresholds are set on (the peer's code never changes: it is
  the control);
* ``track_limit_fraction``: the effective bandwidth (inputs read once, output written once)
  over that of a plain copy of the same bytes, measured once per device (here the CPU, with
  NumPy) and used for every library on it.

The process is made steady before anything is measured, so that what moves between commits
is the code (measured: the paired ratio fast/peer moves by 2% median, under 10% at the 95th
percentile, at most 23% between fresh processes of the same commit):

* every library runs on **one thread**, bound to one CPU (xpsoftmax's NumPy pool, torch's
  intra-op pool, XLA's CPU runtime, which only the CPU binding restrains), JAX without
  asynchronous dispatch. On the project's shared 2-core machine a second thread made every
  threaded timing bimodal, depending on whether the other core was free. The quick run
  (``python -m xpsoftmax bench``) measures multi-threaded speed;
* the C allocator keeps the memory that is freed (:func:`steady_allocator`): otherwise a call's
  big output may or may not be fresh pages to fault in, by the process's history;
* each implementation runs a few times untimed, and the garbage collector is off while timing.

:data:`VERSION` names this way of measuring: asv shows only results of the current version, and
``asv_bench/record`` benchmarks again every commit whose results are of another.

Only xpsoftmax's public functions are used, so old commits run too; a function a commit does
not have yet (``cross_entropy_with_grad``, ``force_generic``) is recorded as skipped there.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import math
import os
import statistics
import sys
import time
from typing import ClassVar

import numpy as np

import xpsoftmax as xs

from .common import XPBenchmark

OPS = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"]
BACKENDS = ["numpy", "torch:cpu", "jax:cpu"]
IMPLEMENTATIONS = ["fast", "generic", "peer"]
#: Language-model rows (a 32K vocabulary), attention rows (1024 keys), and the overhead shape.
SHAPES = ["256x32000", "4096x1024", "32x10"]
DTYPES = ["float32", "bfloat16"]
#: Rounds of (fast, generic, peer) per configuration; each sample lasts at least MIN_SAMPLE s.
ROUNDS = 5
MIN_SAMPLE = 0.004
#: The way of measuring (asv's benchmark version); change it when a change of the measurement
#: makes old numbers incomparable, and record the history again.
VERSION = "2: steady allocator, one CPU"
#: Untimed calls of each implementation first: its memory comes from the allocator once.
WARMUP_CALLS = 3


class _Case(XPBenchmark):
    """One implementation of one operation on one input, as the full suite builds it."""

    def __init__(self, op):
        self.op = "cross_entropy" if op == "cross_entropy_with_grad" else op
        self.backward = op == "cross_entropy_with_grad"

    def build(self, backend, impl, shape, dtype):
        self.setup(backend, impl, shape, dtype)
        forward = {
            "softmax": lambda x, t: xs.softmax(x),
            "log_softmax": lambda x, t: xs.log_softmax(x),
            "logsumexp": lambda x, t: xs.logsumexp(x, axis=-1),
            "cross_entropy": xs.cross_entropy,
        }[self.op]
        if impl == "generic" and not hasattr(xs, "force_generic"):
            raise NotImplementedError("force_generic does not exist at this commit")
        if self.backward and self.backend.library not in ("torch", "jax"):
            if not hasattr(xs, "cross_entropy_with_grad"):
                raise NotImplementedError("cross_entropy_with_grad does not exist at this commit")
        self.prepare(forward, backward=self.backward)
        if self.op == "cross_entropy":
            self.in_bytes += self.backend.nbytes(self.target)
        return self


def _key(*parts):
    return "|".join(parts)


def _calls_per_sample(run):
    """How many calls make a sample of at least MIN_SAMPLE seconds (tiny calls repeat)."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    return max(1, math.ceil(MIN_SAMPLE / max(once, 1e-7)))


def _time(run, number):
    """Seconds per call over ``number`` calls, without the garbage collector (as ``timeit``):
    a collection landing in one sample and not in the next is noise, not the code."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            run()
        return (time.perf_counter() - start) / number
    finally:
        if enabled:
            gc.enable()


def _copy_seconds(nbytes, cache):
    """Seconds of one plain copy of ``nbytes`` on the CPU (NumPy), measured once per size."""
    if nbytes not in cache:
        src = np.ones(max(1, nbytes // 4), dtype=np.float32)
        dst = np.empty_like(src)
        number = _calls_per_sample(lambda: np.copyto(dst, src))
        cache[nbytes] = statistics.median(
            _time(lambda: np.copyto(dst, src), number) for _ in range(ROUNDS)
        )
    return cache[nbytes]


def _measure(op, backend, shape, dtype, copies, out):
    cases, reasons = {}, {}
    for impl in IMPLEMENTATIONS:
        try:
            cases[impl] = _Case(op).build(backend, impl, shape, dtype)
        except NotImplementedError as exc:
            reasons[impl] = str(exc) or type(exc).__name__
        except Exception as exc:  # an old commit without this option, a library too old
            reasons[impl] = f"{type(exc).__name__}: {exc}"
    for impl, reason in reasons.items():
        out["skip"][_key(op, backend, impl, shape, dtype)] = reason
    if not cases:
        return
    for case in cases.values():
        for _ in range(WARMUP_CALLS):
            case.run()
    numbers = {impl: _calls_per_sample(case.run) for impl, case in cases.items()}
    samples = {impl: [] for impl in cases}
    for _ in range(ROUNDS):
        for impl, case in cases.items():
            samples[impl].append(_time(case.run, numbers[impl]))
    for impl, times in samples.items():
        median = statistics.median(times)
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        out["ms"][_key(op, backend, impl, shape, dtype)] = median * 1e3
        out["spread"][_key(op, backend, impl, shape, dtype)] = (q3 - q1) / median
    key = _key(op, backend, shape, dtype)
    if "fast" in samples and "peer" in samples:
        ratios = [f / p for f, p in zip(samples["fast"], samples["peer"])]
        out["vs_peer"][key] = statistics.median(ratios)
    if "fast" in samples:
        fast = cases["fast"]
        gbps = (fast.in_bytes + fast.out_bytes) / statistics.median(samples["fast"])
        copy_gbps = 2 * fast.x_bytes / _copy_seconds(fast.x_bytes, copies)
        out["limit"][key] = gbps / copy_gbps
    for case in cases.values():
        case.teardown()


def steady_allocator():
    """Make the C allocator keep the memory that is freed, so that every timed call reuses it
    (glibc; elsewhere nothing happens). True when applied.

    By default glibc gives big blocks back to the kernel when they are freed: a block over
    32 MiB is a mapping of its own, and the heap's free top is trimmed. The next call's output
    or temporary is then fresh memory that faults in page by page (a 32 MB softmax output:
    8000 page faults, about 10 ms here). Whether it happens depended on the process's history
    (which freed blocks happened to lie together), not on the code measured: torch.softmax on
    256x32000 took 3.5 or 13.8 ms from one commit to the next, the JAX fast path's logsumexp
    7 or 20 ms, and XLA's 62.5 MiB temporary buffer was mapped and unmapped at every call in
    some processes and reused in others. With no mappings, no trimming and one arena (XLA's
    worker threads would otherwise have heaps of their own), memory is faulted in once, during
    the warm-up, and the rounds time the computation. All three implementations run under the
    same allocator, so the comparison stays fair; the memory the process holds is the largest
    it ever used (a few hundred MB here).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    settings = ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1))
    return all(mallopt(option, value) == 1 for option, value in settings)


def one_thread():
    """Every library on one thread (see the module's docstring). Called before torch and JAX
    are imported in this process: XLA sizes its thread pool when it starts.

    The process is also bound to one CPU: XLA's CPU runtime runs a fusion's loop on a pool of
    as many threads as the process has CPUs, whatever its flags say (with the flags alone JAX
    still used both cores here, and its timings moved by up to 60% between processes). One CPU
    also keeps the scheduler from moving the measurement between cores. And JAX's CPU
    computations run inline, on the calling thread, rather than handed to a worker thread and
    waited for: that hand-over's wake-up took 6 to 70 us from one process to the next, which
    moved the tiny shape's times 5-10x between commits.
    """
    if hasattr(os, "sched_setaffinity"):  # Linux
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    os.environ["XPSOFTMAX_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]
    ).strip()
    if hasattr(xs, "set_num_threads"):  # commits before the thread pool have none to set
        xs.set_num_threads(1)
    with contextlib.suppress(ImportError, AttributeError):  # JAX without the option: async
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)


def measure_all():
    """Every configuration of the profile: ``{"ms", "spread", "vs_peer", "limit", "skip"}``,
    each a dict keyed by ``"op|backend|impl|shape|dtype"`` (no ``impl`` for ``vs_peer`` and
    ``limit``); ``skip`` holds the reason of each configuration that could not run."""
    steady = steady_allocator()  # first: before torch and XLA start their threads
    one_thread()
    out = {"ms": {}, "spread": {}, "vs_peer": {}, "limit": {}, "skip": {}}
    copies = {}
    started = time.perf_counter()
    for op, backend, shape, dtype in itertools.product(OPS, BACKENDS, SHAPES, DTYPES):
        _measure(op, backend, shape, dtype, copies, out)
    allocator = "steady allocator" if steady else "default allocator"
    print(
        f"profile measured in {time.perf_counter() - started:.0f} s ({allocator})", file=sys.stderr
    )
    return out


def _params(*names):
    table = {
        "op": OPS,
        "backend": BACKENDS,
        "impl": IMPLEMENTATIONS,
        "shape": SHAPES,
        "dtype": DTYPES,
    }
    return [table[n] for n in names], list(names)


def _read(method, table, *names):
    """A ``track_`` method returning ``cache[table][key]`` (skipped where there is none)."""
    params, param_names = _params(*names)

    def track(self, cache, *values):
        key = _key(*values)
        if key not in cache[table]:
            raise NotImplementedError(cache["skip"].get(key, "not measured"))
        return cache[table][key]

    track.__name__ = method
    track.version = VERSION
    track.params = params
    track.param_names = param_names
    # NumPy has no bfloat16: left out without a process.
    track.skip_params = [
        p
        for p in itertools.product(*params)
        if p[names.index("backend")] == "numpy" and p[names.index("dtype")] == "bfloat16"
    ]
    return track


class Profile:
    """The profile's numbers (see the module's docstring); one ``setup_cache`` per commit."""

    timeout = 60

    def setup_cache(self):
        return measure_all()

    setup_cache.timeout = 1200

    track_ms = _read("track_ms", "ms", "op", "backend", "impl", "shape", "dtype")
    track_ms.unit = "ms"
    track_spread = _read("track_spread", "spread", "op", "backend", "impl", "shape", "dtype")
    track_spread.unit = "interquartile range / median"
    track_time_vs_peer = _read("track_time_vs_peer", "vs_peer", "op", "backend", "shape", "dtype")
    track_time_vs_peer.unit = "fast time / the library's own time"
    track_limit_fraction = _read("track_limit_fraction", "limit", "op", "backend", "shape", "dtype")
    track_limit_fraction.unit = "fraction of copy bandwidth"

    params: ClassVar[list] = []
