"""One JAX compilation cache for every process of a test run, removed when the run ends.

Most of the suite's JAX time is XLA compiling each operation of the eager calls (40-60 ms a
program on this project's 2-core machines), and pytest-xdist's workers and the suites the
tests start in processes of their own (the 8-device, Pallas and kit runs) compile the same
operations on the same shapes: a program another process of the run compiled loads in about
a quarter of that time. The cache is keyed on the program, the compile options, JAX's version
and the devices, so a hit runs what a compile would have produced.

The process that starts the run (pytest's, or xdist's controller) makes a fresh directory,
passes it on through the environment, and removes it at the end: no run reads another's
entries and nothing is left behind. No size cap: with one, JAX's cache takes a lock shared
by every process and lists every entry on each write (a run twice as slow); a whole run's
cache held ~10k entries, 58 MB. ``XPSOFTMAX_JAX_CACHE=0`` turns it off; an environment that
already names a cache directory keeps its own (and the run does not remove it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from typing import Any

_OWNED: str | None = None  # the directory this process made, to remove at the end

if os.environ.get("XPSOFTMAX_JAX_CACHE", "1") != "0" and not os.environ.get(
    "JAX_COMPILATION_CACHE_DIR"
):
    _OWNED = tempfile.mkdtemp(prefix="xpsoftmax-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWNED
    # Cache every program, however small and quick to compile: the small ones are the many.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    if "jax" in sys.modules:  # imported before this file (a plugin): set it there too
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", _OWNED)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _write_entries_whole() -> None:
    """Without a cap JAX writes an entry in place, so a process reading it while another
    writes it could load half an entry (a warning and a recompile): write each entry to a
    file of its own and rename it into place (atomic), as the cache's own readers expect."""
    try:
        from jax._src import lru_cache
    except ImportError:
        return
    put = getattr(lru_cache.LRUCache, "put", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    if put is None or suffix is None or getattr(put, "_whole", False):
        return

    def put_whole(self: Any, key: str, value: bytes) -> None:
        if getattr(self, "eviction_enabled", True) or not key:
            return put(self, key, value)
        path = self.path / f"{key}{suffix}"
        if not path.exists():
            part = self.path / f"{key}.{os.getpid()}.{threading.get_ident()}.part"
            part.write_bytes(value)
            os.replace(part, path)

    put_whole._whole = True  # type: ignore[attr-defined]
    lru_cache.LRUCache.put = put_whole  # type: ignore[method-assign]


def pytest_configure() -> None:
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") and os.environ.get("XPSOFTMAX_JAX_CACHE") != "0":
        _write_entries_whole()


def pytest_unconfigure() -> None:
    if _OWNED is not None:
        shutil.rmtree(_OWNED, ignore_errors=True)
