"""The GPU measuring scripts time the right functions, checked on CPU:
``scripts/tune_triton.py`` (its own rows, the Triton kernels as the public functions pick them
by default, and its ``--peers`` compute what torch computes; in a subprocess:
the script imports triton, with its interpreter on for Liger-Kernel's kernels where Liger is
installed) and ``scripts/tune_jax.py`` (jax.nn / optax and xpsoftmax's choices agree)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpsoftmax as xs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_triton.py"

CHECK = """
import importlib.util, sys
import torch
import torch.nn.functional as F

spec = importlib.util.spec_from_file_location("tune_triton", sys.argv[1])
tune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune)


def check(dtype):
    torch.manual_seed(0)
    x = torch.randn(6, 40, dtype=dtype)
    t = torch.randint(0, 40, (6,))
    before = x.clone()
    xf = x.float().requires_grad_(True)
    (want_grad,) = torch.autograd.grad(F.cross_entropy(xf, t), xf)
    want = {
        "softmax": torch.softmax(x, -1),
        "log_softmax": torch.log_softmax(x, -1),
        "logsumexp": torch.logsumexp(x.float(), -1),
        "ce_fwd_bwd": want_grad.to(x.dtype),
        "softmax_raw": torch.softmax(x, -1),
        "ce_with_grad": want_grad.to(x.dtype),
    }
    peers = tune._peers(x, t)
    assert "torch.compile" in peers
    # Inductor's compilation takes minutes on CPU: the same functions through the eager backend.
    tables = {**peers, "torch.compile": tune._compiled_ops(x, t, backend="eager")}
    tables["ours"] = tune._ops(x, t, True)  # the Triton kernels, interpreted
    seen = []
    for impl, table in tables.items():
        for op, (fn, nbytes) in table.items():
            got = fn()
            got = got[1] if isinstance(got, tuple) else got  # cross_entropy_with_grad's gradient
            tol = 1e-6 if x.dtype == torch.float32 else 1e-2
            torch.testing.assert_close(got.float(), want[op].float(), rtol=tol, atol=tol)
            assert nbytes in (x.numel() * x.element_size(), 2 * x.numel() * x.element_size())
            seen.append(f"{impl}:{op}")
    assert torch.equal(x, before), "a peer wrote over the logits"
    return seen

for name in sys.argv[2:]:
    print(" ".join(f"{name}:{s}" for s in check(getattr(torch, name))))
"""


DTYPES = ("float32", "bfloat16")


def test_peers_compute_torchs_values() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(SCRIPT), *DTYPES],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = set(done.stdout.split())
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        liger: set[str] = set()
    else:
        liger = {"softmax", "ce_fwd_bwd"}
    for dtype in DTYPES:
        for op in ("softmax", "log_softmax", "logsumexp", "ce_fwd_bwd"):
            assert f"{dtype}:torch.compile:{op}" in seen
            assert f"{dtype}:ours:{op}" in seen
        assert {f"{dtype}:ours:softmax_raw", f"{dtype}:ours:ce_with_grad"} <= seen
        assert {s for s in seen if s.startswith(f"{dtype}:liger:")} == {
            f"{dtype}:liger:{op}" for op in liger
        }


def _tune_jax() -> Any:
    spec = importlib.util.spec_from_file_location("tune_jax", SCRIPT.parent / "tune_jax.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tune_jax_times_what_jax_computes(dtype: str) -> None:
    """``scripts/tune_jax.py``: every implementation it times of an operation computes the
    same values (jax.nn / optax and xpsoftmax's choice), and a run on the CPU gives a row
    for each."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    tune = _tune_jax()
    cpu = jax.devices("cpu")[0]
    x = jax.random.normal(jax.random.key(1), (6, 40), dtype=getattr(jnp, dtype))
    t = jnp.arange(6) * 7
    for op in tune.OPS:
        found = tune.functions(op, x, t)
        values = {}
        for impl, (fn, _) in found.items():
            with xs.use("jax.pallas") if impl == "pallas" else contextlib.nullcontext():
                values[impl] = np.asarray(fn(x, t), dtype=np.float64)
        assert "own" in values, op
        want = values.pop("default")
        for impl, got in values.items():
            np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3, err_msg=f"{op} {impl}")
    rows = tune.measure((8, 64), dtype, cpu)
    assert {(r["op"], r["impl"]) for r in rows} >= {(op, "default") for op in tune.OPS}
    assert all(r["fraction"] > 0 for r in rows)
