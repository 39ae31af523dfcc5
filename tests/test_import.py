"""Importing, the public API, and the generic path on array-api-strict.

* ``import xpsoftmax`` imports no array library (the package docstring and the registry
  promise that a backend is imported only when an array of its library reaches a function);
* the public API named in ``xpsoftmax.__all__`` exists and ``py.typed`` ships;
* the generic implementation runs unchanged on array-api-strict, which rejects everything the
  standard does not define: every function, every option, index and probability targets.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax.testing import reference
from xpsoftmax.testing.backends import BY_ID

ARRAY_LIBRARIES = ("numpy", "torch", "jax", "jaxlib", "cupy", "dask", "array_api_strict", "scipy")


def run_python(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_loads_no_array_library() -> None:
    found = run_python(
        f"""
        import json, sys
        import xpsoftmax
        libraries = {ARRAY_LIBRARIES!r}
        print(json.dumps({{
            "libraries": sorted(m for m in sys.modules if m.split(".")[0] in libraries),
            "backends": sorted(m for m in sys.modules if m.startswith("xpsoftmax.backends.")),
        }}))
        """
    )
    assert found["libraries"] == [], found
    assert found["backends"] == [], found


def test_import_after_torch_loads_its_backend() -> None:
    """After torch, ``import xpsoftmax`` loads the torch backend (``Library.load_early``: a
    first call inside torch.compile cannot import it) and imports no other library."""
    if BY_ID["torch:cpu"].probe() is not None:
        pytest.skip("torch is not installed")
    found = run_python(
        f"""
        import json, sys
        import torch
        before = set(sys.modules)
        import xpsoftmax
        libraries = {ARRAY_LIBRARIES!r}
        print(json.dumps({{
            "libraries": sorted(m for m in set(sys.modules) - before
                                if m.split(".")[0] in libraries and m.split(".")[0] != "torch"),
            "backends": sorted(m for m in sys.modules if m.startswith("xpsoftmax.backends.")),
        }}))
        """
    )
    assert found["libraries"] == [], found
    assert "xpsoftmax.backends.torch.native" in found["backends"], found
    assert not any(m.startswith(("xpsoftmax.backends.numpy", "xpsoftmax.backends.jax"))
                   for m in found["backends"]), found  # fmt: skip


def test_public_names_load_no_array_library() -> None:
    """Touching every public name (not calling it) imports no array library either."""
    found = run_python(
        f"""
        import json, sys
        import xpsoftmax
        for name in xpsoftmax.__all__:
            getattr(xpsoftmax, name)
        with xpsoftmax.force_generic():
            forced = xpsoftmax.generic_forced()
        libraries = {ARRAY_LIBRARIES!r}
        print(json.dumps({{
            "forced": forced,
            "libraries": sorted(m for m in sys.modules if m.split(".")[0] in libraries),
        }}))
        """
    )
    assert found == {"forced": True, "libraries": []}, found


def test_numpy_call_imports_only_the_numpy_backend() -> None:
    found = run_python(
        """
        import json, sys
        import numpy as np
        import xpsoftmax
        x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
        xpsoftmax.softmax(x)
        xpsoftmax.log_softmax(x, where=np.array([True, False, True]))
        xpsoftmax.logsumexp(x, axis=-1)
        xpsoftmax.cross_entropy_with_grad(x, np.array([0, 2]))
        xpsoftmax.cross_entropy(x, np.full((2, 3), 1 / 3))
        print(json.dumps(sorted(
            m for m in sys.modules
            if m.split(".")[0]
            in ("torch", "jax", "jaxlib", "cupy", "dask", "array_api_strict", "numba")
            or m.startswith("xpsoftmax.backends.")
        )))
        """
    )
    # numba too is imported only when a compiled kernel first runs (float32 here: none).
    assert found == [
        "xpsoftmax.backends.numpy",
        "xpsoftmax.backends.numpy.blocks",
        "xpsoftmax.backends.numpy.compiled",
        "xpsoftmax.backends.numpy.linear",
    ], found


def test_array_api_strict_call_imports_no_backend() -> None:
    """array-api-strict has no fast path: only the generic implementation is used."""
    if BY_ID["array_api_strict"].probe() is not None:
        pytest.skip("array_api_strict is not installed")
    found = run_python(
        """
        import json, sys
        import array_api_strict as xp
        import xpsoftmax
        x = xp.asarray([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
        xpsoftmax.softmax(x)
        xpsoftmax.cross_entropy(x, xp.asarray([0, 2]))
        print(json.dumps(sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("torch", "jax", "jaxlib", "cupy", "dask")
            or m.startswith("xpsoftmax.backends.")
        )))
        """
    )
    assert found == [], found


#: The public API the contract names (CONTRACT.md: Signatures, Fast paths).
CONTRACT_NAMES = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "force_generic",
    "implementations",
)


def test_public_api_exists() -> None:
    names = xpsoftmax.__all__
    assert len(set(names)) == len(names), "duplicates in __all__"
    missing = [n for n in names if not hasattr(xpsoftmax, n)]
    assert missing == []
    for name in CONTRACT_NAMES:
        assert name in names, name
        assert callable(getattr(xpsoftmax, name)), name
    assert isinstance(xpsoftmax.__version__, str) and xpsoftmax.__version__
    # every public function has a docstring with its parameters
    for name in CONTRACT_NAMES[:7]:
        doc = getattr(xpsoftmax, name).__doc__
        assert doc, name
        assert "Parameters" in doc or "same arguments" in doc, name


def test_star_import_matches_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from xpsoftmax import *", namespace)
    exported = {k for k in namespace if k != "__builtins__"}
    assert exported == set(xpsoftmax.__all__)


def test_py_typed_ships() -> None:
    marker = importlib.resources.files("xpsoftmax").joinpath("py.typed")
    assert marker.is_file()


# --- the generic path on array-api-strict ---------------------------------------------------

X = np.array(
    [
        [0.5, -1.25, 3.0, 2.0, -0.75],
        [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
        [1.0, 4.0, -np.inf, 0.0, 2.5],
        [-2.0, 1.0, -2.0, 0.5, 0.25],
    ]
)
WHERE = np.array(
    [
        [True, False, True, True, False],
        [True, True, True, True, True],
        [False, False, False, False, False],
        [True, True, True, False, True],
    ]
)
B = np.array(
    [
        [1.0, 0.0, 2.0, -1.0, 0.5],
        [1.0, 1.0, 0.0, 1.0, 1.0],
        [0.0, 1.0, 3.0, 1.0, 0.5],
        [2.0, 0.0, 1.0, -4.0, 1.0],
    ]
)
T_COLUMN = np.array([[1.0], [0.5], [0.0], [np.inf]])
PROBS = np.array(
    [
        [0.2, 0.0, 0.5, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.25, 0.25, 0.0, 0.25, 0.25],
        [0.1, 0.2, 0.3, 0.4, 0.0],
    ]
)
WEIGHT = np.array([1.0, 0.5, 2.0, 1.5, 3.0])


@pytest.fixture
def strict() -> Any:
    """array-api-strict with its strictest flags: no boolean indexing, no data-dependent
    shapes (the generic path must not need them)."""
    if BY_ID["array_api_strict"].probe() is not None:
        pytest.skip("array_api_strict is not installed")
    import array_api_strict

    with array_api_strict.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False):
        yield array_api_strict


def to_np(a: Any) -> np.ndarray:
    return np.from_dlpack(a)


def _is_strict(xp: Any, a: Any) -> bool:
    return type(a).__module__.startswith("array_api_strict")


def check_strict(xp: Any, out: Any, dtype: Any) -> None:
    for o in out if isinstance(out, tuple) else (out,):
        assert _is_strict(xp, o), type(o)
        assert o.dtype == dtype


NORMALIZATION_CASES = [
    pytest.param({}, id="default"),
    pytest.param({"axis": 0}, id="axis0"),
    pytest.param({"axis": None}, id="axisNone"),
    pytest.param({"temperature": 2.0}, id="T2"),
    pytest.param({"temperature": 0.0}, id="T0"),
    pytest.param({"temperature": math.inf}, id="Tinf"),
    pytest.param({"where": WHERE}, id="where"),
]


@pytest.mark.parametrize("options", NORMALIZATION_CASES)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_strict_normalizations(strict: Any, op: str, options: dict[str, Any]) -> None:
    xp = strict
    kwargs = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    assert xpsoftmax.which(op, xp.asarray(X), **kwargs) == "generic"
    out = getattr(xpsoftmax, op)(xp.asarray(X), **kwargs)
    check_strict(xp, out, xp.float64)
    ref = getattr(reference, op)(
        X, options.get("axis", -1), options.get("temperature", 1.0), options.get("where")
    )
    np.testing.assert_allclose(to_np(out), ref, rtol=1e-12, atol=1e-15)


def test_strict_normalization_temperature_array(strict: Any) -> None:
    xp = strict
    for op in ("softmax", "log_softmax"):
        out = to_np(getattr(xpsoftmax, op)(xp.asarray(X), temperature=xp.asarray(T_COLUMN)))
        for i, t in enumerate(T_COLUMN[:, 0]):
            ref = getattr(reference, op)(X[i], -1, t)
            np.testing.assert_allclose(out[i], ref, rtol=1e-12, atol=1e-15)


LSE_CASES = [
    pytest.param({}, id="all"),
    pytest.param({"axis": -1}, id="axis-1"),
    pytest.param({"axis": 0, "keepdims": True}, id="axis0-keep"),
    pytest.param({"axis": -1, "b": B}, id="b"),
    pytest.param({"axis": -1, "where": WHERE}, id="where"),
]


@pytest.mark.parametrize("options", LSE_CASES)
def test_strict_logsumexp(strict: Any, options: dict[str, Any]) -> None:
    xp = strict
    kwargs = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    out = xpsoftmax.logsumexp(xp.asarray(X), **kwargs)
    check_strict(xp, out, xp.float64)
    b = options.get("b")
    if "where" in options:
        b = options["where"].astype(float)
    with np.errstate(all="ignore"):
        ref = reference.logsumexp(X, options.get("axis"), options.get("keepdims", False), b)
    np.testing.assert_allclose(to_np(out), ref, rtol=1e-12)


def test_strict_logsumexp_return_sign(strict: Any) -> None:
    xp = strict
    lse, sign = xpsoftmax.logsumexp(xp.asarray(X), axis=-1, b=xp.asarray(B), return_sign=True)
    check_strict(xp, (lse, sign), xp.float64)
    with np.errstate(all="ignore"):
        s = np.sum(np.where(B == 0, 0.0, B * np.exp(X)), axis=-1)
    np.testing.assert_allclose(to_np(sign), np.sign(s))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(to_np(lse), np.log(np.abs(s)), rtol=1e-12)


def _ce_reference(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    smoothing: float,
    reduction: str,
    valid: np.ndarray | None = None,
    index_w: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """Loss and gradient from the definitions (rows of x finite), in float64: y is a dense
    target (one-hot for indices); the mean divides by the target weights (indices) or the
    number of entries (probabilities)."""
    n, c = x.shape
    w = np.ones(c) if weight is None else weight
    ys = y * (1 - smoothing) + smoothing / c
    if valid is not None:
        ys = np.where(valid[:, None], ys, 0.0)
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    per = -(w * ys * logp).sum(axis=1)
    grad = (w * ys).sum(axis=1, keepdims=True) * p - w * ys
    if reduction == "none":
        return per, grad
    if reduction == "sum":
        return per.sum(), grad
    den = float(index_w.sum()) if index_w is not None else float(n)
    return per.sum() / den, grad / den


XF = np.array(
    [
        [0.5, -1.25, 3.0, 2.0, -0.75],
        [1.5, 0.25, -3.0, 0.0, 1.0],
        [1.0, 4.0, -1.0, 0.0, 2.5],
        [-2.0, 1.0, -2.0, 0.5, 0.25],
    ]
)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=["ls0", "ls0.2"])
@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_with_grad"])
def test_strict_cross_entropy_index(
    strict: Any, op: str, smoothing: float, weighted: bool, reduction: str
) -> None:
    xp = strict
    t = np.array([2, -100, 0, 4])
    valid = t != -100
    onehot = np.eye(5)[np.where(valid, t, 0)]
    weight = WEIGHT if weighted else None
    index_w = np.where(valid, (WEIGHT if weighted else np.ones(5))[np.where(valid, t, 0)], 0.0)
    kwargs: dict[str, Any] = {"label_smoothing": smoothing, "reduction": reduction}
    if weighted:
        kwargs["weight"] = xp.asarray(WEIGHT)
    logits, target = xp.asarray(XF), xp.asarray(t)
    assert xpsoftmax.which(op, logits, target, **kwargs) == "generic"
    out = getattr(xpsoftmax, op)(logits, target, **kwargs)
    check_strict(xp, out, xp.float64)
    ref_loss, ref_grad = _ce_reference(XF, onehot, weight, smoothing, reduction, valid, index_w)
    loss = out[0] if isinstance(out, tuple) else out
    np.testing.assert_allclose(to_np(loss), ref_loss, rtol=1e-12)
    if isinstance(out, tuple):
        np.testing.assert_allclose(to_np(out[1]), ref_grad, rtol=1e-10, atol=1e-15)
    # and the same numbers as NumPy (whatever serves NumPy: the fused fast path)
    np_kwargs = {**kwargs, "weight": weight}
    np_out = getattr(xpsoftmax, op)(XF, t, **np_kwargs)
    np.testing.assert_allclose(
        to_np(loss), np_out[0] if isinstance(np_out, tuple) else np_out, rtol=1e-12
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_with_grad"])
def test_strict_cross_entropy_probs(strict: Any, op: str, reduction: str) -> None:
    xp = strict
    y = PROBS
    logits, target = xp.asarray(XF), xp.asarray(y)
    out = getattr(xpsoftmax, op)(
        logits, target, reduction=reduction, weight=xp.asarray(WEIGHT), label_smoothing=0.1
    )
    check_strict(xp, out, xp.float64)
    ref_loss, ref_grad = _ce_reference(XF, y, WEIGHT, 0.1, reduction)
    loss = out[0] if isinstance(out, tuple) else out
    np.testing.assert_allclose(to_np(loss), ref_loss, rtol=1e-12)
    if isinstance(out, tuple):
        np.testing.assert_allclose(to_np(out[1]), ref_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("target_kind", ["index", "probs"])
@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_with_grad"])
def test_strict_cross_entropy_every_option(strict: Any, op: str, target_kind: str) -> None:
    """Every option at once, class axis 0, a temperature array with the limits, z-loss,
    edge rows: runs on array-api-strict and agrees with NumPy's generic path."""
    xp = strict
    x = X.T.copy()  # (5, 4): classes on axis 0, one column all -inf
    if target_kind == "index":
        t = np.array([3, 2, -1, 4])
    else:
        t = PROBS.T.copy()
    kwargs_np = dict(
        axis=0,
        weight=np.linspace(0.5, 2.0, 5),
        ignore_index=-1,
        reduction="sum",
        label_smoothing=0.05,
        temperature=np.array([[2.0, 1.0, 0.0, np.inf]]),
        z_loss=1e-3,
    )
    kwargs = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs_np.items()}
    out = getattr(xpsoftmax, op)(xp.asarray(x), xp.asarray(t), **kwargs)
    check_strict(xp, out, xp.float64)
    with xpsoftmax.force_generic():
        expected = getattr(xpsoftmax, op)(x, t, **kwargs_np)
    outs = out if isinstance(out, tuple) else (out,)
    exps = expected if isinstance(expected, tuple) else (expected,)
    for o, e in zip(outs, exps):
        np.testing.assert_allclose(to_np(o), np.asarray(e), rtol=1e-12)


def test_strict_dtypes(strict: Any) -> None:
    """float32 in, float32 out; integer and boolean input promoted to the default float."""
    xp = strict
    x32 = xp.asarray(XF, dtype=xp.float32)
    for op in ("softmax", "log_softmax", "logsumexp"):
        assert getattr(xpsoftmax, op)(x32).dtype == xp.float32
    loss, grad = xpsoftmax.cross_entropy_with_grad(x32, xp.asarray([0, 1, 2, 3], dtype=xp.int32))
    assert loss.dtype == xp.float32 and grad.dtype == xp.float32
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    assert xpsoftmax.softmax(xp.asarray([[1, 2], [3, 4]])).dtype == default
    assert xpsoftmax.logsumexp(xp.asarray([True, False])).dtype == default
