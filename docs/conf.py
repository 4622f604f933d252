"""Sphinx configuration for trio_msg.

Build with (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Everything builds offline: intersphinx is deliberately not enabled, and the
state diagrams are drawn by ``_ext/statediagrams.py`` in plain Python.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the package itself, even when not installed

import trio_msg._protocol.connection as _connection  # noqa: E402

project = "trio_msg"
author = "the trio_msg developers"
copyright = f"{datetime.date.today().year}, {author}"
version = release = _connection.VERSION

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
    "statediagrams",
]

# No intersphinx: there is no network where the docs are built.  References
# to the standard library therefore stay plain text, which is why nitpicky
# mode is off.
nitpicky = False
# Type hints name builtins such as ``type``; with the public API documented,
# attributes called ``type`` (Exchange.type, BasicProperties.type) make such
# a reference ambiguous.  The builtin is meant; say nothing.
suppress_warnings = ["ref.python"]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
primary_domain = "py"

# --- autodoc / napoleon --------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
# A member without a docstring of its own stays bare rather than repeating
# its base class's text (object.__init__, Exception's, Enum's...).
autodoc_inherit_docstrings = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# --- HTML -----------------------------------------------------------------------

html_theme = "alabaster"
html_theme_options = {
    "description": "AMQP 0-9-1 for trio and anyio",
    "fixed_sidebar": True,
    "page_width": "1100px",
}
html_title = f"trio_msg {release}"


# --- napoleon and one-line attribute docstrings ----------------------------------
#
# For attributes, properties and module data, napoleon (Google style) reads a
# first line "X: Y" as "type: description".  The package writes prose there
# ("The channel or connection went away first: it may or may not ...",
# Outcome.UNKNOWN), which napoleon would render as a bogus type.  Prose is
# recognised -- three or more plain words before the colon, starting with a
# capital -- and shielded with an empty RST comment as the first line, which
# napoleon then takes for the (type-less) description.  Real Google-style
# "int: The count" docstrings are left alone.

import re  # noqa: E402

_PROSE_BEFORE_COLON = re.compile(r"^[A-Z][a-z']*(?: [A-Za-z'\-]+){2,}:(?!:)\s")


def _shield_prose_colon(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    if what not in ("attribute", "data", "property"):
        return
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and _PROSE_BEFORE_COLON.match(lines[first].strip()):
        lines[first:first] = ["..", ""]


def setup(app):  # type: ignore[no-untyped-def]
    # Before napoleon's own handler (default priority 500).
    app.connect("autodoc-process-docstring", _shield_prose_colon, priority=400)
