"""Pallas kernels (Triton backend) for JAX on GPU (softmax, log_softmax, logsumexp,
cross-entropy with class indices), in two modules:

``kernels``
    the kernels, their ``pallas_call`` and their ``jax.custom_jvp`` rules (imports Pallas);
``entries``
    the registry entries, which import neither Pallas nor the kernels until a call.

Opt-in for now (``xpsoftmax.use("jax.pallas")``, the registry's ``opt_in``): measured once on
an H100 (docs/_static/bench/gpu-h100-2026-11-26), they wait for a clean run of the GPU tests.
``XPSOFTMAX_PALLAS_INTERPRET=1`` runs them with ``interpret=True`` on any device (the tests on
CPU).
"""

from __future__ import annotations

import importlib.util
import os

#: Looked up once, at import (see ``xpsoftmax.backends.torch.triton``).
_INSTALLED = importlib.util.find_spec("jax.experimental.pallas") is not None


def interpreting() -> bool:
    """Whether the kernels run under Pallas' interpreter (``XPSOFTMAX_PALLAS_INTERPRET=1``)."""
    return os.environ.get("XPSOFTMAX_PALLAS_INTERPRET") == "1"


def available() -> str | None:
    """None when Pallas GPU kernels can run here (or are interpreted), else the reason."""
    if not _INSTALLED:
        return "this JAX has no Pallas"
    if interpreting():
        return None
    import jax

    # Older JAX lowers every branch of lax.platform_dependent (jax-ml/jax#28607), and the
    # entries rely on it to keep a traced call for the CPU away from the kernels.
    if tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit()) < (0, 6, 1):
        return f"JAX {jax.__version__} lowers every platform's branch (0.6.1 or newer needed)"
    try:
        jax.devices("gpu")
    except RuntimeError:
        return "no GPU for JAX"
    return None
