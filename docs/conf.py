"""Sphinx configuration for the txxmppnode documentation."""

import sys
from pathlib import Path

# document the package of this checkout, whatever copy the environment has installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "txxmppnode"
copyright = "2026, the txxmppnode authors"
author = "the txxmppnode authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# lxml's element base classes have no Sphinx inventory here; don't warn about them.
nitpicky = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
# The asyncio face mirrors the Twisted classes under the same names (XMLStream, Client, ...),
# so type hints naming them are ambiguous references; they are not broken ones.
suppress_warnings = ["ref.python"]
