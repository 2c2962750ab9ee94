"""The worker's Kafka consumer: faust-streaming's, with a configurable fetch wait, and
safe across broker restarts.

``fetch_max_wait_ms``: Faust hard-codes 1500 ms for worker consumers; the
  embedded broker does not end a waiting fetch early when data arrives, so
  that wait is added to latency (DESIGN.md). aiokafka reads the value when
the consumer starts. See the note in :class:`Consumer` on the delivery loop.

Broker restarts (:mod:`stream_app.offsets`): the consumer thread runs the app's
:class:`~stream_app.offsets.RestartGuard` around each fetch (and tells it when a
broker connection closes), the main thread reports what it found; a batch fetched
while Faust rebalances is held back and its partitions sought back
(:meth:`Consumer._hold_back`). aiokafka internals used (0.14): the subscription's
assignment (``_subscription.subscription.assignment``: positions, high watermarks),
the group coordinator's ``request_rejoin`` and the client's ``_on_connection_closed``.

Record runs (:class:`RecordRuns`, the app's ``riskmon_runs``): for the topics named
there (``ticks``) the records one fetch brought from a partition are delivered as
*one* Faust event, a :class:`RunMessage` whose value is the list of aiokafka records
(at most ``max_records`` of them), instead of one event per record. Faust's delivery
path (conductor, channel queue, stream, acks) costs some hundreds of microseconds per
event on a 2-core machine, which capped one worker at 3,000-5,000 single-tick messages
a second however fast the agent's own batch code was (``bench/bench_ingest.py``). Offsets keep their meaning: acking a run acks every offset in it
(:meth:`Consumer.ack`), Faust's read offset of the partition is the run's last offset,
a gap before a run is only the offsets missing before its first record
(:meth:`Consumer._add_gap`), and a run's records below the read offset are dropped as
Faust drops such single messages (:meth:`Consumer._to_message`). :class:`RecordRunSchema` hands the run through to the
agent undecoded; :func:`event_records` flattens a batch of events (runs or single
messages, as ``agent.test_context()`` sends) back into records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as _faust_aiokafka
from faust.types.tuples import ConsumerMessage, ack_lock

from stream_app.endoffsets import true_end_offsets


class ConsumerThread(_faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the worker's aiokafka consumer with the app's ``fetch_max_wait_ms``, and
    runs the app's :class:`~stream_app.offsets.RestartGuard` (``riskmon_offsets.guard``)
    around each fetch and its :class:`~stream_app.stalls.FetchStallWatch`
    (``riskmon_stalls``) after it, in this thread."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        monitor = getattr(self.app, "riskmon_offsets", None)
        if monitor is not None:
            _on_connection_lost(consumer._client, monitor.guard.connection_lost)
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # In the consumer thread: a partition log that restarted under the worker is
        # found before its new messages are read from the old position
        # (stream_app.offsets.RestartGuard)
        monitor = getattr(self.app, "riskmon_offsets", None)
        if monitor is None:
            records = await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
            self._watch_stalls(consumer, active_partitions, records)
            return records
        guard = monitor.guard
        assignment = _assignment(consumer)
        guard.before_fetch(assignment, consumer.seek, self._request_rejoin)
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        if records:
            assignment = _assignment(consumer)  # a rebalance may have replaced it
            guard.after_fetch(records, assignment, consumer.seek, self._request_rejoin)
        self._watch_stalls(consumer, active_partitions, records)
        return records

    def _watch_stalls(self, consumer: Any, fetched: Any, records: Any) -> None:
        # partitions the broker no longer serves (stream_app.stalls.FetchStallWatch)
        watch = getattr(self.app, "riskmon_stalls", None)
        if watch is None:
            return
        watch.after_fetch(_assignment(consumer), fetched, records or {})
        fetcher = getattr(consumer, "_fetcher", None)
        if watch.fetch_wait_ms is not None and fetcher is not None:
            fetcher._fetch_max_wait_ms = watch.fetch_wait_ms  # read as each request is built

    def _request_rejoin(self) -> None:
        """Ask the group coordinator to re-join (consumer thread)."""
        self._ensure_consumer()._coordinator.request_rejoin()

    async def rewind(self, records: Any) -> None:
        """Seek each partition of a fetched batch (``{tp: [records]}``) back to its
        first record, unless the partition was sought elsewhere since."""
        first = {tp: recs[0].offset for tp, recs in records.items() if recs}
        after = {tp: recs[-1].offset + 1 for tp, recs in records.items() if recs}
        await self.call_thread(self._rewind, first, after)

    def _rewind(self, first: Any, after: Any) -> None:
        consumer = self._ensure_consumer()
        assignment = _assignment(consumer)
        if assignment is None:
            return
        for tp, offset in first.items():
            state = assignment.state_value(tp)
            if state is not None and state.has_valid_position and state.position == after[tp]:
                consumer.seek(tp, offset)

    async def _highwaters(self, partitions: Any) -> Any:
        """Log end offsets (what table recovery reads up to): ListOffsets checked
        against a fetch's high watermark, see :mod:`stream_app.endoffsets`."""
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        return await true_end_offsets(self._ensure_consumer(), partitions)


def _assignment(consumer: Any) -> Any:
    """The aiokafka consumer's current partition assignment, or None when not subscribed."""
    subscription = consumer._subscription.subscription
    return None if subscription is None else subscription.assignment


def _on_connection_lost(client: Any, callback: Any) -> None:
    """Call ``callback()`` whenever one of the aiokafka ``client``'s broker connections
    closes (but at shutdown). Hooks ``AIOKafkaClient._on_connection_closed``, which each
    connection gets as its ``on_close`` when it is opened: call before the consumer
    starts."""
    from aiokafka.conn import CloseReason

    closed = client._on_connection_closed

    def on_connection_closed(conn: Any, reason: Any) -> None:
        if reason != CloseReason.SHUTDOWN:
            callback()
        closed(conn, reason)

    client._on_connection_closed = on_connection_closed


@dataclass(frozen=True)
class RecordRuns:
    """Which topics are delivered as record runs, and how long a run may be.

    Parameters
    ----------
    topics : frozenset of str
    max_records : int
        A partition's fetched records are cut into runs of at most this many (bounds
        what one event holds: Faust's stream buffers count events).
    """

    topics: frozenset[str]
    max_records: int = 500

    def __post_init__(self) -> None:
        if self.max_records < 1:
            raise ValueError(f"max_records={self.max_records} must be >= 1")

    def split(self, records: Any) -> Any:
        """``{tp: [records]}`` with the lists of the run topics replaced by runs."""
        if not records:
            return records
        n = self.max_records
        out = {}
        for tp, recs in records.items():
            if recs and tp[0] in self.topics:  # (topic, partition)
                out[tp] = [RecordRun(recs[i : i + n]) for i in range(0, len(recs), n)]
            else:
                out[tp] = recs
        return out


class RecordRun:
    """Consecutive records of one partition from one fetch (what ``_to_message`` turns
    into a :class:`RunMessage`)."""

    __slots__ = ("records",)

    def __init__(self, records: list[Any]) -> None:
        self.records = records


class RunMessage(ConsumerMessage):
    """One Faust message standing for a run of records of one partition.

    ``offset`` is the run's last offset (Faust's read offset after it), ``first_offset``
    its first, ``value`` the list of aiokafka records, ``key`` None.
    """

    __slots__ = ("first_offset",)


class RecordRunSchema(faust.Schema):
    """Raw bytes keys and values; a :class:`RunMessage` passes through undecoded (its
    value is already the list of records)."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def loads_key(self, app: Any, message: Any, **kwargs: Any) -> Any:
        if type(message) is RunMessage:
            return None
        return super().loads_key(app, message, **kwargs)

    def loads_value(self, app: Any, message: Any, **kwargs: Any) -> Any:
        if type(message) is RunMessage:
            return message.value
        return super().loads_value(app, message, **kwargs)


def event_records(events: Iterable[Any]) -> Iterator[tuple[bytes | None, Any, int, int]]:
    """``(key, value, partition, offset)`` of every record of a batch of Faust events,
    in order: each record of a :class:`RunMessage`, or the event's own message."""
    for event in events:
        message = event.message
        if type(message) is RunMessage:
            for r in message.value:
                yield r.key, r.value, r.partition, r.offset
        else:
            yield message.key, event.value, message.partition, message.offset


class Consumer(_faust_aiokafka.Consumer):
    """faust-streaming's aiokafka consumer with :class:`ConsumerThread`.

    When the app has an :class:`~stream_app.offsets.OffsetMonitor` (``riskmon_offsets``)
    it sees every fetched batch before delivery: a partition log that restarted (an
    in-memory broker restarted empty) is reported, and Faust's stale read offset of
    it forgotten (see :mod:`stream_app.offsets`).

    A batch that comes back while the flow is stopped or the app rebalances is held
    back (:meth:`_hold_back`): Faust would drop it (or clear it from the stream queues
    when the flow resumes) and rely on seeking to the committed offsets, and aiokafka
    leaves a partition without any (a new group: the first start, or a restarted
    broker) past the dropped messages, which would never be processed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: first offset of the run last turned into a message, per partition
        self._run_first: dict[Any, int] = {}

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        records = await super()._getmany(active_partitions, timeout)
        if records and (not self.flow_active or self.app.rebalancing):
            records = await self._hold_back(records)
        monitor = getattr(self.app, "riskmon_offsets", None)
        if monitor is not None and (records or monitor.pending):
            monitor.on_fetched(self, records)
        runs = getattr(self.app, "riskmon_runs", None)
        return records if runs is None else runs.split(records)

    def _to_message(self, tp: Any, record: Any) -> Any:
        if type(record) is not RecordRun:
            return super()._to_message(tp, record)
        recs = record.records
        # Faust's delivery loop drops a single message below the partition's read
        # offset (it was delivered already: a fetch from before a seek); a run
        # straddling the read offset keeps only its records from there on, or it
        # would deliver those records twice. A run wholly below it is left whole, for
        # the loop to drop like any stale message.
        read = self._read_offset.get(tp)
        if read is not None and recs[0].offset < read <= recs[-1].offset:
            recs = [r for r in recs if r.offset >= read]
        last = recs[-1]
        message = RunMessage(
            last.topic,
            last.partition,
            last.offset,
            None if last.timestamp is None else last.timestamp / 1000.0,
            last.timestamp_type,
            (),
            None,
            recs,
            None,
            0,
            sum(r.serialized_value_size for r in recs),
            tp,
            generation_id=self.app.consumer_generation_id,
        )
        message.first_offset = self._run_first[tp] = recs[0].offset
        return message

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust's delivery loop calls this when a message's offset is more than one
        # past the read offset, with the range up to that offset: for a run, only the
        # offsets before its first record are missing (the run itself is acked when
        # the agent is done with it)
        first = self._run_first.get(tp)
        if first is not None and offset_to >= first:
            offset_to = first - 1
        await super()._add_gap(tp, offset_from, offset_to)

    def ack(self, message: Any) -> bool:
        """Faust's ack; for a :class:`RunMessage`, every offset of the run."""
        if type(message) is not RunMessage:
            return super().ack(message)
        with ack_lock:
            if not super().ack(message):  # the run's last offset
                return False
            tp = message.tp
            committed = self._committed_offset[tp]
            first = message.first_offset
            fresh = set(
                range(first if committed is None else max(first, committed), message.offset)
            )
            acked_index = self._acked_index[tp]
            fresh -= acked_index
            if fresh:
                acked_index |= fresh
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
            return True

    async def _hold_back(self, records: Any) -> Any:
        """A batch that came back during a rebalance: what Faust would drop is sought
        back to and left for after the rebalance; what recovery reads (changelogs while
        the flow runs) goes on."""
        if self.flow_active:
            changelogs = self.app.tables.changelog_topics
            held = {tp: recs for tp, recs in records.items() if tp.topic not in changelogs}
            if not held:
                return records
            records = {tp: recs for tp, recs in records.items() if tp not in held}
        else:
            held, records = records, {}
        await self._thread.rewind(held)
        return records

    # Faust's delivery loop (``_drain_messages``) is kept as it is: record runs cut the
    # number of deliveries instead. A lighter loop that awaited each delivery directly
    # when nothing could block it (4,600 -> 10,800 ticks/s with one tick per message,
    # before runs) lost every message after a broker restart in about one run in three
    # (test_worker_carries_on_after_a_broker_restart): a delivery finishing after the
    # rebalance's seek recorded a stale read offset.


class Transport(_faust_aiokafka.Transport):
    """The aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
