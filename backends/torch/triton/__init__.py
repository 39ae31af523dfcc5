"""Triton kernels for CUDA tensors, in three layers (after Liger-Kernel's ``ops/``):

``kernels``
    the ``@triton.jit`` kernels (imports triton);
``ops``
    their launchers, wrapped as ``torch.library.custom_op`` operators with fake versions and
    autograd rules (imports triton and the kernels);
``entries``
    the registry entries, which import neither: an entry loads ``ops`` at its first call,
    after :func:`available` has passed, so that a machine without triton or without a GPU
    keeps the ``native`` fast paths.
"""

from __future__ import annotations

import importlib.util
import os

#: Looked up once, at import: ``available()`` may first run inside a torch.compile trace, which
#: cannot call importlib.
_INSTALLED = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``, which must be
    set before triton is imported): then they run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def available() -> str | None:
    """None when Triton kernels can run here, else the reason: triton installed, a CUDA device
    present, or ``TRITON_INTERPRET=1`` (the interpreter runs kernels on CPU tensors)."""
    if not _INSTALLED:
        return "triton is not installed"
    if interpreting():
        return None
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"
