"""``python -m xpsoftmax bench``: the command runs, writes its JSON and its chart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from xpsoftmax import _bench
from xpsoftmax.__main__ import main

pytest.importorskip("numpy")


def test_bench_quick_numpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    argv = ["bench", "--quick", "--library", "numpy", "--json", str(out)]
    assert main(argv + (["--plot", str(png)] if has_matplotlib else [])) == 0

    text = capsys.readouterr().out
    assert "numpy:cpu" in text and "cross_entropy+grad" in text
    data = json.loads(out.read_text())
    assert data["shape"] == list(_bench.QUICK_SHAPE) and data["dtype"] == "float32"
    (result,) = data["results"]
    assert (result["library"], result["device"]) == ("numpy", "cpu")
    assert result["copy_gbps"] > 0
    assert list(result["ops"]) == list(_bench.OPS)
    for op, impls in result["ops"].items():
        assert list(impls) == list(_bench.IMPLEMENTATIONS)
        for impl in ("fast", "generic"):
            entry = impls[impl]
            assert entry["seconds"] > 0 and entry["gbps"] > 0, (op, impl)
            assert entry["copy_fraction"] == pytest.approx(entry["gbps"] / result["copy_gbps"])
    if has_matplotlib:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--plot", "x.png"])
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_bench_bad_shape(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--shape", "12by4"])
    assert "expected ROWSxCOLS" in capsys.readouterr().err
