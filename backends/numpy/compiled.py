"""Compiled CPU kernels (numba): softmax, log_softmax, logsumexp and cross-entropy (with
its gradient) of float32 and float16 rows (and bfloat16 ones, for torch tensors).

Each row is read once for its maximum and once more, while it is still in cache, for the
exponentials and their sum, kept in a float32 row of scratch; a last pass over that row
writes the output (softmax, log_softmax, the cross-entropy's gradient) once. 16-bit rows are
read and written as their uint16 bits (numba has no float16 on the CPU, NumPy no bfloat16),
computed in float32 and rounded once, to nearest even. The exponential is :func:`exp32`
below, not ``np.exp``:
numba's ``np.exp`` stays a scalar libm call inside loops (the llvmlite wheels carry no
vector math library), about 4x slower than a polynomial LLVM vectorises.

Blocks of rows run on the NumPy backend's thread pool (:func:`xpsoftmax._threads.run_blocks`;
the kernels release the GIL); a row is computed by one thread with the same operations
whatever the thread count, so results are the same bits for 1 thread and for N. Sums are
vectorised (``fastmath`` with reassociation), so their order follows the vector width of
the machine, not the threads.

numba is an optional extra (``pip install "xpsoftmax[numba]"``); without it the registry's
availability check says so and the NumPy ufunc paths serve. Each element type's kernels
compile at their first call (about a second), and are cached on disk (``cache=True``) for
later processes.
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

__all__ = ["exp32", "to_bfloat16_bits", "to_float16_bits"]

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

#: Entries summed in float32 (vector lanes) before the sum goes on in float64.
SUM_CHUNK = 2048
#: Entries of a block of rows (float32): a few rows, within a core's L2 cache.
BLOCK_ENTRIES = 1 << 16


def available() -> str | None:
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'xpsoftmax[numba]')"
    return None


#: The compiled functions: the scalar "exp32", "to_bf16" and "to_f16", and per element type
#: of :data:`KINDS` a dict of the row kernels.
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

    sign16 = np.uint32(0x8000)
    thirteen = np.uint32(13)
    two112 = np.float32(2.0**112)
    f32_inf = np.uint32(0x7F800000)
    denorm_magic = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)  # 0.5, added to a tiny f
    denorm_magic_f = np.array(denorm_magic).view(np.float32)[()]

    @inline
    def from_f16(v: Any) -> Any:  # pragma: no cover - compiled
        """IEEE half (its uint16 bits) to float32, exactly and without branches: the
        magnitude's bits moved into place and rescaled by 2**112 (subnormal halves land on
        float32 subnormals, which the product makes normal); inf and NaN take the all-ones
        exponent."""
        h = np.uint32(v)
        body = np.uint32((h & np.uint32(0x7FFF)) << thirteen)
        mag = body.view(np.float32) * two112
        special = np.uint32(body | np.uint32(0x7F800000)).view(np.float32)
        mag = special if (h & np.uint32(0x7C00)) == np.uint32(0x7C00) else mag
        return -mag if h & sign16 else mag

    @inline
    def to_f16(f: Any) -> Any:  # pragma: no cover - compiled
        """float32 to IEEE half (its uint16 bits), ties to even (NumPy's and torch's)."""
        u = np.float32(f).view(np.uint32)
        sign = np.uint32((u >> sixteen) & sign16)
        a = np.uint32(u & np.uint32(0x7FFFFFFF))
        if a >= np.uint32(0x47800000):  # 65536 and above (inf, NaN too): inf, or a NaN
            return np.uint16(sign | (np.uint32(0x7E00) if a > f32_inf else np.uint32(0x7C00)))
        if a < np.uint32(0x38800000):  # below 2**-14: a subnormal half; the addition rounds
            g = np.uint32(a).view(np.float32) + denorm_magic_f
            return np.uint16(sign | np.uint32(np.float32(g).view(np.uint32) - denorm_magic))
        r = np.uint32(a - np.uint32(0x38000000))  # exponent rebiased by 127 - 15
        return np.uint16(sign | ((r + np.uint32(0xFFF) + ((r >> thirteen) & lsb)) >> thirteen))

    _KERNELS["exp32"] = exp32
    _KERNELS["to_bf16"] = to_bf16
    _KERNELS["to_f16"] = to_f16
    _KERNELS["float32"] = _row_kernels(jit, exp32, same, same)
    _KERNELS["float16"] = _row_kernels(jit, exp32, from_f16, to_f16)
    _KERNELS["bfloat16"] = _row_kernels(jit, exp32, from_bf16, to_bf16)  # last: the flag


def _row_kernels(jit: Any, exp32: Any, load: Any, store: Any) -> dict[str, Any]:
    """The row kernels for one element type: ``load`` gives an element as float32, ``store``
    rounds a float32 to the output's type. Every intermediate lives in a float32 row of
    scratch (in cache), so a 16-bit output is rounded once."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    nan = np.float32(np.nan)
    chunk = SUM_CHUNK

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
            # Sums in float32 lanes over chunks of SUM_CHUNK, the chunks' sums in float64: a
            # long row's sum keeps its accuracy (a float32 running sum stalls at 2**24, and
            # lanes summing equal values drift). Loops over slices from 0: LLVM vectorises
            # those, not range(c, ...).
            s = np.float64(0.0)
            if log:
                k = np.float64(0.0)  # the maxima, each exactly 1: log1p keeps lse near 0 exact
                for c in range(0, n, chunk):
                    seg, bseg = row[c : c + chunk], buf[c : c + chunk]
                    kc = zero
                    sc = zero
                    for j in range(seg.shape[0]):
                        d = (load(seg[j]) - m) * inv_t
                        bseg[j] = d
                        top = d == 0
                        kc += one if top else zero
                        sc += zero if top else exp32(d)
                    k += kc
                    s += sc
                lse = np.float32(np.log1p((k - 1.0) + s))
                for j in range(n):
                    out[j] = store(buf[j] - lse)
            else:
                for c in range(0, n, chunk):
                    seg, bseg = row[c : c + chunk], buf[c : c + chunk]
                    sc = zero
                    for j in range(seg.shape[0]):
                        e = exp32((load(seg[j]) - m) * inv_t)
                        bseg[j] = e
                        sc += e
                    s += sc
                r = np.float32(1.0 / s)
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
            k = np.float64(0.0)
            rest = np.float64(0.0)
            for c in range(0, n, chunk):  # chunked sums, as in normalize
                seg = row[c : c + chunk]
                kc = zero
                rc = zero
                for j in range(seg.shape[0]):
                    d = load(seg[j]) - m
                    top = d == 0
                    kc += one if top else zero
                    rc += zero if top else exp32(d)
                k += kc
                rest += rc
            # log(k + rest) as log1p((k - 1) + rest): accurate near 0 (contract).
            out[i] = np.float32(np.log1p((k - 1.0) + rest)) + m

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
                # Chunked sums (see normalize).
                k = np.float64(0.0)  # the maxima, each exactly 1 (see normalize)
                rest = np.float64(0.0)
                wz = np.float64(0.0)
                for c in range(0, n, chunk):
                    # Slices with loops from 0: LLVM vectorises these, not range(c, ...).
                    seg, bseg = row[c : c + chunk], buf[c : c + chunk]
                    kc = zero
                    rc = zero
                    if with_grad:
                        for j in range(seg.shape[0]):
                            d = (load(seg[j]) - m) * inv_t
                            top = d == 0
                            kc += one if top else zero
                            e = exp32(d)
                            rc += zero if top else e
                            bseg[j] = e
                    else:
                        for j in range(seg.shape[0]):
                            d = (load(seg[j]) - m) * inv_t
                            top = d == 0
                            kc += one if top else zero
                            rc += zero if top else exp32(d)
                    k += kc
                    rest += rc
                    wc = zero
                    if eps and weighted:
                        wseg = weight[c : c + chunk]
                        for j in range(seg.shape[0]):
                            wc += (load(seg[j]) - m) * inv_t * wseg[j]
                    elif eps:
                        for j in range(seg.shape[0]):
                            wc += (load(seg[j]) - m) * inv_t
                    wz += wc
                sum_wz = np.float32(wz)
                lse_rel = np.float32(np.log1p((k - 1.0) + rest))
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
                    factor = coef * kk / np.float32(k + rest)
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


def to_float16_bits(x: np.ndarray) -> np.ndarray:
    """The kernels' rounding of float32 to float16 (its uint16 bits)."""
    return _elementwise("to_f16", x, np.uint16)


# --- the registry's entries -------------------------------------------------------------------


_NORMALIZATION = "compiled (numba); float16 and float32 rows on trailing axes, scalar T > 0"
_LOGSUMEXP = "compiled (numba); float16 and float32 rows, trailing axes; b, where, sign None"


def _entry(op: str, supports: Any, description: str) -> Any:
    """The registration of this module's entry for ``op`` (one name, priority, dtypes and
    availability check for all)."""
    return register(
        op,
        "numpy",
        "numpy.compiled",
        priority=60,
        supports=supports,
        dtypes=("float16", "float32"),
        available=available,
        description=description,
    )


def _normalization_ok(call: Call) -> bool:
    # Empty slices are left to the ufunc path, which answers them without arithmetic.
    return call.length > 0 and _rows.normalization_ok(call)


def _logsumexp_ok(call: Call) -> bool:
    return call.length > 0 and _rows.logsumexp_ok(call)


def _blocks(n_rows: int, n: int) -> list[tuple[int, int]]:
    per = max(1, BLOCK_ENTRIES // max(1, n))
    return [(i, min(i + per, n_rows)) for i in range(0, n_rows, per)]


def _native(x: Any) -> np.ndarray:
    """``x`` as a NumPy array in the machine's byte order (a copy only where it is not):
    the kernels read raw float32."""
    x = np.asarray(x)
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


#: The element types the kernels read and write; 16-bit ones as their uint16 bits (numba
#: has no float16 on the CPU, NumPy no bfloat16), computed in float32 and rounded once.
KINDS = ("float32", "float16", "bfloat16")


def bits(x: np.ndarray) -> tuple[np.ndarray, str]:
    """``(x as the kernels read it, its kind)`` for a float32 or float16 NumPy array."""
    if x.dtype == np.float16:
        return x.view(np.uint16), "float16"
    return x, "float32"


def from_bits(a: np.ndarray, kind: str) -> np.ndarray:
    """The inverse of :func:`bits` for a result in the input's type."""
    return a.view(np.float16) if kind == "float16" else a


def normalize_rows(x: np.ndarray, axes: tuple[int, ...], inv_t: float, log: bool, kind: str) -> Any:
    """softmax or log_softmax over the trailing ``axes`` of ``x`` (its elements of ``kind``,
    16-bit ones as uint16 bits), scaled by ``inv_t`` (a normal float32); the output in
    ``x``'s type."""
    kernel = _build()[kind]["normalize"]
    x2 = _rows.as_rows(x, axes)
    out = np.empty_like(x)
    out2 = out.reshape(x2.shape)
    factor = np.float32(inv_t)
    run_blocks(lambda start, stop: kernel(x2, out2, start, stop, factor, log), _blocks(*x2.shape))
    return out


def _normalize(x: np.ndarray, axes: tuple[int, ...], t: Temperature, log: bool) -> Any:
    inv = _rows.kernel_inverse(t)
    if inv is None:
        return blocks._normalize(x, axes, t, log)
    raw, kind = bits(x)
    return from_bits(normalize_rows(raw, axes, inv, log, kind), kind)


@_entry("softmax", _normalization_ok, _NORMALIZATION)
def softmax(xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any) -> Any:
    check_num_threads()
    return _normalize(_native(x), axes, temperature, log=False)


@_entry("log_softmax", _normalization_ok, _NORMALIZATION)
def log_softmax(
    xp: Any, x: Any, axes: tuple[int, ...], *, temperature: Temperature, where: Any
) -> Any:
    check_num_threads()
    return _normalize(_native(x), axes, temperature, log=True)


@_entry("logsumexp", _logsumexp_ok, _LOGSUMEXP)
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
    return logsumexp_rows(*bits(_native(x)), axes, keepdims)


def logsumexp_rows(x: np.ndarray, kind: str, axes: tuple[int, ...], keepdims: bool) -> Any:
    """logsumexp over the trailing ``axes`` of ``x`` (elements of ``kind``), in float32."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    x2 = _rows.as_rows(x, axes)
    out = np.empty(x2.shape[0], np.float32)
    kernel = _build()[kind]["logsumexp"]
    run_blocks(lambda start, stop: kernel(x2, out, start, stop), _blocks(*x2.shape))
    out = out.reshape(kept)
    return out if keepdims else np.squeeze(out, axis=axes)


# --- cross-entropy: class indices on the last axis ---------------------------------------------


def _ce_ok(call: Call) -> bool:
    return call.length > 0 and blocks._ce_ok(call)


def _cross_entropy(x: np.ndarray, target: Any, o: CrossEntropySettings, with_grad: bool) -> Any:
    inv = _rows.kernel_inverse(o.temperature)
    if inv is None:
        return blocks._fused_cross_entropy(x, target, o, with_grad)
    raw, kind = bits(x)
    loss, grad = cross_entropy_rows(raw, kind, target, o, inv, with_grad)
    return loss, (None if grad is None else from_bits(grad, kind))


def cross_entropy_rows(
    x: np.ndarray, kind: str, target: Any, o: CrossEntropySettings, inv_t: float, with_grad: bool
) -> Any:
    """``(loss, grad or None)`` of ``x`` (elements of ``kind``; the loss in float32, the
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
    kernel = _build()[kind]["cross_entropy"]

    def block(start: int, stop: int) -> None:
        kernel(
            x2, tg.t_safe, tg.valid, tg.ignored, w_t, weight, par, per, grad, with_grad, start, stop
        )

    run_blocks(block, _blocks(*x2.shape))
    loss = blocks._reduced(per, tg, o.reduction, target.shape, f32)
    return loss, (grad.reshape(x.shape) if with_grad else None)


_CE = "compiled (numba); float16 and float32, class indices on the last axis, scalar T > 0"


@_entry("cross_entropy", _ce_ok, _CE)
def cross_entropy(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> Any:
    check_num_threads()
    return _cross_entropy(_native(logits), target, options, with_grad=False)[0]


@_entry("cross_entropy_with_grad", _ce_ok, _CE)
def cross_entropy_with_grad(
    xp: Any, logits: Any, target: Any, axis: int, options: CrossEntropySettings
) -> tuple[Any, Any]:
    check_num_threads()
    return _cross_entropy(_native(logits), target, options, with_grad=True)
