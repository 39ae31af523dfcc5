"""The types a user's type checker sees: ``mypy --strict`` on a user's script.

``tests/typing/user_script.py`` uses xpsoftmax with NumPy and PyTorch the way a user would;
``mypy --strict`` must accept it (``.ci/run`` checks it too) and it must run. A snippet of
misuse (a reduction that does not exist, ``float`` of the ``return_sign=True`` pair, a NumPy
result assigned to a ``torch.Tensor``, ...) must be rejected, one error on each marked line:
that also shows the results are typed (an ``Any`` result would let every line through).

mypy runs with the project's configuration and ``--follow-imports=silent``: the
errors of the script are reported, not those of the modules it imports, as for an installed
package. Its cache lives apart from the project's (``.mypy_cache/user-script``): the strict
options would otherwise invalidate the project's cache, and the project's run this one's.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "typing" / "user_script.py"
CACHE = ROOT / ".mypy_cache" / "user-script"

#: Misuse, one error per line marked ``# error``; the other lines must check.
MISUSE = """\
import numpy as np
import numpy.typing as npt
import torch

import xpsoftmax as xs

a = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
labels = np.array([0, 2])
x = torch.zeros(2, 3)
target = torch.tensor([0, 2])

xs.cross_entropy(a, labels, reduction="avg")  # error
loss, grad = xs.cross_entropy_with_grad(x, target, reduction="batchmean")  # error
float(xs.logsumexp(a, return_sign=True))  # error
lse: torch.Tensor = xs.logsumexp(x, return_sign=True)  # error
p: torch.Tensor = xs.softmax(a)  # error
logp: torch.Tensor = xs.log_softmax(a, axis=0)  # error
per_row: torch.Tensor = xs.cross_entropy(a, labels, reduction="none")  # error
pair: torch.Tensor = xs.cross_entropy_with_grad(x, target)  # error
q: npt.NDArray[np.float64] = xs.softmax(x)  # error
xs.softmax("1.0 2.0")  # error
xs.log_softmax(1 + 2j)  # error
xs.logsumexp(a, axis="last")  # error
"""


def _needs(*modules: str) -> None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    # Without NumPy or torch the project's ``ignore_missing_imports`` would make them Any, and
    # every check would pass: skip instead.
    _needs("mypy", "numpy", "torch")
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
    command += ["--cache-dir", str(CACHE), "--no-color-output", "--no-error-summary", str(path)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_user_script_passes_strict_mypy() -> None:
    result = _mypy(SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_misuse_is_reported(tmp_path: Path) -> None:
    snippet = tmp_path / "misuse.py"
    snippet.write_text(MISUSE, encoding="utf-8")
    result = _mypy(snippet)
    assert result.returncode == 1, result.stdout + result.stderr
    expected = {n for n, line in enumerate(MISUSE.splitlines(), 1) if line.endswith("# error")}
    reported = {
        int(m.group(1))
        for m in re.finditer(r"^.*misuse\.py:(\d+): error: ", result.stdout, re.MULTILINE)
    }
    assert reported == expected, result.stdout
    assert "\"Literal['mean', 'sum', 'none']\"" in result.stdout, result.stdout


def test_user_script_runs() -> None:
    _needs("numpy", "torch")
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok"), result.stdout


def test_mypy_follows_the_installed_package(tmp_path: Path) -> None:
    """From outside the project (no configuration, no ``mypy_path``), mypy finds xpsoftmax and
    its backends through the installed package: an editable install is a plain path entry
    (``src/``, where ``xpsoftmax/backends`` links to ``backends/``), not an import hook. The
    deliberate error proves the module was read: an unresolved import would be ``Any``."""
    import importlib.metadata

    _needs("mypy", "numpy")
    try:
        importlib.metadata.distribution("xpsoftmax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("xpsoftmax is not installed (run from the source tree)")
    snippet = tmp_path / "outside.py"
    snippet.write_text(
        "import numpy as np\n"
        "from xpsoftmax.backends.numpy import contiguous\n"
        "from xpsoftmax.backends.numpy.blocks import BLOCK_BYTES\n"
        "flag: str = contiguous(np.ones(3))\n"
        "size: str = BLOCK_BYTES\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"]
    command += ["--cache-dir", str(tmp_path / "cache"), str(snippet)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert "outside.py:4: error: Incompatible types in assignment" in out, out
    assert '(expression has type "bool", variable has type "str")' in out, out
    assert "outside.py:5: error: Incompatible types in assignment" in out, out
    assert "Cannot find implementation" not in out, out
