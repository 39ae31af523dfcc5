"""How XLA's CPU backend compiles the JAX fast paths: the reductions of logsumexp and
cross-entropy read the logits without a logits-sized intermediate written to memory.

A compare or select inside a reduction's loop, or an intermediate shared by two reductions,
makes XLA (jax 0.10, YNNPACK fusions) write a full-size array and read it back: logsumexp
was 4x slower than ``jax.nn.logsumexp`` on CPU that way. Speed is measured in the benchmarks;
this checks the compiled program's shape instead, which does not depend on a noisy clock."""

from __future__ import annotations

import re
from typing import Any

import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import xpsoftmax as xs  # noqa: E402

ROWS, N = 64, 4096


def _entry_shapes(fn: Any, *args: Any) -> list[str]:
    """The array shapes the compiled program's top level computes (fusions, copies...),
    its parameters left out."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    if "ynn_fusion" not in text:
        pytest.skip("XLA here does not use YNNPACK fusions (what this test is about)")
    entry = text[text.index("\nENTRY") :]
    return re.findall(r"= (f32\[[\d,]*\])\{[^}]*\} (?!parameter)", entry)


@pytest.mark.parametrize(
    "op",
    [
        lambda x, t: xs.logsumexp(x, axis=-1),
        lambda x, t: xs.cross_entropy(x, t),
        lambda x, t: xs.cross_entropy(x, t, reduction="none"),
    ],
    ids=["logsumexp", "cross_entropy", "cross_entropy-none"],
)
def test_no_logits_sized_intermediate(op: Any) -> None:
    x = jax.device_put(jnp.zeros((ROWS, N), jnp.float32), jax.devices("cpu")[0])
    t = jax.device_put(jnp.zeros(ROWS, jnp.int32), jax.devices("cpu")[0])
    assert xs.which("logsumexp", x) == "jax.custom_jvp"
    full = f"f32[{ROWS},{N}]"
    assert full not in _entry_shapes(op, x, t)
