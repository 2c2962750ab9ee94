"""Report what a restarted broker lost: a partition's log that starts over under the worker.

The embedded broker keeps topics and the group's committed offsets in memory. After
it restarts, the worker re-joins its group and reads the new, empty logs from the
start (nothing committed there: ``auto_offset_reset="earliest"``), so the messages
the broker held before are gone, silently from the worker's point of view. This
module makes the loss visible: counters in the worker's registry and one ERROR log
line per partition (:class:`OffsetMonitor`, hooked into each fetched batch by
:class:`stream_app.consumer.Consumer`).

How a restarted log shows in a fetched batch (the pure part is :class:`OffsetLedger`;
per partition it keeps the offset this worker started reading the log at, the
timestamp of that record, and the next offset after the highest it fetched):

* **replaced**: the batch holds the worker's start offset again, with another record
  there (another timestamp): the log was rebuilt from that offset or earlier, so
  every offset this worker had read, from its start to its offset, is gone;
* **shorter**: the fetch response's high watermark (the log end offset; tansu reports
  it right, unlike its ListOffsets) is below the offset this worker had fetched up
  to. A log never shrinks otherwise. The offsets between the new end (or the start,
  if the end is below it) and the worker's offset are gone.

Both are looked at only when a batch starts below the worker's offset (a re-read
after a rebalance, or a restarted log): the common case costs one comparison and one
dictionary update per partition and batch.

Faust's read offsets: ``Consumer._drain_messages`` drops a message whose offset is
below the partition's recorded read offset ("DROPPED MESSAGE ROFF", at dev log
level). A rebalance clears them (``on_partitions_revoked`` pops them and
``perform_seek`` sets them from the broker's committed offsets), and a broker restart
always makes the worker re-join (the broker no longer knows its member id), so the
new log is read from its start without drops: that is what the reliability test
sees. Before the re-join, a broker that answers a fetch past the log end with
OFFSET_OUT_OF_RANGE (Kafka; tansu answers no records and keeps the position) makes
aiokafka reset the position to the earliest offset, and Faust would drop the new
log's messages as already read (and, had later ones been acknowledged and committed
meanwhile, skip them for good). When a fetch finds the log restarted,
:meth:`OffsetMonitor.on_fetched` therefore forgets Faust's read and commit
bookkeeping of that partition before the batch is delivered.

Not detected, or miscounted: until the re-join the fetch position still points past
the old log; a new log already longer than that is read on from there as if nothing
had happened (offsets alone cannot tell). If that offset gets committed (tansu
accepts the stale member's commit) the new log's first messages are never read;
otherwise the re-join re-reads the new log from 0, which is found here, but with
the window's reads counted as lost too (and ingest dead-letters the re-read ticks as
``duplicate_seq``). ``test_new_log_longer_than_the_old_one_before_the_rejoin``
(xfail) pins it. Also unseen: a worker that started reading the old log past offset
0 and re-reads the new one from above that start, and a log replaced by records
with the very same timestamps.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LogRestart", "OffsetLedger", "OffsetLossMetrics", "OffsetMonitor"]

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
        True: another record at ``start_offset`` (the whole read range is gone);
        False: only the log end moved back below ``worker_offset``.
    """

    topic: str
    partition: int
    start_offset: int
    worker_offset: int
    broker_offset: int | None
    lost: int
    replaced: bool

    def message(self) -> str:
        """The ERROR log line."""
        end = "unknown" if self.broker_offset is None else str(self.broker_offset)
        how = (
            f"another record is at offset {self.start_offset} now"
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
            "(another record at the start offset), or from the broker's new log end to "
            "the worker's offset (the log only got shorter). A lower bound: unread "
            "messages of the old log are lost too.",
            labels,
            namespace="riskmon",
            registry=registry,
        )
        self.restarts = Counter(
            "consumer_log_restarts",
            "Times this worker found a partition's log restarted under it (another "
            "record at the offset it started reading at, or the log end below its "
            "offset): one per partition and restart.",
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

    Attributes
    ----------
    restarts : list of LogRestart
        Every restart found, in order.
    """

    def __init__(self, metrics: OffsetLossMetrics | None = None) -> None:
        self.ledger = OffsetLedger()
        self.metrics = metrics
        self.restarts: list[LogRestart] = []

    def on_fetched(self, consumer: Any, records: Mapping[Any, Sequence[Any]]) -> None:
        """A batch from ``consumer._getmany`` (``{tp: [records]}``), before delivery."""
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
