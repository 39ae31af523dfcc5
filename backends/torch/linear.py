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
from xpsoftmax._checks import CrossEntropySettings
from xpsoftmax._registry import Call, register

_FLOATS = ("float16", "bfloat16", "float32", "float64")


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
        rows: int | None,
    ) -> torch.Tensor:
        ctx.axis, ctx.o, ctx.rows = axis, o, rows
        ahead = any(ctx.needs_input_grad[:3]) and o.reduction != "none"
        p = _linear.parts(xp_torch, h, w, b, target, axis, o, rows, grads=ahead)
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
            p = _linear.parts(
                xp_torch,
                h,
                w,
                b,
                target,
                ctx.axis,
                ctx.o,
                ctx.rows,
                grads=True,
                cotangent=cotangent,
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
    chunk_size: int | None,
) -> Any:
    weight = options.weight
    if target.requires_grad or (weight is not None and weight.requires_grad):
        # Differentiated with respect to the targets or the class weights, which the rule
        # above does not cover: autodiff through the generic chunks (correct, more memory).
        return _linear.linear_cross_entropy(
            xp, h, linear_weight, bias, target, axis, options, chunk_size
        )
    return LinearCrossEntropy.apply(h, linear_weight, bias, target, axis, options, chunk_size)
