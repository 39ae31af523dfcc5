"""asv benchmarks of xpsoftmax: one module per operation, shared code in ``common``."""
