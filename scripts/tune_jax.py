"""JAX on a GPU without the host: each operation's throughput with its calls queued, beside
jax.nn / optax and a plain copy, as a fraction of the copy's bandwidth.

    python scripts/tune_jax.py [--quick] [--device gpu|cpu]

``python -m xpsoftmax bench`` times synchronised single calls, in which JAX's dispatch (tens
of microseconds) is part of every time. Here ``calls`` jitted calls are queued before
waiting for the last (JAX dispatches asynchronously): where a call's kernels take longer than
its dispatch, the time per call is the GPU's, which is what the GPU goals are about ("XLA
where it is already at the limit, shown by measurement"). Implementations, each jitted on its
own: ``own`` (jax.nn, jax.scipy, optax, as ``python -m xpsoftmax bench`` calls them),
``default`` (what xpsoftmax picks: XLA through ``jax.custom_jvp`` / ``jax.fused_jvp``, the
Pallas kernels where they serve by default) and ``pallas`` (``xpsoftmax.use("jax.pallas")``:
also the opt-in softmax and log_softmax). Bytes counted as ``scripts/tune_triton.py`` counts
them: the input read once, the output (or the gradient) written once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import xpsoftmax as xs
from xpsoftmax import _bench

SHAPES = [
    ((16384, 1024), "float32"),
    ((4096, 8192), "float32"),
    ((4096, 32768), "bfloat16"),
    ((512, 131072), "float32"),
]
QUICK = [((256, 512), "float32"), ((64, 2048), "bfloat16")]
OPS = ("softmax", "log_softmax", "logsumexp", "ce_fwd_bwd")


def queued_ms(fn: Callable[[], Any], calls: int = 20, reps: int = 5) -> float:
    """Milliseconds per call, ``calls`` calls queued before waiting for the last; the median
    of ``reps`` such runs, after a warm-up (the compilation)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def _own(op: str) -> Callable[..., Any]:
    """The library's own function of ``(x, t)``, as ``python -m xpsoftmax bench`` times it
    (``_bench._jax_own``); the cross-entropy's gradient, that cross-entropy being optax's or,
    without optax, the same mean in jax.nn's terms."""
    own = _bench._jax_own()
    if op != "ce_fwd_bwd":
        return own[op]

    def plain(x: Any, t: Any) -> Any:
        logp = jax.nn.log_softmax(x.astype(jnp.float32))
        return -jnp.take_along_axis(logp, t[:, None], axis=-1).mean()

    return jax.grad(own.get("cross_entropy", plain))


def _ours(op: str) -> Callable[..., Any]:
    if op == "softmax":
        return lambda x, t: xs.softmax(x)
    if op == "log_softmax":
        return lambda x, t: xs.log_softmax(x)
    if op == "logsumexp":
        return lambda x, t: xs.logsumexp(x, axis=-1)
    return jax.grad(lambda x, t: xs.cross_entropy(x, t))


def _served(op: str, x: Any, t: Any) -> str:
    """The implementation xpsoftmax picks for ``op`` on these inputs (in the current ``use``)."""
    if op == "ce_fwd_bwd":
        return xs.which("cross_entropy", x, t)
    return xs.which(op, x, axis=-1)


def functions(op: str, x: Any, t: Any) -> dict[str, tuple[Callable[..., Any], str]]:
    """``{implementation: (f(x, t), what serves it)}`` of ``op``, each to be jitted on its own
    (``jax.jit`` keeps one trace per function, and the registry chooses while tracing); no
    ``pallas`` where the Pallas kernels do not serve these inputs."""
    found = {"default": (_ours(op), _served(op, x, t))}
    with xs.use("jax.pallas"):
        if _served(op, x, t) == "jax.pallas":
            found["pallas"] = (_ours(op), "jax.pallas")
    ce_own = "optax" if importlib.util.find_spec("optax") else "jax.nn (no optax)"
    found["own"] = (_own(op), ce_own if op == "ce_fwd_bwd" else "jax.nn")
    return found


def measure(shape: tuple[int, int], dtype: str, device: Any) -> list[dict[str, Any]]:
    """One row per operation and implementation, and the copy's, for one input."""
    key = jax.random.key(0)
    x = jax.device_put(jax.random.normal(key, shape, dtype=getattr(jnp, dtype)), device)
    t = jax.device_put(jax.random.randint(key, shape[:1], 0, shape[1]), device)
    nbytes = x.size * x.dtype.itemsize
    copy = jax.jit(lambda a: a.copy())  # the kit's JAX copier, without its wait per call
    copy_gbps = 2 * nbytes / queued_ms(lambda: copy(x)) / 1e6
    label = f"{shape[0]}x{shape[1]} {dtype}"
    rows = [dict(shape=label, op="copy", impl="-", gbps=copy_gbps, fraction=1.0)]
    print(f"\n{label} on {device}: copy {copy_gbps:.0f} GB/s")
    for op in OPS:
        moved = nbytes if op == "logsumexp" else 2 * nbytes
        for impl, (fn, served) in functions(op, x, t).items():
            jitted = jax.jit(fn)
            try:
                with xs.use("jax.pallas") if impl == "pallas" else contextlib.nullcontext():
                    ms = queued_ms(lambda f=jitted: f(x, t))
            except Exception as exc:  # one implementation's failure ends only its row
                print(f"  {op:12s} {impl:8s} failed: {type(exc).__name__}: {exc}")
                continue
            fraction = moved / ms / 1e6 / copy_gbps
            rows.append(
                dict(shape=label, op=op, impl=impl, served=served, ms=ms, fraction=fraction)
            )
            print(f"  {op:12s} {impl:8s} {served:16s} {ms:8.3f} ms  {fraction:6.1%}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small shapes only")
    parser.add_argument("--device", default="gpu", help="JAX's platform (default gpu)")
    args = parser.parse_args(argv)
    try:
        device = jax.devices(args.device)[0]
    except RuntimeError as exc:
        print(f"no {args.device} for JAX: {exc}")
        return 1
    print("jax", jax.__version__, device.device_kind)
    for shape, dtype in QUICK if args.quick else SHAPES:
        measure(shape, dtype, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
