"""``scripts/tune_triton.py --peers``: the peers it times on a GPU compute what torch computes
(checked on CPU tensors, in a subprocess: the script imports triton, with its interpreter on
for Liger-Kernel's kernels where Liger is installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

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
    }
    peers = tune._peers(x, t)
    assert "torch.compile" in peers
    # Inductor's compilation takes minutes on CPU: the same functions through the eager backend.
    tables = {**peers, "torch.compile": tune._compiled_ops(x, t, backend="eager")}
    seen = []
    for impl, table in tables.items():
        for op, (fn, nbytes) in table.items():
            got = fn()
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
        assert {s for s in seen if s.startswith(f"{dtype}:liger:")} == {
            f"{dtype}:liger:{op}" for op in liger
        }
