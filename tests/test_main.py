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
    assert "numpy.inplace" in out and "numpy.fused" in out
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
