"""PyTorch fast path of the linear cross-entropy: the chunked computation of
``xpsoftmax._linear`` as an ``autograd.Function``, so that autodiff keeps no logits.

Two layers: :func:`xpsoftmax._linear.parts` computes the loss and, chunk by chunk, the
gradients ``dh``, ``dW``, ``db``; :class:`LinearCrossEntropy` is its autograd rule. For a
reduced loss (mean, sum) the forward pass computes the gradients with the loss (the only pass
over the logits) and the backward pass scales them in place by the incoming gradient; a
second backward through the same graph (``retain_graph``) computes them again. For
``reduction="none"`` the incoming gradient weighs each row, so the backward pass computes
them then, a second pass over the logits. Neither keeps a logits-sized residual.
"""

from __future__ import annotations

from typing import Any

import torch
from array_api_compat import torch as xp_torch

from xpsoftmax import _linear
from xpsoftmax._checks import CrossEntropySettings, compute_dtype, result_dtype, target_masks
from xpsoftmax._generic import BIG_T, mean_over
from xpsoftmax._registry import Call, Chunks, register

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _lean(o: CrossEntropySettings, target: torch.Tensor, vocab: int, classes: int) -> bool:
    """The options the in-place chunk below computes; the others, and chunks of classes, take
    the generic chunk formulas (more temporaries per chunk, the same accumulation)."""
    return (
        classes >= vocab
        and not torch.is_floating_point(target)
        and o.label_smoothing == 0
        and o.z_loss == 0
        and o.temperature.kind in ("one", "positive")
        and vocab > 0
    )


def parts(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    target: torch.Tensor,
    axis: int,
    o: CrossEntropySettings,
    chunks: Chunks,
    *,
    grads: bool,
    cotangent: torch.Tensor | None = None,
    needed: tuple[bool, bool, bool] = (True, True, True),
) -> _linear.Parts:
    """:func:`xpsoftmax._linear.parts` with one chunk of logits alive at a time: the chunk's
    logits buffer becomes its exponentials, then its gradient, in place; ``dh`` rows are
    written where they belong and ``dW`` accumulates by ``addmm_``. The formulas are the
    generic ones (``xpsoftmax._generic``: shift by the maximum, divide by T, the logsumexp
    accurate near 0, the weighted mean over the entries not ignored)."""
    h2, lead = _linear._to_rows(xp_torch, h, axis)
    n, vocab = h2.shape[0], w.shape[0]
    step, classes = _linear.chunk_shape(n, vocab, chunks)
    if not _lean(o, target, vocab, classes):
        return _linear.parts(
            xp_torch, h, w, b, target, axis, o, chunks, grads=grads, cotangent=cotangent
        )
    cdt = compute_dtype(torch, h.dtype)
    t2 = target.reshape(n)
    wc = w.to(cdt)
    bc = None if b is None else b.to(cdt)
    ignored, valid = target_masks(xp_torch, t2, vocab, o.ignore_index)
    t_safe = torch.where(valid, t2.to(torch.int64), 0)
    w_t = torch.ones(n, dtype=cdt, device=h.device) if o.weight is None else o.weight[t_safe]
    den = torch.where(ignored, 0.0, w_t).sum()
    scale: Any = mean_over(xp_torch, 1.0, den) if o.reduction == "mean" else 1.0
    if cotangent is not None:
        scale = cotangent.reshape(n).to(cdt)
    t_kind, t_value = o.temperature.kind, o.temperature.value
    per = torch.empty(n, dtype=cdt, device=h.device)
    if grads:
        # Only the gradients autograd asks for: a frozen layer skips dW's product, a third of
        # the work.
        need_dh, need_dw, need_db = needed
        dh2 = torch.empty((n, h2.shape[1]), dtype=cdt, device=h.device) if need_dh else None
        dw = torch.zeros((vocab, h2.shape[1]), dtype=cdt, device=h.device) if need_dw else None
        db = None if b is None or not need_db else torch.zeros(vocab, dtype=cdt, device=h.device)
    for start in range(0, n, step):
        stop = min(start + step, n)
        hc = h2[start:stop].to(cdt)
        z = hc @ wc.T if bc is None else torch.addmm(bc, hc, wc.T)
        m = z.amax(dim=1, keepdim=True)
        z.sub_(m.clamp(min=torch.finfo(cdt).min))  # an all -inf row stays -inf
        if t_kind == "positive":
            if t_value <= BIG_T:
                z.div_(t_value)
            else:
                z.mul_(1 / BIG_T).div_(t_value / BIG_T)
        ts = t_safe[start:stop, None]
        z_t = z.gather(1, ts).squeeze(1)
        # The logsumexp accurate near 0 (the generic _log_total): one maximum per row, which
        # is exactly 0 now, is set aside, so the sum of the others (ties included) is the
        # log1p argument itself, without a mask of the maxima.
        top = z.argmax(dim=1, keepdim=True)
        z.scatter_(1, top, -torch.inf)
        e = z.exp_()
        rest = e.sum(dim=1)
        m1 = m.squeeze(1)
        empty = m1 == -torch.inf
        # A +inf or NaN maximum makes the row NaN (the generic path's shift by it does).
        poisoned = (m1 == torch.inf) | torch.isnan(m1)
        lse = torch.where(poisoned, torch.nan, torch.log1p(rest))
        s = torch.where(poisoned, torch.nan, 1.0 + rest)  # the sum of e
        e.scatter_(1, top, torch.where(empty, 0.0, 1.0).to(cdt)[:, None])
        nll = torch.where(empty, torch.inf, lse - z_t)
        v, ig = valid[start:stop], ignored[start:stop]
        per[start:stop] = torch.where(v, nll * w_t[start:stop], torch.where(ig, 0.0, torch.nan))
        if not grads:
            continue
        keep = v & ~empty
        inv_t = 1.0 / t_value if t_kind == "positive" else 1.0
        row_scale = scale[start:stop] if isinstance(scale, torch.Tensor) and scale.ndim else scale
        coef = torch.where(keep, w_t[start:stop] * row_scale * inv_t, 0.0)
        g = e.div_(torch.where(empty, 1.0, s)[:, None]).mul_(coef[:, None])  # coef * p
        g.scatter_add_(1, ts, -coef[:, None])  # coef * (p - onehot)
        g.masked_fill_(~keep[:, None], 0.0)  # 0, not 0 * NaN, where no gradient flows
        if dh2 is not None:
            torch.matmul(g, wc, out=dh2[start:stop])
        if dw is not None:
            dw.addmm_(g.T, hc)
        if db is not None:
            db.add_(g.sum(dim=0))
    out_dtype = result_dtype(torch, h.dtype, reduction=True)
    if o.reduction == "none":
        loss = per.reshape(lead)
    elif o.reduction == "sum":
        loss = per.sum()
    else:
        loss = mean_over(xp_torch, per.sum(), den)
    loss = loss.to(out_dtype)
    if not grads:
        return _linear.Parts(loss)
    dh = None if dh2 is None else _linear._from_rows(xp_torch, dh2, lead, axis).to(h.dtype)
    dw = None if dw is None else dw.to(w.dtype)
    return _linear.Parts(loss, dh, dw, None if db is None or b is None else db.to(b.dtype))


class LinearCrossEntropy(torch.autograd.Function):
    """The autograd rule of :func:`xpsoftmax._linear.parts` (inputs ``h``, ``W``, ``b``)."""

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        target: torch.Tensor,
        axis: int,
        o: CrossEntropySettings,
        chunks: Chunks,
    ) -> torch.Tensor:
        ctx.axis, ctx.o, ctx.chunks = axis, o, chunks
        ahead = any(ctx.needs_input_grad[:3]) and o.reduction != "none"
        needed = tuple(ctx.needs_input_grad[:3])
        p = parts(h, w, b, target, axis, o, chunks, grads=ahead, needed=needed)
        ctx.save_for_backward(h, w, b, target)
        # Not saved tensors: scaled in place by the backward pass and handed over once.
        ctx.grads = (p.dh, p.dw, p.db) if ahead else None
        return p.loss

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        h, w, b, target = ctx.saved_tensors
        if ctx.grads is not None:
            # Computed by the forward pass for a gradient of 1: scaled in place, handed over.
            grads = [None if t is None else t.mul_(g.to(t.dtype)) for t in ctx.grads]
            ctx.grads = None
        else:
            cotangent = g if ctx.o.reduction == "none" else None
            needed = tuple(ctx.needs_input_grad[:3])
            p = parts(
                h,
                w,
                b,
                target,
                ctx.axis,
                ctx.o,
                ctx.chunks,
                grads=True,
                cotangent=cotangent,
                needed=needed,
            )
            scale = 1.0 if cotangent is not None else g
            grads = [None if t is None else t * scale for t in (p.dh, p.dw, p.db)]
        return (*grads, None, None, None, None)


def _ok(call: Call) -> bool:
    return call.opt("target") == "index" or call.opt("target") == "probs"


@register(
    "linear_cross_entropy",
    "torch",
    "torch.linear",
    priority=50,
    supports=_ok,
    devices=("cpu", "cuda"),
    dtypes=_FLOATS,
    description="an autograd Function over chunks (no logits kept for backward)",
)
def linear_cross_entropy(
    xp: Any,
    h: Any,
    linear_weight: Any,
    bias: Any,
    target: Any,
    axis: int,
    options: CrossEntropySettings,
    chunk_size: Chunks,
) -> Any:
    weight = options.weight
    if target.requires_grad or (weight is not None and weight.requires_grad):
        # Differentiated with respect to the targets or the class weights, which the rule
        # above does not cover: autodiff through the generic chunks (correct, more memory).
        return _linear.linear_cross_entropy(
            xp, h, linear_weight, bias, target, axis, options, chunk_size
        )
    return LinearCrossEntropy.apply(h, linear_weight, bias, target, axis, options, chunk_size)
