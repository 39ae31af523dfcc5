"""A user's script: what ``mypy --strict`` must accept, with NumPy and PyTorch.

``tests/test_typing.py`` type-checks it strictly (as ``.ci/run`` does) and runs it. The
annotated variables are the test: each assignment checks the type the signatures give.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

import xpsoftmax as xs

Reduction = Literal["mean", "sum", "none"]


def numpy_part() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 2, 1])

    p: npt.NDArray[np.float64] = xs.softmax(logits)
    logp: npt.NDArray[np.float64] = xs.log_softmax(logits, axis=1, temperature=0.5)
    assert np.allclose(p.sum(axis=-1), 1.0)
    assert np.allclose(np.exp(logp).sum(axis=-1), 1.0)

    # One array unless return_sign=True: float() of the result type-checks.
    total = float(xs.logsumexp(logits))
    rows: npt.NDArray[np.float64] = xs.logsumexp(logits, axis=-1, keepdims=True)
    lse, sign = xs.logsumexp(np.array([1.0, 2.0]), b=np.array([1.0, -1.0]), return_sign=True)
    signed: float = float(sign) * float(np.exp(lse))
    assert total > 0 and rows.shape == (3, 1) and signed < 0

    per_row: npt.NDArray[np.float64] = xs.cross_entropy(logits, labels, reduction="none")
    reduction: Reduction = "sum"
    loss, grad = xs.cross_entropy_with_grad(logits, labels, reduction=reduction)
    g: npt.NDArray[np.float64] = grad
    assert per_row.shape == (3,) and float(loss) > 0 and g.shape == logits.shape

    # Python input is read with NumPy (typed Any: annotate where the array type matters).
    q: npt.NDArray[np.float64] = xs.softmax([1.0, 2.0, 3.0])
    assert float(xs.logsumexp([0.0, 0.0])) > 0.69 and q.shape == (3,)


def lse_of(x: torch.Tensor, *, signed: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    # return_sign known only at run time: either result.
    return xs.logsumexp(x, axis=-1, return_sign=signed)


def torch_part() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])

    t: torch.Tensor = xs.softmax(logits)
    logp: torch.Tensor = xs.log_softmax(logits, axis=-1)
    assert torch.allclose(t.sum(dim=-1), torch.ones(4))
    assert logp.shape == (4, 3)

    m = float(xs.logsumexp(logits.detach()))
    lse, sign = xs.logsumexp(logits.detach(), axis=1, return_sign=True)
    assert m > 0 and lse.shape == sign.shape == (4,)
    assert isinstance(lse_of(logits, signed=False), torch.Tensor)

    loss: torch.Tensor = xs.cross_entropy(logits, target, label_smoothing=0.1)
    (autograd,) = torch.autograd.grad(loss, logits)
    per_entry: torch.Tensor = xs.cross_entropy(logits.detach(), target, reduction="none")
    value, grad = xs.cross_entropy_with_grad(logits.detach(), target, label_smoothing=0.1)
    assert torch.allclose(grad, autograd, atol=1e-6)
    assert per_entry.shape == (4,) and abs(value.item() - loss.item()) < 1e-6


if __name__ == "__main__":
    numpy_part()
    torch_part()
    print("ok")
