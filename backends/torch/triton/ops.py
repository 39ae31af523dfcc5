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


def config(n: int) -> tuple[int, bool, int]:
    """``(BLOCK, ONE_PASS, num_warps)`` for rows of ``n`` entries."""
    if n <= ONE_PASS_MAX:
        block, one_pass = triton.next_power_of_2(max(n, 1)), True
    else:
        block, one_pass = CHUNK, False
    # About 16 entries per thread at the largest blocks, never fewer than 4 warps.
    return block, one_pass, min(32, max(4, block // 512))


# --- softmax and log_softmax -------------------------------------------------------------------
@torch.library.custom_op("xpsoftmax::normalize", mutates_args=())
def normalize(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    """softmax (``log=False``) or log_softmax of each row of ``x`` divided by ``t``."""
    y = torch.empty_like(x)
    rows, n = x.shape
    if rows and n:
        block, one_pass, warps = config(n)
        kernels.normalize_kernel[(rows,)](
            x, y, n, t, x.stride(0), y.stride(0), LOG=log, BLOCK=block, ONE_PASS=one_pass,
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
            dy, y, dx, n, t, y.stride(0), LOG=log, BLOCK=block, ONE_PASS=one_pass,
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
