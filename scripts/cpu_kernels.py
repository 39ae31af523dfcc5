"""The compiled CPU kernels against issue 15's goals, side by side in one run: xpsoftmax's
NumPy call (the registry's choice: ``numpy.compiled`` where numba is installed), the NumPy
ufunc path (``numpy.inplace`` / ``numpy.fused``), torch's own CPU functions, scipy.special,
xpsoftmax on the same data as torch tensors (``torch.compiled``),
and the limit (the larger of one vectorised exp pass over the input into an existing array
on the same threads, ``torch.exp(x, out=o)``, and a copy into a fresh array). Fresh outputs
everywhere; medians of ``--repeats``; the first (compiling) call is timed apart.

    python scripts/cpu_kernels.py [--shape 1024x65536 --shape 4096x32000] [--threads 2]
    python scripts/cpu_kernels.py --dtype bfloat16   # torch CPU tensors
    python scripts/cpu_kernels.py --autograd [--dtype bfloat16]   # training steps, torch
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _row(name: str, ms: dict[str, float], limit: float) -> str:
    ours = ms["ours"]
    parts = [f"{name:<24} ours {ours:8.2f} ms  {ours / limit:5.2f}x limit"]
    for peer in ("ufunc", "torch", "scipy"):
        if peer in ms:
            parts.append(f"{peer} {ms[peer]:8.2f} ms ({ms[peer] / ours:4.2f}x)")
    if "ours_torch" in ms:
        mine = ms["ours_torch"]
        parts.append(f"| on torch tensors {mine:8.2f} ms ({ms['torch'] / mine:4.2f}x torch)")
    return "  ".join(parts)


def _shape(shape: str, threads: int, repeats: int, rng: Any) -> None:
    import scipy.special
    import torch

    import xpsoftmax as xs

    rows, cols = (int(v) for v in shape.split("x"))
    x = rng.standard_normal((rows, cols), dtype=np.float32) * 4
    target = rng.integers(0, cols, rows)
    tx, tt = torch.from_numpy(x), torch.from_numpy(target)
    out = torch.empty_like(tx)
    exp_ms = _median_ms(lambda: torch.exp(tx, out=out), repeats)
    copy_ms = _median_ms(lambda: x.copy(), repeats)
    limit = max(exp_ms, copy_ms)
    print(f"\n{shape} float32, {threads} threads: exp pass {exp_ms:.2f} ms, "
          f"copy {copy_ms:.2f} ms; chosen: {xs.which('softmax', x)}")  # fmt: skip

    def ce_torch() -> None:
        leaf = tx.clone().requires_grad_()
        torch.nn.functional.cross_entropy(leaf, tt).backward()

    cases: dict[str, dict[str, Callable[[], Any]]] = {
        "softmax": {
            "ours": lambda: xs.softmax(x), "torch": lambda: torch.softmax(tx, -1),
            "ours_torch": lambda: xs.softmax(tx),
            "scipy": lambda: scipy.special.softmax(x, axis=-1),
        },
        "log_softmax": {
            "ours": lambda: xs.log_softmax(x),
            "ours_torch": lambda: xs.log_softmax(tx),
            "torch": lambda: torch.log_softmax(tx, -1),
            "scipy": lambda: scipy.special.log_softmax(x, axis=-1),
        },
        "logsumexp": {
            "ours": lambda: xs.logsumexp(x, axis=-1),
            "ours_torch": lambda: xs.logsumexp(tx, axis=-1),
            "torch": lambda: torch.logsumexp(tx, -1),
            "scipy": lambda: scipy.special.logsumexp(x, axis=-1),
        },
        "cross_entropy fwd+bwd": {
            "ours": lambda: xs.cross_entropy_with_grad(x, target), "torch": ce_torch,
            "ours_torch": lambda: xs.cross_entropy_with_grad(tx, tt),
        },
    }  # fmt: skip
    ufunc = {"softmax": "numpy.inplace", "log_softmax": "numpy.inplace",
             "logsumexp": "numpy.inplace", "cross_entropy fwd+bwd": "numpy.fused"}  # fmt: skip
    for name, fns in cases.items():
        ms = {peer: _median_ms(fn, repeats) for peer, fn in fns.items()}
        with xs.use(ufunc[name]):
            ms["ufunc"] = _median_ms(fns["ours"], repeats)
        print(_row(name, ms, limit))


def _shape_bf16(shape: str, threads: int, repeats: int, rng: Any) -> None:
    """bfloat16 torch CPU tensors: torch's own against xpsoftmax (``torch.compiled``, and
    ``torch.native``, the path without numba); the limit from bfloat16 tensors."""
    import torch

    import xpsoftmax as xs

    rows, cols = (int(v) for v in shape.split("x"))
    tx = (torch.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32)) * 4).bfloat16()
    tt = torch.from_numpy(rng.integers(0, cols, rows))
    out = torch.empty_like(tx)
    limit = max(_median_ms(lambda: torch.exp(tx, out=out), repeats), _median_ms(tx.clone, repeats))
    print(f"\n{shape} bfloat16 (torch CPU), {threads} threads: limit {limit:.2f} ms; chosen: "
          f"{xs.which('softmax', tx)}")  # fmt: skip

    def ce_torch() -> None:
        leaf = tx.clone().requires_grad_()
        torch.nn.functional.cross_entropy(leaf, tt).backward()

    cases = {
        "softmax": (lambda: xs.softmax(tx), lambda: torch.softmax(tx, -1)),
        "log_softmax": (lambda: xs.log_softmax(tx), lambda: torch.log_softmax(tx, -1)),
        "logsumexp": (lambda: xs.logsumexp(tx, axis=-1), lambda: torch.logsumexp(tx, -1)),
        "cross_entropy fwd+bwd": (lambda: xs.cross_entropy_with_grad(tx, tt), ce_torch),
    }
    for name, (ours, own) in cases.items():
        ms = _median_ms(ours, repeats)
        torch_ms = _median_ms(own, repeats)
        # Without numba: torch.native, and the generic path for cross_entropy_with_grad.
        with xs.use("generic" if name.startswith("cross") else "torch.native"):
            native_ms = _median_ms(ours, repeats)
        print(f"{name:<24} ours {ms:8.2f} ms  {ms / limit:5.2f}x limit  torch {torch_ms:8.2f} ms "
              f"({torch_ms / ms:4.2f}x)  without numba {native_ms:8.2f} ms")  # fmt: skip


def _shape_autograd(shape: str, threads: int, repeats: int, rng: Any, dtype: str) -> None:
    """Training steps on torch CPU tensors (forward and backward through autograd, with an
    upstream gradient): xpsoftmax (``torch.compiled``'s autograd Functions) against torch's
    own functions and against ``torch.native`` (the path without numba)."""
    import torch
    import torch.nn.functional as F

    import xpsoftmax as xs

    rows, cols = (int(v) for v in shape.split("x"))
    tdt = getattr(torch, dtype)
    tx = (torch.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32)) * 4).to(tdt)
    tt = torch.from_numpy(rng.integers(0, cols, rows))
    g_rows = torch.randn(rows, dtype=torch.float32)
    g_full = torch.randn(rows, cols).to(tdt)
    print(f"\n{shape} {dtype} (torch CPU), forward + backward, {threads} threads; chosen: "
          f"{xs.which('softmax', tx.detach().requires_grad_())}")  # fmt: skip

    def step(f: Callable[[Any], Any], g: Any) -> Callable[[], None]:
        def run() -> None:
            leaf = tx.detach().requires_grad_()  # a new leaf on the same memory: no copy
            out = f(leaf)
            out.backward(g)

        return run

    # (ours, torch's, the upstream gradient of ours, of torch's): xpsoftmax's logsumexp of
    # 16-bit input is float32, torch's is 16-bit.
    cases = {
        "softmax": (xs.softmax, lambda a: torch.softmax(a, -1), g_full, g_full),
        "log_softmax": (xs.log_softmax, lambda a: torch.log_softmax(a, -1), g_full, g_full),
        "logsumexp": (lambda a: xs.logsumexp(a, axis=-1), lambda a: torch.logsumexp(a, -1),
                      g_rows, g_rows.to(tdt)),
        "cross_entropy": (lambda a: xs.cross_entropy(a, tt), lambda a: F.cross_entropy(a, tt),
                          None, None),
    }  # fmt: skip
    for name, (ours, own, g_ours, g) in cases.items():
        ms = _median_ms(step(ours, g_ours), repeats)
        torch_ms = _median_ms(step(own, g), repeats)
        with xs.use("torch.native"):
            native_ms = _median_ms(step(ours, g_ours), repeats)
        print(f"{name:<24} ours {ms:8.2f} ms  torch {torch_ms:8.2f} ms ({torch_ms / ms:4.2f}x)  "
              f"without numba {native_ms:8.2f} ms ({native_ms / ms:4.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", help="ROWSxCOLS (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--autograd", action="store_true", help="training steps (torch)")
    args = parser.parse_args()
    import torch

    import xpsoftmax as xs

    torch.set_num_threads(args.threads)
    shapes = args.shape or ["1024x65536", "4096x32000"]
    rng = np.random.default_rng(0)
    with xs.num_threads(args.threads):
        start = time.perf_counter()
        xs.softmax(np.zeros((2, 3), np.float32))
        xs.cross_entropy_with_grad(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
        print(f"first calls (compile or load the kernels): {time.perf_counter() - start:.2f} s")
        for shape in shapes:
            if args.autograd:
                _shape_autograd(shape, args.threads, args.repeats, rng, args.dtype)
            else:
                run = _shape_bf16 if args.dtype == "bfloat16" else _shape
                run(shape, args.threads, args.repeats, rng)


if __name__ == "__main__":
    main()
