"""Replay producer with a fake kafka-python producer (no broker): keys, sequences, stop."""

import threading
import time
from typing import ClassVar

import pytest

kafka = pytest.importorskip("kafka")

from producers.kafka_out import TickPublisher, new_run_id, replay_panel  # noqa: E402
from producers.synthetic import synthetic_panel  # noqa: E402
from stream_app.ingest import IngestProcessor  # noqa: E402
from stream_app.records import loads  # noqa: E402
from stream_app.settings import Settings  # noqa: E402


class FakeFuture:
    """kafka-python's send() future, resolved at once (failed if ``error`` is given)."""

    def __init__(self, error=None):
        self.error = error

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    instances: ClassVar[list["FakeProducer"]] = []

    def __init__(self, **config):
        self.config = config
        self.sent = []
        self.flushed = 0
        self.closed = False
        self.fail_after = None
        self.reject_after = None  # sends beyond this many are not acknowledged
        FakeProducer.instances.append(self)

    def send(self, topic, key=None, value=None):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise KeyboardInterrupt
        if self.reject_after is not None and len(self.sent) >= self.reject_after:
            return FakeFuture(kafka.errors.KafkaTimeoutError("not acknowledged"))
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout=None):
        self.flushed += 1

    def close(self, timeout=None):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    FakeProducer.instances.clear()
    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    return FakeProducer


@pytest.fixture
def panel():
    return synthetic_panel(4, ("A", "B"), seed=42)


def test_publisher_config_and_sequences(fake):
    pub = TickPublisher("h:1", "ticks", run_id="r1", source="replay")
    prod = fake.instances[0]
    assert prod.config["acks"] == "all" and prod.config["enable_idempotence"] is True
    pub.send_tick("A", 5, 1.5, 2.0)
    pub.send_tick("A", 6, 1.6)
    pub.send_tick("B", 6, 9.0)
    pub.send_eod("A", 7)
    msgs = [(k, loads(v)) for _, k, v in prod.sent]
    assert [k for k, _ in msgs] == [b"A", b"A", b"B", b"A"]
    assert [m["seq"] for _, m in msgs] == [0, 1, 0, 2]
    assert all(m["run_id"] == "r1" and m["source"] == "replay" for _, m in msgs)
    assert msgs[3][1]["eod"] is True and "price" not in msgs[3][1]
    pub.close()
    assert prod.closed and prod.flushed >= 1


def test_bundle_items_are_the_ticks_send_tick_would_send(fake):
    one = TickPublisher("h:1", run_id="r1", source="replay")
    one.send_tick("A", 5, 1.5, 2.0)
    one.send_tick("A", 6, 1.6, 0.0)
    many = TickPublisher("h:1", run_id="r1", source="replay")
    assert many.send_bundle("A", []) is None
    many.send_bundle("A", [(5, 1.5, 2.0), (6, 1.6, 0.0)])
    singles = [loads(v) for _, _, v in fake.instances[0].sent]
    (bundle,) = [loads(v) for _, _, v in fake.instances[1].sent]
    assert bundle == singles
    assert [m["seq"] for m in bundle] == [0, 1]


def test_live_sequence_survives_a_restart(fake):
    first = TickPublisher("h:1", source="live")
    s1 = first.next_seq("A")
    time.sleep(0.002)
    second = TickPublisher("h:1", source="live")
    assert second.next_seq("A") > s1
    first.send_tick("A", 1, 1.0)
    assert "run_id" not in loads(fake.instances[0].sent[0][2])


def test_replay_messages_rebuild_the_panel(fake, panel):
    days = []
    stats = replay_panel(panel, "h:1", run_id="r1", ticks_per_day=10, progress=days.append)
    prod = fake.instances[0]
    assert stats.days == 4 and stats.ticks == 80 and stats.eod_markers == 8
    assert not stats.interrupted and prod.closed
    assert [p.days_done for p in days] == [1, 2, 3, 4] and days[-1].ticks_sent == 80
    assert stats.per_asset == {"A": 40, "B": 40}
    proc = IngestProcessor(last_price_interval_s=0)
    res = proc.process([(k, v, 0, i) for i, (_, k, v) in enumerate(prod.sent)], {})
    assert not res.dead and res.n_ok == 88
    got = {(b.asset, b.day): (b.open, b.high, b.low, b.close, b.volume) for b in res.bars}
    assert all(b.closed_by == "eod" and b.run_id == "r1" for b in res.bars)
    for i, day in enumerate(panel.dates):
        for j, asset in enumerate(panel.assets):
            assert got[(asset, str(day))] == (
                panel.open[i, j],
                panel.high[i, j],
                panel.low[i, j],
                panel.close[i, j],
                panel.volume[i, j],
            )


def test_stop_event_stops_after_the_current_day(fake, panel):
    stop = threading.Event()

    def progress(p):
        if p.days_done == 2:
            stop.set()

    stats = replay_panel(panel, "h:1", ticks_per_day=5, progress=progress, stop=stop)
    assert stats.interrupted and stats.days == 2 and stats.last_day == str(panel.dates[1])
    assert fake.instances[0].closed


def test_keyboard_interrupt_flushes_what_was_sent(fake, panel):
    pub = TickPublisher("h:1", run_id="r2")
    fake.instances[0].fail_after = 25
    stats = replay_panel(panel, publisher=pub, ticks_per_day=5)
    assert stats.interrupted and stats.days == 2
    assert fake.instances[0].flushed >= 1 and not fake.instances[0].closed  # caller's publisher
    assert len(fake.instances[0].sent) == 25


def test_pacing(fake, panel):
    t0 = time.monotonic()
    stats = replay_panel(panel.between(None, panel.dates[2]), "h:1", days_per_second=30)
    assert stats.days == 3
    assert time.monotonic() - t0 >= 3 / 30 - 0.01


def test_run_id_is_valid():
    rid = new_run_id()
    assert Settings(replay_run_id=rid).replay_run_id == rid
    with pytest.raises(ValueError, match="days_per_second"):
        replay_panel(synthetic_panel(3), "h:1", days_per_second=0)


def test_bundled_replay_rebuilds_the_panel(fake, panel):
    stats = replay_panel(panel, "h:1", run_id="r3", ticks_per_day=10, bundle=4)
    prod = fake.instances[0]
    # per asset-day: bundles of 4, 4, 2, then one eod marker
    assert stats.ticks == 80 and len(prod.sent) == 4 * 2 * 4
    first = loads(prod.sent[0][2])
    assert isinstance(first, list) and len(first) == 4
    assert [t["seq"] for t in first] == [0, 1, 2, 3]
    proc = IngestProcessor(last_price_interval_s=0)
    res = proc.process([(k, v, 0, i) for i, (_, k, v) in enumerate(prod.sent)], {})
    assert not res.dead and res.n_ok == 88
    got = {(b.asset, b.day): (b.open, b.high, b.low, b.close, b.volume) for b in res.bars}
    for i, day in enumerate(panel.dates):
        for j, asset in enumerate(panel.assets):
            assert got[(asset, str(day))] == (
                panel.open[i, j],
                panel.high[i, j],
                panel.low[i, j],
                panel.close[i, j],
                panel.volume[i, j],
            )
    with pytest.raises(ValueError, match="bundle=0"):
        replay_panel(panel, "h:1", bundle=0)


def test_unacknowledged_sends_are_counted_and_reported(fake, caplog):
    panel = synthetic_panel(4, ("AAA", "BBB"), seed=1)
    pub = TickPublisher("127.0.0.1:1", "ticks", run_id="r1")
    fake.instances[-1].reject_after = 10
    with caplog.at_level("ERROR"):
        stats = replay_panel(panel, publisher=pub, ticks_per_day=5, bundle=1)
    lost = pub.sent - 10
    assert lost > 0
    assert stats.failed_sends == {"KafkaTimeoutError": lost}
    assert pub.n_failed == lost
    assert "not acknowledged by the broker" in caplog.text
