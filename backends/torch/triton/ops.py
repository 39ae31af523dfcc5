"""The launchers of :mod:`.kernels` and the torch operators around them.

Each launcher (``_launch_*``) is reached in one of three ways, chosen per call by the public
function of its name:

* eager, no gradient wanted: the launcher itself (the least host overhead);
* eager with autograd: a ``torch.autograd.Function`` whose backward is the matching launcher
  (``torch.library``'s dispatch cost 65 us more than the Function for a cross-entropy forward
  + backward on this project's CPU, 35 us for softmax);
* under ``torch.compile``: a ``torch.library.custom_op`` with a fake (shape-only) version and
  the same autograd rule, which ``torch.compile(fullgraph=True)`` treats as one opaque
  operator. (``torch.func``'s transforms reach neither: a custom operator's autograd rule does
  not support them, and a kernel cannot be vmapped; :mod:`.entries` sends those calls to the
  generic path.)

The functions take a row-major ``(rows, n)`` tensor; :mod:`.entries` reshapes the caller's
tensor into one (a view: only contiguous tensors along trailing axes are accepted there).
"""

from __future__ import annotations

from typing import Any

import torch

from xpsoftmax.backends.torch.triton import kernels


def _as_operator(x: torch.Tensor) -> bool:
    """Whether this call takes the custom operator: traced by torch.compile."""
    return torch.compiler.is_compiling()


def _differentiated(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


#: Rows of at most this many entries are read once and kept on chip; longer rows are read in
#: chunks of :data:`CHUNK` with an online maximum, then once more to write the result.
ONE_PASS_MAX = 32768
CHUNK = 4096
#: Entries per warp: ``num_warps = BLOCK // ENTRIES_PER_WARP``, between 4 and 32.
ENTRIES_PER_WARP = 512


def config(n: int) -> tuple[int, bool, int]:
    """``(BLOCK, ONE_PASS, num_warps)`` for rows of ``n`` entries."""
    if n <= ONE_PASS_MAX:
        # The next power of two (triton.next_power_of_2's answer, at a thirtieth of its host
        # cost: a call through Triton's constexpr machinery).
        block, one_pass = 1 << (max(n, 1) - 1).bit_length(), True
    else:
        block, one_pass = CHUNK, False
    return block, one_pass, min(32, max(4, block // ENTRIES_PER_WARP))


# --- softmax and log_softmax -------------------------------------------------------------------
def _launch_normalize(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
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


_normalize_op = torch.library.custom_op("xpsoftmax::normalize", mutates_args=())(_launch_normalize)


@_normalize_op.register_fake
def _(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    return torch.empty_like(x)


def _launch_normalize_backward(
    dy: torch.Tensor, y: torch.Tensor, t: float, log: bool
) -> torch.Tensor:
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


_normalize_backward_op = torch.library.custom_op("xpsoftmax::normalize_backward", mutates_args=())(
    _launch_normalize_backward
)


@_normalize_backward_op.register_fake
def _(dy: torch.Tensor, y: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    return torch.empty_like(y)


def _normalize_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, ctx.t, ctx.log = inputs
    ctx.save_for_backward(output)


def _normalize_backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    (y,) = ctx.saved_tensors
    return normalize_backward(dy, y, ctx.t, ctx.log), None, None


_normalize_op.register_autograd(_normalize_backward, setup_context=_normalize_setup)


# --- logsumexp ---------------------------------------------------------------------------------
def _launch_logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """logsumexp of each row of ``x``, in float32 (16-bit and float32 input alike)."""
    rows, n = x.shape
    out = torch.empty(rows, dtype=torch.float32, device=x.device)
    if rows:
        block, one_pass, warps = config(n)
        kernels.logsumexp_kernel[(rows,)](
            x, out, n, x.stride(0), BLOCK=block, ONE_PASS=one_pass, num_warps=warps
        )
    return out


_logsumexp_rows_op = torch.library.custom_op("xpsoftmax::logsumexp_rows", mutates_args=())(
    _launch_logsumexp_rows
)


@_logsumexp_rows_op.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], dtype=torch.float32)


def _logsumexp_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0], output)


def _launch_logsumexp_backward(x: torch.Tensor, out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g[:, None] * exp(x - out[:, None])``: d logsumexp / d x scaled by the incoming ``g``
    (one per row), zero on an all -inf row (the contract: empty events)."""
    dx = torch.empty_like(x)
    rows, n = x.shape
    if rows and n:
        block, _, warps = config(min(n, CHUNK))
        g = g.to(torch.float32)
        kernels.logsumexp_backward_kernel[(rows,)](
            x, out, g, g.stride(0), dx, n, x.stride(0), BLOCK=block, num_warps=warps
        )
    return dx


_logsumexp_backward_op = torch.library.custom_op("xpsoftmax::logsumexp_backward", mutates_args=())(
    _launch_logsumexp_backward
)


@_logsumexp_backward_op.register_fake
def _(x: torch.Tensor, out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _logsumexp_backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
    x, out = ctx.saved_tensors
    if _as_operator(g):
        return _logsumexp_backward_op(x, out, g)
    return _launch_logsumexp_backward(x, out, g)


_logsumexp_rows_op.register_autograd(_logsumexp_backward, setup_context=_logsumexp_setup)


# --- cross-entropy with class-index targets ----------------------------------------------------
# Two ways through the kernels. Eager with autograd (``_CrossEntropyTrain``): the forward
# kernel also writes the gradient (a row held on chip is read once, the gradient written once:
# the least traffic there is), and backward scales that buffer in place by the incoming
# gradient, skipped on the device where it is 1. Forward only, and under torch.compile (whose
# operators may not mutate a saved buffer): the forward keeps per-row statistics, from which
# ``ce_grad_kernel`` recomputes the gradient in backward (one more read of the logits).

#: The statistics the forward kernel keeps per row for the gradient kernel.
_STATS = 5
#: Rows summed per step by the one-program kernels (the mean's denominator, the reduction).
REDUCE_BLOCK = 4096
REDUCE_WARPS = 8
#: ``reduction`` as the launchers take it.
NONE, SUM, MEAN = 0, 1, 2


def _pointer(tensor: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A kernel argument that may be unread: ``tensor``, or any tensor in its place."""
    return x if tensor is None else tensor


def _forward(
    args: tuple[Any, ...], reduction: int, write_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(loss, stats, grad or None, factor)`` for ``args = (x, target, weight,
    ignore_index, has_ignore, t, eps, z_loss)``: ``x`` (rows, C), rows > 0, and its class
    indices ``target`` (rows,); the loss reduced (per entry for ``NONE``), float32; the
    ``(5, rows)`` statistics of ``ce_grad_kernel``; the gradient of the loss (``write_grad``);
    the mean's factor (``MEAN``; an unread 0-d tensor otherwise). At most three
    kernels, whatever the options: a training step's host cost is its launches."""
    x, target, weight, ignore_index, has_ignore, t, eps, z_loss = args
    rows, n = x.shape
    per = x.new_empty(rows, dtype=torch.float32)
    stats = x.new_empty((_STATS, rows), dtype=torch.float32)
    grad = torch.empty_like(x) if write_grad else None
    den = per.new_empty(())
    factor = per.new_empty(())
    if reduction == MEAN:
        kernels.ce_mean_kernel[(1,)](
            target, _pointer(weight, x), rows, n, ignore_index, den, factor,
            HAS_W=weight is not None, HAS_IGNORE=has_ignore, BLOCK=REDUCE_BLOCK,
            num_warps=REDUCE_WARPS,
        )  # fmt: skip
    block, one_pass, warps = config(n)
    # The weights' total is read only with label smoothing.
    w_total = weight.sum() if weight is not None and eps != 0 else x
    kernels.ce_forward_kernel[(rows,)](
        x, target, _pointer(weight, x), per, stats, _pointer(grad, x), factor, rows, n,
        1.0 / t, ignore_index, w_total, eps, z_loss, x.stride(0), HAS_W=weight is not None,
        HAS_IGNORE=has_ignore, SMOOTH=eps != 0, Z_LOSS=z_loss != 0, WRITE_GRAD=write_grad,
        HAS_FACTOR=reduction == MEAN, BLOCK=block, ONE_PASS=one_pass, num_warps=warps,
    )  # fmt: skip
    if reduction == NONE:
        return per, stats, grad, factor
    loss = per.new_empty(())
    kernels.ce_reduce_kernel[(1,)](
        per, rows, den, loss, MEAN=reduction == MEAN, BLOCK=REDUCE_BLOCK, num_warps=REDUCE_WARPS
    )
    return loss, stats, grad, factor


def _launch_cross_entropy_rows(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per, stats)``: each entry's loss and the gradient kernel's statistics."""
    args = (x, target, weight, ignore_index, has_ignore, t, eps, z_loss)
    per, stats, _, _ = _forward(args, NONE, False)
    return per, stats


def _launch_cross_entropy_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
    reduction: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, stats, factor)``: the summed (``SUM``) or averaged (``MEAN``) loss, the
    gradient kernel's statistics and the mean's factor."""
    args = (x, target, weight, ignore_index, has_ignore, t, eps, z_loss)
    loss, stats, _, factor = _forward(args, reduction, False)
    return loss, stats, factor


def _launch_cross_entropy_grad(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    g: torch.Tensor | None,
    factor: torch.Tensor | None,
    t: float,
    smooth: bool,
) -> torch.Tensor:
    """The gradient with respect to ``x`` of the entries' losses, each scaled by ``g`` (one per
    row, a 0-d tensor for all, or None for 1) and by ``factor`` (0-d, or None), recomputed
    from their ``stats``. See ``kernels.ce_grad_kernel``."""
    dx = torch.empty_like(x)
    rows, n = x.shape
    block, _, warps = config(min(n, CHUNK))
    if g is not None:
        g = g.to(torch.float32)
    kernels.ce_grad_kernel[(rows,)](
        x, target, _pointer(weight, x), stats, rows, _pointer(g, stats),
        g.stride(0) if g is not None and g.dim() else 0, _pointer(factor, stats), dx, n,
        1.0 / t, x.stride(0), HAS_W=weight is not None, SMOOTH=smooth, HAS_G=g is not None,
        HAS_FACTOR=factor is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return dx


#: Programs of the backward's scaling when one incoming gradient serves every row (0-d, or
#: expanded from one: a loss's ``backward()``). With one program per row, most finding 1 and
#: returning, a training step on 16384 rows of 1024 took 85 us of GPU time against 68 us for
#: the same kernels without that backward (H100, 2026-11-27). 1024 programs are several per
#: SM, meant to keep the scaling at memory speed when the gradient is not 1 (not measured).
SHARED_SCALE_PROGRAMS = 1024


def _launch_scale(grad: torch.Tensor, g: torch.Tensor) -> None:
    """``grad *= g`` per row (``g`` one per row, or 0-d), in place; rows whose ``g`` is 1 are
    left alone on the device."""
    rows, n = grad.shape
    g = g.to(torch.float32)
    block, _, warps = config(min(n, CHUNK))
    g_stride = g.stride(0) if g.dim() else 0
    programs = rows if g_stride else min(rows, SHARED_SCALE_PROGRAMS)
    kernels.ce_scale_kernel[(programs,)](
        grad, g, g_stride, rows, n, grad.stride(0), BLOCK=block, num_warps=warps
    )


class _CrossEntropyTrain(torch.autograd.Function):
    """Eager autograd: the forward writes the gradient (``_forward``'s ``write_grad``), the
    first backward scales it in place; a second backward (``retain_graph=True``) recomputes
    it from the statistics, since the buffer is scaled (and may now be ``x.grad``)."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> torch.Tensor:  # old style: no signature binding
        x, target, weight, _, _, ctx.t, eps, _, ctx.reduction = args
        ctx.smooth = eps != 0
        loss, ctx.stats, ctx.grad, ctx.factor = _forward(args[:-1], ctx.reduction, True)
        ctx.save_for_backward(x, target, weight)
        return loss

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        if ctx.grad is not None:
            grad, ctx.grad = ctx.grad, None
            _launch_scale(grad, g)
        else:
            x, target, weight = ctx.saved_tensors
            factor = ctx.factor if ctx.reduction == MEAN else None
            grad = _launch_cross_entropy_grad(
                x, target, weight, ctx.stats, g, factor, ctx.t, ctx.smooth
            )
        return (grad,) + (None,) * 8


_cross_entropy_rows_op = torch.library.custom_op("xpsoftmax::cross_entropy_rows", mutates_args=())(
    _launch_cross_entropy_rows
)


@_cross_entropy_rows_op.register_fake
def _(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.shape[0]
    return x.new_empty(rows, dtype=torch.float32), x.new_empty((_STATS, rows), dtype=torch.float32)


_cross_entropy_loss_op = torch.library.custom_op("xpsoftmax::cross_entropy_loss", mutates_args=())(
    _launch_cross_entropy_loss
)


@_cross_entropy_loss_op.register_fake
def _(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
    reduction: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    one = x.new_empty((), dtype=torch.float32)
    return one, x.new_empty((_STATS, x.shape[0]), dtype=torch.float32), torch.empty_like(one)


_cross_entropy_grad_op = torch.library.custom_op("xpsoftmax::cross_entropy_grad", mutates_args=())(
    _launch_cross_entropy_grad
)


@_cross_entropy_grad_op.register_fake
def _(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    g: torch.Tensor | None,
    factor: torch.Tensor | None,
    t: float,
    smooth: bool,
) -> torch.Tensor:
    return torch.empty_like(x)


def _ce_rows_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, target, weight, _, _, ctx.t, eps, _ = inputs
    ctx.smooth = eps != 0
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, target, weight, output[1])


def _ce_rows_backward(ctx: Any, g_per: torch.Tensor, _: Any) -> tuple[Any, ...]:
    x, target, weight, stats = ctx.saved_tensors
    dx = cross_entropy_grad(x, target, weight, stats, g_per, None, ctx.t, ctx.smooth)
    return dx, None, None, None, None, None, None, None


def _ce_loss_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, target, weight, _, _, ctx.t, eps, _, ctx.reduction = inputs
    ctx.smooth = eps != 0
    _, stats, factor = output
    # Only the loss has a gradient: no zero tensors are made for the others' (a kernel each).
    ctx.mark_non_differentiable(stats, factor)
    ctx.save_for_backward(x, target, weight, stats, factor)


def _ce_loss_backward(ctx: Any, g: torch.Tensor, *unused: Any) -> tuple[Any, ...]:
    x, target, weight, stats, factor = ctx.saved_tensors
    factor = factor if ctx.reduction == MEAN else None
    dx = cross_entropy_grad(x, target, weight, stats, g, factor, ctx.t, ctx.smooth)
    return dx, None, None, None, None, None, None, None, None


_cross_entropy_rows_op.register_autograd(_ce_rows_backward, setup_context=_ce_rows_setup)
_cross_entropy_loss_op.register_autograd(_ce_loss_backward, setup_context=_ce_loss_setup)


# --- the public functions ------------------------------------------------------------------------
def _function(launch: Any, setup: Any, backward: Any, name: str) -> Any:
    """A ``torch.autograd.Function`` running ``launch`` forward with the custom operator's
    ``setup`` and ``backward`` (old-style ``forward(ctx, ...)``: the new style binds the
    signature with ``inspect`` on every call)."""

    def forward(ctx: Any, *args: Any) -> Any:
        output = launch(*args)
        setup(ctx, args, output)
        return output

    methods = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    return type(name, (torch.autograd.Function,), methods)


_Normalize = _function(_launch_normalize, _normalize_setup, _normalize_backward, "_Normalize")
_Logsumexp = _function(_launch_logsumexp_rows, _logsumexp_setup, _logsumexp_backward, "_Logsumexp")


def normalize(x: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    """softmax (``log=False``) or log_softmax of each row of ``x`` divided by ``t``."""
    if _as_operator(x):
        return _normalize_op(x, t, log)
    if _differentiated(x):
        return _Normalize.apply(x, t, log)
    return _launch_normalize(x, t, log)


def normalize_backward(dy: torch.Tensor, y: torch.Tensor, t: float, log: bool) -> torch.Tensor:
    """The gradient of :func:`normalize` with respect to ``x``, from its output ``y``."""
    if _as_operator(dy):
        return _normalize_backward_op(dy, y, t, log)
    return _launch_normalize_backward(dy, y, t, log)


def logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """logsumexp of each row of ``x``, in float32 (16-bit and float32 input alike)."""
    if _as_operator(x):
        return _logsumexp_rows_op(x)
    if _differentiated(x):
        return _Logsumexp.apply(x)
    return _launch_logsumexp_rows(x)


def cross_entropy(*args: Any, reduction: int) -> torch.Tensor:
    """The loss of :func:`_forward`'s arguments (``reduction``: ``NONE``, ``SUM``, ``MEAN``),
    through the custom operators under torch.compile, the training Function when ``x`` needs a
    gradient, else the launchers."""
    if _as_operator(args[0]):
        if reduction == NONE:
            return _cross_entropy_rows_op(*args)[0]
        return _cross_entropy_loss_op(*args, reduction)[0]
    if _differentiated(args[0]):
        return _CrossEntropyTrain.apply(*args, reduction)
    loss, _, _, _ = _forward(args, reduction, False)
    return loss


def cross_entropy_with_grad(*args: Any, reduction: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, d loss / d x)`` without autograd (``NONE``: the gradient of the entries'
    sum)."""
    if not _as_operator(args[0]):
        loss, _, grad, _ = _forward(args, reduction, True)
        return loss, grad  # type: ignore[return-value]
    x, target, weight, _, _, t, eps, _ = args
    factor = None
    if reduction == NONE:
        loss, stats = _cross_entropy_rows_op(*args)
    else:
        loss, stats, factor = _cross_entropy_loss_op(*args, reduction)
        factor = factor if reduction == MEAN else None
    grad = _cross_entropy_grad_op(x, target, weight, stats, None, factor, t, eps != 0)
    return loss, grad


def cross_entropy_grad(*args: Any) -> torch.Tensor:
    """See :func:`_launch_cross_entropy_grad` (the same arguments)."""
    if _as_operator(args[0]):
        return _cross_entropy_grad_op(*args)
    return _launch_cross_entropy_grad(*args)
