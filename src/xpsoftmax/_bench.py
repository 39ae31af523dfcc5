"""``python -m xpsoftmax bench``: fast path vs generic implementation vs the library's own.

For every installed array library and device, each operation is timed on one row-major
float32 input (the median of a few synchronised calls) and reported as a time and as a
fraction of the bandwidth of a plain copy measured in the same process, which is the limit a
memory-bound operation can approach. The minimal traffic counted is the inputs read once and
the output written once (the gradient, for ``cross_entropy+grad``).

Array libraries are imported inside functions only, like everywhere in the core.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _api, _libraries, _registry

if TYPE_CHECKING:  # the adapters import NumPy: only inside functions here
    from .testing.backends import Backend

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy+grad")
IMPLEMENTATIONS = ("fast", "generic", "own")
QUICK_SHAPE = (256, 4096)  # 4 MiB: the whole run takes seconds
DEFAULT_SHAPE = (4096, 8192)  # 128 MiB: far beyond the caches, still quick on a laptop


# --- each library's own implementations ---------------------------------------------------
# One builder per library: the operations it has, over rows, each taking ``(x, target)``.
# ``cross_entropy+grad`` is built here only for libraries without autodiff; for the others it
# is their autodiff of their own ``cross_entropy`` (see _own).


def _numpy_own() -> dict[str, Callable[..., Any]]:
    if importlib.util.find_spec("scipy") is None:
        return {}
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
    """A library's own implementations: what the report calls them, and their builder."""

    label: str
    build: Callable[[], dict[str, Callable[..., Any]]]


#: The libraries the benchmark compares with their own implementations.
_OWN = {
    "numpy": _Own("scipy.special", _numpy_own),
    "torch": _Own("torch / torch.nn.functional", _torch_own),
    "jax": _Own("jax.nn / optax", _jax_own),
    "cupy": _Own("plain CuPy formulas", _cupy_own),
}
#: The libraries benchmarked, in the order of the one list of libraries.
LIBRARIES = tuple(lib.name for lib in _libraries.LIBRARIES if lib.name in _OWN)


def _own(b: Backend, op: str) -> Callable[..., Any] | None:
    """The library's own ``op`` over rows, taking ``(x, target)``; None where it has none."""
    if op == "cross_entropy+grad" and b.autodiff:
        loss = _own(b, "cross_entropy")
        return None if loss is None else b.value_and_grad(loss)
    return _OWN[b.library].build().get(op)


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


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds per call over ``repeats`` samples, each of enough calls to last 10 ms."""
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
    return statistics.median(samples)


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


def _inputs(b: Backend, shape: tuple[int, int]) -> tuple[Any, Any]:
    """Logits in [-4, 4) and integer labels, on the backend's device."""
    import numpy as np

    rng = np.random.default_rng(0)
    host = rng.random(shape, dtype=np.float32) * 8 - 4
    labels = rng.integers(0, shape[1], shape[0])
    return b.asarray(host), b.asarray(labels, b.index_dtype)


def _timed(
    b: Backend, fn: Callable[..., Any], impl: str, args: tuple[Any, Any], repeats: int
) -> tuple[float, int]:
    """Median seconds of one synchronised call of ``fn(*args)`` and the bytes it returns."""
    fn = b.jit(fn)
    context = _registry.force_generic if impl == "generic" else contextlib.nullcontext

    def run() -> Any:
        with context():
            return b.sync(fn(*args))

    out_bytes = b.nbytes(run())  # the first call also compiles and warms up
    return median_seconds(run, repeats), out_bytes


def _bench_backend(
    b: Backend, shape: tuple[int, int], repeats: int, progress: _Progress
) -> dict[str, Any]:
    x, target = _inputs(b, shape)
    x_bytes = b.nbytes(x)
    copy_gbps = 2 * x_bytes / median_seconds(b.copier(x), repeats) / 1e9
    ops: dict[str, Any] = {}
    for op in OPS:
        arg = b.requires_grad(x) if op == "cross_entropy+grad" else x
        read = x_bytes + (b.nbytes(target) if op.startswith("cross_entropy") else 0)
        ops[op] = {}
        for impl in IMPLEMENTATIONS:
            progress.step(f"{_label(b)} {op} {impl}")
            fn = _own(b, op) if impl == "own" else _ours(b, op)
            if fn is None:
                ops[op][impl] = None
                continue
            seconds, out_bytes = _timed(b, fn, impl, (arg, target), repeats)
            gbps = (read + out_bytes) / seconds / 1e9
            ops[op][impl] = {"seconds": seconds, "gbps": gbps, "copy_fraction": gbps / copy_gbps}
    return {"library": b.library, "device": b.device, "copy_gbps": copy_gbps, "ops": ops}


def _report(result: dict[str, Any]) -> str:
    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "n/a"
        return f"{entry['seconds'] * 1e3:9.3f} ms {entry['copy_fraction']:6.1%}"

    lines = [
        f"\n{result['library']}:{result['device']} (own: {_OWN[result['library']].label}), "
        f"copy {result['copy_gbps']:.1f} GB/s; time and fraction of copy bandwidth:",
        f"{'operation':<20}" + "".join(f"{impl:>22}" for impl in IMPLEMENTATIONS),
    ]
    for op, impls in result["ops"].items():
        lines.append(f"{op:<20}" + "".join(f"{cell(impls[i]):>22}" for i in IMPLEMENTATIONS))
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Bar chart of the fraction of copy bandwidth per operation and implementation, one
    panel per library and device."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(results), figsize=(5 * len(results), 4), squeeze=False, sharey=True
    )
    width = 0.8 / len(IMPLEMENTATIONS)
    for ax, result in zip(axes[0], results):
        for k, impl in enumerate(IMPLEMENTATIONS):
            values = [(result["ops"][op][impl] or {}).get("copy_fraction", 0.0) for op in OPS]
            ax.bar([i + (k - 1) * width for i in range(len(OPS))], values, width, label=impl)
        ax.set_xticks(range(len(OPS)), OPS, rotation=30, ha="right")
        ax.set_title(f"{result['library']}:{result['device']}")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("fraction of copy bandwidth")
    axes[0][-1].legend(title="implementation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with ``shape`` and ``repeats`` settled (``--quick`` included)."""
    parser = argparse.ArgumentParser(
        prog="xpsoftmax bench",
        description="Time each operation per installed array library and device: xpsoftmax's "
        "fast path, its generic implementation and the library's own, as times and as a "
        "fraction of the bandwidth of a plain copy. float32, rows along the last axis.",
    )
    parser.add_argument(
        "--library", action="append", choices=LIBRARIES, help="only this library (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help=f"a small input {QUICK_SHAPE}")
    parser.add_argument("--shape", type=_shape, help="input shape ROWSxCOLS")
    parser.add_argument("--repeats", type=int, default=5, help="samples per median (default 5)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install matplotlib (or 'xpsoftmax[bench]')")
    if importlib.util.find_spec("numpy") is None:
        parser.error("the benchmark needs NumPy to make its inputs: pip install numpy")
    args.shape = args.shape or (QUICK_SHAPE if args.quick else DEFAULT_SHAPE)
    args.repeats = max(1, args.repeats if not args.quick else min(args.repeats, 3))
    return args


def _backends(libraries: list[str] | None) -> list[Backend]:
    """The usable backends of ``libraries`` (default: every installed one that the benchmark
    knows), saying why a library has none."""
    from .testing.backends import usable_backends

    wanted = libraries or [lib.name for lib in _libraries.installed() if lib.name in _OWN]
    backends, reasons = usable_backends(wanted)
    for lib, reason in reasons.items():  # a broken install must not stop the others
        print(f"{lib}: could not be used ({reason})")
    return backends


def _run(backends: list[Backend], shape: tuple[int, int], repeats: int) -> list[dict[str, Any]]:
    progress = _Progress(len(backends) * len(OPS) * len(IMPLEMENTATIONS))
    try:
        return [_bench_backend(b, shape, repeats, progress) for b in backends]
    finally:
        progress.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (``python -m xpsoftmax bench [options]``); returns the exit status."""
    args = _parse(argv)
    shape, repeats = args.shape, args.repeats
    backends = _backends(args.library)
    if not backends:
        print("No array library to benchmark: install one, e.g. pip install numpy.")
        return 1

    from . import __version__

    print(
        f"xpsoftmax {__version__} bench: float32 {shape[0]}x{shape[1]} "
        f"({shape[0] * shape[1] * 4 / 2**20:.0f} MiB), median of {repeats}"
        + (
            " (XPSOFTMAX_FORCE_GENERIC is set: 'fast' is generic)"
            if _registry.generic_forced()
            else ""
        )
    )
    results = _run(backends, shape, repeats)
    for result in results:
        print(_report(result))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"shape": list(shape), "dtype": "float32", "repeats": repeats, "results": results},
                f,
                indent=1,
            )
        print(f"\nResults written to {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"Chart written to {args.plot}")
    return 0
