"""A small panel replayed through the real broker into a real worker.

Checks that the closed daily bars on topic ``bars`` equal the input daily bars exactly,
that bad ticks land on ``ticks.dlq`` with their original bytes and reasons, and that
the worker's Prometheus counters agree.
"""

from __future__ import annotations

import time

import pytest

from producers.kafka_out import TickPublisher, ensure_topics, replay_panel
from producers.synthetic import Crash, synthetic_panel
from stream_app.records import Bar, dumps

pytestmark = pytest.mark.integration

TOPICS = {"topic_ticks": "it-ticks", "topic_dlq": "it-ticks.dlq", "topic_bars": "it-bars"}


def consume_until(bootstrap, topics, done, timeout):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    got = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(got):
            got.extend(consumer)
    finally:
        consumer.close()
    return got


def test_replay_through_broker_and_worker(kafka_broker, worker):
    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, TOPICS.values(), 4)
    w = worker(app_id="it-ingest", partitions=4, last_price_interval_s=3600, **TOPICS)

    panel = synthetic_panel(5, ("SPY", "TLT", "GLD"), seed=42, crash=Crash(day=3, size=-0.1))
    stats = replay_panel(
        panel, bootstrap, topic=TOPICS["topic_ticks"], run_id="it-1", ticks_per_day=20
    )
    assert stats.ticks == 300 and stats.eod_markers == 15 and not stats.interrupted

    # bad ticks, after the replay so that the cursors are known
    last_ts = int(panel.dates[-1].astype("datetime64[ns]").astype("int64")) + 23 * 3600 * 10**9
    base = {"asset": "SPY", "run_id": "it-1", "source": "it", "size": 1.0}
    bad = [
        (b"SPY", b"\x00not json", "malformed"),
        (b"SPY", dumps({**base, "ts": last_ts, "price": -3.0, "seq": 10_000}), "non_positive"),
        (b"SPY", dumps({**base, "ts": last_ts, "price": 1.0, "seq": 5}), "duplicate_seq"),
        (b"SPY", dumps({**base, "ts": 10**18, "price": 1.0, "seq": 10_001}), "out_of_order"),
        (b"SPY", dumps({**base, "ts": "not a time", "price": 1.0, "seq": 10_002}), "bad_timestamp"),
        (b"SPY", b"{" + b" " * 5000 + b"}", "oversized"),
        # valid but keyed by another asset (a day later: the last day is closed)
        (
            b"TLT",
            dumps({**base, "ts": last_ts + 86_400 * 10**9, "price": 1.0, "seq": 10_003}),
            "key_mismatch",
        ),
    ]
    # a bundle: a good tick a day later, then a bad one (dead-lettered alone)
    gld = {**base, "asset": "GLD", "ts": last_ts + 86_400 * 10**9, "price": 2.0}
    bundle = [{**gld, "seq": 10_004}, {**gld, "seq": 10_005, "size": -1.0}]
    with TickPublisher(bootstrap, TOPICS["topic_ticks"], run_id="it-1", source="it") as pub:
        for key, value, _ in bad:
            pub.send_raw(key, value)
        pub.send_raw(b"GLD", dumps(bundle))
    bad.append((b"GLD", dumps(bundle[1]), "negative_size"))

    n_bars = panel.n_days * panel.n_assets

    def done(msgs):
        closed = [
            b
            for m in msgs
            if m.topic == TOPICS["topic_bars"]
            for b in Bar.decode_many(m.value)
            if b.kind == "bar"
        ]
        dead = [m for m in msgs if m.topic == TOPICS["topic_dlq"]]
        return len(closed) >= n_bars and len(dead) >= len(bad)

    msgs = consume_until(bootstrap, [TOPICS["topic_bars"], TOPICS["topic_dlq"]], done, timeout=45)
    assert done(msgs), w.log()[-3000:]

    bars = [b for m in msgs if m.topic == TOPICS["topic_bars"] for b in Bar.decode_many(m.value)]
    assert all(m.key == b"default" for m in msgs if m.topic == TOPICS["topic_bars"])
    closed = {(b.asset, b.day): b for b in bars if b.kind == "bar"}
    assert len(closed) == n_bars
    for i, day in enumerate(panel.dates):
        for j, asset in enumerate(panel.assets):
            b = closed[(asset, str(day))]
            assert (b.open, b.high, b.low, b.close, b.volume) == (
                panel.open[i, j],
                panel.high[i, j],
                panel.low[i, j],
                panel.close[i, j],
                panel.volume[i, j],
            )
            assert b.n_ticks == 20 and b.run_id == "it-1" and b.closed_by == "eod"
    lasts = [b for b in bars if b.kind == "last"]
    assert lasts and all(b.run_id == "it-1" for b in lasts)

    dead = [m for m in msgs if m.topic == TOPICS["topic_dlq"]]
    got = sorted((m.key, m.value, dict(m.headers)["reason"].decode()) for m in dead)
    assert got == sorted(bad)
    assert all(dict(m.headers)["source_topic"] == TOPICS["topic_ticks"].encode() for m in dead)

    bundled = [m for m in dead if m.key == b"GLD"]
    assert dict(bundled[0].headers)["bundle_index"] == b"1"

    assert w.metric("riskmon_ticks_in_total") == 300 + 15 + len(bad) + 1
    assert w.metric("riskmon_ticks_ok_total") == 315 + 1
    for _, _, reason in bad:
        assert w.metric("riskmon_dlq_total", reason=reason) == 1
    assert w.metric("riskmon_bars_out_total", closed_by="eod") == n_bars
    assert w.stop() == 0


def test_worker_creates_its_topics_on_a_broker_that_lacks_them(kafka_broker, worker):
    """The embedded broker creates no topic on demand: without the worker's own
    ensure_stream_topics, the first send to the bars topic failed and the ingest agent
    crash-looped (seen with fresh topic names)."""
    from kafka import KafkaAdminClient

    bootstrap = kafka_broker.bootstrap
    topics = {"topic_ticks": "fresh-ticks", "topic_dlq": "fresh-dlq", "topic_bars": "fresh-bars"}
    topics["topic_risk"] = "fresh-risk"
    w = worker(app_id="it-fresh", partitions=2, last_price_interval_s=3600, **topics)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 30
        while not set(topics.values()) <= set(admin.list_topics()):
            assert time.monotonic() < deadline, w.log()[-3000:]
            time.sleep(0.2)
        parts = {
            d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(topics.values()))
        }
    finally:
        admin.close()
    assert parts == dict.fromkeys(topics.values(), 2)
    assert "created topics" in w.log()

    panel = synthetic_panel(2, ("SPY", "TLT"), seed=1)
    replay_panel(panel, bootstrap, topic=topics["topic_ticks"], run_id="it-f", ticks_per_day=5)

    def done(msgs):
        return sum(b.kind == "bar" for m in msgs for b in Bar.decode_many(m.value)) >= 4

    msgs = consume_until(bootstrap, [topics["topic_bars"]], done, timeout=45)
    assert done(msgs), w.log()[-3000:]
    assert "Crashed" not in w.log()
    assert w.stop() == 0
