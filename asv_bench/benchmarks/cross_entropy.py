"""Benchmarks of ``xpsoftmax.cross_entropy`` (integer labels, mean over rows) against the
library's own, forward and forward+backward: the loss and its gradient with respect to the
logits by torch autograd, ``jax.value_and_grad``, or ``xpsoftmax.cross_entropy_with_grad``
for NumPy and CuPy, which have no autodiff."""

from typing import ClassVar

import xpsoftmax as xs

from .common import XPBenchmark, tracked

PASSES = ["forward", "forward+backward"]


class CrossEntropy(XPBenchmark):
    op = "cross_entropy"
    params: ClassVar[list] = [*XPBenchmark.params, PASSES]
    param_names: ClassVar[list] = [*XPBenchmark.param_names, "pass"]
    skip_params: ClassVar[list] = [(*p, pass_) for p in XPBenchmark.skip_params for pass_ in PASSES]

    def setup(self, backend, impl, shape, dtype, pass_):
        super().setup(backend, impl, shape, dtype)
        self.prepare(xs.cross_entropy, backward=pass_ == "forward+backward")
        # Both passes read the labels too; the backward writes the gradient (in out_bytes).
        self.in_bytes += self.backend.nbytes(self.target)

    def time_cross_entropy(self, *params):
        self.run()

    @tracked("GB/s", [PASSES], ["pass"])
    def track_gbps(self, *params):
        return self.gbps()

    @tracked("fraction of copy bandwidth", [PASSES], ["pass"])
    def track_copy_fraction(self, *params):
        return self.copy_fraction()

    @tracked("x input size", [PASSES], ["pass"])
    def track_peak_memory(self, *params):
        return self.peak_memory()
