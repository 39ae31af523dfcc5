"""Extreme temperatures under ``jax.jit``: every JAX path gives its eager answers.

Above 2**64 a temperature's reciprocal is subnormal in float32; XLA on CPU flushes subnormals
to zero and turns a division by a constant into a multiplication by its reciprocal, so an
unguarded ``x / T`` became ``x * 0`` inside ``jax.jit`` only (NaN for -inf entries, 0 for the
huge ones). The kit's catalogue runs eagerly; this is the same check traced. Ordinary
temperatures too: XLA also folds constant factors together, and ``(d / T) * big`` became
``d * inf``, NaN at a row's maximum, inside ``jax.jit`` only (the JAX accurate-near-0 sum)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import xpsoftmax as xs  # noqa: E402

X = np.array([[1.0, 2.0, -np.inf, -3e38], [3e38, -3e38, 0.0, 1.0], [-np.inf] * 4], np.float32)
TARGET = np.array([1, 0, 2])


def _call(op: str, x: Any, t: float) -> Any:
    if op == "cross_entropy":
        return xs.cross_entropy(x, jnp.asarray(TARGET), temperature=t, reduction="none")
    return getattr(xs, op)(x, temperature=t)


@pytest.mark.parametrize("path", ["fast", "generic"])
@pytest.mark.parametrize("t", [0.5, 3.0, 1e30, 1e38, 3e38])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cross_entropy"])
def test_jit_equals_eager(op: str, t: float, path: str) -> None:
    x = jnp.asarray(X)
    with xs.force_generic() if path == "generic" else xs.use():
        eager = np.asarray(_call(op, x, t))
        traced = np.asarray(jax.jit(lambda a: _call(op, a, t))(x))
    np.testing.assert_allclose(traced, eager, rtol=1e-6, atol=0)
    if op == "softmax" and t == 1e38:  # a huge entry keeps its weight: z = -3, not 0
        assert 0.02 < eager[0, 3] < 0.03
