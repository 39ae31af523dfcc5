"""Sphinx configuration of the xpsoftmax documentation.

Build (from the repository root):

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

Pages are Markdown (MyST); the API reference comes from the numpydoc docstrings. The pages
that depend on the installed code (API stubs, the fast-path matrix, benchmark tables) are
written at build time by ``_ext/xpsoftmax_docs.py`` into gitignored paths, and the plots of
the numerics guide are drawn at build time by matplotlib's ``plot`` directive.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import xpsoftmax  # noqa: E402

project = "xpsoftmax"
author = "the xpsoftmax developers"
copyright = "the xpsoftmax developers"
release = xpsoftmax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "xpsoftmax_docs",
]
try:  # optional: a copy button on code blocks
    import sphinx_copybutton  # noqa: F401

    extensions.append("sphinx_copybutton")
except ImportError:
    pass

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", ".gitignore", "README*"]

# Every cross-reference must resolve: with -W a broken internal link fails the build.
# External links are never fetched (no intersphinx, no linkcheck).
nitpicky = True
nitpick_ignore = [
    # Named in the docstring of xpsoftmax.Call; a module attribute of xpsoftmax._registry,
    # documented on the contributing page rather than in the public API.
    ("py:data", "OPS"),
]
suppress_warnings: list[str] = []

# MyST: ``page.md#heading`` links resolve to heading anchors (and are checked).
# No math extension: formulas are written as code, so pages render offline (no MathJax CDN).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + numpydoc: signatures without type hints (the docstrings say the types).
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Plots drawn at build time from the library itself; images go to the build folder only.
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (6.4, 3.6), "font.size": 10}
plot_pre_code = ""  # the scripts in plots/ import what they use

html_theme = "pydata_sphinx_theme"
html_title = f"xpsoftmax {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Section navigation only where a section has sub-pages (the API reference).
_SINGLE_PAGES = [
    "index",
    "getting-started",
    "numerics",
    "migration",
    "backends",
    "performance",
    "contributing",
    "contract",
    "semantics",
    "search",
    "genindex",
]
html_sidebars = {page: [] for page in _SINGLE_PAGES}
html_sidebars.update({"api": ["sidebar-nav-bs"], "api/*": ["sidebar-nav-bs"]})
html_show_sourcelink = False
