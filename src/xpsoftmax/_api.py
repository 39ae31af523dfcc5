"""The public functions: check the arguments, pick an implementation, delegate."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    SupportsIndex,
    TypeAlias,
    TypeVar,
    overload,
)

from . import _checks, _generic, _libraries, _linear, _registry
from ._checks import (
    as_primary_array,
    check_b,
    check_bool,
    check_cross_entropy,
    check_linear_cross_entropy,
    check_temperature,
    check_where,
    compute_dtype,
    dtype_name,
    layout,
    library_name,
    namespace,
    normalize_axes,
    promote,
)
from ._registry import (
    Call,
    CrossEntropyOptions,
    LinearCrossEntropyOptions,
    LogsumexpOptions,
    NormalizationOptions,
)

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "log_softmax",
    "logsumexp",
    "softmax",
    "which",
]

Array = Any


# --- The types a user's type checker sees ---------------------------------------------------
#
# Every function returns arrays of its input's library, so the signatures are generic in the
# array type: ``softmax(np.ndarray) -> np.ndarray``, ``softmax(torch.Tensor) -> torch.Tensor``.
# ``ArrayT`` is bound to a small protocol (``ndim`` and ``shape``) that the arrays of every
# library satisfy (NumPy, PyTorch, JAX, CuPy, Dask, array-api-strict) and Python numbers,
# lists, tuples and strings do not.
#
# Python input (``PyInput``: a number, list or tuple) stays accepted, by a second overload
# typed ``Any``. It is read with NumPy at run time, so the result is a NumPy array; typing it
# ``Any`` keeps a checked call from ever needing NumPy's stubs (importing xpsoftmax imports no
# array library, and type-checking a call should not need one either).
# ``float(logsumexp([1.0, 2.0]))`` checks; annotate the variable where the array type matters
# (``p: npt.NDArray[np.float64] = softmax([1.0, 2.0])``).
#
# What a type variable cannot say (Python's types cannot keep a class and change its
# parameters): the result's dtype and shape parameters are the input's, so a NumPy
# ``ndarray[shape, dtype]`` result keeps the input's although a reduction drops axes and
# integer or 16-bit input gives a float result; and a subclass instance (``torch.nn.Parameter``,
# a NumPy scalar such as ``np.float32``) is typed as itself although the result is the
# library's plain array.
#
# ``cross_entropy`` alone is not overloaded: mypy joins an overloaded function with other
# callables into ``builtins.function`` (e.g. the values of ``{"softmax": lambda x, t: ...,
# "cross_entropy": cross_entropy}`` in ``_bench._ours``), so it keeps one signature, generic in
# ``logits: ArrayT | list | tuple``; for a list ``ArrayT`` is unsolved and takes its default,
# ``Any`` (PEP 696, which leaves this to the checker; mypy applies it, 1.11 to 2.x). The price:
# that union also lets mypy accept any ``logits`` there (a string, say), with an ``Any`` result.
#
# The ``typing.overload`` stubs exist for type checkers only: each implementation keeps its
# runtime signature (parameter names, kinds and defaults), which ``inspect.signature``, the
# docs, ``which`` and ``_plan`` rely on.


class SupportsArray(Protocol):
    """What the signatures require of an array: an array API array of any library."""

    @property
    def ndim(self) -> int: ...

    @property
    def shape(self) -> tuple[Any, ...]: ...


#: The input's array type, which is also the result's.
if TYPE_CHECKING:  # a default (PEP 696) needs Python 3.13's TypeVar: for type checkers only
    from typing_extensions import TypeVar as _TypeVarWithDefault

    ArrayT = _TypeVarWithDefault("ArrayT", bound=SupportsArray, default=Any)
else:
    ArrayT = TypeVar("ArrayT", bound=SupportsArray)

#: Python input, read with NumPy: a number (bool, int or float; not complex), a list or a tuple.
PyInput: TypeAlias = float | list[Any] | tuple[Any, ...]

#: A further array argument (``b``, ``where``, ``weight``, an array ``temperature``): an array
#: of the input's library, or Python input read into it.
Operand: TypeAlias = SupportsArray | float | list[Any] | tuple[Any, ...]

#: A cross-entropy target: an array (class indices or probabilities), a list or a tuple.
Target: TypeAlias = SupportsArray | list[Any] | tuple[Any, ...]

#: The axes of a reduction: None (all axes), an int or a tuple of ints.
Axis: TypeAlias = SupportsIndex | tuple[SupportsIndex, ...] | None

#: The reductions of the cross-entropy.
Reduction: TypeAlias = Literal["mean", "sum", "none"]


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond per call to build
class _Plan:
    """A checked call: the implementation to run and its normalised arguments."""

    impl: Callable[..., Any]
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: Call

    def run(self) -> Any:
        library = self.call.library
        if library not in _NUMPY_BASED:
            return self.impl(*self.args, **self.kwargs)
        import numpy

        # The contract defines the value of every edge case (NaN, inf, empty events), so
        # NumPy's floating-point warnings about them are noise.
        with numpy.errstate(all="ignore"):
            out = self.impl(*self.args, **self.kwargs)
        if library == "numpy":
            # NumPy reductions return scalars (numpy.float64); the contract promises arrays.
            if isinstance(out, tuple):
                return tuple(_ndarray(numpy, o) for o in out)
            return _ndarray(numpy, out)
        finish = _checks._trait(library, "finish")  # Dask: the graph runs later
        return out if finish is None else finish(out, (self.args, self.kwargs))


_NUMPY_BASED = frozenset(lib.name for lib in _libraries.LIBRARIES if lib.numpy_based)


def _ndarray(numpy: Any, value: Any) -> Any:
    return numpy.asarray(value) if isinstance(value, numpy.generic) else value


def _call(op: str, xp: Any, x: Any, axes: tuple[int, ...], options: _registry.Options) -> Call:
    """The metadata of a call on ``x`` along ``axes``, for the registry."""
    library = library_name(xp)
    device, shape, is_contiguous, pieces = layout(x, library, axes)
    return Call(
        op,
        library,
        device,
        dtype_name(x.dtype),
        x.ndim,
        axes,
        options,
        shape,
        is_contiguous,
        pieces,
    )


def _plan(call: Call, generic: Callable[..., Any], *args: Any, **kwargs: Any) -> _Plan:
    entry = _registry.select(call)
    if entry is None:
        return _Plan(generic, "generic", args, kwargs, call)
    return _Plan(entry.impl, entry.name, args, kwargs, call)


def _plan_normalization(op: str, x: Any, axis: Any, temperature: Any, where: Any) -> _Plan:
    x = as_primary_array(x, "x")
    xp = namespace(x=x)
    x = promote(xp, x, "x")
    axes = normalize_axes(axis, x.ndim)
    cdt = compute_dtype(xp, x.dtype)
    temp = check_temperature(temperature, xp, x, axes, cdt)
    w = check_where(where, xp, x)
    options = NormalizationOptions(temp.kind, w is not None)
    generic = _generic.softmax if op == "softmax" else _generic.log_softmax
    return _plan(_call(op, xp, x, axes, options), generic, xp, x, axes, temperature=temp, where=w)


def _plan_logsumexp(
    x: Any, axis: Any, keepdims: Any, b: Any, return_sign: Any, where: Any
) -> _Plan:
    x = as_primary_array(x, "x")
    xp = namespace(x=x)
    x = promote(xp, x, "x")
    keep = check_bool(keepdims, "keepdims")
    sign = check_bool(return_sign, "return_sign")
    cdt = compute_dtype(xp, x.dtype)
    b_arr, x = check_b(b, xp, x, cdt)  # x and b broadcast both ways; axes refer to the result
    axes = normalize_axes(axis, x.ndim)
    w = check_where(where, xp, x)
    options = LogsumexpOptions(keep, b_arr is not None, sign, w is not None)
    return _plan(
        _call("logsumexp", xp, x, axes, options),
        _generic.logsumexp,
        xp,
        x,
        axes,
        keepdims=keep,
        b=b_arr,
        return_sign=sign,
        where=w,
    )


def _plan_cross_entropy(op: str, logits: Any, target: Any, **kw: Any) -> _Plan:
    args = check_cross_entropy(logits, target, **kw)
    s = args.settings
    options = CrossEntropyOptions(
        "index" if args.index_target else "probs",
        s.weight is not None,
        s.reduction,
        s.label_smoothing != 0,
        s.z_loss != 0,
        s.temperature.kind,
    )
    generic = _generic.cross_entropy if op == "cross_entropy" else _generic.cross_entropy_with_grad
    return _plan(
        _call(op, args.xp, args.logits, (args.axis,), options),
        generic,
        args.xp,
        args.logits,
        args.target,
        args.axis,
        s,
    )


def _plan_linear_cross_entropy(
    op: str, h: Any, linear_weight: Any, target: Any, **kw: Any
) -> _Plan:
    args = check_linear_cross_entropy(h, linear_weight, target, **kw)
    s = args.settings
    options = LinearCrossEntropyOptions(
        "index" if args.index_target else "probs",
        s.weight is not None,
        s.reduction,
        s.label_smoothing != 0,
        s.z_loss != 0,
        s.temperature.kind,
        args.bias is not None,
        args.chunk_size,
    )
    generic = (
        _linear.linear_cross_entropy
        if op == "linear_cross_entropy"
        else _linear.linear_cross_entropy_with_grad
    )
    return _plan(
        _call(op, args.xp, args.h, (args.axis,), options),
        generic,
        args.xp,
        args.h,
        args.linear_weight,
        args.bias,
        args.target,
        args.axis,
        s,
        args.chunk_size,
    )


@overload
def softmax(
    x: ArrayT,
    /,
    axis: Axis = ...,
    *,
    temperature: Operand = ...,
    where: Operand | None = ...,
) -> ArrayT: ...
@overload
def softmax(
    x: PyInput,
    /,
    axis: Axis = ...,
    *,
    temperature: Operand = ...,
    where: Operand | None = ...,
) -> Any: ...
def softmax(
    x: Array,
    /,
    axis: Axis = -1,
    *,
    temperature: Operand = 1.0,
    where: Operand | None = None,
) -> Array:
    """Softmax along ``axis``: ``exp(x / T) / sum(exp(x / T))``, computed stably.

    Parameters
    ----------
    x : array
        Input of any array library that array-api-compat recognises (NumPy, PyTorch, JAX,
        CuPy, Dask, array-api-strict, ...); Python numbers and lists are read with NumPy.
        Integer and boolean input is promoted to the default real floating dtype.
    axis : int, tuple of int or None, default -1
        The axes each normalised slice spans; None means all axes.
    temperature : float or array, default 1.0
        ``softmax(x, temperature=T) == softmax(x / T)``. ``T == 0`` is the hard max (mass split
        evenly over the maximal entries) and ``T == inf`` the uniform distribution. An array
        must broadcast against the reduced shape in keepdims form (one value per slice).
    where : bool array, optional
        Entries where it is False take no part and get probability 0.

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x`` (16-bit inputs are computed in float32).
        A slice that is all -inf (or fully masked) gives zeros; a NaN or +inf entry makes its
        slice NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> xpsoftmax.softmax(np.array([1000.0, 1001.0])).round(4)
    array([0.2689, 0.7311])
    >>> xpsoftmax.softmax(np.array([1.0, 3.0, 3.0]), temperature=0)
    array([0. , 0.5, 0.5])
    >>> xpsoftmax.softmax(np.array([-np.inf, -np.inf]))
    array([0., 0.])
    """
    return _plan_normalization("softmax", x, axis, temperature, where).run()


@overload
def log_softmax(
    x: ArrayT,
    /,
    axis: Axis = ...,
    *,
    temperature: Operand = ...,
    where: Operand | None = ...,
) -> ArrayT: ...
@overload
def log_softmax(
    x: PyInput,
    /,
    axis: Axis = ...,
    *,
    temperature: Operand = ...,
    where: Operand | None = ...,
) -> Any: ...
def log_softmax(
    x: Array,
    /,
    axis: Axis = -1,
    *,
    temperature: Operand = 1.0,
    where: Operand | None = None,
) -> Array:
    """Log of the softmax along ``axis``: ``x / T - logsumexp(x / T)``, computed stably.

    Parameters
    ----------
    x : array
        Input of any array library that array-api-compat recognises.
    axis : int, tuple of int or None, default -1
        The axes each normalised slice spans; None means all axes.
    temperature : float or array, default 1.0
        As in :func:`softmax`.
    where : bool array, optional
        Entries where it is False take no part and get -inf.

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x``. A slice that is all -inf (or fully
        masked) gives -inf everywhere, with a zero gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> xpsoftmax.log_softmax(np.array([0.0, 0.0])).round(4)
    array([-0.6931, -0.6931])
    >>> xpsoftmax.log_softmax(np.array([1.0, 2.0, 3.0]), where=np.array([True, False, True])).round(4)
    array([-2.1269,    -inf, -0.1269])
    """
    return _plan_normalization("log_softmax", x, axis, temperature, where).run()


# One array by default (return_sign=False), the pair (log|sum|, sign) for return_sign=True,
# either for a bool known only at run time.
@overload
def logsumexp(
    x: ArrayT,
    /,
    axis: Axis = ...,
    *,
    keepdims: bool = ...,
    b: Operand | None = ...,
    return_sign: Literal[False] = ...,
    where: Operand | None = ...,
) -> ArrayT: ...
@overload
def logsumexp(
    x: ArrayT,
    /,
    axis: Axis = ...,
    *,
    keepdims: bool = ...,
    b: Operand | None = ...,
    return_sign: Literal[True],
    where: Operand | None = ...,
) -> tuple[ArrayT, ArrayT]: ...
@overload
def logsumexp(
    x: ArrayT,
    /,
    axis: Axis = ...,
    *,
    keepdims: bool = ...,
    b: Operand | None = ...,
    return_sign: bool,
    where: Operand | None = ...,
) -> ArrayT | tuple[ArrayT, ArrayT]: ...
@overload
def logsumexp(
    x: PyInput,
    /,
    axis: Axis = ...,
    *,
    keepdims: bool = ...,
    b: Operand | None = ...,
    return_sign: Literal[True],
    where: Operand | None = ...,
) -> tuple[Any, Any]: ...
@overload
def logsumexp(
    x: PyInput,
    /,
    axis: Axis = ...,
    *,
    keepdims: bool = ...,
    b: Operand | None = ...,
    return_sign: bool = ...,
    where: Operand | None = ...,
) -> Any: ...
def logsumexp(
    x: Array,
    /,
    axis: Axis = None,
    *,
    keepdims: bool = False,
    b: Operand | None = None,
    return_sign: bool = False,
    where: Operand | None = None,
) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` over ``axis``, computed stably (as ``scipy.special.logsumexp``).

    Parameters
    ----------
    x : array
        Input of any array library that array-api-compat recognises.
    axis : int, tuple of int or None, default None
        The axes to reduce; None (the default, like ``xp.sum``) reduces all axes.
    keepdims : bool, default False
        Keep the reduced axes with length 1.
    b : array, optional
        Weights broadcasting to ``x``, possibly negative. Entries with ``b == 0`` take no part,
        even where ``x`` is infinite or NaN.
    return_sign : bool, default False
        Return ``(log|sum|, sign)``; the sign is 0 for a zero sum. Without it a negative sum
        gives NaN.
    where : bool array, optional
        Entries where it is False are left out of the sum.

    Returns
    -------
    array or (array, array)
        float32 for 16-bit input, else the input's dtype. An empty sum (all -inf, fully masked,
        or an empty axis) gives -inf.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> float(xpsoftmax.logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    >>> xpsoftmax.logsumexp(np.array([[0.0, 0.0], [1.0, 2.0]]), axis=1).round(4)
    array([0.6931, 2.3133])
    >>> lse, sign = xpsoftmax.logsumexp(np.array([1.0, 2.0]), b=np.array([1.0, -1.0]), return_sign=True)
    >>> float(lse).__round__(4), float(sign)
    (1.5413, -1.0)
    """
    return _plan_logsumexp(x, axis, keepdims, b, return_sign, where).run()


def cross_entropy(
    logits: ArrayT | list[Any] | tuple[Any, ...],
    target: Target,
    /,
    *,
    axis: int = -1,
    weight: Operand | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    temperature: Operand = 1.0,
    z_loss: float = 0.0,
) -> ArrayT:
    """Cross-entropy between ``softmax(logits / T)`` and ``target``.

    The options mean what they mean in ``torch.nn.functional.cross_entropy`` and the numbers
    agree with it, with one deliberate difference: a mean whose denominator is zero (every
    entry ignored or zero-weighted, or an empty batch) is 0 with a zero gradient, not NaN.

    Parameters
    ----------
    logits : array
        Unnormalised scores; ``axis`` is the class axis.
    target : array
        Integer class indices shaped like ``logits`` without the class axis, or real class
        probabilities shaped like ``logits``.
    axis : int, default -1
        The class axis (-1 as in optax and Keras; 1 for PyTorch's ``(N, C, d1, ...)``).
    weight : array, optional
        One weight per class, shape ``(C,)``.
    ignore_index : int, default -100
        Class index whose entries take no part (index targets only).
    reduction : {"mean", "sum", "none"}, default "mean"
        The mean divides by the sum of the target classes' weights over entries not ignored
        (index targets), or by the number of entries (probability targets).
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution, as in PyTorch.
    temperature : float or array, default 1.0
        Divides the logits first; as in :func:`softmax`, 0 and inf are the limits.
    z_loss : float, default 0
        Adds ``z_loss * logsumexp(logits / T)**2`` to each entry's loss, scaled by the entry's
        class weight (for probability targets: ``sum(weight * target)``).

    Returns
    -------
    array
        The loss: per entry for ``reduction="none"``, else 0-d; float32 for 16-bit logits.
        A row whose logits are all -inf has loss +inf for an index target. Class indices
        outside ``[0, C)`` raise ValueError for eager host arrays and give NaN elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> xpsoftmax.cross_entropy(logits, np.array([0, 2]), reduction="none").round(4)
    array([0.2395, 1.0986])
    >>> float(xpsoftmax.cross_entropy(logits, np.array([-100, -100])))
    0.0
    """
    return _plan_cross_entropy(
        "cross_entropy",
        logits,
        target,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
    ).run()


@overload
def cross_entropy_with_grad(
    logits: ArrayT,
    target: Target,
    /,
    *,
    axis: int = ...,
    weight: Operand | None = ...,
    ignore_index: int = ...,
    reduction: Reduction = ...,
    label_smoothing: float = ...,
    temperature: Operand = ...,
    z_loss: float = ...,
) -> tuple[ArrayT, ArrayT]: ...
@overload
def cross_entropy_with_grad(
    logits: list[Any] | tuple[Any, ...],
    target: Target,
    /,
    *,
    axis: int = ...,
    weight: Operand | None = ...,
    ignore_index: int = ...,
    reduction: Reduction = ...,
    label_smoothing: float = ...,
    temperature: Operand = ...,
    z_loss: float = ...,
) -> tuple[Any, Any]: ...
def cross_entropy_with_grad(
    logits: Array,
    target: Target,
    /,
    *,
    axis: int = -1,
    weight: Operand | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    temperature: Operand = 1.0,
    z_loss: float = 0.0,
) -> tuple[Array, Array]:
    """:func:`cross_entropy` and its gradient with respect to ``logits``, from one pass.

    Takes the same arguments as :func:`cross_entropy`. The gradient has the shape and dtype
    of ``logits`` and equals what autodiff gives for the same call (for ``reduction="none"``,
    the gradient of the sum of the entries' losses). It is ``scale * (p - y) / T``, zero on
    ignored entries and on rows that are all -inf.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> loss, grad = xpsoftmax.cross_entropy_with_grad(np.array([[0.0, 0.0]]), np.array([1]))
    >>> float(loss).__round__(4), grad
    (0.6931, array([[ 0.5, -0.5]]))
    """
    return _plan_cross_entropy(
        "cross_entropy_with_grad",
        logits,
        target,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
    ).run()


def linear_cross_entropy(
    h: ArrayT | list[Any] | tuple[Any, ...],
    linear_weight: SupportsArray,
    target: Target,
    /,
    *,
    bias: SupportsArray | None = None,
    axis: int = -1,
    weight: Operand | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    chunk_size: int | tuple[int | None, int | None] | None = None,
) -> ArrayT:
    """:func:`cross_entropy` of the logits ``h @ linear_weight.T + bias``, without them.

    A language model's head: the logits of every row would be the largest array of a training
    step (8192 tokens of a 128K vocabulary: 4 GiB in float32). This computes the same loss a
    chunk of rows at a time (and a chunk of classes at a time where a row alone is large), so
    that only one chunk of logits exists at once; under autodiff (PyTorch, JAX) it keeps no
    logits-sized residual either.

    Parameters
    ----------
    h : array
        The hidden states, shape ``(..., H)`` (the hidden axis is ``axis``).
    linear_weight : array
        The output layer's weight, shape ``(V, H)``: ``torch.nn.Linear(H, V).weight``'s layout
        (pass ``W.T`` for a ``(H, V)`` matrix). Same library and dtype as ``h``.
    target : array
        Class indices shaped like ``h`` without ``axis``, or class probabilities shaped like
        the logits (``h``'s shape with ``V`` on ``axis``).
    bias : array, optional
        Added to the logits, shape ``(V,)``.
    axis : int, default -1
        ``h``'s hidden axis, which becomes the logits' class axis (1 for PyTorch's
        ``(N, H, d1, ...)``).
    weight, ignore_index, reduction, label_smoothing, z_loss
        As in :func:`cross_entropy`.
    temperature : float, default 1.0
        As in :func:`cross_entropy`; a number only (no per-entry array).
    chunk_size : int or (int, int), optional
        Rows of logits per chunk, or ``(rows, classes)`` per chunk (either may be None for its
        default). Rows: by default at most 1/32 of all the logits and 64 MiB of float32
        logits, but at least 256 rows. Classes: by default all of them up to 2**18 (a row of
        1 MiB of float32 logits), chunks of 2**16 beyond. Smaller chunks take less memory and,
        below a few hundred rows, more time; chunks of classes compute the logits twice.

    Returns
    -------
    array
        The loss, as :func:`cross_entropy` gives it for the full logits (float32 for 16-bit
        inputs, whose logits are accumulated in float32).

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> rng = np.random.default_rng(0)
    >>> h, w = rng.normal(size=(6, 4)), rng.normal(size=(10, 4))
    >>> t = np.array([1, 2, 3, 4, 5, -100])
    >>> loss = xpsoftmax.linear_cross_entropy(h, w, t, chunk_size=4)
    >>> bool(np.isclose(loss, xpsoftmax.cross_entropy(h @ w.T, t)))
    True
    """
    return _plan_linear_cross_entropy(
        "linear_cross_entropy",
        h,
        linear_weight,
        target,
        bias=bias,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        chunk_size=chunk_size,
    ).run()


def linear_cross_entropy_with_grad(
    h: ArrayT | list[Any] | tuple[Any, ...],
    linear_weight: SupportsArray,
    target: Target,
    /,
    *,
    bias: SupportsArray | None = None,
    axis: int = -1,
    weight: Operand | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    chunk_size: int | tuple[int | None, int | None] | None = None,
) -> tuple[ArrayT, ArrayT, ArrayT, ArrayT | None]:
    """:func:`linear_cross_entropy` and its gradients ``(loss, dh, dW, db)``, chunk by chunk.

    Takes the same arguments as :func:`linear_cross_entropy`. ``dh``, ``dW`` and ``db`` have the
    shapes and dtypes of ``h``, ``linear_weight`` and ``bias`` (``db`` is None without a
    bias) and equal what autodiff gives for the same call (for ``reduction="none"``, the
    gradients of the sum of the entries' losses). Beyond them, the memory used is one chunk
    of logits and its gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> h, w = np.ones((2, 3)), np.zeros((4, 3))
    >>> loss, dh, dw, db = xpsoftmax.linear_cross_entropy_with_grad(h, w, np.array([0, 1]))
    >>> round(float(loss), 4), dh.shape, dw.shape, db
    (1.3863, (2, 3), (4, 3), None)
    """
    return _plan_linear_cross_entropy(
        "linear_cross_entropy_with_grad",
        h,
        linear_weight,
        target,
        bias=bias,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        chunk_size=chunk_size,
    ).run()


def which(op: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
    """The name of the implementation that would serve ``op(*args, **kwargs)``.

    Checks the arguments like the call would, but computes nothing.

    Parameters
    ----------
    op : str or callable
        ``"softmax"``, ``"log_softmax"``, ``"logsumexp"``, ``"cross_entropy"``,
        ``"cross_entropy_with_grad"`` or the function itself.

    Returns
    -------
    str
        ``"generic"`` or the registered fast path's name, e.g. ``"numpy.inplace"``.

    Examples
    --------
    >>> import numpy as np
    >>> import xpsoftmax
    >>> xpsoftmax.which("softmax", np.ones((2, 3)))
    'numpy.inplace'
    >>> xpsoftmax.which(xpsoftmax.softmax, [1.0, 2.0], temperature=np.ones(1))
    'generic'
    """
    name = op if isinstance(op, str) else getattr(op, "__name__", "")
    if name not in _OPERATIONS:
        raise ValueError(f"op must be one of {_registry.OPS}, got {op!r}")
    return _checked_call(name, *args, **kwargs).name


def _checked_call(name: str, *args: Any, **kwargs: Any) -> _Plan:
    """The checked call of the public function ``name`` (what ``which`` and the kit read).

    The arguments are bound to the public function's own signature, so its defaults are the
    only ones (declared once, in the signature)."""
    function, planner = _OPERATIONS[name]
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return planner(*bound.args, **bound.kwargs)


def _plan_for(name: str) -> Callable[..., _Plan]:
    def planner(*args: Any, **kwargs: Any) -> _Plan:
        return _plan_cross_entropy(name, *args, **kwargs)

    return planner


def _plan_linear_for(name: str) -> Callable[..., _Plan]:
    def planner(*args: Any, **kwargs: Any) -> _Plan:
        return _plan_linear_cross_entropy(name, *args, **kwargs)

    return planner


#: Each public operation: its function (whose signature declares the defaults) and the
#: planner taking that signature's arguments. The one table ``which``, the kit and the
#: listing read; a new operation adds its row here and its name to ``_registry.OPS``.
_OPERATIONS: dict[str, tuple[Callable[..., Any], Callable[..., _Plan]]] = {
    "softmax": (
        softmax,
        lambda x, axis, *, temperature, where: _plan_normalization(
            "softmax", x, axis, temperature, where
        ),
    ),
    "log_softmax": (
        log_softmax,
        lambda x, axis, *, temperature, where: _plan_normalization(
            "log_softmax", x, axis, temperature, where
        ),
    ),
    "logsumexp": (
        logsumexp,
        lambda x, axis, *, keepdims, b, return_sign, where: _plan_logsumexp(
            x, axis, keepdims, b, return_sign, where
        ),
    ),
    "cross_entropy": (cross_entropy, _plan_for("cross_entropy")),
    "cross_entropy_with_grad": (cross_entropy_with_grad, _plan_for("cross_entropy_with_grad")),
    "linear_cross_entropy": (linear_cross_entropy, _plan_linear_for("linear_cross_entropy")),
    "linear_cross_entropy_with_grad": (
        linear_cross_entropy_with_grad,
        _plan_linear_for("linear_cross_entropy_with_grad"),
    ),
}
