"""``python -m xpsoftmax bench``: fast path vs generic implementation vs the library's own.

For every array library and device, each operation is timed on one row-major input (a few
synchronised samples: their median, and their minimum and maximum as the spread). The
headline is the speed-up over the library's own function (own time / xpsoftmax's time), for
the fast path and for the generic implementation.

Each time is also a fraction of the bandwidth of a plain copy, the limit a memory-bound
operation can approach. There is one copy baseline per device, measured once, before the
libraries run, and shared by every library on that device, so that their fractions compare:

- the host (``cpu``: NumPy, ``torch:cpu``, ``jax:cpu``) is measured with NumPy's copier
  (``np.copyto`` into an array allocated once: one thread), whatever libraries run;
- the GPU (``gpu``: ``torch:cuda``, CuPy and ``jax:gpu``, one card whatever each library
  calls it) with the copier of the first library on it in the one list of libraries
  (``xpsoftmax._libraries``): torch's where it runs.

The copied array has the input's shape and byte size: the input's dtype where the copying
library has it, else a float of the same width (float16 for bfloat16 on NumPy). A library
that copies with several threads may therefore pass 100% of the host's single-threaded copy.
The minimal traffic counted is the inputs read once and the output written once (the
gradient, for ``cross_entropy+grad``).

Every library, device and dtype the command knows gets its rows: those that cannot run say
why ("no CUDA device", "no bfloat16 in NumPy", "optax not installed"), in the text, the JSON
and the chart alike.

Array libraries are imported inside functions only, like everywhere in the core.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _api, _bench_linear, _libraries, _registry, _threads

if TYPE_CHECKING:  # the adapters import NumPy: only inside functions here
    from .testing.backends import Backend

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy+grad")
IMPLEMENTATIONS = ("fast", "generic", "own")
#: The dtypes ``--dtype`` offers; a library without one is skipped, saying so.
DTYPES = ("float32", "float64", "float16", "bfloat16")
QUICK_SHAPE = (256, 4096)  # 4 MiB: the whole run takes seconds
DEFAULT_SHAPE = (4096, 8192)  # 128 MiB: far beyond the caches, still quick on a laptop
#: What the spread of a time is, in the output and the JSON.
SPREAD = "min-max"
#: The modules whose versions the JSON records, where installed.
VERSIONED = ("numpy", "torch", "jax", "jaxlib", "optax", "scipy", "cupy", "dask")
#: How the ``missing`` of a cell that raised starts.
_FAILED = "failed: "
#: The implementations that are not xpsoftmax's (their failures are not ours).
_NOT_OURS = ("own", "torch_reference", "torch_chunked")
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


# --- each library's own implementations ---------------------------------------------------
# One builder per library: the operations it has, over rows, each taking ``(x, target)``.
# ``cross_entropy+grad`` is built here only for libraries without autodiff; for the others it
# is their autodiff of their own ``cross_entropy`` (see _own).


def _numpy_own() -> dict[str, Callable[..., Any]]:
    import numpy as np
    import scipy.special as sc

    def loss_and_grad(x: Any, t: Any) -> tuple[Any, Any]:
        rows = np.arange(x.shape[0])
        lsm = sc.log_softmax(x, axis=-1)
        grad = np.exp(lsm)
        grad[rows, t] -= 1
        grad /= x.shape[0]
        return -np.mean(lsm[rows, t]), grad

    return {
        "softmax": lambda x, t: sc.softmax(x, axis=-1),
        "log_softmax": lambda x, t: sc.log_softmax(x, axis=-1),
        "logsumexp": lambda x, t: sc.logsumexp(x, axis=-1),
        "cross_entropy": lambda x, t: np.mean(
            sc.logsumexp(x, axis=-1) - np.take_along_axis(x, t[:, None], axis=-1)[:, 0]
        ),
        "cross_entropy+grad": loss_and_grad,
    }


def _torch_own() -> dict[str, Callable[..., Any]]:
    import torch
    import torch.nn.functional as F

    return {
        "softmax": lambda x, t: torch.softmax(x, -1),
        "log_softmax": lambda x, t: torch.log_softmax(x, -1),
        "logsumexp": lambda x, t: torch.logsumexp(x, -1),
        "cross_entropy": F.cross_entropy,
    }


def _jax_own() -> dict[str, Callable[..., Any]]:
    import jax

    ops: dict[str, Callable[..., Any]] = {
        "softmax": lambda x, t: jax.nn.softmax(x),
        "log_softmax": lambda x, t: jax.nn.log_softmax(x),
        "logsumexp": lambda x, t: jax.scipy.special.logsumexp(x, axis=-1),
    }
    if importlib.util.find_spec("optax") is not None:  # JAX's cross-entropy lives there
        import optax

        def cross_entropy(x: Any, t: Any) -> Any:
            return optax.softmax_cross_entropy_with_integer_labels(x, t).mean()

        ops["cross_entropy"] = cross_entropy
    return ops


def _cupy_own() -> dict[str, Callable[..., Any]]:
    import cupy as cp

    def lse(x: Any) -> Any:
        m = x.max(axis=-1, keepdims=True)
        return m + cp.log(cp.exp(x - m).sum(axis=-1, keepdims=True))

    def loss_and_grad(x: Any, t: Any) -> tuple[Any, Any]:
        rows = cp.arange(x.shape[0])
        lsm = x - lse(x)
        grad = cp.exp(lsm)
        grad[rows, t] -= 1
        grad /= x.shape[0]
        return -cp.mean(lsm[rows, t]), grad

    return {
        "softmax": lambda x, t: cp.exp(x - lse(x)),
        "log_softmax": lambda x, t: x - lse(x),
        "logsumexp": lambda x, t: lse(x)[:, 0],
        "cross_entropy": lambda x, t: cp.mean(
            lse(x)[:, 0] - cp.take_along_axis(x, t[:, None], axis=-1)[:, 0]
        ),
        "cross_entropy+grad": loss_and_grad,
    }


@dataclass(frozen=True)
class _Own:
    """A library as the benchmark shows it, with its own implementations.

    Attributes
    ----------
    name : str
        The library's name in messages ("no bfloat16 in NumPy").
    label : str
        What the report calls its own implementations.
    build : callable
        Returns the own implementations it has, by operation.
    needs : dict
        Per operation, the module its own implementation comes from where that is not the
        library itself: without it the operation has no own time ("optax not installed").
    dtype_hint : str
        How to get a dtype the library has but not in its present configuration.
    """

    name: str
    label: str
    build: Callable[[], dict[str, Callable[..., Any]]]
    needs: dict[str, str] = field(default_factory=dict)
    dtype_hint: str = ""


#: The libraries the benchmark compares with their own implementations.
_OWN = {
    "numpy": _Own("NumPy", "scipy.special", _numpy_own, dict.fromkeys(OPS, "scipy")),
    "torch": _Own("PyTorch", "torch / torch.nn.functional", _torch_own),
    "jax": _Own(
        "JAX",
        "jax.nn / optax",
        _jax_own,
        dict.fromkeys(("cross_entropy", "cross_entropy+grad"), "optax"),
        "set JAX_ENABLE_X64=1 for float64",
    ),
    "cupy": _Own("CuPy", "plain CuPy formulas", _cupy_own),
}
#: The libraries benchmarked, in the order of the one list of libraries.
LIBRARIES = tuple(lib.name for lib in _libraries.LIBRARIES if lib.name in _OWN)


def _own_missing(b: Backend, op: str) -> str | None:
    """Why the library has no own ``op`` here (a module not installed); None when it has."""
    module = _OWN[b.library].needs.get(op)
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    if op not in _OWN[b.library].build() and not (op.endswith("+grad") and b.autodiff):
        return f"no own {op} in {_OWN[b.library].name}"
    return None


def _own(b: Backend, op: str) -> Callable[..., Any] | None:
    """The library's own ``op`` over rows, taking ``(x, target)``; None where it has none
    (:func:`_own_missing` says why)."""
    if _own_missing(b, op) is not None:
        return None
    if op == "cross_entropy+grad" and b.autodiff:
        loss = _own(b, "cross_entropy")
        return None if loss is None else b.value_and_grad(loss)
    return _OWN[b.library].build()[op]


def _ours(b: Backend, op: str) -> Callable[..., Any]:
    """xpsoftmax's ``op`` taking ``(x, target)``; the gradient by the library's autodiff."""
    if op == "cross_entropy+grad":
        return b.value_and_grad(_api.cross_entropy) if b.autodiff else _api.cross_entropy_with_grad
    return {
        "softmax": lambda x, t: _api.softmax(x),
        "log_softmax": lambda x, t: _api.log_softmax(x),
        "logsumexp": lambda x, t: _api.logsumexp(x, axis=-1),
        "cross_entropy": _api.cross_entropy,
    }[op]


# --- timing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Seconds per call of one function: one entry per sample."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        """The low end of the spread (:data:`SPREAD`: the fastest sample)."""
        return min(self.samples)

    @property
    def high(self) -> float:
        """The high end of the spread (the slowest sample)."""
        return max(self.samples)

    def cell(self) -> str:
        """``"1.234 (1.200-1.300)"``: milliseconds, median and spread."""
        return f"{self.median * 1e3:.3f} ({self.low * 1e3:.3f}-{self.high * 1e3:.3f})"


def sample_seconds(fn: Callable[[], Any], repeats: int) -> Timing:
    """Seconds per call of ``fn`` in ``repeats`` samples, each of enough calls to last 10 ms
    (the number of calls is found first, by a run that also counts as the first sample)."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.01:
            break
        number *= 10 if elapsed < 0.001 else 2
    samples = [elapsed / number]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return Timing(tuple(samples))


class _Progress:
    """tqdm's bar where installed, else a counter on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.bar: Any = None
        if importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="run", leave=False)

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(label)
            self.bar.update()
        else:
            print(f"\r[{self.done}/{self.total}] {label:<48}", end="", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


def _label(b: Backend) -> str:
    return f"{b.library}:{b.device}"


def _inputs(b: Backend, shape: tuple[int, int], dtype: str = "float32") -> tuple[Any, Any]:
    """Logits in [-4, 4) of ``dtype`` and integer labels, on the backend's device."""
    import numpy as np

    rng = np.random.default_rng(0)
    host = rng.random(shape, dtype=np.float32) * 8 - 4
    labels = rng.integers(0, shape[1], shape[0])
    return b.asarray(host, dtype), b.asarray(labels, b.index_dtype)


# --- which backends run ----------------------------------------------------------------------
@dataclass
class _Plan:
    """Every backend asked for, in the order of the one list of libraries, with the reason it
    cannot run (None for those that run)."""

    entries: list[tuple[Backend, str | None]]

    @property
    def runnable(self) -> list[Backend]:
        return [b for b, reason in self.entries if reason is None]

    @property
    def skipped(self) -> list[tuple[Backend, str]]:
        return [(b, reason) for b, reason in self.entries if reason is not None]


def _dtype_missing(b: Backend, dtype: str) -> str | None:
    """Why ``b`` cannot make arrays of ``dtype``; None when it can."""
    own = _OWN[b.library]
    if dtype not in b.dtypes:
        return f"no {dtype} in {own.name}"
    if dtype not in b.available_dtypes():
        return f"no {dtype} in {own.name} as configured" + (
            f" ({own.dtype_hint})" if own.dtype_hint else ""
        )
    return None


def _plan(libraries: list[str] | None, dtype: str, devices: list[str] | None = None) -> _Plan:
    """Every backend of ``libraries`` (default: all the benchmark knows) on ``devices``
    (default: all), runnable or not."""
    from .testing.backends import BACKENDS, usable_backends

    wanted = libraries or list(LIBRARIES)
    usable, library_reasons = usable_backends(wanted)  # a broken install is a reason here
    plan = _Plan([])
    for b in BACKENDS:
        if b.library not in wanted or (devices and b.device not in devices):
            continue
        if b in usable:
            reason = _dtype_missing(b, dtype)
        else:  # the library's reason, or this device's (the library imported fine)
            reason = library_reasons.get(b.library) or b.probe() or "not usable"
        plan.entries.append((b, reason))
    return plan


# --- the copy baselines ----------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """The plain copy of one device that every library on it is measured against."""

    device: str
    library: str
    dtype: str
    nbytes: int
    timing: Timing

    @property
    def gbps(self) -> float:
        """GB/s of the median copy: it reads and writes ``nbytes`` each."""
        return 2 * self.nbytes / self.timing.median / 1e9

    def as_json(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "dtype": self.dtype,
            "bytes": self.nbytes,
            "seconds": self.timing.median,
            "seconds_min": self.timing.low,
            "seconds_max": self.timing.high,
            "gbps": self.gbps,
        }


#: The physical device behind a backend's device name where libraries name it differently:
#: torch and CuPy say "cuda", JAX "gpu", for the same card. One copy measures it, torch's (the
#: first in the list of libraries): JAX's jitted copy ran at 7-50% of torch's on an H200.
_PHYSICAL = {"cuda": "gpu"}


def physical_device(device: str) -> str:
    """The name of the physical device behind ``device``, which its copy baseline is keyed by."""
    return _PHYSICAL.get(device, device)


def _copiers(backends: list[Backend]) -> dict[str, Backend]:
    """The backend whose copier measures each physical device of ``backends``: NumPy's for the
    host, whatever runs (so that host runs of different libraries compare), else the first one
    on that device in the one list of libraries."""
    from .testing.backends import BY_ID

    chosen: dict[str, Backend] = {}
    for b in [BY_ID["numpy"], *sorted(backends, key=_library_rank)]:
        chosen.setdefault(physical_device(b.device), b)
    return {physical_device(b.device): chosen[physical_device(b.device)] for b in backends}


def _library_rank(b: Backend) -> int:
    return [lib.name for lib in _libraries.LIBRARIES].index(b.library)


def _copy_dtype(b: Backend, dtype: str) -> str:
    """``dtype`` if ``b`` has it, else one of its floats as wide (the copy moves bytes)."""
    have = b.available_dtypes()
    if dtype in have:
        return dtype
    return next(d for d in have if _ITEMSIZE[d] == _ITEMSIZE[dtype])


def _measure_baselines(
    backends: list[Backend], shape: tuple[int, int], dtype: str, repeats: int, progress: _Progress
) -> dict[str, Baseline]:
    """One copy baseline per device of ``backends``, each measured once."""
    baselines = {}
    for device, b in _copiers(backends).items():
        progress.step(f"{device} copy ({b.library})")
        copy_dtype = _copy_dtype(b, dtype)
        x, _ = _inputs(b, shape, copy_dtype)
        timing = sample_seconds(b.copier(x), repeats)
        baselines[device] = Baseline(device, b.library, copy_dtype, b.nbytes(x), timing)
    return baselines


# --- timing one backend ----------------------------------------------------------------------
def _own_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a new function object (for :func:`_timed`)."""
    return lambda *args: fn(*args)


def _timed(
    b: Backend, fn: Callable[..., Any], impl: str, args: tuple[Any, Any], repeats: int
) -> tuple[Timing, int]:
    """The timing of one synchronised call of ``fn(*args)`` and the bytes it returns."""
    # A function of its own for each run: jax.jit keeps one trace per function, whatever the
    # registry's state, so the generic run of a function the fast run jitted too would time
    # the fast path's program (the JAX cross-entropy's generic column did, until 2026-11-27).
    fn = b.jit(_own_function(fn))
    context = _registry.force_generic if impl == "generic" else contextlib.nullcontext

    def run() -> Any:
        with context():
            return b.sync(fn(*args))

    out_bytes = b.nbytes(run())  # the first call also compiles and warms up
    return sample_seconds(run, repeats), out_bytes


def _row(b: Backend, op: str, impl: str, **values: Any) -> dict[str, Any]:
    """One row of the results: every key present, None where not measured."""
    row: dict[str, Any] = {"library": b.library, "device": b.device, "op": op, "impl": impl}
    for key in ("seconds", "seconds_min", "seconds_max", "samples", "gbps", "copy_fraction"):
        row[key] = None
    row.update(speedup=None, missing=None, speedup_missing=None)
    row.update(values)
    return row


def _measure(
    b: Backend, op: str, impl: str, inputs: tuple[Any, Any], repeats: int, baseline: Baseline
) -> dict[str, Any]:
    """The row of one implementation of ``op`` on ``b``: its timing, or why it has none."""
    fn = _own(b, op) if impl == "own" else _ours(b, op)
    if fn is None:
        return _row(b, op, impl, missing=_own_missing(b, op))
    x, target = inputs
    arg = b.requires_grad(x) if op == "cross_entropy+grad" else x
    try:
        timing, out_bytes = _timed(b, fn, impl, (arg, target), repeats)
    except Exception as exc:  # one failing cell must not stop the run: it is reported
        message = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
        return _row(b, op, impl, missing=f"{_FAILED}{type(exc).__name__}: {message}")
    read = b.nbytes(x) + (b.nbytes(target) if op.startswith("cross_entropy") else 0)
    gbps = (read + out_bytes) / timing.median / 1e9
    return _row(
        b,
        op,
        impl,
        seconds=timing.median,
        seconds_min=timing.low,
        seconds_max=timing.high,
        samples=list(timing.samples),
        gbps=gbps,
        copy_fraction=gbps / baseline.gbps,
    )


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Set each xpsoftmax row's ``speedup``: the own median over its median (>1: faster).

    Where there is no speed-up, ``missing`` says why: the own's reason when it has no time.
    """
    own = {(r["library"], r["device"], r["op"]): r for r in rows if r["impl"] == "own"}
    for r in rows:
        mine = own[r["library"], r["device"], r["op"]]
        if r["impl"] == "own" or r["seconds"] is None:
            continue
        if mine["seconds"] is None:
            r["speedup_missing"] = mine["missing"]
        else:
            r["speedup"] = mine["seconds"] / r["seconds"]


def _bench_backend(
    b: Backend,
    shape: tuple[int, int],
    dtype: str,
    repeats: int,
    baseline: Baseline,
    progress: _Progress,
) -> list[dict[str, Any]]:
    inputs = _inputs(b, shape, dtype)
    rows = []
    for op in OPS:
        for impl in IMPLEMENTATIONS:
            progress.step(f"{_label(b)} {op} {impl}")
            rows.append(_measure(b, op, impl, inputs, repeats, baseline))
    _add_speedups(rows)
    return rows


def _skipped_rows(b: Backend, reason: str) -> list[dict[str, Any]]:
    """A backend that cannot run: each of its cells, missing for ``reason``."""
    return [_row(b, op, impl, missing=reason) for op in OPS for impl in IMPLEMENTATIONS]


# --- threads ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _thread_settings(n: int | None) -> Iterator[dict[str, Any]]:
    """Run with ``n`` threads where that can be set (restored on exit); yields what was set
    and the counts in effect, for the report and the JSON (scalars only).

    Sets xpsoftmax's pool (:func:`xpsoftmax.num_threads`), torch's intra-op threads
    (``torch.set_num_threads``, when torch is imported) and, through threadpoolctl when
    installed, the BLAS and OpenMP pools loaded in the process (NumPy's BLAS among them).
    NumPy's element-wise functions are single-threaded anyway. XLA fixes JAX's CPU threads
    when JAX starts (``XLA_FLAGS``): they are not set, and the JSON says so.
    """
    done: list[str] = []
    with contextlib.ExitStack() as stack:
        if n is not None:
            if importlib.util.find_spec("threadpoolctl") is not None:
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(limits=n))
                done.append(f"threadpoolctl.threadpool_limits({n})")
            stack.enter_context(_threads.num_threads(n))
            done.append(f"xpsoftmax.set_num_threads({n})")
            if "torch" in sys.modules:
                stack.enter_context(_torch_threads(n))
                done.append(f"torch.set_num_threads({n})")
        yield _thread_counts(n, done)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _thread_counts(n: int | None, done: list[str]) -> dict[str, Any]:
    """The thread counts in effect now, and what :func:`_thread_settings` set."""
    counts: dict[str, Any] = {
        "requested": n,
        "set": "; ".join(done) or "nothing (the libraries' defaults)",
        "xpsoftmax": _threads.get_num_threads(),
    }
    if "torch" in sys.modules:
        counts["torch"] = sys.modules["torch"].get_num_threads()
    if "jax" in sys.modules:
        counts["jax"] = "XLA default (fixed when JAX starts: XLA_FLAGS)"
    if "threadpoolctl" in sys.modules or importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") != "xpsoftmax"]
        counts["pools"] = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in pools)
    return counts


# --- provenance ------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    """The versions of :data:`VERSIONED` installed here, by module name ("unknown" for a
    module without package metadata). Distribution names come from the metadata, so CuPy's
    wheels (``cupy-cuda12x``...) are found too."""
    distributions = importlib.metadata.packages_distributions()
    versions = {}
    for module in VERSIONED:
        if importlib.util.find_spec(module) is None:
            continue
        versions[module] = "unknown"
        for name in distributions.get(module, ()):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[module] = importlib.metadata.version(name)
                break
    return versions


def _git(directory: Path, *args: str) -> str | None:
    """The output of ``git -C directory args``, or None on any failure (never raises)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _commit(package: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout xpsoftmax was imported from, and whether it has changes.

    None for both unless the package's own files are tracked there: an installed copy in a
    virtual environment inside some other checkout must not report that checkout's commit.
    """
    package = package or Path(__file__).resolve().parent
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return {"commit": None, "dirty": None}
    status = _git(package, "status", "--porcelain", "--untracked-files=no")
    return {"commit": _git(package, "rev-parse", "HEAD"), "dirty": bool(status) or None}


def _cpu_model() -> str | None:
    """The CPU's name from /proc/cpuinfo (Linux); None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return None


def _machine() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def provenance(
    args: argparse.Namespace, threads: dict[str, Any], baselines: dict[str, Baseline]
) -> dict[str, Any]:
    """What a result needs to be read later: versions, commit, date, machine, settings."""
    from . import __version__

    git = _commit()
    return {
        "xpsoftmax": __version__,
        "versions": _versions(),
        "commit": git["commit"],
        "commit_dirty": git["dirty"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "threads": threads,
        "shape": list(args.shape),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "statistic": "median",
        "spread": SPREAD,
        "generic_forced": _registry.generic_forced(),
        "baselines": {device: b.as_json() for device, b in baselines.items()},
        "own": {name: own.label for name, own in _OWN.items()},
    }


# --- the text report -------------------------------------------------------------------------
def _mib(shape: tuple[int, int], dtype: str) -> str:
    return f"{shape[0] * shape[1] * _ITEMSIZE[dtype] / 2**20:.3g} MiB"


def _header(data: dict[str, Any]) -> str:
    shape = tuple(data["shape"])
    threads = data["threads"]
    counts = ", ".join(
        f"{name} {count}" for name, count in threads.items() if name not in ("requested", "set")
    )
    forced = (
        " (XPSOFTMAX_FORCE_GENERIC is set: 'fast' is generic)" if data["generic_forced"] else ""
    )
    return (
        f"xpsoftmax {data['xpsoftmax']} bench: {data['dtype']} {shape[0]}x{shape[1]} "
        f"({_mib(shape, data['dtype'])}), median of {data['repeats']} samples, spread "
        f"{data['spread']}{forced}\n"
        f"machine: {data['machine']['node']}, {data['machine']['cpu_model'] or 'CPU unknown'}, "
        f"{data['machine']['cpu_count']} CPUs\nthreads: {counts}\n  set: {threads['set']}"
    )


def _baseline_lines(data: dict[str, Any]) -> list[str]:
    lines = ["copy baseline per device (a plain copy of the input's bytes, read + written):"]
    for device, b in data["baselines"].items():
        lines.append(
            f"  {device}: {b['gbps']:.1f} GB/s ({b['library']} copy of {b['dtype']}, "
            f"{b['seconds'] * 1e3:.3f} ms)"
        )
    return lines


def _cell(text: str, width: int) -> str:
    return f"{text:>{width}}"


def _backend_report(rows: list[dict[str, Any]], own_label: str) -> str:
    """The table of one backend: speed-ups first, then times, then fractions of the copy."""
    first = rows[0]
    lines = [
        f"\n{first['library']}:{first['device']} (own: {own_label}); speed-up = own time / "
        "xpsoftmax time; times in ms, median (min-max); % of the device's copy bandwidth",
        f"{'operation':<20}{'x fast':>8}{'x generic':>10}"
        + "".join(_cell(f"{impl} ms", 26) for impl in IMPLEMENTATIONS)
        + "".join(_cell(f"% {impl}", 10) for impl in IMPLEMENTATIONS),
    ]
    by_op: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_op.setdefault(r["op"], {})[r["impl"]] = r
    notes: dict[tuple[str, str], list[str]] = {}  # (implementation, reason): operations
    for op, impls in by_op.items():
        cells = [f"{op:<20}"]
        for impl, width in (("fast", 8), ("generic", 10)):
            speedup = impls[impl]["speedup"]
            cells.append(_cell("-" if speedup is None else f"{speedup:.2f}x", width))
        for impl in IMPLEMENTATIONS:
            r = impls[impl]
            timing = Timing(tuple(r["samples"])) if r["samples"] else None
            cells.append(_cell(timing.cell() if timing else "-", 26))
        for impl in IMPLEMENTATIONS:
            fraction = impls[impl]["copy_fraction"]
            cells.append(_cell("-" if fraction is None else f"{fraction:.1%}", 10))
        lines.append("".join(cells))
        for impl in IMPLEMENTATIONS:
            if impls[impl]["missing"]:
                notes.setdefault((impl, impls[impl]["missing"]), []).append(op)
    for (impl, reason), ops in notes.items():
        lines.append(f"  no {impl} time for {', '.join(ops)}: {reason}")
    return "\n".join(lines)


def _backends_of(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The rows grouped by library and device, in their order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["library"], r["device"]), []).append(r)
    return groups


def _skip_reason(rows: list[dict[str, Any]]) -> str | None:
    """Why a backend did not run at all (its rows all missing for one reason); else None."""
    reasons = {r["missing"] for r in rows}
    if len(reasons) == 1 and all(r["samples"] is None for r in rows):
        return reasons.pop()
    return None


def report(data: dict[str, Any]) -> str:
    """The text report of a result document (:func:`main` prints it)."""
    lines = [_header(data), *_baseline_lines(data)]
    skipped = []
    for (library, device), rows in _backends_of(data["results"]).items():
        reason = _skip_reason(rows)
        if reason is None:
            lines.append(_backend_report(rows, data["own"][library]))
        else:
            skipped.append(f"  {library}:{device}: {reason}")
    if skipped:
        lines += ["\nnot run:", *skipped]
    return "\n".join(lines)


# --- the chart -------------------------------------------------------------------------------
def _title(data: dict[str, Any]) -> str:
    shape, machine = data["shape"], data["machine"]
    return (
        f"xpsoftmax {data['xpsoftmax']}: {data['dtype']} {shape[0]}x{shape[1]} "
        f"({_mib(tuple(shape), data['dtype'])}), rows along the last axis\n"
        f"{machine['node']}: {machine['cpu_model'] or machine['processor'] or 'CPU unknown'}, "
        f"{machine['cpu_count']} CPUs, xpsoftmax threads {data['threads']['xpsoftmax']}"
        f"  |  {data['date']}"
    )


def _missing_label(ax: Any, x: float, reason: str) -> None:
    """Write ``reason`` upright where a bar would be."""
    ax.text(
        x,
        0.03,
        reason,
        transform=ax.get_xaxis_transform(),  # x in data, y in axes fractions
        rotation=90,
        ha="center",
        va="bottom",
        fontsize=7,
        color="0.35",
    )


def _ms(r: dict[str, Any]) -> tuple[float, Any] | None:
    """A row's bar in the time panel: median ms and its spread as error bar lengths."""
    if r["seconds"] is None:
        return None
    ms = r["seconds"] * 1e3
    return ms, [[ms - r["seconds_min"] * 1e3], [r["seconds_max"] * 1e3 - ms]]


def _speedup(r: dict[str, Any]) -> tuple[float, Any] | None:
    """A row's bar in the speed-up panel (no error bar: a ratio of two medians)."""
    return None if r["speedup"] is None else (r["speedup"], None)


def _bars(
    ax: Any,
    impls: Sequence[str],
    by_op: dict[str, dict[str, dict[str, Any]]],
    bar: Callable[[dict[str, Any]], tuple[float, Any] | None],
) -> list[Any]:
    """Grouped bars per operation and implementation; a missing one is labelled with why.
    Returns the bar containers, one per implementation."""
    width = 0.8 / len(impls)
    containers = []
    for k, impl in enumerate(impls):
        xs, heights, errors = [], [], []
        for i, op in enumerate(OPS):
            r = by_op[op][impl]
            x = i + (k - (len(impls) - 1) / 2) * width
            value = bar(r)
            if value is None:
                _missing_label(ax, x, r["missing"] or r["speedup_missing"] or "not measured")
                continue
            xs.append(x)
            heights.append(value[0])
            errors.append(value[1])
        if not xs:  # an empty container would still get a legend entry
            continue
        has_errors = any(e is not None for e in errors)
        yerr = [[e[j][0] for e in errors] for j in (0, 1)] if has_errors else None
        containers.append(
            ax.bar(xs, heights, width, yerr=yerr, capsize=2, color=f"C{k}", label=impl)
        )
    ax.set_xlim(-0.5, len(OPS) - 0.5)  # every slot, also where only labels stand
    ax.set_xticks(range(len(OPS)), OPS, rotation=25, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return containers


def _by_op(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """One backend's rows by operation and implementation."""
    by_op: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_op.setdefault(r["op"], {})[r["impl"]] = r
    return by_op


def _time_panel(ax: Any, rows: list[dict[str, Any]], name: str, own: str) -> None:
    from matplotlib.ticker import FuncFormatter

    _bars(ax, IMPLEMENTATIONS, _by_op(rows), _ms)
    ax.set_yscale("log")  # the implementations differ by orders of magnitude
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="both", labelsize=7)
    ax.set_ylabel(f"ms per call (median, {SPREAD})", fontsize=8)
    ax.set_title(f"{name}: time (own: {own})", fontsize=9)
    ax.legend(fontsize=7)


def _speedup_panel(ax: Any, rows: list[dict[str, Any]], name: str) -> None:
    for container in _bars(ax, ("fast", "generic"), _by_op(rows), _speedup):
        ax.bar_label(container, fmt="%.2fx", fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.margins(y=0.15)  # room for the labels
    ax.set_ylim(bottom=0)
    ax.set_ylabel("own time / xpsoftmax time", fontsize=8)
    ax.set_title(f"{name}: speed-up over own (>1: xpsoftmax faster)", fontsize=9)
    if ax.containers:
        ax.legend(fontsize=7)


def _figure(data: dict[str, Any]) -> Any:
    """The chart of a result document: per backend that ran, its times and its speed-ups;
    below them, the backends that did not run, each with why."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    ran, not_run = [], []
    for (library, device), rows in _backends_of(data["results"]).items():
        reason = _skip_reason(rows)
        if reason is None:
            ran.append((f"{library}:{device}", data["own"][library], rows))
        else:
            not_run.append(f"{library}:{device}: not run ({reason})")
    footer = 0.25 * len(not_run) + (0.2 if not_run else 0)
    fig = Figure(figsize=(12, 1.0 + 3.4 * len(ran) + footer), layout="constrained")
    grid = fig.add_gridspec(
        len(ran) + bool(not_run), 2, height_ratios=[3.4] * len(ran) + ([footer] if not_run else [])
    )
    for n, (name, own, rows) in enumerate(ran):
        _time_panel(fig.add_subplot(grid[n, 0]), rows, name, own)
        _speedup_panel(fig.add_subplot(grid[n, 1]), rows, name)
    if not_run:
        ax = fig.add_subplot(grid[len(ran), :])
        ax.axis("off")
        ax.text(0.0, 1.0, "\n".join(not_run), va="top", fontsize=9, transform=ax.transAxes)
    fig.suptitle(_title(data), fontsize=9)
    return fig


def plot(data: dict[str, Any], path: str) -> None:
    """Write the chart of a result document (:func:`main`'s JSON) to ``path`` as PNG."""
    _figure(data).savefig(path, dpi=100)


# --- the command -----------------------------------------------------------------------------
def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROWSxCOLS, e.g. 4096x8192, got {text!r}"
        ) from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"rows and columns must be positive, got {text!r}")
    return rows, cols


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with ``shape`` and ``repeats`` settled (``--quick`` included)."""
    parser = argparse.ArgumentParser(
        prog="xpsoftmax bench",
        description="Time each operation per array library and device: xpsoftmax's fast path, "
        "its generic implementation and the library's own, as speed-ups over the own, as "
        "times (median and min-max of the samples) and as a fraction of the bandwidth of a "
        "plain copy on the device (one baseline per device). Rows along the last axis.",
    )
    parser.add_argument(
        "--library", action="append", choices=LIBRARIES, help="only this library (repeatable)"
    )
    parser.add_argument(
        "--device",
        action="append",
        help="only backends on this device (repeatable): cpu, cuda (torch, CuPy), gpu (JAX)",
    )
    parser.add_argument("--quick", action="store_true", help=f"a small input {QUICK_SHAPE}")
    parser.add_argument("--shape", type=_shape, help="input shape ROWSxCOLS")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="input dtype (default float32); a library without it is skipped, saying so",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="CPU threads for the run: xpsoftmax's, torch's, and BLAS/OpenMP pools "
        "through threadpoolctl (JAX's are fixed when it starts)",
    )
    parser.add_argument(
        "--lm-head",
        nargs="?",
        const=_bench_linear.DEFAULT_SHAPE,
        type=_bench_linear.parse_shape,
        metavar="NxHxV",
        help="instead: one training step of a language model's head (h N x H, W V x H) by "
        "implementation: linear_cross_entropy, the unfused cross_entropy(h @ W.T), PyTorch's "
        "linear_cross_entropy; time and peak memory (default "
        + "x".join(map(str, _bench_linear.DEFAULT_SHAPE))
        + ")",
    )
    parser.add_argument("--repeats", type=int, default=5, help="samples per timing (default 5)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart (matplotlib)")
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install matplotlib (or 'xpsoftmax[bench]')")
    if importlib.util.find_spec("numpy") is None:
        parser.error("the benchmark needs NumPy to make its inputs: pip install numpy")
    if args.lm_head and args.quick:
        args.lm_head = _bench_linear.QUICK_SHAPE
    args.shape = args.shape or (QUICK_SHAPE if args.quick else DEFAULT_SHAPE)
    args.repeats = max(1, args.repeats if not args.quick else min(args.repeats, 3))
    return args


def _run(plan: _Plan, args: argparse.Namespace, threads: dict[str, Any]) -> dict[str, Any]:
    """Measure the baselines, then every runnable backend: the result document."""
    shape, dtype, repeats = args.shape, args.dtype, args.repeats
    progress = _Progress(
        len(_copiers(plan.runnable)) + len(plan.runnable) * len(OPS) * len(IMPLEMENTATIONS)
    )
    results: list[dict[str, Any]] = []
    try:
        baselines = _measure_baselines(plan.runnable, shape, dtype, repeats, progress)
        for b, reason in plan.entries:
            if reason is None:
                results += _bench_backend(
                    b, shape, dtype, repeats, baselines[physical_device(b.device)], progress
                )
            else:
                results += _skipped_rows(b, reason)
    finally:
        progress.close()
    return {**provenance(args, threads, baselines), "results": results}


def _run_lm_head(plan: _Plan, args: argparse.Namespace, threads: dict[str, Any]) -> dict[str, Any]:
    """The LM head's training step on every runnable backend: the result document."""
    progress = _Progress(sum(len(_bench_linear.implementations(b)) for b in plan.runnable))
    try:
        results = _bench_linear.bench(
            plan.runnable, args.lm_head, args.dtype, args.repeats, progress
        )
    finally:
        progress.close()
    for b, reason in plan.skipped:  # one row each, without an implementation
        results.append({"library": b.library, "device": b.device, "impl": None, "missing": reason})
    return {**provenance(args, threads, {}), "lm_head": list(args.lm_head), "results": results}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (``python -m xpsoftmax bench [options]``); returns the exit status:
    1 when nothing could run or an xpsoftmax implementation failed."""
    args = _parse(argv)
    plan = _plan(args.library, args.dtype, args.device)
    if not plan.runnable:
        for b, reason in plan.skipped:
            print(f"{_label(b)}: not run ({reason})")
        if plan.skipped:
            print("Nothing to benchmark: none of the backends asked for can run here.")
        else:
            print("No array library to benchmark: install one, e.g. pip install numpy.")
        return 1
    with _thread_settings(args.threads) as threads:
        data = _run_lm_head(plan, args, threads) if args.lm_head else _run(plan, args, threads)
    if args.lm_head:
        print(_bench_linear.report(data["results"], args.lm_head, args.dtype))
    else:
        print(report(data))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"\nResults written to {args.json}")
    if args.plot and args.lm_head:
        n, hidden, vocab = args.lm_head
        title = (
            f"LM head step, {args.dtype} N={n} H={hidden} V={vocab}\n" + _title(data).split("\n")[1]
        )
        _bench_linear.plot(data["results"], title, args.plot)
        print(f"Chart written to {args.plot}")
    elif args.plot:
        plot(data, args.plot)
        print(f"Chart written to {args.plot}")
    return 1 if _failures(data) else 0


def _failures(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows where an xpsoftmax implementation raised (a bug, unlike a missing own)."""
    return [
        r
        for r in data["results"]
        if r["impl"] not in _NOT_OURS and (r["missing"] or "").startswith(_FAILED)
    ]
