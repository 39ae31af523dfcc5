"""The launchers of :mod:`.kernels` and the torch operators around them.

Each kernel is wrapped in a ``torch.library.custom_op`` with a fake (shape-only) version and its
autograd rule, so that ``torch.compile(fullgraph=True)`` treats it as one opaque operator and
``torch.autograd`` differentiates through it. The operators take a row-major ``(rows, n)``
tensor; :mod:`.entries` reshapes the caller's tensor into one (a view: only contiguous tensors
along trailing axes are accepted there).
"""

from __future__ import annotations

from typing import Any

import torch
import triton

from xpsoftmax.backends.torch.triton import kernels

#: Rows of at most this many entries are read once and kept on chip; longer rows are read in
#: chunks of :data:`CHUNK` with an online maximum, then once more to write the result.
ONE_PASS_MAX = 32768
CHUNK = 4096
#: Entries per warp: ``num_warps = BLOCK // ENTRIES_PER_WARP``, between 4 and 32.
ENTRIES_PER_WARP = 512


def config(n: int) -> tuple[int, bool, int]:
    """``(BLOCK, ONE_PASS, num_warps)`` for rows of ``n`` entries."""
    if n <= ONE_PASS_MAX:
        block, one_pass = triton.next_power_of_2(max(n, 1)), True
    else:
        block, one_pass = CHUNK, False
    return block, one_pass, min(32, max(4, block // ENTRIES_PER_WARP))


# --- softmax and log_softmax -------------------------------------------------------------------
@torch.library.custom_op("xpsoftmax::normalize", mutates_args=())
def normalize(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    """softmax (``log=False``) or log_softmax of each row of ``x`` divided by ``t``."""
    y = torch.empty_like(x)
    rows, n = x.shape
    if rows and n:
        block, one_pass, warps = config(n)
        kernels.normalize_kernel[(rows,)](
            x, y, n, 1.0 / t, x.stride(0), y.stride(0), LOG=log, BLOCK=block, ONE_PASS=one_pass,
            num_warps=warps,
        )  # fmt: skip
    return y


@normalize.register_fake
def _(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("xpsoftmax::normalize_backward", mutates_args=())
def normalize_backward(dy: torch.Tensor, y: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    """The gradient of :func:`normalize` with respect to ``x``, from its output ``y``."""
    dy = dy.contiguous()
    dx = torch.empty_like(y)
    rows, n = y.shape
    if rows and n:
        block, one_pass, warps = config(n)
        kernels.normalize_backward_kernel[(rows,)](
            dy, y, dx, n, 1.0 / t, y.stride(0), LOG=log, BLOCK=block, ONE_PASS=one_pass,
            num_warps=warps,
        )  # fmt: skip
    return dx


@normalize_backward.register_fake
def _(dy: torch.Tensor, y: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    return torch.empty_like(y)


def _normalize_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, ctx.t, ctx.log = inputs
    ctx.save_for_backward(output)


def _normalize_backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    (y,) = ctx.saved_tensors
    return normalize_backward(dy, y, ctx.t, ctx.log), None, None


normalize.register_autograd(_normalize_backward, setup_context=_normalize_setup)


# --- logsumexp ---------------------------------------------------------------------------------
@torch.library.custom_op("xpsoftmax::logsumexp_rows", mutates_args=())
def logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """logsumexp of each row of ``x``, in float32 (16-bit and float32 input alike)."""
    rows, n = x.shape
    out = torch.empty(rows, dtype=torch.float32, device=x.device)
    if rows:
        block, one_pass, warps = config(n)
        kernels.logsumexp_kernel[(rows,)](
            x, out, n, x.stride(0), BLOCK=block, ONE_PASS=one_pass, num_warps=warps
        )
    return out


@logsumexp_rows.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], dtype=torch.float32)


def _logsumexp_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0], output)


def _logsumexp_backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
    x, out = ctx.saved_tensors
    # d lse / d x = exp(x - lse); zero on an all -inf row (the contract: empty events).
    live = (out != -torch.inf)[:, None]
    p = torch.exp(x.to(torch.float32) - torch.where(live, out[:, None], 0.0))
    return (torch.where(live, p, 0.0) * g[:, None]).to(x.dtype)


logsumexp_rows.register_autograd(_logsumexp_backward, setup_context=_logsumexp_setup)


# --- cross-entropy with class-index targets ----------------------------------------------------
def _weight_arg(weight: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The kernels' ``W``: the class weights, or any pointer when there are none (unread)."""
    return x if weight is None else weight.contiguous()


@torch.library.custom_op("xpsoftmax::ce_rows", mutates_args=())
def ce_rows(
    x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, t: float, with_wz: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``x`` (rows, C): the maximum, ``log(sum(exp z))``, ``z`` at ``target`` (safe
    indices, int64) and ``sum(w * z)`` (zeros unless ``with_wz``), ``z = (x - shift) / t``;
    float32. See ``kernels.ce_rows_kernel``."""
    rows, n = x.shape
    big, lse, z_t, wz = (x.new_empty(rows, dtype=torch.float32) for _ in range(4))
    if not with_wz:
        wz.zero_()
    if rows:
        block, one_pass, warps = config(n)
        kernels.ce_rows_kernel[(rows,)](
            x, target, _weight_arg(weight, x), big, lse, z_t, wz, n, 1.0 / t, x.stride(0),
            HAS_W=weight is not None, WITH_WZ=with_wz, BLOCK=block, ONE_PASS=one_pass,
            num_warps=warps,
        )  # fmt: skip
    return big, lse, z_t, wz


@ce_rows.register_fake
def _(
    x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, t: float, with_wz: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = x.shape[0]
    return tuple(x.new_empty(rows, dtype=torch.float32) for _ in range(4))  # type: ignore[return-value]


@torch.library.custom_op("xpsoftmax::ce_grad", mutates_args=())
def ce_grad(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    big: torch.Tensor,
    lse: torch.Tensor,
    g_lse: torch.Tensor,
    g_zt: torch.Tensor,
    g_wz: torch.Tensor,
    t: float,
    with_wz: bool,
) -> torch.Tensor:
    """``(g_lse * p + g_zt * onehot + g_wz * w) / t`` per row, in ``x``'s dtype: the gradient
    of a loss written with :func:`ce_rows`'s statistics. See ``kernels.ce_grad_kernel``."""
    dx = torch.empty_like(x)
    rows, n = x.shape
    if rows and n:
        block, _, warps = config(min(n, CHUNK))
        as_f32 = [g.to(torch.float32).contiguous() for g in (g_lse, g_zt, g_wz)]
        kernels.ce_grad_kernel[(rows,)](
            x, target, _weight_arg(weight, x), big, lse, *as_f32, dx, n, 1.0 / t, x.stride(0),
            HAS_W=weight is not None, WITH_WZ=with_wz, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    return dx


@ce_grad.register_fake
def _(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    big: torch.Tensor,
    lse: torch.Tensor,
    g_lse: torch.Tensor,
    g_zt: torch.Tensor,
    g_wz: torch.Tensor,
    t: float,
    with_wz: bool,
) -> torch.Tensor:
    return torch.empty_like(x)


def _ce_rows_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, target, weight, ctx.t, ctx.with_wz = inputs
    big, lse, _, _ = output
    ctx.save_for_backward(x, target, weight, big, lse)


def _ce_rows_backward(
    ctx: Any, g_big: Any, g_lse: torch.Tensor, g_zt: torch.Tensor, g_wz: torch.Tensor
) -> tuple[torch.Tensor, None, None, None, None]:
    # The maximum's gradient is dropped: every loss formula reads the statistics through
    # differences in which the shift cancels (see kernels.ce_grad_kernel).
    x, target, weight, big, lse = ctx.saved_tensors
    dx = ce_grad(x, target, weight, big, lse, g_lse, g_zt, g_wz, ctx.t, ctx.with_wz)
    return dx, None, None, None, None


ce_rows.register_autograd(_ce_rows_backward, setup_context=_ce_rows_setup)
