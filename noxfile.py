"""Sessions: tests (one per backend), lint, typecheck, docs, bench, soak.

``nox -s tests`` runs the suite on trio and then on asyncio; each half runs
in its own virtualenv built from this project's own ``pyproject.toml``.
``bench`` and ``soak`` are not in the default run.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
@nox.parametrize("backend", ["trio", "asyncio"])
def tests(session: nox.Session, backend: str) -> None:
    """The test suite against the real RabbitMQ, on one anyio backend."""
    session.install("-e", ".[test]")
    args = session.posargs or []
    # The protocol core is backend-free: run it once, in the trio half.
    skip = [] if backend == "trio" else ["--ignore=tests/protocol"]
    session.run(
        "pytest",
        "tests",
        *skip,
        *args,
        env={"TRIO_MSG_BACKENDS": backend},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, with the async rules on."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "trio_msg", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_msg")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "--strict", "trio_msg")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx, with warnings as errors."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the other Python clients."""
    session.install("-e", ".[bench,all]")
    session.run("python", "-m", "benchmarks", *session.posargs)
    if not session.posargs:  # the full run: the latency floor too (about two minutes)
        session.run("python", "-m", "benchmarks.floor")


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Ten minutes of random faults under a producer and a consumer, on a private
    RabbitMQ node (tests/faults/soak.py; see docs/reliability.rst).

    ``nox -s soak -- --duration 60 --seed 1`` for a shorter run; any option of
    soak.py may follow ``--``.
    """
    session.install("-e", ".[test]")
    args = session.posargs or ["--duration", "600"]
    session.run("python", "tests/faults/soak.py", *args)
