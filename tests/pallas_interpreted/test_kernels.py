"""The Pallas kernels for JAX without a GPU: run by Pallas' interpreter on CPU arrays
(``XPSOFTMAX_PALLAS_INTERPRET=1``, set by ``tests/test_pallas.py``) through the kit's
catalogue, rows held on chip and rows read in chunks, and their derivative rules against the
generic path's autodiff."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax.experimental.pallas")

import jax.numpy as jnp  # noqa: E402

import xpsoftmax as xs  # noqa: E402
from xpsoftmax.testing import BY_ID, check_gradients, check_implementation  # noqa: E402
from xpsoftmax.testing.conformance import _plan, through_entry  # noqa: E402
from xpsoftmax.testing.gradients import DIFFERENTIABLE  # noqa: E402

from xpsoftmax.backends.jax.pallas.entries import OPT_IN  # noqa: E402  # isort: skip

PALLAS = "jax.pallas"
OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")


def _entries() -> dict[str, Any]:
    xs.softmax(jnp.zeros(2, dtype=jnp.float32))  # loads the JAX backend
    return {e.op: e for e in xs.fast_paths(library="jax") if e.name == PALLAS}


@pytest.fixture(params=["one_pass", "chunks"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Rows held on chip, or read in chunks of 4 (the catalogue's rows span several)."""
    if request.param == "chunks":
        from xpsoftmax.backends.jax.pallas import kernels

        monkeypatch.setattr(kernels, "CHUNK", 4)
    return str(request.param)


@pytest.mark.parametrize("op", OPS)
def test_default_or_opt_in(op: str) -> None:
    """logsumexp and cross-entropy (cross_entropy_with_grad too) serve by default; softmax and
    log_softmax only when picked (a low priority alone once let a kernel serve by default)."""
    entries = _entries()
    assert set(entries) == set(OPS)
    x = jnp.zeros((2, 3), dtype=jnp.float32)
    args = (x, jnp.array([0, 2])) if op.startswith("cross") else (x,)
    if op in ("softmax", "log_softmax"):
        assert entries[op].opt_in
        assert xs.which(op, *args) != PALLAS
    else:
        assert not entries[op].opt_in
        assert xs.which(op, *args) == PALLAS
    with xs.use(PALLAS):
        assert xs.which(op, *args) == PALLAS


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", OPS)
def test_kernel_conforms(op: str, dtype: str, layout: str) -> None:
    entry = _entries()[op]

    def fast(*args: Any, **kw: Any) -> Any:
        plan = _plan(op, args, kw)
        return dataclasses.replace(plan, impl=entry.impl, name=entry.name).run()

    fast.__name__ = f"{PALLAS}[{layout}]"
    assert check_implementation(op, fast, BY_ID["jax:cpu"], dtype, accepts=entry.accepts) > 0


@pytest.mark.parametrize("op", [op for op in DIFFERENTIABLE if op not in OPT_IN])
def test_kernel_gradients(op: str) -> None:
    """The kit's gradient grid through each entry that serves by default, float32 (as the
    Triton entries': the grid's empty inputs once found those answered outside torch's
    graph). The opt-in kernels' gradients: the hand-written test below (a minute of CI
    spared)."""
    entry = _entries()[op]
    check_gradients(op, through_entry(entry), BY_ID["jax:cpu"], "float32", accepts=entry.accepts)


@pytest.mark.parametrize("op", OPS[:3])
def test_gradient_equals_generic(op: str, layout: str) -> None:
    """jax.grad through the kernels' rules (under jit) against the generic path's autodiff:
    masked entries, an all -inf row, a temperature."""
    x = np.random.default_rng(5).normal(size=(4, 9)).astype(np.float32)
    x[1, :3] = -np.inf
    x[2] = -np.inf
    w = jnp.linspace(-1.0, 1.0, 9)
    kw = {"axis": -1} if op == "logsumexp" else {"temperature": 0.7}

    def loss(a: Any) -> Any:
        out = getattr(xs, op)(a, **kw)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * (w if out.ndim == 2 else 1.0))

    grads = []
    for context in (xs.use(PALLAS), xs.force_generic()):
        with context:
            grads.append(jax.jit(jax.grad(loss))(jnp.asarray(x)))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(grads[0])[2] == 0)  # the all -inf row: no gradient, not NaN


@pytest.mark.parametrize(
    "options",
    [{}, {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.2},
     {"z_loss": 1e-2, "temperature": 0.7}],
    ids=lambda o: ",".join(o) or "default",
)  # fmt: skip
def test_cross_entropy_gradient_equals_generic(options: dict, layout: str) -> None:
    """jax.grad (under jit) through the fused rule against the generic path's autodiff: an
    ignored row, an all -inf row, a masked entry; and cross_entropy_with_grad alike."""
    x = np.random.default_rng(9).normal(size=(5, 9)).astype(np.float32)
    x[1, 0] = -np.inf
    x[2] = -np.inf  # its loss is +inf: left out of the summed loss below
    target = jnp.asarray([1, 3, 0, 8, -100])
    keep = jnp.asarray([1.0, 1.0, 0.0, 1.0, 1.0])

    def loss(a: Any) -> Any:
        out = xs.cross_entropy(a, target, **options)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * (keep if out.ndim else 1.0))

    grads, pairs = [], []
    for context in (xs.use(PALLAS), xs.force_generic()):
        with context:
            grads.append(jax.jit(jax.grad(loss))(jnp.asarray(x)))
            pairs.append(xs.cross_entropy_with_grad(jnp.asarray(x), target, **options))
    rows = [0, 1, 3, 4] if options.get("reduction") == "none" else slice(None)
    np.testing.assert_allclose(np.asarray(grads[0])[rows], np.asarray(grads[1])[rows],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    for got, want in zip(*pairs):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
