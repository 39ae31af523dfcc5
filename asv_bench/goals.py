"""The CPU goals of the project, read off committed asv results: one table, one verdict each.

Every ratio compares two results of the same asv run (same commit, same machine, same
process launch method), as measured side by side. Usage, from the repository root::

    python asv_bench/goals.py                       # newest results of every machine
    python asv_bench/goals.py --commit 1a2b3c4d --markdown docs/_static/bench/cpu-goals.md

The time ratios are ``peer time / fast time``: above 1 means the fast path is faster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: (label, benchmark, params of the fast side, params of the peer side, goal, kind)
#: kind "speedup": peer time / fast time >= goal; "at_most": value <= goal (a difference or a
#: memory ratio, in the benchmark's unit).
SHAPES = ("512x131072", "4096x32000")


def _goals() -> list[tuple[str, str, dict, dict, float, str]]:
    goals = []
    for shape in SHAPES:
        base = {"shape": shape, "dtype": "float32"}
        np_fast = {"backend": "numpy", "impl": "fast", **base}
        for op, bench, goal in (
            ("softmax", "softmax.Softmax.time_softmax", 4.0),
            ("log_softmax", "log_softmax.LogSoftmax.time_log_softmax", 10.0),
            ("logsumexp", "logsumexp.LogSumExp.time_logsumexp", 20.0),
        ):
            peer = {**np_fast, "impl": "peer"}
            goals.append(
                (f"NumPy {op} vs scipy.special, {shape}", bench, np_fast, peer, goal, "speedup")
            )
        goals.append(
            (
                f"NumPy softmax vs torch.softmax (CPU), {shape}",
                "softmax.Softmax.time_softmax",
                np_fast,
                {"backend": "torch:cpu", "impl": "peer", **base},
                1.3,
                "speedup",
            )
        )
        goals.append(
            (
                f"NumPy cross_entropy_with_grad vs torch CE fwd+bwd, {shape}",
                "cross_entropy.CrossEntropy.time_cross_entropy",
                {**np_fast, "pass": "forward+backward"},
                {"backend": "torch:cpu", "impl": "peer", **base, "pass": "forward+backward"},
                3.0,
                "speedup",
            )
        )
        for backend in ("torch:cpu", "jax:cpu"):
            for op, bench in (
                ("softmax", "softmax.Softmax.time_softmax"),
                ("log_softmax", "log_softmax.LogSoftmax.time_log_softmax"),
                ("logsumexp", "logsumexp.LogSumExp.time_logsumexp"),
            ):
                fast = {"backend": backend, "impl": "fast", **base}
                goals.append(
                    (
                        f"{backend} {op} fast vs its own, {shape}",
                        bench,
                        fast,
                        {**fast, "impl": "peer"},
                        0.9,
                        "speedup",
                    )
                )
            for pass_ in ("forward", "forward+backward"):
                fast = {"backend": backend, "impl": "fast", **base, "pass": pass_}
                goals.append(
                    (
                        f"{backend} cross_entropy {pass_} fast vs its own, {shape}",
                        "cross_entropy.CrossEntropy.time_cross_entropy",
                        fast,
                        {**fast, "impl": "peer"},
                        0.9,
                        "speedup",
                    )
                )
    for op, cls in (
        ("softmax", "Softmax"),
        ("log_softmax", "LogSoftmax"),
        ("logsumexp", "LogSumExp"),
    ):
        goals.append(
            (
                f"NumPy {op}: peak extra memory / input size, 4096x32000",
                f"{op}.{cls}.track_peak_memory",
                {"backend": "numpy", "impl": "fast", "shape": "4096x32000", "dtype": "float32"},
                {},
                0.1,
                "at_most",
            )
        )
    goals.append(
        (
            "NumPy cross_entropy_with_grad: peak extra memory / input size, 4096x32000",
            "cross_entropy.CrossEntropy.track_peak_memory",
            {
                "backend": "numpy",
                "impl": "fast",
                "shape": "4096x32000",
                "dtype": "float32",
                "pass": "forward+backward",
            },
            {},
            0.1,
            "at_most",
        )
    )
    for backend in ("numpy", "torch:cpu", "jax:cpu"):
        for op, bench in (
            ("softmax", "softmax.Softmax.time_softmax"),
            ("logsumexp", "logsumexp.LogSumExp.time_logsumexp"),
        ):
            fast = {"backend": backend, "impl": "fast", "shape": "32x10", "dtype": "float32"}
            goals.append(
                (
                    f"{backend} {op} 32x10: overhead over its own (us)",
                    bench,
                    fast,
                    {**fast, "impl": "peer"},
                    10.0,
                    "overhead",
                )
            )
    return goals


def _load(path: Path) -> dict[str, dict[tuple, float]]:
    """benchmark name -> {params tuple (as strings): value}."""
    data = json.loads(path.read_text())
    columns = data.get("result_columns", ["result", "params"])
    table = {}
    for name, row in data["results"].items():
        entry = dict(zip(columns, row))
        params = entry.get("params") or []
        values = entry.get("result") or []
        combos = list(itertools.product(*params)) if params else [()]
        table[name] = {
            tuple(str(p).strip("'\"") for p in combo): v for combo, v in zip(combos, values)
        }
    return table


def _param_names(benchmarks_json: Path) -> dict[str, list[str]]:
    data = json.loads(benchmarks_json.read_text())
    return {k: v.get("param_names", []) for k, v in data.items() if isinstance(v, dict)}


def _value(table, names, bench, params):
    order = names.get(bench)
    if order is None or bench not in table:
        return None
    key = tuple(params[n] for n in order)
    v = table[bench].get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def evaluate(result_file: Path) -> list[dict]:
    table = _load(result_file)
    names = _param_names(RESULTS / "benchmarks.json")
    rows = []
    for label, bench, fast, peer, goal, kind in _goals():
        a = _value(table, names, bench, fast)
        b = _value(table, names, bench, peer) if peer else None
        if a is None or (peer and b is None):
            rows.append({"goal": label, "value": None, "target": goal, "kind": kind, "met": None})
            continue
        if kind == "speedup":
            value = b / a
            met = value >= goal
        elif kind == "overhead":
            value = (a - b) * 1e6
            met = value <= goal
        else:
            value = a
            met = value <= goal
        rows.append({"goal": label, "value": value, "target": goal, "kind": kind, "met": met})
    return rows


def _format(rows: list[dict], markdown: bool) -> str:
    def target(r):
        return {
            "speedup": f">= {r['target']}x",
            "overhead": f"<= {r['target']} us",
            "at_most": f"<= {r['target']}",
        }[r["kind"]]

    def value(r):
        if r["value"] is None:
            return "not measured"
        return f"{r['value']:.2f}" + (
            "x" if r["kind"] == "speedup" else " us" if r["kind"] == "overhead" else ""
        )

    def verdict(r):
        return "n/a" if r["met"] is None else ("met" if r["met"] else "MISSED")

    if markdown:
        lines = ["| goal | measured | target | |", "|---|---|---|---|"]
        lines += [f"| {r['goal']} | {value(r)} | {target(r)} | {verdict(r)} |" for r in rows]
        return "\n".join(lines) + "\n"
    width = max(len(r["goal"]) for r in rows)
    return "\n".join(
        f"{r['goal']:<{width}}  {value(r):>13}  {target(r):>10}  {verdict(r)}" for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", help="commit hash prefix (default: the newest result file)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    files = [p for p in RESULTS.glob("*/*.json") if p.name != "machine.json"]
    if args.commit:
        files = [p for p in files if p.name.startswith(args.commit[:8])]
    if not files:
        print(f"no asv results under {RESULTS}", file=sys.stderr)
        return 1
    newest = max(files, key=lambda p: json.loads(p.read_text()).get("date", 0))
    rows = evaluate(newest)
    print(f"{newest.relative_to(RESULTS)}:")
    print(_format(rows, markdown=False))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            f"Results: `asv_bench/results/{newest.relative_to(RESULTS)}`\n\n" + _format(rows, True)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
