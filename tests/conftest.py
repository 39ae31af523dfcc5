"""The project's suite uses the conformance kit's fixtures (and its JAX 64-bit set-up)."""

from xpsoftmax.testing.fixtures import *  # noqa: F403
