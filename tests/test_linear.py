"""The linear cross-entropy beyond the kit's grid (``test_conformance`` compares every backend
with the cross-entropy of the full logits): its autodiff rules equal autodiff through the
full logits, keep no logits-sized residual, and bad layers get clear errors."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

import xpsoftmax as xs

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None
REDUCTIONS = ["mean", "sum", "none"]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"temperature": 0.7, "weight": "classes"},  # torch's in-place chunks
    {"temperature": 1e30},  # above BIG_T: divided in two steps
    {"label_smoothing": 0.1, "z_loss": 1e-3, "temperature": 0.7},  # the generic chunk formulas
    {"z_loss": 1e-2, "temperature": 3.0},
]


def _options(options: dict, reduction: str, asarray: Any) -> dict:
    kw = dict(options, reduction=reduction)
    if kw.get("weight") == "classes":
        kw["weight"] = asarray(np.linspace(0.5, 2.0, 13))
    return kw


def _layer(rng: np.random.Generator, rows: int = 9, hidden: int = 5, vocab: int = 13) -> tuple:
    h = rng.normal(size=(rows, hidden))
    w = rng.normal(size=(vocab, hidden))
    b = rng.normal(size=vocab)
    t = rng.integers(0, vocab, size=rows)
    t[1] = -100
    return h, w, b, t


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"w": np.zeros((5, 13))}, ValueError, "looks transposed"),
        ({"w": np.zeros((13, 4))}, ValueError, "linear_weight must be"),
        ({"w": np.zeros(5)}, ValueError, "linear_weight must be"),
        ({"w": [[1.0] * 5] * 13}, TypeError, "linear_weight must be an array"),
        ({"bias": np.zeros(12)}, ValueError, "bias must have shape"),
        ({"w": np.zeros((13, 5), dtype=np.float32)}, TypeError, "share one floating dtype"),
        ({"w": np.zeros((13, 5), dtype=np.int64)}, TypeError, "real floating"),
        ({"temperature": np.ones(9)}, TypeError, "temperature of linear_cross_entropy"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size"),
        ({"chunk_size": True}, TypeError, "chunk_size"),
        ({"chunk_size": (4,)}, ValueError, "pair"),
        ({"chunk_size": (4, 0)}, ValueError, "chunk_size"),
        ({"chunk_size": (None, 2.5)}, TypeError, "chunk_size"),
        ({"h": np.float64(1.0)}, ValueError, "at least one dimension"),
        ({"axis": (0,)}, TypeError, "axis"),
        ({"t": np.zeros(8, dtype=np.int64)}, ValueError, "target of class indices"),
        ({"t": np.zeros((9, 5))}, ValueError, "target of class probabilities"),
        ({"t": np.array([0, 1, 2, 3, 4, 5, 6, 7, 13])}, ValueError, "outside"),
        ({"reduction": "avg"}, ValueError, "reduction"),
    ],
)
def test_bad_layers_and_options(change: dict, error: type, message: str) -> None:
    h, w, b, t = _layer(np.random.default_rng(0))
    args = {"h": h, "w": w, "t": t, "bias": b, **change}
    kw = {k: v for k, v in args.items() if k not in ("h", "w", "t")}
    for fn in (xs.linear_cross_entropy, xs.linear_cross_entropy_with_grad):
        with pytest.raises(error, match=message):
            fn(args["h"], args["w"], args["t"], **kw)


def test_chunks_do_not_change_the_answer() -> None:
    h, w, b, t = _layer(np.random.default_rng(1), rows=23)
    whole = xs.linear_cross_entropy_with_grad(h, w, t, bias=b, chunk_size=23)
    for rows in (1, 2, 5, 22, 100):
        parts = xs.linear_cross_entropy_with_grad(h, w, t, bias=b, chunk_size=rows)
        for a, c in zip(parts, whole):
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"label_smoothing": 0.2, "z_loss": 1e-2, "temperature": 0.3, "weight": "classes"},
        {"reduction": "none", "temperature": 0.0},
        {"reduction": "sum", "temperature": float("inf"), "label_smoothing": 0.1},
    ],
)
@pytest.mark.parametrize("target", ["index", "probs"])
def test_chunks_of_classes_do_not_change_the_answer(options: dict, target: str) -> None:
    """Rows split by classes too (two passes, the running maximum) equal whole rows."""
    rng = np.random.default_rng(8)
    h, w, b, t = _layer(rng, rows=11)
    b[4] = -np.inf  # a masked class
    b[:3] += np.array([-40.0, 0.0, 40.0])  # the maximum moves between chunks
    if target == "probs":
        t = rng.dirichlet(np.ones(13), size=11)
        t[:, 4] = 0.0
    kw = _options(options, options.get("reduction", "mean"), np.asarray)
    whole = xs.linear_cross_entropy_with_grad(h, w, t, bias=b, chunk_size=(4, None), **kw)
    for classes in (1, 2, 5, 12, 13, 100):
        got = xs.linear_cross_entropy_with_grad(h, w, t, bias=b, chunk_size=(4, classes), **kw)
        for a, c in zip(got, whole):
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)


def test_default_chunks() -> None:
    from xpsoftmax._linear import chunk_shape, default_chunk_rows
    from xpsoftmax._registry import Chunks

    assert chunk_shape(8192, 32000, Chunks()) == (256, 32000)  # whole rows up to 2**18
    assert chunk_shape(8192, 2**18 + 1, Chunks()) == (256, 2**16)  # a row over 1 MiB: split
    assert chunk_shape(8192, 2**20, Chunks(None, 1000)) == (256, 1000)
    assert chunk_shape(100_000, 1000, Chunks(None, 10)) == (3125, 10)
    assert chunk_shape(10, 4, Chunks(3, 50)) == (3, 4)
    assert default_chunk_rows(8192, 32000) == 256  # 1/32 of the logits, 33 MB
    assert default_chunk_rows(100, 32000) == 100  # fewer rows than the minimum: all
    assert default_chunk_rows(100_000, 256_000) == 256  # the minimum, whatever the bytes
    assert default_chunk_rows(100_000, 1000) == 3125  # 1/32
    assert default_chunk_rows(0, 10) == 1


# --- torch ----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("chunks", [4, (4, 5)])
def test_torch_autograd_equals_the_full_logits(
    reduction: str, options: dict, dtype: str, chunks: Any
) -> None:
    import torch

    rng = np.random.default_rng(2)
    h, w, b, t = (torch.tensor(a) for a in _layer(rng))
    dt = getattr(torch, dtype)
    leaves = [a.to(dt).requires_grad_() for a in (h, w, b)]
    ref_in = [
        a.detach().float().requires_grad_()
        if dtype != "float64"
        else a.detach().clone().requires_grad_()
        for a in leaves
    ]
    kw = _options(options, reduction, lambda a: torch.tensor(a, dtype=torch.float64))
    ref = xs.cross_entropy(ref_in[0] @ ref_in[1].T + ref_in[2], t, **kw)
    ref.sum().backward()
    got = xs.linear_cross_entropy(leaves[0], leaves[1], t, bias=leaves[2], chunk_size=chunks, **kw)
    assert xs.which("linear_cross_entropy", leaves[0], leaves[1], t) == "torch.linear"
    got.sum().backward(retain_graph=True)
    first = [a.grad.clone() for a in leaves]
    for a in leaves:
        a.grad = None
    got.sum().backward()  # a second backward computes them again (not scaled twice)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == "bfloat16" else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(got, ref.to(got.dtype), **tol)
    for leaf, ref_leaf, grad in zip(leaves, ref_in, first):
        assert leaf.grad.dtype == leaf.dtype
        torch.testing.assert_close(grad.double(), ref_leaf.grad.double(), **tol)
        torch.testing.assert_close(leaf.grad, grad)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_frozen_layer(reduction: str) -> None:
    """Only the gradients autograd asks for: a frozen layer gets none, h gets the same."""
    import torch

    h, w, b, t = (torch.tensor(a) for a in _layer(np.random.default_rng(9)))
    h.requires_grad_()
    xs.linear_cross_entropy(h, w, t, bias=b, reduction=reduction).sum().backward()
    ref = h.detach().clone().requires_grad_()
    xs.cross_entropy(ref @ w.T + b, t, reduction=reduction).sum().backward()
    assert w.grad is None and b.grad is None
    torch.testing.assert_close(h.grad, ref.grad)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_keeps_no_logits_for_backward() -> None:
    """Autograd saves only the inputs (the unfused call saves logits-sized tensors)."""
    import torch

    h, w, b, t = (torch.tensor(a) for a in _layer(np.random.default_rng(3), rows=64, vocab=40))
    h.requires_grad_()
    w.requires_grad_()

    def saved_sizes(fn: Any) -> list[int]:
        sizes: list[int] = []

        def pack(x: torch.Tensor) -> torch.Tensor:
            sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn().backward()
        return sizes

    logits = 64 * 40
    unfused = saved_sizes(lambda: xs.cross_entropy(h @ w.T + b, t))
    assert max(unfused) >= logits  # the test can fail: the unfused call keeps logits
    for chunks in (16, (16, 8)):
        fused = saved_sizes(lambda c=chunks: xs.linear_cross_entropy(h, w, t, bias=b, chunk_size=c))
        assert max(fused) < logits, (chunks, fused)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_target_or_class_weight_gradients_take_the_generic_path() -> None:
    import torch

    h, w, b, _ = (torch.tensor(a) for a in _layer(np.random.default_rng(4)))
    probs = torch.softmax(torch.randn(9, 13, dtype=torch.float64), -1).requires_grad_()
    loss = xs.linear_cross_entropy(h, w, probs, bias=b)
    loss.backward()
    ref = probs.detach().clone().requires_grad_()
    xs.cross_entropy(h @ w.T + b, ref).backward()
    torch.testing.assert_close(probs.grad, ref.grad)


# --- JAX ------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("chunks", [4, (4, 5)])
def test_jax_grad_equals_the_full_logits(reduction: str, options: dict, chunks: Any) -> None:
    import jax
    import jax.numpy as jnp

    h, w, b, t = (jnp.asarray(a) for a in _layer(np.random.default_rng(5)))
    h, w, b = (a.astype(jnp.float32) for a in (h, w, b))
    kw = _options(options, reduction, lambda a: jnp.asarray(a, jnp.float32))

    def full(h: Any, w: Any, b: Any) -> Any:
        return xs.cross_entropy(h @ w.T + b, t, **kw).sum()

    def fused(h: Any, w: Any, b: Any) -> Any:
        return xs.linear_cross_entropy(h, w, t, bias=b, chunk_size=chunks, **kw).sum()

    expected = "generic" if "weight" in kw else "jax.linear_vjp"
    assert xs.which("linear_cross_entropy", h, w, t, bias=b, **kw) == expected
    ref_value, ref_grads = jax.value_and_grad(full, argnums=(0, 1, 2))(h, w, b)
    value, grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))(h, w, b)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-6)
    for got, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


_SCAN_CASES = [
    *[("float32", 9, r, o) for r in REDUCTIONS for o in OPTIONS],
    *[("bfloat16", 9, r, {}) for r in REDUCTIONS],
    ("float32", 8, "mean", {"label_smoothing": 0.1}),  # no tail after the scan
]


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
@pytest.mark.parametrize(("dtype", "rows", "reduction", "options"), _SCAN_CASES)
def test_jax_scan_equals_the_loop(dtype: str, rows: int, reduction: str, options: dict) -> None:
    """The JAX entries run the chunks in a lax.scan where the call is traced and in the plain
    loop where it is eager (a scan compiled a program per eager call): the same numbers. In
    chunks of 4 rows: a first chunk, the scanned ones, a tail (9 rows) or none (8)."""
    import jax
    import jax.numpy as jnp

    h, w, b, t = (jnp.asarray(a) for a in _layer(np.random.default_rng(6), rows=rows))
    h, w, b = (a.astype(dtype) for a in (h, w, b))
    kw = _options(options, reduction, lambda a: jnp.asarray(a, dtype))

    def with_grad(h: Any, w: Any, b: Any) -> Any:
        return xs.linear_cross_entropy_with_grad(h, w, t, bias=b, chunk_size=4, **kw)

    assert xs.which("linear_cross_entropy_with_grad", h, w, t, bias=b, **kw) == "jax.linear_scan"
    assert " scan[" in str(jax.make_jaxpr(with_grad)(h, w, b))
    tol = 1e-6 if dtype == "float32" else 1e-2
    for traced, eager in zip(jax.jit(with_grad)(h, w, b), with_grad(h, w, b), strict=True):
        np.testing.assert_allclose(
            np.asarray(traced, np.float32), np.asarray(eager, np.float32), rtol=tol, atol=tol
        )


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
def test_jax_keeps_no_logits_for_backward() -> None:
    """No array of the full logits' shape in the differentiated program (the unfused one has
    them)."""
    import jax
    import jax.extend.core
    import jax.numpy as jnp

    h, w, b, t = (jnp.asarray(a, jnp.float32) for a in _layer(np.random.default_rng(6), rows=64))
    t = t.astype(jnp.int32)

    def shapes(fn: Any) -> set[tuple[int, ...]]:
        jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(h, w)
        found = set()

        def walk(j: Any) -> None:
            for eqn in j.eqns:
                for var in eqn.outvars:
                    found.add(tuple(getattr(var.aval, "shape", ())))
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    walk(sub)

        walk(jaxpr.jaxpr)
        return found

    logits = (64, 13)
    assert logits in shapes(lambda h, w: xs.cross_entropy(h @ w.T + b, t))
    for chunks in (16, (16, 8)):
        assert logits not in shapes(
            lambda h, w, c=chunks: xs.linear_cross_entropy(h, w, t, bias=b, chunk_size=c)
        )


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
def test_jax_weights_and_probabilities_take_the_generic_path() -> None:
    import jax
    import jax.numpy as jnp

    h, w, b, t = (jnp.asarray(a) for a in _layer(np.random.default_rng(7)))
    cw = jnp.linspace(0.5, 2.0, 13)
    assert xs.which("linear_cross_entropy", h, w, t, weight=cw) == "generic"
    g = jax.grad(lambda cw: xs.linear_cross_entropy(h, w, t, bias=b, weight=cw))(cw)
    ref = jax.grad(lambda cw: xs.cross_entropy(h @ w.T + b, t, weight=cw))(cw)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)
