"""Every test process of this repository (pytest-xdist's workers and the suites the tests run in
processes of their own) shares one persistent JAX compilation cache, ``.jax_cache/`` here.

Most of the suite's JAX time is XLA compiling each operation of the eager calls, 40-60 ms
each on this project's 2-core machines, and the same operations on the same shapes recur in
every process: a program another process compiled loads in about a quarter of that time. The
cache is keyed on the program, the options, JAX's version and the devices, so a hit runs what
a compile would have produced. ``XPSOFTMAX_JAX_CACHE=0`` turns it off; an environment that
already names a cache directory keeps its own.
"""

import os
from pathlib import Path

if os.environ.get("XPSOFTMAX_JAX_CACHE", "1") != "0":
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent / ".jax_cache"))
    # Cache every program, however small and quick to compile: the small ones are the many.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 2**30))
