"""Build-time pages of the xpsoftmax docs, written before Sphinx reads the sources.

* ``api/<name>.rst``: one page per name of ``xpsoftmax.__all__`` (autodoc + numpydoc), and
  ``_generated/api_table.md``: the summary table of the API reference page.
* ``_generated/fast_paths.md``: the op x library x device matrix and the table of registered
  fast paths, read from the registry (``xpsoftmax.implementations()``, ``fast_paths()``).
* the performance page's parts (``perf_page.py``): ``_generated/perf_profile.md`` and its
  charts from the asv results of the recorded profile, and ``_generated/bench_cpu.md`` /
  ``bench_gpu.md`` from ``_static/bench/{cpu,gpu}.json``.

Every generated path is gitignored (``docs/.gitignore``). Files are rewritten only when their
text changes, so incremental builds stay incremental.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from typing import Any

import perf_page  # docs/_ext is on sys.path (conf.py)

GENERATED = "_generated"
API = "api"


# The writer (a file is rewritten only when its contents change) and the Markdown tables.
_write = perf_page.write
_table = perf_page.table


# --- API reference -------------------------------------------------------------------------


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    if not doc or isinstance(obj, str):
        return ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines())


def api_pages(srcdir: str) -> None:
    import xpsoftmax

    api_dir = os.path.join(srcdir, API)
    rows = []
    wanted = set()
    for name in xpsoftmax.__all__:
        obj = getattr(xpsoftmax, name)
        if inspect.ismodule(obj):
            directive, role = "automodule", "mod"
        elif inspect.isclass(obj):
            directive, role = "autoclass", "class"
        elif callable(obj):
            directive, role = "autofunction", "func"
        else:
            directive, role = "autodata", "data"
        title = f"xpsoftmax.{name}"
        body = [title, "=" * len(title), "", ".. currentmodule:: xpsoftmax", ""]
        if directive == "automodule":  # its docstring, then each public function
            body[-2:] = [f".. automodule:: xpsoftmax.{name}", "   :members:"]
        else:
            body.append(f".. {directive}:: {name}")
        if directive == "autodata":
            body.append("   :no-value:")
            body += ["", f"The installed version, ``{obj!r}`` when these pages were built."]
        body.append("")
        fname = f"xpsoftmax.{name}.rst"
        wanted.add(fname)
        _write(os.path.join(api_dir, fname), "\n".join(body))
        summary = _summary(obj) if directive != "autodata" else "The version of xpsoftmax."
        kind = {
            "automodule": "module",
            "autoclass": "class",
            "autofunction": "function",
            "autodata": "data",
        }[directive]
        rows.append([f"{{py:{role}}}`xpsoftmax.{name}`", kind, summary])
    for stale in set(os.listdir(api_dir)) - wanted:  # names removed from __all__
        if stale.endswith(".rst"):
            os.remove(os.path.join(api_dir, stale))
    _write(
        os.path.join(srcdir, GENERATED, "api_table.md"),
        _table(["Name", "Kind", "Summary"], rows),
    )


# --- Fast-path matrix ----------------------------------------------------------------------


def _version(lib: str) -> str:
    dist = {"array_api_strict": "array-api-strict"}.get(lib, lib)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def fast_path_pages(srcdir: str) -> None:
    import xpsoftmax
    from xpsoftmax import _listing, _registry

    rows = xpsoftmax.implementations()
    installed = _listing.installed_libraries()
    missing = [lib for lib in _listing.LIBRARIES if lib not in installed]
    columns: list[tuple[str, str]] = []
    for r in rows:
        if (r.library, r.device) not in columns:
            columns.append((r.library, r.device))
    out = [
        "Built with xpsoftmax "
        f"{xpsoftmax.__version__} and "
        + ", ".join(f"{lib} {_version(lib)}" for lib in installed)
        + "."
    ]
    if missing:
        out[-1] += (
            " Not installed at build time, so not listed: "
            + ", ".join(missing)
            + " (those without a backend module run the generic implementation everywhere)."
        )
    out += ["", "### Which implementation serves each operation", ""]
    out.append(
        "A cell names the fast paths of that operation, library and device, tried in order; "
        "a call that none of them supports (see the conditions below) runs the generic "
        "implementation. `generic` alone means every call runs the generic array-API "
        "implementation."
    )
    out.append("")
    cells: dict[tuple[str, str], list[str]] = {}
    for lib, dev in columns:
        for op in _registry.OPS:
            names = [
                r.implementation
                for r in rows
                if r.op == op
                and r.library == lib
                and r.device == dev
                and r.implementation != "generic"
            ]
            cells.setdefault((lib, dev), []).append(
                ", ".join(f"`{n}`" for n in names) if names else "generic"
            )
    # One column per library, or per device where the devices of a library differ.
    groups: list[tuple[str, list[str]]] = []
    for lib, dev in columns:
        for label, devs in groups:
            if label == lib and cells[(lib, devs[0])] == cells[(lib, dev)]:
                devs.append(dev)
                break
        else:
            groups.append((lib, [dev]))
    header = ["operation"] + [f"{lib} ({', '.join(devs)})" for lib, devs in groups]
    matrix = [
        [f"`{op}`"] + [cells[(lib, devs[0])][i] for lib, devs in groups]
        for i, op in enumerate(_registry.OPS)
    ]
    out.append(_table(header, matrix))
    out += ["### Conditions and dtypes", ""]
    out.append(
        "A fast path serves a call when the call's device and dtype are in its lists and its "
        "`supports(call)` predicate accepts the call's metadata; the conditions below are the "
        "registered descriptions of those predicates. 16-bit dtypes are computed in float32."
    )
    out.append("")
    detail = []
    for e in sorted(xpsoftmax.fast_paths(), key=lambda e: (e.library, _registry.OPS.index(e.op))):
        detail.append(
            [
                f"`{e.op}`",
                e.library,
                ", ".join(e.devices),
                f"`{e.name}`",
                ", ".join(e.dtypes),
                e.description or "—",
            ]
        )
    out.append(
        _table(["operation", "library", "devices", "fast path", "dtypes", "conditions"], detail)
        if detail
        else "No fast path is registered for the libraries installed at build time.\n"
    )
    _write(os.path.join(srcdir, GENERATED, "fast_paths.md"), "\n".join(out))


def generate(app: Any, config: Any) -> None:
    srcdir = str(app.srcdir)
    api_pages(srcdir)
    fast_path_pages(srcdir)
    perf_page.profile_page(srcdir)
    for which in ("cpu", "gpu"):
        perf_page.bench_page(srcdir, which)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
