"""The Triton kernels run by Triton's interpreter on CPU tensors.

``TRITON_INTERPRET=1`` must be set before triton is first imported (``import torch._dynamo``
imports it too), so these tests run in a process of their own:
``tests/test_triton.py::test_interpreted_kernels`` starts one. In any other process they are
not collected.
"""

import os

from xpsoftmax.testing.fixtures import *  # noqa: F403

if os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore_glob = ["test_*.py"]
