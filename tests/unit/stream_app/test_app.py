"""The Faust app: built without a broker, ingest agent driven by agent.test_context()."""

import asyncio
import types

import pytest

faust = pytest.importorskip("faust")
prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry  # noqa: E402

from stream_app.app import STATE_TABLE, IngestRuntime, create_app  # noqa: E402
from stream_app.records import NS_PER_DAY, Bar, Tick  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.validate import Reason  # noqa: E402

T0 = 14_000 * NS_PER_DAY + 15 * 3600 * 10**9


def make_app(**kw):
    registry = CollectorRegistry()
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", ingest_batch_within=0.005, last_price_interval_s=0, **kw
    )
    app = create_app(settings, registry=registry)
    app.finalize()
    app.flow_control.resume()
    rt = app.riskmon
    published, changelog = [], []

    async def fake_publish(result):
        published.append(result)

    def fake_send_changelog(partition, key, value, key_serializer=None, value_serializer=None):
        changelog.append((key, value, key_serializer or rt.table.key_serializer))
        return types.SimpleNamespace(message=types.SimpleNamespace(partition=0))

    rt.publish = fake_publish
    rt.table.send_changelog = fake_send_changelog
    return app, registry, published, changelog


def sample(registry, name, **labels):
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_create_app_needs_a_bootstrap():
    with pytest.raises(ValueError, match="kafka_bootstrap is None"):
        create_app(Settings())


def test_app_wiring():
    app, _, _, _ = make_app(partitions=3, topic_ticks="t-in")
    rt = app.riskmon
    assert rt.ticks_topic.get_topic_name() == "t-in"
    assert rt.ticks_topic.partitions == 3
    assert rt.table.name == STATE_TABLE and rt.table.use_partitioner
    assert rt.table.key_serializer == "raw" and rt.table.changelog_topic.key_serializer == "raw"
    assert app.fetch_max_wait_ms == 10
    assert app.conf.broker_session_timeout == 6.0
    assert app.conf.broker_heartbeat_interval == 1.0
    assert app.conf.broker_rebalance_timeout == 10.0


def test_ingest_agent_with_test_context():
    app, registry, published, changelog = make_app()
    rt = app.riskmon

    async def run():
        async with rt.agent.test_context() as agent:
            for k in range(3):
                tick = Tick("SPY", T0 + k * 10**9, 100.0 + k, 2.0, k)
                await agent.put(value=tick.encode(), key=b"SPY")
            await agent.put(value=b"{oops", key=b"SPY")
            await agent.put(value=Tick("SPY", T0 + 10**9, 1.0, 1.0, 1).encode(), key=b"SPY")
            nxt = Tick("SPY", T0 + NS_PER_DAY, 110.0, 1.0, 3)
            await agent.put(value=nxt.encode(), key=b"SPY")
            return list(agent.results.values())

    summaries = asyncio.run(run())
    assert sum(s["n_in"] for s in summaries) == 6
    assert sum(s["n_ok"] for s in summaries) == 4
    dead = [d for r in published for d in r.dead]
    assert [(d.reason, d.value) for d in dead] == [
        (Reason.MALFORMED, b"{oops"),
        (Reason.DUPLICATE_SEQ, Tick("SPY", T0 + 10**9, 1.0, 1.0, 1).encode()),
    ]
    bars = [b for r in published for b in r.bars]
    assert len(bars) == 1
    bar = bars[0]
    assert isinstance(bar, Bar) and bar.closed_by == "next_day"
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (100.0, 102.0, 100.0, 102.0, 6.0)
    # state went to the changelog with raw keys, once per asset per batch at most
    assert changelog and all(key == "SPY" and ser == "raw" for key, _, ser in changelog)
    assert len(changelog) <= 6
    assert rt.table["SPY"][""]["seq"] == 3
    # metrics
    assert sample(registry, "riskmon_ticks_in_total") == 6
    assert sample(registry, "riskmon_ticks_ok_total") == 4
    assert sample(registry, "riskmon_dlq_total", reason="malformed") == 1
    assert sample(registry, "riskmon_dlq_total", reason="duplicate_seq") == 1
    assert sample(registry, "riskmon_dlq_total", reason="oversized") == 0
    assert sample(registry, "riskmon_bars_out_total", closed_by="next_day") == 1


def test_publish_sends_dlq_with_headers_and_bars_by_portfolio():
    app, _, _, _ = make_app(portfolio="book1")
    rt = app.riskmon
    calls = []

    async def fake_send(self, **kw):
        calls.append((self.get_topic_name(), kw))

    from stream_app.ingest import BatchResult, DeadLetter

    res = BatchResult(n_in=2)
    res.dead.append(DeadLetter(b"SPY", b"\x00raw", Reason.NON_FINITE, 2, 41))
    res.dead.append(DeadLetter(b"SPY", b"{}", Reason.MISSING_FIELD, 2, 42, bundle_index=3))
    res.emit(Bar("SPY", "2008-09-15", 1, 2, 0.5, 1.5, 10, 3, 0, 2, 0, 1, "book1"))
    rt.dlq_topic.send = types.MethodType(fake_send, rt.dlq_topic)
    rt.bars_topic.send = types.MethodType(fake_send, rt.bars_topic)
    asyncio.run(IngestRuntime.publish(rt, res))  # make_app replaced rt.publish
    (dlq_topic, dlq), (_, dlq2), (bars_topic, bar) = calls
    assert dict(dlq2["headers"])["bundle_index"] == b"3"
    assert "bundle_index" not in dict(dlq["headers"])
    assert dlq_topic == "ticks.dlq" and bars_topic == "bars"
    assert dlq["key"] == b"SPY" and dlq["value"] == b"\x00raw"
    assert dict(dlq["headers"]) == {
        "reason": b"non_finite",
        "source_topic": b"ticks",
        "source_partition": b"2",
        "source_offset": b"41",
    }
    assert bar["key"] == b"book1"
    assert [b.close for b in Bar.decode_many(bar["value"])] == [1.5]


def test_changelog_partition_matches_tick_partition():
    """Table state and ticks of an asset land on the same partition number.

    Faust's producer (aiokafka) picks the changelog partition from the raw key;
    kafka-python picks the tick partition from the same key: both murmur2.
    """
    aiokafka_partitioner = pytest.importorskip("aiokafka.partitioner")
    murmur2 = pytest.importorskip("kafka.partitioner.default").murmur2
    faust_side = aiokafka_partitioner.DefaultPartitioner()
    app, _, _, _ = make_app()
    key_bytes = app.serializers.dumps_key(str, "SPY", serializer=app.riskmon.table.key_serializer)
    assert key_bytes == b"SPY"
    for n in (1, 3, 4, 12):
        parts = list(range(n))
        for asset in ("SPY", "TLT", "EURUSD", "BRK.B", "^GSPC", "A" * 32):
            raw = asset.encode()
            theirs = (murmur2(raw) & 0x7FFFFFFF) % n  # kafka-python's DefaultPartitioner
            assert faust_side(raw, parts, parts) == theirs


def test_batches_split_into_chunks_by_bytes():
    from stream_app.app import _chunks_by_bytes

    records = [(b"K", b"x" * n, 0, i) for i, n in enumerate((10, 10, 30, 5, 50, 1))]
    chunks = list(_chunks_by_bytes(records, 25))
    assert [[len(r[1]) for r in c] for c in chunks] == [[10, 10, 30], [5, 50], [1]]
    assert list(_chunks_by_bytes([], 25)) == []


def test_worker_consumer_uses_the_configured_fetch_wait():
    """Faust hard-codes fetch_max_wait_ms=1500; ours comes from the settings."""

    async def run():
        app, _, _, _ = make_app(consumer_fetch_max_wait_ms=7)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == 7


def test_ingest_writes_its_state_only_after_the_batch_is_published():
    """Crash safety: a state saying a bar was sent must never precede the bar's ack."""
    app, _, published, changelog = make_app()
    rt = app.riskmon
    seen_at_publish = []

    async def slow_publish(result):
        seen_at_publish.append((len(changelog), rt.table.get("SPY")))
        await asyncio.sleep(0.01)  # the broker's ack
        published.append(result)

    rt.publish = slow_publish

    async def run():
        async with rt.agent.test_context() as agent:
            await agent.put(value=Tick("SPY", T0, 100.0, 1.0, 0).encode(), key=b"SPY")
            await agent.put(value=Tick("SPY", T0 + NS_PER_DAY, 101.0, 1.0, 1).encode(), key=b"SPY")

    asyncio.run(run())
    assert seen_at_publish and seen_at_publish[0] == (0, None)  # nothing written before
    assert changelog and rt.table["SPY"][""]["seq"] == 1  # written after


def test_publish_retries_a_failed_batch_until_the_broker_takes_it():
    app, registry, _, _ = make_app()
    rt = app.riskmon
    calls = []

    async def flaky_send(result):
        calls.append(result)
        if len(calls) == 1:
            raise ConnectionError("broker away")

    rt._send_all = flaky_send
    from stream_app.ingest import BatchResult

    res = BatchResult(n_in=1)
    asyncio.run(IngestRuntime.publish(rt, res))
    assert calls == [res, res]
    assert sample(registry, "riskmon_ingest_publish_retries_total") == 1


def test_consumer_lag_of_a_partition_given_away_is_removed_not_left_stale():
    """After a rebalance the lag of a partition another worker now holds disappears
    from this worker's metrics (a frozen last value would show in Grafana forever)."""
    from faust.types import TP

    from stream_app.app import RiskRuntime
    from stream_app.metrics import RiskMetrics

    registry = CollectorRegistry()
    rt = types.SimpleNamespace(metrics=RiskMetrics(registry), _lag_labels=set())
    assigned = {TP("ticks", 0), TP("ticks", 1)}
    consumer = types.SimpleNamespace(
        _read_offset={TP("ticks", 0): 9, TP("ticks", 1): None},
        assignment=lambda: assigned,
        highwater=lambda tp: 15,
    )
    app = types.SimpleNamespace(consumer=consumer)

    def lag(p):
        return registry.get_sample_value("riskmon_consumer_lag", {"topic": "ticks", "partition": p})

    RiskRuntime.update_lag(rt, app)
    assert (lag("0"), lag("1")) == (5.0, 15.0)
    assigned.discard(TP("ticks", 1))  # the rebalance gave partition 1 away
    RiskRuntime.update_lag(rt, app)
    assert (lag("0"), lag("1")) == (5.0, None)


def test_ingest_sends_bars_and_last_prices_in_the_order_its_ticks_made_them():
    """No last price is dropped or moved behind a later close: each portfolio's risk
    stream sees its prices as they moved, whatever the ingest batch boundaries (the
    intraday early warning reads them)."""
    app, _, _, _ = make_app(portfolio="book1")
    rt = app.riskmon
    from stream_app.ingest import BatchResult

    def bar(day, close, kind):
        return Bar("SPY", day, 1, 2, 0.5, close, 10, 3, 0, 2, 0, 1, kind=kind)

    res = BatchResult(n_in=4)
    for b in (
        bar("2008-09-15", 1.1, "last"),
        bar("2008-09-15", 1.2, "last"),
        bar("2008-09-15", 1.3, "bar"),
        bar("2008-09-16", 1.4, "last"),
    ):
        res.emit(b)
    assert [b.close for b in res.bars] == [1.3] and len(res.lasts) == 3
    out = IngestRuntime._bars_by_portfolio(rt, res)
    (bars,) = out.values()
    assert [(b.close, b.kind) for b in bars] == [
        (1.1, "last"), (1.2, "last"), (1.3, "bar"), (1.4, "last"),
    ]  # fmt: skip


def test_risk_writes_its_state_only_after_the_snapshots_are_acked(tmp_path):
    """Crash safety: a state saying a day is closed must never reach the changelog before
    that day's snapshot is acked on topic ``risk`` (else a kill -9 between the two loses
    the day: the restored state ignores the replayed bars as late)."""
    yaml = tmp_path / "p.yaml"
    yaml.write_text(
        "portfolios:\n  - {name: book, weights: {SPY: 0.5, TLT: 0.5}, champion: ewma}\n"
    )
    from stream_app.app import StreamSettings

    settings = StreamSettings(kafka_bootstrap="127.0.0.1:1", portfolios_file=yaml)
    app = create_app(settings, registry=CollectorRegistry())
    app.finalize()
    rr = app.riskmon_risk
    log = []

    def fake_changelog(partition, key, value, key_serializer=None, value_serializer=None):
        log.append("state")
        return types.SimpleNamespace(message=types.SimpleNamespace(partition=0))

    rr.table.send_changelog = fake_changelog
    rr.live_table.send_changelog = fake_changelog

    async def fake_send(key=None, value=None, **kw):
        loop = asyncio.get_running_loop()
        ack = loop.create_future()
        log.append("sent")
        loop.call_later(0.01, lambda: (log.append("acked"), ack.set_result(None)))
        return ack

    rr.risk_topic.send = fake_send
    bars = [
        Bar(a, f"2020-01-0{d}", 1, 1, 1, 1.0 + 0.01 * d, 1, 1, 0, 0, 0, d * NS_PER_DAY, "book")
        for d in (2, 3, 6, 7)
        for a in ("SPY", "TLT")
    ]
    outputs = asyncio.run(rr.handle([types.SimpleNamespace(value=Bar.encode_many(bars))]))
    assert outputs and log.count("sent") == len(outputs) == log.count("acked")
    assert "state" in log
    last_ack = max(i for i, e in enumerate(log) if e == "acked")
    assert log.index("state") > last_ack, log
