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
# mode is off (see _unresolved_error_reference below for what is checked).
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
# The entities' methods are typed with a private Protocol that the driver's
# Channel satisfies; the reference names the class a user passes.
autodoc_type_aliases = {"_DeclaringChannel": "trio_msg.Channel"}

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

from sphinx.util import logging as _sphinx_logging  # noqa: E402

logger = _sphinx_logging.getLogger(__name__)

_PROSE_BEFORE_COLON = re.compile(r"^[A-Z][a-z']*(?: [A-Za-z'\-]+){2,}:(?!:)\s")


def _shield_prose_colon(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    if what not in ("attribute", "data", "property"):
        return
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and _PROSE_BEFORE_COLON.match(lines[first].strip()):
        lines[first:first] = ["..", ""]


# --- public names only ------------------------------------------------------------
#
# "Bases:" lines name a private base (``_Closed``, ``_ChannelBound``) by its
# public bases instead, so the reference shows only names a user can import.


def _public_bases(app, name, obj, options, bases):  # type: ignore[no-untyped-def]
    def expand(base):  # type: ignore[no-untyped-def]
        if not getattr(base, "__name__", "").startswith("_"):
            return [base]
        return [b for parent in base.__bases__ for b in expand(parent)]

    public = [b for base in bases for b in expand(base)]
    bases[:] = list(dict.fromkeys(public)) or [object]


# Every exception in trio_msg.errors.__all__ must have its entry in the
# reference (docs/api.rst lists them by hand, grouped); a new one that is not
# there fails the build.


def _check_errors_documented(app, env):  # type: ignore[no-untyped-def]
    import trio_msg.errors

    objects = env.get_domain("py").objects
    for name in trio_msg.errors.__all__:
        if f"trio_msg.errors.{name}" not in objects:
            logger.warning("trio_msg.errors.%s is not documented in docs/api.rst", name)


# nitpicky mode stays off (above), but a reference to one of trio_msg's
# exceptions that does not resolve is a build error: the guide's exception
# names must link to their entry in the reference.


def _unresolved_error_reference(app, env, node, contnode):  # type: ignore[no-untyped-def]
    import trio_msg.errors

    target = node.get("reftarget", "")
    module, _, name = target.rpartition(".")
    ours = module == "" or module.startswith("trio_msg")
    if node.get("refdomain") == "py" and ours and name in trio_msg.errors.__all__:
        logger.warning(
            "reference to %s does not resolve (spell it :exc:`~trio_msg.errors.%s`)",
            target,
            name,
            location=node,
        )
    return None


# An exception's entry is its name, bases and docstring: users catch these
# and read their attributes, they do not build them, so the constructors'
# signatures and parameter lists (repeated on every close class) stay out.


def _exception_without_signature(app, what, name, obj, options, signature, retann):  # type: ignore[no-untyped-def]
    if what != "exception" or not signature:
        return None
    # Sphinx 9 records the type hints before this event (older versions
    # record them in a later handler of it, which the result below skips).
    document = getattr(app.env, "current_document", None)
    getattr(document, "autodoc_annotations", {}).pop(name, None)
    return "", None


# autodoc_type_aliases does not reach the class signatures' parameters
# (``Queue(..., channel=...)``): the same renaming, on the rendered text.


def _rename_private_protocol(app, doctree, docname):  # type: ignore[no-untyped-def]
    from docutils import nodes

    for old, new in autodoc_type_aliases.items():
        for text in list(doctree.findall(nodes.Text)):
            if str(text) == old:
                text.parent.replace(text, nodes.Text(new.rpartition(".")[2]))


def setup(app):  # type: ignore[no-untyped-def]
    # Before napoleon's own handler (default priority 500).
    app.connect("autodoc-process-docstring", _shield_prose_colon, priority=400)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-signature", _exception_without_signature, priority=400)
    app.connect("env-check-consistency", _check_errors_documented)
    app.connect("missing-reference", _unresolved_error_reference, priority=900)
    app.connect("doctree-resolved", _rename_private_protocol)
