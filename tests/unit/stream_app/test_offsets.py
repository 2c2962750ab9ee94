"""stream_app.offsets: a partition's log restarted under the worker is found, counted,
logged, and Faust's stale read offset of it forgotten; the consumer thread's guard finds
it before the worker reads on from its stale position (stream_app.consumer)."""

import asyncio
import logging
import time
from collections import defaultdict, deque, namedtuple

import pytest

from stream_app.offsets import (
    LogRestart,
    OffsetLedger,
    OffsetLossMetrics,
    OffsetMonitor,
    RestartGuard,
    same_record,
)

R = namedtuple("R", "offset timestamp")
K = namedtuple("K", "offset timestamp key value")
T = namedtuple("T", "topic partition")  # like aiokafka's TopicPartition
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
    # the records passed on unchanged (ticks: as record runs, stream_app.consumer)
    assert [[rec for run in r.get(TP, []) for rec in run.records] for r in got] == [
        batch(0, 30),
        batch(0, 4, t0=5_000),
        [],
    ]
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 30
    assert consumer._read_offset[TP] is None


# -- the ledger's restarts found by the consumer thread ----------------------------------------
def test_log_ended_counts_everything_read_and_starts_over():
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(30, 210), 210)  # started at a committed offset 30
    restart = ledger.log_ended(TP, 210, 40)
    assert restart == LogRestart("ticks", 1, 30, 210, 40, 180, False)
    assert TP not in ledger.seen and TP not in ledger.start
    # the new log, read from 0, starts a new entry: no second restart
    assert ledger.fetched(TP, batch(0, 50, t0=9_000), 50) is None
    assert ledger.start[TP] == (0, 9_000) and ledger.seen[TP] == 50


def test_log_ended_with_another_record_at_the_last_offset():
    ledger = OffsetLedger()
    ledger.fetched(TP, batch(0, 210), 210)
    restart = ledger.log_ended(TP, 210, 500, changed_at=209)
    assert (restart.lost, restart.replaced, restart.changed_at) == (210, True, 209)
    assert "another record is at offset 209 now" in restart.message()
    # a partition this worker had read nothing of: a restart, nothing read lost
    restart = OffsetLedger().log_ended(("bars", 0), 7, 0)
    assert (restart.start_offset, restart.worker_offset, restart.lost) == (7, 7, 0)


def test_same_record():
    a = K(209, 1_000, b"SPY", b"{}")
    assert same_record(a, K(209, 1_000, b"SPY", b"{}"))
    assert not same_record(a, K(209, 1_001, b"SPY", b"{}"))
    assert not same_record(a, K(209, 1_000, b"TLT", b"{}"))
    assert not same_record(a, K(209, 1_000, b"SPY", b"[]"))
    assert not same_record(a, K(208, 1_000, b"SPY", b"{}"))


# -- the guard (consumer thread; aiokafka's assignment and seek faked) --------------------------


def krecs(lo, hi, t0=1_000):
    return [K(o, t0 + o, b"SPY", b"v%d" % o) for o in range(lo, hi)]


class State:
    """aiokafka TopicPartitionState: fetch position, last high watermark, fetch time."""

    def __init__(self, position=None, highwater=None, timestamp=None):
        self.position, self.highwater, self.timestamp = position, highwater, timestamp

    @property
    def has_valid_position(self):
        return self.position is not None


class Assignment:
    def __init__(self, states):
        self.states = states
        self.tps = frozenset(states)

    def state_value(self, tp):
        return self.states.get(tp)


class Client:
    """The aiokafka consumer's seek, and the coordinator's re-join, recorded."""

    def __init__(self, assignment):
        self.assignment, self.seeks, self.rejoins = assignment, [], 0

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))
        self.assignment.state_value(tp).position = offset

    def rejoin(self):
        self.rejoins += 1

    def before(self, guard):
        guard.before_fetch(self.assignment, self.seek, self.rejoin)

    def after(self, guard, records):
        records = dict(records)
        guard.after_fetch(records, self.assignment, self.seek, self.rejoin)
        return records


def consumed(client, tp, recs, highwater, timestamp=None):
    """The fetcher took ``recs`` of ``tp`` from a response with ``highwater``."""
    state = client.assignment.state_value(tp)
    state.position, state.highwater = recs[-1].offset + 1, highwater
    if timestamp is not None:
        state.timestamp = timestamp
    return {tp: recs}


TA, TB, TC = T("ticks", 0), T("ticks", 1), T("bars", 0)


def test_guard_finds_a_log_end_below_the_position_and_holds_it_until_the_rejoin():
    guard = RestartGuard(deque())
    client = Client(Assignment({TA: State(210, 210), TB: State(9), TC: State()}))
    client.before(guard)
    assert client.seeks == [] and not guard.pending  # end unknown, no position: nothing
    client.assignment.state_value(TA).highwater = 40  # an empty fetch of the new log
    client.before(guard)
    assert client.seeks == [(TA, 0)] and list(guard.pending) == [(TA, 210, 40, None)]
    assert client.rejoins == 1 and TA in guard.held
    client.before(guard)  # found once
    assert len(guard.pending) == 1 and client.rejoins == 1
    # until the group re-forms, what is fetched of it is dropped; the rest goes on
    got = client.after(guard, {**consumed(client, TA, krecs(0, 40), 40), TB: krecs(9, 12)})
    assert list(got) == [TB]
    # the re-join: a new assignment; the partition is read from where the broker says
    client.assignment = Assignment({TA: State(0, None), TB: State(12)})
    client.before(guard)
    assert not guard.held and client.seeks == [(TA, 0)]
    got = client.after(guard, consumed(client, TA, krecs(0, 40), 40))
    assert [r.offset for r in got[TA]] == list(range(40))


def test_guard_releases_a_hold_without_a_rejoin_at_its_deadline():
    guard = RestartGuard(deque(), hold_s=1e-6)
    client = Client(Assignment({TA: State(210, 40)}))
    client.before(guard)
    assert TA in guard.held
    consumed(client, TA, krecs(0, 40), 40)
    time.sleep(0.001)
    client.before(guard)
    assert not guard.held and client.seeks == [(TA, 0), (TA, 0)]  # from the start again
    with pytest.raises(ValueError, match="hold_s=0"):
        RestartGuard(deque(), hold_s=0)


def test_guard_rechecks_the_last_record_after_a_lost_connection_same_log():
    guard = RestartGuard(deque())
    client = Client(Assignment({TA: State(0)}))
    client.after(guard, consumed(client, TA, krecs(0, 210), 210, timestamp=500))
    guard.connection_lost(now_ms=1_000)
    # fetched before the connection was lost (still buffered): delivered
    got = client.after(guard, consumed(client, TA, krecs(210, 220), 230, timestamp=900))
    assert len(got[TA]) == 10 and TA in guard.unverified
    # the first records since: held back, the last one (219) read again first
    got = client.after(guard, consumed(client, TA, krecs(220, 230), 230, timestamp=1_200))
    assert got == {} and client.seeks == [(TA, 219)]
    # the same record is there: dropped (delivered already), the rest goes on
    got = client.after(guard, consumed(client, TA, krecs(219, 240), 240, timestamp=1_300))
    assert [r.offset for r in got[TA]] == list(range(220, 240))
    assert not guard.pending and not guard.unverified and not guard.expect
    assert guard.last[TA].offset == 239


def test_guard_finds_another_record_at_the_last_offset_after_a_lost_connection():
    guard = RestartGuard(deque())
    client = Client(Assignment({TA: State(0), TB: State(0)}))
    client.after(guard, {**consumed(client, TA, krecs(0, 210), 210, timestamp=500)})
    guard.connection_lost(now_ms=1_000)
    client.before(guard)  # the new log has outgrown the position: the end tells nothing
    assert guard.unverified == {TA: 1_000, TB: 1_000} and not guard.pending
    new_log = krecs(0, 500, t0=90_000)
    got = client.after(guard, consumed(client, TA, new_log[210:300], 500, timestamp=1_500))
    assert got == {} and client.seeks == [(TA, 209)]
    got = client.after(guard, consumed(client, TA, new_log[209:300], 500, timestamp=1_600))
    assert got == {} and client.seeks == [(TA, 209), (TA, 0)]
    assert list(guard.pending) == [(TA, 210, 500, 209)] and client.rejoins == 1
    assert TA in guard.held and TA not in guard.last


def test_guard_cannot_tell_without_the_last_record_or_elsewhere():
    guard = RestartGuard(deque())
    client = Client(Assignment({TA: State(0), TB: State(100)}))
    client.after(guard, consumed(client, TA, krecs(0, 210), 210, timestamp=500))
    guard.connection_lost(now_ms=1_000)
    # the re-join came first and reads from 0; TB: nothing fetched before to compare
    client.assignment = Assignment({TA: State(0), TB: State(100)})
    got = client.after(
        guard,
        {
            **consumed(client, TA, krecs(0, 50, t0=9_000), 50, timestamp=2_000),
            **consumed(client, TB, krecs(100, 120), 120, timestamp=2_000),
        },
    )
    assert len(got[TA]) == 50 and len(got[TB]) == 20
    assert client.seeks == [] and not guard.unverified and not guard.pending
    # sought back, then the re-join moved the position: the comparison is dropped
    client.after(guard, consumed(client, TA, krecs(50, 60, t0=9_000), 60, timestamp=2_100))
    guard.connection_lost(now_ms=3_000)
    client.after(guard, consumed(client, TA, krecs(60, 70, t0=9_000), 70, timestamp=3_100))
    assert client.seeks == [(TA, 59)]
    client.assignment = Assignment({TA: State(0)})
    got = client.after(guard, consumed(client, TA, krecs(0, 10, t0=9_000), 70, timestamp=3_200))
    assert len(got[TA]) == 10 and not guard.expect and not guard.pending


def test_monitor_reports_what_the_guard_found(caplog):
    registry, monitor = registry_and_monitor()
    consumer = FakeConsumer({TP: 210})
    monitor.on_fetched(consumer, {TP: batch(0, 210)})
    consumer._read_offset[TP] = 209
    consumer._committed_offset[TP] = 180
    monitor.pending.append((TP, 210, 40, None))  # RestartGuard.before_fetch
    with caplog.at_level(logging.WARNING, logger="stream_app.offsets"):
        monitor.on_fetched(consumer, {})
    assert not monitor.pending
    assert [(r.lost, r.replaced, r.broker_offset) for r in monitor.restarts] == [(210, False, 40)]
    assert value(registry, "riskmon_consumer_offsets_lost_total", TP) == 210
    assert value(registry, "riskmon_consumer_log_restarts_total", TP) == 1
    assert consumer._read_offset[TP] is None and consumer._committed_offset[TP] is None
    assert any("re-joining the group" in r.getMessage() for r in caplog.records)
    # the new log, read from 0 after the re-join: no second report
    consumer.highwaters = {TP: 40}
    monitor.on_fetched(consumer, {TP: batch(0, 40, t0=9_000)})
    monitor.on_fetched(consumer, {TP: batch(0, 40, t0=9_000)})  # and a re-read of it
    assert len(monitor.restarts) == 1
    assert monitor.guard.pending is monitor.pending


# -- stream_app.consumer: the hooks (faust's app, no broker) ------------------------------------
@pytest.fixture
def app():
    pytest.importorskip("faust")
    from prometheus_client import CollectorRegistry

    from stream_app.app import create_app
    from stream_app.settings import Settings

    return create_app(Settings(kafka_bootstrap="127.0.0.1:1"), registry=CollectorRegistry())


def test_the_consumer_thread_runs_the_guard_around_each_fetch(app, monkeypatch):
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = app.consumer._thread
    client = Client(Assignment({TA: State(210, 40), TB: State(0)}))
    rejoins = []
    aio = type("AIOKafkaConsumer", (), {})()
    aio._subscription = type("S", (), {"subscription": type("Sub", (), {})()})()
    aio._subscription.subscription.assignment = client.assignment
    aio.seek = client.seek
    aio._coordinator = type("C", (), {"request_rejoin": lambda self: rejoins.append(1)})()
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: aio)

    async def fetched(self, consumer, active_partitions, timeout=None, max_records=None):
        return {TA: krecs(0, 40, t0=9_000), TB: krecs(0, 5)}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetched)
    got = asyncio.run(thread._fetch_records(aio, {TA, TB}, timeout=0.1))
    assert client.seeks == [(TA, 0)] and rejoins == [1]  # before the fetch
    assert list(got) == [TB]  # after it: the held partition's records dropped
    assert app.riskmon_offsets.guard.last[TB].offset == 4
    assert list(app.riskmon_offsets.pending) == [(TA, 210, 40, None)]


def test_a_closed_broker_connection_reaches_the_guard():
    from aiokafka.conn import CloseReason

    from stream_app.consumer import _on_connection_lost

    closed, lost = [], []
    client = type("Client", (), {})()
    client._on_connection_closed = lambda conn, reason: closed.append(reason)
    _on_connection_lost(client, lambda: lost.append(1))
    client._on_connection_closed("conn", CloseReason.CONNECTION_BROKEN)
    client._on_connection_closed("conn", CloseReason.SHUTDOWN)  # the consumer stopping
    assert closed == [CloseReason.CONNECTION_BROKEN, CloseReason.SHUTDOWN] and lost == [1]


def test_the_worker_consumer_hooks_the_guard_into_its_client(app):
    pytest.importorskip("aiokafka")
    from stream_app.consumer import ConsumerThread

    thread = app.consumer._thread
    assert isinstance(thread, ConsumerThread)

    async def create():  # aiokafka wants a running loop; nothing is started
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(create())
    assert consumer._fetch_max_wait_ms == app.fetch_max_wait_ms
    guard = app.riskmon_offsets.guard
    assert guard._lost_at is None
    consumer._client._on_connection_closed(None, 0)  # CONNECTION_BROKEN
    assert guard._lost_at is not None


def test_a_batch_fetched_during_a_rebalance_is_held_back(app, monkeypatch):
    consumer = app.consumer
    changelog = sorted(app.tables.changelog_topics)[0]
    ticks, log = T("ticks", 0), T(changelog, 0)
    batches = iter([{ticks: krecs(0, 10), log: krecs(0, 3)}] * 3)
    rewound = []

    async def getmany(active_partitions, timeout):
        return next(batches)

    async def rewind(records):
        rewound.append({tp: len(recs) for tp, recs in records.items()})

    monkeypatch.setattr(consumer._thread, "getmany", getmany)
    monkeypatch.setattr(consumer._thread, "rewind", rewind)

    async def fetch():
        return await consumer._getmany({ticks, log}, 0.1)

    consumer.flow_active, app.rebalancing = True, True  # recovery reads changelogs
    assert list(asyncio.run(fetch())) == [log] and rewound == [{ticks: 10}]
    consumer.flow_active = False  # Faust drops the whole batch
    assert asyncio.run(fetch()) == {} and rewound[-1] == {ticks: 10, log: 3}
    consumer.flow_active, app.rebalancing = True, False  # the common case: untouched
    assert len(asyncio.run(fetch())) == 2 and len(rewound) == 2


def test_rewind_seeks_back_only_where_the_batch_left_the_position(app, monkeypatch):
    thread = app.consumer._thread
    # TA: the batch 0..9 was consumed (position 10); TB: sought elsewhere since (to 3)
    client = Client(Assignment({TA: State(10), TB: State(3)}))
    aio = type("AIOKafkaConsumer", (), {"seek": lambda self, tp, o: client.seek(tp, o)})()
    aio._subscription = type("S", (), {"subscription": type("Sub", (), {})()})()
    aio._subscription.subscription.assignment = client.assignment
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: aio)
    thread._rewind({TA: 0, TB: 0, TC: 0}, {TA: 10, TB: 10, TC: 10})
    assert client.seeks == [(TA, 0)]
