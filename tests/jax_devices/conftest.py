"""Tests on 8 JAX host devices (``--xla_force_host_platform_device_count=8``), which must be
set before JAX starts: ``tests/test_parallel.py`` runs them in a process of their own with
``XPSOFTMAX_HOST_DEVICES=8``. In any other process they are not collected."""

import os

if os.environ.get("XPSOFTMAX_HOST_DEVICES") == "8":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
    from xpsoftmax.testing.fixtures import *  # noqa: F403
else:
    collect_ignore_glob = ["test_*.py"]
