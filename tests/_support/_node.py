"""A private RabbitMQ node the fault suite may stop, restart, kill and alarm.

The shared node on 5672 must never be hurt; this one is the suite's own:

    node = PrivateNode.start_free()   # ~10 s; kills a leftover of a crashed run first
    node.url                          # amqp://guest:guest@127.0.0.1:5680//
    node.restart()                    # stop_app + start_app: clients get 320, then refusals
    node.crash_restart()              # kill -9 the VM, start it again on the same data
    with node.memory_alarm(): ...     # publishers are blocked until the block ends
    node.stop()

Nodes are ``trio_msg_faults_<n>@localhost`` on AMQP port ``5680 + n`` and
distribution port ``25680 + n`` (n = 0..9), with their data, logs and pid
file under ``/tmp/trio_msg_faults/<name>/``.  A lock file per slot
(``fcntl.flock``, released by the kernel when the process dies) says which
slots a live test run holds: ``start_free`` takes the first free one, and a
node found running in a free slot is a leftover of a crashed run and is
killed (by its pid file's pid) before the slot is reused.

**The Erlang cookie.**  The node runs as the ``rabbitmq`` user with that
user's home (``/var/lib/rabbitmq`` on Debian), as the shared node does, so it
reads the same ``.erlang.cookie``.  ``rabbitmqctl`` on the PATH is Debian's
wrapper, which, run as root, switches to the ``rabbitmq`` user and that home
too: the two agree without the suite ever reading the cookie.  (Calling
``/usr/lib/rabbitmq/bin/rabbitmqctl`` directly as root would look in
``/root/.erlang.cookie`` instead and be refused.)  The suite must run as
root or as ``rabbitmq``; anything else fails with a message saying so.

Everything here is synchronous (``subprocess`` with timeouts); async tests
call it through ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from _broker import (
    DEFAULT_MEMORY_WATERMARK,
    BrokerUnavailable,
    RabbitmqctlError,
    check_broker,
    close_connection_by_name,
    list_connections,
    memory_alarm,
    rabbitmqctl,
)

__all__ = ["NodeError", "PrivateNode"]

BASE_DIR = Path(os.environ.get("TRIO_MSG_FAULTS_DIR", "/tmp/trio_msg_faults"))
AMQP_PORT_BASE = 5680
DIST_PORT_BASE = 25680
SLOTS = 10
RABBITMQ_SERVER = os.environ.get(
    "TRIO_MSG_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server"
)
RABBITMQ_USER = os.environ.get("TRIO_MSG_RABBITMQ_USER", "rabbitmq")
START_TIMEOUT = 90.0


class NodeError(RuntimeError):
    """The private node could not be started, reached or stopped (the message says why)."""


class PrivateNode:
    """One private node; build it with :meth:`start_free` (or :meth:`start`)."""

    def __init__(self, slot: int) -> None:
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot must be 0..{SLOTS - 1}")
        self.slot = slot
        self.short_name = f"trio_msg_faults_{slot}"
        self.name = f"{self.short_name}@localhost"
        self.port = AMQP_PORT_BASE + slot
        self.dist_port = DIST_PORT_BASE + slot
        self.dir = BASE_DIR / self.short_name
        self.pid_file = self.dir / "pid"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._lock: IO[str] | None = None
        #: the memory watermark last set through :meth:`set_memory_watermark`
        self.watermark = DEFAULT_MEMORY_WATERMARK
        #: how many times the node was (re)started by this object
        self.starts = 0

    def __repr__(self) -> str:
        return f"<PrivateNode {self.name} amqp=127.0.0.1:{self.port}>"

    # ---------------------------------------------------------------- slots

    @classmethod
    def start_free(cls, *, prefer: int = 0) -> PrivateNode:
        """Take the first slot no live run holds (from ``prefer`` on) and start a
        fresh node in it.  Raises :class:`NodeError` with the reason when it cannot."""
        _check_can_run_nodes()
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        for i in range(SLOTS):
            node = cls((prefer + i) % SLOTS)
            if node._try_lock():
                try:
                    node.start()
                except BaseException:
                    node.stop()
                    raise
                return node
        raise NodeError(f"all {SLOTS} private node slots under {BASE_DIR} are held by live runs")

    def _try_lock(self) -> bool:
        lock = open(BASE_DIR / f"{self.short_name}.lock", "w")  # noqa: SIM115 (held for the node's life)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._lock = lock
        return True

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    # ------------------------------------------------------------ lifecycle

    def start(self, *, fresh: bool = True) -> None:
        """Start the node (after killing a leftover in this slot) and wait until
        it answers AMQP.  ``fresh`` wipes its data first."""
        if self._lock is None and not self._try_lock():
            raise NodeError(f"slot {self.slot} is held by another live run")
        self._kill_leftover()
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir / "mnesia", ignore_errors=True)
        self._write_config()
        self._spawn()
        self._wait_started()
        self.starts += 1

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, then SIGKILL if that fails) and free
        the slot.  Idempotent; never raises for a node already gone."""
        try:
            pid = self.pid()
            if pid is not None:
                try:
                    rabbitmqctl("stop", node=self.name, timeout=60)
                except RabbitmqctlError:
                    pass
                if _alive(pid):
                    _kill(pid)
        finally:
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
            self._unlock()

    def restart(self) -> None:
        """A graceful restart of the broker (``stop_app`` / ``start_app``): every
        client gets ``320 CONNECTION_FORCED``; connections are refused until it is
        back.  Durable queues and persistent messages survive."""
        self.stop_app()
        self.start_app()

    def stop_app(self) -> None:
        rabbitmqctl("stop_app", node=self.name, timeout=60)

    def start_app(self) -> None:
        rabbitmqctl("start_app", node=self.name, timeout=60)
        self._wait_amqp(30)

    def crash_restart(self) -> None:
        """``kill -9`` the node's VM (clients see the socket die, no close), then
        start it again on the same data."""
        self.kill()
        self.start(fresh=False)

    def kill(self) -> None:
        """``kill -9`` the node's VM and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            raise NodeError(f"{self.name} has no pid file: is it running?")
        _kill(pid)

    def pid(self) -> int | None:
        """The node's OS pid (from its pid file), if it is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._is_ours(pid) else None

    # ------------------------------------------------------------ rabbitmqctl

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        return rabbitmqctl(*args, node=self.name, timeout=timeout)

    def list_connections(self) -> list[dict[str, Any]]:
        return list_connections(node=self.name)

    def close_connection_by_name(self, name: str, reason: str = "trio_msg fault test") -> None:
        close_connection_by_name(name, reason, node=self.name)

    @contextlib.contextmanager
    def memory_alarm(self) -> Iterator[None]:
        """A memory alarm on this node for the block; always cleared after."""
        self.watermark = "0"
        with memory_alarm(node=self.name):
            yield
        self.watermark = DEFAULT_MEMORY_WATERMARK

    def set_memory_watermark(self, value: str) -> None:
        """``set_vm_memory_high_watermark``: "0" raises the memory alarm,
        ``DEFAULT_MEMORY_WATERMARK`` clears it."""
        self.watermark = value
        self.ctl("set_vm_memory_high_watermark", value)

    def healthy(self) -> bool:
        """Running, answering AMQP, and no alarm set through this object (cheap:
        no rabbitmqctl call)."""
        if self.pid() is None or self.watermark != DEFAULT_MEMORY_WATERMARK:
            return False
        try:
            check_broker("127.0.0.1", self.port, timeout=2)
        except BrokerUnavailable:
            return False
        return True

    def heal(self) -> None:
        """Put the node right: started, app running, watermark restored."""
        if self.healthy():
            return
        if self.pid() is None:
            self.start(fresh=False)
        self.ctl("await_startup", "--timeout", "30", timeout=40)
        if self.watermark != DEFAULT_MEMORY_WATERMARK:
            self.set_memory_watermark(DEFAULT_MEMORY_WATERMARK)
        try:
            check_broker("127.0.0.1", self.port, timeout=2)
        except BrokerUnavailable:
            self.start_app()

    # -------------------------------------------------------------- internals

    def _is_ours(self, pid: int) -> bool:
        """Whether *pid* is this slot's node (its name is in the VM's environment:
        beam's command line does not show it)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"RABBITMQ_NODENAME={self.name}".encode() in environ

    def _kill_leftover(self) -> None:
        """A node left running in this slot by a crashed run: kill it by its pid."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _alive(pid) and self._is_ours(pid):
            _kill(pid)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        # Without a pid file, a node may still answer under our name.
        try:
            out = rabbitmqctl(
                "eval", "list_to_integer(os:getpid()).", node=self.name, timeout=15
            ).strip()
        except RabbitmqctlError:
            out = ""
        if out.isdigit() and self._is_ours(int(out)):
            _kill(int(out))
        try:
            check_broker("127.0.0.1", self.port, timeout=1)
        except BrokerUnavailable:
            return
        raise NodeError(
            f"something else already answers AMQP on 127.0.0.1:{self.port}, the port of "
            f"private node {self.name}; free it or set TRIO_MSG_FAULTS_NODE to another slot"
        )

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        # Its own config file: the system's (/etc/rabbitmq/rabbitmq.conf) names
        # the shared node's listener, 127.0.0.1:5672.
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "log.file.level = warning\n"
            # The memory alarm is raised on purpose (watermark 0); disk must not be.
            "disk_free_limit.absolute = 1MB\n"
        )
        user = pwd.getpwnam(RABBITMQ_USER)
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _spawn(self) -> None:
        user = pwd.getpwnam(RABBITMQ_USER)
        env = {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            # The home the CLI's wrapper uses too: the same .erlang.cookie.
            "HOME": user.pw_dir,
        }
        script = " ".join(
            [
                "cd /tmp &&",
                *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                "exec",
                shlex.quote(RABBITMQ_SERVER),
                "-detached",
            ]
        )
        if os.geteuid() == 0:
            cmd = ["su", RABBITMQ_USER, "-s", "/bin/sh", "-c", script]
        else:
            cmd = ["/bin/sh", "-c", script]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NodeError(f"could not start {self.name}: {exc}") from exc
        if proc.returncode != 0:
            raise NodeError(
                f"starting {self.name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.pid() is not None:
                try:
                    rabbitmqctl("await_startup", "--timeout", "30", node=self.name, timeout=40)
                    break
                except RabbitmqctlError:
                    pass
            if time.monotonic() >= deadline:
                raise NodeError(
                    f"private node {self.name} did not start within {START_TIMEOUT} s; "
                    f"its log:\n{self._log_tail()}"
                )
            time.sleep(0.3)
        self._wait_amqp(max(5.0, deadline - time.monotonic()))

    def _wait_amqp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                check_broker("127.0.0.1", self.port, timeout=2)
                return
            except BrokerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise NodeError(
                        f"private node {self.name} does not answer AMQP on port {self.port}: {exc}"
                    ) from None
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        texts = []
        for log in sorted((self.dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                texts.append("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts) or f"(no log under {self.dir / 'log'})"


def _check_can_run_nodes() -> None:
    if not os.path.exists(RABBITMQ_SERVER):
        raise NodeError(
            f"{RABBITMQ_SERVER} not found: the fault suite starts private RabbitMQ nodes "
            "(apt-get install -y rabbitmq-server; or set TRIO_MSG_RABBITMQ_SERVER)"
        )
    try:
        user = pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        raise NodeError(f"no {RABBITMQ_USER!r} user to run private RabbitMQ nodes as") from None
    if os.geteuid() not in (0, user.pw_uid):
        raise NodeError(
            f"the fault suite's private RabbitMQ nodes run as {RABBITMQ_USER!r}: run the "
            f"tests as root or as {RABBITMQ_USER!r}"
        )
    if shutil.which("rabbitmqctl") is None:
        raise NodeError("rabbitmqctl is not on the PATH")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            raise NodeError(f"pid {pid} still alive {timeout} s after SIGKILL")
        time.sleep(0.05)
