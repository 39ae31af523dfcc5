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
from typing import Any

from . import _api, _registry

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy+grad")
IMPLEMENTATIONS = ("fast", "generic", "own")
LIBRARIES = ("numpy", "torch", "jax", "cupy")
QUICK_SHAPE = (256, 4096)  # 4 MiB: the whole run takes seconds
DEFAULT_SHAPE = (4096, 8192)  # 128 MiB: far beyond the caches, still quick on a laptop

#: What each library calls "its own" implementation, for the report.
OWN = {
    "numpy": "scipy.special",
    "torch": "torch / torch.nn.functional",
    "jax": "jax.nn / optax",
    "cupy": "plain CuPy formulas",
}


@dataclass
class Device:
    """One array library on one device and what the benchmark needs of it."""

    library: str
    device: str
    put: Callable[[Any], Any]  # NumPy array -> array on the device
    sync: Callable[[Any], Any]  # waits for a result (array or tuple of arrays)
    copy: Callable[[Any], Callable[[], Any]]  # x -> a call copying x into a buffer
    jit: Callable[[Callable[..., Any]], Callable[..., Any]]

    @property
    def label(self) -> str:
        return f"{self.library}:{self.device}"


def _nbytes(a: Any) -> int:
    if isinstance(a, (tuple, list)):
        return sum(_nbytes(b) for b in a)
    if hasattr(a, "element_size"):  # torch
        return int(a.element_size() * a.numel())
    return int(getattr(a, "nbytes", 0))


def _identity(f: Callable[..., Any]) -> Callable[..., Any]:
    return f


def _devices(library: str) -> list[Device]:
    """The devices of ``library`` found here (imports it)."""
    if library == "numpy":
        import numpy as np

        def np_copy(x: Any) -> Callable[[], Any]:
            buf = np.empty_like(x)
            return lambda: np.copyto(buf, x)

        return [Device("numpy", "cpu", _identity, _identity, np_copy, _identity)]
    if library == "torch":
        import torch

        def torch_device(dev: str) -> Device:
            def sync(out: Any) -> Any:
                if dev == "cuda":
                    torch.cuda.synchronize()
                return out

            def copy(x: Any) -> Callable[[], Any]:
                buf = torch.empty_like(x)
                return lambda: sync(buf.copy_(x))

            return Device(
                "torch", dev, lambda a: torch.from_numpy(a).to(dev), sync, copy, _identity
            )

        return [torch_device(d) for d in ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])]
    if library == "jax":
        import jax

        def jax_put(platform: str) -> Callable[[Any], Any]:
            device = jax.devices(platform)[0]
            return lambda a: jax.device_put(a, device)

        def jax_copy(x: Any) -> Callable[[], Any]:
            copy = jax.jit(lambda a: a.copy())
            return lambda: jax.block_until_ready(copy(x))

        return [
            Device(
                "jax",
                platform,
                jax_put(platform),
                jax.block_until_ready,
                jax_copy,
                jax.jit,
            )
            for platform in sorted({d.platform for d in jax.devices()} | {"cpu"})
        ]
    if library == "cupy":
        import cupy

        cupy.cuda.runtime.getDeviceCount()

        def cupy_sync(out: Any) -> Any:
            cupy.cuda.get_current_stream().synchronize()
            return out

        def cupy_copy(x: Any) -> Callable[[], Any]:
            buf = cupy.empty_like(x)
            return lambda: cupy_sync(cupy.copyto(buf, x))

        return [Device("cupy", "cuda", cupy.asarray, cupy_sync, cupy_copy, _identity)]
    return []


def _own(library: str, op: str) -> Callable[..., Any] | None:
    """The library's own ``op`` over rows, taking ``(x, target)``; None where it has none."""
    if library == "numpy":
        if importlib.util.find_spec("scipy") is None:
            return None
        import numpy as np
        import scipy.special as sc

        def np_loss_and_grad(x: Any, t: Any) -> tuple[Any, Any]:
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
            "cross_entropy+grad": np_loss_and_grad,
        }[op]
    if library == "torch":
        import torch
        import torch.nn.functional as F

        return {
            "softmax": lambda x, t: torch.softmax(x, -1),
            "log_softmax": lambda x, t: torch.log_softmax(x, -1),
            "logsumexp": lambda x, t: torch.logsumexp(x, -1),
            "cross_entropy": F.cross_entropy,
            "cross_entropy+grad": _torch_grad(F.cross_entropy),
        }[op]
    if library == "jax":
        import jax

        if op.startswith("cross_entropy"):
            if importlib.util.find_spec("optax") is None:
                return None
            import optax

            def jax_ce(x: Any, t: Any) -> Any:
                return optax.softmax_cross_entropy_with_integer_labels(x, t).mean()

            return jax.value_and_grad(jax_ce) if op.endswith("grad") else jax_ce
        return {
            "softmax": lambda x, t: jax.nn.softmax(x),
            "log_softmax": lambda x, t: jax.nn.log_softmax(x),
            "logsumexp": lambda x, t: jax.scipy.special.logsumexp(x, axis=-1),
        }[op]
    if library == "cupy":
        import cupy as cp

        def lse(x: Any) -> Any:
            m = x.max(axis=-1, keepdims=True)
            return m + cp.log(cp.exp(x - m).sum(axis=-1, keepdims=True))

        def cp_loss_and_grad(x: Any, t: Any) -> tuple[Any, Any]:
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
            "cross_entropy+grad": cp_loss_and_grad,
        }[op]
    return None


def _torch_grad(loss: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    def loss_and_grad(x: Any, t: Any) -> tuple[Any, Any]:
        value = loss(x, t)
        return value, torch.autograd.grad(value, x)[0]

    return loss_and_grad


def _ours(library: str, op: str) -> Callable[..., Any]:
    """xpsoftmax's ``op`` taking ``(x, target)``; the gradient by the library's autodiff."""
    if op == "cross_entropy+grad":
        if library == "torch":
            return _torch_grad(_api.cross_entropy)
        if library == "jax":
            import jax

            return jax.value_and_grad(_api.cross_entropy)
        return _api.cross_entropy_with_grad
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


def _bench_device(
    dev: Device, shape: tuple[int, int], repeats: int, progress: _Progress
) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    host = rng.random(shape, dtype=np.float32) * 8 - 4
    x = dev.put(host)
    target = dev.put(
        rng.integers(0, shape[1], shape[0]).astype(np.int32 if dev.library == "jax" else np.int64)
    )
    x_bytes = _nbytes(x)
    copy_gbps = 2 * x_bytes / median_seconds(dev.copy(x), repeats) / 1e9
    ops: dict[str, Any] = {}
    for op in OPS:
        arg = x
        if op == "cross_entropy+grad" and dev.library == "torch":
            arg = x.detach().requires_grad_(True)
        read = x_bytes + (_nbytes(target) if op.startswith("cross_entropy") else 0)
        ops[op] = {}
        for impl in IMPLEMENTATIONS:
            progress.step(f"{dev.label} {op} {impl}")
            fn = _own(dev.library, op) if impl == "own" else _ours(dev.library, op)
            if fn is None:
                ops[op][impl] = None
                continue
            fn = dev.jit(fn)
            context = _registry.force_generic if impl == "generic" else contextlib.nullcontext

            def run(fn: Callable[..., Any] = fn, arg: Any = arg, context: Any = context) -> Any:
                with context():
                    return dev.sync(fn(arg, target))

            moved = read + _nbytes(run())  # the first call also compiles and warms up
            seconds = median_seconds(run, repeats)
            ops[op][impl] = {
                "seconds": seconds,
                "gbps": moved / seconds / 1e9,
                "copy_fraction": moved / seconds / 1e9 / copy_gbps,
            }
    return {"library": dev.library, "device": dev.device, "copy_gbps": copy_gbps, "ops": ops}


def _report(result: dict[str, Any]) -> str:
    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "n/a"
        return f"{entry['seconds'] * 1e3:9.3f} ms {entry['copy_fraction']:6.1%}"

    lines = [
        f"\n{result['library']}:{result['device']} (own: {OWN[result['library']]}), "
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (``python -m xpsoftmax bench [options]``); returns the exit status."""
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
    shape = args.shape or (QUICK_SHAPE if args.quick else DEFAULT_SHAPE)
    repeats = max(1, args.repeats if not args.quick else min(args.repeats, 3))

    wanted = args.library or [lib for lib in LIBRARIES if importlib.util.find_spec(lib)]
    devices: list[Device] = []
    for lib in wanted:
        try:
            devices += _devices(lib)
        except Exception as exc:  # a broken install must not stop the others
            print(f"{lib}: could not be used ({type(exc).__name__}: {exc})")
    if not devices:
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
    progress = _Progress(len(devices) * len(OPS) * len(IMPLEMENTATIONS))
    results = []
    try:
        for dev in devices:
            results.append(_bench_device(dev, shape, repeats, progress))
    finally:
        progress.close()
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
