"""The compiled CPU kernels (``numpy.compiled``, numba): their exponential's accuracy, the
conformance kit on every entry, the same bits for any thread count, and the NumPy paths
serving when numba is absent."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import xpsoftmax as xs
from xpsoftmax.testing import BY_ID, check_implementation
from xpsoftmax.testing.conformance import through_entry

pytest.importorskip("numba")
compiled = pytest.importorskip("xpsoftmax.backends.numpy.compiled")

ENTRIES = [e for e in xs.fast_paths(library="numpy") if e.name == "numpy.compiled"]
try:
    import torch
except ImportError:  # pragma: no cover - torch is a test dependency
    torch = None
TORCH_ENTRIES = (
    []
    if torch is None
    else [e for e in xs.fast_paths(library="torch") if e.name == "torch.compiled"]
)


def _ulps(x: np.ndarray) -> np.ndarray:
    """The kernel's e**x against float64's, in units of the float32 result's last place."""
    got = compiled.exp32(x).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    return np.abs(got - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)


def _negative_floats(start: int, stop: int, step: int = 1) -> np.ndarray:
    """The float32 numbers whose bits are 0x80000000 + range(start, stop, step): -0 and
    below, in order of magnitude."""
    bits = np.arange(start, stop, step, dtype=np.uint32)
    return (bits | np.uint32(0x80000000)).view(np.float32)


#: The bits (less the sign) of the lowest float32 the kernel must be accurate at: -87.3.
_LOWEST = int(np.array(87.3, np.float32).view(np.uint32))


def test_exp_within_1_5_ulp_sampled() -> None:
    """Every 61st float32 of [-87.3, 0] (18 million): at most 1.5 ulp from float64's e**x."""
    worst = float(_ulps(_negative_floats(0, _LOWEST + 1, 61)).max())
    assert worst <= 1.5, worst


@pytest.mark.slow
def test_exp_within_1_5_ulp_exhaustive() -> None:
    """Every float32 of [-87.3, 0] (1.1 billion), in slices of 2**24."""
    step = 1 << 24
    worst = 0.0
    for start in range(0, _LOWEST + 1, step):
        worst = max(
            worst, float(_ulps(_negative_floats(start, min(start + step, _LOWEST + 1))).max())
        )
    assert worst <= 1.5, worst


def test_exp_special_values() -> None:
    x = np.array([-np.inf, np.nan, 0.0, -0.0, -88.0, -150.0, -87.3], np.float32)
    got = compiled.exp32(x)
    assert got[0] == 0.0  # a masked entry contributes exactly nothing
    assert np.isnan(got[1])
    assert got[2] == 1.0 and got[3] == 1.0
    assert got[4] == 0.0 and got[5] == 0.0  # below the normal range: 0, never the clamp value
    assert got[6] > 0.0


def test_float16_rounding_is_numpys() -> None:
    """float32 -> float16 in the kernels: NumPy's bits (ties to even, subnormal halves,
    65520 and above to inf, NaN a NaN) on special values and 200k random floats."""
    rng = np.random.default_rng(3)
    special = np.array(
        [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65520.0, -70000.0, 6e-8,
         3e-8, 2.9802322e-08, 5.9604645e-08, 6.1035156e-05, 6.1e-05, 1.0 + 2**-11,
         1.0 + 3 * 2**-11, 1e-40],
        np.float32,
    )  # fmt: skip
    scaled = (rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000)).astype(
        np.float32
    )
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([special, scaled, bits])
    got = compiled.to_float16_bits(x)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()


def test_float16_reads_every_half_exactly() -> None:
    """Every float16 bit pattern read by the kernels (a one-entry row's logsumexp is the
    entry itself) is NumPy's float32 value of it."""
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(-1, 1)
    with xs.use("numpy.compiled"):
        assert xs.which(xs.logsumexp, halves, axis=-1) == "numpy.compiled"
        got = xs.logsumexp(halves, axis=-1)
    np.testing.assert_array_equal(got, halves[:, 0].astype(np.float32))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.op)
def test_entries_conform(entry: Any, dtype: str) -> None:
    """The kit's catalogue through each entry (every length: the kernel call costs less than
    the ufunc path's even at 32x10, so no length threshold keeps short rows off it)."""

    fast = through_entry(entry)
    check_implementation(entry.op, fast, BY_ID["numpy"], dtype, accepts=entry.accepts)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_bfloat16_rounding_is_torchs() -> None:
    """Ties to even, NaN, the infinities, subnormals, overflow to inf, and random bits: the
    kernels' float32 -> bfloat16 rounding gives torch's bits (NaN: any NaN)."""
    rng = np.random.default_rng(2)
    special = np.array(
        [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-40, -1e-45, 1.00390625,
         1.01171875, 1.0 + 2**-9, 1.0 + 3 * 2**-9],
        np.float32,
    )  # fmt: skip
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([special, bits.view(np.float32)])
    got = compiled.to_bfloat16_bits(x)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    back = torch.from_numpy(got[nan].view(np.int16)).view(torch.bfloat16)
    assert bool(back.isnan().all())


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("entry", TORCH_ENTRIES, ids=lambda e: e.op)
def test_torch_entries_conform(entry: Any, dtype: str) -> None:
    """The same kernels on torch CPU tensors (zero-copy views), through the kit's catalogue;
    the gradients through the entry's autograd Functions are checked by the installed
    conformance suite (``check_gradients`` on every entry)."""

    fast = through_entry(entry)
    check_implementation(entry.op, fast, BY_ID["torch:cpu"], dtype, accepts=entry.accepts)


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    for name in ("normalize_rows", "logsumexp_rows", "cross_entropy_rows"):
        real = getattr(compiled, name)
        counted = lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k)  # noqa: E731
        monkeypatch.setattr(compiled, name, counted)
    return calls


def _op_args(op: str, x: Any) -> tuple[Any, ...]:
    return (x, torch.randint(0, x.shape[-1], x.shape[:-1])) if op == "cross_entropy" else (x,)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy"])
def test_torch_kernel_with_and_without_autograd(
    op: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eager tensor takes the kernel, also when it requires grad (then through the
    entry's autograd Function): the values are the same bits either way, and the gradient
    that of torch.native's autograd graph."""
    calls = _count_kernel_calls(monkeypatch)
    x = torch.randn(6, 50).to(getattr(torch, dtype))
    args = _op_args(op, x)
    fn = getattr(xs, op)
    assert xs.which(op, *args) == "torch.compiled"
    eager = fn(*args)
    assert len(calls) == 1
    leaf = x.clone().requires_grad_()
    out = fn(leaf, *args[1:])
    assert len(calls) == 2
    assert out.grad_fn is not None
    weights = torch.rand(out.shape, dtype=out.dtype)
    (out * weights).sum().backward()
    with xs.use("torch.native"):
        ref_leaf = x.clone().requires_grad_()
        ref = fn(ref_leaf, *args[1:])
        (ref * weights).sum().backward()
    assert torch.equal(out.detach(), eager)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 2e-2, "atol": 1e-3}
    torch.testing.assert_close(out.detach(), ref.detach(), **tol)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, **tol)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy"])
def test_torch_kernel_not_under_transforms(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where something other than reverse-mode autograd goes through the call (forward-mode
    AD's dual tensors, torch.func), the entry hands it to torch.native: the kernel would lose
    the tangent or the transform. The tangents equal the generic path's."""
    import torch.autograd.forward_ad as fwAD

    calls = _count_kernel_calls(monkeypatch)
    x = torch.randn(4, 30)
    tangent = torch.randn(4, 30)
    args = _op_args(op, x)
    fn = getattr(xs, op)
    results = {}
    for name in ("torch.compiled", "generic"):
        with xs.use(name), fwAD.dual_level():
            out = fn(fwAD.make_dual(x, tangent), *args[1:])
            results[name] = fwAD.unpack_dual(out).tangent
        with xs.use(name):
            _, results[name + " func"] = torch.func.jvp(
                lambda a: fn(a, *args[1:]), (x,), (tangent,)
            )
    assert not calls
    for name in ("torch.compiled", "torch.compiled func"):
        assert results[name] is not None, name
        expected = results[name.replace("torch.compiled", "generic")]
        torch.testing.assert_close(results[name], expected)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_torch_kernel_second_derivatives(op: str) -> None:
    """The backwards of softmax, log_softmax and logsumexp are torch operations on the saved
    output, differentiable again: a Hessian-vector product equals torch.native's (whose
    graph is torch's own)."""
    x = torch.randn(5, 40, dtype=torch.float32)
    x[1, :3] = -math.inf
    x[2] = -math.inf
    v = torch.randn(5, 40)
    fn = getattr(xs, op)
    results = []
    for name in ("torch.compiled", "torch.native"):
        leaf = x.clone().requires_grad_()
        with xs.use(name):
            out = fn(leaf, axis=-1, temperature=0.7) if op != "logsumexp" else fn(leaf, axis=-1)
        w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (g,) = torch.autograd.grad((out * w).sum(), leaf, create_graph=True)
        (hv,) = torch.autograd.grad((g.nan_to_num(0.0) * v).sum(), leaf)
        results.append((g.detach(), hv))
    (g1, h1), (g2, h2) = results
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-5, equal_nan=True)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_torch_cross_entropy_second_derivative_raises() -> None:
    """The cross-entropy's backward scales the kernel's saved gradient, a constant: a
    backward that builds a graph for a second derivative raises instead of leaving the
    loss's part out; torch.native serves such a loss."""
    target = torch.tensor([1, 2, 3, 4])
    leaf = torch.randn(4, 10).requires_grad_()
    assert xs.which("cross_entropy", leaf, target) == "torch.compiled"
    loss = xs.cross_entropy(leaf, target)
    (g,) = torch.autograd.grad(loss, leaf, retain_graph=True)  # a first derivative is fine
    with pytest.raises(RuntimeError, match=r"no second derivative.*torch.native"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    with xs.use("torch.native"):
        loss = xs.cross_entropy(leaf, target)
    (g_native,) = torch.autograd.grad(loss, leaf, create_graph=True)
    torch.testing.assert_close(g, g_native.detach())
    (hv,) = torch.autograd.grad((g_native * g_native).sum(), leaf)
    assert bool(hv.abs().sum() > 0)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_long_rows_and_any_thread_count(op: str) -> None:
    """Rows of 4K-64K with the edge cases inside them, against the ufunc path, and the same
    bits on one thread and on four."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 4096)) * 20).astype(np.float32)
    x[1] = -np.inf
    x[2, 7] = np.inf
    x[3, 9] = np.nan
    x[4, :4000] = -np.inf
    x[5] = 3e38
    fn = getattr(xs, op)
    with xs.use("numpy.compiled"):
        assert xs.which(fn, x, axis=-1) == "numpy.compiled"
        with xs.num_threads(1):
            one = fn(x, axis=-1)
        with xs.num_threads(4):
            four = fn(x, axis=-1)
    np.testing.assert_array_equal(one, four)
    with xs.use("numpy.inplace"):
        ref = fn(x, axis=-1)
    np.testing.assert_allclose(one, ref, rtol=3e-6, atol=1e-30, equal_nan=True)
    long = rng.standard_normal((2, 65536)).astype(np.float32)
    with xs.use("numpy.compiled"):
        got = fn(long, axis=-1)
    with xs.use("numpy.inplace"):
        np.testing.assert_allclose(got, fn(long, axis=-1), rtol=3e-6, atol=1e-12)


def test_without_numba_the_ufunc_paths_serve() -> None:
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, xpsoftmax as xs\n"
        "x = np.ones((4, 512), np.float32)\n"
        "assert xs.which(xs.softmax, x) == 'numpy.inplace', xs.which(xs.softmax, x)\n"
        "assert np.allclose(xs.softmax(x), 1 / 512)\n"
        "rows = [r for r in xs.implementations() if r.implementation == 'numpy.compiled']\n"
        "print(rows[0].conditions if rows else 'none')\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    t = torch.ones(4, 512)\n"
        "    assert xs.which(xs.softmax, t, axis=-1) == 'torch.native'\n"
        "    assert xs.which(xs.cross_entropy_with_grad, t, torch.zeros(4, dtype=torch.long))"
        " == 'generic'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "unavailable here: numba is not installed" in done.stdout, done.stdout


@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-3}, {"weight": True, "reduction": "sum"},
     {"temperature": 0.7, "reduction": "none", "ignore_index": -100}],
    ids=["plain", "smoothing", "z_loss", "weight", "temperature"],
)  # fmt: skip
def test_cross_entropy_long_rows_and_any_thread_count(options: dict[str, Any]) -> None:
    """Rows of 32000 classes with the edge rows (all -inf, +inf, NaN, ignored, mostly -inf)
    against the ufunc path (``numpy.fused``), loss and gradient, and the same bits on one
    thread and on four."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((24, 32000)) * 5).astype(np.float32)
    x[1] = -np.inf
    x[2, 7] = np.inf
    x[3, 9] = np.nan
    x[4, :31000] = -np.inf
    target = rng.integers(0, 32000, 24)
    target[4] = 31500
    target[5] = -100
    target[7] = 5
    if options.get("weight"):
        options = {**options, "weight": rng.random(32000).astype(np.float32)}
    with xs.use("numpy.compiled"):
        assert xs.which("cross_entropy_with_grad", x, target, **options) == "numpy.compiled"
        with xs.num_threads(1):
            loss1, grad1 = xs.cross_entropy_with_grad(x, target, **options)
        with xs.num_threads(4):
            loss4, grad4 = xs.cross_entropy_with_grad(x, target, **options)
        alone = xs.cross_entropy(x, target, **options)
    np.testing.assert_array_equal(loss1, loss4)
    np.testing.assert_array_equal(grad1, grad4)
    np.testing.assert_array_equal(alone, loss1)
    with xs.use("numpy.fused"):
        ref_loss, ref_grad = xs.cross_entropy_with_grad(x, target, **options)
    np.testing.assert_allclose(loss1, ref_loss, rtol=2e-5, equal_nan=True)
    np.testing.assert_allclose(grad1, ref_grad, rtol=2e-5, atol=1e-10, equal_nan=True)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy"])
def test_torch_entries_hand_over_only_what_native_serves(op: str) -> None:
    """A call the kernel cannot serve (traced, transformed, a dual tensor, a weight that
    requires grad) is handed to torch.native inside the entry, so every call the
    entry accepts must be one torch.native accepts too: checked on every combination of
    options, axes and lengths (rows beyond torch.native's longest among them)."""
    import itertools

    from xpsoftmax._registry import (
        Call,
        CrossEntropyOptions,
        LogsumexpOptions,
        NormalizationOptions,
    )

    entries = {e.name: e for e in xs.fast_paths(op=op, library="torch")}
    ours, theirs = entries["torch.compiled"], entries["torch.native"]
    if op == "logsumexp":
        options: list[Any] = [
            LogsumexpOptions(keepdims=k, b=b, return_sign=r, where=w)
            for k, b, r, w in itertools.product([False, True], repeat=4)
        ]
    elif op == "cross_entropy":
        options = [
            CrossEntropyOptions(target=tg, weight=w, label_smoothing=ls, z_loss=z, temperature=t)
            for tg, w, ls, z, t in itertools.product(
                ["index", "probs"], [False, True], [False, True], [False, True],
                ["one", "positive", "array"],
            )
        ]  # fmt: skip
    else:
        options = [
            NormalizationOptions(temperature=t, where=w)
            for t, w in itertools.product(["one", "positive", "zero", "inf", "array"], [0, 1])
        ]
    shapes = [(4, 8), (3, 2**24 + 1), (2, 3, 5), (0, 8), (8,)]
    checked = 0
    for o, shape in itertools.product(options, shapes):
        ndim = len(shape)
        for k in range(0, ndim + 1):
            for axes in itertools.combinations(range(ndim), k):
                for contiguous in (True, False):
                    call = Call(op, "torch", "cpu", "float32", ndim, axes, o, shape, contiguous)
                    if ours.supports(call):
                        checked += 1
                        assert theirs.supports(call), call
    assert checked > 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_long_rows_keep_their_accuracy(dtype: str) -> None:
    """A row of 3 * 2**23 zeros and a 1 (a float32 running sum stalls at 2**24, and float32
    vector lanes drift by 1e-3 here): the kernels sum chunks in float32 and the chunks in
    float64."""
    n = 3 * 2**23
    x = np.zeros((1, n + 1), dtype)
    x[0, -1] = 1.0
    lse = math.log(n + math.e)
    out_rel = 1e-3 if dtype == "float16" else 1e-5  # outputs in the input's dtype
    with xs.use("numpy.compiled"):
        assert xs.which(xs.logsumexp, x, axis=-1) == "numpy.compiled"
        assert float(xs.logsumexp(x, axis=-1)[0]) == pytest.approx(lse, rel=1e-6)
        assert float(xs.log_softmax(x)[0, -1]) == pytest.approx(
            1.0 - lse, rel=out_rel / 10 if dtype == "float32" else out_rel
        )
        p = xs.softmax(x)
        p_last = float(np.asarray(math.e / (n + math.e), dtype))  # a float16 subnormal
        assert float(p[0, -1]) == pytest.approx(p_last, rel=out_rel)
        loss, grad = xs.cross_entropy_with_grad(x, np.array([n]))
        assert float(loss) == pytest.approx(lse - 1.0, rel=1e-6)
        assert float(grad[0, -1]) == pytest.approx(math.e / (n + math.e) - 1.0, rel=out_rel)
