"""The public conformance kit catches broken implementations, with a readable report."""

from __future__ import annotations

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax.testing import BY_ID, Backend, check_implementation


def naive_softmax(x, axis=-1, *, temperature=1.0, where=None):
    """Without the max subtraction: overflows on large logits."""
    e = np.exp(x / temperature)
    return e / np.sum(e, axis=axis, keepdims=True)


def test_naive_softmax_fails_with_a_clear_report() -> None:
    with pytest.raises(AssertionError) as info:
        check_implementation("softmax", naive_softmax, BY_ID["numpy"])
    report = str(info.value)
    assert report.startswith("naive_softmax vs the contract: ")
    assert "huge_1e30" in report  # the case that breaks it is named...
    assert "NaN positions differ" in report  # ...with what went wrong
    assert "expected" in report and "actual" in report


def test_torch_softmax_fails_on_all_neginf_rows() -> None:
    torch = pytest.importorskip("torch")

    def torch_softmax(x, axis=-1, *, temperature=1.0, where=None):
        if not isinstance(temperature, float) or where is not None or not isinstance(axis, int):
            return xpsoftmax.softmax(x, axis, temperature=temperature, where=where)
        return torch.softmax(x / temperature, dim=axis)

    with pytest.raises(AssertionError) as info:
        check_implementation("softmax", torch_softmax, BY_ID["torch:cpu"])
    report = str(info.value)
    assert "all_neginf" in report and "unexpected NaN" in report


def test_xpsoftmax_passes_on_every_backend(backend: Backend) -> None:
    # softmax here; every fast path of every op runs through the kit in test_fast_paths.py
    assert check_implementation("softmax", xpsoftmax.softmax, backend) > 100


def test_too_narrow_an_implementation_is_not_called_checked() -> None:
    with pytest.raises(AssertionError, match="served only 0 calls"):
        check_implementation(
            "softmax", xpsoftmax.softmax, BY_ID["numpy"], accepts=lambda call: False
        )


def test_backend_params_and_sync() -> None:
    params = Backend.pytest_params(library="numpy")
    assert [p.id for p in params] == ["numpy"]
    b = BY_ID["numpy"]
    assert not b.lazy and b.usable()
    x = b.asarray(np.ones(3), "float32")
    assert b.sync(x) is x


def test_installed_suite_runs_from_the_command_line(tmp_path) -> None:
    """``python -m xpsoftmax test`` (and so ``pytest --pyargs xpsoftmax``) runs the installed
    conformance suite, here narrowed to one library and one test, from a foreign directory."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "xpsoftmax", "test", "--library", "numpy", "-q"]
    out = subprocess.run(
        [*cmd, "-k", "test_function_conforms and softmax and float64 and not log"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
