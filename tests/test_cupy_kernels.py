"""The CuPy kernels without a GPU: their CUDA source compiled with NVRTC (every kernel, every
dtype), and their arithmetic, through the entries' own code, run by the NumPy mirror
(``xpsoftmax.backends.cupy.mirror``) over the kit's edge-case catalogue. On a CUDA machine
with CuPy the conformance suite runs the entries themselves (``test_fast_path_conforms``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import _nvrtc as nvrtc
import numpy as np
import pytest

import xpsoftmax as xs
from xpsoftmax.backends.cupy import entries, mirror, source
from xpsoftmax.testing import BY_ID, check_implementation
from xpsoftmax.testing.conformance import _plan

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")
ENTRIES = {e.op: e for e in xs.fast_paths(library="cupy") if e.name == "cupy.kernels"}


def test_entries_registered() -> None:
    assert set(ENTRIES) == set(OPS)
    assert all(e.devices == ("cuda",) and e.priority == 100 for e in ENTRIES.values())


@pytest.mark.skipif(nvrtc.library_path() is None, reason="nvidia-cuda-nvrtc-cu12 not installed")
@pytest.mark.parametrize("arch", ["compute_90", "compute_80"])
def test_source_compiles_with_nvrtc(arch: str) -> None:
    """The whole source, as ``cupy.RawModule`` compiles it, to PTX: every kernel is there."""
    ptx = nvrtc.compile_ptx(source.source(), "xpsoftmax.cu", [f"--gpu-architecture={arch}",
                                                               "--std=c++14"])  # fmt: skip
    missing = [k for k in source.kernel_names() if f".entry {k}(" not in ptx]
    assert not missing, missing
    assert len(source.kernel_names()) == len(source.KERNELS) * len(source.DTYPES)


def test_nvrtc_reports_errors() -> None:
    """The compile test can fail: a broken source gives NVRTC's log."""
    if nvrtc.library_path() is None:
        pytest.skip("nvidia-cuda-nvrtc-cu12 not installed")
    with pytest.raises(RuntimeError, match="undefined"):
        nvrtc.compile_ptx('extern "C" __global__ void k() { undefined_name(); }', "bad.cu", [])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("op", OPS)
def test_mirror_conforms(op: str, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry's code with the mirror in place of the launchers, on NumPy arrays: equal to
    the generic path on the catalogue (every call the entry would serve on a GPU)."""
    monkeypatch.setattr(entries, "_kernels", lambda: mirror)
    entry = ENTRIES[op]

    def fast(*args: Any, **kw: Any) -> Any:
        plan = _plan(op, args, kw)
        return dataclasses.replace(plan, impl=entry.impl, name=entry.name).run()

    fast.__name__ = "cupy.kernels[mirror]"
    served = check_implementation(
        op, fast, BY_ID["numpy"], dtype,
        accepts=lambda call: entry.supports(call) and call.dtype in entry.dtypes,
    )  # fmt: skip
    assert served > 0


def test_mirror_rows_span_many_threads() -> None:
    """Rows longer than a block's threads, ending in a partial step, and a maximum that a
    later thread finds: softmax and logsumexp against float64."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3 * source.THREADS + 17)).astype(np.float32)
    x[1, -1] = 30.0  # the maximum, in the last partial step
    x[2, : source.THREADS] = -np.inf  # a whole step of -inf first
    want = np.log(np.exp(x.astype(np.float64)).sum(-1))
    np.testing.assert_allclose(mirror.logsumexp(x), want, rtol=1e-6)
    np.testing.assert_allclose(
        mirror.normalize(x, 1.0, log=False), np.exp(x - want[:, None]), rtol=1e-5, atol=1e-12
    )
