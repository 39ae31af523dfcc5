"""Inputs are never modified, and outputs are new arrays of the input's library and device.

The contract: "Nothing is modified in place that the caller can see; inputs are never
overwritten", and every function "returns an array of the same library, on the same device,
never a NumPy scalar and never a host copy".

Every function runs on every backend, through the fast path (whatever serves the call) and
through the generic implementation (``xpsoftmax.force_generic()``), with edge-case inputs
(-inf rows, NaN, +inf, 16-bit dtypes, strided views, empty arrays); each input array (logits,
target, where, b, weight, temperature array) is snapshotted bit for bit before the call and
compared after it. NumPy inputs are also made read-only, so that a write raises at once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import array_api_compat
import numpy as np
import pytest

import xpsoftmax
from xpsoftmax.testing.backends import BY_ID, Backend

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")
INF, NAN = np.inf, np.nan

#: (4, 5): a plain row, an all -inf row, a row with NaN and -inf, a row with +inf.
EDGE = np.array(
    [
        [0.5, -1.25, 3.0, 2.0, -0.75],
        [-INF, -INF, -INF, -INF, -INF],
        [1.0, NAN, -INF, 0.0, 2.5],
        [INF, 1.0, -2.0, -INF, 0.25],
    ]
)
PLAIN = np.array(
    [
        [0.5, -1.25, 3.0, 2.0, -0.75],
        [1.5, 0.25, -3.0, 0.0, 1.0],
        [1.0, 4.0, -1.0, 0.0, 2.5],
        [-2.0, 1.0, -2.0, 0.5, 0.25],
    ]
)


def numpy_inputs(variant: str) -> dict[str, np.ndarray]:
    """Every input of every call, as NumPy data; ``*0`` for the class axis 0."""
    x = {"edge": EDGE, "plain": PLAIN, "strided": EDGE, "grad": PLAIN, "empty": EDGE[:0]}[variant]
    n, c = x.shape
    probs = np.array(
        [
            [0.2, 0.0, 0.5, 0.3, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [0.25, 0.25, 0.0, 0.25, 0.25],
            [0.1, 0.2, 0.3, 0.4, 0.0],
        ]
    )[:n]
    return {
        "x": x,
        "target": np.array([1, 0, -100, 4])[:n],
        "target0": np.array([0, 3, 2, -100, 1]) if n else np.full(5, -100),
        "target_ignore0": np.array([1, 0, 0, 4])[:n],
        "probs": probs,
        "probs0": probs / np.maximum(probs.sum(axis=0, keepdims=True), 1e-300),
        "weight": np.linspace(0.5, 2.0, c),
        "weight0": np.linspace(0.5, 2.0, n),
        "temperature": np.array([[1.0], [0.5], [0.0], [INF]])[:n],
        "temperature0": np.array([[1.0, 2.0, 0.0, INF, 0.5]]),
        "where": np.array(
            [
                [True, False, True, True, False],
                [False, False, False, False, False],
                [True, True, False, True, True],
                [True, True, True, False, True],
            ]
        )[:n],
        "where_row": np.array([True, False, True, True, True]),
        "b": np.array(
            [
                [1.0, 0.0, 2.0, -1.0, 0.5],
                [1.0, 1.0, 0.0, 1.0, 1.0],
                [0.0, 1.0, 3.0, 1.0, -0.5],
                [2.0, 0.0, 1.0, 0.0, 1.0],
            ]
        )[:n],
    }


def backend_inputs(b: Backend, dtype: str, variant: str) -> dict[str, Any]:
    data = numpy_inputs(variant)
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "x" or name.startswith("probs"):
            out[name] = b.asarray(value, dtype)
        elif name.startswith("target"):
            out[name] = b.asarray(value, "int64")
        else:
            out[name] = b.asarray(value)
    if variant == "strided":  # a transposed view of a contiguous array
        xp = b.xp
        out["x"] = xp.permute_dims(b.asarray(np.ascontiguousarray(data["x"].T), dtype), (1, 0))
    if variant == "grad":
        out["x"] = out["x"].requires_grad_(True)
    if b.library == "numpy":
        for value in out.values():
            value.flags.writeable = False
    return out


Spec = tuple[str, tuple[Any, ...], dict[str, Any]]


def calls(op: str, a: dict[str, Any]) -> list[Spec]:
    """(label, args, kwargs) of the calls of ``op`` on the inputs ``a``."""
    x = a["x"]
    if op in ("softmax", "log_softmax"):
        return [
            ("default", (x,), {}),
            ("axis0", (x,), {"axis": 0}),
            ("axisNone", (x,), {"axis": None}),
            ("axes", (x,), {"axis": (0, 1)}),
            ("T2", (x,), {"temperature": 2.0}),
            ("T0", (x,), {"temperature": 0.0}),
            ("Tinf", (x,), {"temperature": INF}),
            ("Tarray", (x,), {"temperature": a["temperature"]}),
            ("Tarray-axis0", (x,), {"axis": 0, "temperature": a["temperature0"]}),
            ("where", (x,), {"where": a["where"]}),
            ("where-T", (x,), {"where": a["where_row"], "temperature": a["temperature"]}),
        ]
    if op == "logsumexp":
        return [
            ("default", (x,), {}),
            ("axis-1", (x,), {"axis": -1}),
            ("axis0-keep", (x,), {"axis": 0, "keepdims": True}),
            ("b", (x,), {"axis": -1, "b": a["b"]}),
            ("b-sign", (x,), {"axis": -1, "b": a["b"], "return_sign": True}),
            ("sign", (x,), {"axis": 1, "return_sign": True}),
            ("where", (x,), {"axis": -1, "where": a["where"]}),
            ("b-where", (x,), {"b": a["b"], "where": a["where_row"], "keepdims": True}),
        ]
    t, p = a["target"], a["probs"]
    specs: list[Spec] = [
        ("index", (x, t), {}),
        ("index-none", (x, t), {"reduction": "none"}),
        ("index-sum", (x, t), {"reduction": "sum"}),
        ("index-weight", (x, t), {"weight": a["weight"]}),
        (
            "index-all",
            (x, t),
            {
                "weight": a["weight"],
                "label_smoothing": 0.1,
                "z_loss": 1e-3,
                "temperature": 2.0,
                "reduction": "sum",
            },
        ),
        ("index-ignore0", (x, a["target_ignore0"]), {"ignore_index": 0, "reduction": "none"}),
        ("index-Tarray", (x, t), {"temperature": a["temperature"]}),
        ("index-axis0", (x, a["target0"]), {"axis": 0, "weight": a["weight0"]}),
        ("probs", (x, p), {}),
        (
            "probs-all",
            (x, p),
            {
                "weight": a["weight"],
                "label_smoothing": 0.2,
                "z_loss": 1e-2,
                "temperature": a["temperature"],
                "reduction": "none",
            },
        ),
        ("probs-sum", (x, p), {"reduction": "sum"}),
        ("probs-axis0", (x, a["probs0"]), {"axis": 0, "temperature": a["temperature0"]}),
    ]
    return specs


# --- snapshots ------------------------------------------------------------------------------


def snapshot(a: Any) -> tuple[Any, ...]:
    """Everything about an array a call could change: dtype, shape, layout, bits."""
    c = array_api_compat
    if c.is_torch_array(a):
        import torch

        t = a.detach()
        flat = t.cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return (
            "torch",
            t.dtype,
            tuple(t.shape),
            t.stride(),
            str(t.device),
            a._version,
            a.requires_grad,
            a.grad is None,
            raw,
        )
    if c.is_dask_array(a):
        v = np.asarray(a.compute())
        return ("dask", str(a.dtype), a.shape, a.chunks, v.dtype.str, v.tobytes())
    if c.is_jax_array(a):
        v = np.asarray(a)
        return ("jax", str(a.dtype), a.shape, v.tobytes())
    if c.is_numpy_array(a):
        return ("numpy", a.dtype.str, a.shape, a.strides, a.flags.writeable, a.tobytes())
    if c.is_cupy_array(a):
        v = a.get()  # NumPy cannot import device memory through DLPack
        return ("cupy", a.dtype.str, a.shape, a.strides, v.tobytes())
    v = np.from_dlpack(a)
    return (type(a).__module__, str(a.dtype), tuple(a.shape), v.tobytes())


def materialize(b: Backend, out: Any) -> list[Any]:
    """The output arrays, evaluated (Dask computes here, so that a lazy write would show)."""
    outs = list(out) if isinstance(out, tuple) else [out]
    for o in outs:
        b.to_numpy(o)
    return outs


def output_problems(b: Backend, outs: list[Any], x: Any, arrays: list[Any]) -> list[str]:
    problems = []
    xp_in = array_api_compat.array_namespace(x)
    for i, o in enumerate(outs):
        if isinstance(o, np.generic) or not array_api_compat.is_array_api_obj(o):
            problems.append(
                f"output {i} is a {type(o).__module__}.{type(o).__name__}, not an array"
            )
            continue
        if array_api_compat.array_namespace(o) is not xp_in:
            problems.append(f"output {i} is of another library: {type(o)}")
            continue
        if array_api_compat.device(o) != array_api_compat.device(x):
            problems.append(
                f"output {i} is on {array_api_compat.device(o)}, not on the input's device"
            )
        if b.library == "numpy":
            if type(o) is not np.ndarray:
                problems.append(f"output {i} is a {type(o)}, not a numpy.ndarray")
            for a in arrays:
                if isinstance(a, np.ndarray) and np.shares_memory(o, a):
                    problems.append(f"output {i} shares memory with an input")
    return problems


def run_case(
    b: Backend, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], generic: bool
) -> tuple[str, list[str]]:
    arrays = [v for v in (*args, *kwargs.values()) if array_api_compat.is_array_api_obj(v)]
    before = [snapshot(v) for v in arrays]
    ctx = xpsoftmax.force_generic() if generic else contextlib.nullcontext()
    with ctx:
        served = xpsoftmax.which(op, *args, **kwargs)
        out = getattr(xpsoftmax, op)(*args, **kwargs)
    outs = materialize(b, out)
    problems = output_problems(b, outs, args[0], arrays)
    after = [snapshot(v) for v in arrays]
    for i, (s0, s1) in enumerate(zip(before, after)):
        if s0 != s1:
            problems.append(f"input {i} ({type(arrays[i]).__name__}) was modified")
    return served, problems


# --- the tests ------------------------------------------------------------------------------


VARIANTS = ("edge", "strided", "empty", "grad")

#: Dask computes lazily, outside the library's floating-point error state: its NaN/inf warnings
#: about edge-case inputs are expected.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("op", OPS)
def test_inputs_unchanged_and_outputs_new(backend: Backend, op: str, generic: bool) -> None:
    if not generic and not backend.fast_paths(op):
        pytest.skip(f"no fast path for {op} on {backend.id}: the generic run covers it")
    failures: list[str] = []
    served: set[str] = set()
    n_calls = 0
    for dtype in backend.dtypes:
        for variant in VARIANTS:
            if variant == "grad" and backend.library != "torch":
                continue
            if variant in ("strided", "empty") and dtype != "float32":
                continue  # every dtype runs the edge cases; layouts and empties once
            inputs = backend_inputs(backend, dtype, variant)
            for label, args, kwargs in calls(op, inputs):
                name = f"{dtype}/{variant}/{label}"
                try:
                    impl, problems = run_case(backend, op, args, kwargs, generic)
                except Exception as exc:  # a crash on valid input is a failure too
                    failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
                    continue
                n_calls += 1
                served.add(impl)
                failures.extend(f"{name} [{impl}]: {p}" for p in problems)
    assert not failures, "\n".join(failures)
    assert n_calls > 0
    if generic:
        assert served == {"generic"}, served
    else:
        assert served - {"generic"}, f"no fast path served {op} on {backend.id}: {served}"


FUSED_OPTIONS = [
    pytest.param({}, id="mean"),
    pytest.param({"reduction": "none"}, id="none"),
    pytest.param({"reduction": "sum", "label_smoothing": 0.1}, id="sum-ls"),
    pytest.param(
        {"weight": np.array([1.0, 0.5, 2.0, 1.0, 3.0]), "z_loss": 1e-3, "temperature": 0.5},
        id="weight-z-T",
    ),
]


@pytest.mark.parametrize("options", FUSED_OPTIONS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("data", [PLAIN, EDGE], ids=["plain", "edge"])
@pytest.mark.parametrize("impl", ["numpy.fused", "numpy.compiled"])
def test_numpy_fused_gradient_does_not_alias(
    data: np.ndarray, dtype: str, options: dict[str, Any], impl: str
) -> None:
    """The NumPy fast paths build the gradient in a reused buffer (the ufunc path) or write
    it from a kernel (the compiled one): it must be a new array, not the logits, and not
    shared between calls."""
    x = data.astype(dtype)
    t = np.array([1, 0, -100, 4])
    x_before, t_before = x.copy(), t.copy()
    w = options.get("weight")
    w_before = None if w is None else w.copy()
    with xpsoftmax.use(impl):
        if xpsoftmax.which("cross_entropy_with_grad", x, t, **options) != impl:
            pytest.skip(f"{impl} does not serve {dtype} here")
        loss, grad = xpsoftmax.cross_entropy_with_grad(x, t, **options)
        loss2, grad2 = xpsoftmax.cross_entropy_with_grad(x, t, **options)
    for inp in (x, t) if w is None else (x, t, w):
        for out in (loss, grad, loss2, grad2):
            assert not np.shares_memory(out, inp)
    assert not np.shares_memory(grad, grad2)
    assert not np.shares_memory(loss, grad)
    assert type(loss) is np.ndarray and type(grad) is np.ndarray
    assert grad.shape == x.shape and grad.dtype == x.dtype
    np.testing.assert_array_equal(grad, grad2)
    # writing into the results leaves the inputs (and the other call's results) alone
    grad[...] = 123
    loss[...] = 123
    assert x.tobytes() == x_before.tobytes()
    assert t.tobytes() == t_before.tobytes()
    if w is not None:
        assert w.tobytes() == w_before.tobytes()
    assert not (grad2 == 123).any()
    # and a later call is not affected by what was written into an earlier result
    with xpsoftmax.use(impl):
        _, grad3 = xpsoftmax.cross_entropy_with_grad(x, t, **options)
    np.testing.assert_array_equal(grad3, grad2)


@pytest.mark.parametrize("op", OPS)
def test_numpy_results_are_writeable_new_arrays(op: str) -> None:
    """A caller may write into a NumPy result without touching the input."""
    x = PLAIN.copy()
    args: tuple[Any, ...] = (x, np.array([1, 0, 2, 4])) if op.startswith("cross") else (x,)
    for generic in (False, True):
        ctx = xpsoftmax.force_generic() if generic else contextlib.nullcontext()
        with ctx:
            out = getattr(xpsoftmax, op)(*args, **({"axis": -1} if op == "logsumexp" else {}))
        for o in out if isinstance(out, tuple) else (out,):
            assert type(o) is np.ndarray
            assert o.flags.writeable
            o[...] = 7.0
        np.testing.assert_array_equal(x, PLAIN)


def test_torch_input_requires_grad_untouched() -> None:
    """Autograd inputs: no in-place op (version counter), no .grad written, and the results
    are differentiable tensors of their own."""
    b = BY_ID["torch:cpu"]
    if b.probe() is not None:
        pytest.skip(b.probe())
    import torch

    x = torch.tensor(PLAIN, requires_grad=True)
    t = torch.tensor([1, 0, 2, 4])
    version = x._version
    outs = [
        xpsoftmax.softmax(x),
        xpsoftmax.log_softmax(x, temperature=2.0),
        xpsoftmax.logsumexp(x, axis=-1),
        xpsoftmax.cross_entropy(x, t),
        xpsoftmax.cross_entropy_with_grad(x, t)[0],
    ]
    assert x._version == version and x.grad is None
    for o in outs:
        assert o.data_ptr() != x.data_ptr()
    assert torch.equal(x.detach(), torch.tensor(PLAIN))
