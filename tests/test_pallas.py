"""The Pallas kernels for JAX without a GPU: ``tests/pallas_interpreted`` under
``XPSOFTMAX_PALLAS_INTERPRET=1``, in a process of its own; and here, where they cannot run,
the entries stay out of the way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")

import xpsoftmax as xs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# The interpreted suite in three processes of about three minutes each (pytest-xdist runs them
# beside the rest, where one of nine minutes was the run's tail): the kit's grid through each
# kernel in each layout, and the rest.
PARTS = {
    "one_pass": "test_kernel_conforms and one_pass",
    "chunks": "test_kernel_conforms and chunks",
    "rules": "not test_kernel_conforms",
}


@pytest.mark.parametrize("part", PARTS)
def test_interpreted_kernels(part: str) -> None:
    pytest.importorskip("jax.experimental.pallas")
    env = {**os.environ, "XPSOFTMAX_PALLAS_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "-k", PARTS[part], str(ROOT / "tests" / "pallas_interpreted")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "no tests ran" not in done.stdout


def test_gpu_only_here() -> None:
    """Not interpreting: the entries serve the GPU alone; CPU calls keep ``jax.custom_jvp``.
    softmax and log_softmax (no faster than XLA) are opt-in, the rest serve by default."""
    if os.environ.get("XPSOFTMAX_PALLAS_INTERPRET") == "1":
        pytest.skip("interpreting in this process")
    import jax.numpy as jnp

    xs.softmax(jnp.zeros(2, dtype=jnp.float32))  # loads the JAX backend
    entries = [e for e in xs.fast_paths(library="jax") if e.name == "jax.pallas"]
    assert {e.op for e in entries} == {
        "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"
    }  # fmt: skip
    assert all(e.devices == ("gpu",) for e in entries)
    assert {e.op for e in entries if e.opt_in} == {"softmax", "log_softmax"}
    # On the CPU device explicitly: a GPU machine's default device is its GPU.
    x = jax.device_put(jnp.zeros((2, 3), dtype=jnp.float32), jax.devices("cpu")[0])
    with xs.use("jax.pallas"):
        assert xs.which("softmax", x) == "generic"
    assert xs.which("logsumexp", x) == "jax.custom_jvp"


# Every kernel lowered for CUDA here, on the CPU: Pallas' Triton lowering runs without a GPU,
# and some of its failures are invisible to the interpreter (a weak-typed NaN literal in a
# select became the predicate's bool type: a lowering error on the GPU alone). Rows of 5
# (one block) and 5000 (chunks); temperatures 1, 0.5 and 1e38 (two-step scaling).
def _lowered(fn: Any, *args: Any) -> None:
    jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))


def _pallas_kernels() -> Any:
    pytest.importorskip("jax.experimental.pallas")
    if os.environ.get("XPSOFTMAX_PALLAS_INTERPRET") == "1":
        pytest.skip("interpreting in this process: nothing is lowered for the GPU")
    from xpsoftmax.backends.jax.pallas import kernels

    return kernels


@pytest.mark.parametrize("n", [5, 5000])
@pytest.mark.parametrize("t", [1.0, 0.5, 1e38])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_normalize_lowers_for_cuda(n: int, t: float, log: bool, dtype: str) -> None:
    kernels = _pallas_kernels()
    x = jax.ShapeDtypeStruct((3, n), dtype)
    _lowered(lambda x: kernels.normalize(x, t, log), x)
    # The custom_jvp rule under reverse mode: the kernel again, in the rule's own code.
    _lowered(jax.grad(lambda x: kernels.normalize(x, t, log).astype("float32")[:, 0].sum()), x)


@pytest.mark.parametrize("n", [5, 5000])
def test_logsumexp_lowers_for_cuda(n: int) -> None:
    kernels = _pallas_kernels()
    x = jax.ShapeDtypeStruct((3, n), "float32")
    _lowered(kernels.logsumexp, x)
    _lowered(jax.grad(lambda x: kernels.logsumexp(x).sum()), x)


@pytest.mark.parametrize("n", [5, 5000])
@pytest.mark.parametrize("t", [1.0, 1e38])
@pytest.mark.parametrize(("eps", "z_loss"), [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-4)])
@pytest.mark.parametrize("with_grad", [False, True])
def test_cross_entropy_lowers_for_cuda(
    n: int, t: float, eps: float, z_loss: float, with_grad: bool
) -> None:
    kernels = _pallas_kernels()
    x = jax.ShapeDtypeStruct((3, n), "bfloat16")
    codes = jax.ShapeDtypeStruct((3,), "int32")
    factor = jax.ShapeDtypeStruct((1,), "float32")
    _lowered(
        lambda x, c, f: kernels.cross_entropy_rows(
            x, c, f, t=t, eps=eps, z_loss=z_loss, with_grad=with_grad
        ),
        x, codes, factor,
    )  # fmt: skip


# --- a traced call on a machine with a GPU ------------------------------------------------------
# A traced array has no device: the registry reads JAX's default backend, the GPU on a machine
# with one, also for jax.jit of CPU arrays. The H100 run of 2026-11-27 found the Pallas entries
# chosen there and failing to lower ("Only interpret mode is supported on CPU backend"); they
# now leave the choice to the lowering (entries.on_cuda). Here the registry is put in that
# machine's state: default backend "gpu", the Pallas entries available.
@pytest.fixture
def as_on_a_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    _pallas_kernels()  # skips where Pallas is missing or interpreting
    import jax.numpy as jnp

    from xpsoftmax import _registry

    xs.softmax(jnp.zeros(2, dtype=jnp.float32))  # loads the JAX backend
    for e in xs.fast_paths(library="jax"):
        if e.name == "jax.pallas":
            monkeypatch.setitem(_registry._UNAVAILABLE, (e.op, e.library, e.name), None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


def _ce_loss_and_grad(x: Any, t: Any) -> Any:
    return jax.value_and_grad(lambda x: xs.cross_entropy(x, t, label_smoothing=0.1))(x)


TRACED = {
    "softmax": lambda x, t: xs.softmax(x, temperature=0.5),
    "log_softmax": lambda x, t: xs.log_softmax(x),
    "logsumexp": lambda x, t: xs.logsumexp(x, axis=-1),
    "cross_entropy": lambda x, t: xs.cross_entropy(x, t, reduction="sum", z_loss=1e-4),
    "cross_entropy_with_grad": lambda x, t: xs.cross_entropy_with_grad(x, t),
    "cross_entropy, its gradient": _ce_loss_and_grad,
}


@pytest.mark.usefixtures("as_on_a_gpu_machine")
@pytest.mark.parametrize("case", TRACED)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_traced_call_for_the_cpu_on_a_gpu_machine(case: str, dtype: str) -> None:
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (4, 37)).astype(np.float32)
    x[1] = -np.inf  # an all -inf row
    # On the CPU device explicitly: a GPU machine's default device is its GPU.
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(jnp.asarray(x, dtype=dtype), cpu)
    t = jax.device_put(jnp.asarray([0, 5, -100, 36]), cpu)
    fn = TRACED[case]
    with xs.use("jax.pallas"):  # softmax and log_softmax are opt-in
        traced = jax.jit(fn).trace(x, t)
        # The kernel where the program runs on the GPU ...
        assert "triton" in traced.lower(lowering_platforms=("cuda",)).as_text()
        # ... and a program the CPU runs, with the generic path's answers.
        got = jax.jit(fn)(x, t)
    with xs.force_generic():
        want = fn(x, t)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        tol = 1e-5 if dtype == "float32" else 1e-2
        np.testing.assert_allclose(
            np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol
        )


@pytest.mark.usefixtures("as_on_a_gpu_machine")
def test_eager_transforms_read_the_arrays_device() -> None:
    """grad, vmap and jvp outside jax.jit wrap the caller's array: its device decides (a CPU
    array on a GPU machine keeps jax.custom_jvp); under jax.jit, the default backend."""
    import jax.numpy as jnp

    from xpsoftmax.backends.jax import device_kind

    seen = []

    def note(x: Any) -> Any:
        seen.append(device_kind(x))
        return x.sum()

    x = jax.device_put(jnp.ones((2, 3)), jax.devices("cpu")[0])  # a GPU machine's default: GPU
    jax.grad(note)(x)
    jax.vmap(note)(x)
    jax.jvp(note, (x,), (x,))
    jax.hessian(note)(x)
    jax.grad(lambda x: jax.vmap(note)(x).sum())(x)
    assert seen == ["cpu"] * 5
    jax.jit(note)(x)
    jax.jit(jax.grad(note))(x)
    assert seen[5:] == ["gpu", "gpu"]
