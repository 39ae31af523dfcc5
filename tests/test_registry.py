"""The registry: priority, availability, modules that fail to import, picking by name, and
the metadata a fast path decides from (``Call``)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import xpsoftmax as xs
from xpsoftmax import _libraries, _registry
from xpsoftmax._registry import Call, NormalizationOptions
from xpsoftmax.testing.backends import BY_ID

FAKE = "fakelib"


@pytest.fixture
def fake_library(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A library ``fakelib`` whose backend package lists a good and a broken module, with a
    registry that is restored afterwards."""
    package = types.ModuleType("fake_xp_backend")
    package.FAST_PATH_MODULES = ("good", "broken")  # type: ignore[attr-defined]
    package.__path__ = []  # a package with no files
    good = types.ModuleType("fake_xp_backend.good")
    log: dict[str, Any] = {"available_calls": 0}

    def register_good() -> None:
        _registry.register("softmax", FAKE, "fakelib.low", supports=lambda c: True, priority=10)(
            lambda *a, **k: "low"
        )
        _registry.register("softmax", FAKE, "fakelib.high", supports=lambda c: True, priority=90)(
            lambda *a, **k: "high"
        )

    monkeypatch.setitem(sys.modules, "fake_xp_backend", package)
    monkeypatch.setitem(sys.modules, "fake_xp_backend.good", good)
    # "broken" is absent from sys.modules and from disk: importing it raises ImportError.
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(_registry, "_LOADED", set(_registry._LOADED))
    monkeypatch.setattr(_registry, "_BROKEN_MODULES", dict(_registry._BROKEN_MODULES))
    monkeypatch.setattr(_registry, "_UNAVAILABLE", dict(_registry._UNAVAILABLE))
    monkeypatch.setattr(_registry, "_CHECKED", set())  # the fake names are checked anew
    lib = _libraries.Library(FAKE, "numpy", FAKE, backend="fake_xp_backend")
    monkeypatch.setitem(_libraries._BY_NAME, FAKE, lib)
    register_good()  # what importing "good" would do (it is already in sys.modules)
    log["register"] = register_good
    yield log


def _call(**kw: Any) -> Call:
    fields: dict[str, Any] = dict(
        op="softmax", library=FAKE, device="cpu", dtype="float32", ndim=2, axes=(1,)
    )
    fields.update(kw)
    return Call(**fields)


def test_a_broken_module_leaves_the_other_fast_paths(fake_library: dict[str, Any]) -> None:
    _registry.load_backend(FAKE)
    broken = _registry.broken_modules()
    assert "No module named 'fake_xp_backend.broken'" in broken[(FAKE, "broken")]
    assert (FAKE, "good") not in broken
    entry = _registry.select(_call())
    assert entry is not None and entry.name == "fakelib.high"


def test_highest_priority_wins_whatever_the_registration_order(
    fake_library: dict[str, Any],
) -> None:
    names = [e.name for e in _registry._REGISTRY[("softmax", FAKE)]]
    assert names == ["fakelib.high", "fakelib.low"]
    assert _registry.select(_call()).name == "fakelib.high"  # type: ignore[union-attr]
    # A narrower high-priority entry gives way where it does not accept the call.
    _registry.register(
        "softmax", FAKE, "fakelib.high", supports=lambda c: c.ndim == 1, priority=90
    )(lambda *a, **k: "high")
    assert _registry.select(_call()).name == "fakelib.low"  # type: ignore[union-attr]
    assert _registry.select(_call(ndim=1, axes=(0,))).name == "fakelib.high"  # type: ignore[union-attr]


def test_an_unavailable_entry_is_skipped_and_checked_once(
    fake_library: dict[str, Any],
) -> None:
    calls = []

    def no_device() -> str:
        calls.append(1)
        return "no device for fakelib"

    _registry.register(
        "softmax",
        FAKE,
        "fakelib.kernel",
        supports=lambda c: True,
        priority=100,
        available=no_device,
    )(lambda *a, **k: "kernel")
    for _ in range(3):
        assert _registry.select(_call()).name == "fakelib.high"  # type: ignore[union-attr]
    assert len(calls) == 1
    entry = next(e for e in _registry._REGISTRY[("softmax", FAKE)] if e.name == "fakelib.kernel")
    assert entry.unavailable() == "no device for fakelib"


def test_an_availability_check_that_raises_means_unavailable(
    fake_library: dict[str, Any],
) -> None:
    def broken() -> str | None:
        raise RuntimeError("driver too old")

    _registry.register(
        "softmax", FAKE, "fakelib.kernel", supports=lambda c: True, priority=100, available=broken
    )(lambda *a, **k: "kernel")
    assert _registry.select(_call()).name == "fakelib.high"  # type: ignore[union-attr]


def test_register_requires_a_known_op() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        _registry.register("softmin", FAKE, "x", supports=lambda c: True, priority=1)


# --- picking by name ---------------------------------------------------------------------


X = np.ones((2, 3))


def test_use_picks_and_nests() -> None:
    assert xs.which("softmax", X) == "numpy.inplace"
    with xs.use("generic"):
        assert xs.which("softmax", X) == "generic"
        with xs.use("numpy.inplace"):  # the innermost wins
            assert xs.which("softmax", X) == "numpy.inplace"
        assert xs.which("softmax", X) == "generic"
    assert xs.which("softmax", X) == "numpy.inplace"


def test_a_picked_entry_that_cannot_serve_gives_generic_not_another_fast_path(
    fake_library: dict[str, Any],
) -> None:
    _registry.register(
        "softmax", FAKE, "fakelib.high", supports=lambda c: c.ndim == 1, priority=90
    )(lambda *a, **k: "high")
    with xs.use("fakelib.high"):
        assert _registry.select(_call()) is None  # not fakelib.low
        assert _registry.select(_call(ndim=1, axes=(0,))).name == "fakelib.high"  # type: ignore[union-attr]
    with xs.use("fakelib.low"):
        assert _registry.select(_call(ndim=1, axes=(0,))).name == "fakelib.low"  # type: ignore[union-attr]


@pytest.mark.parametrize("others", [True, False])
def test_an_opt_in_entry_serves_only_when_named(fake_library: dict[str, Any], others: bool) -> None:
    """Whatever its priority, and also where no other entry would serve (the case a low
    priority alone got wrong: JAX's ``cross_entropy_with_grad`` had only the Pallas entry)."""
    if not others:
        _registry._REGISTRY[("softmax", FAKE)] = []
    _registry.register(
        "softmax", FAKE, "fakelib.new", supports=lambda c: True, priority=200, opt_in=True
    )(lambda *a, **k: "new")
    chosen = _registry.select(_call())
    assert (chosen.name if chosen else None) == ("fakelib.high" if others else None)
    with xs.use("fakelib.new"):
        assert _registry.select(_call()).name == "fakelib.new"  # type: ignore[union-attr]
    if others:
        with xs.use("fakelib.low"):  # a use() naming another entry leaves it out too
            assert _registry.select(_call()).name == "fakelib.low"  # type: ignore[union-attr]


def test_a_pick_leaves_other_operations_and_libraries_alone() -> None:
    with xs.use("numpy.inplace"):
        # cross_entropy on NumPy has no entry of that name: it chooses as usual.
        assert xs.which("cross_entropy", X, np.array([0, 1])) == "numpy.fused"


@pytest.mark.parametrize(
    "names, match",
    [
        (("numpy.nope",), "is not an implementation of numpy"),
        (("nolib.kernel",), "names no implementation"),
        (("inplace",), "names no implementation"),
    ],
)
def test_use_rejects_unknown_names(names: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match), xs.use(*names):
        pass


def test_use_checks_names_once_and_rejects_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop with ``use(...)`` around every call checks its names once (checking lists the
    registry: a sizeable part of a small call's cost); a bad name is rejected on every
    ``use``, not only the first; names of a library not installed are checked again once it
    is (a mistyped name must not pass for having been skipped)."""
    monkeypatch.setattr(_registry, "_CHECKED", set())
    with xs.use("numpy.inplace", "generic"):
        pass

    def listing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the names were checked again")

    with monkeypatch.context() as m:
        m.setattr(_registry, "fast_paths", listing)
        with xs.use("generic", "numpy.inplace"):  # the same set, in another order
            assert _registry._picked() == {"numpy.inplace", "generic"}
    for _ in range(2):
        with pytest.raises(ValueError, match="is not an implementation"), xs.use("numpy.nope"):
            pass
    real = importlib.util.find_spec
    with monkeypatch.context() as m:
        m.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "numpy" else real(n, *a))
        with xs.use("numpy.nope"):  # numpy "not installed": nothing to check it against
            pass
    with pytest.raises(ValueError, match="is not an implementation"), xs.use("numpy.nope"):
        pass


def test_use_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="implementation names"), xs.use(1):  # type: ignore[arg-type]
        pass


def test_use_is_per_thread() -> None:
    seen: list[str] = []
    inside = threading.Event()
    done = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen.append(xs.which("softmax", X))
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with xs.use("generic"):
        inside.set()
        done.wait(10)
        assert xs.which("softmax", X) == "generic"
    t.join()
    assert seen == ["numpy.inplace"]


def test_environment_variable_picks_for_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_registry.ENV_IMPLEMENTATION, "generic")
    assert xs.which("softmax", X) == "generic"
    monkeypatch.setenv(_registry.ENV_IMPLEMENTATION, " numpy.inplace , generic ")
    assert xs.which("softmax", X) == "generic"  # "generic" among the names forces it
    monkeypatch.setenv(_registry.ENV_IMPLEMENTATION, "numpy.inplace")
    assert xs.which("softmax", X) == "numpy.inplace"
    monkeypatch.setenv(_registry.ENV_IMPLEMENTATION, "numpy.typo")
    with pytest.raises(ValueError, match=re.escape("XPSOFTMAX_IMPLEMENTATION: 'numpy.typo'")):
        xs.softmax(X)
    with xs.use("numpy.inplace"):  # a use() block overrides the environment
        assert xs.which("softmax", X) == "numpy.inplace"


# --- the metadata of a call --------------------------------------------------------------


def _plan_call(op: str, *args: Any, **kwargs: Any) -> Call:
    from xpsoftmax import _api

    return _api._checked_call(op, *args, **kwargs).call


def test_call_shape_length_and_contiguity_on_numpy() -> None:
    x = np.ones((4, 6, 5))
    c = _plan_call("softmax", x, axis=(1, 2))
    assert (c.shape, c.axes, c.length, c.contiguous, c.pieces) == (
        (4, 6, 5),
        (1, 2),
        30,
        True,
        (1, 1),
    )
    assert isinstance(c.options, NormalizationOptions)
    assert c.options == NormalizationOptions("one", False)
    assert not _plan_call("softmax", x[:, ::2]).contiguous
    assert not _plan_call("softmax", np.asfortranarray(x)).contiguous


def test_call_options_are_typed_records() -> None:
    x = np.ones((2, 3))
    c = _plan_call("cross_entropy", x, np.array([0, 1]), label_smoothing=0.1, reduction="sum")
    assert c.options == _registry.CrossEntropyOptions("index", False, "sum", True, False, "one")
    lse = _plan_call("logsumexp", x, axis=-1, b=np.ones(3), return_sign=True)
    assert lse.options == _registry.LogsumexpOptions(False, True, True, False)
    assert lse.opt("b") is True and lse.opt("weight", "absent") == "absent"


@pytest.mark.skipif(not BY_ID["torch:cpu"].usable(), reason="torch is not installed")
def test_call_contiguity_on_torch() -> None:
    import torch

    x = torch.ones(4, 6)
    assert _plan_call("softmax", x).contiguous
    assert not _plan_call("softmax", x.t()).contiguous


@pytest.mark.skipif(not BY_ID["dask"].usable(), reason="dask is not installed")
def test_call_pieces_on_dask() -> None:
    import dask.array as da

    x = da.ones((4, 6), chunks=(2, 3))
    assert _plan_call("softmax", x).pieces == (2,)
    assert _plan_call("logsumexp", x, axis=None).pieces == (2, 2)
    assert not _plan_call("softmax", x).whole_slices
    assert _plan_call("softmax", da.ones((4, 6), chunks=(2, 6))).whole_slices
    # Unknown chunk sizes: unknown size (-1), unknown pieces (0).
    y = x[x[:, 0] > 0]
    c = _plan_call("softmax", y, axis=0)
    assert c.shape[0] == -1 and c.length == -1 and c.pieces == (0,)


@pytest.mark.skipif(not BY_ID["jax:cpu"].usable(), reason="jax is not installed")
def test_call_pieces_on_a_sharded_jax_array() -> None:
    code = textwrap.dedent(
        """
        import os, json
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        from xpsoftmax import _api
        mesh = jax.make_mesh((2,), ("v",))
        x = jax.device_put(jnp.ones((4, 6)), NamedSharding(mesh, P(None, "v")))
        whole = jnp.ones((4, 6))
        out = {
            "class_axis": _api._checked_call("softmax", x).call.pieces,
            "row_axis": _api._checked_call("softmax", x, axis=0).call.pieces,
            "unsharded": _api._checked_call("softmax", whole).call.pieces,
            "traced": jax.jit(lambda a: jnp.asarray(
                _api._checked_call("softmax", a).call.pieces))(x).tolist(),
        }
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"class_axis": [2], "row_axis": [1], "unsharded": [1], "traced": [1]}


def test_the_listing_says_why_an_entry_cannot_run_here(fake_library: dict[str, Any]) -> None:
    _registry.register(
        "softmax",
        FAKE,
        "fakelib.kernel",
        supports=lambda c: True,
        priority=100,
        available=lambda: "no fakelib device",
    )(lambda *a, **k: "kernel")
    rows = [r for r in xs.implementations(FAKE) if r.op == "softmax"]
    assert [r.implementation for r in rows] == [
        "fakelib.kernel",
        "fakelib.high",
        "fakelib.low",
        "generic",
    ]
    assert rows[0].conditions == "unavailable here: no fakelib device"
    assert rows[1].conditions == ""


@pytest.mark.skipif(not BY_ID["torch:cpu"].usable(), reason="torch is not installed")
def test_triton_availability_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import torch

    from xpsoftmax.backends.torch import triton as home

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = home.available()
    if importlib.util.find_spec("triton") is None:
        assert reason == "triton is not installed"
    else:
        assert (reason is None) == torch.cuda.is_available()
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert home.available() is None


@pytest.mark.skipif(not BY_ID["jax:cpu"].usable(), reason="jax is not installed")
def test_pallas_availability_check() -> None:
    import jax

    from xpsoftmax.backends.jax import pallas as home

    try:
        jax.devices("gpu")
        has_gpu = True
    except RuntimeError:
        has_gpu = False
    assert (home.available() is None) == has_gpu
