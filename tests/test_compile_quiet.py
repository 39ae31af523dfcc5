"""``torch.compile`` of code calling xpsoftmax is quiet, keeps the answers, and the fast
paths trace as one graph.

Dynamo warns at every call of a ``functools.lru_cache``-wrapped function that it traces
("Dynamo detected a call to a `functools.lru_cache`-wrapped function ..."); array-api-compat's
type tests (``is_array_api_obj``, ``array_namespace``, ``device``, ``is_*_namespace``) are such
functions, so none of them may be reached on the traced path of a call on torch tensors. Every
compile here starts from a fresh ``torch._dynamo.reset()`` (which also forgets the warnings
Dynamo already gave), records every warning and every log record of the ``torch`` loggers at
WARNING or above, and compares the compiled results with the eager ones.

The in-process cases compute the eager reference first, so xpsoftmax's per-type caches are
warm when Dynamo traces; ``test_first_call_compiled_is_quiet`` runs a fresh interpreter whose
first xpsoftmax call is the compiled one (cold caches), as in a training script.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import xpsoftmax as xs

torch = pytest.importorskip("torch")

BACKEND = "aot_eager"  # the whole compile pipeline bar code generation: seconds, not minutes


# --- capture ----------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _torch_loggers() -> list[logging.Logger]:
    """``torch`` and its loggers that do not propagate (torch._dynamo, torch._inductor...)."""
    found = [logging.getLogger("torch")]
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (
            name.startswith("torch.")
            and isinstance(logger, logging.Logger)
            and not logger.propagate
        ):
            found.append(logger)
    return found


@contextlib.contextmanager
def _noise() -> Iterator[list[str]]:
    """Every warning (filter "always") and every WARNING+ record of the torch loggers."""
    handler = _Records()
    loggers = _torch_loggers()
    for logger in loggers:
        logger.addHandler(handler)
    found: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    found += [
        f"{w.category.__name__} ({w.filename}:{w.lineno}): {w.message}"
        for w in caught
        if not _torch_deprecation(w)
    ]
    found += [f"log {r.name} {r.levelname}: {r.getMessage()}" for r in handler.records]


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _torch_deprecation(w: warnings.WarningMessage) -> bool:
    """A deprecation warning torch gives about its own code (Inductor's first use imports
    modules that use ``torch.jit.script_method``): Python's default filters hide these."""
    return issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)) and str(
        w.filename
    ).startswith(_TORCH_DIR)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled(fn: Callable[..., Any], *args: Any, **options: Any) -> tuple[Any, list[str]]:
    """``torch.compile(fn)(*args)`` from a fresh Dynamo state, twice (the second call runs the
    cached code), and what it printed."""
    torch._dynamo.reset()
    with _noise() as found:
        compiled = torch.compile(fn, **{"backend": BACKEND, **options})
        compiled(*args)
        out = compiled(*args)
    return out, found


def _assert_quiet(found: list[str]) -> None:
    assert not found, f"{len(found)} warnings/log records:\n" + "\n\n".join(found)


def _assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_same(a, e)
        return
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, equal_nan=True)


# --- data -------------------------------------------------------------------------------------

N, D, C = 16, 8, 5


def _data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    logits = torch.randn(N, C, generator=g) * 2
    return {
        "x": x,
        "logits": logits,
        "target": torch.randint(0, C, (N,), generator=g),
        "probs": torch.softmax(torch.randn(N, C, generator=g), dim=-1),
        "weight": torch.rand(C, generator=g) + 0.5,
        "mask": torch.rand(N, C, generator=g) > 0.2,
        "t_arr": torch.rand(N, 1, generator=g) + 0.5,
        "b": torch.rand(N, C, generator=g),
        "lw": torch.randn(C, D, generator=g),
    }


#: name -> function of the data dict; each is compiled on its own.
CALLS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "softmax": lambda d: xs.softmax(d["logits"]),
    "softmax-temperature": lambda d: xs.softmax(d["logits"], temperature=0.5),
    "softmax-temperature-array": lambda d: xs.softmax(d["logits"], temperature=d["t_arr"]),
    "softmax-where": lambda d: xs.softmax(d["logits"], where=d["mask"]),
    "log_softmax": lambda d: xs.log_softmax(d["logits"]),
    "log_softmax-temperature-where": lambda d: xs.log_softmax(
        d["logits"], temperature=3.0, where=d["mask"]
    ),
    "logsumexp": lambda d: xs.logsumexp(d["logits"], axis=-1),
    "logsumexp-b-return_sign": lambda d: xs.logsumexp(
        d["logits"], axis=-1, b=d["b"], return_sign=True
    ),
    "logsumexp-where-keepdims": lambda d: xs.logsumexp(
        d["logits"], axis=1, keepdims=True, where=d["mask"]
    ),
    "cross_entropy": lambda d: xs.cross_entropy(d["logits"], d["target"]),
    "cross_entropy-weight-smoothing-temperature": lambda d: xs.cross_entropy(
        d["logits"], d["target"], weight=d["weight"], label_smoothing=0.1, temperature=2.0
    ),
    "cross_entropy-probs-z_loss": lambda d: xs.cross_entropy(
        d["logits"], d["probs"], z_loss=1e-3, reduction="sum"
    ),
    "linear_cross_entropy": lambda d: xs.linear_cross_entropy(
        d["x"], d["lw"], d["target"], chunk_size=5
    ),
    "linear_cross_entropy-class-chunks-smoothing": lambda d: xs.linear_cross_entropy(
        d["x"], d["lw"], d["target"], chunk_size=(5, 2), label_smoothing=0.1
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_compiled_call_is_quiet(name: str) -> None:
    data = _data()
    fn = CALLS[name]
    expected = fn(data)  # eager first: also warms xpsoftmax's per-type caches
    out, found = _compiled(lambda: fn(data))
    _assert_quiet(found)
    _assert_same(out, expected)


def _model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.ReLU(), torch.nn.Linear(16, C))


def _step(model: Any, x: Any, target: Any) -> Any:
    loss = xs.cross_entropy(model(x), target)
    loss.backward()
    return loss


def _eager_step(x: Any, target: Any) -> tuple[Any, list[Any]]:
    model = _model()
    loss = _step(model, x, target)
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_compiled_training_step_is_quiet() -> None:
    """A small model, the loss and its backward pass, compiled as one function."""
    data = _data()
    x, target = data["x"], data["target"]
    loss_ref, grads_ref = _eager_step(x, target)

    model = _model()
    torch._dynamo.reset()
    with _noise() as found:
        step = torch.compile(_step, backend=BACKEND)
        step(model, x, target)
        model.zero_grad()
        loss = step(model, x, target)
    _assert_quiet(found)
    _assert_same(loss.detach(), loss_ref)
    for p, g in zip(model.parameters(), grads_ref):
        _assert_same(p.grad, g)


@pytest.mark.parametrize(
    "name",
    ["softmax", "log_softmax", "cross_entropy", "cross_entropy-weight-smoothing-temperature"],
)
def test_fast_path_is_one_graph(name: str) -> None:
    """The torch fast paths trace without a graph break (``fullgraph=True`` raises on one);
    with the caches warm (the eager reference runs first)."""
    data = _data()
    fn = CALLS[name]
    expected = fn(data)
    out, found = _compiled(lambda: fn(data), fullgraph=True)
    _assert_quiet(found)
    _assert_same(out, expected)


def test_compiled_loss_backward_is_one_graph() -> None:
    """The forward pass of a model and the loss as one graph; gradients as in eager."""
    data = _data()
    x, target = data["x"], data["target"]
    loss_ref, grads_ref = _eager_step(x, target)
    model = _model()
    out, found = _compiled(lambda: xs.cross_entropy(model(x), target), fullgraph=True)
    out.backward()
    _assert_quiet(found)
    _assert_same(out.detach(), loss_ref)
    for p, g in zip(model.parameters(), grads_ref):
        _assert_same(p.grad, g)


@pytest.mark.parametrize("chunk_size", [5, (5, 2)])
def test_compiled_linear_head_backward_is_one_graph(chunk_size: Any) -> None:
    """A model's body and the LM head's loss (its autograd Function) as one graph, with the
    backward pass through it; the gradients as in eager."""
    data = _data()
    x, target = data["x"], data["target"]

    def run(body: Any, head: Any) -> Any:
        return xs.linear_cross_entropy(
            body(x), head.weight, target, bias=head.bias, chunk_size=chunk_size
        )

    torch.manual_seed(0)
    body, head = (
        torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.ReLU()),
        torch.nn.Linear(16, C),
    )
    params = [*body.parameters(), *head.parameters()]
    loss_ref = run(body, head)
    loss_ref.backward()
    grads_ref = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    out, found = _compiled(lambda: run(body, head), fullgraph=True)
    out.backward()
    _assert_quiet(found)
    _assert_same(out.detach(), loss_ref.detach())
    for p, g in zip(params, grads_ref):
        _assert_same(p.grad, g)


@pytest.mark.slow
def test_inductor_training_step_is_quiet() -> None:
    """The default backend (Inductor generates and compiles C++: tens of seconds on a small
    machine with an empty cache, hence ``slow``)."""
    data = _data()
    x, target = data["x"], data["target"]
    loss_ref, grads_ref = _eager_step(x, target)
    model = _model()
    torch._dynamo.reset()
    with _noise() as found:
        step = torch.compile(_step)
        loss = step(model, x, target)
    _assert_quiet(found)
    torch.testing.assert_close(loss.detach(), loss_ref)
    for p, g in zip(model.parameters(), grads_ref):
        torch.testing.assert_close(p.grad, g)


_COLD_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, warnings
    import torch
    import xpsoftmax as xs

    records = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(f"log {record.name} {record.levelname}: {record.getMessage()}")

    h = H(level=logging.WARNING)
    loggers = [logging.getLogger("torch")] + [
        lg for name, lg in list(logging.root.manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(lg, logging.Logger) and not lg.propagate
    ]
    for lg in loggers:
        lg.addHandler(h)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    x = torch.randn(16, 8)
    target = torch.randint(0, 5, (16,))
    weight = torch.nn.Parameter(torch.rand(5) + 0.5, requires_grad=False)

    def step(x, target):
        loss = xs.cross_entropy(model(x), target)
        loss.backward()
        return loss

    def others(x):
        z = model(x)
        return (
            xs.softmax(z),
            xs.log_softmax(z, temperature=2.0),
            xs.logsumexp(z, axis=-1),
            xs.cross_entropy(z, target, weight=weight),
        )

    # The first xpsoftmax calls of this interpreter are the compiled ones.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # fullgraph: nothing of the first call (loading the backend, the availability
        # checks) may break the graph (Library.load_early).
        got = torch.compile(others, backend=sys.argv[1], fullgraph=True)(x)
        loss = torch.compile(step, backend=sys.argv[1])(x, target)
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    found = [
        f"{w.category.__name__} ({w.filename}:{w.lineno}): {w.message}"
        for w in caught
        if not (
            issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
            and str(w.filename).startswith(torch_dir)
        )
    ]
    found += records
    for line in found:
        print("NOISE:", line)

    with torch.no_grad():
        ref = others(x)
    model.zero_grad()
    ref_loss = xs.cross_entropy(model(x), target)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    print("OK", len(found))
    """
)


def test_first_call_compiled_is_quiet(tmp_path: Any) -> None:
    """In a fresh interpreter whose first xpsoftmax calls are traced (every cache cold), as in
    a training script compiled before any eager call: no warning, nothing on stderr from
    Dynamo, the eager answers."""
    script = tmp_path / "cold.py"
    script.write_text(_COLD_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "always"}
    env.pop("TORCH_LOGS", None)
    proc = subprocess.run(
        [sys.executable, str(script), BACKEND],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    noise = [line for line in proc.stdout.splitlines() if line.startswith("NOISE:")]
    assert not noise, "\n".join(noise)
    assert "lru_cache" not in proc.stderr, proc.stderr
    assert proc.stdout.rstrip().endswith("OK 0"), proc.stdout + proc.stderr
