"""The Triton fast paths without a GPU: each kernel compiled for sm_90 (Hopper) to PTX and a
cubin, the interpreted suite (``tests/triton_interpreted``) in a process of its own, and the
registry's behaviour on a machine that cannot run them. On a CUDA machine the conformance
suite runs the same entries on ``torch:cuda`` (``test_fast_path_conforms``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import xpsoftmax as xs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NEEDS_TRITON = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)
_PTR = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16"}


def _signature(kernel: str, dtype: str) -> dict[str, str]:
    p = _PTR[dtype]
    return {
        "normalize_kernel": {"X": p, "Y": p, "n": "i32", "inv_t": "fp32", "x_row_stride": "i64",
                             "y_row_stride": "i64"},
        "normalize_backward_kernel": {"DY": p, "Y": p, "DX": p, "n": "i32", "inv_t": "fp32",
                                      "row_stride": "i64"},
        "logsumexp_kernel": {"X": p, "OUT": "*fp32", "n": "i32", "x_row_stride": "i64"},
        "logsumexp_backward_kernel": {"X": p, "OUT": "*fp32", "G": "*fp32", "g_stride": "i32",
                                      "DX": p, "n": "i32", "row_stride": "i64"},
        "ce_mean_kernel": {"TARGET": "*i64", "W": "*fp32", "rows": "i32", "n": "i32",
                           "ignore_index": "i64", "DEN": "*fp32", "FACTOR": "*fp32"},
        "ce_forward_kernel": {"X": p, "TARGET": "*i64", "W": "*fp32", "PER": "*fp32",
                              "STATS": "*fp32", "DX": p, "FACTOR": "*fp32", "rows": "i32",
                              "n": "i32", "inv_t": "fp32", "ignore_index": "i64",
                              "W_TOTAL": "*fp32", "eps": "fp32", "z_loss": "fp32",
                              "x_row_stride": "i64"},
        "ce_reduce_kernel": {"PER": "*fp32", "rows": "i32", "DEN": "*fp32", "LOSS": "*fp32"},
        "ce_grad_kernel": {"X": p, "TARGET": "*i64", "W": "*fp32", "STATS": "*fp32",
                           "rows": "i32", "G": "*fp32", "g_stride": "i32", "FACTOR": "*fp32",
                           "DX": p, "n": "i32", "inv_t": "fp32", "x_row_stride": "i64"},
        "ce_scale_kernel": {"DX": p, "G": "*fp32", "g_stride": "i32", "rows": "i32",
                            "n": "i32", "row_stride": "i64"},
    }[kernel]  # fmt: skip


_FLAGS = {
    "normalize_kernel": ({"LOG": False}, {"LOG": True}),
    "normalize_backward_kernel": ({"LOG": False}, {"LOG": True}),
    "logsumexp_kernel": ({},),
    "logsumexp_backward_kernel": ({},),
    "ce_mean_kernel": ({"HAS_W": False, "HAS_IGNORE": True}, {"HAS_W": True, "HAS_IGNORE": False}),
    "ce_forward_kernel": (
        {
            "HAS_W": False,
            "HAS_IGNORE": True,
            "SMOOTH": False,
            "Z_LOSS": False,
            "WRITE_GRAD": True,
            "HAS_FACTOR": True,
        },
        {
            "HAS_W": True,
            "HAS_IGNORE": False,
            "SMOOTH": True,
            "Z_LOSS": True,
            "WRITE_GRAD": False,
            "HAS_FACTOR": False,
        },
    ),
    "ce_reduce_kernel": ({"MEAN": False}, {"MEAN": True}),
    "ce_grad_kernel": (
        {"HAS_W": False, "SMOOTH": False, "HAS_G": False, "HAS_FACTOR": True},
        {"HAS_W": True, "SMOOTH": True, "HAS_G": True, "HAS_FACTOR": False},
    ),
    "ce_scale_kernel": ({},),
}
#: Kernels without the ONE_PASS switch: read in chunks always, or not rows at all.
_CHUNKED = {
    "logsumexp_backward_kernel": "chunks",
    "ce_grad_kernel": "chunks",
    "ce_scale_kernel": "chunks",
    "ce_mean_kernel": "a reduction over rows",
    "ce_reduce_kernel": "a reduction over rows",
}
#: The one-program kernels over rows (no logits: one dtype).
_ROWS = ("ce_mean_kernel", "ce_reduce_kernel")
_CONFIGS = [
    (kernel, dtype, one_pass, flags)
    for kernel, variants in _FLAGS.items()
    for dtype in (("float32", "bfloat16") if kernel not in _ROWS else ("float32",))
    for one_pass in ((True, False) if kernel not in _CHUNKED else (False,))
    for flags in variants
]


@NEEDS_TRITON
@pytest.mark.parametrize(("kernel", "dtype", "one_pass", "flags"), _CONFIGS)
def test_kernel_compiles_for_sm90(kernel: str, dtype: str, one_pass: bool, flags: dict) -> None:
    """The compiler catches what the interpreter accepts wrongly (plain Python helpers inside a
    kernel, unsupported ops): each kernel, at the largest one-pass block and the online chunk,
    compiled to PTX and an sm_90 cubin (the wheel's ptxas), no GPU needed."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the kernels are interpreted in this process")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from xpsoftmax.backends.torch.triton import kernels, ops

    n = ops.ONE_PASS_MAX if one_pass else ops.ONE_PASS_MAX + 1
    block, chosen_one_pass, warps = ops.config(n)
    assert chosen_one_pass == one_pass
    if kernel in _ROWS:
        block, warps = ops.REDUCE_BLOCK, ops.REDUCE_WARPS
    constexprs = {"BLOCK": block, **flags}
    if kernel not in _CHUNKED:
        constexprs["ONE_PASS"] = one_pass
    signature = {**_signature(kernel, dtype), **dict.fromkeys(constexprs, "constexpr")}
    source = ASTSource(fn=getattr(kernels, kernel), signature=signature, constexprs=constexprs)
    compiled = triton.compile(
        source,
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "enable_fp_fusion": True},
    )
    assert ".target sm_90" in compiled.asm["ptx"]
    assert len(compiled.asm["cubin"]) > 0


@NEEDS_TRITON
def test_interpreted_kernels() -> None:
    """``tests/triton_interpreted`` under ``TRITON_INTERPRET=1``, in a fresh process (the
    variable must be set before triton is imported): the kit's catalogue and the gradients."""
    import numpy as np
    import triton

    if _version(triton.__version__) < (3, 9) and _version(np.__version__) >= (2, 4):
        pytest.skip(f"triton {triton.__version__}'s interpreter breaks on NumPy >= 2.4 "
                    "(scalar loop bounds); 3.9 does not")  # fmt: skip
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore::RuntimeWarning"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "-W", "ignore::RuntimeWarning", str(ROOT / "tests" / "triton_interpreted")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "no tests ran" not in done.stdout


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_without_a_gpu_native_serves_and_the_reason_is_given() -> None:
    """Here (no CUDA device, not interpreting) the Triton entries are registered but cannot
    run; CPU tensors keep the native fast paths."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the Triton entries can run here")
    entries = [e for e in xs.fast_paths(library="torch") if e.name == "torch.triton"]
    assert {e.op for e in entries} == {
        "softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"
    }  # fmt: skip
    assert all(e.devices == ("cuda",) for e in entries)
    assert {e.unavailable() for e in entries} <= {"no CUDA device", "triton is not installed"}
    # torch.compiled where numba is installed (eager CPU calls), else torch.native.
    assert xs.which("softmax", torch.zeros(2, 3)) in ("torch.compiled", "torch.native")
