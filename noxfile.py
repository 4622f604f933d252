"""Sessions: tests (one per backend), lint, typecheck, docs, package, bench, soak,
differential, cluster.

``nox -s tests`` runs the suite on trio and then on asyncio; each half runs
in its own virtualenv built from this project's own ``pyproject.toml``, and
runs tests/integration a second time against the embedded broker.
``bench``, ``soak`` and ``perf`` are not in the default run; ``cluster`` (a
private three-node RabbitMQ cluster on ports 5673-5675) runs after it in CI.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "package"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


def install(session: nox.Session, *groups: str, extras: str = "all") -> None:
    """This checkout (editable, with *extras*) and the named dependency groups.

    The groups live in pyproject.toml's ``[dependency-groups]``: what the
    project's own sessions need is not offered to users as an extra.
    """
    reqs = [r for g in groups for r in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", f".[{extras}]" if extras else ".", *reqs)


@nox.session(python=PYTHON)
@nox.parametrize("backend", ["trio", "asyncio"])
def tests(session: nox.Session, backend: str) -> None:
    """The test suite against RabbitMQ, then tests/integration against memory://.

    On one anyio backend; the second run (the embedded broker in RabbitMQ's
    place) only when no test arguments are given.
    """
    install(session, "test")
    args = session.posargs or []
    # The protocol core is backend-free, and the command line and the
    # differential test (pika against two brokers) run their own loops: run
    # them once, in the trio half.
    skip = (
        []
        if backend == "trio"
        else [
            "--ignore=tests/protocol",
            "--ignore=tests/integration/test_cli.py",
            "--ignore=tests/integration/test_differential.py",
        ]
    )
    session.run(
        "pytest",
        "tests",
        # the cluster suite starts its own nodes: nox -s cluster
        "--ignore=tests/cluster",
        *skip,
        *args,
        env={"TRIO_MSG_BACKENDS": backend},
    )
    if not args:
        embedded_integration_tests(session, backend)


def embedded_integration_tests(session: nox.Session, backend: str) -> None:
    """tests/integration once more, against the embedded broker instead of
    RabbitMQ (``TRIO_MSG_TEST_BROKER=memory``; the tests marked
    ``rabbitmq_only`` are left out).  The examples' tests are synchronous
    (subprocesses): they run in the trio half only.  The command line's
    tests (a minute and a half of subprocesses on a loaded machine, which
    test the command line more than the broker) run against RabbitMQ only;
    ``TRIO_MSG_TEST_BROKER=memory pytest tests/integration`` runs them too."""
    skip = ["--ignore=tests/integration/test_cli.py"]
    if backend != "trio":
        skip.append("--ignore=tests/integration/test_examples.py")
    session.run(
        "pytest",
        "tests/integration",
        *skip,
        env={"TRIO_MSG_BACKENDS": backend, "TRIO_MSG_TEST_BROKER": "memory"},
    )


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """The tests that pin how the driver works (``-m perf``), which a
    loaded machine breaks: run them on a quiet one.  Not in the default
    sessions."""
    install(session, "test")
    session.run("pytest", "-m", "perf", "tests/driver", *session.posargs)


@nox.session(python=PYTHON)
def cluster(session: nox.Session) -> None:
    """trio_msg on a private three-node RabbitMQ cluster (tests/cluster): it
    starts the nodes on 127.0.0.1:5673-5675 (about 30 s), kills, freezes and
    restarts them under traffic on both backends, and tears them down.  The
    recovery times and ledgers go to benchmarks/results/cluster.json
    (``TRIO_MSG_CLUSTER_RESULTS``); see docs/cluster.rst."""
    install(session, "test")
    session.run("pytest", "tests/cluster", "-p", "no:cacheprovider", "-s", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, with the async rules on."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "trio_msg", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_msg")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    install(session, "typecheck")
    session.run("mypy", "--strict", "trio_msg")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx, with warnings as errors."""
    install(session, "docs", extras="")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the other Python clients."""
    install(session, "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
    if not session.posargs:  # the full run: the latency floor too (about two minutes)
        session.run("python", "-m", "benchmarks.floor")


@nox.session(python=PYTHON)
def differential(session: nox.Session) -> None:
    """The differential test of the embedded broker against RabbitMQ, long:
    ``TRIO_MSG_DIFFERENTIAL_EXAMPLES`` sequences (2000 unless set)."""
    install(session, "test")
    examples = os.environ.get("TRIO_MSG_DIFFERENTIAL_EXAMPLES", "2000")
    session.run(
        "pytest",
        "-s",
        "-p",
        "no:logging",
        "tests/integration/test_differential.py",
        *session.posargs,
        env={"TRIO_MSG_DIFFERENTIAL_EXAMPLES": examples},
    )


@nox.session(python=PYTHON)
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, install the wheel in a clean venv, run an example from it.

    The example runs from a temporary directory with nothing of the checkout
    on its path, so it imports trio_msg from the installed wheel.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "package"))
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    wheels = sorted(dist.glob("trio_msg-*.whl"))
    sdists = sorted(dist.glob("trio_msg-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    with tarfile.open(sdists[0]) as sdist:
        names = {n.split("/", 1)[-1] for n in sdist.getnames()}
    missing = {"LICENSE", "README.md", "pyproject.toml", "trio_msg/py.typed"} - names
    if missing:
        session.error(f"the sdist lacks {sorted(missing)}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        if "trio_msg/py.typed" not in wheel.namelist():
            session.error("the wheel lacks trio_msg/py.typed")

    venv = tmp / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    session.run(py, "-m", "pip", "install", "-q", str(wheels[0]), external=True)
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    shutil.copy("examples/hello_world.py", run / "hello_world.py")
    with session.chdir(run):
        where = session.run(
            py, "-c", "import trio_msg; print(trio_msg.__file__)", external=True, silent=True
        )
        if not where or str(venv) not in where:
            session.error(f"trio_msg was not imported from the wheel: {where!r}")
        session.run(py, "hello_world.py", external=True, env={"PYTHONPATH": ""})


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Ten minutes of random faults under a producer and a consumer, on a private
    RabbitMQ node (tests/faults/soak.py; see docs/reliability.rst).

    ``nox -s soak -- --duration 60 --seed 1`` for a shorter run; any option of
    soak.py may follow ``--``.
    """
    install(session, "test")
    args = session.posargs or ["--duration", "600"]
    session.run("python", "tests/faults/soak.py", *args)
