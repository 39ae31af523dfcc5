"""Home of the Triton kernels for CUDA tensors (the GPU issue): none is registered yet.

What is here already is the check every Triton entry will register as its ``available``:
nothing in this package imports triton at module level, so that a machine without triton or
without a GPU keeps the ``native`` fast paths (see ``FAST_PATH_MODULES`` in the parent
package, which will list the kernel modules once they exist).
"""

from __future__ import annotations

import importlib.util
import os


def available() -> str | None:
    """None when Triton kernels can run here, else the reason: triton installed, a CUDA device
    present, or ``TRITON_INTERPRET=1`` (the interpreter runs kernels on CPU tensors)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"
