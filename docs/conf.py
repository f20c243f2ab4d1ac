"""Sphinx configuration: `make docs` builds the site into docs/_build/html, warnings as errors."""

import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # autodoc imports the package, and so TensorFlow
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

project = "keras-hourglass"
author = "the keras-hourglass developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "keras-hourglass"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
myst_heading_anchors = 3
napoleon_use_ivar = True  # "Attributes:" as fields of their class, not as separate targets
html_static_path = ["_static"]


def _no_email_links(app, what, name, obj, options, lines):
    """`PCKh@0.5` in a docstring is a metric, not an e-mail address: escape the `@` so docutils keeps it as text."""
    lines[:] = [re.sub(r"(\w)@(\d)", r"\1\\@\2", line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _no_email_links)
