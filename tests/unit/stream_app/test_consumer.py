"""Record runs: one Faust event per partition and fetch on the ticks topic, with the
offsets of every record acked, committed and gap-tracked as if each had been its own
event (stream_app.consumer)."""

import asyncio
import types

import pytest

faust = pytest.importorskip("faust")

from faust.types import TP  # noqa: E402
from faust.types.tuples import ConsumerMessage  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from stream_app.app import create_app  # noqa: E402
from stream_app.consumer import (  # noqa: E402
    RecordRun,
    RecordRuns,
    RecordRunSchema,
    RunMessage,
    event_records,
)
from stream_app.settings import Settings  # noqa: E402

TICKS = TP("ticks", 0)
BARS = TP("bars", 0)


def record(tp, offset, key=b"SPY", value=b"{}"):
    """What aiokafka's consumer returns (the fields Faust's ``_to_message`` reads)."""
    return types.SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=1_700_000_000_000 + offset,
        timestamp_type=0,
        headers=(),
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
    )


@pytest.fixture
def consumer():
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1"), registry=CollectorRegistry())
    app.finalize()
    c = app.consumer
    app.topics._acking_topics.update({"ticks", "bars"})  # what subscribing the agents does
    return c


def test_split_cuts_only_the_run_topics_into_runs_of_at_most_max_records():
    runs = RecordRuns(frozenset({"ticks"}), max_records=3)
    ticks = [record(TICKS, o) for o in range(10, 17)]
    bars = [record(BARS, o) for o in range(5)]
    out = runs.split({TICKS: ticks, BARS: bars, TP("ticks", 1): []})
    assert [[r.offset for r in run.records] for run in out[TICKS]] == [
        [10, 11, 12],
        [13, 14, 15],
        [16],
    ]
    assert all(type(run) is RecordRun for run in out[TICKS])
    assert out[BARS] is bars and out[TP("ticks", 1)] == []
    assert runs.split({}) == {}
    with pytest.raises(ValueError, match="max_records=0"):
        RecordRuns(frozenset({"ticks"}), max_records=0)


def test_the_worker_app_delivers_its_ticks_topic_as_runs(consumer):
    runs = consumer.app.riskmon_runs
    assert runs.topics == {"ticks"} and runs.max_records == 500
    assert isinstance(consumer.app.riskmon.ticks_topic.schema, RecordRunSchema)


def test_a_run_becomes_one_message_standing_for_its_records(consumer):
    recs = [record(TICKS, o, value=b"x" * o) for o in (7, 8, 9)]
    message = consumer._to_message(TICKS, RecordRun(recs))
    assert type(message) is RunMessage and isinstance(message, ConsumerMessage)
    assert (message.first_offset, message.offset) == (7, 9)
    assert message.value is recs and message.key is None and message.tp == TICKS
    assert message.timestamp == pytest.approx(1_700_000_000.009)
    assert message.serialized_value_size == 7 + 8 + 9
    plain = consumer._to_message(BARS, record(BARS, 3))
    assert type(plain) is not RunMessage and plain.offset == 3


def test_acking_a_run_acks_every_offset_so_the_commit_passes_it(consumer):
    consumer._committed_offset[TICKS] = 10
    first = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(10, 14)]))
    second = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(14, 16)]))
    for m in (first, second):
        m.incref()
    assert consumer._new_offset(TICKS) is None
    # the later run done first: the offsets below it are not acked, no commit yet
    assert second.ack(consumer) is True
    assert consumer._new_offset(TICKS) is None
    assert first.ack(consumer) is True
    assert consumer._new_offset(TICKS) == 16
    assert consumer._n_acked == 6
    assert first.ack(consumer) is False  # twice is once


def test_a_run_acks_nothing_below_the_committed_offset(consumer):
    consumer._committed_offset[TICKS] = 12
    run = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(10, 15)]))
    run.incref()
    assert run.ack(consumer) is True
    assert sorted(consumer._acked[TICKS]) == [12, 13, 14]
    stale = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(5, 9)]))
    stale.incref()
    assert stale.ack(consumer) is False  # all below the commit: Faust's own rule
    assert sorted(consumer._acked[TICKS]) == [12, 13, 14]


def test_a_gap_before_a_run_is_only_the_offsets_missing_before_its_first_record(consumer):
    """Faust's delivery loop marks [read offset + 1, message offset] as a gap (treated
    as acked); for a run that would ack the run's own records before the agent ran."""
    run = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(20, 25)]))
    asyncio.run(consumer._add_gap(TICKS, 15, run.offset))  # read offset was 14
    assert sorted((i.begin, i.end) for i in consumer._gap[TICKS]) == [(15, 20)]
    run.incref()
    run.ack(consumer)
    assert consumer._new_offset(TICKS) == 25
    # consecutive runs: no gap at all
    nxt = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(25, 30)]))
    asyncio.run(consumer._add_gap(TICKS, 25, nxt.offset))
    assert not consumer._gap[TICKS]
    # other topics keep Faust's behaviour
    asyncio.run(consumer._add_gap(BARS, 3, 6))
    assert sorted((i.begin, i.end) for i in consumer._gap[BARS]) == [(3, 7)]


def test_the_schema_passes_a_run_through_and_decodes_single_messages_as_raw_bytes(consumer):
    app = consumer.app
    schema = RecordRunSchema()
    recs = [record(TICKS, 0, value=b"a"), record(TICKS, 1, value=b"b")]
    run = consumer._to_message(TICKS, RecordRun(recs))
    event = asyncio.run(schema.decode(app, run))
    assert event.key is None and event.value is recs
    single = consumer._to_message(TICKS, record(TICKS, 2, key=b"TLT", value=b'{"a":1}'))
    event2 = asyncio.run(schema.decode(app, single))
    assert (event2.key, event2.value) == (b"TLT", b'{"a":1}')


def test_event_records_flattens_runs_and_single_events_in_order(consumer):
    app = consumer.app
    schema = RecordRunSchema()
    run = consumer._to_message(
        TICKS, RecordRun([record(TICKS, 4, value=b"a"), record(TICKS, 5, key=b"X", value=b"b")])
    )
    single = consumer._to_message(TICKS, record(TICKS, 6, value=b"c"))
    events = [asyncio.run(schema.decode(app, m)) for m in (run, single)]
    assert list(event_records(events)) == [
        (b"SPY", b"a", 0, 4),
        (b"X", b"b", 0, 5),
        (b"SPY", b"c", 0, 6),
    ]


def test_a_run_straddling_the_read_offset_keeps_only_its_records_from_there_on(consumer):
    """Faust drops a single message below the partition's read offset (delivered
    already); a run fetched from before the read offset must not deliver those
    records a second time."""
    consumer._read_offset[TICKS] = 13
    run = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(10, 16)]))
    assert [r.offset for r in run.value] == [13, 14, 15]
    assert (run.first_offset, run.offset) == (13, 15)
    assert [o for _, _, _, o in event_records([types.SimpleNamespace(message=run)])] == [13, 14, 15]
    # wholly below: left whole, for Faust's loop to drop as a stale message
    stale = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(5, 9)]))
    assert (stale.first_offset, stale.offset) == (5, 8) and stale.offset < 13
    # no read offset (a new assignment): the whole run
    consumer._read_offset[TICKS] = None
    whole = consumer._to_message(TICKS, RecordRun([record(TICKS, o) for o in range(10, 16)]))
    assert len(whole.value) == 6
