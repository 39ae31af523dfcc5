"""Per-backend counts of a pytest JUnit XML report: how many tests ran, passed, failed and were
skipped on each array library and device (the backend id in the test's parameters), and why
tests were skipped. Usage: python .ci/backend_summary.py report.xml"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

from xpsoftmax.testing.backends import BY_ID

#: The ids of the conformance kit's backends (CI installs the package before running this).
BACKENDS = tuple(BY_ID)


def backend_of(name: str) -> str:
    params = re.search(r"\[(.*)\]$", name)
    if params:
        for part in re.split(r"[-\[\]]", params.group(1)):
            if part in BACKENDS:
                return part
    return "(no backend parameter)"


def main(path: str) -> int:
    counts: dict[str, Counter] = defaultdict(Counter)
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        counts[backend_of(case.get("name", ""))][outcome] += 1
    print(f"{'backend':24s} {'ran':>6s} {'passed':>7s} {'failed':>7s} {'skipped':>8s}")
    for backend in sorted(counts, key=lambda b: (b not in BACKENDS, b)):
        c = counts[backend]
        ran = c["passed"] + c["failed"]
        print(f"{backend:24s} {ran:6d} {c['passed']:7d} {c['failed']:7d} {c['skipped']:8d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
