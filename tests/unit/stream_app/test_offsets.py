"""stream_app.offsets: a partition's log restarted under the worker is found, counted,
logged, and Faust's stale read offset of it forgotten."""

import asyncio
import logging
from collections import defaultdict, namedtuple

import pytest

from stream_app.offsets import LogRestart, OffsetLedger, OffsetLossMetrics, OffsetMonitor

R = namedtuple("R", "offset timestamp")
TP = ("ticks", 1)


def batch(lo, hi, t0=1_000):
    """Records lo..hi-1 of a log whose record at offset o was written at t0 + o."""
    return [R(o, t0 + o) for o in range(lo, hi)]


# -- the ledger (pure) ------------------------------------------------------------------------
def test_reading_on_and_rereading_the_same_log_is_no_restart():
    ledger = OffsetLedger()
    assert ledger.fetched(TP, batch(0, 50), 200) is None
    assert ledger.fetched(TP, batch(50, 120), 200) is None
    assert ledger.seen[TP] == 120 and ledger.start[TP] == (0, 1_000)
    # a rebalance seeks back to the committed offset 30, or to 0: same records again
    assert ledger.fetched(TP, batch(30, 60), 200) is None
    assert ledger.fetched(TP, batch(0, 10), 200) is None
    assert ledger.seen[TP] == 120  # still the highest fetched
    assert ledger.fetched(TP, batch(60, 150), 200) is None
    assert ledger.seen[TP] == 150


def test_a_log_replaced_from_the_start_loses_everything_read():
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(0, 210), 210)
    # the broker restarted empty; the producer has already written 300 new messages
    restart = ledger.fetched(TP, batch(0, 100, t0=9_000), 300)
    assert restart == LogRestart("ticks", 1, 0, 210, 300, 210, True)
    assert ledger.seen[TP] == 100 and ledger.start[TP] == (0, 9_000)
    # the new log reads on normally, and is not reported again
    assert ledger.fetched(TP, batch(100, 300, t0=9_000), 300) is None
    assert ledger.fetched(TP, batch(0, 5, t0=9_000), 300) is None


def test_a_shorter_log_is_a_restart_even_without_the_start_record():
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(100, 200), 200)  # this worker started at committed offset 100
    # restarted: new log of 20 messages read from 0 (the record at 100 is not there)
    restart = ledger.fetched(TP, batch(0, 20, t0=9_000), 20)
    assert (restart.start_offset, restart.worker_offset, restart.broker_offset) == (100, 200, 20)
    assert restart.lost == 100 and not restart.replaced  # 100..199, all beyond the new end
    # a log truncated above the start (same records below the new end): only the tail
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(0, 100), 100)
    restart = ledger.fetched(TP, batch(0, 30), 60)
    assert (restart.lost, restart.replaced, restart.broker_offset) == (40, False, 60)


def test_an_unknown_end_and_unseen_start_tell_nothing():
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(100, 200), 200)
    assert ledger.fetched(TP, batch(0, 50, t0=9_000), None) is None  # end unknown
    # the new log grew past the worker before it was read from above the old start
    assert ledger.fetched(TP, batch(150, 160, t0=9_000), 500) is None


def test_start_record_found_across_gaps():
    """Compacted logs have holes in their offsets: the start record is searched for."""
    ledger = OffsetLedger()
    ledger.fetched(TP, [R(3, 13), R(7, 17), R(9, 19)], 10)
    assert ledger.fetched(TP, [R(1, 11), R(3, 13), R(8, 18)], 10) is None
    restart = ledger.fetched(TP, [R(1, 91), R(3, 93), R(4, 94)], 10)
    assert restart is not None and restart.replaced and restart.lost == 10 - 3
    # start compacted away in the re-read: no comparison, no restart
    ledger = OffsetLedger()
    ledger.fetched(TP, [R(3, 13), R(7, 17)], 8)
    assert ledger.fetched(TP, [R(1, 11), R(5, 15)], 8) is None


def test_partitions_are_independent():
    ledger = OffsetLedger()
    ledger.fetched(("a", 0), batch(0, 10), 10)
    ledger.fetched(("a", 1), batch(0, 10), 10)
    assert ledger.fetched(("a", 1), batch(0, 5, t0=5), 5).lost == 10
    assert ledger.fetched(("a", 0), batch(10, 12), 12) is None


def test_message_names_partition_and_offsets():
    text = LogRestart("bars", 0, 0, 7, 3, 7, True).message()
    assert text.startswith("the broker lost messages of bars[0]")
    assert "read up to offset 7 (from offset 0)" in text and "now ends at offset 3" in text
    assert ": 7 messages this worker had read are gone" in text
    assert "is shorter" in LogRestart("bars", 0, 0, 7, 3, 4, False).message()
    assert "ends at offset unknown" in LogRestart("bars", 0, 0, 7, None, 7, True).message()


# -- the monitor (Faust's consumer faked) -------------------------------------------------------
class FakeConsumer:
    """The attributes of faust's Consumer the monitor touches."""

    def __init__(self, highwaters):
        self.highwaters = highwaters
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._gap = {}

    def highwater(self, tp):
        if tp not in self.highwaters:
            raise AssertionError("not assigned")
        return self.highwaters[tp]


def registry_and_monitor():
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    return registry, OffsetMonitor(OffsetLossMetrics(registry))


def value(registry, name, tp):
    v = registry.get_sample_value(name, {"topic": tp[0], "partition": str(tp[1])})
    return None if v is None else v


def test_monitor_counts_logs_and_forgets_the_stale_read_offset(caplog):
    registry, monitor = registry_and_monitor()
    other = ("bars", 0)
    consumer = FakeConsumer({TP: 210, other: 7})
    monitor.on_fetched(consumer, {TP: batch(0, 210), other: batch(0, 7), ("x", 0): []})
    # zeros exported from the first fetch of a partition; nothing lost yet
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 0
    assert value(registry, "riskmon_consumer_log_restarts_total", other) == 0
    # Faust recorded what it delivered (read offset = last offset, acked, committed)
    consumer._read_offset[TP] = 209
    consumer._committed_offset[TP] = 150
    consumer._acked[TP].extend([150, 151])
    consumer._read_offset[other] = 6
    consumer.highwaters = {TP: 40, other: 7}
    with caplog.at_level(logging.WARNING, logger="stream_app.offsets"):
        monitor.on_fetched(consumer, {TP: batch(0, 40, t0=9_000), other: batch(6, 7)})
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 210
    assert value(registry, "riskmon_consumer_log_restarts_total", TP) == 1
    assert value(registry, "riskmon_consumer_log_restarts_total", other) == 0  # a re-read
    # Faust would have dropped offsets 0..208 of the new log as already read
    assert consumer._read_offset[TP] is None and consumer._committed_offset[TP] is None
    assert consumer._acked[TP] == []
    assert consumer._read_offset[other] == 6  # untouched
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ticks[1]" in errors[0].getMessage()
    assert "read up to offset 210" in errors[0].getMessage()
    assert [r.lost for r in monitor.restarts] == [210]


def test_monitor_leaves_a_reset_read_offset_alone():
    """After the re-join Faust's read offset is already None (or the broker's committed
    offset): only the report, no bookkeeping touched."""
    registry, monitor = registry_and_monitor()
    consumer = FakeConsumer({TP: 100})
    monitor.on_fetched(consumer, {TP: batch(0, 100)})
    consumer._committed_offset[TP] = 3
    consumer.highwaters = {TP: 5}
    monitor.on_fetched(consumer, {TP: batch(0, 5, t0=7_000)})
    assert consumer._committed_offset[TP] == 3
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 100


def test_monitor_with_a_partition_no_longer_assigned():
    _, monitor = registry_and_monitor()
    consumer = FakeConsumer({})
    monitor.on_fetched(consumer, {TP: batch(0, 10)})
    monitor.on_fetched(consumer, {TP: batch(0, 10, t0=5)})  # end unknown, start differs
    assert [(r.lost, r.broker_offset) for r in monitor.restarts] == [(10, None)]


def test_the_worker_consumer_hands_each_batch_to_the_apps_monitor():
    """create_app wires an OffsetMonitor; stream_app.consumer.Consumer._getmany feeds it
    (the consumer thread's fetch faked: no broker)."""
    pytest.importorskip("faust")
    from prometheus_client import CollectorRegistry

    from stream_app.app import create_app
    from stream_app.settings import Settings

    registry = CollectorRegistry()
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1"), registry=registry)
    assert isinstance(app.riskmon_offsets, OffsetMonitor)
    consumer = app.consumer
    fetches = iter([{TP: batch(0, 30)}, {TP: batch(0, 4, t0=5_000)}, {}])

    async def getmany(active_partitions, timeout):
        return next(fetches)

    consumer._thread.getmany = getmany
    consumer._thread.highwater = lambda tp: 4
    consumer._read_offset[TP] = 29

    async def run():
        return [await consumer._getmany({TP}, 0.1) for _ in range(3)]

    got = asyncio.run(run())
    assert [len(r.get(TP, [])) for r in got] == [30, 4, 0]  # records passed on unchanged
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 30
    assert consumer._read_offset[TP] is None
