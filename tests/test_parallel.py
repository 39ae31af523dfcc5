"""``xpsoftmax.parallel``: the tests on 8 host devices (``tests/jax_devices``) in a process of
their own, and the argument checks here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpsoftmax as xs

ROOT = Path(__file__).resolve().parent.parent


def test_on_eight_host_devices() -> None:
    pytest.importorskip("jax")
    env = {**os.environ, "XPSOFTMAX_HOST_DEVICES": "8"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         str(ROOT / "tests" / "jax_devices")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "no tests ran" not in done.stdout


def test_jax_arrays_only() -> None:
    with pytest.raises(TypeError, match="JAX arrays inside"):
        xs.parallel.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), "v")
    with pytest.raises(TypeError, match="JAX arrays inside"):
        xs.parallel.logsumexp(np.zeros((2, 3)), "v")


def test_bad_arguments() -> None:
    jnp = pytest.importorskip("jax.numpy")
    z, t = jnp.zeros((2, 3)), jnp.array([0, 1])
    with pytest.raises(TypeError, match="axis_name"):
        xs.parallel.cross_entropy(z, t, None)
    with pytest.raises(TypeError, match="temperature"):
        xs.parallel.cross_entropy(z, t, "v", temperature=jnp.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        xs.parallel.cross_entropy(z, t, "v", reduction="avg")
    with pytest.raises(TypeError, match="keepdims"):
        xs.parallel.logsumexp(z, "v", keepdims=1)
