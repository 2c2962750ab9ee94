"""Report what a restarted broker lost, and read its new logs once, from their start.

The embedded broker keeps topics and the group's committed offsets in memory. After
it restarts, the worker re-joins its group and reads the new, empty logs from the
start (nothing committed there: ``auto_offset_reset="earliest"``), so the messages
the broker held before are gone, silently from the worker's point of view. This
module makes the loss visible: counters in the worker's registry and one ERROR log
line per partition (:class:`OffsetMonitor`, hooked into each fetched batch by
:class:`stream_app.consumer.Consumer`).

Until the re-join (about one heartbeat, or longer) the worker's fetch position still
points into the old log, and tansu answers a fetch past the log end with no records
and no OFFSET_OUT_OF_RANGE (aiokafka keeps the position). :class:`RestartGuard`, in
the consumer's thread around each fetch (:class:`stream_app.consumer.ConsumerThread`),
finds the restart before anything is read from there:

* **log end below the position**: the high watermark of the last fetch response (even
  an empty one; tansu's is right, unlike its ListOffsets) is below the partition's
  fetch position. Found at the first fetch after the topic exists again.
* **another record where the worker was**: a new log that has already outgrown the
  worker's position by its first fetch (the producer is quick) shows no such thing.
  So after a lost broker connection (every broker restart closes it), the first
  records fetched that continue right after the last record this worker fetched are
  held back, the partition is sought back to that last record and the record found
  there compared with it (timestamp, key, value): the same one is dropped (delivered
  already) and reading goes on; another one means a new log.

A restarted partition is sought to offset 0 and held (its records dropped) until the
group's next assignment, and a re-join is requested at once: the group re-forms on
the restarted broker, which has no committed offsets, so the new log is read from
offset 0, once (reading it before the re-join would read its start twice: ingest
would dead-letter the second reading as ``duplicate_seq``). :class:`Consumer
<stream_app.consumer.Consumer>` also holds back stream records fetched while Faust
rebalances (Faust drops them and seeks to the committed offsets, which a new group on
a restarted broker does not have: they would be skipped).

In the main thread, a batch shows a restarted log to the pure :class:`OffsetLedger`
(per partition: the offset this worker started reading the log at, the timestamp of
that record, the next offset after the highest it fetched) when it starts below the
worker's offset (a re-read after a rebalance, or a restarted log) and

* **replaced**: holds the worker's start offset again, with another record there
  (another timestamp): the log was rebuilt from that offset or earlier, so every
  offset this worker had read, from its start to its offset, is gone (the re-join
  came before the guard saw anything, e.g. a broker down for longer than a heartbeat);
* **shorter**: the fetch response's high watermark is below the offset this worker
  had fetched up to (the guard, when present, finds this first).

The common case costs one comparison and one dictionary update per partition and
batch here, and per fetch a comparison of two numbers per assigned partition in the
guard. Restarts the guard finds count the whole range this worker had read of the old
log as lost (it reads the new one from offset 0).

Faust's read offsets: ``Consumer._drain_messages`` drops a message whose offset is
below the partition's recorded read offset ("DROPPED MESSAGE ROFF", at dev log
level). A rebalance clears them, but a restart found before the re-join would have
the new log's messages dropped as already read: :class:`OffsetMonitor` forgets Faust's
read and commit bookkeeping of a restarted partition before its new records are
delivered.

Not detected, or miscounted:

* a partition this worker had fetched nothing from since it started (or whose last
  fetched record it no longer knows: the position was sought elsewhere), whose new
  log outgrows its committed-offset position before the first fetch after the
  restart and before the re-join: read on from there;
* a log replaced by records with the very same timestamps, keys and values at the
  compared offset (the worker's start offset, or its last record);
* a worker that started reading the old log past offset 0, re-joins before the guard
  sees anything, and re-reads the new log from above that start;
* acknowledgements of old-log messages still in flight when a restart is found are
  forgotten, but ones that come after could be committed with the new log's offsets
  (in practice the broker is down for a while and nothing is in flight);
* a log that only got shorter (kept its records below the new end) is treated as a
  new one: read again from offset 0 (its surviving prefix twice), all counted lost.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = [
    "LogRestart",
    "OffsetLedger",
    "OffsetLossMetrics",
    "OffsetMonitor",
    "RestartGuard",
    "same_record",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LogRestart:
    """A partition whose log the broker lost, as this worker saw it.

    Attributes
    ----------
    topic : str
    partition : int
    start_offset : int
        The offset this worker started reading the old log at.
    worker_offset : int
        The next offset after the last one this worker had fetched from it.
    broker_offset : int or None
        The broker's log end (high watermark) when it was found; None if unknown.
    lost : int
        Offsets this worker had read that the broker no longer has.
    replaced : bool
        True: another record at ``start_offset`` (or at ``changed_at``): the whole read
        range is gone; False: the log end moved back below ``worker_offset``.
    changed_at : int or None
        Where another record was found, if not at ``start_offset`` (the last offset
        this worker had read, re-read after a lost broker connection).
    """

    topic: str
    partition: int
    start_offset: int
    worker_offset: int
    broker_offset: int | None
    lost: int
    replaced: bool
    changed_at: int | None = None

    def message(self) -> str:
        """The ERROR log line."""
        end = "unknown" if self.broker_offset is None else str(self.broker_offset)
        at = self.start_offset if self.changed_at is None else self.changed_at
        how = (
            f"another record is at offset {at} now"
            if self.replaced
            else "its log is shorter than the worker's offset"
        )
        return (
            f"the broker lost messages of {self.topic}[{self.partition}] (restarted "
            f"empty? {how}): this worker had read up to offset {self.worker_offset} "
            f"(from offset {self.start_offset}), the broker's log now ends at offset "
            f"{end}: {self.lost} messages this worker had read are gone from the broker"
        )


def _record_at(records: Sequence[Any], offset: int) -> Any:
    i = bisect.bisect_left(records, offset, key=lambda r: r.offset)
    if i < len(records) and records[i].offset == offset:
        return records[i]
    return None


class OffsetLedger:
    """Per partition: where this worker started reading its log and how far it got.

    Pure bookkeeping (no Kafka): partitions are hashable ``(topic, partition)``
    pairs; records anything with ``offset`` and ``timestamp`` attributes (aiokafka's
    ``ConsumerRecord``), in offset order. Entries outlive rebalances, so that a
    restart found at the next assignment of a partition is still compared with what
    this worker read before.

    Examples
    --------
    >>> from collections import namedtuple
    >>> R = namedtuple("R", "offset timestamp")
    >>> ledger = OffsetLedger()
    >>> ledger.fetched(("t", 0), [R(o, 1000 + o) for o in range(100)], 100) is None
    True
    >>> ledger.fetched(("t", 0), [R(0, 1000), R(1, 1001)], 100) is None  # a re-read
    True
    >>> restart = ledger.fetched(("t", 0), [R(0, 9000), R(1, 9001)], 100)  # new log
    >>> restart.lost, restart.replaced, ledger.seen[("t", 0)]
    (100, True, 2)
    """

    def __init__(self) -> None:
        #: next offset after the highest fetched, per partition
        self.seen: dict[Any, int] = {}
        #: (offset, timestamp) of the first record this worker fetched of the log
        self.start: dict[Any, tuple[int, Any]] = {}

    def fetched(self, tp: Any, records: Sequence[Any], highwater: int | None) -> LogRestart | None:
        """Record a fetched batch of ``tp`` (non-empty, offset order; ``highwater``:
        the fetch response's); a :class:`LogRestart` if the log restarted."""
        first, last = records[0].offset, records[-1].offset
        seen = self.seen.get(tp)
        if seen is None:
            self.seen[tp] = last + 1
            self.start[tp] = (first, records[0].timestamp)
            return None
        if first >= seen:
            self.seen[tp] = last + 1
            return None
        start, start_ts = self.start.get(tp, (first, None))
        replaced = False
        if first <= start <= last:
            again = _record_at(records, start)
            replaced = again is not None and again.timestamp != start_ts
        shorter = highwater is not None and highwater < seen
        if not (replaced or shorter):  # a re-read (after a rebalance, a seek back)
            self.seen[tp] = max(seen, last + 1)
            return None
        if replaced or highwater is None or highwater <= start:
            lost = seen - start
        else:
            lost = seen - highwater
        self.seen[tp] = last + 1
        self.start[tp] = (first, records[0].timestamp)
        return LogRestart(str(tp[0]), int(tp[1]), start, seen, highwater, lost, replaced)

    def log_ended(
        self, tp: Any, position: int, highwater: int | None, changed_at: int | None = None
    ) -> LogRestart:
        """The consumer's thread found the log of ``tp`` restarted (see
        :class:`RestartGuard`): it ends at ``highwater``, below the worker's fetch
        ``position``, or (``changed_at``) another record is at the last offset the
        worker had read. A new log, read again from offset 0: everything this worker
        had read of the old one is counted lost. Forgets ``tp``: the first batch of the
        new log starts a new entry.

        Examples
        --------
        >>> from collections import namedtuple
        >>> R = namedtuple("R", "offset timestamp")
        >>> ledger = OffsetLedger()
        >>> _ = ledger.fetched(("t", 0), [R(o, 1000 + o) for o in range(30, 100)], 100)
        >>> restart = ledger.log_ended(("t", 0), 100, 0)
        >>> restart.start_offset, restart.worker_offset, restart.lost, ("t", 0) in ledger.seen
        (30, 100, 70, False)
        """
        seen = self.seen.pop(tp, None)
        start, _ = self.start.pop(tp, (None, None))
        worker = position if seen is None else max(seen, position)
        if start is None or start > worker:  # nothing read of the old log
            start = worker
        return LogRestart(
            str(tp[0]),
            int(tp[1]),
            start,
            worker,
            highwater,
            worker - start,
            changed_at is not None,
            changed_at,
        )


def same_record(a: Any, b: Any) -> bool:
    """Whether two fetched records (``offset``, ``timestamp``, ``key``, ``value``) are
    the same message."""
    return (
        a.offset == b.offset
        and a.timestamp == b.timestamp
        and a.key == b.key
        and a.value == b.value
    )


def _now_ms() -> int:
    return int(1000 * time.time())  # aiokafka's clock for TopicPartitionState.timestamp


class RestartGuard:
    """In the consumer's thread, around each fetch: finds a restarted partition log
    before any of its new messages are delivered from the old position.

    aiokafka's consumer (and everything here) lives in Faust's consumer thread
    (:class:`stream_app.consumer.ConsumerThread` calls :meth:`before_fetch`,
    :meth:`after_fetch` and :meth:`connection_lost`); what it finds goes to
    ``pending`` (``(tp, position, high watermark or None, changed offset or None)``),
    which :class:`OffsetMonitor` reports in the main thread.

    * **log end below the position** (:meth:`before_fetch`): the last fetch response's
      high watermark (even with no records) is below the partition's fetch position.
    * **another record where the worker was** (:meth:`after_fetch`): after a lost
      broker connection (:meth:`connection_lost`), the first records fetched since
      that continue exactly after the last record this worker fetched; they are held
      back, the partition is sought back to that last record, and the record found
      there is compared with it (timestamp, key, value). The same record: it is
      dropped (already delivered) and the rest goes on; another one: the log
      restarted.

    A restarted partition is sought to offset 0 and held (its records dropped) until
    the group's next assignment, and a re-join is requested: the group re-forms on
    the restarted broker, which has no committed offsets, so the new log is read
    once, from offset 0 (reading it before the re-join would read its start twice).
    A hold that outlasts ``hold_s`` is released where it is (at offset 0).

    Parameters
    ----------
    pending : collections.deque
        Where restarts go.
    hold_s : float
        Longest hold of a restarted partition (no re-join came).

    Examples
    --------
    >>> import collections
    >>> from types import SimpleNamespace as NS
    >>> states = {("t", 0): NS(highwater=40, has_valid_position=True, position=210)}
    >>> assignment = NS(tps=frozenset(states), state_value=states.get)
    >>> guard, seeks = RestartGuard(collections.deque()), []
    >>> guard.before_fetch(assignment, lambda tp, o: seeks.append((tp, o)), lambda: None)
    >>> seeks, list(guard.pending)
    ([(('t', 0), 0)], [(('t', 0), 210, 40, None)])
    """

    def __init__(self, pending: collections.deque, hold_s: float = 60.0) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s={hold_s!r}: must be > 0 seconds")
        self.pending = pending
        self.hold_s = float(hold_s)
        #: the last record fetched (handed on for delivery), per partition
        self.last: dict[Any, Any] = {}
        #: partitions to re-check since (ms, aiokafka's clock) a lost connection
        self.unverified: dict[Any, int] = {}
        #: partitions sought back to their last record: (that record, assignment)
        self.expect: dict[Any, tuple[Any, Any]] = {}
        #: restarted partitions held until the next assignment: (assignment, deadline)
        self.held: dict[Any, tuple[Any, float]] = {}
        self._lost_at: int | None = None

    def connection_lost(self, now_ms: int | None = None) -> None:
        """A connection to the broker closed: re-check every assigned partition."""
        if self._lost_at is None:
            self._lost_at = _now_ms() if now_ms is None else now_ms

    def before_fetch(
        self, assignment: Any, seek: Callable[[Any, int], Any], rejoin: Callable[[], Any]
    ) -> None:
        """Before each fetch: a log that ends below its fetch position restarted.

        Parameters
        ----------
        assignment : aiokafka Assignment or None
            ``tps`` and ``state_value(tp)`` (``highwater``, ``has_valid_position``,
            ``position``, ``timestamp``); None: not assigned, nothing to do.
        seek : callable
            ``seek(tp, offset)``: the aiokafka consumer's.
        rejoin : callable
            Asks the group coordinator for a re-join.
        """
        if assignment is None:
            return
        if self._lost_at is not None:
            self._mark_unverified(assignment)
        if self.held:
            self._release(assignment, seek)
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            end = state.highwater
            if end is None or not state.has_valid_position:
                continue
            position = state.position
            if end < position:
                self._restarted(tp, position, end, None, assignment, seek, rejoin)

    def after_fetch(
        self,
        records: MutableMapping[Any, Sequence[Any]],
        assignment: Any,
        seek: Callable[[Any, int], Any],
        rejoin: Callable[[], Any],
    ) -> None:
        """After each fetch, before the records go on: drops those of held partitions
        and of partitions being re-checked (``records`` is changed in place), and
        remembers each partition's last record."""
        if not records:
            return
        if assignment is not None:
            if self._lost_at is not None:
                self._mark_unverified(assignment)
            if self.held:
                for tp, (held_in, _) in self.held.items():
                    if held_in is assignment:
                        records.pop(tp, None)
            if self.unverified:
                self._verify(records, assignment, seek, rejoin)
        last = self.last
        for tp, recs in records.items():
            if recs:
                last[tp] = recs[-1]

    def _mark_unverified(self, assignment: Any) -> None:
        since = self._lost_at
        self._lost_at = None
        for tp in assignment.tps:
            self.unverified.setdefault(tp, since)

    def _release(self, assignment: Any, seek: Callable[[Any, int], Any]) -> None:
        now = time.monotonic()
        for tp, (held_in, deadline) in list(self.held.items()):
            if held_in is not assignment:  # the group re-formed: positions are the broker's
                del self.held[tp]
            elif now >= deadline:
                del self.held[tp]
                log.warning(
                    "%s[%s]: no re-join within %.0f s of the restart: reading its new log "
                    "from offset 0 now",
                    tp[0],
                    tp[1],
                    self.hold_s,
                )
                _seek(seek, tp, 0)

    def _verify(
        self,
        records: MutableMapping[Any, Sequence[Any]],
        assignment: Any,
        seek: Callable[[Any, int], Any],
        rejoin: Callable[[], Any],
    ) -> None:
        unverified, expect = self.unverified, self.expect
        for tp in list(unverified):
            recs = records.get(tp)
            if not recs:
                continue
            state = assignment.state_value(tp)
            if state is None:  # not assigned any more
                del unverified[tp]
                expect.pop(tp, None)
                continue
            fetched_at = getattr(state, "timestamp", None)
            if fetched_at is not None and fetched_at < unverified[tp]:
                continue  # fetched before the connection was lost
            expected = expect.pop(tp, None)
            if expected is None:
                last = self.last.get(tp)
                if last is None or recs[0].offset != last.offset + 1:
                    del unverified[tp]  # nothing to compare with (or sought elsewhere)
                    continue
                del records[tp]  # held back: read the last record again first
                if _seek(seek, tp, last.offset):
                    expect[tp] = (last, assignment)
                else:
                    del unverified[tp]
                continue
            last, sought_in = expected
            del unverified[tp]
            first = recs[0]
            if first.offset != last.offset:
                continue  # sought elsewhere meanwhile (a re-join): cannot tell
            if same_record(first, last):
                if sought_in is assignment:  # delivered already
                    rest = recs[1:]
                    if rest:
                        records[tp] = rest
                    else:
                        del records[tp]
                continue
            del records[tp]
            end = getattr(state, "highwater", None)
            self._restarted(tp, last.offset + 1, end, last.offset, assignment, seek, rejoin)

    def _restarted(
        self,
        tp: Any,
        position: int,
        end: int | None,
        changed_at: int | None,
        assignment: Any,
        seek: Callable[[Any, int], Any],
        rejoin: Callable[[], Any],
    ) -> None:
        _seek(seek, tp, 0)
        self.unverified.pop(tp, None)
        self.expect.pop(tp, None)
        self.last.pop(tp, None)
        self.held[tp] = (assignment, time.monotonic() + self.hold_s)
        self.pending.append((tp, position, end, changed_at))
        try:
            rejoin()
        except Exception:  # the hold's deadline still releases it
            log.exception("could not ask for a re-join of the group")


def _seek(seek: Callable[[Any, int], Any], tp: Any, offset: int) -> bool:
    try:
        seek(tp, offset)
    except Exception as exc:  # not assigned any more
        log.warning("%s[%s]: could not seek to offset %s: %r", tp[0], tp[1], offset, exc)
        return False
    return True


class OffsetLossMetrics:
    """``riskmon_consumer_offsets_lost_total`` and ``riskmon_consumer_log_restarts_total``
    (labels ``topic``, ``partition``) in ``registry``."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        labels = ["topic", "partition"]
        self.lost = Counter(
            "consumer_offsets_lost",
            "Messages of a partition this worker had read that the broker no longer has, "
            "counted when its log is found restarted (an in-memory broker restart): the "
            "offsets from where the worker started reading the old log to its offset "
            "(or from the broker's new log end, if a re-read batch showed the log only "
            "shorter). A lower bound: unread messages of the old log are lost too.",
            labels,
            namespace="riskmon",
            registry=registry,
        )
        self.restarts = Counter(
            "consumer_log_restarts",
            "Times this worker found a partition's log restarted under it (the log end "
            "below its fetch position, another record at the last offset it read or at "
            "the offset it started reading at): one per partition and restart.",
            labels,
            namespace="riskmon",
            registry=registry,
        )

    def declare(self, topic: str, partition: int) -> None:
        """Export zeros for a partition (so that ``increase()`` sees the first loss)."""
        self.lost.labels(topic, str(partition))
        self.restarts.labels(topic, str(partition))

    def count(self, restart: LogRestart) -> None:
        labels = (restart.topic, str(restart.partition))
        self.restarts.labels(*labels).inc()
        if restart.lost:
            self.lost.labels(*labels).inc(restart.lost)


#: Faust's per-partition bookkeeping of a consumer, forgotten when its log restarted
#: (``on_partitions_revoked`` pops the same ones).
_FAUST_TP_STATE = ("_read_offset", "_committed_offset", "_acked", "_acked_index", "_gap")


class OffsetMonitor:
    """Glue between Faust's consumer (:class:`stream_app.consumer.Consumer`) and the
    :class:`OffsetLedger`: reports restarted logs (metrics, one ERROR line each) and
    repairs Faust's read offsets of a restarted partition.

    Parameters
    ----------
    metrics : OffsetLossMetrics or None
        None: log only.
    hold_s : float
        :class:`RestartGuard`'s longest hold of a restarted partition.

    Attributes
    ----------
    restarts : list of LogRestart
        Every restart found, in order.
    """

    def __init__(self, metrics: OffsetLossMetrics | None = None, hold_s: float = 60.0) -> None:
        self.ledger = OffsetLedger()
        self.metrics = metrics
        self.restarts: list[LogRestart] = []
        #: restarts found by :attr:`guard` in the consumer thread, reported by the next
        #: :meth:`on_fetched` (main thread)
        self.pending: collections.deque[tuple[Any, int, int | None, int | None]]
        self.pending = collections.deque()
        #: the consumer thread's part (:class:`RestartGuard`)
        self.guard = RestartGuard(self.pending, hold_s=hold_s)

    def on_fetched(self, consumer: Any, records: Mapping[Any, Sequence[Any]]) -> None:
        """A batch from ``consumer._getmany`` (``{tp: [records]}``, maybe empty), before
        delivery."""
        if self.pending:
            self._report_pending(consumer)
        seen = self.ledger.seen
        for tp, recs in records.items():
            if not recs:
                continue
            mark = seen.get(tp)
            if mark is not None and recs[0].offset >= mark:
                seen[tp] = recs[-1].offset + 1  # the common case, inline
                continue
            if mark is None and self.metrics is not None:
                self.metrics.declare(str(tp[0]), int(tp[1]))
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not assigned any more: the end is unknown
                highwater = None
            restart = self.ledger.fetched(tp, recs, highwater)
            if restart is not None:
                self._forget_read_offsets(consumer, tp, recs[0].offset)
                self.report(restart)

    def _report_pending(self, consumer: Any) -> None:
        pending = self.pending
        while pending:
            tp, position, end, changed_at = pending.popleft()
            restart = self.ledger.log_ended(tp, position, end, changed_at)
            self._forget_read_offsets(consumer, tp, 0)
            self.report(restart)
            log.warning(
                "%s[%s]: its log restarted; re-joining the group, then reading the new "
                "log from offset 0",
                tp[0],
                tp[1],
            )

    def report(self, restart: LogRestart) -> None:
        """Count and log one restarted log."""
        self.restarts.append(restart)
        if self.metrics is not None:
            self.metrics.count(restart)
        log.error("%s", restart.message())

    @staticmethod
    def _forget_read_offsets(consumer: Any, tp: Any, first: int) -> None:
        """Faust would drop the new log's messages below its stale read offset."""
        read = getattr(consumer, "_read_offset", None)
        stale = read.get(tp) if read is not None else None
        if stale is None or stale <= first:
            return
        for name in _FAUST_TP_STATE:
            state = getattr(consumer, name, None)
            if state is not None:
                state.pop(tp, None)
        log.warning(
            "%s[%s]: forgot Faust's read offset %s of the old log (it would drop the new "
            "log's messages from offset %s as already read)",
            tp[0],
            tp[1],
            stale,
            first,
        )
