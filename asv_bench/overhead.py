"""Per-call overhead of xpsoftmax's dispatch on a tiny array, against the library's own call.

asv times a 32x10 call too, but in a fresh process per parameter and with few samples, so its
microsecond numbers swing by tens of percent. This script takes the minimum over many
``timeit`` repeats of both calls in one process, which is what "overhead" means. Usage::

    python asv_bench/overhead.py            # numpy, torch:cpu, jax:cpu (those installed)
"""

from __future__ import annotations

import importlib.util
import timeit

import numpy as np

import xpsoftmax as xs


def _best(fn, number: int = 5000, repeat: int = 7) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def cases() -> list[tuple[str, str, object, object]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    t = np.arange(32) % 10
    out = []
    import scipy.special as sc

    out += [
        ("numpy", "softmax", lambda: xs.softmax(x), lambda: sc.softmax(x, axis=-1)),
        ("numpy", "log_softmax", lambda: xs.log_softmax(x), lambda: sc.log_softmax(x, axis=-1)),
        ("numpy", "logsumexp", lambda: xs.logsumexp(x, axis=-1), lambda: sc.logsumexp(x, axis=-1)),
    ]
    if importlib.util.find_spec("torch"):
        import torch
        import torch.nn.functional as F

        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        out += [
            ("torch:cpu", "softmax", lambda: xs.softmax(xt), lambda: torch.softmax(xt, -1)),
            (
                "torch:cpu",
                "log_softmax",
                lambda: xs.log_softmax(xt),
                lambda: torch.log_softmax(xt, -1),
            ),
            (
                "torch:cpu",
                "logsumexp",
                lambda: xs.logsumexp(xt, axis=-1),
                lambda: torch.logsumexp(xt, -1),
            ),
            (
                "torch:cpu",
                "cross_entropy",
                lambda: xs.cross_entropy(xt, tt),
                lambda: F.cross_entropy(xt, tt),
            ),
        ]
    if importlib.util.find_spec("jax"):
        import jax
        import jax.numpy as jnp

        xj = jnp.asarray(x)
        # What JAX users call: jitted functions. The dispatch runs once, at tracing time.
        fast = {
            "softmax": jax.jit(lambda a: xs.softmax(a)),
            "logsumexp": jax.jit(lambda a: xs.logsumexp(a, axis=-1)),
        }
        own = {
            "softmax": jax.jit(jax.nn.softmax),
            "logsumexp": jax.jit(lambda a: jax.nn.logsumexp(a, axis=-1)),
        }
        for op in fast:
            out.append(
                (
                    "jax:cpu (jit)",
                    op,
                    lambda f=fast[op]: f(xj).block_until_ready(),
                    lambda f=own[op]: f(xj).block_until_ready(),
                )
            )
    return out


def main() -> int:
    print(
        f"{'library':15s} {'op':14s} {'xpsoftmax':>10s} {'own':>8s} {'overhead':>9s}  (us per call, 32x10 float32)"
    )
    for lib, op, fast, own in cases():
        a, b = _best(fast), _best(own)
        print(f"{lib:15s} {op:14s} {a:10.1f} {b:8.1f} {a - b:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
