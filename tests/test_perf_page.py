"""The performance page's generated parts (``docs/_ext/perf_page.py``), on synthetic inputs.

A small asv results directory in asv's format (version 2) is written here, with skipped
(null) and failed (NaN) entries and a file of another suite; the page's tables, notes and
charts are built from it. The quick run's JSON is rendered in both of its shapes, and never
as JSON in a cell.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import perf_page  # noqa: E402

pytest.importorskip("matplotlib")

OPS = ["softmax", "logsumexp"]
BACKENDS = ["numpy", "torch:cpu"]
IMPLS = ["fast", "generic", "peer"]
SHAPES = ["512x32000", "32x10"]
DTYPES = ["float32", "bfloat16"]
COLUMNS = ["result", "params", "version", "started_at", "duration"]
MACHINE = "epyc-2core-24g"
COMMITS = ["1" * 40, "2" * 40, "3" * 40]
#: Commit dates (ms since the epoch): the second commit is the newest.
DATES = {
    COMMITS[0]: 1_700_000_000_000,
    COMMITS[1]: 1_700_200_000_000,
    COMMITS[2]: 1_700_100_000_000,
}


def _value(
    kind: str, commit: int, op: str, backend: str, shape: str, dtype: str, impl: str = ""
) -> Any:
    """The synthetic number of one entry: None where asv skips, NaN where it failed."""
    if backend == "numpy" and dtype == "bfloat16":
        return None  # skip_params: NumPy has no bfloat16
    if op == "logsumexp" and backend == "torch:cpu" and impl == "peer":
        return None  # skipped at run time (NotImplementedError)
    if kind == "vs_peer" and op == "logsumexp" and backend == "torch:cpu":
        return None  # no peer: no speed-up
    if kind == "limit" and shape == "32x10" and dtype == "bfloat16":
        return math.nan  # failed
    base = {"fast": 10.0, "generic": 20.0, "peer": 15.0}.get(impl, 1.0)
    scale = 100.0 if shape == "512x32000" else 0.01
    speedup = 1.5 + commit / 10 if shape == "512x32000" else 0.8
    return {
        "ms": base * scale * (1 + commit / 10),
        "spread": 0.04,
        "vs_peer": 1 / speedup,
        "limit": 0.25,
    }[kind]


def _bench(kind: str, commit: int, with_impl: bool) -> list[Any]:
    lists = [OPS, BACKENDS, *([IMPLS] if with_impl else []), SHAPES, DTYPES]
    result = []
    for combo in itertools.product(*lists):
        if with_impl:
            op, backend, impl, shape, dtype = combo
        else:
            (op, backend, shape, dtype), impl = combo, ""
        result.append(_value(kind, commit, op, backend, shape, dtype, impl))
    params = [[repr(v) for v in values] for values in lists]
    return [result, params, "0" * 64, 1_700_000_000_000, 1.0]


def write_results(root: Path, commits: list[str] = COMMITS) -> Path:
    """A results directory of asv's layout: one machine, one file per commit, plus a file of
    the old suite (no profile benchmarks) that must be ignored."""
    machine = root / MACHINE
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(
        json.dumps({"machine": MACHINE, "cpu": "AMD EPYC (2 cores)", "num_cpu": "2", "version": 1})
    )
    for i, commit in enumerate(commits):
        results = {
            "profile.Profile.track_ms": _bench("ms", i, True),
            "profile.Profile.track_spread": _bench("spread", i, True),
            "profile.Profile.track_time_vs_peer": _bench("vs_peer", i, False),
            "profile.Profile.track_limit_fraction": _bench("limit", i, False),
        }
        data = {
            "commit_hash": commit,
            "env_name": "virtualenv-py3.11-torch2.13.0",
            "date": DATES[commit],
            "params": {"machine": MACHINE, "arch": "x86_64", "ram": "24GiB", "python": "3.11"},
            "python": "3.11",
            "requirements": {"numpy": "", "torch": "2.13.0"},
            "env_vars": {},
            "result_columns": COLUMNS,
            "results": results,
            "durations": {},
            "version": 2,
        }
        # asv writes NaN as a bare NaN token, as json.dumps does.
        (machine / f"{commit[:8]}-virtualenv-py3.11-torch2.13.0.json").write_text(json.dumps(data))
    old = {
        "commit_hash": "4" * 40,
        "env_name": "virtualenv-py3.11",
        "date": 1_800_000_000_000,
        "params": {"machine": MACHINE},
        "python": "3.11",
        "requirements": {},
        "result_columns": COLUMNS,
        "results": {"softmax.Softmax.time_softmax": [[0.1], [["'numpy'"]], "0", 0, 1.0]},
        "durations": {},
        "version": 2,
    }
    (machine / "44444444-virtualenv-py3.11.json").write_text(json.dumps(old))
    return root


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results")


# --- reading asv's results -----------------------------------------------------------------


def test_reads_the_profile_runs_in_commit_date_order(results: Path) -> None:
    runs = perf_page.load_profile(str(results))
    assert list(runs) == [MACHINE]
    assert [r.commit for r in runs[MACHINE]] == [COMMITS[0], COMMITS[2], COMMITS[1]]
    newest = runs[MACHINE][-1]
    at = {"op": "softmax", "backend": "numpy", "shape": "512x32000", "dtype": "float32"}
    assert newest.get(perf_page.MS, impl="fast", **at) == pytest.approx(1100.0)
    assert newest.get(perf_page.TIME_VS_PEER, **at) == pytest.approx(1 / 1.6)
    assert newest.speedup(**at) == pytest.approx(1.6)
    assert runs[MACHINE][0].speedup(**at) == pytest.approx(1.5)
    # skipped (null) and failed (NaN) entries read as None
    assert newest.get(perf_page.MS, impl="fast", **{**at, "dtype": "bfloat16"}) is None
    tiny = {**at, "backend": "torch:cpu", "shape": "32x10", "dtype": "bfloat16"}
    assert newest.get(perf_page.LIMIT, **tiny) is None
    assert newest.values_of("op") == OPS
    assert newest.machine_info["cpu"] == "AMD EPYC (2 cores)"


def test_agrees_with_asvs_own_reader(results: Path) -> None:
    asv_results = pytest.importorskip("asv.results")
    path = next((results / MACHINE).glob("2222*.json"))
    theirs = asv_results.Results.load(str(path))
    ours = perf_page.load_profile(str(results))[MACHINE][-1]
    key = "profile.Profile.track_ms"
    params = theirs.get_result_params(key)
    for combo, value in zip(itertools.product(*params), theirs.get_result_value(key, params)):
        names = perf_page.PARAM_NAMES[perf_page.MS]
        mine = ours.get(perf_page.MS, **dict(zip(names, (perf_page._param(v) for v in combo))))
        if value is None or math.isnan(value):
            assert mine is None
        else:
            assert mine == pytest.approx(value)


def test_no_results_directory_or_no_profile(tmp_path: Path) -> None:
    assert perf_page.load_profile(str(tmp_path / "absent")) == {}
    results = write_results(tmp_path / "results", commits=[])
    assert perf_page.load_profile(str(results)) == {}


def test_a_run_that_failed_throughout_is_left_out(results: Path) -> None:
    newest = next((results / MACHINE).glob("2222*.json"))
    data = json.loads(newest.read_text())
    for row in data["results"].values():
        row[0] = [math.nan] * len(row[0])
    newest.write_text(json.dumps(data))
    runs = perf_page.load_profile(str(results))[MACHINE]
    assert [r.commit for r in runs] == [COMMITS[0], COMMITS[2]]


def test_results_of_another_way_of_measuring_are_left_out(results: Path) -> None:
    """As asv's own site does: only benchmarks of the version ``benchmarks.json`` names (the
    profile's ``VERSION``) count; a commit measured the old way has no numbers until recorded
    again."""
    current = {
        bench: {"version": "1" * 64, "param_names": list(names)}
        for bench, names in perf_page.PARAM_NAMES.items()
    }
    (results / "benchmarks.json").write_text(json.dumps(current))
    for commit in COMMITS[1:]:
        path = next((results / MACHINE).glob(f"{commit[:4]}*.json"))
        data = json.loads(path.read_text())
        for row in data["results"].values():
            row[COLUMNS.index("version")] = "1" * 64
        path.write_text(json.dumps(data))
    runs = perf_page.load_profile(str(results))[MACHINE]
    assert [r.commit for r in runs] == [COMMITS[2], COMMITS[1]]


# --- the profile's section -----------------------------------------------------------------


def _rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} ")
    ]


def test_profile_tables_and_charts(results: Path, tmp_path: Path) -> None:
    runs = perf_page.load_profile(str(results))
    charts = tmp_path / "charts"
    text = perf_page.profile_markdown(runs, str(charts), "/_generated/perf/x")
    # where the numbers come from
    assert "commit `22222222`" in text
    assert "2023-11-17" in text  # the newest commit's date
    assert "3 commits" in text
    assert MACHINE in text and "AMD EPYC (2 cores)" in text and "24GiB RAM" in text
    # the library's own functions are named
    assert "`scipy.special.softmax` for NumPy" in text
    assert "`torch.logsumexp` for torch" in text
    # numpy: float32 only (its bfloat16 rows are skipped, not shown as dashes)
    (numpy_big,) = _rows(text.split("#### `logsumexp`")[0], "numpy")
    assert numpy_big == [
        "numpy",
        "512x32000",
        "float32",
        "1100 (4%)",
        "2200 (4%)",
        "1650 (4%)",
        "1.60×",
        "25%",
    ]
    # a skipped peer and speed-up and a failed fraction are dashes, not crashes
    logsumexp = text.split("#### `logsumexp`")[1]
    torch_rows = [r for r in logsumexp.splitlines() if "| 32x10 | bfloat16 |" in r]
    assert torch_rows and torch_rows[0].count("–") == 3  # own, speed-up, fraction of limit
    # one chart per operation, referenced by a figure
    for op in OPS:
        png = charts / MACHINE / f"{op}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"```{{figure}} /_generated/perf/x/{MACHINE}/{op}.png" in text
    # no JSON anywhere
    assert "{" not in re.sub(r"```\{figure\}", "", text)


def test_charts_are_rewritten_only_when_they_change(results: Path, tmp_path: Path) -> None:
    runs = perf_page.load_profile(str(results))
    png = tmp_path / "softmax.png"
    assert perf_page.history_chart(runs[MACHINE], "softmax", str(png))
    first = png.stat().st_mtime_ns
    perf_page.history_chart(runs[MACHINE], "softmax", str(png))
    assert png.stat().st_mtime_ns == first
    assert not perf_page.history_chart(runs[MACHINE], "no_such_op", str(tmp_path / "n.png"))


def test_no_results_is_an_admonition(tmp_path: Path) -> None:
    text = perf_page.profile_markdown({}, str(tmp_path), "")
    assert text.startswith("```{note}")
    assert "asv_bench/record" in text


def test_profile_page_writes_the_include(tmp_path: Path) -> None:
    srcdir = tmp_path / "docs"
    srcdir.mkdir()
    write_results(tmp_path / "asv_bench" / "results")
    perf_page.profile_page(str(srcdir))
    page = (srcdir / "_generated" / "perf_profile.md").read_text()
    assert f"### Machine `{MACHINE}`" in page
    assert (srcdir / "_generated" / "perf" / MACHINE / "softmax.png").exists()
    empty = tmp_path / "bare" / "docs"
    empty.mkdir(parents=True)
    perf_page.profile_page(str(empty))
    assert (
        "No results of the recorded profile"
        in (empty / "_generated" / "perf_profile.md").read_text()
    )


# --- the quick run's JSON ------------------------------------------------------------------

FIRST_SHAPE = {
    "shape": [512, 131072],
    "dtype": "float32",
    "repeats": 5,
    "results": [
        {
            "library": "numpy",
            "device": "cpu",
            "copy_gbps": 34.0,
            "ops": {
                "softmax": {
                    "fast": {"seconds": 0.05, "gbps": 11.0, "copy_fraction": 0.32},
                    "generic": {"seconds": 0.1, "gbps": 5.0, "copy_fraction": 0.15},
                    "own": {"seconds": 0.11, "gbps": 4.9, "copy_fraction": 0.14},
                }
            },
        }
    ],
}


def _row(op: str, impl: str, seconds: float | None, **extra: Any) -> dict[str, Any]:
    row = {"library": "jax", "device": "cpu", "op": op, "impl": impl, "seconds": seconds}
    row.update(seconds_min=None, seconds_max=None, samples=None, gbps=None, copy_fraction=None)
    row.update(speedup=None, missing=None, speedup_missing=None)
    if seconds is not None:
        row.update(seconds_min=seconds * 0.9, seconds_max=seconds * 1.2, samples=[seconds] * 3)
    row.update(extra)
    return row


LATER_SHAPE = {
    "xpsoftmax": "0.4.0",
    "versions": {"numpy": "2.4.0", "jax": "0.10.0"},
    "commit": "abcdef0123456789",
    "commit_dirty": None,
    "date": "2026-11-25T23:00:00+00:00",
    "machine": {"node": "box", "cpu_model": "AMD EPYC 9654", "cpu_count": 2, "python": "3.11.9"},
    "threads": {"requested": None, "set": [], "xpsoftmax": 2},
    "shape": [512, 131072],
    "dtype": "float32",
    "repeats": 5,
    "spread": "min-max",
    "baselines": {
        "cpu": {
            "library": "numpy",
            "dtype": "float32",
            "bytes": 268435456,
            "seconds": 0.0157,
            "seconds_min": 0.015,
            "seconds_max": 0.016,
            "gbps": 34.2,
        }
    },
    "own": {"numpy": "scipy.special", "jax": "jax.nn / optax"},
    "results": [
        _row("softmax", "fast", 0.04, speedup=1.25, copy_fraction=0.3),
        _row("softmax", "generic", 0.08),
        _row("softmax", "own", 0.05),
        _row("cross_entropy", "fast", 0.02, speedup_missing="optax is not installed"),
        _row("cross_entropy", "generic", 0.03),
        _row("cross_entropy", "own", None, missing="optax is not installed"),
        *(
            {**_row(op, impl, None, missing="no CUDA device"), "library": "torch", "device": "cuda"}
            for op in ("softmax", "cross_entropy")
            for impl in ("fast", "generic", "own")
        ),
    ],
}


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_quick_run_first_shape() -> None:
    text = perf_page.quick_markdown(FIRST_SHAPE, "cpu.json")
    assert "- shape: 512x131072" in text
    assert "- repeats: 5" in text
    (row,) = [r for r in _table_lines(text) if "`softmax`" in r]
    assert "50.0" in row and "100" in row and "110" in row
    assert "2.20×" in row  # the own time over the fast one, computed
    assert "32%" in row
    assert not any("{" in line for line in _table_lines(text))


def test_quick_run_later_shape_with_provenance() -> None:
    text = perf_page.quick_markdown(LATER_SHAPE, "cpu.json")
    # nested provenance as a nested list, never as JSON
    assert "- machine:\n  - node: box\n  - cpu_model: AMD EPYC 9654" in text
    assert "- library versions:\n  - numpy: 2.4.0" in text
    assert "- xpsoftmax version: 0.4.0" in text
    assert "{" not in text and "[" not in text
    # the copy baseline per device as a table
    assert "| cpu | numpy | float32 | 256 MiB | 15.7 | 34.2 |" in text
    (softmax,) = [r for r in _table_lines(text) if "`softmax`" in r]
    assert "40.0 (36.0–48.0)" in softmax and "1.25×" in softmax and "30%" in softmax
    (ce,) = [r for r in _table_lines(text) if "`cross_entropy`" in r]
    assert ce.count("–") >= 2 and "–" in ce.split("|")[5]  # no own time, no speed-up
    assert "- jax (cpu): `cross_entropy` library's own: optax is not installed" in text
    # a device that did not run: one note, no rows of dashes
    assert "- torch (cuda): not run: no CUDA device" in text
    assert not any("torch" in line for line in _table_lines(text))


def test_quick_run_unknown_shapes_do_not_crash() -> None:
    for data in ([1, 2], 3.5, {"results": [{"a": {"b": 1}, "c": [1, 2]}]}, {"results": []}):
        text = perf_page.quick_markdown(data, "x.json")
        assert "{" not in "\n".join(_table_lines(text))


def test_bench_page_missing_and_broken(tmp_path: Path) -> None:
    bench = tmp_path / "_static" / "bench"
    bench.mkdir(parents=True)
    perf_page.bench_page(str(tmp_path), "gpu")
    assert "is absent" in (tmp_path / "_generated" / "bench_gpu.md").read_text()
    (bench / "cpu.json").write_text("{not json")
    perf_page.bench_page(str(tmp_path), "cpu")
    assert "could not be read" in (tmp_path / "_generated" / "bench_cpu.md").read_text()
    (bench / "cpu.json").write_text(json.dumps(LATER_SHAPE))
    perf_page.bench_page(str(tmp_path), "cpu")
    assert "`softmax`" in (tmp_path / "_generated" / "bench_cpu.md").read_text()
