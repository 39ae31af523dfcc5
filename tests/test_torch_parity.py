"""Parity of ``cross_entropy`` with ``torch.nn.functional.cross_entropy`` and of ``logsumexp``
with ``scipy.special.logsumexp``, over the full product of options, on every backend.

The reference values and gradients come from PyTorch (float64, ``torch.autograd.grad``) and
SciPy; the library is called on each backend's arrays (``backend.asarray``) and compared in
NumPy. The contract's deliberate differences from PyTorch (a zero-denominator mean, an all -inf
row, a zero probability on a -inf logit) are tested explicitly at the end.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import xpsoftmax as xs

torch = pytest.importorskip("torch")
F = torch.nn.functional
scipy_special = pytest.importorskip("scipy.special")

RTOL = 1e-12
ATOL = 1e-12
C = 5  # classes

# --- data -----------------------------------------------------------------------------------

#: shape kind -> (logits shape with the class axis at 1 (0 for 1-D), class axis the library sees)
SHAPES = {
    "1d": ((C,), -1),
    "2d": ((6, C), -1),
    "kd_axis1": ((2, C, 3, 2), 1),
    "kd_axis_last": ((2, C, 3, 2), -1),  # same data, class axis moved to the end
}


def _logits(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=shape)


def _index_target(shape: tuple[int, ...], ignore_index: int, seed: int = 1) -> np.ndarray:
    """Class indices for logits of ``shape`` (class axis 1, or 0 for 1-D); batched targets
    have some entries equal to ``ignore_index`` and some not."""
    rng = np.random.default_rng(seed)
    if len(shape) == 1:
        # A single entry: a class that is not ignore_index (all-ignored is tested separately).
        return np.asarray(3 if ignore_index != 3 else 1, dtype=np.int64)
    tshape = (shape[0], *shape[2:])
    choices = [c for c in range(shape[1]) if c != ignore_index]
    t = rng.choice(choices, size=tshape).astype(np.int64)
    flat = t.reshape(-1)
    flat[1] = ignore_index
    flat[-2] = ignore_index
    return t


def _prob_target(shape: tuple[int, ...], seed: int = 2) -> np.ndarray:
    """Class probabilities (class axis 1, or 0 for 1-D), some exactly 0."""
    rng = np.random.default_rng(seed)
    axis = 0 if len(shape) == 1 else 1
    y = np.exp(rng.normal(scale=1.5, size=shape))
    y[rng.uniform(size=shape) < 0.2] = 0.0
    idx = [slice(None)] * len(shape)
    idx[axis] = 0
    y[tuple(idx)] += 0.1  # no all-zero slice
    return y / y.sum(axis=axis, keepdims=True)


def _weight(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.3, 2.0, size=C)


# --- reference ------------------------------------------------------------------------------


def torch_reference(
    x: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """torch.nn.functional.cross_entropy in float64 (class axis 1, or 0 for 1-D) and the
    gradient of its sum with respect to the logits, by torch.autograd.grad."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(target)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    loss = F.cross_entropy(
        xt,
        tt,
        weight=wt,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    (g,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), g.numpy()


def _close(
    actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL
) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# --- cases ----------------------------------------------------------------------------------


def _cases() -> list:
    out = []
    for shape_kind, (kind, ignore_index), has_weight, reduction, smoothing in itertools.product(
        SHAPES,
        [("index", -100), ("index", 2), ("probs", -100)],
        [False, True],
        ["mean", "sum", "none"],
        [0.0, 0.15],
    ):
        cid = (
            f"{shape_kind}-{kind}{'' if ignore_index == -100 else '-ign' + str(ignore_index)}"
            f"-{'w' if has_weight else 'now'}-{reduction}-ls{smoothing}"
        )
        out.append(
            pytest.param(shape_kind, kind, ignore_index, has_weight, reduction, smoothing, id=cid)
        )
    return out


CASES = _cases()


def _case_data(shape_kind: str, kind: str, ignore_index: int, has_weight: bool):
    """(torch-layout logits, torch-layout target, library logits, library target, axis,
    weight, move) where ``move`` maps a torch-layout array to the library's layout."""
    shape, axis = SHAPES[shape_kind]
    x = _logits(shape)
    t = _index_target(shape, ignore_index) if kind == "index" else _prob_target(shape)
    w = _weight() if has_weight else None
    if shape_kind == "kd_axis_last":

        def move(a: np.ndarray) -> np.ndarray:
            return np.moveaxis(a, 1, -1)

        x_lib = move(x)
        t_lib = move(t) if kind == "probs" else t
    else:

        def move(a: np.ndarray) -> np.ndarray:
            return a

        x_lib, t_lib = x, t
    return x, t, x_lib, t_lib, axis, w, move


def _same_library(backend, out, like) -> None:
    assert not isinstance(out, np.generic), f"a NumPy scalar came back: {type(out)}"
    assert type(out) is type(like), f"{type(out)} is not {type(like)}"


# --- values and cross_entropy_with_grad on every backend -----------------------------------


@pytest.mark.parametrize("shape_kind,kind,ignore_index,has_weight,reduction,smoothing", CASES)
def test_cross_entropy_matches_torch(
    backend, shape_kind, kind, ignore_index, has_weight, reduction, smoothing
):
    x, t, x_lib, t_lib, axis, w, _move = _case_data(shape_kind, kind, ignore_index, has_weight)
    opts = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    ref_loss, ref_grad = torch_reference(x, t, weight=w, **opts)
    if shape_kind == "kd_axis_last":
        # the torch.movedim comparison of the brief: the reference gradient moved to the end
        ref_grad_moved = torch.movedim(torch.tensor(ref_grad), 1, -1).numpy()
    else:
        ref_grad_moved = ref_grad

    X = backend.asarray(x_lib, "float64")
    T = backend.asarray(t_lib, "float64" if kind == "probs" else None)
    W = None if w is None else backend.asarray(w, "float64")
    loss = xs.cross_entropy(X, T, axis=axis, weight=W, **opts)
    loss_np = backend.to_numpy(loss)
    assert loss_np.dtype == np.float64
    assert loss_np.shape == ref_loss.shape
    _close(loss_np, ref_loss)

    loss2, grad = xs.cross_entropy_with_grad(X, T, axis=axis, weight=W, **opts)
    _close(backend.numpy_float(loss2), ref_loss)
    grad_np = backend.to_numpy(grad)
    assert grad_np.dtype == np.float64
    assert grad_np.shape == x_lib.shape
    _close(grad_np, ref_grad_moved)

    # same library as the input, never a NumPy scalar (checked after the numbers)
    _same_library(backend, loss, X)
    _same_library(backend, loss2, X)
    _same_library(backend, grad, X)


@pytest.mark.parametrize("shape_kind,kind,ignore_index,has_weight,reduction,smoothing", CASES)
def test_cross_entropy_generic_matches_torch(
    backend, shape_kind, kind, ignore_index, has_weight, reduction, smoothing
):
    """The same product with the generic implementation forced (fast paths serve the default)."""
    if backend.library not in ("numpy", "torch", "jax"):
        pytest.skip("no fast path for this library: the default run is the generic one")
    x, t, x_lib, t_lib, axis, w, move = _case_data(shape_kind, kind, ignore_index, has_weight)
    opts = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    ref_loss, ref_grad = torch_reference(x, t, weight=w, **opts)
    X = backend.asarray(x_lib, "float64")
    T = backend.asarray(t_lib, "float64" if kind == "probs" else None)
    W = None if w is None else backend.asarray(w, "float64")
    with xs.force_generic():
        assert xs.which("cross_entropy", X, T, axis=axis, weight=W, **opts) == "generic"
        loss = xs.cross_entropy(X, T, axis=axis, weight=W, **opts)
        loss2, grad = xs.cross_entropy_with_grad(X, T, axis=axis, weight=W, **opts)
    _close(backend.numpy_float(loss), ref_loss)
    _close(backend.numpy_float(loss2), ref_loss)
    _close(backend.numpy_float(grad), move(ref_grad))


# --- autodiff gradients on torch and jax -----------------------------------------------------


def autodiff_grad(backend, fn, X):
    """d sum(fn(X)) / dX with the backend's own autodiff (torch.autograd.grad or jax.grad)."""
    if backend.library == "torch":
        Xg = X.detach().clone().requires_grad_(True)
        out = fn(Xg)
        (g,) = torch.autograd.grad(out.sum(), Xg)
        return g
    if backend.library == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda a: jnp.sum(fn(a)))(X)
    raise AssertionError(backend.library)


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize("shape_kind,kind,ignore_index,has_weight,reduction,smoothing", CASES)
def test_cross_entropy_gradient_matches_torch(
    ad_backend, shape_kind, kind, ignore_index, has_weight, reduction, smoothing, generic
):
    backend = ad_backend
    x, t, x_lib, t_lib, axis, w, move = _case_data(shape_kind, kind, ignore_index, has_weight)
    opts = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    _, ref_grad = torch_reference(x, t, weight=w, **opts)
    X = backend.asarray(x_lib, "float64")
    T = backend.asarray(t_lib, "float64" if kind == "probs" else None)
    W = None if w is None else backend.asarray(w, "float64")
    if generic:
        with xs.force_generic():
            g = autodiff_grad(
                backend, lambda a: xs.cross_entropy(a, T, axis=axis, weight=W, **opts), X
            )
    else:
        g = autodiff_grad(backend, lambda a: xs.cross_entropy(a, T, axis=axis, weight=W, **opts), X)
    g_np = backend.to_numpy(g)
    assert g_np.dtype == np.float64
    _close(g_np, move(ref_grad))


# --- float32 and 16-bit on torch -------------------------------------------------------------

_LOW_TOL = {
    # (loss rtol/atol: computed in float32 from exactly representable inputs;
    #  gradient tolerance relative to max |g|: rounded to the input dtype)
    "float32": (2e-5, 1e-6),
    "float16": (2e-5, 2e-3),
    "bfloat16": (2e-5, 1.6e-2),
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("options", ["plain", "weight-ls", "weight-ls-kd"])
def test_low_precision_torch(dtype, reduction, kind, options):
    tdt = getattr(torch, dtype)
    shape = (2, C, 3, 2) if options.endswith("kd") else (6, C)
    axis = 1 if options.endswith("kd") else -1
    x = _logits(shape, seed=11)
    # round the inputs to the low dtype first: the reference sees exactly what the library sees
    x = torch.tensor(x).to(tdt).double().numpy()
    t = _index_target(shape, -100) if kind == "index" else _prob_target(shape)
    if kind == "probs":
        t = torch.tensor(t).to(tdt).double().numpy()
    w = _weight() if options != "plain" else None
    if w is not None:
        w = w.astype(np.float32).astype(np.float64)  # weights are cast to float32 (computation)
    ls = 0.15 if options != "plain" else 0.0
    opts = dict(reduction=reduction, label_smoothing=ls)
    ref_loss, ref_grad = torch_reference(x, t, weight=w, **opts)

    X = torch.tensor(x).to(tdt)
    T = torch.tensor(t).to(tdt) if kind == "probs" else torch.tensor(t)
    W = None if w is None else torch.tensor(w, dtype=torch.float32)
    loss_rtol, grad_tol = _LOW_TOL[dtype]

    loss = xs.cross_entropy(X, T, axis=axis, weight=W, **opts)
    assert loss.dtype == torch.float32, "16-bit and float32 inputs give a float32 loss"
    np.testing.assert_allclose(loss.double().numpy(), ref_loss, rtol=loss_rtol, atol=loss_rtol)

    Xg = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(xs.cross_entropy(Xg, T, axis=axis, weight=W, **opts).sum(), Xg)
    assert g.dtype == tdt
    scale = np.abs(ref_grad).max()
    np.testing.assert_allclose(g.double().numpy(), ref_grad, rtol=0, atol=grad_tol * scale + 1e-7)

    loss2, g2 = xs.cross_entropy_with_grad(X, T, axis=axis, weight=W, **opts)
    assert loss2.dtype == torch.float32
    assert g2.dtype == tdt, "the gradient has the logits' dtype"
    np.testing.assert_allclose(loss2.double().numpy(), ref_loss, rtol=loss_rtol, atol=loss_rtol)
    np.testing.assert_allclose(g2.double().numpy(), ref_grad, rtol=0, atol=grad_tol * scale + 1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_loss_dtype_every_reduction_and_path(dtype):
    tdt = getattr(torch, dtype)
    X = torch.tensor(_logits((4, C), seed=5)).to(tdt)
    T = torch.tensor([0, 1, 2, 3])
    P = torch.softmax(torch.tensor(_logits((4, C), seed=6)), -1).to(tdt)
    for target in (T, P):
        for reduction in ("mean", "sum", "none"):
            for generic in (False, True):
                for kw in ({}, {"z_loss": 1e-3}, {"temperature": 0.5}):
                    if generic:
                        with xs.force_generic():
                            loss = xs.cross_entropy(X, target, reduction=reduction, **kw)
                    else:
                        loss = xs.cross_entropy(X, target, reduction=reduction, **kw)
                    assert loss.dtype == torch.float32, (target.dtype, reduction, generic, kw)


# --- the deliberate differences from torch ------------------------------------------------


def _values_and_grads(backend, X, T, **opts):
    """(loss, with_grad loss, with_grad gradient, autodiff gradient or None) in NumPy."""
    loss = backend.numpy_float(xs.cross_entropy(X, T, **opts))
    l2, g2 = xs.cross_entropy_with_grad(X, T, **opts)
    g_ad = None
    if backend.library in ("torch", "jax"):
        g_ad = backend.numpy_float(
            autodiff_grad(backend, lambda a: xs.cross_entropy(a, T, **opts), X)
        )
    return loss, backend.numpy_float(l2), backend.numpy_float(g2), g_ad


@pytest.mark.parametrize(
    "case",
    ["all-ignored", "all-ignored-ls", "zero-weight-ls", "all-ignored-custom", "all-ignored-kd"],
)
@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
def test_mean_over_zero_denominator_is_zero(backend, case, generic):
    x = _logits((4, C), seed=7)
    t = np.full(4, -100, dtype=np.int64)
    opts: dict = {"reduction": "mean"}
    if case == "all-ignored-ls":
        opts["label_smoothing"] = 0.15
    elif case == "zero-weight-ls":
        # every target class has weight 0 but the smoothing term has a positive numerator
        t = np.array([0, 0, 1, 0])
        w = np.array([0.0, 0.0, 1.0, 2.0, 0.5])
        opts.update(weight=backend.asarray(w, "float64"), label_smoothing=0.15)
        # sanity: torch gives NaN or inf here (0 denominator), the contract 0
        ref, _ = torch_reference(x, t, weight=w, label_smoothing=0.15)
        assert not np.isfinite(ref)
    elif case == "all-ignored-custom":
        t = np.full(4, 2, dtype=np.int64)
        opts["ignore_index"] = 2
    elif case == "all-ignored-kd":
        x = _logits((2, C, 3), seed=8)
        t = np.full((2, 3), -100, dtype=np.int64)
        opts["axis"] = 1
    X = backend.asarray(x, "float64")
    T = backend.asarray(t)
    ctx = xs.force_generic() if generic else _nullcontext()
    with ctx:
        loss, l2, g2, g_ad = _values_and_grads(backend, X, T, **opts)
    assert loss.shape == ()
    assert loss == 0.0 and l2 == 0.0
    np.testing.assert_array_equal(g2, np.zeros_like(x))
    if g_ad is not None:
        np.testing.assert_array_equal(g_ad, np.zeros_like(x))


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
def test_mean_over_empty_batch_is_zero(backend, kind, smoothing, generic):
    x = np.zeros((0, C))
    t = np.zeros(0, dtype=np.int64) if kind == "index" else np.zeros((0, C))
    X = backend.asarray(x, "float64")
    T = backend.asarray(t, "float64" if kind == "probs" else None)
    ctx = xs.force_generic() if generic else _nullcontext()
    with ctx:
        loss, l2, g2, g_ad = _values_and_grads(backend, X, T, label_smoothing=smoothing)
        none = backend.numpy_float(
            xs.cross_entropy(X, T, reduction="none", label_smoothing=smoothing)
        )
        total = backend.numpy_float(
            xs.cross_entropy(X, T, reduction="sum", label_smoothing=smoothing)
        )
    assert loss.shape == () and loss == 0.0 and l2 == 0.0
    assert g2.shape == (0, C)
    if g_ad is not None:
        assert g_ad.shape == (0, C)
    assert none.shape == (0,)
    assert total == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_all_neg_inf_row_index_target(backend, reduction, generic, smoothing):
    """An all -inf row with an index target: loss +inf, zero gradient on that row; the other
    rows' gradient is torch's on those rows (reduction none/sum)."""
    x = _logits((4, C), seed=9)
    x[2] = -np.inf
    t = np.array([1, 4, 0, 3])
    X = backend.asarray(x, "float64")
    T = backend.asarray(t)
    opts = dict(reduction=reduction, label_smoothing=smoothing)
    ctx = xs.force_generic() if generic else _nullcontext()
    with ctx:
        loss, l2, g2, g_ad = _values_and_grads(backend, X, T, **opts)
    if reduction == "none":
        assert loss[2] == np.inf and l2[2] == np.inf
        ref_rows, _ = torch_reference(
            np.delete(x, 2, 0), np.delete(t, 2), reduction="none", label_smoothing=smoothing
        )
        _close(np.delete(loss, 2), ref_rows)
    else:
        assert loss == np.inf and l2 == np.inf
    for g in (g2, g_ad):
        if g is None:
            continue
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g[2], np.zeros(C))
        if reduction != "mean":
            _, ref_g = torch_reference(
                np.delete(x, 2, 0), np.delete(t, 2), reduction="sum", label_smoothing=smoothing
            )
            _close(np.delete(g, 2, 0), ref_g)
        else:
            # the mean divides by the 4 entries, the infinite one included
            _, ref_g = torch_reference(
                np.delete(x, 2, 0), np.delete(t, 2), reduction="sum", label_smoothing=smoothing
            )
            _close(np.delete(g, 2, 0), ref_g / 4)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize("has_weight", [False, True])
def test_zero_probability_on_neg_inf_logit(backend, reduction, generic, has_weight):
    """0 * log 0 = 0: a -inf logit whose target probability is 0 contributes nothing, in value
    and gradient (torch gives NaN). Expected: torch on the finite classes only."""
    x = _logits((3, C), seed=10)
    y = _prob_target((3, C), seed=12)
    x[0, 1] = -np.inf
    y[0, 1] = 0.0
    x[2, [0, 3]] = -np.inf
    y[2, [0, 3]] = 0.0
    y /= y.sum(axis=1, keepdims=True)
    w = _weight() if has_weight else None
    X = backend.asarray(x, "float64")
    Y = backend.asarray(y, "float64")
    W = None if w is None else backend.asarray(w, "float64")
    ctx = xs.force_generic() if generic else _nullcontext()
    with ctx:
        loss, l2, g2, g_ad = _values_and_grads(backend, X, Y, weight=W, reduction=reduction)
    # reference, per row, over its finite classes (each row's mean divisor is N = 3)
    ref_per = []
    ref_g = np.zeros_like(x)
    for i in range(3):
        keep = np.isfinite(x[i])
        lo, g = torch_reference(
            x[i, keep][None],
            y[i, keep][None],
            weight=None if w is None else w[keep],
            reduction="sum",
        )
        ref_per.append(float(lo))
        ref_g[i, keep] = g[0]
    ref_per = np.array(ref_per)
    scale = 1 / 3 if reduction == "mean" else 1.0
    ref = {"none": ref_per, "sum": ref_per.sum(), "mean": ref_per.mean()}[reduction]
    _close(loss, ref)
    _close(l2, ref)
    for g in (g2, g_ad):
        if g is None:
            continue
        assert np.all(np.isfinite(g))
        _close(g, ref_g * scale)
        assert g[0, 1] == 0.0 and g[2, 0] == 0.0 and g[2, 3] == 0.0


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- temperature -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("temperature", ["0.6", "3.0", "array"])
@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_temperature_divides_the_logits(backend, kind, temperature, z_loss, reduction):
    shape = (6, C)
    x = _logits(shape, seed=13)
    t = _index_target(shape, -100) if kind == "index" else _prob_target(shape)
    w = _weight()
    if temperature == "array":
        tarr = np.random.default_rng(14).uniform(0.3, 3.0, size=(6, 1))
        T_arg = backend.asarray(tarr, "float64")
        x_div = x / tarr
        inv = 1 / tarr
    else:
        T_arg = float(temperature)
        x_div = x / T_arg
        inv = 1 / T_arg
    X = backend.asarray(x, "float64")
    Xd = backend.asarray(x_div, "float64")
    Tt = backend.asarray(t, "float64" if kind == "probs" else None)
    W = backend.asarray(w, "float64")
    opts = dict(weight=W, reduction=reduction, label_smoothing=0.1, z_loss=z_loss)
    got = backend.numpy_float(xs.cross_entropy(X, Tt, temperature=T_arg, **opts))
    want = backend.numpy_float(xs.cross_entropy(Xd, Tt, **opts))
    _close(got, want)
    l1, g1 = xs.cross_entropy_with_grad(X, Tt, temperature=T_arg, **opts)
    l2, g2 = xs.cross_entropy_with_grad(Xd, Tt, **opts)
    _close(backend.numpy_float(l1), backend.numpy_float(l2))
    # d/dx ce(x / T) = (d ce / d(x/T)) / T
    _close(backend.numpy_float(g1), backend.numpy_float(g2) * inv)
    if backend.library in ("torch", "jax"):
        ga = autodiff_grad(backend, lambda a: xs.cross_entropy(a, Tt, temperature=T_arg, **opts), X)
        gb = autodiff_grad(backend, lambda a: xs.cross_entropy(a / T_arg, Tt, **opts), X)
        _close(backend.numpy_float(ga), backend.numpy_float(gb))


# --- z-loss ----------------------------------------------------------------------------------


def torch_z_loss_reference(
    x, t, *, weight, ignore_index, reduction, label_smoothing, z_loss, temperature=1.0
):
    """The hand formula: per entry ``torch_ce + z_loss * w_t * logsumexp(x / T)**2`` (w_t the
    target class's weight, for probability targets ``sum(weight * target)``; ignored entries
    get none), then torch's reduction (mean: divided by the non-ignored target weights, or by
    the number of entries for probability targets). Value and autograd gradient."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    xs_ = xt / temperature
    per = F.cross_entropy(
        xs_,
        tt,
        weight=wt,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    cdim = 1 if xt.ndim > 1 else 0
    lse2 = torch.logsumexp(xs_, dim=cdim) ** 2
    if tt.dtype.is_floating_point:
        w_t = (
            torch.ones_like(per)
            if wt is None
            else (tt * wt.reshape((-1,) + (1,) * (xt.ndim - 2))).sum(cdim)
        )
        den = torch.tensor(float(per.numel()), dtype=torch.float64)
    else:
        keep = tt != ignore_index
        safe = torch.where(keep, tt, 0)
        w_t = (torch.ones_like(per) if wt is None else wt[safe]) * keep
        den = w_t.sum()
    per = per + z_loss * w_t * lse2
    loss = {"none": per, "sum": per.sum(), "mean": per.sum() / den}[reduction]
    (g,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), g.numpy()


@pytest.mark.parametrize("shape_kind", ["1d", "2d", "kd_axis1", "kd_axis_last"])
@pytest.mark.parametrize("kind,ignore_index", [("index", -100), ("index", 2), ("probs", -100)])
@pytest.mark.parametrize("has_weight", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_hand_formula(backend, shape_kind, kind, ignore_index, has_weight, reduction):
    x, t, x_lib, t_lib, axis, w, move = _case_data(shape_kind, kind, ignore_index, has_weight)
    z = 0.05
    # label smoothing on for the kd shapes, off for the others: both are covered
    smoothing = 0.15 if shape_kind.startswith("kd") else 0.0
    opts = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    ref_loss, ref_grad = torch_z_loss_reference(x, t, weight=w, z_loss=z, **opts)
    X = backend.asarray(x_lib, "float64")
    T = backend.asarray(t_lib, "float64" if kind == "probs" else None)
    W = None if w is None else backend.asarray(w, "float64")
    loss = backend.numpy_float(xs.cross_entropy(X, T, axis=axis, weight=W, z_loss=z, **opts))
    _close(loss, ref_loss)
    l2, g2 = xs.cross_entropy_with_grad(X, T, axis=axis, weight=W, z_loss=z, **opts)
    _close(backend.numpy_float(l2), ref_loss)
    _close(backend.numpy_float(g2), move(ref_grad))
    if backend.library in ("torch", "jax"):
        g = autodiff_grad(
            backend, lambda a: xs.cross_entropy(a, T, axis=axis, weight=W, z_loss=z, **opts), X
        )
        _close(backend.numpy_float(g), move(ref_grad))


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_z_loss_with_temperature_hand_formula(backend, kind):
    x, t, x_lib, t_lib, _axis, w, _move = _case_data("2d", kind, -100, True)
    opts = dict(reduction="mean", label_smoothing=0.1, ignore_index=-100)
    ref_loss, ref_grad = torch_z_loss_reference(
        x, t, weight=w, z_loss=0.02, temperature=0.7, **opts
    )
    X = backend.asarray(x_lib, "float64")
    T = backend.asarray(t_lib, "float64" if kind == "probs" else None)
    W = backend.asarray(w, "float64")
    loss, g = xs.cross_entropy_with_grad(X, T, weight=W, z_loss=0.02, temperature=0.7, **opts)
    _close(backend.numpy_float(loss), ref_loss)
    _close(
        backend.numpy_float(xs.cross_entropy(X, T, weight=W, z_loss=0.02, temperature=0.7, **opts)),
        ref_loss,
    )
    _close(backend.numpy_float(g), ref_grad)


# --- logsumexp against scipy -------------------------------------------------------------------

_LSE_X = np.random.default_rng(20).normal(scale=3.0, size=(3, 4, 5))


def _lse_b(kind: str) -> np.ndarray | None:
    rng = np.random.default_rng(21)
    if kind == "none":
        return None
    b = rng.uniform(0.2, 2.0, size=(3, 4, 5))
    b[rng.uniform(size=b.shape) < 0.25] = 0.0
    if kind == "signed":
        b[rng.uniform(size=b.shape) < 0.4] *= -1.0  # some slices sum negative
    if kind == "broadcast":
        return b[0]  # shape (4, 5), broadcasting against (3, 4, 5)
    return b


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (1, 2), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("b_kind", ["none", "positive", "signed", "broadcast"])
@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_matches_scipy(backend, axis, keepdims, b_kind, return_sign):
    x = _LSE_X
    b = _lse_b(b_kind)
    want = scipy_special.logsumexp(x, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    X = backend.asarray(x, "float64")
    B = None if b is None else backend.asarray(b, "float64")
    got = xs.logsumexp(X, axis=axis, b=B, keepdims=keepdims, return_sign=return_sign)
    if return_sign:
        lse, sign = got
        _same_library(backend, lse, X)
        _same_library(backend, sign, X)
        w_lse, w_sign = want
        lse_np, sign_np = backend.numpy_float(lse), backend.numpy_float(sign)
        assert lse_np.shape == np.shape(w_lse) and sign_np.shape == np.shape(w_sign)
        _close(lse_np, w_lse)
        np.testing.assert_array_equal(sign_np, w_sign)
    else:
        _same_library(backend, got, X)
        got_np = backend.to_numpy(got)
        assert got_np.dtype == np.float64
        assert got_np.shape == np.shape(want)
        if b_kind == "signed":
            assert np.isnan(want).any() or np.ndim(want) == 0  # the case is meaningful
        np.testing.assert_allclose(got_np, want, rtol=RTOL, atol=ATOL, equal_nan=True)


@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_b_zero_on_nonfinite_and_zero_sum(backend, return_sign):
    """Entries with b == 0 take no part even where x is +-inf or NaN; a zero sum gives -inf
    (sign 0); as scipy."""
    x = np.array([[np.inf, 1.0, np.nan, 2.0], [1.0, 1.0, -np.inf, 0.5], [3.0, 3.0, 2.0, 2.0]])
    b = np.array([[0.0, 1.0, 0.0, -1.0], [2.0, -2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    expected = scipy_special.logsumexp(x, axis=1, b=b, return_sign=True)
    assert np.all(np.isfinite(expected[0][[0, 2]]))  # scipy drops b == 0 entries too
    got = xs.logsumexp(
        backend.asarray(x, "float64"),
        axis=1,
        b=backend.asarray(b, "float64"),
        return_sign=return_sign,
    )
    if return_sign:
        lse, sign = (backend.numpy_float(a) for a in got)
        _close(lse, expected[0])
        np.testing.assert_array_equal(sign, expected[1])
        assert lse[1] == -np.inf and sign[1] == 0.0
    else:
        lse = backend.numpy_float(got)
        np.testing.assert_allclose(
            lse, np.where(expected[1] < 0, np.nan, expected[0]), rtol=RTOL, equal_nan=True
        )
        assert np.isnan(lse[0])  # e - e^2 < 0: a negative sum without return_sign is NaN
        assert lse[1] == -np.inf
        _close(lse[2], 3.0)


def test_logsumexp_default_axis_is_all(backend):
    X = backend.asarray(_LSE_X, "float64")
    got = xs.logsumexp(X)
    assert backend.to_numpy(got).shape == ()
    _close(backend.numpy_float(got), scipy_special.logsumexp(_LSE_X))


def test_reference_sanity():
    """The reference itself: torch's mean with ignored entries divides by the non-ignored
    weights (a guard against comparing with a wrong reference)."""
    x = _logits((6, C))
    t = _index_target((6, C), -100)
    w = _weight()
    mean, _ = torch_reference(x, t, weight=w)
    per, _ = torch_reference(x, t, weight=w, reduction="none")
    keep = t != -100
    assert math.isclose(float(mean), per.sum() / w[t[keep]].sum(), rel_tol=1e-13)
    assert (t == -100).sum() == 2 and keep.sum() == 4
