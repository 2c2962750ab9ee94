"""The alerts agent via agent.test_context(): snapshots in, alerts in the table's outbox
and delivered by a fake sink; a restarted runtime restores undelivered alerts from the
table (its changelog) and delivers each exactly once."""

import asyncio
import types

import pytest

faust = pytest.importorskip("faust")
pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry  # noqa: E402

from stream_app.alerts_agent import ALERTS_TABLE, AlertSettings, attach_alerts  # noqa: E402
from stream_app.app import create_app  # noqa: E402
from stream_app.records import RiskSnapshot, iso_to_ns  # noqa: E402
from stream_app.settings import Settings  # noqa: E402

VAR = {"0.95": 0.02, "0.975": 0.025, "0.99": 0.03}


class FakeSink:
    def __init__(self, written=None):
        self.written = written if written is not None else {}
        self.order = []
        self.down = False

    async def deliver(self, a):
        if self.down:
            raise ConnectionError("refused")
        if a.event_key in self.written:
            return None
        self.written[a.event_key] = a
        self.order.append(a.event_key)
        return "1-0"


@pytest.fixture(autouse=True)
def _no_auto_attach(monkeypatch):
    """create_app attaches the alerts stage itself; these tests attach their own."""
    monkeypatch.setenv("RISKMON_ALERTS_ENABLED", "false")


def make(sink, redis_url="redis://127.0.0.1:1/0", **alert_kw):
    registry = CollectorRegistry()
    settings = Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, topic_risk="t-risk")
    app = create_app(settings, registry=registry)
    assert getattr(app, "riskmon_alerts", None) is None
    alert_kw.setdefault("enabled", True)
    rt = attach_alerts(app, settings, registry, alert_settings=AlertSettings(**alert_kw), sink=sink)
    app.finalize()
    app.flow_control.resume()
    changelog = []

    def fake_send_changelog(partition, key, value, key_serializer=None, value_serializer=None):
        changelog.append((key, value))
        return types.SimpleNamespace(message=types.SimpleNamespace(partition=0))

    rt.table.send_changelog = fake_send_changelog
    return app, rt, registry, changelog


def snaps(n_days=6, portfolio="book", run_id="gfc"):
    """Daily snapshots: an exception every other day, traffic light turning yellow."""
    out = []
    for k in range(n_days):
        day = f"2008-10-{k + 1:02d}"
        bad = k % 2 == 1
        out.append(
            RiskSnapshot(
                portfolio,
                run_id,
                "daily",
                day,
                iso_to_ns(day) + 20 * 3600 * 10**9,
                seq=k + 1,
                var=VAR,
                prev_var=VAR,
                realized_return=-0.04 if bad else 0.0,
                exception=dict.fromkeys(VAR, bad),
                traffic_light="yellow" if k >= 3 else "green",
            )
        )
    return out


async def put_all(rt, items):
    async with rt.agent.test_context() as agent:
        for s in items:
            await agent.put(value=s.encode(), key=s.portfolio.encode())
        return list(agent.results.values())


def sample(registry, name, **labels):
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_wiring(monkeypatch):
    app, rt, registry, _ = make(FakeSink())
    assert attach_alerts(app, rt.settings, registry) is rt  # attached once
    monkeypatch.delenv("RISKMON_ALERTS_ENABLED")
    auto = create_app(Settings(kafka_bootstrap="127.0.0.1:1"), registry=CollectorRegistry())
    assert auto.riskmon_alerts is not None and not auto.riskmon_alerts.redis_enabled
    assert rt.topic.get_topic_name() == "t-risk"
    assert rt.table.name == ALERTS_TABLE and rt.table.use_partitioner
    assert rt.table.key_serializer == "raw" and rt.table.changelog_topic.key_serializer == "raw"
    assert app.riskmon_alerts is rt
    assert "alerts" in {a.name.rsplit(".", 1)[-1] for a in app.agents.values()}


def test_snapshots_to_alerts_to_sink():
    sink = FakeSink()
    _app, rt, registry, changelog = make(sink)

    async def run():
        counts = await put_all(rt, snaps())
        queued = [a.event_key for a in rt.delivery.outbox]
        entry = rt.table["book"]
        in_table = [d["id"] for d in entry["runs"]["gfc"]["outbox"]]
        res = await rt.drain()
        return counts, queued, in_table, res

    counts, queued, in_table, res = asyncio.run(run())
    # days 2, 4, 6 are exceptions (each resolved the next day); day 4 turns yellow
    rules = [(a.rule, a.state, a.day) for a in res.delivered]
    assert rules == [
        ("var_exception", "firing", "2008-10-02"),
        ("var_exception", "resolved", "2008-10-02"),
        ("var_exception", "firing", "2008-10-04"),
        ("traffic_light", "firing", "2008-10-04"),
        ("var_exception", "resolved", "2008-10-04"),
        ("var_exception", "firing", "2008-10-06"),
    ]
    assert counts == [0, 1, 1, 2, 1, 1]
    assert len(queued) == 6 and len(in_table) == 6
    assert sink.order == queued
    assert all(a.run_id == "gfc" and a.portfolio == "book" for a in res.delivered)
    assert sample(registry, "riskmon_alerts_pending") == 0
    assert (
        sample(
            registry,
            "riskmon_alerts_total",
            rule="var_exception",
            severity="critical",
            state="firing",
        )
        == 3
    )
    # delivered alerts leave the table at the next sweep
    n_writes = len(changelog)
    assert rt.sweep() == 0
    assert rt.table["book"]["runs"]["gfc"]["outbox"] == []
    assert len(changelog) == n_writes + 1
    assert changelog[-1][0] == "book"


def test_bad_messages_are_counted_not_fatal():
    sink = FakeSink()
    _app, rt, registry, _ = make(sink)

    async def run():
        async with rt.agent.test_context() as agent:
            await agent.put(value=b"{not json", key=b"book")
            await agent.put(value=b'{"portfolio": "book"}', key=b"book")
            good = snaps(2)
            for s in good:
                await agent.put(value=s.encode(), key=b"book")
            return list(agent.results.values())

    assert asyncio.run(run()) == [0, 0, 0, 1]
    assert sample(registry, "riskmon_alerts_bad_snapshots_total") == 2


def test_outbox_survives_a_restart_in_the_table():
    written = {}
    sink = FakeSink(written)
    sink.down = True
    _, rt1, _, changelog = make(sink)

    async def first():
        await put_all(rt1, snaps(4))
        await rt1.drain()  # Redis down: nothing delivered
        return [a.event_key for a in rt1.delivery.outbox]

    pending = asyncio.run(first())
    assert len(pending) == 4 and written == {}
    # deliver the first two, then "crash" before the table is cleaned
    sink.down = False

    async def partial():
        keep = list(rt1.delivery.outbox)[2:]
        for a in keep:
            rt1.delivery.outbox.remove(a.event_key)
        rt1.delivery.not_before = 0.0  # Redis is back: no waiting for the backoff
        await rt1.drain()
        return keep

    asyncio.run(partial())
    assert list(written) == pending[:2]

    # a new worker restores the table from the changelog (last value per key)
    _, rt2, registry2, _ = make(FakeSink(written))
    latest = {}
    for key, value in changelog:
        latest[key] = value
    for key, value in latest.items():
        rt2.table[key] = value
    assert rt2.sweep() == 4  # the table still lists all four
    assert [a.event_key for a in rt2.delivery.outbox] == pending  # oldest first
    res = asyncio.run(rt2.drain())
    assert [a.event_key for a in res.duplicates] == pending[:2]
    assert [a.event_key for a in res.delivered] == pending[2:]
    assert list(written) == pending  # each once, in order
    assert sample(registry2, "riskmon_alerts_duplicates_total") == 2
    # the restarted engine state continues where it stopped: the same snapshots again
    # raise nothing, the next ones continue the episodes
    asyncio.run(put_all(rt2, snaps(6)))
    assert [a.day for a in rt2.delivery.outbox] == ["2008-10-04", "2008-10-06"]


def test_without_redis_alerts_are_only_logged(caplog):
    _app, rt, registry, _ = make(None, redis_url=None)
    assert not rt.redis_enabled
    asyncio.run(put_all(rt, snaps(3)))
    assert len(rt.delivery.outbox) == 0
    assert rt.table["book"]["runs"]["gfc"]["outbox"] == []
    assert "no Redis configured" in caplog.text
    assert (
        sample(
            registry,
            "riskmon_alerts_total",
            rule="var_exception",
            severity="critical",
            state="firing",
        )
        == 1
    )


def test_alerts_worker_keeps_the_heap_and_freezes_start_up_objects(monkeypatch):
    """``python -m stream_app.alerts_agent`` is its own process: it tunes the allocator
    and the collector at start-up like ``run_worker`` (faust.Worker and the metrics
    server are faked: nothing starts)."""
    import prometheus_client

    import stream_app.heap
    from stream_app.alerts_agent import run_alerts_worker

    calls = []
    monkeypatch.setattr(stream_app.heap, "keep_heap", lambda: calls.append("keep_heap"))
    monkeypatch.setattr(
        stream_app.heap, "freeze_startup_objects", lambda: calls.append("freeze") or 0
    )

    class FakeWorker:
        def __init__(self, app, **kw):
            calls.append("worker")

        def execute_from_commandline(self):
            calls.append("run")

    server = types.SimpleNamespace(server_port=0, shutdown=lambda: calls.append("shutdown"))
    monkeypatch.setattr(faust, "Worker", FakeWorker)
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda *a, **k: (server, None))
    run_alerts_worker(Settings(kafka_bootstrap="127.0.0.1:1"), registry=CollectorRegistry())
    assert calls == ["keep_heap", "worker", "freeze", "run", "shutdown"]
