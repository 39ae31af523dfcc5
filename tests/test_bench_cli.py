"""``python -m xpsoftmax bench``: the command runs, writes its JSON and its chart.

Runs use tiny inputs and one sample: they check what is measured and recorded, never how
fast (the machine is shared and timings are noise here).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xpsoftmax import _bench, _threads
from xpsoftmax.__main__ import main

np = pytest.importorskip("numpy")

from xpsoftmax.testing import BY_ID, Backend  # noqa: E402  (the kit needs NumPy)
from xpsoftmax.testing import backends as kit  # noqa: E402
from xpsoftmax.testing.backends import usable_backends  # noqa: E402

TINY = ["--shape", "8x64", "--repeats", "1"]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _bench_json(tmp_path: Path, *argv: str, status: int = 0) -> dict[str, Any]:
    """Run ``bench`` with ``argv`` on a tiny input; its JSON document."""
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY, *argv, "--json", str(out)]) == status
    return json.loads(out.read_text())


def _rows(data: dict[str, Any], library: str, **match: str) -> list[dict[str, Any]]:
    return [
        r
        for r in data["results"]
        if r["library"] == library and all(r[k] == v for k, v in match.items())
    ]


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` look not installed to ``importlib.util.find_spec``."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a)
    )


def test_bench_quick_numpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    argv = ["bench", "--quick", "--library", "numpy", "--json", str(out)]
    assert main(argv + (["--plot", str(png)] if HAS_MATPLOTLIB else [])) == 0

    text = capsys.readouterr().out
    assert "numpy:cpu" in text and "cross_entropy+grad" in text
    assert "median of 3 samples, spread min-max" in text and "n/a" not in text
    data = json.loads(out.read_text())
    assert data["shape"] == list(_bench.QUICK_SHAPE) and data["dtype"] == "float32"
    assert (data["statistic"], data["spread"]) == ("median", "min-max")
    rows = _rows(data, "numpy")
    assert [(r["op"], r["impl"]) for r in rows] == [
        (op, impl) for op in _bench.OPS for impl in _bench.IMPLEMENTATIONS
    ]
    copy_gbps = data["baselines"]["cpu"]["gbps"]
    for r in rows:
        if r["impl"] == "own" and r["missing"]:
            continue  # scipy may be absent
        assert r["missing"] is None, r
        assert r["seconds_min"] <= r["seconds"] <= r["seconds_max"], r
        assert r["seconds"] == float(np.median(r["samples"])) and len(r["samples"]) == 3
        assert (r["seconds_min"], r["seconds_max"]) == (min(r["samples"]), max(r["samples"]))
        assert r["gbps"] > 0 and r["copy_fraction"] == pytest.approx(r["gbps"] / copy_gbps)
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timing_median_and_spread() -> None:
    timing = _bench.Timing((0.003, 0.001, 0.002))
    assert (timing.median, timing.low, timing.high) == (0.002, 0.001, 0.003)
    assert timing.cell() == "2.000 (1.000-3.000)"


def test_bench_speedup_is_own_over_ours(tmp_path: Path) -> None:
    """The headline: the own median over xpsoftmax's, per operation, fast and generic."""
    pytest.importorskip("scipy")
    data = _bench_json(tmp_path, "--library", "numpy")
    for op in _bench.OPS:
        own = _rows(data, "numpy", op=op, impl="own")[0]["seconds"]
        for impl in ("fast", "generic"):
            (row,) = _rows(data, "numpy", op=op, impl=impl)
            assert row["speedup"] == pytest.approx(own / row["seconds"])
        assert _rows(data, "numpy", op=op, impl="own")[0]["speedup"] is None


def test_bench_speedup_comes_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("scipy")
    data = _bench_json(tmp_path, "--library", "numpy")
    header, softmax = (
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("operation", "softmax "))
    )
    assert header.split()[1:3] == ["x", "fast"]
    speedup = _rows(data, "numpy", op="softmax", impl="fast")[0]["speedup"]
    assert softmax.split()[1] == f"{speedup:.2f}x"


def test_bench_json_provenance(tmp_path: Path) -> None:
    import platform

    from xpsoftmax import __version__

    data = _bench_json(tmp_path, "--library", "numpy")
    assert data["xpsoftmax"] == __version__
    assert data["versions"]["numpy"] == importlib.metadata.version("numpy")
    for module in _bench.VERSIONED:
        assert (module in data["versions"]) == (importlib.util.find_spec(module) is not None)
    assert data["commit"] is None or re.fullmatch("[0-9a-f]{40}", data["commit"])
    date = datetime.datetime.fromisoformat(data["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - date).total_seconds() < 600
    machine = data["machine"]
    assert machine["node"] == platform.node() and machine["platform"] == platform.platform()
    assert {"processor", "cpu_model", "cpu_count"} <= set(machine)
    if Path("/proc/cpuinfo").exists():
        assert machine["cpu_model"]
    assert data["threads"]["xpsoftmax"] == _threads.get_num_threads()
    assert (data["shape"], data["dtype"], data["repeats"]) == ([8, 64], "float32", 1)
    baseline = data["baselines"]["cpu"]
    assert (baseline["library"], baseline["dtype"], baseline["bytes"]) == ("numpy", "float32", 2048)
    assert baseline["gbps"] == pytest.approx(2 * 2048 / baseline["seconds"] / 1e9)


def test_commit_of_the_checkout(tmp_path: Path) -> None:
    """The commit where the package's files are tracked; None elsewhere, never an error."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    package = tmp_path / "repo" / "xpsoftmax"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert _bench._commit(package) == {"commit": None, "dirty": None}  # not a checkout
    git = ["git", "-C", str(package), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (package / "other.py").write_text("")
    subprocess.run([*git, "add", "other.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    # A checkout, but the package is not tracked in it (an installed copy in a venv there).
    assert _bench._commit(package)["commit"] is None
    subprocess.run([*git, "add", "__init__.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "y"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert _bench._commit(package) == {"commit": head, "dirty": None}
    (package / "__init__.py").write_text("x = 1\n")
    assert _bench._commit(package) == {"commit": head, "dirty": True}


def test_commit_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert _bench._commit() == {"commit": None, "dirty": None}


def test_one_copy_baseline_per_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's copy is measured once, by NumPy, and every host library is a fraction of
    it (torch's own copier is not used)."""
    pytest.importorskip("torch")
    copied: list[str] = []
    real = Backend.copier

    def copier(self: Backend, x: Any) -> Any:
        copied.append(self.id)
        return real(self, x)

    monkeypatch.setattr(Backend, "copier", copier)
    data = _bench_json(tmp_path, "--library", "numpy", "--library", "torch")
    assert copied == ["numpy"]
    assert list(data["baselines"]) == ["cpu"] and data["baselines"]["cpu"]["library"] == "numpy"
    copy_gbps = data["baselines"]["cpu"]["gbps"]
    for library in ("numpy", "torch"):
        for r in _rows(data, library, device="cpu", impl="fast"):
            assert r["copy_fraction"] == pytest.approx(r["gbps"] / copy_gbps)


def test_host_baseline_is_numpy_whatever_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = _bench_json(tmp_path, "--library", "torch")
    assert data["baselines"]["cpu"]["library"] == "numpy"


def test_copy_dtype_keeps_the_width() -> None:
    assert _bench._copy_dtype(BY_ID["numpy"], "float64") == "float64"
    assert _bench._copy_dtype(BY_ID["numpy"], "bfloat16") == "float16"


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_bench_dtype(tmp_path: Path, dtype: str) -> None:
    """The inputs and the copy are of ``--dtype``."""
    data = _bench_json(tmp_path, "--library", "numpy", "--dtype", dtype)
    width = np.dtype(dtype).itemsize
    assert data["dtype"] == dtype
    assert data["baselines"]["cpu"]["dtype"] == dtype
    assert data["baselines"]["cpu"]["bytes"] == 8 * 64 * width
    (row,) = _rows(data, "numpy", op="softmax", impl="fast")
    assert row["gbps"] == pytest.approx(2 * 8 * 64 * width / row["seconds"] / 1e9)


def test_bench_dtype_default_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench._parse([]).dtype == "float32"
    with pytest.raises(SystemExit):
        _bench._parse(["--dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_bench_dtype_a_library_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NumPy has no bfloat16: it is skipped, saying so; torch runs, copied as float16."""
    pytest.importorskip("torch")
    data = _bench_json(tmp_path, "--library", "numpy", "--library", "torch", "--dtype", "bfloat16")
    assert "numpy:cpu: no bfloat16 in NumPy" in capsys.readouterr().out
    assert {r["missing"] for r in _rows(data, "numpy")} == {"no bfloat16 in NumPy"}
    assert all(r["seconds"] for r in _rows(data, "torch", device="cpu", impl="fast"))
    assert data["baselines"]["cpu"]["dtype"] == "float16"


def test_bench_only_a_missing_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *TINY, "--library", "numpy", "--dtype", "bfloat16"]) == 1
    out = capsys.readouterr().out
    assert "numpy:cpu: not run (no bfloat16 in NumPy)" in out


def test_bench_float64_in_jax_outside_x64() -> None:
    """JAX's float64 needs its 64-bit mode: without it JAX is skipped, saying how to get it."""
    jax = pytest.importorskip("jax")
    before = jax.config.read("jax_enable_x64")
    try:
        jax.config.update("jax_enable_x64", False)
        reason = _bench._dtype_missing(BY_ID["jax:cpu"], "float64")
        assert reason is not None and "JAX_ENABLE_X64=1" in reason
        jax.config.update("jax_enable_x64", True)
        assert _bench._dtype_missing(BY_ID["jax:cpu"], "float64") is None
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("threadpoolctl", [True, False], ids=["threadpoolctl", "alone"])
def test_bench_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threadpoolctl: bool
) -> None:
    """``--threads 1`` holds during the run (read back from each library) and is undone;
    xpsoftmax and torch are set also where threadpoolctl (which limits both) is absent."""
    if threadpoolctl and importlib.util.find_spec("threadpoolctl") is None:
        pytest.skip("threadpoolctl is not installed")
    if not threadpoolctl:
        _hide(monkeypatch, "threadpoolctl")
    before = _threads.get_num_threads()
    torch = importlib.util.find_spec("torch") is not None
    libraries = ["--library", "numpy"] + (["--library", "torch"] if torch else [])
    if torch:
        import torch as t

        torch_before = t.get_num_threads()
    data = _bench_json(tmp_path, *libraries, "--threads", "1")
    threads = data["threads"]
    assert threads["requested"] == 1 and threads["xpsoftmax"] == 1
    assert "xpsoftmax.set_num_threads(1)" in threads["set"]
    assert ("threadpool_limits(1)" in threads["set"]) == threadpoolctl
    if torch:
        assert threads["torch"] == 1 and "torch.set_num_threads(1)" in threads["set"]
        assert t.get_num_threads() == torch_before
    if threadpoolctl:
        assert all(p.endswith(" 1") for p in threads["pools"].split(", ") if p)
    assert _threads.get_num_threads() == before


def test_bench_threads_default(tmp_path: Path) -> None:
    data = _bench_json(tmp_path, "--library", "numpy")
    assert data["threads"]["requested"] is None
    assert data["threads"]["set"].startswith("nothing")


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bench_threads_must_be_positive(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _bench._parse(["--threads", bad])
    assert "expected a positive integer" in capsys.readouterr().err


def test_bench_missing_own_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without SciPy NumPy has no own column: each cell says "scipy not installed", in the
    text, the JSON and the chart, and there is no speed-up."""
    _hide(monkeypatch, "scipy")
    data = _bench_json(tmp_path, "--library", "numpy")
    out = capsys.readouterr().out
    assert "no own time for softmax, log_softmax" in out and "scipy not installed" in out
    assert "n/a" not in out
    for r in _rows(data, "numpy", impl="own"):
        assert (r["missing"], r["seconds"]) == ("scipy not installed", None)
    for r in _rows(data, "numpy", impl="fast"):
        assert (r["speedup"], r["speedup_missing"]) == (None, "scipy not installed")
    if HAS_MATPLOTLIB:
        labels = [t.get_text() for ax in _bench._figure(data).axes for t in ax.texts]
        # One label per missing bar: own times, then fast and generic speed-ups.
        assert labels.count("scipy not installed") == 3 * len(_bench.OPS)


def test_bench_missing_optax(monkeypatch: pytest.MonkeyPatch) -> None:
    """JAX's cross-entropy comes from optax: without it, no own one, saying so."""
    pytest.importorskip("jax")
    _hide(monkeypatch, "optax")
    assert _bench._own_missing(BY_ID["jax:cpu"], "cross_entropy") == "optax not installed"
    assert _bench._own_missing(BY_ID["jax:cpu"], "cross_entropy+grad") == "optax not installed"
    assert _bench._own(BY_ID["jax:cpu"], "cross_entropy+grad") is None
    assert _bench._own_missing(BY_ID["jax:cpu"], "softmax") is None


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_bench_plot(tmp_path: Path) -> None:
    """The PNG is written; its title states shape, dtype and machine; a backend that did not
    run is labelled with why."""
    png = tmp_path / "bench.png"
    data = _bench_json(tmp_path, "--library", "numpy", "--library", "torch", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = _bench._figure(data)
    title = fig.get_suptitle()
    assert "float32 8x64" in title and data["machine"]["node"] in title
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    if importlib.util.find_spec("torch") is not None and not BY_ID["torch:cuda"].usable():
        assert any("torch:cuda: not run (no CUDA device)" in t for t in texts)
    panels = [ax.get_title() for ax in fig.axes]
    assert "numpy:cpu: time (own: scipy.special)" in panels
    assert any(p.startswith("numpy:cpu: speed-up over own") for p in panels)


def test_bench_plot_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "matplotlib")
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--plot", "x.png"])
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_bench_bad_shape(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--shape", "12by4"])
    assert "expected ROWSxCOLS" in capsys.readouterr().err


def test_bench_a_failing_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An xpsoftmax implementation that raises is reported in its cell; the others still run,
    and the exit status is 1."""
    from xpsoftmax import _api

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(_api, "softmax", broken)
    data = _bench_json(tmp_path, "--library", "numpy", status=1)
    (row,) = _rows(data, "numpy", op="softmax", impl="fast")
    assert row["missing"] == "failed: RuntimeError: broken on purpose"
    assert _rows(data, "numpy", op="logsumexp", impl="fast")[0]["seconds"]
    assert "failed: RuntimeError: broken on purpose" in capsys.readouterr().out


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
        pytest.skip(f"{backend.library} has no own {op} here: {_bench._own_missing(backend, op)}")
    arg = backend.requires_grad(x) if op.endswith("+grad") else x
    want = backend.sync(_bench._ours(backend, op)(arg, target))
    got = backend.sync(backend.jit(own)(arg, target))
    pairs = zip(got, want) if op.endswith("+grad") else [(got, want)]
    for g, w in pairs:
        np.testing.assert_allclose(
            backend.numpy_float(g), backend.numpy_float(w), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "backend",
    [p for lib in ("torch", "jax") for p in Backend.pytest_params(library=lib)],
)
@pytest.mark.parametrize("op", _bench.OPS)
def test_bench_generic_run_is_generic(
    backend: Backend, op: str, forced_at_each_dispatch: list[bool]
) -> None:
    """The 'generic' run reaches the registry with the generic path forced, after the 'fast'
    run of the same op: jax.jit keeps one trace per function, so a function shared by the two
    runs timed the fast path's program twice (the JAX cross-entropy's, until 2026-11-27)."""
    forced = forced_at_each_dispatch
    x, target = _bench._inputs(backend, (8, 16))
    arg = backend.requires_grad(x) if op.endswith("+grad") else x
    _bench._timed(backend, _bench._ours(backend, op), "fast", (arg, target), 1)
    assert forced and not any(forced)
    forced.clear()
    _bench._timed(backend, _bench._ours(backend, op), "generic", (arg, target), 1)
    assert forced and all(forced)


def test_bench_an_unusable_library(capsys: pytest.CaptureFixture[str]) -> None:
    """A library asked for that cannot run says why; nothing left to time is exit status 1."""
    found, _ = usable_backends(["cupy"])
    if found:
        pytest.skip("CuPy has a device here")
    assert main(["bench", "--quick", "--library", "cupy"]) == 1
    out = capsys.readouterr().out
    assert "cupy:cuda: not run (" in out and "Nothing to benchmark" in out


def test_bench_a_broken_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library whose import fails is a reason in the report; the others still run."""
    real = kit.usable_backends
    broken = {"torch": "ImportError: torch is broken here"}
    monkeypatch.setattr(
        kit, "usable_backends", lambda names: (real(set(names) - set(broken))[0], broken)
    )
    data = _bench_json(tmp_path, "--library", "numpy", "--library", "torch")
    assert "torch:cpu: ImportError: torch is broken here" in capsys.readouterr().out
    assert {r["missing"] for r in _rows(data, "torch")} == {"ImportError: torch is broken here"}
    assert _rows(data, "numpy", op="softmax", impl="fast")[0]["seconds"]


def test_copiers_one_per_physical_device() -> None:
    """NumPy for the host. torch and CuPy say "cuda", JAX "gpu", for one card: one copy, torch's, measures it
    (JAX's jitted copy ran at 7-50% of torch's on an H200, inflating JAX's fractions)."""
    gpus = [BY_ID["jax:gpu"], BY_ID["cupy"], BY_ID["torch:cuda"]]
    chosen = _bench._copiers([BY_ID["torch:cpu"], *gpus])
    assert {device: b.id for device, b in chosen.items()} == {"cpu": "numpy", "gpu": "torch:cuda"}
    assert {_bench.physical_device(b.device) for b in gpus} == {"gpu"}
    # Without torch the first GPU library of the list measures it.
    assert _bench._copiers([BY_ID["jax:gpu"], BY_ID["cupy"]])["gpu"].id == "jax:gpu"


def test_bench_device_filter(tmp_path: Path) -> None:
    """--device keeps the backends on that device only; the others are not listed at all."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        data = _bench_json(tmp_path, "--library", "torch", "--device", "cuda")
        assert {r["device"] for r in data["results"]} == {"cuda"}
    else:
        assert main(["bench", *TINY, "--library", "torch", "--device", "cuda"]) == 1
    data = _bench_json(tmp_path, "--library", "torch", "--device", "cpu")
    assert {r["device"] for r in data["results"]} == {"cpu"}


# --- the LM head's training step ---------------------------------------------------------------

LM_HEAD = ["--lm-head", "64x8x300", "--repeats", "1", "--device", "cpu"]


def test_bench_lm_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each implementation per backend, with its time, its ratio to the unfused step and its
    peak extra memory; PyTorch's own only on torch; backends that cannot run, once each."""
    out = tmp_path / "lm.json"
    assert main(["bench", *LM_HEAD, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["lm_head"] == [64, 8, 300]
    rows = {(r["library"], r["impl"]): r for r in data["results"] if r["impl"]}
    usable, _ = usable_backends(list(_bench.LIBRARIES))
    for b in (b for b in usable if b.device == "cpu"):
        impls = {impl for (lib, impl) in rows if lib == b.library}
        torch_own = {"torch_reference", "torch_chunked"}
        assert impls == ({"fused", "unfused"} | (torch_own if b.library == "torch" else set()))
        fused, unfused = rows[(b.library, "fused")], rows[(b.library, "unfused")]
        assert fused["missing"] is None and fused["ms"] > 0
        assert unfused["vs_unfused"] == 1.0
        assert fused["vs_unfused"] == pytest.approx(fused["ms"] / unfused["ms"])
        if fused["peak_bytes"] is None:  # not Linux
            assert fused["peak_missing"]
        else:
            logits = 64 * 300 * 4
            assert fused["peak_x_logits"] == pytest.approx(fused["peak_bytes"] / logits)
    text = capsys.readouterr().out
    assert "LM head training step: float32 h 64x8, W 300x8" in text
    assert "numpy:cpu   fused" in text


def test_lm_head_numpy_peak_sees_the_logits() -> None:
    """The NumPy peak counts what the step allocates: the unfused step's logits and gradient
    (about twice the logits), the fused one's chunk (256 of the 512 rows); both beyond what
    they return."""
    from xpsoftmax import _bench_linear

    numpy_backend = BY_ID["numpy"]
    shape = (512, 16, 2000)
    rows = {
        impl: _bench_linear._peak(numpy_backend, impl, shape, "float32")
        for impl in ("fused", "unfused")
    }
    assert rows["unfused"]["peak_x_logits"] >= 1.5
    assert rows["fused"]["peak_x_logits"] < 0.75


def test_bench_lm_head_shape_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--lm-head", "64x8"])
    assert "expected NxHxV" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--lm-head", "64x0x8"])
    assert "positive" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_bench_lm_head_plot(tmp_path: Path) -> None:
    out = tmp_path / "lm.png"
    assert main(["bench", *LM_HEAD, "--library", "numpy", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
