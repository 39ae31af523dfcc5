"""An edge-case catalogue for the conformance tests: named NumPy float64 inputs with the axis
(and, for some, the ``where`` mask) to use.

A plain module. Typical use::

    import cases

    rng = cases.rng_for(request)                 # seeded from the test's node id
    for case in cases.catalogue(rng):            # every named case
        ...
    case = cases.make("all_neginf_row", rng)    # one by name (see ``NAMES``)

Every input is float64 NumPy data; move it to a backend with ``Backend.asarray(case.x, dtype)``.
Random cases draw from the generator passed in, so a failing test can be replayed from the seed
it prints (``XPSOFTMAX_TEST_SEED=<seed>`` forces one seed for every test).
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

INF = math.inf
NAN = math.nan

#: Environment variable forcing one seed for every test (to replay a failure).
SEED_ENV = "XPSOFTMAX_TEST_SEED"


# --- seeds ----------------------------------------------------------------------------------


def seed_for(node_id: str) -> int:
    """A stable per-test seed: a hash of the pytest node id (or ``$XPSOFTMAX_TEST_SEED``)."""
    forced = os.environ.get(SEED_ENV, "").strip()
    if forced:
        return int(forced)
    return zlib.crc32(node_id.encode("utf-8"))


def rng_for(request: object) -> np.random.Generator:
    """A generator seeded from ``request.node.nodeid``; prints the seed, which pytest shows
    with the captured output of a failing test."""
    node_id = request.node.nodeid  # type: ignore[attr-defined]
    seed = seed_for(node_id)
    print(f"[xpsoftmax tests] seed={seed} ({SEED_ENV}={seed} replays it) for {node_id}")
    return np.random.default_rng(seed)


# --- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input: ``x`` (float64), the ``axis`` to use (int, tuple or None) and, for masked
    cases, a boolean ``where`` broadcasting against ``x``."""

    name: str
    x: np.ndarray
    axis: object = -1
    where: np.ndarray | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def axes(self) -> tuple[int, ...]:
        """The normalised (non-negative, sorted) axes; () for a 0-d input."""
        return normalize_axes(self.axis, self.x.ndim)

    def __repr__(self) -> str:  # short, for failure messages
        return f"Case({self.name!r}, shape={self.x.shape}, axis={self.axis!r}, where={self.where is not None})"


def normalize_axes(axis: object, ndim: int) -> tuple[int, ...]:
    if ndim == 0:
        return ()
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(int(a) % ndim for a in items))


def _random(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 3.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


_Builder = Callable[[np.random.Generator], Case]
_BUILDERS: dict[str, _Builder] = {}


def _case(name: str) -> Callable[[_Builder], _Builder]:
    def deco(fn: _Builder) -> _Builder:
        _BUILDERS[name] = fn
        return fn

    return deco


# Fresh random data, several layouts.


@_case("random_2d")
def _(rng):
    return Case("random_2d", _random(rng, (3, 5)), -1, tags=frozenset({"random"}))


@_case("random_1d")
def _(rng):
    return Case("random_1d", _random(rng, (7,)), -1, tags=frozenset({"random", "1d"}))


@_case("random_non_last_axis")
def _(rng):
    return Case("random_non_last_axis", _random(rng, (4, 3)), 0, tags=frozenset({"random"}))


@_case("random_3d_middle_axis")
def _(rng):
    return Case("random_3d_middle_axis", _random(rng, (2, 3, 4)), 1, tags=frozenset({"random"}))


@_case("random_3d_negative_axis")
def _(rng):
    return Case("random_3d_negative_axis", _random(rng, (2, 3, 4)), -2, tags=frozenset({"random"}))


@_case("tuple_axes")
def _(rng):
    return Case("tuple_axes", _random(rng, (2, 3, 4)), (0, 2), tags=frozenset({"random", "multi"}))


@_case("axis_none")
def _(rng):
    return Case("axis_none", _random(rng, (2, 3)), None, tags=frozenset({"random", "multi"}))


@_case("zero_d")
def _(rng):
    return Case("zero_d", np.asarray(rng.standard_normal() * 3.0), None, tags=frozenset({"0d"}))


@_case("zero_d_axis_minus1")
def _(rng):
    return Case("zero_d_axis_minus1", np.asarray(-1.25), -1, tags=frozenset({"0d"}))


@_case("single_entry_slices")
def _(rng):
    return Case("single_entry_slices", _random(rng, (4, 1)), -1)


@_case("ties")
def _(rng):
    x = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, 2.0, 2.0]])
    return Case("ties", x, -1)


# -inf, +inf, NaN.


@_case("all_neginf_row")
def _(rng):
    x = _random(rng, (3, 4))
    x[1] = -INF
    return Case("all_neginf_row", x, -1, tags=frozenset({"neginf", "empty_event"}))


@_case("all_neginf")
def _(rng):
    return Case("all_neginf", np.full((2, 3), -INF), -1, tags=frozenset({"neginf", "empty_event"}))


@_case("all_neginf_axis0")
def _(rng):
    x = _random(rng, (3, 4))
    x[:, 2] = -INF
    return Case("all_neginf_axis0", x, 0, tags=frozenset({"neginf", "empty_event"}))


@_case("partly_neginf")
def _(rng):
    x = np.array([[-INF, 1.0, -INF, 2.0], [0.0, -INF, -INF, -INF], [-INF, -INF, 5.0, 5.0]])
    return Case("partly_neginf", x, -1, tags=frozenset({"neginf"}))


@_case("posinf")
def _(rng):
    x = _random(rng, (3, 4))
    x[0, 1] = INF
    return Case("posinf", x, -1, tags=frozenset({"posinf", "nonfinite"}))


@_case("neginf_posinf_mix")
def _(rng):
    x = np.array([[-INF, INF, 0.0], [INF, INF, -INF], [1.0, 2.0, 3.0]])
    return Case("neginf_posinf_mix", x, -1, tags=frozenset({"posinf", "neginf", "nonfinite"}))


@_case("nan")
def _(rng):
    x = _random(rng, (3, 4))
    x[2, 0] = NAN
    return Case("nan", x, -1, tags=frozenset({"nan", "nonfinite"}))


@_case("nan_with_infs")
def _(rng):
    x = np.array([[NAN, -INF, 1.0], [NAN, INF, 0.0], [-INF, -INF, -INF], [0.0, 1.0, 2.0]])
    return Case("nan_with_infs", x, -1, tags=frozenset({"nan", "posinf", "neginf", "nonfinite"}))


@_case("nan_tuple_axes")
def _(rng):
    x = _random(rng, (2, 3, 2))
    x[1, 2, 0] = NAN
    return Case("nan_tuple_axes", x, (1, 2), tags=frozenset({"nan", "nonfinite", "multi"}))


# Huge logits.


@_case("huge_1e4")
def _(rng):
    x = np.array([[1e4, 1e4 + 1.0, 1e4 - 2.0], [-1e4, 0.0, 1e4], [-1e4, -1e4 - 1.0, -1e4]])
    return Case("huge_1e4", x, -1, tags=frozenset({"huge"}))


@_case("huge_1e30")
def _(rng):
    x = np.array([[1e30, 1e30, 0.0], [1e30, -1e30, 1.0], [0.0, 1.0, 2.0]])
    return Case("huge_1e30", x, -1, tags=frozenset({"huge"}))


@_case("huge_neg_1e30")
def _(rng):
    x = np.array([[-1e30, -1e30, -1e30], [-1e30, 0.0, -1e30], [-1e30, -INF, -1e30]])
    return Case("huge_neg_1e30", x, -1, tags=frozenset({"huge", "neginf"}))


@_case("contract_example")
def _(rng):
    return Case("contract_example", np.array([1000.0, 1001.0]), -1)


# Empty arrays.


@_case("empty_0x5")
def _(rng):
    return Case("empty_0x5", np.zeros((0, 5)), -1, tags=frozenset({"empty"}))


@_case("empty_3x0")
def _(rng):
    return Case("empty_3x0", np.zeros((3, 0)), -1, tags=frozenset({"empty", "empty_axis"}))


@_case("empty_3x0_axis0")
def _(rng):
    return Case("empty_3x0_axis0", np.zeros((3, 0)), 0, tags=frozenset({"empty"}))


@_case("empty_axis_none")
def _(rng):
    return Case("empty_axis_none", np.zeros((0, 2)), None, tags=frozenset({"empty", "empty_axis"}))


# Masks (where).


@_case("masked")
def _(rng):
    x = _random(rng, (4, 5))
    w = rng.random((4, 5)) < 0.6
    w[0] = False  # a fully masked slice: an empty event
    w[1] = True
    w[2, :] = False
    w[2, 3] = True  # a single entry taking part
    return Case("masked", x, -1, where=w, tags=frozenset({"where", "empty_event"}))


@_case("masked_broadcast")
def _(rng):
    x = _random(rng, (3, 4))
    w = np.array([[True, False, True, True]])
    return Case("masked_broadcast", x, -1, where=w, tags=frozenset({"where"}))


@_case("masked_nonfinite")
def _(rng):
    # NaN and +inf entries that are masked out take no part; an unmasked -inf row is empty.
    x = np.array([[NAN, 1.0, 2.0], [INF, 0.0, -1.0], [-INF, 3.0, -INF], [1.0, 1.0, NAN]])
    w = np.array(
        [[False, True, True], [False, True, True], [True, False, True], [True, True, True]]
    )
    return Case("masked_nonfinite", x, -1, where=w, tags=frozenset({"where", "nonfinite", "nan"}))


@_case("masked_axis0")
def _(rng):
    x = _random(rng, (3, 4))
    w = np.ones((3, 4), dtype=bool)
    w[:, 1] = False  # fully masked column: an empty event along axis 0
    w[0, 3] = False
    return Case("masked_axis0", x, 0, where=w, tags=frozenset({"where", "empty_event"}))


@_case("masked_tuple_axes")
def _(rng):
    x = _random(rng, (2, 3, 2))
    w = rng.random((2, 3, 2)) < 0.7
    w[0] = False
    return Case("masked_tuple_axes", x, (1, 2), where=w, tags=frozenset({"where", "multi"}))


#: Every case name, in a stable order (use for ``pytest.mark.parametrize``).
NAMES: tuple[str, ...] = tuple(_BUILDERS)

#: Names of the cases carrying a ``where`` mask.
MASKED: tuple[str, ...] = tuple(n for n in NAMES if n.startswith("masked"))


def make(name: str, rng: np.random.Generator) -> Case:
    """The case called ``name`` (random entries drawn from ``rng``)."""
    case = _BUILDERS[name](rng)
    assert case.name == name
    return case


def catalogue(rng: np.random.Generator, *, where: bool = True) -> list[Case]:
    """Every case; ``where=False`` leaves out the masked ones."""
    return [make(n, rng) for n in NAMES if where or n not in MASKED]


def random_cases(rng: np.random.Generator, n: int = 3) -> Iterator[Case]:
    """``n`` fresh random inputs of random small shapes, each with a random valid axis."""
    for i in range(n):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
        choice = int(rng.integers(0, 3))
        if choice == 0:
            axis: object = int(rng.integers(-ndim, ndim))
        elif choice == 1:
            k = int(rng.integers(1, ndim + 1))
            axis = tuple(int(a) for a in sorted(rng.choice(ndim, size=k, replace=False)))
        else:
            axis = None
        scale = float(rng.choice([1.0, 5.0, 30.0]))
        yield Case(
            f"random_{i}_{shape}_{axis}",
            _random(rng, shape, scale),
            axis,
            tags=frozenset({"random"}),
        )


# --- cross-entropy cases --------------------------------------------------------------------


@dataclass(frozen=True)
class CECase:
    """Cross-entropy input: ``logits`` (float64) with class axis ``axis``, an integer target
    (``index``, int64, may hold ``ignore_index``) and a probability target (``probs``, rows
    summing to 1, some exact zeros)."""

    name: str
    logits: np.ndarray
    index: np.ndarray
    probs: np.ndarray
    axis: int = -1

    def __repr__(self) -> str:
        return f"CECase({self.name!r}, shape={self.logits.shape}, axis={self.axis})"


IGNORE = -100


def _probs(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    p = rng.random(shape)
    p[p < 0.25] = 0.0  # exact zeros: 0 * log p must be 0
    s = np.sum(p, axis=axis, keepdims=True)
    p = np.where(s == 0, 1.0, p)
    return p / np.sum(p, axis=axis, keepdims=True)


def ce_catalogue(rng: np.random.Generator) -> list[CECase]:
    """Cross-entropy inputs: plain, all -inf rows, ignored entries, class axis 1 of a 3-D
    input, a 1-D input (0-d target), huge logits, an empty batch, every entry ignored, ignored
    entries whose logits hold NaN or +inf."""
    out = []

    x = _random(rng, (4, 5))
    t = rng.integers(0, 5, size=4)
    out.append(CECase("ce_plain", x, t, _probs(rng, x.shape, -1)))

    x = _random(rng, (4, 3))
    x[1] = -INF
    x[3, 0] = -INF
    t = np.array([2, 1, IGNORE, 0])
    p = _probs(rng, x.shape, -1)
    p[3] = [0.0, 0.25, 0.75]  # a zero target on a -inf logit contributes 0
    out.append(CECase("ce_neginf_rows_and_ignored", x, t, p))

    x = _random(rng, (2, 4, 3))
    t = rng.integers(0, 4, size=(2, 3))
    t[0, 1] = IGNORE
    out.append(CECase("ce_axis1_3d", x, t, _probs(rng, x.shape, 1), axis=1))

    x = _random(rng, (6,))
    out.append(CECase("ce_1d", x, np.asarray(int(rng.integers(0, 6))), _probs(rng, x.shape, -1)))

    x = np.array([[1e4, 1e4 + 1.0, -1e4], [1e30, 0.0, -1e30], [0.0, 1.0, 2.0]])
    out.append(CECase("ce_huge", x, np.array([0, 2, 1]), _probs(rng, x.shape, -1)))

    x = np.zeros((0, 3))
    out.append(CECase("ce_empty_batch", x, np.zeros(0, dtype=np.int64), np.zeros((0, 3))))

    x = _random(rng, (3, 4))
    out.append(CECase("ce_all_ignored", x, np.full(3, IGNORE), _probs(rng, x.shape, -1)))

    # An ignored entry takes no part, whatever its logits: loss 0 and gradient 0 (not 0 * NaN).
    x = _random(rng, (3, 4))
    x[0, 1] = np.nan
    x[2, 3] = INF
    t = np.array([IGNORE, 2, IGNORE])
    out.append(CECase("ce_ignored_nan_rows", x, t, _probs(rng, x.shape, -1)))
    return out


@dataclass(frozen=True)
class LinearCase:
    """Linear cross-entropy input: hidden states ``h`` (float64, hidden axis ``axis``), the
    layer ``w`` (V, H) and ``bias`` (V,), an integer target (may hold ``ignore_index``), a
    probability target shaped like the logits, and the chunks to ask for (rows, or a pair of
    rows and classes)."""

    name: str
    h: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    index: np.ndarray
    probs: np.ndarray
    axis: int = -1
    chunk_size: int | tuple[int | None, int | None] | None = None

    def __repr__(self) -> str:
        return f"LinearCase({self.name!r}, h={self.h.shape}, w={self.w.shape}, axis={self.axis})"


def _layer(
    rng: np.random.Generator, name: str, h: np.ndarray, vocab: int, axis: int = -1, **kw: Any
) -> LinearCase:
    hidden = h.shape[axis]
    w = _random(rng, (vocab, hidden), scale=1.0)
    bias = _random(rng, (vocab,), scale=1.0)
    lead = tuple(n for i, n in enumerate(h.shape) if i != axis % h.ndim)
    index = rng.integers(0, max(vocab, 1), size=lead)
    logits_shape = list(h.shape)
    logits_shape[axis] = vocab
    probs = _probs(rng, tuple(logits_shape), axis) if vocab else np.zeros(logits_shape)
    case = LinearCase(name, h, w, bias, index, probs, axis)
    return replace(case, **kw)


def linear_catalogue(rng: np.random.Generator) -> list[LinearCase]:
    """Linear cross-entropy inputs: rows in chunks that do not divide them, ignored entries,
    PyTorch's hidden axis 1, one row (a 0-d target), an empty batch, no hidden units, one
    class, a class masked by a -inf bias, every class masked (all -inf rows), logits that
    overflow, a NaN row; and chunks of classes: maxima rising from chunk to chunk, a chunk
    all -inf, every class masked, overflow and NaN rows."""
    out = [_layer(rng, "lin_rows", _random(rng, (7, 5)), 11, chunk_size=3)]
    case = _layer(rng, "lin_ignored", _random(rng, (6, 4)), 9, chunk_size=4)
    index = case.index.copy()
    index[[1, 4]] = IGNORE
    out.append(replace(case, index=index))
    out.append(_layer(rng, "lin_axis1_3d", _random(rng, (2, 5, 3)), 6, axis=1, chunk_size=2))
    out.append(_layer(rng, "lin_one_row", _random(rng, (5,)), 4))
    out.append(_layer(rng, "lin_empty_batch", np.zeros((0, 5)), 4))
    out.append(_layer(rng, "lin_no_hidden", np.zeros((3, 0)), 4, chunk_size=2))
    out.append(_layer(rng, "lin_one_class", _random(rng, (4, 3)), 1))
    case = _layer(rng, "lin_masked_class", _random(rng, (5, 3)), 6, chunk_size=2)
    bias = case.bias.copy()
    bias[2] = -INF
    probs = case.probs.copy()
    probs[..., 2] = 0.0  # a zero target on a -inf logit contributes 0
    probs /= probs.sum(axis=-1, keepdims=True)
    out.append(
        replace(case, bias=bias, index=np.where(case.index == 2, 0, case.index), probs=probs)
    )
    case = _layer(rng, "lin_all_masked", _random(rng, (3, 2)), 4)
    out.append(replace(case, bias=np.full(4, -INF)))
    case = _layer(rng, "lin_huge", _random(rng, (4, 3)), 5, chunk_size=3)
    h = case.h.copy()
    h[1] *= 1e30  # logits beyond float32 (and float64 after the square of the z-loss)
    out.append(replace(case, h=h))
    case = _layer(rng, "lin_nan_row", _random(rng, (4, 3)), 5, chunk_size=2)
    h = case.h.copy()
    h[2, 1] = np.nan
    out.append(replace(case, h=h))
    return out + _class_chunk_cases(rng)


def _class_chunk_cases(rng: np.random.Generator) -> list[LinearCase]:
    case = _layer(rng, "lin_classes_rising", _random(rng, (7, 5)), 11, chunk_size=(3, 4))
    index = case.index.copy()
    index[1] = IGNORE
    # Each chunk of classes holds a larger maximum than the last (what was summed rescales),
    # and classes 8 and 9 tie.
    bias = np.linspace(-30.0, 30.0, 11)
    bias[9] = bias[8]
    out = [replace(case, index=index, bias=bias)]
    case = _layer(rng, "lin_classes_masked", _random(rng, (5, 3)), 9, chunk_size=(2, 3))
    bias = case.bias.copy()
    bias[[0, 1, 2, 5]] = -INF  # the first chunk of classes is all -inf
    probs = case.probs.copy()
    probs[..., [0, 1, 2, 5]] = 0.0
    probs /= probs.sum(axis=-1, keepdims=True)
    index = np.where(np.isin(case.index, [0, 1, 2, 5]), 7, case.index)
    out.append(replace(case, bias=bias, probs=probs, index=index))
    case = _layer(rng, "lin_classes_all_masked", _random(rng, (3, 2)), 4, chunk_size=(None, 1))
    out.append(replace(case, bias=np.full(4, -INF)))
    case = _layer(rng, "lin_classes_huge_nan", _random(rng, (4, 3)), 5, chunk_size=(3, 2))
    h = case.h.copy()
    h[1] *= 1e30
    h[2, 1] = np.nan
    out.append(replace(case, h=h))
    return out


# --- comparison helpers ---------------------------------------------------------------------

#: Machine epsilon of each floating dtype the suite uses.
EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
SIXTEEN_BIT = ("float16", "bfloat16")


def dtype_name(dtype: object) -> str:
    """``"float32"`` for NumPy, PyTorch, JAX, array-api-strict and Dask dtypes alike."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


def compute_dtype(name: str) -> str:
    """The dtype the contract computes ``name`` in: float32 for 16-bit floats."""
    return "float32" if name in SIXTEEN_BIT else name


def _where_idx(mask: np.ndarray, limit: int = 6) -> str:
    idx = [tuple(int(i) for i in t) for t in np.argwhere(mask)[:limit]]
    more = int(mask.sum()) - len(idx)
    return f"{idx}{f' and {more} more' if more > 0 else ''}"


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float | np.ndarray,
    atol: float | np.ndarray,
    what: str = "",
) -> None:
    """NaN positions identical, infinities identical (sign included), finite entries within
    ``atol + rtol * |expected|`` (``atol`` and ``rtol`` may be arrays broadcasting to the
    shape). Shapes must match exactly."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
    an, en = np.isnan(actual), np.isnan(expected)
    if not np.array_equal(an, en):
        raise AssertionError(
            f"{what}: NaN positions differ: unexpected NaN at {_where_idx(an & ~en)}, "
            f"missing NaN at {_where_idx(en & ~an)}\nactual:\n{actual}\nexpected:\n{expected}"
        )
    ai, ei = np.isinf(actual), np.isinf(expected)
    if not np.array_equal(ai, ei) or not np.array_equal(actual[ai], expected[ei]):
        wrong = (ai != ei) | (ai & ei & (np.sign(actual) != np.sign(expected)))
        raise AssertionError(
            f"{what}: infinities differ at {_where_idx(wrong)}\nactual:\n{actual}\n"
            f"expected:\n{expected}"
        )
    fin = np.isfinite(expected)
    atol_b = np.broadcast_to(np.asarray(atol, dtype=np.float64), expected.shape)
    rtol_b = np.broadcast_to(np.asarray(rtol, dtype=np.float64), expected.shape)
    with np.errstate(invalid="ignore"):
        err = np.where(fin, np.abs(actual - expected), 0.0)
    bound = np.where(fin, atol_b + rtol_b * np.abs(expected), 0.0)
    bad = err > bound
    if np.any(bad):
        i = np.unravel_index(
            np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)), bad.shape
        )
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {int(fin.sum())} finite entries out of tolerance, "
            f"at {_where_idx(bad)}; worst at {tuple(int(k) for k in i)}: actual "
            f"{actual[i]!r}, expected {expected[i]!r}, error {err[i]:.3g} > bound {bound[i]:.3g}"
            f"\nactual:\n{actual}\nexpected:\n{expected}"
        )


class Failures:
    """Collects the failures of a loop over cases, so that one bad case does not hide the
    others; ``raise_if_any()`` at the end fails with all of them.

    >>> failures = Failures()
    >>> for case in catalogue(np.random.default_rng(0)):
    ...     with failures.check(case.name):
    ...         assert case.x.dtype == np.float64
    >>> failures.raise_if_any()
    """

    def __init__(self, limit: int = 2000) -> None:
        self.items: list[str] = []
        self.limit = limit

    @contextlib.contextmanager
    def check(self, label: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # AssertionError, and errors raised by the library
            text = f"{label}: {type(exc).__name__}: {exc}"
            if len(text) > self.limit:
                text = text[: self.limit] + " [...]"
            self.items.append(text)

    def raise_if_any(self, prefix: str = "") -> None:
        if self.items:
            raise AssertionError(
                f"{prefix}{len(self.items)} failing case(s):\n" + "\n---\n".join(self.items)
            )
