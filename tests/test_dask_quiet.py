"""Dask graphs built by the generic implementation compute without floating-point warnings.

For Dask input the generic implementation builds a graph that runs later, on the user's
scheduler, outside any ``errstate`` around the call. ``xpsoftmax.backends.dask.quiet.quiet`` rewrites
the layers that the call created so that their tasks run under ``numpy.errstate(all="ignore")``.
Here, for each edge case whose value the contract defines (all -inf rows, +inf, NaN, huge
logits, zero and infinite temperature, negative and zero ``b``...):

* the unwrapped graph does warn (the case is a real one), the wrapped graph computes under
  ``warnings.simplefilter("error")`` with the threaded and the synchronous scheduler (and
  processes, in a child interpreter whose workers turn RuntimeWarning into errors), and the
  values equal the unwrapped ones, NaN for NaN;
* chunks, dtype and meta are kept, the graph stays lazy, Blockwise layers stay Blockwise (the
  optimised graph has as many tasks as before), the new names are deterministic;
* the user's own tasks still warn: an input built as ``x / 0``, an array computed alongside,
  and the unwrapped twin of the same call computed in the same graph;
* nested tasks (task-spec and old-style tuples) run quietly too.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import xpsoftmax as xs
from xpsoftmax import _api
from xpsoftmax.backends.dask.quiet import quiet

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

INF = math.inf
NAN = math.nan

#: Rows: all -inf, +inf, NaN, huge of both signs, ordinary. Chunked so that rows and the
#: class axis both span several chunks.
X = np.array(
    [
        [-INF, -INF, -INF, -INF],
        [1.0, INF, 0.0, 2.0],
        [NAN, 1.0, 2.0, 3.0],
        [1e308, -1e308, 0.0, 1.0],
        [0.5, -1.0, 3.0, 2.0],
        [-INF, 0.0, -INF, 1.0],
    ]
)
CHUNKS = (2, 3)


def _x() -> Any:
    return da.from_array(X, chunks=CHUNKS)


def _like(a: np.ndarray) -> Any:
    return da.from_array(a, chunks=CHUNKS[: a.ndim] if a.ndim == X.ndim else 2)


B = np.tile(np.array([1.0, -1.0, 0.0, 2.0]), (6, 1))
PROBS = np.tile(np.array([0.0, 1.0, 0.0, 0.0]), (6, 1))
INDEX = np.array([0, 1, 2, 3, 0, 1])

#: (id, op, positional args after x, keyword args); arrays are built lazily (dask may be absent).
CASES: list[tuple[str, str, Callable[[], tuple[Any, ...]], Callable[[], dict[str, Any]]]] = [
    ("softmax", "softmax", lambda: (), lambda: {"axis": -1}),
    ("softmax-axis0", "softmax", lambda: (), lambda: {"axis": 0}),
    ("log_softmax", "log_softmax", lambda: (), lambda: {"axis": -1}),
    ("log_softmax-axis0", "log_softmax", lambda: (), lambda: {"axis": 0}),
    ("softmax-T0", "softmax", lambda: (), lambda: {"temperature": 0}),
    ("softmax-Tinf", "softmax", lambda: (), lambda: {"temperature": INF}),
    ("log_softmax-T0", "log_softmax", lambda: (), lambda: {"temperature": 0.0}),
    (
        "softmax-Tarray",
        "softmax",
        lambda: (),
        lambda: {"temperature": _like(np.array([[0.0], [1.0], [INF], [2.0], [0.0], [INF]]))},
    ),
    ("softmax-where", "softmax", lambda: (), lambda: {"where": _like(X > 0)}),
    ("logsumexp-b", "logsumexp", lambda: (), lambda: {"axis": -1, "b": _like(B)}),
    (
        "logsumexp-sign",
        "logsumexp",
        lambda: (),
        lambda: {"axis": -1, "b": _like(B), "return_sign": True},
    ),
    ("logsumexp-all", "logsumexp", lambda: (), lambda: {"axis": None}),
    ("ce-index", "cross_entropy", lambda: (_like(INDEX),), lambda: {"reduction": "none"}),
    ("ce-index-mean", "cross_entropy", lambda: (_like(INDEX),), lambda: {}),
    ("ce-probs", "cross_entropy", lambda: (_like(PROBS),), lambda: {"reduction": "sum"}),
    (
        "ce-T0-zloss",
        "cross_entropy",
        lambda: (_like(INDEX),),
        lambda: {"temperature": 0, "z_loss": 0.1, "reduction": "none"},
    ),
    (
        "ce-grad",
        "cross_entropy_with_grad",
        lambda: (_like(INDEX),),
        lambda: {"label_smoothing": 0.1, "z_loss": 0.01},
    ),
    ("ce-grad-probs", "cross_entropy_with_grad", lambda: (_like(PROBS),), lambda: {}),
]


def _raw(op: str, x: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The generic implementation's graph for ``op`` (not wrapped), and the call's inputs."""
    with xs.force_generic():  # the generic graphs, the largest (the fast paths' too below)
        plan = _api._checked_call(op, x, *args, **kwargs)
    assert plan.name == "generic"
    with np.errstate(all="ignore"):
        out = plan.impl(*plan.args, **plan.kwargs)
    return out, (plan.args, plan.kwargs)


def _tuple(out: Any) -> tuple[Any, ...]:
    return out if isinstance(out, tuple) else (out,)


def _compute_quietly(arrays: tuple[Any, ...], scheduler: str) -> tuple[Any, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return tuple(dask.compute(*arrays, scheduler=scheduler))


def _compute_recording(arrays: tuple[Any, ...], scheduler: str = "sync") -> tuple[Any, set[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = dask.compute(*arrays, scheduler=scheduler)
    return values, {str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)}


def _assert_same(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)  # NaN where NaN


def _forbid_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("quiet() computed something")


@pytest.mark.parametrize(("case", "op", "args", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_edge_cases_compute_without_warnings(
    case: str, op: str, args: Callable[[], tuple[Any, ...]], kwargs: Callable[[], dict[str, Any]]
) -> None:
    raw, inputs = _raw(op, _x(), args(), kwargs())
    with dask.config.set(scheduler=_forbid_compute):  # lazy: nothing computes
        wrapped = quiet(raw, inputs)
    raw_t, wrapped_t = _tuple(raw), _tuple(wrapped)
    assert isinstance(wrapped, tuple) == isinstance(raw, tuple)
    assert len(wrapped_t) == len(raw_t)

    want, messages = _compute_recording(raw_t)
    assert messages, f"{case}: the unwrapped graph should warn, the case is not an edge case"

    for scheduler in ("threads", "sync"):
        _assert_same(_compute_quietly(wrapped_t, scheduler), want)

    for r, w in zip(raw_t, wrapped_t):
        assert w.chunks == r.chunks
        assert w.dtype == r.dtype
        assert type(w._meta) is type(r._meta) and w._meta.dtype == r._meta.dtype
        assert w.name != r.name
        assert w.name.rsplit("-", 1)[0] == r.name.rsplit("-", 1)[0]  # same key prefix


def test_user_input_tasks_still_warn() -> None:
    """An input whose own graph warns (x / 0) keeps warning; only the call's tasks are quiet."""
    base = da.from_array(np.array([[1.0, 2.0, -1.0], [-1.0, -2.0, 3.0]]), chunks=(1, 2))
    x = base / 0  # the user's division by zero: +-inf, and inf - inf in xpsoftmax's tasks
    raw, inputs = _raw("softmax", x, (), {"axis": -1})
    wrapped = quiet(raw, inputs)
    _, raw_messages = _compute_recording((raw,))
    assert any("divide" not in m for m in raw_messages), raw_messages  # xpsoftmax's own
    for scheduler in ("threads", "sync"):
        values, messages = _compute_recording((wrapped,), scheduler)
        assert messages, "the user's division should still warn"
        assert all("in divide" in m for m in messages), messages
        _assert_same(values, _compute_recording((raw,))[0])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message=".*encountered in divide")
            dask.compute(wrapped, scheduler=scheduler)


def test_user_tasks_computed_alongside_still_warn() -> None:
    raw, inputs = _raw("log_softmax", _x(), (), {"axis": -1})
    wrapped = quiet(raw, inputs)
    for scheduler in ("threads", "sync"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(RuntimeWarning, match="encountered in divide"):
                dask.compute(wrapped, da.zeros(3, chunks=2) / 0, scheduler=scheduler)
            with pytest.raises(RuntimeWarning, match="encountered in divide"):
                dask.compute(da.exp(wrapped) / 0, scheduler=scheduler)  # the user's, on top


@pytest.mark.parametrize("order", ["raw-first", "wrapped-first"])
def test_unwrapped_twin_in_the_same_graph_still_warns(order: str) -> None:
    """The rewritten layers get new names, so a twin built by the user keeps its own tasks."""
    raw, inputs = _raw("softmax", _x(), (), {"axis": -1})
    wrapped = quiet(raw, inputs)
    pair = (raw, wrapped) if order == "raw-first" else (wrapped, raw)
    new_layers = set(raw.dask.layers) - set(_x().dask.layers)
    assert new_layers and not new_layers & set(wrapped.dask.layers)
    with pytest.warns(RuntimeWarning):
        values = dask.compute(*pair, scheduler="sync")
    _assert_same(values[:1], values[1:])


def test_tuple_results_share_rewritten_layers() -> None:
    raw, inputs = _raw("logsumexp", _x(), (), {"axis": -1, "b": _like(B), "return_sign": True})
    lse, sign = quiet(raw, inputs)
    shared = set(lse.dask.layers) & set(sign.dask.layers)
    assert set(_x().dask.layers) < shared  # the input, and the call's common layers
    assert len(shared) > len(_x().dask.layers)
    _assert_same(_compute_quietly((lse, sign), "threads"), _compute_recording(raw)[0])


def test_names_are_deterministic_and_blockwise_stays_lazy() -> None:
    from dask.blockwise import Blockwise

    x = da.from_array(np.tile(X, (5, 5)), chunks=(3, 4))
    raw, inputs = _raw("softmax", x, (), {"axis": -1, "temperature": 0.5})
    one, two = quiet(raw, inputs), quiet(raw, inputs)
    assert one.name == two.name and set(one.dask.layers) == set(two.dask.layers)

    def blockwise_layers(a: Any) -> list[Any]:
        return [layer for layer in a.dask.layers.values() if type(layer) is Blockwise]

    if hasattr(blockwise_layers(raw)[0], "task"):  # task-spec Dask (2024.12+): kept lazy
        assert len(blockwise_layers(one)) == len(blockwise_layers(raw)) > 0
        assert not any(layer.is_materialized() for layer in blockwise_layers(one))
        # blockwise fusion still applies: as many tasks after optimisation
        (opt_raw,) = dask.optimize(raw)
        (opt_one,) = dask.optimize(one)
        assert len(dict(opt_one.__dask_graph__())) == len(dict(opt_raw.__dask_graph__()))
    _assert_same(_compute_quietly((one,), "threads"), _compute_recording((raw,))[0])


def test_passthrough_and_non_dask_values() -> None:
    x = _x()
    assert quiet(x, x) is x  # nothing new: returned as it is
    arr = np.ones(3)
    assert quiet(arr, ()) is arr
    pair = (x + 1, 3.0)
    out = quiet(pair, x)
    assert out[1] == 3.0 and out[0].name != pair[0].name


def test_nested_tasks_run_quietly() -> None:
    """Task-spec tasks nested in a task's arguments, and old-style nested tuple tasks."""
    ts = pytest.importorskip("dask._task_spec")
    DataNode, Task, TaskRef = ts.DataNode, ts.Task, ts.TaskRef
    from dask.highlevelgraph import HighLevelGraph

    x = da.from_array(np.array([1.0, 0.0, 3.0]), chunks=1)
    name = "nested-0123456789abcdef0123456789abcdef"
    zero = np.float64(0.0)
    dsk: dict[Any, Any] = {
        # log(x / 0) + log(0): the inner tasks run first and warn too
        (name, 0): Task(
            (name, 0),
            np.add,
            Task(None, np.log, Task(None, np.divide, TaskRef((x.name, 0)), zero)),
            Task(None, np.log, DataNode(None, zero)),
        ),
        (name, 1): (np.add, (np.divide, (x.name, 1), zero), (np.log, zero)),
        # a task nested in a list argument
        (name, 2): (np.sum, [(np.divide, (x.name, 2), zero), (np.log, np.zeros(1))], 0),
    }
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    raw = da.Array(graph, name, chunks=x.chunks, dtype=x.dtype, meta=x._meta)
    want, messages = _compute_recording((raw,))
    assert {"divide by zero encountered in divide", "invalid value encountered in divide"} <= (
        messages
    )
    wrapped = quiet(raw, x)
    for scheduler in ("threads", "sync"):
        _assert_same(_compute_quietly((wrapped,), scheduler), want)
    assert np.isnan(want[0]).all()  # inf + -inf, nan + -inf, inf + -inf


def test_wrapped_tasks_pickle() -> None:
    raw, inputs = _raw("cross_entropy", _x(), (_like(INDEX),), {"reduction": "none"})
    wrapped = quiet(raw, inputs)
    dsk = dict(wrapped.__dask_graph__())
    again = pickle.loads(pickle.dumps(dsk))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = np.concatenate(dask.get(again, wrapped.__dask_keys__()))
    _assert_same((got,), _compute_recording((raw,))[0])


def test_processes_scheduler() -> None:
    """Workers of the process pool run with RuntimeWarning as an error (``-W`` is inherited)."""
    code = textwrap.dedent(
        """
        import json
        import warnings
        import dask, dask.array as da, numpy as np
        from xpsoftmax import _api
        from xpsoftmax.backends.dask.quiet import quiet

        if __name__ == "__main__":
            x = da.from_array(np.array([[-np.inf, -np.inf], [1.0, np.inf], [1e308, -1e308]]),
                              chunks=1)
            b = da.from_array(np.array([[1.0, -1.0]] * 3), chunks=1)
            plan = _api._checked_call("logsumexp", x, axis=-1, b=b, return_sign=True)
            with np.errstate(all="ignore"):
                raw = plan.impl(*plan.args, **plan.kwargs)
            wrapped = quiet(raw, (plan.args, plan.kwargs))
            try:
                dask.compute(*raw, scheduler="processes")
                raw_error = None
            except RuntimeWarning as e:
                raw_error = str(e)
            got = dask.compute(*wrapped, scheduler="processes")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = dask.compute(*raw, scheduler="sync")
            print(json.dumps({
                "raw_error": raw_error,
                "same": all(np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want)),
            }))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["raw_error"] and "encountered" in found["raw_error"], found
    assert found["same"], found


def test_module_imports_no_array_library() -> None:
    code = (
        "import json, sys; import xpsoftmax.backends.dask.quiet; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'numpy'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_public_functions_compute_quietly() -> None:
    import xpsoftmax

    x = _x()
    outs = (
        xpsoftmax.softmax(x),
        xpsoftmax.log_softmax(x, temperature=0),
        *xpsoftmax.logsumexp(x, axis=-1, b=_like(B), return_sign=True),
        *xpsoftmax.cross_entropy_with_grad(x, _like(INDEX)),
    )
    _compute_quietly(outs, "threads")
