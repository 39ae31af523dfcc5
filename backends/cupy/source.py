"""The CUDA C++ source of the CuPy kernels, and the names of its kernels.

One thread block per row of a row-major ``(rows, n)`` view; each of its ``THREADS`` threads
walks the entries ``i, i + THREADS, ...`` of the row keeping its own online statistics
``(m, k, r)`` (see :mod:`.mirror`, the same arithmetic in NumPy), merged across the block by a
tree in shared memory. The rules are the generic implementation's:

* the shift is the row maximum, 0 for an all -inf row (which then stays -inf, not NaN);
* ``z = (x - shift) / t``; the sum of ``exp(z)`` is kept as ``K + R``: ``K`` counts the
  entries at the maximum (each adds exactly 1), ``R`` sums the others, so that
  ``log(sum) = log1p(K - 1 + R)`` keeps its accuracy near 0;
* a NaN entry makes ``R`` NaN; a +inf maximum makes softmax/log_softmax NaN and logsumexp
  +inf.

The temperature divides (``z = (x - shift) / t``), never multiplies by ``1 / t``: CuPy compiles
with ``-ftz=true``, which flushes a subnormal ``1 / t`` (``t > 8.5e37``) to 0, and ``-inf * 0``
is NaN; a flushed quotient is only a rounding away from the true one.

16-bit input is read and written as raw bits with PTX conversions (NVRTC has no
``cuda_fp16.h`` of its own) and computed in float32; float64 in double. ``-inf`` is spelt
``__int_as_float(0xff800000)`` (``INFINITY`` is undefined under NVRTC).
"""

from __future__ import annotations

#: Threads per block (one block per row).
THREADS = 256

#: dtype name -> (the kernels' suffix, the C type of an entry, the accumulator's C type).
DTYPES = {
    "float16": ("f16", "unsigned short", "float"),
    "float32": ("f32", "float", "float"),
    "float64": ("f64", "double", "double"),
}

#: The kernels of the source, each instantiated once per dtype as ``<name>_<suffix>``.
KERNELS = ("normalize", "logsumexp", "cross_entropy")

_COMMON = r"""
#define THREADS %(threads)d

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %%0, %%1;" : "=f"(f) : "h"(h));
    return f;
}
template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ unsigned short from_acc<unsigned short>(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %%0, %%1;" : "=h"(h) : "f"(v));
    return h;
}
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }

__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }
__device__ __forceinline__ float nan_of(float) { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ double nan_of(double) { return __longlong_as_double(0x7fffffffffffffffULL); }

template <typename A> struct Stats { A m, k, r; };

// One entry into a thread's statistics: one exponential, of (smaller - larger) / t between
// the entry and the running maximum (a NaN entry is neither larger nor equal: NaN rest).
template <typename A> __device__ __forceinline__ void update(Stats<A>& s, A x, A t) {
    const A ninf = neg_inf(A(0));
    bool gt = x > s.m;
    bool eq = (x == s.m) && (x != ninf);
    A low = gt ? s.m : x;
    A high = gt ? x : s.m;
    A e = low == ninf ? A(0) : exp((low - high) / t);
    s.r = gt ? (s.r + s.k) * e : (eq ? s.r : s.r + e);
    s.k = gt ? A(1) : (eq ? s.k + A(1) : s.k);
    s.m = gt ? x : s.m;
}

// Two threads' statistics merged at the larger maximum.
template <typename A> __device__ __forceinline__ Stats<A> merge(Stats<A> a, Stats<A> b, A t) {
    const A ninf = neg_inf(A(0));
    A big = a.m > b.m ? a.m : b.m;
    Stats<A> out = {big, A(0), A(0)};
    Stats<A> sides[2] = {a, b};
    for (int i = 0; i < 2; ++i) {
        Stats<A> s = sides[i];
        if (s.m == big && big != ninf) {
            out.k += s.k;
            out.r += s.r;
        } else {
            A scale = s.m == ninf ? A(0) : exp((s.m - big) / t);
            out.r += (s.k + s.r) * scale;
        }
    }
    return out;
}

// The row's statistics: each thread's walk, then a tree over the block (every thread gets
// the result). ``shared`` holds THREADS entries.
template <typename T, typename A>
__device__ Stats<A> row_stats(const T* x, long long n, A t, Stats<A>* shared) {
    Stats<A> s = {neg_inf(A(0)), A(0), A(0)};
    for (long long i = threadIdx.x; i < n; i += THREADS) update(s, to_acc(x[i]), t);
    shared[threadIdx.x] = s;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            shared[threadIdx.x] = merge(shared[threadIdx.x], shared[threadIdx.x + half], t);
        __syncthreads();
    }
    Stats<A> out = shared[0];
    __syncthreads();
    return out;
}

template <typename A> __device__ __forceinline__ A shift_of(A big) {
    return big == neg_inf(A(0)) ? A(0) : big;
}

// log(K + R), accurate near 0; 0 for an empty row.
template <typename A> __device__ __forceinline__ A log_total(Stats<A> s) {
    return log1p((s.k > A(0) ? s.k - A(1) : A(0)) + s.r);
}

template <typename A> __device__ __forceinline__ A block_sum(A v, A* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    A out = shared[0];
    __syncthreads();
    return out;
}
"""

_KERNELS = r"""
// softmax (log == 0) or log_softmax of each row of x divided by t.
extern "C" __global__ void normalize_%(suffix)s(
        const %(T)s* x, %(T)s* y, long long n, %(A)s t, int log) {
    __shared__ Stats<%(A)s> shared[THREADS];
    typedef %(A)s A;
    long long row = blockIdx.x;
    const %(T)s* xr = x + row * n;
    %(T)s* yr = y + row * n;
    Stats<A> s = row_stats(xr, n, t, shared);
    A shift = shift_of(s.m);
    bool empty = s.k + s.r == A(0);
    bool inf_max = s.m == -neg_inf(A(0));
    // The special rows settled once, in the scalar every entry takes.
    A scale = inf_max ? nan_of(A(0)) : (empty ? A(0) : A(1) / (s.k + s.r));
    A offset = inf_max ? nan_of(A(0)) : (empty ? -neg_inf(A(0)) : log_total(s));
    for (long long i = threadIdx.x; i < n; i += THREADS) {
        A z = (to_acc(xr[i]) - shift) / t;
        yr[i] = from_acc<%(T)s>(log ? z - offset : exp(z) * scale);
    }
}

// logsumexp of each row, in the accumulator's type.
extern "C" __global__ void logsumexp_%(suffix)s(const %(T)s* x, %(A)s* out, long long n) {
    __shared__ Stats<%(A)s> shared[THREADS];
    typedef %(A)s A;
    long long row = blockIdx.x;
    Stats<A> s = row_stats(x + row * n, n, A(1), shared);
    if (threadIdx.x == 0)
        out[row] = s.k + s.r == A(0) ? neg_inf(A(0)) : shift_of(s.m) + log_total(s);
}

// Cross-entropy of each row with a class index: the loss per entry (the generic
// ``_index_terms``) and, when dx is not null, its gradient times factor[0] (the mean's
// d mean / d entry, or 1).
extern "C" __global__ void cross_entropy_%(suffix)s(
        const %(T)s* x, const long long* target, const %(A)s* weight, %(A)s* per,
        %(T)s* dx, const %(A)s* factor, long long n, %(A)s t, long long ignore_index,
        int has_ignore, const %(A)s* w_total, %(A)s eps, %(A)s z_loss) {
    __shared__ Stats<%(A)s> shared[THREADS];
    __shared__ %(A)s sums[THREADS];
    typedef %(A)s A;
    long long row = blockIdx.x;
    const %(T)s* xr = x + row * n;
    long long c = target[row];
    bool ignored = has_ignore && c == ignore_index;
    bool valid = c >= 0 && c < n && !ignored;
    long long t_safe = valid ? c : 0;
    A w_t = weight ? weight[t_safe] : A(1);
    Stats<A> s = row_stats(xr, n, t, shared);
    A shift = shift_of(s.m);
    bool empty = s.k + s.r == A(0);
    bool smooth = eps != A(0);
    A wz = A(0);
    if (smooth) {  // sum(w * z) needs the final shift: a second pass
        A acc = A(0);
        for (long long i = threadIdx.x; i < n; i += THREADS)
            acc += (weight ? weight[i] : A(1)) * ((to_acc(xr[i]) - shift) / t);
        wz = block_sum(acc, sums);
    }
    // A +inf maximum: NaN (inf - inf in the generic path's z), not a finite log.
    A lse = s.m == -neg_inf(A(0)) ? nan_of(A(0)) : log_total(s);
    A inf = -neg_inf(A(0));
    A z_t = (to_acc(xr[t_safe]) - shift) / t;
    A loss = (empty ? inf : lse - z_t) * ((A(1) - eps) * w_t);
    A coef = w_t * (A(1) - eps);
    if (smooth) {
        A total_w = w_total ? w_total[0] : A(n);  // the weights' sum (read with weights only)
        loss += (eps / n) * (empty ? inf : total_w * lse - wz);
        coef += eps * total_w / n;
    }
    if (z_loss != A(0)) {
        A lse_abs = shift / t + lse;
        loss += empty ? inf : (z_loss * w_t) * (lse_abs * lse_abs);
        coef += A(2) * z_loss * w_t * lse_abs;
    }
    if (threadIdx.x == 0) per[row] = valid ? loss : (ignored ? A(0) : nan_of(A(0)));
    if (!dx) return;
    // Rows without a gradient (ignored, out of range, all -inf): zeros, also where the
    // logits are NaN.
    bool keep = valid && !empty;
    A g = factor[0] / t;
    A cl = keep ? coef * g : A(0);
    A ct = keep ? -w_t * (A(1) - eps) * g : A(0);
    A cw = keep ? -eps / n * g : A(0);
    %(T)s* dr = dx + row * n;
    for (long long i = threadIdx.x; i < n; i += THREADS) {
        A p = keep ? exp((to_acc(xr[i]) - shift) / t - lse) : A(0);
        A d = cl * p + (i == c ? ct : A(0));
        if (smooth) d += cw * (weight ? weight[i] : A(1));
        dr[i] = from_acc<%(T)s>(d);
    }
}
"""


def source() -> str:
    """The whole source: the shared helpers, then every kernel once per dtype."""
    parts = [_COMMON % {"threads": THREADS}]
    for suffix, entry, acc in DTYPES.values():
        parts.append(_KERNELS % {"suffix": suffix, "T": entry, "A": acc})
    return "\n".join(parts)


def kernel_names() -> list[str]:
    return [f"{k}_{suffix}" for suffix, _, _ in DTYPES.values() for k in KERNELS]
