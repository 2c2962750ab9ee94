"""Outbox (bounded, unique, oldest first), backoff, and the delivery loop with a fake sink
that fails for a while: nothing lost, nothing written twice, metrics agree."""

import asyncio

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry

from stream_app.alerts import Alert
from stream_app.alerts_sink import (
    AlertDelivery,
    AlertMetrics,
    Backoff,
    Outbox,
    RedisAlertSink,
    channel_name,
    dedup_key,
    stream_key,
)


def alert(i, state="firing", severity="warning", run_id="r"):
    return Alert(
        id=f"id{i}",
        rule="cnn_score",
        severity=severity,
        state=state,
        portfolio="book",
        asset="",
        value=0.9,
        threshold=0.8,
        ts=1_000 + i,
        day="2008-10-01",
        run_id=run_id,
    )


class FakeSink:
    """Remembers what was written (like the Redis script); fails while ``down``."""

    def __init__(self):
        self.written = {}
        self.order = []
        self.down = False
        self.calls = 0

    async def deliver(self, a):
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        if a.event_key in self.written:
            return None
        self.written[a.event_key] = a
        self.order.append(a.event_key)
        return f"{len(self.order)}-0"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def sample(registry, name):
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


# -- keys -----------------------------------------------------------------------------------
def test_key_names():
    a = alert(1, run_id="")
    assert stream_key(a.run_label) == "riskmon:alerts:live" == channel_name("")
    assert dedup_key(a) == "riskmon:alert-ids:live:id1:firing:warning"
    assert dedup_key(alert(1, "resolved", run_id="gfc")) == (
        "riskmon:alert-ids:gfc:id1:resolved:warning"
    )


def test_sink_arguments():
    class Client:
        def register_script(self, text):
            self.text = text
            return None

    sink = RedisAlertSink(Client(), maxlen=50, id_ttl_s=60)
    keys, args = sink._args(alert(3))
    assert keys == ["riskmon:alert-ids:r:id3:firing:warning", "riskmon:alerts:r"]
    assert args[:3] == ["60", "50", "riskmon:alerts:r"]
    assert Alert.decode(args[3]) == alert(3)
    fields = dict(zip(args[4::2], args[5::2], strict=True))
    assert Alert.from_fields(fields) == alert(3)
    with pytest.raises(ValueError, match="maxlen"):
        RedisAlertSink(Client(), maxlen=0)


# -- outbox -----------------------------------------------------------------------------------
def test_outbox_order_uniqueness_and_bound():
    box = Outbox(max_size=3)
    assert box.extend([alert(i) for i in range(3)]) == []
    assert box.add(alert(1)) == []  # already queued: ignored
    assert [a.id for a in box] == ["id0", "id1", "id2"]
    dropped = box.extend([alert(3), alert(4)])
    assert [a.id for a in dropped] == ["id0", "id1"] and box.dropped_total == 2
    assert [a.id for a in box] == ["id2", "id3", "id4"] and len(box) == 3
    assert box.oldest().id == "id2"
    assert box.remove(alert(3).event_key).id == "id3" and box.remove("nope") is None
    assert alert(3).event_key not in box and alert(4).event_key in box
    # firing and resolved of one alert are two events
    box.add(alert(4, "resolved"))
    assert len(box) == 3
    with pytest.raises(ValueError, match="max_size"):
        Outbox(0)


def test_backoff_bounds_and_jitter():
    b = Backoff(initial=0.1, factor=2.0, max_delay=1.0, jitter=0.2, seed=1)
    delays = [b.next_delay() for _ in range(8)]
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for d, n in zip(delays, nominal, strict=True):
        assert 0.8 * n <= d <= 1.2 * n
    b.reset()
    assert 0.08 <= b.next_delay() <= 0.12
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=2, max_delay=1)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)


# -- delivery ----------------------------------------------------------------------------------
def test_delivery_survives_an_outage_in_order():
    registry = CollectorRegistry()
    metrics = AlertMetrics(registry)
    sink, clock = FakeSink(), Clock()
    d = AlertDelivery(
        sink, backoff=Backoff(0.5, 2.0, 4.0, jitter=0.0), metrics=metrics, clock=clock
    )

    async def scenario():
        d.add([alert(0), alert(1)])
        r = await d.drain()
        assert [a.id for a in r.delivered] == ["id0", "id1"] and len(d.outbox) == 0
        sink.down = True
        d.add([alert(2), alert(3)])
        r = await d.drain()
        assert isinstance(r.error, ConnectionError) and len(d.outbox) == 2
        assert sample(registry, "riskmon_alerts_pending") == 2
        # backing off: no attempt before the delay
        calls = sink.calls
        clock.t += 0.4
        assert (await d.drain()).skipped and sink.calls == calls
        clock.t += 0.2
        assert (await d.drain()).error is not None  # second failure: next delay 1.0
        d.add([alert(4)])
        clock.t += 0.9
        assert (await d.drain()).skipped
        sink.down = False
        clock.t += 0.2
        r = await d.drain()
        assert [a.id for a in r.delivered] == ["id2", "id3", "id4"]
        # the same alerts raised again (a restarted worker): found, not written twice
        d.add([alert(3), alert(5)])
        r = await d.drain()
        assert [a.id for a in r.duplicates] == ["id3"] and [a.id for a in r.delivered] == ["id5"]

    asyncio.run(scenario())
    assert sink.order == [f"id{i}:firing:warning" for i in range(6)]
    assert sample(registry, "riskmon_alerts_pending") == 0
    assert sample(registry, "riskmon_alerts_delivered_total") == 6
    assert sample(registry, "riskmon_alerts_duplicates_total") == 1
    assert sample(registry, "riskmon_alerts_delivery_errors_total") == 2


def test_delivery_failure_mid_batch_keeps_the_rest():
    sink = FakeSink()
    d = AlertDelivery(sink, backoff=Backoff(jitter=0.0), clock=Clock())

    class Flaky(FakeSink):
        async def deliver(self, a):
            if a.id == "id2":
                raise TimeoutError("slow")
            return await super().deliver(a)

    d.sink = Flaky()
    d.add([alert(i) for i in range(4)])
    r = asyncio.run(d.drain())
    assert [a.id for a in r.delivered] == ["id0", "id1"]
    assert [a.id for a in d.outbox] == ["id2", "id3"]


def test_delivery_overflow_counted():
    registry = CollectorRegistry()
    d = AlertDelivery(FakeSink(), Outbox(2), metrics=AlertMetrics(registry))
    dropped = d.add([alert(i) for i in range(5)])
    assert [a.id for a in dropped] == ["id0", "id1", "id2"]
    assert sample(registry, "riskmon_alerts_dropped_total") == 3
    assert sample(registry, "riskmon_alerts_pending") == 2
