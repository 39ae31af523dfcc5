"""Argument checks and normalisation, shared by every public function.

Everything here looks at types, shapes, dtypes and Python scalars, never at array values,
with one exception the contract asks for: class indices are range-checked for eager arrays in
host memory (``values_visible``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import numbers
import operator
import struct
import sys
from dataclasses import dataclass
from typing import Any

import array_api_compat

from . import _libraries, _registry
from ._registry import Chunks

Array = Any

_SIXTEEN_BIT = frozenset({"float16", "bfloat16"})
_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class Temperature:
    """A checked temperature.

    ``kind`` is ``"one"``, ``"positive"`` (finite, > 0, not 1), ``"zero"``, ``"inf"`` (Python
    scalars) or ``"array"``; ``value`` is the float or the array (in the computation dtype,
    shaped to broadcast against the reduced shape in keepdims form).
    """

    kind: str
    value: Any = 1.0


ONE = Temperature("one", 1.0)

#: The smallest normal number of each computation dtype. A temperature below it (a subnormal
#: or one that rounds to 0) is the hard max: hardware that flushes subnormals to zero (XLA on
#: CPU does) would otherwise divide by 0, and 1 / T would overflow.
TINY = {"float32": 1.1754943508222875e-38, "float64": 2.2250738585072014e-308}


# --- libraries, devices, dtypes -------------------------------------------------------------


# Per-call metadata (namespace, library, dtype names) is looked up on every call; these caches
# keep the dispatch overhead of a small call to a few microseconds. Keys are types, namespaces
# and dtypes, never arrays.
#
# array-api-compat's type tests (is_array_api_obj, array_namespace, device, is_*_namespace) are
# functools.lru_cache-wrapped functions, and torch.compile (Dynamo) prints a warning for each
# one it traces. A call on torch tensors therefore reaches none of them, also on a cache miss:
# torch tensors are recognised with isinstance (_is_tensor) and library names are read from
# the namespace's module name.
_ARRAY_TYPES: dict[type, bool] = {}
_LIBRARY_NAMES: dict[int, str] = {}
_DTYPE_NAMES: dict[tuple[type, Any], str] = {}
_NAMESPACES: dict[type, Any] = {}
_REAL_FLOATING: dict[tuple[int, type, Any], bool] = {}
_BACKENDS: dict[str, Any] = {}


def library_name(xp: Any) -> str:
    """A short name for the namespace's array library."""
    name = _LIBRARY_NAMES.get(id(xp))
    if name is None:
        name = _LIBRARY_NAMES[id(xp)] = _library_name(xp)
    return name


def _library_name(xp: Any) -> str:
    # What array-api-compat's is_*_namespace tests read, the module name, without them:
    # "numpy", "torch", "jax.numpy", "dask.array", "array_api_strict"... and the wrappers
    # "array_api_compat.numpy", "array_api_compat.torch", "array_api_compat.dask.array"...
    name = str(getattr(xp, "__name__", type(xp).__name__))
    prefix = array_api_compat.__name__ + "."
    if name.startswith(prefix):
        name = name[len(prefix) :]
    return name.split(".")[0]


def _backend(library: str) -> Any:
    """The backend package of ``library`` (its traits), or None for a library without one."""
    if library in _BACKENDS:
        return _BACKENDS[library]
    lib = _libraries.by_name(library)
    if lib is not None and lib.backend is not None:
        _registry.load_backend(library)
        _BACKENDS[library] = importlib.import_module(lib.backend)
    else:
        _BACKENDS[library] = None
    return _BACKENDS[library]


def load_early_backends() -> None:
    """Load the backends of the libraries already imported that ask for it
    (``Library.load_early``); one that fails to load is left to its first call, which reports
    the error."""
    for lib in _libraries.LIBRARIES:
        if lib.load_early and lib.module in sys.modules:
            with contextlib.suppress(Exception):
                _backend(lib.name)


def held(xp: Any, value: Array) -> Array:
    """``value`` through the library's ``hold`` trait (a barrier its compiler cannot fold
    constants across: ``jax.lax.optimization_barrier``), or as it is."""
    hook = _trait(library_name(xp), "hold")
    return value if hook is None else hook(value)


def tied(xp: Any, result: Array, x: Array) -> Array:
    """``result``, computed without arithmetic on an empty ``x``, made a function of ``x``
    through the library's ``tied`` trait where its autodiff needs one (torch raises on a
    backward through a result that does not require grad; an empty batch must still train)."""
    hook = _trait(library_name(xp), "tied")
    return result if hook is None else hook(result, x)


def _trait(library: str, name: str) -> Any:
    return getattr(_backend(library), name, None)


def values_visible(x: Array, library: str) -> bool:
    """True when ``x``'s values can be read on the host without a device synchronisation or
    breaking a trace: eager arrays in host memory."""
    visible = _trait(library, "values_visible")
    if visible is None:
        lib = _libraries.by_name(library)
        return lib is not None and lib.numpy_based
    return bool(visible(x))


def layout(x: Array, library: str, axes: tuple[int, ...]) -> tuple[Any, ...]:
    """What ``Call`` records of ``x``: ``(device kind, shape, contiguous, pieces)``.

    The shape has -1 for a size not known yet; ``contiguous`` is True for row-major data (and
    for libraries without strides); ``pieces`` counts the chunks or shards along each of
    ``axes`` (1: whole slices; 0: not known). Read through the backend's traits
    ``device_kind``, ``shape``, ``contiguous`` and ``pieces`` where it has them."""
    kind, shape, is_contiguous, pieces = _layout_traits(library)
    return str(kind(x)), shape(x), bool(is_contiguous(x)), tuple(pieces(x, axes))


_LAYOUT: dict[str, tuple[Any, ...]] = {}


def _layout_traits(library: str) -> tuple[Any, ...]:
    traits = _LAYOUT.get(library)
    if traits is None:
        backend = _backend(library)
        traits = _LAYOUT[library] = (
            getattr(backend, "device_kind", None) or (lambda x: "cpu"),
            getattr(backend, "shape", None) or _shape,
            getattr(backend, "contiguous", None) or (lambda x: True),
            getattr(backend, "pieces", None) or (lambda x, axes: (1,) * len(axes)),
        )
    return traits


def _shape(x: Array) -> tuple[int, ...]:
    shape = tuple(x.shape)
    return shape if None not in shape else tuple(n if known(n) else -1 for n in shape)


def _eager(library: str) -> Any:
    """A context in which a backend computes on concrete arrays eagerly, also while a caller
    traces (JAX: a concrete array closed over by a jitted function)."""
    eager = _trait(library, "eager")
    return contextlib.nullcontext() if eager is None else eager()


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for numpy, torch, jax and array-api-strict dtypes alike."""
    # Keyed with the dtype's type first, so that dtypes of different libraries are never
    # compared (array-api-strict warns when its dtypes meet NumPy's).
    key = (type(dtype), dtype)
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    name = getattr(dtype, "name", None)
    if not isinstance(name, str) and isinstance(dtype, type):  # NumPy's and JAX's np.float32
        name = dtype.__name__
    if not isinstance(name, str):
        name = str(dtype).rsplit(".", 1)[-1]
    with contextlib.suppress(TypeError):
        _DTYPE_NAMES[key] = name
    return name


def compute_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype computations run in: float32 for 16-bit floats, else the dtype itself."""
    return xp.float32 if dtype_name(dtype) in _SIXTEEN_BIT else dtype


def result_dtype(xp: Any, dtype: Any, *, reduction: bool) -> Any:
    """Normalisations return the input dtype; reductions return the computation dtype."""
    return compute_dtype(xp, dtype) if reduction else dtype


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def array_device(x: Array) -> Any:
    """``array_api_compat.device(x)``; a torch tensor's device is read directly."""
    if _is_tensor(x):
        return x.device
    return array_api_compat.device(x)


def default_dtypes(xp: Any, x: Array) -> dict[str, Any]:
    info = xp.__array_namespace_info__()
    try:
        return dict(info.default_dtypes(device=array_device(x)))
    except (TypeError, ValueError):
        return dict(info.default_dtypes())


def index_dtype(xp: Any, x: Array) -> Any:
    """The namespace's default indexing dtype (int32 on JAX without x64)."""
    return default_dtypes(xp, x)["indexing"]


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def known(n: Any) -> bool:
    """Whether a dimension's size is known: Dask arrays of unknown chunk sizes have NaN
    (other libraries may use None) where they do not know it yet."""
    return isinstance(n, int)


def broadcast_shapes(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The broadcast shape of ``a`` and ``b``, or None when they do not broadcast. An unknown
    size is assumed to fit (it is checked where the data is computed)."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        m = a[-i] if i <= len(a) else 1
        n = b[-i] if i <= len(b) else 1
        if not (known(m) and known(n)):
            # An unknown size fits a 1 and any known size; the known size wins unless it is 1.
            out.append(n if m == 1 or (known(n) and n != 1) else m)
            continue
        if m != n and m != 1 and n != 1:
            return None
        out.append(n if m == 1 else m)
    return tuple(reversed(out))


def shape_matches(actual: tuple[Any, ...] | None, expected: tuple[Any, ...]) -> bool:
    """``actual == expected``, where an unknown size on either side matches any size."""
    if actual is None or len(actual) != len(expected):
        return False
    return all(m == n or not (known(m) and known(n)) for m, n in zip(actual, expected))


# --- arrays ---------------------------------------------------------------------------------


def is_array(value: Any) -> bool:
    kind = type(value)
    result = _ARRAY_TYPES.get(kind)
    if result is None:
        result = _is_tensor(value) or (
            bool(array_api_compat.is_array_api_obj(value)) and not isinstance(value, numbers.Number)
        )
        _ARRAY_TYPES[kind] = result
    return result


def as_primary_array(value: Any, name: str) -> Array:
    """The first array argument: an array of any library; Python scalars, lists and tuples
    are read with NumPy."""
    if is_array(value):
        return value
    if isinstance(value, (numbers.Number, list, tuple)) and not isinstance(value, complex):
        import numpy  # the contract: plain Python input is read with NumPy

        try:
            return numpy.asarray(value)
        except ValueError as exc:  # ragged lists
            raise ValueError(f"{name} could not be read as an array: {exc}") from None
    raise TypeError(
        f"{name} must be an array (NumPy, PyTorch, JAX, CuPy, Dask, array-api-strict, ...), "
        f"a Python number, list or tuple; got {type(value).__name__}"
    )


def as_secondary_array(value: Any, name: str, xp: Any, like: Array) -> Array:
    """A further array argument, in the primary argument's library: Python lists, tuples and
    scalars are read into that library, on that device. A backend may accept arrays of
    another library here (JAX takes NumPy arrays, as every JAX function does)."""
    if is_array(value):
        return _backend_hook(library_name(xp), "secondary_array", value)
    if isinstance(value, (numbers.Number, list, tuple)) and not isinstance(value, complex):
        try:
            return xp.asarray(value, device=array_device(like))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be read as an array: {exc}") from None
    raise TypeError(
        f"{name} must be an array of the same library as the input, a list or a tuple; "
        f"got {type(value).__name__}"
    )


def _torch_namespace(arrays: dict[str, Array]) -> Any:
    """What ``array_api_compat.array_namespace`` gives for torch tensors (its wrapper module),
    None unless every array is one."""
    if arrays and all(_is_tensor(v) for v in arrays.values()):
        from array_api_compat import torch as compat_torch

        return compat_torch
    return None


def namespace(**arrays: Array) -> Any:
    """The one namespace of every named array; a TypeError naming them when they mix."""
    present = {k: v for k, v in arrays.items() if v is not None}
    kinds = {type(v) for v in present.values()}
    if len(kinds) == 1:
        (kind,) = kinds
        if kind in _NAMESPACES:
            return _NAMESPACES[kind]
    try:
        xp = _torch_namespace(present) or array_api_compat.array_namespace(*present.values())
    except TypeError:
        found = []
        for k, v in present.items():
            try:
                found.append(f"{k}: {library_name(array_api_compat.array_namespace(v))}")
            except TypeError:
                found.append(f"{k}: {type(v).__name__}")
        raise TypeError(
            "all array arguments must come from one array library; got " + ", ".join(found)
        ) from None
    if len(kinds) == 1:
        _NAMESPACES[kinds.pop()] = xp
    return xp


def promote(xp: Any, x: Array, name: str) -> Array:
    """Real floating arrays pass; integers and booleans go to the default real floating
    dtype; complex is a TypeError."""
    dtype = x.dtype
    try:
        real = _REAL_FLOATING[(id(xp), type(dtype), dtype)]
    except (KeyError, TypeError):
        real = bool(xp.isdtype(dtype, "real floating"))
        with contextlib.suppress(TypeError):
            _REAL_FLOATING[(id(xp), type(dtype), dtype)] = real
    if real:
        return x
    if xp.isdtype(dtype, "complex floating"):
        raise TypeError(
            f"{name} must be real; complex input ({dtype_name(dtype)}) is not supported"
        )
    if xp.isdtype(dtype, ("integral", "bool")):
        return xp.astype(x, default_dtypes(xp, x)["real floating"])
    raise TypeError(f"{name} must have a real numeric dtype, got {dtype_name(dtype)}")


# --- scalar options -------------------------------------------------------------------------


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _as_float(value: Any) -> float:
    """A Python real as a float; an int beyond float64 becomes +-inf (not an OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if int(value) > 0 else -math.inf


def shown(value: Any) -> str:
    """``repr(value)``, shortened: a bad option may be an int of hundreds of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def check_real(value: Any, name: str, *, low: float, high: float = math.inf) -> float:
    """A finite Python real number in ``[low, high]``."""
    if type(value) is not float and type(value) is not int:  # the ABC check costs a microsecond
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = _as_float(value)
    if math.isnan(v) or math.isinf(v) or not low <= v <= high:
        bound = f"in [{low}, {high}]" if math.isfinite(high) else f"finite and >= {low}"
        raise ValueError(f"{name} must be {bound}, got {shown(value)}")
    return v


def normalize_axes(axis: Any, ndim: int, *, name: str = "axis") -> tuple[int, ...]:
    """``None``, an int or a tuple of ints -> sorted non-negative axes.

    A 0-d array has one implicit axis: 0 and -1 name it, and it reduces over nothing.
    """
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, kept cheap
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(f"{name} must be None, an int or a tuple of ints, got {axis!r}")
        try:
            a = operator.index(item)
        except TypeError:
            raise TypeError(
                f"{name} must be None, an int or a tuple of ints, got {axis!r}"
            ) from None
        if ndim == 0 and a in (0, -1):
            continue
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name} {a} is out of range for an array of {ndim} dimension(s) "
                f"(valid: {-ndim} to {ndim - 1})"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {axis!r}")
    return tuple(sorted(out))


def _rounded(value: float, dtype: str) -> float:
    """``value`` rounded to the computation dtype ``dtype`` (inf when it overflows there)."""
    if dtype != "float32":
        return value
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.inf


def classify_temperature(value: float, dtype: str) -> Temperature:
    """The one rule for a scalar temperature: judged in the computation dtype ``dtype``, a
    value below its smallest normal number is the hard max (``"zero"``), one that overflows is
    the uniform limit (``"inf"``), one that rounds to 1 changes nothing."""
    t = _rounded(value, dtype)
    if t == 1.0:
        return ONE
    if t < TINY.get(dtype, TINY["float32"]):
        return Temperature("zero", 0.0)
    if math.isinf(t):
        return Temperature("inf", math.inf)
    return Temperature("positive", t)


def check_temperature(
    temperature: Any, xp: Any, x: Array, axes: tuple[int, ...], cdt: Any
) -> Temperature:
    """A Python number (>= 0, not NaN) or an array broadcasting against the reduced shape."""
    if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        t = _as_float(temperature)
        if math.isnan(t) or t < 0:
            raise ValueError(
                f"temperature must be >= 0 (0 is a hard max, inf uniform), got {shown(temperature)}"
            )
        return classify_temperature(t, dtype_name(cdt))
    if isinstance(temperature, bool) or temperature is None:
        raise TypeError(f"temperature must be a real number or an array, got {temperature!r}")
    t_arr = as_secondary_array(temperature, "temperature", xp, x)
    namespace(x=x, temperature=t_arr)
    if not xp.isdtype(t_arr.dtype, ("real floating", "integral")):
        raise TypeError(f"temperature must be a real array, got dtype {dtype_name(t_arr.dtype)}")
    target = reduced_shape(tuple(x.shape), axes, keepdims=True)
    if not shape_matches(broadcast_shapes(tuple(t_arr.shape), target), target):
        raise ValueError(
            f"temperature of shape {tuple(t_arr.shape)} does not broadcast against the reduced "
            f"shape {target} (the input's shape with the reduced axes set to 1)"
        )
    return Temperature("array", xp.astype(t_arr, cdt))


def check_where(where: Any, xp: Any, x: Array) -> Array | None:
    if where is None:
        return None
    w = as_secondary_array(where, "where", xp, x)
    namespace(x=x, where=w)
    if not xp.isdtype(w.dtype, "bool"):
        raise TypeError(f"where must be a boolean array, got dtype {dtype_name(w.dtype)}")
    if not shape_matches(broadcast_shapes(tuple(w.shape), tuple(x.shape)), tuple(x.shape)):
        raise ValueError(
            f"where of shape {tuple(w.shape)} does not broadcast to the input's shape "
            f"{tuple(x.shape)}"
        )
    return w


def check_b(b: Any, xp: Any, x: Array, cdt: Any) -> tuple[Array | None, Array]:
    """``b`` in the computation dtype, and ``x`` broadcast with it: as in SciPy and JAX, the
    two broadcast with each other both ways, and the axes refer to the broadcast shape."""
    if b is None:
        return None, x
    arr = as_secondary_array(b, "b", xp, x)
    namespace(x=x, b=arr)
    if xp.isdtype(arr.dtype, "complex floating"):
        raise TypeError("b must be real; complex weights are not supported")
    if not xp.isdtype(arr.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"b must be a real array, got dtype {dtype_name(arr.dtype)}")
    shape = broadcast_shapes(tuple(arr.shape), tuple(x.shape))
    if shape is None:
        raise ValueError(
            f"b of shape {tuple(arr.shape)} does not broadcast with the input's shape "
            f"{tuple(x.shape)}"
        )
    if not shape_matches(shape, tuple(x.shape)):
        x = xp.broadcast_to(x, shape)
    return xp.astype(arr, cdt), x


# --- cross-entropy --------------------------------------------------------------------------


def _check_target_kind(xp: Any, target: Array, shape: tuple[Any, ...], ax: int) -> bool:
    """True for class indices, False for class probabilities; shapes checked, with a hint
    for the two mistakes users make most (PyTorch's layout without ``axis=1``, float
    labels)."""
    index_shape = shape[:ax] + shape[ax + 1 :]
    got = tuple(target.shape)
    if xp.isdtype(target.dtype, "integral"):
        if not shape_matches(got, index_shape):
            hint = ""
            if len(shape) > 2 and ax != 1 and shape_matches(got, shape[:1] + shape[2:]):
                hint = " (for PyTorch's (N, C, d1, ...) layout pass axis=1)"
            raise ValueError(
                f"target of class indices must have the shape of logits without the class axis, "
                f"{index_shape}; got {got}{hint}"
            )
        return True
    if xp.isdtype(target.dtype, "real floating"):
        if not shape_matches(got, shape):
            hint = ""
            if shape_matches(got, index_shape):
                hint = (
                    f" (its shape is that of class indices: indices need an integer dtype, "
                    f"got {dtype_name(target.dtype)})"
                )
            raise ValueError(
                f"target of class probabilities must have the shape of logits, {shape}; "
                f"got {got}{hint}"
            )
        return False
    raise TypeError(
        "target must hold integer class indices or real class probabilities, got dtype "
        f"{dtype_name(target.dtype)}"
    )


def target_masks(xp: Any, target: Array, n_classes: int, ignore_index: int) -> tuple[Array, Array]:
    """``(ignored, valid)`` for integer class indices: the one place that judges them.

    Judged on the integer values in the target's own dtype, never after a cast that could wrap
    them (uint64 values >= 2**63 in int64): bounds the dtype cannot hold are never compared
    (an ``ignore_index`` it cannot hold matches nothing; an unsigned target is never < 0).
    """
    info = xp.iinfo(target.dtype)
    none = xp.zeros_like(target, dtype=xp.bool)
    ignored = target == ignore_index if info.min <= ignore_index <= info.max else none
    below = target < 0 if info.min < 0 else none
    above = target >= n_classes if n_classes <= info.max else none
    return ignored, ~ignored & ~below & ~above


def _check_range(xp: Any, library: str, target: Array, n_classes: int, ignore: int) -> None:
    """Class indices outside ``[0, C)`` that are not ``ignore_index``: a ValueError naming
    one, for arrays whose values the host can read for free."""
    with _eager(library):
        if math.prod(target.shape) == 0 or (
            # The common case in two reductions: every index a class (no masks needed).
            int(xp.min(target)) >= 0 and int(xp.max(target)) < n_classes
        ):
            return
        ignored, valid = target_masks(xp, target, n_classes, ignore)
        bad = ~(ignored | valid)
        if not bool(xp.any(bad)):
            return
        example = int(xp.max(xp.where(bad, target, xp.min(target))))
    raise ValueError(
        f"target holds class indices outside [0, {n_classes}) that are not "
        f"ignore_index={ignore}, e.g. {example}"
    )


def _backend_hook(library: str, name: str, value: Any) -> Any:
    """``value`` passed through the backend's hook ``name`` if it has one."""
    hook = _trait(library, name)
    return value if hook is None else hook(value)


@dataclass(frozen=True, slots=True)
class CrossEntropySettings:
    """The checked options of a cross-entropy call: what every implementation of
    ``cross_entropy`` and ``cross_entropy_with_grad`` takes after ``(xp, logits, target,
    axis)``. Hashable when its arrays are None (JAX passes it as a static argument)."""

    weight: Array | None
    ignore_index: int
    reduction: str
    label_smoothing: float
    temperature: Temperature
    z_loss: float


@dataclass(frozen=True)
class CrossEntropyArgs:
    xp: Any
    library: str
    logits: Array
    target: Array
    axis: int
    index_target: bool
    settings: CrossEntropySettings


def check_cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
) -> CrossEntropyArgs:
    """Every argument of a cross-entropy call checked (a clear error naming the argument,
    before any work) and normalised."""
    logits = as_primary_array(logits, "logits")
    xp = namespace(logits=logits)
    target = _as_target(target, xp, "logits", logits)
    library = library_name(xp)
    logits = promote(xp, logits, "logits")
    ax = _class_axis(axis, logits)
    target, index_target, settings = _check_target_and_options(
        xp,
        library,
        "logits",
        logits,
        tuple(logits.shape),
        ax,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
    )
    return CrossEntropyArgs(xp, library, logits, target, ax, index_target, settings)


def _as_target(target: Any, xp: Any, primary: str, like: Array) -> Array:
    if not (is_array(target) or isinstance(target, (list, tuple))):
        raise TypeError(
            f"target must be an array of class indices or of class probabilities, got "
            f"{type(target).__name__}"
        )
    target = as_secondary_array(target, "target", xp, like)
    namespace(**{primary: like, "target": target})
    return target


def _check_target_and_options(
    xp: Any,
    library: str,
    primary: str,
    like: Array,
    shape: tuple[Any, ...],
    ax: int,
    target: Array,
    *,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
) -> tuple[Array, bool, CrossEntropySettings]:
    """The target and the options of a cross-entropy over logits of ``shape`` (class axis
    ``ax``), whose values ``like`` stands for (an array of the logits' library, device and
    dtype, named ``primary`` in errors: the logits, or ``h`` of the linear cross-entropy)."""
    cdt = compute_dtype(xp, like.dtype)
    ignore, smoothing, zl = _check_scalar_options(reduction, ignore_index, label_smoothing, z_loss)
    index_target = _check_target_kind(xp, target, shape, ax)
    w = None if weight is None else _check_weight(weight, xp, like, primary, shape[ax], cdt)
    temp = check_temperature(temperature, xp, like, (ax,), cdt)
    if index_target:
        target = _backend_hook(library, "index_target", target)
        if values_visible(target, library):
            _check_range(xp, library, target, shape[ax], ignore)
    return target, index_target, CrossEntropySettings(w, ignore, reduction, smoothing, temp, zl)


def _class_axis(axis: Any, logits: Array) -> int:
    if logits.ndim < 1:
        raise ValueError(
            "logits must have at least one dimension (the class axis), got a 0-d array"
        )
    if isinstance(axis, tuple) or axis is None:
        raise TypeError(f"axis must be an int naming the class axis, got {axis!r}")
    (ax,) = normalize_axes(axis, logits.ndim)
    return ax


def _check_scalar_options(
    reduction: Any, ignore_index: Any, smoothing: Any, z_loss: Any
) -> tuple[int, float, float]:
    """The Python-valued options checked: ``(ignore_index, label_smoothing, z_loss)``."""
    if isinstance(reduction, str) is False or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    try:
        ignore = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}") from None
    return (
        ignore,
        check_real(smoothing, "label_smoothing", low=0.0, high=1.0),
        check_real(z_loss, "z_loss", low=0.0),
    )


def _check_weight(
    weight: Any, xp: Any, like: Array, primary: str, n_classes: int, cdt: Any
) -> Array:
    """The class weights as an array of the computation dtype, shape ``(C,)``."""
    w = as_secondary_array(weight, "weight", xp, like)
    namespace(**{primary: like, "weight": w})
    if not xp.isdtype(w.dtype, ("real floating", "integral")):
        raise TypeError(f"weight must be a real array, got dtype {dtype_name(w.dtype)}")
    if not shape_matches(tuple(w.shape), (n_classes,)):
        raise ValueError(
            f"weight must be a 1-D array of one weight per class, shape ({n_classes},); "
            f"got {tuple(w.shape)}"
        )
    return xp.astype(w, cdt)


# --- linear cross-entropy ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinearCrossEntropyArgs:
    """A checked ``linear_cross_entropy`` call: ``h`` (..., H) with ``axis`` its hidden axis,
    ``linear_weight`` (V, H), ``bias`` (V,) or None, the target for logits of ``h``'s shape
    with V classes on ``axis``, and the chunks of logits asked for."""

    xp: Any
    library: str
    h: Array
    linear_weight: Array
    bias: Array | None
    target: Array
    axis: int
    index_target: bool
    settings: CrossEntropySettings
    chunk_size: Chunks


def check_linear_cross_entropy(
    h: Any,
    linear_weight: Any,
    target: Any,
    *,
    bias: Any,
    axis: Any,
    chunk_size: Any,
    temperature: Any,
    **options: Any,
) -> LinearCrossEntropyArgs:
    """Every argument of a linear cross-entropy call checked, before any work: the layer's
    shapes (``linear_weight`` is ``torch.nn.Linear``'s ``(vocab, hidden)``), then the target
    and the options as for ``cross_entropy`` over the logits it stands for."""
    h = as_primary_array(h, "h")
    xp = namespace(h=h)
    w = _layer_array(linear_weight, "linear_weight", xp, h)
    b = None if bias is None else _layer_array(bias, "bias", xp, h)
    target = _as_target(target, xp, "h", h)
    library = library_name(xp)
    h = promote(xp, h, "h")
    if h.ndim < 1:
        raise ValueError("h must have at least one dimension (the hidden axis), got a 0-d array")
    if isinstance(axis, tuple) or axis is None:
        raise TypeError(f"axis must be an int naming h's hidden axis, got {axis!r}")
    (ax,) = normalize_axes(axis, h.ndim)
    hidden = h.shape[ax]
    if w.ndim != 2 or not shape_matches((w.shape[1],), (hidden,)):
        hint = ""
        if w.ndim == 2 and shape_matches((w.shape[0],), (hidden,)):
            hint = " (it looks transposed: pass its transpose)"
        raise ValueError(
            f"linear_weight must be (vocab, hidden) = (V, {hidden}), as torch.nn.Linear's "
            f"weight, for h of hidden size {hidden} on axis {ax}; got {tuple(w.shape)}{hint}"
        )
    dtypes = {dtype_name(a.dtype) for a in (h, w, b) if a is not None}
    if len(dtypes) > 1:
        raise TypeError(
            "h, linear_weight and bias must share one floating dtype (as torch's linear "
            f"requires); got {dtype_name(h.dtype)}, {dtype_name(w.dtype)}"
            + ("" if b is None else f", {dtype_name(b.dtype)}")
        )
    vocab = w.shape[0]
    if b is not None and not shape_matches(tuple(b.shape), (vocab,)):
        raise ValueError(f"bias must have shape ({vocab},), one per class; got {tuple(b.shape)}")
    if not (isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)):
        raise TypeError(
            f"temperature of linear_cross_entropy must be a real number, got {temperature!r}"
        )
    chunks = _check_chunk_size(chunk_size)
    shape = (*h.shape[:ax], vocab, *h.shape[ax + 1 :])
    target, index_target, settings = _check_target_and_options(
        xp, library, "h", h, shape, ax, target, temperature=temperature, **options
    )
    return LinearCrossEntropyArgs(xp, library, h, w, b, target, ax, index_target, settings, chunks)


def _layer_array(value: Any, name: str, xp: Any, h: Array) -> Array:
    """``linear_weight`` or ``bias``: a real floating array of ``h``'s library."""
    if not is_array(value):
        raise TypeError(f"{name} must be an array of h's library, got {type(value).__name__}")
    arr = as_secondary_array(value, name, xp, h)
    namespace(h=h, **{name: arr})
    if not xp.isdtype(arr.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {dtype_name(arr.dtype)}")
    return arr


_CHUNK_SIZE = "chunk_size must be a positive int (rows), a pair (rows, classes) or None"


def _check_chunk_size(chunk_size: Any) -> Chunks:
    if chunk_size is None:
        return Chunks()
    if isinstance(chunk_size, tuple | list):
        if len(chunk_size) != 2:
            raise ValueError(f"{_CHUNK_SIZE}; got a sequence of {len(chunk_size)}")
        rows, classes = (None if n is None else _positive(n, chunk_size) for n in chunk_size)
        return Chunks(rows, classes)
    return Chunks(_positive(chunk_size, chunk_size))


def _positive(n: Any, chunk_size: Any) -> int:
    if isinstance(n, bool):
        raise TypeError(f"{_CHUNK_SIZE}, got {chunk_size!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"{_CHUNK_SIZE}, got {chunk_size!r}") from None
    if value < 1:
        raise ValueError(f"{_CHUNK_SIZE} of sizes >= 1, got {chunk_size!r}")
    return value
