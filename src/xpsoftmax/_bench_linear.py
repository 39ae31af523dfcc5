"""``python -m xpsoftmax bench --lm-head [NxHxV]``: one training step of a language model's head.

The step is the mean cross-entropy of the logits ``h @ W.T`` (``h`` (N, H), ``W`` (V, H),
class-index targets) and its gradients with respect to ``h`` and ``W``, by implementation:

- ``fused``: :func:`xpsoftmax.linear_cross_entropy` (autodiff: torch, JAX) or
  :func:`xpsoftmax.linear_cross_entropy_with_grad` (NumPy, CuPy, Dask);
- ``unfused``: :func:`xpsoftmax.cross_entropy` of the full logits with autodiff, or
  :func:`xpsoftmax.cross_entropy_with_grad` and the two products of the chain rule;
- ``torch_reference`` and ``torch_chunked``: ``torch.nn.functional.linear_cross_entropy``
  (PyTorch's own), its reference path and its chunked one (``LinearCrossEntropyOptions()``).

Each is timed (the median of a few steps after one to warm up) and its peak memory measured:
the bytes alive at the step's peak beyond the inputs and what it returns (the gradients), in
units of the float32 logits' size, the array the fused step never makes. NumPy's by
``tracemalloc``; JAX's by XLA's own count of the temporary buffers of the compiled step
(``memory_analysis()``); CUDA's by torch's allocator statistics; torch on the CPU by the
resident set's high-water mark (Linux), with glibc told to map every block over 1 MiB on its
own so that a freed block leaves the resident set at once. CuPy has no peak here: its memory
column says so. The times are measured first, in the process as it started (the allocator
setting above makes every big block fresh pages, which would slow the steps that allocate
more).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _api

if TYPE_CHECKING:
    from .testing.backends import Backend

IMPLEMENTATIONS = ("fused", "unfused", "torch_reference", "torch_chunked")
DEFAULT_SHAPE = (2048, 1024, 32000)  # a small model's head: logits of 250 MiB
QUICK_SHAPE = (256, 128, 8000)
#: glibc's ``mallopt`` parameter number of the mmap threshold (malloc.h).
_M_MMAP_THRESHOLD = -3


def parse_shape(text: str) -> tuple[int, int, int]:
    """``NxHxV`` as three positive ints (argparse's type)."""
    try:
        n, hidden, vocab = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NxHxV, e.g. 2048x1024x32000, got {text!r}"
        ) from None
    if min(n, hidden, vocab) < 1:
        raise argparse.ArgumentTypeError(f"N, H and V must be positive, got {text!r}")
    return n, hidden, vocab


def implementations(b: Backend) -> tuple[str, ...]:
    """The implementations of the step on ``b``: PyTorch's own on torch only."""
    if b.library == "torch":
        return IMPLEMENTATIONS
    return tuple(i for i in IMPLEMENTATIONS if not i.startswith("torch_"))


def _missing(b: Backend, impl: str) -> str | None:
    if impl.startswith("torch_"):
        import torch.nn.functional as F

        if not hasattr(F, "linear_cross_entropy"):
            return "no torch.nn.functional.linear_cross_entropy in this torch"
    return None


def _inputs(b: Backend, shape: tuple[int, int, int], dtype: str) -> tuple[Any, Any, Any]:
    import numpy as np

    n, hidden, vocab = shape
    rng = np.random.default_rng(0)
    h = b.asarray(rng.standard_normal((n, hidden), dtype=np.float32), dtype)
    w = b.asarray(rng.standard_normal((vocab, hidden), dtype=np.float32) * 0.02, dtype)
    return h, w, b.asarray(rng.integers(0, vocab, n), b.index_dtype)


def step(b: Backend, impl: str, h: Any, w: Any, t: Any) -> Callable[[], Any]:
    """One training step of ``impl`` on backend ``b``: returns the gradients (synchronised)."""
    if b.library == "torch":
        import torch
        import torch.nn.functional as F

        h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
        loss = {
            "fused": lambda: _api.linear_cross_entropy(h, w, t),
            "unfused": lambda: _api.cross_entropy(h @ w.T, t),
            "torch_reference": lambda: F.linear_cross_entropy(h, w, t),
            "torch_chunked": lambda: F.linear_cross_entropy(
                h, w, t, options=torch.nn.LinearCrossEntropyOptions()
            ),
        }[impl]

        def torch_step() -> Any:
            loss().backward()
            grads = (h.grad, w.grad)
            h.grad = w.grad = None  # the caller holds them alone: freed when it drops them
            return b.sync(grads)

        return torch_step
    if b.library == "jax":
        import jax

        f = {
            "fused": lambda h, w: _api.linear_cross_entropy(h, w, t),
            "unfused": lambda h, w: _api.cross_entropy(h @ w.T, t),
        }[impl]
        grad = jax.jit(jax.grad(f, argnums=(0, 1)))

        def jax_step() -> Any:
            return b.sync(grad(h, w))

        # XLA allocates the step's temporaries itself: its own count of them is the peak.
        jax_step.xla_temp_bytes = lambda: _xla_temp_bytes(grad, h, w)  # type: ignore[attr-defined]
        return jax_step
    if impl == "fused":
        return lambda: b.sync(_api.linear_cross_entropy_with_grad(h, w, t)[1:3])

    def unfused() -> Any:
        _, g = _api.cross_entropy_with_grad(h @ w.T, t)
        return b.sync((g @ w, g.T @ h))

    return unfused


def _xla_temp_bytes(fn: Any, *args: Any) -> int:
    """The temporary buffers XLA allocates for one call of the jitted ``fn``."""
    return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} missing from /proc/self/status")


def peak_extra_bytes(b: Backend, run: Callable[[], Any]) -> tuple[int | None, str | None]:
    """The bytes alive at the peak of ``run()`` beyond those before it and what it returns,
    or None and why it cannot be measured here."""
    if b.library == "numpy":
        import tracemalloc

        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            out = run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return max(0, peak - before - b.nbytes(out)), None
    if hasattr(run, "xla_temp_bytes"):
        return run.xla_temp_bytes(), None
    if b.library == "torch" and b.device == "cuda":
        import torch

        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = run()
        return max(0, torch.cuda.max_memory_allocated() - before - b.nbytes(out)), None
    if b.device != "cpu":
        return None, f"no peak-memory measurement for {b.library}:{b.device}"
    if not os.path.exists("/proc/self/clear_refs"):
        return None, "the resident set's high-water mark needs Linux"
    gc.collect()
    before = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current resident set
    out = run()
    return max(0, _rss("VmHWM") - before - b.nbytes(out)), None


def _map_big_blocks() -> None:
    """glibc: every block over 1 MiB its own mapping, given back when freed (what the
    resident set's high-water mark needs); nothing elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, 2**20)


def _times(b: Backend, impl: str, shape: tuple[int, int, int], dtype: str, repeats: int) -> dict:
    """One backend and implementation's step: the median and spread of ``repeats`` steps after
    one to warm up (compiles, loads the backend module)."""
    h, w, t = _inputs(b, shape, dtype)
    run = step(b, impl, h, w, t)
    run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return {
        "ms": statistics.median(samples) * 1e3,
        "ms_low": min(samples) * 1e3,
        "ms_high": max(samples) * 1e3,
    }


def _peak(b: Backend, impl: str, shape: tuple[int, int, int], dtype: str) -> dict:
    """One backend and implementation's peak extra memory, in bytes and in logits."""
    h, w, t = _inputs(b, shape, dtype)
    run = step(b, impl, h, w, t)
    run()
    peak, why = peak_extra_bytes(b, run)
    logits = shape[0] * shape[2] * 4
    return {
        "peak_bytes": peak,
        "peak_x_logits": None if peak is None else peak / logits,
        "peak_missing": why,
    }


def _each(
    backends: list[Backend], progress: Any, what: str, measure: Callable[[Backend, str], dict]
) -> dict[tuple[str, str, str], dict]:
    """``measure(b, impl)`` for every backend and implementation; a failure is a row that says
    why, not a lost run."""
    out = {}
    for b in backends:
        for impl in implementations(b):
            progress.step(f"{what} {b.library}:{b.device} {impl}")
            reason = _missing(b, impl)
            try:
                out[(b.library, b.device, impl)] = (
                    {"missing": reason} if reason else {"missing": None, **measure(b, impl)}
                )
            except Exception as exc:
                out[(b.library, b.device, impl)] = {"missing": f"failed: {exc!r}"}
            gc.collect()
    return out


def bench(
    backends: list[Backend],
    shape: tuple[int, int, int],
    dtype: str,
    repeats: int,
    progress: Any,
) -> list[dict[str, Any]]:
    """Every implementation on every backend, in this process: first the times (the process
    as it starts), then the peaks (glibc told to map big blocks on their own)."""
    times = _each(backends, progress, "time", lambda b, i: _times(b, i, shape, dtype, repeats))
    _map_big_blocks()
    peaks = _each(backends, progress, "memory", lambda b, i: _peak(b, i, shape, dtype))
    rows = []
    for (library, device, impl), timed in times.items():
        peak = peaks[(library, device, impl)]
        row = {"library": library, "device": device, "impl": impl, **timed}
        if timed["missing"] is None and peak["missing"] is not None:
            row.update(peak_bytes=None, peak_x_logits=None, peak_missing=peak["missing"])
        elif timed["missing"] is None:
            row.update({k: v for k, v in peak.items() if k != "missing"})
        rows.append(row)
    _vs_unfused(rows)
    return rows


def _vs_unfused(rows: list[dict[str, Any]]) -> None:
    """Each row's time over its backend's unfused step (the goal: at most 1.1 for fused)."""
    unfused = {
        (r["library"], r["device"]): r["ms"] for r in rows if r["impl"] == "unfused" and r.get("ms")
    }
    for r in rows:
        base = unfused.get((r["library"], r["device"]))
        r["vs_unfused"] = r["ms"] / base if base and r.get("ms") else None


def report(rows: list[dict[str, Any]], shape: tuple[int, int, int], dtype: str) -> str:
    """The text table: per backend, each implementation's time, its ratio to the unfused
    step and its peak extra memory."""
    n, hidden, vocab = shape
    logits_mib = n * vocab * 4 / 2**20
    lines = [
        f"LM head training step: {dtype} h {n}x{hidden}, W {vocab}x{hidden}, mean "
        f"cross-entropy and dh, dW (float32 logits: {logits_mib:.0f} MiB)",
        f"{'backend':<11} {'implementation':<16} {'ms (min-max)':>26} {'x unfused':>9} "
        f"{'peak extra':>22}",
    ]
    for r in rows:
        label = f"{r['library']}:{r['device']}"
        if r["impl"] is None:
            lines.append(f"{label:<11} not run: {r['missing']}")
            continue
        if r.get("missing"):
            lines.append(f"{label:<11} {r['impl']:<16} not run: {r['missing']}")
            continue
        times = f"{r['ms']:.1f} ({r['ms_low']:.1f}-{r['ms_high']:.1f})"
        ratio = f"{r['vs_unfused']:.2f}" if r["vs_unfused"] else "-"
        if r["peak_bytes"] is None:
            peak = r["peak_missing"]
        else:
            peak = f"{r['peak_bytes'] / 2**20:.0f} MiB = {r['peak_x_logits']:.2f}x"
        lines.append(f"{label:<11} {r['impl']:<16} {times:>26} {ratio:>9} {peak:>22}")
    lines.append(
        "peak extra: alive at the step's peak beyond the inputs and the gradients, in units "
        "of the float32 logits"
    )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], title: str, path: str) -> None:
    """Two panels: each backend's time per implementation relative to its unfused step, and
    the peak extra memory in units of the logits."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    panels = (("vs_unfused", "time / unfused step"), ("peak_x_logits", "peak extra / logits"))
    backends = list(dict.fromkeys(f"{r['library']}:{r['device']}" for r in rows if r["impl"]))
    width = 0.8 / len(IMPLEMENTATIONS)
    for n, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, n + 1)
        for k, impl in enumerate(IMPLEMENTATIONS):
            xs_, ys = [], []
            for i, name in enumerate(backends):
                for r in rows:
                    if f"{r['library']}:{r['device']}" == name and r["impl"] == impl:
                        if r.get(key) is not None:
                            xs_.append(i + k * width)
                            ys.append(r[key])
            if ys:
                ax.bar(xs_, ys, width, label=impl)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(backends))], backends)
        ax.set_ylabel(label)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
