"""The main job: ``python -m xpsoftmax`` lists libraries and implementations and self-checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xpsoftmax.__main__ import main


def test_main_job_in_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xpsoftmax", "--library", "numpy"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Array libraries found: numpy" in out
    # float32 softmax and cross-entropy: the compiled kernels where numba is installed, else
    # the ufunc paths.
    assert "numpy.compiled" in out or ("numpy.inplace" in out and "numpy.fused" in out)
    assert "Compiled CPU kernel (float32 NumPy arrays; " in out
    assert "All checks passed." in out


def test_main_reports_a_failing_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong answer shows in the table and gives exit status 1 (the check can fail)."""
    import xpsoftmax.__main__ as m

    real = m.softmax
    monkeypatch.setattr(m, "softmax", lambda x, *a, **k: real(x, *a, **k) * 2)
    assert main(["--library", "numpy"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "numpy:cpu float64 softmax" in out


def test_main_every_installed_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "generic" in out and "All checks passed." in out


def test_main_versions_use_distribution_names() -> None:
    """array_api_strict is distributed as array-api-strict (from the one list of libraries)."""
    import importlib.metadata

    import xpsoftmax.__main__ as m

    pytest.importorskip("array_api_strict")
    assert m._version("array_api_strict") == importlib.metadata.version("array-api-strict")
    assert m._version("not_a_library") == "?"


def test_main_reports_a_broken_library(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library whose import fails is reported; the others are still checked."""
    pytest.importorskip("dask")
    from xpsoftmax.testing import backends

    real = backends.usable_backends
    broken = {"dask": "ImportError: dask is broken here"}
    monkeypatch.setattr(
        backends, "usable_backends", lambda names: (real(set(names) - set(broken))[0], broken)
    )
    assert main(["--library", "dask", "--library", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "dask: could not be used (ImportError: dask is broken here)" in out
    assert "numpy:cpu" in out and "dask:cpu" not in out


def test_main_self_check_dtypes() -> None:
    """float32, float64 and bfloat16 where the backend has them: no float64 for JAX outside
    its 64-bit mode, whose arrays would silently be float32."""
    import xpsoftmax.__main__ as m
    from xpsoftmax.testing import BY_ID

    assert m._check_dtypes(BY_ID["numpy"]) == ["float32", "float64"]
    assert m._check_dtypes(BY_ID["torch:cpu"]) == ["float32", "float64", "bfloat16"]
    jax = pytest.importorskip("jax")
    before = jax.config.read("jax_enable_x64")
    try:
        jax.config.update("jax_enable_x64", False)
        assert m._check_dtypes(BY_ID["jax:cpu"]) == ["float32", "bfloat16"]
    finally:
        jax.config.update("jax_enable_x64", before)


def test_main_without_numpy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch installs without NumPy; the self-check's adapters need it, and say so."""
    import importlib.util

    pytest.importorskip("torch")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a)
    )
    assert main(["--library", "torch"]) == 1
    assert "The self-check needs NumPy" in capsys.readouterr().out
