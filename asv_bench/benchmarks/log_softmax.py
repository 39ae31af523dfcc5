"""Benchmarks of ``xpsoftmax.log_softmax``: log_softmax over rows, against the library's own."""

import xpsoftmax as xs

from .common import XPBenchmark, tracked


class LogSoftmax(XPBenchmark):
    op = "log_softmax"

    def setup(self, *params):
        super().setup(*params)
        self.prepare(lambda x, t: xs.log_softmax(x))

    def time_log_softmax(self, *params):
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
