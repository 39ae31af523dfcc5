"""The Triton kernels run by Triton's interpreter on CPU tensors.

``TRITON_INTERPRET=1`` must be set before triton is first imported (``import torch._dynamo``
imports it too), so these tests run in a process of their own:
``tests/test_triton.py::test_interpreted_kernels`` starts one. In any other process they are
not collected.
"""

import os

import torch  # noqa: F401

from xpsoftmax._checks import load_early_backends
from xpsoftmax.testing.fixtures import *  # noqa: F403

# What ``import xpsoftmax`` after ``import torch`` does (``Library.load_early``); here pytest's
# plugins may have imported xpsoftmax first. Then a test whose first call is compiled
# (``fullgraph=True``) can run alone.
load_early_backends()

if os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore_glob = ["test_*.py"]
