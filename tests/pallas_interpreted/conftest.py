"""The Pallas kernels run by Pallas' interpreter on CPU arrays.

``XPSOFTMAX_PALLAS_INTERPRET=1`` decides the entries' devices when they are registered, so
these tests run in a process of their own: ``tests/test_pallas.py`` starts one. In any other
process they are not collected.
"""

import os

from xpsoftmax.testing.fixtures import *  # noqa: F403

if os.environ.get("XPSOFTMAX_PALLAS_INTERPRET") != "1":
    collect_ignore_glob = ["test_*.py"]
