"""Bad input: every TypeError / ValueError of the contract, on every backend where it applies.

The contract ("Bad input"): wrong types, shapes, axes, dtypes and option values raise
TypeError or ValueError *naming the argument and what was expected*, *before any work is done*;
mixed array libraries in one call are a TypeError; class indices outside ``[0, C)`` (other than
``ignore_index``) raise ValueError for eager host arrays and give a NaN loss where checking would
need a device synchronisation or cannot run (jax.jit, torch.compile, Dask, CUDA).

"Before any work" is checked with a spy (:func:`no_work`) that replaces the generic
implementations, the fast-path selection and the plan runner by functions that fail the test
if they are reached.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import xpsoftmax
from xpsoftmax import _api, _generic, _registry
from xpsoftmax.testing.backends import BY_ID, Backend

NORMALIZATIONS = ("softmax", "log_softmax")
ARRAY_OPS = ("softmax", "log_softmax", "logsumexp")
CE_OPS = ("cross_entropy", "cross_entropy_with_grad")
ALL_OPS = ARRAY_OPS + CE_OPS

#: (2, 3): two slices of three classes along the last axis.
X = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
T_INDEX = np.array([0, 2])
T_PROBS = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])


# --- the spy: nothing may run before the checks are done ------------------------------------


class WorkStarted(AssertionError):
    """Raised by the spy: an implementation was reached although the arguments are bad."""


@contextlib.contextmanager
def no_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Inside: reaching an implementation (generic or fast) or even its selection fails."""
    reached: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            reached.append(name)
            raise WorkStarted(f"{name} ran although the arguments are invalid")

        return fail

    with monkeypatch.context() as m:
        for op in _generic.__all__:
            m.setattr(_generic, op, spy(f"_generic.{op}"))
        m.setattr(_registry, "select", spy("_registry.select"))
        m.setattr(_api, "_plan", spy("_api._plan"))
        m.setattr(_api._Plan, "run", spy("_Plan.run"))
        yield reached


def test_spy_catches_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spy is not vacuous: a valid call inside it is caught."""
    for op, args in [("softmax", (X,)), ("logsumexp", (X,)), ("cross_entropy", (X, T_INDEX))]:
        with no_work(monkeypatch) as reached, pytest.raises(WorkStarted):
            getattr(xpsoftmax, op)(*args)
        assert reached

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise WorkStarted

    # the public functions look the generic implementation up at call time, so patching the
    # module attribute (as the spy does) intercepts it
    with monkeypatch.context() as m:
        m.setattr(_generic, "softmax", boom)
        with xpsoftmax.force_generic(), pytest.raises(WorkStarted):
            xpsoftmax.softmax(X)


# --- helpers --------------------------------------------------------------------------------


def eager_host(b: Backend) -> bool:
    """Backends whose class indices are range-checked (eager arrays in host memory)."""
    if b.library in ("numpy", "array_api_strict"):
        return True
    return b.library in ("torch", "jax") and b.device == "cpu"


def default_args(b: Backend, op: str) -> tuple[Any, ...]:
    if op in CE_OPS:
        return (b.asarray(X), b.asarray(T_INDEX))
    return (b.asarray(X),)


def call(op: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(xpsoftmax, op)(*args, **kwargs)


# --- the table of bad calls -----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    ops: tuple[str, ...]
    #: (backend, op) -> (args, kwargs) of the bad call
    make: Callable[[Backend, str], tuple[tuple[Any, ...], dict[str, Any]]]
    exc: type[Exception]
    match: str


def kw(**kwargs: Any) -> Callable[[Backend, str], tuple[tuple[Any, ...], dict[str, Any]]]:
    """Default (valid) positional arguments with the given keywords; values that are
    callables are called with the backend."""

    def make(b: Backend, op: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return default_args(b, op), {k: (v(b) if callable(v) else v) for k, v in kwargs.items()}

    return make


def first(value: Callable[[Backend], Any], **kwargs: Any) -> Callable[..., Any]:
    """A bad first argument (x / logits), valid target for cross-entropy."""

    def make(b: Backend, op: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        x = value(b)
        return ((x, b.asarray(T_INDEX)) if op in CE_OPS else (x,)), dict(kwargs)

    return make


def target(value: Callable[[Backend], Any], **kwargs: Any) -> Callable[..., Any]:
    def make(b: Backend, op: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (b.asarray(X), value(b)), dict(kwargs)

    return make


def arr(data: Any, dtype: str | None = None) -> Callable[[Backend], Any]:
    return lambda b: b.asarray(np.asarray(data), dtype)


AXIS_TYPE = r"axis must be None, an int or a tuple of ints"
TEMP_VALUE = r"temperature must be >= 0"
TEMP_TYPE = r"temperature must be a real number or an array|temperature must be an array"
ONE_LIBRARY = r"all array arguments must come from one array library"

BAD: list[Bad] = [
    # x / logits: not an array
    Bad("x-none", ARRAY_OPS, first(lambda b: None), TypeError, r"x must be an array"),
    Bad("x-str", ARRAY_OPS, first(lambda b: "1.0, 2.0"), TypeError, r"x must be an array"),
    Bad("x-dict", ARRAY_OPS, first(lambda b: {"a": 1.0}), TypeError, r"x must be an array"),
    Bad("x-set", ARRAY_OPS, first(lambda b: {1.0, 2.0}), TypeError, r"x must be an array"),
    Bad("x-complex-scalar", ARRAY_OPS, first(lambda b: 1 + 2j), TypeError, r"^x must"),
    Bad("logits-none", CE_OPS, first(lambda b: None), TypeError, r"logits must be an array"),
    Bad("logits-str", CE_OPS, first(lambda b: "abc"), TypeError, r"logits must be an array"),
    Bad("logits-dict", CE_OPS, first(lambda b: {}), TypeError, r"logits must be an array"),
    # complex input
    Bad("x-complex", ARRAY_OPS, first(arr(X + 1j)), TypeError, r"x must be real.*complex"),
    Bad("x-complex64", ARRAY_OPS, first(arr(X, "complex64")), TypeError, r"x must be real"),
    Bad("x-complex-list", ARRAY_OPS, first(lambda b: [1 + 1j, 2.0]), TypeError, r"x must be real"),
    Bad("logits-complex", CE_OPS, first(arr(X + 1j)), TypeError, r"logits must be real"),
    # axis: wrong type
    Bad("axis-float", ARRAY_OPS, kw(axis=1.0), TypeError, AXIS_TYPE),
    Bad("axis-bool", ARRAY_OPS, kw(axis=True), TypeError, AXIS_TYPE),
    Bad("axis-false", ARRAY_OPS, kw(axis=False), TypeError, AXIS_TYPE),
    Bad("axis-list", ARRAY_OPS, kw(axis=[0]), TypeError, AXIS_TYPE),
    Bad("axis-str", ARRAY_OPS, kw(axis="0"), TypeError, AXIS_TYPE),
    Bad("axis-tuple-float", ARRAY_OPS, kw(axis=(0, 1.0)), TypeError, AXIS_TYPE),
    Bad("axis-tuple-bool", ARRAY_OPS, kw(axis=(0, True)), TypeError, AXIS_TYPE),
    # axis: out of range, repeated
    Bad("axis-2", ARRAY_OPS, kw(axis=2), ValueError, r"axis 2 is out of range"),
    Bad("axis--3", ARRAY_OPS, kw(axis=-3), ValueError, r"axis -3 is out of range"),
    Bad("axis-tuple-range", ARRAY_OPS, kw(axis=(0, 5)), ValueError, r"axis 5 is out of range"),
    Bad("axis-repeated", ARRAY_OPS, kw(axis=(0, 0)), ValueError, r"axis has repeated axes"),
    Bad("axis-repeated-neg", ARRAY_OPS, kw(axis=(1, -1)), ValueError, r"axis has repeated axes"),
    Bad("axis-0d-range", ARRAY_OPS, first(arr(1.0), axis=1), ValueError, r"axis 1 is out of range"),
    # cross-entropy's axis: one int naming the class axis
    Bad("ce-axis-tuple", CE_OPS, kw(axis=(1,)), TypeError, r"axis must be an int"),
    Bad("ce-axis-tuple2", CE_OPS, kw(axis=(0, 1)), TypeError, r"axis must be an int"),
    Bad("ce-axis-none", CE_OPS, kw(axis=None), TypeError, r"axis must be an int"),
    Bad("ce-axis-float", CE_OPS, kw(axis=1.0), TypeError, r"axis must be"),
    Bad("ce-axis-bool", CE_OPS, kw(axis=True), TypeError, r"axis must be"),
    Bad("ce-axis-range", CE_OPS, kw(axis=2), ValueError, r"axis 2 is out of range"),
    Bad("ce-axis-range-neg", CE_OPS, kw(axis=-3), ValueError, r"axis -3 is out of range"),
    Bad(
        "ce-logits-0d",
        CE_OPS,
        lambda b, op: ((b.asarray(np.array(1.0)), b.asarray(np.array(0))), {}),
        ValueError,
        r"logits must have at least one dimension",
    ),
    # keepdims, return_sign
    Bad(
        "keepdims-int", ("logsumexp",), kw(keepdims=1), TypeError, r"keepdims must be True or False"
    ),
    Bad(
        "keepdims-none",
        ("logsumexp",),
        kw(keepdims=None),
        TypeError,
        r"keepdims must be True or False",
    ),
    Bad(
        "keepdims-str",
        ("logsumexp",),
        kw(keepdims="yes"),
        TypeError,
        r"keepdims must be True or False",
    ),
    Bad(
        "return_sign-int",
        ("logsumexp",),
        kw(return_sign=0),
        TypeError,
        r"return_sign must be True or False",
    ),
    Bad(
        "return_sign-str",
        ("logsumexp",),
        kw(return_sign="no"),
        TypeError,
        r"return_sign must be True or False",
    ),
    # temperature: scalar values
    Bad("temp-neg", NORMALIZATIONS + CE_OPS, kw(temperature=-1.0), ValueError, TEMP_VALUE),
    Bad("temp-neg-int", NORMALIZATIONS + CE_OPS, kw(temperature=-2), ValueError, TEMP_VALUE),
    Bad("temp-neg-tiny", NORMALIZATIONS + CE_OPS, kw(temperature=-1e-300), ValueError, TEMP_VALUE),
    Bad("temp-neg-inf", NORMALIZATIONS + CE_OPS, kw(temperature=-math.inf), ValueError, TEMP_VALUE),
    Bad("temp-nan", NORMALIZATIONS + CE_OPS, kw(temperature=math.nan), ValueError, TEMP_VALUE),
    Bad(
        "temp-np-neg",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=np.float64(-0.5)),
        ValueError,
        TEMP_VALUE,
    ),
    Bad(
        "temp-np-nan",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=np.float32("nan")),
        ValueError,
        TEMP_VALUE,
    ),
    # temperature: wrong types
    Bad("temp-str", NORMALIZATIONS + CE_OPS, kw(temperature="1.0"), TypeError, TEMP_TYPE),
    Bad("temp-bool", NORMALIZATIONS + CE_OPS, kw(temperature=True), TypeError, TEMP_TYPE),
    Bad("temp-false", NORMALIZATIONS + CE_OPS, kw(temperature=False), TypeError, TEMP_TYPE),
    Bad("temp-none", NORMALIZATIONS + CE_OPS, kw(temperature=None), TypeError, TEMP_TYPE),
    Bad("temp-complex", NORMALIZATIONS + CE_OPS, kw(temperature=1j), TypeError, r"temperature"),
    # temperature arrays: shape, dtype
    Bad(
        "temp-shape-classes",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones(3))),
        ValueError,
        r"temperature of shape \(3,\) does not broadcast",
    ),
    Bad(
        "temp-shape-rows-flat",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones(2))),
        ValueError,
        r"temperature of shape \(2,\) does not broadcast",
    ),
    Bad(
        "temp-shape-full",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones((2, 3)))),
        ValueError,
        r"temperature of shape \(2, 3\) does not broadcast",
    ),
    Bad(
        "temp-shape-extra-dim",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones((2, 2, 1)))),
        ValueError,
        r"temperature of shape \(2, 2, 1\) does not broadcast",
    ),
    Bad(
        "temp-shape-axis0",
        NORMALIZATIONS,
        kw(axis=0, temperature=arr(np.ones((2, 1)))),
        ValueError,
        r"temperature of shape \(2, 1\) does not broadcast",
    ),
    Bad(
        "temp-shape-list",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=[1.0, 2.0, 3.0]),
        ValueError,
        r"temperature of shape \(3,\) does not broadcast",
    ),
    Bad(
        "temp-complex-array",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones((2, 1)) + 1j)),
        TypeError,
        r"temperature must be a real array",
    ),
    Bad(
        "temp-bool-array",
        NORMALIZATIONS + CE_OPS,
        kw(temperature=arr(np.ones((2, 1), bool))),
        TypeError,
        r"temperature must be a real array",
    ),
    # where
    Bad(
        "where-int",
        ARRAY_OPS,
        kw(where=arr(np.ones((2, 3), np.int64))),
        TypeError,
        r"where must be a boolean array",
    ),
    Bad(
        "where-float",
        ARRAY_OPS,
        kw(where=arr(np.ones((2, 3)))),
        TypeError,
        r"where must be a boolean array",
    ),
    Bad(
        "where-int-list",
        ARRAY_OPS,
        kw(where=[1, 0, 1]),
        TypeError,
        r"where must be a boolean array",
    ),
    Bad("where-str", ARRAY_OPS, kw(where="all"), TypeError, r"where must be"),
    Bad(
        "where-shape",
        ARRAY_OPS,
        kw(where=arr(np.ones(2, bool))),
        ValueError,
        r"where of shape \(2,\) does not broadcast",
    ),
    Bad(
        "where-shape-bigger",
        ARRAY_OPS,
        kw(where=arr(np.ones((4, 2, 3), bool))),
        ValueError,
        r"where of shape \(4, 2, 3\) does not broadcast",
    ),
    Bad(
        "where-shape-transposed",
        ARRAY_OPS,
        kw(where=arr(np.ones((3, 2), bool))),
        ValueError,
        r"where of shape \(3, 2\) does not broadcast",
    ),
    # b
    Bad("b-complex", ("logsumexp",), kw(b=arr(np.ones((2, 3)) + 1j)), TypeError, r"b must be real"),
    Bad(
        "b-shape",
        ("logsumexp",),
        kw(b=arr(np.ones(2))),
        ValueError,
        r"b of shape \(2,\) does not broadcast",
    ),
    Bad(
        "b-shape-bigger",  # x and b broadcast both ways (SciPy, JAX), but not these
        ("logsumexp",),
        kw(b=arr(np.ones((3, 4, 3)))),
        ValueError,
        r"b of shape \(3, 4, 3\) does not broadcast",
    ),
    Bad("b-str", ("logsumexp",), kw(b="ones"), TypeError, r"b must be"),
    # cross-entropy: target
    Bad("target-none", CE_OPS, target(lambda b: None), TypeError, r"target must be an array"),
    Bad("target-str", CE_OPS, target(lambda b: "0 2"), TypeError, r"target must be an array"),
    Bad("target-dict", CE_OPS, target(lambda b: {0: 1}), TypeError, r"target must be an array"),
    Bad(
        "target-bool",
        CE_OPS,
        target(arr(np.array([True, False]))),
        TypeError,
        r"target must hold integer class indices or real class probabilities.*bool",
    ),
    Bad(
        "target-bool-probs-shape",
        CE_OPS,
        target(arr(np.ones((2, 3), bool))),
        TypeError,
        r"target must hold integer class indices or real class probabilities",
    ),
    Bad(
        "target-complex",
        CE_OPS,
        target(arr(T_PROBS + 0j)),
        TypeError,
        r"target must hold integer class indices or real class probabilities.*complex",
    ),
    Bad(
        "target-index-shape-classes",
        CE_OPS,
        target(arr(np.array([0, 1, 2]))),
        ValueError,
        r"target of class indices must have the shape of logits without the class axis",
    ),
    Bad(
        "target-index-shape-keepdims",
        CE_OPS,
        target(arr(np.array([[0], [2]]))),
        ValueError,
        r"target of class indices must have the shape",
    ),
    Bad(
        "target-index-shape-full",
        CE_OPS,
        target(arr(np.zeros((2, 3), np.int64))),
        ValueError,
        r"target of class indices must have the shape",
    ),
    Bad(
        "target-index-shape-0d",
        CE_OPS,
        target(arr(np.array(0))),
        ValueError,
        r"target of class indices must have the shape",
    ),
    Bad(
        "target-index-shape-axis0",
        CE_OPS,
        target(arr(T_INDEX), axis=0),
        ValueError,
        r"target of class indices must have the shape.*\(3,\)",
    ),
    Bad(
        "target-probs-shape-rows",
        CE_OPS,
        target(arr(np.full(2, 0.5))),
        ValueError,
        r"target of class probabilities must have the shape of logits",
    ),
    Bad(
        "target-probs-shape-row",
        CE_OPS,
        target(arr(np.full((1, 3), 1 / 3))),
        ValueError,
        r"target of class probabilities must have the shape of logits",
    ),
    Bad(
        "target-probs-shape-transposed",
        CE_OPS,
        target(arr(T_PROBS.T)),
        ValueError,
        r"target of class probabilities must have the shape of logits",
    ),
    Bad(
        "target-probs-shape-extra",
        CE_OPS,
        target(arr(T_PROBS[None])),
        ValueError,
        r"target of class probabilities must have the shape of logits",
    ),
    # cross-entropy: weight
    Bad(
        "weight-shape",
        CE_OPS,
        kw(weight=arr(np.ones(2))),
        ValueError,
        r"weight must be a 1-D array.*\(3,\)",
    ),
    Bad(
        "weight-shape-long",
        CE_OPS,
        kw(weight=arr(np.ones(4))),
        ValueError,
        r"weight must be a 1-D array",
    ),
    Bad(
        "weight-2d",
        CE_OPS,
        kw(weight=arr(np.ones((1, 3)))),
        ValueError,
        r"weight must be a 1-D array",
    ),
    Bad(
        "weight-2d-full",
        CE_OPS,
        kw(weight=arr(np.ones((2, 3)))),
        ValueError,
        r"weight must be a 1-D array",
    ),
    Bad(
        "weight-0d",
        CE_OPS,
        kw(weight=arr(np.array(1.0))),
        ValueError,
        r"weight must be a 1-D array",
    ),
    Bad(
        "weight-list-shape",
        CE_OPS,
        kw(weight=[1.0, 2.0]),
        ValueError,
        r"weight must be a 1-D array",
    ),
    Bad(
        "weight-complex",
        CE_OPS,
        kw(weight=arr(np.ones(3) + 1j)),
        TypeError,
        r"weight must be a real array",
    ),
    Bad(
        "weight-bool",
        CE_OPS,
        kw(weight=arr(np.ones(3, bool))),
        TypeError,
        r"weight must be a real array",
    ),
    Bad("weight-str", CE_OPS, kw(weight="balanced"), TypeError, r"weight must be"),
    # cross-entropy: scalar options
    Bad(
        "ignore_index-float",
        CE_OPS,
        kw(ignore_index=1.0),
        TypeError,
        r"ignore_index must be an int",
    ),
    Bad(
        "ignore_index-float-default",
        CE_OPS,
        kw(ignore_index=-100.0),
        TypeError,
        r"ignore_index must be an int",
    ),
    Bad(
        "ignore_index-bool",
        CE_OPS,
        kw(ignore_index=True),
        TypeError,
        r"ignore_index must be an int",
    ),
    Bad(
        "ignore_index-none",
        CE_OPS,
        kw(ignore_index=None),
        TypeError,
        r"ignore_index must be an int",
    ),
    Bad(
        "ignore_index-str", CE_OPS, kw(ignore_index="1"), TypeError, r"ignore_index must be an int"
    ),
    Bad("reduction-avg", CE_OPS, kw(reduction="avg"), ValueError, r"reduction must be one of"),
    Bad("reduction-upper", CE_OPS, kw(reduction="MEAN"), ValueError, r"reduction must be one of"),
    Bad("reduction-empty", CE_OPS, kw(reduction=""), ValueError, r"reduction must be one of"),
    Bad(
        "reduction-none-obj",
        CE_OPS,
        kw(reduction=None),
        (TypeError, ValueError),
        r"reduction must be",
    ),
    Bad(
        "reduction-list",
        CE_OPS,
        kw(reduction=["mean"]),
        (TypeError, ValueError),
        r"reduction must be",
    ),
    Bad("ls-neg", CE_OPS, kw(label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0"),
    Bad("ls-big", CE_OPS, kw(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0"),
    Bad(
        "ls-nan",
        CE_OPS,
        kw(label_smoothing=math.nan),
        ValueError,
        r"label_smoothing must be in \[0",
    ),
    Bad(
        "ls-inf",
        CE_OPS,
        kw(label_smoothing=math.inf),
        ValueError,
        r"label_smoothing must be in \[0",
    ),
    Bad(
        "ls-str",
        CE_OPS,
        kw(label_smoothing="0.1"),
        TypeError,
        r"label_smoothing must be a real number",
    ),
    Bad(
        "ls-bool",
        CE_OPS,
        kw(label_smoothing=True),
        TypeError,
        r"label_smoothing must be a real number",
    ),
    Bad(
        "ls-none",
        CE_OPS,
        kw(label_smoothing=None),
        TypeError,
        r"label_smoothing must be a real number",
    ),
    Bad("z_loss-neg", CE_OPS, kw(z_loss=-1e-4), ValueError, r"z_loss must be finite and >= 0"),
    Bad("z_loss-inf", CE_OPS, kw(z_loss=math.inf), ValueError, r"z_loss must be finite and >= 0"),
    Bad("z_loss-nan", CE_OPS, kw(z_loss=math.nan), ValueError, r"z_loss must be finite and >= 0"),
    Bad("z_loss-str", CE_OPS, kw(z_loss="1e-4"), TypeError, r"z_loss must be a real number"),
    Bad("z_loss-none", CE_OPS, kw(z_loss=None), TypeError, r"z_loss must be a real number"),
]


@pytest.mark.parametrize(
    ("case", "op"),
    [pytest.param(c, op, id=f"{c.id}-{op}") for c in BAD for op in c.ops],
)
def test_bad_input_raises_before_any_work(
    case: Bad, op: str, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, kwargs = case.make(backend, op)
    with no_work(monkeypatch) as reached:
        with pytest.raises(case.exc, match=case.match):
            call(op, *args, **kwargs)
    assert reached == []


@pytest.mark.parametrize(
    ("case", "op"),
    [
        pytest.param(c, op, id=f"{c.id}-{op}")
        for c in BAD
        for op in c.ops
        if c.id
        in ("axis-2", "temp-neg", "where-shape", "b-complex", "target-bool", "reduction-avg")
    ],
)
def test_which_checks_like_the_call(case: Bad, op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``which`` checks the arguments like the call would."""
    args, kwargs = case.make(BY_ID["numpy"], op)
    with pytest.raises(case.exc, match=case.match):
        xpsoftmax.which(op, *args, **kwargs)


# --- mixed array libraries ------------------------------------------------------------------

CPU_LIBRARIES = ("numpy", "array_api_strict", "torch:cpu", "jax:cpu", "dask")


def _usable(bid: str) -> Backend:
    b = BY_ID[bid]
    reason = b.probe()
    if reason is not None:
        pytest.skip(f"{bid}: {reason}")
    return b


#: (op, argument): a call of ``op`` whose ``argument`` comes from a second library.
MIXED_ARGUMENTS = [
    ("softmax", "where"),
    ("log_softmax", "where"),
    ("logsumexp", "where"),
    ("softmax", "temperature"),
    ("log_softmax", "temperature"),
    ("logsumexp", "b"),
    ("cross_entropy", "target"),
    ("cross_entropy", "probs"),
    ("cross_entropy", "weight"),
    ("cross_entropy", "temperature"),
    ("cross_entropy_with_grad", "target"),
    ("cross_entropy_with_grad", "weight"),
]


@pytest.mark.parametrize("other_id", CPU_LIBRARIES)
@pytest.mark.parametrize("main_id", CPU_LIBRARIES)
@pytest.mark.parametrize(
    ("op", "argument"), MIXED_ARGUMENTS, ids=[f"{o}-{a}" for o, a in MIXED_ARGUMENTS]
)
def test_mixed_libraries_are_a_type_error(
    main_id: str, other_id: str, op: str, argument: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if BY_ID[main_id].library == BY_ID[other_id].library:
        pytest.skip("one library")
    if (BY_ID[main_id].library, BY_ID[other_id].library) == ("jax", "numpy"):
        pytest.skip("JAX takes NumPy arrays, as every JAX function does (test_adversarial)")
    main, other = _usable(main_id), _usable(other_id)
    secondary = {
        "where": np.array([[True, False, True], [True, True, True]]),
        "temperature": np.array([[1.0], [2.0]]),
        "b": np.ones((2, 3)),
        "target": T_INDEX,
        "probs": T_PROBS,
        "weight": np.array([1.0, 2.0, 3.0]),
    }[argument]
    foreign = other.asarray(secondary)
    x = main.asarray(X)
    if argument in ("target", "probs"):
        args: tuple[Any, ...] = (x, foreign)
        kwargs: dict[str, Any] = {}
    elif op in CE_OPS:
        args, kwargs = (x, main.asarray(T_INDEX)), {argument: foreign}
    else:
        args, kwargs = (x,), {argument: foreign}
    label = "target" if argument == "probs" else argument
    with no_work(monkeypatch) as reached:
        with pytest.raises(TypeError, match=rf"{ONE_LIBRARY}.*{label}"):
            call(op, *args, **kwargs)
    assert reached == []
    # and the same call with the argument from the main library is fine
    kwargs = {k: main.asarray(secondary) if v is foreign else v for k, v in kwargs.items()}
    args = tuple(main.asarray(secondary) if a is foreign else a for a in args)
    call(op, *args, **kwargs)


# --- class indices out of range -------------------------------------------------------------

#: (target, ignore_index): each has one entry outside [0, 3) that is not ignore_index.
OUT_OF_RANGE = [
    pytest.param(np.array([0, 3]), -100, id="C"),
    pytest.param(np.array([7, 1]), -100, id="big"),
    pytest.param(np.array([0, -1]), -100, id="minus1-would-wrap"),
    pytest.param(np.array([-3, 2]), -100, id="minus3-would-wrap"),
    pytest.param(np.array([-100, -101]), -100, id="next-to-ignore"),
    pytest.param(np.array([-100, 1]), -1, id="default-ignore-not-ignored"),
    pytest.param(np.array([5, 3]), 5, id="ignore-out-of-range"),
]


def _ce_variants() -> list[Any]:
    return [
        pytest.param("cross_entropy", {}, id="ce"),
        pytest.param("cross_entropy", {"weight": [1.0, 2.0, 0.5]}, id="ce-weight"),
        pytest.param("cross_entropy", {"label_smoothing": 0.1, "z_loss": 1e-3}, id="ce-ls-z"),
        pytest.param("cross_entropy", {"temperature": 0.5}, id="ce-T"),
        pytest.param("cross_entropy", {"temperature": [[2.0], [0.0]]}, id="ce-Tarray"),
        pytest.param("cross_entropy_with_grad", {}, id="grad"),
        pytest.param("cross_entropy_with_grad", {"weight": [1.0, 2.0, 0.5]}, id="grad-weight"),
    ]


def _with_backend_arrays(b: Backend, options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for name in ("weight", "temperature"):
        if isinstance(out.get(name), list):
            out[name] = b.asarray(np.array(out[name]))
    return out


def _loss(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize(("op", "options"), _ce_variants())
@pytest.mark.parametrize(("bad_target", "ignore_index"), OUT_OF_RANGE)
def test_out_of_range_indices(
    backend: Backend,
    bad_target: np.ndarray,
    ignore_index: int,
    op: str,
    options: dict[str, Any],
    generic: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ValueError on eager host arrays (before any work); NaN loss elsewhere (Dask, CUDA)."""
    if generic and not backend.fast_paths(op):
        pytest.skip(f"no fast path for {op} on {backend.id}: the auto run is generic")
    opts = _with_backend_arrays(backend, options)
    logits, t = backend.asarray(X), backend.asarray(bad_target)
    ctx = xpsoftmax.force_generic() if generic else contextlib.nullcontext()
    if eager_host(backend):
        with ctx, no_work(monkeypatch) as reached:
            with pytest.raises(ValueError, match=r"target holds class indices outside \[0, 3\)"):
                call(op, logits, t, ignore_index=ignore_index, **opts)
        assert reached == []
        return
    with ctx:
        per = call(op, logits, t, ignore_index=ignore_index, reduction="none", **opts)
        mean = call(op, logits, t, ignore_index=ignore_index, **opts)
        total = call(op, logits, t, ignore_index=ignore_index, reduction="sum", **opts)
    per = backend.numpy_float(_loss(per))
    bad = (bad_target != ignore_index) & ((bad_target < 0) | (bad_target >= 3))
    assert np.isnan(per[bad]).all(), per
    assert not np.isnan(per[~bad]).any(), per
    assert np.isnan(backend.numpy_float(_loss(mean))), mean
    assert np.isnan(backend.numpy_float(_loss(total))), total


@pytest.mark.parametrize("axis", [0, 1])
def test_out_of_range_indices_other_axes(backend: Backend, axis: int) -> None:
    """The range is that of the class axis named by ``axis``."""
    logits = backend.asarray(np.zeros((2, 3, 4)))
    n_classes = (2, 3, 4)[axis]
    shape = tuple(n for i, n in enumerate((2, 3, 4)) if i != axis % 3)
    good = np.full(shape, n_classes - 1)
    bad = good.copy()
    bad.flat[-1] = n_classes
    loss = xpsoftmax.cross_entropy(logits, backend.asarray(good), axis=axis)
    assert np.isclose(backend.numpy_float(loss), math.log(n_classes))
    if eager_host(backend):
        with pytest.raises(ValueError, match=rf"outside \[0, {n_classes}\)"):
            xpsoftmax.cross_entropy(logits, backend.asarray(bad), axis=axis)
    else:
        loss = xpsoftmax.cross_entropy(logits, backend.asarray(bad), axis=axis)
        assert np.isnan(backend.numpy_float(loss))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64"])
def test_in_range_indices_of_any_integer_dtype_are_fine(backend: Backend, dtype: str) -> None:
    """Not an error: any integer dtype, and ignore_index entries whatever their value."""
    logits = backend.asarray(np.zeros((3, 3)))
    t = backend.asarray(np.array([0, 2, 1]), dtype)
    loss = xpsoftmax.cross_entropy(logits, t, reduction="none")
    np.testing.assert_allclose(backend.numpy_float(loss), np.full(3, math.log(3)))
    if not dtype.startswith("u"):
        t = backend.asarray(np.array([0, -100, 1]), dtype)
        loss = xpsoftmax.cross_entropy(logits, t, reduction="none")
        np.testing.assert_allclose(backend.numpy_float(loss), [math.log(3), 0.0, math.log(3)])
    # an out-of-range ignore_index marks entries equal to it, which are then not errors
    t = backend.asarray(np.array([0, 7, 1]), dtype)
    loss = xpsoftmax.cross_entropy(logits, t, ignore_index=7, reduction="none")
    np.testing.assert_allclose(backend.numpy_float(loss), [math.log(3), 0.0, math.log(3)])


@pytest.fixture
def jax_cpu() -> Backend:
    return _usable("jax:cpu")


@pytest.mark.parametrize(("op", "options"), _ce_variants())
@pytest.mark.parametrize(("bad_target", "ignore_index"), [OUT_OF_RANGE[i] for i in (2, 6)])
def test_out_of_range_under_jax_jit_is_nan(
    jax_cpu: Backend, bad_target: np.ndarray, ignore_index: int, op: str, options: dict[str, Any]
) -> None:
    import jax

    opts = _with_backend_arrays(jax_cpu, options)
    logits, t = jax_cpu.asarray(X), jax_cpu.asarray(bad_target)
    bad = (bad_target != ignore_index) & ((bad_target < 0) | (bad_target >= 3))

    for reduction in ("none", "mean", "sum"):
        fn = jax.jit(
            lambda a, b, reduction=reduction: call(
                op, a, b, ignore_index=ignore_index, reduction=reduction, **opts
            )
        )
        loss = np.asarray(_loss(fn(logits, t)))
        if reduction == "none":
            assert np.isnan(loss[bad]).all(), loss
            assert not np.isnan(loss[~bad]).any(), loss
        else:
            assert np.isnan(loss), (reduction, loss)


def test_out_of_range_under_jax_vmap_and_grad(jax_cpu: Backend) -> None:
    import jax

    logits, t = jax_cpu.asarray(X), jax_cpu.asarray(np.array([1, 3]))
    per = jax.vmap(lambda a, b: xpsoftmax.cross_entropy(a, b))(logits, t)
    per = np.asarray(per)
    assert np.isfinite(per[0]) and np.isnan(per[1]), per
    grad_loss = jax.jit(jax.value_and_grad(lambda a, b: xpsoftmax.cross_entropy(a, b)))
    value, _ = grad_loss(logits, t)
    assert np.isnan(np.asarray(value))


def test_out_of_range_jax_concrete_target_in_jit_is_never_finite(jax_cpu: Backend) -> None:
    """A concrete target closed over by a jitted function can be checked (ValueError) or
    give NaN; never a finite number."""
    import jax

    t = jax_cpu.asarray(np.array([0, 3]))
    fn = jax.jit(lambda a: xpsoftmax.cross_entropy(a, t))
    try:
        loss = fn(jax_cpu.asarray(X))
    except ValueError as exc:
        assert "outside [0, 3)" in str(exc)
    else:
        assert np.isnan(np.asarray(loss))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="fast"),
        pytest.param({"z_loss": 1e-3, "weight": [1.0, 2.0, 0.5]}, id="generic"),
    ],
)
def test_out_of_range_under_torch_compile_is_nan(options: dict[str, Any]) -> None:
    b = _usable("torch:cpu")
    import torch

    torch._dynamo.reset()
    opts = _with_backend_arrays(b, options)
    fn = torch.compile(
        lambda a, t: xpsoftmax.cross_entropy(a, t, reduction="none", **opts), backend="eager"
    )
    per = b.numpy_float(fn(b.asarray(X), b.asarray(np.array([-1, 2]))))
    assert np.isnan(per[0]) and np.isfinite(per[1]), per
    torch._dynamo.reset()


def test_out_of_range_on_dask_is_nan_and_lazy() -> None:
    """Dask: no check (it would need a compute), no error on compute, a NaN loss."""
    b = _usable("dask")
    logits, t = b.asarray(X), b.asarray(np.array([3, 0]))
    loss, grad = xpsoftmax.cross_entropy_with_grad(logits, t, reduction="none")
    per = np.asarray(loss.compute())
    assert np.isnan(per[0]) and np.isfinite(per[1]), per
    assert np.isfinite(np.asarray(grad.compute())[1]).all()


# --- not errors: temperature arrays with negative / NaN entries -----------------------------

T_BAD_ROWS = np.array([[1.0], [-1.0], [np.nan], [0.5]])
X4 = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0], [2.0, 2.0, -5.0], [-1.0, 0.5, 0.0]])


@pytest.mark.parametrize("generic", [False, True], ids=["auto", "generic"])
@pytest.mark.parametrize("op", NORMALIZATIONS)
def test_temperature_array_bad_entries_give_nan_slices(
    backend: Backend, op: str, generic: bool
) -> None:
    ctx = xpsoftmax.force_generic() if generic else contextlib.nullcontext()
    with ctx:
        out = call(op, backend.asarray(X4), temperature=backend.asarray(T_BAD_ROWS))
        out0 = call(op, backend.asarray(X4.T), axis=0, temperature=backend.asarray(T_BAD_ROWS.T))
    out, out0 = backend.numpy_float(out), backend.numpy_float(out0)
    assert np.isnan(out[1:3]).all(), out
    assert not np.isnan(out[[0, 3]]).any(), out
    expected = backend.numpy_float(call(op, backend.asarray(X4[[0, 3]] / T_BAD_ROWS[[0, 3]])))
    np.testing.assert_allclose(out[[0, 3]], expected, rtol=1e-6)
    # along axis 0 the columns are the slices
    assert np.isnan(out0[:, 1:3]).all(), out0
    assert not np.isnan(out0[:, [0, 3]]).any(), out0


@pytest.mark.parametrize("op", CE_OPS)
def test_cross_entropy_temperature_array_bad_entries_give_nan(backend: Backend, op: str) -> None:
    t = backend.asarray(np.array([2, 1, 0, 1]))
    out = call(
        op, backend.asarray(X4), t, temperature=backend.asarray(T_BAD_ROWS), reduction="none"
    )
    per = backend.numpy_float(_loss(out))
    assert np.isnan(per[1:3]).all(), per
    assert np.isfinite(per[[0, 3]]).all(), per
    mean = call(op, backend.asarray(X4), t, temperature=backend.asarray(T_BAD_ROWS))
    assert np.isnan(backend.numpy_float(_loss(mean)))


# --- plain-Python bad input is backend-independent but still checked ------------------------


def test_ragged_list_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"x could not be read as an array"):
        xpsoftmax.softmax([[1.0, 2.0], [3.0]])


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        xpsoftmax.softmax(X, axes=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        xpsoftmax.cross_entropy(X, T_INDEX, dim=1)  # type: ignore[call-arg]


def test_keyword_only_options() -> None:
    """``temperature`` / ``where`` / the cross-entropy options cannot be passed positionally
    (a positional temperature would silently be taken as something else)."""
    with pytest.raises(TypeError):
        xpsoftmax.softmax(X, -1, 2.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        xpsoftmax.cross_entropy(X, T_INDEX, -1)  # type: ignore[misc]
