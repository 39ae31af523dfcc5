"""``python -m xpsoftmax`` (or ``xpsoftmax``): what is installed, what serves each call, and a
quick self-check of every function on every array library and device found.

``python -m xpsoftmax bench`` times the implementations against each other (``_bench``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import (
    _libraries,
    _registry,
    cross_entropy,
    cross_entropy_with_grad,
    log_softmax,
    logsumexp,
    softmax,
)
from ._api import which

if TYPE_CHECKING:  # the adapters import NumPy: only inside functions here
    from .testing.backends import Backend

# A small input with the cases that matter: ordinary, huge, an all -inf row, a partly -inf row.
_X = [
    [1.0, 2.0, 3.0, 4.0],
    [1000.0, 1001.0, 1000.0, 999.0],
    [-math.inf, -math.inf, -math.inf, -math.inf],
    [0.5, -math.inf, 0.25, -1.0],
]
_T = [3, 1, 0, 2]


def _py_softmax(row: list[float]) -> list[float]:
    m = max(row)
    if m == -math.inf:
        return [0.0] * len(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _py_lse(row: list[float]) -> float:
    m = max(row)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(v - m) for v in row))


def _expected(xs: list[list[float]]) -> dict[str, Any]:
    """References for the input as the library holds it (16-bit rounding included)."""
    sm = [_py_softmax(r) for r in xs]
    lse = [_py_lse(r) for r in xs]
    lsm = [[v - lse[i] if v != -math.inf else -math.inf for v in r] for i, r in enumerate(xs)]
    per = [lse[i] - xs[i][t] if lse[i] != -math.inf else math.inf for i, t in enumerate(_T)]
    # The mean divides by all 4 rows; the all -inf row has an infinite loss and a zero gradient.
    grad = [
        [(sm[i][c] - (1.0 if c == _T[i] else 0.0)) / 4 if i != 2 else 0.0 for c in range(4)]
        for i in range(4)
    ]
    return {"softmax": sm, "log_softmax": lsm, "logsumexp": lse, "ce": per, "grad": grad}


def _label(b: Backend) -> str:
    return f"{b.library}:{b.device}"


#: The dtypes the self-check runs in, where the backend has them.
CHECK_DTYPES = ("float32", "float64", "bfloat16")


def _check_dtypes(b: Backend) -> list[str]:
    """The dtypes of :data:`CHECK_DTYPES` that ``b`` can make as configured (no float64 for
    JAX outside its 64-bit mode)."""
    have = b.available_dtypes()
    return [d for d in CHECK_DTYPES if d in have]


def _to_list(b: Backend, x: Any) -> Any:
    return b.numpy_float(x).tolist()


def _version(name: str) -> str:
    lib = _libraries.by_name(name)
    try:
        return importlib.metadata.version(lib.distribution if lib else name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _backends(libraries: Sequence[str]) -> list[Backend]:
    """The usable backends of ``libraries``, saying why a library has none."""
    from .testing.backends import usable_backends

    found, reasons = usable_backends(libraries)
    for lib, reason in reasons.items():  # a broken install must not stop the report
        print(f"  {lib}: could not be used ({reason})")
    return found


def _close(got: Any, want: Any, tol: float) -> bool:
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_close(g, w, tol) for g, w in zip(got, want))
        )
    g, w = float(got), float(want)
    if math.isnan(w) or math.isinf(w):
        return g == w or (math.isnan(g) and math.isnan(w))
    return abs(g - w) <= tol * max(1.0, abs(w))


def _checks(b: Backend, dtype: str) -> list[tuple[str, bool, str]]:
    tol = {"float64": 1e-12, "float32": 1e-5}.get(dtype, 1e-2)
    x = b.asarray(_X, dtype)
    exp = _expected(_to_list(b, x))
    target = b.asarray(_T, b.index_dtype)
    results = []

    def check(name: str, run: Callable[[], Any], want: Any) -> None:
        try:
            got = run()
            ok = _close(got, want, tol)
            results.append((name, ok, "" if ok else f"got {got}, want {want}"))
        except Exception as exc:
            results.append((name, False, f"{type(exc).__name__}: {exc}"))

    def both(name: str, f: Callable[[], Any], want: Any) -> None:
        check(name, lambda: _to_list(b, f()), want)
        with _registry.force_generic():
            check(name + " (generic)", lambda: _to_list(b, f()), want)

    both("softmax", lambda: softmax(x), exp["softmax"])
    both("log_softmax", lambda: log_softmax(x), exp["log_softmax"])
    both("logsumexp", lambda: logsumexp(x, axis=1), exp["logsumexp"])
    both("cross_entropy", lambda: cross_entropy(x, target, reduction="none"), exp["ce"])
    both("cross_entropy_with_grad", lambda: cross_entropy_with_grad(x, target)[1], exp["grad"])
    return results


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def _which_row(b: Backend) -> list[str]:
    x = b.asarray([[0.0, 1.0], [2.0, 3.0]], "float32")
    target = b.asarray([0, 1], b.index_dtype)
    row = [_label(b)]
    for op in ("softmax", "log_softmax", "logsumexp"):
        row.append(which(op, x, axis=-1) if op != "logsumexp" else which(op, x, axis=1))
    row.append(which("cross_entropy", x, target))
    row.append(which("cross_entropy_with_grad", x, target))
    return row


def _test(argv: list[str]) -> int:
    """Run the installed conformance suite (``pytest --pyargs xpsoftmax.tests``)."""
    parser = argparse.ArgumentParser(
        prog="xpsoftmax test",
        description="Run the conformance suite installed with xpsoftmax on the array libraries "
        "and devices of this machine (needs pytest). Other arguments go to pytest.",
    )
    parser.add_argument("--library", action="append", help="only this library (repeatable)")
    parser.add_argument("--device", action="append", help="only this device, e.g. cuda, gpu, cpu")
    parser.add_argument("-k", dest="keyword", help="pytest's -k, combined with the above")
    args, rest = parser.parse_known_args(argv)
    _known_libraries(parser, args.library)
    try:
        import pytest
    except ImportError:
        parser.error("pytest is not installed: pip install 'xpsoftmax[test]'")
    terms = [t for t in (_selection(args.library, args.device), args.keyword) if t]
    select = ["-k", " and ".join(f"({t})" for t in terms)] if terms else []
    return int(
        pytest.main(["--pyargs", "xpsoftmax.tests", "-p", "no:cacheprovider", *select, *rest])
    )


def _selection(libraries: list[str] | None, devices: list[str] | None) -> str:
    """A pytest ``-k`` expression choosing the backends (ids like ``torch:cuda``)."""
    from .testing.backends import BACKENDS

    ids = [
        b.id
        for b in BACKENDS
        if (not libraries or b.library in libraries) and (not devices or b.device in devices)
    ]
    if libraries is None and devices is None:
        return ""
    return " or ".join(ids) if ids else "not_a_backend_here"


def _known_libraries(parser: argparse.ArgumentParser, libraries: list[str] | None) -> None:
    """Stop with a usage error on a library name xpsoftmax does not know."""
    known = [lib.name for lib in _libraries.LIBRARIES]
    unknown = sorted(set(libraries or ()) - set(known))
    if unknown:
        parser.error(f"unknown library {', '.join(map(repr, unknown))}; known: {', '.join(known)}")


def _parse(argv: list[str]) -> list[str]:
    """The libraries to report on: those asked for (each must be installed) or all installed."""
    parser = argparse.ArgumentParser(
        prog="xpsoftmax",
        description="List the array libraries and devices found, which implementation serves "
        "each operation on each, and self-check every function on each.",
        epilog="'xpsoftmax bench' times fast paths, the generic implementation and each "
        "library's own (see 'xpsoftmax bench --help'); 'xpsoftmax test' runs the installed "
        "conformance suite (see 'xpsoftmax test --help').",
    )
    parser.add_argument("--library", action="append", help="check only this library (repeatable)")
    args = parser.parse_args(argv)
    _known_libraries(parser, args.library)
    installed = [lib.name for lib in _libraries.installed()]
    missing = [lib for lib in args.library or () if lib not in installed]
    if missing:
        parser.error(f"{', '.join(map(repr, missing))} is not installed here")
    return list(args.library or installed)


def _print_which(backends: list[Backend]) -> None:
    print("\nImplementation serving a float32 call with default options, per library and device:")
    print(
        _table(
            [_which_row(b) for b in backends],
            [
                "library:device",
                "softmax",
                "log_softmax",
                "logsumexp",
                "cross_entropy",
                "..._with_grad",
            ],
        )
    )
    if any(b.library == "numpy" for b in backends):
        print(
            "Compiled CPU kernel (float32 NumPy arrays; float32 and bfloat16 torch CPU tensors): "
            + _compiled_kernel()
        )


def _compiled_kernel() -> str:
    """Whether the compiled CPU kernel serves here, and why not where it does not."""
    entries = [e for e in _registry.fast_paths("softmax", "numpy") if e.name == "numpy.compiled"]
    broken = _registry.broken_modules().get(("numpy", "compiled"))
    if not entries:
        return f"unavailable ({broken})" if broken else "not registered"
    why = entries[0].unavailable()
    if why is not None:
        return f"unavailable: {why}"
    return (
        f"numpy.compiled, torch.compiled (numba {_version('numba')}; compiled at the first "
        "call, cached)"
    )


def _self_check(backends: list[Backend]) -> int:
    """Run and print the self-check of every backend in each of its dtypes; the exit status."""
    print("\nSelf-check (fast path and generic path against pure-Python references):")
    summary = []
    failures = []
    for b in backends:
        for dtype in _check_dtypes(b):
            start = time.perf_counter()
            results = _checks(b, dtype)
            passed = sum(ok for _, ok, _ in results)
            summary.append(
                [
                    _label(b),
                    dtype,
                    f"{passed}/{len(results)}",
                    "ok" if passed == len(results) else "FAIL",
                    f"{(time.perf_counter() - start) * 1e3:.0f} ms",
                ]
            )
            failures += [
                f"{_label(b)} {dtype} {name}: {msg}" for name, ok, msg in results if not ok
            ]
    print(_table(summary, ["library:device", "dtype", "checks", "result", "time"]))
    if failures:
        print("\nFailures:")
        print("\n".join("  " + f for f in failures))
        return 1
    print("\nAll checks passed.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        from . import _bench

        return _bench.main(args_list[1:])
    if args_list[:1] == ["test"]:
        return _test(args_list[1:])
    libraries = _parse(args_list)

    from . import __version__

    print(f"xpsoftmax {__version__} (Python {sys.version.split()[0]})")
    if _registry.generic_forced():
        print(f"{_registry.ENV_FORCE_GENERIC} is set: every call uses the generic implementation")
    print(
        "\nArray libraries found: "
        + (", ".join(f"{lib} {_version(lib)}" for lib in libraries) or "none")
    )
    if libraries and importlib.util.find_spec("numpy") is None:
        # The adapters make their inputs from NumPy data (only torch installs without it).
        print("The self-check needs NumPy to make its inputs: pip install numpy.")
        return 1
    backends = _backends(libraries)
    if not backends:
        print("No array library to check: install one, e.g. pip install 'xpsoftmax[numpy]'.")
        return 1
    _print_which(backends)
    return _self_check(backends)


if __name__ == "__main__":
    raise SystemExit(main())
