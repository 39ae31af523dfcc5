"""Every Triton fast path against the generic implementation, interpreted on CPU tensors:
the kit's edge-case catalogue (values) in each dtype, once with rows read in one pass and once
read in small chunks (the online maximum), and the gradients through autograd."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import xpsoftmax as xs
from xpsoftmax.backends.torch.triton import ops
from xpsoftmax.testing import BY_ID, check_gradients, check_implementation
from xpsoftmax.testing.conformance import _plan, through_entry
from xpsoftmax.testing.gradients import DIFFERENTIABLE

TRITON = "torch.triton"
ENTRIES = {e.op: e for e in xs.fast_paths(library="torch") if e.name == TRITON}
CPU = BY_ID["torch:cpu"]
OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")


@pytest.fixture(params=["one_pass", "online"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """One pass over rows held on chip, or chunks of 4 (so that the catalogue's rows span
    several chunks and end in a partial one)."""
    if request.param == "online":
        monkeypatch.setattr(ops, "ONE_PASS_MAX", 0)
        monkeypatch.setattr(ops, "CHUNK", 4)
    yield request.param


def test_entries_registered() -> None:
    assert set(ENTRIES) == set(OPS)
    assert all(e.unavailable() is None and "cpu" in e.devices for e in ENTRIES.values())


def test_block_is_the_next_power_of_two() -> None:
    """``ops.config`` computes Triton's ``next_power_of_2`` itself (cheaper on the host)."""
    import triton

    for n in [*range(0, 2100), 4095, 4096, 4097, 32767, 32768]:
        block, one_pass, _ = ops.config(n)
        assert one_pass and block == triton.next_power_of_2(max(n, 1)), n


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("op", OPS)
def test_kernel_conforms(op: str, dtype: str, layout: str) -> None:
    entry = ENTRIES[op]

    def fast(*args: Any, **kw: Any) -> Any:
        plan = _plan(op, args, kw)
        return dataclasses.replace(plan, impl=entry.impl, name=entry.name).run()

    fast.__name__ = f"{entry.name}[{layout}]"
    check_implementation(op, fast, CPU, dtype, accepts=entry.accepts)


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_kernel_gradients(op: str) -> None:
    """The kit's gradient grid (empty inputs, all -inf rows, extreme temperatures...) through
    each entry, float32. Its first run on a GPU found empty inputs answered outside the
    graph (a backward raised), which the hand-written gradient tests below never tried."""
    check_gradients(op, through_entry(ENTRIES[op]), CPU, "float32", accepts=ENTRIES[op].accepts)


def test_dispatch_reaches_the_kernels() -> None:
    x = torch.zeros(2, 3)
    for op in ("softmax", "log_softmax", "logsumexp"):
        assert xs.which(op, x, axis=-1) == TRITON
    assert xs.which("cross_entropy", x, torch.tensor([0, 2])) == TRITON
    assert xs.which("cross_entropy", x, torch.zeros(2, 3)) != TRITON  # probabilities
    assert xs.which("softmax", x, axis=0) != TRITON  # not a trailing axis
    assert xs.which("softmax", x.T, axis=-1) != TRITON  # not contiguous
    assert xs.which("softmax", x.double()) != TRITON  # float64 stays native


def _rows(rng: np.random.Generator) -> np.ndarray:
    """Random rows plus the edges a gradient can meet: masked entries, an all -inf row, huge
    logits, ties at the maximum."""
    x = rng.normal(size=(6, 9)) * 3
    x[1, [0, 4, 5]] = -math.inf
    x[2] = -math.inf
    x[3] = x[3] * 1e30
    x[4, :3] = x[4].max() + 1.0
    return x


def _grad(op: str, x: torch.Tensor, cot: torch.Tensor, generic: bool, **kw: Any) -> Any:
    xg = x.clone().requires_grad_(True)
    with xs.force_generic() if generic else xs.use(TRITON):
        out = getattr(xs, op)(xg, axis=-1, **kw)
    cot = torch.where(torch.isfinite(out), cot.to(out.dtype), 0.0)
    (g,) = torch.autograd.grad(out, xg, grad_outputs=cot)
    return out, g


@pytest.mark.parametrize("temperature", [1.0, 0.3, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_gradient_equals_generic(
    op: str, dtype: torch.dtype, temperature: float, layout: str
) -> None:
    if op == "logsumexp" and temperature != 1.0:
        pytest.skip("logsumexp has no temperature")
    rng = np.random.default_rng(7)
    x = torch.tensor(_rows(rng), dtype=dtype)
    kw = {} if op == "logsumexp" else {"temperature": temperature}
    cot = torch.tensor(rng.normal(size=(6,) if op == "logsumexp" else (6, 9)), dtype=torch.float32)
    out, g = _grad(op, x, cot, generic=False, **kw)
    out_ref, g_ref = _grad(op, x, cot, generic=True, **kw)
    # bfloat16 keeps 8 bits: 2**-8 relative, amplified by cancellation in ``dy - sum(dy * y)``.
    tol = 1e-5 if dtype == torch.float32 else 6e-2
    torch.testing.assert_close(out.float(), out_ref.float(), rtol=tol, atol=tol, equal_nan=True)
    # A 16-bit gradient is computed from the rounded output, as torch's own is: absolute
    # errors of the output's rounding, relative to the largest entry.
    scale = float(g_ref.float().abs().max())
    torch.testing.assert_close(g.float(), g_ref.float(), rtol=tol, atol=tol * scale, equal_nan=True)
    assert torch.all(g[2] == 0)  # the all -inf row: a zero gradient, not NaN


def test_long_row_is_accurate() -> None:
    """A float32 row of 2**20 entries (the longest served), read in chunks: the sum of 2**20
    terms stays within a few units of rounding of float64's."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 2**20)).astype(np.float32)
    xt = torch.from_numpy(x)
    assert xs.which("logsumexp", xt, axis=-1) == TRITON
    want = np.log(np.exp(x.astype(np.float64)).sum())
    got = float(xs.logsumexp(xt, axis=-1)[0])
    assert abs(got - want) <= 8 * np.spacing(np.float32(want))
    p = xs.softmax(xt).double().numpy()
    np.testing.assert_allclose(p, np.exp(x - want), rtol=16 * 2**-24 * (1 + np.abs(x).max()))


def test_under_torch_compile() -> None:
    """The kernels are opaque custom operators: the whole function compiles as one graph."""
    x = torch.tensor(_rows(np.random.default_rng(1)), dtype=torch.float32)

    def f(a: torch.Tensor) -> torch.Tensor:
        return xs.log_softmax(a, temperature=0.5) + xs.logsumexp(a, axis=-1, keepdims=True)

    results = []
    for fn, context in ((torch.compile(f, fullgraph=True, backend="aot_eager"), xs.use(TRITON)),
                        (f, xs.force_generic())):  # fmt: skip
        xg = x.clone().requires_grad_(True)
        with context:
            out = fn(xg)
        # The backward kernels too (a cotangent that is 0 on the rows holding -inf results).
        cot = torch.where(torch.isfinite(out), torch.linspace(-1.0, 1.0, out.shape[-1]), 0.0)
        results.append((out, *torch.autograd.grad(out, xg, cot)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, equal_nan=True)


_CE_OPTIONS = [
    {},
    {"reduction": "none"},
    {"reduction": "sum", "weight": "w"},
    {"label_smoothing": 0.2},
    {"weight": "w", "label_smoothing": 0.1, "z_loss": 1e-2, "temperature": 0.7},
    {"z_loss": 1e-3, "ignore_index": 2, "temperature": 3.0},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("options", _CE_OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_cross_entropy_gradient_equals_generic(
    options: dict, dtype: torch.dtype, layout: str
) -> None:
    """Autograd through the two kernels, and cross_entropy_with_grad, against the generic
    path's autograd: rows with masked entries, all -inf, huge logits, ignored targets."""
    rng = np.random.default_rng(11)
    x = torch.tensor(_rows(rng), dtype=dtype)
    x[5, 0] = math.nan  # an ignored row with a NaN logit: a zero gradient all the same
    x[0, 7] = math.inf if dtype == torch.float32 else x[0, 7]  # a +inf logit: a NaN row
    ignore = options.get("ignore_index", -100)
    target = torch.tensor([1, 3, 0, 8, ignore, ignore])
    kw = {k: (torch.tensor(rng.uniform(0.2, 2.0, 9), dtype=torch.float32) if v == "w" else v)
          for k, v in options.items()}  # fmt: skip
    grads, losses = [], []
    for generic in (False, True):
        xg = x.clone().requires_grad_(True)
        with xs.force_generic() if generic else xs.use(TRITON):
            loss = xs.cross_entropy(xg, target, **kw)
            # An incoming gradient other than 1, per entry for reduction="none".
            cot = torch.linspace(0.5, 2.0, loss.numel()).reshape(loss.shape)
            (g,) = torch.autograd.grad(loss, xg, cot)
            losses.append(loss)
            grads.append(g)
            if kw.get("reduction", "mean") != "none":
                with_loss, with_grad = xs.cross_entropy_with_grad(x, target, **kw)
                losses.append(with_loss)
                grads.append(with_grad * cot)
    tol = 1e-5 if dtype == torch.float32 else 6e-2
    rows = [0, 1, 2, 3, 4]  # row 5: see below
    ref = grads[-1][rows].float()
    scale = float(torch.nan_to_num(ref, nan=0.0).abs().max())
    for loss, g in zip(losses, grads):
        torch.testing.assert_close(loss, losses[-1], rtol=tol, atol=tol, equal_nan=True)
        torch.testing.assert_close(g[rows].float(), ref, rtol=tol, atol=tol * scale, equal_nan=True)
    assert torch.all(grads[0][2] == 0)  # all -inf: no gradient
    # The ignored row with a NaN logit takes no part: a zero gradient from the kernels and
    # from the generic cross_entropy_with_grad. (Autodiff of the generic formula gives NaN
    # there, 0 * NaN through the row's logsumexp: left as found, see the GPU issue's note.)
    kernels = grads[:1] if kw.get("reduction") == "none" else grads[:2]
    assert all(torch.all(g[5] == 0) for g in kernels)


@pytest.mark.parametrize(
    "g",
    [
        torch.tensor(1.0),  # a loss's backward(): nothing to do
        torch.tensor(0.5),
        torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0]),  # one per row
        torch.tensor(3.0).expand(7),  # one for all rows, expanded (reduction="none" + sum)
    ],
    ids=["one", "shared", "per_row", "expanded"],
)
def test_scale_reaches_every_row(g: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backward's scaling with fewer programs than rows (each program takes every P-th
    row) scales every row, and only by its own incoming gradient."""
    monkeypatch.setattr(ops, "SHARED_SCALE_PROGRAMS", 2)
    grad = torch.tensor(np.random.default_rng(7).normal(size=(7, 5)), dtype=torch.float32)
    want = grad * (g if g.dim() == 0 else g[:, None])
    ops._launch_scale(grad, g)
    torch.testing.assert_close(grad, want, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_backward_twice(reduction: str) -> None:
    """The first backward scales the gradient the forward wrote (rows whose incoming gradient
    is exactly 1 are skipped on the device); a second one (``retain_graph``) recomputes it:
    both equal the generic path's, and the logits are never written."""
    x = torch.tensor(_rows(np.random.default_rng(6)), dtype=torch.float32)
    before = x.clone()
    target = torch.tensor([1, 3, 0, 8, -100, 2])
    grads = []
    for context in (xs.use(TRITON), xs.force_generic()):
        xg = x.clone().requires_grad_(True) if grads else x.requires_grad_(True)
        with context:
            loss = xs.cross_entropy(xg, target, reduction=reduction, label_smoothing=0.1)
        cot = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0, 3.0]) if reduction == "none" else None
        first = torch.autograd.grad(loss, xg, cot, retain_graph=True)[0]
        second = torch.autograd.grad(loss, xg, None if cot is None else cot * 2.0)[0]
        grads.append((first, second))
    assert torch.equal(x.detach(), before)
    rows = [0, 1, 3, 4, 5]  # row 2 is all -inf: no gradient
    for got, want in zip(grads[0], grads[1]):
        torch.testing.assert_close(got[rows], want[rows], equal_nan=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_under_torch_compile(reduction: str) -> None:
    """Cross-entropy's operators (the loss and its reduction, the gradient) in one compiled
    graph, forward and backward, equal the generic path's."""
    x = torch.tensor(_rows(np.random.default_rng(4)), dtype=torch.float32)
    target = torch.tensor([1, 3, 0, 8, -100, 2])

    def f(a: torch.Tensor) -> torch.Tensor:
        return xs.cross_entropy(a, target, reduction=reduction, label_smoothing=0.1) * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got, want = [], []
    for out, fn, context in ((got, compiled, xs.use(TRITON)), (want, f, xs.force_generic())):
        xg = x.clone().requires_grad_(True)
        with context:
            loss = fn(xg)
        out += [loss, *torch.autograd.grad(loss.sum(), xg)]
    torch.testing.assert_close(got[0], want[0], equal_nan=True)
    rows = [0, 1, 3, 4, 5]  # row 2 is all -inf (NaN loss); its gradient is 0 in both
    torch.testing.assert_close(got[1][rows], want[1][rows], equal_nan=True)


@pytest.mark.parametrize("rows", [1, 16, 37])
def test_cross_entropy_reduction_over_many_rows(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reduction kernel's loop over rows (16 a step here) and its last partial step: the
    mean and the sum of the entries, against float64; a mean over nothing is 0 with a zero
    gradient."""
    monkeypatch.setattr(ops, "REDUCE_BLOCK", 16)
    rng = np.random.default_rng(rows)
    logits = rng.normal(size=(rows, 5)).astype(np.float32)
    target = rng.integers(0, 5, rows)
    target[1::3] = -100
    x, t = torch.from_numpy(logits), torch.from_numpy(target)
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    keep = target != -100
    per = (lse - logits[np.arange(rows), np.where(keep, target, 0)])[keep]
    with xs.use(TRITON):
        for reduction, want in (("sum", per.sum()), ("mean", per.mean())):
            got = xs.cross_entropy(x, t, reduction=reduction)
            assert got.dtype == torch.float32
            np.testing.assert_allclose(float(got), want, rtol=1e-5)
        xg = x.clone().requires_grad_(True)
        nothing = xs.cross_entropy(xg, torch.full_like(t, -100))
        (g,) = torch.autograd.grad(nothing, xg)
    assert float(nothing) == 0.0 and torch.all(g == 0)


def test_under_torch_func() -> None:
    """torch.func's transforms reach the kernels through the custom operators (the eager
    path uses autograd Functions): their gradients equal the generic path's."""
    x = torch.tensor(_rows(np.random.default_rng(2)), dtype=torch.float32)
    w = torch.linspace(-1.0, 1.0, x.shape[-1])

    def loss(a: torch.Tensor) -> torch.Tensor:
        out = xs.log_softmax(a, temperature=0.5)
        return (torch.where(torch.isfinite(out), out, 0.0) * w).sum() + xs.cross_entropy(
            a, torch.tensor([1, 3, 0, 8, 2, 5])
        )

    with xs.use(TRITON):
        got = torch.func.grad(loss)(x)
    with xs.force_generic():
        want = torch.func.grad(loss)(x)
    torch.testing.assert_close(got, want, equal_nan=True)
