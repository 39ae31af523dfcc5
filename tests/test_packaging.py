"""Packaging basics: the licence ships, the version lives in one place, the listing reads well.

* ``LICENSE`` (BSD-3-Clause) is in the wheel built from a clean copy of the source tree, and
  the wheel's metadata names the licence;
* ``xpsoftmax.__version__`` is the installed package's metadata version (the one literal lives
  in ``pyproject.toml``), ``"0+unknown"`` when there is no metadata;
* ``xpsoftmax.implementations()`` prints as an aligned table and is still a list of its rows.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import xpsoftmax
from xpsoftmax._listing import Implementation, ImplementationTable

ROOT = Path(__file__).resolve().parent.parent

#: What a wheel is built from (the rest of the checkout plays no part in it).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "src", "backends")


def _setuptools_is_recent() -> bool:
    """Whether this environment can build without isolation (the PEP 639 licence fields)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(p) for p in re.findall(r"\d+", version)[:1]) >= (77,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source tree (nothing left over from a build)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    tree.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, tree / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist")]
    if _setuptools_is_recent():  # offline and quick: this environment's setuptools
        command.append("--no-build-isolation")
    proc = subprocess.run(
        [*command, str(tree)], capture_output=True, text=True, timeout=300, cwd=tmp
    )
    if proc.returncode != 0 and re.search(
        r"No matching distribution|Could not find a version|Network is unreachable", proc.stderr
    ):
        pytest.skip(f"the build requirements cannot be installed here: {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (tmp / "dist").glob("xpsoftmax-*.whl")
    return built


def test_license_file_is_bsd_3_clause() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, the xpsoftmax developers" in text
    assert "Neither the name of the copyright holder" in text


def test_wheel_ships_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        licence = f"{dist_info}/licenses/LICENSE"
        assert licence in names, names
        assert zf.read(licence).decode() == (ROOT / "LICENSE").read_text(encoding="utf-8")
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "License-File: LICENSE" in metadata
    assert "xpsoftmax/__init__.py" in names and "xpsoftmax/backends/numpy/blocks.py" in names


def test_version_comes_from_the_package_metadata() -> None:
    assert xpsoftmax.__version__ == importlib.metadata.version("xpsoftmax")
    assert "__version__" in xpsoftmax.__all__


def test_version_literal_lives_in_pyproject_only() -> None:
    source = (ROOT / "src" / "xpsoftmax" / "__init__.py").read_text(encoding="utf-8")
    assert not re.search(r"""__version__\s*(:\s*str\s*)?=\s*["']\d+\.\d+""", source)
    assert re.search(r'(?m)^version = "[^"]+"$', (ROOT / "pyproject.toml").read_text())


def test_version_without_metadata_is_unknown() -> None:
    """Imported from a tree that is not installed, the version says so instead of failing."""
    code = (
        "import importlib.metadata as m\n"
        "def missing(name):\n"
        "    raise m.PackageNotFoundError(name)\n"
        "m.version = missing\n"
        "import xpsoftmax\n"
        "print(xpsoftmax.__version__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0+unknown"


def test_implementations_prints_as_a_table() -> None:
    rows = xpsoftmax.implementations("numpy")
    lines = repr(rows).splitlines()
    assert str(rows) == repr(rows)
    assert len(lines) == len(rows) + 2
    assert lines[0].split() == [
        "op",
        "library",
        "device",
        "implementation",
        "dtypes",
        "conditions",
    ]
    assert set(lines[1].replace(" ", "")) == {"-"}
    # The columns line up: each starts where its header does, on every line.
    starts = [lines[0].index(name) for name in ("library", "device", "implementation", "dtypes")]
    for line, row in zip(lines[2:], rows):
        assert line.startswith(row.op + " ")
        for start, value in zip(starts, (row.library, row.device, row.implementation)):
            assert line[start:].startswith(value + " "), (line, value)
        assert line[starts[3] :].startswith(", ".join(row.dtypes))
        assert line.rstrip().endswith(row.conditions)


def test_implementations_is_still_a_list_of_rows() -> None:
    rows = xpsoftmax.implementations("numpy")
    assert isinstance(rows, list) and isinstance(rows, ImplementationTable)
    assert all(isinstance(r, Implementation) for r in rows)
    assert rows == list(rows) and rows[1:] == list(rows)[1:]
    assert rows[0].op == "softmax" and rows[-1].implementation == "generic"
    assert [r.op for r in rows[:2]] == ["softmax", "softmax"]


def test_empty_table_has_a_header() -> None:
    lines = repr(ImplementationTable()).splitlines()
    assert len(lines) == 2 and lines[0].startswith("op")
