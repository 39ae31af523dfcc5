"""Sweep the launch settings of the Triton kernels on a CUDA device, beside torch's own kernels
and a plain copy, and print the effective bandwidth of each as a fraction of the copy's.

    python scripts/tune_triton.py [--json PATH] [--quick] [--defaults] [--profile]

Settings swept (``xpsoftmax.backends.torch.triton.ops``): ``ENTRIES_PER_WARP`` for rows held on
chip, and ``CHUNK`` for rows read in chunks (``ONE_PASS_MAX = 0`` forces chunks on short rows
too). Bytes counted: softmax reads and writes the logits, logsumexp reads them,
cross-entropy forward + backward reads them and writes the gradient (the issue's minimal
traffic; the kernels read them twice). Three times per row, each the median after a warm-up:

* ``ms``: one call between two CUDA events from an idle stream (what a synchronised benchmark
  sees: the host's dispatch and launch cost is in it when it exceeds the kernels');
* ``gpu``: the same call replayed from a CUDA graph (the kernels alone, as in a training step
  whose host runs ahead of its GPU); the fraction of the copy printed is this one's;
* ``host``: the host's microseconds per call, 50 calls queued without waiting.

``--peers`` also times the other implementations the GPU goals name, where they import:
``torch.compile`` of torch's own functions and Liger-Kernel's softmax and cross-entropy (a
wheel carried to the lent machine: README, "GPU"). A call that a CUDA graph cannot capture
(Liger's cross-entropy reads a value back to the host) is timed by torch.profiler's kernel
times instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import xpsoftmax as xs
from xpsoftmax.backends.torch.triton import ops

SHAPES = [
    ((16384, 1024), torch.float32),
    ((4096, 8192), torch.float32),
    ((4096, 32768), torch.bfloat16),
    ((512, 131072), torch.float32),
    ((512, 131072), torch.bfloat16),
]


def median_ms(fn: Callable[[], Any], reps: int = 15) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_ms(fn: Callable[[], Any], reps: int = 15) -> float:
    """The GPU time of ``fn``'s kernels: replays of a CUDA graph of one call (NaN if it cannot
    be captured)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(stream):
            fn()  # warm-up on the capturing stream, as torch.cuda.graphs asks
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # report, do not stop the sweep
        print(f"    (no CUDA graph: {type(exc).__name__}: {exc})")
        return float("nan")
    return median_ms(graph.replay, reps)


def host_us(fn: Callable[[], Any], calls: int = 50) -> float:
    """The host's time per call, the calls queued without waiting for the GPU."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def kernels_ms(fn: Callable[[], Any], calls: int = 5) -> float:
    """The GPU time of ``fn``'s kernels by torch.profiler: the sum of their durations per
    call (for a call that a CUDA graph cannot capture)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages())
    return us / calls / 1e3


def _measure(fn: Callable[[], Any], nbytes: int, copy_gbps: float) -> dict[str, Any]:
    ms, gpu, timing = median_ms(fn), graph_ms(fn), "graph"
    if gpu != gpu:  # NaN: no CUDA graph. The kernels' busy time, without the gaps between
        gpu, timing = kernels_ms(fn), "profiler"  # them that a graph's replay includes.
    fraction = nbytes / gpu / 1e6 / copy_gbps if gpu > 0 else float("nan")
    return dict(ms=ms, gpu_ms=gpu, timing=timing, host_us=host_us(fn), fraction=fraction)


def _line(op: str, label: str, r: dict[str, Any]) -> str:
    mark = " (profiler: kernels' busy time)" if r["timing"] == "profiler" else ""
    return (
        f"  {op:12s} {label:40s} {r['ms']:7.3f} ms  gpu {r['gpu_ms']:7.3f} ms "
        f"{r['fraction']:6.1%}  host {r['host_us']:6.0f} us{mark}"
    )


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """What torch's own logsumexp and cross-entropy are given (16-bit rows in float32, as the
    contract computes them)."""
    return x if x.dtype == torch.float32 else x.float()


#: torch's own functions, as the goals compare with them.
TORCH_OWN: dict[str, Callable[..., Any]] = {
    "softmax": lambda a: torch.softmax(a, -1),
    "log_softmax": lambda a: torch.log_softmax(a, -1),
    "logsumexp": lambda a: torch.logsumexp(_upcast(a), -1),
    "cross_entropy": lambda a, b: F.cross_entropy(_upcast(a), b),
}


#: xpsoftmax's public functions as users call them: the Triton kernels serve these calls by
#: default on CUDA (``_ops`` checks it), so no ``xs.use`` is timed with them (one around every
#: call, its names checked anew each time, took ~1 of the 7-8 ms of 50 calls under cProfile
#: in the run of 2026-11-27).
OURS: dict[str, Callable[..., Any]] = {
    "softmax": xs.softmax,
    "log_softmax": xs.log_softmax,
    "logsumexp": lambda a: xs.logsumexp(a, axis=-1),
    "cross_entropy": xs.cross_entropy,
}


def _step(loss: Callable[..., Any], x: torch.Tensor, t: torch.Tensor) -> Callable[[], Any]:
    """A training step: ``loss(x, t)`` and its gradient with respect to ``x``."""

    def step() -> Any:
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xg, t), xg)
        return g

    return step


def _table(
    fns: dict[str, Callable[..., Any]], x: torch.Tensor, t: torch.Tensor
) -> dict[str, tuple[Callable[[], Any], int]]:
    """``{op: (call, bytes moved)}`` of the functions ``fns`` (keyed as :data:`TORCH_OWN`)."""
    nbytes = x.numel() * x.element_size()
    return {
        "softmax": (lambda: fns["softmax"](x), 2 * nbytes),
        "log_softmax": (lambda: fns["log_softmax"](x), 2 * nbytes),
        "logsumexp": (lambda: fns["logsumexp"](x), nbytes),
        "ce_fwd_bwd": (_step(fns["cross_entropy"], x, t), 2 * nbytes),
    }


def _ops(x: torch.Tensor, t: torch.Tensor, ours: bool) -> dict[str, tuple[Callable[[], Any], int]]:
    if not ours:
        return _table(TORCH_OWN, x, t)
    _check_triton_serves(x, t)
    nbytes = x.numel() * x.element_size()
    found = _table(OURS, x, t)
    # The launcher alone, without the public function's checks and dispatch; and the
    # training step's kernels without autograd.
    found["softmax_raw"] = (lambda: ops._launch_normalize(x, 1.0, False), 2 * nbytes)
    found["ce_with_grad"] = (lambda: xs.cross_entropy_with_grad(x, t), 2 * nbytes)
    return found


def _check_triton_serves(x: torch.Tensor, t: torch.Tensor) -> None:
    """The Triton entry serves every timed call by default (else the table would time some
    other implementation under its name)."""
    xg = x.detach().requires_grad_(True)
    calls = {
        "softmax": (x,), "log_softmax": (x,), "logsumexp": (x, -1), "cross_entropy": (xg, t),
        "cross_entropy_with_grad": (x, t),
    }  # fmt: skip
    for op, args in calls.items():
        served = xs.which(op, *args)
        if served != "torch.triton":
            raise SystemExit(f"{op} on {tuple(x.shape)} {x.dtype}: {served} serves it, not Triton")


def _compiled_ops(
    x: torch.Tensor, t: torch.Tensor, backend: str = "inductor"
) -> dict[str, tuple[Callable[[], Any], int]]:
    """torch's own functions through ``torch.compile`` (the upcast fused into the kernels)."""
    compiled = {
        op: torch.compile(fn, backend=backend, dynamic=False) for op, fn in TORCH_OWN.items()
    }
    return _table(compiled, x, t)


def _liger_ops(x: torch.Tensor, t: torch.Tensor) -> dict[str, tuple[Callable[[], Any], int]]:
    """Liger-Kernel's softmax and cross-entropy training step (it has no log_softmax or
    logsumexp); empty when it does not import."""
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerSoftmax
    except ImportError:
        return {}
    except Exception as exc:  # installed but broken here (a Triton it was not built for...)
        print(f"  liger: {type(exc).__name__}: {exc}")
        return {}
    nbytes = x.numel() * x.element_size()
    softmax, loss = LigerSoftmax(), LigerCrossEntropyLoss()
    # Liger's cross-entropy writes the gradient over its input: a copy of its own, reused.
    own = x.clone()
    return {
        "softmax": (lambda: softmax(x), 2 * nbytes),
        "ce_fwd_bwd": (_step(loss, own, t), 2 * nbytes),
    }


def _peers(x: torch.Tensor, t: torch.Tensor) -> dict[str, dict[str, Any]]:
    """``{implementation: _ops-like table}`` of the peers ``--peers`` adds."""
    found = {"torch.compile": _compiled_ops(x, t), "liger": _liger_ops(x, t)}
    return {name: table for name, table in found.items() if table}


def _variants(n: int) -> list[dict[str, int]]:
    """Rows held on chip at three warp counts, and rows read in chunks of three sizes."""
    chunked = [
        {"ONE_PASS_MAX": 0, "CHUNK": c, "ENTRIES_PER_WARP": 512} for c in (2048, 4096, 8192, 16384)
    ]
    if n > 32768:
        return chunked
    return [
        {"ONE_PASS_MAX": 32768, "CHUNK": 4096, "ENTRIES_PER_WARP": e} for e in (256, 512, 1024)
    ] + chunked


def _best(rows: list[dict[str, Any]]) -> None:
    """Per shape and operation: torch's fraction of the copy, and the best setting's."""
    print("\nbest settings (GPU time, fraction of the copy)")
    for key in dict.fromkeys((r["shape"], r["op"]) for r in rows):
        mine = [r for r in rows if (r["shape"], r["op"]) == key]
        others = "  ".join(
            f"{r['impl']} {r['fraction']:6.1%}" for r in mine if r["impl"] != "triton"
        )
        ours = [r for r in mine if r["impl"] == "triton"]
        if not ours:
            continue
        best = min(ours, key=lambda r: r["gpu_ms"])
        setting = {k: best[k] for k in ("ONE_PASS_MAX", "CHUNK", "ENTRIES_PER_WARP")}
        print(f"  {key[0]:22s} {key[1]:12s} {others}  ours {best['fraction']:6.1%}  {setting}")


def _profile(step: Callable[[], Any], label: str) -> None:
    """Where one cross-entropy forward + backward spends its time, host and device."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(f"\n{label}: cross-entropy forward + backward, one step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8))


def _host_profile(step: Callable[[], Any], label: str, calls: int = 50) -> None:
    """Where the host's time of a call goes: cProfile over ``calls`` queued calls."""
    import cProfile
    import pstats

    step()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        step()
    profiler.disable()
    torch.cuda.synchronize()
    print(f"\n{label}: host profile of {calls} calls (by own time)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="the first two shapes only")
    parser.add_argument(
        "--defaults", action="store_true", help="the default settings only (no sweep)"
    )
    parser.add_argument(
        "--host-profile", action="store_true", help="cProfile the host's side of each operation"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also a torch.profiler table of one step each"
    )
    parser.add_argument(
        "--peers", action="store_true", help="also torch.compile and Liger-Kernel (if installed)"
    )
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    rows = []
    defaults = {k: getattr(ops, k) for k in ("ONE_PASS_MAX", "CHUNK", "ENTRIES_PER_WARP")}
    for shape, dtype in SHAPES[:2] if args.quick else SHAPES:
        x = torch.randn(shape, device="cuda", dtype=dtype)
        t = torch.randint(0, shape[1], (shape[0],), device="cuda")
        buf = torch.empty_like(x)
        copy_ms = graph_ms(lambda buf=buf, x=x: buf.copy_(x))
        copy_gbps = 2 * x.numel() * x.element_size() / copy_ms / 1e6
        label = f"{shape[0]}x{shape[1]} {str(dtype).removeprefix('torch.')}"
        print(f"\n{label}: copy {copy_gbps:.0f} GB/s")
        for op, (fn, nbytes) in _ops(x, t, ours=False).items():
            r = _measure(fn, nbytes, copy_gbps)
            rows.append(dict(shape=label, op=op, impl="torch", **r))
            print(_line(op, "torch", r))
        peers = _peers(x, t) if args.peers else {}
        for impl, table in peers.items():
            for op, (fn, nbytes) in table.items():
                try:
                    r = _measure(fn, nbytes, copy_gbps)
                except Exception as exc:  # a peer's failure (versions...) ends only its row
                    print(f"  {op:12s} {impl:40s} failed: {type(exc).__name__}: {exc}")
                    continue
                rows.append(dict(shape=label, op=op, impl=impl, **r))
                print(_line(op, impl, r))
        for v in [defaults] if args.defaults else _variants(shape[1]):
            for k, value in v.items():
                setattr(ops, k, value)
            for op, (fn, nbytes) in _ops(x, t, ours=True).items():
                r = _measure(fn, nbytes, copy_gbps)
                rows.append(dict(shape=label, op=op, impl="triton", **v, **r))
                print(_line(op, str(v), r))
        for k, value in defaults.items():
            setattr(ops, k, value)
        if args.profile:
            _profile(_ops(x, t, ours=True)["ce_fwd_bwd"][0], label)
        if args.host_profile and (shape, dtype) == SHAPES[1]:  # one shape: the host's cost is alike
            for op, (fn, _) in _ops(x, t, ours=True).items():
                _host_profile(fn, f"{label} {op}")
    _best(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
