"""The generated parts of the performance page.

* :func:`profile_page`: ``_generated/perf_profile.md`` and its charts
  ``_generated/perf/<machine>/<op>.png``, from the asv results of the recorded profile
  (``asv_bench/benchmarks/profile.py``) committed under ``asv_bench/results/<machine>/``: per
  machine and operation, a table of the newest commit's numbers and a chart of the ratios'
  history across commits.
* :func:`bench_page`: ``_generated/bench_<which>.md`` from ``_static/bench/<which>.json``, the
  output of ``python -m xpsoftmax bench --json``, as tables and a key/value list.

Both read files only (no asv, no git): the docs build needs neither. asv's result files
(format version 2) hold, per benchmark, a list of columns named by ``result_columns``; the
``result`` column is a flat list over the cartesian product of the ``params`` column, in
``itertools.product`` order, with ``null`` for a skipped entry and ``NaN`` for a failed one.
"""

from __future__ import annotations

import ast
import datetime
import io
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The project's reference machine: its section comes first.
REFERENCE_MACHINE = "epyc-2core-24g"
PROFILE = "profile.Profile."
MS = PROFILE + "track_ms"
SPREAD = PROFILE + "track_spread"
#: fast time / the library's own time, the median of the rounds' ratios (lower is better, as
#: asv's regression detection assumes); the speed-up shown is its inverse.
TIME_VS_PEER = PROFILE + "track_time_vs_peer"
LIMIT = PROFILE + "track_limit_fraction"
#: Parameter names of the profile's benchmarks (``benchmarks.json`` says them too; these are
#: the fallback when it is absent or describes another version of the suite).
PARAM_NAMES = {
    MS: ("op", "backend", "impl", "shape", "dtype"),
    SPREAD: ("op", "backend", "impl", "shape", "dtype"),
    TIME_VS_PEER: ("op", "backend", "shape", "dtype"),
    LIMIT: ("op", "backend", "shape", "dtype"),
}
#: What a missing number shows.
NONE = "–"

#: The library's own function of each operation, as the profile calls it
#: (``asv_bench/benchmarks/common.py``: ``peer``, ``peer_with_grad``).
OWN: dict[str, dict[str, str]] = {
    "numpy": {
        "softmax": "`scipy.special.softmax`",
        "log_softmax": "`scipy.special.log_softmax`",
        "logsumexp": "`scipy.special.logsumexp`",
        "cross_entropy": "`scipy.special.logsumexp` less the target's logit, averaged",
        "cross_entropy_with_grad": "`scipy.special.log_softmax` and the gradient written out "
        "in NumPy",
    },
    "torch": {
        "softmax": "`torch.softmax`",
        "log_softmax": "`torch.log_softmax`",
        "logsumexp": "`torch.logsumexp`",
        "cross_entropy": "`torch.nn.functional.cross_entropy`",
        "cross_entropy_with_grad": "`torch.nn.functional.cross_entropy` and autograd's backward",
    },
    "jax": {
        "softmax": "`jax.nn.softmax`",
        "log_softmax": "`jax.nn.log_softmax`",
        "logsumexp": "`jax.scipy.special.logsumexp`",
        "cross_entropy": "`optax.softmax_cross_entropy_with_integer_labels`, averaged",
        "cross_entropy_with_grad": "`jax.value_and_grad` of the optax loss",
    },
}
LIBRARY_NAMES = {"numpy": "NumPy", "torch": "torch", "jax": "JAX", "cupy": "CuPy"}


def write(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` unless it is there already (incremental builds stay so)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == raw:
                return
    with open(path, "wb") as f:
        f.write(raw)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (MyST), cells escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for a skipped (null), failed (NaN) or odd entry."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_ms(ms: float | None) -> str:
    """Milliseconds with three significant digits, never in exponent notation."""
    if ms is None:
        return NONE
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    digits = 2 - math.floor(math.log10(ms)) if ms > 0 else 3
    return f"{ms:.{digits}f}"


def fmt_ratio(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio:.2f}×"


def fmt_percent(fraction: float | None) -> str:
    if fraction is None:
        return NONE
    percent = fraction * 100
    return f"{percent:.0f}%" if percent >= 9.5 else f"{percent:.2g}%"


def fmt_bytes(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} GiB"


def fmt_date(ms: Any) -> str:
    """asv's dates are milliseconds since the epoch (UTC)."""
    number = _number(ms)
    if number is None:
        return "an unknown date"
    when = datetime.datetime.fromtimestamp(number / 1000, tz=datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


# --- asv results ---------------------------------------------------------------------------


def _param(text: Any) -> str:
    """asv stores parameter values as their ``repr``: ``"'numpy'"`` -> ``"numpy"``."""
    if not isinstance(text, str):
        return str(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else str(value)


@dataclass
class Run:
    """The profile's results of one commit on one machine (one asv results file)."""

    machine: str
    commit: str
    date: Any
    path: str
    env_name: str = ""
    python: str = ""
    requirements: dict[str, Any] = field(default_factory=dict)
    machine_info: dict[str, Any] = field(default_factory=dict)
    #: benchmark -> (parameter names, their value lists, {parameter tuple: value or None})
    benchmarks: dict[str, tuple[tuple[str, ...], list[list[str]], dict[tuple[str, ...], Any]]] = (
        field(default_factory=dict)
    )

    @property
    def short(self) -> str:
        return self.commit[:8]

    def get(self, benchmark: str, **params: str) -> float | None:
        """The value of ``benchmark`` at ``params`` (all of its parameters, by name), or None
        where it was skipped, failed or not run."""
        if benchmark not in self.benchmarks:
            return None
        names, _, values = self.benchmarks[benchmark]
        try:
            key = tuple(params[n] for n in names)
        except KeyError:
            return None
        return _number(values.get(key))

    def speedup(self, **params: str) -> float | None:
        """The library's own time over the fast path's at ``params`` (op, backend, shape,
        dtype): above 1 the fast path is faster. The inverse of ``track_time_vs_peer``, the
        median of the rounds' ratios (with an odd number of rounds, exactly the median of the
        inverse ratios)."""
        ratio = self.get(TIME_VS_PEER, **params)
        return 1 / ratio if ratio is not None and ratio > 0 else None

    def values_of(self, name: str) -> list[str]:
        """Every value of parameter ``name`` in the profile's benchmarks, in their order."""
        out: list[str] = []
        for names, lists, _ in self.benchmarks.values():
            if name in names:
                out += [v for v in lists[names.index(name)] if v not in out]
        return out


def _suite(results_dir: str) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The profile's parameter names and current versions from ``benchmarks.json`` where it
    has them (asv writes it when it runs the suite)."""
    names, versions = dict(PARAM_NAMES), {}
    try:
        with open(os.path.join(results_dir, "benchmarks.json"), encoding="utf-8") as f:
            described = json.load(f)
    except (OSError, ValueError):
        return names, versions
    if isinstance(described, dict):
        for key, bench in described.items():
            if key.startswith(PROFILE) and isinstance(bench, dict):
                given = bench.get("param_names")
                if isinstance(given, list) and all(isinstance(n, str) for n in given):
                    names[key] = tuple(given)
                if isinstance(bench.get("version"), str):
                    versions[key] = bench["version"]
    return names, versions


def read_run(
    path: str,
    machine: str,
    names: Mapping[str, tuple[str, ...]],
    versions: Mapping[str, str] | None = None,
) -> Run | None:
    """The profile's numbers in one asv results file; None when it has none (no profile, or
    every entry skipped or failed) or is not a results file. A benchmark measured by another
    version than ``versions`` names (another way of measuring) is left out, as asv's own site
    does."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        columns = data["result_columns"]
        results = data["results"]
        i_result, i_params = columns.index("result"), columns.index("params")
        i_version = columns.index("version") if "version" in columns else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    run = Run(
        machine=machine,
        commit=str(data.get("commit_hash", "")),
        date=data.get("date"),
        path=path,
        env_name=str(data.get("env_name", "")),
        python=str(data.get("python", "")),
        requirements=dict(data.get("requirements") or {}),
        machine_info=dict(data.get("params") or {}),
    )
    for bench, row in results.items():
        if not bench.startswith(PROFILE) or not isinstance(row, list):
            continue
        current = (versions or {}).get(bench)
        if current is not None and i_version is not None and len(row) > i_version:
            if row[i_version] != current:
                continue
        result = row[i_result] if len(row) > i_result else None
        params = row[i_params] if len(row) > i_params else None
        if not isinstance(params, list) or not isinstance(result, list):
            continue  # a benchmark that failed as a whole, or an unparametrised one
        lists = [[_param(v) for v in p] for p in params]
        bench_names = names.get(bench, ())
        if len(bench_names) != len(lists):
            continue  # another version of the suite: its parameters cannot be told apart
        keys = list(itertools.product(*lists))
        if len(keys) != len(result):
            continue
        run.benchmarks[bench] = (tuple(bench_names), lists, dict(zip(keys, result)))
    return run if _count(run) else None  # a run whose every entry failed has no numbers


def _machine_info(machine_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(machine_dir, "machine.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def load_profile(results_dir: str) -> dict[str, list[Run]]:
    """Every machine's profile runs, oldest commit first (by commit date); machines without
    any are left out. One run per commit: where several environments recorded one, the file
    with the most numbers."""
    if not os.path.isdir(results_dir):
        return {}
    names, versions = _suite(results_dir)
    machines: dict[str, list[Run]] = {}
    for machine in sorted(os.listdir(results_dir)):
        machine_dir = os.path.join(results_dir, machine)
        if not os.path.isdir(machine_dir):
            continue
        info = _machine_info(machine_dir)
        by_commit: dict[str, Run] = {}
        for name in sorted(os.listdir(machine_dir)):
            if not name.endswith(".json") or name == "machine.json":
                continue
            run = read_run(os.path.join(machine_dir, name), machine, names, versions)
            if run is None:
                continue
            run.machine_info = {**run.machine_info, **{k: v for k, v in info.items() if v}}
            old = by_commit.get(run.commit)
            if old is None or _count(run) > _count(old):
                by_commit[run.commit] = run
        if by_commit:
            machines[machine] = sorted(
                by_commit.values(), key=lambda r: (_number(r.date) or 0.0, r.commit)
            )
    return dict(sorted(machines.items(), key=lambda kv: (kv[0] != REFERENCE_MACHINE, kv[0])))


def _count(run: Run) -> int:
    return sum(
        _number(v) is not None for _, _, values in run.benchmarks.values() for v in values.values()
    )


# --- the profile's page --------------------------------------------------------------------


def _library(backend: str) -> str:
    return backend.split(":", 1)[0]


def own_names(op: str, backends: Iterable[str]) -> str:
    """The own functions of ``op`` for the libraries of ``backends``, as a sentence part."""
    parts = []
    for lib in dict.fromkeys(_library(b) for b in backends):
        name = OWN.get(lib, {}).get(op, "its own function")
        parts.append(f"{name} for {LIBRARY_NAMES.get(lib, lib)}")
    return "; ".join(parts)


def _machine_line(run: Run) -> str:
    info = run.machine_info
    bits = [str(info[k]) for k in ("cpu", "arch", "os") if info.get(k)]
    if info.get("num_cpu"):
        bits.append(f"{info['num_cpu']} CPUs")
    ram = str(info.get("ram") or "")
    if ram:  # "24GiB" from asv_bench/record, a number of bytes from asv's own default
        bits.append(f"{int(ram) / 2**30:.0f} GiB RAM" if ram.isdigit() else f"{ram} RAM")
    pinned = [f"{k} {v}" for k, v in run.requirements.items() if v]
    env = f"Python {run.python}" if run.python else ""
    if pinned:
        env += (", " if env else "") + ", ".join(pinned)
    text = f"Machine `{run.machine}`"
    if bits:
        text += " (" + ", ".join(bits) + ")"
    if env:
        text += f"; asv environment {env}"
    return text + "."


def op_table(run: Run, op: str) -> tuple[str, list[str]]:
    """The Markdown table of ``op`` at ``run``, and the backends with no number at all."""
    rows: list[list[str]] = []
    empty: list[str] = []
    for backend in run.values_of("backend"):
        first = True
        for shape, dtype in itertools.product(run.values_of("shape"), run.values_of("dtype")):
            at = {"op": op, "backend": backend, "shape": shape, "dtype": dtype}
            ms = {i: run.get(MS, impl=i, **at) for i in ("fast", "generic", "peer")}
            spread = {i: run.get(SPREAD, impl=i, **at) for i in ms}
            speedup, limit = run.speedup(**at), run.get(LIMIT, **at)
            if all(v is None for v in (*ms.values(), speedup, limit)):
                continue  # left out (NumPy has no bfloat16) or skipped at this commit

            def timed(impl: str, ms: dict[str, float | None] = ms, spread: Any = spread) -> str:
                text = fmt_ms(ms[impl])
                if ms[impl] is not None and spread[impl] is not None:
                    text += f" ({fmt_percent(spread[impl])})"
                return text

            rows.append(
                [
                    backend if first else "",
                    shape,
                    dtype,
                    timed("fast"),
                    timed("generic"),
                    timed("peer"),
                    fmt_ratio(speedup),
                    fmt_percent(limit),
                ]
            )
            first = False
        if first:
            empty.append(backend)
    header = [
        "library",
        "shape",
        "dtype",
        "fast, ms (spread)",
        "generic, ms (spread)",
        "library's own, ms (spread)",
        "speed-up over own",
        "fraction of limit",
    ]
    return (table(header, rows) if rows else ""), empty


#: Mantissas of the ticks of a log axis, from sparse to dense: the first that gives at least
#: four ticks in view is used.
_TICK_STEPS = [
    (1.0,),
    (1.0, 2.0, 5.0),
    (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
    (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
    tuple(1 + i / 20 for i in range(20)) + tuple(2 + i / 5 for i in range(40)),
]


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values of a log axis viewing ``low``..``high``: decades when it spans many, finer
    steps (1, 2, 5, then 1.5, 3...) when it spans little, so that at least four are labelled
    where possible."""
    if not (0 < low < high):
        return []
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks: list[float] = []
    for steps in _TICK_STEPS:
        ticks = [
            float(f"{m * 10.0**e:.6g}")
            for e in decades
            for m in steps
            if low <= m * 10.0**e <= high
        ]
        if len(ticks) >= 4:
            break
    if len(ticks) > 12:  # many decades: one tick every few of them
        ticks = ticks[:: math.ceil(len(ticks) / 8)]
    return ticks


def history_chart(runs: list[Run], op: str, path: str, dtype: str = "float32") -> bool:
    """Draw the history of ``op``'s speed-up over the library's own and of its fraction of the
    limit, one line per library and shape in ``dtype``; False when there is nothing to draw."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import NullLocator

    series: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    backends, shapes = [], []
    for run in runs:
        backends += [b for b in run.values_of("backend") if b not in backends]
        shapes += [s for s in run.values_of("shape") if s not in shapes]
    for backend, shape in itertools.product(backends, shapes):
        at = {"op": op, "backend": backend, "shape": shape, "dtype": dtype}
        speedups = [run.speedup(**at) for run in runs]
        limits = [run.get(LIMIT, **at) for run in runs]
        if any(v is not None for v in speedups + limits):
            series[backend, shape] = (
                [math.nan if v is None else v for v in speedups],
                [math.nan if v is None else v for v in limits],
            )
    if not series:
        return False
    fig = Figure(figsize=(8.4, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5"]
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    x = list(range(len(runs)))
    for (backend, shape), (speedup_line, limit_line) in series.items():
        color = colors[backends.index(backend) % len(colors)]
        line, marker = styles[shapes.index(shape) % len(styles)]
        style = {"color": color, "linestyle": line, "marker": marker, "markersize": 4}
        top.plot(x, speedup_line, label=f"{backend} {shape}", **style)
        bottom.plot(x, limit_line, **style)
    top.axhline(1.0, color="black", linewidth=0.8)
    top.set_yscale("log")
    bottom.set_yscale("log")
    top.set_ylabel("speed-up over own (×)")
    bottom.set_ylabel("fraction of the limit")
    top.set_title(f"{op}, {dtype}: above the black line the fast path is faster", fontsize=10)
    for ax, unit, scale in ((top, "{:.3g}×", 1), (bottom, "{:.3g}%", 100)):
        low, high = ax.get_ylim()
        ticks = log_ticks(low, high)
        ax.set_yticks(ticks, [unit.format(t * scale) for t in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylim(low, high)
        ax.grid(True, which="major", alpha=0.3)
    step = max(1, math.ceil(len(runs) / 40))
    bottom.set_xticks(x[::step], [r.short for r in runs][::step], rotation=90, fontsize=7)
    bottom.set_xlabel("commit (oldest first)")
    if len(runs) == 1:
        bottom.set_xlim(-1, 1)
    top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    write(path, buffer.getvalue())
    return True


NO_RESULTS = """\
```{{note}}
No results of the recorded profile are committed{where}. `asv_bench/record` (from a checkout
with the `bench` extra installed) benchmarks every commit of main that has none on this
machine and writes them under `asv_bench/results/<machine>/`; commit that folder to see them
here.
```
"""


def profile_markdown(
    runs_by_machine: Mapping[str, list[Run]], chart_dir: str, chart_uri: str
) -> str:
    """The Markdown of the profile's section; the charts are drawn into
    ``chart_dir/<machine>/<op>.png``, which the page reaches as ``chart_uri/<machine>/...``."""
    if not runs_by_machine:
        return NO_RESULTS.format(where=" yet")
    out: list[str] = []
    for machine, runs in runs_by_machine.items():
        newest = runs[-1]
        out += [f"### Machine `{machine}`", ""]
        source = f"The tables are from commit `{newest.short}` (committed {fmt_date(newest.date)})"
        if len(runs) == 1:
            source += ", the only commit with profile results on this machine so far."
        else:
            source += (
                f", the newest of the {len(runs)} commits with profile results on this machine; "
                f"the charts follow all of them, from `{runs[0].short}` "
                f"({fmt_date(runs[0].date)}) on."
            )
        out.append(f"{_machine_line(newest)} {source}")
        out.append("")
        for op in newest.values_of("op"):
            out += [f"#### `{op}`", ""]
            rendered, empty = op_table(newest, op)
            out.append(f"The library's own: {own_names(op, newest.values_of('backend'))}.")
            out.append("")
            if rendered:
                out.append(rendered)
            else:
                out += ["No numbers for this operation at this commit (all skipped).", ""]
            if empty and rendered:
                out += [f"Skipped at this commit: {', '.join(empty)}.", ""]
            name = f"{machine}/{op}.png"
            if history_chart(runs, op, os.path.join(chart_dir, machine, f"{op}.png")):
                out += [
                    f"```{{figure}} {chart_uri}/{name}",
                    f":alt: history of the speed-up of {op} over the library's own, "
                    f"and of its fraction of the limit, on {machine}",
                    "",
                    f"`{op}`, float32: speed-up over the library's own (top; above 1: faster) "
                    f"and fraction of the limit (bottom) at each recorded commit on "
                    f"`{machine}`, oldest first; a gap is a commit without that number.",
                    "```",
                    "",
                ]
    return "\n".join(out)


def profile_page(srcdir: str) -> None:
    """Write ``_generated/perf_profile.md`` (and its charts) from the committed results."""
    results = os.path.join(os.path.dirname(os.path.abspath(srcdir)), "asv_bench", "results")
    text = profile_markdown(
        load_profile(results), os.path.join(srcdir, "_generated", "perf"), "/_generated/perf"
    )
    write(os.path.join(srcdir, "_generated", "perf_profile.md"), text)


# --- the quick run (python -m xpsoftmax bench --json) --------------------------------------

#: How the quick run's implementations are called, in column order.
QUICK_IMPLS = {
    "fast": "fast",
    "generic": "generic",
    "own": "library's own",
    "peer": "library's own",
}
#: Labels of the quick run's provenance keys (others are shown as they are).
QUICK_LABELS = {
    "xpsoftmax": "xpsoftmax version",
    "versions": "library versions",
    "commit_dirty": "uncommitted changes",
    "generic_forced": "generic forced",
    "own": "the library's own",
    "threads": "threads",
    "baselines": "copy baselines",
}


def quick_rows(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (one per library, device, operation and implementation) and the provenance
    of a bench JSON document, whichever of its shapes.

    The first shape has ``results: [{library, device, copy_gbps, ops: {op: {impl: {seconds,
    gbps, copy_fraction}}}}]``; the later one has flat rows ``{library, device, op, impl,
    seconds, seconds_min, seconds_max, ..., speedup, missing}`` beside provenance keys
    (versions, commit, date, machine, threads, baselines...).
    """
    if isinstance(data, list):
        data = {"results": data}
    if not isinstance(data, dict):
        return [], {"value": data}
    raw = data.get("results")
    meta = {k: v for k, v in data.items() if k != "results"}
    rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict):
            continue
        if isinstance(r.get("ops"), dict):  # the first shape: nested per operation
            base = {k: v for k, v in r.items() if k != "ops"}
            if _number(r.get("copy_gbps")) is not None:
                where = f"{r.get('library', '?')} ({r.get('device', '?')})"
                baselines[where] = r["copy_gbps"]
            for op, impls in r["ops"].items():
                for impl, values in impls.items() if isinstance(impls, dict) else []:
                    row = {**base, "op": op, "impl": impl}
                    row.update(values if isinstance(values, dict) else {"seconds": values})
                    rows.append(row)
        else:
            rows.append(dict(r))
    if baselines and "baselines" not in meta:
        meta["copy bandwidth, GB/s"] = baselines
    _add_speedups(rows)
    return rows, meta


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Rows without a ``speedup``: the own median over theirs (where both exist)."""
    own = {
        (r.get("library"), r.get("device"), r.get("op")): _number(r.get("seconds"))
        for r in rows
        if r.get("impl") in ("own", "peer")
    }
    for r in rows:
        if "speedup" in r or r.get("impl") in ("own", "peer"):
            continue
        mine, theirs = (
            _number(r.get("seconds")),
            own.get((r.get("library"), r.get("device"), r.get("op"))),
        )
        r["speedup"] = theirs / mine if mine and theirs else None


def _scalar(key: str, value: Any) -> str:
    if value is None or (isinstance(value, (list, dict, str)) and not value):
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value):
        joiner = "x" if key == "shape" else ", "
        return joiner.join(str(v) for v in value)
    if isinstance(value, list):
        return f"{len(value)} entries"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_scalar(k, v)}" for k, v in value.items())
    return str(value).replace("\n", " ")


def key_values(meta: Mapping[str, Any], depth: int = 0) -> list[str]:
    """A Markdown list of ``meta``: ``key: value``, a nested dict as an indented list."""
    lines = []
    for key, value in meta.items():
        label = QUICK_LABELS.get(key, key.replace("_", " ")) if depth == 0 else key
        if isinstance(value, dict) and value:
            lines.append("  " * depth + f"- {label}:")
            lines += key_values(value, depth + 1)
        else:
            lines.append("  " * depth + f"- {label}: {_scalar(key, value)}")
    return lines


def _baselines_table(baselines: Mapping[str, Any]) -> str:
    rows = []
    for device, b in baselines.items():
        if not isinstance(b, dict):
            rows.append([device, "", "", "", _scalar("", b), ""])
            continue
        size = _number(b.get("bytes"))
        seconds = _number(b.get("seconds"))
        gbps = _number(b.get("gbps"))
        rows.append(
            [
                device,
                b.get("library", NONE),
                b.get("dtype", NONE),
                NONE if size is None else fmt_bytes(size),
                fmt_ms(None if seconds is None else seconds * 1e3),
                NONE if gbps is None else f"{gbps:.1f}",
            ]
        )
    return table(["device", "copied with", "dtype", "size", "ms", "GB/s"], rows)


def _quick_time(row: dict[str, Any] | None) -> str:
    if row is None:
        return NONE
    seconds = _number(row.get("seconds"))
    if seconds is None:
        return NONE
    text = fmt_ms(seconds * 1e3)
    low, high = _number(row.get("seconds_min")), _number(row.get("seconds_max"))
    if low is not None and high is not None:
        text += f" ({fmt_ms(low * 1e3)}–{fmt_ms(high * 1e3)})"
    return text


def quick_markdown(data: Any, source: str) -> str:
    """The Markdown of one bench JSON document: provenance, copy baselines, results."""
    rows, meta = quick_rows(data)
    out = [f"From `{source}`, written by `python -m xpsoftmax bench --json`.", ""]
    baselines = meta.pop("baselines", None)
    if meta:
        out += key_values(meta)
        out.append("")
    if isinstance(baselines, dict) and baselines:
        out += ["The plain copy each device's fractions are measured against:", ""]
        out.append(_baselines_table(baselines))
    if not rows:
        out += ["The document has no results.", ""]
        return "\n".join(out)
    if not all(isinstance(r.get(f), str) for r in rows for f in ("library", "op", "impl")):
        return "\n".join([*out, _generic_table(rows)])
    by_cell: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cell = by_cell.setdefault((r["library"], str(r.get("device", "")), r["op"]), {})
        cell["own" if r["impl"] in ("own", "peer") else r["impl"]] = r
    table_rows = []
    #: (library label, reason) -> the cells without a time for that reason
    missing: dict[tuple[str, str], list[str]] = {}
    cells_of: dict[str, int] = {}
    timed: set[str] = set()
    for (library, device, op), impls in by_cell.items():
        label = f"{library} ({device})" if device else library
        for impl, r in impls.items():
            cells_of[label] = cells_of.get(label, 0) + 1
            if _number(r.get("seconds")) is not None:
                timed.add(label)
            elif r.get("missing"):
                what = f"`{op}` {QUICK_IMPLS.get(impl, impl)}"
                missing.setdefault((label, str(r["missing"])), []).append(what)
    last = None
    for (library, device, op), impls in by_cell.items():
        label = f"{library} ({device})" if device else library
        if label not in timed:
            continue  # a library or device that did not run: one note below, no empty rows
        fast = impls.get("fast")
        table_rows.append(
            [
                label if label != last else "",
                f"`{op}`",
                _quick_time(fast),
                _quick_time(impls.get("generic")),
                _quick_time(impls.get("own")),
                fmt_ratio(_number(fast.get("speedup")) if fast else None),
                fmt_percent(_number(fast.get("copy_fraction")) if fast else None),
            ]
        )
        last = label
    notes = []
    for (label, reason), cells in missing.items():
        which = "not run" if len(cells) == cells_of[label] else ", ".join(cells)
        notes.append(f"- {label}: {which}: {reason}")
    header = [
        "library",
        "operation",
        "fast, ms",
        "generic, ms",
        "library's own, ms",
        "speed-up over own",
        "fraction of copy",
    ]
    out.append(table(header, table_rows))
    out.append(
        "Times are medians, with the fastest and the slowest sample in brackets where the "
        "document has them; the speed-up and the fraction of the copy are the fast path's."
    )
    out.append("")
    if notes:
        out += ["Not measured:", "", *notes, ""]
    return "\n".join(out)


def _generic_table(rows: list[dict[str, Any]]) -> str:
    """Rows of an unknown shape: their scalar fields as columns, nested ones summarised."""
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header and k != "samples"]
    return table(header, [[_scalar(k, r.get(k)) for k in header] for r in rows])


def bench_page(srcdir: str, which: str) -> None:
    """Write ``_generated/bench_<which>.md`` from ``_static/bench/<which>.json``."""
    path = os.path.join(srcdir, "_static", "bench", f"{which}.json")
    target = os.path.join(srcdir, "_generated", f"bench_{which}.md")
    if not os.path.exists(path):
        write(
            target,
            f"```{{note}}\nNo {which.upper()} results are committed yet: "
            f"`docs/_static/bench/{which}.json` is absent.\n```\n",
        )
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        write(target, f"```{{warning}}\n`{which}.json` could not be read: {exc}\n```\n")
        return
    write(target, quick_markdown(data, f"docs/_static/bench/{which}.json"))
