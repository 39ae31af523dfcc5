"""The compiled CPU kernels (numba, ``xpsoftmax.backends.numpy.compiled``) on torch CPU
tensors: launchers that read and write tensors through zero-copy NumPy views, and the
autograd Functions that give them a backward (``torch.compiled``'s calls that differentiate).

The three layers of a fused op: the kernel (the NumPy backend's), its launcher here (a tensor
in, a tensor out), and an ``autograd.Function`` whose forward is the launcher and whose
backward is written in torch operations on the saved output:

- softmax ``y = softmax(x / T)``: ``dx = y * (g - sum(g * y)) / T``;
- log_softmax ``y = log_softmax(x / T)``: ``dx = (g - exp(y) * sum(g)) / T``;
- logsumexp ``l``: ``dx = g * exp(x - l)``;
- cross-entropy: the kernel's gradient ``G`` (computed in the forward, in the same pass as
  the loss, and saved in place of the logits): ``dx = g * G``.

The contract's edges follow the generic path, checked by the kit's
:func:`~xpsoftmax.testing.check_gradients`: an all -inf slice has the gradient 0 (the
formulas alone give ``g`` for log_softmax and ``0 * inf`` for logsumexp; softmax gives
``0 * g``, 0 unless ``g`` is not finite, as the generic path does), and a row holding NaN or
+inf gives NaN, as its output does. softmax and log_softmax of 16-bit tensors run on their
float32 values, rounded after the Function (``exp`` of a bfloat16 log_softmax is off by up
to 2%); the cross-entropy's ``G`` is rounded once, to the logits' dtype. The first three
backwards are themselves differentiable (a second derivative goes through the Function
again); the cross-entropy's is not (``G`` is a constant of the kernel): a backward with
``create_graph=True`` through it raises a RuntimeError saying so, rather than giving second
derivatives without its part.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from xpsoftmax._checks import CrossEntropySettings
from xpsoftmax.backends.torch import index_target

SECOND_DERIVATIVE = (
    "cross_entropy's compiled CPU kernel (torch.compiled) has no second derivative "
    "(create_graph=True): compute the loss inside `with xpsoftmax.use('torch.native'):`"
)

_KINDS = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _view(x: torch.Tensor) -> tuple[np.ndarray, str]:
    """``(the tensor's memory as a NumPy array, its kind)``, no copy (``detach``:
    ``numpy()`` refuses a tensor that requires grad even where no graph is recorded);
    16-bit tensors as their uint16 bits, as the kernels read them."""
    x = x.detach()
    if x.dtype == torch.float32:
        return x.numpy(), "float32"
    return x.view(torch.int16).numpy().view(np.uint16), _KINDS[x.dtype]


def _tensor(a: np.ndarray, kind: str = "float32") -> torch.Tensor:
    """The inverse of :func:`_view` for a result of ``kind``."""
    if kind == "float32":
        return torch.from_numpy(np.asarray(a))
    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float16
    return torch.from_numpy(a.view(np.int16)).view(dtype)


def compiled() -> Any:
    """The NumPy backend's kernel module, imported at the first call that runs a kernel (not
    when the torch backend loads: no other backend is imported before its arrays arrive)."""
    from xpsoftmax.backends.numpy import compiled

    return compiled


# --- launchers ------------------------------------------------------------------------------


def normalize(x: torch.Tensor, axes: tuple[int, ...], inv_t: float, log: bool) -> torch.Tensor:
    raw, kind = _view(x)
    return _tensor(compiled().normalize_rows(raw, axes, inv_t, log, kind), kind)


def logsumexp(x: torch.Tensor, axes: tuple[int, ...], keepdims: bool) -> torch.Tensor:
    return _tensor(compiled().logsumexp_rows(*_view(x), axes, keepdims))


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    options: CrossEntropySettings,
    inv_t: float,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = None if options.weight is None else _view(options.weight.to(torch.float32))[0]
    o = dataclasses.replace(options, weight=weight)
    t = index_target(target).detach().numpy()
    raw, kind = _view(logits)
    loss, grad = compiled().cross_entropy_rows(raw, kind, t, o, inv_t, with_grad)
    return _tensor(loss), (None if grad is None else _tensor(grad, kind))


# --- backwards ------------------------------------------------------------------------------


def _zero_where_dead(gx: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    """``gx`` with 0 on the slices where the log_softmax ``y`` is all -inf (an all -inf
    input). The first entries are read first (a host read: eager CPU tensors only), so the
    full check costs a pass only when some first entry is -inf."""
    if not bool((y.narrow(dim, 0, 1) == -math.inf).any()):
        return gx
    dead = torch.amax(y, dim=dim, keepdim=True) == -math.inf
    return torch.where(dead, torch.zeros((), dtype=gx.dtype), gx)


def normalization_grad(
    g: torch.Tensor, y: torch.Tensor, dim: int, inv_t: float, log: bool
) -> torch.Tensor:
    """The gradient of ``softmax(x / T)`` (``log``: of its log) with respect to ``x``, from
    the float32 output ``y`` and the upstream gradient ``g``: torch's own fused backward
    kernels (one pass, differentiable again), the formulas above."""
    if log:
        gx = torch._log_softmax_backward_data(g, y, dim, y.dtype)
        gx = _zero_where_dead(gx, y, dim)
    else:
        # An all -inf slice (y = 0) gets 0 * (g - 0): 0, or NaN where g is not finite, as on
        # the generic path.
        gx = torch._softmax_backward_data(g, y, dim, y.dtype)
    return gx if inv_t == 1.0 else gx * inv_t


def logsumexp_grad(
    g: torch.Tensor, x: torch.Tensor, lse: torch.Tensor, axes: tuple[int, ...]
) -> torch.Tensor:
    """The gradient of ``logsumexp(x)`` over ``axes`` with respect to ``x``: ``g`` times the
    softmax ``exp(x - lse)``, 0 on all -inf slices (``lse = -inf``). Where every ``lse`` is
    finite and no graph is recorded, the softmax is the kernel's (one pass instead of three
    torch operations)."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    l32, g32 = lse.float().reshape(kept), g.float().reshape(kept)
    x32 = x.float()
    if not torch.is_grad_enabled() and bool(torch.isfinite(l32).all()):
        return normalize(x32, axes, 1.0, False).mul_(g32).to(x.dtype)
    dead = l32 == -math.inf
    if not bool(dead.any()):
        return (g32 * torch.exp(x32 - l32)).to(x.dtype)
    # On all -inf slices exp(x - 0) = 0, not exp(-inf + inf) = NaN: no NaN in this
    # function's own derivative either (the second derivative of the masked branch).
    p = torch.exp(x32 - torch.where(dead, 0.0, l32))
    return torch.where(dead, 0.0, g32 * p).to(x.dtype)


# --- autograd Functions ---------------------------------------------------------------------


def differentiable_normalize(x: torch.Tensor, dim: int, inv_t: float, log: bool) -> torch.Tensor:
    """:class:`Normalize` of ``x``: 16-bit tensors through their float32 values, and the
    float32 output rounded outside the Function (the backward needs the unrounded output:
    ``exp`` of a log_softmax rounded to bfloat16 is off by up to 2% where it is -10)."""
    if x.dtype == torch.float32:
        return Normalize.apply(x, dim, inv_t, log)
    return Normalize.apply(x.to(torch.float32), dim, inv_t, log).to(x.dtype)


class Normalize(torch.autograd.Function):
    """softmax (``log=False``) or log_softmax over ``dim`` (the last) at ``1 / T = inv_t``,
    of a float32 tensor."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, inv_t: float, log: bool) -> torch.Tensor:
        y = normalize(x, (dim,), inv_t, log)
        ctx.save_for_backward(y)
        ctx.dim, ctx.inv_t, ctx.log = dim, inv_t, log
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (y,) = ctx.saved_tensors
        return normalization_grad(g, y, ctx.dim, ctx.inv_t, ctx.log), None, None, None


class LogSumExp(torch.autograd.Function):
    """logsumexp over trailing ``axes``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, axes: tuple[int, ...], keepdims: bool) -> torch.Tensor:
        lse = logsumexp(x, axes, keepdims)
        ctx.save_for_backward(x, lse)
        ctx.axes = axes
        return lse

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, lse = ctx.saved_tensors
        return logsumexp_grad(g, x, lse, ctx.axes), None, None


class CrossEntropy(torch.autograd.Function):
    """Cross-entropy with class indices on the last axis; the gradient comes from the same
    kernel pass as the loss."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        options: CrossEntropySettings,
        inv_t: float,
    ) -> torch.Tensor:
        loss, grad = cross_entropy(logits, target, options, inv_t, with_grad=True)
        ctx.save_for_backward(grad)
        ctx.per_entry = options.reduction == "none"
        return loss

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would be 0
            raise RuntimeError(SECOND_DERIVATIVE)
        (grad,) = ctx.saved_tensors
        # reduction="none": G is the gradient of the sum of the entries' losses.
        scale = g.unsqueeze(-1) if ctx.per_entry else g
        # A 0-d float32 g keeps grad's dtype and is applied in float32 (rounded once), in one
        # pass; per-entry ones give float32, rounded below.
        return (grad * scale).to(grad.dtype), None, None, None
