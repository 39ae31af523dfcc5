"""Compiled CPU kernels (numba): softmax, log_softmax, logsumexp and cross-entropy (with
its gradient) of float32 rows.

Each row is read once for its maximum and once more for everything else while it is still
in cache: the exponentials, their sum and (softmax) the output, then a scaling pass over the
output row, which is in cache too. The exponential is :func:`exp32` below, not ``np.exp``:
numba's ``np.exp`` stays a scalar libm call inside loops (the llvmlite wheels carry no
vector math library), about 4x slower than a polynomial LLVM vectorises.

Blocks of rows run on the NumPy backend's thread pool (:func:`xpsoftmax._threads.run_blocks`;
the kernels release the GIL); a row is computed by one thread with the same operations
whatever the thread count, so results are the same bits for 1 thread and for N. Sums are
vectorised (``fastmath`` with reassociation), so their order follows the vector width of
the machine, not the threads.

numba is an optional extra (``pip install "xpsoftmax[numba]"``); without it the registry's
availability check says so and the NumPy ufunc paths serve. The kernels compile at their
first call (a few seconds), and are cached on disk (``cache=True``) for later processes.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import numpy as np

from xpsoftmax import _rows
from xpsoftmax._checks import CrossEntropySettings, Temperature
from xpsoftmax._registry import Call, register
from xpsoftmax._threads import check_num_threads, run_blocks
from xpsoftmax.backends.numpy import blocks

__all__ = ["exp32", "to_bfloat16_bits"]

# Cody-Waite reduction x = n ln2 + r with ln 2 split in two (the high part exact in a few
# bits, so n * LN2_HI is exact for |n| < 2**15), then Cephes' degree-7 polynomial for e**r on
# [-ln2/2, ln2/2] and 2**n from the exponent bits.
LOG2E = np.float32(1.44269504088896341)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
#: Below this e**x is subnormal (or 0): the kernel returns 0. Softmax entries that small are
#: below float32's relative precision next to the row's maximum (which contributes 1).
EXP_LOW = np.float32(-87.33654)
_P = [np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                              4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)]  # fmt: skip

#: Entries of a block of rows (float32): a few rows, within a core's L2 cache.
BLOCK_ENTRIES = 1 << 16


def available() -> str | None:
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'xpsoftmax[numba]')"
    return None


#: The compiled functions: "exp32", and per element type ("float32"; "bfloat16", read and
#: written as its uint16 bits, for torch tensors) a dict of the row kernels.
_KERNELS: dict[str, Any] = {}
_BUILDING = threading.Lock()


def _build() -> dict[str, Any]:
    """Compile (or load from numba's cache) the kernels; once per process, whichever thread
    asks first (the others wait)."""
    if "bfloat16" in _KERNELS:
        return _KERNELS
    with _BUILDING:
        if "bfloat16" not in _KERNELS:
            _compile()
    return _KERNELS


def _compile() -> None:
    import numba

    # Reassociation and contraction let LLVM vectorise the sums; no "nnan"/"ninf": NaN and
    # inf inputs must propagate as the contract says.
    fm = {"reassoc", "contract", "arcp", "afn"}
    jit = numba.njit(fastmath=fm, nogil=True, cache=True, error_model="numpy")
    inline = numba.njit(fastmath=fm, inline="always", cache=True, error_model="numpy")
    c0, c1, c2, c3, c4, c5 = _P
    log2e, ln2_hi, ln2_lo, low = LOG2E, LN2_HI, LN2_LO, EXP_LOW
    one = np.float32(1.0)
    half = np.float32(0.5)

    @inline
    def exp32(x: Any) -> Any:  # pragma: no cover - compiled
        """e**x for float32 x <= 0 (and NaN): <= 1.5 ulp on [-87.3, 0], 0 below."""
        xc = max(x, low)  # keeps n in range; -inf, NaN and x < low are settled by the select
        n = np.floor(xc * log2e + half)
        ni = np.int32(n)
        nf = np.float32(ni)  # the same value, but a fresh one: no re-association across it
        r = (xc - nf * ln2_hi) - nf * ln2_lo
        r2 = r * r
        p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
        p = p * r2 + r + one
        scale = np.int32((ni + np.int32(127)) << np.int32(23)).view(np.float32)
        e = p * scale
        return np.float32(0.0) if x < low else (x if x != x else e)

    @inline
    def same(v: Any) -> Any:  # pragma: no cover - compiled
        return v

    sixteen, lsb, bias, quiet = np.uint32(16), np.uint32(1), np.uint32(0x7FFF), np.uint32(0x40)

    @inline
    def from_bf16(v: Any) -> Any:  # pragma: no cover - compiled
        return np.uint32(np.uint32(v) << sixteen).view(np.float32)

    @inline
    def to_bf16(f: Any) -> Any:  # pragma: no cover - compiled
        """Rounded to the nearest bfloat16, ties to even (torch's rounding); NaN stays NaN."""
        u = np.float32(f).view(np.uint32)
        if f != f:
            return np.uint16((u >> sixteen) | quiet)
        return np.uint16((u + bias + ((u >> sixteen) & lsb)) >> sixteen)

    _KERNELS["exp32"] = exp32
    _KERNELS["to_bf16"] = to_bf16
    _KERNELS["float32"] = _row_kernels(jit, exp32, same, same)
    _KERNELS["bfloat16"] = _row_kernels(jit, exp32, from_bf16, to_bf16)  # last: the flag


def _row_kernels(jit: Any, exp32: Any, load: Any, store: Any) -> dict[str, Any]:
    """The row kernels for one element type: ``load`` gives an element as float32, ``store``
    rounds a float32 to the output's type. Every intermediate lives in a float32 row of
    scratch (in cache), so a 16-bit output is rounded once."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    nan = np.float32(np.nan)

    @jit
    def row_max(row: Any) -> Any:  # pragma: no cover - compiled
        """The row's maximum, NaN if it holds a NaN (np.max's rule). The main loop is a
        plain maximum and a count of NaN and +inf entries, which LLVM vectorises; only rows
        holding one of those are looked at again."""
        m = -inf
        odd = 0
        for v in row:
            f = load(v)
            m = f if f > m else m
            odd += (f != f) | (f == inf)
        if odd:
            for v in row:
                f = load(v)
                if f != f:
                    return f
        return m

    @jit
    def normalize(
        x2: Any, out2: Any, start: int, stop: int, inv_t: Any, log: bool
    ) -> None:  # pragma: no cover - compiled
        n = x2.shape[1]
        buf = np.empty(n, np.float32)
        for i in range(start, stop):
            row = x2[i]
            out = out2[i]
            m = row_max(row)
            if m == -inf:  # an empty event: zeros (softmax), -inf (log_softmax)
                fill = store(-inf if log else zero)
                for j in range(n):
                    out[j] = fill
                continue
            if m != m or m == inf:
                fill = store(nan)
                for j in range(n):
                    out[j] = fill
                continue
            s = zero
            if log:
                k = zero  # the maxima, each exactly 1: log1p keeps lse near 0 exact
                for j in range(n):
                    d = (load(row[j]) - m) * inv_t
                    buf[j] = d
                    top = d == 0
                    k += one if top else zero
                    s += zero if top else exp32(d)
                lse = np.float32(np.log1p((k - one) + s))
                for j in range(n):
                    out[j] = store(buf[j] - lse)
            else:
                for j in range(n):
                    e = exp32((load(row[j]) - m) * inv_t)
                    buf[j] = e
                    s += e
                r = one / s
                for j in range(n):
                    out[j] = store(buf[j] * r)

    @jit
    def logsumexp(x2: Any, out: Any, start: int, stop: int) -> None:  # pragma: no cover - compiled
        n = x2.shape[1]
        for i in range(start, stop):
            row = x2[i]
            m = row_max(row)
            if m != m:
                out[i] = nan
                continue
            if m == inf or m == -inf:
                out[i] = m
                continue
            k = zero
            rest = zero
            for j in range(n):
                d = load(row[j]) - m
                top = d == 0
                k += one if top else zero
                rest += zero if top else exp32(d)
            # log(k + rest) as log1p((k - 1) + rest): accurate near 0 (contract).
            out[i] = np.float32(np.log1p((k - one) + rest)) + m

    @jit
    def cross_entropy(
        x2: Any,
        t_safe: Any,
        valid: Any,
        ignored: Any,
        w_t: Any,
        weight: Any,
        par: Any,
        per: Any,
        grad: Any,
        with_grad: bool,
        start: int,
        stop: int,
    ) -> None:  # pragma: no cover - compiled
        """Rows ``start:stop``: each row's loss into ``per`` and, ``with_grad``, its
        gradient (already scaled by the reduction) into ``grad``. The formulas of
        ``blocks._fused_cross_entropy`` (``_generic._index_terms``), in float32. ``par``:
        (1 / T, label smoothing, z-loss, sum of the class weights, d reduced / d per-row
        loss); ``weight`` is empty without class weights."""
        n = x2.shape[1]
        inv_t, eps, z_loss, w_total, scale = par[0], par[1], par[2], par[3], par[4]
        weighted = weight.shape[0] > 0
        nf = np.float32(n)
        buf = np.empty(n, np.float32)
        for i in range(start, stop):
            row = x2[i]
            m = row_max(row)
            wb = w_t[i]
            keep = valid[i]
            if m != m or m == inf:  # NaN everywhere the row counts
                pb = nan
            elif m == -inf:  # an empty event: an infinite loss, no gradient
                pb = inf * (wb * (one - eps))
                if eps:
                    pb += (eps / nf) * inf
                if z_loss:
                    pb += inf
                keep = False
            else:
                # Branch-free loops (one per case), which LLVM vectorises.
                k = zero  # the maxima, each exactly 1 (see normalize)
                rest = zero
                if with_grad:
                    for j in range(n):
                        d = (load(row[j]) - m) * inv_t
                        top = d == 0
                        k += one if top else zero
                        e = exp32(d)
                        rest += zero if top else e
                        buf[j] = e
                else:
                    for j in range(n):
                        d = (load(row[j]) - m) * inv_t
                        top = d == 0
                        k += one if top else zero
                        rest += zero if top else exp32(d)
                sum_wz = zero
                if eps and weighted:
                    for j in range(n):
                        sum_wz += (load(row[j]) - m) * inv_t * weight[j]
                elif eps:
                    for j in range(n):
                        sum_wz += (load(row[j]) - m) * inv_t
                lse_rel = np.float32(np.log1p((k - one) + rest))
                z_t = (load(row[t_safe[i]]) - m) * inv_t
                pb = (lse_rel - z_t) * (wb * (one - eps))
                if eps:
                    pb += (eps / nf) * (w_total * lse_rel - sum_wz)
                lse_abs = m * inv_t + lse_rel
                if z_loss:
                    pb += (z_loss * wb) * lse_abs * lse_abs
                if with_grad and keep:
                    g = grad[i]
                    coef = wb * (one - eps)
                    if eps:
                        coef += eps * w_total / nf
                    if z_loss:
                        coef += np.float32(2.0) * z_loss * wb * lse_abs
                    kk = scale * inv_t
                    factor = coef * kk / (k + rest)
                    smooth = kk * eps / nf
                    if eps and weighted:
                        for j in range(n):
                            g[j] = store(buf[j] * factor - smooth * weight[j])
                    elif eps:
                        for j in range(n):
                            g[j] = store(buf[j] * factor - smooth)
                    else:
                        for j in range(n):
                            g[j] = store(buf[j] * factor)
                    # The target's entry again, its -y term in float32 before the rounding.
                    t = t_safe[i]
                    y_t = (smooth * weight[t] if weighted else smooth) if eps else zero
                    g[t] = store(buf[t] * factor - y_t - kk * (one - eps) * wb)
            per[i] = pb if valid[i] else (zero if ignored[i] else nan)
            if with_grad:
                g = grad[i]
                if not keep:
                    fill = store(zero)
                    for j in range(n):
                        g[j] = fill
                elif m != m or m == inf:
                    fill = store(nan)
                    for j in range(n):
                        g[j] = fill

    return {"normalize": normalize, "logsumexp": logsumexp, "cross_entropy": cross_entropy}


def _elementwise(name: str, x: np.ndarray, out_dtype: Any) -> np.ndarray:
    """The kernels' scalar function ``name`` ("exp32", "to_bf16") over a float32 array (for
    tests and accuracy checks)."""
    import numba

    k = _build()
    key = "vector_" + name
    if key not in k:
        inner = k[name]

        @numba.njit(cache=True, nogil=True)
        def vector(a: Any, out: Any) -> None:  # pragma: no cover - compiled
            for i in range(a.shape[0]):
                out[i] = inner(a[i])

        k[key] = vector
    a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(a.shape, out_dtype)
    k[key](a, out)
    return out.reshape(np.shape(x))


def exp32(x: np.ndarray) -> np.ndarray:
    """The kernels' exponential on a float32 array."""
    return _elementwise("exp32", x, np.float32)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """The kernels' rounding of float32 to bfloat16 (its uint16 bits)."""
    return _elementwise("to_bf16", x, np.uint16)


# --- the registry's entries -------------------------------------------------------------------


def _normalization_ok(call: Call) -> bool:
    # Empty slices are left to the ufunc path, which answers them without arithmetic.
    return call.length > 0 and _rows.normalization_ok(call)


def _logsumexp_ok(call: Call) -> bool:
    return call.length > 0 and _rows.logsumexp_ok(call)


def _blocks(n_rows: int, n: int) -> list[tuple[int, int]]:
    per = max(1, BLOCK_ENTRIES // max(1, n))
    return [(i, min(i + per, n_rows)) for i in range(0, n_rows, per)]


def _inverse(t: Temperature) -> float | None:
    """``1 / T`` as a float32 factor, or None where it would not be a normal float32 (the
    ufunc path divides in two steps there)."""
    inv = 1.0 / _rows.scalar_temperature(t)
    return inv if inv >= 1.1754943508222875e-38 and inv < 3.0e38 else None


def _native(x: Any) -> np.ndarray:
    """``x`` as a NumPy array in the machine's byte order (a copy only where it is not):
    the kernels read raw float32."""
    x = np.asarray(x)
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def _kernels(x: np.ndarray) -> dict[str, Any]:
    """The row kernels for ``x``'s elements: float32, or bfloat16 given as its uint16 bits
    (how the torch backend passes bfloat16 tensors; NumPy has no bfloat16)."""
    return _build()["bfloat16" if x.dtype == np.uint16 else "float32"]


def normalize_rows(x: np.ndarray, axes: tuple[int, ...], inv_t: float, log: bool) -> Any:
    """softmax or log_softmax over the trailing ``axes`` of ``x`` (float32, or bfloat16
    bits), scaled by ``inv_t`` (a normal float32); the output in ``x``'s type."""
    kernel = _kernels(x)["normalize"]
    x2 = _rows.as_rows(x, axes)
    out = np.empty_like(x)
    out2 = out.reshape(x2.shape)
    factor = np.float32(inv_t)
    run_blocks(lambda start, stop: kernel(x2, out2, start, stop, factor, log), _blocks(*x2.shape))
    return out


def _normalize(x: np.ndarray, axes: tuple[int, ...], t: Temperature, log: bool) -> Any:
    inv = _inverse(t)
    if inv is None:
        return blocks._normalize(x, axes, t, log)
    return normalize_rows(x, axes, inv, log)


@register(
    "softmax",
    "numpy",
    "numpy.compiled",
    priority=60,
    supports=_normalization_ok,
    dtypes=("float32",),
    available=available,
    description="compiled (numba); float32 rows on trailing axes, scalar temperature > 0",
)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    check_num_threads()
    return _normalize(_native(x), axes, temperature, log=False)


@register(
    "log_softmax",
    "numpy",
    "numpy.compiled",
    priority=60,
    supports=_normalization_ok,
    dtypes=("float32",),
    available=available,
    description="compiled (numba); float32 rows on trailing axes, scalar temperature > 0",
)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    check_num_threads()
    return _normalize(_native(x), axes, temperature, log=True)


@register(
    "logsumexp",
    "numpy",
    "numpy.compiled",
    priority=60,
    supports=_logsumexp_ok,
    dtypes=("float32",),
    available=available,
    description="compiled (numba); float32 rows on trailing axes; b, where, return_sign None",
)
def logsumexp(
    xp: Any,
    x: Any,
    axes: tuple[int, ...],
    *,
    keepdims: bool,
    b: Any,
    return_sign: bool,
    where: Any,
) -> Any:
    check_num_threads()
    return logsumexp_rows(_native(x), axes, keepdims)


def logsumexp_rows(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> Any:
    """logsumexp over the trailing ``axes`` of ``x`` (float32, or bfloat16 bits), float32."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    x2 = _rows.as_rows(x, axes)
    out = np.empty(x2.shape[0], np.float32)
    kernel = _kernels(x)["logsumexp"]
    run_blocks(lambda start, stop: kernel(x2, out, start, stop), _blocks(*x2.shape))
    out = out.reshape(kept)
    return out if keepdims else np.squeeze(out, axis=axes)


# --- cross-entropy: class indices on the last axis ---------------------------------------------


def _ce_ok(call: Call) -> bool:
    return call.length > 0 and blocks._ce_ok(call)


def _cross_entropy(x: np.ndarray, target: Any, o: CrossEntropySettings, with_grad: bool) -> Any:
    inv = _inverse(o.temperature)
    if inv is None:
        return blocks._fused_cross_entropy(x, target, o, with_grad)
    return cross_entropy_rows(x, target, o, inv, with_grad)


def cross_entropy_rows(
    x: np.ndarray, target: Any, o: CrossEntropySettings, inv_t: float, with_grad: bool
) -> Any:
    """``(loss, grad or None)`` of ``x`` (float32, or bfloat16 bits; the loss in float32, the
    gradient in ``x``'s type): the targets' bookkeeping as the ufunc path does it
    (``blocks._targets``, before any row: the mean's factor finishes each row's gradient),
    then one kernel call per block of rows. ``o.weight``: None or a NumPy array."""
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    f32 = np.dtype(np.float32)
    tg = blocks._targets(target, o.weight, n, o.ignore_index, o.reduction, f32)
    weight = np.empty(0, np.float32) if o.weight is None else np.asarray(o.weight, np.float32)
    par = np.array([inv_t, o.label_smoothing, o.z_loss, tg.w_total, tg.scale], np.float32)
    per = np.empty(x2.shape[0], np.float32)
    # A loss-only call passes a one-entry gradient the kernel does not write.
    grad = np.empty_like(x2) if with_grad else np.empty((1, 1), x2.dtype)
    w_t = np.asarray(tg.w_t, np.float32)
    kernel = _kernels(x)["cross_entropy"]

    def block(start: int, stop: int) -> None:
        kernel(
            x2, tg.t_safe, tg.valid, tg.ignored, w_t, weight, par, per, grad, with_grad, start, stop
        )

    run_blocks(block, _blocks(*x2.shape))
    loss = blocks._reduced(per, tg, o.reduction, target.shape, f32)
    return loss, (grad.reshape(x.shape) if with_grad else None)


_CE = "compiled (numba); float32, class indices on the last axis, scalar temperature > 0"


@register(
    "cross_entropy",
    "numpy",
    "numpy.compiled",
    priority=60,
    supports=_ce_ok,
    dtypes=("float32",),
    available=available,
    description=_CE,
)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    check_num_threads()
    return _cross_entropy(_native(logits), target, options, with_grad=False)[0]


@register(
    "cross_entropy_with_grad",
    "numpy",
    "numpy.compiled",
    priority=60,
    supports=_ce_ok,
    dtypes=("float32",),
    available=available,
    description=_CE,
)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    check_num_threads()
    return _cross_entropy(_native(logits), target, options, with_grad=True)
