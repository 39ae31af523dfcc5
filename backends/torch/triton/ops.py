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
import triton

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
        block, one_pass = triton.next_power_of_2(max(n, 1)), True
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


def _logsumexp_backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
    x, out = ctx.saved_tensors
    # d lse / d x = exp(x - lse); zero on an all -inf row (the contract: empty events).
    live = (out != -torch.inf)[:, None]
    p = torch.exp(x.to(torch.float32) - torch.where(live, out[:, None], 0.0))
    return (torch.where(live, p, 0.0) * g[:, None]).to(x.dtype)


_logsumexp_rows_op.register_autograd(_logsumexp_backward, setup_context=_logsumexp_setup)


# --- cross-entropy with class-index targets ----------------------------------------------------
#: The statistics the forward kernel keeps per row for the gradient kernel (and the mean).
_STATS = 6


def _pointer(weight: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A kernel argument that may be unread: ``weight``, or any tensor in its place."""
    return x if weight is None else weight


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
    """``(per, stats)`` for ``x`` (rows, C) and its class indices ``target`` (rows,), rows > 0:
    each entry's loss, and ``(6, rows)`` statistics (the entry's part of the mean's
    denominator first, then what the gradient kernel reads); float32. See
    ``kernels.ce_forward_kernel``."""
    rows, n = x.shape
    per = x.new_empty(rows, dtype=torch.float32)
    stats = x.new_empty((_STATS, rows), dtype=torch.float32)
    block, one_pass, warps = config(n)
    # The weights' total is read only with label smoothing.
    w_total = weight.sum() if weight is not None and eps != 0 else x
    kernels.ce_forward_kernel[(rows,)](
        x, target, _pointer(weight, x), per, stats, rows, n, 1.0 / t, ignore_index, w_total,
        eps, z_loss, x.stride(0), HAS_W=weight is not None, HAS_IGNORE=has_ignore,
        SMOOTH=eps != 0, Z_LOSS=z_loss != 0, BLOCK=block, ONE_PASS=one_pass, num_warps=warps,
    )  # fmt: skip
    return per, stats


#: Rows summed per step by the reduction's one program, and its warps.
REDUCE_BLOCK = 4096
REDUCE_WARPS = 8


def _launch_cross_entropy_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    has_ignore: bool,
    t: float,
    eps: float,
    z_loss: float,
    mean: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, scale, stats)``: the summed (``mean=False``) or averaged loss of
    :func:`_launch_cross_entropy_rows`'s entries, d loss / d entry, and the statistics.
    Two kernels, whatever the options: a training step's host cost is its launches."""
    per, stats = _launch_cross_entropy_rows(
        x, target, weight, ignore_index, has_ignore, t, eps, z_loss
    )
    loss = per.new_empty(())
    scale = per.new_empty(())
    kernels.ce_reduce_kernel[(1,)](
        per, stats, per.shape[0], loss, scale, MEAN=mean, BLOCK=REDUCE_BLOCK, num_warps=REDUCE_WARPS
    )
    return loss, scale, stats


def _launch_cross_entropy_grad(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    g: torch.Tensor | None,
    scale: torch.Tensor | None,
    t: float,
    smooth: bool,
) -> torch.Tensor:
    """The gradient with respect to ``x`` of the entries' losses, each scaled by ``g`` (one per
    row, a 0-d tensor for all, or None for 1) and by ``scale`` (0-d, or None), from their
    ``stats``. See ``kernels.ce_grad_kernel``."""
    dx = torch.empty_like(x)
    rows, n = x.shape
    block, _, warps = config(min(n, CHUNK))
    if g is not None:
        g = g.to(torch.float32)
    kernels.ce_grad_kernel[(rows,)](
        x, target, _pointer(weight, x), stats, rows, _pointer(g, stats),
        g.stride(0) if g is not None and g.dim() else 0, _pointer(scale, stats), dx, n,
        1.0 / t, x.stride(0), HAS_W=weight is not None, SMOOTH=smooth, HAS_G=g is not None,
        HAS_SCALE=scale is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return dx


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
    mean: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    one = x.new_empty((), dtype=torch.float32)
    return one, torch.empty_like(one), x.new_empty((_STATS, x.shape[0]), dtype=torch.float32)


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
    scale: torch.Tensor | None,
    t: float,
    smooth: bool,
) -> torch.Tensor:
    return torch.empty_like(x)


def _ce_rows_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, target, weight, _, _, ctx.t, eps, _ = inputs
    ctx.smooth = eps != 0
    _, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.save_for_backward(x, target, weight, stats)


def _ce_rows_backward(ctx: Any, g_per: torch.Tensor, _: Any) -> tuple[Any, ...]:
    x, target, weight, stats = ctx.saved_tensors
    dx = cross_entropy_grad(x, target, weight, stats, g_per, None, ctx.t, ctx.smooth)
    return dx, None, None, None, None, None, None, None


def _ce_loss_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, target, weight, _, _, ctx.t, eps, _, _ = inputs
    ctx.smooth = eps != 0
    _, scale, stats = output
    # Only the loss has a gradient: no zero tensors are made for the others' (a kernel each).
    ctx.mark_non_differentiable(scale, stats)
    ctx.save_for_backward(x, target, weight, stats, scale)


def _ce_loss_backward(ctx: Any, g: torch.Tensor, *unused: Any) -> tuple[Any, ...]:
    x, target, weight, stats, scale = ctx.saved_tensors
    dx = cross_entropy_grad(x, target, weight, stats, g, scale, ctx.t, ctx.smooth)
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
_CrossEntropyRows = _function(
    _launch_cross_entropy_rows, _ce_rows_setup, _ce_rows_backward, "_CrossEntropyRows"
)
_CrossEntropyLoss = _function(
    _launch_cross_entropy_loss, _ce_loss_setup, _ce_loss_backward, "_CrossEntropyLoss"
)


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


def cross_entropy_rows(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """See :func:`_launch_cross_entropy_rows` (the same arguments)."""
    return _dispatch(_cross_entropy_rows_op, _CrossEntropyRows, _launch_cross_entropy_rows, args)


def cross_entropy_loss(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See :func:`_launch_cross_entropy_loss` (the same arguments)."""
    return _dispatch(_cross_entropy_loss_op, _CrossEntropyLoss, _launch_cross_entropy_loss, args)


def cross_entropy_grad(*args: Any) -> torch.Tensor:
    """See :func:`_launch_cross_entropy_grad` (the same arguments)."""
    if _as_operator(args[0]):
        return _cross_entropy_grad_op(*args)
    return _launch_cross_entropy_grad(*args)


def _dispatch(operator: Any, function: Any, launch: Any, args: tuple[Any, ...]) -> Any:
    """The custom operator under torch.compile, the autograd Function when the first argument
    needs a gradient, else the launcher itself (module docstring)."""
    if _as_operator(args[0]):
        return operator(*args)
    if _differentiated(args[0]):
        return function.apply(*args)
    return launch(*args)
