"""PyTorch fast paths: the native kernels, with the cases where their semantics differ from
the contract fixed around them.

What the native kernels do differently, and the fix:

* ``torch.softmax`` / ``torch.log_softmax`` give NaN on a row that is all -inf (the contract:
  zeros / -inf), and so does the gradient of ``torch.logsumexp`` there. When a gradient may be
  taken (or the call is traced), such rows are replaced by zeros before the kernel runs and the
  result is selected afterwards, so values and gradients are right. Eager CPU calls without
  autograd run the kernel alone and repair the (rare) NaN rows afterwards: native speed.
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
from xpsoftmax._checks import Temperature
from xpsoftmax._registry import Call, register

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_DEVICES = ("cpu", "cuda")


def device_kind(x: Any) -> str:
    return str(x.device.type)


_wrapped: Any
try:  # vmap and grad transforms wrap tensors; their values cannot be read
    from torch._C._functorch import is_functorch_wrapped_tensor as _wrapped
except ImportError:  # pragma: no cover - older torch
    _wrapped = None


def values_visible(x: Any) -> bool:
    if x.device.type != "cpu" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return _wrapped is None or not _wrapped(x)


def _sixteen(x: torch.Tensor) -> bool:
    return x.dtype in (torch.float16, torch.bfloat16)


def _scaled(x: torch.Tensor, t: Temperature) -> torch.Tensor:
    return x / t.value if t.kind == "positive" else x


def _normalization_ok(call: Call) -> bool:
    return (
        len(call.axes) == 1
        and not call.opt("where")
        and call.opt("temperature") in ("one", "positive")
    )


def _eager_values(x: torch.Tensor) -> bool:
    """True when nothing will differentiate or trace through this call and ``x``'s values can
    be read for free (a CPU tensor, eager): then the native kernel runs alone and its rare
    wrong rows are repaired afterwards, at the cost of one Python branch on a flag."""
    return not (x.requires_grad and torch.is_grad_enabled()) and values_visible(x)


def _native_normalization(x: torch.Tensor, dim: int, t: Temperature, log: bool) -> torch.Tensor:
    """The native kernel, then a repair of the all -inf rows (NaN there, the contract: 0 or
    -inf). A row gives NaN in its first entry only when it is all -inf or holds NaN or +inf,
    so the full check runs only when one of those is present."""
    kernel = torch.log_softmax if log else torch.softmax
    if t.kind == "one" and not (x.dtype == torch.float16 or (log and x.dtype == torch.bfloat16)):
        # bfloat16 softmax is computed in float32 inside the kernel (same bits as the float32
        # kernel rounded); the others are asked for float32 explicitly below.
        out = kernel(x, dim)
        xs = x
    else:
        xs = _scaled(x.float() if _sixteen(x) else x, t)
        out = kernel(xs, dim)
    # The sum of the first entries is NaN exactly when one of them is (they are finite or
    # -inf): two small kernel calls.
    if math.isnan(out.narrow(dim, 0, 1).sum().item()):
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
    supports=_normalization_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="one axis, where=None, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    (dim,) = axes
    if x.shape[dim] == 0:
        return torch.zeros_like(x)
    if _eager_values(x):
        return _native_normalization(x, dim, temperature, log=False)
    # 16-bit input is scaled by T in float32: x / T rounded to 16 bits loses the answer.
    xs, dead = _safe_rows(_scaled(x.float() if _sixteen(x) else x, temperature), dim)
    return torch.where(dead, 0.0, torch.softmax(xs, dim)).to(x.dtype)


@register(
    "log_softmax",
    "torch",
    "torch.native",
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
        return torch.zeros_like(x)
    if _eager_values(x):
        return _native_normalization(x, dim, temperature, log=True)
    # 16-bit input is scaled by T in float32: x / T rounded to 16 bits loses the answer.
    xs, dead = _safe_rows(_scaled(x.float() if _sixteen(x) else x, temperature), dim)
    return torch.where(dead, -math.inf, torch.log_softmax(xs, dim)).to(x.dtype)


@register(
    "logsumexp",
    "torch",
    "torch.native",
    supports=lambda c: c.axes != () and not (c.opt("b") or c.opt("return_sign") or c.opt("where")),
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="b=None, where=None, return_sign=False",
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
    xc = x.float() if _sixteen(x) else x
    if any(x.shape[a] == 0 for a in axes):
        shape = [1 if i in axes else n for i, n in enumerate(x.shape)]
        out = torch.full(shape, -math.inf, dtype=xc.dtype, device=x.device)
        return out if keepdims else out.squeeze(axes)
    if _eager_values(x):
        # The native values are the contract's (-inf for an all -inf row, +inf, NaN); only
        # its gradient there is not, and no gradient is wanted here.
        out = torch.logsumexp(xc, dim=axes, keepdim=True)
        return out if keepdims else out.squeeze(axes)
    xs, dead = _safe_rows(xc, axes)
    out = torch.where(dead, -math.inf, torch.logsumexp(xs, dim=axes, keepdim=True))
    return out if keepdims else out.squeeze(axes)


def _ce_ok(call: Call) -> bool:
    return (
        call.opt("target") == "index"
        and not call.opt("z_loss")
        and call.opt("temperature") in ("one", "positive")
    )


def _cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    axis: int,
    *,
    weight: Any,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    temperature: Temperature,
    z_loss: float,
    optimistic: bool,
) -> torch.Tensor | None:
    """The loss through ``F.cross_entropy(reduction="none")`` with the contract's reduction.

    ``optimistic`` (eager CPU calls only: it reads a flag on the host) runs the kernel on the
    logits as they are and returns None when a NaN shows that a row needs the safe path,
    which first replaces all -inf rows (an extra pass over the logits).
    """
    x = logits.float() if _sixteen(logits) else logits
    n_classes = x.shape[axis]
    if x.ndim > 1 and axis != 1:
        x = torch.movedim(x, axis, 1)
    class_dim = 0 if x.ndim == 1 else 1
    t = target.long()
    ignored = t == ignore_index
    valid = ~ignored & (t >= 0) & (t < n_classes)
    # Out-of-range indices must not reach the kernel (a CUDA device assert): they become
    # ignored there and NaN here.
    xs = _scaled(x, temperature)
    if optimistic:
        # Every entry goes to the kernel (ignored and out-of-range ones as class 0, masked
        # below). A NaN among the per-entry losses (an all -inf row, NaN or +inf logits)
        # sends the call to the safe path, so the kernel's NaN gradient there never escapes.
        per = F.cross_entropy(
            xs,
            torch.where(valid, t, 0),
            weight=weight,
            reduction="none",
            label_smoothing=label_smoothing,
        )
        if bool(torch.isnan(per).any()):
            return None
    else:
        # Out-of-range indices must not reach the kernel (a CUDA device assert): they become
        # ignored there and NaN here. All -inf rows are replaced by zeros (inf loss below).
        t_safe = torch.where(valid, t, torch.full_like(t, ignore_index))
        xs, dead = _safe_rows(xs, class_dim)
        per = F.cross_entropy(
            xs,
            t_safe,
            weight=weight,
            ignore_index=ignore_index,
            reduction="none",
            label_smoothing=label_smoothing,
        )
        per = torch.where(dead.squeeze(class_dim) & valid, math.inf, per)
    per = torch.where(valid, per, torch.where(ignored, 0.0, math.nan))
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return total
    w_t = torch.ones_like(per) if weight is None else weight[torch.where(valid, t, 0)]
    den = torch.where(ignored, 0.0, w_t).sum()
    zero = den == 0
    return torch.where(zero, 0.0, total / torch.where(zero, 1.0, den))


@register(
    "cross_entropy",
    "torch",
    "torch.native",
    supports=_ce_ok,
    devices=_DEVICES,
    dtypes=_FLOATS,
    description="class indices, z_loss=0, scalar temperature > 0",
)
def cross_entropy(xp: Any, logits: Any, target: Any, axis: int, **options: Any) -> Any:
    if logits.numel() == 0:  # F.cross_entropy cannot take an empty batch or zero classes
        return _generic.cross_entropy(xp, logits, target, axis, **options)
    if values_visible(logits):
        out = _cross_entropy(logits, target, axis, optimistic=True, **options)
        if out is not None:
            return out
    return _cross_entropy(logits, target, axis, optimistic=False, **options)
