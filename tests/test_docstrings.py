"""The examples in the docstrings of xpsoftmax, and in the documentation pages, run as tests.

Python's ``doctest`` collects the examples of every module of the package (the public
functions' docstrings included) and of every ``>>>`` block in ``docs/*.md``; each becomes
one test. A failing example fails its test. Modules or pages whose array library is not
installed are skipped.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

import xpsoftmax

DOCS = Path(__file__).resolve().parent.parent / "docs"

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

#: Array libraries an example may import; its test is skipped when one is missing.
LIBRARIES = ("numpy", "torch", "jax", "dask", "cupy", "array_api_strict", "scipy")


def _modules() -> list[str]:
    names = ["xpsoftmax"]
    for pkg in (
        xpsoftmax,
        *map(importlib.import_module, ("xpsoftmax.backends", "xpsoftmax.testing")),
    ):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            names.append(info.name)
    return sorted(set(names))


def _missing(source: str) -> list[str]:
    """The array libraries that ``source`` imports and that are not installed."""
    used = set(re.findall(r"\bimport\s+([a-z_]+)|\bfrom\s+([a-z_]+)", source))
    names = {a or b for a, b in used}
    return [lib for lib in LIBRARIES if lib in names and importlib.util.find_spec(lib) is None]


def _docstring_tests() -> list[Any]:
    params = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _modules():
        backend = name.startswith("xpsoftmax.backends.") and name.rsplit(".", 1)[1]
        if backend and importlib.util.find_spec(backend) is None:
            params.append(
                pytest.param(
                    name,
                    None,
                    id=name,
                    marks=pytest.mark.skip(reason=f"{backend} is not installed"),
                )
            )
            continue
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if test.examples and test.name.split(".")[0] == "xpsoftmax":
                params.append(pytest.param(name, test.name, id=test.name))
    return params


def _page_tests() -> list[Any]:
    """One test per fenced code block of ``docs/*.md`` holding ``>>>`` examples."""
    params = []
    for page in sorted(DOCS.glob("*.md")):
        block: list[str] | None = None
        start = 0
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if block is None:
                if line.startswith("```"):
                    block, start = [], number + 1
            elif line.strip() == "```":
                text = "\n".join(block) + "\n"
                if ">>>" in text:
                    missing = _missing(text)
                    marks = (
                        [pytest.mark.skip(reason=f"not installed: {missing}")] if missing else []
                    )
                    params.append(
                        pytest.param(page.name, start, text, id=f"{page.name}:{start}", marks=marks)
                    )
                block = None
            else:
                block.append(line)
    return params


def _run(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    runner.run(test, out=out.append)
    result = runner.summarize(verbose=False)
    if result.failed:
        pytest.fail("".join(out), pytrace=False)


@pytest.mark.parametrize(("module", "name"), _docstring_tests())
def test_docstring_examples(module: str, name: str) -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    mod = importlib.import_module(module)
    (test,) = [t for t in finder.find(mod, module) if t.name == name]
    if _missing(test.docstring or ""):
        pytest.skip(f"needs {_missing(test.docstring or '')}")
    _run(test)


@pytest.mark.parametrize(("page", "line", "block"), _page_tests())
def test_page_examples(page: str, line: int, block: str) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block, {}, f"docs/{page}", f"docs/{page}", line - 1)
    _run(test)


#: Public callables whose docstring has no Examples section yet (report to the maintainers).
#: The test below fails when a *new* public name comes without examples.
WITHOUT_EXAMPLES = frozenset({"Call", "FastPath", "fast_paths", "generic_forced"})


def test_public_names_have_examples() -> None:
    lacking = []
    for name in xpsoftmax.__all__:
        obj = getattr(xpsoftmax, name)
        if isinstance(obj, str) or name in WITHOUT_EXAMPLES:
            continue
        if inspect.ismodule(obj):  # a module: each of its public functions
            lacking += [
                f"{name}.{f}" for f in obj.__all__ if ">>>" not in (getattr(obj, f).__doc__ or "")
            ]
        elif ">>>" not in (obj.__doc__ or ""):
            lacking.append(name)
    assert not lacking, f"public names without docstring examples: {lacking}"
