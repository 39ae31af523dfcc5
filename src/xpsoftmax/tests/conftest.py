"""The installed conformance suite uses the kit's fixtures (and its JAX 64-bit set-up)."""

from xpsoftmax.testing.fixtures import *  # noqa: F403
