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


# --- the adapters -----------------------------------------------------------------------------


def test_backends_follow_the_one_list_of_libraries() -> None:
    """One backend per library and device of ``_libraries.LIBRARIES``, each with its adapter."""
    from xpsoftmax import _libraries
    from xpsoftmax.testing import BACKENDS, backends

    expected = [(lib.name, device) for lib in _libraries.LIBRARIES for device in lib.devices]
    assert [(b.library, b.device) for b in BACKENDS] == expected
    assert set(backends._ADAPTERS) == {lib.name for lib in _libraries.LIBRARIES}
    # The ids the suite's parameters and the CI summary use.
    assert {"numpy", "torch:cpu", "torch:cuda", "jax:cpu", "jax:gpu", "cupy"} <= set(BY_ID)
    assert BY_ID["torch:cpu"].autodiff and not BY_ID["numpy"].autodiff


def test_backend_adapter(backend: Backend) -> None:
    """What the bench, the CLI and the asv suite use of a backend, on every usable one."""
    b = backend
    x = b.asarray([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert b.to_numpy(x).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    labels = b.asarray([1, 0], b.index_dtype)
    assert b.to_numpy(labels).dtype == np.dtype(b.index_dtype)
    assert b.nbytes(x) == 16 and b.nbytes((x, labels)) == 16 + b.to_numpy(labels).nbytes

    copy = b.copier(x)
    out = b.sync(copy())
    assert out is not x and b.numpy_float(out).tolist() == [[1.0, 2.0], [3.0, 4.0]]

    # sync waits for (and, for Dask, computes) every array of a tuple.
    first, second = b.sync((b.jit(lambda a: a * 2)(x), x))
    assert b.to_numpy(first).tolist() == [[2.0, 4.0], [6.0, 8.0]]
    assert b.to_numpy(second).tolist() == [[1.0, 2.0], [3.0, 4.0]]

    assert "float32" in b.available_dtypes()
    assert set(b.available_dtypes()) <= set(b.dtypes)


def test_backend_autodiff(ad_backend: Backend) -> None:
    b = ad_backend
    x = b.requires_grad(b.asarray([1.0, -2.0, 3.0], "float32"))
    value, grad = b.value_and_grad(lambda a, scale: scale * (a * a).sum())(x, 0.5)
    assert float(b.to_numpy(value)) == 7.0
    assert b.to_numpy(grad).tolist() == [1.0, -2.0, 3.0]


def test_backends_without_autodiff_say_so() -> None:
    b = BY_ID["numpy"]
    x = np.ones(3)
    assert b.requires_grad(x) is x
    with pytest.raises(TypeError, match="no autodiff"):
        b.value_and_grad(np.sum)
    f = np.sum
    assert b.jit(f) is f


def test_jax_float64_needs_its_64_bit_mode() -> None:
    jax = pytest.importorskip("jax")
    b = BY_ID["jax:cpu"]
    assert b.index_dtype == "int32"
    before = jax.config.read("jax_enable_x64")
    try:
        jax.config.update("jax_enable_x64", False)
        assert b.available_dtypes() == ("float16", "bfloat16", "float32")
        jax.config.update("jax_enable_x64", True)
        assert b.available_dtypes() == b.dtypes
    finally:
        jax.config.update("jax_enable_x64", before)


def test_usable_backends_say_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from xpsoftmax.testing import backends

    found, reasons = backends.usable_backends(["numpy", "not_a_library"])
    assert [b.id for b in found] == ["numpy"]
    assert reasons == {"not_a_library": "unknown library"}

    real = backends.importlib.import_module

    def broken(name: str, *args: object) -> object:
        if name == "numpy":
            raise ImportError("numpy is broken here")
        return real(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", broken)
    found, reasons = backends.usable_backends(["numpy"])
    assert found == [] and reasons == {"numpy": "ImportError: numpy is broken here"}


def test_a_missing_device_is_a_reason() -> None:
    from xpsoftmax.testing import backends

    found, reasons = backends.usable_backends(["cupy"])
    if found:
        pytest.skip("CuPy has a device here")
    assert reasons["cupy"].startswith(("cupy is not installed", "CuPy has no device"))


def test_backend_fast_paths_are_those_that_can_serve_it() -> None:
    """Only entries of the backend's library and device, runnable here."""
    from xpsoftmax.testing import BY_ID

    numpy_paths = BY_ID["numpy"].fast_paths("softmax")
    assert numpy_paths and all(e.library == "numpy" for e in numpy_paths)
    for b in (BY_ID["torch:cpu"], BY_ID["torch:cuda"]):
        assert all(
            b.device in e.devices and e.unavailable() is None for e in b.fast_paths("softmax")
        )


def test_backend_fast_paths_leave_opt_in_entries_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """An opt-in entry serves nothing by default, so the suites that expect a fast path to
    serve (no-mutation's "fast" run) must not count it (on a GPU, JAX's Pallas entry was
    the only cross_entropy_with_grad entry)."""
    from xpsoftmax import _registry
    from xpsoftmax.testing import BY_ID

    BY_ID["numpy"].fast_paths("softmax")  # loads the backend
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    _registry.register(
        "softmax", "numpy", "numpy.trial", supports=lambda c: True, priority=99, opt_in=True
    )(lambda *a, **k: None)
    names = {e.name for e in BY_ID["numpy"].fast_paths("softmax")}
    assert "numpy.trial" not in names and names


def test_torch_log_softmax_gradient_fails_on_all_neginf_rows() -> None:
    """torch's own log_softmax differentiated on an all -inf row gives the upstream gradient
    there (the contract: 0); check_gradients names the case."""
    torch = pytest.importorskip("torch")
    from xpsoftmax.testing import check_gradients

    def torch_log_softmax(x, axis=-1, *, temperature=1.0, where=None):
        return torch.log_softmax(x, dim=axis)

    def plain(call: xpsoftmax.Call) -> bool:
        return len(call.axes) == 1 and call.opt("temperature") == "one" and not call.opt("where")

    with pytest.raises(AssertionError) as info:
        check_gradients("log_softmax", torch_log_softmax, BY_ID["torch:cpu"], accepts=plain)
    report = str(info.value)
    assert report.startswith("torch_log_softmax gradients vs the generic ones: ")
    assert "all_neginf" in report


def test_check_gradients_bad_arguments() -> None:
    from xpsoftmax.testing import check_gradients

    with pytest.raises(ValueError, match="op must be one of"):
        check_gradients("cross_entropy_with_grad", xpsoftmax.softmax, BY_ID["numpy"])
    with pytest.raises(ValueError, match="backend must have autodiff"):
        check_gradients("softmax", xpsoftmax.softmax, BY_ID["numpy"])


def test_jax_programs_dropped_near_the_mapping_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process near Linux's limit of memory mappings drops JAX's compiled programs (each
    holds mappings of its own: a long eager JAX run crashed XLA at the limit); below half
    the limit, or without JAX, nothing happens."""
    import sys
    import types

    from xpsoftmax.testing import fixtures

    cleared: list[int] = []
    fake = types.SimpleNamespace(clear_caches=lambda: cleared.append(1))
    monkeypatch.setitem(sys.modules, "jax", fake)
    monkeypatch.setattr(fixtures, "_mappings", lambda: (40000, 65530))
    assert fixtures._drop_jax_programs_if_crowded() and cleared == [1]
    monkeypatch.setattr(fixtures, "_mappings", lambda: (30000, 65530))
    assert not fixtures._drop_jax_programs_if_crowded() and cleared == [1]
    monkeypatch.delitem(sys.modules, "jax")
    monkeypatch.setattr(fixtures, "_mappings", lambda: (40000, 65530))
    assert not fixtures._drop_jax_programs_if_crowded() and cleared == [1]
    held = fixtures._mappings()  # this machine (Linux): real numbers
    assert held is None or 0 < held[0] < held[1]
