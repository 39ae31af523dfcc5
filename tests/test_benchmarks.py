"""The asv suite (``asv_bench/benchmarks``) runs: every benchmark of every module, once, on a
tiny shape, for each installed CPU backend; GPU backends skip. No asv needed."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "asv_bench" / "benchmarks"
MODULES = ["softmax", "log_softmax", "logsumexp", "cross_entropy"]
BACKENDS = ["numpy", "torch:cpu", "jax:cpu", "torch:cuda", "jax:gpu", "cupy"]
TINY = "8x16"


def _package():
    """The benchmarks as a package of its own name, leaving sys.path alone."""
    name = "xpsoftmax_asv_benchmarks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, BENCH_DIR / "__init__.py", submodule_search_locations=[str(BENCH_DIR)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return name


def _benchmark_classes(module):
    return [
        cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and not name.startswith("_")
        and any(m.startswith(("time_", "track_")) for m in dir(cls))
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("module_name", MODULES)
def test_benchmarks_run(module_name: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    library = backend.partition(":")[0]
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed")
    package = _package()
    common = importlib.import_module(f"{package}.common")
    module = importlib.import_module(f"{package}.{module_name}")
    # One sample of one call: the test checks that the code runs, not how fast.
    real = common.median_time
    monkeypatch.setattr(common, "median_time", lambda fn: real(fn, samples=1, min_sample=0))
    classes = _benchmark_classes(module)
    assert classes, f"no benchmark class in {module_name}"
    ran = 0
    for cls in classes:
        methods = sorted(m for m in dir(cls) if m.startswith(("time_", "track_")))
        params = [[backend], *cls.params[1:]]
        params[cls.param_names.index("shape")] = [TINY]
        for combo in itertools.product(*params):
            if common.static_skip(*combo[:4]):
                continue
            bench = cls()
            try:
                bench.setup(*combo)
            except NotImplementedError as exc:
                # A missing device, or a peer library that is not installed (optax).
                if backend.endswith(("cuda", "gpu")) or library == "cupy" or combo[1] == "peer":
                    continue
                raise AssertionError(f"{cls.__name__}{combo} skipped: {exc}") from exc
            try:
                for method in methods:
                    try:
                        value = getattr(bench, method)(*combo)
                    except common.SkipNotImplemented:
                        continue
                    if method.startswith("track_"):
                        assert value >= 0, (cls.__name__, combo, method, value)
                ran += 1
            finally:
                bench.teardown(*combo)
    if not ran:
        pytest.skip(f"{backend}: no device here")


def test_params_are_the_documented_ones() -> None:
    common = importlib.import_module(f"{_package()}.common")
    assert common.XPBenchmark.params[0] == BACKENDS
    assert common.XPBenchmark.param_names == ["backend", "impl", "shape", "dtype"]


def test_backends_are_the_adapters_of_the_checkout() -> None:
    """The suite's backends are the kit's adapters, read from this checkout's source files
    under a private name (not the installed package's, which old commits lack)."""
    common = importlib.import_module(f"{_package()}.common")
    adapters = common.adapters
    source = BENCH_DIR.parents[1] / "src" / "xpsoftmax"
    assert Path(adapters.__file__) == source / "testing" / "backends.py"
    assert Path(adapters._libraries.__file__) == source / "_libraries.py"
    assert not adapters.__name__.startswith("xpsoftmax")
    assert set(common.BACKENDS) <= set(adapters.BY_ID)


def test_suite_runs_without_the_new_modules_installed(tmp_path: Path) -> None:
    """As on an old commit: no xpsoftmax.testing nor xpsoftmax._libraries importable."""
    code = f"""
import sys
import xpsoftmax
del xpsoftmax._libraries
sys.modules["xpsoftmax._libraries"] = None  # importing it now fails
sys.modules["xpsoftmax.testing"] = None
sys.path.insert(0, {str(BENCH_DIR.parent)!r})
from benchmarks.cross_entropy import CrossEntropy
bench = CrossEntropy()
bench.setup("numpy", "fast", "{TINY}", "float32", "forward+backward")
bench.time_cross_entropy()
print(bench.in_bytes, bench.out_bytes)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    # 8x16 float32 logits and 8 int64 labels read; the loss and the 8x16 gradient written.
    assert proc.stdout.split() == [str(8 * 16 * 4 + 8 * 8), str(4 + 8 * 16 * 4)]


def test_the_recorded_profile_runs(tmp_path: Path) -> None:
    """The profile (``asv_bench/record``'s benchmark) on a tiny shape, in a process of its own:
    it binds that process to one CPU and changes its allocator."""
    code = f"""
import json, os, sys
sys.path.insert(0, {str(BENCH_DIR.parent)!r})
from benchmarks import profile
profile.SHAPES = ["{TINY}"]
profile.ROUNDS = 2
out = profile.measure_all()
print(json.dumps({{"out": out, "cpus": len(os.sched_getaffinity(0))}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    out = report["out"]
    assert report["cpus"] == 1
    if sys.platform.startswith("linux"):
        assert "(steady allocator)" in proc.stderr
    key = f"softmax|numpy|fast|{TINY}|float32"
    assert out["ms"][key] > 0 and out["spread"][key] >= 0
    assert out["vs_peer"][f"softmax|numpy|{TINY}|float32"] > 0
    assert 0 < out["limit"][f"softmax|numpy|{TINY}|float32"]
    # every configuration is measured or skipped with its reason
    measured = {k.replace("|fast|", "|") for k in out["ms"] if "|fast|" in k}
    assert measured <= set(out["limit"])
    assert all(isinstance(reason, str) and reason for reason in out["skip"].values())


@pytest.mark.parametrize("backend", ["numpy", "torch:cpu", "jax:cpu"])
def test_the_lm_head_benchmarks_run(backend: str) -> None:
    """The linear cross-entropy benchmarks (their own parameters: tokens x hidden x vocab)
    once on a tiny head, every implementation the backend has."""
    library = backend.partition(":")[0]
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed")
    module = importlib.import_module(f"{_package()}.linear_cross_entropy")
    cls = module.LinearCrossEntropy
    ran = 0
    for impl, dtype in itertools.product(module.IMPLEMENTATIONS, module.DTYPES):
        combo = (backend, impl, "8x4x16", dtype)
        if module._skip(*combo):
            continue
        bench = cls()
        try:
            bench.setup(*combo)
        except NotImplementedError:
            continue  # a library too old for a peer (torch's linear_cross_entropy)
        bench.time_step(*combo)
        assert bench.track_peak_memory(*combo) >= 0
        ran += 1
    assert ran >= 2


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_generic_runs_are_generic(pass_: str, forced_at_each_dispatch: list) -> None:
    """The 'generic' benchmark reaches the registry with the generic path forced, after the
    'fast' one in the same process: jax.jit keeps one trace per function, and the suite once
    jitted xs.cross_entropy itself for both (the generic column timed the fast path)."""
    pytest.importorskip("jax")
    module = importlib.import_module(f"{_package()}.cross_entropy")
    forced = forced_at_each_dispatch
    for impl in ("fast", "generic"):
        forced.clear()
        bench = module.CrossEntropy()
        combo = ("jax:cpu", impl, TINY, "float32", pass_)
        bench.setup(*combo)
        try:
            bench.run()
        finally:
            bench.teardown(*combo)
        assert forced and all(f == (impl == "generic") for f in forced), (impl, forced)
