"""The ordinary functions on arrays sharded over 8 devices along the classes (global view,
no ``shard_map``), on Explicit meshes (``jax.make_mesh``'s default) and Auto ones: the
answers and gradients of unsharded arrays, and compiled programs whose only collectives
are all-reduces of per-row vectors or scalars (no logits gathered)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import xpsoftmax as xs

N, C = 7, 32
SHARDED = P(None, "v")


@pytest.fixture(scope="module", params=["explicit", "auto"])
def mesh(request: Any) -> Any:
    axis_type = AxisType.Explicit if request.param == "explicit" else AxisType.Auto
    return jax.make_mesh((8,), ("v",), axis_types=(axis_type,))


def _put(mesh: Any, a: Any, spec: Any = SHARDED) -> Any:
    return jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))


def _logits(seed: int, edges: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, C)) * 3
    z[:, 20] += 30.0  # the maximum on one device
    if edges:
        z[1, :] = -np.inf
        z[2, 5] = np.inf
        z[3, 7] = np.nan
        z[4, :9] = -np.inf  # a device's whole slice masked
    return z


def _targets(seed: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    if kind == "probs":
        y = rng.dirichlet(np.ones(C), size=N)
        y[:, 2] = 0.0
        return y
    t = rng.integers(0, C, N)
    t[0] = -100
    return t


CE_OPTIONS: list[dict[str, Any]] = [
    {},
    {"reduction": "none", "label_smoothing": 0.2, "weight": True},
    {"reduction": "sum", "z_loss": 1e-3, "temperature": 0.5, "weight": True},
]


def _functions(kind: str, opts: dict[str, Any], t: Any, w: Any) -> dict[str, Callable[..., Any]]:
    kw = {k: v for k, v in opts.items() if k != "weight"}
    if opts.get("weight"):
        kw["weight"] = w

    def ce(z: Any) -> Any:
        return xs.cross_entropy(z, t, **kw)

    return {
        "cross_entropy": ce,
        "with_grad": lambda z: xs.cross_entropy_with_grad(z, t, **kw),
        "grad": jax.grad(lambda z: jnp.sum(ce(z))),
    }


def _collectives(text: str) -> dict[str, list[str]]:
    """The result types of each kind of collective in a compiled HLO module."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.search(
            r"= (.*?) (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(",
            line,
        )
        if m:
            found.setdefault(m.group(2), []).append(m.group(1))
    return found


def _assert_row_collectives(f: Callable[..., Any], *args: Any) -> None:
    text = jax.jit(f).lower(*args).compile().as_text()
    found = _collectives(text)
    assert set(found) <= {"all-reduce"}, {k: v for k, v in found.items() if k != "all-reduce"}
    for result in found.get("all-reduce", []):
        for dims in re.findall(r"\[([\d,]*)\]", result):
            size = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            assert size <= N, f"an all-reduce of {result}: more than a per-row vector"


def _close(got: Any, want: Any, tol: float = 1e-12) -> None:
    for g, w in zip(
        got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
    ):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_normalizations(mesh: Any, op: str) -> None:
    z = _logits(0)
    fn = getattr(xs, op)
    f = (lambda x: fn(x, axis=-1)) if op == "logsumexp" else (lambda x: fn(x, temperature=0.5))
    zs = _put(mesh, z)
    with jax.set_mesh(mesh):
        _close(jax.jit(f)(zs), f(jnp.asarray(z)))
        _assert_row_collectives(f, zs)
        g = jax.grad(lambda x: jnp.sum(jnp.where(jnp.isfinite(f(x)), f(x), 0.0) ** 2))
        finite = _put(mesh, _logits(1, edges=False))
        _close(jax.jit(g)(finite), g(jnp.asarray(_logits(1, edges=False))), 1e-10)
        _assert_row_collectives(g, finite)


@pytest.mark.parametrize("opts", CE_OPTIONS, ids=str)
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_cross_entropy(mesh: Any, kind: str, opts: dict[str, Any]) -> None:
    z = _logits(2)
    t = _targets(2, kind)
    w = np.random.default_rng(3).uniform(0.5, 2.0, C)
    t_spec = P() if kind == "index" else SHARDED
    with jax.set_mesh(mesh):
        sharded = _functions(kind, opts, _put(mesh, t, t_spec), _put(mesh, w, P("v")))
        plain = _functions(kind, opts, jnp.asarray(t), jnp.asarray(w))
        zs = _put(mesh, z)
        for name, f in sharded.items():
            _close(jax.jit(f)(zs), plain[name](jnp.asarray(z)))
            _assert_row_collectives(f, zs)
