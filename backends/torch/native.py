"""PyTorch fast paths: the native kernels, with the cases where their semantics differ from
the contract fixed around them.

What the native kernels do differently, and the fix:

* ``torch.softmax`` / ``torch.log_softmax`` give NaN on a row that is all -inf (the contract:
  zeros / -inf), and so does the gradient of ``torch.logsumexp`` there. Traced calls (and
  eager ones with such rows under autograd) replace those rows by zeros before the kernel
  runs and select the result afterwards, so values and gradients are right. Eager CPU calls
  run the kernel alone and look for a NaN in the (small) first column or result: without
  autograd the rare NaN rows are repaired afterwards, with autograd the call starts again on
  the safe path. Native speed, a training step included.
* 16-bit inputs: the kernels run with ``dtype=torch.float32`` (softmax, log_softmax) or on a
  float32 copy (logsumexp, cross-entropy), so that reductions return float32 as the contract
  asks instead of rounding to 16 bits.
* ``F.cross_entropy`` gives NaN for a mean over zero entries, NaN on an all -inf row, crashes
  (CUDA) or raises on out-of-range indices, and computes ``0 * log 0`` as NaN for probability
  targets. The fast path takes index targets only, runs the kernel with ``reduction="none"``
  on safe indices and safe rows, and applies the contract's reduction itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from xpsoftmax import _generic
from xpsoftmax._checks import CrossEntropySettings, Temperature, compute_dtype, target_masks
from xpsoftmax._registry import Call, register
from xpsoftmax.backends.torch import tied, values_visible

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_DEVICES = ("cpu", "cuda")


def _compute(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the computation dtype (float32 for 16-bit input; else ``x`` itself)."""
    return x.to(compute_dtype(torch, x.dtype))


def _scaled(x: torch.Tensor, t: Temperature, dim: Any) -> torch.Tensor:
    """``x / T`` for the kernels, shifted by the slice maximum *before* the division, so that
    a small T cannot overflow finite logits into inf - inf = NaN (``[3e36, 4e36] / 0.01``).
    Every kernel here is invariant to the shift, so it is held out of differentiation."""
    if t.kind != "positive":
        return x
    m = torch.amax(x.detach(), dim=dim, keepdim=True)
    # An all -inf slice shifts by the lowest finite number and stays -inf (not NaN).
    # In place on the fresh difference (neither op keeps it for its backward): one pass less.
    return torch.sub(x, m.clamp(min=torch.finfo(x.dtype).min)).div_(t.value)


#: Rows longer than this lose accuracy in the native float32 kernels (sequential float32
#: sums: a row of 3 * 2**23 zeros and one 1 gives a softmax summing to 0.983); they take the
#: generic path, whose torch.sum accumulates accurately.
LONG_ROW = 2**24


def _short_rows(call: Call) -> bool:
    return call.dtype == "float64" or 0 <= call.length <= LONG_ROW


def _normalization_ok(call: Call) -> bool:
    return (
        len(call.axes) == 1
        and not call.opt("where")
        and call.opt("temperature") in ("one", "positive")
        and _short_rows(call)
    )


def _native_normalization(
    x: torch.Tensor, dim: int, t: Temperature, log: bool
) -> torch.Tensor | None:
    """The native kernel, then a repair of the all -inf rows (NaN there, the contract: 0 or
    -inf). A row gives NaN in its first entry only when it is all -inf or holds NaN or +inf,
    so the full check runs only when one of those is present. Where autograd records the
    call nothing is repaired in place: None then, and the safe path serves the call (a
    training step on rows without those costs torch's own softmax and its backward)."""
    differentiated = x.requires_grad and torch.is_grad_enabled()
    kernel = torch.log_softmax if log else torch.softmax
    rounded_output = x.dtype == torch.float16 or (
        x.dtype == torch.bfloat16 and (log or differentiated)
    )
    if t.kind == "one" and not rounded_output:
        # bfloat16 softmax is computed in float32 inside the kernel (same bits as the float32
        # kernel rounded); the others are asked for float32 explicitly below (a backward
        # from a 16-bit output loses accuracy: exp of a log_softmax rounded to bfloat16).
        out = kernel(x, dim)
        xs = x
    else:
        xs = _scaled(_compute(x), t, dim)
        out = kernel(xs, dim)
    # The sum of the first entries is NaN exactly when one of them is (they are finite or
    # -inf): two small kernel calls.
    if math.isnan(out.detach().narrow(dim, 0, 1).sum().item()):
        if differentiated:
            return None
        dead = torch.amax(xs, dim=dim, keepdim=True) == -math.inf
        out = out.masked_fill_(dead, -math.inf if log else 0.0)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _safe_rows(x: torch.Tensor, dims: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` with every all -inf slice replaced by zeros, and the mask of those slices."""
    dead = torch.amax(x, dim=dims, keepdim=True) == -math.inf
    return torch.where(dead, torch.zeros((), dtype=x.dtype, device=x.device), x), dead


@register(
    "softmax",
    "torch",
    "torch.native",
    priority=50,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="one axis, where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    (dim,) = axes
    if x.shape[dim] == 0:
        return tied(torch.zeros_like(x), x)
    if values_visible(x):
        out = _native_normalization(x, dim, temperature, log=False)
        if out is not None:
            return out
    # 16-bit input is scaled by T in float32: x / T rounded to 16 bits loses the answer.
    xs, dead = _safe_rows(_scaled(_compute(x), temperature, dim), dim)
    return torch.where(dead, 0.0, torch.softmax(xs, dim)).to(x.dtype)


@register(
    "log_softmax",
    "torch",
    "torch.native",
    priority=50,
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="one axis, where=None, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    (dim,) = axes
    if x.shape[dim] == 0:
        return tied(torch.zeros_like(x), x)
    if values_visible(x):
        out = _native_normalization(x, dim, temperature, log=True)
        if out is not None:
            return out
    # 16-bit input is scaled by T in float32: x / T rounded to 16 bits loses the answer.
    xs, dead = _safe_rows(_scaled(_compute(x), temperature, dim), dim)
    return torch.where(dead, -math.inf, torch.log_softmax(xs, dim)).to(x.dtype)


#: Below this, a logsumexp may have lost relative accuracy in ``log(sum)`` (error about one
#: unit of rounding of 1, large relative to a result this small).
_NEAR_ZERO = 0.5


@register(
    "logsumexp",
    "torch",
    "torch.native",
    priority=50,
    supports=lambda c: (
        (c.axes != () and not (c.opt("b") or c.opt("return_sign") or c.opt("where")))
        and _short_rows(c)
    ),
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="b=None, where=None, return_sign=False; torch.logsumexp on eager tensors",
)
def logsumexp(
    xp: Any,
    x: Any,
    axes: tuple[int, ...],
    *,
    keepdims: bool,
    b: Any,
    return_sign: bool,
    where: Any,
) -> Any:
    options = {"keepdims": keepdims, "b": b, "return_sign": return_sign, "where": where}
    if not values_visible(x) or any(x.shape[a] == 0 for a in axes):
        # The generic formula: zero gradients on all -inf rows, accurate near 0.
        return _generic.logsumexp(xp, x, axes, **options)
    # The native values are the contract's (-inf for an all -inf row, +inf, NaN), but not
    # torch's gradient there (NaN for an all -inf row). A result near 0 may have lost its
    # relative accuracy (log(1 + 4e-18) = 0). Either sends the call to the generic formula
    # (with log1p), checked on the host (one reduction of the small result).
    out = torch.logsumexp(_compute(x), dim=axes, keepdim=keepdims)
    check = out.detach()
    doubtful = check.abs() < _NEAR_ZERO
    if x.requires_grad and torch.is_grad_enabled():
        doubtful = doubtful | ~torch.isfinite(check)
    if bool(doubtful.any()):
        return _generic.logsumexp(xp, x, axes, **options)
    return out


def _ce_ok(call: Call) -> bool:
    return (
        call.opt("target") == "index"
        and not call.opt("z_loss")
        and call.opt("temperature") in ("one", "positive")
        and _short_rows(call)
    )


def _cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    axis: int,
    o: CrossEntropySettings,
    *,
    optimistic: bool,
) -> torch.Tensor | None:
    """The loss through ``F.cross_entropy(reduction="none")`` with the contract's reduction.

    ``optimistic`` (eager CPU calls only: it reads a flag on the host) runs the kernel on the
    logits as they are and returns None when a NaN shows that a row needs the safe path,
    which first replaces all -inf rows (an extra pass over the logits).
    """
    x = _compute(logits)
    n_classes = x.shape[axis]
    if x.ndim > 1 and axis != 1:
        x = torch.movedim(x, axis, 1)
    class_dim = 0 if x.ndim == 1 else 1
    ignored, valid = target_masks(torch, target, n_classes, o.ignore_index)
    t = target.long()
    xs = _scaled(x, o.temperature, class_dim)
    if optimistic:
        # Every entry goes to the kernel (ignored and out-of-range ones as class 0, masked
        # below). A NaN among the per-entry losses (an all -inf row, NaN or +inf logits)
        # sends the call to the safe path, so the kernel's NaN gradient there never escapes.
        per = F.cross_entropy(
            xs,
            torch.where(valid, t, 0),
            weight=o.weight,
            reduction="none",
            label_smoothing=o.label_smoothing,
        )
        if bool(torch.isnan(per).any()):
            return None
    else:
        # Out-of-range indices must not reach the kernel (a CUDA device assert): they become
        # ignored there (as -1, which no class is; ignore_index itself may not fit int64) and
        # NaN here. All -inf rows are replaced by zeros (inf loss below).
        t_safe = torch.where(valid, t, -1)
        # Ignored entries' logits become zeros too, in the same pass: a NaN or inf there
        # would reach the gradient as 0 * NaN through the kernel's backward.
        dead = torch.amax(xs, dim=class_dim, keepdim=True) == -math.inf
        zero = torch.zeros((), dtype=xs.dtype, device=xs.device)
        xs = torch.where(dead | ignored.unsqueeze(class_dim), zero, xs)
        per = F.cross_entropy(
            xs,
            t_safe,
            weight=o.weight,
            ignore_index=-1,
            reduction="none",
            label_smoothing=o.label_smoothing,
        )
        per = torch.where(dead.squeeze(class_dim) & valid, math.inf, per)
    per = torch.where(valid, per, torch.where(ignored, 0.0, math.nan))
    if o.reduction == "none":
        return per
    total = per.sum()
    if o.reduction == "sum":
        return total
    w_t = torch.ones_like(per) if o.weight is None else o.weight[torch.where(valid, t, 0)]
    return _generic.mean_over(torch, total, torch.where(ignored, 0.0, w_t).sum())


@register(
    "cross_entropy",
    "torch",
    "torch.native",
    priority=50,
    supports=_ce_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="class indices, z_loss=0, scalar temperature > 0",
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    weight = options.weight
    if logits.numel() == 0 or (weight is not None and weight.requires_grad):
        # F.cross_entropy cannot take an empty batch or zero classes, nor differentiate with
        # respect to its weight; the generic formula can.
        return _generic.cross_entropy(xp, logits, target, axis, options)
    if values_visible(logits):
        out = _cross_entropy(logits, target, axis, options, optimistic=True)
        if out is not None:
            return out
    return _cross_entropy(logits, target, axis, options, optimistic=False)
