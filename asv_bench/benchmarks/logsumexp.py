"""Benchmarks of ``xpsoftmax.logsumexp``: logsumexp of each row, against the library's own."""

import xpsoftmax as xs

from .common import XPBenchmark, tracked


class LogSumExp(XPBenchmark):
    op = "logsumexp"

    def setup(self, *params):
        super().setup(*params)
        self.prepare(lambda x, t: xs.logsumexp(x, axis=-1))

    def time_logsumexp(self, *params):
        self.run()

    @tracked("GB/s")
    def track_gbps(self, *params):
        return self.gbps()

    @tracked("fraction of copy bandwidth")
    def track_copy_fraction(self, *params):
        return self.copy_fraction()

    @tracked("x input size")
    def track_peak_memory(self, *params):
        return self.peak_memory()
