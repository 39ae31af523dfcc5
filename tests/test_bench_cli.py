"""``python -m xpsoftmax bench``: the command runs, writes its JSON and its chart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from xpsoftmax import _bench
from xpsoftmax.__main__ import main

np = pytest.importorskip("numpy")

from xpsoftmax.testing import Backend  # noqa: E402  (the kit needs NumPy)
from xpsoftmax.testing.backends import usable_backends  # noqa: E402


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


def test_bench_libraries_follow_the_one_list() -> None:
    """The libraries with an 'own' column, in the order of ``_libraries.LIBRARIES``."""
    from xpsoftmax import _libraries

    order = [lib.name for lib in _libraries.LIBRARIES]
    assert set(_bench.LIBRARIES) == {"numpy", "torch", "jax", "cupy"}
    assert list(_bench.LIBRARIES) == sorted(_bench.LIBRARIES, key=order.index)


@pytest.mark.parametrize(
    "backend",
    [p for lib in ("numpy", "torch", "jax", "cupy") for p in Backend.pytest_params(library=lib)],
)
@pytest.mark.parametrize("op", _bench.OPS)
def test_own_and_ours_agree(backend: Backend, op: str) -> None:
    """Each library's own implementation computes what xpsoftmax's does (values and, for
    ``cross_entropy+grad``, the gradient), through the same adapters as the benchmark."""
    x, target = _bench._inputs(backend, (8, 16))
    own = _bench._own(backend, op)
    if own is None:
        pytest.skip(f"{backend.library} has no own {op} here (scipy, optax)")
    arg = backend.requires_grad(x) if op.endswith("+grad") else x
    want = backend.sync(_bench._ours(backend, op)(arg, target))
    got = backend.sync(backend.jit(own)(arg, target))
    pairs = zip(got, want) if op.endswith("+grad") else [(got, want)]
    for g, w in pairs:
        np.testing.assert_allclose(
            backend.numpy_float(g), backend.numpy_float(w), rtol=1e-5, atol=1e-6
        )


def test_bench_an_unusable_library(capsys: pytest.CaptureFixture[str]) -> None:
    """A library asked for that cannot run says why; nothing left to time is exit status 1."""
    found, _ = usable_backends(["cupy"])
    if found:
        pytest.skip("CuPy has a device here")
    assert main(["bench", "--quick", "--library", "cupy"]) == 1
    out = capsys.readouterr().out
    assert "cupy: could not be used (" in out and "No array library to benchmark" in out
