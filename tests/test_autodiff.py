"""Autodiff and program transformations: torch.autograd.gradcheck, torch.func, torch.compile,
jax.grad / jvp / vmap / jit, gradients on empty events, the temperature gradient at T = 0, and
cross_entropy_with_grad against autodiff.

Every check runs on the automatically chosen implementation ("auto", a fast path where one
serves the call) and with ``force_generic()``.

torch.compile runs with ``backend="aot_eager"`` (AOTAutograd without code generation, which
exercises the dynamo trace and the joint forward/backward graph but stays fast on 2 cores); one
test with the default inductor backend is marked slow.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import xpsoftmax as xs

C = 5
GENERIC = pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])


def _ctx(generic: bool):
    return xs.force_generic() if generic else contextlib.nullcontext()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ============================================================================================
# PyTorch
# ============================================================================================

torch = pytest.importorskip("torch")
from torch.autograd import gradcheck  # noqa: E402

F = torch.nn.functional
DT = torch.float64


def _t(a, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=DT, requires_grad=requires_grad)


def _temp_shape(shape: tuple[int, ...], axis) -> tuple[int, ...]:
    axes = range(len(shape)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = {a % len(shape) for a in axes}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


NORM_AXES = [-1, 0, (0, 2), None]


@GENERIC
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", NORM_AXES, ids=str)
@pytest.mark.parametrize("temperature", ["one", "scalar", "array"])
@pytest.mark.parametrize("masked", [False, True], ids=["nowhere", "where"])
def test_gradcheck_normalizations(op, axis, temperature, masked, generic):
    shape = (2, 3, 4)
    rng = _rng(1)
    x = _t(rng.normal(size=shape), True)
    fn = getattr(xs, op)
    mask = torch.tensor(rng.uniform(size=shape) < 0.75) if masked else None
    if mask is not None:
        mask[0, 0, :] = True  # some slices complete
    inputs = [x]
    if temperature == "array":
        T = _t(rng.uniform(0.4, 2.5, size=_temp_shape(shape, axis)), True)
        inputs.append(T)
    T_scalar = 0.7 if temperature == "scalar" else 1.0

    def f(a, *rest):
        temp = rest[0] if rest else T_scalar
        out = fn(a, axis=axis, temperature=temp, where=mask)
        if mask is not None and op == "log_softmax":
            out = torch.where(mask, out, 0.0)  # -inf at masked entries: not differentiable
        return out

    with _ctx(generic):
        assert gradcheck(f, tuple(inputs), eps=1e-6, atol=1e-7, rtol=1e-6)


@GENERIC
@pytest.mark.parametrize("axis", [None, 1, (0, 2), -1], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("variant", ["x", "b", "b-zero", "signed-b", "where"])
def test_gradcheck_logsumexp(axis, keepdims, variant, generic):
    shape = (2, 3, 4)
    rng = _rng(2)
    x = _t(rng.normal(size=shape), True)
    if variant == "x":
        args, _kw = (x,), {}

        def f(a):
            return xs.logsumexp(a, axis=axis, keepdims=keepdims)

    elif variant in ("b", "b-zero"):
        b = rng.uniform(0.3, 2.0, size=shape)
        if variant == "b-zero":
            b[rng.uniform(size=shape) < 0.3] = 0.0  # finite x: d lse / d b is exp(x) / sum there
            b[0, 0, 0] = 0.0
        B = _t(b, True)
        args = (x, B)

        def f(a, bb):
            return xs.logsumexp(a, axis=axis, keepdims=keepdims, b=bb)

    elif variant == "signed-b":
        b = rng.uniform(0.3, 2.0, size=shape) * np.where(rng.uniform(size=shape) < 0.3, -1.0, 1.0)
        b[0, 0, 0] = 0.0
        B = _t(b, True)
        args = (x, B)

        def f(a, bb):
            lse, _sign = xs.logsumexp(a, axis=axis, keepdims=keepdims, b=bb, return_sign=True)
            return lse

        with torch.no_grad():
            _, sign = xs.logsumexp(x, axis=axis, b=B, return_sign=True)
        assert torch.all(sign != 0)
    else:
        mask = torch.tensor(rng.uniform(size=shape) < 0.7)
        mask[:, :, 0] = True
        args = (x,)

        def f(a):
            return xs.logsumexp(a, axis=axis, keepdims=keepdims, where=mask)

    with _ctx(generic):
        assert gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


@GENERIC
def test_logsumexp_gradient_wrt_b_at_zero_closed_form(generic):
    """d lse / d b_i = exp(x_i - lse) / sign, also where b_i == 0 (x finite)."""
    x = _t([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])
    b = _t([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.5, -0.5]], True)
    with _ctx(generic):
        lse, sign = xs.logsumexp(x, axis=1, b=b, return_sign=True)
        (g,) = torch.autograd.grad(lse.sum(), b)
    expected = torch.exp(x - lse[:, None]) / sign[:, None]
    torch.testing.assert_close(g, expected.detach(), rtol=1e-12, atol=1e-14)
    assert g[0, 1] != 0 and g[1, 0] != 0  # the zero weights do get a gradient


def _ce_inputs(kind: str, shape_kind: str, seed: int = 3):
    rng = _rng(seed)
    if shape_kind == "2d":
        shape, axis = (4, C), -1
    elif shape_kind == "kd":
        shape, axis = (2, C, 3), 1
    else:
        shape, axis = (C,), -1
    x = rng.normal(size=shape)
    cls_axis = axis % len(shape)
    if kind == "index":
        tshape = tuple(n for i, n in enumerate(shape) if i != cls_axis)
        t = rng.integers(0, C, size=tshape)
        if t.ndim:
            t.reshape(-1)[1] = 2  # so that ignore_index=2 ignores something
        target = torch.tensor(t)
    else:
        y = rng.uniform(size=shape)
        y /= y.sum(axis=cls_axis, keepdims=True)
        target = _t(y)
    return x, target, axis, shape


CE_OPTIONS = {
    "plain": {},
    "weight": {"weight": "w"},
    "ignore": {"ignore_index": 2},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "smoothing": {"label_smoothing": 0.2},
    "temperature": {"temperature": 0.6},
    "temperature-array": {"temperature": "array"},
    "z_loss": {"z_loss": 0.03},
    "all": {
        "weight": "w",
        "ignore_index": 2,
        "label_smoothing": 0.1,
        "temperature": 1.7,
        "z_loss": 0.01,
    },
}


@GENERIC
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("shape_kind", ["2d", "kd"])
@pytest.mark.parametrize("option", list(CE_OPTIONS))
def test_gradcheck_cross_entropy(kind, shape_kind, option, generic):
    if kind == "probs" and option == "ignore":
        pytest.skip("ignore_index applies to class indices only")
    x, target, axis, shape = _ce_inputs(kind, shape_kind)
    X = _t(x, True)
    opts = dict(CE_OPTIONS[option])
    rng = _rng(4)
    extra: list[torch.Tensor] = []
    if opts.get("weight") == "w":
        # a constant: torch's own F.cross_entropy (the fast path) is not differentiable in it
        opts["weight"] = _t(rng.uniform(0.3, 2.0, size=C))
    if opts.get("temperature") == "array":
        opts["temperature"] = _t(rng.uniform(0.3, 3.0, size=_temp_shape(shape, axis)), True)
        extra.append(opts["temperature"])
    if kind == "probs":
        target = target.clone().requires_grad_(True)  # d loss / d probabilities as well
        extra.append(target)

    def f(a, *rest):
        kw = dict(opts)
        it = iter(rest)
        if isinstance(kw.get("temperature"), torch.Tensor):
            kw["temperature"] = next(it)
        tgt = next(it) if kind == "probs" else target
        return xs.cross_entropy(a, tgt, axis=axis, **kw)

    with _ctx(generic):
        assert gradcheck(f, (X, *extra), eps=1e-6, atol=1e-7, rtol=1e-6)


# --- torch.func ---------------------------------------------------------------------------


def _torch_fns():
    w = _t(_rng(5).uniform(0.5, 2.0, size=C))
    t_idx = torch.tensor([0, 3, 1, 4])
    y = torch.softmax(_t(_rng(6).normal(size=(4, C))), -1)
    return {
        "softmax": lambda a: xs.softmax(a, temperature=0.8),
        "log_softmax": lambda a: xs.log_softmax(a, axis=0),
        "logsumexp": lambda a: xs.logsumexp(a, axis=-1),
        "logsumexp-b": lambda a: xs.logsumexp(a, axis=-1, b=_t(np.arange(C) % 3)),
        "ce-index": lambda a: xs.cross_entropy(a, t_idx, weight=w, label_smoothing=0.1),
        "ce-probs": lambda a: xs.cross_entropy(a, y, reduction="sum", z_loss=0.01),
        "ce-index-z": lambda a: xs.cross_entropy(a, t_idx, z_loss=0.02, temperature=0.5),
    }


TORCH_FNS = list(_torch_fns())


@GENERIC
@pytest.mark.parametrize("name", TORCH_FNS)
def test_torch_func_grad_and_jvp(name, generic):
    fn = _torch_fns()[name]
    x = _t(_rng(7).normal(size=(4, C)))
    v = _t(_rng(8).normal(size=(4, C)))
    with _ctx(generic):
        out = fn(x)
        cot = _t(_rng(9).normal(size=tuple(out.shape)))

        def scalar(a):
            return (fn(a) * cot).sum()

        g_func = torch.func.grad(scalar)(x)
        xr = x.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(scalar(xr), xr)
        torch.testing.assert_close(g_func, g_ref, rtol=1e-12, atol=1e-13)
        # forward mode: <grad, v> == the jvp of the scalar function
        _, tangent = torch.func.jvp(scalar, (x,), (v,))
        torch.testing.assert_close(tangent, (g_ref * v).sum(), rtol=1e-10, atol=1e-12)


@GENERIC
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "ce-index", "ce-probs"])
def test_torch_func_vmap(name, generic):
    rng = _rng(10)
    xb = _t(rng.normal(size=(3, 4, C)))
    tb = torch.tensor(rng.integers(0, C, size=(3, 4)))
    yb = torch.softmax(_t(rng.normal(size=(3, 4, C))), -1)
    fns = {
        "softmax": lambda a: xs.softmax(a, axis=-1, temperature=1.3),
        "log_softmax": lambda a: xs.log_softmax(a, axis=0),
        "logsumexp": lambda a: xs.logsumexp(a, axis=1),
        "ce-index": lambda a, t: xs.cross_entropy(a, t, label_smoothing=0.1, z_loss=0.01),
        "ce-probs": lambda a, y: xs.cross_entropy(a, y, reduction="sum"),
    }
    fn = fns[name]
    with _ctx(generic):
        if name == "ce-index":
            got = torch.func.vmap(fn)(xb, tb)
            want = torch.stack([fn(xb[i], tb[i]) for i in range(3)])
            g = torch.func.vmap(torch.func.grad(fn))(xb, tb)
            g_want = torch.stack([torch.func.grad(fn)(xb[i], tb[i]) for i in range(3)])
            torch.testing.assert_close(g, g_want, rtol=1e-12, atol=1e-13)
        elif name == "ce-probs":
            got = torch.func.vmap(fn)(xb, yb)
            want = torch.stack([fn(xb[i], yb[i]) for i in range(3)])
        else:
            got = torch.func.vmap(fn)(xb)
            want = torch.stack([fn(xb[i]) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_torch_func_vmap_cross_entropy_per_example():
    """vmap over examples of 1-D logits equals reduction="none" on the batch."""
    rng = _rng(11)
    x = _t(rng.normal(size=(6, C)))
    t = torch.tensor(rng.integers(0, C, size=6))
    w = _t(rng.uniform(0.5, 2, size=C))
    got = torch.func.vmap(lambda a, b: xs.cross_entropy(a, b, weight=w, reduction="sum"))(x, t)
    want = xs.cross_entropy(x, t, weight=w, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


# --- torch.compile ------------------------------------------------------------------------

COMPILE_FNS = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "logsumexp-b",
    "ce-index",
    "ce-probs",
    "ce-index-z",
    "with-grad",
]


def _compile_fn(name: str):
    fns = _torch_fns()
    if name == "with-grad":
        t_idx = torch.tensor([0, 3, 1, 4])
        return lambda a: xs.cross_entropy_with_grad(a, t_idx, label_smoothing=0.1)
    return fns[name]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "name,generic",
    [(n, False) for n in COMPILE_FNS]
    + [("softmax", True), ("logsumexp", True), ("ce-index", True)],
    ids=lambda v: {False: "auto", True: "generic"}.get(v, v) if isinstance(v, bool) else v,
)
def test_torch_compile_aot_eager(name, generic):
    torch._dynamo.reset()
    fn = _compile_fn(name)
    x = _t(_rng(12).normal(size=(4, C)))
    with _ctx(generic):
        want = fn(x)
        compiled = torch.compile(fn, backend="aot_eager")
        got = compiled(x)
        if name == "with-grad":
            torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-13)
            return
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(compiled(xr).sum(), xr)
        xr2 = x.clone().requires_grad_(True)
        (g_want,) = torch.autograd.grad(fn(xr2).sum(), xr2)
        torch.testing.assert_close(g, g_want, rtol=1e-12, atol=1e-13)


@pytest.mark.filterwarnings("ignore::UserWarning")
@GENERIC
def test_torch_compile_out_of_range_index_gives_nan(generic):
    """Inside torch.compile the range check cannot run: an out-of-range class gives NaN,
    never a wrong finite number."""
    torch._dynamo.reset()
    x = _t(_rng(13).normal(size=(3, C)))
    t = torch.tensor([0, C + 2, 1])
    with _ctx(generic):
        out = torch.compile(
            lambda a, b: xs.cross_entropy(a, b, reduction="none"), backend="aot_eager"
        )(x, t)
    assert torch.isnan(out[1])
    assert torch.isfinite(out[[0, 2]]).all()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@GENERIC
@pytest.mark.parametrize("name", ["softmax", "logsumexp", "ce-index"])
def test_torch_compile_inductor(name, generic):
    torch._dynamo.reset()
    fn = _compile_fn(name)
    x = _t(_rng(14).normal(size=(4, C)))
    with _ctx(generic):
        compiled = torch.compile(fn)  # the default backend, inductor
        torch.testing.assert_close(compiled(x), fn(x), rtol=1e-12, atol=1e-13)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(compiled(xr).sum(), xr)
        xr2 = x.clone().requires_grad_(True)
        (g_want,) = torch.autograd.grad(fn(xr2).sum(), xr2)
        torch.testing.assert_close(g, g_want, rtol=1e-12, atol=1e-13)


# ============================================================================================
# Empty events, T = 0 and with_grad vs autodiff: torch and jax (the ad_backend fixture)
# ============================================================================================


def vjp(backend, fn, X, cot):
    """(value, cotangent-weighted gradient) with the backend's reverse mode."""
    if backend.library == "torch":
        Xg = X.detach().clone().requires_grad_(True)
        out = fn(Xg)
        (g,) = torch.autograd.grad(out, Xg, grad_outputs=cot)
        return out.detach(), g
    import jax

    # jitted: one compilation instead of one per primitive (eager JAX is slow to warm up)
    def both(a, c):
        out, pullback = jax.vjp(fn, a)
        return out, pullback(c)[0]

    return jax.jit(both)(X, cot)


def _empty_rows_data():
    x = _rng(15).normal(size=(4, C))
    x[1] = -np.inf  # an all -inf row
    x[2, [0, 3]] = -np.inf  # partly -inf
    mask = np.ones((4, C), dtype=bool)
    mask[3] = False  # a fully masked row
    mask[0, 2] = False
    return x, mask


@GENERIC
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "logsumexp-b"])
@pytest.mark.parametrize("masked", [False, True], ids=["nowhere", "where"])
def test_gradients_zero_on_empty_events(ad_backend, op, masked, generic):
    backend = ad_backend
    x, mask = _empty_rows_data()
    X = backend.asarray(x, "float64")
    W = backend.asarray(mask) if masked else None
    if op == "logsumexp-b":
        if masked:
            pytest.skip("b and where: covered by b == 0 rows")
        bnp = np.ones((4, C))
        bnp[3] = 0.0  # b == 0 everywhere: an empty sum
        bnp[0, 2] = 0.0
        B = backend.asarray(bnp, "float64")

        def fn(a):
            return xs.logsumexp(a, axis=-1, b=B)
    elif op == "logsumexp":

        def fn(a):
            return xs.logsumexp(a, axis=-1, where=W)
    else:
        f = getattr(xs, op)

        def fn(a):
            return f(a, axis=-1, where=W)

    with _ctx(generic):
        out = fn(X)
        cot = backend.asarray(_rng(16).normal(size=tuple(out.shape)), "float64")
        out, g = vjp(backend, fn, X, cot)
    out, g = backend.numpy_float(out), backend.numpy_float(g)
    assert np.all(np.isfinite(g)), g
    empty_rows = [1] + ([3] if masked or op == "logsumexp-b" else [])
    np.testing.assert_array_equal(g[empty_rows], 0.0)
    if op == "softmax":
        np.testing.assert_array_equal(out[empty_rows], 0.0)
    elif op == "log_softmax":
        assert np.all(out[empty_rows] == -np.inf)
    else:
        assert np.all(out[empty_rows] == -np.inf)
    # entries that take no part get no gradient; so do -inf entries where the derivative is
    # p = 0 (softmax, logsumexp; d log_softmax_j / d x_j = 1 - p_j is not 0 at a -inf x_j)
    if op != "log_softmax":
        assert g[2, 0] == 0 and g[2, 3] == 0
    if masked or op == "logsumexp-b":
        assert g[0, 2] == 0
    # the other rows: the gradient of the finite rows alone
    keep = [0, 2] if (masked or op == "logsumexp-b") else [0, 2, 3]
    with _ctx(generic):
        Xk = backend.asarray(x[keep], "float64")
        if op == "logsumexp-b":
            Bk = backend.asarray(bnp[keep], "float64")
            fk = lambda a: xs.logsumexp(a, axis=-1, b=Bk)  # noqa: E731
        elif op == "logsumexp":
            Wk = backend.asarray(mask[keep]) if masked else None
            fk = lambda a: xs.logsumexp(a, axis=-1, where=Wk)  # noqa: E731
        else:
            Wk = backend.asarray(mask[keep]) if masked else None
            fk = lambda a: getattr(xs, op)(a, axis=-1, where=Wk)  # noqa: E731
        cot_k = backend.asarray(backend.numpy_float(cot)[keep], "float64")
        _, gk = vjp(backend, fk, Xk, cot_k)
    np.testing.assert_allclose(g[keep], backend.numpy_float(gk), rtol=1e-12, atol=1e-13)


@GENERIC
@pytest.mark.parametrize("kind", ["index", "probs", "all-ignored"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient_zero_on_empty_rows(ad_backend, kind, reduction, generic):
    backend = ad_backend
    x, _ = _empty_rows_data()
    if kind == "index":
        t = backend.asarray(np.array([0, 2, 1, 4]))
    elif kind == "all-ignored":
        t = backend.asarray(np.array([-100, -100, -100, -100]))
    else:
        y = _rng(17).uniform(size=(4, C))
        y[2, [0, 3]] = 0.0  # zero probability on the -inf logits
        t = backend.asarray(y / y.sum(1, keepdims=True), "float64")
    X = backend.asarray(x, "float64")

    def fn(a):
        return xs.cross_entropy(a, t, reduction=reduction)

    with _ctx(generic):
        out, g = vjp(backend, fn, X, backend.asarray(np.float64(1.0), "float64"))
        _loss2, g2 = xs.cross_entropy_with_grad(X, t, reduction=reduction)
    g, g2 = backend.numpy_float(g), backend.numpy_float(g2)
    out = backend.numpy_float(out)
    for grad in (g, g2):
        assert np.all(np.isfinite(grad)), grad
        if kind == "all-ignored":
            np.testing.assert_array_equal(grad, 0.0)
        else:
            np.testing.assert_array_equal(grad[1], 0.0)
            assert grad[2, 0] == 0 and grad[2, 3] == 0
    if kind == "all-ignored":
        assert out == 0.0
    else:
        assert out == np.inf  # the all -inf row's loss is +inf
    np.testing.assert_allclose(g, g2, rtol=1e-12, atol=1e-13)


@GENERIC
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cross_entropy"])
def test_temperature_gradient_zero_at_t_zero(ad_backend, op, generic):
    backend = ad_backend
    x = _rng(18).normal(size=(3, C))
    temps = np.array([[0.0], [0.8], [0.0]])
    X = backend.asarray(x, "float64")
    Tm = backend.asarray(temps, "float64")
    cot_np = _rng(19).normal(size=(3, C))
    t_np = x.argmax(axis=1)  # at T = 0 the loss is finite only for the maximal class
    t_np[1] = (t_np[1] + 1) % C
    t_idx = backend.asarray(t_np)

    def fn(a, temp):
        if op == "cross_entropy":
            return xs.cross_entropy(a, t_idx, temperature=temp, reduction="none")
        out = getattr(xs, op)(a, temperature=temp)
        return out

    with _ctx(generic):
        if backend.library == "torch":
            Xg = X.clone().requires_grad_(True)
            Tg = Tm.clone().requires_grad_(True)
            out = fn(Xg, Tg)
            cot = backend.asarray(cot_np if op != "cross_entropy" else np.ones(3), "float64")
            if op == "log_softmax":
                cot = torch.where(torch.isfinite(out), cot, 0.0)
            gx, gt = torch.autograd.grad(out, (Xg, Tg), grad_outputs=cot)
        else:
            import jax
            import jax.numpy as jnp

            def both(a, temp):
                out, pull = jax.vjp(fn, a, temp)
                cot = jnp.asarray(cot_np if op != "cross_entropy" else np.ones(3))
                if op == "log_softmax":
                    cot = jnp.where(jnp.isfinite(out), cot, 0.0)
                return (out, *pull(cot))

            out, gx, gt = jax.jit(both)(X, Tm)
    gx, gt = backend.numpy_float(gx), backend.numpy_float(gt)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gt))
    assert gt[0, 0] == 0.0 and gt[2, 0] == 0.0, gt
    assert gt[1, 0] != 0.0  # an ordinary temperature does get a gradient
    np.testing.assert_array_equal(gx[[0, 2]], 0.0)  # the hard max is flat in x
    out_np = backend.numpy_float(out)
    if op == "softmax":
        hard = (x[[0, 2]] == x[[0, 2]].max(1, keepdims=True)).astype(float)
        np.testing.assert_array_equal(out_np[[0, 2]], hard)


# --- cross_entropy_with_grad == autodiff over random option combinations ------------------


def _random_combo(seed: int):
    rng = _rng(1000 + seed)
    shape_kind = ["2d", "kd1", "1d", "3d-last", "classes-first"][seed % 5]
    shape, axis = {
        "2d": ((6, C), -1),
        "kd1": ((2, C, 3), 1),
        "1d": ((C,), -1),
        "3d-last": ((3, 2, C), -1),
        "classes-first": ((C, 4), 0),
    }[shape_kind]
    kind = "index" if rng.uniform() < 0.6 else "probs"
    cls = axis % len(shape)
    x = rng.normal(scale=2.0, size=shape)
    ignore_index = int(rng.choice([-100, 1]))
    if kind == "index":
        tshape = tuple(n for i, n in enumerate(shape) if i != cls)
        t = rng.integers(0, C, size=tshape)
        if t.ndim and rng.uniform() < 0.7:
            t.reshape(-1)[0] = ignore_index
    else:
        t = rng.dirichlet(np.ones(C) * 0.7, size=int(np.prod(shape)) // C)
        t = np.moveaxis(t.reshape((*tuple(n for i, n in enumerate(shape) if i != cls), C)), -1, cls)
    opts = {
        "weight": rng.uniform(0.2, 2.0, size=C) if rng.uniform() < 0.5 else None,
        "ignore_index": ignore_index,
        "reduction": str(rng.choice(["mean", "sum", "none"])),
        "label_smoothing": float(rng.choice([0.0, 0.1, 0.35])),
        "z_loss": float(rng.choice([0.0, 0.02])),
    }
    # (a scalar T = 0 has its own tests: test_scalar_zero_temperature_*)
    tk = rng.choice(["one", "scalar", "array", "inf"], p=[0.3, 0.3, 0.3, 0.1])
    if tk == "scalar":
        opts["temperature"] = float(rng.uniform(0.3, 3.0))
    elif tk == "array":
        tshape = tuple(1 if i == cls else n for i, n in enumerate(shape))
        opts["temperature"] = rng.uniform(0.3, 3.0, size=tshape)
    elif tk == "inf":
        opts["temperature"] = float("inf")
    return x, t, axis, kind, opts


def _ad_params(n_torch: int, n_jax: int):
    from xpsoftmax.testing.backends import BY_ID

    out = []
    for bid, n in (
        ("torch:cpu", n_torch),
        ("torch:cuda", n_torch),
        ("jax:cpu", n_jax),
        ("jax:gpu", n_jax),
    ):
        marks = [pytest.mark.gpu] if bid.endswith(("cuda", "gpu")) else []
        out += [
            pytest.param(BY_ID[bid], seed, id=f"{bid}-{seed}", marks=marks) for seed in range(n)
        ]
    return out


@GENERIC
@pytest.mark.parametrize("backend,seed", _ad_params(30, 12))
def test_with_grad_equals_autodiff_random_options(backend, seed, generic):
    reason = backend.probe()
    if reason is not None:
        pytest.skip(reason)
    x, t, axis, kind, opts = _random_combo(seed)
    X = backend.asarray(x, "float64")
    T = backend.asarray(t, "float64" if kind == "probs" else None)
    kw = dict(opts)
    for k in ("weight", "temperature"):
        if isinstance(kw.get(k), np.ndarray):
            kw[k] = backend.asarray(kw[k], "float64")

    def fn(a):
        return xs.cross_entropy(a, T, axis=axis, **kw)

    with _ctx(generic):
        loss = fn(X)
        cot = backend.asarray(np.ones(tuple(loss.shape)), "float64")
        loss_ad, g_ad = vjp(backend, fn, X, cot)
        loss_wg, g_wg = xs.cross_entropy_with_grad(X, T, axis=axis, **kw)
    np.testing.assert_allclose(
        backend.numpy_float(loss_wg), backend.numpy_float(loss_ad), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(
        backend.numpy_float(g_wg), backend.numpy_float(g_ad), rtol=1e-11, atol=1e-13
    )


@pytest.mark.parametrize("seed", range(30))
def test_with_grad_no_autodiff_backends_equal_torch_autodiff(backend, seed):
    """NumPy, Dask, array-api-strict (no autodiff): cross_entropy_with_grad equals torch's
    autodiff of the same call."""
    if backend.autodiff:
        pytest.skip("covered by test_with_grad_equals_autodiff_random_options")
    x, t, axis, kind, opts = _random_combo(seed)
    kw_t = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    Xt = _t(x, True)
    Tt = torch.tensor(t)
    loss_t = xs.cross_entropy(Xt, Tt, axis=axis, **kw_t)
    (g_t,) = torch.autograd.grad(loss_t.sum(), Xt)
    kw = {
        k: (backend.asarray(v, "float64") if isinstance(v, np.ndarray) else v)
        for k, v in opts.items()
    }
    loss, g = xs.cross_entropy_with_grad(
        backend.asarray(x, "float64"),
        backend.asarray(t, "float64" if kind == "probs" else None),
        axis=axis,
        **kw,
    )
    np.testing.assert_allclose(
        backend.numpy_float(loss), loss_t.detach().numpy(), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(backend.numpy_float(g), g_t.numpy(), rtol=1e-11, atol=1e-13)


# ============================================================================================
# JAX
# ============================================================================================


def _jax():
    jax = pytest.importorskip("jax")
    return jax, jax.numpy


def _jax_fns():
    """name -> (op, extra positional arguments, keywords, the implementation "auto" picks)."""
    jax, jnp = _jax()
    w = jnp.asarray(_rng(20).uniform(0.5, 2.0, size=C))
    t_idx = jnp.asarray([0, 3, 1, 4])
    y = jax.nn.softmax(jnp.asarray(_rng(21).normal(size=(4, C))), axis=-1)
    b = jnp.asarray((np.arange(C) % 3).astype(float))
    return {
        "softmax": ("softmax", (), {"temperature": 0.8}, "jax.custom_jvp"),
        "log_softmax": ("log_softmax", (), {"axis": 0}, "jax.custom_jvp"),
        "softmax-where": ("softmax", (), {"where": jnp.asarray(np.arange(C) != 2)}, "generic"),
        "logsumexp": ("logsumexp", (), {"axis": -1}, "jax.custom_jvp"),
        "logsumexp-b": ("logsumexp", (), {"axis": -1, "b": b}, "generic"),
        "ce-index": (
            "cross_entropy",
            (t_idx,),
            {"label_smoothing": 0.1, "z_loss": 0.01},
            "jax.fused_jvp",
        ),
        "ce-index-weight": (
            "cross_entropy",
            (t_idx,),
            {"weight": w, "reduction": "none"},
            "generic",
        ),
        "ce-probs": ("cross_entropy", (y,), {"reduction": "sum", "temperature": 1.5}, "generic"),
    }


def _jax_fn(name: str):
    op, args, kw, impl = _jax_fns()[name]
    f = getattr(xs, op)

    def fn(a):
        return f(a, *args, **kw)

    def which(a):
        return xs.which(op, a, *args, **kw)

    return fn, which, impl


JAX_FNS = [
    "softmax",
    "log_softmax",
    "softmax-where",
    "logsumexp",
    "logsumexp-b",
    "ce-index",
    "ce-index-weight",
    "ce-probs",
]


def _fd_jvp(f, x: np.ndarray, v: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite difference of f along v (float64)."""
    return (np.asarray(f(x + h * v)) - np.asarray(f(x - h * v))) / (2 * h)


@GENERIC
@pytest.mark.parametrize("name", JAX_FNS)
def test_jax_grad_jvp_jit(name, generic):
    jax, jnp = _jax()
    fn, which, impl = _jax_fn(name)
    x_np = _rng(22).normal(size=(4, C))
    v_np = _rng(23).normal(size=(4, C))
    x, v = jnp.asarray(x_np), jnp.asarray(v_np)
    with _ctx(generic):
        out = fn(x)
        cot = jnp.asarray(_rng(24).normal(size=out.shape))

        def scalar(a):
            return jnp.sum(fn(a) * cot)

        g = jax.grad(scalar)(x)
        fd = _fd_jvp(lambda a: scalar(jnp.asarray(a)), x_np, v_np)
        np.testing.assert_allclose(float(jnp.sum(g * v)), fd, rtol=1e-6, atol=1e-7)
        # forward mode, against finite differences and against reverse mode
        out_j, tangent = jax.jvp(fn, (x,), (v,))
        np.testing.assert_allclose(np.asarray(out_j), np.asarray(out), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(
            np.asarray(tangent),
            _fd_jvp(lambda a: fn(jnp.asarray(a)), x_np, v_np),
            rtol=1e-6,
            atol=1e-7,
        )
        np.testing.assert_allclose(
            float(jnp.sum(tangent * cot)), float(jnp.sum(g * v)), rtol=1e-10, atol=1e-12
        )
        # jit of the value and of the gradient (fresh functions: the trace sees this context)
        np.testing.assert_allclose(
            np.asarray(jax.jit(lambda a: fn(a))(x)), np.asarray(out), rtol=1e-13, atol=1e-14
        )
        np.testing.assert_allclose(
            np.asarray(jax.jit(jax.grad(lambda a: jnp.sum(fn(a) * cot)))(x)),
            np.asarray(g),
            rtol=1e-12,
            atol=1e-13,
        )
        assert which(x) == ("generic" if generic else impl)


@GENERIC
@pytest.mark.parametrize("name", JAX_FNS)
def test_jax_vmap(name, generic):
    jax, jnp = _jax()
    fn, _, _ = _jax_fn(name)
    xb = jnp.asarray(_rng(25).normal(size=(3, 4, C)))
    with _ctx(generic):
        got = jax.vmap(fn)(xb)
        want = jnp.stack([fn(xb[i]) for i in range(3)])
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-13)
        # vmap of grad, and jit of vmap
        gfn = jax.grad(lambda a: jnp.sum(fn(a)))
        gb = jax.jit(jax.vmap(gfn))(xb)
        g_want = jnp.stack([gfn(xb[i]) for i in range(3)])
        np.testing.assert_allclose(np.asarray(gb), np.asarray(g_want), rtol=1e-12, atol=1e-13)


@GENERIC
def test_jax_vmap_cross_entropy_per_example(generic):
    jax, jnp = _jax()
    rng = _rng(26)
    x = jnp.asarray(rng.normal(size=(6, C)))
    t = jnp.asarray(rng.integers(0, C, size=6))
    with _ctx(generic):
        got = jax.jit(
            jax.vmap(lambda a, b: xs.cross_entropy(a, b, label_smoothing=0.2, reduction="sum"))
        )(x, t)
        want = xs.cross_entropy(x, t, label_smoothing=0.2, reduction="none")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-13)


@GENERIC
def test_jax_jit_out_of_range_index_gives_nan(generic):
    jax, jnp = _jax()
    x = jnp.asarray(_rng(27).normal(size=(3, C)))
    t = jnp.asarray([0, C + 1, 2])
    with _ctx(generic):
        out = jax.jit(lambda a, b: xs.cross_entropy(a, b, reduction="none"))(x, t)
    assert np.isnan(np.asarray(out)[1])
    assert np.all(np.isfinite(np.asarray(out)[[0, 2]]))


@GENERIC
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_jax_hessian_cross_entropy(kind, generic):
    """Second order (forward over reverse): the Hessian of the mean loss of one row is
    (diag(p) - p p^T) / T**2 for both target kinds (no smoothing, no z-loss)."""
    jax, jnp = _jax()
    x = jnp.asarray(_rng(28).normal(size=(1, C)))
    t = (
        jnp.asarray([2])
        if kind == "index"
        else jax.nn.softmax(jnp.asarray(_rng(29).normal(size=(1, C))))
    )
    with _ctx(generic):
        h = jax.jit(jax.hessian(lambda a: xs.cross_entropy(a, t, temperature=0.5)))(x)
    p = np.asarray(jax.nn.softmax(x / 0.5))[0]
    want = (np.diag(p) - np.outer(p, p)) / 0.25
    np.testing.assert_allclose(np.asarray(h).reshape(C, C), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_jax_jit_under_force_generic_retraces(op):
    """force_generic is read at trace time: a function jitted under it serves the generic
    implementation, and gives the same numbers as the fast path."""
    jax, jnp = _jax()
    x = jnp.asarray(_rng(30).normal(size=(3, C)))
    f = getattr(xs, op)
    fast = jax.jit(lambda a: f(a, axis=-1))(x)
    with xs.force_generic():
        assert xs.which(op, x, axis=-1) == "generic"
        gen = jax.jit(lambda a: f(a, axis=-1))(x)
    assert xs.which(op, x, axis=-1) != "generic"
    np.testing.assert_allclose(np.asarray(fast), np.asarray(gen), rtol=1e-13, atol=1e-14)


@GENERIC
@pytest.mark.parametrize(
    "op", ["softmax", "log_softmax", "cross_entropy", "cross_entropy_with_grad"]
)
@pytest.mark.parametrize("temperature", [0.0, float("inf")], ids=["T0", "Tinf"])
def test_scalar_limit_temperature_gradient_is_zero(ad_backend, op, temperature, generic):
    """A scalar T = 0 (hard max) or T = inf (uniform) is flat in x: a zero gradient.

    On torch the result may carry no autograd graph at all (then the gradient is zero by
    construction); where it does carry one, the gradient must be zero and finite."""
    backend = ad_backend
    x = _rng(31).normal(size=(3, C))
    t_np = x.argmax(axis=1)  # at T = 0 the loss is finite for the maximal class
    X = backend.asarray(x, "float64")
    tgt = backend.asarray(t_np)
    cot_np = _rng(32).normal(size=(3, C))

    def fn(a):
        if op == "cross_entropy":
            return xs.cross_entropy(
                a, tgt, temperature=temperature, reduction="none", label_smoothing=0.1
            )
        out = getattr(xs, op)(a, temperature=temperature)
        if op == "log_softmax":
            out = backend.xp.where(backend.xp.isfinite(out), out, 0.0)
        return out

    with _ctx(generic):
        if op == "cross_entropy_with_grad":
            loss, g = xs.cross_entropy_with_grad(
                X, tgt, temperature=temperature, label_smoothing=0.1
            )
            g = backend.numpy_float(g)
            loss_np = backend.numpy_float(loss)
            # At T = 0 the smoothed target puts mass on classes of probability 0: +inf.
            assert loss_np == np.inf if temperature == 0 else np.isfinite(loss_np)
        elif backend.library == "torch":
            Xg = X.clone().requires_grad_(True)
            out = fn(Xg)
            cot = backend.asarray(cot_np if op != "cross_entropy" else np.ones(3), "float64")
            if out.requires_grad:
                (g,) = torch.autograd.grad(out, Xg, grad_outputs=cot)
                g = backend.numpy_float(g)
            else:
                g = np.zeros_like(x)
        else:
            cot = backend.asarray(cot_np if op != "cross_entropy" else np.ones(3), "float64")
            g = backend.numpy_float(vjp(backend, fn, X, cot)[1])
    np.testing.assert_array_equal(g, 0.0)
    if op == "softmax":
        out = backend.numpy_float(xs.softmax(X, temperature=temperature))
        want = (
            np.full((3, C), 1 / C) if temperature else (x == x.max(1, keepdims=True)).astype(float)
        )
        np.testing.assert_allclose(out, want, rtol=1e-15)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_torch_native_trains_through_the_native_kernel(op, monkeypatch):
    """An eager training step through torch.native runs torch's own kernel (and backward);
    the safe path (all -inf rows replaced, the generic logsumexp) only where a row needs it,
    and then the gradient is still the generic one."""
    from xpsoftmax import _generic
    from xpsoftmax.backends.torch import native

    safe = []
    for module, name in ((native, "_safe_rows"), (_generic, "logsumexp")):
        real = getattr(module, name)
        counted = lambda *a, _real=real, **k: safe.append(1) or _real(*a, **k)  # noqa: E731
        monkeypatch.setattr(module, name, counted)
    fn = getattr(xs, op)
    x = torch.randn(4, 9, dtype=torch.float64)
    results = []
    for rows in ("plain", "dead"):
        if rows == "dead":
            x[2] = -np.inf
        for name in ("torch.native", "generic"):
            leaf = x.clone().requires_grad_()
            with xs.use(name):
                out = fn(leaf, axis=-1)
            (g,) = torch.autograd.grad(
                (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum(), leaf
            )
            results.append((rows, name, g))
        if rows == "plain":
            assert len(safe) == (1 if op == "logsumexp" else 0)  # only generic's own call
    for (rows, _, g_native), (_, _, g_generic) in zip(results[::2], results[1::2]):
        assert torch.isfinite(g_native).all(), rows
        torch.testing.assert_close(g_native, g_generic)
