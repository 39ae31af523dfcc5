"""``xpsoftmax.parallel`` inside ``jax.shard_map`` with the classes split over 8 devices: the
answers and gradients of the unsharded functions, on the edge cases, and collectives that
are all-reduces of per-row vectors (no all-gather), the backward pass needing none."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import xpsoftmax as xs

N, C = 7, 32
OPTIONS: list[dict[str, Any]] = [
    {},
    {"weight": True},
    {"reduction": "sum", "ignore_index": 3},
    {"reduction": "none", "label_smoothing": 0.2, "weight": True},
    {"label_smoothing": 0.1, "z_loss": 1e-2, "temperature": 0.5, "weight": True},
    {"temperature": 0.0, "reduction": "none"},
    {"temperature": float("inf"), "reduction": "sum"},
    {"temperature": 1e30, "z_loss": 1e-3},
]


def _mesh(kind: str) -> Any:
    assert len(jax.devices()) == 8
    axis_type = AxisType.Explicit if kind == "explicit" else AxisType.Auto
    return jax.make_mesh((8,), ("v",), axis_types=(axis_type,))


@pytest.fixture(scope="module", params=["explicit", "auto"])
def mesh(request: Any) -> Any:
    return _mesh(request.param)


#: Each option in float64 on an Explicit mesh (jax.make_mesh's default); two of them in the
#: 32- and 16-bit dtypes, and on an Auto mesh.
GRID = [("explicit", opts, "float64") for opts in OPTIONS] + [
    (mesh, OPTIONS[i], dtype)
    for i in (1, 4)
    for mesh, dtype in [("explicit", "float32"), ("explicit", "bfloat16"), ("auto", "float64")]
]


def _put(mesh: Any, a: Any, spec: Any) -> Any:
    return None if a is None else jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))


def _logits(rng: np.random.Generator, edges: bool) -> np.ndarray:
    z = rng.normal(size=(N, C)) * 3
    z[:, 20] += 30.0  # the maximum on one device
    if edges:
        z[1, :] = -np.inf  # every class masked
        z[2, 5] = np.inf
        z[3, 7] = np.nan
        z[4, :9] = -np.inf  # a device's whole slice masked
        z[5] *= 1e36  # overflows float32 once squared by the z-loss
    return z


def _ce_case(mesh: Any, kind: str, opts: dict, dtype: str, rng: np.random.Generator) -> tuple:
    kw = dict(opts)
    weight = rng.uniform(0.5, 2.0, C) if kw.pop("weight", False) else None
    if kind == "index":
        target: Any = rng.integers(0, C, N)
        target[0] = kw.get("ignore_index", -100)
        spec = P()
    else:
        target = rng.dirichlet(np.ones(C), size=N)
        target[:, 2] = 0.0  # exact zeros
        spec = P(None, "v")

    def local(z: Any, t: Any, w: Any) -> Any:
        return xs.parallel.cross_entropy(z, t, "v", weight=w, **kw)

    f = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(None, "v"), spec, None if weight is None else P("v")),
        out_specs=P(),
    )
    wt = None if weight is None else jnp.asarray(weight, dtype)

    def full(z: Any) -> Any:
        return xs.cross_entropy(z, jnp.asarray(target), weight=wt, **kw)

    def sharded(z: Any) -> Any:
        return f(z, _put(mesh, target, spec), _put(mesh, wt, P("v")))

    return full, sharded


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize(("mesh_kind", "opts", "dtype"), GRID, ids=str)
def test_cross_entropy_equals_the_unsharded(
    mesh_kind: str, kind: str, opts: dict, dtype: str
) -> None:
    mesh = _mesh(mesh_kind)
    rng = np.random.default_rng(0)
    full, sharded = _ce_case(mesh, kind, opts, dtype, rng)
    tol = {"float64": 1e-12, "float32": 2e-5, "bfloat16": 2e-5}[dtype]
    # Eager shard_map runs (and compiles) each operation on its own, about 10 s a call on 2
    # cores: the default options run eagerly, the others as one program (as training does).
    forward = sharded if not opts else jax.jit(sharded)
    for edges in (False, True):
        z = jnp.asarray(_logits(rng, edges), dtype)
        with jax.set_mesh(mesh):
            got = forward(_put(mesh, z, P(None, "v")))
        ref = full(z)
        assert got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, equal_nan=True)
    z = jnp.asarray(_logits(rng, False), dtype)
    with jax.set_mesh(mesh):
        g = jax.jit(jax.grad(lambda z: jnp.sum(sharded(z))))(_put(mesh, z, P(None, "v")))
    ref = jax.grad(lambda z: jnp.sum(full(z)))(z)
    assert g.dtype == ref.dtype
    gtol = 1e-2 if dtype == "bfloat16" else tol
    np.testing.assert_allclose(
        np.asarray(g, np.float64), np.asarray(ref, np.float64), rtol=gtol, atol=gtol
    )


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_equals_the_unsharded(mesh: Any, axis: int, keepdims: bool) -> None:
    rng = np.random.default_rng(1)
    z = _logits(rng, edges=True)
    if axis == 0:
        z = z.T.copy()
    spec = P(None, "v") if axis == -1 else P("v", None)
    f = jax.shard_map(
        lambda x: xs.parallel.logsumexp(x, "v", axis=axis, keepdims=keepdims),
        mesh=mesh,
        in_specs=spec,
        out_specs=P(),
    )
    with jax.set_mesh(mesh):
        got = f(_put(mesh, z, spec))
    ref = xs.logsumexp(jnp.asarray(z), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(got, ref, rtol=1e-12, equal_nan=True)
    finite = jnp.asarray(_logits(rng, edges=False) if axis == -1 else _logits(rng, False).T)
    with jax.set_mesh(mesh):
        g = jax.jit(jax.grad(lambda x: jnp.sum(f(x) ** 2)))(_put(mesh, finite, spec))
    ref_g = jax.grad(lambda x: jnp.sum(xs.logsumexp(x, axis=axis, keepdims=keepdims) ** 2))(finite)
    np.testing.assert_allclose(g, ref_g, rtol=1e-12, atol=1e-14)


def _collectives(text: str) -> dict[str, int]:
    names = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
    return {name: text.count(f" {name}(") + text.count(f" {name}-start(") for name in names}


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_only_all_reduces(mesh: Any, kind: str) -> None:
    """The compiled forward and backward programs gather nothing: all-reduces only."""
    rng = np.random.default_rng(2)
    opts = {"label_smoothing": 0.1, "z_loss": 1e-3, "weight": True}
    _, sharded = _ce_case(mesh, kind, opts, "float32", rng)
    z = _put(mesh, jnp.asarray(_logits(rng, False), jnp.float32), P(None, "v"))
    with jax.set_mesh(mesh):
        forward = jax.jit(sharded).lower(z).compile().as_text()
        both = jax.jit(jax.value_and_grad(sharded)).lower(z).compile().as_text()
    found, found_both = _collectives(forward), _collectives(both)
    assert found["all-reduce"] >= 2, found
    assert all(n == 0 for name, n in found.items() if name != "all-reduce"), found
    assert all(n == 0 for name, n in found_both.items() if name != "all-reduce"), found_both
    # The backward pass adds no collective of its own (the weights' psum is the forward's).
    assert found_both["all-reduce"] <= found["all-reduce"] + 1, (found, found_both)


def test_rows_sharded_too() -> None:
    """A (data, vocab) mesh: each device's rows, whole rows over the vocab axis."""
    mesh = jax.make_mesh((2, 4), ("d", "v"))
    rng = np.random.default_rng(3)
    z = rng.normal(size=(8, C))
    t = rng.integers(0, C, 8)
    f = jax.shard_map(
        lambda z, t: xs.parallel.cross_entropy(z, t, "v", reduction="none"),
        mesh=mesh,
        in_specs=(P("d", "v"), P("d")),
        out_specs=P("d"),
    )
    with jax.set_mesh(mesh):
        got = jax.jit(f)(_put(mesh, z, P("d", "v")), _put(mesh, t, P("d")))
    ref = xs.cross_entropy(jnp.asarray(z), jnp.asarray(t), reduction="none")
    np.testing.assert_allclose(got, ref, rtol=1e-12)
