"""Benchmarks of ``xpsoftmax.linear_cross_entropy``: one training step of a language-model
head (the mean cross-entropy of ``h @ W.T`` and its gradients with respect to ``h`` and ``W``)
and its peak memory, against the same step on the full logits (``xpsoftmax.cross_entropy``)
and against ``torch.nn.functional.linear_cross_entropy`` (its reference path, and chunked with
``torch.nn.LinearCrossEntropyOptions()``).

Gradients by torch autograd and ``jax.value_and_grad``; NumPy and CuPy, which have no
autodiff, take ``linear_cross_entropy_with_grad`` and ``cross_entropy_with_grad`` with the two
matmuls of the chain rule.
"""

import itertools
from typing import ClassVar

import numpy as np

import xpsoftmax as xs

from .common import find_backend, peak_extra_bytes

BACKENDS = ["numpy", "torch:cpu", "jax:cpu", "torch:cuda", "jax:gpu", "cupy"]
IMPLEMENTATIONS = ["fused", "unfused", "torch_reference", "torch_chunked"]
#: tokens x hidden x vocabulary: a small model's head, and a tiny one (the cost of a call).
SHAPES = ["2048x1024x32000", "64x64x1000"]
DTYPES = ["float32", "bfloat16"]


def _skip(backend, impl, shape, dtype):
    if impl.startswith("torch_") and not backend.startswith("torch"):
        return True
    return dtype == "bfloat16" and backend in ("numpy", "cupy")


class LinearCrossEntropy:
    params: ClassVar[list] = [BACKENDS, IMPLEMENTATIONS, SHAPES, DTYPES]
    param_names: ClassVar[list] = ["backend", "impl", "shape", "dtype"]
    skip_params: ClassVar[list] = [p for p in itertools.product(*params) if _skip(*p)]
    rounds = 1
    repeat = (1, 3, 1.0)
    warmup_time = 0
    number = 1
    min_run_count = 1
    timeout = 600

    def setup(self, backend, impl, shape, dtype):
        if _skip(backend, impl, shape, dtype):
            raise NotImplementedError("left out")
        if not hasattr(xs, "linear_cross_entropy"):
            raise NotImplementedError("linear_cross_entropy does not exist at this commit")
        self.backend = b = find_backend(backend)
        n, hidden, vocab = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        h = b.asarray(rng.standard_normal((n, hidden), dtype=np.float32), dtype)
        w = b.asarray(rng.standard_normal((vocab, hidden), dtype=np.float32) * 0.02, dtype)
        t = b.asarray(rng.integers(0, vocab, n), b.index_dtype)
        self.logits_bytes = n * vocab * 4
        self.run = self._step(b, impl, h, w, t)
        self.run()  # warm-up: compiles, loads the backend module

    def _step(self, b, impl, h, w, t):
        lib = b.library
        if lib == "torch":
            import torch
            import torch.nn.functional as F

            h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
            loss = {
                "fused": lambda: xs.linear_cross_entropy(h, w, t),
                "unfused": lambda: xs.cross_entropy(h @ w.T, t),
                "torch_reference": lambda: F.linear_cross_entropy(h, w, t),
                "torch_chunked": lambda: F.linear_cross_entropy(
                    h, w, t, options=torch.nn.LinearCrossEntropyOptions()
                ),
            }[impl]

            def step():
                h.grad = w.grad = None
                value = loss()
                value.backward()
                return b.sync(h.grad), w.grad

            return step
        if lib == "jax":
            import jax

            f = {
                "fused": lambda h, w: xs.linear_cross_entropy(h, w, t),
                "unfused": lambda h, w: xs.cross_entropy(h @ w.T, t),
            }[impl]
            grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
            return lambda: b.sync(grad(h, w))
        if impl == "fused":
            return lambda: b.sync(xs.linear_cross_entropy_with_grad(h, w, t)[:3])

        def unfused():
            loss, g = xs.cross_entropy_with_grad(h @ w.T, t)
            return b.sync((loss, g @ w, g.T @ h))

        return unfused

    def time_step(self, *params):
        self.run()

    def track_peak_memory(self, *params):
        """Peak memory beyond the inputs and what the step returns, in units of the logits'
        float32 size."""
        return peak_extra_bytes(self.backend, self.run) / self.logits_bytes

    track_peak_memory.unit = "x logits size"
