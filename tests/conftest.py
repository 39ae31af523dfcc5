"""The project's suite uses the conformance kit's fixtures (and its JAX 64-bit set-up)."""

from typing import Any

import pytest

from xpsoftmax.testing.fixtures import *  # noqa: F403


@pytest.fixture
def forced_at_each_dispatch(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each registry dispatch from here on, whether the generic path was forced then
    (appended at the dispatch: a list the test reads and clears)."""
    from xpsoftmax import _registry

    forced: list[bool] = []
    select = _registry.select

    def noting(call: Any) -> Any:
        forced.append(_registry.generic_forced())
        return select(call)

    monkeypatch.setattr(_registry, "select", noting)
    return forced
