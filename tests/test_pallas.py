"""The Pallas kernels for JAX without a GPU: ``tests/pallas_interpreted`` under
``XPSOFTMAX_PALLAS_INTERPRET=1``, in a process of its own; and here, where they cannot run,
the entries stay out of the way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

jax = pytest.importorskip("jax")

import xpsoftmax as xs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_interpreted_kernels() -> None:
    pytest.importorskip("jax.experimental.pallas")
    env = {**os.environ, "XPSOFTMAX_PALLAS_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         str(ROOT / "tests" / "pallas_interpreted")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "no tests ran" not in done.stdout


def test_gpu_only_here() -> None:
    """Not interpreting: the entries serve the GPU alone; CPU calls keep ``jax.custom_jvp``."""
    if os.environ.get("XPSOFTMAX_PALLAS_INTERPRET") == "1":
        pytest.skip("interpreting in this process")
    import jax.numpy as jnp

    xs.softmax(jnp.zeros(2, dtype=jnp.float32))  # loads the JAX backend
    entries = [e for e in xs.fast_paths(library="jax") if e.name == "jax.pallas"]
    assert {e.op for e in entries} == {
        "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"
    }  # fmt: skip
    assert all(e.devices == ("gpu",) for e in entries)
    with xs.use("jax.pallas"):
        assert xs.which("softmax", jnp.zeros((2, 3), dtype=jnp.float32)) == "generic"
