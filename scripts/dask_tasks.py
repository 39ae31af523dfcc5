"""Task counts and times of xpsoftmax's Dask graphs, beside the generic path and hand-written Dask.

Run: ``python scripts/dask_tasks.py [--rows N] [--classes C] [--chunk R] [--class-chunk K]``.
Counts are the tasks that run: the graph after Dask's optimisation (blockwise fusion), input
tasks included. Times: the median of ``--repeats`` computes on the threaded scheduler, with
``--workers`` threads, of each output summed (so that no result is gathered into one array).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.special as sp

import xpsoftmax


def tasks(*arrays: Any) -> int:
    """The number of tasks that computing ``arrays`` runs (after optimisation)."""
    return len(dask.base.collections_to_expr(arrays).__dask_graph__())


def _hand_per_row(b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return sp.logsumexp(b, axis=-1) - np.take_along_axis(b, t, axis=-1)[:, 0]


def _hand_grad(b: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = sp.softmax(b, axis=-1)
    p[np.arange(b.shape[0]), t[:, 0]] -= 1
    return p


def hand(op: str, x: Any, t: Any) -> Any:
    """What a user writes with Dask and SciPy: one ``map_blocks`` per output (rows made
    whole first where the classes are chunked)."""
    if x.numblocks[1] > 1:
        x = x.rechunk({1: -1})
    if op == "softmax":
        return x.map_blocks(sp.softmax, axis=-1, dtype=x.dtype)
    if op == "logsumexp":
        return x.map_blocks(sp.logsumexp, axis=-1, drop_axis=1, dtype=x.dtype)
    column = t[:, None]  # the targets beside the rows (map_blocks aligns trailing axes)
    loss = da.map_blocks(_hand_per_row, x, column, drop_axis=1, dtype=x.dtype).mean()
    if op == "cross_entropy":
        return loss
    return loss, da.map_blocks(_hand_grad, x, column, dtype=x.dtype) / x.shape[0]


def ours(op: str, x: Any, t: Any) -> Any:
    fn = getattr(xpsoftmax, op)
    return fn(x, axis=-1) if op in ("softmax", "logsumexp") else fn(x, t)


def generic(op: str, x: Any, t: Any) -> Any:
    with xpsoftmax.force_generic():
        return ours(op, x, t)


def seconds(builders: list[Callable[[], Any]], repeats: int) -> list[float]:
    """The median time of each builder's outputs computed, each output summed as its chunks
    come (a gathered 1 GB result would time the allocator: fresh pages, 5x apart from run to
    run); the builders take turns, so that drift affects them alike."""
    times: list[list[float]] = [[] for _ in builders]
    for _ in range(repeats):
        for i, build in enumerate(builders):
            out = build()
            out = tuple(o.sum() for o in (out if isinstance(out, tuple) else (out,)))
            start = time.perf_counter()
            dask.compute(*out)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


OPS = tuple(
    os.environ.get(
        "DASK_TASKS_OPS", "softmax,logsumexp,cross_entropy,cross_entropy_with_grad"
    ).split(",")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--chunk", type=int, default=512, help="rows per chunk")
    parser.add_argument("--class-chunk", type=int, default=None, help="classes per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-times", action="store_true", help="task counts only")
    a = parser.parse_args()
    rng = np.random.default_rng(0)
    xn = rng.standard_normal((a.rows, a.classes), dtype=np.float32)
    tn = rng.integers(0, a.classes, a.rows)
    x = da.from_array(xn, chunks=(a.chunk, a.class_chunk or a.classes))
    t = da.from_array(tn, chunks=a.chunk)
    print(f"{a.rows}x{a.classes} float32, chunks {x.chunksize}, {x.numblocks} blocks")
    print(f"{'op':26}{'ours':>7}{'generic':>9}{'hand':>7}  tasks", end="")
    print("" if a.no_times else f"   {'ours s':>8}{'generic s':>10}{'hand s':>8}{'hand/ours':>10}")
    with dask.config.set(scheduler="threads", num_workers=a.workers):
        for op in OPS:
            builders = [lambda f=f, op=op: f(op, x, t) for f in (ours, generic, hand)]
            counts = [tasks(*(b() if isinstance(b(), tuple) else (b(),))) for b in builders]
            line = f"{op:26}{counts[0]:7}{counts[1]:9}{counts[2]:7}       "
            if not a.no_times:
                s = seconds(builders, a.repeats)
                line += f"{s[0]:8.3f}{s[1]:10.3f}{s[2]:8.3f}{s[2] / s[0]:10.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
