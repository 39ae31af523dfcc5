#!/usr/bin/env python3
"""Time and peak memory of one training step of a language-model head, by implementation.

Usage::

    python scripts/lm_head_memory.py N H V            # every implementation, a process each
    python scripts/lm_head_memory.py N H V --only xs  # one of them

The step is forward plus backward of the mean cross-entropy of ``h @ W.T`` for ``h`` (N, H),
``W`` (V, H), float32, on the CPU with torch on one thread. Each implementation runs in a
process of its own, once to warm up and once measured. The peak memory is the resident set's
high-water mark (reset through ``/proc/self/clear_refs``, Linux) beyond what the process held
before the step, less the two gradients (``h.grad``, ``W.grad``), which every implementation
returns; glibc is told to give big freed blocks back at once (``MALLOC_MMAP_THRESHOLD_``), so
the high-water mark is what was alive, not what the allocator kept.

Implementations: ``xs`` (xpsoftmax.linear_cross_entropy), ``xs_unfused``
(xpsoftmax.cross_entropy of the full logits), ``torch`` (torch.nn.functional.cross_entropy of
the full logits), ``torch_lce`` and ``torch_lce_chunked``
(torch.nn.functional.linear_cross_entropy, reference and chunked with its default options).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time

IMPLEMENTATIONS = ("xs_unfused", "torch", "torch_lce", "torch_lce_chunked", "xs")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def measure(n: int, hidden: int, vocab: int, impl: str) -> str:
    import torch
    import torch.nn.functional as F

    import xpsoftmax as xs

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, hidden, generator=gen).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) * 0.02).requires_grad_()
    t = torch.randint(0, vocab, (n,), generator=gen)
    steps = {
        "xs": lambda: xs.linear_cross_entropy(h, w, t),
        "xs_unfused": lambda: xs.cross_entropy(h @ w.T, t),
        "torch": lambda: F.cross_entropy(h @ w.T, t),
        "torch_lce": lambda: F.linear_cross_entropy(h, w, t),
        "torch_lce_chunked": lambda: F.linear_cross_entropy(
            h, w, t, options=torch.nn.LinearCrossEntropyOptions()
        ),
    }

    def step() -> float:
        loss = steps[impl]()
        loss.backward()
        return float(loss)

    step()
    h.grad = w.grad = None
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current resident set
    start = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - start
    extra = _status("VmHWM") - before - (h.numel() + w.numel()) * 4
    logits = n * vocab * 4
    return (
        f"{impl:18s} N={n} H={hidden} V={vocab}: {seconds:7.2f} s, peak extra "
        f"{extra / 2**20:8.1f} MiB = {extra / logits:5.2f} x the logits "
        f"({logits / 2**20:.0f} MiB), loss {loss:.5f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("hidden", type=int)
    parser.add_argument("vocab", type=int)
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="one implementation, here")
    args = parser.parse_args(argv)
    if args.only:
        print(measure(args.n, args.hidden, args.vocab, args.only), flush=True)
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    for impl in IMPLEMENTATIONS:
        command = [sys.executable, __file__, str(args.n), str(args.hidden), str(args.vocab)]
        done = subprocess.run([*command, "--only", impl], env=env, text=True, capture_output=True)
        print(done.stdout.strip() or f"{impl}: failed\n{done.stderr[-2000:]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
