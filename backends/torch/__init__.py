"""PyTorch: the traits the core reads, and the homes of the fast paths.

``native``
    torch's own kernels with the cases where their semantics differ from the contract fixed
    around them (CPU and CUDA).
``linear``
    the linear cross-entropy as an autograd Function over chunks of rows (CPU and CUDA).
``compiled``
    the NumPy backend's compiled CPU kernels (numba) on eager CPU tensors of float32, float16
    and bfloat16, with autograd through the Functions of ``kernels`` (registered above
    ``native`` with numba's availability check).
``triton/``
    Triton kernels for CUDA tensors (softmax, log_softmax, logsumexp), registered above
    ``native`` with the availability check ``triton.available``, so that a machine without
    triton or a GPU keeps ``native``.

The registry imports the modules of :data:`FAST_PATH_MODULES` one by one when the first
tensor arrives; one that fails to import is listed as unavailable and leaves the others
working.
"""

from __future__ import annotations

from typing import Any

import torch

#: The modules under this package that register fast paths, in order.
FAST_PATH_MODULES = ("native", "linear", "compiled", "triton.entries")

_wrapped: Any
try:  # vmap and grad transforms wrap tensors; their values cannot be read
    from torch._C._functorch import is_functorch_wrapped_tensor as _wrapped
except ImportError:  # pragma: no cover - older torch
    _wrapped = None


def device_kind(x: Any) -> str:
    return str(x.device.type)


def values_visible(x: Any) -> bool:
    if x.device.type != "cpu" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not transformed(x)


def tied(result: Any, x: Any) -> Any:
    """``result`` plus 0 times the sum of the empty ``x`` (0): the same values, and a graph
    back to ``x`` for autograd where ``x`` requires grad."""
    if not x.requires_grad:
        return result
    return result + x.sum().to(result.dtype) * 0


def transformed(x: Any) -> bool:
    """Whether ``x`` is inside a ``torch.func`` transform (grad, vmap...). Not asked while
    torch.compile traces (Dynamo cannot trace the test)."""
    if torch.compiler.is_compiling():
        return False
    return _wrapped is not None and bool(_wrapped(x))


def contiguous(x: Any) -> bool:
    return bool(x.is_contiguous())


def index_target(target: Any) -> Any:
    """Class indices torch can compare (it has no comparisons for uint16/32/64): uint16 and
    uint32 convert to int64 exactly; uint64 values of 2**63 and more, which int64 would wrap
    (onto ``ignore_index=-100`` even), become the int64 minimum: out of range like them."""
    if target.dtype in (torch.uint16, torch.uint32):
        return target.to(torch.int64)
    if target.dtype == torch.uint64:
        wrapped = target.view(torch.int64)
        return torch.where(wrapped < 0, torch.iinfo(torch.int64).min, wrapped)
    return target
