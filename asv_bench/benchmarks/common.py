"""Shared machinery of the benchmark suite: backends, implementations, timing and memory.

Every benchmark class derives from :class:`XPBenchmark`, parametrised over backend,
implementation, shape and dtype. ``setup`` builds the inputs once and a zero-argument callable
``self.run`` that computes the operation and waits for the device, so that asv times exactly
one synchronised call. Unavailable combinations raise ``NotImplementedError`` in ``setup``,
which asv records as skipped.

Only xpsoftmax's public API is used (``softmax``, ..., ``force_generic``), so that the suite
also runs against old commits of the project; the array adapters (making arrays, waiting for
devices, the copy baseline) are xpsoftmax's own, loaded from this checkout's source files.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import ClassVar

import numpy as np

import xpsoftmax as xs

BACKENDS = ["numpy", "torch:cpu", "jax:cpu", "torch:cuda", "jax:gpu", "cupy"]
IMPLEMENTATIONS = ["fast", "generic", "peer"]
# Vocabulary-sized rows (LLM logits), very long rows, many short rows, and a tiny call that
# shows the per-call overhead.
SHAPES = ["4096x32000", "512x131072", "65536x128", "32x10"]
DTYPES = ["float32", "float64", "bfloat16"]
BIG_SHAPES = SHAPES[:2]
# The track_ benchmarks (bandwidth, memory) run on the headline shape in float32 only: each big
# run costs seconds, and the other shapes' and dtypes' speed is in the time_ benchmarks.
TRACK_SHAPES = SHAPES[:1]
TRACK_DTYPES = DTYPES[:1]

try:  # asv's marker for a skip raised inside a benchmark body (asv_runner >= 0.1)
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # running under pytest without asv
    SkipNotImplemented = NotImplementedError  # type: ignore[misc,assignment]


def parse_shape(shape):
    """``"4096x32000"`` -> ``(4096, 32000)``."""
    return tuple(int(n) for n in shape.split("x"))


def static_skip(backend, impl, shape, dtype):
    """Combinations left out without looking at the machine.

    NumPy, SciPy and CuPy have no bfloat16. float64 on the two biggest shapes is left out: it
    doubles the cost of the slowest benchmarks and tells nothing that float32 does not.
    """
    if dtype == "bfloat16" and backend in ("numpy", "cupy"):
        return True
    return dtype == "float64" and shape in BIG_SHAPES


def tracked(unit, extra_params=(), extra_names=()):
    """Decorator of a ``track_`` method: its unit, and asv parameters of its own (those of
    :class:`XPBenchmark` on :data:`TRACK_SHAPES` and :data:`TRACK_DTYPES`, plus
    ``extra_params``)."""

    def decorate(method):
        params = [BACKENDS, IMPLEMENTATIONS, TRACK_SHAPES, TRACK_DTYPES, *extra_params]
        method.params = params
        method.param_names = [*XPBenchmark.param_names, *extra_names]
        method.skip_params = [p for p in itertools.product(*params) if static_skip(*p[:4])]
        method.unit = unit
        return method

    return decorate


# --- backends ------------------------------------------------------------------------------
# The array adapters are xpsoftmax's own (xpsoftmax.testing.backends, over the one list of
# libraries in xpsoftmax._libraries), read from this checkout's source files: asv benchmarks
# old commits too, whose installed package has neither module.

_SOURCE = Path(__file__).resolve().parents[2] / "src" / "xpsoftmax"
_PACKAGE = "_xpsoftmax_asv_source"  # a private name: the installed xpsoftmax stays as it is


def _source_package(name, directory):
    """An empty package ``name`` whose submodules are the source files in ``directory`` (its
    ``__init__`` is not run: it would import the whole checkout)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return sys.modules[name]


def _load_adapters():
    """The checkout's ``xpsoftmax/testing/backends.py`` (with the ``_libraries.py`` beside it)."""
    _source_package(_PACKAGE, _SOURCE)
    _source_package(f"{_PACKAGE}.testing", _SOURCE / "testing")
    return importlib.import_module(f"{_PACKAGE}.testing.backends")


adapters = _load_adapters()


def _gpu_visible():
    """False when no NVIDIA or AMD GPU device node exists: GPU backends then skip without
    importing their library (seconds per skipped benchmark, hundreds of them)."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd"))


def find_backend(name):
    """The adapter of backend ``name`` (one of :data:`BACKENDS`, an id of the adapters');
    ``NotImplementedError``, asv's skip, where its library or device is absent."""
    backend = adapters.BY_ID[name]
    if backend.device != "cpu" and not _gpu_visible():
        raise NotImplementedError("no GPU")
    reason = backend.probe()
    if reason is not None:
        raise NotImplementedError(reason)
    return backend


# --- the library's own implementations -----------------------------------------------------


def peer(backend, op):
    """The library's own ``op`` on rows (last axis), as the library's users would write it.

    ``op`` is one of ``softmax``, ``log_softmax``, ``logsumexp``, ``cross_entropy``; the
    cross-entropy takes integer labels and returns the mean loss.
    """
    lib = backend.library
    if lib == "numpy":
        import scipy.special as sc

        def np_cross_entropy(x, t):
            picked = np.take_along_axis(x, t[:, None], axis=-1)[:, 0]
            return np.mean(sc.logsumexp(x, axis=-1) - picked)

        return {
            "softmax": lambda x: sc.softmax(x, axis=-1),
            "log_softmax": lambda x: sc.log_softmax(x, axis=-1),
            "logsumexp": lambda x: sc.logsumexp(x, axis=-1),
            "cross_entropy": np_cross_entropy,
        }[op]
    if lib == "torch":
        import torch
        import torch.nn.functional as F

        return {
            "softmax": lambda x: torch.softmax(x, -1),
            "log_softmax": lambda x: torch.log_softmax(x, -1),
            "logsumexp": lambda x: torch.logsumexp(x, -1),
            "cross_entropy": F.cross_entropy,
        }[op]
    if lib == "jax":
        import jax

        if op == "cross_entropy":
            if importlib.util.find_spec("optax") is None:
                raise NotImplementedError("optax is not installed")
            import optax

            return lambda x, t: optax.softmax_cross_entropy_with_integer_labels(x, t).mean()
        return {
            "softmax": jax.nn.softmax,
            "log_softmax": jax.nn.log_softmax,
            "logsumexp": lambda x: jax.scipy.special.logsumexp(x, axis=-1),
        }[op]
    return _naive(importlib.import_module(lib), op)


def _naive(xp, op):
    """The textbook formulas (CuPy has no softmax of its own)."""

    def lse(x):
        m = x.max(axis=-1, keepdims=True)
        return m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))

    return {
        "softmax": lambda x: xp.exp(x - lse(x)),
        "log_softmax": lambda x: x - lse(x),
        "logsumexp": lambda x: lse(x)[..., 0],
        "cross_entropy": lambda x, t: xp.mean(
            lse(x)[:, 0] - xp.take_along_axis(x, t[:, None], axis=-1)[:, 0]
        ),
    }[op]


def peer_with_grad(backend):
    """Cross-entropy and its gradient without autodiff (NumPy, CuPy): from one log_softmax."""
    xp = importlib.import_module(backend.library)
    if backend.library == "numpy":
        import scipy.special as sc

        log_softmax = lambda x: sc.log_softmax(x, axis=-1)  # noqa: E731
    else:
        log_softmax = _naive(xp, "log_softmax")

    def loss_and_grad(x, t):
        rows = xp.arange(x.shape[0])
        lsm = log_softmax(x)
        grad = xp.exp(lsm)
        grad[rows, t] -= 1
        grad /= x.shape[0]
        return -xp.mean(lsm[rows, t]), grad

    return loss_and_grad


# --- the benchmark base class --------------------------------------------------------------


class XPBenchmark:
    """Base of every benchmark class: parameters, inputs and the synchronised call ``run``.

    Subclasses set ``op`` (``softmax``, ``log_softmax``, ``logsumexp``, ``cross_entropy``) and
    extend :meth:`setup` to call :meth:`prepare`.
    """

    params: ClassVar[list] = [BACKENDS, IMPLEMENTATIONS, SHAPES, DTYPES]
    param_names: ClassVar[list] = ["backend", "impl", "shape", "dtype"]
    # asv neither spawns a process nor runs setup for these.
    skip_params: ClassVar[list] = [p for p in itertools.product(*params) if static_skip(*p)]
    # asv spawns a process per parameter combination, and big calls take 0.1-2 s each on a
    # 2-core machine: one round, no warm-up beyond setup's, and one to three samples of at
    # most about a second keep the suite's duration in check.
    rounds = 1
    repeat = (1, 3, 1.0)
    warmup_time = 0
    timeout = 300
    op = ""

    def setup(self, backend, impl, shape, dtype):
        if static_skip(backend, impl, shape, dtype):
            raise NotImplementedError(f"{backend} {shape} {dtype} is left out")
        self.backend = find_backend(backend)
        self.impl = impl
        self._x64 = None
        if self.backend.library == "jax" and dtype == "float64":
            import jax

            self._x64 = jax.config.jax_enable_x64
            jax.config.update("jax_enable_x64", True)
        if shape in BIG_SHAPES:
            # One call per sample and no calibration call: setup has warmed up already.
            self.number = 1
            self.min_run_count = 1
        rows, cols = parse_shape(shape)
        rng = np.random.default_rng(0)
        wide = np.float64 if dtype == "float64" else np.float32
        host = rng.random((rows, cols), dtype=wide)
        host *= 8
        host -= 4
        self.x = self.backend.asarray(host, dtype)
        labels = rng.integers(0, cols, rows)
        self.target = self.backend.asarray(labels, self.backend.index_dtype)
        # Minimal traffic: the inputs read once plus the output written once (prepare sets
        # out_bytes; the cross-entropy adds the labels to in_bytes).
        self.x_bytes = self.in_bytes = self.backend.nbytes(self.x)

    def teardown(self, *params):
        if getattr(self, "_x64", None) is not None:
            import jax

            jax.config.update("jax_enable_x64", self._x64)

    def prepare(self, forward, backward=False):
        """Set ``self.run``, the benchmark's synchronised call, and warm it up (JAX functions
        are compiled here); ``self.out_bytes`` is the size of what it returns.

        ``forward(x, target)`` computes the operation with xpsoftmax; the peer comes from
        :func:`peer`. With ``backward``, the call returns the loss and its gradient.
        """
        backend, impl = self.backend, self.impl
        if impl == "peer":
            own = peer(backend, self.op)
            forward = own if self.op == "cross_entropy" else (lambda x, t: own(x))
        fn = _with_grad(backend, forward, impl) if backward else forward
        # A function of its own for each benchmark: jax.jit keeps one trace per function,
        # whatever the registry's state, so the generic run of a function the fast run jitted
        # too (xs.cross_entropy) timed the fast path's program, until 2026-11-27.
        fn = backend.jit(lambda *args, _fn=fn: _fn(*args))
        x, target = self.x, self.target
        if backward:
            x = backend.requires_grad(x)
        context = xs.force_generic if impl == "generic" else contextlib.nullcontext

        def run():
            with context():
                return backend.sync(fn(x, target))

        self.run = run
        self.out_bytes = backend.nbytes(
            run()
        )  # also the warm-up: compiles, loads the backend module

    # --- measurements used by the track_ methods -----------------------------------------

    def gbps(self):
        """Effective bandwidth: (inputs read once + output written once) / median time."""
        return (self.in_bytes + self.out_bytes) / median_time(self.run) / 1e9

    def copy_fraction(self):
        """The effective bandwidth as a fraction of a plain copy's, measured here and now."""
        copy_gbps = 2 * self.x_bytes / median_time(self.backend.copier(self.x)) / 1e9
        return self.gbps() / copy_gbps

    def peak_memory(self):
        """Peak memory beyond the inputs and the result, in units of the input's size.

        The input's size is the output's for softmax, log_softmax and the gradient; for the
        reductions it is the size of the array that temporaries scale with.
        """
        return peak_extra_bytes(self.backend, self.run) / self.x_bytes


def _with_grad(backend, forward, impl):
    """Forward+backward of a scalar loss: autodiff where the library has it."""
    if backend.autodiff:
        return backend.value_and_grad(forward)
    if impl == "peer":
        return peer_with_grad(backend)
    return xs.cross_entropy_with_grad


def median_time(fn, samples=3, min_sample=0.01, budget=1.0):
    """Median seconds per call of ``fn`` over up to ``samples`` samples of at least
    ``min_sample`` seconds each, stopping once ``budget`` seconds have been spent."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_sample:
            break
        number *= 10 if elapsed < min_sample / 10 else 2
    times = [elapsed / number]
    while len(times) < samples and sum(times) * number < budget:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def peak_extra_bytes(backend, run):
    """Bytes allocated at the peak of one call of ``run``, less the result it returns.

    NumPy: tracemalloc, which sees NumPy's allocations exactly. torch:cuda: the caching
    allocator's peak. torch and JAX on CPU: the resident-set high-water mark, reset through
    ``/proc/self/clear_refs`` (Linux); their big buffers are fresh ``mmap`` pages that count
    once touched, so it is exact to a page for the big shapes and noise for the tiny one.
    """
    if backend.library == "numpy":
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            out = run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return max(0, peak - before - backend.nbytes(out))
    if backend.id == "torch:cuda":
        import torch

        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = run()
        return max(0, torch.cuda.max_memory_allocated() - before - backend.nbytes(out))
    if backend.device == "cpu" and os.path.exists("/proc/self/clear_refs"):
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        out = run()
        return max(0, _status_kib("VmHWM") * 1024 - before * 1024 - backend.nbytes(out))
    raise SkipNotImplemented(f"no peak-memory measurement for {backend.id}")


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SkipNotImplemented(f"{field} missing from /proc/self/status")
